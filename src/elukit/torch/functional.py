r"""Exact activations as PyTorch autograd functions, built from the `Activation` specs.

Precision policy (the same as the NumPy backend's): float16, bfloat16 and float32 tensors are
evaluated in float64 and rounded once -- for float16/bfloat16 through a round-to-odd float32
step, because PyTorch's own float64 -> float16/bfloat16 cast goes through float32 and rounds
twice. float64 tensors are evaluated in float64 by default; ``exact=True`` rounds them correctly
(the compiled double-double kernels below, else the NumPy backend in extended precision, CPU only,
no torch.compile).

ELU, SELU and CELU on CPU float32/float64 tensors run the compiled kernels of `elukit._native`
when elukit was built with them (one vectorised pass, multithreaded with torch's thread count).
float32: evaluated in double with a rounding test, correctly rounded on every sampled input, in
both modes. float64: by default the fast table-driven kernels (faithful, <= 0.52 ulp, >= 99.9%
correctly rounded, about F.elu's speed); with ``exact=True`` the double-double kernels (<= 0.515
ulp, 99.98% correctly rounded, about 1.6x the time).

The result for an element never depends on the tensor's shape, stride or the element's position:
every operation is elementwise with no SIMD-body/scalar-tail split of the formula.

Gradients: the functions run as the dispatcher operators of `elukit.torch._ops`, whose backward
multiplies by f'(x) computed from the saved *input* (never from the output, which collapses to 0
once f(x) rounds to -alpha) and is itself an operator, one derivative order up, so every order,
forward-mode AD and torch.func compose (docs/torch.md), with the same left-branch convention at 0.
With `use_fused_training` (off by default) a plain eager training call of the ELU family on a
contiguous CPU float32/float64 tensor computes f(x) and f'(x) in one pass instead and saves f'(x),
with its branch in the sign bit (`_ops.TrainingFunction`): backward is one multiplication (<= 1 ulp
from grad * f'(x) rounded once; ``exact=True`` keeps saving x), every higher order stays exact.
``inplace=True`` writes f(x) into x and keeps a copy of x from before the write, at which it
differentiates like the out-of-place call: every order of every spec gives inplace=False's bits,
no collapse. Where the C++ operator library is loaded its autograd kernel serves it (the Python
`_ops.InplaceFunction` elsewhere, with the same bits).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any, Optional

from elukit import constants
from elukit._registry import get
from elukit._spec import Activation
from elukit.torch import _compiled, _decompose, _kernels, _ops
from elukit.torch._kernels import (QUANTITIES, evaluate, evaluate_order, gradient_times_derivative,
                                   round_to_odd_float32, times_magnitude, training_plan, use_compiled_kernels,
                                   use_fused_training, value_and_derivative, write_value_into)
from elukit.torch._kernels import _share_torch_openmp  # noqa: F401 - tests/test_native.py restores the sharing here
from elukit.torch._torch import torch

_forward_ad = torch.autograd.forward_ad

_check_tensor = _ops.check_input


def _eager_and_plain(x: torch.Tensor) -> bool:
    """Whether a call may skip the dispatcher and run the kernels and autograd node directly, as
    the operators would (`_ops.unobserved`, and no forward-mode dual level open)."""
    return _forward_ad._current_level < 0 and _ops.unobserved(x)


def _native_call():
    """`_native_ops.activation` (the operator elukit::activation called from C++, without torch.ops'
    argument parsing) where the C++ operator library defines the operators, else None."""
    if _ops.LOADED_LIBRARY is None or _kernels._NATIVE_OPS is None:
        return None
    return getattr(_kernels._NATIVE_OPS, "activation", None)


_NATIVE_CALL = _native_call()
_NATIVE_INPLACE = None if _NATIVE_CALL is None else getattr(_kernels._NATIVE_OPS, "activation_", None)
"""`_native_ops.activation_` (elukit::activation_ called from C++, returning x), or None."""

_KEEP_OPERATORS = {"enabled": False}


@contextlib.contextmanager
def keep_operators(enabled: bool = True) -> Iterator[None]:
    """Within this block, saved artifacts keep elukit's exact operators instead of their core-ATen
    decomposition: ``torch.export.export``, ``torch.jit.trace`` and ``torch.jit.script`` of elukit's
    modules record ``torch.ops.elukit.activation`` (``activation_`` with ``inplace=True``).

    Such an artifact gives eager elukit's bits (the decomposed one is within the bounds documented
    in `elukit.torch._decompose`), and loading it needs elukit's operators: ``import elukit.torch``,
    or, without elukit's Python, ``torch.ops.load_library(elukit.torch.library_path())`` (the C++
    operator library; libtorch programs dlopen the same file), which serves the ELU family and
    ReLU/leaky ReLU on CPU float32/float64 tensors (and meta tensors). ``elukit.torch.functional.elu/selu/celu`` called
    inside a scripted function still compile to the decomposition (TorchScript cannot read this
    switch)."""
    previous = _KEEP_OPERATORS["enabled"]
    _KEEP_OPERATORS["enabled"] = bool(enabled)
    try:
        yield
    finally:
        _KEEP_OPERATORS["enabled"] = previous


def keeping_operators() -> bool:
    """Whether `keep_operators` is on: artifacts being saved record elukit's operators."""
    return _KEEP_OPERATORS["enabled"]


NATIVE, EAGER, OPERATOR, TRACING, EXPORTING, COMPILING, SYMBOLIC = (
    "native", "eager", "operator", "tracing", "exporting", "compiling", "symbolic")
"""The paths that serve a call (`serving_path`)."""


def serving_path(x: Any, inplace: bool = False) -> str:
    """Which path serves a call of `activation` on x (elukit's default kernels; ``backend=`` is
    decided before): the one place that decides.

    - `COMPILING` / `EXPORTING`: torch.compile traces (the operators), torch.export traces (the
      core-ATen decomposition, or the operators under `keep_operators`);
    - `SYMBOLIC`: ``torch.fx.symbolic_trace`` (records the operator call);
    - `NATIVE`: a plain ``torch.Tensor`` (no ``__torch_function__`` subclass), no jit.trace, the C++
      operator library loaded, fused training off: the operator called from C++
      (`_native_ops.activation`, ``activation_`` in place), which is the operator itself (its autograd
      node, forward-mode AD, torch.func transforms and dispatch modes behave as through ``torch.ops``);
    - `EAGER`: elukit's kernels and autograd nodes called from Python (`_eager_and_plain`);
    - `TRACING`: ``torch.jit.trace`` (the decomposition, or the operators under `keep_operators`);
    - `OPERATOR`: anything else (tensor subclasses, transforms without the C++ library): the operators
      through ``torch.ops``.
    """
    if torch.compiler.is_compiling():
        return EXPORTING if torch.compiler.is_exporting() else COMPILING
    if (type(x) is torch.Tensor and _NATIVE_CALL is not None and _kernels._NATIVE_OPS is not None
            and (not inplace or _NATIVE_INPLACE is not None) and not _kernels._FUSED["enabled"]
            and torch._C._get_tracing_state() is None):
        return NATIVE
    if isinstance(x, torch.fx.Proxy):
        return SYMBOLIC
    if _eager_and_plain(x):
        return EAGER
    if torch.jit.is_tracing():
        return TRACING
    return OPERATOR


def activation(x: torch.Tensor, spec: str | Activation, inplace: bool = False, exact: bool = False,
               backend: str | None = None, **params: Any) -> torch.Tensor:
    """Apply any registered activation (a name or a spec) with exact derivatives of every order.

    Runs as the PyTorch operators ``torch.ops.elukit.activation`` / ``activation_`` (see
    `elukit.torch._ops`), so it composes with autograd (any order), forward-mode AD, torch.func
    (vmap, grad, jacrev, jacfwd, hessian), torch.compile, torch.export, torch.jit.trace and
    script, meta tensors and FakeTensorMode. Plain eager calls skip torch.ops' Python overhead
    (`serving_path`): the operator is called from C++ where its C++ library was built, else the
    same kernels and autograd node run directly.

    ``exact=True`` rounds float64 results correctly (ELU/SELU/CELU: the double-double kernels,
    ~1.6x the default's time at 2^16 elements); by default they are faithful (<= 0.52 ulp).
    float16, bfloat16 and float32 results are the same either way.

    ``inplace=True`` writes f(x) into x (bumping its version counter, with PyTorch's checks made
    before anything is written) and keeps a copy of x from before the write for backward: every
    derivative of every order is the out-of-place one, bit for bit.

    ``backend="triton"`` forces the Triton kernels (`elukit.torch._triton`: CUDA tensors, or CPU
    tensors under ``TRITON_INTERPRET=1``; ELU family and piecewise-linear specs): the same bits as
    the CPU kernels, one pass over memory.
    """
    if type(inplace) is not bool or type(exact) is not bool:  # as the modules check them
        raise TypeError(f"inplace and exact must be bools, got inplace={inplace!r}, exact={exact!r}")
    if backend is not None:
        return _with_backend(x, spec, inplace, exact, backend, params)
    path = serving_path(x, inplace)
    if path not in (NATIVE, SYMBOLIC):  # the operator checks x in C++; symbolic_trace records the call below
        _check_tensor(x)
    spec = _bound_spec(spec, params)
    if spec.torch is None:
        raise ValueError(f"activation {spec.name!r} has no torch kernels")
    if path == NATIVE:
        return (_NATIVE_INPLACE if inplace else _NATIVE_CALL)(x, spec.name, _registered_values(spec), exact)
    if path in (COMPILING, EXPORTING, SYMBOLIC):  # no caches; the fake kernel checks the spec
        if path == EXPORTING and not keeping_operators():  # artifacts hold core ATen ops (_decompose)
            return _decomposed(spec, x, inplace)
        values = list(spec.parameters.values())
        if path == COMPILING:  # torch.compile: the twins without the export decomposition (_compiled)
            return _compiled.call(x, spec.name, values, inplace, exact)
        if inplace:
            _ops.ACTIVATION_INPLACE(x, spec.name, values, exact)
            return x
        return _ops.ACTIVATION(x, spec.name, values, 0, exact)
    name, values = spec.name, _registered_values(spec)
    if path == EAGER:
        if inplace:
            _ops.check_inplace_allowed(x)
            _ops.check_no_internal_overlap(x)
            if torch.is_grad_enabled() and x.requires_grad:
                _ops.InplaceFunction.apply(x, x.clone(), name, values, exact, None, None, _ops.ACTIVATION_BACKWARD)
                return x
            _ops.check_not_inference_outside_inference_mode(x)
            torch.autograd.graph.increment_version(x)  # once: the write below does not bump it again
            with torch._C._AutoDispatchBelowADInplaceOrView():
                return write_value_into(spec, x, exact)
        index = _kernels.native_index(spec, x)  # the C++ module serves this call (None: it does not)
        if torch.is_grad_enabled() and x.requires_grad:
            plan = training_plan(spec, x, exact)
            if plan is not None:  # use_fused_training: f and f' from one exponential, saves f' instead of x
                if plan[2] is not None:
                    return _kernels._NATIVE_OPS.train(x, plan[2])  # the same node in C++
                return _ops.TrainingFunction.apply(x, plan)[0]
            return _ops.ActivationFunction.apply(x, name, values, 0, exact, None)  # the operator's node, from Python
        if index is not None:  # the compiled kernel evaluate_order would run, called from C++
            return _kernels._NATIVE_OPS.value(x, index, exact)
        return evaluate_order(spec, 0, x, exact)
    if path == TRACING and not keeping_operators():  # the trace is an artifact: core ATen ops
        return _decomposed(spec, x, inplace)
    if inplace:
        _ops.ACTIVATION_INPLACE(x, name, values, exact)
        return x
    return _ops.ACTIVATION(x, name, values, 0, exact)


def _decomposed(spec: Activation, x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """f(x) from core ATen ops (`elukit.torch._decompose`): what exported and traced artifacts hold."""
    values = _decompose.decompose(spec, 0, x)
    if not inplace:
        return values
    _ops.check_inplace_allowed(x)
    _ops.check_no_internal_overlap(x)
    return x.copy_(values)


def _with_backend(x, spec, inplace: bool, exact: bool, backend: str, params: dict[str, Any]) -> torch.Tensor:
    """`activation` on the kernels of another backend (`_kernels.BACKENDS`: ``"triton"``)."""
    module = _kernels.backend_module(backend)  # ImportError naming `pip install triton==...` where Triton is missing
    return module.activation(x, _bound_spec(spec, params), inplace, exact)


_REGISTERED: dict[int, tuple[Activation, list[float]]] = {}


def _registered_values(spec: Activation) -> list[float]:
    """The parameter values that name `spec` to the operators, after checking (once per spec
    object) that the registry holds the same family under its name: the operators look it up there."""
    entry = _REGISTERED.get(id(spec))
    if entry is not None and entry[0] is spec:
        return entry[1]
    values = list(spec.parameters.values())
    registered = _ops.spec_for(spec.name, tuple(values))
    if registered is not spec and registered != spec:
        raise ValueError(f"activation {spec.name!r} is not the one registered under that name: register it with "
                         "elukit.register(spec) (under a new name) to use it with elukit.torch")
    if len(_REGISTERED) > 4096:
        _REGISTERED.clear()
    _REGISTERED[id(spec)] = (spec, values)  # the spec is kept, so its id stays its own
    return values


@functools.lru_cache(maxsize=512)
def _cached_spec(name: str, params: tuple) -> Activation:
    return get(name, **dict(params))


def _bound_spec(spec: str | Activation, params: dict[str, Any]) -> Activation:
    """The spec for a name (validated once per name and parameter values) or a spec rebound."""
    if isinstance(spec, str) and not torch.compiler.is_compiling():  # dynamo traces through caches
        try:
            return _cached_spec(spec, tuple(sorted(params.items())))
        except TypeError:  # an unhashable parameter value: validated without the cache
            return get(spec, **params)
    return get(spec, **params) if params or isinstance(spec, str) else spec


_LARGE_INT = 2**1023
"""ints below this in magnitude convert to a float; larger ones go through the spec's check, which names the parameter."""


def _plain_number(value: Any) -> bool:
    """Whether the native call may pass `value` as it is: a float, or an int that converts to one (others,
    bools included, go through the spec's check, which raises one line naming the parameter)."""
    return type(value) is float or (type(value) is int and -_LARGE_INT < value < _LARGE_INT)
_SELU_VALUES = [constants.SELU_ALPHA, constants.SELU_SCALE]  # the spec's parameter order (alpha, scale)


def _script_alpha(alpha: float) -> float:
    """Under torch.jit.script: the spec's check of alpha (no registry there)."""
    if not (alpha > 0.0 and alpha < float("inf")):
        raise ValueError("alpha must be finite and > 0")
    return alpha


def _script_result(x: torch.Tensor, values: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Under torch.jit.script: the decomposition's values, written into x with inplace=True."""
    if inplace:
        return x.copy_(values)
    return values


def elu(x: torch.Tensor, alpha: float = 1.0, inplace: bool = False, exact: bool = False,
        backend: Optional[str] = None) -> torch.Tensor:
    r"""ELU: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x)\ (x\le0)`; f'(0) = alpha (left branch).

    Inside a scripted ``forward`` it compiles to the core-ATen decomposition (`_decompose`), so a
    saved script needs no elukit; `exact` has no effect there."""
    if torch.jit.is_scripting():
        return _script_result(x, _decompose.exponential_linear(x, 1.0, _script_alpha(alpha), 1.0, 0), inplace)
    if (backend is None and type(inplace) is bool and type(exact) is bool and _plain_number(alpha)
            and serving_path(x, inplace) == NATIVE):  # the operator checks x and alpha (C++, else the spec)
        return (_NATIVE_INPLACE if inplace else _NATIVE_CALL)(x, "elu", [alpha], exact)
    return activation(x, "elu", inplace, exact, backend, alpha=alpha)  # TorchScript skips what follows is_scripting()


def selu(x: torch.Tensor, inplace: bool = False, exact: bool = False, backend: Optional[str] = None) -> torch.Tensor:
    r"""SELU: :math:`\lambda\,\mathrm{ELU}(x; \alpha)` with elukit.SELU_SCALE and SELU_ALPHA (scripts as `elu` does)."""
    if torch.jit.is_scripting():
        values = _decompose.exponential_linear(x, constants.SELU_SCALE, constants.SELU_ALPHA, 1.0, 0)  # the spec's form
        return _script_result(x, values, inplace)
    if backend is None and type(inplace) is bool and type(exact) is bool and serving_path(x, inplace) == NATIVE:
        return (_NATIVE_INPLACE if inplace else _NATIVE_CALL)(x, "selu", _SELU_VALUES, exact)
    return activation(x, "selu", inplace, exact, backend)


def celu(x: torch.Tensor, alpha: float = 1.0, inplace: bool = False, exact: bool = False,
         backend: Optional[str] = None) -> torch.Tensor:
    r"""CELU: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x/\alpha)\ (x\le0)` (scripts as `elu` does)."""
    if torch.jit.is_scripting():
        alpha = _script_alpha(alpha)
        return _script_result(x, _decompose.exponential_linear(x, 1.0, alpha, alpha, 0), inplace)
    if (backend is None and type(inplace) is bool and type(exact) is bool and _plain_number(alpha)
            and serving_path(x, inplace) == NATIVE):  # the operator checks x and alpha (C++, else the spec)
        return (_NATIVE_INPLACE if inplace else _NATIVE_CALL)(x, "celu", [alpha], exact)
    return activation(x, "celu", inplace, exact, backend, alpha=alpha)


def pelu(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    r"""Parametric ELU (Trottier et al. 2017): :math:`(a/b)x\ (x>0),\ a\,\mathrm{expm1}(x/b)\ (x\le0)`.

    `a` and `b` are positive per-channel tensors (shape (C,)) broadcast along `channel_dim`;
    gradients flow to x, a and b through PyTorch's own ops (computed in x's dtype).
    """
    if not torch.jit.is_scripting():
        _check_tensor(x)
    if x.dim() > 1:
        shape = [1] * x.dim()
        shape[channel_dim] = -1
        a = a.reshape(shape)
        b = b.reshape(shape)
    negative = a * torch.expm1(torch.clamp(x, max=0.0) / b)
    return torch.where(x > 0, (a / b) * x, negative)


__all__ = ["COMPILING", "EAGER", "EXPORTING", "NATIVE", "OPERATOR", "QUANTITIES", "SYMBOLIC", "TRACING", "activation", "celu", "elu", "evaluate", "evaluate_order", "gradient_times_derivative", "keep_operators", "keeping_operators", "pelu",
           "round_to_odd_float32", "selu", "serving_path", "times_magnitude", "training_plan", "use_compiled_kernels",
           "use_fused_training", "value_and_derivative", "write_value_into"]
