r"""Exact ELU-family activations as JAX functions, built from the `Activation` specs.

Every function here runs under ``jit``, ``vmap``, ``grad``, ``jacfwd``/``jacrev``, ``hessian`` and
``pmap`` on any backend, with no host callback. On the CPU, float32 and float64 are evaluated by
elukit's compiled C kernels through an XLA FFI custom call (`COMPILED`; one pass, about jax.nn.elu's
time, measured by benchmarks/bench_jax.py; float64 by correctly rounded kernels of the FFI module's
own); everywhere else (GPU, TPU, float16/bfloat16, or an installation built without the FFI module)
by the pure jax.numpy kernels below. Both give the same bits (tests/test_jax_ffi.py); the lowering
picks one per platform, so a GPU program never holds the
custom call, and neither does a program exported with ``jax.export``. Derivatives come from
``jax.custom_jvp``: the derivative of the order-m function is the order-(m+1) function of the
*input*, so every order is exact and none is computed from the output (``jax.nn.elu``'s gradient,
``f(x) + alpha``, is exactly 0 for x <= -17.3 in float32 and x <= -38 in float64).

The spec describes an ELU-family member by its exponential-linear form (scale s, alpha a,
divisor c): f(x) = s*x (x > 0), s*a*expm1(x/c) (x <= 0). Its derivatives of order m >= 1 are
s (m = 1) or 0 (m >= 2) for x > 0, and (s*a/c^m)*exp(x/c) for x <= 0, the left branch at 0.
Piecewise-linear specs (ReLU, Leaky ReLU: f(x) = a*x (x > 0), b*x (x <= 0)) are supported too.

Precision (no ``jax_enable_x64`` needed): float16, bfloat16 and float32 inputs are evaluated in
pairs of float32 (about 48 bits, see `elukit.jax._pairs`) and rounded once -- through a
round-to-odd float32 step for float16/bfloat16, so there is no double rounding. float64 inputs
(with x64 on) are evaluated in pairs of float64. Results do not depend on the x64 flag.

XLA flushes subnormal float32/float64 numbers to zero, inputs and results (``jax.nn.elu(-1e-40)``
is 0.0). Here subnormal inputs are read from their bits and subnormal results assembled from their
integer significand (`elukit.jax._pairs.finish`), so they are correctly rounded too.

Accuracy against mpmath: f, f', f'' correctly rounded on every float16/bfloat16 input
(tests/test_jax.py) and on all 20,000 float32 and float64 points per row of ``elukit audit``
(ELU, SELU, CELU(alpha=3)); the tests require < 1 ulp and >= 99.9% correctly rounded on 10^5
float32 points per activation.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from fractions import Fraction
from typing import Any

import numpy as np

from elukit import _native
from elukit._registry import get
from elukit._spec import Activation
from elukit.jax import _pairs
from elukit.jax._jax import jax, jnp
from jax.extend.core import Primitive  # noqa: E402 - after the install hint of elukit.jax._jax
from jax.interpreters import batching, mlir  # noqa: E402

try:
    from elukit.jax import _ffi_kernels
except ImportError:  # built without XLA's FFI header (see setup.py): the jnp kernels serve the CPU too
    _ffi_kernels = None

_FFI_TARGET = "elukit_exponential_linear"
if _ffi_kernels is not None:
    jax.ffi.register_ffi_target(_FFI_TARGET, _ffi_kernels.handler(), platform="cpu")

COMPILED = _ffi_kernels is not None
"""Whether jit programs on the CPU call elukit's compiled C kernels (an XLA FFI custom call) for
float32 and float64; elsewhere (GPU, TPU, float16/bfloat16, or built without them) the jnp kernels
below run. Both give the same correctly rounded values."""

_COMPILED_DTYPES = ("float32", "float64")
"""The compiled float32 kernels round correctly (a rounding test sends the hard cases to
double-double and rounds to odd). elukit._native's float64 kernels are faithful only (about 3
results in 10^4 of a normal sample were 1 ulp from the jnp kernels' correctly rounded ones), so
float64 asks the FFI module for its own correctly rounded kernels (`_CORRECTLY_ROUNDED`: a
double-double evaluation to ~2^-71 with a rounding test, binary128 for the hard cases)."""

_CORRECTLY_ROUNDED = 8
"""Added to the kind of the ELU family's float64 calls: elukit.jax._ffi_kernels' correctly rounded
float64 kernels (the piecewise-linear family's one product is correctly rounded as it is)."""

_SETTINGS = {"compiled": COMPILED}
_THREADS = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1), 64))

_FORMATS = {name: _pairs.Format(np.dtype(name)) for name in ("float32", "float64")}
_NARROW = ("float16", "bfloat16")
_SUPPORTED = ("float16", "bfloat16", "float32", "float64")


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the kernels need from a spec: f(x) = slope*x (x > 0); for x <= 0 either
    coefficient*expm1(x/divisor) (exponential) or negative_slope*x (linear)."""

    slope: float
    exponential: bool
    alpha: float = 0.0
    divisor: float = 1.0
    negative_slope: float = 0.0

    @property
    def coefficient(self) -> Fraction:
        """slope*alpha exactly (rounding it to float64 would cost float64 results up to an ulp)."""
        return Fraction(self.slope) * Fraction(self.alpha)

    def native(self, order: int) -> tuple[int, tuple] | None:
        """(kind, constants) of the compiled kernels (`elukit._native`) for the derivative of
        `order` (0: the value), or None where they cannot represent it."""
        if self.exponential:
            form = (self.slope, self.alpha, self.divisor)
            constants = _native.derivative_constants(form, max(order, 1))
            kind = _native.KIND["value" if order == 0 else "derivative"]
        else:
            quantity = _native_quantity(order)
            constants = _native.linear_constants((self.slope, self.negative_slope), quantity)
            kind = _native.KIND[quantity] | _native.LINEAR
        return None if constants is None else (kind, constants)

    def derivative_coefficient(self, order: int) -> Fraction:
        """The x <= 0 factor of the order-th derivative: coefficient/divisor^order times
        exp(x/divisor), or the negative slope (order 1) / 0 (order >= 2) when linear."""
        if self.exponential:
            return self.coefficient / Fraction(self.divisor) ** order
        return Fraction(self.negative_slope) if order == 1 else Fraction(0)


def _native_quantity(order: int) -> str:
    return ("value", "derivative", "second_derivative")[min(order, 2)]


def _plan(spec: Activation) -> _Plan:
    form = spec.exponential_linear_form()
    if form is not None:
        scale, alpha, divisor = form
        return _Plan(slope=scale, exponential=True, alpha=alpha, divisor=divisor)
    branches = spec.linear_branches_form()
    if branches is not None:
        return _Plan(slope=branches[0], exponential=False, negative_slope=branches[1])
    raise ValueError(f"elukit.jax has kernels for the exponential-linear family (elu, selu, celu) and the "
                     f"piecewise-linear one (relu, leaky_relu); {spec.name!r} has none: use jax.nn's")


def _exponential_branch(x, plan: _Plan, order: int, fmt: _pairs.Format):
    """The x <= 0 branch as a pair and a power of two: coefficient*expm1(x/c) (order 0, power
    0) or K_m*exp(x/c) = pair * 2^n (the product is scaled once, when it is rounded)."""
    one = fmt.dtype.type
    lowest = fmt.lowest_exponent_argument * plan.divisor
    negative = jnp.clip(jnp.minimum(x, one(0)), one(lowest), one(0))
    negative = jnp.where(jnp.isnan(x), one(0), negative)
    if plan.divisor == 1.0:
        t = (negative, jnp.zeros_like(negative))
    else:
        # t = x/c as a pair: the remainder x - q*c is exact (TwoProduct), so t_lo = remainder/c
        c_hi, c_lo = fmt.constant(plan.divisor)
        q = negative / one(c_hi)
        p, e = _pairs.two_product(q, one(c_hi), fmt, _pairs.split_constant(c_hi, fmt))
        t = _pairs.fast_two_sum(q, (((negative - p) - e) - q * one(c_lo)) / one(c_hi))
    n, table, expm1_r = _pairs.reduced_exponential(t, fmt)
    table_times_expm1 = _pairs.multiply(table, expm1_r, fmt, bounded=True)  # |T| < 2, |E| < 0.011
    if order == 0:
        # expm1(t) = 2^n*T*E + (2^n*T - 1): no cancellation, exact at t = 0
        scaled_table = _pairs.scale(table, n, fmt)
        head = _pairs.two_sum(scaled_table[0], one(-1))
        head = _pairs.fast_two_sum(head[0], head[1] + scaled_table[1])
        expm1_t = _pairs.add(head, _pairs.scale(table_times_expm1, n, fmt))
        return _pairs.multiply_constant(expm1_t, fmt.constant(plan.coefficient), fmt), jnp.zeros_like(n)
    exponential = _pairs.add(table, table_times_expm1)  # e^t / 2^n
    return _pairs.multiply_constant(exponential, fmt.constant(plan.derivative_coefficient(order)), fmt), n


def _evaluate(x, plan: _Plan, order: int):
    """The order-th derivative (0: the value) of the planned function at x, rounded once."""
    out_dtype = x.dtype
    narrow = str(out_dtype) in _NARROW
    fmt = _FORMATS["float64" if out_dtype == jnp.float64 else "float32"]
    one = fmt.dtype.type
    xw = x.astype(fmt.dtype)
    positive, negative, subnormal = _pairs.classify(xw, fmt)
    zeros = jnp.zeros_like(xw)
    no_shift = jnp.zeros(xw.shape, fmt.int_dtype)
    if order == 0:
        # products with tiny x are formed on x*2^S and scaled back when rounded: no partial
        # product underflows (see `_pairs.Format.small`), and subnormal x are not read as 0
        small = (jnp.abs(xw) < one(fmt.small)) | subnormal
        scaled = jnp.where(small, _pairs.scaled_up(xw, subnormal, fmt.small_scale, fmt), xw)
        p_shift = jnp.where(small, fmt.int_dtype.type(-fmt.small_scale), no_shift)

        def times(constant):
            return _pairs.product_with_constant_exact(scaled, constant, fmt)

        p_hi, p_lo = times(plan.slope)
        n_shift = p_shift
        if plan.exponential:
            (n_hi, n_lo), _ = _exponential_branch(xw, plan, 0, fmt)
            # tiny x: K*expm1(x/c) = (K/c)*x*(1 + x/(2c)) to the pair's precision; K/c*x exact,
            # and its correction (> 0) nudges a tie the right way when it is too small to add
            t_hi, t_lo = _pairs.product_with_constant_exact(scaled, plan.derivative_coefficient(1), fmt)
            correction = t_hi * (xw * one(0.5 / plan.divisor))
            t_lo = _pairs.nudge(t_lo, correction, jnp.where(negative, one(1), one(0)))
            n_hi = jnp.where(small, t_hi, n_hi)
            n_lo = jnp.where(small, t_lo, n_lo)
        elif plan.negative_slope == 0:
            n_hi, n_lo = zeros, zeros  # +0 for every x <= 0, as the spec says
        else:
            n_hi, n_lo = times(plan.negative_slope)
        lost = one(1) if plan.exponential else one(0)  # k*expm1(t) - k*t > 0; k*(1 - e^t) < k
    else:
        p_hi, p_lo = (jnp.full_like(xw, v) for v in fmt.constant(plan.slope if order == 1 else 0.0))
        p_shift = no_shift
        if plan.exponential:
            (n_hi, n_lo), n_shift = _exponential_branch(xw, plan, order, fmt)
        else:
            n_hi, n_lo = (jnp.full_like(xw, v) for v in fmt.constant(plan.derivative_coefficient(order)))
            n_shift = no_shift
        lost = one(-1) if plan.exponential else one(0)  # K*e^t < K for t < 0
    hi = jnp.where(positive, p_hi, n_hi)
    lo = jnp.where(positive, p_lo, n_lo)
    shift = jnp.where(positive, p_shift, n_shift)
    lo = jnp.where(jnp.isfinite(hi), lo, one(0))
    if order == 0:
        minus_infinity = fmt.constant(-plan.coefficient) if plan.exponential else (-np.inf if plan.negative_slope else 0.0, 0.0)
    else:
        minus_infinity = (0.0, 0.0) if plan.exponential else fmt.constant(plan.derivative_coefficient(order))
    at_minus_infinity = xw == -jnp.inf
    hi = jnp.where(at_minus_infinity, one(minus_infinity[0]), hi)
    lo = jnp.where(at_minus_infinity, one(minus_infinity[1]), lo)
    shift = jnp.where(at_minus_infinity, no_shift, shift)
    default = jnp.where(negative & ~at_minus_infinity, lost, one(0))
    result = _pairs.finish(hi, lo, shift, fmt, odd=narrow, default_sign=default).astype(out_dtype)
    if order == 0 and (plan.exponential or plan.negative_slope > 0):
        result = jnp.copysign(result, x)  # f has the sign of x; ELU(-0.0) = -0.0
    return jnp.where(jnp.isnan(x), x, result)


def _lower_jnp(ctx, x, *, plan: _Plan, order: int, native: tuple[int, tuple]):
    return mlir.lower_fun(functools.partial(_evaluate, plan=plan, order=order), multiple_results=False)(ctx, x)


def _lower_cpu(ctx, x, *, plan: _Plan, order: int, native: tuple[int, tuple]):
    """The XLA FFI custom call into the compiled kernels; the jnp kernels where the program is
    exported (jax.export refuses custom calls without compatibility guarantees, and an exported
    program must not need elukit to load)."""
    if ctx.module_context.lowering_parameters.for_export:
        return _lower_jnp(ctx, x, plan=plan, order=order, native=native)
    kind, constants = native
    return jax.ffi.ffi_lowering(_FFI_TARGET)(ctx, x, plan=np.array((kind, _THREADS, *constants), dtype=np.float64))


_COMPILED_PRIMITIVE = Primitive("elukit_exponential_linear")
"""f^(order)(x) for float32: the compiled kernels in CPU programs, the jnp kernels in any other
(lowering picks per platform). Elementwise, so vmap applies it to the batched array as it is."""
_COMPILED_PRIMITIVE.def_abstract_eval(lambda x, **_: x)
_COMPILED_PRIMITIVE.def_impl(lambda x, **params: jax.jit(functools.partial(_COMPILED_PRIMITIVE.bind, **params))(x))
batching.primitive_batchers[_COMPILED_PRIMITIVE] = lambda args, dims, **params: (
    _COMPILED_PRIMITIVE.bind(*args, **params), dims[0])
mlir.register_lowering(_COMPILED_PRIMITIVE, _lower_jnp)
if _ffi_kernels is not None:
    mlir.register_lowering(_COMPILED_PRIMITIVE, _lower_cpu, platform="cpu")


def _evaluate_anywhere(x, plan: _Plan, order: int, compiled: bool):
    """`_evaluate`, through the compiled kernels where the program runs on a CPU and they apply."""
    native = plan.native(order) if compiled and str(x.dtype) in _COMPILED_DTYPES else None
    if native is None:
        return _evaluate(x, plan, order)
    if x.dtype == jnp.float64 and plan.exponential:
        native = (native[0] | _CORRECTLY_ROUNDED, native[1])
    return _COMPILED_PRIMITIVE.bind(x, plan=plan, order=order, native=native)


@functools.lru_cache(maxsize=512)
def _function(plan: _Plan, order: int, compiled: bool = False):
    """The order-th derivative as a custom_jvp function whose derivative is order + 1."""

    evaluate = jax.jit(functools.partial(_evaluate_anywhere, plan=plan, order=order, compiled=compiled))  # one dispatch

    @jax.custom_jvp
    def function(x):
        return evaluate(x)

    @function.defjvp
    def _jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        return function(x), _function(plan, order + 1, compiled)(x) * x_dot

    return function


def use_compiled_kernels(enabled: bool = True) -> None:
    """Call the compiled CPU kernels (the default where they were built) or the jnp ones in the
    calls that follow (programs already traced keep their choice). The values are the same."""
    if enabled and not COMPILED:
        raise RuntimeError("elukit.jax was built without its compiled kernels (XLA's FFI header was not found at "
                           "build time): reinstall with jax installed, `pip install --no-build-isolation elukit`")
    _SETTINGS["compiled"] = bool(enabled)


def _check_array(x: Any):
    if isinstance(x, (str, bytes)) or (hasattr(x, "dtype") and np.dtype(x.dtype).kind == "c"):
        raise TypeError(f"x must be a real floating-point array, got {type(x).__name__}")
    array = jnp.asarray(x)
    if str(array.dtype) not in _SUPPORTED:
        raise TypeError(f"x must be a float16, bfloat16, float32 or float64 array, got dtype {array.dtype}")
    return array


@functools.lru_cache(maxsize=512)
def _cached_plan(name: str, params: tuple) -> _Plan:
    return _plan(get(name, **dict(params)))


def _plan_for(spec: str | Activation, params: dict[str, Any]) -> _Plan:
    if isinstance(spec, str):
        try:
            return _cached_plan(spec, tuple(sorted(params.items())))
        except TypeError:  # an unhashable (e.g. traced) parameter: validated without the cache
            return _plan(get(spec, **params))
    return _plan(get(spec, **params) if params else spec)


def derivative(x: Any, spec: str | Activation, order: int = 1, **params: Any):
    """The order-th derivative (0: the value) of an activation at x, rounded once to x's dtype.

    Equal to nesting ``jax.grad`` `order` times on `activation` elementwise, without tracing it.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be an int >= 0, got {order!r}")
    plan = _plan_for(spec, params)
    return _function(plan, order, _SETTINGS["compiled"])(_check_array(x))


def activation(x: Any, spec: str | Activation, **params: Any):
    """Apply an ELU-family or piecewise-linear activation (a name or a spec) with exact derivatives.

    Args:
        x: a float16, bfloat16, float32 or float64 array (or anything ``jnp.asarray`` makes one
            of); other dtypes raise TypeError.
        spec: a registered name (``"elu"``) or an `Activation`; other families raise ValueError.
        **params: the spec's parameters (``alpha=0.5``), validated as in `elukit.get`.
    Returns: an array of x's dtype and shape.
    """
    return derivative(x, spec, 0, **params)


def elu(x: Any, alpha: float = 1.0):
    r"""ELU: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x)\ (x\le0)`; f'(0) = alpha (left branch).

    Same signature as ``jax.nn.elu``. ELU(-0.0) = -0.0; ELU(-inf) = -alpha.
    """
    return activation(x, "elu", alpha=alpha)


def selu(x: Any):
    r"""SELU: :math:`\lambda\,\mathrm{ELU}(x; \alpha)` with elukit.SELU_SCALE and SELU_ALPHA."""
    return activation(x, "selu")


def celu(x: Any, alpha: float = 1.0):
    r"""CELU: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x/\alpha)\ (x\le0)`; CELU(-0.0) = -0.0.

    Note: ``jax.nn.celu(-0.0)`` returns +0.0.
    """
    return activation(x, "celu", alpha=alpha)


def pelu(x: Any, a: Any, b: Any):
    r"""Parametric ELU (Trottier et al. 2017): :math:`(a/b)x\ (x>0),\ a\,\mathrm{expm1}(x/b)\ (x\le0)`.

    `a` and `b` are positive arrays broadcast against x (e.g. shape (C,) for channels-last x);
    gradients flow to x, a and b through JAX's own operations in x's dtype (not the exact
    kernels: the parameters are traced). The exponential is evaluated on min(x, 0), so neither
    branch can overflow or poison a gradient.
    """
    x = _check_array(x)
    a = jnp.asarray(a, dtype=x.dtype)
    b = jnp.asarray(b, dtype=x.dtype)
    negative = a * jnp.expm1(jnp.minimum(x, 0) / b)
    return jnp.where(x > 0, (a / b) * x, negative)


__all__ = ["activation", "celu", "derivative", "elu", "pelu", "selu"]
