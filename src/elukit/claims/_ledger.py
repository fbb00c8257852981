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
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elukit.claims._context import LEDGER_SCHEMA, REGIMES, Context, Profile, independent_arms, prefetch
from elukit.claims._registry import Claim
from elukit.claims._rules import combine, decide
from elukit.experiments.store import Store


def _open_ledger(store: Store, profile: Profile, resume: bool) -> int:
    with store.transaction() as db:
        for statement in filter(str.strip, LEDGER_SCHEMA.split(";")):
            db.execute(statement)
    settings = {"profile": profile.as_dict()}
    if resume:
        row = store.connection.execute("SELECT id, settings FROM claims_ledger ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            raise ValueError(f"--resume: {store.path} holds no claims ledger to resume")
        stored = json.loads(row[1])
        if stored != settings:
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
               ray_address: str | None = None) -> dict[str, Any]:
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
        return _run_ledger(claims, profile, out, resume, seeds_given, progress, cache_dir, workers, runner)
    finally:
        if runner is not None:
            runner.close()


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
        verdict = combine([outcome[2] for outcome in outcomes])
        primary = outcomes[0][0]
        ledger_claims.append({
            "id": claim.id,
            "statement": claim.statement,
            "sources": list(claim.sources),
            "quantity": claim.quantity,
            "predicts": claim.predicts,
            "measurement": claim.measurement,
            "rule": claim.rule.describe(),
            "verdict": verdict,
            "expected": claim.expected,
            "effect": _finite(primary.effect),
            "ci_low": _finite(primary.ci_low),
            "ci_high": _finite(primary.ci_high),
            "n": primary.n,
            "effect_of": f"{rows[0].regime}: {rows[0].comparison}",
            "regimes": [{
                "regime": row.regime, "comparison": row.comparison, "verdict": outcome[2], "exact": result.exact,
                "effect": _finite(result.effect), "ci_low": _finite(result.ci_low), "ci_high": _finite(result.ci_high),
                "n": result.n, "p_value": result.p_value, "p_holm": outcome[1], "note": row.note,
                "differences": [_finite(v) for v in row.differences],
                "treatment": [_finite(v) for v in row.treatment], "baseline": [_finite(v) for v in row.baseline],
            } for row, outcome, result in zip(rows, outcomes, (o[0] for o in outcomes))],
            "measured_by": [measurement.description for measurement in claim.measure],
            "command": command_for([claim.id], profile, seeds_given),
        })
    return {
        "command": command_for([c.id for c in claims] if len(claims) < len(_all_ids()) else [], profile, seeds_given),
        "profile": profile.as_dict(),
        "regimes": {name: REGIMES[name].description for name in profile.regimes},
        "ledger_id": ledger_id,
        "holm_family": sum(1 for outcome in decided if not outcome[0].exact),
        "measure_seconds": seconds,
        "claims": ledger_claims,
    }


def _all_ids() -> list[str]:
    from elukit.claims._registry import claim_ids

    return claim_ids()


# -- writing ----------------------------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:+.{digits}f}"
    return f"{value:+.{digits - 1}e}"


def table_rows(ledger: dict[str, Any]) -> list[list[str]]:
    """One row per claim: id, verdict, effect [interval], n, measurement, regimes decided."""
    rows = []
    for claim in ledger["claims"]:
        counts = {v: sum(1 for r in claim["regimes"] if r["verdict"] == v) for v in ("supported", "refuted", "inconclusive")}
        verdict = claim["verdict"] + (f" (expected {claim['expected']})" if claim["expected"] else "")
        rows.append([claim["id"], verdict, f"{_number(claim['effect'])} [{_number(claim['ci_low'])}, "
                     f"{_number(claim['ci_high'])}]", str(claim["n"]),
                     f"{counts['supported']}/{counts['refuted']}/{counts['inconclusive']}", claim["command"]])
    return rows


TABLE_HEADERS = ["claim", "verdict", "effect [95% CI] (first row)", "n", "rows +/-/?", "command"]


def _figure(claim: dict[str, Any]) -> bytes | None:
    """A PNG: each row's paired differences (dots), mean and interval (bar); zero line."""
    try:
        from elukit.plots._matplotlib import pyplot
    except ImportError:
        return None
    try:
        plt = pyplot()
    except ImportError:
        return None
    rows = claim["regimes"]
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    colours = {"supported": "tab:green", "refuted": "tab:red", "inconclusive": "tab:gray"}
    for y, row in enumerate(rows):
        values = np.asarray(row["differences"])
        axis.scatter(values, np.full(len(values), y) + np.linspace(-0.12, 0.12, len(values)), s=10,
                     color=colours[row["verdict"]], alpha=0.6)
        if row["ci_low"] is not None and row["ci_high"] is not None:
            axis.plot([row["ci_low"], row["ci_high"]], [y, y], color="black", linewidth=2)
        if row["effect"] is not None:
            axis.plot([row["effect"]], [y], marker="|", color="black", markersize=14)
    axis.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    axis.set_yticks(range(len(rows)), [f"{r['regime']}\n{r['comparison']}" for r in rows], fontsize=7)
    axis.invert_yaxis()
    axis.set_title(f"{claim['id']}: {claim['verdict']}", fontsize=10)
    axis.set_xlabel("paired difference (treatment - baseline); bar: 95% interval", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _cell(text: str) -> str:
    """A Markdown table cell: a literal | (as in |mean|) would end the cell."""
    return str(text).replace("|", "\\|")


def _markdown(ledger: dict[str, Any]) -> str:
    lines = ["# elukit claims ledger", "", f"Command: `{ledger['command']}`", "",
             f"Profile {ledger['profile']['name']}: {ledger['profile']['seeds']} seeds, datasets "
             f"{', '.join(ledger['profile']['datasets'])}, regimes " + "; ".join(
                 f"{k}: {v}" for k, v in ledger["regimes"].items()) + f". Holm family: {ledger['holm_family']} sampled rows.",
             "", "| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    lines += ["| " + " | ".join(cell if i != 5 else f"`{cell}`" for i, cell in enumerate(row)) + " |"
              for row in table_rows(ledger)]
    lines.append("")
    for claim in ledger["claims"]:
        lines += [f"## {claim['id']}: {claim['verdict']}", "", claim["statement"], "",
                  f"- Sources: {'; '.join(claim['sources'])}", f"- Quantity: {claim['quantity']}",
                  f"- Predicts: {claim['predicts']}", f"- Rule: {claim['rule']}",
                  f"- Measured by: {' | '.join(claim['measured_by'])}", f"- Command: `{claim['command']}`", "",
                  "| regime | comparison | verdict | effect | 95% CI | n | p | p (Holm) | note |", "|---|---|---|---|---|---|---|---|---|"]
        for row in claim["regimes"]:
            p = "exact" if row["exact"] else f"{row['p_value']:.2g}"
            ph = "exact" if row["exact"] else f"{row['p_holm']:.2g}"
            lines.append(f"| {_cell(row['regime'])} | {_cell(row['comparison'])} | {row['verdict']} | {_number(row['effect'])} | "
                         f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}] | {row['n']} | {p} | {ph} | {_cell(row['note'])} |")
        lines.append("")
    return "\n".join(lines)


def _html(ledger: dict[str, Any], markdown_sections: list[str]) -> str:
    table = ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEADERS) + "</tr></thead><tbody>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(ledger))
             + "</tbody></table>")
    sections = "".join(markdown_sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>elukit claims ledger</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:3px 6px;font-size:90%}}
img{{max-width:100%}}.supported{{color:#1a7f37}}.refuted{{color:#cf222e}}.mixed{{color:#9a6700}}</style></head>
<body><h1>elukit claims ledger</h1><p>Command: <code>{html.escape(ledger['command'])}</code>. Profile
{html.escape(ledger['profile']['name'])}, {ledger['profile']['seeds']} seeds, Holm family {ledger['holm_family']} rows.</p>
{table}{sections}</body></html>
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
        image = (f'<img alt="{html.escape(claim["id"])}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                 if png is not None else "<p>(install matplotlib for the figure: pip install 'elukit[plot]')</p>")
        rows = "".join(
            f"<tr><td>{html.escape(r['regime'])}</td><td>{html.escape(r['comparison'])}</td>"
            f"<td class=\"{r['verdict']}\">{r['verdict']}</td><td>{_number(r['effect'])}</td>"
            f"<td>[{_number(r['ci_low'])}, {_number(r['ci_high'])}]</td><td>{r['n']}</td>"
            f"<td>{'exact' if r['exact'] else format(r['p_holm'], '.2g')}</td><td>{html.escape(r['note'])}</td></tr>"
            for r in claim["regimes"])
        sections.append(
            f"<h2 id=\"{html.escape(claim['id'])}\">{html.escape(claim['id'])}: <span class=\"{claim['verdict']}\">"
            f"{claim['verdict']}</span></h2><p>{html.escape(claim['statement'])}</p><ul>"
            f"<li>Sources: {html.escape('; '.join(claim['sources']))}</li><li>Quantity: {html.escape(claim['quantity'])}</li>"
            f"<li>Predicts: {html.escape(claim['predicts'])}</li><li>Rule: {html.escape(claim['rule'])}</li>"
            f"<li>Command: <code>{html.escape(claim['command'])}</code></li></ul>{image}"
            "<table><tr><th>regime</th><th>comparison</th><th>verdict</th><th>effect</th><th>95% CI</th><th>n</th>"
            f"<th>p (Holm)</th><th>note</th></tr>{rows}</table>")
    _atomic_write(paths["html"], _html(ledger, sections).encode())
    return paths


def verdicts(ledger: dict[str, Any]) -> dict[str, str]:
    return {claim["id"]: claim["verdict"] for claim in ledger["claims"]}


__all__ = ["run_ledger", "table_rows", "verdicts", "write_ledger", "TABLE_HEADERS"]
