r"""GELU, exact (erf) form: :math:`f(x) = x\,\Phi(x)`, with Phi the standard normal CDF."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from elukit import _numerics
from elukit._spec import Activation, Reference, TorchKernels

_NAN = math.nan
_INF = math.inf
_CLIP = 1.0e4
_INV_SQRT_2PI = 0.3989422804014327
"""1/sqrt(2 pi), correctly rounded."""
_SQRT_HALF = 0.7071067811865476
"""1/sqrt(2), correctly rounded."""


def normal_density(x: np.ndarray) -> np.ndarray:
    r""":math:`\varphi(x) = e^{-x^2/2}/\sqrt{2\pi}`."""
    return x.dtype.type(_INV_SQRT_2PI) * np.exp(-0.5 * x * x)


def gelu_value(x: np.ndarray) -> np.ndarray:
    r""":math:`f(x) = x\,\Phi(x)`; gelu(-inf) = -0.0, gelu(inf) = inf.

    Note: scipy's ``ndtr`` rounds x/sqrt(2) before erfc, which costs ~x^2/2 ulp in float64 for
    x << 0; harmless for float32 and narrower, documented in the accuracy table for float64.
    """
    clipped = np.maximum(x, x.dtype.type(-_CLIP))
    return _numerics.half_x_plus_square(x, clipped * special.ndtr(clipped), _INV_SQRT_2PI)


def gelu_derivative(x: np.ndarray) -> np.ndarray:
    r""":math:`f'(x) = \Phi(x) + x\,\varphi(x)`."""
    clipped = np.clip(x, -_CLIP, _CLIP)
    return special.ndtr(clipped) + clipped * normal_density(clipped)


def gelu_second_derivative(x: np.ndarray) -> np.ndarray:
    r""":math:`f''(x) = \varphi(x)\,(2 - x^2)`."""
    clipped = np.clip(x, -_CLIP, _CLIP)
    return normal_density(clipped) * (2 - clipped * clipped)


def _mp_phi(mp, x):
    """Phi(x); beyond |x| = 40 (where mpmath's erfc overflows for huge x) the asymptotic series,
    whose 1e-13 relative error is irrelevant: 1 - Phi(40) < 1e-340 is far below any float."""
    if abs(x) <= 40:
        return mp.ncdf(x)
    inverse_square = 1 / (x * x)
    lower_tail = mp.npdf(x) / abs(x) * (1 - inverse_square + 3 * inverse_square**2)
    return lower_tail if x < 0 else 1 - lower_tail


def _mp_density(mp, x):
    return mp.npdf(x)


GELU = Activation(
    name="gelu",
    params=(),
    formula=r"f(x) = x\,\Phi(x) = \tfrac{x}{2}\,\mathrm{erfc}(-x/\sqrt{2})",
    description="Gaussian error linear unit (exact erf form)",
    value_kernel=gelu_value,
    derivative_kernel=gelu_derivative,
    second_derivative_kernel=gelu_second_derivative,
    special_values=(
        (-_INF, "-0.0", "0.0", "0.0"),
        (_INF, "inf", "1.0", "0.0"),
        (0.0, "0.0", "0.5", "0.7978845608028654"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=Reference(
        value=lambda mp, x: x * _mp_phi(mp, x),
        derivative=lambda mp, x: _mp_phi(mp, x) + x * _mp_density(mp, x),
        second_derivative=lambda mp, x: _mp_density(mp, x) * (2 - x * x),
    ),
    torch=TorchKernels(
        value=lambda t, x: _torch_gelu_value(t, x),
        derivative=lambda t, x: _torch_gelu_derivative(t, t.clamp(x, -_CLIP, _CLIP)),
        second_derivative=lambda t, x: _torch_density(t, t.clamp(x, -_CLIP, _CLIP)) * (2 - t.clamp(x, -_CLIP, _CLIP) ** 2),
    ),
    references=("Hendrycks and Gimpel 2016, arXiv:1606.08415",),
)


def _torch_density(t, x):
    return _INV_SQRT_2PI * t.exp(-0.5 * x * x)


def _torch_normal_cdf(t, x):
    # 0.5*erfc(-x/sqrt 2), not torch.special.ndtr: on CUDA (torch 2.11) ndtr loses all relative
    # accuracy for x << 0 (measured: 8.8e6 ulp in float32, GELU(-10)), erfc does not.
    return 0.5 * t.special.erfc(-x * _SQRT_HALF)


def _torch_gelu_value(t, x):
    clipped = t.clamp(x, min=-_CLIP)
    return clipped * _torch_normal_cdf(t, clipped)


def _torch_gelu_derivative(t, x):
    return _torch_normal_cdf(t, x) + x * _torch_density(t, x)
