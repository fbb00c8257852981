r"""Piecewise-linear comparators: ReLU and Leaky ReLU.

At the kink both take the left (x <= 0) branch for the derivative, as PyTorch and JAX do:
relu'(0) = 0 and leaky_relu'(0) = slope.
"""

from __future__ import annotations

import math

import numpy as np

from elukit import _gaussian, _numerics
from elukit._families.elu import _torch_round_to_odd
from elukit._spec import Activation, Param, Reference, TorchKernels

_NAN = math.nan
_INF = math.inf


def _propagate_nan(x: np.ndarray, result: np.ndarray) -> np.ndarray:
    """``result`` with NaN wherever ``x`` is NaN (piecewise constants would otherwise hide it)."""
    return np.where(np.isnan(x), x, result)


def relu_value(x: np.ndarray) -> np.ndarray:
    r""":math:`f(x) = \max(x, 0)`; the negative branch is the constant +0, so relu(-0.0) = +0.0."""
    return np.maximum(x, x.dtype.type(0)) + x.dtype.type(0)


def relu_derivative(x: np.ndarray) -> np.ndarray:
    r""":math:`f'(x) = 1\ (x > 0),\ 0\ (x \le 0)`."""
    return _propagate_nan(x, np.where(x > 0, x.dtype.type(1), x.dtype.type(0)))


def piecewise_linear_second_derivative(x: np.ndarray, **_: float) -> np.ndarray:
    r""":math:`f''(x) = 0` everywhere (the kink's Dirac mass is not represented)."""
    return _propagate_nan(x, np.zeros_like(x))


RELU = Activation(
    name="relu",
    params=(),
    formula=r"f(x) = x \ (x > 0), \quad 0 \ (x \le 0)",
    description="Rectified linear unit",
    value_kernel=relu_value,
    derivative_kernel=relu_derivative,
    second_derivative_kernel=piecewise_linear_second_derivative,
    special_values=(
        (-_INF, "0.0", "0.0", "0.0"),
        (_INF, "inf", "1.0", "0.0"),
        (-0.0, "0.0", "0.0", "0.0"),
        (0.0, "0.0", "0.0", "0.0"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=Reference(
        value=lambda mp, x: x if x > 0 else mp.mpf(0),
        derivative=lambda mp, x: mp.mpf(1) if x > 0 else mp.mpf(0),
        second_derivative=lambda mp, x: mp.mpf(0),
    ),
    gaussian=lambda mean, std: _gaussian.piecewise_linear_moments(mean, std, 0.0),
    torch=TorchKernels(
        value=lambda t, x: t.clamp(x, min=0.0) + 0.0,
        derivative=lambda t, x: t.where(x.isnan(), x, (x > 0).to(x.dtype)),
        second_derivative=lambda t, x: t.where(x.isnan(), x, t.zeros_like(x)),
        exact_dtypes=("float32", "float64"),
    ),
    linear_branches=lambda: (1.0, 0.0),
    zero_gradient_set="x <= 0",
    bounded_below="0.0",
    references=("Nair and Hinton 2010",),
)


def leaky_relu_value(x: np.ndarray, slope: float) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r""":math:`f(x) = x\ (x > 0),\ s\,x\ (x \le 0)`; the sign of zero is kept.

    In float64 (the working dtype of float16, bfloat16 and float32 inputs) the product s*x is
    returned with its exact rounding error, ``(head, tail)`` (`_numerics.evaluate` rounds it once):
    the float64 product alone can land exactly on a midpoint of the narrow dtype while the exact
    one lies off it, and rounding it again then misrounds (21 float16 inputs of s = 0.01, e.g.
    x = -2.98e-06 gave -0.0 instead of -5.96e-08). Other working dtypes get the product rounded once.
    """
    product = x.dtype.type(slope) * x
    value = np.where(x > 0, x, product)
    if x.dtype != np.float64:
        return value
    return value, np.where(x > 0, 0.0, _numerics.two_product_error(slope, x, product))


def leaky_relu_derivative(x: np.ndarray, slope: float) -> np.ndarray:
    r""":math:`f'(x) = 1\ (x > 0),\ s\ (x \le 0)`; f'(0) = s."""
    return _propagate_nan(x, np.where(x > 0, x.dtype.type(1), x.dtype.type(slope)))


def _torch_leaky_relu_tie_fix(t, quantity, x, result, slope):
    """The NumPy kernel's sticky product (`leaky_relu_value`) in torch, for float64 results that
    are rounded again to float32/float16/bfloat16: elementwise, no data-dependent indexing."""
    if quantity != "value":
        return result
    tail = t.where(x > 0, t.zeros_like(x), _numerics.two_product_error(slope, x, result))
    return _torch_round_to_odd(t, result, tail)


LEAKY_RELU = Activation(
    name="leaky_relu",
    params=(Param("slope", default=0.01, doc="slope of the negative branch (PyTorch's negative_slope)"),),
    formula=r"f(x) = x \ (x > 0), \quad s\,x \ (x \le 0)",
    description="Leaky rectified linear unit",
    value_kernel=leaky_relu_value,
    derivative_kernel=leaky_relu_derivative,
    second_derivative_kernel=piecewise_linear_second_derivative,
    special_values=(
        (-_INF, "-inf", "slope", "0.0"),
        (_INF, "inf", "1.0", "0.0"),
        (-0.0, "-0.0", "slope", "0.0"),
        (0.0, "0.0", "slope", "0.0"),
        (_NAN, "nan", "nan", "nan"),
    ),
    reference=Reference(
        value=lambda mp, x, slope: x if x > 0 else mp.mpf(slope) * x,
        derivative=lambda mp, x, slope: mp.mpf(1) if x > 0 else mp.mpf(slope),
        second_derivative=lambda mp, x, slope: mp.mpf(0),
    ),
    gaussian=_gaussian.piecewise_linear_moments,
    torch=TorchKernels(
        value=lambda t, x, slope: t.where(x > 0, x, slope * x),
        derivative=lambda t, x, slope: t.where(x.isnan(), x, t.where(x > 0, t.ones_like(x), t.full_like(x, slope))),
        second_derivative=lambda t, x, slope: t.where(x.isnan(), x, t.zeros_like(x)),
        tie_fix=_torch_leaky_relu_tie_fix,
        exact_dtypes=("float64",),  # float32 would multiply by float32(slope)
    ),
    linear_branches=lambda slope: (1.0, slope),
    references=("Maas, Hannun, Ng 2013",),
)
