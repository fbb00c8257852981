"""Phase diagram of deep random networks: edge-of-chaos curves and a correlation depth-scale map."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from elukit.plots._matplotlib import check_output_path, pyplot
from elukit.plots.curves import save_atomically


def plot_phase_diagram(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], heat_label: str,
                       bias_grid: np.ndarray, weight_grid: np.ndarray, depth_scale: np.ndarray,
                       path: str | os.PathLike[str]) -> Path:
    """Left: sigma_w^2 on the EOC vs sigma_b^2 per activation. Right: log10 xi_c of one activation
    over the (sigma_b^2, sigma_w^2) grid (depth_scale[i, j] at weight_grid[i], bias_grid[j]), with its EOC."""
    check_output_path(path)
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for label, (bias, weight) in curves.items():
        if np.sum(np.isfinite(weight)) > 1:
            left.plot(bias, weight, label=label)
        else:
            left.plot(bias[np.isfinite(weight)], weight[np.isfinite(weight)], "o", label=f"{label} (one point)")
    left.set_xlabel("sigma_b^2")
    left.set_ylabel("sigma_w^2 on the edge of chaos")
    left.set_title("edge of chaos: ordered below, chaotic above")
    left.grid(True, alpha=0.3)
    left.legend()
    with np.errstate(divide="ignore", invalid="ignore"):
        shown = np.log10(np.where(np.isfinite(depth_scale), depth_scale, np.nan))
    mesh = right.pcolormesh(bias_grid, weight_grid, shown, shading="nearest", cmap="viridis")
    figure.colorbar(mesh, ax=right, label="log10 xi_c (layers)")
    if heat_label in curves:
        bias, weight = curves[heat_label]
        right.plot(bias, weight, color="white", linewidth=1.5, label="edge of chaos")
        right.legend(loc="upper left", facecolor="0.6")
    right.set_xlabel("sigma_b^2")
    right.set_ylabel("sigma_w^2")
    right.set_title(f"{heat_label}: correlation depth scale xi_c (blank: q* = inf)")
    return save_atomically(figure, path)
