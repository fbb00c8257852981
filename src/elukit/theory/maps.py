r"""The mean/variance map of Klambauer et al. (2017), its fixed points, and SELU's constants.

A layer with weights w (sums :math:`\omega = \sum w_i`, :math:`\tau = \sum w_i^2`) maps inputs of
mean :math:`\mu` and variance :math:`\nu` to pre-activations
:math:`z \sim N(\mu\omega, \nu\tau)` (central limit theorem) and outputs
:math:`g(\mu, \nu) = (E f(z), \mathrm{Var} f(z))`. A fixed point :math:`(\mu^*, \nu^*)` is
stable when the spectral radius of the Jacobian of g there is below 1.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize

from elukit._gaussian import (
    exponential_minus_one_squared_tail,
    exponential_minus_one_tail,
)
from elukit._registry import get
from elukit._spec import Activation
from elukit.theory.moments import moments


def mean_variance_map(activation: str | Activation, mean: Any, variance: Any, omega: float = 0.0,
                      tau: float = 1.0, **params: Any) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`g(\mu, \nu) = (E f(z), \mathrm{Var} f(z))` with :math:`z \sim N(\mu\omega, \nu\tau)`."""
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be finite and > 0, got {tau!r}")
    if not math.isfinite(omega):
        raise ValueError(f"omega must be finite, got {omega!r}")
    variance = np.asarray(variance, dtype=np.float64)
    if not np.all(variance > 0):
        raise ValueError(f"variance must be > 0, got {variance!r}")
    result = moments(activation, np.asarray(mean, dtype=np.float64) * omega, np.sqrt(variance * tau), **params)
    return result.mean, result.variance


def map_jacobian(activation: str | Activation, mean: float, variance: float, omega: float = 0.0,
                 tau: float = 1.0, step: float = 1e-5, **params: Any) -> np.ndarray:
    """2x2 Jacobian of `mean_variance_map` at (mean, variance), by central differences of the
    closed form (relative accuracy ~1e-10; enough for stability, which is a question of |eig| vs 1)."""
    jacobian = np.empty((2, 2))
    for column, (dm, dv) in enumerate(((step, 0.0), (0.0, step * max(variance, 1e-300)))):
        plus = mean_variance_map(activation, mean + dm, variance + dv, omega, tau, **params)
        minus = mean_variance_map(activation, mean - dm, variance - dv, omega, tau, **params)
        width = 2 * (dm + dv)
        jacobian[:, column] = [(float(plus[i]) - float(minus[i])) / width for i in range(2)]
    return jacobian


class FixedPoint(NamedTuple):
    mean: float
    variance: float
    jacobian: np.ndarray
    spectral_radius: float
    stable: bool


def fixed_point(activation: str | Activation, omega: float = 0.0, tau: float = 1.0,
                initial: tuple[float, float] = (0.0, 1.0), **params: Any) -> FixedPoint:
    """A fixed point of the mean/variance map near `initial`, with its stability."""
    def residual(point):
        mu, log_nu = point
        new_mu, new_nu = mean_variance_map(activation, mu, math.exp(log_nu), omega, tau, **params)
        return [float(new_mu) - mu, math.log(max(float(new_nu), 1e-300)) - log_nu]

    solution = optimize.root(residual, [initial[0], math.log(initial[1])], method="hybr", tol=1e-13)
    if not np.all(np.isfinite(solution.x)) or max(abs(r) for r in residual(solution.x)) > 1e-10:
        raise ValueError(f"no fixed point found near {initial}: {solution.message}")
    mu, nu = float(solution.x[0]), math.exp(float(solution.x[1]))
    jacobian = map_jacobian(activation, mu, nu, omega, tau, **params)
    radius = float(np.max(np.abs(np.linalg.eigvals(jacobian))))
    return FixedPoint(mu, nu, jacobian, radius, radius < 1)


def _zero_mean_alpha(std: float) -> float:
    r"""The alpha with E[ELU(z)] = 0 for z ~ N(0, std^2): :math:`\alpha = -E[z1_{z>0}]/E[(e^z-1)1_{z\le0}]`
    (scale-free, so it is solved first, in closed form)."""
    positive_mean = std / math.sqrt(2 * math.pi)
    return -positive_mean / float(exponential_minus_one_tail(0.0, std, 1.0)[0])


def self_normalizing_constants(mean: float = 0.0, variance: float = 1.0) -> tuple[float, float]:
    r"""(alpha, scale) making (mean, variance) a fixed point of SELU's map at omega = 0, tau = 1.

    For mean = 0 both are closed forms: alpha from E f = 0 (`_zero_mean_alpha`), then
    :math:`\lambda = \sqrt{\nu / (E[z^2 1_{z>0}] + \alpha^2 E[(e^z-1)^2 1_{z\le0}])}`. Other means
    are solved with Newton's method from there.
    """
    if not (math.isfinite(variance) and variance > 0):
        raise ValueError(f"variance must be finite and > 0, got {variance!r}")
    if not math.isfinite(mean):
        raise ValueError(f"mean must be finite, got {mean!r}")
    std = math.sqrt(variance)
    alpha = _zero_mean_alpha(std)
    second = variance / 2 + alpha**2 * float(exponential_minus_one_squared_tail(0.0, std, 1.0)[0])
    scale = math.sqrt(variance / second)
    if mean == 0.0:
        return alpha, scale

    def residual(log_params):
        a, s = np.exp(log_params)
        result = moments("selu", 0.0, std, alpha=a, scale=s)
        return [float(result.mean) - mean, float(result.variance) - variance]

    solution = optimize.root(residual, np.log([alpha, scale]), tol=1e-13)
    if max(abs(r) for r in residual(solution.x)) > 1e-12:
        raise ValueError(f"no SELU constants give mean {mean} and variance {variance}: {solution.message}")
    alpha, scale = (float(v) for v in np.exp(solution.x))
    return alpha, scale


def selu_constants() -> tuple[float, float]:
    """SELU's (alpha, scale), derived: the fixed point (0, 1) of the mean/variance map."""
    return self_normalizing_constants(0.0, 1.0)


def alpha_dropout_constants(rate: float, activation: str | Activation = "selu", mean: float = 0.0,
                            variance: float = 1.0) -> tuple[float, float, float]:
    r"""Alpha dropout's affine correction (a, b) and the value dropped units are set to.

    Dropped units (probability `rate`) are set to the activation's negative saturation value
    :math:`\alpha'` (its infimum, -scale*alpha for SELU); with keep probability q = 1 - rate,

    .. math:: a = \sqrt{\nu / (q\nu + q(1-q)(\alpha' - \mu)^2)}, \quad b = \mu - a(q\mu + (1-q)\alpha')

    keep the mean and variance of inputs with mean `mean` and variance `variance`.
    Returns: (a, b, saturation value).
    """
    if not (0.0 <= rate < 1.0):
        raise ValueError(f"rate must be in [0, 1), got {rate!r}")
    spec = get(activation) if isinstance(activation, str) else activation
    if spec.bounded_below is None:
        raise ValueError(f"activation {spec.name!r} has no negative saturation value for alpha dropout")
    saturation = spec.evaluate_expression(spec.bounded_below)
    keep = 1.0 - rate
    a = math.sqrt(variance / (keep * variance + keep * (1 - keep) * (saturation - mean) ** 2))
    b = mean - a * (keep * mean + (1 - keep) * saturation)
    return a, b, saturation


__all__ = [
    "FixedPoint", "alpha_dropout_constants", "fixed_point", "map_jacobian", "mean_variance_map",
    "self_normalizing_constants", "selu_constants",
]
