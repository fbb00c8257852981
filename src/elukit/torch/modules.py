"""nn.Module wrappers: ELU, SELU, CELU, PELU, Activation(name, **params), AlphaDropout."""


from typing import Any, List  # noqa: UP035 - TorchScript reads typing.List, not list[...]

from elukit._registry import get
from elukit._spec import Activation as Spec
from elukit.torch import _compiled, _decompose, _ops, functional
from elukit.torch._torch import torch

nn = torch.nn


class Activation(nn.Module):
    """Any registered activation as a module: ``Activation("celu", alpha=2.0)``.

    Like PyTorch's activation modules it holds its configuration as plain attributes (nothing in
    the state_dict), pickles, and works under torch.jit.script and trace. Eager and torch.compile
    run the operator ``torch.ops.elukit.activation`` (or ``activation_`` with ``inplace=True``);
    torch.export and jit.trace record its core-ATen decomposition, and torch.jit.script scripts a
    `DecomposedActivation` where the spec has one (`elukit.torch._decompose`), so saved artifacts
    load without elukit.
    """

    __constants__ = ["name", "inplace", "exact"]
    __jit_unused_properties__ = ["spec"]
    name: str
    param_values: List[float]
    inplace: bool
    exact: bool

    def __init__(self, name: str = "elu", inplace: bool = False, exact: bool = False, **params: Any) -> None:
        super().__init__()
        spec = get(name, **params)
        if spec.torch is None:
            raise ValueError(f"activation {name!r} has no torch kernels")
        if not isinstance(inplace, bool) or not isinstance(exact, bool):
            raise TypeError(f"inplace and exact must be bools, got inplace={inplace!r}, exact={exact!r}")
        self.name = spec.name
        self.param_values = list(spec.parameters.values())
        self.inplace = inplace
        self.exact = exact

    @property
    def spec(self) -> Spec:
        """The bound spec this module evaluates (follows changes to its parameter attributes)."""
        return _ops.spec_for(self.name, tuple(self.parameter_values()))

    def parameter_values(self) -> List[float]:
        """The parameter values in the spec's order (what the operators take)."""
        return self.param_values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            return self._eager(x)
        if self.inplace:
            torch.ops.elukit.activation_(x, self.name, self.parameter_values(), self.exact)
            return x
        return torch.ops.elukit.activation(x, self.name, self.parameter_values(), 0, self.exact)

    def __prepare_scriptable__(self) -> nn.Module:
        """torch.jit.script scripts a `DecomposedActivation` in place of this module where the spec
        has a core-ATen decomposition (ELU family, piecewise linear): the saved script then needs
        no elukit. Other specs, and every spec under `functional.keep_operators`, script as this
        module, calling elukit's operator."""
        form = _decompose.script_form(self.spec)
        if functional.keeping_operators():  # the exact operators stay in the script
            return self
        return DecomposedActivation(self.name, form, self.inplace) if form else self

    @torch.jit.unused
    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        path = functional.serving_path(x, self.inplace)
        if path == functional.NATIVE:  # the operator from C++: it checks x and the parameters
            call = functional._NATIVE_INPLACE if self.inplace else functional._NATIVE_CALL
            return call(x, self.name, self.parameter_values(), self.exact)
        if path == functional.COMPILING:  # dynamo: the twin operators, no caches, no decomposition
            return _compiled.call(x, self.name, self.parameter_values(), self.inplace, self.exact)
        return functional.activation(x, self.spec, self.inplace, self.exact)  # eager, jit.trace, torch.export

    def _flags(self) -> str:
        return (", inplace=True" if self.inplace else "") + (", exact=True" if self.exact else "")

    def extra_repr(self) -> str:
        items = [repr(self.name)] + [f"{k}={v!r}" for k, v in self.spec.parameters.items()]
        return ", ".join(items) + self._flags()


class DecomposedActivation(nn.Module):
    """What a scripted elukit module becomes (`Activation.__prepare_scriptable__`): the spec's
    core-ATen decomposition (`elukit.torch._decompose`), within the bound documented there."""

    __constants__ = ["name", "inplace"]
    name: str
    form: List[float]
    inplace: bool

    def __init__(self, name: str, form: List[float], inplace: bool = False) -> None:
        super().__init__()
        self.name = name
        self.form = form
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = _decompose.decompose_form(x, self.form, 0)
        if self.inplace:
            return x.copy_(values)
        return values

    def extra_repr(self) -> str:
        return f"{self.name!r}, form={self.form}" + (", inplace=True" if self.inplace else "")


class ELU(Activation):
    r"""Drop-in for ``torch.nn.ELU``: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x)\ (x\le0)`, exact.

    Same arguments and attributes (`alpha`, `inplace`) and no state_dict entries, so checkpoints
    load both ways with strict=True. elukit refuses alpha <= 0 (PyTorch accepts it).
    """

    __constants__ = ["name", "inplace", "exact", "alpha"]
    alpha: float

    def __init__(self, alpha: float = 1.0, inplace: bool = False, exact: bool = False) -> None:
        super().__init__("elu", inplace, exact, alpha=alpha)
        self.alpha = float(alpha)

    def parameter_values(self) -> List[float]:
        return [self.alpha]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + self._flags()


class SELU(Activation):
    r"""Drop-in for ``torch.nn.SELU``: :math:`\lambda\,\mathrm{ELU}(x; \alpha)` with the
    self-normalizing constants, exact."""

    def __init__(self, inplace: bool = False, exact: bool = False) -> None:
        super().__init__("selu", inplace, exact)

    def extra_repr(self) -> str:
        return self._flags().removeprefix(", ")


class CELU(Activation):
    r"""Drop-in for ``torch.nn.CELU``: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x/\alpha)\ (x\le0)`, exact."""

    __constants__ = ["name", "inplace", "exact", "alpha"]
    alpha: float

    def __init__(self, alpha: float = 1.0, inplace: bool = False, exact: bool = False) -> None:
        super().__init__("celu", inplace, exact, alpha=alpha)
        self.alpha = float(alpha)

    def parameter_values(self) -> List[float]:
        return [self.alpha]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + self._flags()


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
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():  # shapes are tensors while tracing
            self._check_channels(x)
        return functional.pelu(x, self.log_a.exp(), self.log_b.exp(), self.channel_dim)

    @torch.jit.unused
    def _check_channels(self, x: torch.Tensor) -> None:
        if self.num_parameters > 1 and (x.dim() < 2 or x.shape[self.channel_dim] != self.num_parameters):
            raise ValueError(f"PELU has {self.num_parameters} channels but input shape {tuple(x.shape)} has "
                             f"{x.shape[self.channel_dim] if x.dim() > 1 else 'no'} along dim {self.channel_dim}")

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


__all__ = ["CELU", "ELU", "PELU", "SELU", "Activation", "AlphaDropout", "DecomposedActivation"]
