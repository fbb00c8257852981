"""The claims: one frozen, declarative `Claim` per statement made for ELU and SELU.

A new claim is one record here: what was said, by whom, the quantity that decides it, the
direction predicted, how it is measured (`elukit.claims._measures`) and the decision rule
(`elukit.claims._rules`), all fixed before any run. The verdict is computed, never typed.
"""

from __future__ import annotations

import dataclasses

from elukit.claims import _measures as m
from elukit.claims._rules import Rule, equivalence, non_inferiority, paired_difference

CLEVERT = "Clevert, Unterthiner & Hochreiter 2016, ELU paper (arXiv:1511.07289)"
KLAMBAUER = "Klambauer, Unterthiner, Mayr & Hochreiter 2017, SELU paper (arXiv:1706.02515)"
TUTORIALS = "common in tutorials and blog posts"


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim and how it is decided.

    Attributes:
        id: short kebab-case name (``zero-centred``).
        statement: the claim in one sentence.
        sources: who makes it (paper and section, or tutorials).
        quantity: the number that decides it, in words.
        predicts: the direction the claim predicts, in terms of `quantity`.
        measure: the measurements (theory and/or experiments), each returning evidence rows.
        regimes: where it is measured (``theory``, ``shallow-adam``, ``deep-sgd``, ...).
        rule: the decision rule applied to every row.
        expected: for controls, the verdict a sound ledger must give; None for claims.
    """

    id: str
    statement: str
    sources: tuple[str, ...]
    quantity: str
    predicts: str
    measure: tuple[m.Measurement, ...]
    regimes: tuple[str, ...]
    rule: Rule
    expected: str | None = None

    @property
    def measurement(self) -> str:
        """theory, experiments or both."""
        kinds = {measurement.kind for measurement in self.measure}
        return "both" if len(kinds) > 1 else kinds.pop()

    @property
    def is_control(self) -> bool:
        return self.expected is not None


TRAINING = ("shallow-adam", "deep-sgd")

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="nonzero-gradient",
        statement="ELU's derivative is never zero: gradient sparsity 0 against ReLU's 1/2.",
        sources=(f"{CLEVERT}, sec. 3", TUTORIALS),
        quantity="share of inputs with f'(x) = 0: Gaussian theory, and measured in training (ELU against ReLU; and "
                 "ELU's share of exactly-zero derivatives in float32 training at the highest stable rate against 0.1%)",
        predicts="elu - relu < 0, and elu's share - 0.001 < 0",
        measure=(m.theory_gradient_sparsity, m.trained_gradient_sparsity),
        regimes=("theory",) + TRAINING,
        rule=paired_difference("less"),
    ),
    Claim(
        id="smooth-at-zero",
        statement="ELU's derivative is continuous at 0 exactly when alpha = 1.",
        sources=(f"{CLEVERT}, sec. 3 (ELU is differentiable at 0 for alpha = 1)", TUTORIALS),
        quantity="agreement of 'f' continuous at 0' (one-sided difference quotients of f across 0, three steps) with "
                 "'alpha = 1' over a grid of alpha (+1 agrees, -1 not)",
        predicts="agreement > 0 at every alpha",
        measure=(m.theory_derivative_jump,),
        regimes=("theory",),
        rule=paired_difference("greater"),
    ),
    Claim(
        id="zero-centred",
        statement="ELU's mean activation is closer to zero than ReLU's, and alpha tunes it.",
        sources=(f"{CLEVERT}, sec. 2-3", TUTORIALS),
        quantity="|mean activation|: Gaussian theory over alpha and input scale, and per hidden layer in training; "
                 "theory also: the mean's change as alpha grows",
        predicts="elu - relu < 0 (and mean falls as alpha grows)",
        measure=(m.theory_mean_activation, m.trained_mean_activation),
        regimes=("theory",) + TRAINING,
        rule=paired_difference("less"),
    ),
    Claim(
        id="variance-preserving-init",
        statement="An initialization derived from E[f(z)^2] keeps the forward variance through depth.",
        sources=("elukit.theory.gain", f"{KLAMBAUER}, sec. 2 (the variance map)"),
        quantity="ln q_L, the pre-activation variance after L layers (quick 32) with the derived gain, from the fixed "
                 "point (q0 = 1) and perturbed starts (q0 = 0.25, 4): mean-field theory and real random MLPs, "
                 "ELU, ELU alpha 2, SELU, tanh, GELU and SiLU",
        predicts="|ln q_L| < ln 1.25",
        measure=(m.variance_through_depth,),
        regimes=("theory", "random nets"),
        rule=equivalence(0.2231),
    ),
    Claim(
        id="faster-learning",
        statement="ELU reaches a given training loss in fewer epochs than ReLU.",
        sources=(f"{CLEVERT}, abstract and sec. 4", TUTORIALS),
        quantity="epochs to a training loss every seed of both reaches (tuned and matched learning rates)",
        predicts="elu - relu < 0",
        measure=(m.epochs_to_loss,),
        regimes=TRAINING,
        # protocol 2: the paired t test. Epoch counts are discrete, but with matched-rate rows the claim's family
        # holds 5 rows per setting, and at 8 seeds the exact sign-flip test cannot reject at level 1 - 0.05/30
        # at all (its smallest two-sided p is 2/256); differences of epoch counts spread over many values
        rule=paired_difference("less"),
    ),
    Claim(
        id="higher-accuracy",
        statement="ELU ends with higher test accuracy than ReLU.",
        sources=(f"{CLEVERT}, sec. 4", TUTORIALS),
        quantity="test accuracy of converged models (checkpoint on validation accuracy; tuned and matched learning rates)",
        predicts="elu - relu > 0",
        measure=(m.test_accuracy_elu_relu,),
        regimes=TRAINING,
        rule=paired_difference("greater"),
    ),
    Claim(
        id="no-dead-units",
        statement="ELU units do not die, ReLU units do, more so at high learning rates.",
        sources=(TUTORIALS,),
        quantity="dead-unit fraction at the last epoch, at the highest learning rate of the grid where no run diverged",
        predicts="elu - relu < 0",
        measure=(m.dead_units_high_lr,),
        regimes=TRAINING,
        rule=paired_difference("less"),
    ),
    Claim(
        id="noise-robust",
        statement="ELU networks are more robust than ReLU networks to noise in the input.",
        sources=(TUTORIALS, f"{CLEVERT}, sec. 3 (noise-robust deactivation state)"),
        quantity="test accuracy lost to Gaussian input noise (std 0.5)",
        predicts="elu - relu < 0",
        measure=(m.noise_drop,),
        regimes=TRAINING,
        rule=paired_difference("less"),
    ),
    Claim(
        id="vanishing-gradient",
        statement="ELU mitigates vanishing gradients better than sigmoid and tanh in deep networks.",
        sources=(TUTORIALS, f"{CLEVERT}, sec. 1"),
        quantity="|ln(gradient norm at the first hidden layer / at the last)| in deep MLPs (depth >= 32) at "
                 "initialisation, and its mean-field prediction",
        predicts="elu - sigmoid < 0 and elu - tanh < 0",
        measure=(m.gradient_ratio_vs_saturating,),
        regimes=("theory", "deep-fc"),
        rule=paired_difference("less"),
    ),
    Claim(
        id="replaces-batch-norm",
        statement="ELU without batch norm does as well as ReLU with batch norm.",
        sources=(f"{CLEVERT}, sec. 4.1", TUTORIALS),
        quantity="test accuracy, ELU without against ReLU with batch norm (tuned and matched learning rates)",
        predicts="elu - (relu + bn) > -0.01 (within 1 percentage point, or better)",
        measure=(m.test_accuracy_elu_vs_relu_bn,),
        regimes=TRAINING,
        rule=non_inferiority(0.01),
    ),
    Claim(
        id="helped-by-batch-norm",
        statement="ELU with batch norm does better than ELU without.",
        sources=(TUTORIALS, f"{CLEVERT}, sec. 4.1 (reports the opposite)"),
        quantity="test accuracy (tuned and matched learning rates)",
        predicts="(elu + bn) - elu > 0",
        measure=(m.test_accuracy_elu_bn,),
        regimes=TRAINING,
        rule=paired_difference("greater"),
    ),
    Claim(
        id="selu-self-normalizes",
        statement="In deep SELU networks without normalization, activations stay near mean 0 and variance 1.",
        sources=(f"{KLAMBAUER}, sec. 2-3",),
        quantity="max(|mean|, |variance - 1|) of SELU activations: the map's fixed point, random deep nets "
                 "(Gaussian and real inputs, depth >= 32); trained shallow nets shown only",
        predicts="distance < 0.25",
        measure=(m.selu_normalization_theory, m.selu_trained_moments),
        regimes=("theory", "random nets", "deep-fc") + TRAINING,
        rule=equivalence(0.25),
    ),
    Claim(
        id="selu-gradients-stable",
        statement="In deep SELU networks gradients neither vanish nor explode.",
        sources=(f"{KLAMBAUER}, sec. 3 (Theorems 2-3)",),
        quantity="ln(gradient norm at the first hidden layer / at the last) in deep SELU MLPs (depth >= 32) at "
                 "initialisation, for the stated depth; and its mean-field prediction 0.5 (L - 1) ln chi_1",
        predicts="|ln ratio| < ln 2 at the stated depth",
        measure=(m.selu_gradient_ratio,),
        regimes=("theory", "deep-fc"),
        rule=equivalence(0.6931),
    ),
    Claim(
        id="costlier-than-relu",
        statement="ELU costs more compute than ReLU.",
        sources=(TUTORIALS,),
        quantity="ln(thread CPU time per training step, ELU / ReLU), interleaved, min of 3; and exp count per element",
        predicts="ln ratio > 0",
        measure=(m.step_cost,),
        regimes=TRAINING,
        rule=paired_difference("greater"),
    ),
    Claim(
        id="alpha-sensitivity",
        statement="ELU's results depend on the choice of alpha.",
        sources=(TUTORIALS,),
        quantity="test accuracy, alpha in {0.5, 1, 2} pairwise, each alpha at its own tuned rate (and 2 vs 0.5 matched)",
        predicts="difference != 0 (refuted if within 0.5 percentage points)",
        measure=(m.alpha_accuracy,),
        regimes=TRAINING,
        rule=paired_difference("two-sided", margin=0.005),
    ),
    Claim(
        id="higher-learning-rate",
        statement="ELU works best with a somewhat higher learning rate than ReLU.",
        sources=(TUTORIALS,),
        quantity="log2 of the largest rate within 1 validation-accuracy point of the seed's best (whole curve)",
        predicts="elu - relu > 0",
        measure=(m.best_learning_rate,),
        regimes=TRAINING,
        rule=paired_difference("greater", test="sign-flip"),  # grid steps: discrete, often tied
    ),
    Claim(
        id="he-init",
        statement="He initialization suits ELU (against elukit's derived gain).",
        sources=(TUTORIALS,),
        quantity="test accuracy of ELU nets, He init against the derived gain, each with its rate tuned per init",
        predicts="he - gain > -0.01 (within 1 percentage point, or better)",
        measure=(m.he_against_gain,),
        regimes=TRAINING,
        rule=non_inferiority(0.01),
    ),
    # -- claims of the two papers that the list above misses --------------------------------------
    Claim(
        id="noise-robust-deactivation",
        statement="ELU saturates to a negative value for large negative inputs, so its deactivation state is robust "
                  "to noise (unlike Leaky ReLU).",
        sources=(f"{CLEVERT}, sec. 3",),
        quantity="std of f(x + noise) for x in {-3, -5, -8}, noise std 0.5, per Leaky ReLU slope in "
                 "{0.01, 0.05, 0.1, 0.2, 0.3}; the crossover input per slope",
        predicts="elu - leaky_relu < 0",
        measure=(m.deactivation_noise,),
        regimes=("theory",),
        rule=paired_difference("less"),
    ),
    Claim(
        id="selu-fixed-point-attracting",
        statement="SELU's mean/variance map has an attracting fixed point at (0, 1): nearby statistics move towards it.",
        sources=(f"{KLAMBAUER}, sec. 3 (Theorem 1)",),
        quantity="spectral radius of the map's Jacobian minus 1; distance from (0, 1) in random SELU nets, "
                 "last layer minus first",
        predicts="< 0",
        measure=(m.selu_attraction,),
        regimes=("theory", "random nets"),
        rule=paired_difference("less"),
    ),
    Claim(
        id="alpha-dropout-keeps-moments",
        statement="Alpha dropout keeps the mean and variance of SELU activations.",
        sources=(f"{KLAMBAUER}, sec. 3 (alpha dropout)",),
        quantity="max(|mean|, |variance - 1|) after alpha dropout (rate 0.1) of SELU(N(0, 1))",
        predicts="distance < 0.02",
        measure=(m.alpha_dropout_moments,),
        regimes=("Monte Carlo",),
        rule=equivalence(0.02),
    ),
    Claim(
        id="selu-beats-relu",
        statement="Self-normalizing networks (SELU, no normalization) outperform ReLU networks.",
        sources=(f"{KLAMBAUER}, sec. 4",),
        quantity="test accuracy (tuned and matched learning rates)",
        predicts="selu - relu > 0",
        measure=(m.test_accuracy_selu_relu,),
        regimes=TRAINING,
        rule=paired_difference("greater"),
    ),
    # -- controls, run with every ledger ------------------------------------------------------------
    Claim(
        id="control-negative",
        statement="Negative control: one configuration trained on two sets of seeds differs.",
        sources=("elukit",),
        quantity="test accuracy, seeds n..2n-1 against seeds 0..n-1, each tuned on its own tuning seeds (A/A)",
        predicts="difference > 0 (must come out inconclusive)",
        measure=(m.negative_control,),
        regimes=TRAINING,
        rule=paired_difference("greater"),
        expected="inconclusive",
    ),
    Claim(
        id="control-positive",
        statement="Positive control: a planted effect of 3 accuracy points is detected.",
        sources=("elukit",),
        quantity="test accuracy, (seeds n..2n-1 + 0.03) against seeds 0..n-1, each tuned on its own tuning seeds",
        predicts="difference > 0 (must come out supported)",
        measure=(m.positive_control,),
        regimes=TRAINING,
        rule=paired_difference("greater"),
        expected="supported",
    ),
)

_BY_ID = {claim.id: claim for claim in CLAIMS}
assert len(_BY_ID) == len(CLAIMS), "claim ids must be unique"
CONTROLS: tuple[str, ...] = tuple(claim.id for claim in CLAIMS if claim.is_control)


def claim_ids() -> list[str]:
    """Every claim id, in ledger order (controls last)."""
    return list(_BY_ID)


def get_claim(claim_id: str) -> Claim:
    """The claim `claim_id`; an unknown id raises ValueError listing the known ones."""
    if claim_id not in _BY_ID:
        raise ValueError(f"unknown claim {claim_id!r}; known claims: {', '.join(_BY_ID)}")
    return _BY_ID[claim_id]


def select(only: str | None) -> list[Claim]:
    """The claims named in a comma-separated `only` (all when None), in ledger order, with the
    controls always included."""
    if only is None:
        return list(CLAIMS)
    wanted = [part.strip() for part in only.split(",") if part.strip()]
    if not wanted:
        raise ValueError("--only names no claim; known claims: " + ", ".join(_BY_ID))
    unknown = [w for w in wanted if w not in _BY_ID]
    if unknown:
        raise ValueError(f"unknown claim{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"known claims: {', '.join(_BY_ID)}")
    chosen = set(wanted) | set(CONTROLS)
    return [claim for claim in CLAIMS if claim.id in chosen]


__all__ = ["CLAIMS", "CONTROLS", "Claim", "claim_ids", "get_claim", "select"]
