r"""Smooth comparators built on the logistic function: sigmoid, tanh, softplus and SiLU.

Each derivative is written so it does not cancel: ``s*(1-s)`` is ``expit(x)*expit(-x)``,
``1 - tanh(x)^2`` is ``4u/(1+u)^2`` with ``u = exp(-2|x|)``, ``1 - 2s`` is ``-tanh(x/2)``.
Inputs are clipped to +-1e4 where an infinite x would give inf*0; every f, f', f'' is constant
to far below the smallest subnormal beyond that point.
"""

from __future__ import annotations

import math

import numpy as np

from elukit import _numerics
from elukit._spec import Activation, Reference, TorchKernels

_NAN = math.nan
_INF = math.inf
_CLIP = 1.0e4


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -_CLIP, _CLIP)


def logistic(x: np.ndarray) -> np.ndarray:
    r""":math:`\sigma(x) = 1/(1+e^{-x})`, as ``e/(1+e)`` with ``e = e^{x}`` for x < 0.

    ``1/(1+exp(-x))`` (and SciPy's float64 ``expit``) returns 0 once exp(-x) overflows, losing
    the subnormal results for -745 < x < -709.
    """
    e = np.exp(-np.abs(x))
    return np.where(x < 0, e / (1 + e), 1 / (1 + e))


def logistic_slope(x: np.ndarray) -> np.ndarray:
    r""":math:`\sigma(x)(1-\sigma(x)) = \sigma(x)\sigma(-x) = e/(1+e)^2,\ e = e^{-|x|}`."""
    e = np.exp(-np.abs(x))
    return e / ((1 + e) * (1 + e))


def sigmoid_second_derivative(x: np.ndarray) -> np.ndarray:
    r""":math:`\sigma''(x) = -\sigma(x)\sigma(-x)\tanh(x/2)` (``1-2\sigma = -\tanh(x/2)``)."""
    return -logistic_slope(x) * np.tanh(x * x.dtype.type(0.5))


def _mp_sigmoid(mp, x):
    return 1 / (1 + mp.exp(-x))


def _mp_logistic_slope(mp, x):
    return _mp_sigmoid(mp, x) * _mp_sigmoid(mp, -x)


SIGMOID = Activation(
    name="sigmoid",
    params=(),
    formula=r"f(x) = 1 / (1 + e^{-x})",
    description="Logistic sigmoid",
    value_kernel=logistic,
    derivative_kernel=logistic_slope,
    second_derivative_kernel=sigmoid_second_derivative,
    special_values=(
        (-_INF, "0.0", "0.0", "0.0"),
        (_INF, "1.0", "0.0", "0.0"),
        (0.0, "0.5", "0.25", "0.0"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=Reference(
        value=_mp_sigmoid,
        derivative=_mp_logistic_slope,
        second_derivative=lambda mp, x: -_mp_logistic_slope(mp, x) * mp.tanh(x / 2),
    ),
    bounded_below="0.0",
    torch=TorchKernels(
        value=lambda t, x: t.sigmoid(x),
        derivative=lambda t, x: t.sigmoid(x) * t.sigmoid(-x),
        second_derivative=lambda t, x: -t.sigmoid(x) * t.sigmoid(-x) * t.tanh(0.5 * x),
    ),
)


def tanh_derivative(x: np.ndarray) -> np.ndarray:
    r""":math:`\tanh'(x) = \mathrm{sech}^2 x = 4u/(1+u)^2,\ u = e^{-2|x|}` (no cancellation, no overflow)."""
    u = np.exp(-2 * np.abs(x))
    return 4 * u / ((1 + u) * (1 + u))


def tanh_second_derivative(x: np.ndarray) -> np.ndarray:
    r""":math:`\tanh''(x) = -2\tanh(x)\,\mathrm{sech}^2 x`."""
    return -2 * np.tanh(x) * tanh_derivative(x)


def _mp_sech2(mp, x):
    return 1 / mp.cosh(x) ** 2


TANH = Activation(
    name="tanh",
    params=(),
    formula=r"f(x) = \tanh x",
    description="Hyperbolic tangent",
    value_kernel=np.tanh,
    derivative_kernel=tanh_derivative,
    second_derivative_kernel=tanh_second_derivative,
    special_values=(
        (-_INF, "-1.0", "0.0", "0.0"),
        (_INF, "1.0", "0.0", "0.0"),
        (-0.0, "-0.0", "1.0", "0.0"),
        (0.0, "0.0", "1.0", "0.0"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=Reference(
        value=lambda mp, x: mp.tanh(x),
        derivative=_mp_sech2,
        second_derivative=lambda mp, x: -2 * mp.tanh(x) * _mp_sech2(mp, x),
    ),
    bounded_below="-1.0",
    torch=TorchKernels(
        value=lambda t, x: t.tanh(x),
        derivative=lambda t, x: _torch_sech2(t, x),
        second_derivative=lambda t, x: -2 * t.tanh(x) * _torch_sech2(t, x),
    ),
)


def _torch_sech2(t, x):
    u = t.exp(-2 * x.abs())
    return 4 * u / ((1 + u) * (1 + u))


def softplus_value(x: np.ndarray) -> np.ndarray:
    r""":math:`f(x) = \log(1 + e^{x}) = \max(x, 0) + \mathrm{log1p}(e^{-|x|})` (no overflow)."""
    return np.maximum(x, x.dtype.type(0)) + np.log1p(np.exp(-np.abs(x)))


def _mp_softplus(mp, x):
    if x > 1000:  # log1p(e^-x) < 1e-434 * x: invisible at any working precision used here
        return x
    return mp.log1p(mp.exp(x))


SOFTPLUS = Activation(
    name="softplus",
    params=(),
    formula=r"f(x) = \log(1 + e^{x})",
    description="Softplus",
    value_kernel=softplus_value,
    derivative_kernel=logistic,
    second_derivative_kernel=logistic_slope,
    special_values=(
        (-_INF, "0.0", "0.0", "0.0"),
        (_INF, "inf", "1.0", "0.0"),
        (0.0, "0.6931471805599453", "0.5", "0.25"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=Reference(
        value=_mp_softplus,
        derivative=_mp_sigmoid,
        second_derivative=_mp_logistic_slope,
    ),
    bounded_below="0.0",
    torch=TorchKernels(
        value=lambda t, x: t.clamp(x, min=0.0) + t.log1p(t.exp(-x.abs())),
        derivative=lambda t, x: t.sigmoid(x),
        second_derivative=lambda t, x: t.sigmoid(x) * t.sigmoid(-x),
    ),
    references=("Dugas et al. 2001",),
)


def silu_value(x: np.ndarray) -> np.ndarray:
    r""":math:`f(x) = x\,\sigma(x)`; silu(-inf) = -0.0."""
    clipped = np.maximum(x, x.dtype.type(-_CLIP))
    return _numerics.half_x_plus_square(x, clipped * logistic(clipped), 0.25)


def silu_derivative(x: np.ndarray) -> np.ndarray:
    r""":math:`f'(x) = \sigma(x)\,(1 + x\,\sigma(-x))`."""
    clipped = _clip(x)
    return logistic(clipped) * (1 + clipped * logistic(-clipped))


def silu_second_derivative(x: np.ndarray) -> np.ndarray:
    r""":math:`f''(x) = \sigma(x)\sigma(-x)\,(2 - x\tanh(x/2))`."""
    clipped = _clip(x)
    return logistic_slope(clipped) * (2 - clipped * np.tanh(clipped * x.dtype.type(0.5)))


SILU = Activation(
    name="silu",
    params=(),
    formula=r"f(x) = x\,\sigma(x)",
    description="Sigmoid-weighted linear unit (swish with beta = 1)",
    value_kernel=silu_value,
    derivative_kernel=silu_derivative,
    second_derivative_kernel=silu_second_derivative,
    special_values=(
        (-_INF, "-0.0", "-0.0", "0.0"),
        (_INF, "inf", "1.0", "0.0"),
        (0.0, "0.0", "0.5", "0.5"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=Reference(
        value=lambda mp, x: x * _mp_sigmoid(mp, x),
        derivative=lambda mp, x: _mp_sigmoid(mp, x) * (1 + x * _mp_sigmoid(mp, -x)),
        second_derivative=lambda mp, x: _mp_logistic_slope(mp, x) * (2 - x * mp.tanh(x / 2)),
    ),
    torch=TorchKernels(
        value=lambda t, x: t.clamp(x, min=-_CLIP) * t.sigmoid(t.clamp(x, min=-_CLIP)),
        derivative=lambda t, x: _torch_silu_derivative(t, t.clamp(x, -_CLIP, _CLIP)),
        second_derivative=lambda t, x: _torch_silu_second(t, t.clamp(x, -_CLIP, _CLIP)),
    ),
    references=("Hendrycks and Gimpel 2016; Elfwing et al. 2018; Ramachandran et al. 2017",),
)


def _torch_silu_derivative(t, x):
    return t.sigmoid(x) * (1 + x * t.sigmoid(-x))


def _torch_silu_second(t, x):
    return t.sigmoid(x) * t.sigmoid(-x) * (2 - x * t.tanh(0.5 * x))
