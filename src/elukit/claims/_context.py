"""Where a ledger's measurements come from: profiles, regimes, and the store-backed context.

A `Context` belongs to one ledger (a row of ``claims_ledger`` in OUT/results.db, the store of
`elukit compare`). Experimental measurements ask it for *arms* (an activation trained in a regime
on a dataset); it trains each arm once, until its validation loss stops improving
(`elukit.experiments.converge`), as a configuration of the study of that regime and dataset, and
reads its rows back. Other measurements (timings, Monte Carlo) go through `Context.cached`, which
stores their result in ``claims_measurement``; `--resume` therefore redoes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

from elukit.experiments.store import NETWORK, Store, config_key


@dataclasses.dataclass(frozen=True)
class Regime:
    """A training setup: the model and optimizer fields of a `StudyConfig`, and its learning-rate grid.

    The grids were set after quick runs in which activations chose the top of (3e-4, 1e-3, 3e-3)
    and then of (1e-3, 3e-3, 1e-2) for Adam, and of (0.01, 0.03, 0.1) and then (0.03, 0.1, 0.3) for
    SGD: a choice on the edge of a grid is not a tuned rate. The regime's own ``lr`` (elukit compare's default, Clevert's 0.01) is used where a
    claim is not about performance (gradient ratios at the first epoch)."""

    name: str
    description: str
    settings: tuple[tuple[str, Any], ...]
    lr_grid: tuple[float, ...]

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.settings)


def trained_width(regime: str, profile: Profile) -> int:
    """The hidden width a profile trains in a regime: the regime's width times the profile's width_scale."""
    return max(2, int(round(REGIMES[regime].config["width"] * profile.width_scale)))


REGIMES: dict[str, Regime] = {
    "shallow-adam": Regime(
        "shallow-adam", "MLP 2x100, Adam, batch 100, elukit's derived gain (elukit compare's default)",
        (("model", "mlp"), ("width", 100), ("depth", 2), ("optimizer", "adam"), ("lr", 1e-3),
         ("batch_size", 100), ("init", "gain")), (1e-3, 3e-3, 1e-2, 3e-2)),
    "deep-sgd": Regime(
        "deep-sgd", "MLP 8x128, plain SGD, batch 64, He init (Clevert et al. 2016, sec. 4.1: --preset clevert2016)",
        (("model", "mlp"), ("width", 128), ("depth", 8), ("optimizer", "sgd"), ("lr", 0.01),
         ("batch_size", 64), ("init", "he")), (0.03, 0.1, 0.3, 1.0)),
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """How much evidence a ledger gathers."""

    name: str
    seeds: int
    datasets: tuple[str, ...]
    regimes: tuple[str, ...]
    cap: int
    """the most epochs a configuration trains (it stops earlier when validation loss stops improving)"""
    patience: int
    width_scale: float
    """hidden widths are the regime's times this"""
    timing_rounds: int
    random_net_width: int
    compute: str
    """the compute it needs, said up front"""

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", seeds=6, datasets=("mnist1d", "digits"), regimes=("shallow-adam", "deep-sgd"),
                     cap=40, patience=4, width_scale=0.5, timing_rounds=30, random_net_width=256,
                     compute="every claim in under 15 minutes on 2 CPU cores (measured: see docs/claims.md)"),
    "full": Profile("full", seeds=16, datasets=("mnist1d", "digits", "breast_cancer", "wine"),
                    regimes=("shallow-adam", "deep-sgd"), cap=150, patience=10, width_scale=1.0, timing_rounds=40,
                    random_net_width=1024,
                    compute="an estimate, not measured: 20-40x the quick profile's 441 CPU-seconds (16 seeds, 4 datasets, "
                            "the regimes' full widths, up to 150 epochs), i.e. 3-5 CPU-hours; use --workers N on a "
                            "machine with N cores"),
    "tiny": Profile("tiny", seeds=3, datasets=("wine", "breast_cancer"), regimes=("shallow-adam", "deep-sgd"),
                    cap=3, patience=1, width_scale=0.125, timing_rounds=3, random_net_width=32,
                    compute="seconds; for tests of the machinery only (its verdicts are not evidence)"),
}


def check_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"--profile must be one of {', '.join(PROFILES)}, got {name!r}")
    return PROFILES[name]


LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims_ledger (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS claims_measurement (
    ledger_id INTEGER NOT NULL REFERENCES claims_ledger(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ledger_id, key)
)
"""


@dataclasses.dataclass(frozen=True)
class Arm:
    """One configuration: an activation trained in a regime on a dataset (seeds as the profile says)."""

    regime: str
    dataset: str
    activation: str
    batch_norm: bool = False
    init: str | None = None
    """None: the regime's"""
    lr: float | None = None
    """None: the regime's default"""
    seed_offset: int = 0

    @property
    def label(self) -> str:
        parts = [self.activation]
        if self.batch_norm:
            parts.append("bn")
        if self.init is not None:
            parts.append(f"init={self.init}")
        if self.lr is not None:
            parts.append(f"lr={self.lr:g}")
        if self.seed_offset:
            parts.append(f"seeds+{self.seed_offset}")
        return " ".join(parts)


@dataclasses.dataclass
class ArmResult:
    """An arm's stored metrics: network[name] is (seeds, epochs + 1), layers[name] (seeds, layers, epochs + 1)."""

    arm: Arm
    network: dict[str, np.ndarray]
    layers: dict[str, np.ndarray]

    @cached_property
    def best(self) -> np.ndarray:
        """Each seed's best-validation epoch (its converged model)."""
        from elukit.experiments.converge import best_epochs

        return best_epochs(self.network["validation_loss"])

    def at_best(self, name: str) -> np.ndarray:
        """A network metric of each seed at its best-validation epoch."""
        return self.network[name][np.arange(len(self.best)), self.best]

    def layers_at(self, name: str, epochs: np.ndarray | int | None = None) -> np.ndarray:
        """A per-layer metric (seeds, layers) at each seed's best epoch (or the given epoch(s))."""
        epochs = self.best if epochs is None else np.broadcast_to(np.asarray(epochs), self.best.shape)
        values = self.layers[name]
        return values[np.arange(values.shape[0]), :, epochs]


@dataclasses.dataclass(frozen=True)
class Tuned:
    """An activation with its learning rate tuned on the validation split."""

    lr: float
    result: ArmResult
    """the arm at the chosen learning rate"""
    grid: dict[float, ArmResult]
    seed_best_lr: np.ndarray
    """the learning rate each seed would have chosen on its own (lowest best validation loss)"""


class Context:
    """The store, profile and ledger id a ledger's measurements share."""

    def __init__(self, store: Store, ledger_id: int, profile: Profile, progress: Callable[[str], None] | None = None,
                 cache_dir: str | None = None) -> None:
        self.store, self.ledger_id, self.profile = store, ledger_id, profile
        self.progress = progress or (lambda message: None)
        self.cache_dir = cache_dir
        self._splits: dict[str, Any] = {}
        self._results: dict[Arm, ArmResult] = {}

    @property
    def seeds(self) -> list[int]:
        return list(range(self.profile.seeds))

    # -- cached computations ---------------------------------------------------------------------
    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` (JSON-serialisable) the first time for this ledger, the stored value after."""
        row = self.store.connection.execute("SELECT value FROM claims_measurement WHERE ledger_id = ? AND key = ?",
                                            (self.ledger_id, key)).fetchone()
        if row is not None:
            return json.loads(row[0])
        value = compute()
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO claims_measurement (ledger_id, key, value) VALUES (?, ?, ?)",
                       (self.ledger_id, key, json.dumps(value)))
        return value

    # -- training ------------------------------------------------------------------------------------
    def split(self, dataset: str):
        if dataset not in self._splits:
            from elukit.experiments.converge import validation_split
            from elukit.experiments.data import load_dataset

            self._splits[dataset] = validation_split(load_dataset(dataset, self.cache_dir))
        return self._splits[dataset]

    def _study(self, regime: str, dataset: str) -> int:
        config = {"claims_ledger": self.ledger_id, "regime": regime, "dataset": dataset,
                  "profile": self.profile.as_dict(), **REGIMES[regime].config}
        row = self.store.connection.execute("SELECT id FROM study WHERE key = ? ORDER BY id LIMIT 1",
                                            (config_key(config),)).fetchone()
        return int(row[0]) if row is not None else self.store.create_study(config)

    def study_config(self, arm: Arm):
        from elukit.experiments.train import StudyConfig

        settings = REGIMES[arm.regime].config
        settings["width"] = trained_width(arm.regime, self.profile)
        if arm.init is not None:
            settings["init"] = arm.init
        if arm.lr is not None:
            settings["lr"] = arm.lr
        return StudyConfig(dataset=arm.dataset, activations=(arm.activation,), seeds=self.profile.seeds,
                           epochs=self.profile.cap, batch_norm=arm.batch_norm, **settings).validated()

    def result(self, arm: Arm) -> ArmResult:
        """The arm's metrics, training it first if the store does not hold it finished."""
        regime = REGIMES[arm.regime].config
        arm = dataclasses.replace(arm, lr=regime["lr"] if arm.lr is None else arm.lr,
                                  init=regime["init"] if arm.init is None else arm.init)
        if arm in self._results:
            return self._results[arm]
        from elukit.experiments.converge import train_until_converged

        study_id = self._study(arm.regime, arm.dataset)
        started = time.monotonic()
        seeds = [s + arm.seed_offset for s in self.seeds]
        stored = self.store.connection.execute(
            "SELECT finished FROM configuration WHERE study_id = ? AND label = ?", (study_id, arm.label)).fetchone()
        configuration_id = train_until_converged(self.store, study_id, self.study_config(arm), arm.activation,
                                                 self.split(arm.dataset), seeds, arm.label, self.profile.patience)
        done = "stored" if stored is not None and stored[0] is not None else f"{time.monotonic() - started:.1f} s"
        self.progress(f"{arm.regime}/{arm.dataset} {arm.label}: {done}")
        result = self._read(configuration_id, arm)
        self._results[arm] = result
        return result

    def _read(self, configuration_id: int, arm: Arm) -> ArmResult:
        rows = self.store.connection.execute(
            """SELECT run.seed, metric.epoch, metric.name, metric.layer, metric.value FROM metric
               JOIN run ON run.id = metric.run_id WHERE run.configuration_id = ? ORDER BY run.seed""",
            (configuration_id,)).fetchall()
        seeds = sorted({int(r[0]) for r in rows})
        epochs = max(int(r[1]) for r in rows)
        layer_count = max(int(r[3]) for r in rows) + 1
        position = {seed: i for i, seed in enumerate(seeds)}
        network: dict[str, np.ndarray] = {}
        layers: dict[str, np.ndarray] = {}
        for seed, epoch, name, layer, value in rows:
            value = np.nan if value is None else value
            if layer == NETWORK:
                network.setdefault(name, np.full((len(seeds), epochs + 1), np.nan))[position[seed], epoch] = value
            else:
                layers.setdefault(name, np.full((len(seeds), layer_count, epochs + 1), np.nan))[
                    position[seed], layer, epoch] = value
        return ArmResult(arm, network, layers)

    def tuned(self, regime: str, dataset: str, activation: str, batch_norm: bool = False, init: str | None = None
              ) -> Tuned:
        """The activation trained at each learning rate of the regime's grid; the chosen rate has the
        lowest validation loss (each seed's best, averaged over seeds)."""
        grid = {lr: self.result(Arm(regime, dataset, activation, batch_norm, init=init, lr=lr)) for lr in REGIMES[regime].lr_grid}
        best_losses = {lr: np.min(np.where(np.isfinite(loss := r.network["validation_loss"][:, 1:]), loss, np.inf), axis=1)
                       for lr, r in grid.items()}  # a diverged run (NaN) never wins
        rates = list(grid)
        chosen = min(rates, key=lambda lr: (float(np.mean(best_losses[lr])), lr))
        stacked = np.stack([best_losses[lr] for lr in rates])  # (rates, seeds)
        seed_best = np.asarray(rates)[np.argmin(stacked, axis=0)]
        return Tuned(chosen, grid[chosen], grid, seed_best)


class _Recorder(Context):
    """Runs experimental measurements on placeholder results to learn which arms they need.

    Arms asked for with the regime's default learning rate or through `tuned` (the grid) do not
    depend on any result, so they can be trained in parallel before the measurements run; arms at
    a tuned learning rate are left to the measurements."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(store=None, ledger_id=0, profile=profile)  # type: ignore[arg-type]
        self.independent: list[Arm] = []
        self._in_grid = False

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        return [0.0, 0.0]

    def result(self, arm: Arm) -> ArmResult:
        regime = REGIMES[arm.regime].config
        if arm.lr is None or self._in_grid:
            normal = dataclasses.replace(arm, lr=regime["lr"] if arm.lr is None else arm.lr,
                                         init=regime["init"] if arm.init is None else arm.init)
            if normal not in self.independent:
                self.independent.append(normal)
        seeds, epochs = self.profile.seeds, 2
        network = {name: np.ones((seeds, epochs + 1)) for name in
                   ("validation_loss", "test_accuracy", "noisy_test_accuracy", "train_loss")}
        layers = {name: np.ones((seeds, 2, epochs + 1)) for name in
                  ("gradient_sparsity", "mean_activation", "dead_fraction", "activation_variance", "gradient_norm")}
        return ArmResult(arm, network, layers)

    def tuned(self, *args: Any, **kwargs: Any) -> Tuned:
        self._in_grid = True
        try:
            return super().tuned(*args, **kwargs)
        finally:
            self._in_grid = False


def independent_arms(measurements: Any, profile: Profile) -> list[Arm]:
    """The arms `measurements` (experimental ones) need that depend on no result, in first-use order."""
    recorder = _Recorder(profile)
    for measurement in measurements:
        if measurement.kind == "experiments":
            measurement(recorder)
    return recorder.independent


def _train_arm(path: str, ledger_id: int, profile: Profile, arm: Arm, cache_dir: str | None) -> str:
    """Worker process: train one arm into the store at `path` (one torch thread)."""
    from elukit.torch._torch import torch

    torch.set_num_threads(1)
    messages: list[str] = []
    store = Store(path)
    try:
        Context(store, ledger_id, profile, messages.append, cache_dir).result(arm)
    finally:
        store.close()
    return messages[-1]


def _converge_job(store: Any, study_id: int, config: Any, activation: str, split: Any, seeds: list[int], label: str,
                  patience: int, report: Callable[[Any], None]) -> None:
    """One arm trained until converged, as a job of a Ray executor (`store` is its writer)."""
    from elukit.experiments.converge import train_until_converged

    started = time.monotonic()
    train_until_converged(store, study_id, config, activation, split, seeds, label, patience)
    report(f"{label}: {time.monotonic() - started:.1f} s on a Ray worker")


def _prefetch_on_ray(context: Context, arms: list[Arm], executor: Any) -> None:
    """The arms as Ray jobs (one torch thread each); each split goes once through the object store."""
    splits = {dataset: executor.ray.put(context.split(dataset)) for dataset in {arm.dataset for arm in arms}}
    jobs = [(_converge_job, (context._study(arm.regime, arm.dataset), context.study_config(arm), arm.activation,
                             splits[arm.dataset], [s + arm.seed_offset for s in context.seeds], arm.label,
                             context.profile.patience))
            for arm in arms]
    executor.run_jobs(context.store, jobs, threads=1, log=context.progress)


def prefetch(context: Context, arms: list[Arm], workers: int, executor: Any = None) -> None:
    """Train `arms` in `workers` processes (each on one torch thread), or as jobs of a Ray
    `executor`, before the measurements read them; every arm's study is created here first, so
    workers never race to create one."""
    for arm in arms:
        context._study(arm.regime, arm.dataset)
    # the costliest first (deep, then larger datasets), so that no worker is left with a long tail
    arms = sorted(arms, key=lambda arm: (-REGIMES[arm.regime].config["depth"], arm.dataset != "mnist1d"))
    if executor is not None:
        _prefetch_on_ray(context, arms, executor)
        return
    if workers <= 1 or not arms:
        for arm in arms:
            context.result(arm)
        return
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_arm, str(context.store.path), context.ledger_id, context.profile, arm,
                               context.cache_dir) for arm in arms]
        try:
            for future in concurrent.futures.as_completed(futures):
                context.progress(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


__all__ = ["Arm", "ArmResult", "Context", "LEDGER_SCHEMA", "PROFILES", "Profile", "REGIMES", "Regime", "Tuned",
           "check_profile", "independent_arms", "prefetch"]
