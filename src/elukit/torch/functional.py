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
A plain eager training call of the ELU family on a contiguous CPU float32/float64 tensor computes
f(x) and f'(x) in one pass instead and saves f'(x), with its branch in the sign bit
(`_ops.TrainingFunction`): backward is one multiplication (<= 1 ulp from grad * f'(x) rounded
once; ``exact=True`` keeps saving x), every higher order stays exact.
``inplace=True`` writes f(x) into x and saves f'(x) instead of x: the same memory as out-of-place,
no collapse; differentiating it twice raises.
"""

from __future__ import annotations

import functools
import os
import types
import warnings
from typing import Any, Optional

import numpy as np

from elukit import _native, constants
from elukit._registry import get
from elukit._spec import Activation
from elukit.torch import _decompose, _ops
from elukit.torch._torch import torch

_forward_ad = torch.autograd.forward_ad


def _share_torch_openmp() -> None:
    """Let the compiled kernels run their threads on PyTorch's own OpenMP team."""
    if _native.AVAILABLE and "parallel backend: OpenMP" in torch.__config__.parallel_info():
        runtimes = _native.loaded_openmp_runtimes()
        torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
        preferred = [p for p in runtimes if p.startswith(torch_lib)] or runtimes[:1]
        if preferred:
            _native.share_openmp_runtime(preferred[0])


_share_torch_openmp()

_NARROW = (torch.float16, torch.bfloat16)
_WORK = torch.float64
"""Every torch kernel runs in float64: once-rounded for 16/32-bit tensors, native for float64."""

QUANTITIES = ("value", "derivative", "second_derivative")
"""The quantities every spec defines, by derivative order."""


_check_tensor = _ops.check_input


def round_to_odd_float32(values: torch.Tensor) -> torch.Tensor:
    """float64 -> float32 with a sticky last bit, so a following cast to float16/bfloat16 rounds
    correctly (a plain cast would round twice)."""
    rounded = values.to(torch.float32)
    back = rounded.to(torch.float64)
    inexact = (back != values) & torch.isfinite(rounded) & (rounded != 0)
    even = (rounded.view(torch.int32) & 1) == 0
    toward = torch.where(values > back, torch.full_like(rounded, float("inf")), torch.full_like(rounded, float("-inf")))
    return torch.where(inexact & even, torch.nextafter(rounded, toward), rounded)


def _round_once(result: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype in _NARROW:
        return round_to_odd_float32(result).to(dtype)
    return result.to(dtype)


_CHUNK = 32768
"""Elements per block on CPU: float64 temporaries of a whole 2^22-element tensor cost a page-
faulting 32 MB allocation per operation (14 ms each here); blocks stay in cache."""


def _ml_dtypes_bfloat16():
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes.bfloat16


def _use_numpy_backend(x: torch.Tensor) -> bool:
    """CPU float16/float32 (and bfloat16 when ml_dtypes is installed) tensors go through the NumPy
    kernels (blocked and branch-free: faster than the torch kernels on the CPU), except while
    torch.compile traces."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return x.dtype in (torch.float16, torch.float32) or (x.dtype == torch.bfloat16 and _ml_dtypes_bfloat16() is not None)


def _numpy_backend(spec: Activation, quantity: str, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """The NumPy kernel on a CPU tensor; with `exact`, float64 tensors get NumPy's extended
    precision (the compiled kernels are skipped)."""
    if x.device.type != "cpu":
        raise ValueError(f"exact=True evaluates float64 with NumPy's extended precision and needs a CPU tensor, got {x.device}")
    source = x.detach().contiguous()
    if x.dtype == torch.bfloat16:
        values = getattr(spec, quantity)(source.view(torch.int16).numpy().view(_ml_dtypes_bfloat16()), compiled=not exact)
        result = torch.from_numpy(np.ascontiguousarray(values).view(np.int16)).view(torch.bfloat16)
    else:
        result = torch.from_numpy(np.ascontiguousarray(getattr(spec, quantity)(source.numpy(), compiled=not exact)))
    return result.reshape(x.shape)  # np.ascontiguousarray makes a 0-dim array 1-dim


def _narrow_kernel(spec: Activation, quantity: str, dtype: torch.dtype):
    """The kernel, followed by the spec's tie fix when the float64 result is rounded again to a
    narrower dtype (skipped while torch.compile traces: the fix indexes a data-dependent subset)."""
    kernel = getattr(spec.torch, quantity)
    tie_fix = spec.torch.tie_fix
    if tie_fix is None or dtype == torch.float64 or torch.compiler.is_compiling():
        return kernel

    def fixed(t, values, **params):
        return tie_fix(t, quantity, values, kernel(t, values, **params), **params)

    return fixed


def _torch_kernel(spec: Activation, quantity: str, x: torch.Tensor) -> torch.Tensor:
    kernel = _narrow_kernel(spec, quantity, x.dtype)
    if x.device.type != "cpu" or x.numel() <= _CHUNK or torch.compiler.is_compiling():
        return _round_once(kernel(torch, x.to(_WORK), **spec.parameters), x.dtype)
    flat = x.reshape(-1)
    out = torch.empty_like(flat)
    for start in range(0, flat.numel(), _CHUNK):
        block = flat[start:start + _CHUNK]
        out[start:start + _CHUNK] = _round_once(kernel(torch, block.to(_WORK), **spec.parameters), x.dtype)
    return out.reshape(x.shape)


_COMPILE = {"enabled": os.environ.get("ELUKIT_TORCH_COMPILE", "0") == "1"}
_COMPILED: dict[tuple, Any] = {}
_COMPILE_MIN_ELEMENTS = 4096


def use_compiled_kernels(enabled: bool = True) -> None:
    """Evaluate float32/float64 kernels through torch.compile (inductor) on large tensors.

    Inductor fuses a kernel's float64 torch operations into one loop (bit-identical to the
    unfused result in float32). ELU, SELU and CELU on the CPU use elukit's compiled C kernels
    first, which are faster (2.4x F.elu's time fused against 0.9x for float32 forward at 2^22), so
    this matters for the other activations, CUDA tensors, and installations built without a C
    compiler. The first call of each (activation, parameters, quantity, dtype, device) compiles
    for several seconds, so it is opt-in: this function or ``ELUKIT_TORCH_COMPILE=1``. If
    compiling fails (no C++ compiler), elukit warns once and falls back to the unfused kernels.
    """
    _COMPILE["enabled"] = bool(enabled)


def _own_code(function, key: tuple):
    """A copy of `function` with its own code object: dynamo caches compiled graphs per code
    object (8 at most), and every fused kernel would otherwise share one."""
    name = "elukit_" + "_".join(str(part) for part in key[:3]).replace(".", "_").replace("-", "m")
    code = function.__code__.replace(co_name=name[:60])
    return types.FunctionType(code, function.__globals__, code.co_name, function.__defaults__, function.__closure__)


def _fused(spec: Activation, quantity: str, x: torch.Tensor):
    """The compiled fused kernel for (spec, quantity, dtype, device), compiled on first use.

    quantity "gradient" is grad * f'(x) in one loop (first-order backward; double backward
    stays unfused).
    """
    key = (spec.name, tuple(spec.parameters.items()), quantity, x.dtype, x.device.type)
    function = _COMPILED.get(key)
    if function is None:
        params = spec.parameters
        dtype = x.dtype
        if quantity == "gradient":
            kernel = spec.torch.derivative

            def fused(grad: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
                return (grad.to(_WORK) * kernel(torch, values.to(_WORK), **params)).to(dtype)
        else:
            kernel = getattr(spec.torch, quantity)

            def fused(values: torch.Tensor) -> torch.Tensor:
                return kernel(torch, values.to(_WORK), **params).to(dtype)

        function = _COMPILED[key] = torch.compile(_own_code(fused, key), dynamic=True, fullgraph=True)
    return function


def _try_fused(spec: Activation, quantity: str, x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor | None:
    """The fused kernel applied to (`tensors`, x), or None where it does not apply; a compiler
    failure disables fusion for the session with one warning."""
    if (not _COMPILE["enabled"] or x.dtype not in (torch.float32, torch.float64) or x.numel() < _COMPILE_MIN_ELEMENTS
            or torch.compiler.is_compiling()):
        return None
    try:
        return _fused(spec, quantity, x)(*tensors, x)
    except Exception as error:  # noqa: BLE001 - any compiler failure falls back to eager kernels
        _COMPILE["enabled"] = False
        warnings.warn(f"elukit: torch.compile of the activation kernels failed ({type(error).__name__}: {error}); "
                      "using the unfused kernels", RuntimeWarning, stacklevel=3)
        return None


_COMPILED_DTYPES = (torch.float32, torch.float64)


def _compiled_kernel(spec: Activation, order: int, x: torch.Tensor, exact: bool = False,
                     grad: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor | None:
    """The derivative of `order` (0: the value; times `grad` for the derivatives) from the compiled
    kernels, written into `out` (laid out like x, x's dtype) or a new tensor laid out like x; None
    where they do not apply."""
    if not _native.AVAILABLE or x.dtype not in _COMPILED_DTYPES or not x.is_cpu or torch.compiler.is_compiling():
        return None
    kernels = _native.kernels_for(spec)  # cached per spec
    if kernels is None:
        return None
    plan = kernels[QUANTITIES[order]] if order <= 2 else _native.order_plan(spec, order)
    if plan is None:
        return None
    source = x.detach()
    if source.is_contiguous() and (out is None or out.is_contiguous()):  # the common case, kept cheap
        target = torch.empty_like(source) if out is None else out
        flat_source, flat_target, order = source, target, None
    else:
        order = _memory_order(source)
        if order is None:  # overlapping or with gaps: evaluate a compact copy
            source = source.contiguous()
            order = list(range(source.dim()))
        target = torch.empty_like(source) if out is None else out  # empty_like keeps a dense layout
        if not target.permute(order).is_contiguous():
            return None
        flat_source, flat_target = _in_order(source, order), _in_order(target.detach(), order)
    if source.numel() == 0:
        return target
    gradient, gradient_count = 0, 0
    if grad is not None:
        grad = grad.detach()
        if grad.dtype != x.dtype:
            grad = grad.to(x.dtype)
        if not any(grad.stride()):
            # sum().backward() hands in one value expanded to x's shape: pass it, not a copy
            gradient, gradient_count = grad.data_ptr(), 1
        else:
            if order is None and grad.is_contiguous():
                flat_grad = grad
            else:
                flat_grad = _in_order(grad, order if order is not None else list(range(grad.dim())))
            gradient, gradient_count = flat_grad.data_ptr(), flat_source.numel()
    # Raw addresses: each tensor here is contiguous, of x's dtype and length, and alive for the call.
    kind, constants = plan
    _native.run_addresses(kind | (0 if exact else _native.FAST), flat_source.data_ptr(), flat_target.data_ptr(),
                          gradient, gradient_count, flat_source.numel(), x.dtype == torch.float64, constants,
                          torch.get_num_threads())
    return target


def _memory_order(t: torch.Tensor) -> list[int] | None:
    """A permutation of t's dimensions under which it is contiguous (transposed, permuted or
    channels-last tensors have one), or None. Elementwise kernels can then run over its memory
    in place of a contiguous copy."""
    if t.is_contiguous():
        return list(range(t.dim()))
    order = sorted(range(t.dim()), key=lambda dim: -t.stride(dim))
    return order if t.permute(order).is_contiguous() else None


def _in_order(t: torch.Tensor, order: list[int]) -> torch.Tensor:
    """t's elements as a flat tensor in the memory order of `order` (a view where t is dense in it)."""
    return t.permute(order).contiguous().reshape(-1)


def evaluate(spec: Activation, quantity: str, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """f, f' or f'' of a tensor (no autograd), rounded once to x's dtype."""
    return evaluate_order(spec, QUANTITIES.index(quantity), x, exact)


def evaluate_order(spec: Activation, order: int, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
    r"""The derivative of `order` (0: f itself) of a tensor, no autograd, rounded once to x's dtype.

    Orders 0-2 come from the spec's kernels. Above 2 only families whose every derivative is known
    are served: the ELU family, :math:`f^{(n)}(x) = \lambda\alpha\delta^{-n} e^{x/\delta}` for
    x <= 0 and 0 for x > 0 (n >= 2), and the piecewise-linear one (0); other specs raise
    NotImplementedError naming the alternative.
    """
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    if order > 2:
        return _higher_order(spec, order, x, exact)
    quantity = QUANTITIES[order]
    compiled = _compiled_kernel(spec, order, x, exact)
    if compiled is not None:
        return compiled
    if str(x.dtype).removeprefix("torch.") in spec.torch.exact_dtypes:
        return getattr(spec.torch, quantity)(torch, x, **spec.parameters)
    if exact and x.dtype == torch.float64:
        return _numpy_backend(spec, quantity, x, exact=True)
    if not exact or x.dtype != torch.float32:
        fused = _try_fused(spec, quantity, x)
        if fused is not None:
            return fused
    if _use_numpy_backend(x):
        return _numpy_backend(spec, quantity, x, exact=exact)
    return _torch_kernel(spec, quantity, x)


def _higher_order(spec: Activation, order: int, x: torch.Tensor, exact: bool) -> torch.Tensor:
    """Orders above 2: the compiled kernels' exact coefficient on CPU float32/float64; elsewhere
    f''(x) / delta^(n-2) in float64, rounded once to x's dtype (exact where delta = 1)."""
    exponential, linear = spec.exponential_linear_form(), spec.linear_branches_form()
    if exponential is None and linear is None:
        raise NotImplementedError(
            f"elukit.torch: the derivative of order {order} of {spec.label()} is not available (its spec defines f, f' "
            f"and f''; the ELU and piecewise-linear families have every order). Use torch's own function where "
            f"derivatives of order {order} are needed.")
    compiled = _compiled_kernel(spec, order, x, exact)
    if compiled is not None:
        return compiled
    if linear is not None:
        return evaluate_order(spec, 2, x, exact)
    divisor = exponential[2]
    work = x.to(_WORK)
    second = _compiled_kernel(spec, 2, work, exact)
    if second is None:
        second = spec.torch.second_derivative(torch, work, **spec.parameters)
    return _round_once(second / divisor ** (order - 2) if divisor != 1.0 else second, x.dtype)


def gradient_times_derivative(spec: Activation, order: int, x: torch.Tensor, grad: torch.Tensor,
                              exact: bool = False) -> torch.Tensor:
    """grad * f^(order)(x), order >= 1, shaped like x: one pass rounded once where the compiled
    kernels serve it (grad of x's dtype and shape, or one value broadcast), else f^(order)(x)
    rounded to x's dtype, then multiplied."""
    if grad.shape != x.shape:
        grad = grad.expand_as(x)
    if grad.dtype == x.dtype:
        fused = _compiled_kernel(spec, order, x, exact, grad=grad)
        if fused is None and order == 1 and not exact:
            fused = _try_fused(spec, "gradient", x, grad)
        if fused is not None:
            return fused
    return grad * evaluate_order(spec, order, x, exact)


_TRAINING: dict[int, tuple[Activation, tuple | None]] = {}


def _load_native_ops():
    """elukit.torch._native_ops (the C++ hot paths), or None where it was not built or does not load
    against this torch (it is compiled against the torch seen at build time)."""
    if not _native.AVAILABLE or os.environ.get("ELUKIT_TORCH_NATIVE_OPS", "1") == "0":
        return None
    try:
        from elukit.torch import _native_ops
    except ImportError:  # not built (no torch at build time), or built against another torch
        return None
    return _native_ops


_NATIVE_OPS = _load_native_ops()


def _training_plan(spec: Activation) -> tuple | None:
    """(kernel constants, f''/f' on the branch x <= 0, the plan's index in `_native_ops` or None)
    where the compiled kernels give f and f' in one pass (the ELU family), else None; once per spec
    object."""
    entry = _TRAINING.get(id(spec))
    if entry is None or entry[0] is not spec:
        plan = None
        if _native.AVAILABLE and spec.exponential_linear_form() is not None:
            kernels = _native.kernels_for(spec)
            if kernels is not None:
                constants, ratio = kernels["derivative"][1], 1.0 / spec.exponential_linear_form()[2]
                index = None if _NATIVE_OPS is None else _NATIVE_OPS.register_plan([float(c) for c in constants], ratio)
                plan = (constants, ratio, index)
        if len(_TRAINING) > 4096:
            _TRAINING.clear()
        entry = _TRAINING[id(spec)] = (spec, plan)  # the spec is kept, so its id stays its own
    return entry[1]


def training_plan(spec: Activation, x: torch.Tensor, exact: bool) -> tuple | None:
    """What `value_and_derivative` needs for x, or None where the fused training forward does not
    apply: it serves the ELU family on contiguous CPU float32/float64 tensors from the compiled
    kernels, without ``exact=True`` (which keeps saving x, so that first-order gradients are
    grad * f'(x) rounded once; the fused path rounds f'(x) and the product, <= 1 ulp)."""
    if exact or x.dtype not in _COMPILED_DTYPES or not x.is_cpu or not x.is_contiguous():
        return None
    return _training_plan(spec)


def value_and_derivative(plan: tuple, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""f(x) and f'(x) from one exponential per element (`training_plan` gave `plan` for x).

    Bit for bit what `evaluate_order` gives for orders 0 and 1, except that f'(x) carries the
    branch in its sign bit: -f'(x) where x <= 0 (or NaN), +f'(x) where x > 0 (f' >= 0, so the bit
    is free): what `_ops.TrainingFunction` reads for every higher derivative."""
    source = x.detach()
    value, derivative = torch.empty_like(source), torch.empty_like(source)
    if source.numel():
        _native.run_both_addresses(source.data_ptr(), value.data_ptr(), derivative.data_ptr(), source.numel(),
                                   x.dtype == torch.float64, plan[0], torch.get_num_threads())
    return value, derivative


def times_magnitude(grad: torch.Tensor, derivative: torch.Tensor) -> torch.Tensor:
    """grad * |derivative| in derivative's dtype and shape, one rounding: one pass of the compiled
    kernels where they apply (plain contiguous CPU tensors of one dtype, grad laid out alike or
    one value broadcast, as ``sum().backward()`` hands in), else torch's own ops (the same bits)."""
    if (_native.AVAILABLE and grad.dtype == derivative.dtype and grad.is_cpu and derivative.is_contiguous()
            and grad.shape == derivative.shape and _ops.unobserved(grad, derivative)):
        count = derivative.numel()
        if grad.is_contiguous() or not any(grad.stride()):
            out = torch.empty_like(derivative)
            if count:
                _native.multiply_magnitude_addresses(derivative.data_ptr(), grad.data_ptr(),
                                                     count if grad.is_contiguous() else 1, out.data_ptr(), count,
                                                     out.dtype == torch.float64, torch.get_num_threads())
            return out
    return grad * derivative.abs()


def write_value_into(spec: Activation, x: torch.Tensor, exact: bool) -> torch.Tensor:
    """x <- f(x), in place when the compiled kernels can write x's memory directly."""
    if _compiled_kernel(spec, 0, x, exact, out=x) is None:
        x.copy_(evaluate_order(spec, 0, x, exact))
    return x


def _eager_and_plain(x: torch.Tensor) -> bool:
    """Whether a call may skip the dispatcher and run the kernels and autograd node directly, as
    the operators would (`_ops.unobserved`, and no forward-mode dual level open)."""
    return _forward_ad._current_level < 0 and _ops.unobserved(x)


def activation(x: torch.Tensor, spec: str | Activation, inplace: bool = False, exact: bool = False,
               backend: str | None = None, **params: Any) -> torch.Tensor:
    """Apply any registered activation (a name or a spec) with exact derivatives of every order.

    Runs as the PyTorch operators ``torch.ops.elukit.activation`` / ``activation_`` (see
    `elukit.torch._ops`), so it composes with autograd (any order), forward-mode AD, torch.func
    (vmap, grad, jacrev, jacfwd, hessian), torch.compile, torch.export, torch.jit.trace and
    script, meta tensors and FakeTensorMode. Plain eager calls skip the dispatcher's Python
    overhead and run the same kernels and autograd node directly.

    ``exact=True`` rounds float64 results correctly (ELU/SELU/CELU: the double-double kernels,
    ~1.6x the default's time at 2^16 elements); by default they are faithful (<= 0.52 ulp).
    float16, bfloat16 and float32 results are the same either way.

    ``inplace=True`` writes f(x) into x (bumping its version counter, with PyTorch's checks made
    before anything is written) and keeps f'(x) for backward: first derivatives are exact;
    differentiating twice through it raises.

    ``backend="triton"`` forces the Triton kernels (`elukit.torch._triton`: CUDA tensors, or CPU
    tensors under ``TRITON_INTERPRET=1``; ELU family and piecewise-linear specs): the same bits as
    the CPU kernels, one pass over memory.
    """
    if backend is not None:
        return _with_backend(x, spec, inplace, exact, backend, params)
    if not isinstance(x, torch.fx.Proxy):  # torch.fx.symbolic_trace records the operator call below
        _check_tensor(x)
    spec = _bound_spec(spec, params)
    if spec.torch is None:
        raise ValueError(f"activation {spec.name!r} has no torch kernels")
    if torch.compiler.is_compiling() or isinstance(x, torch.fx.Proxy):  # no caches; the fake kernel checks the spec
        if torch.compiler.is_exporting():  # artifacts hold core ATen ops (_decompose)
            return _decomposed(spec, x, inplace)
        values = list(spec.parameters.values())
        if inplace:
            _ops.ACTIVATION_INPLACE(x, spec.name, values, exact)
            return x
        return _ops.ACTIVATION(x, spec.name, values, 0, exact)
    name, values = spec.name, _registered_values(spec)
    if _eager_and_plain(x):
        if inplace:
            _ops.check_inplace_allowed(x)
            _ops.check_no_internal_overlap(x)
            if torch.is_grad_enabled() and x.requires_grad:
                _ops.InplaceFunction.apply(x, _ops.anchor_of(x), name, values, exact, None, [])
                return x
            if x.is_inference() and not torch.is_inference_mode_enabled():
                _ops.ACTIVATION_INPLACE(x, name, values, exact)  # raises PyTorch's inference-tensor error
                return x
            torch.autograd.graph.increment_version(x)
            return write_value_into(spec, x, exact)
        if torch.is_grad_enabled() and x.requires_grad:
            plan = training_plan(spec, x, exact)
            if plan is not None:  # f and f' from one exponential; saves f' instead of x
                if plan[2] is not None:
                    return _NATIVE_OPS.train(x, plan[2])  # the same node in C++
                return _ops.TrainingFunction.apply(x, plan)[0]
            return _ops.ActivationFunction.apply(x, name, values, 0, exact, None)
        if _NATIVE_OPS is not None:
            plan = training_plan(spec, x, exact)
            if plan is not None:  # the same kernel as evaluate_order's, called from C++
                return _NATIVE_OPS.value(x, plan[2])
        return evaluate_order(spec, 0, x, exact)
    if torch.jit.is_tracing():  # checked after the eager path, which it would slow: the trace is an artifact
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
    """`activation` on the kernels of another backend (``"triton"``)."""
    if backend != "triton":
        raise ValueError(f"backend must be None (elukit's default kernels) or 'triton', got {backend!r}")
    from elukit.torch import _triton  # ImportError naming `pip install triton==3.9.0` where Triton is missing

    return _triton.activation(x, _bound_spec(spec, params), inplace, exact)


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
    return activation(x, "elu", inplace, exact, backend, alpha=alpha)  # TorchScript skips what follows is_scripting()


def selu(x: torch.Tensor, inplace: bool = False, exact: bool = False, backend: Optional[str] = None) -> torch.Tensor:
    r"""SELU: :math:`\lambda\,\mathrm{ELU}(x; \alpha)` with elukit.SELU_SCALE and SELU_ALPHA (scripts as `elu` does)."""
    if torch.jit.is_scripting():
        values = _decompose.exponential_linear(x, constants.SELU_SCALE, constants.SELU_ALPHA, 1.0, 0)  # the spec's form
        return _script_result(x, values, inplace)
    return activation(x, "selu", inplace, exact, backend)


def celu(x: torch.Tensor, alpha: float = 1.0, inplace: bool = False, exact: bool = False,
         backend: Optional[str] = None) -> torch.Tensor:
    r"""CELU: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x/\alpha)\ (x\le0)` (scripts as `elu` does)."""
    if torch.jit.is_scripting():
        alpha = _script_alpha(alpha)
        return _script_result(x, _decompose.exponential_linear(x, 1.0, alpha, alpha, 0), inplace)
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


__all__ = ["QUANTITIES", "activation", "celu", "elu", "evaluate", "evaluate_order", "gradient_times_derivative", "pelu",
           "round_to_odd_float32", "selu", "times_magnitude", "training_plan", "use_compiled_kernels",
           "value_and_derivative", "write_value_into"]
