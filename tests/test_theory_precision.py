"""Full relative precision of the closed-form Gaussian moments (issue 15, item 6).

The references are the textbook closed forms evaluated by mpmath at 130 digits, where
E f^2 - (E f)^2 keeps > 100 digits even when Var f / (E f)^2 = 1e-90 (CELU(alpha=0.1) at
N(-10, 0.01^2)). tests/test_theory.py checks the same closed forms against mpmath quadrature.
"""

import itertools
import math

import numpy as np
import pytest

from elukit import theory

mpmath = pytest.importorskip("mpmath")

SELU_SCALE = "1.0507009873554804934193349852946"
SELU_ALPHA = "1.6732632423543772848170429916717"


def closed_form_reference(form, mean, std, dps=130):
    r"""(E f, E f^2, Var f, E f', E f'^2) for f = lam z (z>0), beta expm1(c z) + s z (z<=0), mpmath."""
    with mpmath.workdps(dps):
        lam, beta, c, slope = (mpmath.mpf(v) for v in form)
        mu, s = mpmath.mpf(mean), mpmath.mpf(std)
        a = mu / s
        above, below, density = mpmath.ncdf(a), mpmath.ncdf(-a), mpmath.npdf(a)
        z1p, z2p = mu * above + s * density, (mu**2 + s**2) * above + mu * s * density
        z1n, z2n = mu * below - s * density, (mu**2 + s**2) * below - mu * s * density

        def exp_tail(k):  # E[e^{kz} 1{z<=0}]
            return mpmath.exp(k * mu + k**2 * s**2 / 2) * mpmath.ncdf(-a - k * s)

        first = lam * z1p + beta * (exp_tail(c) - below) + slope * z1n
        second = lam**2 * z2p + beta**2 * (exp_tail(2 * c) - 2 * exp_tail(c) + below) + slope**2 * z2n
        d1 = lam * above + beta * c * exp_tail(c) + slope * below
        d2 = lam**2 * above + beta**2 * c**2 * exp_tail(2 * c) + slope**2 * below
        return [float(v) for v in (first, second, second - first**2, d1, d2)]


FORMS = [("elu", {"alpha": a}, (1, a, 1, 0)) for a in (0.1, 1.0, 5.0)] + [
    ("celu", {"alpha": a}, (1, a, 1 / a, 0)) for a in (0.1, 5.0)] + [
    ("selu", {}, (SELU_SCALE, f"{SELU_SCALE}*{SELU_ALPHA}", 1, 0)),
    ("relu", {}, (1, 0, 1, 0)), ("leaky_relu", {"slope": 0.1}, (1, 0, 1, 0.1))]
MEANS = (-10.0, -1.0, -0.3, -0.05, 0.0, 0.05, 0.5, 2.0, 10.0)
STDS = (0.01, 0.1, 1.0, 3.0, 10.0)
LABELS = ("mean", "second_moment", "variance", "derivative_mean", "derivative_second_moment")


@pytest.mark.parametrize("name,params,form", FORMS, ids=[f"{f[0]}{f[1]}" for f in FORMS])
def test_every_moment_to_1e_12_relative(name, params, form):
    with mpmath.workdps(130):
        form = tuple(mpmath.mpf(SELU_SCALE) * mpmath.mpf(SELU_ALPHA) if isinstance(v, str) and "*" in v
                     else mpmath.mpf(v) for v in form)
    worst = []
    for mean, std in itertools.product(MEANS, STDS):
        got = theory.moments(name, mean, std, **params)
        wanted = closed_form_reference(form, mean, std)
        for label, exact in zip(LABELS, wanted):
            value = float(getattr(got, label))
            error = abs(value - exact)
            # the mean alone may be a cancellation of the two branches (SELU's mean at N(0,1) is
            # 4e-17 of sqrt(E f^2)); there only absolute accuracy relative to sqrt(E f^2) is possible
            allowed = 1e-12 * abs(exact) + (2e-16 * math.sqrt(wanted[1]) if label == "mean" else 0.0)
            if not error <= allowed:
                worst.append((mean, std, label, value, exact, error / abs(exact) if exact else math.inf))
    assert not worst, "\n".join(f"N({m},{s}^2) {lab}: got {v!r} wanted {w!r} rel {r:.2e}" for m, s, lab, v, w, r in worst)


def test_elu_variance_at_mean_minus_ten_std_hundredth_is_relatively_exact():
    """The bug of issue 15: E f^2 - (E f)^2 gave 2.06168e-13 (1.1e-4 relative) here."""
    variance = float(theory.moments("elu", -10.0, 0.01).variance)
    with mpmath.workdps(60):
        exact = mpmath.exp(-20 + mpmath.mpf("0.0001")) * mpmath.expm1(mpmath.mpf("0.0001"))  # Var e^z
        exact *= mpmath.ncdf(1000)  # all of the mass below 0 (to 1e-200000)
    assert abs(variance - float(exact)) <= 1e-13 * float(exact)
    assert f"{variance:.5e}" == "2.06146e-13"


def test_variance_vectorised_equals_scalar():
    rng = np.random.default_rng(4)
    means, stds, alphas = rng.uniform(-10, 10, 1000), 10 ** rng.uniform(-2, 1, 1000), rng.uniform(0.1, 5, 1000)
    batch = theory.moments("celu", means, stds, alpha=alphas).variance
    for i in (0, 17, 999):
        assert float(theory.moments("celu", means[i], stds[i], alpha=alphas[i]).variance) == batch[i]
