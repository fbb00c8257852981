"""Swap activation modules anywhere in a model."""

from __future__ import annotations

from typing import Any

from elukit._registry import get
from elukit.torch._torch import torch
from elukit.torch.modules import CELU, ELU, SELU, Activation

_DROP_IN = {"elu": ELU, "selu": SELU, "celu": CELU}
"""Targets with a drop-in class of their own; every other target becomes an `Activation`."""

_SAME_FAMILY = {torch.nn.ELU: "elu", torch.nn.SELU: "selu", torch.nn.CELU: "celu", ELU: "elu", SELU: "selu",
                CELU: "celu"}
"""Modules whose parameters carry over when replaced by their own family (nn.ELU(0.5) -> ELU(0.5))."""


def _replacement(old: torch.nn.Module, to: str, params: dict[str, Any]) -> torch.nn.Module:
    target = get(to).name
    carried = dict(params)
    if _SAME_FAMILY.get(type(old)) == target and hasattr(old, "alpha"):
        carried.setdefault("alpha", float(old.alpha))
    inplace = bool(getattr(old, "inplace", False))
    if target in _DROP_IN:
        return _DROP_IN[target](inplace=inplace, **carried)
    return Activation(target, inplace=inplace, **carried)


def replace_activations(model: torch.nn.Module, to: str = "elu", match: tuple[type, ...] = (torch.nn.ReLU,),
                        **params: Any) -> tuple[torch.nn.Module, list[tuple[str, str, str]]]:
    """Replace every submodule that is an instance of `match` by elukit's module for `to`.

    `to` = "elu", "selu" or "celu" gives the drop-in class (`ELU`, `SELU`, `CELU`), any other
    registered name an ``Activation(to, ...)``. `params` set the target's parameters; a module of
    the same family keeps its own (``nn.ELU(alpha=0.5)`` becomes ``ELU(alpha=0.5)``), and every
    replacement keeps the old module's ``inplace``. Works through nested modules, nn.Sequential,
    nn.ModuleList and nn.ModuleDict (any child reached by named_modules); the state_dict keys do
    not change. Returns the model (changed in place) and a list of (qualified name, old module
    repr, new module repr).
    """
    if not isinstance(match, tuple) or not all(isinstance(m, type) for m in match):
        raise TypeError(f"match must be a tuple of module classes, got {match!r}")
    _replacement(torch.nn.Identity(), to, params)  # bad `to` or parameters fail before anything changes
    replaced: list[tuple[str, str, str]] = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, match):
                new = _replacement(child, to, params)
                setattr(parent, child_name, new) if not isinstance(parent, torch.nn.ModuleDict) else parent.update({child_name: new})
                qualified = f"{parent_name}.{child_name}" if parent_name else child_name
                replaced.append((qualified, repr(child), repr(new)))
    return model, replaced
