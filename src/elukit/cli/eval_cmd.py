"""``elukit eval``: a table of x, f(x), f'(x) (and f''(x))."""

from __future__ import annotations

import click
import numpy as np

from elukit.cli._common import build_activations, echo_json, parameter_options

DTYPES = ("float16", "bfloat16", "float32", "float64")


def _format(value: float, digits: int) -> str:
    return f"{value:.{digits}g}"


@click.command(
    "eval",
    epilog=(
        "Examples:\n\n"
        "  elukit eval elu --alpha 1 -- 0.11 -2.2 0 50.2 33.5 -0.6\n\n"
        "  elukit eval celu:alpha=3 --dtype float32 --second -- -1e-8 -20\n\n"
        "  elukit eval selu --json -- -1 0 1\n\n"
        "Put -- before the points so that negative numbers are not read as options."
    ),
)
@click.argument("activation")
@click.argument("points", nargs=-1, type=float, required=True)
@parameter_options
@click.option("--dtype", type=click.Choice(DTYPES), default="float64", show_default=True,
              help="Evaluate in this dtype (bfloat16 needs ml_dtypes).")
@click.option("--second", is_flag=True, help="Also print the second derivative.")
@click.option("--digits", type=click.IntRange(1, 17), default=8, show_default=True,
              help="Significant digits in the table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with full precision.")
def eval_command(activation: str, points: tuple[float, ...], dtype: str, second: bool, digits: int,
                 as_json: bool, **params: float | None) -> None:
    """Evaluate ACTIVATION (a name, or name:param=value) and its derivative at POINTS."""
    from elukit.accuracy import dtype_from_name

    (spec,) = build_activations([activation], params)
    x = np.asarray(points, dtype=np.float64).astype(dtype_from_name(dtype))
    columns = {
        "x": x.astype(np.float64),
        "f(x)": np.asarray(spec.value(x)).astype(np.float64),
        "f'(x)": np.asarray(spec.derivative(x)).astype(np.float64),
    }
    if second:
        columns["f''(x)"] = np.asarray(spec.second_derivative(x)).astype(np.float64)
    if as_json:
        echo_json({
            "activation": spec.name,
            "parameters": spec.parameters,
            "dtype": dtype,
            "rows": [{k: float(v[i]) for k, v in columns.items()} for i in range(len(x))],
        })
        return
    cells = [[_format(float(v[i]), digits) for v in columns.values()] for i in range(len(x))]
    widths = [max(len(h), *(len(r[j]) for r in cells)) for j, h in enumerate(columns)]
    click.echo(f"# {spec!r}, {dtype}")
    click.echo("  ".join(h.rjust(w) for h, w in zip(columns, widths)))
    for row in cells:
        click.echo("  ".join(c.rjust(w) for c, w in zip(row, widths)))


__all__ = ["eval_command"]
