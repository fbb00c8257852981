r"""Initialization gains from Gaussian moments, and what each gain does to signals and gradients.

With fan-in weights of standard deviation :math:`g/\sqrt{n}` and pre-activations
:math:`z \sim N(0, q)`, the next layer's pre-activation second moment is
:math:`V(q) = g^2 E[f(z)^2]` and squared gradient norms are multiplied by
:math:`\chi = g^2 E[f'(z)^2]` per layer (mean field, infinite width).

* `gain`: the g with V(q) = q (forward signal preserved): :math:`g = \sqrt{q / E f(z)^2}`.
* `gradient_gain`: the g with chi = 1 (backward preserved): :math:`g = 1/\sqrt{E f'(z)^2}`.
No single g preserves both unless :math:`E f^2 = q E f'^2` (ReLU: both sqrt(2)).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

from elukit._gaussian import Moments
from elukit._spec import Activation
from elukit.theory.moments import moments


class GainReport(NamedTuple):
    """A gain and its consequences at the variance fixed point q* = input_variance."""

    gain: float
    forward_gain: float
    gradient_gain: float
    chi: float
    """per-layer factor of the squared gradient norm with this gain (1 = preserved)"""
    variance_slope: float
    """dV/dq at q*; below 1 the fixed point attracts (stable), above 1 it repels"""
    stable: bool
    warnings: tuple[str, ...]


def _check_variance(input_variance: float) -> float:
    if not (math.isfinite(input_variance) and input_variance > 0):
        raise ValueError(f"input_variance must be finite and > 0, got {input_variance!r}")
    return float(input_variance)


def _forward_gain(stats: Moments, q: float) -> float:
    return math.sqrt(q / float(stats.second_moment))


def _backward_gain(stats: Moments) -> float:
    return 1.0 / math.sqrt(float(stats.derivative_second_moment))


def gain(activation: str | Activation, input_variance: float = 1.0, **params: Any) -> float:
    r"""Weight-std multiplier (fan-in) keeping the pre-activation second moment at `input_variance`:
    :math:`g = \sqrt{q / E[f(z)^2]},\ z \sim N(0, q)`. ELU(alpha=1): 1.2452."""
    q = _check_variance(input_variance)
    return _forward_gain(moments(activation, 0.0, math.sqrt(q), **params), q)


def gradient_gain(activation: str | Activation, input_variance: float = 1.0, **params: Any) -> float:
    r"""Weight-std multiplier keeping squared gradient norms: :math:`g = 1/\sqrt{E[f'(z)^2]}`.
    ELU(alpha=1): 1.2234."""
    q = _check_variance(input_variance)
    return _backward_gain(moments(activation, 0.0, math.sqrt(q), **params))


def variance_map(activation: str | Activation, q: float, weight_gain: float, **params: Any) -> float:
    """V(q) = g^2 E[f(z)^2], z ~ N(0, q)."""
    return weight_gain**2 * float(moments(activation, 0.0, math.sqrt(q), **params).second_moment)


def analyze_gain(activation: str | Activation, weight_gain: float | None = None, input_variance: float = 1.0,
                 warn: bool = True, **params: Any) -> GainReport:
    """Report chi and the variance-map slope for `weight_gain` (default: the forward `gain`).

    Warns (UserWarning) when the fixed point is unstable (slope > 1) or gradients grow (chi > 1).
    A slope of exactly 1 (ReLU, Leaky ReLU: V is linear in q) is reported as marginal, not stable.
    """
    q = _check_variance(input_variance)
    at_fixed_point = moments(activation, 0.0, math.sqrt(q), **params)
    forward = _forward_gain(at_fixed_point, q)
    backward = _backward_gain(at_fixed_point)
    g = forward if weight_gain is None else float(weight_gain)
    if not (math.isfinite(g) and g > 0):
        raise ValueError(f"weight_gain must be finite and > 0, got {weight_gain!r}")
    chi = g**2 * float(at_fixed_point.derivative_second_moment)
    step = 1e-4 * q
    slope = (variance_map(activation, q + step, g, **params) - variance_map(activation, q - step, g, **params)) / (2 * step)
    notes = []
    marginal = abs(slope - 1) <= 1e-6
    if marginal:
        notes.append(f"the variance fixed point q*={q:g} is marginal (dV/dq = 1): deviations neither decay nor grow")
    elif slope > 1:
        notes.append(f"the variance fixed point q*={q:g} is unstable (dV/dq = {slope:.4f} >= 1)")
    if chi > 1 + 1e-9:
        notes.append(f"gradients grow: chi = {chi:.4f}, i.e. {100 * (chi - 1):+.1f}% squared gradient norm per layer")
    name = activation if isinstance(activation, str) else activation.name
    if warn:
        for note in (n for n in notes if "marginal" not in n):
            warnings.warn(f"{name}: {note}", UserWarning, stacklevel=2)
    return GainReport(g, forward, backward, chi, slope, slope < 1 and not marginal, tuple(notes))
