"""Value and derivative of several activations, side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elukit._files import atomic_output
from elukit._spec import Activation
from elukit.plots._matplotlib import check_output_path, pyplot


def plot_activations(
    activations: Sequence[Activation],
    path: str | os.PathLike[str],
    x_min: float = -4.0,
    x_max: float = 3.0,
    points: int = 1001,
) -> Path:
    """Write a figure with f(x) (left) and f'(x) (right) for each activation; returns the path.

    The file is written to a temporary name and renamed, so an interrupted call never leaves a
    half-written figure. The format follows the suffix (.png, .svg or .pdf).
    """
    if not activations:
        raise ValueError("activations must name at least one activation")
    if not (np.isfinite(x_min) and np.isfinite(x_max)) or x_min >= x_max:
        raise ValueError(f"x range must be finite with x_min < x_max, got [{x_min}, {x_max}]")
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    check_output_path(path, writable=True)  # fail before the work, not after it
    plt = pyplot()
    x = np.linspace(x_min, x_max, points)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for activation in activations:
        label = activation.label()
        left.plot(x, activation.value(x), label=label)
        right.plot(x, activation.derivative(x), label=label)
    for axis, title in ((left, "f(x)"), (right, "f'(x)  (left branch at kinks)")):
        axis.axhline(0.0, color="0.7", linewidth=0.8)
        axis.axvline(0.0, color="0.7", linewidth=0.8)
        axis.set_xlabel("x")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend()
    return save_atomically(figure, path)


def save_atomically(figure: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure to a temporary file beside `path`, then rename it over `path`,
    so an interrupted call never leaves a half-written figure. Closes the figure. The folder must
    exist; the file follows the umask (`elukit._files.atomic_output`)."""
    plt = pyplot()
    suffix = check_output_path(path)
    try:
        with atomic_output(path) as temporary:
            figure.savefig(temporary, format=suffix.lstrip("."), dpi=120)
    finally:
        plt.close(figure)
    return Path(path)
