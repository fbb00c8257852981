r"""Closed-form Gaussian expectations used by the specs' ``gaussian`` entries.

For :math:`z \sim N(\mu, \sigma^2)` write :math:`a = \mu/\sigma`, :math:`\Phi, \varphi` for
the standard normal CDF and density. Every function broadcasts over its array arguments.

Building blocks (derivations in ``docs/theory.md``):

* :math:`E[e^{cz} 1_{z\le0}] = \exp(c\mu + c^2\sigma^2/2)\,\Phi(-a - c\sigma)`, evaluated in log
  space with ``log_ndtr`` so that neither factor overflows (sigma = 10 gives e^50 times 1e-24).
* :math:`E[(e^{cz}-1) 1_{z\le0}] = \Phi(-a)\,\mathrm{expm1}(L)` with
  :math:`L = c\mu + c^2\sigma^2/2 + \log\Phi(-a-c\sigma) - \log\Phi(-a)`: the naive difference of
  the two expectations cancels when z is concentrated near 0.
* :math:`E[(e^{cz}-1)^2 1_{z\le0}]`: where the naive combination cancels (the mass of z below 0
  lies within 1/c of 0), a series in the truncated moments :math:`I_k = E[z^k 1_{z\le0}]`, which
  obey :math:`I_k = \mu I_{k-1} + (k-1)\sigma^2 I_{k-2}` (no cancellation: every term of
  :math:`I_k` has the sign :math:`(-1)^k`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import special

_SERIES_TERMS = 30


class Moments(NamedTuple):
    """Gaussian expectations of an activation f for z ~ N(mean, std^2)."""

    mean: np.ndarray
    second_moment: np.ndarray
    variance: np.ndarray
    derivative_mean: np.ndarray
    derivative_second_moment: np.ndarray
    zero_gradient_probability: np.ndarray


def make_moments(mean, second_moment, derivative_mean, derivative_second_moment, zero_gradient) -> Moments:
    """Assemble `Moments`, with the variance E[f^2] - E[f]^2 clipped at 0 against rounding."""
    variance = np.maximum(second_moment - mean * mean, 0.0)
    return Moments(mean, second_moment, variance, derivative_mean, derivative_second_moment, zero_gradient)


def positive_part_moments(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`E[z 1_{z>0}] = \mu\Phi(a) + \sigma\varphi(a)` and
    :math:`E[z^2 1_{z>0}] = (\mu^2+\sigma^2)\Phi(a) + \mu\sigma\varphi(a)`."""
    a = mean / std
    cdf = special.ndtr(a)
    density = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    first = mean * cdf + std * density
    second = (mean * mean + std * std) * cdf + mean * std * density
    # For a << 0 both cancel; use the Mills-ratio form std * phi(a) * g(a) there.
    tail = a < -5
    if np.any(tail):
        ratio = _mills_ratio(-a)  # Phi(a) / phi(a) for a < 0
        first = np.where(tail, std * density * (1 + a * ratio), first)
        second = np.where(tail, std * std * density * ((1 + a * a) * ratio + a), second)
    return first, second


def _mills_ratio(t: np.ndarray) -> np.ndarray:
    """:math:`\\Phi(-t)/\\varphi(t)` for t > 0, via the scaled complementary error function."""
    return math.sqrt(math.pi / 2) * special.erfcx(t / math.sqrt(2))


class _Tails(NamedTuple):
    """The negative-branch expectations of exp-linear activations at rates c and 2c."""

    exp: np.ndarray  # E[e^{cz} 1]
    exp_double: np.ndarray  # E[e^{2cz} 1]
    expm1: np.ndarray  # E[(e^{cz}-1) 1]
    expm1_squared: np.ndarray  # E[(e^{cz}-1)^2 1]


def _tails(mean: np.ndarray, std: np.ndarray, rate: np.ndarray) -> _Tails:
    a = mean / std
    log_mass = special.log_ndtr(-a)
    log_single = rate * mean + 0.5 * (rate * std) ** 2 + special.log_ndtr(-a - rate * std)
    log_double = 2 * rate * mean + 2 * (rate * std) ** 2 + special.log_ndtr(-a - 2 * rate * std)
    mass = np.exp(log_mass)
    expm1 = mass * np.expm1(log_single - log_mass)
    expm1_double = mass * np.expm1(log_double - log_mass)
    expm1_squared = np.maximum(expm1_double - 2 * expm1, 0.0)
    series = _series_applies(mean, std, rate)
    if np.any(series):
        expm1 = expm1.copy()
        expm1_squared = expm1_squared.copy()
        expm1[series], expm1_squared[series] = _truncated_series(mean[series], std[series], rate[series])
    return _Tails(np.exp(log_single), np.exp(log_double), expm1, expm1_squared)


def exponential_minus_one_tail(mean, std, rate) -> np.ndarray:
    r""":math:`E[(e^{cz}-1) 1_{z\le0}] = \Phi(-a)\,\mathrm{expm1}(L)` (see the module docstring)."""
    mean, std, rate = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (mean, std, rate)))
    return _tails(mean, std, rate).expm1


def exponential_minus_one_squared_tail(mean, std, rate) -> np.ndarray:
    r""":math:`E[(e^{cz}-1)^2 1_{z\le0}] = E[(e^{2cz}-1)1] - 2E[(e^{cz}-1)1]`, or the series."""
    mean, std, rate = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (mean, std, rate)))
    return _tails(mean, std, rate).expm1_squared


def _series_applies(mean, std, rate):
    """Where the mass of z below zero sits within |c z| < 1 (8 sigma), so the series converges
    geometrically and the closed form would cancel."""
    return rate * (np.abs(mean) + 8 * std) < 1.0


def _truncated_series(mean, std, rate) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`\sum_k w_k c^k I_k` with :math:`w_k = 1/k!` (``e^{cz}-1``) and
    :math:`(2^k-2)/k!` (``(e^{cz}-1)^2``); accurate where `_series_applies` (|c z| < 1 on the
    mass, so term k is below 2^k/k!: 30 terms reach 1e-20)."""
    with np.errstate(all="ignore"):
        a = mean / std
        before = special.ndtr(-a)  # I_0
        density = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        current = mean * before - std * density  # I_1
        single = np.zeros_like(mean)
        squared = np.zeros_like(mean)
        term = rate.copy()  # c^k / k!
        for k in range(1, _SERIES_TERMS + 1):
            if k > 1:
                before, current = current, mean * current + (k - 1) * std * std * before
                term = term * rate / k
            single += term * current
            squared += (2.0**k - 2.0) * term * current
    return single, squared


def exponential_linear_moments(mean, std, linear_scale, exponential_scale, rate) -> Moments:
    r"""Moments of :math:`f(z) = \lambda z\ (z>0),\ \beta(e^{cz}-1)\ (z\le0)`.

    ELU: lambda = 1, beta = alpha, c = 1. SELU: lambda, beta = lambda*alpha, c = 1.
    CELU: lambda = 1, beta = alpha, c = 1/alpha. With :math:`f' = \lambda\ (z>0),\ \beta c e^{cz}`:

    .. math::
        E f = \lambda E[z1_{z>0}] + \beta E[(e^{cz}-1)1_{z\le0}], \quad
        E f^2 = \lambda^2 E[z^2 1_{z>0}] + \beta^2 E[(e^{cz}-1)^2 1_{z\le0}],

        E f' = \lambda\Phi(a) + \beta c\,E[e^{cz}1_{z\le0}], \quad
        E f'^2 = \lambda^2\Phi(a) + \beta^2c^2 E[e^{2cz}1_{z\le0}], \quad P[f'=0] = 0.
    """
    shape = np.broadcast_shapes(*(np.shape(v) for v in (mean, std, linear_scale, exponential_scale, rate)))
    mean, std, linear_scale, exponential_scale, rate = (
        np.broadcast_to(np.asarray(v, dtype=np.float64), shape).reshape(-1)
        for v in (mean, std, linear_scale, exponential_scale, rate)
    )
    first, second = positive_part_moments(mean, std)
    positive_mass = special.ndtr(mean / std)
    tails = _tails(mean, std, rate)
    slope = exponential_scale * rate
    result = make_moments(
        linear_scale * first + exponential_scale * tails.expm1,
        linear_scale**2 * second + exponential_scale**2 * tails.expm1_squared,
        linear_scale * positive_mass + slope * tails.exp,
        linear_scale**2 * positive_mass + slope**2 * tails.exp_double,
        np.zeros_like(mean),
    )
    return Moments(*(v.reshape(shape) for v in result))


def piecewise_linear_moments(mean, std, slope) -> Moments:
    r"""Moments of :math:`f(z) = z\ (z>0),\ s z\ (z\le0)` (ReLU: s = 0).

    .. math::
        E f = E[z1_{z>0}] + s(\mu - E[z1_{z>0}]), \quad
        E f^2 = E[z^2 1_{z>0}] + s^2(\mu^2+\sigma^2 - E[z^2 1_{z>0}]),

        E f' = \Phi(a) + s\Phi(-a), \quad E f'^2 = \Phi(a) + s^2\Phi(-a), \quad
        P[f'=0] = \Phi(-a)\ (s = 0),\ 0\ (s > 0).
    """
    mean, std, slope = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (mean, std, slope)))
    first, second = positive_part_moments(mean, std)
    a = mean / std
    above, below = special.ndtr(a), special.ndtr(-a)
    # The negative parts directly, so that they do not cancel when the mass sits above 0:
    negative_first, negative_second = positive_part_moments(-mean, std)
    value_mean = first - slope * negative_first
    value_second = second + slope**2 * negative_second
    zero = np.where(slope == 0, below, 0.0)
    return make_moments(value_mean, value_second, above + slope * below, above + slope**2 * below, zero)
