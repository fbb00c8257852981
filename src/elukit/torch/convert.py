"""Swap activation modules anywhere in a model."""

from __future__ import annotations

from typing import Any

from elukit.torch._torch import torch
from elukit.torch.modules import Activation


def replace_activations(model: torch.nn.Module, to: str = "elu", match: tuple[type, ...] = (torch.nn.ReLU,),
                        **params: Any) -> tuple[torch.nn.Module, list[tuple[str, str, str]]]:
    """Replace every submodule that is an instance of `match` by ``Activation(to, **params)``.

    Works through nested modules, nn.Sequential, nn.ModuleList and nn.ModuleDict (any child
    reached by named_modules). Returns the model (changed in place) and a list of
    (qualified name, old module repr, new module repr).
    """
    if not isinstance(match, tuple) or not all(isinstance(m, type) for m in match):
        raise TypeError(f"match must be a tuple of module classes, got {match!r}")
    replaced: list[tuple[str, str, str]] = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, match):
                new = Activation(to, **params)
                setattr(parent, child_name, new) if not isinstance(parent, torch.nn.ModuleDict) else parent.update({child_name: new})
                qualified = f"{parent_name}.{child_name}" if parent_name else child_name
                replaced.append((qualified, repr(child), repr(new)))
    return model, replaced
