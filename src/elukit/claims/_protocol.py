"""The frozen protocol: everything that decides a verdict, serialised canonically and hashed.

Claims (statements, quantities, predictions, regimes), measurements (their descriptions and the
constants they use), rules (hypothesis, margin, test, confidence), the combination of rows into a
claim's verdict, the regimes' models and learning-rate grids, the profiles (seeds, tuning seeds,
datasets, caps, patience, depths) and the statistics' conventions. `protocol()` is that record;
`protocol_sha256()` the SHA-256 of its canonical JSON (keys sorted, no whitespace, ASCII, floats
as Python writes them). Every ledger carries the hash at the top of ledger.json and of each page;
docs/claims.md lists every protocol version with its hash and what changed and why, and a test
fails when the protocol changes without a new entry there.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

PROTOCOL_VERSION = 4
"""1: the ledger of issues 12-18 (x3 grids moved after runs were seen, one row decides). 2: issue 19.
3: issue 19, second part: stopping on validation accuracy alone, MNIST-1D's generated validation set,
the quick profile's 3-point grids and its deep regime on digits and breast cancer only (docs/claims.md).
4: an opposite estimate disagrees only where its interval excludes the deciding rows' estimates; the
controls at every grid point (protocol 3's quick run failed its positive control on an uninformative row)."""


def _rule(rule: Any) -> dict[str, Any]:
    record = {"type": type(rule).__name__, "hypothesis": rule.hypothesis.kind, "margin": rule.hypothesis.margin,
              "confidence": rule.confidence, "test": rule.test, "claimed_effect": rule.claimed_effect}
    return record


def _constants() -> dict[str, Any]:
    from elukit.claims import _measures as m
    from elukit.claims._context import DEEP_REGIME, TUNING_OFFSET
    from elukit.experiments.converge import NOISE_SEED
    from elukit.experiments.data import GENERATED_VALIDATION, MNIST1D_VALIDATION_SAMPLES, MNIST1D_VALIDATION_SEED

    names = ("ALPHAS", "STDS", "SMOOTH_ALPHAS", "SMOOTH_STEPS", "SMOOTH_TOLERANCE", "VARIANCE_ACTIVATIONS",
             "VARIANCE_STARTS", "SELU_DEPTH", "DEEP_SAMPLES", "DROPOUT_RATE", "DEACTIVATION_SLOPES",
             "DEACTIVATION_POINTS", "DEACTIVATION_NOISE", "OPERATIONS", "ZERO_SHARE_LIMIT", "DEEP_MINIMUM",
             "ALPHA_GRID", "STABLE_WITHIN", "PLANTED_EFFECT")
    constants = {name: getattr(m, name) for name in names}
    constants.update(DEEP_REGIME=DEEP_REGIME, TUNING_OFFSET=TUNING_OFFSET, NOISE_SEED=NOISE_SEED,
                     validation_fraction=0.2, validation_split_seed=0, generated_validation=sorted(GENERATED_VALIDATION),
                     mnist1d_validation={"samples": MNIST1D_VALIDATION_SAMPLES, "seed": MNIST1D_VALIDATION_SEED})
    return constants


def protocol() -> dict[str, Any]:
    """The protocol as a JSON-ready record (see the module docstring)."""
    from elukit.claims._context import PROFILES, REGIMES
    from elukit.claims._registry import CLAIMS
    from elukit.claims import _rules

    return {
        "version": PROTOCOL_VERSION,
        "claims": [{"id": c.id, "statement": c.statement, "quantity": c.quantity, "predicts": c.predicts,
                    "regimes": list(c.regimes), "rule": _rule(c.rule), "expected": c.expected,
                    "measures": [{"kind": mm.kind, "name": mm.function.__name__, "description": mm.description}
                                 for mm in c.measure]} for c in CLAIMS],
        "regimes": {name: {"description": r.description, "settings": dict(r.settings), "lr_grid": list(r.lr_grid)}
                    for name, r in REGIMES.items()},
        "profiles": {name: {k: v for k, v in p.as_dict().items() if k != "compute"} for name, p in PROFILES.items()},
        "constants": _constants(),
        "rules": {"rows": _rules.__doc__, "checkpoint": "highest validation accuracy, ties: lowest validation loss",
                  "stopping": "when every member has gone `patience` epochs without a higher validation accuracy "
                              "(a tie at a lower loss is no improvement), or at the cap",
                  "test_metrics": "evaluated at every epoch that became some member's checkpoint, and epoch 0",
                  "tuning": "highest mean checkpoint validation accuracy over the tuning seeds; near-tie when the "
                            "margin over the runner-up is <= one standard error of the paired difference",
                  "pooling": "DerSimonian-Laird random effects over the tuned (not matched) sampled rows of the "
                             "claim's most common comparison, normal interval at the rule's confidence"},
    }


def canonical(record: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, ASCII, no NaN."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False,
                      default=list).encode("ascii")


def protocol_sha256() -> str:
    return hashlib.sha256(canonical(protocol())).hexdigest()


__all__ = ["PROTOCOL_VERSION", "canonical", "protocol", "protocol_sha256"]
