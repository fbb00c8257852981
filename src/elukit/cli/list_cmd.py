"""``elukit list``: the registered activations, their parameters and formulas."""

from __future__ import annotations

import click

from elukit import _native
from elukit._registry import activations, get
from elukit.cli._common import echo_json


@click.command(
    "list",
    epilog="Examples:\n\n  elukit list\n\n  elukit list --json",
)
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (name, parameters, formula, whether compiled kernels serve it).")
def list_command(as_json: bool) -> None:
    """List the activations, their parameters (with defaults) and formulas."""
    rows = []
    for name in activations():
        spec = get(name)
        rows.append({
            "name": name,
            "description": spec.description,
            "parameters": {p.name: p.default for p in spec.params},
            "formula": spec.formula,
            "compiled_kernels": _native.AVAILABLE and _native.kernels_for(spec) is not None,
        })
    if as_json:
        echo_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        params = ", ".join(f"{k}={v:.17g}" for k, v in row["parameters"].items()) or "-"
        click.echo(f"{row['name']:<{width}}  {row['description']}")
        click.echo(f"{'':<{width}}  parameters: {params}")
        click.echo(f"{'':<{width}}  {row['formula']}")
        if row["compiled_kernels"]:
            click.echo(f"{'':<{width}}  float32/float64: compiled kernels")
