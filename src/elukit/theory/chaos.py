r"""Fixed points, depth scales, phases and the edge of chaos of deep random networks.

Mean field (Poole et al. 2016; Schoenholz et al. 2017, "Deep Information Propagation", ICLR):
weights of variance :math:`\sigma_w^2/n`, biases of variance :math:`\sigma_b^2`, pre-activations
:math:`z \sim N(0, q)`. With :math:`E` over z ~ N(0, 1):

* variance map :math:`V(q) = \sigma_w^2 E[f(\sqrt q z)^2] + \sigma_b^2`, fixed point q* = V(q*);
* correlation map (`correlation_map`), fixed point c*;
* :math:`\chi_1 = \sigma_w^2 E[f'(\sqrt{q^*} z)^2]`, the slope of the correlation map at c = 1:
  c* = 1 is stable (ordered phase) for chi_1 < 1; for chi_1 > 1 (chaotic) inputs decorrelate
  to c* < 1; chi_1 = 1 is the edge of chaos (critical);
* depth scales (Schoenholz et al., eqs. 6 and 9): deviations decay as :math:`e^{-l/\xi}` with
  :math:`\xi_q^{-1} = -\log(\chi_1 + \sigma_w^2 E[f''(\sqrt{q^*}z) f(\sqrt{q^*}z)])` and
  :math:`\xi_c^{-1} = -\log \chi_c`, :math:`\chi_c = \sigma_w^2 E[f'(u_1) f'(u_2)]` at (q*, c*).
  By Gaussian integration by parts (the heat equation, d/dq E[g(sqrt q z)] = E[g''(sqrt q z)]/2
  with g = f^2), :math:`\chi_1 + \sigma_w^2 E[f''f] = V'(q^*)`: xi_q is the decay rate of the
  variance map's linearisation, which is how elukit computes it (f'' of ReLU-like kinks carries a
  Dirac mass at 0 where f(0) = 0, so it adds nothing).

The edge of chaos, after Hayou et al. 2019: at a variance q, chi_1 = 1 fixes
:math:`\sigma_w^2 = 1/E[f'(\sqrt q z)^2]` and q = V(q) then fixes
:math:`\sigma_b^2 = q - \sigma_w^2 E[f(\sqrt q z)^2]`. The EOC is the curve q -> (sigma_b^2(q),
sigma_w^2(q)); `edge_of_chaos` inverts sigma_b^2(q). For ReLU and Leaky ReLU sigma_b^2(q) = 0 for
every q: the EOC is one point.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from elukit._spec import Activation
from elukit.theory.correlation import _check_parameters, correlation_map, covariance_map
from elukit.theory.moments import moments

_Q_GRID = np.logspace(-8, 8, 161)
"""Where fixed points q* and EOC points are searched (then refined by Brent's method)."""

_CRITICAL_TOLERANCE = 1e-9
"""|chi_1 - 1| below this is reported as critical (the EOC is computed to ~1e-13)."""

_TINY_Q = 1e-200
"""Stands in for q* = 0 (sigma_b^2 = 0 and the variance dies out): the limit q -> 0+ of the moments."""


def _second(activation, q, params):
    return moments(activation, 0.0, np.sqrt(q), **params).second_moment


def _variance_slope(activation, q: float, weight_variance: float, params) -> float:
    """V'(q) by a five-point stencil on the closed-form (or quadrature) second moment, step
    1e-3 q: truncation ~1e-12 relative, rounding ~1e-13."""
    h = 1e-3 * q
    points = q + h * np.array([-2.0, -1.0, 1.0, 2.0])
    values = _second(activation, points, params)
    return float(weight_variance * (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * h))


def variance_fixed_point(activation: str | Activation, weight_variance: float, bias_variance: float = 0.0,
                         **params: Any) -> float:
    r"""The attracting fixed point q* of :math:`V(q) = \sigma_w^2 E[f(\sqrt q z)^2] + \sigma_b^2`.

    Returns 0.0 when the variance dies out (only possible for sigma_b^2 = 0), ``inf`` when it
    grows without bound, ``nan`` when every q is a fixed point (ReLU at sigma_w^2 = 2,
    sigma_b^2 = 0: V(q) = q). Searched on q in [1e-8, 1e8], refined by Brent's method in log q
    (relative accuracy ~1e-14).
    """
    _check_parameters(weight_variance, bias_variance)
    gap = weight_variance * _second(activation, _Q_GRID, params) + bias_variance - _Q_GRID
    if np.all(np.abs(gap) <= 1e-12 * _Q_GRID):
        return math.nan
    # an attracting fixed point: V(q) - q changes sign from + to - as q grows
    crossings = np.flatnonzero((gap[:-1] > 0) & (gap[1:] <= 0))
    if crossings.size:
        i = int(crossings[0])
        if gap[i + 1] == 0:
            return float(_Q_GRID[i + 1])

        def residual(log_q):
            q = math.exp(log_q)
            return float(weight_variance * _second(activation, q, params)) + bias_variance - q

        return math.exp(optimize.brentq(residual, math.log(_Q_GRID[i]), math.log(_Q_GRID[i + 1]), xtol=1e-15,
                                        rtol=1e-15))
    if gap[0] <= 0 and bias_variance == 0:
        return 0.0
    if gap[-1] > 0:
        return math.inf
    raise ValueError(f"no attracting variance fixed point in q in [1e-8, 1e8] for weight_variance={weight_variance}, "
                     f"bias_variance={bias_variance}")


class DepthScales(NamedTuple):
    """Mean-field quantities at (sigma_w^2, sigma_b^2) (Schoenholz et al. 2017)."""

    weight_variance: float
    bias_variance: float
    q_star: float
    """variance fixed point (0: the signal dies out; inf: it explodes)"""
    c_star: float
    """correlation fixed point (1 in the ordered phase)"""
    chi_1: float
    """sigma_w^2 E[f'(z)^2] at q*: slope of the correlation map at c = 1"""
    chi_c: float
    """sigma_w^2 E[f'(u)f'(v)] at (q*, c*): slope of the correlation map at c*"""
    variance_slope: float
    """V'(q*) = chi_1 + sigma_w^2 E[f''f]"""
    xi_q: float
    """variance depth scale -1/log V'(q*) (inf where V'(q*) >= 1)"""
    xi_c: float
    """correlation depth scale -1/log chi_c (inf at the edge of chaos)"""
    phase: str
    """'ordered' (chi_1 < 1), 'chaotic' (chi_1 > 1) or 'critical' (|chi_1 - 1| <= 1e-9)"""


def _depth(slope: float) -> float:
    """-1/log(slope); inf within 1e-9 of 1 (the stencil's V'(q*) is accurate to ~1e-12, so a
    marginal slope of exactly 1 would otherwise read as a depth of 1e12 layers)."""
    if abs(slope - 1) <= _CRITICAL_TOLERANCE or slope > 1:
        return math.inf
    return -1.0 / math.log(slope) if slope > 0 else 0.0


def _registered(activation: Any, what: str) -> None:
    if not isinstance(activation, (str, Activation)):
        raise TypeError(f"{what} needs a registry name or an Activation (it uses f' and f''), "
                        f"got {type(activation).__name__}")


def depth_scales(activation: str | Activation, weight_variance: float, bias_variance: float = 0.0,
                 **params: Any) -> DepthScales:
    r"""q*, c*, chi_1, chi_c, the depth scales xi_q and xi_c, and the phase.

    c* is the largest fixed point of the correlation map in [0, 1): c = 1 is one, and where it is
    unstable (chi_1 > 1) the map lies below the diagonal just under 1 and at or above it at 0
    (:math:`c'(0) \propto \sigma_w^2 (E f)^2 + \sigma_b^2 \ge 0`), so Brent's method brackets it.
    Where every q is a fixed point (ReLU at sigma_w^2 = 2, sigma_b^2 = 0) the quantities are the
    same at every q and q_star is nan. Raises ValueError when q* is infinite.
    """
    _registered(activation, "depth_scales")
    q = variance_fixed_point(activation, weight_variance, bias_variance, **params)
    if math.isinf(q):
        raise ValueError(f"no finite variance fixed point at weight_variance={weight_variance}, "
                         f"bias_variance={bias_variance}: q grows without bound")
    # every q is a fixed point (ReLU on its EOC): the quantities do not depend on q; report q* = nan
    at = 1.0 if math.isnan(q) else max(q, _TINY_Q)
    stats = moments(activation, 0.0, math.sqrt(at), **params)
    chi_1 = float(weight_variance * stats.derivative_second_moment)
    slope = _variance_slope(activation, at, weight_variance, params)
    if abs(chi_1 - 1) <= _CRITICAL_TOLERANCE:
        phase = "critical"
    else:
        phase = "ordered" if chi_1 < 1 else "chaotic"
    c_star, chi_c = 1.0, chi_1
    if phase == "chaotic":
        def gap(c):
            return float(correlation_map(activation, c, at, weight_variance=weight_variance,
                                         bias_variance=bias_variance, **params)) - c

        top = 1 - 1e-6
        c_star = 0.0 if gap(0.0) <= 0 else optimize.brentq(gap, 0.0, top, xtol=1e-14)
        chi_c = float(weight_variance * covariance_map(activation, c_star, at, quantity="derivative", **params))
    return DepthScales(float(weight_variance), float(bias_variance), q, c_star, chi_1, chi_c, slope,
                       _depth(slope), _depth(chi_c), phase)


class EdgeOfChaos(NamedTuple):
    """Points (sigma_b^2, sigma_w^2) with chi_1 = 1 at the variance fixed point q*."""

    bias_variance: np.ndarray
    weight_variance: np.ndarray
    """sigma_w^2 on the EOC (nan where none exists)"""
    q_star: np.ndarray
    """the variance fixed point there (nan where none exists or where every q is one)"""
    stable: np.ndarray
    """whether q* attracts (V'(q*) < 1); an EOC point with a repelling q* is not reached"""
    reason: str
    """why points are missing ('' when none is)"""


def _eoc_curve(activation, q: np.ndarray, params) -> tuple[np.ndarray, np.ndarray]:
    """(sigma_b^2(q), sigma_w^2(q)) on the EOC, parametrised by q* = q."""
    stats = moments(activation, 0.0, np.sqrt(q), **params)
    with np.errstate(divide="ignore"):
        weight = 1.0 / stats.derivative_second_moment
    return q - weight * stats.second_moment, weight


def edge_of_chaos(activation: str | Activation, bias_variance: ArrayLike = 0.0, **params: Any) -> EdgeOfChaos:
    r"""sigma_w^2 on the edge of chaos (chi_1 = 1), and q*, for each sigma_b^2 in `bias_variance`.

    Solves :math:`\sigma_b^2(q) = q - E[f(\sqrt q z)^2]/E[f'(\sqrt q z)^2]` = the given value for q
    (a grid in q in [1e-8, 1e8], then Brent's method in log q), and returns
    :math:`\sigma_w^2 = 1/E[f'(\sqrt{q^*}z)^2]`. Where several q solve it, the smallest is
    returned. Where none does, the entries are nan and `reason` says why: for ReLU and Leaky ReLU
    sigma_b^2(q) = 0 for every q (the EOC is the single point sigma_b^2 = 0,
    sigma_w^2 = 2/(1 + s^2), and every q is a fixed point there); otherwise the value lies outside
    the range the curve covers. At sigma_b^2 = 0 the curve ends at q* = 0 (the limit q -> 0) where
    f(0) = 0: sigma_w^2 = 1/lim E[f'^2] (tanh 1, ELU(alpha=1) 1, GELU and SiLU 4).

    Args:
        activation: a registry name or an `Activation`.
        bias_variance: sigma_b^2 >= 0, scalar or array.
        params: activation parameters.
    Returns: `EdgeOfChaos` with arrays of `bias_variance`'s shape.
    """
    _registered(activation, "edge_of_chaos")
    targets = np.asarray(bias_variance, dtype=np.float64)
    if not np.all(np.isfinite(targets) & (targets >= 0)):
        raise ValueError(f"bias_variance must be finite and >= 0, got {bias_variance!r}")
    flat = targets.reshape(-1)
    curve_bias, curve_weight = _eoc_curve(activation, _Q_GRID, params)
    weight = np.full(flat.shape, np.nan)
    q_star = np.full(flat.shape, np.nan)
    stable = np.zeros(flat.shape, dtype=bool)
    reasons: list[str] = []
    if np.all(np.abs(curve_bias) <= 1e-12 * _Q_GRID):
        # sigma_b^2(q) = 0 for all q: piecewise-linear f, V(q) = sigma_w^2 E[f'^2] q
        point = float(np.median(curve_weight))
        at_zero = flat == 0
        weight[at_zero] = point
        if np.any(~at_zero):
            reasons.append(f"the edge of chaos is the single point (sigma_b^2 = 0, sigma_w^2 = {point:.6g}): "
                           "sigma_b^2(q) = q - E[f^2]/E[f'^2] = 0 for every q (f is piecewise linear)")
        return EdgeOfChaos(targets, weight.reshape(targets.shape), q_star.reshape(targets.shape),
                           stable.reshape(targets.shape), "; ".join(reasons))
    # sigma_b^2(q) -> 0 as q -> 0 when f(0) = 0 and f is smooth enough at 0: the EOC meets
    # sigma_b^2 = 0 at sigma_w^2 = 1/lim E[f'^2] with q* = 0 (tanh: 1/f'(0)^2 = 1)
    meets_zero = abs(curve_bias[0]) <= 1e-6 * _Q_GRID[0]
    for i, target in enumerate(flat):
        if target == 0 and meets_zero:
            weight[i] = float(_eoc_curve(activation, np.array([_TINY_Q]), params)[1][0])
            q_star[i] = 0.0
            stable[i] = float(weight[i] * _second(activation, _Q_GRID[0], params)) < _Q_GRID[0]
            continue
        gap = curve_bias - target
        crossings = np.flatnonzero(np.sign(gap[:-1]) * np.sign(gap[1:]) <= 0)
        if not crossings.size:
            low, high = float(np.min(curve_bias)), float(np.max(curve_bias))
            reasons.append(f"sigma_b^2 = {target:g} is outside the range [{low:.6g}, {high:.6g}] that the edge of "
                           f"chaos covers for q* in [1e-8, 1e8]")
            continue
        j = int(crossings[0])

        def residual(log_q, target=target):
            return float(_eoc_curve(activation, np.array([math.exp(log_q)]), params)[0][0]) - target

        if gap[j] == 0:
            q = float(_Q_GRID[j])
        else:
            q = math.exp(optimize.brentq(residual, math.log(_Q_GRID[j]), math.log(_Q_GRID[j + 1]), xtol=1e-15,
                                         rtol=1e-15))
        q_star[i] = q
        weight[i] = float(_eoc_curve(activation, np.array([q]), params)[1][0])
        stable[i] = _variance_slope(activation, q, weight[i], params) < 1
    return EdgeOfChaos(targets, weight.reshape(targets.shape), q_star.reshape(targets.shape),
                       stable.reshape(targets.shape), "; ".join(reasons))


__all__ = ["DepthScales", "EdgeOfChaos", "depth_scales", "edge_of_chaos", "variance_fixed_point"]
