"""``elukit audit``: elukit against PyTorch, the textbook formula and jax.nn, in ULPs."""

from __future__ import annotations

import click

from elukit.cli._common import echo_json


@click.command(
    "audit",
    epilog="Examples:\n\n  elukit audit\n\n  elukit audit --points 100000 --dtype float32 --json\n\n"
           "  elukit audit --activation elu:alpha=0.5 celu:alpha=3",
)
@click.option("--points", type=click.IntRange(100, 10**7), default=20_000, show_default=True,
              help="Test points per dtype (random bit patterns, the exponential regime, edge cases).")
@click.option("--dtype", "dtypes", multiple=True, type=click.Choice(["float16", "bfloat16", "float32", "float64"]),
              default=("float32", "float64"), show_default=True, help="Repeat for several dtypes.")
@click.option("--activation", "activations", multiple=True, help="name or name:param=value (default: elu, selu, celu:alpha=3).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def audit_command(points: int, dtypes: tuple[str, ...], activations: tuple[str, ...], as_json: bool,
                  quiet: bool) -> None:
    """Max and 99.9th-percentile ULP error and share correctly rounded of f, f', f'' against mpmath."""
    from elukit._registry import parse
    from elukit.accuracy import AUDIT_ROWS, audit, audit_skipped, dtype_from_name, format_audit, progress_line
    from elukit.cli._common import require

    require("audit", ["mpmath"], "accuracy")
    for name in dtypes:  # bfloat16 without ml_dtypes: one line now, not after the float32 rows
        dtype_from_name(name)
    rows = tuple((s.name, s.parameters) for s in map(parse, activations)) if activations else AUDIT_ROWS
    results = audit(rows, list(dtypes), points, progress=None if quiet else progress_line("elukit audit"))
    skipped = [f"{label} rows skipped: {why}" for label, why in audit_skipped().items()]
    if as_json:
        echo_json(results)
        for line in skipped:
            click.echo(line, err=True)
    else:
        click.echo(format_audit(results))
        for line in skipped:
            click.echo(line)
