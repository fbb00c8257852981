r"""Decision rules, fixed before any run: evidence rows -> `elukit.statistics` -> verdicts.

A measurement returns `Evidence` rows: one per regime (a training setup on a dataset, or a
theory computation), each holding the paired differences *treatment - baseline* in the claim's
quantity (one per seed, or one per exactly computed point).

Every row is decided by `elukit.statistics.compare_paired` with the claim's rule as its
hypothesis and the rule's test (the paired t test for continuous quantities, the exact sign-flip
test for discrete ones such as epoch counts and grid indices; chosen per claim, before any run).

Multiplicity is adjusted **within each claim**: its sampled rows form one family (named after the
claim, e.g. "higher-accuracy: 4 sampled rows"), each row's interval is printed at the Bonferroni
level 1 - 0.05/m, and the row's verdict is read off that printed interval. So a row is supported
exactly when its printed interval lies on the predicted side (of 0, or of the margin), and running
a subset of claims (`--only`) cannot change any claim's verdict. Rows with n <= 2 or no variance
are "inconclusive (n too small)" / "inconclusive (no variance)" and never decide. Exact rows
(theory: no sampling noise) are decided by the same table on [min, max] of the computed values.

A claim's verdict from its rows (`combine_rows`), counting only the rows where the claim applies
(a depth claim applies in deep networks; a row outside its scope is shown, marked, and never
decides) and that are not set aside (a row at each arm's tuned rate where the two arms chose
different rates and either choice was a near-tie: its difference may be the tuning noise's, as the
A/A control showed, so the matched-rate rows decide there):

* *supported*: some row supports it, none refutes it, and no other tested row disagrees: its point
  estimate lies on the refuting side (read through the same table) and its interval holds none of
  the supporting rows' estimates (an opposite estimate that is not significant still disagrees when
  it is incompatible with them, so one supporting row cannot outvote a large, precise opposite one;
  an uninformative row, e.g. one whose seeds partly diverged, with an interval wide enough to hold
  the supported effect, does not);
* *refuted*: the mirror case;
* *mixed*: rows disagree, and the verdict names the regimes on each side;
* *inconclusive*: no row decides.

The rows behind the verdict carry ``decides``: the supporting (refuting) rows, or, when mixed, the
rows on both sides. Each claim also gets ``pooled``: a DerSimonian-Laird random-effects estimate
over its sampled rows of one quantity, with its interval and I^2
(`elukit.statistics.pool_random_effects`); it summarises, it does not decide.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from elukit.statistics import TESTS, Comparison, Family, Hypothesis, compare_paired, holm

Verdict = Literal["supported", "refuted", "mixed", "inconclusive"]
VERDICTS: tuple[str, ...] = ("supported", "refuted", "mixed", "inconclusive")
RowResult = Comparison
"""A decided row is an `elukit.statistics.Comparison`."""


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
    applies: bool = True
    """False where the claim does not apply (e.g. a 2-layer row of a claim about deep networks): shown, never decides."""
    depth: int | None = None
    """hidden layers of the network measured (None for theory that has no depth)"""
    lr: dict[str, float] | None = None
    """the learning rate of each arm, {arm: value}, for training rows"""
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    """further JSON-ready row fields (e.g. zero_derivative_share, cap_hits, near_tie)"""
    set_aside: str = ""
    """why the row, though within the claim's scope, cannot decide (e.g. its arms' tuned rates differ on
    a near-tie, so activation and learning rate are not separable in it); empty: it can"""


def _check_test(test: str) -> None:
    if test not in TESTS:
        raise ValueError(f"test must be {' or '.join(TESTS)}, got {test!r}")


class _Rule:
    """What every rule shares: the hypothesis it stands for, its test, its confidence, its description."""

    confidence: float
    test: str
    claimed_effect: float | None

    @property
    def hypothesis(self) -> Hypothesis:
        raise NotImplementedError

    def _test_name(self) -> str:
        return "paired t test" if self.test == "t" else "exact sign-flip test"

    def describe(self) -> str:
        return (f"{self.hypothesis.describe()}, {self._test_name()}, {round(100 * self.confidence)}% family-wise "
                "interval (Bonferroni over the claim's sampled rows)")

    def decide(self, evidence: Evidence, family: Family) -> Comparison:
        """The row as a `Comparison` within its claim's family."""
        d = np.asarray(evidence.differences, dtype=np.float64).ravel()
        if not np.all(np.isfinite(d)):
            raise ValueError(f"{evidence.regime}: differences must be finite, got {d!r}")
        # no pair left (every seed diverged, say): "inconclusive (n too small)", as any row with n <= 2
        return compare_paired(d, hypothesis=self.hypothesis, test=self.test, confidence=self.confidence,
                              family=family, claimed_effect=self.claimed_effect, exact=evidence.exact)


def _check_rule(confidence: float, test: str) -> None:
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence!r}")
    _check_test(test)


@dataclasses.dataclass(frozen=True)
class PairedDifference(_Rule):
    """The claim predicts treatment - baseline > 0 (``greater``), < 0 (``less``) or != 0 (``two-sided``).

    ``margin`` (>= 0, in the quantity's units) is the smallest difference the claim is about: a
    directional row is also refuted when its interval lies short of the margin; a ``two-sided`` row
    is refuted when its interval lies inside (-margin, margin), so "results depend on alpha" can be
    refuted, not just unproven.
    """

    alternative: Literal["greater", "less", "two-sided"] = "greater"
    confidence: float = 0.95
    margin: float = 0.0
    test: str = "t"
    claimed_effect: float | None = None

    def __post_init__(self) -> None:
        if self.alternative not in ("greater", "less", "two-sided"):
            raise ValueError(f"alternative must be greater, less or two-sided, got {self.alternative!r}")
        _check_rule(self.confidence, self.test)
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be finite and >= 0, got {self.margin!r}")
        if self.alternative == "two-sided" and self.margin == 0:
            raise ValueError("a two-sided claim needs a margin > 0 to be refutable")

    @property
    def hypothesis(self) -> Hypothesis:
        return Hypothesis(self.alternative, self.margin)


@dataclasses.dataclass(frozen=True)
class _MarginRule(_Rule):
    margin: float
    confidence: float = 0.95
    test: str = "t"
    claimed_effect: float | None = None

    def __post_init__(self) -> None:
        _check_rule(self.confidence, self.test)
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ValueError(f"margin must be finite and > 0, got {self.margin!r}")


@dataclasses.dataclass(frozen=True)
class Equivalence(_MarginRule):
    """The claim predicts |treatment - baseline| < margin (e.g. "variance stays near 1"): supported when
    the interval lies inside (-margin, margin), refuted when it lies beyond one of them."""

    @property
    def hypothesis(self) -> Hypothesis:
        return Hypothesis("equivalence", self.margin)


@dataclasses.dataclass(frozen=True)
class NonInferiority(_MarginRule):
    """The claim predicts treatment - baseline > -margin ("does as well as", within the margin):
    supported when the interval lies above -margin, refuted when it lies below."""

    @property
    def hypothesis(self) -> Hypothesis:
        return Hypothesis("non-inferiority", self.margin)


Rule = PairedDifference | Equivalence | NonInferiority


def paired_difference(alternative: Literal["greater", "less", "two-sided"] = "greater", confidence: float = 0.95,
                      margin: float = 0.0, test: str = "t", claimed_effect: float | None = None) -> PairedDifference:
    """A `PairedDifference` rule (see there)."""
    return PairedDifference(alternative, confidence, margin, test, claimed_effect)


def equivalence(margin: float, confidence: float = 0.95, test: str = "t") -> Equivalence:
    """An `Equivalence` rule (see there)."""
    return Equivalence(margin, confidence, test)


def non_inferiority(margin: float, confidence: float = 0.95, test: str = "t") -> NonInferiority:
    """A `NonInferiority` rule (see there)."""
    return NonInferiority(margin, confidence, test)


def row_verdict(result: Comparison) -> str:
    """supported / refuted / inconclusive for one decided row."""
    return result.verdict


def lean(result: Comparison) -> str:
    """The side a row's point estimate lies on: the hypothesis's table read at [effect, effect]
    ("inconclusive" for rows not tested, or an estimate exactly on the boundary)."""
    if not result.tested or not math.isfinite(result.effect):
        return "inconclusive"
    return result.hypothesis.verdict(result.effect, result.effect)


@dataclasses.dataclass(frozen=True)
class ClaimVerdict:
    """A claim's verdict from its rows, with the rows that decided it and the regimes on each side."""

    verdict: str
    decides: tuple[bool, ...]
    sides: dict[str, list[str]]
    """"supported", "refuted": rows so decided; "against (not significant)": tested rows whose estimate
    lies opposite to the verdict's side without deciding; "does not apply": rows outside the claim's scope"""

    def describe(self) -> str:
        parts = [f"{side} in {', '.join(names)}" for side, names in self.sides.items() if names]
        return "; ".join(parts)


def combine_rows(row_verdicts: Sequence[str], leans: Sequence[str] | None = None, applies: Sequence[bool] | None = None,
                 names: Sequence[str] | None = None, set_aside: Sequence[str] | None = None,
                 intervals: Sequence[tuple[float, float, float]] | None = None) -> ClaimVerdict:
    """A claim's verdict from its rows' verdicts, their point estimates' sides (`lean`), where the
    claim applies, which rows are set aside (a reason) and, given `intervals` ((effect, low, high)
    per row), whether an opposite estimate is compatible with the deciding rows (see the module
    docstring). Without `intervals` every opposite estimate counts against."""
    k = len(row_verdicts)
    leans = list(leans) if leans is not None else ["inconclusive"] * k
    applies = list(applies) if applies is not None else [True] * k
    names = list(names) if names is not None else [str(i) for i in range(k)]
    set_aside = list(set_aside) if set_aside is not None else [""] * k
    if not (len(leans) == len(applies) == len(names) == len(set_aside) == k) or (
            intervals is not None and len(intervals) != k):
        raise ValueError("row_verdicts, leans, applies, names, set_aside and intervals must have one entry per row")
    rows = [i for i in range(k) if applies[i] and not set_aside[i]]
    supported = [i for i in rows if row_verdicts[i] == "supported"]
    refuted = [i for i in rows if row_verdicts[i] == "refuted"]
    undecided = [i for i in rows if row_verdicts[i] not in ("supported", "refuted")]

    def incompatible(i: int, deciding: list[int]) -> bool:
        """Row i's interval holds none of the deciding rows' estimates (no intervals: assume so)."""
        if intervals is None:
            return True
        low, high = intervals[i][1], intervals[i][2]
        return not any(low <= intervals[j][0] <= high for j in deciding)

    leaning_refuted = [i for i in undecided if leans[i] == "refuted" and incompatible(i, supported)]
    leaning_supported = [i for i in undecided if leans[i] == "supported" and incompatible(i, refuted)]
    if supported and (refuted or leaning_refuted):
        verdict, against, deciding = "mixed", leaning_refuted, supported + refuted + leaning_refuted
    elif refuted and leaning_supported:
        verdict, against, deciding = "mixed", leaning_supported, supported + refuted + leaning_supported
    elif supported:
        verdict, against, deciding = "supported", [], supported
    elif refuted:
        verdict, against, deciding = "refuted", [], refuted
    else:
        verdict, against, deciding = "inconclusive", [], []
    sides = {"supported": [names[i] for i in supported], "refuted": [names[i] for i in refuted],
             "against (not significant)": [names[i] for i in against],
             "does not apply": [names[i] for i in range(k) if not applies[i]],
             "set aside": [names[i] for i in range(k) if applies[i] and set_aside[i]]}
    return ClaimVerdict(verdict, tuple(i in deciding for i in range(k)), sides)


def combine(row_verdicts: Sequence[str], leans: Sequence[str] | None = None, applies: Sequence[bool] | None = None,
            set_aside: Sequence[str] | None = None) -> str:
    """A claim's verdict from its rows' (see the module docstring and `combine_rows`)."""
    return combine_rows(row_verdicts, leans, applies, set_aside=set_aside).verdict


def _family_name(owner: Any) -> str:
    return getattr(owner, "id", None) or "rows decided together"


def decide(rows: Sequence[tuple[Any, Evidence]], rules: Sequence[Rule]) -> list[tuple[Comparison, float, str]]:
    """Decide every row with its rule; the sampled rows of each owner (the first element of each
    pair: a claim) form one Bonferroni family. Returns (comparison, adjusted p of the outcome
    reached or, if none, the smaller of the two, verdict) per row, in order."""
    rows, rules = list(rows), list(rules)
    if len(rows) != len(rules):
        raise ValueError(f"{len(rows)} rows but {len(rules)} rules")
    sizes: dict[int, int] = {}
    for owner, evidence in rows:
        if not evidence.exact:
            sizes[id(owner)] = sizes.get(id(owner), 0) + 1
    decided = []
    for (owner, evidence), rule in zip(rows, rules):
        size = sizes.get(id(owner), 1)
        family = Family(f"{_family_name(owner)}: {size} sampled row{'s' if size != 1 else ''}", size)
        result = rule.decide(evidence, family)
        p = {"supported": result.p_support, "refuted": result.p_refute}.get(
            result.verdict, min(result.p_support, result.p_refute))
        decided.append((result, float(p), result.verdict))
    return decided


__all__ = ["ClaimVerdict", "Equivalence", "Evidence", "NonInferiority", "PairedDifference", "RowResult", "Rule", "VERDICTS", "Verdict", "combine", "combine_rows",
           "decide", "lean", "equivalence", "holm", "non_inferiority", "paired_difference", "row_verdict"]
