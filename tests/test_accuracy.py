"""ULP accuracy against correctly rounded mpmath references (elukit.reference).

float16 and bfloat16: every finite input. float32 and float64: `sample_points` (every binade,
subnormals, the exponential regime, named edge cases); 10^5 points for the default ELU, SELU and
CELU, 2x10^4 for the other parameter values and the comparators.
"""

import numpy as np
import pytest

import elukit
import elukit._native
from elukit.accuracy import dtype_from_name, exact_values, measure, sample_points, summarize

pytest.importorskip("mpmath")

FAMILY_MAIN = [("elu", {}), ("selu", {}), ("celu", {})]
FAMILY_OTHER = [("elu", {"alpha": 0.5}), ("elu", {"alpha": 3.0}), ("elu", {"alpha": 0.1}),
                ("celu", {"alpha": 0.1}), ("celu", {"alpha": 3.0}), ("selu", {"alpha": 1.97126, "scale": 1.06071})]
COMPARATORS = ["sigmoid", "tanh", "gelu", "silu", "softplus", "relu", "leaky_relu"]


def _describe(summary):
    worst = "\n".join(f"  x={x!r} got={g!r} wanted={w!r} ulps={u:.4f}" for x, g, w, u in summary.worst)
    return (f"{summary.activation} {summary.quantity} {summary.dtype}: max {summary.max_ulp:.4f} ulp, "
            f"correctly rounded {summary.correctly_rounded:.6%}\n{worst}")


def _points(dtype_name, count):
    if dtype_name == "bfloat16":
        pytest.importorskip("ml_dtypes")
    return sample_points(dtype_from_name(dtype_name), count)


def _needs_extended(dtype_name, spec=None):
    """Skip where faithful float64 would need np.longdouble with a 64-bit significand: the ELU
    family's compiled kernels do not."""
    compiled = spec is not None and spec.exponential_linear is not None and elukit._native.AVAILABLE
    if dtype_name == "float64" and not elukit.EXTENDED_PRECISION_AVAILABLE and not compiled:
        pytest.skip("faithful float64 needs np.longdouble with a 64-bit significand")


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("quantity", ["value", "derivative"])
@pytest.mark.parametrize("name,params", FAMILY_MAIN + FAMILY_OTHER)
def test_family_correctly_rounded_on_every_16_bit_input(name, params, quantity, dtype_name):
    summary = measure(elukit.get(name, **params), quantity, dtype_name, _points(dtype_name, 0))
    assert summary.correctly_rounded == 1.0, _describe(summary)


@pytest.mark.parametrize("quantity", ["value", "derivative"])
@pytest.mark.parametrize("name,params,count", [(n, p, 100_000) for n, p in FAMILY_MAIN]
                         + [(n, p, 20_000) for n, p in FAMILY_OTHER])
def test_family_float32_faithful_and_correctly_rounded(name, params, count, quantity):
    summary = measure(elukit.get(name, **params), quantity, "float32", _points("float32", count))
    assert summary.max_ulp < 1.0, _describe(summary)
    assert summary.correctly_rounded >= 0.99999, _describe(summary)


@pytest.mark.parametrize("quantity", ["value", "derivative"])
@pytest.mark.parametrize("name,params,count", [(n, p, 100_000) for n, p in FAMILY_MAIN]
                         + [(n, p, 20_000) for n, p in FAMILY_OTHER])
def test_family_float64_faithful(name, params, count, quantity):
    spec = elukit.get(name, **params)
    _needs_extended("float64", spec)
    summary = measure(spec, quantity, "float64", _points("float64", count))
    assert summary.max_ulp < 1.0, _describe(summary)


@pytest.mark.parametrize("quantity", ["value", "derivative", "second_derivative"])
@pytest.mark.parametrize("name,params", FAMILY_MAIN)
def test_family_extended_precision_kernels_stay_faithful_in_float64(name, params, quantity):
    """The NumPy kernels behind `compiled=False` (and torch's exact=True)."""
    _needs_extended("float64")
    spec = elukit.get(name, **params)
    points = _points("float64", 5_000)
    got = getattr(spec, quantity)(points, compiled=False)
    summary = summarize(spec.label(), quantity, np.dtype(np.float64), points, got,
                        exact_values(spec, quantity, points))
    assert summary.max_ulp < 1.0, _describe(summary)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name,params", FAMILY_MAIN + FAMILY_OTHER[:2])
def test_family_second_derivative_below_two_ulp(name, params, dtype_name):
    _needs_extended(dtype_name)
    summary = measure(elukit.get(name, **params), "second_derivative", dtype_name, _points(dtype_name, 20_000))
    assert summary.max_ulp < 2.0, _describe(summary)


@pytest.mark.parametrize("quantity", ["value", "derivative"])
@pytest.mark.parametrize("name", COMPARATORS)
def test_comparators_float32_faithful(name, quantity):
    summary = measure(elukit.get(name), quantity, "float32", _points("float32", 20_000))
    assert summary.max_ulp < 1.0, _describe(summary)


@pytest.mark.parametrize("name", COMPARATORS)
def test_comparators_float32_second_derivative_below_two_ulp(name):
    summary = measure(elukit.get(name), "second_derivative", "float32", _points("float32", 20_000))
    assert summary.max_ulp < 2.0, _describe(summary)


@pytest.mark.slow
@pytest.mark.parametrize("name,params", FAMILY_OTHER)
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_family_other_parameters_on_a_million_points(name, params, dtype_name):
    _needs_extended(dtype_name)
    for quantity in ("value", "derivative"):
        summary = measure(elukit.get(name, **params), quantity, dtype_name, _points(dtype_name, 1_000_000))
        assert summary.max_ulp < 1.0, _describe(summary)


# --- named regressions: the defects the issue measured in other libraries ---------------------------

def test_textbook_cancellation_elu_of_minus_1e8_float32():
    x = np.float32(-1e-8)
    assert np.float32(np.exp(x) - np.float32(1)) == 0  # the textbook formula's answer
    assert elukit.elu(x) == x  # -1e-8 * (1 - 5e-9), correctly rounded


def test_derivative_does_not_underflow_elu_prime_minus_40_float64():
    assert elukit.elu_derivative(-40.0) == 4.248354255291589e-18


def test_derivative_does_not_underflow_elu_prime_minus_20_float32():
    assert elukit.elu_derivative(np.float32(-20.0)) == np.float32(2.0611537e-09)


def test_selu_float64_not_rounded_through_scale_times_alpha():
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workprec(200):
        exact = mpmath.mpf(elukit.SELU_SCALE) * mpmath.mpf(elukit.SELU_ALPHA) * mpmath.expm1(mpmath.mpf(-0.3))
        assert abs(elukit.selu(-0.3) - exact) <= mpmath.mpf(2.0) ** -54


def test_celu_alpha_3_derivative_worst_case_is_faithful_in_float64():
    _needs_extended("float64")
    points = np.array([-2000.0, -2100.5, -2200.123456789, -1500.0 - 1e-9])
    summary = measure(elukit.get("celu", alpha=3.0), "derivative", "float64", points)
    assert summary.max_ulp < 1.0, _describe(summary)


def test_bfloat16_result_is_rounded_once_not_through_float32(bfloat16):
    from elukit._numerics import round_to_dtype

    just_above_midpoint = np.array([1 + 2.0**-8 + 2.0**-40])
    assert round_to_dtype(just_above_midpoint, np.dtype(bfloat16)).astype(np.float64)[0] == 1 + 2.0**-7


def test_reference_resolves_ties_that_192_bits_cannot():
    """ELU(alpha=3) at x = -(2^52 - 3) 2^-1050: 3x lies exactly on a float64 midpoint and only
    the x^2 term (2^-1000 relative) decides the rounding; the reference recomputes with more
    bits until it can see it."""
    import mpmath

    from elukit.reference import float_format, round_exact

    spec = elukit.get("elu", alpha=3.0)
    x = -np.ldexp(2.0**52 - 3, -1050)
    (reference,) = exact_values(spec, "value", [x])
    with mpmath.workprec(4000):
        truth = 3 * mpmath.expm1(mpmath.mpf(x))
    rounded = round_exact(reference, float_format(np.float64))
    for neighbour in (np.nextafter(rounded, -np.inf), np.nextafter(rounded, np.inf)):
        with mpmath.workprec(4000):
            assert abs(mpmath.mpf(rounded) - truth) < abs(mpmath.mpf(float(neighbour)) - truth)
    assert rounded != 3 * x  # ties-to-even of 3x goes away from zero, the truth lies toward it
