"""nn.Module wrappers: ELU, SELU, CELU, PELU, Activation(name, **params), AlphaDropout."""

from __future__ import annotations

from typing import Any

from elukit._registry import get
from elukit.torch import functional
from elukit.torch._torch import torch

nn = torch.nn


class Activation(nn.Module):
    """Any registered activation as a module: ``Activation("celu", alpha=2.0)``.

    The spec's name and parameters travel in the state_dict (as extra state) and through pickle.
    """

    def __init__(self, name: str = "elu", inplace: bool = False, exact: bool = False, **params: Any) -> None:
        super().__init__()
        self.spec = get(name, **params)
        if self.spec.torch is None:
            raise ValueError(f"activation {name!r} has no torch kernels")
        self.inplace = inplace
        self.exact = exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.activation(x, self.spec, self.inplace, self.exact)

    def extra_repr(self) -> str:
        items = [f"{k}={v:.17g}" for k, v in self.spec.parameters.items()]
        if type(self) is Activation:
            items.insert(0, repr(self.spec.name))
        if self.inplace:
            items.append("inplace=True")
        if self.exact:
            items.append("exact=True")
        return ", ".join(items)

    def get_extra_state(self) -> dict[str, Any]:
        return {"name": self.spec.name, "parameters": self.spec.parameters}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.spec = get(state["name"], **state["parameters"])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["spec"] = (self.spec.name, self.spec.parameters)  # specs hold functions: pickle by name
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        name, parameters = state["spec"]
        state["spec"] = get(name, **parameters)
        self.__dict__.update(state)


class ELU(Activation):
    def __init__(self, alpha: float = 1.0, inplace: bool = False, exact: bool = False) -> None:
        super().__init__("elu", inplace, exact, alpha=alpha)


class SELU(Activation):
    def __init__(self, inplace: bool = False, exact: bool = False) -> None:
        super().__init__("selu", inplace, exact)


class CELU(Activation):
    def __init__(self, alpha: float = 1.0, inplace: bool = False, exact: bool = False) -> None:
        super().__init__("celu", inplace, exact, alpha=alpha)


class PELU(nn.Module):
    r"""Parametric ELU with learnable positive per-channel a, b (Trottier et al. 2017).

    :math:`f(x) = (a/b)x\ (x>0),\ a\,\mathrm{expm1}(x/b)\ (x\le0)`. a and b are stored as
    log-parameters, so they stay positive under any optimizer step.

    Args:
        num_parameters: channels (1 = shared). alpha, beta: initial a, b (floats, or tensors of
            shape (num_parameters,)). channel_dim: the input dimension holding the channels.
    """

    def __init__(self, num_parameters: int = 1, alpha: float | torch.Tensor = 1.0, beta: float | torch.Tensor = 1.0,
                 channel_dim: int = 1) -> None:
        super().__init__()
        if not isinstance(num_parameters, int) or num_parameters < 1:
            raise ValueError(f"num_parameters must be an integer >= 1, got {num_parameters!r}")
        self.num_parameters = num_parameters
        self.channel_dim = channel_dim
        self.log_a = nn.Parameter(self._initial("alpha", alpha).log())
        self.log_b = nn.Parameter(self._initial("beta", beta).log())

    def _initial(self, name: str, value: float | torch.Tensor) -> torch.Tensor:
        tensor = torch.as_tensor(value, dtype=torch.get_default_dtype())
        if tensor.dim() == 0:
            tensor = tensor.expand(self.num_parameters).clone()
        if tensor.shape != (self.num_parameters,):
            raise ValueError(f"PELU {name} has shape {tuple(tensor.shape)} but num_parameters={self.num_parameters} "
                             f"needs shape ({self.num_parameters},)")
        if not torch.all(torch.isfinite(tensor) & (tensor > 0)):
            raise ValueError(f"PELU {name} must be finite and > 0, got {tensor.tolist()}")
        return tensor

    @property
    def a(self) -> torch.Tensor:
        return self.log_a.exp()

    @property
    def b(self) -> torch.Tensor:
        return self.log_b.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_parameters > 1 and (x.dim() < 2 or x.shape[self.channel_dim] != self.num_parameters):
            raise ValueError(f"PELU has {self.num_parameters} channels but input shape {tuple(x.shape)} has "
                             f"{x.shape[self.channel_dim] if x.dim() > 1 else 'no'} along dim {self.channel_dim}")
        return functional.pelu(x, self.a, self.b, self.channel_dim)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}, channel_dim={self.channel_dim}"


class AlphaDropout(nn.Module):
    """Alpha dropout for any ELU-family activation, with constants from `elukit.theory`.

    Dropped units are set to the activation's negative saturation value and the result is
    corrected by ``a*x + b`` so that inputs with `mean` and `variance` keep both. Identity in
    eval mode. PyTorch's nn.AlphaDropout hard-codes SELU's constants.
    """

    def __init__(self, p: float = 0.05, activation: str = "selu", mean: float = 0.0, variance: float = 1.0,
                 **params: Any) -> None:
        super().__init__()
        from elukit.theory import alpha_dropout_constants

        if not (0.0 <= p < 1.0):
            raise ValueError(f"p must be in [0, 1), got {p!r}")
        self.p = p
        self.activation = get(activation, **params).label()
        self.a, self.b, self.saturation = alpha_dropout_constants(p, get(activation, **params), mean, variance)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return torch.where(keep, x, torch.full_like(x, self.saturation)) * self.a + self.b

    def extra_repr(self) -> str:
        return f"p={self.p}, activation={self.activation!r}, a={self.a:.6g}, b={self.b:.6g}"


__all__ = ["CELU", "ELU", "PELU", "SELU", "Activation", "AlphaDropout"]
