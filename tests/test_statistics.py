"""elukit.statistics: each test against SciPy or an exact enumeration, and simulated A/A comparisons
(false-positive rate, interval coverage, power) where the effect is absent and where it is present."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from elukit.statistics import (
    Family,
    Hypothesis,
    bootstrap_interval,
    compare_paired,
    format_p,
    mean_interval,
    minimum_detectable_effect,
    sign_flip_distribution,
    sign_flip_test,
)


def binomial_interval(successes_expected: float, trials: int, confidence: float = 0.999) -> tuple[float, float]:
    """The central `confidence` range of a Binomial(trials, p) count, as rates."""
    low, high = stats.binom.interval(confidence, trials, successes_expected)
    return low / trials, high / trials


def brute_force_sign_flip(d: np.ndarray, delta: float = 0.0) -> tuple[float, float]:
    """One-sided p-values by enumerating every sign pattern of d - delta (the definition)."""
    centred = d - delta
    observed = centred.sum()
    totals = np.array([np.dot(signs, centred) for signs in itertools.product((1.0, -1.0), repeat=len(d))])
    slack = 1e-9 * np.abs(centred).sum()
    return float(np.mean(totals >= observed - slack)), float(np.mean(totals <= observed + slack))


# -- the tests against SciPy and exact enumeration ---------------------------------------------------

def test_sign_flip_smallest_p_values_are_the_exact_enumerations():
    assert sign_flip_test([0.3, 0.1, 0.2, 0.5, 0.4]) == 0.0625  # 2 / 2^5
    assert sign_flip_test([0.3, 0.1]) == 0.5  # 2 / 2^2
    assert sign_flip_test(np.arange(1.0, 11.0), alternative="greater") == 1 / 1024
    assert sign_flip_test([1.0, -1.0, 2.0, -2.0]) == 1.0  # symmetric: every pattern is as extreme


@pytest.mark.parametrize("n", [3, 6, 9, 12])
def test_sign_flip_matches_brute_force_and_scipy_permutation_test(n):
    rng = np.random.default_rng(n)
    d = rng.normal(0.4, 1.0, n)
    greater, less = brute_force_sign_flip(d)
    assert sign_flip_test(d, alternative="greater") == pytest.approx(greater, abs=1e-12)
    assert sign_flip_test(d, alternative="less") == pytest.approx(less, abs=1e-12)
    reference = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="greater",
                                       n_resamples=np.inf).pvalue
    assert sign_flip_test(d, alternative="greater") == pytest.approx(reference, abs=1e-12)
    shifted = brute_force_sign_flip(d, 0.25)
    assert sign_flip_test(d, 0.25, alternative="greater") == pytest.approx(shifted[0], abs=1e-12)


def test_sign_flip_counts_ties_whatever_the_summation_order():
    # 0.1 + 0.2 - 0.3 is 5.6e-17 in float64: still a tie with the observed pattern
    assert sign_flip_test([0.1, 0.2, -0.3], alternative="greater") == brute_force_sign_flip(np.array([0.1, 0.2, -0.3]))[0]


def test_sign_flip_monte_carlo_beyond_20_never_below_one_over_resamples_plus_one():
    d = np.linspace(1.0, 2.0, 25)  # every difference positive: the exact p would be 2^-24
    p = sign_flip_test(d, alternative="greater", resamples=999, rng=np.random.default_rng(1))
    assert p >= 1 / 1000
    assert p == pytest.approx(1 / 1000, abs=1e-3)
    two_sided = compare_paired(d, test="sign-flip", resamples=999, rng=np.random.default_rng(1))
    assert two_sided.p_value >= 1 / 1000 and "Monte Carlo over 999 resamples" in two_sided.test_description


def test_t_test_is_scipys_paired_t_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 9), rng.normal(0.5, 1.0, 9)
    result = compare_paired(a, b, test="t")
    reference = stats.ttest_rel(a, b)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    interval = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-12)
    assert result.effect == pytest.approx(np.mean(a - b))


@pytest.mark.parametrize("test", ["t", "sign-flip"])
@pytest.mark.parametrize("size", [1, 3])
def test_the_interval_is_the_test_inverted(test, size):
    """p(delta) > 1 - level inside the printed interval, <= 1 - level just outside: the interval is
    exactly the set of differences the test cannot reject at the family-adjusted level."""
    rng = np.random.default_rng(7)
    d = rng.normal(0.5, 1.0, 10)
    result = compare_paired(d, test=test, family=Family("f", size))
    alpha = 1 - result.level
    assert result.level == pytest.approx(1 - 0.05 / size)
    for bound, outward in ((result.ci_low, -1), (result.ci_high, 1)):
        inside, outside = bound - outward * 1e-9, bound + outward * 1e-6
        p = (lambda delta: sign_flip_test(d, delta)) if test == "sign-flip" else (
            lambda delta: stats.ttest_1samp(d, delta).pvalue)
        assert p(inside) > alpha >= p(outside)


def test_sign_flip_interval_at_five_seeds_is_unbounded_and_says_why():
    result = compare_paired([0.5, 0.7, 0.6, 0.9, 0.8], test="sign-flip")
    assert (result.ci_low, result.ci_high) == (-math.inf, math.inf)
    assert result.verdict == "inconclusive" and "cannot reject at n=5" in result.reason
    assert result.minimum_detectable_effect == math.inf
    six = compare_paired([0.5, 0.7, 0.6, 0.9, 0.8, 0.65], test="sign-flip")
    assert (six.ci_low, six.ci_high) == (0.5, 0.9)  # the smallest and largest subset means
    assert six.verdict == "supported" or six.hypothesis.kind == "two-sided"


@pytest.mark.parametrize("test", ["t", "sign-flip"])
@pytest.mark.parametrize("kind,margin", [("greater", 0.0), ("less", 0.0), ("two-sided", 0.0), ("greater", 0.3),
                                         ("two-sided", 0.2), ("equivalence", 0.5), ("non-inferiority", 0.2)])
def test_verdict_is_read_off_the_printed_interval_and_agrees_with_the_adjusted_p(test, kind, margin):
    hypothesis = Hypothesis(kind, margin)
    rng = np.random.default_rng(abs(hash((test, kind, margin))) % 2**32)
    for trial in range(60):
        d = rng.normal(rng.uniform(-1.5, 1.5), rng.uniform(0.1, 1.0), int(rng.integers(6, 14)))
        result = compare_paired(d, test=test, hypothesis=hypothesis, family=Family("f", int(rng.integers(1, 4))))
        assert result.verdict == hypothesis.verdict(result.ci_low, result.ci_high)
        assert (result.verdict == "refuted") == (result.p_refute <= 0.05), (trial, result)
        if result.verdict != "refuted":
            assert (result.verdict == "supported") == (result.p_support <= 0.05), (trial, result)
        if kind == "greater" and margin == 0:
            assert (result.verdict == "supported") == (result.ci_low > 0)
        if kind == "two-sided" and margin == 0:
            assert (result.p_adjusted <= 0.05) == result.significant


# -- rows that are never decisive -----------------------------------------------------------------

@pytest.mark.parametrize("values,status", [
    ([0.3], "n too small"), ([0.3, 0.5], "n too small"), ([-1.0, -1.0], "n too small"),
    ([-1.585, -1.585, -1.585], "no variance"), ([2.0] * 8, "no variance"),
    ([0.3, np.nan, 0.5], "n too small"),
])
def test_small_or_tied_rows_are_inconclusive_with_the_reason(values, status):
    for test in ("t", "sign-flip"):
        result = compare_paired(values, test=test, hypothesis=Hypothesis("greater"))
        assert result.verdict == "inconclusive" and result.status == status and result.reason == status
        assert result.verdict_text == f"inconclusive ({status})"
        assert math.isnan(result.p_value) and math.isnan(result.ci_low)


def test_non_finite_pairs_are_excluded_and_counted():
    result = compare_paired([1.0, 2.0, np.nan, 3.0, np.inf], [0.0, 0.0, 0.0, 0.0, 0.0])
    assert result.n == 3 and result.excluded == 2 and result.effect == 2.0


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(ValueError, match="test must be one of t, sign-flip"):
        compare_paired([1.0, 2.0, 3.0], test="bootstrap")
    with pytest.raises(ValueError, match="equal lengths"):
        compare_paired([1.0, 2.0, 3.0], [1.0])
    with pytest.raises(ValueError, match="needs a margin > 0"):
        Hypothesis("equivalence")
    with pytest.raises(ValueError, match="family size"):
        Family("f", 0)
    with pytest.raises(ValueError, match="confidence"):
        compare_paired([1.0, 2.0, 3.0], confidence=1.0)


def test_a_margin_is_the_smallest_effect_the_claim_is_about():
    inside = np.random.default_rng(8).normal(0.1, 0.01, 10)  # real, but inside (0, 0.3)
    assert compare_paired(inside, hypothesis=Hypothesis("greater", 0.3)).verdict == "refuted"
    assert compare_paired(inside, hypothesis=Hypothesis("two-sided", 0.3)).verdict == "refuted"
    assert compare_paired(inside, hypothesis=Hypothesis("greater")).verdict == "supported"


def test_exact_rows_decide_by_every_computed_value():
    assert compare_paired([0.1, 0.5], exact=True, hypothesis=Hypothesis("greater")).verdict == "supported"
    assert compare_paired([0.1, -0.5], exact=True, hypothesis=Hypothesis("greater")).verdict == "inconclusive"
    assert compare_paired([-0.1], exact=True, hypothesis=Hypothesis("greater")).verdict == "refuted"
    assert compare_paired([0.1, -0.2], exact=True, hypothesis=Hypothesis("equivalence", 0.25)).verdict == "supported"


def test_p_values_print_without_ever_showing_zero():
    assert format_p(0.0625) == "p = 0.0625" and format_p(1 / 30001) == "p = 3.33e-05"
    assert format_p(math.nan) == "p n/a"


# -- simulation: A/A false-positive rate, coverage, power -------------------------------------------

def _attainable_size(test: str, n: int, alpha: float = 0.05) -> float:
    """The exact probability of a two-sided rejection under H0 (continuous data): alpha for t; for the
    sign-flip test 2 floor(alpha 2^n / 2) / 2^n, which is 0 at n = 3 and 5."""
    return alpha if test == "t" else 2 * math.floor(alpha * 2 ** n / 2) / 2 ** n


@pytest.mark.parametrize("test", ["t", "sign-flip"])
@pytest.mark.parametrize("n", [3, 5, 10])
def test_a_over_a_false_positive_rate_is_nominal(test, n):
    rng = np.random.default_rng(1000 + n)
    trials = 2000
    treatment, baseline = rng.normal(0.6, 0.02, (trials, n)), rng.normal(0.6, 0.02, (trials, n))
    rejections = sum(compare_paired(t, b, test=test).significant for t, b in zip(treatment, baseline))
    size = _attainable_size(test, n)
    low, high = binomial_interval(size, trials)
    assert low <= rejections / trials <= high, (rejections, size)
    assert rejections / trials <= binomial_interval(0.05, trials)[1]  # never above the nominal 5%


@pytest.mark.parametrize("test,n", [("t", 3), ("t", 5), ("t", 10), ("sign-flip", 10), ("sign-flip", 12)])
def test_interval_coverage_is_nominal(test, n):
    rng = np.random.default_rng(2000 + n)
    trials, true_effect = 2000, 0.7
    covered = 0
    for d in rng.standard_t(5, (trials, n)) * 0.3 + true_effect if test == "sign-flip" else rng.normal(true_effect, 0.3, (trials, n)):
        result = compare_paired(d, test=test)
        covered += result.ci_low <= true_effect <= result.ci_high
    assert 0.93 <= covered / trials <= 0.97


def test_power_at_the_minimum_detectable_effect_is_eighty_percent():
    rng = np.random.default_rng(3)
    n, sigma, trials = 8, 1.0, 2000
    effect = minimum_detectable_effect(sigma, n, 0.95)
    hits = sum(compare_paired(d).significant for d in rng.normal(effect, sigma, (trials, n)))
    # the formula uses the observed s as if known: a slight over-statement of power (1-3 points at n = 8)
    assert 0.72 <= hits / trials <= 0.84


def test_inconclusive_rows_say_whether_the_claimed_size_could_have_been_seen():
    rng = np.random.default_rng(4)
    noisy = compare_paired(rng.normal(0.0, 1.0, 6), hypothesis=Hypothesis("greater"), claimed_effect=0.1)
    assert noisy.verdict == "inconclusive" and "could not have been seen" in noisy.reason
    precise = compare_paired(rng.normal(0.0, 0.01, 12), hypothesis=Hypothesis("greater"), claimed_effect=0.1)
    assert precise.verdict in ("inconclusive", "refuted")
    if precise.verdict == "inconclusive":
        assert "could have been seen" in precise.reason


@pytest.mark.parametrize("kind,margin,effect,expected", [
    ("greater", 0.0, 1.0, "supported"), ("greater", 0.0, 0.0, "inconclusive"), ("greater", 0.0, -1.0, "refuted"),
    ("less", 0.0, -1.0, "supported"), ("equivalence", 0.5, 0.0, "supported"), ("equivalence", 0.5, 2.0, "refuted"),
    ("non-inferiority", 0.5, 0.0, "supported"), ("non-inferiority", 0.5, -2.0, "refuted"),
    ("two-sided", 0.3, 0.0, "refuted"), ("two-sided", 0.3, 1.0, "supported"),
])
@pytest.mark.parametrize("test", ["t", "sign-flip"])
def test_each_hypothesis_on_simulated_data_where_the_effect_exists_and_where_it_does_not(kind, margin, effect, expected, test):
    d = np.random.default_rng(5).normal(effect, 0.1, 12)
    assert compare_paired(d, test=test, hypothesis=Hypothesis(kind, margin)).verdict == expected


def test_mean_interval_is_clipped_to_the_quantitys_range_and_undefined_for_one_value():
    assert math.isnan(mean_interval([3.0]).low)
    clipped = mean_interval([0.0, 29.0], bounds=(0.0, 30.0))
    assert clipped.low == 0.0 and clipped.high == 30.0


def test_bca_interval_covers_a_skewed_mean():
    rng = np.random.default_rng(6)
    true_mean = math.exp(0.5)  # lognormal(0, 1)
    trials = 150
    covered = 0
    for sample in rng.lognormal(0.0, 1.0, (trials, 40)):
        low, high = bootstrap_interval(sample, resamples=2000, rng=rng)
        covered += low <= true_mean <= high
    assert 0.85 <= covered / trials <= 0.99
    assert all(math.isnan(v) for v in bootstrap_interval([1.0, 1.0, 1.0]))


def test_subset_means_are_sorted_and_complete():
    distribution = sign_flip_distribution([1.0, 2.0, 4.0])
    assert list(distribution.means) == sorted([1, 2, 4, 1.5, 2.5, 3, 7 / 3])
    assert distribution.patterns == 8 and distribution.exact


# -- random-effects pooling (DerSimonian-Laird) -----------------------------------------------------------
def _row(mean, variance_of_mean):
    """Three values with the given mean and s^2/n = variance_of_mean (s^2 = a^2 for [m - a, m, m + a])."""
    a = math.sqrt(3 * variance_of_mean)
    return [mean - a, mean, mean + a]


def test_pooling_matches_the_hand_computation():
    """Means 1, 2, 4 with v_i = 1: y_FE = 7/3, Q = 42/9, tau^2 = (Q - 2) / (3 - 3/3) = 4/3, weights 3/7,
    estimate 7/3, se = sqrt(7)/3, I^2 = 4/7, p(Q) = exp(-Q/2) (chi^2 with 2 df)."""
    from elukit.statistics import pool_random_effects

    pooled = pool_random_effects([_row(1, 1), _row(2, 1), _row(4, 1)], Hypothesis("greater"))
    assert pooled.estimate == pytest.approx(7 / 3, rel=1e-12)
    assert pooled.q == pytest.approx(42 / 9, rel=1e-12) and pooled.tau2 == pytest.approx(4 / 3, rel=1e-12)
    assert pooled.standard_error == pytest.approx(math.sqrt(7) / 3, rel=1e-12)
    assert pooled.i2 == pytest.approx(4 / 7, rel=1e-12)
    assert pooled.p_heterogeneity == pytest.approx(math.exp(-21 / 9), rel=1e-10)
    half = stats.norm.ppf(0.975) * math.sqrt(7) / 3
    assert (pooled.ci_low, pooled.ci_high) == pytest.approx((7 / 3 - half, 7 / 3 + half), rel=1e-12)
    assert pooled.verdict == "supported" and pooled.k == 3 and pooled.left_out == 0


def test_pooling_without_heterogeneity_is_the_inverse_variance_mean_and_rows_that_cannot_be_weighted_are_left_out():
    from elukit.statistics import pool_random_effects

    rows = [_row(1.0, 0.5), _row(1.1, 0.25), [3.0, 3.0, 3.0], [5.0]]
    pooled = pool_random_effects(rows, Hypothesis("less"))
    weights = np.array([2.0, 4.0])
    assert pooled.tau2 == 0.0 and pooled.i2 == 0.0  # Q = 0.0067 < k - 1
    assert pooled.estimate == pytest.approx((2 * 1.0 + 4 * 1.1) / 6, rel=1e-12)
    assert pooled.standard_error == pytest.approx(1 / math.sqrt(weights.sum()), rel=1e-12)
    assert pooled.left_out == 2 and pooled.verdict == "refuted"
    with pytest.raises(ValueError, match="pooling needs 2 or more rows"):
        pool_random_effects([_row(1.0, 1.0), [2.0]])


def test_pooled_rows_that_disagree_show_heterogeneity():
    from elukit.statistics import pool_random_effects

    pooled = pool_random_effects([_row(5.0, 0.01), _row(-5.0, 0.01)], Hypothesis("greater"))
    assert pooled.i2 > 0.99 and pooled.verdict == "inconclusive" and pooled.ci_low < 0 < pooled.ci_high
