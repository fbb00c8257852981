"""``elukit gain``: initialization gains and their consequences, next to PyTorch's."""

from __future__ import annotations

import warnings

import click

from elukit._spec import Activation
from elukit.cli._common import build_activations, echo_json, parameter_options


def torch_gain(spec: Activation) -> float | None:
    """``torch.nn.init.calculate_gain`` for this activation, or None (no entry, or no torch)."""
    try:
        from torch.nn import init
    except ImportError:
        return None
    argument = spec.parameters.get("slope") if spec.name == "leaky_relu" else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(init.calculate_gain(spec.name, argument))
    except ValueError:
        return None


@click.command(
    "gain",
    epilog=(
        "Examples:\n\n"
        "  elukit gain elu --alpha 1\n\n"
        "  elukit gain elu selu relu gelu silu --json\n\n"
        "  elukit gain selu --weight-gain 1   # LeCun init: chi = 1.0716"
    ),
)
@click.argument("activations", nargs=-1, required=True)
@parameter_options
@click.option("--input-variance", type=float, default=1.0, show_default=True,
              help="Pre-activation variance q to preserve.")
@click.option("--weight-gain", type=float, default=None, help="Analyse this gain instead of the derived one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gain_command(activations: tuple[str, ...], input_variance: float, weight_gain: float | None, as_json: bool,
                 **params: float | None) -> None:
    """Weight-std gain (fan-in) preserving the forward signal, the gradient gain, and what each does."""
    from elukit.theory import analyze_gain

    rows = []
    for spec in build_activations(activations, params):
        report = analyze_gain(spec, weight_gain, input_variance, warn=False)
        rows.append({
            "activation": spec.label(), "gain": report.gain, "forward_gain": report.forward_gain,
            "gradient_gain": report.gradient_gain, "chi": report.chi, "variance_slope": report.variance_slope,
            "stable": report.stable, "torch_gain": torch_gain(spec), "warnings": list(report.warnings),
        })
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        torch_text = "no entry" if row["torch_gain"] is None else f"{row['torch_gain']:.6g}"
        click.echo(f"{row['activation']}: gain {row['gain']:.6g} (forward), gradient gain {row['gradient_gain']:.6g}, "
                   f"torch.nn.init.calculate_gain: {torch_text}")
        click.echo(f"  with gain {row['gain']:.6g}: chi = {row['chi']:.6g} per layer, dV/dq = "
                   f"{row['variance_slope']:.6g} ({'stable' if row['stable'] else 'not stable'})")
        for note in row["warnings"]:
            click.echo(f"  warning: {note}")
