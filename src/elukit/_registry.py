"""Find activation specs by name: `get`, `activations`, `register`, `parse`."""

from __future__ import annotations

from typing import Any

from elukit._families.elu import CELU, ELU, SELU
from elukit._families.gaussian import GELU
from elukit._families.rectifier import LEAKY_RELU, RELU
from elukit._families.sigmoidal import SIGMOID, SILU, SOFTPLUS, TANH
from elukit._spec import Activation

_REGISTRY: dict[str, Activation] = {}


def register(spec: Activation) -> Activation:
    """Add a spec to the registry (its name must be new); returns it for use as a decorator."""
    if not isinstance(spec, Activation):
        raise TypeError(f"spec must be an Activation, got {type(spec).__name__}")
    if spec.name in _REGISTRY:
        raise ValueError(f"an activation named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


for _spec in (ELU, SELU, CELU, RELU, LEAKY_RELU, SIGMOID, TANH, GELU, SILU, SOFTPLUS):
    register(_spec)


def activations() -> list[str]:
    """The registered activation names, in registration order (ELU family first)."""
    return list(_REGISTRY)


def get(name: str | Activation, **params: Any) -> Activation:
    """The activation `name` with validated parameters, e.g. ``get("elu", alpha=0.5)``.

    An `Activation` passed as `name` is re-bound with `params`. An unknown name raises
    ValueError listing the known names; a bad parameter raises ValueError naming it.
    """
    if isinstance(name, Activation):
        return name.bind(**params)
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown activation {name!r}; known activations: {', '.join(_REGISTRY)}")
    return _REGISTRY[key].bind(**params)


def parse(text: str) -> Activation:
    """An activation from ``"name"`` or ``"name:param=value,param=value"`` (CLI syntax).

    >>> parse("elu:alpha=0.5")
    Activation('elu', alpha=0.5)
    """
    name, _, rest = text.partition(":")
    params: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected param=value in {text!r}, got {item!r}")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"parameter {key.strip()!r} in {text!r} must be a number, got {value!r}") from None
    return get(name, **params)
