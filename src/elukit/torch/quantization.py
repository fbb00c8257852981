"""FX int8 quantization of models built with elukit.torch, lowered as torch.nn's own models are.

PyTorch's FX quantization (``torch.ao.quantization.quantize_fx``) matches activation modules by
their exact type and functions by identity: its backend configuration knows ``torch.nn.ELU`` and
``torch.nn.functional.elu`` (lowered to the quantized ELU, ``QuantizedELU`` /
``torch.ops.quantized.elu``) and leaves the rest in float between dequantize/quantize pairs
(``torch.nn.SELU`` and ``CELU`` included). elukit's modules and functions are neither, so
`prepare_fx` first maps them to torch's equivalents (`torch_equivalent`): ELU, SELU and CELU
modules to ``torch.nn.ELU`` / ``SELU`` / ``CELU`` with the same parameters, and calls of elukit's
operator for them (``elukit.torch.functional.elu`` etc. inside a forward) to
``torch.nn.functional.elu`` / ``selu`` / ``celu``. The quantized model then holds the same
quantized ops as the torch.nn model: ELU runs torch's int8 kernel, SELU and CELU run in float as
torch.nn's do. Other elukit activations are left as they are (float, like any unknown op).

In int8 the result is torch's quantized kernel's (the output is rounded to a 256-step grid, far
coarser than any float difference between elukit's kernels and torch's); calibration observes
torch's float functions, which differ from elukit's by at most a few float ulp.
"""

from __future__ import annotations

import copy
from typing import Any

from elukit.torch import _ops
from elukit.torch._torch import torch
from elukit.torch.modules import Activation

_MODULES = {"elu": lambda v, inplace: torch.nn.ELU(v[0], inplace), "selu": lambda v, inplace: torch.nn.SELU(inplace),
            "celu": lambda v, inplace: torch.nn.CELU(v[0], inplace)}
_FUNCTIONS = {"elu": lambda v: (torch.nn.functional.elu, {"alpha": v[0]}), "selu": lambda v: (torch.nn.functional.selu, {}),
              "celu": lambda v: (torch.nn.functional.celu, {"alpha": v[0]})}


def _swap_modules(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if type(child).__module__ == "elukit.torch.modules" and isinstance(child, Activation) and child.name in _MODULES:
            setattr(module, name, _MODULES[child.name](list(child.parameter_values()), child.inplace))
        else:
            _swap_modules(child)


def torch_equivalent(model: torch.nn.Module) -> torch.fx.GraphModule:
    """A symbolically traced copy of `model` in which elukit's ELU, SELU and CELU modules are
    torch.nn's and calls of elukit's operator for them are torch.nn.functional's (see the module
    docstring); `model` is left unchanged."""
    model = copy.deepcopy(model)
    _swap_modules(model)
    traced = torch.fx.symbolic_trace(model)
    for node in list(traced.graph.nodes):
        if node.op != "call_function" or node.target not in (_ops.ACTIVATION, _ops.ACTIVATION_INPLACE):
            continue
        inplace = node.target is _ops.ACTIVATION_INPLACE
        x, name, values = node.args[0], node.args[1], list(node.args[2])
        order = 0 if inplace else (node.args[3] if len(node.args) > 3 else node.kwargs.get("order", 0))
        if name not in _FUNCTIONS or order != 0:
            continue
        function, kwargs = _FUNCTIONS[name](values)
        with traced.graph.inserting_after(node):
            replacement = traced.graph.call_function(function, (x,), {**kwargs, "inplace": inplace})
        node.replace_all_uses_with(replacement)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.recompile()
    return traced


def prepare_fx(model: torch.nn.Module, qconfig_mapping: Any, example_inputs: tuple, **kwargs: Any) -> torch.fx.GraphModule:
    """``torch.ao.quantization.quantize_fx.prepare_fx`` of `torch_equivalent(model)`: then calibrate
    and ``convert_fx`` as usual; elukit's ELU family is lowered as torch.nn's is."""
    from torch.ao.quantization.quantize_fx import prepare_fx as torch_prepare_fx

    return torch_prepare_fx(torch_equivalent(model), qconfig_mapping, example_inputs, **kwargs)


__all__ = ["prepare_fx", "torch_equivalent"]
