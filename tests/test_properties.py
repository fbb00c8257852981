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


any_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
any_float64 = st.floats(allow_nan=False, allow_infinity=False)
family_specs = st.one_of(
    st.builds(lambda alpha: elukit.get("elu", alpha=alpha), alphas),
    st.builds(lambda alpha: elukit.get("celu", alpha=alpha), alphas),
    st.builds(lambda alpha, scale: elukit.get("selu", alpha=alpha, scale=scale), alphas, st.floats(0.5, 3.0)),
)
quantities = st.sampled_from(["value", "derivative", "second_derivative"])


@given(st.lists(any_float32, min_size=1, max_size=40), family_specs, quantities)
def test_compiled_float32_equals_the_numpy_kernels(values, spec, quantity):
    """The compiled kernels against the NumPy kernels (float64 with round-to-odd) at any
    parameters: the same bits, or (within 2^-42 of a midpoint, where double-double decides) 1 ulp."""
    x = np.array(values, dtype=np.float32)
    got = getattr(spec, quantity)(x)
    wanted = getattr(spec, quantity)(x, compiled=False)
    same = (got == wanted) | (np.isnan(got) & np.isnan(wanted))
    with np.errstate(all="ignore"):
        ulps = np.abs(got.astype(np.float64) - wanted) / np.spacing(np.abs(wanted)).astype(np.float64)
    assert (same | (ulps <= 1)).all() and np.mean(same) >= 0.95


@given(st.lists(any_float64, min_size=1, max_size=40), family_specs, quantities)
def test_compiled_float64_within_an_ulp_of_extended_precision(values, spec, quantity):
    assume(elukit.EXTENDED_PRECISION_AVAILABLE)
    x = np.array(values, dtype=np.float64)
    got = getattr(spec, quantity)(x)
    wanted = getattr(spec, quantity)(x, compiled=False)
    same = (got == wanted) | (np.isnan(got) & np.isnan(wanted))
    with np.errstate(all="ignore"):  # inf - inf where both overflow (then `same` holds)
        ulps = np.abs(got - wanted) / np.spacing(np.abs(wanted))
    assert (same | (ulps <= 1)).all()


@given(st.lists(any_float64, min_size=1, max_size=40), family_specs, quantities)
def test_fast_float64_within_an_ulp_of_the_double_double_kernels(values, spec, quantity):
    """elukit.torch's default float64 kernels (fast, faithful) against the correctly rounding
    ones at any parameters."""
    from elukit import _native

    assume(_native.AVAILABLE and spec.exponential_linear_form() is not None)
    x = np.array(values, dtype=np.float64)
    wanted = getattr(spec, quantity)(x)
    got = np.empty_like(x)
    assume(_native.evaluate(spec.exponential_linear_form(), quantity, x, got, fast=True))
    same = (got == wanted) | (np.isnan(got) & np.isnan(wanted))
    with np.errstate(all="ignore"):
        ulps = np.abs(got - wanted) / np.spacing(np.abs(wanted))
    assert (same | (ulps <= 1)).all()
