"""Kaiming-style initialization with the gains derived in `elukit.theory` (PyTorch has none for
ELU, CELU, GELU or SiLU, and an empirical 3/4 for SELU)."""

from __future__ import annotations

import math
from typing import Any

from elukit._registry import get
from elukit._spec import Activation as Spec
from elukit.theory import gain
from elukit.torch._torch import torch

_TORCH_NAMES = {torch.nn.ReLU: "relu", torch.nn.LeakyReLU: "leaky_relu", torch.nn.ELU: "elu", torch.nn.SELU: "selu",
                torch.nn.CELU: "celu", torch.nn.GELU: "gelu", torch.nn.SiLU: "silu", torch.nn.Tanh: "tanh",
                torch.nn.Sigmoid: "sigmoid", torch.nn.Softplus: "softplus"}


def spec_of(module: torch.nn.Module) -> Spec | None:
    """The elukit spec of an activation module (elukit's or PyTorch's), else None."""
    from elukit.torch.modules import Activation

    if isinstance(module, Activation):
        return module.spec
    for cls, name in _TORCH_NAMES.items():
        if type(module) is cls:
            if cls is torch.nn.LeakyReLU:
                return get(name, slope=module.negative_slope)
            if cls in (torch.nn.ELU, torch.nn.CELU):
                return get(name, alpha=module.alpha)
            return get(name)
    return None


def _fan(weight: torch.Tensor, mode: str) -> int:
    if weight.dim() < 2:
        raise ValueError(f"weight must have at least 2 dimensions, got shape {tuple(weight.shape)}")
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    if mode == "fan_in":
        return weight.shape[1] * receptive
    if mode == "fan_out":
        return weight.shape[0] * receptive
    raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")


def kaiming_normal_(weight: torch.Tensor, activation: str | Spec = "relu", mode: str = "fan_in",
                    generator: torch.Generator | None = None, **params: Any) -> torch.Tensor:
    """Fill `weight` from N(0, (g / sqrt(fan))^2) with g = `elukit.theory.gain(activation)`."""
    std = gain(get(activation, **params)) / math.sqrt(_fan(weight, mode))
    with torch.no_grad():
        return weight.normal_(0.0, std, generator=generator)


def kaiming_uniform_(weight: torch.Tensor, activation: str | Spec = "relu", mode: str = "fan_in",
                     generator: torch.Generator | None = None, **params: Any) -> torch.Tensor:
    """Fill `weight` from U(-b, b), b = sqrt(3) g / sqrt(fan) (same variance as kaiming_normal_)."""
    bound = math.sqrt(3.0) * gain(get(activation, **params)) / math.sqrt(_fan(weight, mode))
    with torch.no_grad():
        return weight.uniform_(-bound, bound, generator=generator)


def init_(model: torch.nn.Module, uniform: bool = False, generator: torch.Generator | None = None
          ) -> list[tuple[str, str, float]]:
    """Initialize each Linear/Conv followed by an activation with that activation's gain.

    "Followed" means the next activation module in registration order (a normalization or
    dropout layer in between is skipped). Biases are set to zero. Returns (layer name,
    activation label, gain) for each layer initialized.
    """
    weighted = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    pending: list[tuple[str, torch.nn.Module]] = []
    done = []
    for name, module in model.named_modules():
        if isinstance(module, weighted):
            pending.append((name, module))
            continue
        spec = spec_of(module)
        if spec is None or not pending:
            continue
        for layer_name, layer in pending:
            fill = kaiming_uniform_ if uniform else kaiming_normal_
            fill(layer.weight, spec, generator=generator)
            if layer.bias is not None:
                with torch.no_grad():
                    layer.bias.zero_()
            done.append((layer_name, spec.label(), gain(spec)))
        pending = []
    return done


def edge_of_chaos_(model: torch.nn.Module, bias_variance: float = 0.05, generator: torch.Generator | None = None
                   ) -> list[tuple[str, str, float, float]]:
    r"""Initialize each Linear followed by an activation on that activation's edge of chaos.

    Weights ~ N(0, sigma_w^2 / fan_in) and biases ~ N(0, sigma_b^2) with sigma_b^2 = `bias_variance`
    and sigma_w^2 from `elukit.theory.edge_of_chaos` (chi_1 = sigma_w^2 E[f'(z)^2] = 1 at the
    variance fixed point q*), so that correlations between inputs neither collapse nor decorrelate
    exponentially with depth (Schoenholz et al. 2017; Hayou et al. 2019). "Followed" means the
    next activation module in registration order; other layers are left as they are.

    Args:
        model: any module; its Linear layers followed by a registered activation are initialized.
        bias_variance: sigma_b^2, finite and >= 0. ReLU and Leaky ReLU have an EOC only at 0.
        generator: optional torch.Generator for reproducibility.
    Returns: (layer name, activation label, sigma_w^2, sigma_b^2) per layer initialized.
    Raises: ValueError (naming the activation and why) where the EOC has no point at `bias_variance`.
    """
    from elukit.theory import edge_of_chaos

    pending: list[tuple[str, torch.nn.Module]] = []
    done = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            pending.append((name, module))
            continue
        spec = spec_of(module)
        if spec is None or not pending:
            continue
        eoc = edge_of_chaos(spec, bias_variance)
        weight_variance = float(eoc.weight_variance)
        if not math.isfinite(weight_variance):
            raise ValueError(f"{spec.label()} has no edge of chaos at bias_variance={bias_variance}: {eoc.reason}")
        for layer_name, layer in pending:
            with torch.no_grad():
                layer.weight.normal_(0.0, math.sqrt(weight_variance / layer.weight.shape[1]), generator=generator)
                if layer.bias is not None:
                    layer.bias.normal_(0.0, math.sqrt(bias_variance), generator=generator)
            done.append((layer_name, spec.label(), weight_variance, float(bias_variance)))
        pending = []
    return done
