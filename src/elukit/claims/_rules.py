r"""Decision rules, fixed before any run: evidence rows -> tests -> Holm -> verdicts.

A measurement returns `Evidence` rows: one per regime (a training setup on a dataset, or a
theory computation), each holding the paired differences *treatment - baseline* in the claim's
quantity (one per seed, or one per exactly computed point).

Sampled rows (seeds) are decided by Student's paired t test (`scipy.stats.ttest_1samp` on the
differences, which is `scipy.stats.ttest_rel` on the pairs), two one-sided tests per row:

* ``p_support``: the test of the direction (or equivalence) the claim predicts;
* ``p_refute``: the test of the opposite (or of a difference beyond the margin);

a row's p-value is :math:`\min(1, 2\min(p_{support}, p_{refute}))` (Bonferroni over the two
directions) and the p-values of all sampled rows in a ledger are Holm-adjusted together. A row
is *supported* or *refuted* when its adjusted p-value is below 1 - confidence (direction by the
smaller one-sided p), else *inconclusive*. Intervals are the t test's 95% intervals of the mean
difference (`TtestResult.confidence_interval`), shown unadjusted. Exact rows (theory: no sampling
noise) are decided by the sign of every computed difference and take no part in Holm.

A claim's verdict from its rows: *supported* when some row supports it and none refutes it,
*refuted* in the mirror case, *mixed* when rows disagree (each is shown), *inconclusive* when no
row decides.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats

Verdict = Literal["supported", "refuted", "mixed", "inconclusive"]
VERDICTS: tuple[str, ...] = ("supported", "refuted", "mixed", "inconclusive")


@dataclasses.dataclass(frozen=True)
class Evidence:
    """One row of a claim's evidence: the paired differences in one regime.

    Attributes:
        regime: where it was measured, e.g. ``"deep-sgd/mnist1d"`` or ``"theory"``.
        comparison: what minus what, e.g. ``"elu - relu"``.
        differences: treatment - baseline, one per seed (sampled) or per computed point (exact).
        exact: True for computations without sampling noise (decided by sign, not by a test).
        treatment, baseline: the arms' own values (for tables and figures), or empty.
        note: anything a reader needs (the learning rates chosen, the target loss...).
    """

    regime: str
    comparison: str
    differences: np.ndarray
    exact: bool = False
    treatment: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0))
    baseline: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0))
    note: str = ""


@dataclasses.dataclass(frozen=True)
class RowResult:
    """A tested row: the effect (mean difference), its interval, the one-sided p-values."""

    effect: float
    ci_low: float
    ci_high: float
    n: int
    p_support: float
    p_refute: float
    exact: bool

    @property
    def p_value(self) -> float:
        """Two-directional p-value (Bonferroni over support and refute); 0 or 1 for exact rows."""
        return min(1.0, 2.0 * min(self.p_support, self.p_refute))


def _degenerate(differences: np.ndarray) -> bool:
    """All differences equal up to rounding (spread within 16 ulps of the largest): the t statistic
    is then infinite or meaningless (SciPy warns of catastrophic cancellation), so the row is
    decided by its value, which is known exactly. Example: log2 of the same grid step per seed."""
    return bool(np.ptp(differences) <= 16 * np.finfo(np.float64).eps * np.max(np.abs(differences)))


def _one_sided(differences: np.ndarray, shift: float, alternative: str) -> float:
    """p of `scipy.stats.ttest_1samp(differences, shift, alternative=...)`, with the degenerate
    cases decided exactly (all differences equal: 0 or 1 instead of a NaN and a warning)."""
    if _degenerate(differences):
        value = float(differences.mean())
        holds = value > shift if alternative == "greater" else value < shift
        return 0.0 if holds else 1.0
    return float(stats.ttest_1samp(differences, shift, alternative=alternative).pvalue)


def _interval(differences: np.ndarray, confidence: float) -> tuple[float, float]:
    if _degenerate(differences):
        return float(differences.mean()), float(differences.mean())
    interval = stats.ttest_1samp(differences, 0.0).confidence_interval(confidence)
    return float(interval.low), float(interval.high)


def _check_confidence(confidence: float) -> None:
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence!r}")


def _check_margin(margin: float, positive: bool) -> None:
    if not (math.isfinite(margin) and (margin > 0 if positive else margin >= 0)):
        raise ValueError(f"margin must be finite and {'>' if positive else '>='} 0, got {margin!r}")


class _Rule:
    """What every rule shares: the checks on the evidence, the exact/sampled split, the interval.

    A rule implements ``_exact(d) -> (supported, refuted)`` for exact rows and
    ``_sampled(d) -> (p_support, p_refute)`` for sampled ones.
    """

    confidence: float

    def test(self, evidence: Evidence) -> RowResult:
        d = np.asarray(evidence.differences, dtype=np.float64).ravel()
        if len(d) == 0 or not np.all(np.isfinite(d)):
            raise ValueError(f"{evidence.regime}: differences must be finite and non-empty, got {d!r}")
        effect = float(d.mean())
        if evidence.exact:
            supported, refuted = self._exact(d)
            return RowResult(effect, float(d.min()), float(d.max()), len(d), 0.0 if supported else 1.0,
                             0.0 if refuted else 1.0, True)
        if len(d) < 2:  # one pair (the others dropped as non-finite) decides nothing
            return RowResult(effect, math.nan, math.nan, len(d), 1.0, 1.0, False)
        low, high = _interval(d, self.confidence)
        support, refute = self._sampled(d)
        return RowResult(effect, low, high, len(d), support, refute, False)

    def _exact(self, d: np.ndarray) -> tuple[bool, bool]:
        raise NotImplementedError

    def _sampled(self, d: np.ndarray) -> tuple[float, float]:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class PairedDifference(_Rule):
    """The claim predicts treatment - baseline > 0 (``greater``), < 0 (``less``) or != 0 (``two-sided``).

    ``margin`` (>= 0, in the quantity's units) is the smallest difference the claim is about: for a
    directional claim a row is refuted also when the difference is shown to be below the margin
    in the predicted direction; for ``two-sided`` a row is refuted when |difference| < margin is
    shown (two one-sided tests), so "results depend on alpha" can be refuted, not just unproven.
    """

    alternative: Literal["greater", "less", "two-sided"] = "greater"
    confidence: float = 0.95
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.alternative not in ("greater", "less", "two-sided"):
            raise ValueError(f"alternative must be greater, less or two-sided, got {self.alternative!r}")
        _check_confidence(self.confidence)
        _check_margin(self.margin, positive=False)
        if self.alternative == "two-sided" and self.margin == 0:
            raise ValueError("a two-sided claim needs a margin > 0 to be refutable")

    def describe(self) -> str:
        sign = {"greater": "> 0", "less": "< 0", "two-sided": "!= 0"}[self.alternative]
        text = f"paired difference {sign}, t test, {round(100 * self.confidence)}% interval, Holm over the ledger"
        return text + (f"; margin {self.margin:g}" if self.margin else "")

    def _sampled(self, d: np.ndarray) -> tuple[float, float]:
        m = self.margin
        if self.alternative == "greater":
            return _one_sided(d, 0.0, "greater"), _one_sided(d, m, "less")
        if self.alternative == "less":
            return _one_sided(d, 0.0, "less"), _one_sided(d, -m, "greater")
        support = min(1.0, 2 * min(_one_sided(d, 0.0, "greater"), _one_sided(d, 0.0, "less")))
        return support, max(_one_sided(d, m, "less"), _one_sided(d, -m, "greater"))

    def _exact(self, d: np.ndarray) -> tuple[bool, bool]:
        m = self.margin
        if self.alternative == "greater":
            return bool(np.all(d > 0)), bool(np.all(d <= m) if m else np.all(d < 0))
        if self.alternative == "less":
            return bool(np.all(d < 0)), bool(np.all(d >= -m) if m else np.all(d > 0))
        return bool(np.all(np.abs(d) >= m)), bool(np.all(np.abs(d) < m))


@dataclasses.dataclass(frozen=True)
class _MarginRule(_Rule):
    margin: float
    confidence: float = 0.95

    def __post_init__(self) -> None:
        _check_margin(self.margin, positive=True)
        _check_confidence(self.confidence)


@dataclasses.dataclass(frozen=True)
class Equivalence(_MarginRule):
    """The claim predicts |treatment - baseline| < margin (e.g. "variance stays near 1").

    Supported by two one-sided t tests (TOST) against -margin and +margin; refuted when the
    difference is shown to lie beyond one of them.
    """

    def describe(self) -> str:
        return (f"equivalence |difference| < {self.margin:g}, two one-sided t tests, "
                f"{round(100 * self.confidence)}% interval, Holm over the ledger")

    def _exact(self, d: np.ndarray) -> tuple[bool, bool]:
        return bool(np.all(np.abs(d) < self.margin)), bool(np.all(np.abs(d) >= self.margin))

    def _sampled(self, d: np.ndarray) -> tuple[float, float]:
        m = self.margin
        support = max(_one_sided(d, -m, "greater"), _one_sided(d, m, "less"))
        return support, min(1.0, 2 * min(_one_sided(d, m, "greater"), _one_sided(d, -m, "less")))


@dataclasses.dataclass(frozen=True)
class NonInferiority(_MarginRule):
    """The claim predicts treatment - baseline > -margin ("does as well as", within the margin).

    Supported when the difference is shown above -margin (one-sided t test), refuted when shown
    below it.
    """

    def describe(self) -> str:
        return (f"non-inferiority: difference > -{self.margin:g}, one-sided t tests, "
                f"{round(100 * self.confidence)}% interval, Holm over the ledger")

    def _exact(self, d: np.ndarray) -> tuple[bool, bool]:
        return bool(np.all(d > -self.margin)), bool(np.all(d <= -self.margin))

    def _sampled(self, d: np.ndarray) -> tuple[float, float]:
        return _one_sided(d, -self.margin, "greater"), _one_sided(d, -self.margin, "less")


Rule = PairedDifference | Equivalence | NonInferiority


def paired_difference(alternative: Literal["greater", "less", "two-sided"] = "greater", confidence: float = 0.95,
                      margin: float = 0.0) -> PairedDifference:
    """A `PairedDifference` rule (see there)."""
    return PairedDifference(alternative, confidence, margin)


def equivalence(margin: float, confidence: float = 0.95) -> Equivalence:
    """An `Equivalence` rule (see there)."""
    return Equivalence(margin, confidence)


def non_inferiority(margin: float, confidence: float = 0.95) -> NonInferiority:
    """A `NonInferiority` rule (see there)."""
    return NonInferiority(margin, confidence)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    SciPy has no Holm adjustment (`scipy.stats.false_discovery_control` is Benjamini-Hochberg,
    which controls the false discovery rate, not the family-wise error rate a verdict needs).
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


def row_verdict(result: RowResult, adjusted_p: float, confidence: float) -> str:
    """supported / refuted / inconclusive for one row (exact rows: by their exact outcome)."""
    if result.exact:
        if result.p_support == 0.0:
            return "supported"
        return "refuted" if result.p_refute == 0.0 else "inconclusive"
    if adjusted_p < 1 - confidence:
        return "supported" if result.p_support <= result.p_refute else "refuted"
    return "inconclusive"


def combine(row_verdicts: Sequence[str]) -> str:
    """A claim's verdict from its rows' (see the module docstring)."""
    supported, refuted = "supported" in row_verdicts, "refuted" in row_verdicts
    if supported and refuted:
        return "mixed"
    if supported:
        return "supported"
    if refuted:
        return "refuted"
    return "inconclusive"


def decide(rows: Sequence[tuple[Any, Evidence]], rules: Sequence[Rule]) -> list[tuple[RowResult, float, str]]:
    """Test every row with its rule, Holm-adjust the sampled rows together, return
    (result, adjusted p, row verdict) per row, in order."""
    results = [rule.test(evidence) for (_, evidence), rule in zip(rows, rules, strict=True)]
    sampled = [i for i, r in enumerate(results) if not r.exact]
    adjusted = np.array([r.p_value for r in results])
    if sampled:
        adjusted[sampled] = holm([results[i].p_value for i in sampled])
    return [(r, float(adjusted[i]), row_verdict(r, float(adjusted[i]), rule.confidence))
            for i, (r, rule) in enumerate(zip(results, rules))]


__all__ = ["Equivalence", "Evidence", "NonInferiority", "PairedDifference", "RowResult", "Rule", "VERDICTS", "Verdict", "combine",
           "decide", "equivalence", "holm", "non_inferiority", "paired_difference", "row_verdict"]
