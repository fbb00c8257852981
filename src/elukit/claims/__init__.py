"""elukit.claims: every claim made for ELU and SELU, decided from evidence.

One frozen `Claim` record per claim (`CLAIMS`): the statement, its sources, the quantity that
decides it, the predicted direction, its measurements (theory and/or experiments) and the decision
rule, all fixed before any run. `run_ledger` measures and decides; `write_ledger` writes
ledger.json, ledger.md and ledger.html. The CLI is ``elukit claims``; see docs/claims.md.

>>> from elukit.claims import get_claim
>>> get_claim("zero-centred").predicts
'elu - relu < 0 (and mean falls as alpha grows)'
"""

from elukit.claims._context import PROFILES, REGIMES, Arm, ArmResult, Context, Profile, Regime, Tuned, check_profile, choose_rate
from elukit.claims._protocol import PROTOCOL_VERSION, protocol, protocol_sha256
from elukit.claims._ledger import run_ledger, table_rows, verdicts, write_ledger
from elukit.claims._registry import CLAIMS, CONTROLS, Claim, claim_ids, get_claim, select
from elukit.claims._rules import (
    VERDICTS,
    ClaimVerdict,
    Equivalence,
    Evidence,
    NonInferiority,
    PairedDifference,
    RowResult,
    combine,
    combine_rows,
    decide,
    equivalence,
    holm,
    lean,
    non_inferiority,
    paired_difference,
    row_verdict,
)

__all__ = [
    "CLAIMS", "CONTROLS", "PROFILES", "REGIMES", "VERDICTS", "Arm", "ArmResult", "Claim", "ClaimVerdict", "Context", "Equivalence", "Evidence",
    "NonInferiority", "PairedDifference", "Profile", "Regime", "RowResult", "PROTOCOL_VERSION", "check_profile", "choose_rate", "claim_ids", "protocol", "protocol_sha256", "combine", "combine_rows", "lean",
    "decide", "equivalence", "get_claim", "holm", "non_inferiority", "paired_difference", "row_verdict", "run_ledger",
    "select", "table_rows", "Tuned", "verdicts", "write_ledger",
]
