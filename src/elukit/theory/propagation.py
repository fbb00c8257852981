r"""Mean-field signal propagation through a deep fully connected network.

Layer l: pre-activations :math:`h_l \sim N(0, q_l)` (zero-mean weights of variance
:math:`\sigma_w^2/n`, biases of variance :math:`\sigma_b^2`), outputs :math:`f(h_l)`;

.. math:: q_1 = \sigma_w^2 (\nu_0 + \mu_0^2) + \sigma_b^2, \quad q_{l+1} = \sigma_w^2 E[f(h_l)^2] + \sigma_b^2.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from elukit._spec import Activation
from elukit.theory.moments import moments


class Propagation(NamedTuple):
    """Per-layer statistics, index l = 0 .. depth-1."""

    preactivation_variance: np.ndarray
    activation_mean: np.ndarray
    activation_variance: np.ndarray
    activation_second_moment: np.ndarray
    gradient_factor: np.ndarray
    """chi_l = sigma_w^2 E[f'(h_l)^2]: squared gradient norm ratio between layers l and l+1"""


def propagate(activation: str | Activation, depth: int, weight_variance: float, bias_variance: float = 0.0,
              input_mean: float = 0.0, input_variance: float = 1.0, **params: Any) -> Propagation:
    """Per-layer pre-activation variance and activation mean/variance (mean field).

    `weight_variance` is sigma_w^2 = gain^2 (the variance of a weight times the fan-in).
    """
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    for name, value, positive in (("weight_variance", weight_variance, True), ("bias_variance", bias_variance, False),
                                  ("input_variance", input_variance, False), ("input_mean", input_mean, None)):
        if not math.isfinite(value) or (positive and value <= 0) or (positive is False and value < 0):
            raise ValueError(f"{name} must be finite{' and > 0' if positive else ' and >= 0' if positive is False else ''}, got {value!r}")
    q = weight_variance * (input_variance + input_mean**2) + bias_variance
    columns = {k: np.empty(depth) for k in Propagation._fields}
    for layer in range(depth):
        if not (math.isfinite(q) and q > 0):
            for key in columns:
                columns[key][layer:] = np.nan if not math.isfinite(q) else 0.0
            break
        stats = moments(activation, 0.0, math.sqrt(q), **params)
        columns["preactivation_variance"][layer] = q
        columns["activation_mean"][layer] = stats.mean
        columns["activation_variance"][layer] = stats.variance
        columns["activation_second_moment"][layer] = stats.second_moment
        columns["gradient_factor"][layer] = weight_variance * stats.derivative_second_moment
        q = weight_variance * float(stats.second_moment) + bias_variance
    return Propagation(**columns)
