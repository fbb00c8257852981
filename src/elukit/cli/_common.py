"""Options shared by verbs: activation parameters taken from the registry, and JSON output."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from elukit._registry import activations, get, parse
from elukit._spec import Activation


def invoked_command() -> str:
    """The running verb as a command that reproduces it: `elukit VERB` and every option the user
    gave (on the command line or through the environment), in the order of the verb's options;
    the same whether elukit was called from a shell, `python -m` or a test's CliRunner."""
    import shlex

    context = click.get_current_context()
    words = ["elukit", context.info_name or context.command.name or ""]
    for param in context.command.params:
        if param.name is None or context.get_parameter_source(param.name) in (
                click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP, None):
            continue
        value = context.params.get(param.name)
        if isinstance(param, click.Argument):
            words += [str(v) for v in value] if isinstance(value, (tuple, list)) else [str(value)]
        elif isinstance(param, click.Option) and param.is_flag:
            words.append(max(param.opts if value or not param.secondary_opts else param.secondary_opts, key=len))
        else:
            words += [max(param.opts, key=len), str(value)]
    return shlex.join(words)


def parameter_names() -> list[str]:
    """Every parameter name used by a registered activation (e.g. alpha, scale, slope)."""
    names: list[str] = []
    for name in activations():
        for param in get(name).params:
            if param.name not in names:
                names.append(param.name)
    return names


def parameter_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--alpha``, ``--scale``, ``--slope``... (one per registry parameter name)."""
    for name in reversed(parameter_names()):
        users = [a for a in activations() if any(p.name == name for p in get(a).params)]
        function = click.option(
            f"--{name.replace('_', '-')}", name, type=float, default=None,
            help=f"{name} for the activations that have it ({', '.join(users)}).",
        )(function)
    return function


def build_activations(names: Sequence[str], given: dict[str, float | None]) -> list[Activation]:
    """Activations from names (``elu`` or ``elu:alpha=0.5``) and the ``--param`` options.

    A ``--param`` applies to every named activation that has it; one that no named activation
    has is an error rather than silently ignored.
    """
    chosen = [parse(name) for name in names]
    options = {k: v for k, v in given.items() if v is not None}
    for key in options:
        if not any(any(p.name == key for p in spec.params) for spec in chosen):
            takes = "; ".join(
                f"{s.name} takes {', '.join('--' + p.name for p in s.params)}" if s.params else f"{s.name} has no parameters"
                for s in dict((s.name, s) for s in chosen).values())
            raise ValueError(f"--{key.replace('_', '-')} does not apply here: {takes}")
    result = []
    for spec in chosen:
        mine = {k: v for k, v in options.items() if any(p.name == k for p in spec.params)}
        result.append(spec.bind(**mine) if mine else spec)
    warn_not_self_normalising(result)
    return result


def _keeps_unit_gaussian(spec: Activation) -> tuple[bool, Any]:
    """Whether `spec` maps N(0, 1) to mean 0 and second moment 1 (to 1e-9), and its moments."""
    from elukit.theory import moments

    m = moments(spec, mean=0.0, std=1.0)
    return bool(abs(float(m.mean)) < 1e-9 and abs(float(m.second_moment) - 1.0) < 1e-9), m


def warn_not_self_normalising(specs: Sequence[Activation]) -> None:
    """One warning line on stderr for each activation whose default parameters self-normalise
    (N(0, 1) -> mean 0, variance 1: SELU's alpha and scale) but whose given parameters do not.

    ``selu --alpha 2`` is still computed (it is scale * ELU(alpha), which `elukit.theory` uses for
    other fixed points), but it is no longer the self-normalising SELU, and nothing else says so
    (issue 22)."""
    for spec in specs:
        defaults = {p.name: p.default for p in spec.params}
        if spec.gaussian is None or spec.parameters == defaults:
            continue
        if not _keeps_unit_gaussian(get(spec.name))[0]:
            continue
        keeps, m = _keeps_unit_gaussian(spec)
        if keeps:
            continue
        given = ", ".join(f"{k}={v:g}" for k, v in spec.parameters.items())
        default = ", ".join(f"{k}={v:.6g}" for k, v in defaults.items())
        click.echo(f"elukit: warning: {spec.name} with {given} is not self-normalising: it maps N(0, 1) to mean "
                   f"{float(m.mean):+.4g}, variance {float(m.variance):.4g} ({spec.name}'s own {default} keep 0 "
                   f"and 1); theory.self_normalizing_constants(mean, variance) gives the pair for another fixed "
                   f"point", err=True)


PACKAGE_NAMES = {"sklearn": "scikit-learn", "ml_dtypes": "ml_dtypes", "mpmath": "mpmath", "torch": "torch",
                 "matplotlib": "matplotlib", "mnist1d": "mnist1d"}
"""pip's name of each module a verb may need (where it differs from the import name)."""


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of `modules` that cannot be imported (imported for real: a broken install counts)."""
    missing = []
    for module in dict.fromkeys(modules):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def require(verb: str, modules: Sequence[str], extra: str) -> None:
    """Raise one ImportError listing every module `verb` needs and lacks, naming the extra that
    installs all of them, before the verb does any work (not after a 30-epoch study)."""
    missing = missing_modules(modules)
    if missing:
        names = ", ".join(PACKAGE_NAMES.get(m, m) for m in missing)
        raise ImportError(f"elukit {verb} needs {names}, not installed: pip install 'elukit[{extra}]'")


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=1, allow_nan=True))
