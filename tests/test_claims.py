"""elukit.claims: the registry, the decision rules (known effects, null false-positive rate, Holm)
and the theory measurements. The experimental measurements and the CLI are in test_claims_ledger.py."""

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from elukit.claims import (
    CLAIMS,
    CONTROLS,
    PROFILES,
    Equivalence,
    Evidence,
    NonInferiority,
    PairedDifference,
    claim_ids,
    combine,
    decide,
    get_claim,
    holm,
    paired_difference,
    select,
)

ISSUE_IDS = (
    "nonzero-gradient", "smooth-at-zero", "zero-centred", "variance-preserving-init", "faster-learning",
    "higher-accuracy", "no-dead-units", "noise-robust", "vanishing-gradient", "replaces-batch-norm",
    "helped-by-batch-norm", "selu-self-normalizes", "selu-gradients-stable", "costlier-than-relu",
    "alpha-sensitivity", "higher-learning-rate", "he-init",
)


def test_every_issue_claim_is_registered_with_its_exact_id_and_the_papers_extra_claims_too():
    ids = claim_ids()
    assert set(ISSUE_IDS) <= set(ids)
    extra = set(ids) - set(ISSUE_IDS) - set(CONTROLS)
    assert {"noise-robust-deactivation", "selu-fixed-point-attracting", "alpha-dropout-keeps-moments"} <= extra
    assert set(CONTROLS) == {"control-negative", "control-positive"}
    assert ids[-2:] == list(CONTROLS)  # controls close the ledger


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_claim_records_are_frozen_and_complete(claim):
    with pytest.raises(dataclasses.FrozenInstanceError):
        claim.id = "changed"
    assert claim.statement.endswith(".") and claim.sources and claim.quantity and claim.predicts
    assert claim.measurement in ("theory", "experiments", "both")
    assert claim.regimes and claim.measure and claim.rule.describe()


def test_unknown_claim_ids_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown claim 'bogus'; known claims: nonzero-gradient, smooth-at-zero"):
        select("smooth-at-zero,bogus")
    with pytest.raises(ValueError, match="known claims"):
        get_claim("nope")
    with pytest.raises(ValueError, match="names no claim"):
        select(" , ")
    chosen = [c.id for c in select("he-init,smooth-at-zero")]
    assert chosen == ["smooth-at-zero", "he-init", "control-negative", "control-positive"]


# -- decision rules on synthetic data with known effects ------------------------------------------------
def _verdict(rule, differences, exact=False):
    evidence = Evidence("synthetic", "a - b", np.asarray(differences, dtype=float), exact)
    ((result, adjusted, row),) = decide([(None, evidence)], [rule])
    return combine([row])


def _effects(rule):
    """(differences implying 'supported', differences implying 'refuted') for a rule."""
    rng = np.random.default_rng(0)
    noise = rng.normal(size=10)
    if isinstance(rule, PairedDifference):
        if rule.alternative == "two-sided":
            return 1.0 + 0.1 * noise, 0.01 * rule.margin * noise
        sign = 1.0 if rule.alternative == "greater" else -1.0
        return sign * (1.0 + 0.1 * noise), -sign * (1.0 + 0.1 * noise)
    if isinstance(rule, Equivalence):
        return 0.05 * rule.margin * noise, rule.margin * (3.0 + 0.05 * noise)
    assert isinstance(rule, NonInferiority)
    return rule.margin * (1.0 + 0.1 * noise), -rule.margin * (3.0 + 0.1 * noise)


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_each_claims_rule_returns_the_verdict_a_known_effect_implies(claim):
    supported, refuted = _effects(claim.rule)
    assert _verdict(claim.rule, supported) == "supported"
    assert _verdict(claim.rule, refuted) == "refuted"
    assert _verdict(claim.rule, supported[:1], exact=True) == "supported"
    assert _verdict(claim.rule, refuted[:1], exact=True) == "refuted"


def test_an_effect_the_data_cannot_resolve_is_inconclusive():
    rng = np.random.default_rng(1)
    assert _verdict(paired_difference("greater"), 0.05 + rng.normal(size=5)) == "inconclusive"
    assert _verdict(Equivalence(0.1), rng.normal(size=5)) == "inconclusive"
    assert _verdict(paired_difference("less"), np.zeros(6)) == "inconclusive"  # no difference at all: no NaN, no warning


def test_verdicts_combine_across_regimes():
    assert combine(["supported", "inconclusive"]) == "supported"
    assert combine(["supported", "refuted"]) == "mixed"
    assert combine(["refuted", "inconclusive"]) == "refuted"
    assert combine(["inconclusive", "inconclusive"]) == "inconclusive"


def test_interval_and_p_value_are_scipys_paired_t_test():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 1.0, 12), rng.normal(0.4, 1.0, 12)
    ((result, _, _),) = decide([(None, Evidence("s", "a - b", a - b))], [paired_difference("greater")])
    reference = stats.ttest_rel(a, b, alternative="greater")
    # one-sided p doubled: the printed interval is two-sided, each side at half the level
    assert result.p_support == pytest.approx(2 * reference.pvalue, rel=1e-12)
    interval = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-12)


@pytest.mark.parametrize("rule,shift", [
    (PairedDifference("greater"), 0.0), (PairedDifference("less"), 0.0), (NonInferiority(0.5), -0.5),
    (Equivalence(0.5), 0.5), (PairedDifference("two-sided", margin=0.5), 0.5),
])
def test_false_positive_rate_on_null_comparisons_is_nominal(rule, shift):
    """400 null comparisons (true difference on the boundary of the claim) of 8 normal pairs each: the
    share of decided rows (supported or refuted wrongly) stays within a 99.9% binomial interval of 5%."""
    rng = np.random.default_rng(12)
    decided = 0
    wrong_when_null = {"supported"} if shift else {"supported", "refuted"}
    if isinstance(rule, PairedDifference) and rule.alternative == "two-sided":
        wrong_when_null = {"refuted"}  # |d| = margin: "within the margin" would be the false claim
    for _ in range(400):
        decided += _verdict(rule, shift + rng.normal(size=8)) in wrong_when_null
    low, high = stats.binom.interval(0.999, 400, 0.05)
    assert decided <= high
    if not shift:
        assert decided >= low  # a two-sided decision at 5% is exactly nominal under the null


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == pytest.approx([0.5])
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, 1.5])


def test_a_claims_verdict_does_not_depend_on_which_other_claims_run():
    """Families are claims: --only on a subset cannot change a row's interval, p or verdict."""
    rng = np.random.default_rng(3)
    accuracy, lr = get_claim("higher-accuracy"), get_claim("higher-learning-rate")
    own = [(accuracy, Evidence(str(i), "d", 0.02 + 0.02 * rng.normal(size=8))) for i in range(3)]
    others = [(lr, Evidence(str(i), "d", rng.normal(size=8))) for i in range(40)]
    alone = decide(own, [accuracy.rule] * 3)
    together = decide(own + others, [accuracy.rule] * 3 + [lr.rule] * 40)[:3]
    assert [(r.ci_low, r.ci_high, p, v) for r, p, v in alone] == [(r.ci_low, r.ci_high, p, v) for r, p, v in together]
    assert alone[0][0].family.name == "higher-accuracy: 3 sampled rows" and alone[0][0].level == pytest.approx(1 - 0.05 / 3)


def test_more_rows_in_a_claim_widen_each_rows_interval():
    row = np.array([1.2, 0.3, 0.9, 1.5, 0.1, 0.8, 1.1, 0.6])
    alone = decide([(None, Evidence("a", "d", row))], [paired_difference("greater")])
    crowd = [(None, Evidence(str(i), "d", np.random.default_rng(i).normal(size=8))) for i in range(40)]
    together = decide([(None, Evidence("a", "d", row))] + crowd, [paired_difference("greater")] * 41)
    assert alone[0][2] == "supported" and together[0][2] == "inconclusive"
    assert together[0][0].ci_low < 0 < alone[0][0].ci_low  # the printed interval is the one that decides


def test_rules_refuse_bad_parameters_and_data():
    with pytest.raises(ValueError, match="alternative"):
        PairedDifference("bigger")
    with pytest.raises(ValueError, match="margin"):
        PairedDifference("two-sided")
    with pytest.raises(ValueError, match="margin"):
        Equivalence(0.0)
    with pytest.raises(ValueError, match="finite"):
        _verdict(paired_difference("greater"), [1.0, np.nan])
    assert _verdict(paired_difference("greater"), [1.0]) == "inconclusive"  # one pair decides nothing
    assert _verdict(paired_difference("greater"), []) == "inconclusive"  # every pair dropped (all seeds diverged)
    assert _verdict(paired_difference("greater"), [], exact=True) == "inconclusive"


def test_non_finite_pairs_are_dropped_and_said():
    from elukit.claims._measures import _paired

    row = _paired("r", "a - b", [1.0, np.nan, 3.0, 2.0], [0.0, 0.0, np.inf, 1.0])
    np.testing.assert_array_equal(row.differences, [1.0, 1.0])
    assert "2 of 4 pairs dropped (non-finite)" in row.note


# -- theory measurements ------------------------------------------------------------------------------------
class _Memory:
    """A stand-in for the store-backed Context of theory measurements: profile, seeds, cached, split."""

    def __init__(self, profile):
        self.profile = profile
        self.seeds = list(range(profile.seeds))

    def cached(self, key, compute):
        return compute()

    def split(self, dataset):
        from elukit.experiments.converge import validation_split
        from elukit.experiments.data import load_dataset

        return validation_split(load_dataset(dataset))


THEORY = [c for c in CLAIMS if c.measurement == "theory"]


@pytest.mark.parametrize("claim", THEORY, ids=lambda c: c.id)
def test_theory_claims_from_elukits_exact_functions(claim):
    pytest.importorskip("sklearn")
    context = _Memory(dataclasses.replace(PROFILES["tiny"], seeds=3, random_net_width=64))
    rows = [row for measurement in claim.measure for row in measurement(context)]
    outcomes = decide([(claim, row) for row in rows], [claim.rule] * len(rows))
    verdicts = {(row.regime, row.comparison): outcome[2] for row, outcome in zip(rows, outcomes)}
    exact = {row.regime: row for row in rows if row.exact}
    starts = {f"theory {a}": "supported" for a in ("elu", "elu:alpha=2", "selu", "tanh", "gelu", "silu")}
    expected = {
        "smooth-at-zero": {"theory": "supported"},
        # the derived gain keeps q = 1 exactly; from q0 = 0.25 or 4 ELU, SELU and tanh return to it, GELU and SiLU
        # (an unstable fixed point) run away
        "variance-preserving-init": starts | {"theory elu, q0 = 4": "supported", "theory selu, q0 = 0.25": "supported",
                                              "theory gelu, q0 = 4": "refuted", "theory silu, q0 = 0.25": "refuted"},
        # ELU saturates: quieter than Leaky ReLU below the crossover, which moves up as the slope grows
        "noise-robust-deactivation": {"theory slope 0.01": "inconclusive", "theory slope 0.1": "supported",
                                      "theory slope 0.3": "supported"},
        "selu-fixed-point-attracting": {"theory": "supported"},
        "alpha-dropout-keeps-moments": {"Monte Carlo": "supported"},
        # sigmoid's gradient vanishes by e^-29 over 32 layers at its derived gain; tanh's by e^-2.5; ELU's grows by e^0.5
        "vanishing-gradient": {"theory L=32": "supported", "deep-fc L=32/wine": "supported"},
        # SELU at LeCun normal: chi_1 = 1.07, so 0.5 * 31 * ln chi_1 = 1.07 > ln 2 over 32 layers: the claim fails there
        "selu-gradients-stable": {"theory L=32": "refuted"},
        "selu-self-normalizes": {"theory": "supported", "random SELU MLP": "supported"},
    }[claim.id]
    for regime, verdict in expected.items():
        assert all(v == verdict for (r, _), v in verdicts.items() if r == regime), (regime, verdicts)
        assert any(r == regime for r, _ in verdicts), regime
    if claim.id == "variance-preserving-init":
        for regime, row in exact.items():
            if "q0" not in regime:
                assert abs(row.differences[0]) < 1e-12  # propagate at the derived gain from q* = 1: variance kept exactly
        assert all(row.depth == 32 and "forward gain" in row.fields["gain_mismatch"] for row in rows)
    assert all(row.depth is not None for row in rows if "L=" in row.regime or "MLP" in row.regime)


def test_depth_claims_put_the_mean_field_prediction_beside_the_measurement():
    """Deep MLPs at initialisation on real inputs: the measured ln gradient ratio lies near
    0.5 (L - 1) ln chi_1 (within finite-width error), for an exploding, a stable and a vanishing case."""
    pytest.importorskip("sklearn")
    from elukit.claims._measures import _deep, predicted_log_ratio

    context = _Memory(dataclasses.replace(PROFILES["tiny"], seeds=3, random_net_width=128))
    for activation, tolerance in (("selu", 0.5), ("elu", 0.5), ("tanh", 1.0)):
        measured = np.mean([v["log_ratio"] for v in _deep(context, activation, 32)])
        assert measured == pytest.approx(predicted_log_ratio(activation, 32), abs=tolerance), activation


def test_smoothness_is_read_from_the_function_not_the_kernels_convention():
    from elukit.claims._measures import derivative_jump

    assert abs(derivative_jump(1.0, 1e-6)) < 1e-5
    assert derivative_jump(0.5, 1e-6) == pytest.approx(0.5, abs=1e-5)
    assert derivative_jump(2.0, 1e-6) == pytest.approx(-1.0, abs=1e-5)


def test_deactivation_crossover_moves_towards_zero_as_the_leaky_slope_grows():
    from elukit.claims._measures import crossover

    points = [crossover(slope) for slope in (0.01, 0.05, 0.1, 0.2, 0.3)]
    assert all(a < b < 0 for a, b in zip(points, points[1:]))
    assert points[2] == pytest.approx(-2.49, abs=0.01)


def test_theory_parts_of_mixed_claims():
    context = _Memory(dataclasses.replace(PROFILES["tiny"], seeds=3, random_net_width=64))
    sparsity = get_claim("nonzero-gradient").measure[0](context)[0]
    assert sparsity.exact and np.all(sparsity.differences == -0.5)  # P[f'=0]: ELU 0, ReLU 1/2 exactly
    mean_rows = get_claim("zero-centred").measure[0](context)
    assert all(r.exact and np.all(r.differences < 0) for r in mean_rows)
    # ELU(alpha=1), z ~ N(0, 1): E f = 1/sqrt(2 pi) + e^(1/2) Phi(-1) - 1/2 (closed form by hand)
    elu_mean = 1 / np.sqrt(2 * np.pi) + np.exp(0.5) * stats.norm.cdf(-1) - 0.5
    assert elu_mean == pytest.approx(mean_rows[0].treatment[4], rel=1e-12)
    selu = get_claim("selu-self-normalizes").measure[0](context)
    assert selu[0].exact and selu[0].differences[0] < 1e-9  # SELU's constants put the fixed point at (0, 1)


# -- a claim's verdict respects every row ------------------------------------------------------------------
def test_a_set_aside_row_neither_supports_nor_opposes():
    from elukit.claims import combine_rows

    reason = "rates 0.004 and 0.016 differ on a near-tie; the matched-rate rows decide"
    alone = combine_rows(["supported", "inconclusive"], ["supported", "refuted"], names=["tuned", "matched"],
                         set_aside=[reason, ""])
    assert alone.verdict == "inconclusive" and alone.decides == (False, False)
    assert alone.sides["set aside"] == ["tuned"]
    kept = combine_rows(["inconclusive", "supported"], ["refuted", "supported"], names=["tuned", "matched"],
                        set_aside=[reason, ""])
    assert kept.verdict == "supported" and kept.decides == (False, True)  # its opposite lean does not count either
    with pytest.raises(ValueError, match="set_aside"):
        combine_rows(["supported"], set_aside=[])


def test_one_supporting_row_cannot_outvote_a_large_opposite_estimate():
    """higher-accuracy supported on one row while another row's estimate is opposite, not significant,
    and its interval excludes the supporting estimate: mixed, naming the regimes on each side, and
    both rows decide."""
    from elukit.claims import combine_rows, lean

    rule = get_claim("higher-accuracy").rule
    rng = np.random.default_rng(4)
    rows = [(None, Evidence("shallow/mnist1d", "accuracy elu - relu", 0.036 + 0.004 * rng.normal(size=8))),
            (None, Evidence("deep/mnist1d", "accuracy elu - relu",
                            -0.02 + 0.038 * ((z := rng.normal(size=8)) - z.mean()) / z.std(ddof=1))),
            (None, Evidence("deep/digits", "accuracy elu - relu", 0.01 + 0.3 * (z := rng.normal(size=8)) - 0.3 * z.mean()))]
    outcomes = decide(rows, [rule] * 3)
    assert [o[2] for o in outcomes] == ["supported", "inconclusive", "inconclusive"]
    leans = [lean(o[0]) for o in outcomes]
    assert leans == ["supported", "refuted", "supported"]
    intervals = [(o[0].effect, o[0].ci_low, o[0].ci_high) for o in outcomes]
    assert intervals[1][1] < 0 < intervals[1][2] < intervals[0][0]  # not significant, yet incompatible with +3.6
    combined = combine_rows([o[2] for o in outcomes], leans, names=[e.regime for _, e in rows], intervals=intervals)
    assert combined.verdict == "mixed" and combined.decides == (True, True, False)
    assert combined.sides["supported"] == ["shallow/mnist1d"]
    assert combined.sides["against (not significant)"] == ["deep/mnist1d"]
    assert "supported in shallow/mnist1d; against (not significant) in deep/mnist1d" == combined.describe()
    # the same rows where every other estimate points the predicted way: supported, one row decides
    agreeing = combine_rows(["supported", "inconclusive", "inconclusive"], ["supported", "supported", "inconclusive"])
    assert agreeing.verdict == "supported" and agreeing.decides == (True, False, False)


def test_an_opposite_estimate_too_uncertain_to_exclude_the_effect_does_not_disagree():
    """The positive control of protocol 3's quick run: 3 planted points found in four rows, and a fifth
    row whose seeds partly diverged (two of eight at chance) with its estimate at -11 points but its
    interval [-49, +27] holding every supported estimate: it is compatible with them, so supported.
    The same estimate with an interval that excludes them disagrees: mixed."""
    from elukit.claims import combine_rows

    verdicts, leans = ["supported", "supported", "inconclusive"], ["supported", "supported", "refuted"]
    wide = [(0.030, 0.012, 0.048), (0.033, 0.022, 0.044), (-0.110, -0.492, 0.272)]
    assert combine_rows(verdicts, leans, intervals=wide).verdict == "supported"
    assert combine_rows(verdicts, leans, intervals=wide).decides == (True, True, False)
    narrow = wide[:2] + [(-0.020, -0.050, 0.010)]
    assert combine_rows(verdicts, leans, intervals=narrow).verdict == "mixed"
    assert combine_rows(verdicts, leans).verdict == "mixed"  # no intervals: every opposite estimate counts
    # the mirror case: refuted rows and an uncertain row leaning the other way
    assert combine_rows(["refuted", "inconclusive"], ["refuted", "supported"],
                        intervals=[(-0.05, -0.08, -0.02), (0.01, -0.20, 0.22)]).verdict == "refuted"
    with pytest.raises(ValueError, match="intervals"):
        combine_rows(["supported"], intervals=[])


def test_rows_outside_a_claims_scope_are_shown_and_never_decide():
    from elukit.claims import combine_rows

    combined = combine_rows(["refuted", "supported"], ["refuted", "supported"], applies=[False, True],
                            names=["depth 2", "depth 32"])
    assert combined.verdict == "supported" and combined.decides == (False, True)
    assert combined.sides["does not apply"] == ["depth 2"]
    assert combine_rows(["refuted", "supported"], ["refuted", "supported"]).verdict == "mixed"
    assert combine_rows(["refuted", "inconclusive"], ["refuted", "supported"]).verdict == "mixed"
    assert combine_rows(["refuted", "inconclusive"], ["refuted", "refuted"]).verdict == "refuted"
    assert combine_rows(["inconclusive", "inconclusive"], ["supported", "refuted"]).verdict == "inconclusive"
    with pytest.raises(ValueError, match="one entry per row"):
        combine_rows(["supported"], ["supported", "refuted"])


# -- the frozen protocol -----------------------------------------------------------------------------------------
def test_the_protocol_is_canonical_and_any_change_changes_its_hash():
    from elukit.claims import protocol, protocol_sha256
    from elukit.claims._protocol import canonical

    record = protocol()
    assert protocol_sha256() == protocol_sha256() and len(protocol_sha256()) == 64
    assert {"claims", "regimes", "profiles", "constants", "rules", "version"} <= set(record)
    assert record["regimes"]["shallow-adam"]["lr_grid"] == [2e-3, 4e-3, 8e-3, 1.6e-2]
    assert all(b / a <= 2 + 1e-12 for r in record["regimes"].values() for a, b in zip(r["lr_grid"], r["lr_grid"][1:]))
    assert record["profiles"]["quick"]["seeds"] >= 8 and record["profiles"]["quick"]["patience"] >= 10
    assert record["profiles"]["full"]["seeds"] >= 16 and max(record["profiles"]["full"]["deep_depths"]) == 64
    changed = json.loads(canonical(record))
    changed["claims"][0]["rule"]["margin"] = 0.01
    assert canonical(changed) != canonical(record)
    assert canonical({"b": 1, "a": [1.5, None]}) == b'{"a":[1.5,null],"b":1}'


def test_docs_list_the_current_protocol_version_and_hash():
    """A change to claims, measures, regimes, grids, margins, rules or seeds changes the hash; this fails
    until docs/claims.md lists the new version with what changed and why."""
    from pathlib import Path

    from elukit.claims import PROTOCOL_VERSION, protocol_sha256

    docs = (Path(__file__).parent.parent / "docs" / "claims.md").read_text()
    assert f"| {PROTOCOL_VERSION} | `{protocol_sha256()}` |" in docs
