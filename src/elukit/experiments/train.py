"""Studies: every activation trained as one batched ensemble of seeds, with diagnostics, stored
epoch by epoch and resumable.

A study is a `StudyConfig` (validated, hashed into the store). For each activation the seeds
train together as one ensemble (`elukit.experiments.models`): one optimizer step updates every
member with its own gradient. Shuffling of member s in epoch e comes from
``np.random.default_rng([s, e])`` and its initialisation from ``torch.Generator(s)``, so a run is
deterministic per seed and an interrupted study resumes from its last stored epoch exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elukit._registry import parse
from elukit._files import check_writable_directory
from elukit._provenance import provenance
from elukit.experiments.data import DATASETS, Dataset, load_dataset, load_npz
from elukit.experiments.executors import make_executor, usable_cores
from elukit.experiments.models import INITS, build_model
from elukit.experiments.store import NETWORK, Store
from elukit.torch._torch import torch
from elukit.torch.diagnostics import Monitor

DATASET_DEFAULT = "mnist1d"
LAYER_METRICS = ("mean_activation", "activation_variance", "dead_fraction", "gradient_sparsity", "gradient_norm")
NETWORK_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything that determines a study's results (hashed into the store)."""

    dataset: str | None = DATASET_DEFAULT
    data_file: str | None = None
    data_sha256: str | None = None
    activations: tuple[str, ...] = ("relu", "leaky_relu", "elu", "selu")
    seeds: int = 8
    epochs: int = 60
    model: str = "mlp"
    width: int = 100
    depth: int = 2
    optimizer: str = "adam"
    lr: float = 1e-2
    """Adam 1e-2 trains the default MLP on MNIST-1D to the MNIST-1D paper's level (ReLU 67.7% at
    epoch 50-60, 4 seeds), where 1e-3 left it at 56% after 30 epochs and 3e-3 at 61.5% after 80:
    the default study compares trained networks, not half-trained ones (docs/experiments.md)."""
    batch_size: int = 100
    init: str = "gain"
    batch_norm: bool = False

    def validated(self) -> StudyConfig:
        """This config, checked (ValueError naming the option) and with `dataset` None when
        `data_file` gives the data (the store records what was trained on, not the default)."""
        checks = [
            (self.seeds >= 1, f"--seeds must be >= 1, got {self.seeds}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.width >= 1, f"--width must be >= 1, got {self.width}"),
            (self.depth >= 1, f"--depth must be >= 1, got {self.depth}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be finite and > 0, got {self.lr}"),
            (self.model in ("mlp", "cnn"), f"--model must be mlp or cnn, got {self.model!r}"),
            (self.optimizer in ("adam", "sgd"), f"--optimizer must be adam or sgd, got {self.optimizer!r}"),
            (self.init in INITS, f"--init must be one of {', '.join(INITS)}, got {self.init!r}"),
            (len(self.activations) >= 1, "--activations must name at least one activation"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        labels = [parse(a).label() for a in self.activations]  # raises on unknown names/params
        if len(set(labels)) != len(labels):
            raise ValueError(f"--activations lists an activation twice: {', '.join(self.activations)}")
        if self.model == "cnn" and self.batch_norm:
            raise ValueError("--batch-norm is implemented for --model mlp only")
        if self.data_file:
            return self if self.dataset is None else dataclasses.replace(self, dataset=None)
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset: unknown dataset {self.dataset!r}; known datasets: {', '.join(DATASETS)}")
        return self

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "clevert2016": {
        # Clevert et al. 2016, section 4.1: 8 hidden layers of 128 units, SGD lr 0.01, batch 64,
        # He initialisation, ReLU / Leaky ReLU (0.1) / ELU; on the offline MNIST-1D data.
        "activations": ("relu", "leaky_relu:slope=0.1", "elu"),
        "model": "mlp", "width": 128, "depth": 8, "optimizer": "sgd", "lr": 0.01,
        "batch_size": 64, "init": "he", "epochs": 30, "seeds": 5,
    },
}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_study_data(config: StudyConfig, cache_dir: str | None = None) -> Dataset:
    if config.data_file:
        return load_npz(config.data_file)
    return load_dataset(config.dataset or DATASET_DEFAULT, cache_dir)


@dataclasses.dataclass
class Progress:
    """What a progress sink is told after each epoch."""

    label: str
    configuration: int
    configurations: int
    epoch: int
    epochs: int
    test_accuracy: float
    train_loss: float
    elapsed: float
    eta: float


def _serialize(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    return buffer.getvalue()


def _restore(state: bytes, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    loaded = torch.load(io.BytesIO(state), weights_only=True)
    model.load_state_dict(loaded["model"])
    optimizer.load_state_dict(loaded["optimizer"])


def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, members: int, chunk: int = 2048
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per-member mean cross-entropy and accuracy on a whole split (eval mode, no grad)."""
    model.eval()
    losses, correct = torch.zeros(members, dtype=torch.float64), torch.zeros(members, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            xb, yb = x[start:start + chunk], y[start:start + chunk]
            logits = model(xb.unsqueeze(0).expand(members, *xb.shape))
            target = yb.unsqueeze(0).expand(members, -1)
            losses += torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none").sum(1).double()
            correct += (logits.argmax(-1) == target).sum(1).double()
    model.train()
    return (losses / len(x)).numpy(), (correct / len(x)).numpy()


def _network_rows(runs: Sequence[int], model, data: dict[str, torch.Tensor], members: int) -> list[tuple[int, str, int, float]]:
    train_loss, train_accuracy = _evaluate(model, data["x_train"], data["y_train"], members)
    test_loss, test_accuracy = _evaluate(model, data["x_test"], data["y_test"], members)
    rows = []
    for member, run in enumerate(runs):
        for name, values in (("train_loss", train_loss), ("train_accuracy", train_accuracy),
                             ("test_loss", test_loss), ("test_accuracy", test_accuracy)):
            rows.append((run, name, NETWORK, float(values[member])))
    return rows


def member_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for an index of shape (members, batch): index_select on the flat index is
    3x faster than advanced indexing here (28 us against 9 us for 16 x 100 rows of 40)."""
    return table.index_select(0, index.reshape(-1)).reshape(*index.shape, *table.shape[1:])


def make_optimizer(name: str, parameters: Any, lr: float) -> torch.optim.Optimizer:
    """Adam or SGD (no momentum) with fused updates: one pass over each parameter tensor per step,
    elementwise, so the members of an ensemble stay independent."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, fused=True)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def warm_up(model: torch.nn.Module, members: int, optimizer_name: str, lr: float, data: dict[str, torch.Tensor],
            batch_size: int, steps: int = 3) -> None:
    """A few training steps and an evaluation on a throwaway copy of `model`, so that one-time
    costs (first kernel calls, allocator growth, thread-pool start, lazy imports) are not charged
    to the configuration's training time. The model and its optimizer are untouched, and no
    random state is drawn: the stored results are the same bits with or without it (tested).
    """
    twin = copy.deepcopy(model)
    optimizer = make_optimizer(optimizer_name, twin.parameters(), lr)
    monitor = Monitor(twin, ensemble_dim=0, unit_dim=twin.unit_dim)
    try:
        batch = data["x_train"][:batch_size]
        xb = batch.unsqueeze(0).expand(members, *batch.shape)
        yb = data["y_train"][:batch_size].unsqueeze(0).expand(members, -1)
        with monitor.recording():
            for _ in range(steps):
                logits = twin(xb)
                loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), yb, reduction="none").mean(1).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        monitor.collect()
        _evaluate(twin, data["x_test"][:batch_size], data["y_test"][:batch_size], members)
    finally:
        monitor.close()


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, monitor: Monitor,
                data: dict[str, torch.Tensor], seeds: Sequence[int], runs: Sequence[int], epoch: int,
                batch_size: int) -> list[tuple[int, str, int, float]]:
    """One epoch of an ensemble: member s sees the training set in the order
    ``np.random.default_rng([s, epoch])`` gives. Returns the per-layer diagnostic rows (run id,
    metric, layer, value) the monitor recorded."""
    samples = len(data["x_train"])
    order = torch.from_numpy(np.stack([np.random.default_rng([seed, epoch]).permutation(samples) for seed in seeds]))
    with monitor.recording():
        for start in range(0, samples, batch_size):
            index_batch = order[:, start:start + batch_size]
            xb, yb = member_rows(data["x_train"], index_batch), member_rows(data["y_train"], index_batch)
            logits = model(xb)
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), yb, reduction="none").mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    statistics = monitor.collect()
    rows = []
    for layer, name in enumerate(monitor.layers):
        for metric in LAYER_METRICS:
            values = getattr(statistics[name], metric)
            rows.extend((run, metric, layer, float(values[m])) for m, run in enumerate(runs))
    return rows


def train_configuration(store: Store, study_id: int, config: StudyConfig, activation: str, dataset: Dataset,
                        index: int = 0, total: int = 1, progress: Callable[[Progress], None] | None = None,
                        log: Callable[[str], None] | None = None) -> None:
    """Train (or resume) one activation's ensemble of seeds and store every epoch.

    The stored training time is the time of the epochs alone, measured after `warm_up`."""
    spec = parse(activation)
    seeds = list(range(config.seeds))
    configuration_id, run_ids = store.configuration(study_id, spec.label(), {**config.as_dict(), "activation": activation}, seeds)
    if store.configuration_finished(configuration_id):
        if log is not None:
            log(f"{spec.label()}: finished earlier ({config.epochs} epochs), skipped")
        return
    runs = [run_ids[s] for s in seeds]
    members = len(seeds)
    model = build_model(config.model, seeds, dataset.x_train.shape[1:], dataset.classes, spec, config.width,
                        config.depth, config.init, config.batch_norm)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr)
    data = {k: torch.from_numpy(getattr(dataset, k)) for k in ("x_train", "y_train", "x_test", "y_test")}
    checkpoint = store.checkpoint(configuration_id)
    if checkpoint is None:
        store.write_epoch(configuration_id, 0, _network_rows(runs, model, data, members), _serialize(model, optimizer), 0.0)
        first, seconds = 1, 0.0
    else:
        epoch, seconds, state = checkpoint
        _restore(state, model, optimizer)
        first = epoch + 1
        if log is not None:
            log(f"{spec.label()}: resuming after epoch {epoch} of {config.epochs}")
    warm_up(model, members, config.optimizer, config.lr, data, config.batch_size)
    monitor = Monitor(model, ensemble_dim=0, unit_dim=model.unit_dim)
    try:
        for epoch in range(first, config.epochs + 1):
            started = time.perf_counter()
            layer_rows = train_epoch(model, optimizer, monitor, data, seeds, runs, epoch, config.batch_size)
            rows = _network_rows(runs, model, data, members) + layer_rows
            seconds += time.perf_counter() - started
            store.write_epoch(configuration_id, epoch, rows, _serialize(model, optimizer), seconds)
            if progress is not None:
                by_name = {(run, name): value for run, name, layer, value in rows if layer == NETWORK}
                per_epoch = seconds / epoch
                progress(Progress(spec.label(), index, total, epoch, config.epochs,
                                  float(np.mean([by_name[(r, "test_accuracy")] for r in runs])),
                                  float(np.mean([by_name[(r, "train_loss")] for r in runs])),
                                  seconds, per_epoch * ((config.epochs - epoch) + (total - index - 1) * config.epochs)))
    finally:
        monitor.close()
    store.finish_configuration(configuration_id)


def default_threads(model: str = "mlp", load: float | None = None) -> int:
    """torch threads for a study: for the MLP, 2 where the process may use 2 cores or more and
    another core is idle (1-minute load average <= cores - 1.5), else 1.

    The MLP ensemble's batched matmuls split over members, so a second thread gives the same bits
    (tested) in less time on an idle machine; more than 2 were not measured. On a busy one a
    second thread is far slower: its OpenMP workers wait at every matmul for a thread the
    scheduler has parked (measured on the 2-core machine at load 9: 3 MNIST-1D epochs of ReLU took
    75.7 s of training with 2 threads and 2.3 s with 1). The CNN stays on 1: its grouped
    convolutions split their sums differently with 2 threads, which changes the last bits of its
    results (measured), and a study should not depend on the machine's core count or load."""
    if model != "mlp":
        return 1
    cores = usable_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not available on this platform: assume busy
            load = float(cores)
    return 2 if cores >= 2 and load <= cores - 1.5 else 1


def run_study(config: StudyConfig, out: str | Path = "elukit-results", resume: bool = False,
              progress: Callable[[Progress], None] | None = None, threads: int = 1,
              cache_dir: str | None = None, log: Callable[[str], None] | None = None, executor: str = "local",
              ray_address: str | None = None, workers: int | None = None,
              command: str | None = None) -> tuple[Store, int]:
    """Train every activation of `config` (or continue the latest study with `resume`).

    Everything that can be checked is checked before the store is touched: the config, the
    output folder, the data (loaded and validated), with `resume` that OUT/results.db exists, and
    the executor (started, or its cluster reached). So a bad input leaves no empty study behind.
    `log` receives one line per resumed or skipped configuration.

    `executor` decides where each configuration trains (`elukit.experiments.executors`): "local"
    (this process) or "ray" (Ray tasks; `ray_address` None starts a local instance, "auto" or
    "host:port" joins a cluster; `workers` caps the configurations training at once). Results are
    the same rows either way. `command` is recorded with the study's provenance (default: this
    process's command line)."""
    config = config.validated()
    if config.data_file and not Path(config.data_file).is_file():
        raise ValueError(f"--data {config.data_file!r}: no such file")
    if config.data_file and not config.data_sha256:
        config = dataclasses.replace(config, data_sha256=file_sha256(config.data_file))
    path = Path(out) / "results.db"
    if resume and not path.is_file():
        raise ValueError(f"--resume: no results database at {str(path)!r}; run without --resume to start a study")
    runner = make_executor(executor, ray_address, workers)  # connects (or fails) before anything is written
    try:
        check_writable_directory(out, "--out")
        dataset = load_study_data(config, cache_dir)
        _check_sample_shape(config, dataset, log)
        torch.set_num_threads(threads)
        return _run_study(config, path, resume, progress, threads, dataset, log, runner, command)
    finally:
        runner.close()


def _check_sample_shape(config: StudyConfig, dataset: Dataset, log: Callable[[str], None] | None) -> None:
    """Samples with more than one axis (images): the CNN, a 1-D convolution, would read them as one
    long signal, so they are refused; the MLP flattens them, and says so (issue 22)."""
    shape = dataset.x_train.shape[1:]
    if len(shape) < 2:
        return
    where = f"--data {config.data_file!r}" if config.data_file else f"--dataset {config.dataset}"
    size = math.prod(shape)
    if config.model == "cnn":
        raise ValueError(f"{where}: samples of shape {shape} have {len(shape)} axes; --model cnn convolves 1-D "
                         f"signals and would read each as one signal of length {size}. Use --model mlp, or "
                         f"reshape the data to (n, {size}) yourself if a 1-D signal is what you mean")
    if log is not None:
        log(f"{where}: samples of shape {shape} are flattened to {size} features for the MLP")


def _run_study(config: StudyConfig, path: Path, resume: bool, progress: Callable[[Progress], None] | None,
               threads: int, dataset: Dataset, log: Callable[[str], None] | None, runner: Any,
               command: str | None = None) -> tuple[Store, int]:
    store = Store(path)
    try:
        if resume:
            latest = store.latest_study()
            if latest is None:
                raise ValueError(f"--resume: {store.path} holds no study to resume")
            study_id, stored = latest
            wanted = config.as_dict()
            differences = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            if differences:
                details = "; ".join(f"{k}: stored {stored.get(k)!r}, given {wanted.get(k)!r}" for k in differences)
                raise ValueError(f"--resume refused: the arguments differ from study {study_id} in {store.path} ({details})")
            if log is not None:
                log(f"resuming study {study_id} in {store.path}")
        else:
            study_id = store.create_study(config.as_dict())
        record = provenance(threads=threads, command=command)
        record.update(executor=runner.name, resumed=resume)
        store.add_provenance(study_id, record)
    except BaseException:
        store.close()
        raise
    runner.run(train_configuration, store, study_id, config, dataset, progress, threads, log)
    store.finish_study(study_id)
    return store, study_id
