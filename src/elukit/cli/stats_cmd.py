"""``elukit stats``: Gaussian moments of activations."""

from __future__ import annotations

import math

import click

from elukit.cli._common import build_activations, echo_json, parameter_options

COLUMNS = ("mean", "second_moment", "variance", "derivative_mean", "derivative_second_moment",
           "zero_gradient_probability")


SCALE_OF = {"mean": "second_moment", "variance": "second_moment", "derivative_mean": "derivative_second_moment"}
"""The moment whose size sets the absolute precision of each cancelling one: E f is computed as a
difference of terms of size sqrt(E f^2), so it is known to about 1e-16 * sqrt(E f^2), not to 10
significant digits of itself (SELU's E f under N(0, 1) is 2.7e-17 by mpmath, computed 1.1e-16)."""


def shown(value: float, scale: float | None = None, digits: int = 10) -> str:
    """`value` to `digits` significant digits, relative to `scale` (a root-mean-square size)
    where given: a value below that precision is shown as 0."""
    if scale is not None and math.isfinite(value) and math.isfinite(scale) and scale > 0:
        if abs(value) < 0.5 * 10.0 ** (1 - digits) * scale:
            return "0"
    return f"{value:.{digits}g}"


@click.command(
    "stats",
    epilog=(
        "Examples:\n\n"
        "  elukit stats elu relu selu --mean 0 --std 1\n\n"
        "  elukit stats elu:alpha=0.5 celu:alpha=2 gelu --std 2 --json"
    ),
)
@click.argument("activations", nargs=-1, required=True)
@parameter_options
@click.option("--mean", type=float, default=0.0, show_default=True, help="Mean of z ~ N(mean, std^2).")
@click.option("--std", type=float, default=1.0, show_default=True, help="Standard deviation of z.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats_command(activations: tuple[str, ...], mean: float, std: float, as_json: bool, **params: float | None) -> None:
    """Moments E f(z), E f(z)^2, Var f(z), E f'(z), E f'(z)^2 and P[f'(z) = 0] for z ~ N(mean, std^2)."""
    from elukit.theory import moments

    rows = []
    for spec in build_activations(activations, params):
        result = moments(spec, mean, std)
        rows.append({"activation": spec.label(), **{c: float(getattr(result, c)) for c in COLUMNS}})
    if as_json:
        echo_json({"mean": mean, "std": std, "rows": rows})
        return
    click.echo(f"# z ~ N({mean:g}, {std:g}^2)")
    headers = ("activation", "E f", "E f^2", "Var f", "E f'", "E f'^2", "P[f'=0]")
    def scale(row, column):
        if column not in SCALE_OF:
            return None
        size = row[SCALE_OF[column]]
        return size if column == "variance" else math.sqrt(max(size, 0.0))

    cells = [[r["activation"], *(shown(r[c], scale(r, c)) for c in COLUMNS)] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for row in cells:
        click.echo("  ".join(c.rjust(w) for c, w in zip(row, widths)))
