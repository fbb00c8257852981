"""Run claims into a ledger and write it: OUT/claims/ledger.json, ledger.md, ledger.html.

The measurements read and write OUT/results.db (the store of `elukit compare`); the ledger files
are written atomically (a temporary file renamed over the old one).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elukit.claims._context import LEDGER_SCHEMA, REGIMES, Context, Profile, independent_arms, prefetch, trained_width
from elukit.claims._registry import Claim
from elukit._files import atomic_output
from elukit._provenance import provenance, provenance_line
from elukit.claims._rules import combine, decide
from elukit.experiments.store import Store


def _open_ledger(store: Store, profile: Profile, resume: bool) -> int:
    with store.transaction() as db:
        for statement in filter(str.strip, LEDGER_SCHEMA.split(";")):
            db.execute(statement)
    from elukit.claims._protocol import protocol_sha256

    settings = {"profile": profile.as_dict(), "protocol_sha256": protocol_sha256()}
    if resume:
        row = store.connection.execute("SELECT id, settings FROM claims_ledger ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            raise ValueError(f"--resume: {store.path} holds no claims ledger to resume")
        stored = json.loads(row[1])
        if stored != settings:
            if stored.get("protocol_sha256") != settings["protocol_sha256"]:
                raise ValueError(f"--resume refused: ledger {row[0]} in {store.path} was measured under protocol "
                                 f"{stored.get('protocol_sha256', 'unrecorded (version 1)')}, this elukit's is "
                                 f"{settings['protocol_sha256']}; start a new --out")
            old, new = stored["profile"], settings["profile"]
            details = "; ".join(f"{k}: stored {old.get(k)!r}, given {new.get(k)!r}"
                                for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            raise ValueError(f"--resume refused: the arguments differ from ledger {row[0]} in {store.path} ({details})")
        return int(row[0])
    with store.transaction() as db:
        cursor = db.execute("INSERT INTO claims_ledger (created, settings) VALUES (?, ?)",
                            (time.time(), json.dumps(settings, sort_keys=True)))
        return int(cursor.lastrowid)


def command_for(claim_ids: Sequence[str], profile: Profile, seeds_given: int | None) -> str:
    parts = ["elukit claims"]
    if claim_ids:
        parts.append(f"--only {','.join(claim_ids)}")
    parts.append(f"--profile {profile.name}")
    if seeds_given is not None:
        parts.append(f"--seeds {seeds_given}")
    return " ".join(parts)


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: such a value is written as null."""
    return float(value) if math.isfinite(value) else None


def run_ledger(claims: Sequence[Claim], profile: Profile, out: str | os.PathLike[str] = "elukit-results",
               resume: bool = False, seeds_given: int | None = None, progress: Callable[[str], None] | None = None,
               cache_dir: str | None = None, threads: int = 1, workers: int = 1, executor: str = "local",
               ray_address: str | None = None, command: str | None = None) -> dict[str, Any]:
    """Measure every claim, decide it, and return the ledger as a JSON-ready dict.

    Args:
        claims: the claims (`elukit.claims.select`).
        profile: the profile (`elukit.claims.PROFILES`), seeds already applied.
        out: the folder of results.db (shared with `elukit compare`).
        resume: continue the latest ledger in the store (same profile), reusing finished work.
        seeds_given: the --seeds of the command line, for the reproducing commands.
        threads: torch threads for training in this process.
        workers: processes that train the arms depending on no result (one torch thread each) before
            the measurements run; results are the same bits for any number. With the Ray executor,
            the number of those arms training at once (default: the cluster's CPUs).
        executor: "local" (worker processes on this machine) or "ray" (each such arm a Ray task,
            written by one writer on this node; `ray_address` as for `elukit compare`).
    """
    from elukit.experiments.executors import RayExecutor, make_executor
    from elukit.torch._torch import torch

    runner = RayExecutor(ray_address, workers) if executor == "ray" else None
    if runner is None:
        make_executor(executor, ray_address)  # refuses an unknown executor or a stray --ray-address
    torch.set_num_threads(threads)
    try:
        ledger = _run_ledger(claims, profile, out, resume, seeds_given, progress, cache_dir, workers, runner)
    finally:
        if runner is not None:
            runner.close()
    record = provenance(threads=threads, command=command)
    record["workers"] = workers
    record["executor"] = executor
    return {**protocol_fields(profile), "provenance": record, **ledger}


def protocol_fields(profile: Profile) -> dict[str, Any]:
    """protocol_sha256 and version first; where the run's profile departs from the protocol's (e.g.
    --seeds), the departures, said."""
    from elukit.claims._context import PROFILES
    from elukit.claims._protocol import PROTOCOL_VERSION, protocol_sha256

    frozen = PROFILES.get(profile.name)
    deviations = [] if frozen is None else [
        f"{key}: {value!r} instead of the protocol's {frozen.as_dict()[key]!r}"
        for key, value in profile.as_dict().items() if frozen.as_dict()[key] != value]
    return {"protocol_sha256": protocol_sha256(), "protocol_version": PROTOCOL_VERSION, "protocol_deviations": deviations}


def _run_ledger(claims: Sequence[Claim], profile: Profile, out: str | os.PathLike[str], resume: bool,
                seeds_given: int | None, progress: Callable[[str], None] | None, cache_dir: str | None, workers: int,
                runner: Any) -> dict[str, Any]:
    store = Store(Path(out) / "results.db")
    try:
        ledger_id = _open_ledger(store, profile, resume)
        context = Context(store, ledger_id, profile, progress, cache_dir)
        started = time.monotonic()
        arms = independent_arms([measurement for claim in claims for measurement in claim.measure], profile)
        prefetch(context, arms, workers, runner)
        measured: list[tuple[Claim, list]] = []
        for claim in claims:
            claim_started = time.monotonic()
            rows = [row for measurement in claim.measure for row in measurement(context)]
            measured.append((claim, rows))
            if progress is not None:
                progress(f"{claim.id}: measured ({time.monotonic() - claim_started:.1f} s)")
        seconds = time.monotonic() - started
    finally:
        store.close()
    flat = [(claim, row) for claim, rows in measured for row in rows]
    decided = decide(flat, [claim.rule for claim, _ in flat])
    ledger_claims = []
    position = 0
    for claim, rows in measured:
        outcomes = decided[position:position + len(rows)]
        position += len(rows)
        ledger_claims.append(_claim_record(claim, rows, outcomes, profile, seeds_given))
    return {
        "command": command_for([c.id for c in claims] if len(claims) < len(_all_ids()) else [], profile, seeds_given),
        "profile": profile.as_dict(),
        "regimes": {name: _trained_regime(name, profile) for name in profile.regimes},
        "ledger_id": ledger_id,
        "multiplicity": "Bonferroni within each claim: each claim's sampled rows are one family; every row's "
                        "interval is printed at the family-adjusted level and its verdict read off it",
        "measure_seconds": seconds,
        "claims": ledger_claims,
    }


def _trained_regime(name: str, profile: Profile) -> str:
    """The regime's description with the width this profile actually trains (its width_scale)."""
    config = REGIMES[name].config
    width = trained_width(name, profile)
    trained = f"trained here: MLP {config['depth']}x{width}"
    text = REGIMES[name].description + (f"; {trained} (width scaled by {profile.width_scale:g})"
                                        if width != config["width"] else f"; {trained}")
    grid = ", ".join(f"{lr:g}" for lr in profile.lr_grid(name))
    datasets = [d for d in profile.datasets if profile.trains(name, d)]
    left_out = [d for d in profile.datasets if not profile.trains(name, d)]
    text += f"; learning rates {grid}; on {', '.join(datasets)}"
    return text + (f" (not on {', '.join(left_out)} in the {profile.name} profile, for its compute)" if left_out else "")


def pooled_record(claim: Claim, rows: Sequence[Any], outcomes: Sequence[tuple]) -> dict[str, Any]:
    """The claim's random-effects estimate over its sampled rows (where it applies) of one quantity:
    the comparison most of those rows share (the first such when tied). Matched-rate rows reuse the
    tuned rows' seeds (they are not independent of them), so only one row per regime and dataset
    enters: the tuned one."""
    from elukit.statistics import pool_random_effects

    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if not row.exact and row.applies and row.fields.get("rate") != "matched":
            groups.setdefault(row.comparison, []).append(i)
    if not groups:
        return {"status": "no sampled rows"}
    quantity, members = max(groups.items(), key=lambda item: len(item[1]))
    try:
        pooled = pool_random_effects([rows[i].differences for i in members], outcomes[members[0]][0].hypothesis,
                                     claim.rule.confidence)
    except ValueError as error:
        return {"status": f"not pooled: {error}", "quantity": quantity, "rows": [rows[i].regime for i in members]}
    return {"status": "pooled", "quantity": quantity, "rows": [rows[i].regime for i in members], **pooled.as_dict()}


def _claim_record(claim: Claim, rows: Sequence[Any], outcomes: Sequence[tuple], profile: Profile,
                  seeds_given: int | None) -> dict[str, Any]:
    from elukit.claims._rules import combine_rows, lean

    names = [f"{row.regime} ({row.comparison})" if sum(r.regime == row.regime for r in rows) > 1 else row.regime
             for row in rows]
    combined = combine_rows([outcome[2] for outcome in outcomes], [lean(outcome[0]) for outcome in outcomes],
                            [row.applies for row in rows], names, [row.set_aside for row in rows],
                            [(o[0].effect, o[0].ci_low, o[0].ci_high) for o in outcomes])
    verdict, decides = combined.verdict, list(combined.decides)
    # the summary shows the row that decided (the strongest when several did), else the first row that applies
    first = next((i for i, row in enumerate(rows) if row.applies), 0)
    shown = min((i for i, d in enumerate(decides) if d), key=lambda i: outcomes[i][1], default=first)
    primary = outcomes[shown][0]
    regimes = []
    for row, (result, p_outcome, row_verdict), decided in zip(rows, outcomes, decides):
        record = result.as_dict()
        record.update(regime=row.regime, comparison=row.comparison, verdict=row_verdict, exact=result.exact,
                      p_outcome=_finite(p_outcome), decides=decided, applies=row.applies, set_aside=row.set_aside,
                      lean=lean(result),
                      depth=row.depth, lr=row.lr, note=row.note,
                      differences=[_finite(v) for v in row.differences],
                      treatment=[_finite(v) for v in row.treatment], baseline=[_finite(v) for v in row.baseline])
        record.update(row.fields)
        for key in ("effect", "ci_low", "ci_high", "p_value", "p_adjusted", "p_support", "p_refute",
                    "minimum_detectable_effect"):
            record[key] = _finite(getattr(result, key))
        regimes.append(record)
    return {
        "id": claim.id,
        "statement": claim.statement,
        "sources": list(claim.sources),
        "quantity": claim.quantity,
        "predicts": claim.predicts,
        "measurement": claim.measurement,
        "rule": claim.rule.describe(),
        "verdict": verdict,
        "sides": combined.sides,
        "why": combined.describe(),
        "expected": claim.expected,
        "effect": _finite(primary.effect),
        "ci_low": _finite(primary.ci_low),
        "ci_high": _finite(primary.ci_high),
        "level": primary.level,
        "n": primary.n,
        "effect_of": f"{rows[shown].regime}: {rows[shown].comparison}",
        "deciding_rows": sum(decides),
        "pooled": pooled_record(claim, rows, outcomes),
        "family": outcomes[0][0].family.name,
        "family_size": outcomes[0][0].family.size,
        "regimes": regimes,
        "measured_by": [measurement.description for measurement in claim.measure],
        "command": command_for([claim.id], profile, seeds_given),
    }


def _all_ids() -> list[str]:
    from elukit.claims._registry import claim_ids

    return claim_ids()


# -- writing ----------------------------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:  # the user's umask, like the report's files
        temporary.write_bytes(data)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "-inf" if value < 0 else "+inf"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:+.{digits}f}"
    return f"{value:+.{digits - 1}e}"


def _interval(row: dict[str, Any]) -> str:
    """'[low, high] (98.8%)' for a tested row, '[min, max] (computed)' for an exact one, 'n/a' else."""
    if row.get("exact"):
        low, high = row["ci_low"], row["ci_high"]
        return f"{_number(low)}" if low == high else f"[{_number(low)}, {_number(high)}] (computed)"
    if row.get("status", "tested") != "tested":
        return f"(not tested: {row['status']})"
    low = row["ci_low"] if row["ci_low"] is not None else -math.inf
    high = row["ci_high"] if row["ci_high"] is not None else math.inf
    return f"[{_number(low)}, {_number(high)}] ({100 * row['level']:.3g}%)"


def _deciding(claim: dict[str, Any]) -> dict[str, Any]:
    """The row the summary shows: the strongest deciding row, else the first."""
    deciding = [r for r in claim["regimes"] if r.get("decides")]
    applying = [r for r in claim["regimes"] if r.get("applies", True)] or claim["regimes"]
    return min(deciding, key=lambda r: r["p_outcome"] if r["p_outcome"] is not None else 1.0) if deciding else applying[0]


def pooled_text(pooled: dict[str, Any] | None) -> str:
    """'+0.012 [-0.004, +0.028] (95%), I^2 31%, 4 rows' or why there is no pooled estimate."""
    if not pooled or pooled.get("status") != "pooled":
        return "n/a" if not pooled else pooled["status"]
    return (f"{_number(pooled['estimate'])} [{_number(pooled['ci_low'])}, {_number(pooled['ci_high'])}] "
            f"({100 * pooled['level']:.3g}%), I^2 {100 * pooled['i2']:.0f}%, {pooled['k']} rows")


def _some(names: Sequence[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" (+{len(names) - shown} more)" if len(names) > shown else "")


def table_rows(ledger: dict[str, Any]) -> list[list[str]]:
    """One row per claim: id, verdict, the deciding row's effect and interval, n, which row (for a mixed
    claim: the regimes on each side), counts, the pooled estimate, command."""
    rows = []
    for claim in ledger["claims"]:
        counts = {v: sum(1 for r in claim["regimes"] if r["verdict"] == v) for v in ("supported", "refuted", "inconclusive")}
        verdict = claim["verdict"] + (f" (expected {claim['expected']})" if claim["expected"] else "")
        shown = _deciding(claim)
        which = f"{shown['regime']}: {shown['comparison']}" + ("" if shown.get("decides") else " (no row decides)")
        if claim["verdict"] == "mixed" and claim.get("sides"):
            which = "; ".join(f"{side} in {_some(names)}" for side, names in claim["sides"].items()
                              if names and side != "does not apply")
        rows.append([claim["id"], verdict, f"{_number(shown['effect'])} {_interval(shown)}", str(shown["n"]), which,
                     f"{counts['supported']}/{counts['refuted']}/{counts['inconclusive']}",
                     pooled_text(claim.get("pooled")), claim["command"]])
    return rows


TABLE_HEADERS = ["claim", "verdict", "effect [family-adjusted interval]", "n", "row shown (deciding)", "rows +/-/?",
                 "pooled (random effects)", "command"]


def banners(ledger: dict[str, Any]) -> list[str]:
    """What a reader must see first: a tiny profile is a smoke test; a control that did not come out
    as expected makes the ledger invalid."""
    notes = []
    if ledger["profile"]["name"] == "tiny":
        notes.append("Profile tiny: a smoke test of the machinery, not evidence.")
    for claim in ledger["claims"]:
        if claim["expected"] and claim["verdict"] != claim["expected"]:
            notes.append(f"This ledger is invalid: control {claim['id']} came out {claim['verdict']}, "
                         f"expected {claim['expected']}.")
    return notes


COLOURS = {"supported": "tab:green", "refuted": "tab:red", "inconclusive": "tab:gray"}


def _figure(claim: dict[str, Any]) -> bytes | None:
    """A forest plot (PNG): every row's interval at its printed level in its verdict's colour, its
    effect, its paired differences (dots), the zero line and the claim's margins."""
    try:
        from elukit.plots._matplotlib import pyplot

        plt = pyplot()
    except ImportError:
        return None
    rows = claim["regimes"]
    figure, axis = plt.subplots(figsize=(7.5, 0.5 * len(rows) + 1.6))
    finite = [v for r in rows for v in (*r["differences"], r["ci_low"], r["ci_high"]) if v is not None and math.isfinite(v)]
    span = (min(finite + [0.0]), max(finite + [0.0]))
    pad = 0.08 * (span[1] - span[0] or 1.0)
    left, right = span[0] - pad, span[1] + pad
    for y, row in enumerate(rows):
        colour = COLOURS[row["verdict"]]
        values = np.asarray([v for v in row["differences"] if v is not None])
        axis.scatter(values, np.full(len(values), y) + np.linspace(-0.15, 0.15, len(values)), s=9, color=colour, alpha=0.5)
        if row["status"] in ("tested", "exact"):
            low = left if row["ci_low"] is None or row["ci_low"] == -math.inf else row["ci_low"]
            high = right if row["ci_high"] is None or row["ci_high"] == math.inf else row["ci_high"]
            axis.plot([low, high], [y, y], color=colour, linewidth=3 if row.get("decides") else 1.8,
                      solid_capstyle="butt")
        if row["effect"] is not None:
            axis.plot([row["effect"]], [y], marker="D", color="black", markersize=5)
    axis.axvline(0.0, color="black", linewidth=0.8)
    margin = rows[0].get("margin") or 0.0
    for edge in {margin, -margin} - {0.0}:
        axis.axvline(edge, color="0.4", linewidth=0.8, linestyle=":")
    axis.set_xlim(left, right)
    axis.set_yticks(range(len(rows)), [f"{r['regime']}\n{r['comparison']}" for r in rows], fontsize=7)
    axis.invert_yaxis()
    handles = [plt.Line2D([], [], color=c, linewidth=3, label=v) for v, c in COLOURS.items()]
    handles.append(plt.Line2D([], [], color="black", marker="D", linestyle="none", label="mean difference"))
    if margin:
        handles.append(plt.Line2D([], [], color="0.4", linestyle=":", label=f"margin +-{margin:g}"))
    axis.legend(handles=handles, fontsize=7, loc="best")
    axis.set_title(f"{claim['id']}: {claim['verdict']}", fontsize=10)
    axis.set_xlabel("treatment - baseline; bars: family-adjusted intervals (thick: the rows that decide); "
                    "dots: seeds", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _cell(text: str) -> str:
    """A Markdown table cell: a literal | (as in |mean|) would end the cell."""
    return str(text).replace("|", "\\|")


ROW_HEADERS = ["regime", "comparison", "depth", "lr", "epochs (checkpoint / trained)", "verdict", "decides", "effect", "interval", "n", "test", "p", "p adjusted",
               "MDE (80%)", "note"]


def _row_cells(row: dict[str, Any]) -> list[str]:
    exact = row["exact"]
    verdict = row["verdict"] + (f" ({row['reason']})" if row.get("reason") else "")
    p = "exact" if exact else ("n/a" if row["p_value"] is None else f"{row['p_value']:.3g}")
    p_adjusted = "exact" if exact else ("n/a" if row["p_adjusted"] is None else f"{row['p_adjusted']:.3g}")
    mde = "" if exact else _number(row["minimum_detectable_effect"])
    if not row.get("applies", True):
        verdict += " [does not apply: shown only]"
    elif row.get("set_aside"):
        verdict += f" [set aside: {row['set_aside']}]"
    lr = ", ".join(f"{arm} {value:g}" for arm, value in row["lr"].items()) if row.get("lr") else ""
    depth = "" if row.get("depth") is None else str(row["depth"])
    epochs = ", ".join(f"{arm} {row['checkpoint_epoch'][arm]:.0f} / {row['epochs_trained'][arm]}"
                       for arm in row["checkpoint_epoch"]) if row.get("checkpoint_epoch") else ""
    return [row["regime"], row["comparison"], depth, lr, epochs, verdict, "yes" if row.get("decides") else "", _number(row["effect"]),
            _interval(row), str(row["n"]), row["test_description"], p, p_adjusted, mde, row["note"]]


def protocol_line(ledger: dict[str, Any]) -> str:
    line = f"Protocol {ledger.get('protocol_version', '?')}, sha256 {ledger.get('protocol_sha256', 'not recorded')}"
    if ledger.get("protocol_deviations"):
        line += " (departures: " + "; ".join(ledger["protocol_deviations"]) + ")"
    return line + "."


def _header_lines(ledger: dict[str, Any]) -> list[str]:
    record = ledger.get("provenance", {})
    lines = [protocol_line(ledger), f"Command: `{ledger['command']}`"]
    if record:
        lines.append(provenance_line(record))
    lines.append(f"Profile {ledger['profile']['name']}: {ledger['profile']['seeds']} seeds, datasets "
                 f"{', '.join(ledger['profile']['datasets'])}, regimes " + "; ".join(
                     f"{k}: {v}" for k, v in ledger["regimes"].items()) + ".")
    lines.append(f"Multiplicity: {ledger['multiplicity']}.")
    return lines


def _markdown(ledger: dict[str, Any]) -> str:
    lines = ["# elukit claims ledger", ""]
    lines += [f"> **{b}**" for b in banners(ledger)] + ([""] if banners(ledger) else [])
    for line in _header_lines(ledger):
        lines += [line, ""]
    lines += ["| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    lines += ["| " + " | ".join(_cell(cell) if i != len(row) - 1 else f"`{cell}`" for i, cell in enumerate(row)) + " |"
              for row in table_rows(ledger)]
    lines.append("")
    for claim in ledger["claims"]:
        lines += [f"## {claim['id']}: {claim['verdict']}", "", claim["statement"], "",
                  f"- Sources: {'; '.join(claim['sources'])}", f"- Quantity: {claim['quantity']}",
                  f"- Predicts: {claim['predicts']}", f"- Rule: {claim['rule']}",
                  f"- Family: {claim['family']}", f"- Protocol sha256: {ledger.get('protocol_sha256')}",
                  f"- Rows: {claim.get('why') or 'none decides'}",
                  f"- Pooled: {pooled_text(claim.get('pooled'))}",
                  f"- Measured by: {' | '.join(claim['measured_by'])}", f"- Command: `{claim['command']}`", "",
                  "| " + " | ".join(ROW_HEADERS) + " |", "|" + "---|" * len(ROW_HEADERS)]
        lines += ["| " + " | ".join(_cell(c) for c in _row_cells(row)) + " |" for row in claim["regimes"]]
        lines.append("")
    return "\n".join(lines)


def _html(ledger: dict[str, Any], sections: list[str]) -> str:
    rows = table_rows(ledger)
    table = ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEADERS) + "</tr></thead><tbody>"
             + "".join("<tr>" + f'<td><a href="#{html.escape(row[0])}">{html.escape(row[0])}</a></td>'
                       + f'<td class="{html.escape(row[1].split()[0])}">{html.escape(row[1])}</td>'
                       + "".join(f"<td>{html.escape(c)}</td>" for c in row[2:]) + "</tr>" for row in rows)
             + "</tbody></table>")
    navigation = " · ".join(f'<a href="#{html.escape(c["id"])}" class="{c["verdict"]}">{html.escape(c["id"])}</a>'
                            for c in ledger["claims"])
    banner = "".join(f'<p class="banner">{html.escape(b)}</p>' for b in banners(ledger))
    header = "".join(f"<p>{html.escape(line).replace('`', '')}</p>" for line in _header_lines(ledger))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>elukit claims ledger</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:3px 6px;font-size:90%}}
img{{max-width:100%}}.supported{{color:#1a7f37}}.refuted{{color:#cf222e}}.mixed{{color:#9a6700}}
.inconclusive{{color:#57606a}}nav{{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #ddd;font-size:90%}}
.banner{{background:#fff3cd;border:2px solid #d29922;padding:.6em 1em;font-weight:bold}}</style></head>
<body><nav><a href="#summary">summary</a> · {navigation}</nav>
<h1 id="summary">elukit claims ledger</h1>{banner}{header}
{table}{''.join(sections)}</body></html>
"""


def write_ledger(ledger: dict[str, Any], directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ledger.json, ledger.md and a self-contained ledger.html (figures inlined) atomically."""
    directory = Path(directory)
    paths = {"json": directory / "ledger.json", "markdown": directory / "ledger.md", "html": directory / "ledger.html"}
    _atomic_write(paths["json"], json.dumps(ledger, indent=1, allow_nan=False).encode())
    _atomic_write(paths["markdown"], _markdown(ledger).encode())
    sections = []
    for claim in ledger["claims"]:
        png = _figure(claim)
        image = (f'<img alt="forest plot of {html.escape(claim["id"])}" src="data:image/png;base64,'
                 f'{base64.b64encode(png).decode()}">' if png is not None
                 else "<p>(install matplotlib for the figure: pip install 'elukit[plot]')</p>")
        rows = "".join("<tr>" + "".join(f'<td class="{r["verdict"]}">{html.escape(c)}</td>' if i == 5
                                        else f"<td>{html.escape(c)}</td>" for i, c in enumerate(_row_cells(r))) + "</tr>"
                       for r in claim["regimes"])
        sections.append(
            f"<h2 id=\"{html.escape(claim['id'])}\">{html.escape(claim['id'])}: <span class=\"{claim['verdict']}\">"
            f"{claim['verdict']}</span> <a href=\"#summary\" style=\"font-size:60%\">(top)</a></h2>"
            f"<p>{html.escape(claim['statement'])}</p><ul>"
            f"<li>Sources: {html.escape('; '.join(claim['sources']))}</li><li>Quantity: {html.escape(claim['quantity'])}</li>"
            f"<li>Predicts: {html.escape(claim['predicts'])}</li><li>Rule: {html.escape(claim['rule'])}</li>"
            f"<li>Family: {html.escape(claim['family'])}</li>"
            f"<li>Rows: {html.escape(claim.get('why') or 'none decides')}</li>"
            f"<li>Pooled: {html.escape(pooled_text(claim.get('pooled')))}</li>"
            f"<li>Command: <code>{html.escape(claim['command'])}</code></li></ul>{image}"
            "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in ROW_HEADERS) + f"</tr>{rows}</table>")
    _atomic_write(paths["html"], _html(ledger, sections).encode())
    return paths


def verdicts(ledger: dict[str, Any]) -> dict[str, str]:
    return {claim["id"]: claim["verdict"] for claim in ledger["claims"]}


__all__ = ["run_ledger", "table_rows", "verdicts", "write_ledger", "TABLE_HEADERS"]
