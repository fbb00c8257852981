"""The study report: figures, a summary table with intervals and paired tests, HTML and Markdown.

`build_report(db, out)` reads a study from the results store and writes ``report.html`` (self-
contained: figures embedded, opens offline), ``report.md`` and the figures as PNG files. Every
number in it is computed from the stored per-epoch metrics.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from elukit._files import atomic_write_text, check_writable_directory
from elukit._provenance import provenance_line
from elukit._registry import parse
from elukit.experiments.store import NETWORK, Store
from elukit.statistics import Comparison, Family, compare_paired, epochs_to_target, format_p, mean_interval


@dataclasses.dataclass
class StudyResults:
    """Metrics of one study as arrays: network[label][name] is (seeds, epochs + 1) and
    layers[label][name] is (seeds, layers, epochs + 1), NaN where nothing was stored (and at
    layer epoch 0: no training pass yet); stored[label] is (seeds, epochs + 1), True where the
    epoch's metrics are in the store (a stored NaN is a diverged loss, not a missing epoch)."""

    study_id: int
    config: dict[str, Any]
    labels: list[str]
    seeds: dict[str, list[int]]
    network: dict[str, dict[str, np.ndarray]]
    layers: dict[str, dict[str, np.ndarray]]
    seconds: dict[str, float]
    stored: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    planned: list[str] = dataclasses.field(default_factory=list)
    provenance: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Epochs stored (the largest epoch index of any configuration)."""
        return next(iter(self.network[self.labels[0]].values())).shape[1] - 1

    @property
    def planned_epochs(self) -> int:
        return int(self.config.get("epochs", self.epochs))

    def stored_mask(self, label: str) -> np.ndarray:
        if label in self.stored:
            return self.stored[label]
        return np.isfinite(self.network[label]["test_accuracy"])

    def last_complete_epoch(self, label: str) -> int:
        """The last epoch every seed of `label` has stored (-1: none)."""
        complete = self.stored_mask(label).all(axis=0)
        return int(np.flatnonzero(complete).max()) if complete.any() else -1


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
    network: dict[str, dict[str, np.ndarray]] = {label: {} for label in labels}
    layers: dict[str, dict[str, np.ndarray]] = {label: {} for label in labels}
    stored = {label: np.zeros((len(seeds[label]), epochs + 1), dtype=bool) for label in labels}
    for label, seed, epoch, name, layer, value in rows:
        s = seeds[label].index(seed)
        value = np.nan if value is None else value
        if layer == NETWORK:
            target = network[label].setdefault(name, np.full((len(seeds[label]), epochs + 1), np.nan))
            target[s, epoch] = value
            stored[label][s, epoch] = True
        else:
            target = layers[label].setdefault(name, np.full((len(seeds[label]), layer_count, epochs + 1), np.nan))
            target[s, layer, epoch] = value
    planned = [parse(a).label() for a in config.get("activations", ())]
    return StudyResults(study_id, config, labels, seeds, network, layers, store.training_seconds(study_id), stored,
                        planned, store.provenance(study_id))


def _divergence(results: StudyResults, label: str, epoch: int) -> np.ndarray:
    """Per seed, the first epoch (1..epoch) whose training or test loss is stored but not finite; NaN
    where the seed never diverged."""
    mask = results.stored_mask(label)[:, : epoch + 1]
    bad = np.zeros_like(mask)
    for name in ("train_loss", "test_loss"):
        if name in results.network[label]:
            bad |= mask & ~np.isfinite(results.network[label][name][:, : epoch + 1])
    bad[:, 0] = False  # epoch 0 is before training
    first = np.argmax(bad, axis=1).astype(np.float64)
    first[~bad.any(axis=1)] = np.nan
    return first


@dataclasses.dataclass(frozen=True)
class Completion:
    """How much of the planned study is in the store."""

    epoch: int
    """The epoch every trained activation reached with every seed: where the report compares them."""
    trained: dict[str, int]
    """Per activation, the last epoch every seed reached."""
    not_started: list[str]
    planned_epochs: int

    @property
    def complete(self) -> bool:
        return not self.not_started and all(e >= self.planned_epochs for e in self.trained.values())

    def describe(self) -> str:
        parts = [f"{label} {epochs} of {self.planned_epochs} epochs" for label, epochs in self.trained.items()]
        text = "Incomplete study: trained " + ", ".join(parts)
        if self.not_started:
            text += "; not started: " + ", ".join(self.not_started)
        return text + (f". Every value below is at epoch {self.epoch}, the last that every trained activation reached; "
                       "continue with `elukit compare --resume` and the same arguments.")


def completion(results: StudyResults) -> Completion:
    trained = {label: results.last_complete_epoch(label) for label in results.labels}
    epoch = max(0, min(trained.values()))
    not_started = [label for label in results.planned if label not in results.labels]
    return Completion(epoch, trained, not_started, results.planned_epochs)


def summary_table(results: StudyResults, target_loss: float | None = None, baseline: str | None = None,
                  confidence: float = 0.95) -> tuple[list[dict[str, Any]], float, str]:
    """One row per activation, at the last epoch every activation reached; returns (rows, target
    loss used, baseline label). Seeds that diverged are left out of every mean and comparison."""
    labels = results.labels
    baseline = baseline or ("relu" if "relu" in labels else labels[0])
    epoch = completion(results).epoch
    diverged = {label: _divergence(results, label, epoch) for label in labels}

    def at_epoch(label: str, name: str) -> np.ndarray:
        values = results.network[label][name][:, epoch].copy()
        values[np.isfinite(diverged[label])] = np.nan
        return values

    finals = {label: at_epoch(label, "train_loss") for label in labels}
    if target_loss is None:
        means = [float(np.nanmean(v)) for v in finals.values() if np.isfinite(v).any()]
        target_loss = max(means) if means else math.nan  # the level every activation reached on average
    others = [label for label in labels if label != baseline]
    family = Family(f"test accuracy vs {baseline}: {len(others)} comparison{'s' if len(others) != 1 else ''}",
                    max(1, len(others)))
    base_accuracy = dict(zip(results.seeds[baseline], at_epoch(baseline, "test_accuracy")))
    rows = []
    for label in labels:
        accuracy = at_epoch(label, "test_accuracy")
        curves = results.network[label]["train_loss"][:, : epoch + 1].copy()
        curves[np.isfinite(diverged[label])] = np.nan
        reach = epochs_to_target(curves, target_loss) if math.isfinite(target_loss) else np.full(len(curves), np.nan)
        layer_stats = results.layers[label]

        def final_layer_mean(name: str, transform=lambda values: values) -> float:
            """Mean over seeds and layers at the compared epoch of a per-layer metric (NaN if none)."""
            if name not in layer_stats:
                return math.nan
            values = transform(layer_stats[name][..., epoch])
            values = values[~np.isfinite(diverged[label])]  # the seeds that did not diverge
            return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else math.nan

        row = {
            "activation": label,
            "test_accuracy": mean_interval(accuracy, confidence, bounds=(0.0, 1.0)),
            "train_loss": mean_interval(finals[label], confidence, bounds=(0.0, math.inf)),
            "epochs_to_target": mean_interval(reach, confidence, bounds=(0.0, float(epoch))),
            "reached": int(np.isfinite(reach).sum()),
            "seeds": len(accuracy),
            "seed_list": list(results.seeds[label]),
            "diverged": [int(e) for e in diverged[label][np.isfinite(diverged[label])]],
            "mean_activation": final_layer_mean("mean_activation"),
            "mean_abs_activation": final_layer_mean("mean_activation", np.abs),
            "dead_fraction": final_layer_mean("dead_fraction"),
            "gradient_sparsity": final_layer_mean("gradient_sparsity"),
            "seconds": results.seconds.get(label, math.nan),
            "still_improving": _still_improving(results, label, epoch, diverged[label]),
        }
        if label != baseline:
            paired = [s for s in results.seeds[label] if s in base_accuracy]
            mine = dict(zip(results.seeds[label], accuracy))
            row["versus_baseline"] = compare_paired([mine[s] for s in paired], [base_accuracy[s] for s in paired],
                                                    test="t", confidence=confidence, family=family)
        rows.append(row)
    return rows, target_loss, baseline


def _still_improving(results: StudyResults, label: str, epoch: int, diverged: np.ndarray, window: int = 3) -> float:
    """Mean test accuracy over the last `window` epochs minus the `window` before (NaN when too short):
    a positive value of a point or more says the network was still learning when training stopped."""
    if epoch < 2 * window:
        return math.nan
    curves = results.network[label]["test_accuracy"][np.isnan(diverged)]
    if not len(curves):
        return math.nan
    recent = np.nanmean(curves[:, epoch - window + 1: epoch + 1])
    before = np.nanmean(curves[:, epoch - 2 * window + 1: epoch - window + 1])
    return float(recent - before)


# -- figures ------------------------------------------------------------------------------------------

PERCENT = {"test_accuracy": 100.0, "dead_fraction": 100.0, "gradient_sparsity": 100.0}
"""Metrics stored as fractions and shown in percent, in the figures as in the table."""
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _style(index: int) -> dict[str, Any]:
    """Colour, line style and marker of the index-th activation: overlapping curves stay apart in
    grey print and for colour-blind readers."""
    return {"color": f"C{index % 10}", "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
            "marker": MARKERS[index % len(MARKERS)], "markevery": 0.1, "markersize": 4}


def _plain_log_axis(axis: Any) -> None:
    """A log y axis labelled 0.5, 1, 2 rather than 10^-0.3."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.yaxis.set_major_formatter(plain)
    axis.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    axis.yaxis.set_minor_formatter(plain)


def _figures(results: StudyResults, directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The figures, and the sentences that stand in for panels with nothing to show."""
    from elukit.plots._matplotlib import pyplot
    from elukit.plots.curves import save_atomically

    plt = pyplot()
    paths, sentences = {}, []
    epochs = np.arange(results.epochs + 1)

    figure, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for index, label in enumerate(results.labels):
        for axis, name in zip(axes, ("train_loss", "test_loss", "test_accuracy")):
            curves = results.network[label][name] * PERCENT.get(name, 1.0)
            if not np.isfinite(curves).any():
                continue
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # epochs where every seed diverged: NaN, not drawn
                mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
            line, = axis.plot(epochs, mean, label=label, **_style(index))
            axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    for axis, title in zip(axes, ("training loss", "test loss", "test accuracy %")):
        axis.set_title(f"{title} (mean +- std over seeds)")
        axis.set_xlabel("epoch")
        axis.grid(True, alpha=0.3)
        if axis.get_lines():
            axis.legend(fontsize="small")
    if all(np.nanmin(results.network[label]["train_loss"]) > 0 for label in results.labels
           if np.isfinite(results.network[label]["train_loss"]).any()):
        _plain_log_axis(axes[0])
    paths["learning_curves"] = save_atomically(figure, directory / "learning_curves.png")

    for name, title in (("mean_activation", "mean activation per layer"), ("dead_fraction", "dead units % per layer"),
                        ("gradient_sparsity", "exactly-zero derivatives % per layer")):
        if not all(name in results.layers[label] for label in results.labels):
            continue
        values = {label: results.layers[label][name][..., 1:] * PERCENT.get(name, 1.0) for label in results.labels}
        finite = [v[np.isfinite(v)] for v in values.values()]
        if all(len(v) == 0 for v in finite):
            sentences.append(f"{title[0].upper() + title[1:]}: nothing measured (every seed diverged; figure left out).")
            continue
        if all(len(v) == 0 or np.all(v == 0) for v in finite):
            sentences.append(f"{title[0].upper() + title[1:]}: 0 in every layer, epoch, seed and activation measured "
                             "(figure left out).")
            continue
        figure, axes = plt.subplots(1, len(results.labels), figsize=(4 * len(results.labels), 3.6),
                                    constrained_layout=True, sharey=True, squeeze=False)
        for axis, label in zip(axes[0], results.labels):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                per_layer = np.nanmean(values[label], axis=0)  # (layers, epochs 1..E)
            colors = plt.cm.viridis(np.linspace(0, 0.9, per_layer.shape[0]))
            for layer in range(per_layer.shape[0]):
                axis.plot(epochs[1:], per_layer[layer], color=colors[layer], label=f"layer {layer + 1}",
                          linestyle=LINE_STYLES[layer % len(LINE_STYLES)])
            axis.axhline(0.0, color="0.6", linewidth=0.8)
            axis.set_title(label)
            axis.set_xlabel("epoch")
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize="x-small")
        axes[0][0].set_ylabel(title)
        if name in PERCENT:  # a share: 0 at the bottom
            top = max(float(max((np.max(v) for v in finite if len(v)), default=0.0)), 0.0)
            axes[0][0].set_ylim(-0.02 * max(top, 1.0), max(1.05 * top, 1.0))
        figure.suptitle(f"{title} (mean over seeds)")
        paths[name] = save_atomically(figure, directory / f"{name}.png")
    return paths, sentences


# -- documents -------------------------------------------------------------------------------------------

def _interval_text(interval, percent: bool = False, digits: int = 3) -> str:
    scale = 100.0 if percent else 1.0
    if not math.isfinite(interval.mean):
        return "n/a"
    if not math.isfinite(interval.low):
        return f"{scale * interval.mean:.{digits}g} (1 seed: no interval)"
    return f"{scale * interval.mean:.{digits}g} [{scale * interval.low:.{digits}g}, {scale * interval.high:.{digits}g}]"


def _bound(value: float) -> str:
    return ("-inf" if value < 0 else "+inf") if math.isinf(value) else f"{100 * value:+.2f}"


def _versus_text(versus: Comparison) -> str:
    """'+0.92 [-0.40, +2.20] (98.3%), p = 0.21, paired t, n=5: inconclusive (could have seen >= 2.1 pp)'."""
    if not versus.tested:
        return f"{100 * versus.effect:+.2f}: not tested ({versus.status}, n={versus.n})" if math.isfinite(versus.effect) \
            else f"not tested ({versus.status})"
    return (f"{100 * versus.effect:+.2f} [{_bound(versus.ci_low)}, {_bound(versus.ci_high)}] ({100 * versus.level:.3g}%), "
            f"{format_p(versus.p_value)}, {versus.test_description}")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _seeds_text(row: dict[str, Any]) -> str:
    text = str(row["seeds"])
    if row["diverged"]:
        text += f" ({len(row['diverged'])} diverged)"
    return text


def _table(rows: list[dict[str, Any]], baseline: str, target: float) -> tuple[list[str], list[list[str]]]:
    level = next((r["versus_baseline"].level for r in rows if "versus_baseline" in r), 0.95)
    reach_header = f"epochs to train loss {target:.3g}" if math.isfinite(target) else "epochs to a target train loss (none)"
    headers = ["activation", "seeds", "test accuracy % (95% CI)", "final train loss", reach_header,
               f"test accuracy vs {baseline} (pp, {100 * level:.3g}% interval, p, test)", "mean activation",
               "dead units %", "zero derivatives %", "train time s (after warm-up)"]
    body = []
    for row in rows:
        versus = row.get("versus_baseline")
        number = lambda value, fmt: "n/a" if not math.isfinite(value) else format(value, fmt)  # noqa: E731
        reach = f"{_interval_text(row['epochs_to_target'])} ({row['reached']}/{row['seeds']})"
        body.append([
            row["activation"], _seeds_text(row), _interval_text(row["test_accuracy"], percent=True, digits=4),
            _interval_text(row["train_loss"]), reach, "baseline" if versus is None else _versus_text(versus),
            number(row["mean_activation"], "+.3f"), number(100 * row["dead_fraction"], ".1f"),
            number(100 * row["gradient_sparsity"], ".1f"), number(row["seconds"], ".1f"),
        ])
    return headers, body


def _notes(target: float, target_given: bool, baseline: str) -> list[str]:
    """What the table's columns mean, printed under it."""
    how = "given with --target-loss" if target_given else (
        "the highest final mean training loss among the activations, a level every activation reached on average")
    reach = (f"Epochs to train loss {target:.3g}: per seed, the first epoch whose training loss is <= {target:.3g} ({how}); "
             "the mean and 95% t interval (clipped to the epochs trained) are over the seeds that reached it, and (k/n) "
             "says that k of the n seeds did.") if math.isfinite(target) else (
        "Epochs to a target train loss: no target, since no seed of any activation has a finite final training loss.")
    return [
        reach,
        "Test accuracy: at the compared epoch, mean over seeds with a 95% Student t interval. "
        f"Versus {baseline}: the mean paired difference (seeds paired), its paired t test and its interval at the "
        "family-wise level (Bonferroni over the comparisons with the baseline, so each interval excludes 0 exactly when "
        "its adjusted p is below 0.05); elukit.statistics chooses the t test for accuracies before seeing them.",
        "Seeds: trained seeds; a seed whose loss became non-finite is 'diverged' and left out of every mean and test.",
        "Mean activation, dead units (derivative zero on every training sample of the epoch) and zero derivatives: "
        "at the compared epoch, averaged over hidden layers and seeds.",
        "Train time: seconds of the training epochs (with their evaluation and diagnostics) of each activation's "
        "ensemble, measured after a warm-up that is not charged to any activation; it excludes start-up, data "
        "loading, storing and this report.",
    ]


def conclusions(rows: list[dict[str, Any]], baseline: str, done: Completion) -> list[str]:
    """What the study shows, by the rules of `elukit.statistics`, first in the report."""
    lines = [] if done.complete else [done.describe()]
    for row in rows:
        if row["diverged"]:
            epochs = ", ".join(str(e) for e in sorted(set(row["diverged"])))
            lines.append(f"{row['activation']}: {len(row['diverged'])} of {_plural(row['seeds'], 'seed')} diverged "
                         f"(non-finite loss; diverged at epoch {epochs}); left out of every mean and comparison.")
    for row in rows:
        versus = row.get("versus_baseline")
        if versus is None:
            continue
        name = f"{row['activation']} vs {baseline}"
        seeds = _plural(versus.n, "seed")
        if not versus.tested:
            lines.append(f"{name}: {100 * versus.effect:+.2f} pp test accuracy, not tested ({versus.status}, {seeds}): "
                         "no conclusion." if math.isfinite(versus.effect) else f"{name}: no paired seeds to compare.")
            continue
        what = (f"{name}: {100 * versus.effect:+.2f} pp test accuracy [{_bound(versus.ci_low)}, {_bound(versus.ci_high)}] "
                f"({100 * versus.level:.3g}% interval, {versus.family.name}), {format_p(versus.p_value)} "
                f"(p adjusted {versus.p_adjusted:.3g}; {versus.test_description})")
        if versus.ci_low > 0:
            lines.append(f"{what}: higher than {baseline} at {seeds}.")
        elif versus.ci_high < 0:
            lines.append(f"{what}: a significant deficit against {baseline} at {seeds}.")
        else:
            detectable = versus.minimum_detectable_effect
            could = (f"an effect of {100 * detectable:.2g} pp or more would have been detected with 80% power"
                     if math.isfinite(detectable) else "the test cannot reject at this number of seeds")
            lines.append(f"{what}: no detectable difference at {seeds} ({could}).")
    improving = [f"{r['activation']} +{100 * r['still_improving']:.1f} pp" for r in rows
                 if math.isfinite(r["still_improving"]) and r["still_improving"] >= 0.01]
    if improving:
        lines.append("Still learning when training stopped (mean test accuracy of the last 3 epochs minus the 3 before): "
                     + ", ".join(improving) + ". These conclusions are about networks trained for this many epochs, "
                     "not about converged ones.")
    return lines


def _claims(rows: list[dict[str, Any]], results: StudyResults) -> list[str]:
    """Plain descriptions of the diagnostics (no tests: those are in the conclusions)."""
    notes = []
    measured = [r for r in rows if math.isfinite(r["mean_abs_activation"])]
    if measured:
        closest = min(measured, key=lambda r: r["mean_abs_activation"])
        notes.append(f"Mean activation closest to zero (|mean| averaged over layers, compared epoch): {closest['activation']} "
                     f"({closest['mean_activation']:+.3f}); " + ", ".join(
                         f"{r['activation']} {r['mean_activation']:+.3f}" for r in measured) + ".")
    everywhere = [r for r in rows if r["reached"] == r["seeds"] and math.isfinite(r["epochs_to_target"].mean)]
    if everywhere:
        best = min(r["epochs_to_target"].mean for r in everywhere)
        fastest = [r["activation"] for r in everywhere if r["epochs_to_target"].mean == best]
        tie = f" (a tie: {len(fastest)} activations at the same mean)" if len(fastest) > 1 else ""
        notes.append(f"Fewest epochs to the target training loss, among activations whose every seed reached it: "
                     f"{' and '.join(fastest)}, {best:.3g} epoch{'' if best == 1 else 's'} on average{tie}.")
    else:
        notes.append("No activation reached the target training loss with every seed.")
    dead = ", ".join(f"{r['activation']} {100 * r['dead_fraction']:.1f}%" for r in rows if math.isfinite(r["dead_fraction"]))
    if dead:
        notes.append(f"Dead units at the compared epoch (derivative zero on every training sample of the epoch): {dead}.")
    return notes


def describe_study(results: StudyResults, done: Completion) -> str:
    """What was trained, as stored: data, network, optimizer, and the seeds and epochs actually trained."""
    config = results.config
    seeds = sorted({s for label in results.labels for s in results.seeds[label]})
    seed_text = (f"seeds {seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1
                 else "seed" + ("s " if len(seeds) != 1 else " ") + ", ".join(map(str, seeds)))
    return (f"Study {results.study_id}: {config.get('data_file') or config.get('dataset')}, {config.get('model')} "
            f"width {config.get('width')} depth {config.get('depth')}, {config.get('optimizer')} lr {config.get('lr')}, "
            f"batch {config.get('batch_size')}, init {config.get('init')}, batch norm {config.get('batch_norm')}; "
            f"trained: {_plural(len(seeds), 'seed')} ({seed_text}) of the {config.get('seeds')} planned, "
            f"compared at epoch {done.epoch} of the {_plural(done.planned_epochs, 'epoch')} planned.")


REPORT_MARKER = "study.json"
"""A report folder's record of which study (and database) it shows, so a rerun never overwrites
another study's report without saying so."""


def _keep_earlier_report(directory: Path, db_path: Path, study_id: int) -> Path | None:
    """If `directory` holds the report of another study, rename it to DIRECTORY-study-N (or
    DIRECTORY-earlier-K when it does not say which) and return the new path."""
    if not (directory / "report.html").exists() and not (directory / REPORT_MARKER).exists():
        return None
    try:
        shown = json.loads((directory / REPORT_MARKER).read_text())
    except (OSError, ValueError):
        shown = None
    if shown == {"database": str(db_path.resolve()), "study": study_id}:
        return None  # the same study's report: rebuilt in place
    stem = f"{directory.name}-study-{shown['study']}" if isinstance(shown, dict) and "study" in shown else f"{directory.name}-earlier"
    target = directory.with_name(stem)
    counter = 2
    while target.exists():
        target, counter = directory.with_name(f"{stem}-{counter}"), counter + 1
    directory.rename(target)
    return target


def build_report(db_path: str | os.PathLike[str], out: str | os.PathLike[str], study_id: int | None = None,
                 target_loss: float | None = None) -> dict[str, Path]:
    """Write report.html, report.md and the figures for a study; returns their paths (and, under
    "earlier", where a report of another study that was in `out` was moved)."""
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
    earlier = _keep_earlier_report(directory, db_path, results.study_id)
    directory.mkdir(parents=True, exist_ok=True)
    done = completion(results)
    rows, target, baseline = summary_table(results, target_loss)
    notes = _notes(target, target_loss is not None, baseline)
    figures, missing_figures = _figures(results, directory)
    headers, body = _table(rows, baseline, target)
    findings = conclusions(rows, baseline, done)
    claims = _claims(rows, results) + missing_figures
    description = describe_study(results, done)
    made = [provenance_line(record) + (" (resumed)" if record.get("resumed") else "") for record in results.provenance]
    status = "" if done.complete else " (incomplete)"

    markdown = [f"# elukit compare report{status}", "", description, ""] + [f"- {m}" for m in made] + [""]
    markdown += ["## Conclusions", ""] + [f"- {c}" for c in findings] + [""]
    markdown += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    markdown += ["| " + " | ".join(cells) + " |" for cells in body]
    markdown += [""] + [f"- {n}" for n in notes]
    markdown += ["", "## Diagnostics", ""] + [f"- {c}" for c in claims] + [""]
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
    banner = "" if done.complete else f'<p class="banner">{html.escape(done.describe())}</p>'
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>elukit compare report{status}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:1.5em 0}}
.banner{{background:#fff3cd;border:2px solid #d29922;padding:.6em 1em;font-weight:bold}}
.made{{color:#555;font-size:90%}}</style></head>
<body><h1>elukit compare report{status}</h1>{banner}<p>{html.escape(description)}</p>
{''.join(f'<p class="made">{html.escape(m)}</p>' for m in made)}
<h2>Conclusions</h2><ul>{''.join(f'<li>{html.escape(c)}</li>' for c in findings)}</ul>{table}
<ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes)}</ul>
<h2>Diagnostics</h2><ul>{''.join(f'<li>{html.escape(c)}</li>' for c in claims)}</ul>
{images}</body></html>
"""
    atomic_write_text(directory / "report.html", page)
    atomic_write_text(directory / REPORT_MARKER, json.dumps({"database": str(db_path.resolve()), "study": results.study_id}))
    paths = {"html": directory / "report.html", "markdown": directory / "report.md", **figures}
    if earlier is not None:
        paths["earlier"] = earlier
    return paths
