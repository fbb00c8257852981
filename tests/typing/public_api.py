"""Checked by mypy (tests/test_packaging.py runs it), never run: the public API as a user's type
checker sees it through py.typed.

Each block uses public names the way the README does; `assert_type` pins what the annotations
promise, so a public signature that loses its types (or a lost py.typed, which makes every name
Any) fails the check."""

from __future__ import annotations

import numpy as np
from typing_extensions import assert_type

import elukit
from elukit import theory

x = np.linspace(-3.0, 3.0, 7)

# registry and specs
assert_type(elukit.activations(), list[str])
elu = elukit.get("elu", alpha=1.0)
assert_type(elu, elukit.Activation)
assert_type(elukit.parse("leaky_relu:slope=0.1"), elukit.Activation)
assert_type(elu.label(), str)
assert_type(elu.parameters, dict[str, float])
elu.value(x, compiled=False)
elu.derivative(np.array([-20.0, 0.0], dtype=np.float32))
elu.second_derivative(-1.0)

# constants and functions
assert_type(elukit.SELU_ALPHA, float)
assert_type(elukit.SELU_SCALE, float)
elukit.elu(x, alpha=1.0)
elukit.elu_derivative(x, alpha=1.0)
elukit.selu(x)
elukit.celu(x, alpha=1.0)

# theory
moments = theory.moments("elu", mean=0.0, std=1.0)
mean: np.ndarray = moments.mean
zero: np.ndarray = theory.moments("relu").zero_gradient_probability
alpha, scale = theory.selu_constants()
assert_type(theory.gain("elu"), float)
