"""``elukit propagate``: mean-field variance and mean through depth, derived gain vs PyTorch's default."""

from __future__ import annotations

import math
from pathlib import Path

import click

from elukit.cli._common import build_activations, echo_json, parameter_options

TORCH_DEFAULT_WEIGHT_VARIANCE = 1.0 / 3.0
"""nn.Linear's default init is kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(n), 1/sqrt(n)), whose
variance is 1/(3n), i.e. sigma_w^2 = 1/3."""


@click.command(
    "propagate",
    epilog=(
        "Examples:\n\n"
        "  elukit propagate elu --depth 50 -o propagation.png\n\n"
        "  elukit propagate selu --depth 100 --weight-variance 1 --json"
    ),
)
@click.argument("activation")
@parameter_options
@click.option("--depth", type=click.IntRange(1, 100000), default=50, show_default=True, help="Number of layers.")
@click.option("--weight-variance", type=float, default=None,
              help="sigma_w^2 (default: the derived gain squared, elukit.theory.gain).")
@click.option("--bias-variance", type=float, default=0.0, show_default=True, help="sigma_b^2.")
@click.option("--input-variance", type=float, default=1.0, show_default=True, help="Variance of the inputs.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also plot variance and mean vs depth (.png, .svg, .pdf).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def propagate_command(activation: str, depth: int, weight_variance: float | None, bias_variance: float,
                      input_variance: float, output: Path | None, as_json: bool, **params: float | None) -> None:
    """Per-layer pre-activation variance and activation mean (mean field), for the derived gain
    and for PyTorch's default nn.Linear init."""
    from elukit.theory import gain, propagate

    (spec,) = build_activations([activation], params)
    if output is not None:  # a bad path or a missing matplotlib: say so before computing
        from elukit.plots._matplotlib import check_output_path, pyplot

        check_output_path(output, writable=True)
        pyplot()
    derived = gain(spec, input_variance) ** 2 if weight_variance is None else weight_variance
    runs = {
        f"sigma_w^2 = {derived:.4g} ({'elukit gain' if weight_variance is None else 'given'})": derived,
        "sigma_w^2 = 1/3 (PyTorch nn.Linear default)": TORCH_DEFAULT_WEIGHT_VARIANCE,
    }
    results = {label: propagate(spec, depth, w, bias_variance, 0.0, input_variance) for label, w in runs.items()}
    if as_json:
        echo_json({label: {k: [float(v) for v in getattr(r, k)] for k in r._fields} for label, r in results.items()})
    else:
        for label, result in results.items():
            q = result.preactivation_variance
            click.echo(f"{spec.label()}, {label}: variance layer 1 {q[0]:.4g}, layer {depth} {q[-1]:.4g}; "
                       f"mean activation layer {depth} {result.activation_mean[-1]:.4g}; "
                       f"gradient norm^2 factor over all layers {math.prod(result.gradient_factor):.4g}")
    if output is not None:
        from elukit.plots.propagation import plot_propagation

        path = plot_propagation(spec.label(), results, output)
        click.echo(f"wrote {path}")
