"""``elukit chaos``: the edge of chaos, fixed points and depth scales of deep random networks."""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np

from elukit.cli._common import build_activations, echo_json, parameter_options


ANY_Q_STAR = ("every q is a marginal fixed point: the variance map is V(q) = q, so each depth keeps the "
              "input's variance, neither attracting nor repelling")


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


@click.command(
    "chaos",
    epilog=(
        "Examples:\n\n"
        "  elukit chaos elu --bias-variance 0.05\n\n"
        "  elukit chaos elu tanh relu -o phase.png\n\n"
        "  elukit chaos tanh --bias-variance 0.05 --weight-variance 2.5 --json"
    ),
)
@click.argument("activations", nargs=-1, required=True)
@parameter_options
@click.option("--bias-variance", type=float, default=0.05, show_default=True, help="sigma_b^2.")
@click.option("--weight-variance", type=float, default=None,
              help="sigma_w^2 for the depth scales (default: the edge of chaos at --bias-variance).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the phase diagram (.png, .svg, .pdf): EOC curves and the first activation's "
                   "correlation depth scale.")
@click.option("--grid", type=click.IntRange(4, 200), default=24, show_default=True,
              help="Points per axis of the depth-scale map.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def chaos_command(activations: tuple[str, ...], bias_variance: float, weight_variance: float | None,
                  output: Path | None, grid: int, as_json: bool, **params: float | None) -> None:
    """The edge of chaos (sigma_w^2 with chi_1 = 1) at --bias-variance, the fixed points q* and c*,
    chi_1 and the depth scales xi_q, xi_c (Schoenholz et al. 2017) for each activation."""
    from elukit.theory import depth_scales, edge_of_chaos

    if not (math.isfinite(bias_variance) and bias_variance >= 0):
        raise ValueError(f"--bias-variance must be finite and >= 0, got {bias_variance}")
    if weight_variance is not None and not (math.isfinite(weight_variance) and weight_variance > 0):
        raise ValueError(f"--weight-variance must be finite and > 0, got {weight_variance}")
    if output is not None:
        from elukit.plots._matplotlib import check_output_path

        check_output_path(output)
    specs = build_activations(activations, params)
    report = {}
    for spec in specs:
        eoc = edge_of_chaos(spec, bias_variance)
        entry: dict[str, object] = {"edge_of_chaos_weight_variance": _number(float(eoc.weight_variance)),
                                    "edge_of_chaos_q_star": _number(float(eoc.q_star)),
                                    "edge_of_chaos_stable": bool(eoc.stable), "reason": eoc.reason}
        weight = float(eoc.weight_variance) if weight_variance is None else weight_variance
        if math.isfinite(weight):
            try:
                scales = depth_scales(spec, weight, bias_variance)
                entry.update({k: (_number(v) if isinstance(v, float) else v) for k, v in scales._asdict().items()})
            except ValueError as error:
                entry["depth_scales_error"] = str(error)
        report[spec.label()] = entry
    if as_json:
        echo_json(report)
    else:
        for label, entry in report.items():
            if entry["reason"] and not math.isfinite(float(entry["edge_of_chaos_weight_variance"])):
                click.echo(f"{label}: no edge of chaos at sigma_b^2 = {bias_variance:g}: {entry['reason']}")
            elif math.isnan(float(entry["edge_of_chaos_q_star"])):
                # a finite edge with no q*: V(q) = sigma_w^2 E[f'^2] q = q, so every q is a fixed point
                click.echo(f"{label}: edge of chaos at sigma_b^2 = {bias_variance:g}: "
                           f"sigma_w^2 = {float(entry['edge_of_chaos_weight_variance']):.6g}, q* = any "
                           f"({ANY_Q_STAR})")
            else:
                click.echo(f"{label}: edge of chaos at sigma_b^2 = {bias_variance:g}: "
                           f"sigma_w^2 = {float(entry['edge_of_chaos_weight_variance']):.6g}, "
                           f"q* = {float(entry['edge_of_chaos_q_star']):.6g}"
                           f"{'' if entry['edge_of_chaos_stable'] else ' (q* repels: not reached from other variances)'}")
            if "phase" in entry:
                marginal = math.isnan(float(entry["q_star"])) and abs(float(entry["variance_slope"]) - 1) <= 1e-6
                q_star = "any (marginal)" if marginal else f"{float(entry['q_star']):.6g}"
                click.echo(f"  at sigma_w^2 = {float(entry['weight_variance']):.6g}: {entry['phase']}, "
                           f"q* = {q_star}, c* = {float(entry['c_star']):.6g}, "
                           f"chi_1 = {float(entry['chi_1']):.6g}, xi_q = {float(entry['xi_q']):.4g}, "
                           f"xi_c = {float(entry['xi_c']):.4g} layers")
            elif "depth_scales_error" in entry:
                click.echo(f"  {entry['depth_scales_error']}")
    if output is not None:
        from elukit.plots.chaos import plot_phase_diagram

        biases = np.concatenate([np.linspace(0.0, 0.1, 21), np.linspace(0.1, 2.0, 39)[1:]])
        curves = {spec.label(): (biases, edge_of_chaos(spec, biases).weight_variance) for spec in specs}
        bias_grid, weight_grid = np.linspace(0.0, 2.0, grid), np.linspace(0.5, 4.0, grid)
        depth = np.full((grid, grid), np.nan)
        for i, w in enumerate(weight_grid):
            for j, b in enumerate(bias_grid):
                try:
                    depth[i, j] = depth_scales(specs[0], w, b).xi_c
                except ValueError:  # no finite q* (the variance explodes): no depth scale
                    pass
        path = plot_phase_diagram(curves, specs[0].label(), bias_grid, weight_grid, depth, output)
        click.echo(f"wrote {path}")
