r"""The one table of elukit.torch's kernels: which kernel evaluates (device, dtype, mode).

Everything in elukit.torch that evaluates an activation asks this module (`_ops`' operator
kernels, `functional`'s eager paths, the fused training node); nothing else picks a kernel.

Orders 0-2 without autograd (`evaluate_order`; the first entry of `KERNELS` that applies):

| kernel | device | dtype | mode | specs |
|---|---|---|---|---|
| compiled C kernels (`_compiled_kernel`) | CPU | float32, float64 | default (float64: fast, faithful) and ``exact`` (float64: double-double) | ELU family, piecewise linear |
| the spec's torch kernel in x's dtype | any | the spec's ``exact_dtypes`` | any | specs that declare them |
| NumPy in extended precision | CPU | float64 | ``exact`` | any |
| torch.compile fusion (`use_compiled_kernels`) | any | float32, float64 (not float32 ``exact``) | opted in, >= 4096 elements | any |
| NumPy kernels | CPU | float16, float32, bfloat16 (with ml_dtypes) | any | any |
| the spec's torch kernels in float64, rounded once | any | any | any | any |

Orders above 2: `_higher_order` (compiled C kernels, else f'' scaled). Products grad * f^(n)(x):
`gradient_times_derivative` (compiled C kernels in one pass, else the table times grad).

Plain eager calls of the ELU family on contiguous CPU float32/float64 tensors go to `_NATIVE_OPS`
(C++, where it was built: `native_index`): the value kernel above, and in training a C++ node
that saves x and gives the operators' bits. With `use_fused_training` (off by default),
training calls use the fused kernel instead (`training_plan`: f and f' from one exponential,
f' saved instead of x), run by `_NATIVE_OPS` or `_ops.TrainingFunction`. Elsewhere: the
operators' autograd node (`_ops.ActivationFunction`), which saves x.

``backend="triton"``: `backend_module` maps the name to `elukit.torch._triton` (CUDA tensors, or
CPU tensors under ``TRITON_INTERPRET=1``), which keeps its own kernels.
"""

from __future__ import annotations

import os
import types
import warnings
from typing import Any

import numpy as np

from elukit import _native
from elukit._spec import Activation
from elukit.torch._torch import torch


def _functorch_wrapped(t: torch.Tensor) -> bool:
    """A tensor of a torch.func transform, or of the legacy vmap behind autograd's is_grads_batched."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t) or torch._C._functorch.is_legacy_batchedtensor(t)


_PRE_DISPATCH = torch._C.DispatchKey.PreDispatch


def unobserved(*tensors: torch.Tensor) -> bool:
    """Whether calling a kernel directly, instead of through its operator, is invisible: plain
    CPU/CUDA tensors, and no tracer, functorch transform, dispatch mode (FakeTensorMode, make_fx,
    also ``make_fx(pre_dispatch=True)``, whose modes sit on a stack of their own: unseen, a direct
    call was traced as the ``empty_like`` of its output, a graph returning garbage) or compiler that
    would see the operator differently. The result is the same either way."""
    if (torch._C._get_tracing_state() is not None or torch._C._are_functorch_transforms_active()
            or torch._C._len_torch_dispatch_stack() or torch.compiler.is_compiling()
            or torch._C._dispatch_tls_is_dispatch_key_included(_PRE_DISPATCH)):
        return False
    for t in tensors:
        if type(t) is not torch.Tensor or not (t.is_cpu or t.is_cuda) or _functorch_wrapped(t):
            return False
    return True


def torch_openmp_runtime() -> str | None:
    """The path of the OpenMP runtime PyTorch runs its parallel ops on, or None."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    runtimes = _native.loaded_openmp_runtimes()
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    preferred = [p for p in runtimes if p.startswith(torch_lib)] or runtimes[:1]
    return preferred[0] if preferred else None


def _share_torch_openmp() -> None:
    """Let the compiled kernels run their threads on PyTorch's own OpenMP team."""
    if _native.AVAILABLE:
        runtime = torch_openmp_runtime()
        if runtime is not None:
            _native.share_openmp_runtime(runtime)


_share_torch_openmp()

_NARROW = (torch.float16, torch.bfloat16)
_WORK = torch.float64
"""Every torch kernel runs in float64: once-rounded for 16/32-bit tensors, native for float64."""

QUANTITIES = ("value", "derivative", "second_derivative")
"""The quantities every spec defines, by derivative order."""


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
    result = result.reshape(x.shape)  # np.ascontiguousarray makes a 0-dim array 1-dim
    # An operator's output must not be a view (forward-mode AD of a view asserted inside PyTorch):
    # the reshape and the bfloat16 reinterpretation above make one, so it gets its own tensor.
    return result.clone() if result._base is not None else result


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


def _compiled_entry(spec: Activation, order: int, x: torch.Tensor, exact: bool) -> torch.Tensor | None:
    return _compiled_kernel(spec, order, x, exact)


def _exact_dtype_entry(spec: Activation, order: int, x: torch.Tensor, exact: bool) -> torch.Tensor | None:
    if str(x.dtype).removeprefix("torch.") in spec.torch.exact_dtypes:
        return getattr(spec.torch, QUANTITIES[order])(torch, x, **spec.parameters)
    return None


def _extended_numpy_entry(spec: Activation, order: int, x: torch.Tensor, exact: bool) -> torch.Tensor | None:
    return _numpy_backend(spec, QUANTITIES[order], x, exact=True) if exact and x.dtype == torch.float64 else None


def _compile_fusion_entry(spec: Activation, order: int, x: torch.Tensor, exact: bool) -> torch.Tensor | None:
    return _try_fused(spec, QUANTITIES[order], x) if not exact or x.dtype != torch.float32 else None


def _numpy_entry(spec: Activation, order: int, x: torch.Tensor, exact: bool) -> torch.Tensor | None:
    return _numpy_backend(spec, QUANTITIES[order], x, exact=exact) if _use_numpy_backend(x) else None


def _torch_float64_entry(spec: Activation, order: int, x: torch.Tensor, exact: bool) -> torch.Tensor:
    return _torch_kernel(spec, QUANTITIES[order], x)


KERNELS = (
    ("compiled C kernels", _compiled_entry),
    ("the spec's torch kernel in x's dtype", _exact_dtype_entry),
    ("NumPy in extended precision", _extended_numpy_entry),
    ("torch.compile fusion", _compile_fusion_entry),
    ("NumPy kernels", _numpy_entry),
    ("the spec's torch kernels in float64, rounded once", _torch_float64_entry),
)
"""The kernels of orders 0-2 by precedence (the table in this module's docstring): each entry gives
the result or None where it does not apply to (device, dtype, mode); the last one applies always."""


def kernel_for(spec: Activation, order: int, x: torch.Tensor, exact: bool = False) -> str:
    """The name of the `KERNELS` entry that evaluates order `order` (0-2) of `spec` at x (it runs it)."""
    for name, entry in KERNELS:
        if entry(spec, order, x, exact) is not None:
            return name
    raise AssertionError("the last kernel applies everywhere")


def evaluate_order(spec: Activation, order: int, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
    r"""The derivative of `order` (0: f itself) of a tensor, no autograd, rounded once to x's dtype.

    Orders 0-2 come from the first entry of `KERNELS` that applies. Above 2 only families whose
    every derivative is known are served: the ELU family,
    :math:`f^{(n)}(x) = \lambda\alpha\delta^{-n} e^{x/\delta}` for x <= 0 and 0 for x > 0
    (n >= 2), and the piecewise-linear one (0); other specs raise NotImplementedError naming the
    alternative.
    """
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    if order > 2:
        return _higher_order(spec, order, x, exact)
    for _, entry in KERNELS:
        result = entry(spec, order, x, exact)
        if result is not None:
            return result
    raise AssertionError("the last kernel applies everywhere")


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


def _kernel_plan(spec: Activation) -> tuple | None:
    """(kernel constants, f''/f' on the branch x <= 0, the plan's index in `_NATIVE_OPS` or None)
    for the ELU family on the compiled kernels (f and f' share their constants), else None; once
    per spec object."""
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


_FUSED = {"enabled": os.environ.get("ELUKIT_TORCH_FUSED_TRAINING", "0") == "1"}


def use_fused_training(enabled: bool = True) -> None:
    """Let eager training calls of the ELU family compute f and f' in one pass and save f'(x)
    instead of x (`training_plan`; also ``ELUKIT_TORCH_FUSED_TRAINING=1``). Off by default: its
    first-order gradients are grad * f'(x) with f'(x) rounded first (<= 1 ulp from the default's
    once-rounded product, bit for bit where one gradient value serves every element), and its
    higher orders are products of rounded factors (gradcheck-exact, not bit for bit the operators'),
    so results would differ in the last bit from the operators, torch.func and ``backend="triton"``."""
    _FUSED["enabled"] = bool(enabled)


def training_plan(spec: Activation, x: torch.Tensor, exact: bool) -> tuple | None:
    """What `value_and_derivative` needs for x, or None where the fused training forward does not
    apply: it is switched on (`use_fused_training`) and serves the ELU family on contiguous CPU
    float32/float64 tensors from the compiled kernels, without ``exact=True`` (which keeps saving
    x, so that first-order gradients are grad * f'(x) rounded once)."""
    if not _FUSED["enabled"] or exact or x.dtype not in _COMPILED_DTYPES or not x.is_cpu or not x.is_contiguous():
        return None
    return _kernel_plan(spec)


def native_index(spec: Activation, x: torch.Tensor) -> int | None:
    """The plan index for `_NATIVE_OPS`' value and training-node calls (ELU family, contiguous CPU
    float32/float64 tensors), or None where the C++ module is missing or does not serve x."""
    if _NATIVE_OPS is None or x.dtype not in _COMPILED_DTYPES or not x.is_cpu or not x.is_contiguous():
        return None
    plan = _kernel_plan(spec)
    return None if plan is None else plan[2]


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
            and grad.shape == derivative.shape and unobserved(grad, derivative)):
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


BACKENDS = ("triton",)
"""The ``backend=`` names besides None; `backend_module` maps each to the module serving it (with
``activation(x, spec, inplace, exact)``)."""


def backend_module(backend: str):
    """The module serving ``backend=``: ``"triton"`` -> `elukit.torch._triton` (imported on first
    use; an ImportError naming its install command where Triton is missing)."""
    if backend == "triton":
        from elukit.torch import _triton  # a plain import: torch.compile traces it, not importlib

        return _triton
    raise ValueError(f"backend must be None (elukit's default kernels) or one of {list(BACKENDS)}, got {backend!r}")


__all__ = ["BACKENDS", "KERNELS", "QUANTITIES", "backend_module", "evaluate", "evaluate_order", "gradient_times_derivative",
           "kernel_for", "native_index", "round_to_odd_float32", "times_magnitude", "training_plan", "unobserved",
           "use_compiled_kernels", "use_fused_training", "value_and_derivative", "write_value_into"]
