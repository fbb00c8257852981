r"""The one statistics module: every p-value, interval and verdict elukit prints comes from here.

A *paired comparison* takes two arrays paired by seed (treatment and baseline, or their
differences d_i) and returns a `Comparison`: the mean difference, an interval at the level its
family's multiplicity allows, the test that produced it, its p-values, the minimum effect it could
have detected, and a verdict read off the printed interval.

Choice of test (`test=`), fixed per quantity before any data are seen, never from the data:

* ``"t"``: Student's paired t test (`scipy.stats.ttest_1samp` on the differences). Exact when the
  differences are normal; used for continuous quantities that average many samples within a seed
  (accuracy, loss, mean activation).
* ``"sign-flip"``: the exact paired permutation test of the mean: under "no effect" each
  difference is as likely to have either sign. Enumerated over all 2^n sign patterns for
  n <= 20; beyond, `resamples` random patterns plus the observed one, so a p-value is never below
  1/(resamples + 1). Valid without normality; used for discrete or bounded quantities (epoch
  counts, grid indices) and wherever normality is doubtful. Its interval is the test inverted: the
  k-th smallest and largest of the 2^n - 1 subset means (Hartigan 1969). At n = 5 no sign pattern
  is rarer than 1/32, so no two-sided p is below 0.0625 and the 95% interval is unbounded: the
  test says honestly that five seeds cannot show a difference at that level.

Rows that are not tested: n <= 2 ("inconclusive (n too small)") and differences that are all equal
("inconclusive (no variance)"): neither can ever be decisive.

Multiplicity: each comparison belongs to a named `Family` of m comparisons; its interval is printed
at level 1 - (1 - confidence)/m (Bonferroni) and its adjusted p is min(1, m p). Because the verdict
is read from that interval, "supported" holds exactly when the printed interval excludes zero in the
predicted direction (for a difference; within the margins for equivalence), and equivalently when the
adjusted p is <= 1 - confidence. Bonferroni, not Holm, because only a single-step adjustment has an
interval that agrees with its test row by row.

Hypotheses (`Hypothesis`), margins in the quantity's natural units, m >= 0:

===================  ==============================  =====================================
kind                 supported when the interval      refuted when the interval
===================  ==============================  =====================================
greater              lies above 0                     lies below 0, or below m (m > 0)
less                 lies below 0                     lies above 0, or above -m (m > 0)
two-sided            excludes 0                       lies inside (-m, m) (m > 0)
equivalence          lies inside (-m, m)              lies beyond -m or beyond m
non-inferiority      lies above -m                    lies below -m
===================  ==============================  =====================================

A margin m > 0 is the smallest difference the claim is about, so where both outcomes hold (an
interval inside (0, m): a real difference, but smaller than the claim's) the row is *refuted*; with
m = 0 the two cannot both hold, and "supported" is exactly "the interval excludes zero on the
predicted side". Exact rows
(theory: no sampling noise) use the same table with the interval [min d, max d].

Power: `Comparison.minimum_detectable_effect` is the smallest true mean difference the test would
detect with 80% power at its level, for its n and the observed standard deviation (the t test's
formula, (t_{1-a/2} + t_{0.8}) s / sqrt(n); for the sign-flip test the same formula, an
approximation, and infinity where the test cannot reject at all at that n and level).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
from scipy import stats as scipy_stats

TestName = Literal["t", "sign-flip"]
Kind = Literal["greater", "less", "two-sided", "equivalence", "non-inferiority"]
Verdict = Literal["supported", "refuted", "inconclusive"]

TESTS: tuple[str, ...] = ("t", "sign-flip")
KINDS: tuple[str, ...] = ("greater", "less", "two-sided", "equivalence", "non-inferiority")
EXACT_SIGN_FLIP_LIMIT = 20
"""Up to this n the sign-flip test enumerates all 2^n sign patterns (2^20 subset means: ~8 MB, <0.2 s)."""
DEFAULT_RESAMPLES = 10_000
POWER = 0.8
MINIMUM_N = 3
"""Rows with fewer pairs are not tested: at n = 2 no test is informative (sign-flip: p >= 0.5)."""


# -- small building blocks -------------------------------------------------------------------------

class Interval(NamedTuple):
    """A mean with its two-sided interval (low = high = nan where n < 2)."""

    mean: float
    low: float
    high: float
    n: int


def _check_confidence(confidence: float, name: str = "confidence") -> None:
    if not (isinstance(confidence, (int, float)) and 0.5 <= confidence < 1.0):
        raise ValueError(f"{name} must be in [0.5, 1), got {confidence!r}")


def mean_interval(values: np.ndarray | Sequence[float], confidence: float = 0.95,
                  bounds: tuple[float, float] | None = None) -> Interval:
    """Mean of the finite values with a two-sided Student-t interval.

    With one value the interval is undefined (nan bounds, shown as "n/a"). `bounds` (lowest and
    highest possible value, e.g. epoch 0 and the last epoch) clip the interval to the range the
    quantity can take, so an interval from two seeds cannot run past the last epoch.
    """
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    low, high = _t_interval(values, confidence)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, n)


def epochs_to_target(curves: np.ndarray, target: float) -> np.ndarray:
    """First epoch index at which each curve (seeds, epochs) is <= target; NaN if never."""
    curves = np.asarray(curves, dtype=np.float64)
    reached = curves <= target
    first = np.argmax(reached, axis=1).astype(np.float64)
    first[~reached.any(axis=1)] = np.nan
    return first


def bootstrap_interval(values: np.ndarray | Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean,
                       confidence: float = 0.95, rng: np.random.Generator | None = None,
                       resamples: int = DEFAULT_RESAMPLES) -> tuple[float, float]:
    """A bias-corrected and accelerated (BCa) bootstrap interval of `statistic` (an interval only:
    elukit never takes a p-value from resampling the data, which is anti-conservative at small n).

    Uses `scipy.stats.bootstrap(method="BCa")`; needs n >= 3 and some variance, else (nan, nan).
    """
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if len(values) < MINIMUM_N or np.ptp(values) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(0) if rng is None else rng
    result = scipy_stats.bootstrap((values,), lambda v, axis: np.apply_along_axis(statistic, axis, v),
                                   confidence_level=confidence, n_resamples=resamples, method="BCa", random_state=rng)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    Not used for verdicts (see the module docstring: a step-down adjustment has no interval that
    agrees with it row by row); kept for readers who want the more powerful family-wise adjustment.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must be a 1-D array in [0, 1], got {p_values!r}")
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted


def bonferroni(p_value: float, family_size: int) -> float:
    """min(1, m p): the p-value adjusted over a family of m comparisons."""
    return min(1.0, family_size * p_value) if math.isfinite(p_value) else math.nan


def no_variance(differences: np.ndarray) -> bool:
    """All differences equal up to rounding (spread within 16 ulps of the largest magnitude)."""
    d = np.asarray(differences, dtype=np.float64)
    return bool(np.ptp(d) <= 16 * np.finfo(np.float64).eps * np.max(np.abs(d)))


# -- the two tests ----------------------------------------------------------------------------------

def _sign_flip_rank(level: float, patterns: int) -> int:
    """k such that the two-sided sign-flip interval at `level` runs from the k-th smallest to the k-th
    largest subset mean (k <= 0: the test cannot reject, the interval is unbounded)."""
    return math.floor((1 - level) * patterns / 2 + 1e-9)


@dataclasses.dataclass(frozen=True)
class SignFlipDistribution:
    """The sign-flip test of one sample, as sorted subset means.

    Flipping the signs of the set S of differences changes sum(d - delta) by -2 sum_S(d - delta), so
    the one-sided p-value of "mean > delta" is #{S : mean_S(d) <= delta} / N, the empty set counted
    (it is the observed pattern). `means` holds the nonempty subsets' means sorted, `patterns` is
    N (2^n when exact, resamples + 1 when sampled).
    """

    means: np.ndarray
    patterns: int
    exact: bool
    observed_again: int = 0
    """Sampled patterns that flip nothing (the observed pattern again): they count on both sides."""

    def p_greater(self, delta: float) -> float:
        """P of "the mean difference exceeds delta" being this extreme under sign symmetry about delta."""
        return (1 + self.observed_again + int(np.searchsorted(self.means, delta, side="right"))) / self.patterns

    def p_less(self, delta: float) -> float:
        at_least = len(self.means) - int(np.searchsorted(self.means, delta, side="left"))
        return (1 + self.observed_again + at_least) / self.patterns

    def interval(self, level: float) -> tuple[float, float]:
        """The test inverted: {delta : two-sided p(delta) > 1 - level}, a closed interval of subset means."""
        k = _sign_flip_rank(level, self.patterns) - self.observed_again
        if k <= 0:
            return -math.inf, math.inf
        return float(self.means[k - 1]), float(self.means[len(self.means) - k])


def sign_flip_distribution(differences: np.ndarray | Sequence[float], rng: np.random.Generator | None = None,
                           resamples: int = DEFAULT_RESAMPLES) -> SignFlipDistribution:
    """All 2^n - 1 nonempty subset means (n <= 20), or those of `resamples` random sign patterns.

    Subset sums within a few ulps of zero are set to exactly zero, so that differences that cancel
    (e.g. [1, -1]) count as the tie they are, whatever the summation order.
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    n = len(d)
    if n == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"differences must be finite and non-empty, got {d!r}")
    tolerance = 8 * n * np.finfo(np.float64).eps * float(np.abs(d).sum())
    if n <= EXACT_SIGN_FLIP_LIMIT:
        sums, sizes = np.zeros(1), np.zeros(1, dtype=np.int64)
        for value in d:
            sums = np.concatenate((sums, sums + value))
            sizes = np.concatenate((sizes, sizes + 1))
        sums, sizes, patterns, exact = sums[1:], sizes[1:], 2 ** n, True
    else:
        if not (isinstance(resamples, int) and resamples >= 100):
            raise ValueError(f"resamples must be an integer >= 100, got {resamples!r}")
        rng = np.random.default_rng(0) if rng is None else rng
        flipped = rng.random((resamples, n)) < 0.5
        sums, sizes = flipped @ d, flipped.sum(axis=1)
        empty = sizes == 0
        sums, sizes = sums[~empty], sizes[~empty]
        sums[np.abs(sums) <= tolerance] = 0.0
        return SignFlipDistribution(np.sort(sums / sizes), resamples + 1, False, int(empty.sum()))
    sums[np.abs(sums) <= tolerance] = 0.0
    return SignFlipDistribution(np.sort(sums / sizes), patterns, exact)


def _t_p(d: np.ndarray, delta: float, alternative: str) -> float:
    """One-sided p of Student's t test of mean(d) = delta; the same numbers as
    `scipy.stats.ttest_1samp(d, delta, alternative=...)` (tested), without its per-call overhead."""
    standard_error = float(d.std(ddof=1)) / math.sqrt(len(d))
    statistic = (float(d.mean()) - delta) / standard_error
    tail = scipy_stats.t.sf if alternative == "greater" else scipy_stats.t.cdf
    return float(tail(statistic, len(d) - 1))


def _t_interval(d: np.ndarray, level: float) -> tuple[float, float]:
    half = float(scipy_stats.t.ppf(0.5 + level / 2, len(d) - 1)) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return float(d.mean()) - half, float(d.mean()) + half


def sign_flip_test(differences: np.ndarray | Sequence[float], delta: float = 0.0,
                   alternative: Literal["two-sided", "greater", "less"] = "two-sided",
                   rng: np.random.Generator | None = None, resamples: int = DEFAULT_RESAMPLES) -> float:
    """The p-value of the paired sign-flip test of mean difference = `delta` (exact for n <= 20)."""
    d = np.asarray(differences, dtype=np.float64).ravel()
    distribution = sign_flip_distribution(d, rng, resamples)
    greater, less = distribution.p_greater(delta), distribution.p_less(delta)
    if alternative == "greater":
        return greater
    if alternative == "less":
        return less
    if alternative != "two-sided":
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    return min(1.0, 2 * min(greater, less))


# -- hypotheses and comparisons --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """What a comparison is asked: a `kind` (see the module docstring) and a margin >= 0 in natural units."""

    kind: Kind = "two-sided"
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be finite and >= 0, got {self.margin!r}")
        if self.kind in ("equivalence", "non-inferiority") and self.margin == 0:
            raise ValueError(f"an {self.kind} hypothesis needs a margin > 0, got {self.margin!r}")

    def describe(self) -> str:
        m = self.margin
        return {
            "greater": "difference > 0" + (f" (refuted below {m:g})" if m else ""),
            "less": "difference < 0" + (f" (refuted above {-m:g})" if m else ""),
            "two-sided": "difference != 0" + (f" (refuted inside +-{m:g})" if m else ""),
            "equivalence": f"|difference| < {m:g}",
            "non-inferiority": f"difference > {-m:g}",
        }[self.kind]

    def verdict(self, low: float, high: float) -> Verdict:
        """supported / refuted / inconclusive from an interval (the table of the module docstring)."""
        m = self.margin
        if self.kind == "greater":
            supported, refuted = low > 0, high < 0 or (m > 0 and high < m)
        elif self.kind == "less":
            supported, refuted = high < 0, low > 0 or (m > 0 and low > -m)
        elif self.kind == "two-sided":
            supported, refuted = low > 0 or high < 0, m > 0 and -m < low and high < m
        elif self.kind == "equivalence":
            supported, refuted = -m < low and high < m, low > m or high < -m
        else:
            supported, refuted = low > -m, high < -m
        return "refuted" if refuted else "supported" if supported else "inconclusive"

    def outcome_p_values(self, one_sided: Callable[[float, str], float]) -> tuple[float, float]:
        """Unadjusted p-values of "supported" and "refuted", from `one_sided(delta, side)`: the one-sided
        p that the mean lies above (side "greater") or below ("less") delta.

        The interval is two-sided, each side at half the level, so "the interval lies above delta"
        is "twice the one-sided p is <= 1 - level"; an outcome needing both sides takes the larger.
        """
        m = self.margin
        if self.kind == "greater":
            support, refute = one_sided(0.0, "greater"), one_sided(m, "less")
        elif self.kind == "less":
            support, refute = one_sided(0.0, "less"), one_sided(-m, "greater")
        elif self.kind == "two-sided":
            support = min(one_sided(0.0, "greater"), one_sided(0.0, "less"))
            refute = max(one_sided(-m, "greater"), one_sided(m, "less")) if m else 0.5  # nothing refutes: p 1
        elif self.kind == "equivalence":
            support = max(one_sided(-m, "greater"), one_sided(m, "less"))
            refute = min(one_sided(m, "greater"), one_sided(-m, "less"))
        else:
            support, refute = one_sided(-m, "greater"), one_sided(-m, "less")
        return min(1.0, 2 * support), min(1.0, 2 * refute)


@dataclasses.dataclass(frozen=True)
class Family:
    """The comparisons a p-value is adjusted over: a name a reader can find, and their number."""

    name: str
    size: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and self.size >= 1):
            raise ValueError(f"family size must be an integer >= 1, got {self.size!r}")

    def level(self, confidence: float) -> float:
        """The interval level at which each member is printed and decided: 1 - (1 - confidence)/m."""
        return 1 - (1 - confidence) / self.size


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A paired comparison as elukit reports it. All effects are treatment - baseline.

    Attributes:
        effect: mean difference (nan when no pair is finite).
        ci_low, ci_high: interval at `level` (the family-adjusted level); nan when not tested.
        level: 1 - (1 - confidence)/family size.
        n: pairs used; excluded: pairs dropped for a non-finite value.
        test: "t", "sign-flip" or "exact" (theory rows: the interval is [min, max] of computed values).
        test_description: e.g. "sign-flip, exact over 32 sign patterns, n=5".
        p_value: two-sided p of "no difference" (nan when not tested); p_adjusted: Bonferroni over the family.
        p_support, p_refute: adjusted p-values of the tests behind "supported" and "refuted" (each
            <= 1 - confidence exactly when the interval shows that outcome).
        minimum_detectable_effect: see the module docstring; inf where the test cannot reject at all.
        verdict: supported / refuted / inconclusive for the hypothesis.
        status: "tested", "exact", "n too small" or "no variance".
        reason: the words after an inconclusive verdict, e.g. "could have seen >= 2.1".
    """

    effect: float
    ci_low: float
    ci_high: float
    level: float
    confidence: float
    n: int
    excluded: int
    test: str
    test_description: str
    p_value: float
    p_adjusted: float
    p_support: float
    p_refute: float
    minimum_detectable_effect: float
    hypothesis: Hypothesis
    family: Family
    verdict: Verdict
    status: str
    reason: str
    claimed_effect: float | None = None

    @property
    def tested(self) -> bool:
        return self.status in ("tested", "exact")

    @property
    def exact(self) -> bool:
        """Computed without sampling noise (theory): decided by [min, max], no p-value."""
        return self.status == "exact"

    @property
    def significant(self) -> bool:
        """The interval excludes zero (a difference in either direction is shown)."""
        return self.tested and (self.ci_low > 0 or self.ci_high < 0)

    @property
    def verdict_text(self) -> str:
        """The verdict with its reason, e.g. "inconclusive (n too small)"."""
        return f"{self.verdict} ({self.reason})" if self.reason else self.verdict

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (non-finite numbers as None)."""
        def clean(value: object) -> object:
            return None if isinstance(value, float) and not math.isfinite(value) else value

        record = {field.name: clean(getattr(self, field.name)) for field in dataclasses.fields(self)
                  if field.name not in ("hypothesis", "family")}
        record.update(hypothesis=self.hypothesis.describe(), kind=self.hypothesis.kind, margin=self.hypothesis.margin,
                      family=self.family.name, family_size=self.family.size, verdict_text=self.verdict_text)
        return record


def minimum_detectable_effect(standard_deviation: float, n: int, level: float, test: str = "t",
                              power: float = POWER) -> float:
    """Smallest true mean difference detected with `power` by a two-sided test at `level` (see the
    module docstring); inf where the test cannot reject at this n and level."""
    if n < 2 or not math.isfinite(standard_deviation):
        return math.inf
    if test == "sign-flip" and n <= EXACT_SIGN_FLIP_LIMIT and _sign_flip_rank(level, 2 ** n) <= 0:
        return math.inf
    quantiles = scipy_stats.t.ppf(1 - (1 - level) / 2, n - 1) + scipy_stats.t.ppf(power, n - 1)
    return float(quantiles * standard_deviation / math.sqrt(n))


def _not_tested(effect: float, n: int, excluded: int, status: str, hypothesis: Hypothesis, family: Family,
                confidence: float, test: str, claimed_effect: float | None) -> Comparison:
    nan = math.nan
    return Comparison(effect, nan, nan, family.level(confidence), confidence, n, excluded, test,
                      f"not tested ({status}), n={n}", nan, nan, nan, nan, math.inf, hypothesis, family,
                      "inconclusive", status, status, claimed_effect)


def compare_paired(treatment: np.ndarray | Sequence[float], baseline: np.ndarray | Sequence[float] | None = None, *,
                   hypothesis: Hypothesis | None = None, test: str = "t", confidence: float = 0.95,
                   family: Family | None = None, claimed_effect: float | None = None, exact: bool = False,
                   rng: np.random.Generator | None = None, resamples: int = DEFAULT_RESAMPLES) -> Comparison:
    """Compare treatment with baseline, paired by index (seed); see the module docstring.

    Args:
        treatment: values per seed; or the differences themselves when `baseline` is None.
        baseline: values per seed, same shape as `treatment`.
        hypothesis: what is asked (default: two-sided, no margin).
        test: "t" or "sign-flip" (chosen per quantity in advance; see the module docstring).
        confidence: nominal family-wise confidence, in [0.5, 1).
        family: the comparisons this one is adjusted over (default: itself alone).
        claimed_effect: the effect size the claim states, in natural units: an inconclusive result
            then says whether an effect of that size could have been seen.
        exact: the values are computed without sampling noise (theory): no test; the interval is
            [min, max] of the differences and decides by the same table.
        rng: random generator of the sign-flip test beyond n = 20 (default: seeded with 0).
        resamples: random sign patterns of the sign-flip test beyond n = 20.
    Returns: a `Comparison`.
    """
    hypothesis = Hypothesis() if hypothesis is None else hypothesis
    family = Family("this comparison alone", 1) if family is None else family
    _check_confidence(confidence)
    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    treatment = np.asarray(treatment, dtype=np.float64).ravel()
    if baseline is None:
        d = treatment
    else:
        baseline = np.asarray(baseline, dtype=np.float64).ravel()
        if treatment.shape != baseline.shape:
            raise ValueError(f"paired samples need equal lengths, got {treatment.shape[0]} and {baseline.shape[0]}")
        with np.errstate(invalid="ignore"):
            d = treatment - baseline
    finite = np.isfinite(d)
    excluded, d = int((~finite).sum()), d[finite]
    n = len(d)
    effect = float(d.mean()) if n else math.nan
    level = family.level(confidence)
    if exact:
        if n == 0:
            return _not_tested(effect, n, excluded, "n too small", hypothesis, family, confidence, "exact", claimed_effect)
        low, high = float(d.min()), float(d.max())
        verdict = hypothesis.verdict(low, high)
        return Comparison(effect, low, high, level, confidence, n, excluded, "exact",
                          f"exact (computed, no sampling), {n} point{'s' if n != 1 else ''}", math.nan, math.nan,
                          0.0 if verdict == "supported" else 1.0, 0.0 if verdict == "refuted" else 1.0, 0.0,
                          hypothesis, family, verdict, "exact", "", claimed_effect)
    if n < MINIMUM_N:
        return _not_tested(effect, n, excluded, "n too small", hypothesis, family, confidence, test, claimed_effect)
    if no_variance(d):
        return _not_tested(effect, n, excluded, "no variance", hypothesis, family, confidence, test, claimed_effect)
    distribution = None
    if test == "t":
        low, high = _t_interval(d, level)
        description = f"paired t, n={n}"
    else:
        distribution = sign_flip_distribution(d, rng, resamples)
        low, high = distribution.interval(level)
        description = (f"sign-flip, exact over {distribution.patterns:,} sign patterns, n={n}" if distribution.exact
                       else f"sign-flip, Monte Carlo over {distribution.patterns - 1:,} resamples, n={n}")

    def one_sided(delta: float, side: str) -> float:
        if distribution is None:
            return _t_p(d, delta, side)
        return distribution.p_greater(delta) if side == "greater" else distribution.p_less(delta)

    p_value = min(1.0, 2 * min(one_sided(0.0, "greater"), one_sided(0.0, "less")))
    p_support, p_refute = (bonferroni(p, family.size) for p in hypothesis.outcome_p_values(one_sided))
    mde = minimum_detectable_effect(float(d.std(ddof=1)), n, level, test)
    verdict = hypothesis.verdict(low, high)
    reason = ""
    if verdict == "inconclusive":
        if not math.isfinite(mde):
            reason = f"the {test} test cannot reject at n={n} and level {level:.4g}"
        elif claimed_effect is not None:
            seen = "could" if abs(claimed_effect) >= mde else "could not"
            reason = f"an effect of the claimed size {abs(claimed_effect):.3g} {seen} have been seen: MDE {mde:.3g}"
        else:
            reason = f"could have seen >= {mde:.3g}"
    return Comparison(effect, low, high, level, confidence, n, excluded, test, description, p_value,
                      bonferroni(p_value, family.size), p_support, p_refute, mde, hypothesis, family, verdict,
                      "tested", reason, claimed_effect)


# -- pooling rows: random effects ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Pooled:
    """A random-effects estimate over k rows of one quantity (DerSimonian & Laird 1986).

    Attributes:
        estimate: the weighted mean of the rows' mean differences, weights 1/(v_i + tau^2).
        ci_low, ci_high: the normal interval estimate +- z se at `level` (the method's own interval).
        level: the interval's confidence.
        standard_error: 1/sqrt(sum of the random-effects weights).
        tau2: the between-row variance (method of moments, truncated at 0).
        q: Cochran's Q about the fixed-effect mean; p_heterogeneity its chi^2(k - 1) upper tail.
        i2: max(0, (Q - (k - 1)) / Q): the share of the rows' spread that is not sampling noise
            (Higgins & Thompson 2002); 0 when Q = 0.
        k: rows pooled; left_out: rows that could not be (n < 2, or no variance: no within-row variance).
        verdict: the hypothesis read off the pooled interval (the table of the module docstring).
    """

    estimate: float
    ci_low: float
    ci_high: float
    level: float
    standard_error: float
    tau2: float
    q: float
    p_heterogeneity: float
    i2: float
    k: int
    left_out: int
    hypothesis: Hypothesis
    verdict: Verdict

    def as_dict(self) -> dict[str, object]:
        record = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "hypothesis"}
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        record.update(method="DerSimonian-Laird random effects, normal interval", hypothesis=self.hypothesis.describe())
        return record


def pool_random_effects(rows: Sequence[np.ndarray | Sequence[float]], hypothesis: Hypothesis | None = None,
                        confidence: float = 0.95) -> Pooled:
    """Pool rows of paired differences (one array per row, e.g. per regime and dataset) by
    DerSimonian-Laird random effects: row i contributes its mean y_i with variance v_i = s_i^2 / n_i;
    tau^2 = max(0, (Q - (k - 1)) / (S1 - S2 / S1)) with w_i = 1 / v_i, S1 = sum w_i, S2 = sum w_i^2
    and Q = sum w_i (y_i - y_FE)^2; the estimate weights rows by 1 / (v_i + tau^2).

    Rows with fewer than 2 finite values or no variance cannot be weighted and are left out
    (counted in `left_out`). Needs 2 or more rows left; else raises ValueError.
    """
    hypothesis = Hypothesis() if hypothesis is None else hypothesis
    _check_confidence(confidence)
    means, variances, left_out = [], [], 0
    for row in rows:
        d = np.asarray(row, dtype=np.float64).ravel()
        d = d[np.isfinite(d)]
        if len(d) < 2 or no_variance(d):
            left_out += 1
            continue
        means.append(float(d.mean()))
        variances.append(float(d.var(ddof=1)) / len(d))
    k = len(means)
    if k < 2:
        raise ValueError(f"pooling needs 2 or more rows with n >= 2 and some variance, got {k} (left out {left_out})")
    y, v = np.asarray(means), np.asarray(variances)
    w = 1.0 / v
    fixed = float(np.sum(w * y) / np.sum(w))
    q = float(np.sum(w * (y - fixed) ** 2))
    s1, s2 = float(np.sum(w)), float(np.sum(w**2))
    tau2 = max(0.0, (q - (k - 1)) / (s1 - s2 / s1))
    w_star = 1.0 / (v + tau2)
    estimate = float(np.sum(w_star * y) / np.sum(w_star))
    se = 1.0 / math.sqrt(float(np.sum(w_star)))
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2))
    low, high = estimate - z * se, estimate + z * se
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    p_heterogeneity = float(scipy_stats.chi2.sf(q, k - 1))
    return Pooled(estimate, low, high, confidence, se, tau2, q, p_heterogeneity, i2, k, left_out, hypothesis,
                  hypothesis.verdict(low, high))


def format_p(p_value: float) -> str:
    """p as printed everywhere, three significant digits: 'p = 0.0625', 'p = 2.1e-05', 'p n/a'
    (no test here can give p = 0: a sign-flip p is at least 1/2^n or 1/(resamples + 1))."""
    if not math.isfinite(p_value):
        return "p n/a"
    return f"p = {p_value:.3g}"


__all__ = [
    "Comparison", "DEFAULT_RESAMPLES", "Pooled", "EXACT_SIGN_FLIP_LIMIT", "Family", "Hypothesis", "Interval", "KINDS", "MINIMUM_N",
    "SignFlipDistribution", "TESTS", "bonferroni", "bootstrap_interval", "compare_paired", "epochs_to_target", "format_p",
    "holm", "mean_interval", "minimum_detectable_effect", "no_variance", "pool_random_effects", "sign_flip_distribution", "sign_flip_test",
]
