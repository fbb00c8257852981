r"""elukit.torch's activations as Triton kernels (``backend="triton"``): one pass over memory on CUDA
tensors, the same bits as the compiled CPU kernels.

The kernels (`elukit.torch._triton_kernels`) are the C kernels of src/elukit/_exponential_linear.c
written again operation for operation, with fused multiply-add contraction off; see there for why
the bits agree. They serve the exponential-linear family (ELU, SELU, CELU) and the piecewise-linear
one (ReLU, Leaky ReLU) in float16, bfloat16, float32 and float64: f, grad * f^(n) for every order
n >= 1, and f in place.

Three operators, registered with ``torch.library.triton_op`` so that torch.compile sees (and can
fuse around) the Triton kernels of CUDA tensors, and torch.export keeps them as operator calls:

- ``elukit_triton::activation(x, name, params, order=0, exact=False)``: f^(order)(x);
- ``elukit_triton::activation_backward(grad, x, name, params, order=0, exact=False)``:
  grad * f^(order+1)(x) in one pass;
- ``elukit_triton::activation_(x, name, params, exact=False)``: x <- f(x).

Their derivatives are these operators one order up, in reverse and in forward mode (backward,
torch.func.grad/jacrev/jacfwd/jvp/hessian, torch.autograd.forward_ad), so derivatives of every order
come from the input (``activation`` -> ``activation_backward`` -> ``activation_backward`` of order
+ 1 ...): the same bits as the default backend's. Forward mode nested inside another derivative
transform (jacfwd(jacfwd(f))) raises NotImplementedError naming jacfwd(jacrev(f)), as on the default
backend (`_ops.check_forward_mode_not_nested`).

CPU tensors run under Triton's interpreter (NumPy; slow, for tests) when ``TRITON_INTERPRET=1``
is set; without it a CPU tensor is refused with one line naming the alternatives. The interpreted
kernels are a second copy of the kernel module, loaded with Triton's interpreter switched on for
that load alone, so no other Triton code in the process changes mode.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from decimal import Decimal, localcontext

import numpy as np

try:
    import triton
except ImportError as error:  # pragma: no cover - exercised where Triton is missing
    raise ImportError("backend='triton' needs Triton: pip install triton==3.9.0") from error

from elukit import _native
from elukit._spec import Activation
from elukit.torch import _ops
from elukit.torch._torch import torch
from torch._functorch.utils import enable_single_level_autograd_function  # noqa: E402 - after elukit's torch check

_BLOCK = 1024
_INTERPRETED_BLOCK = 16384
"""Elements per program: 1024 on a GPU; under the interpreter, whose cost is per NumPy call, more."""
_NARROW = (torch.float16, torch.bfloat16)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_QUANTITIES = ("value", "derivative", "second_derivative")
_LN2 = float.fromhex("0x1.62e42fefa39efp-1")

# kernel MODE values (see _triton_kernels)
_FLOAT32, _FLOAT64_FAST, _FLOAT64_EXACT, _NARROW_MODE, _NARROW_FROM_FAST, _NARROW_FROM_EXACT = range(6)


def interpreting() -> bool:
    """Whether TRITON_INTERPRET=1 asks for Triton's interpreter (read on every call)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """The kernel module: compiled (for CUDA tensors), or a copy run by Triton's interpreter."""
    if not interpret:
        from elukit.torch import _triton_kernels

        return _triton_kernels
    path = os.path.join(os.path.dirname(__file__), "_triton_kernels.py")
    spec = importlib.util.spec_from_file_location("elukit.torch._triton_kernels_interpreted", path)
    module = importlib.util.module_from_spec(spec)
    with triton.knobs.runtime.scope():  # restores the knob and TRITON_INTERPRET afterwards
        triton.knobs.runtime.interpret = True
        spec.loader.exec_module(module)
    return module


def _exp2_table() -> tuple[list[float], list[float]]:
    """2^(j/128), j = 0..127, as double-doubles: hi rounded to nearest, lo the rest rounded to
    nearest (the table of src/elukit/_exp2_table.h; tests/test_triton.py compares both)."""
    high, low = [], []
    with localcontext() as context:
        context.prec = 60
        for j in range(128):
            exact = Decimal(2) ** (Decimal(j) / Decimal(128))
            hi = float(exact)
            high.append(hi)
            low.append(float(exact - Decimal(hi)))
    return high, low


@functools.lru_cache(maxsize=16)
def _table(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    high, low = _exp2_table()
    return (torch.tensor(high, dtype=torch.float64, device=device),
            torch.tensor(low, dtype=torch.float64, device=device))


@functools.lru_cache(maxsize=1024)
def _plan(name: str, params: tuple[float, ...], order: int, narrow: bool) -> tuple[int, bool, tuple, bool]:
    """(kind, linear, constants, from_second) of the kernel for f^(order): kind 0 the value, 1 the
    exponential; `constants` the 14 float64 values of `_triton_kernels.exponential_linear`;
    `from_second` where a narrow dtype's order >= 3 is f'' / divisor^(order-2) (as on the CPU)."""
    spec = _ops.spec_for(name, params)
    exponential, linear = spec.exponential_linear_form(), spec.linear_branches_form()
    divisor_power, from_second = 1.0, False
    if exponential is not None:
        form = tuple(exponential)
        if narrow and order > 2:
            divisor_power, from_second = form[2] ** (order - 2), True
            constants = _native.derivative_constants(form, 2)
        else:
            constants = _native.derivative_constants(form, max(order, 1))
        kind, is_linear = (0 if order == 0 else 1), False
    elif linear is not None:
        quantity = _QUANTITIES[min(order, 2)]
        constants = _native.linear_constants(tuple(linear), quantity)
        kind, is_linear = _native.KIND[quantity], True
    else:
        raise ValueError(f"backend='triton' has kernels for the exponential-linear family (elu, selu, celu) and the "
                         f"piecewise-linear one (relu, leaky_relu); {spec.label()} has none: use backend=None")
    if constants is None:
        raise ValueError(f"backend='triton': the kernels cannot represent {spec.label()} (parameters out of their "
                         "range); use backend=None")
    c_hi, c_lo, d_hi, d_lo, m_hi, m_lo, m_exponent, floor, positive, scale, beta = constants
    float_floor = max((-1021.5 - m_exponent) * _LN2, floor)  # C: complete_constants
    values = (c_hi, c_lo, d_hi, d_lo, m_hi, m_lo, float(m_exponent), floor, positive, scale, beta, 1.0 / beta,
              float_floor, divisor_power)
    return kind, is_linear, values, from_second


@functools.lru_cache(maxsize=1024)
def _constants(values: tuple, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=device)


def check_tensor(x: torch.Tensor, argument: str = "x") -> None:
    """One line where the kernels cannot run x (before any work)."""
    if x.dtype not in _DTYPES:
        raise TypeError(f"backend='triton': {argument} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.device.type == "cpu" and not interpreting():
        raise ValueError(f"backend='triton' runs CUDA tensors; {argument} is on the CPU, where the kernels run only "
                         "under Triton's interpreter (TRITON_INTERPRET=1, for tests): use backend=None on the CPU")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"backend='triton' runs CUDA tensors, got {argument} on {x.device}: use backend=None")


def _launch(x: torch.Tensor, grad: torch.Tensor | None, out: torch.Tensor, name: str, params: tuple, order: int,
            exact: bool) -> None:
    """out <- f^(order)(x) [times grad]; x, grad and out contiguous, of one dtype and length."""
    narrow = x.dtype in _NARROW
    kind, is_linear, values, from_second = _plan(name, params, order, narrow)
    if x.dtype == torch.float32:
        mode = _FLOAT32
    elif x.dtype == torch.float64:
        mode = _FLOAT64_EXACT if exact else _FLOAT64_FAST
    elif from_second:
        mode = _NARROW_FROM_EXACT if exact else _NARROW_FROM_FAST
    else:
        mode = _NARROW_MODE
    count = x.numel()
    if count == 0:
        return
    if _real(x):
        table_hi, table_lo = _table(x.device)
        constants = _constants(values, x.device)
    else:  # traced (fake tensors): built in the trace, never cached
        high, low = _exp2_table()
        table_hi, table_lo = (torch.tensor(v, dtype=torch.float64, device=x.device) for v in (high, low))
        constants = torch.tensor(values, dtype=torch.float64, device=x.device)
    arguments = (x, x if grad is None else grad, out, constants, table_hi, table_lo, count)
    block = _BLOCK if x.device.type == "cuda" else _INTERPRETED_BLOCK
    options = dict(KIND=kind, LINEAR=is_linear, MODE=mode, HAS_BETA=values[10] != 1.0, HAS_GRAD=grad is not None,
                   BLOCK=block)
    grid = (triton.cdiv(count, block),)
    if x.device.type == "cuda":
        # fp fusion off: a contracted a*b + c breaks the error-free transformations
        torch.library.wrap_triton(_kernels(False).exponential_linear)[grid](*arguments, **options,
                                                                             enable_fp_fusion=False)
    else:
        with np.errstate(all="ignore"):  # the interpreter's NumPy sees the discarded branches' inf - inf
            _kernels(True).exponential_linear[grid](*arguments, **options)


def _real(*tensors: torch.Tensor) -> bool:
    """Whether the tensors hold data (not fake, functional or meta tensors of a tracer)."""
    return all(type(t) is torch.Tensor and t.device.type != "meta" for t in tensors)


@torch.library.custom_op("elukit_triton::interpreted", mutates_args=())
def interpreted_op(x: torch.Tensor, grad: torch.Tensor | None, name: str, params: list[float], order: int,
                   exact: bool) -> torch.Tensor:
    """The interpreted kernels on CPU tensors, as an operator opaque to compilers (a traced
    program calls it; it is never decomposed into the kernel launch, which runs eagerly only)."""
    out = torch.empty_like(x)
    _launch(x, grad, out, name, tuple(params), order, exact)
    return out


@interpreted_op.register_fake
def _interpreted_fake(x, grad, name, params, order, exact):
    return torch.empty_like(x)


def _evaluate(x: torch.Tensor, grad: torch.Tensor | None, name: str, params: list[float], order: int,
              exact: bool) -> torch.Tensor:
    """f^(order)(x) [times grad] as a new contiguous tensor: a Triton launch that torch.compile
    sees on CUDA (through wrap_triton), the interpreted operator on the CPU."""
    source = x.contiguous()
    if x.device.type != "cuda":
        return interpreted_op(source, grad, name, params, order, exact)
    out = torch.empty_like(source)
    _launch(source, grad, out, name, tuple(params), order, exact)
    return out


@torch.library.triton_op("elukit_triton::activation", mutates_args=())
def activation_op(x: torch.Tensor, name: str, params: list[float], order: int = 0, exact: bool = False) -> torch.Tensor:
    return _evaluate(x, None, name, params, order, exact)


@torch.library.triton_op("elukit_triton::activation_backward", mutates_args=())
def activation_backward_op(grad: torch.Tensor, x: torch.Tensor, name: str, params: list[float], order: int = 0,
                           exact: bool = False) -> torch.Tensor:
    return _evaluate(x, grad.to(x.dtype).expand_as(x).contiguous(), name, params, order + 1, exact)


@torch.library.triton_op("elukit_triton::activation_", mutates_args={"x"})
def activation_inplace_op(x: torch.Tensor, name: str, params: list[float], exact: bool = False) -> None:
    if x.device.type == "cuda" and x.is_contiguous():
        _launch(x, None, x, name, tuple(params), 0, exact)
    else:
        x.copy_(_evaluate(x, None, name, params, 0, exact))


# --- autograd, both modes, and vmap: `_ops`'s rules on these operators --------------------------------
# ``register_autograd`` gives reverse mode only (its generated Function has no jvp, so forward-mode AD
# would drop the tangent and torch.func refuses it). The autograd kernels are `_ops.autograd_kernels`
# with `_ops`'s single-level Functions subclassed onto these operators (their backward and jvp are
# these operators one order up; in place, at a copy of x from before the write), registered for the CPU
# and CUDA autograd keys (which take precedence over the alias key the triton_op registered, without
# overriding it).

_ACTIVATION = torch.ops.elukit_triton.activation.default
_ACTIVATION_BACKWARD = torch.ops.elukit_triton.activation_backward.default
_ACTIVATION_INPLACE = torch.ops.elukit_triton.activation_.default
_BELOW_AUTOGRAD = torch._C._after_autograd_keyset


_ActivationFunction, _BackwardFunction = _ops.functions_on(_ACTIVATION, _ACTIVATION_BACKWARD, direct_backward=False)
_OPERATORS = (_ACTIVATION, _ACTIVATION_BACKWARD, _ACTIVATION_INPLACE)
_AUTOGRAD_KERNELS = _ops.autograd_kernels(_ActivationFunction, _BackwardFunction, _ACTIVATION_INPLACE,
                                          _ACTIVATION_BACKWARD)

_ops.register_vmap_rules(_OPERATORS)

_LIBRARY = torch.library.Library("elukit_triton", "IMPL")
for _key in ("AutogradCPU", "AutogradCUDA", "AutogradMeta"):
    for _operator, _kernel in zip(_OPERATORS, _AUTOGRAD_KERNELS):
        _LIBRARY.impl(_operator._schema.name.split("::")[1], _kernel, _key, with_keyset=True)


def activation(x: torch.Tensor, spec: Activation, inplace: bool, exact: bool) -> torch.Tensor:
    """`elukit.torch.functional.activation` with ``backend="triton"``."""
    _ops.check_input(x)
    check_tensor(x)
    name, params = spec.name, [float(v) for v in spec.parameters.values()]
    if not torch.compiler.is_compiling():  # (the caches below are not traced)
        _ops.spec_for(name, tuple(params))  # the registry holds this spec under its name
        _plan(name, tuple(params), 0, x.dtype in _NARROW)  # a family without kernels: one line, before any work
    if inplace:
        activation_inplace_op(x, name, params, exact)  # its autograd kernel checks x and refuses as torch does
        return x
    return activation_op(x, name, params, 0, exact)


def derivative(x: torch.Tensor, spec: Activation, order: int, exact: bool = False) -> torch.Tensor:
    """f^(order)(x) from the Triton kernels (no autograd); for tests and benchmarks."""
    check_tensor(x)
    return activation_op(x, spec.name, [float(v) for v in spec.parameters.values()], order, exact)


def gradient(grad: torch.Tensor, x: torch.Tensor, spec: Activation, order: int = 1, exact: bool = False) -> torch.Tensor:
    """grad * f^(order)(x), order >= 1, in one pass (no autograd); for tests and benchmarks."""
    check_tensor(x)
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    return activation_backward_op(grad, x, spec.name, [float(v) for v in spec.parameters.values()], order - 1, exact)


__all__ = ["activation", "activation_backward_op", "activation_inplace_op", "activation_op", "check_tensor",
           "derivative", "gradient", "interpreting"]
