r"""elukit's operators written in core ATen ops: what saved artifacts compute.

An exported program (``torch.export``), a traced or scripted TorchScript module, an ONNX file or
an AOTInductor package must run where elukit is not installed. There, elukit's operators are
replaced by this decomposition, built only from ops every runtime has (``exp``, ``log``, ``mul``,
``div``, ``where``, comparisons, casts): no ``expm1`` (the TorchScript ONNX exporter has none, and
the dynamo exporter lowers it to ``Exp(x) - 1``, which returns 0 for |x| < 1e-16 and loses 4 digits
at x = -1e-5 in float32; so does onnxruntime's own ``Elu``).

For the ELU family, :math:`f(x) = \lambda x\ (x > 0),\ \lambda\alpha\,\mathrm{expm1}(x/\delta)\ (x \le 0)`,
evaluated in float64 with Kahan's expm1,

.. math:: \mathrm{expm1}(w) = (u - 1)\,w / \log u, \quad u = e^{w} \quad (w \text{ if } u = 1),

whose rounding errors in u - 1 and log u cancel, then rounded to x's dtype (for float64 inputs
with a divisor other than 1, the quotient's rounding error is carried as a residual: without it
e^(x/divisor) would be off by |x/divisor| half-ulps). Measured against elukit's eager kernels
(``tests/test_torch_export.py::test_decomposition_ulp_bound``: every float16 bit pattern, 300,005
bfloat16/float32/float64 points spanning every binade, ELU(0.7), SELU, CELU(2), CELU(3), orders 0-2):

- float32, float16, bfloat16: <= 1 ulp (ELU(0.7) float32: 99.5% of values equal, the others 1 ulp;
  SELU, CELU(2), CELU(3) float32: all equal);
- float64: <= 3 ulp (86-95% equal; eager float64 is faithful, <= 0.52 ulp).

Gradients through it (autograd of the graph, as a trained artifact computes them) are within the
same bounds (`test_autograd_through_the_decomposition_gives_the_exact_derivatives`).

Derivatives of order n >= 1 are :math:`\lambda\ (n = 1)` or 0 for x > 0 and
:math:`\lambda\alpha\delta^{-n} e^{x/\delta}` for x <= 0 (the left branch at 0, as eager).
Piecewise-linear specs (ReLU, leaky ReLU) are exact in every dtype: below float64 the product is
formed exactly as a float64 sum and its error and rounded once (`linear_branches`). Other specs
(GELU, SiLU, ...) run their torch kernels in float64, rounded once (twice for 16-bit dtypes); those
are not TorchScript, so a *scripted* module with them keeps elukit's operator (and needs
``import elukit.torch`` to load).

`exponential_linear` and `linear_branches` are TorchScript functions: the scripted modules and
``elukit.torch.functional.elu/selu/celu`` inside a scripted ``forward`` compile to them.
"""

from __future__ import annotations

from typing import Tuple  # noqa: UP035 - TorchScript reads typing.Tuple

from elukit._spec import Activation
from elukit.torch._torch import torch


def _clamp(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """clamp from where: the dynamo ONNX exporter writes a float64 Clip that onnxruntime rejects
    (torch 2.13, onnxscript 0.7.2). NaN stays NaN; -0.0 stays -0.0."""
    return torch.where(t > high, high, torch.where(t < low, low, t))


def exponential_linear(x: torch.Tensor, scale: float, alpha: float, divisor: float, order: int = 0) -> torch.Tensor:
    """The derivative of `order` of scale*x (x > 0), scale*alpha*expm1(x/divisor) (x <= 0), in
    float64 from exp/log arithmetic, rounded to x's dtype (see the module docstring for the bound).

    Autograd through it gives every higher derivative exactly: differentiating Kahan's quotient
    would not (it is wrong by up to 100% where u rounds next to 1), so where x requires grad the
    value of order 0 carries the derivatives of scale*alpha*exp(w) through a term that is exactly
    +0 (s - s, with s finite), and the quotient itself is detached.
    """
    wide = x.to(torch.float64)
    quotient = wide / divisor if divisor != 1.0 else wide
    w = _clamp(quotient, -800.0, 0.0)  # e^-800 = 0 in float64
    residual = _division_residual(wide, w, divisor) if x.dtype == torch.float64 and divisor != 1.0 else None
    exponential = torch.exp(w)
    if residual is not None:  # e^(x/divisor) = e^w (1 + residual), to float64's precision
        exponential = exponential + exponential * residual
    if order > 0:
        positive = scale if order == 1 else 0.0
        return torch.where(wide > 0, positive, scale * alpha / divisor ** order * exponential).to(x.dtype)
    # Below w = -40, expm1(w) rounds to -1 in float64 (e^-40 = 4e-18 < 2^-54): the result is -1
    # exactly, and the clamp keeps exp and log away from underflow. (TorchScript reads no float globals.)
    w = _clamp(w, -41.0, 0.0)
    u = torch.exp(w)
    # Where u = 1 the quotient is the answer (and keeps -0.0). It comes in as the *second* operand of
    # each where: onnxruntime's Where returns +0.0 for a -0.0 taken from its first operand.
    away = u != 1.0
    safe = torch.where(away, u, 0.5)  # keeps 0/0 out of the branch not taken
    kahan = (safe - 1.0) * w / torch.log(safe)
    expm1 = torch.where(away, torch.where(w < -40.0, -1.0, kahan), quotient)
    if residual is not None:  # expm1(w + r) = expm1(w) + e^w r (not where u = 1: -0.0 + 0 = +0)
        expm1 = torch.where(away, expm1 + u * residual, expm1)
    coefficient = scale * alpha
    negative = coefficient * expm1
    if wide.requires_grad or torch.jit.is_tracing():  # a trace keeps one graph for either case
        surrogate = coefficient * exponential  # d^n/dx^n of it: the derivatives wanted for x <= 0
        negative = negative.detach() - (surrogate.detach() - surrogate)
    positive_branch = wide * scale if scale != 1.0 else wide
    return torch.where(wide > 0, positive_branch, negative).to(x.dtype)


def _division_residual(x: torch.Tensor, w: torch.Tensor, divisor: float) -> torch.Tensor:
    """r with x/divisor = w + r to float64's precision, w the rounded quotient: x - w*divisor
    computed exactly (Dekker's product, no fused multiply-add needed). Without it, e^(x/divisor)
    carries |w| times the quotient's rounding error (60 ulp at x/divisor = -105)."""
    split = 134217729.0  # Veltkamp's split at 2^27 + 1
    d_split = divisor * split
    d_high = d_split - (d_split - divisor)  # Python floats: float64 arithmetic
    d_low = divisor - d_high
    # The graph holds d_high and d_low scaled by 2^-64 (exact): TorchScript's trace merges constants
    # that are equal in float32, and d_high next to divisor made a traced CELU(0.7) 3.8e7 ulp off.
    tiny, huge = 2.0 ** -64, 2.0 ** 64
    product = w * divisor
    w_split = w * split
    w_high = w_split - (w_split - w)
    w_low = w - w_high
    high, low = d_high * tiny, d_low * tiny
    error = (((w_high * high - product * tiny) + w_high * low + w_low * high) + w_low * low) * huge
    residual = ((x - product) - error) / divisor
    # none where w is the clamp, not the quotient: CELU(0.1) at x = -631 was 62 ulp off (-1 - e^-41 * 5510)
    return torch.where(torch.isfinite(residual) & (x <= 0) & (w > -800.0), residual, 0.0)


def _float32_parts(c: float) -> tuple[float, float, float]:
    """c = c1 + c2 + c3 exactly, each part a float32 number (24 + 24 + at most 5 of a float64's 53
    bits; Veltkamp's split at 2^29 + 1, twice). Graph constants must be float32 numbers: torch 2.13's
    dynamo ONNX exporter rounds every Python float constant to float32."""
    split = c * 536870913.0
    c1 = split - (split - c)
    rest = c - c1
    split = rest * 536870913.0
    c2 = split - (split - rest)
    return c1, c2, rest - c2


def _narrow_product(w: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, e) with p + e = w*c exactly, p the float64 sum and |e| below half an ulp of p, for a
    float64 tensor w holding at most 24 significant bits (a float32, float16 or bfloat16 input):
    w times each float32 part of c (`_float32_parts`) is exact, and the parts are summed with their
    errors (Fast2Sum, then Knuth's TwoSum for the two small terms); plain mul/add, no constant that
    is not a float32 number. The sign of zero is w*c's."""
    c1, c2, c3 = _float32_parts(c)
    a1, a2, a3 = w * c1, w * c2, w * c3
    s = a1 + a2
    e1 = a2 - (s - a1)  # |a1| >= |a2|: exact
    t = e1 + a3
    back = t - e1
    small_error = (e1 - (t - back)) + (a3 - back)
    p = s + t
    e = (t - (p - s)) + small_error  # |s| >= |t|
    # Where w is 0, +-inf or NaN, the product's sign rule: a1 + a2 may be +0 for -0.0, NaN for inf.
    # (p is the second operand of where: onnxruntime's Where returns +0.0 for a -0.0 first operand.)
    p = torch.where(torch.isfinite(w) & (w != 0), p, w * (1.0 if c > 0 else -1.0))
    return p, torch.where(torch.isfinite(e), e, 0.0)


def _largest_and_half_ulp(dtype: torch.dtype) -> Tuple[float, float]:
    """`dtype`'s largest finite number and half its ulp there (written out: TorchScript has no finfo)."""
    if dtype == torch.float16:
        return 65504.0, 16.0
    if dtype == torch.bfloat16:
        return 3.3895313892515355e38, 2.0 ** 119
    return 3.4028234663852886e38, 2.0 ** 103  # float32


def _off_midpoints(value: torch.Tensor, error: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`value` (a wider dtype), moved where needed so that rounding it to `dtype` gives value + error
    rounded once (|error| below half an ulp of value; only its sign is read).

    Rounding value alone goes wrong only where value lies exactly halfway between two `dtype`
    numbers and error != 0: ties-to-even may then pick the neighbour on the wrong side. There the
    result is the quarter point towards the error's side, which rounds to that neighbour. The
    midpoint test: h = value rounded, other = 2*value - h is exact, and it is a `dtype` number only
    at a midpoint (elsewhere it lies strictly between two). It is formed as value + (value - h): as
    2*value - h it overflowed the wide dtype above half its range (bfloat16 in float32: Leaky
    ReLU(2.99999995) misrounded at -5.9e37)."""
    wide = value.dtype
    nearest = value.to(dtype).to(wide)
    other = value + (value - nearest)  # 2*value - nearest, exact; value * 2.0 overflowed above max/2
    midpoint = (nearest != value) & (other.to(dtype).to(wide) == other) & torch.isfinite(other) & (error != 0)
    side = torch.where(error > 0, torch.maximum(nearest, other), torch.minimum(nearest, other))
    value = torch.where(midpoint, value + (side - value) * 0.5, value)  # (value + side) / 2 overflowed
    # The midpoint between `dtype`'s largest finite number and the next power of two rounds to inf, and
    # `other` is then inf too, so the test above misses it: where the error points towards zero the
    # result is the largest finite number (float16 Leaky ReLU(2.99999995) at -21840 gave -inf).
    largest, half_ulp = _largest_and_half_ulp(dtype)
    towards_zero = (value.abs() == largest + half_ulp) & (error != 0) & ((error < 0) != (value < 0))
    return torch.where(towards_zero, value - torch.sign(value) * (half_ulp / 2), value)


def _round_once(product: torch.Tensor, error: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """product + error (float64, error its exact residual) rounded once to `dtype`.

    ``product.to(dtype)`` rounds the float64 product, not the exact value: 21 float16 and 3 bfloat16
    Leaky ReLU(0.01) values were 1 ulp off, as were float32 ones. torch's own float64 -> float16 cast
    rounds through float32 (twice), so 16-bit results are rounded to float32 first, explicitly, with
    the residual of that step carried (its sign is exact: the float32 step moves by at least an ulp of
    float64 when it moves at all, more than |error|), then to 16 bits: each step is one rounding that
    every runtime does alike (float64 -> float32 -> 16 bits, to nearest even)."""
    if dtype == torch.float64:
        return product
    if dtype == torch.float32:
        return _off_midpoints(product, error, dtype).to(dtype)
    single = product.to(torch.float32)
    residual = (product - single.to(torch.float64)) + error
    return _off_midpoints(single, residual, dtype).to(dtype)


def linear_branches(x: torch.Tensor, a: float, b: float, order: int = 0) -> torch.Tensor:
    """The derivative of `order` of a*x (x > 0), b*x (x <= 0); b = 0 gives +0 for x <= 0, as ReLU.
    float64 inputs: one comparison and one multiplication, exact. Narrower ones: the exact product
    as a float64 sum and its error (`_narrow_product`), rounded once to x's dtype (`_round_once`),
    as eager elukit rounds it."""
    wide = x.to(torch.float64)
    if order == 0 and x.dtype == torch.float64:
        if b != 0.0:  # -0.0 comes from the second operand (see exponential_linear)
            return torch.where(wide > 0, wide * a, wide * b)
        return torch.where(wide <= 0, 0.0, wide * a)
    if order == 0:  # no constant a or b in this graph: only their float32 parts (see _narrow_product)
        positive, error = _narrow_product(wide, a)
        if b == 0.0:
            return _round_once(torch.where(wide <= 0, 0.0, positive), torch.where(wide <= 0, 0.0, error), x.dtype)
        negative, negative_error = _narrow_product(wide, b)
        return _round_once(torch.where(wide > 0, positive, negative), torch.where(wide > 0, error, negative_error),
                           x.dtype)
    if order == 1:
        result = torch.where(wide <= 0, b, torch.where(wide > 0, a, wide))  # NaN -> NaN
    else:
        result = torch.where(torch.isnan(wide), wide, 0.0)  # f''(NaN) = NaN, as eager
    return _round_once(result, torch.zeros_like(result), x.dtype)  # a slope cast through float32 could round twice


def script_form(spec: Activation) -> list[float]:
    """[scale, alpha, divisor] (ELU family), [a, b] (piecewise linear) or [] (no TorchScript
    decomposition): what a scripted module stores to call `decompose_form`."""
    form = spec.exponential_linear_form() or spec.linear_branches_form()
    return [float(v) for v in form] if form is not None else []


def decompose_form(x: torch.Tensor, form: list[float], order: int = 0) -> torch.Tensor:
    """`exponential_linear` or `linear_branches` chosen by the length of `form` (`script_form`)."""
    if len(form) == 3:
        return exponential_linear(x, form[0], form[1], form[2], order)
    return linear_branches(x, form[0], form[1], order)


def decompose(spec: Activation, order: int, x: torch.Tensor) -> torch.Tensor:
    """f^(order)(x) of any spec from ATen ops (any order for the ELU and piecewise-linear families,
    up to 2 for the others, which raise NotImplementedError beyond, as eager does)."""
    form = script_form(spec)
    if form:
        return decompose_form(x, form, order)
    if order > 2:
        raise NotImplementedError(
            f"elukit.torch: the derivative of order {order} of {spec.label()} is not available (its spec defines f, "
            f"f' and f''); use torch's own function where derivatives of order {order} are needed")
    kernel = getattr(spec.torch, ("value", "derivative", "second_derivative")[order])
    return kernel(torch, x.to(torch.float64), **spec.parameters).to(x.dtype)


def decompose_backward(spec: Activation, order: int, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad * f^(order+1)(x) from ATen ops."""
    return grad * decompose(spec, order + 1, x)


__all__ = ["decompose", "decompose_backward", "decompose_form", "exponential_linear", "linear_branches", "script_form"]
