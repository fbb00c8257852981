"""Variance and mean of activations vs depth for several initializations."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from elukit.plots._matplotlib import check_output_path, pyplot
from elukit.plots.curves import save_atomically


def plot_propagation(title: str, results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Two panels: pre-activation variance (log scale) and activation mean, vs layer."""
    check_output_path(path, writable=True)
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for label, result in results.items():
        layers = np.arange(1, len(result.preactivation_variance) + 1)
        left.semilogy(layers, result.preactivation_variance, label=label)
        right.plot(layers, result.activation_mean, label=label)
    left.set_title(f"{title}: pre-activation variance q_l")
    right.set_title(f"{title}: mean activation E f(h_l)")
    for axis in (left, right):
        axis.set_xlabel("layer")
        axis.grid(True, alpha=0.3)
        axis.legend()
    return save_atomically(figure, path)
