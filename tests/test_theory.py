"""elukit.theory against mpmath quadrature, Monte Carlo and a real deep network."""

import math
import warnings

import numpy as np
import pytest

import elukit
from elukit import theory

mpmath = pytest.importorskip("mpmath")

CLOSED_FORM_CASES = (
    [("elu", {"alpha": a}, m, s) for a in (0.1, 1.0, 5.0) for m in (-10.0, 0.0, 2.0) for s in (0.01, 1.0, 10.0)]
    + [("celu", {"alpha": a}, m, s) for a in (0.1, 5.0) for m in (-10.0, 0.0) for s in (0.01, 10.0)]
    + [("selu", {}, m, s) for m in (-10.0, 0.0, 0.5) for s in (0.01, 1.0, 10.0)]
    + [("relu", {}, m, s) for m in (-10.0, 0.0, 3.0) for s in (0.01, 1.0, 10.0)]
    + [("leaky_relu", {"slope": 0.1}, m, s) for m in (-10.0, 0.0) for s in (0.01, 10.0)]
)


def mpmath_moments(spec, mean, std):
    """E f, E f^2, E f', E f'^2 by mpmath quadrature at 30 digits, split at the kink and around the mean."""
    ref = spec.reference
    params = spec.parameters
    with mpmath.workdps(30):
        mu, sigma = mpmath.mpf(mean), mpmath.mpf(std)
        kink = -mu / sigma  # in the standardised variable t, z = mu + sigma t
        breaks = sorted({mpmath.mpf(k) for k in (-8, -2, 0, 2, 8)} | {kink})
        points = [-mpmath.inf, *breaks, mpmath.inf]

        def expect(g):
            return mpmath.quad(lambda t: g(mu + sigma * t) * mpmath.npdf(t), points)

        f = lambda z: ref.value(mpmath, z, **params)  # noqa: E731
        d = lambda z: ref.derivative(mpmath, z, **params)  # noqa: E731
        return [float(expect(g)) for g in (f, lambda z: f(z) ** 2, d, lambda z: d(z) ** 2)]


@pytest.mark.parametrize("name,params,mean,std", CLOSED_FORM_CASES)
def test_closed_form_moments_match_mpmath(name, params, mean, std):
    spec = elukit.get(name, **params)
    got = theory.moments(spec, mean, std)
    wanted = mpmath_moments(spec, mean, std)
    for label, value, exact in zip(("mean", "second_moment", "derivative_mean", "derivative_second_moment"),
                                   (got.mean, got.second_moment, got.derivative_mean, got.derivative_second_moment),
                                   wanted):
        # an expectation that is ~0 by cancellation (SELU's mean) can only be absolutely accurate
        assert abs(float(value) - exact) <= 1e-12 * abs(exact) + 1e-15 * math.sqrt(wanted[1]), f"{name}{params} N({mean},{std}^2) {label}: {float(value)!r} vs {exact!r}"
    variance = wanted[1] - wanted[0] ** 2
    assert abs(float(got.variance) - variance) <= 1e-12 * abs(variance) + 4e-16 * wanted[1]


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu", "silu", "softplus"])
@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (-1.0, 0.3), (1.0, 2.0)])
def test_quadrature_moments_match_mpmath(name, mean, std):
    spec = elukit.get(name)
    got = theory.moments(spec, mean, std)
    wanted = mpmath_moments(spec, mean, std)
    values = (got.mean, got.second_moment, got.derivative_mean, got.derivative_second_moment)
    for value, exact in zip(values, wanted):
        assert abs(float(value) - exact) <= 1e-12 * max(abs(exact), 1e-3)


def test_moments_agree_with_monte_carlo():
    rng = np.random.default_rng(0)
    z = rng.normal(0.3, 1.7, size=2_000_000)
    for name in ("elu", "selu", "celu", "relu", "gelu"):
        spec = elukit.get(name)
        f, d = spec(z), spec.derivative(z)
        got = theory.moments(spec, 0.3, 1.7)
        for value, sample in ((got.mean, f), (got.second_moment, f * f), (got.derivative_second_moment, d * d)):
            standard_error = sample.std() / math.sqrt(z.size)
            assert abs(float(value) - sample.mean()) < 5 * standard_error
        assert abs(float(got.zero_gradient_probability) - np.mean(d == 0)) < 5e-3


def test_gradient_sparsity_claim_zero_for_elu_half_for_relu():
    assert float(theory.moments("elu").zero_gradient_probability) == 0.0
    assert float(theory.moments("relu").zero_gradient_probability) == 0.5


def test_moments_vectorised_over_a_million_parameter_points():
    rng = np.random.default_rng(1)
    means, stds, alphas = rng.normal(size=10**6), rng.uniform(0.1, 3, 10**6), rng.uniform(0.1, 5, 10**6)
    result = theory.moments("elu", means, stds, alpha=alphas)
    assert result.mean.shape == (10**6,) and np.all(np.isfinite(result.second_moment))
    i = 12345
    single = theory.moments("elu", means[i], stds[i], alpha=alphas[i])
    assert float(single.second_moment) == result.second_moment[i]


def test_user_callable_uses_quadrature():
    result = theory.moments(np.tanh, 0.0, 1.0, derivative=lambda z: 1 - np.tanh(z) ** 2)
    assert abs(float(result.derivative_mean) - float(theory.moments("tanh").derivative_mean)) < 1e-13


@pytest.mark.parametrize("kwargs,message", [
    ({"std": 0.0}, "std"), ({"std": -1.0}, "std"), ({"mean": math.nan}, "mean"), ({"alpha": np.array([1.0, -1.0])}, "alpha"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        theory.moments("elu", **kwargs)


def test_selu_constants_derived_not_copied():
    alpha, scale = theory.selu_constants()
    assert abs(alpha - 1.6732632423543772848) <= 1e-15
    assert abs(scale - 1.0507009873554804934) <= 1e-15


def test_self_normalizing_constants_for_variance_two():
    alpha, scale = theory.self_normalizing_constants(mean=0.0, variance=2.0)
    assert abs(alpha - 1.97126) < 1e-5 and abs(scale - 1.06071) < 1e-5
    stats = theory.moments("selu", 0.0, math.sqrt(2.0), alpha=alpha, scale=scale)
    assert abs(float(stats.mean)) < 1e-14 and abs(float(stats.variance) - 2.0) < 1e-13


def test_self_normalizing_constants_for_a_nonzero_mean():
    alpha, scale = theory.self_normalizing_constants(mean=0.1, variance=1.0)
    stats = theory.moments("selu", 0.0, 1.0, alpha=alpha, scale=scale)
    assert abs(float(stats.mean) - 0.1) < 1e-12 and abs(float(stats.variance) - 1.0) < 1e-12


def test_selu_fixed_point_is_stable():
    point = theory.fixed_point("selu")
    assert abs(point.mean) < 1e-12 and abs(point.variance - 1) < 1e-12 and point.stable


def test_alpha_dropout_constants_selu():
    a, b, saturation = theory.alpha_dropout_constants(0.05, "selu")
    assert abs(a - 0.954844) < 1e-6 and abs(b - 0.083936) < 1e-6
    assert saturation == -elukit.SELU_SCALE * elukit.SELU_ALPHA
    # Monte Carlo: mean and variance kept on N(0, 1) inputs
    rng = np.random.default_rng(2)
    x = rng.standard_normal(4_000_000)
    dropped = np.where(rng.random(x.size) < 0.05, saturation, x) * a + b
    assert abs(dropped.mean()) < 3e-3 and abs(dropped.var() - 1) < 3e-3


def test_gains_and_their_consequences():
    assert abs(theory.gain("elu") - 1.2452) < 1e-4
    assert abs(theory.gradient_gain("elu") - 1.2234) < 1e-4
    assert abs(theory.gain("relu") - math.sqrt(2)) < 1e-14
    with pytest.warns(UserWarning, match="gradients grow: chi = 1.0716"):
        report = theory.analyze_gain("selu", weight_gain=1.0)
    assert abs(report.chi - 1.0716) < 1e-4
    for unstable in ("gelu", "silu"):
        report = theory.analyze_gain(unstable, warn=False)
        assert not report.stable and any("unstable" in note for note in report.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relu = theory.analyze_gain("relu")
    assert not relu.stable and "marginal" in relu.warnings[0] and abs(relu.chi - 1) < 1e-12


def test_propagation_matches_a_real_deep_network():
    """16 independent width-1024, depth-50 ELU networks: finite width makes each network's
    per-layer second moment a mean-reverting random walk (about 10% spread at this width), so
    the mean-field prediction is compared with the average over networks."""
    networks, width, depth, batch = 16, 1024, 50, 8
    weight_variance = theory.gain("elu") ** 2
    predicted = theory.propagate("elu", depth, weight_variance)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((networks, batch, width), dtype=np.float32)
    measured = []
    for _ in range(depth):
        weights = rng.standard_normal((networks, width, width), dtype=np.float32)
        h = (x @ weights).astype(np.float64) * math.sqrt(weight_variance / width)
        measured.append(np.mean(h * h))
        x = elukit.elu(h).astype(np.float32)
    ratio = np.array(measured) / predicted.preactivation_variance
    assert np.all(np.abs(ratio - 1) < 0.08), ratio
    assert abs(np.mean(ratio) - 1) < 0.03, ratio


def test_propagate_rejects_bad_depth_and_variance():
    with pytest.raises(ValueError, match="depth"):
        theory.propagate("elu", 0, 1.0)
    with pytest.raises(ValueError, match="weight_variance"):
        theory.propagate("elu", 3, -1.0)
