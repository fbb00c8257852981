r"""Covariance and correlation maps of two inputs through a random layer (Poole et al. 2016).

Two inputs whose pre-activations are jointly Gaussian, :math:`(u, v)`, zero mean, variances
:math:`q_1, q_2`, correlation c, give the next layer

.. math::
    q_{12}' = \sigma_w^2 E[f(u) f(v)] + \sigma_b^2, \qquad
    c' = q_{12}' / \sqrt{q_{11}' q_{22}'}.

`covariance_map` computes :math:`E[f(u)f(v)]` (and :math:`E[f'(u)f'(v)]`), `correlation_map` c'.

How (derivations in docs/theory.md):

* piecewise-linear specs (ReLU, Leaky ReLU, ``f = Az (z>0), Bz (z<=0)``): the arc-cosine kernel,
  :math:`E[f(u)f(v)] = \sqrt{q_1q_2}\,[(A-B)^2 S(\theta')/(2\pi) + ABc]` with
  :math:`\theta' = \arccos(-c)` and :math:`S(x) = \sin x - x\cos x` (a series below x = 1/2, where
  the two terms cancel); :math:`E[f'(u)f'(v)] = [(A^2+B^2)(\pi-\theta) + 2AB\theta]/(2\pi)`,
  :math:`\theta = \arccos c`;
* every other activation, registered or callable: one dimension in closed form. With
  :math:`u = \sqrt{q_1}x`, :math:`v | x \sim N(\sqrt{q_2}cx, q_2(1-c^2))`, so
  :math:`E[f(u)f(v)] = E_x[f(\sqrt{q_1}x)\, m(x)]` where :math:`m(x) = E[f(v)|x]` is the
  single-variable Gaussian mean of `elukit.theory.moments` (closed form for the ELU family, to
  1e-12 relative; panel quadrature otherwise). The outer integral is composite Gauss-Legendre on
  panels split at the kink x = 0 and graded geometrically down to the width
  :math:`\sqrt{1-c^2}/|c|` over which m(x) bends (it tends to f's kink as c -> 1), then unit
  panels to |x| = 13.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from elukit._spec import Activation
from elukit.theory.moments import _check_real, _resolve, moments, panel_moments

_PANEL_NODES = 20
"""Gauss-Legendre nodes per panel. Measured against mpmath (tests/test_theory_chaos.py): the
covariance of ELU/SELU/CELU is within 1e-13 relative at 20 nodes for c in {-0.99, 0, 0.5, 0.999,
1 - 1e-9}."""

_OUTER_EDGES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.5, 10.5, 13.0)
"""Unit-scale panels of the outer integral beyond |x| = 1; phi(13) = 1e-37 ends it."""

_MAX_LEVELS = 60


@lru_cache(maxsize=4)
def _legendre(points: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(points)
    return (nodes + 1) / 2, weights / 2  # on [0, 1]


def _panel_rule(levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 13]: panels [0, 2^-L], [2^-L, 2^-L+1], ..., [1/2, 1], then unit panels."""
    edges = np.array([0.0, *(2.0**-j for j in range(levels, 0, -1)), *_OUTER_EDGES])
    unit_nodes, unit_weights = _legendre(_PANEL_NODES)
    lengths = np.diff(edges)
    nodes = (edges[:-1, None] + lengths[:, None] * unit_nodes).ravel()
    weights = (lengths[:, None] * unit_weights).ravel()
    return nodes, weights * np.exp(-0.5 * nodes * nodes) / math.sqrt(2 * math.pi)


def _sin_minus_x_cos(x: np.ndarray) -> np.ndarray:
    r""":math:`S(x) = \sin x - x\cos x` for x in [0, pi]. Below x = 1/2 the difference loses
    ~x^-2 digits (ReLU's covariance at c = -1 + 1e-9 would keep none); the series
    :math:`\sum_{k\ge1} (-1)^{k+1} 2k\,x^{2k+1}/(2k+1)!` (12 terms: < 1e-20 relative there) does not."""
    x = np.asarray(x, dtype=np.float64)
    direct = np.sin(x) - x * np.cos(x)
    small = x < 0.5
    if np.any(small):
        t = x[small]
        series = np.zeros_like(t)
        power = t**3
        for k in range(1, 13):
            series += (-1) ** (k + 1) * 2 * k * power / math.factorial(2 * k + 1)
            power = power * t * t
        direct = np.where(small, 0.0, direct)
        direct[small] = series
    return direct


def _linear_covariance(a: float, b: float, c: np.ndarray, derivative: bool) -> np.ndarray:
    """The arc-cosine kernel of f = a z (z > 0), b z (z <= 0), for unit variances."""
    if derivative:
        theta = np.arccos(c)
        return ((a * a + b * b) * (math.pi - theta) + 2 * a * b * theta) / (2 * math.pi)
    return (a - b) ** 2 * _sin_minus_x_cos(np.arccos(-c)) / (2 * math.pi) + a * b * c


def _pointwise(spec: Activation | None, function: Callable | None, derivative_fn: Callable | None,
               derivative: bool) -> Callable[[np.ndarray], np.ndarray]:
    if spec is not None:
        return spec.derivative if derivative else spec.value
    if derivative:
        if derivative_fn is None:
            raise ValueError("a callable activation needs derivative= for the derivative covariance map")
        return derivative_fn
    return function


def _conditional_mean(spec: Activation | None, function: Callable | None, derivative_fn: Callable | None,
                      derivative: bool, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    if spec is not None:
        stats = moments(spec, mean, std)
    else:
        stats = panel_moments(function, derivative_fn, mean, std)
    return stats.derivative_mean if derivative else stats.mean


def _reduced_covariance(spec, function, derivative_fn, derivative, c, s1, s2) -> np.ndarray:
    """E[f(s1 x) f(s2 y)] by the one-dimensional reduction (see the module docstring)."""
    point = _pointwise(spec, function, derivative_fn, derivative)
    result = np.empty_like(c)
    r = np.sqrt((1 - c) * (1 + c))
    # f bends over |z| ~ its exponential scale (the ELU family's divisor; 1 for smooth activations)
    form = spec.exponential_linear_form() if spec is not None else None
    scale = 1.0 if form is None else form[2]
    with np.errstate(divide="ignore"):
        width = np.minimum(np.where(c == 0, 1.0, r / np.abs(c)), np.minimum(scale / s1, scale / s2))
        width = np.minimum(width, 1.0)
    levels = np.where(width > 0, np.ceil(-np.log2(np.maximum(width, 2.0**-_MAX_LEVELS))), _MAX_LEVELS).astype(int)
    # a quadrature inner rule holds ~1000 nodes per outer node: bound the memory per chunk
    chunk = 4 if (spec is None or spec.gaussian is None) else 4096
    for level in np.unique(levels):
        half_nodes, half_weights = _panel_rule(int(level))
        nodes = np.concatenate([-half_nodes[::-1], half_nodes])
        weights = np.concatenate([half_weights[::-1], half_weights])
        indices = np.flatnonzero(levels == level)
        for start in range(0, indices.size, chunk):
            part = indices[start:start + chunk]
            cp, rp, a, b = c[part, None], r[part, None], s1[part, None], s2[part, None]
            outer = np.asarray(point(a * nodes), dtype=np.float64)
            exact = rp[:, 0] == 0  # |c| = 1: v = sign(c) s2 x exactly
            inner = np.empty((part.size, nodes.size))
            if np.any(~exact):
                keep = ~exact
                inner[keep] = _conditional_mean(spec, function, derivative_fn, derivative,
                                                (b * cp * nodes)[keep], np.broadcast_to(b * rp, inner.shape)[keep])
            if np.any(exact):
                inner[exact] = np.asarray(point((b * cp * nodes)[exact]), dtype=np.float64)
            result[part] = (outer * inner) @ weights
    return result


def covariance_map(activation: str | Activation | Callable[[np.ndarray], np.ndarray], c: ArrayLike,
                   q1: ArrayLike = 1.0, q2: ArrayLike | None = None, *, quantity: str = "value",
                   derivative: Callable[[np.ndarray], np.ndarray] | None = None, **params: Any) -> np.ndarray:
    r""":math:`E[f(u)f(v)]` (quantity="value") or :math:`E[f'(u)f'(v)]` (quantity="derivative")
    for zero-mean jointly Gaussian (u, v) with variances q1, q2 and correlation c.

    Closed form (arc-cosine kernel) for piecewise-linear specs; otherwise the one-dimensional
    reduction over the closed-form conditional mean (module docstring). At c = 1 and q1 = q2 it is
    :math:`E[f(z)^2]`, z ~ N(0, q1). Accuracy: <= 1e-10 relative against mpmath at c in
    {-0.99, 0, 0.5, 0.999, 1 - 1e-9}, q in [1e-4, 100] (tests/test_theory_chaos.py); a covariance
    that is itself a cancellation (SELU at c = 0, where it is (E f)^2 ~ 0) is absolutely accurate.

    Args:
        activation: a registry name, an `Activation`, or a callable f.
        c: correlations in [-1, 1]; any shape, broadcast with q1 and q2.
        q1: variance of the first input, finite and > 0.
        q2: variance of the second input, finite and > 0 (default: q1).
        quantity: "value" or "derivative".
        derivative: f' for a callable activation (needed for quantity="derivative").
        params: scalar activation parameters.
    Returns: ndarray of the broadcast shape.
    """
    if quantity not in ("value", "derivative"):
        raise ValueError(f"quantity must be 'value' or 'derivative', got {quantity!r}")
    c = _check_real("c", c, positive=False)
    if not np.all(np.abs(c) <= 1):
        raise ValueError(f"c must be a correlation in [-1, 1], got {c!r}")
    q1 = _check_real("q1", q1, positive=True)
    q2 = q1 if q2 is None else _check_real("q2", q2, positive=True)
    if any(np.ndim(v) > 0 for v in params.values()):
        raise ValueError("covariance_map takes scalar activation parameters")
    spec, _, function = _resolve(activation, params)
    shape = np.broadcast_shapes(c.shape, q1.shape, q2.shape)
    c, q1, q2 = (np.broadcast_to(v, shape).reshape(-1) for v in (c, q1, q2))
    is_derivative = quantity == "derivative"
    linear = spec.linear_branches_form() if spec is not None else None
    if linear is not None:
        scale = np.ones_like(q1) if is_derivative else np.sqrt(q1 * q2)
        return (scale * _linear_covariance(*linear, c, is_derivative)).reshape(shape)
    s1, s2 = np.sqrt(q1), np.sqrt(q2)
    with np.errstate(all="ignore"):
        if c.size >= _INTERPOLATE_FROM and np.all(q1 == q1[0]) and np.all(q2 == q2[0]):
            def exact(points):
                ones = np.ones_like(points)
                return _reduced_covariance(spec, function, derivative, is_derivative, points, s1[0] * ones, s2[0] * ones)

            result = _angle_interpolant(exact)(c)
        else:
            result = _reduced_covariance(spec, function, derivative, is_derivative, c, s1, s2)
    return result.reshape(shape)


_INTERPOLATE_FROM = 2048
"""From this many correlations sharing (q1, q2), `covariance_map` evaluates an adaptive Chebyshev
interpolant in the angle instead of the reduction at every point (10^6 points: ~0.3 s)."""

_MAX_DEGREE = 1024


def _angle_interpolant(exact: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    r"""A Chebyshev series in :math:`\theta = \arccos c \in [0, \pi]` matching `exact`.

    As a function of theta the covariance is analytic on [0, pi] (for ReLU it is
    :math:`\sin\theta' - \theta'\cos\theta'` with :math:`\theta' = \pi - \theta`; the
    kink's :math:`(1-c)^{3/2}` becomes a smooth theta^3), so its Chebyshev coefficients decay
    geometrically (measured: below 1e-16 of the largest value at 65 nodes for ELU at q = 1, at
    129 for CELU(alpha=0.1) at q = 100). The degree doubles from 16 until the upper half of the
    coefficients is below 1e-13 of max |C| (the reduction's own rounding noise reaches ~4e-14 in
    the highest coefficients near degree 512, e.g. for E[f'f'] of ELU(alpha=5) at q = 100);
    coefficients below 1e-15 max |C| are dropped. Measured absolute error: <= ~1e-15 max |C|
    (tests/test_theory_chaos.py). It raises beyond degree 1024. Evaluation: Clenshaw's recurrence.
    """
    from scipy.fft import dct

    degree = 16
    while True:
        theta = np.pi * (np.cos(np.pi * np.arange(degree + 1) / degree) + 1) / 2
        values = exact(np.cos(theta))
        coefficients = dct(values, type=1) / degree
        coefficients[[0, -1]] /= 2
        scale = np.max(np.abs(values))
        if np.max(np.abs(coefficients[degree // 2:])) <= 1e-13 * scale:
            break
        if degree >= _MAX_DEGREE:
            raise ValueError("the covariance map is not resolved by a Chebyshev series of degree 1024 in the "
                             "angle; pass fewer than 2048 points per call to use the direct reduction")
        degree *= 2
    keep = int(np.max(np.flatnonzero(np.abs(coefficients) > 1e-15 * scale), initial=0)) + 1
    coefficients = coefficients[:keep]

    def evaluate(c: np.ndarray) -> np.ndarray:
        x = 2 * np.arccos(c) / np.pi - 1
        twice = 2 * x
        later = np.zeros_like(x)
        current = np.zeros_like(x)
        for coefficient in coefficients[:0:-1]:
            current, later = twice * current - later + coefficient, current
        return x * current - later + coefficients[0]

    return evaluate


def correlation_map(activation: str | Activation | Callable[[np.ndarray], np.ndarray], c: ArrayLike,
                    q: float = 1.0, *, weight_variance: float, bias_variance: float = 0.0,
                    **params: Any) -> np.ndarray:
    r"""The correlation of two inputs after one layer, from correlation c at pre-activation variance q:

    .. math:: c' = \frac{\sigma_w^2 E[f(u)f(v)] + \sigma_b^2}{\sigma_w^2 E[f(u)^2] + \sigma_b^2},
        \quad (u, v) \sim N(0, q\,[[1, c], [c, 1]]).

    Args:
        activation: a registry name, an `Activation`, or a callable f.
        c: correlations in [-1, 1], any shape.
        q: the pre-activation variance of both inputs (finite, > 0), usually the fixed point q*.
        weight_variance: sigma_w^2 (finite, > 0), the weight variance times the fan-in.
        bias_variance: sigma_b^2 (finite, >= 0).
    Returns: c' with c's shape; c' = 1 at c = 1.
    """
    _check_parameters(weight_variance, bias_variance)
    q = float(_check_real("q", q, positive=True))
    covariance = covariance_map(activation, c, q, **params)
    second = float(moments(activation, 0.0, math.sqrt(q), **params).second_moment)
    return (weight_variance * covariance + bias_variance) / (weight_variance * second + bias_variance)


def _check_parameters(weight_variance: float, bias_variance: float) -> None:
    for name, value, positive in (("weight_variance", weight_variance, True), ("bias_variance", bias_variance, False)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real number, got {value!r}") from None
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}")


__all__ = ["correlation_map", "covariance_map"]
