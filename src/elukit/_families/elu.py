r"""The exponential-linear family: ELU, SELU and CELU.

Every kernel here receives `x` already in its working dtype (float64 for 8-32 bit inputs,
extended precision for float64, see `elukit._numerics`) and evaluates the exponential branch
on ``min(x, 0)`` so the branch it does not select can never overflow or warn. Branches are
combined without ``np.where`` where possible (see `_numerics.select` for why).

What the textbook formula ``alpha*(exp(x)-1)`` gets wrong, and what these kernels do instead:

* ``exp(x) - 1`` cancels: ELU(-1e-8) in float32 is 0 instead of -1e-8. We use ``expm1``.
* ``(scale*alpha)`` and ``x/alpha`` rounded in the input dtype (as PyTorch does) cost up to 3
  ulp (SELU, float64) and 335 ulp (CELU(alpha=3) derivative, float64). We form them in the
  working dtype, which has at least 11 more bits.
* Computing the derivative from the output (``f(x) + alpha``) returns exactly 0 once
  ``f(x)`` rounds to ``-alpha`` (x <= -17.3 in float32). We evaluate ``alpha*exp(x)``.
"""

from __future__ import annotations

import math

import numpy as np

from elukit import _gaussian, _numerics
from elukit._spec import Activation, Param, Reference, TorchKernels
from elukit.constants import SELU_ALPHA, SELU_SCALE

_NAN = math.nan
_INF = math.inf


# --- SELU is ELU scaled; ELU is SELU with scale 1, so one set of kernels serves both. ------------

_SMALL = 2.0**-20
"""Below this |x| the float64 results k*expm1(x) ~ k*x and k*exp(x) ~ k can land exactly on a
rounding midpoint of a narrow dtype (e.g. 3*x for alpha = 3 in bfloat16) while the true value
lies just off it; there the kernels carry the lost term and round to odd (see `_numerics`)."""


def _small_argument(x: np.ndarray) -> np.ndarray:
    return (x < 0) & (x > -_SMALL) & (x.dtype == np.float64)


def scaled_elu_value(x: np.ndarray, alpha: float, scale: float = 1.0) -> np.ndarray:
    r"""Scaled ELU: :math:`f(x) = \lambda x\ (x > 0),\ \lambda\alpha\,\mathrm{expm1}(x)\ (x \le 0)`.

    ``lambda*alpha`` is formed in the working dtype so it is not rounded to the input dtype
    first. f(-inf) = -lambda*alpha; f(+inf) = +inf; the sign of zero is kept; NaN -> NaN.
    For |x| < 2^-20 from narrow dtypes, k*x is formed exactly (TwoProduct) plus k*x^2/2 and
    rounded to odd, so the final rounding to float32/bfloat16/float16 is correct.
    """
    one = x.dtype.type
    negative_scale = one(scale) * one(alpha)
    # Branch-free: for x > 0 the first term is k*expm1(0) = 0; for x <= 0 the second is 0.
    positive = np.maximum(x, one(0))
    if scale != 1.0:
        positive *= one(scale)
    result = negative_scale * np.expm1(np.minimum(x, one(0)))
    result += positive
    result = np.copysign(result, x)  # f has the sign of x; keeps ELU(-0.0) = -0.0
    small = _small_argument(x)
    if small.any():
        xs = x[small]
        head = negative_scale * xs
        tail = _numerics.product_error(negative_scale, xs) + head * (xs * 0.5) * (1 + xs / 3)
        result[small] = _numerics.sum_rounded_to_odd(head, tail, lost_tail_sign=1.0)
    return result


def scaled_elu_derivative(x: np.ndarray, alpha: float, scale: float = 1.0) -> np.ndarray:
    r""":math:`f'(x) = \lambda\ (x > 0),\ \lambda\alpha e^{x}\ (x \le 0)`; f'(0) = lambda*alpha.

    For |x| < 2^-20 from narrow dtypes it is k + k*expm1(x), rounded to odd (see the value).
    """
    one = x.dtype.type
    negative_scale = one(scale) * one(alpha)
    exponential = negative_scale * np.exp(np.minimum(x, one(0)))
    if negative_scale == one(scale):  # k*exp(min(x, 0)) is already `scale` for x > 0
        result = exponential
    else:
        result = _numerics.select(x > 0, one(scale), exponential)
    small = _small_argument(x)
    if small.any():
        tail = negative_scale * np.expm1(x[small])
        result[small] = _numerics.sum_rounded_to_odd(np.full_like(tail, negative_scale), tail, -1.0)
    return result


def scaled_elu_second_derivative(x: np.ndarray, alpha: float, scale: float = 1.0) -> np.ndarray:
    r""":math:`f''(x) = 0\ (x > 0),\ \lambda\alpha e^{x}\ (x \le 0)`; f''(0) = lambda*alpha (left)."""
    return _numerics.select(x > 0, x.dtype.type(0), scaled_elu_derivative(x, alpha, scale))


def _scaled_elu_reference_value(mp, x, alpha, scale=1.0):
    return mp.mpf(scale) * x if x > 0 else mp.mpf(scale) * mp.mpf(alpha) * mp.expm1(x)


def _scaled_elu_reference_derivative(mp, x, alpha, scale=1.0):
    return mp.mpf(scale) if x > 0 else mp.mpf(scale) * mp.mpf(alpha) * mp.exp(x)


def _scaled_elu_reference_second(mp, x, alpha, scale=1.0):
    return mp.mpf(0) if x > 0 else mp.mpf(scale) * mp.mpf(alpha) * mp.exp(x)


def elu_gaussian(mean, std, alpha):
    """Moments of ELU: lambda = 1, beta = alpha, c = 1 in `_gaussian.exponential_linear_moments`."""
    return _gaussian.exponential_linear_moments(mean, std, 1.0, alpha, 1.0)


def selu_gaussian(mean, std, alpha, scale):
    """Moments of SELU: lambda = scale, beta = scale*alpha, c = 1."""
    return _gaussian.exponential_linear_moments(mean, std, scale, np.multiply(scale, alpha), 1.0)


def celu_gaussian(mean, std, alpha):
    """Moments of CELU: lambda = 1, beta = alpha, c = 1/alpha."""
    return _gaussian.exponential_linear_moments(mean, std, 1.0, alpha, np.divide(1.0, alpha))


_EXPM1_SERIES = tuple(1.0 / math.factorial(k) for k in range(18, 0, -1))
"""1/18!, ..., 1/1!: Taylor coefficients of expm1; on |x| <= 1/2 the first omitted term is
below 2^-70 relative."""


def _torch_expm1(t, x):
    """expm1 that stays accurate when torch.compile fuses it.

    Inductor's vectorised CPU code computes expm1 as exp(x) - 1 (measured: expm1(-7.8e-18) = 0,
    6e-4 relative error at -6.7e-16), so while compiling we evaluate the Taylor series (Horner,
    18 terms) on |x| <= 1/2, where exp(x) - 1 would cancel, and exp(x) - 1 beyond, where it
    does not. Eager code keeps torch.expm1.
    """
    if not t.compiler.is_compiling():
        return t.expm1(x)
    small = t.clamp(x, -0.5, 0.5)
    series = t.full_like(x, _EXPM1_SERIES[0])
    for coefficient in _EXPM1_SERIES[1:]:
        series = series * small + coefficient
    return t.where(x.abs() > 0.5, t.exp(x) - 1, series * small)


def _torch_scaled_elu_value(t, x, alpha, scale=1.0):
    negative = (scale * alpha) * _torch_expm1(t, t.clamp(x, max=0.0)) + scale * t.clamp(x, min=0.0)
    return t.copysign(negative, x)


def _torch_scaled_elu_derivative(t, x, alpha, scale=1.0):
    # k*exp(min(x, 0)) is exactly k for x > 0; lerp with a 0/1 weight is an exact select
    # (a + 0*(b-a) = a, b - (b-a)*0 = b) and, unlike torch.where on an unpredictable mask,
    # costs no branch mispredictions.
    exponential = (scale * alpha) * t.exp(t.clamp(x, max=0.0))
    if scale * alpha == scale:
        return exponential
    return t.lerp(exponential, t.tensor(scale, dtype=x.dtype, device=x.device), (x > 0).to(x.dtype))


def _torch_scaled_elu_second(t, x, alpha, scale=1.0):
    return (scale * alpha) * t.exp(t.clamp(x, max=0.0)) * (x <= 0).to(x.dtype)


def _torch_round_to_odd(t, total, sticky):
    bits = total.view(t.int64)
    move = ((bits & 1) == 0) & (sticky != 0) & t.isfinite(total) & (total != 0)
    toward = t.where(sticky > 0, t.full_like(total, float("inf")), t.full_like(total, float("-inf")))
    return t.where(move, t.nextafter(total, toward), total)


def _torch_sum_rounded_to_odd(t, head, tail, lost_tail_sign):
    total = head + tail
    residual = (head - total) + tail
    sticky = t.where(residual != 0, residual, t.where(tail == 0, t.full_like(tail, lost_tail_sign), t.zeros_like(tail)))
    return _torch_round_to_odd(t, total, sticky)


def _torch_scaled_elu_tie_fix(t, quantity, x, result, alpha, scale=1.0):
    """The NumPy kernels' round-to-odd step for |x| < 2^-20 (see `scaled_elu_value`), in torch."""
    small = (x < 0) & (x > -_SMALL)
    if quantity == "second_derivative" or not bool(small.any()):
        return result
    k = scale * alpha
    xs = x[small]
    if quantity == "value":
        head = k * xs
        tail = _numerics.product_error(k, xs) + head * (xs * 0.5) * (1 + xs / 3)
        fixed = _torch_sum_rounded_to_odd(t, head, tail, 1.0)
    else:
        tail = k * t.expm1(xs)
        fixed = _torch_sum_rounded_to_odd(t, t.full_like(tail, k), tail, -1.0)
    result = result.clone()
    result[small] = fixed
    return result


_SCALED_ELU_TORCH = TorchKernels(_torch_scaled_elu_value, _torch_scaled_elu_derivative, _torch_scaled_elu_second,
                                 tie_fix=_torch_scaled_elu_tie_fix)


def _torch_celu_value(t, x, alpha):
    return t.copysign(alpha * _torch_expm1(t, t.clamp(x, max=0.0) / alpha) + t.clamp(x, min=0.0), x)


def _torch_exp_of_ratio(t, x, alpha):
    r"""exp(min(x, 0)/alpha) without the error of rounding x/alpha first.

    exp amplifies the relative error of its argument t by |t| (up to 745): rounding t = x/alpha
    costs up to 175 ulp in float64. With q = fl(x/alpha), the remainder x - q*alpha is exact
    (Dekker's TwoProduct with Veltkamp splits), so exp(x/alpha) = exp(q) * (1 + remainder/alpha)
    to second order.
    """
    negative = t.clamp(x, max=0.0)
    quotient = t.clamp(negative / alpha, min=-800.0)
    high, low = _numerics.veltkamp_split(quotient)
    alpha_high, alpha_low = _numerics.veltkamp_split(alpha)
    product = quotient * alpha
    error = ((high * alpha_high - product) + high * alpha_low + low * alpha_high) + low * alpha_low
    remainder = ((negative - product) - error) / alpha
    usable = t.isfinite(remainder) & (quotient > -745.0)  # below, exp(quotient) is 0 anyway
    remainder = t.where(usable, remainder, t.zeros_like(remainder))
    return t.exp(quotient) * (1 + remainder)


def _torch_celu_derivative(t, x, alpha):
    result = _torch_exp_of_ratio(t, x, alpha)  # exp(0) = 1 is already the x > 0 branch
    return t.where(x == -float("inf"), t.zeros_like(x), result)


def _torch_celu_second(t, x, alpha):
    return _torch_celu_derivative(t, x, alpha) / alpha * (x <= 0).to(x.dtype)


def _elu_form(alpha):
    return 1.0, alpha, 1.0


def _selu_form(alpha, scale):
    return scale, alpha, 1.0


def _celu_form(alpha):
    return 1.0, alpha, alpha


_SCALED_ELU_REFERENCE = Reference(
    value=_scaled_elu_reference_value,
    derivative=_scaled_elu_reference_derivative,
    second_derivative=_scaled_elu_reference_second,
)

ELU = Activation(
    name="elu",
    params=(Param("alpha", default=1.0, doc="value of the negative saturation, -alpha"),),
    formula=r"f(x) = x \ (x > 0), \quad \alpha\,\mathrm{expm1}(x) \ (x \le 0)",
    description="Exponential linear unit",
    value_kernel=scaled_elu_value,
    derivative_kernel=scaled_elu_derivative,
    second_derivative_kernel=scaled_elu_second_derivative,
    special_values=(
        (-_INF, "-alpha", "0.0", "0.0"),
        (_INF, "inf", "1.0", "0.0"),
        (-0.0, "-0.0", "alpha", "alpha"),
        (0.0, "0.0", "alpha", "alpha"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=_SCALED_ELU_REFERENCE,
    gaussian=elu_gaussian,
    torch=_SCALED_ELU_TORCH,
    extended_float64=True,
    exponential_linear=_elu_form,
    bounded_below="-alpha",
    references=("Clevert, Unterthiner, Hochreiter 2016, arXiv:1511.07289",),
)

SELU = Activation(
    name="selu",
    params=(
        Param("alpha", default=SELU_ALPHA, doc="ELU alpha; default: the self-normalizing value"),
        Param("scale", default=SELU_SCALE, doc="lambda; default: the self-normalizing value"),
    ),
    formula=r"f(x) = \lambda x \ (x > 0), \quad \lambda\alpha\,\mathrm{expm1}(x) \ (x \le 0)",
    description="Scaled ELU with the self-normalizing constants",
    value_kernel=scaled_elu_value,
    derivative_kernel=scaled_elu_derivative,
    second_derivative_kernel=scaled_elu_second_derivative,
    special_values=(
        (-_INF, "-scale*alpha", "0.0", "0.0"),
        (_INF, "inf", "scale", "0.0"),
        (-0.0, "-0.0", "scale*alpha", "scale*alpha"),
        (0.0, "0.0", "scale*alpha", "scale*alpha"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=_SCALED_ELU_REFERENCE,
    gaussian=selu_gaussian,
    torch=_SCALED_ELU_TORCH,
    extended_float64=True,
    exponential_linear=_selu_form,
    bounded_below="-scale*alpha",
    references=("Klambauer, Unterthiner, Mayr, Hochreiter 2017, arXiv:1706.02515",),
)


# --- CELU: the exponential branch is a function of x/alpha. ---------------------------------------

_TINY_RATIO = 2.0**-60
"""Below this |x/alpha|, alpha*expm1(x/alpha) = x*(1 + x/(2 alpha)) to far beyond float64, and
the ratio itself may have underflowed (x float32-subnormal, alpha huge)."""


def celu_value(x: np.ndarray, alpha: float) -> np.ndarray:
    r"""CELU: :math:`f(x) = x\ (x > 0),\ \alpha\,\mathrm{expm1}(x/\alpha)\ (x \le 0)`.

    ``x/alpha`` is formed in the working dtype; ``alpha*expm1(t)`` has condition number <= 1 in
    t for t <= 0, so that rounding costs < 2^-60 relative. When ``|x/alpha|`` is so small it
    may have underflowed, the series ``x*(1 + t/2)`` is used instead
    (written as a product so that CELU(-0.0) = -0.0).
    """
    one = x.dtype.type
    ratio = np.minimum(x, one(0)) / one(alpha)
    result = one(alpha) * np.expm1(ratio) + np.maximum(x, one(0))
    tiny = (ratio > -_TINY_RATIO) & (ratio < 0)
    if tiny.any():
        result[tiny] = x[tiny] * (one(1) + ratio[tiny] * one(0.5))
    return np.copysign(result, x)


def celu_derivative(x: np.ndarray, alpha: float) -> np.ndarray:
    r""":math:`f'(x) = 1\ (x > 0),\ e^{x/\alpha}\ (x \le 0)`; f'(0) = 1 (left branch)."""
    one = x.dtype.type
    return _numerics.select(x > 0, one(1), np.exp(np.minimum(x, one(0)) / one(alpha)))


def celu_second_derivative(x: np.ndarray, alpha: float) -> np.ndarray:
    r""":math:`f''(x) = 0\ (x > 0),\ e^{x/\alpha}/\alpha\ (x \le 0)`; f''(0) = 1/alpha (left)."""
    return _numerics.select(x > 0, x.dtype.type(0), celu_derivative(x, alpha) / x.dtype.type(alpha))


CELU = Activation(
    name="celu",
    params=(Param("alpha", default=1.0, doc="scale of the negative branch; f'(x) is continuous"),),
    formula=r"f(x) = x \ (x > 0), \quad \alpha\,\mathrm{expm1}(x/\alpha) \ (x \le 0)",
    description="Continuously differentiable ELU",
    value_kernel=celu_value,
    derivative_kernel=celu_derivative,
    second_derivative_kernel=celu_second_derivative,
    special_values=(
        (-_INF, "-alpha", "0.0", "0.0"),
        (_INF, "inf", "1.0", "0.0"),
        (-0.0, "-0.0", "1.0", "1/alpha"),
        (0.0, "0.0", "1.0", "1/alpha"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=Reference(
        value=lambda mp, x, alpha: x if x > 0 else mp.mpf(alpha) * mp.expm1(x / mp.mpf(alpha)),
        derivative=lambda mp, x, alpha: mp.mpf(1) if x > 0 else mp.exp(x / mp.mpf(alpha)),
        second_derivative=lambda mp, x, alpha: (
            mp.mpf(0) if x > 0 else mp.exp(x / mp.mpf(alpha)) / mp.mpf(alpha)
        ),
    ),
    gaussian=celu_gaussian,
    torch=TorchKernels(_torch_celu_value, _torch_celu_derivative, _torch_celu_second),
    extended_float64=True,
    exponential_linear=_celu_form,
    bounded_below="-alpha",
    references=("Barron 2017, arXiv:1704.07483",),
)
