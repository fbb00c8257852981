"""The study report: figures, a summary table with intervals and paired tests, HTML and Markdown.

`build_report(db, out)` reads a study from the results store and writes ``report.html`` (self-
contained: figures embedded, opens offline), ``report.md`` and the figures as PNG files. Every
number in it is computed from the stored per-epoch metrics.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from elukit._files import atomic_write_text, check_writable_directory
from elukit.experiments.stats import epochs_to_target, mean_interval, paired_bootstrap
from elukit.experiments.store import NETWORK, Store


@dataclasses.dataclass
class StudyResults:
    """Metrics of one study as arrays: network[label][name] is (seeds, epochs + 1); layers[label][name]
    is (seeds, layers, epochs + 1) with NaN at epoch 0 (no training pass yet)."""

    study_id: int
    config: dict[str, Any]
    labels: list[str]
    seeds: dict[str, list[int]]
    network: dict[str, dict[str, np.ndarray]]
    layers: dict[str, dict[str, np.ndarray]]
    seconds: dict[str, float]

    @property
    def epochs(self) -> int:
        return next(iter(self.network[self.labels[0]].values())).shape[1] - 1


def load_results(store: Store, study_id: int | None = None) -> StudyResults:
    if study_id is None:
        latest = store.latest_study()
        if latest is None:
            raise ValueError(f"{store.path} holds no study")
        study_id = latest[0]
    config = store.study_config(study_id)
    rows = store.metrics(study_id)
    if not rows:
        raise ValueError(f"study {study_id} in {store.path} has no stored epochs yet")
    labels = list(dict.fromkeys(r[0] for r in rows))
    seeds = {label: sorted({r[1] for r in rows if r[0] == label}) for label in labels}
    epochs = max(r[2] for r in rows)
    layer_count = max((r[4] for r in rows), default=-1) + 1
    network = {label: {} for label in labels}
    layers = {label: {} for label in labels}
    for label, seed, epoch, name, layer, value in rows:
        s = seeds[label].index(seed)
        if layer == NETWORK:
            target = network[label].setdefault(name, np.full((len(seeds[label]), epochs + 1), np.nan))
            target[s, epoch] = value
        else:
            target = layers[label].setdefault(name, np.full((len(seeds[label]), layer_count, epochs + 1), np.nan))
            target[s, layer, epoch] = np.nan if value is None else value
    return StudyResults(study_id, config, labels, seeds, network, layers, store.training_seconds(study_id))


def _last_finite(curves: np.ndarray) -> np.ndarray:
    """Per row, the value at the last epoch that has one (a study may be unfinished)."""
    finite = np.isfinite(curves)
    last = curves.shape[-1] - 1 - np.argmax(finite[..., ::-1], axis=-1)
    return np.take_along_axis(curves, last[..., None], axis=-1)[..., 0]


def summary_table(results: StudyResults, target_loss: float | None = None, baseline: str | None = None,
                  rng: np.random.Generator | None = None) -> tuple[list[dict[str, Any]], float, str]:
    """One row per activation; returns (rows, target loss used, baseline label)."""
    rng = rng or np.random.default_rng(0)
    labels = results.labels
    baseline = baseline or ("relu" if "relu" in labels else labels[0])
    finals = {label: _last_finite(results.network[label]["train_loss"]) for label in labels}
    if target_loss is None:
        target_loss = float(max(np.mean(v) for v in finals.values()))  # the level every activation reaches
    rows = []
    for label in labels:
        accuracy = _last_finite(results.network[label]["test_accuracy"])
        reach = epochs_to_target(results.network[label]["train_loss"], target_loss)
        layer_stats = results.layers[label]

        def final_layer_mean(name: str, transform=lambda values: values) -> float:
            """Mean over seeds and layers at the last epoch of a per-layer metric."""
            if not layer_stats:
                return math.nan
            return float(np.nanmean(transform(_last_finite(layer_stats[name]))))

        row = {
            "activation": label,
            "test_accuracy": mean_interval(accuracy),
            "train_loss": mean_interval(finals[label]),
            "epochs_to_target": mean_interval(reach),
            "reached": int(np.isfinite(reach).sum()),
            "seeds": len(accuracy),
            "mean_activation": final_layer_mean("mean_activation"),
            "mean_abs_activation": final_layer_mean("mean_activation", np.abs),
            "dead_fraction": final_layer_mean("dead_fraction"),
            "gradient_sparsity": final_layer_mean("gradient_sparsity"),
            "seconds": results.seconds.get(label, math.nan),
        }
        if label != baseline:
            base = _last_finite(results.network[baseline]["test_accuracy"])
            n = min(len(base), len(accuracy))
            row["versus_baseline"] = paired_bootstrap(accuracy[:n], base[:n], rng)
        rows.append(row)
    return rows, target_loss, baseline


# -- figures ------------------------------------------------------------------------------------------

PERCENT = {"test_accuracy": 100.0, "dead_fraction": 100.0, "gradient_sparsity": 100.0}
"""Metrics stored as fractions and shown in percent, in the figures as in the table."""

def _figures(results: StudyResults, directory: Path) -> dict[str, Path]:
    from elukit.plots._matplotlib import pyplot
    from elukit.plots.curves import save_atomically

    plt = pyplot()
    paths = {}
    epochs = np.arange(results.epochs + 1)

    figure, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for label in results.labels:
        for axis, name in zip(axes, ("train_loss", "test_loss", "test_accuracy")):
            curves = results.network[label][name] * PERCENT.get(name, 1.0)
            mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
            line, = axis.plot(epochs, mean, label=label)
            axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for axis, title in zip(axes, ("training loss", "test loss", "test accuracy %")):
        axis.set_title(f"{title} (mean +- std over seeds)")
        axis.set_xlabel("epoch")
        axis.grid(True, alpha=0.3)
        axis.legend()
    axes[0].set_yscale("log")
    paths["learning_curves"] = save_atomically(figure, directory / "learning_curves.png")

    for name, title in (("mean_activation", "mean activation per layer"), ("dead_fraction", "dead units % per layer"),
                        ("gradient_sparsity", "exactly-zero derivatives % per layer")):
        if not all(name in results.layers[label] for label in results.labels):
            continue
        figure, axes = plt.subplots(1, len(results.labels), figsize=(4 * len(results.labels), 3.6),
                                    constrained_layout=True, sharey=True, squeeze=False)
        for axis, label in zip(axes[0], results.labels):
            values = np.nanmean(results.layers[label][name][..., 1:], axis=0) * PERCENT.get(name, 1.0)  # (layers, epochs 1..E)
            colors = plt.cm.viridis(np.linspace(0, 1, values.shape[0]))
            for layer in range(values.shape[0]):
                axis.plot(epochs[1:], values[layer], color=colors[layer], label=f"layer {layer + 1}")
            axis.axhline(0.0, color="0.6", linewidth=0.8)
            axis.set_title(label)
            axis.set_xlabel("epoch")
            axis.grid(True, alpha=0.3)
        axes[0][0].set_ylabel(title)
        if name in PERCENT:  # a share: 0 at the bottom, and a readable axis when every value is 0
            top = max(float(np.nanmax([np.nanmax(results.layers[label][name]) for label in results.labels])) * 100, 0.0)
            axes[0][0].set_ylim(-0.02 * max(top, 1.0), max(1.05 * top, 1.0))
        axes[0][-1].legend(fontsize="small")
        figure.suptitle(f"{title} (mean over seeds)")
        paths[name] = save_atomically(figure, directory / f"{name}.png")
    return paths


# -- documents -------------------------------------------------------------------------------------------

def _interval_text(interval, percent: bool = False, digits: int = 3) -> str:
    scale = 100.0 if percent else 1.0
    if not math.isfinite(interval.mean):
        return "n/a"
    if not math.isfinite(interval.low):
        return f"{scale * interval.mean:.{digits}g}"
    return f"{scale * interval.mean:.{digits}g} [{scale * interval.low:.{digits}g}, {scale * interval.high:.{digits}g}]"


def _p_text(p_value: float, resamples: int = 10_000) -> str:
    if not math.isfinite(p_value):
        return "p n/a"
    return f"p<{1 / resamples * 10:.3g}" if p_value < 10 / resamples else f"p={p_value:.3f}"


def _table(rows: list[dict[str, Any]], baseline: str, target: float) -> tuple[list[str], list[list[str]]]:
    headers = ["activation", "test accuracy % (95% CI)", "final train loss", f"epochs to train loss {target:.3g}",
               f"test accuracy vs {baseline} (pp, paired bootstrap)", "mean activation", "dead units %",
               "zero derivatives %", "train time s (after warm-up)"]
    body = []
    for row in rows:
        versus = row.get("versus_baseline")
        versus_text = "baseline" if versus is None else (
            f"{100 * versus.difference:+.2f} [{100 * versus.low:+.2f}, {100 * versus.high:+.2f}], {_p_text(versus.p_value)}")
        body.append([
            row["activation"], _interval_text(row["test_accuracy"], percent=True, digits=4),
            _interval_text(row["train_loss"]), f"{_interval_text(row['epochs_to_target'])} ({row['reached']}/{row['seeds']})",
            versus_text, f"{row['mean_activation']:+.3f}", f"{100 * row['dead_fraction']:.1f}",
            f"{100 * row['gradient_sparsity']:.1f}", f"{row['seconds']:.1f}",
        ])
    return headers, body


def _notes(target: float, target_given: bool, baseline: str) -> list[str]:
    """What the table's columns mean, printed under it."""
    how = "given with --target-loss" if target_given else (
        "the highest final mean training loss among the activations, a level every activation reached on average")
    return [
        f"Epochs to train loss {target:.3g}: per seed, the first epoch whose training loss is <= {target:.3g} ({how}); "
        "the mean and 95% t interval are over the seeds that reached it, and (k/n) says that k of the n seeds did.",
        "Test accuracy: at the last epoch, mean over seeds with a 95% Student t interval. "
        f"Versus {baseline}: the mean paired difference (seeds paired) with a 95% bootstrap interval and a two-sided "
        "bootstrap p-value (10,000 resamples).",
        "Mean activation, dead units (derivative zero on every training sample of the epoch) and zero derivatives: "
        "last epoch, averaged over hidden layers and seeds.",
        "Train time: seconds of the training epochs (with their evaluation and diagnostics) of each activation's "
        "ensemble, measured after a warm-up that is not charged to any activation; it excludes start-up, data "
        "loading, storing and this report.",
    ]


def _claims(rows: list[dict[str, Any]], results: StudyResults) -> list[str]:
    """Plain statements of what this study measured about the literature's claims."""
    by_label = {row["activation"]: row for row in rows}
    notes = []
    closest = min(rows, key=lambda r: r["mean_abs_activation"] if math.isfinite(r["mean_abs_activation"]) else math.inf)
    notes.append(f"Mean activation closest to zero (|mean| averaged over layers, last epoch): {closest['activation']} "
                 f"({closest['mean_activation']:+.3f}); " + ", ".join(
                     f"{r['activation']} {r['mean_activation']:+.3f}" for r in rows) + ".")
    everywhere = [r for r in rows if r["reached"] == r["seeds"] and math.isfinite(r["epochs_to_target"].mean)]
    if everywhere:
        best = min(r["epochs_to_target"].mean for r in everywhere)
        fastest = [r["activation"] for r in everywhere if r["epochs_to_target"].mean == best]
        tie = f" (a tie: {len(fastest)} activations at the same mean)" if len(fastest) > 1 else ""
        notes.append(f"Fewest epochs to the target training loss, among activations whose every seed reached it: "
                     f"{' and '.join(fastest)}, {best:.3g} epochs on average{tie}.")
    else:
        notes.append("No activation reached the target training loss with every seed.")
    dead = ", ".join(f"{r['activation']} {100 * r['dead_fraction']:.1f}%" for r in rows)
    notes.append(f"Dead units at the last epoch (derivative zero on every training sample of the epoch): {dead}.")
    if "elu" in by_label and "relu" in by_label:
        versus = by_label["elu"].get("versus_baseline")
        if versus is not None and math.isfinite(versus.p_value):
            verdict = "a difference" if versus.p_value < 0.05 else "no significant difference"
            notes.append(f"ELU vs ReLU final test accuracy: {100 * versus.difference:+.2f} percentage points "
                         f"(95% CI [{100 * versus.low:+.2f}, {100 * versus.high:+.2f}], {_p_text(versus.p_value)}): {verdict} "
                         f"at {versus.n} seeds.")
    return notes


def build_report(db_path: str | os.PathLike[str], out: str | os.PathLike[str], study_id: int | None = None,
                 target_loss: float | None = None, seed: int = 0) -> dict[str, Path]:
    """Write report.html, report.md and the figures for a study; returns their paths."""
    from elukit.plots._matplotlib import pyplot

    if target_loss is not None and not (math.isfinite(target_loss) and target_loss > 0):
        raise ValueError(f"--target-loss must be finite and > 0, got {target_loss}")
    pyplot()  # the figures need matplotlib: say so before reading anything
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ValueError(f"no results database at {str(db_path)!r}")
    store = Store(db_path, create=False)
    try:
        results = load_results(store, study_id)
    finally:
        store.close()
    directory = Path(out)
    check_writable_directory(directory, "report folder")
    directory.mkdir(parents=True, exist_ok=True)
    rows, target, baseline = summary_table(results, target_loss, rng=np.random.default_rng(seed))
    notes = _notes(target, target_loss is not None, baseline)
    figures = _figures(results, directory)
    headers, body = _table(rows, baseline, target)
    claims = _claims(rows, results)
    config = results.config
    description = (f"Study {results.study_id}: {config.get('data_file') or config.get('dataset')}, {config.get('model')} "
                   f"width {config.get('width')} depth {config.get('depth')}, {config.get('optimizer')} lr {config.get('lr')}, "
                   f"batch {config.get('batch_size')}, init {config.get('init')}, batch norm {config.get('batch_norm')}, "
                   f"{config.get('seeds')} seeds, {results.epochs} epochs.")

    markdown = ["# elukit compare report", "", description, "", "| " + " | ".join(headers) + " |",
                "|" + "---|" * len(headers)]
    markdown += ["| " + " | ".join(cells) + " |" for cells in body]
    markdown += [""] + [f"- {n}" for n in notes]
    markdown += ["", "## What this study measured", ""] + [f"- {c}" for c in claims] + [""]
    for name, path in figures.items():
        markdown += [f"![{name}]({path.name})", ""]
    atomic_write_text(directory / "report.md", "\n".join(markdown))

    images = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}"><figcaption>{html.escape(name.replace("_", " "))}</figcaption></figure>'
        for name, path in figures.items())
    table = ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead><tbody>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body)
             + "</tbody></table>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>elukit compare report</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:1.5em 0}}</style></head>
<body><h1>elukit compare report</h1><p>{html.escape(description)}</p>{table}
<ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes)}</ul>
<h2>What this study measured</h2><ul>{''.join(f'<li>{html.escape(c)}</li>' for c in claims)}</ul>
{images}</body></html>
"""
    atomic_write_text(directory / "report.html", page)
    return {"html": directory / "report.html", "markdown": directory / "report.md", **figures}
