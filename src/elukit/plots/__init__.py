"""Figures (needs matplotlib: ``pip install 'elukit[plot]'``)."""

from elukit.plots.curves import plot_activations

__all__ = ["plot_activations"]
