"""``elukit stats``: Gaussian moments of activations."""

from __future__ import annotations

import click

from elukit.cli._common import build_activations, echo_json, parameter_options

COLUMNS = ("mean", "second_moment", "variance", "derivative_mean", "derivative_second_moment",
           "zero_gradient_probability")


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
    cells = [[r["activation"], *(f"{r[c]:.10g}" for c in COLUMNS)] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for row in cells:
        click.echo("  ".join(c.rjust(w) for c, w in zip(row, widths)))
