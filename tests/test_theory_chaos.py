"""Correlation maps, fixed points, depth scales and the edge of chaos (issue 15), checked against
mpmath, Monte Carlo and real wide random networks."""

import math

import numpy as np
import pytest

import elukit
from elukit import theory

mpmath = pytest.importorskip("mpmath")

SELU = (elukit.SELU_SCALE, elukit.SELU_SCALE * elukit.SELU_ALPHA)


def _mp_mean(form, mean, std):
    """E f for z ~ N(mean, std^2), f = lam z (z > 0), beta expm1(k z) + s z (z <= 0): closed form in mpmath."""
    lam, beta, k, slope = form
    a = mean / std
    above, below, density = mpmath.ncdf(a), mpmath.ncdf(-a), mpmath.npdf(a)
    exp_tail = mpmath.exp(k * mean + k**2 * std**2 / 2) * mpmath.ncdf(-a - k * std)
    return lam * (mean * above + std * density) + beta * (exp_tail - below) + slope * (mean * below - std * density)


def _mp_value(form, z):
    lam, beta, k, slope = form
    return lam * z if z > 0 else beta * mpmath.expm1(k * z) + slope * z


def mpmath_covariance(form, c, q, dps=20):
    """E[f(u) f(v)] = E_x[f(sqrt(q) x) E[f(v) | x]] at `dps` digits: the inner expectation in closed form,
    the outer by mpmath.quad split at 0 and at the widths where either factor bends."""
    with mpmath.workdps(dps):
        form = tuple(mpmath.mpf(v) for v in form)
        c, s = mpmath.mpf(c), mpmath.sqrt(mpmath.mpf(q))
        r = mpmath.sqrt((1 - c) * (1 + c))
        width = min(r / abs(c) if c else 1, 1, 1 / (form[2] * s))
        breaks = [width * 2**j for j in range(80) if width * 2**j < 8] + [8]
        points = [-mpmath.inf, *(-b for b in reversed(breaks)), 0, *breaks, mpmath.inf]
        return float(mpmath.quad(lambda x: _mp_value(form, s * x) * _mp_mean(form, s * c * x, s * r) * mpmath.npdf(x),
                                 points))


COVARIANCE_CASES = [
    # (name, params, form, c, q): every c of the issue, extreme q and alpha
    ("elu", {}, (1, 1, 1, 0), -0.99, 1.0),
    ("elu", {}, (1, 1, 1, 0), 0.0, 1.0),
    ("elu", {}, (1, 1, 1, 0), 0.5, 1.0),
    ("elu", {}, (1, 1, 1, 0), 0.999, 1.0),
    ("elu", {}, (1, 1, 1, 0), 1 - 1e-9, 1.0),
    ("elu", {"alpha": 5.0}, (1, 5, 1, 0), -0.99, 100.0),
    ("elu", {"alpha": 0.1}, (1, 0.1, 1, 0), 0.999, 1e-4),
    ("celu", {"alpha": 0.1}, (1, 0.1, 10, 0), 0.5, 100.0),
    ("celu", {"alpha": 5.0}, (1, 5, 0.2, 0), 1 - 1e-9, 1e-4),
    ("selu", {}, (*SELU, 1, 0), 1 - 1e-9, 100.0),
    ("selu", {}, (*SELU, 1, 0), 0.5, 1e-4),
    ("relu", {}, (1, 0, 1, 0), -0.99, 1e-4),
    ("relu", {}, (1, 0, 1, 0), 1 - 1e-9, 100.0),
    ("leaky_relu", {"slope": 0.1}, (1, 0, 1, 0.1), 0.0, 1.0),
    ("leaky_relu", {"slope": 0.1}, (1, 0, 1, 0.1), 0.999, 1.0),
]


@pytest.mark.parametrize("name,params,form,c,q", COVARIANCE_CASES)
def test_covariance_map_matches_mpmath(name, params, form, c, q):
    got = float(theory.covariance_map(name, c, q, **params))
    wanted = mpmath_covariance(form, c, q)
    assert abs(got - wanted) <= 1e-10 * abs(wanted), (got, wanted)


def _mp_derivative_mean(form, mean, std):
    lam, beta, k, slope = form
    a = mean / std
    exp_tail = mpmath.exp(k * mean + k**2 * std**2 / 2) * mpmath.ncdf(-a - k * std)
    return lam * mpmath.ncdf(a) + beta * k * exp_tail + slope * mpmath.ncdf(-a)


def _mp_derivative(form, z):
    lam, beta, k, slope = form
    return lam if z > 0 else beta * k * mpmath.exp(k * z) + slope


@pytest.mark.parametrize("name,params,form,c,q", [
    ("elu", {}, (1, 1, 1, 0), 0.5, 1.0), ("elu", {"alpha": 5.0}, (1, 5, 1, 0), 1 - 1e-9, 100.0),
    ("celu", {"alpha": 0.1}, (1, 0.1, 10, 0), -0.99, 1e-4), ("leaky_relu", {"slope": 0.1}, (1, 0, 1, 0.1), 0.999, 1.0)])
def test_derivative_covariance_map_matches_mpmath(name, params, form, c, q):
    """E[f'(u) f'(v)]: chi_c of the depth scale xi_c."""
    got = float(theory.covariance_map(name, c, q, quantity="derivative", **params))
    with mpmath.workdps(20):
        mp_form = tuple(mpmath.mpf(v) for v in form)
        mc, s = mpmath.mpf(c), mpmath.sqrt(mpmath.mpf(q))
        r = mpmath.sqrt((1 - mc) * (1 + mc))
        width = min(r / abs(mc), 1, 1 / (mp_form[2] * s))
        breaks = [width * 2**j for j in range(80) if width * 2**j < 8] + [8]
        points = [-mpmath.inf, *(-b for b in reversed(breaks)), 0, *breaks, mpmath.inf]
        wanted = float(mpmath.quad(lambda x: _mp_derivative(mp_form, s * x) * _mp_derivative_mean(mp_form, s * mc * x, s * r)
                                   * mpmath.npdf(x), points))
    assert abs(got - wanted) <= 1e-10 * abs(wanted), (got, wanted)


def test_relu_covariance_near_anticorrelation_keeps_relative_precision():
    """At c = -1 + 1e-9, sin x - x cos x cancels completely in floating point (x = 4.5e-5)."""
    c = -1 + 1e-9
    got = float(theory.covariance_map("relu", c))
    with mpmath.workdps(40):
        x = mpmath.acos(-mpmath.mpf(c))
        wanted = float((mpmath.sin(x) - x * mpmath.cos(x)) / (2 * mpmath.pi))  # Cho and Saul's arc-cosine kernel
    assert abs(got - wanted) <= 1e-12 * wanted


@pytest.mark.parametrize("name", ["elu", "selu", "celu", "relu", "leaky_relu", "tanh", "gelu"])
def test_covariance_at_c_one_is_the_second_moment(name):
    for q in (1e-3, 1.0, 30.0):
        stats = theory.moments(name, 0.0, math.sqrt(q))
        value = float(theory.covariance_map(name, 1.0, q))
        derivative = float(theory.covariance_map(name, 1.0, q, quantity="derivative"))
        assert abs(value - float(stats.second_moment)) <= 1e-12 * float(stats.second_moment)
        assert abs(derivative - float(stats.derivative_second_moment)) <= 1e-12 * float(stats.derivative_second_moment)


@pytest.mark.parametrize("name", ["elu", "selu", "relu", "tanh", "gelu", "silu"])
def test_covariance_maps_agree_with_monte_carlo(name):
    rng = np.random.default_rng(5)
    n, q, c = 1_000_000, 1.7, 0.6
    x, y = rng.standard_normal((2, n))
    u, v = math.sqrt(q) * x, math.sqrt(q) * (c * x + math.sqrt(1 - c * c) * y)
    spec = elukit.get(name)
    for quantity, sample in (("value", spec(u) * spec(v)), ("derivative", spec.derivative(u) * spec.derivative(v))):
        got = float(theory.covariance_map(name, c, q, quantity=quantity))
        assert abs(got - sample.mean()) < 5 * sample.std() / math.sqrt(n), (quantity, got, sample.mean())


def test_callable_matches_registered_activation():
    got = theory.covariance_map(np.tanh, [0.3, 0.9], 2.0)
    wanted = theory.covariance_map("tanh", [0.3, 0.9], 2.0)
    np.testing.assert_allclose(got, wanted, rtol=1e-13)


def test_correlation_map_is_vectorised_and_fixes_one():
    c = np.linspace(-1, 1, 41).reshape(41, 1)
    out = theory.correlation_map("elu", c, 1.3, weight_variance=1.6, bias_variance=0.1)
    assert out.shape == (41, 1) and abs(out[-1, 0] - 1) < 1e-13
    assert np.all(np.diff(out[:, 0]) > 0)  # increasing in c (its slope E[f'f'] > 0)
    assert float(out[20, 0]) == float(theory.correlation_map("elu", 0.0, 1.3, weight_variance=1.6, bias_variance=0.1))


@pytest.mark.parametrize("name", ["elu", "tanh", "selu"])
def test_chi_1_is_the_slope_of_the_correlation_map_at_one(name):
    scales = theory.depth_scales(name, 1.7, 0.1)
    h = 1e-5
    slope = (1 - float(theory.correlation_map(name, 1 - h, scales.q_star, weight_variance=1.7, bias_variance=0.1))) / h
    assert abs(slope - scales.chi_1) < 1e-3 * scales.chi_1


@pytest.mark.parametrize("name,std", [("tanh", 10.0), ("tanh", 100.0), ("gelu", 30.0), ("silu", 3.0)])
def test_quadrature_moments_stay_exact_at_large_std(name, std):
    """Gauss-Hermite with 800 nodes was 4e-2 off for E[tanh'(z)^2] at std 10."""
    spec = elukit.get(name)
    got = theory.moments(name, 0.5, std)
    with mpmath.workdps(20):
        breaks = sorted({(k - 0.5) / std for k in range(-30, 31)} | {-8, 0, 8})
        points = [-mpmath.inf, *breaks, mpmath.inf]

        def expect(g):
            return float(mpmath.quad(lambda t: g(0.5 + std * t) * mpmath.npdf(t), points))

        value = lambda z: spec.reference.value(mpmath, z)  # noqa: E731
        slope = lambda z: spec.reference.derivative(mpmath, z)  # noqa: E731
        wanted = (expect(lambda z: value(z) ** 2), expect(lambda z: slope(z) ** 2))
    assert abs(float(got.second_moment) - wanted[0]) <= 1e-12 * wanted[0]
    assert abs(float(got.derivative_second_moment) - wanted[1]) <= 1e-12 * wanted[1]


def test_relu_edge_of_chaos_is_one_point():
    eoc = theory.edge_of_chaos("relu", [0.0, 0.05])
    assert eoc.weight_variance[0] == 2.0 and math.isnan(eoc.weight_variance[1])
    assert "single point" in eoc.reason and "sigma_w^2 = 2" in eoc.reason
    leaky = theory.edge_of_chaos("leaky_relu", 0.0, slope=0.1)
    assert abs(float(leaky.weight_variance) - 2 / 1.01) < 1e-12


def test_relu_on_its_edge_of_chaos_is_critical_at_every_q():
    scales = theory.depth_scales("relu", 2.0, 0.0)
    assert math.isnan(scales.q_star) and scales.phase == "critical" and scales.xi_c == scales.xi_q == math.inf


def test_callables_are_refused_where_f_prime_is_needed():
    with pytest.raises(TypeError, match="edge_of_chaos needs a registry name"):
        theory.edge_of_chaos(np.tanh, 0.1)
    with pytest.raises(TypeError, match="depth_scales needs a registry name"):
        theory.depth_scales(np.tanh, 1.5, 0.1)


def test_tanh_edge_of_chaos_starts_at_one():
    """Poole et al. 2016: at sigma_b^2 = 0 the tanh EOC is sigma_w^2 = 1/tanh'(0)^2 = 1 with q* = 0."""
    eoc = theory.edge_of_chaos("tanh", 0.0)
    assert abs(float(eoc.weight_variance) - 1) < 1e-12 and float(eoc.q_star) == 0.0 and bool(eoc.stable)


@pytest.mark.parametrize("name", ["elu", "selu", "celu", "tanh", "gelu", "silu"])
def test_edge_of_chaos_is_critical(name):
    biases = np.array([0.01, 0.05, 0.5])
    eoc = theory.edge_of_chaos(name, biases)
    assert eoc.reason == "" and np.all(np.isfinite(eoc.weight_variance))
    for bias, weight, q in zip(biases, eoc.weight_variance, eoc.q_star):
        stats = theory.moments(name, 0.0, math.sqrt(q))
        assert abs(weight * float(stats.derivative_second_moment) - 1) < 1e-12  # chi_1 = 1
        assert abs(weight * float(stats.second_moment) + bias - q) < 1e-12 * q  # q* = V(q*)
    ordered = theory.depth_scales(name, 0.9 * eoc.weight_variance[1], 0.05)
    assert ordered.phase == "ordered" and ordered.c_star == 1.0 and math.isfinite(ordered.xi_c)


def test_chaotic_phase_has_a_correlation_fixed_point():
    scales = theory.depth_scales("tanh", 2.5, 0.05)
    assert scales.phase == "chaotic" and 0 < scales.c_star < 1 and scales.chi_c < 1 < scales.chi_1
    again = float(theory.correlation_map("tanh", scales.c_star, scales.q_star, weight_variance=2.5, bias_variance=0.05))
    assert abs(again - scales.c_star) < 1e-12
    assert abs(scales.xi_c + 1 / math.log(scales.chi_c)) < 1e-12


def test_depth_scale_diverges_towards_the_edge_of_chaos():
    weight = float(theory.edge_of_chaos("elu", 0.05).weight_variance)
    scales = [theory.depth_scales("elu", weight * (1 - d), 0.05).xi_c for d in (0.1, 0.01, 0.001)]
    assert scales[0] < scales[1] < scales[2] and scales[2] > 500


def _network_correlations(name, weight_variance, bias_variance, q_star, c0, depth, width, networks, rng):
    """Correlation of two inputs' pre-activations per (network, layer) in real random networks (float64)."""
    spec = elukit.get(name)
    measured = np.zeros((networks, depth))
    for network in range(networks):
        # two inputs whose first pre-activations have variance q* and correlation c0
        base = rng.standard_normal((2, width))
        h = np.stack([base[0], c0 * base[0] + math.sqrt(1 - c0 * c0) * base[1]]) * math.sqrt(q_star)
        for layer in range(depth):
            measured[network, layer] = np.sum(h[0] * h[1]) / math.sqrt(np.sum(h[0] ** 2) * np.sum(h[1] ** 2))
            weights = rng.standard_normal((width, width)) * math.sqrt(weight_variance / width)
            h = spec(h) @ weights.T + rng.standard_normal(width) * math.sqrt(bias_variance)
    return measured


@pytest.mark.parametrize("name,bias_variance,offset", [("elu", 0.05, 1.0), ("tanh", 0.05, 1.6)])
def test_correlations_in_wide_random_networks_follow_the_map(name, bias_variance, offset):
    """Width 1000, 6 networks, 10 layers, on the EOC (offset 1) and in tanh's chaotic phase
    (sigma_w^2 1.6x the EOC). Each layer's measured correlation is compared with the map applied
    to the previous layer's (one step: on the EOC finite-width errors are not damped and would
    accumulate like a random walk over the layers); in the chaotic phase they are damped and the
    iterated map holds to the last layer."""
    eoc = theory.edge_of_chaos(name, bias_variance)
    weight = float(eoc.weight_variance) * offset
    q = theory.variance_fixed_point(name, weight, bias_variance)
    rng = np.random.default_rng(6)
    measured = _network_correlations(name, weight, bias_variance, q, 0.3, 10, 1000, 6, rng)
    predicted = theory.correlation_map(name, measured[:, :-1], q, weight_variance=weight, bias_variance=bias_variance)
    differences = measured[:, 1:] - predicted
    # finite width: each step is off by O(1/sqrt(width)) at random; a wrong map is off systematically
    pooled_error = abs(differences.mean()) / (differences.std(ddof=1) / math.sqrt(differences.size))
    assert pooled_error < 4, (differences.mean(), pooled_error)
    assert np.all(np.abs(differences.mean(axis=0)) < 0.05), differences.mean(axis=0)
    if offset > 1:  # chi_c < 1: errors are damped, so the iterated map holds to the last layer
        iterated = 0.3
        for _ in range(measured.shape[1] - 1):
            iterated = float(theory.correlation_map(name, iterated, q, weight_variance=weight,
                                                    bias_variance=bias_variance))
        last = measured[:, -1]
        assert abs(last.mean() - iterated) < 4 * last.std(ddof=1) / math.sqrt(last.size), (last, iterated)


@pytest.mark.parametrize("call,message", [
    (lambda: theory.covariance_map("elu", 1.5), "c must be a correlation"),
    (lambda: theory.covariance_map("elu", 0.5, -1.0), "q1"),
    (lambda: theory.correlation_map("elu", 0.5, weight_variance=0.0), "weight_variance"),
    (lambda: theory.correlation_map("elu", 0.5, weight_variance=1.0, bias_variance=-1.0), "bias_variance"),
    (lambda: theory.edge_of_chaos("elu", -0.1), "bias_variance"),
    (lambda: theory.covariance_map("elu", 0.5, quantity="second"), "quantity"),
    (lambda: theory.depth_scales("elu", 3.0, 0.0), "no finite variance fixed point"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("name,params,q", [("elu", {}, 1.0), ("celu", {"alpha": 0.1}, 100.0), ("elu", {"alpha": 5.0}, 100.0),
                                           ("selu", {}, 1e-4)])
def test_large_batches_use_an_interpolant_as_exact_as_the_reduction(name, params, q):
    """From 2048 points sharing q the map is a Chebyshev series in arccos(c); checked against the
    direct reduction (itself checked against mpmath above) at points between its nodes."""
    rng = np.random.default_rng(8)
    c = np.concatenate([[-1.0, 0.0, 1.0, 1 - 1e-9, -0.99], rng.uniform(-1, 1, 4091)])
    for quantity in ("value", "derivative"):
        fast = theory.covariance_map(name, c, q, quantity=quantity, **params)
        direct = theory.covariance_map(name, c[:40], q, quantity=quantity, **params)
        assert np.max(np.abs(fast[:40] - direct)) <= 1e-13 * np.max(np.abs(direct)), quantity
