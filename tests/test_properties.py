"""Hypothesis properties of the ELU family and numeric derivatives of every activation."""

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

import elukit

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
moderate = st.floats(-30, 30, allow_nan=False, allow_infinity=False)
alphas = st.floats(0.05, 20.0)
FAMILY = ("elu", "celu")


@given(finite, finite, alphas, st.sampled_from(FAMILY))
def test_monotone_for_positive_alpha(a, b, alpha, name):
    low, high = sorted((a, b))
    spec = elukit.get(name, alpha=alpha)
    assert spec(low) <= spec(high)


@given(finite, alphas, st.sampled_from(FAMILY))
def test_bounded_below_by_minus_alpha(x, alpha, name):
    assert elukit.get(name, alpha=alpha)(x) >= -alpha


@given(st.floats(0, 1e-12), alphas, st.sampled_from(FAMILY))
def test_continuous_at_zero(h, alpha, name):
    spec = elukit.get(name, alpha=alpha)
    assert abs(spec(h) - spec(-h)) <= 2 * h * max(1.0, alpha) + 1e-300


@given(st.floats(-700, 1e6), alphas, st.sampled_from(FAMILY + ("selu",)))
def test_derivative_strictly_positive(x, alpha, name):
    spec = elukit.get(name, alpha=alpha) if name != "selu" else elukit.get("selu")
    assume(name != "celu" or x / alpha > -700)
    assert spec.derivative(x) > 0


@given(moderate)
def test_selu_is_scale_times_elu(x):
    wanted = elukit.SELU_SCALE * float(elukit.elu(np.longdouble(x), alpha=elukit.SELU_ALPHA))
    assert abs(elukit.selu(x) - wanted) <= abs(wanted) * 2.0**-52


@given(finite, st.sampled_from([np.float16, np.float32, np.float64]))
def test_celu_alpha_one_equals_elu(x, dtype):
    with np.errstate(over="ignore"):
        x = np.array([x]).astype(dtype)
    assert np.array_equal(elukit.celu(x, alpha=1.0), elukit.elu(x, alpha=1.0))
    assert np.array_equal(elukit.get("celu").derivative(x), elukit.elu_derivative(x))


@given(st.floats(-20, 20), st.sampled_from(elukit.activations()))
def test_numeric_derivative_agrees(x, name):
    assume(abs(x) > 1e-3)  # away from kinks
    spec = elukit.get(name)
    step = 1e-6 * max(1.0, abs(x))
    numeric = (spec(x + step) - spec(x - step)) / (2 * step)
    assert abs(numeric - spec.derivative(x)) <= 1e-6 * max(1.0, abs(spec.derivative(x)))
    numeric2 = (spec.derivative(x + step) - spec.derivative(x - step)) / (2 * step)
    assert abs(numeric2 - spec.second_derivative(x)) <= 1e-5 * max(1.0, abs(spec.second_derivative(x)))
