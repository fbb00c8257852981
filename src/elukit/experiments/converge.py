"""Training until the validation accuracy stops improving, on a held-out split of the training set.

`elukit compare` trains for a fixed number of epochs and reports the last one. A verdict about an
activation is only worth something for converged models, so `elukit claims` trains each
configuration with `train_until_converged`:

* `held_out_split` gives the validation samples: for MNIST-1D, 1000 further sequences from its
  generator (so the model fits all 4000 training sequences, as in the MNIST-1D paper); for the
  other datasets `validation_split` holds out a fixed, stratified share of the *training* set
  (the test set is never looked at for a decision);
* every epoch stores, besides the metrics of `elukit compare`, the validation loss and accuracy
  and the test accuracy under Gaussian input noise (``noisy_test_accuracy``, one fixed noise draw);
* each member (seed) of the ensemble has its own checkpoint: the epoch of its highest validation
  accuracy (ties: the lowest validation loss among them, then the earliest); the ensemble stops
  when every member has gone `patience` epochs (>= 10 in the ledger's profiles) without a higher
  validation accuracy (`last_improvement`: a tie, even at a lower loss, does not extend training;
  on a small validation set the loss keeps falling at a flat accuracy for as long as the cap
  allows), or at the cap ``config.epochs``.
* the test metrics (``test_accuracy``, ``noisy_test_accuracy``) are evaluated only at epochs that
  became some member's checkpoint (and at epoch 0): the only epochs a reader takes them from.
  Checkpoints move only forward, to the newest epoch, so no checkpoint lacks them. Readers take each member's metrics at its checkpoint
  (`best_epochs`) and count the members still improving at the cap (`cap_hits`): a row whose
  models hit the cap says so.

The loop uses the same store, ensemble models, optimizers, shuffling and diagnostics as
`elukit.experiments.train`, so a configuration resumes from its last stored epoch exactly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from elukit._registry import parse
from elukit.experiments.data import Dataset
from elukit.experiments.models import build_model
from elukit.experiments.store import NETWORK, Store
from elukit.experiments.train import (
    StudyConfig,
    _evaluate,
    _restore,
    _serialize,
    make_optimizer,
    train_epoch,
)
from elukit.torch._torch import torch
from elukit.torch.diagnostics import Monitor

VALIDATION_METRICS = ("validation_loss", "validation_accuracy", "noisy_test_accuracy")
NOISE_SEED = 20_160_101
"""Seed of the one Gaussian noise draw added to the test inputs for ``noisy_test_accuracy``."""


@dataclasses.dataclass(frozen=True)
class Split:
    """A dataset whose training part is divided into fitting and validation samples."""

    train: Dataset
    """x_train/y_train: the samples fitted; x_test/y_test: the untouched test set."""
    x_validation: np.ndarray
    y_validation: np.ndarray


def validation_split(dataset: Dataset, fraction: float = 0.2, seed: int = 0) -> Split:
    """Hold out `fraction` of each class of the training set (a fixed permutation from `seed`).

    The inputs keep the standardisation `load_dataset` computed on the whole training set (a
    per-feature mean and std: the validation samples' share of those statistics is negligible).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(dataset.y_train):
        members = np.flatnonzero(dataset.y_train == label)
        members = members[rng.permutation(len(members))]
        held.append(members[:max(1, int(round(fraction * len(members))))])
    validation = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(dataset.y_train)), validation)
    if len(keep) < 2:
        raise ValueError(f"validation fraction {fraction} leaves fewer than 2 training samples")
    train = dataclasses.replace(dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep])
    return Split(train, dataset.x_train[validation], dataset.y_train[validation])


def held_out_split(name: str, cache_dir: str | None = None) -> Split:
    """A built-in dataset with its validation samples: the generator's own validation set where it
    has one (`elukit.experiments.data.GENERATED_VALIDATION`: MNIST-1D), else `validation_split`."""
    from elukit.experiments.data import load_dataset, load_with_validation

    generated = load_with_validation(name, cache_dir)
    if generated is None:
        return validation_split(load_dataset(name, cache_dir))
    dataset, x_validation, y_validation = generated
    return Split(dataset, x_validation, y_validation)


def best_epochs(validation_accuracy: np.ndarray, validation_loss: np.ndarray | None = None) -> np.ndarray:
    """Per member, the checkpoint epoch (>= 1): the highest validation accuracy, ties broken by the
    lowest validation loss, then the earliest epoch. Both are (members, epochs + 1) with epoch 0 the
    initial model (NaN where not trained or diverged)."""
    accuracy = np.where(np.isfinite(validation_accuracy), validation_accuracy, -np.inf)
    accuracy[:, 0] = -np.inf
    if validation_loss is None:
        return np.argmax(accuracy, axis=1)
    loss = np.where(np.isfinite(validation_loss), validation_loss, np.inf)
    top = accuracy == accuracy.max(axis=1, keepdims=True)
    candidates = np.where(top, loss, np.inf)
    return np.where(np.isfinite(candidates.min(axis=1)), np.argmin(candidates, axis=1), np.argmax(top, axis=1))


def last_improvement(validation_accuracy: np.ndarray) -> np.ndarray:
    """Per member, the first epoch (>= 1) at which its highest validation accuracy was reached: the
    last epoch that improved on every earlier one. (members, epochs + 1); NaN where not trained."""
    accuracy = np.where(np.isfinite(validation_accuracy), validation_accuracy, -np.inf)
    accuracy[:, 0] = -np.inf
    return np.argmax(accuracy, axis=1)


def cap_hits(validation_accuracy: np.ndarray, validation_loss: np.ndarray | None, patience: int, cap: int) -> int:
    """Members that trained to the cap with a higher validation accuracy within the last `patience`
    epochs: still improving. (`validation_loss` is accepted for symmetry with `best_epochs`; a tie
    at a lower loss is not an improvement.)"""
    trained = np.isfinite(validation_accuracy).any(axis=0)
    last = int(np.flatnonzero(trained).max()) if trained.any() else 0
    if last < cap:
        return 0
    return int(np.sum(last - last_improvement(validation_accuracy) < patience))


def _stopped(validation_accuracy: np.ndarray, patience: int) -> bool:
    """True when every member has gone `patience` or more epochs without a higher validation accuracy."""
    last = validation_accuracy.shape[1] - 1
    return bool(np.all(last - last_improvement(validation_accuracy) >= patience))


def _stored_series(store: Store, runs: Sequence[int], name: str) -> dict[int, dict[int, float]]:
    rows = store.metric_series(runs, name)
    losses: dict[int, dict[int, float]] = {run: {} for run in runs}
    for run, epoch, value in rows:
        losses[int(run)][int(epoch)] = float(value)
    return losses


def train_until_converged(store: Store, study_id: int, config: StudyConfig, activation: str, split: Split,
                          seeds: Sequence[int], label: str, patience: int = 5, noise_std: float = 0.5,
                          progress: Callable[[str, int, int], None] | None = None) -> int:
    """Train (or resume) one configuration's ensemble until validation accuracy stops improving.

    Args:
        config: the model and optimizer (``config.epochs`` is the cap; ``config.seeds`` is ignored).
        activation: an activation in CLI syntax (``elu:alpha=0.5``).
        split: `validation_split` of the dataset.
        seeds: the members' seeds (shuffling and initialisation as in `train_configuration`).
        label: the configuration's name in the study (unique within it).
        patience: epochs without a better validation accuracy after which a member has converged (>= 1).
        noise_std: std of the Gaussian noise of ``noisy_test_accuracy`` (inputs are standardised).
        progress: called with (label, epoch, cap) after each epoch.
    Returns: the configuration id in the store.
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    spec = parse(activation)
    seeds = [int(s) for s in seeds]
    extra = {"activation": activation, "seeds_used": seeds, "patience": patience, "noise_std": noise_std,
             "validation_samples": int(len(split.y_validation))}
    configuration_id, run_ids = store.configuration(study_id, label, {**config.as_dict(), **extra}, seeds)
    if store.configuration_finished(configuration_id):
        return configuration_id
    runs = [run_ids[s] for s in seeds]
    members = len(seeds)
    dataset = split.train
    model = build_model(config.model, seeds, dataset.x_train.shape[1:], dataset.classes, spec, config.width,
                        config.depth, config.init, config.batch_norm)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr)
    data = {k: torch.from_numpy(getattr(dataset, k)) for k in ("x_train", "y_train", "x_test", "y_test")}
    data["x_validation"] = torch.from_numpy(split.x_validation)
    data["y_validation"] = torch.from_numpy(split.y_validation)
    noise = np.random.default_rng(NOISE_SEED).normal(0.0, noise_std, size=dataset.x_test.shape)
    data["x_noisy"] = data["x_test"] + torch.from_numpy(noise.astype(dataset.x_test.dtype))

    splits = {"train": ("x_train", "y_train"), "validation": ("x_validation", "y_validation"),
              "test": ("x_test", "y_test"), "noisy_test": ("x_noisy", "y_test")}

    def network_rows(prefixes: Sequence[str]) -> list[tuple[int, str, int, float]]:
        rows = []
        for prefix in prefixes:
            x, y = splits[prefix]
            loss, accuracy = _evaluate(model, data[x], data[y], members)
            named = (("loss", loss), ("accuracy", accuracy)) if prefix != "noisy_test" else (("accuracy", accuracy),)
            for suffix, values in named:
                rows.extend((run, f"{prefix}_{suffix}", NETWORK, float(values[m])) for m, run in enumerate(runs))
        return rows

    checkpoint = store.checkpoint(configuration_id)
    if checkpoint is None:
        rows = network_rows(tuple(splits))
        store.write_epoch(configuration_id, 0, rows, _serialize(model, optimizer), 0.0)
        first, seconds = 1, 0.0
    else:
        epoch, seconds, state = checkpoint
        _restore(state, model, optimizer)
        first = epoch + 1
    history = {name: np.full((members, config.epochs + 1), np.nan) for name in ("validation_accuracy", "validation_loss")}
    for name, values in history.items():
        stored = _stored_series(store, runs, name)
        for member, run in enumerate(runs):
            for epoch, value in stored[run].items():
                if epoch <= config.epochs:
                    values[member, epoch] = value
    monitor = Monitor(model, ensemble_dim=0, unit_dim=model.unit_dim)
    try:
        for epoch in range(first, config.epochs + 1):
            if epoch > 1 and _stopped(history["validation_accuracy"][:, :epoch], patience):
                break
            started = time.perf_counter()
            layer_rows = train_epoch(model, optimizer, monitor, data, seeds, runs, epoch, config.batch_size)
            rows = network_rows(("train", "validation"))
            for metric, values in history.items():
                by_run = {run: value for run, name, layer, value in rows if name == metric}
                values[:, epoch] = [by_run[run] for run in runs]
            if np.any(best_epochs(history["validation_accuracy"][:, :epoch + 1],
                                  history["validation_loss"][:, :epoch + 1]) == epoch):
                rows += network_rows(("test", "noisy_test"))
            rows += layer_rows
            seconds += time.perf_counter() - started
            store.write_epoch(configuration_id, epoch, rows, _serialize(model, optimizer), seconds)
            if progress is not None:
                progress(label, epoch, config.epochs)
    finally:
        monitor.close()
    store.finish_configuration(configuration_id)
    return configuration_id


__all__ = ["NOISE_SEED", "VALIDATION_METRICS", "Split", "best_epochs", "cap_hits", "held_out_split", "last_improvement",
           "train_until_converged", "validation_split"]
