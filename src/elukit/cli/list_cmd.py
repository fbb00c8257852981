"""``elukit list``: the registered activations, their parameters and formulas."""

from __future__ import annotations

import re

import click

from elukit import _native
from elukit._registry import activations, get
from elukit.cli._common import echo_json


_SYMBOLS = {r"\le": "<=", r"\ge": ">=", r"\quad": ";", r"\,": "*", r"\ ": " ", r"\cdot": "*"}


def plain_formula(latex: str) -> str:
    r"""A spec's LaTeX formula as plain text for a terminal: ``\alpha\,\mathrm{expm1}(x)`` becomes
    ``alpha*expm1(x)``, ``\tfrac{x}{2}`` ``(x/2)``, ``e^{-x}`` ``e^(-x)``, ``\le`` ``<=``."""
    text = re.sub(r"\\[td]?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1/\2)", latex)
    text = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", text)
    text = re.sub(r"\\mathrm\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\^\{([^{}]*)\}", r"^(\1)", text)
    text = re.sub(r",\s*\\quad", ";", text)
    for symbol, plain in _SYMBOLS.items():
        text = text.replace(symbol, plain)
    text = re.sub(r"\\([A-Za-z]+)(?=\\[A-Za-z])", r"\1*", text)  # \lambda\alpha -> lambda*alpha
    text = re.sub(r"\\([A-Za-z]+)", r"\1", text)
    text = re.sub(r"\s*;\s*", "; ", text)
    return re.sub(r"\s+", " ", text).strip()


@click.command(
    "list",
    epilog="Examples:\n\n  elukit list\n\n  elukit list --json",
)
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (name, parameters, formula in LaTeX and as text, whether compiled kernels serve it).")
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
            "formula_text": plain_formula(spec.formula),
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
        click.echo(f"{'':<{width}}  {row['formula_text']}")
        if row["compiled_kernels"]:
            click.echo(f"{'':<{width}}  float32/float64: compiled kernels")
