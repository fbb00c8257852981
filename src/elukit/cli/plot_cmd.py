"""``elukit plot``: value and derivative of activations side by side."""

from __future__ import annotations

from pathlib import Path

import click

from elukit.cli._common import build_activations, parameter_options


@click.command(
    "plot",
    epilog=(
        "Examples:\n\n"
        "  elukit plot elu relu leaky_relu --alpha 1 -o activations.png\n\n"
        "  elukit plot elu:alpha=0.5 elu:alpha=2 celu:alpha=2 --x-min -6 -o elu.svg"
    ),
)
@click.argument("activations", nargs=-1, required=True)
@parameter_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("activations.png"), show_default=True, help="Figure file (.png, .svg, .pdf).")
@click.option("--x-min", type=float, default=-4.0, show_default=True, help="Left end of the x range.")
@click.option("--x-max", type=float, default=3.0, show_default=True, help="Right end of the x range.")
@click.option("--points", type=int, default=1001, show_default=True, help="Points on each curve.")
def plot_command(activations: tuple[str, ...], output: Path, x_min: float, x_max: float, points: int,
                 **params: float | None) -> None:
    """Plot f(x) and f'(x) of ACTIVATIONS (names, or name:param=value) to one figure."""
    from elukit.plots import plot_activations

    specs = build_activations(activations, params)
    path = plot_activations(specs, output, x_min=x_min, x_max=x_max, points=points)
    click.echo(f"wrote {path}")
