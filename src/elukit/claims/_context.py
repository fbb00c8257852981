"""Where a ledger's measurements come from: profiles, regimes, and the store-backed context.

A `Context` belongs to one ledger (a row of ``claims_ledger`` in OUT/results.db, the store of
`elukit compare`). Experimental measurements ask it for *arms* (an activation trained in a regime
on a dataset at one learning rate); it trains each arm once, until its validation accuracy stops
improving (`elukit.experiments.converge`), as a configuration of the study of that regime and
dataset, and reads its rows back. Each arm's ensemble holds the comparison seeds and the tuning
seeds (`TUNING_OFFSET` + i): rates are chosen on the tuning seeds only (`Context.tuned`). Other measurements (timings, Monte Carlo) go through `Context.cached`, which
stores their result in ``claims_measurement``; `--resume` therefore redoes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

from elukit.experiments.store import NETWORK, Store, config_key


@dataclasses.dataclass(frozen=True)
class Regime:
    """A training setup: the model and optimizer fields of a `StudyConfig`, and its learning-rate grid.

    Grids step by x2 (protocol 2; protocol 1's x3 grids, moved twice after runs had been seen, left
    near-ties between neighbours undecidable). Rates are tuned on tuning seeds that no comparison
    uses, and every comparison is also made at each grid point (matched rates). The regime's own
    ``lr`` is used where a claim is not about performance."""

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
        (("model", "mlp"), ("width", 100), ("depth", 2), ("optimizer", "adam"), ("lr", 4e-3),
         ("batch_size", 100), ("init", "gain")), (2e-3, 4e-3, 8e-3, 1.6e-2)),
    "deep-sgd": Regime(
        "deep-sgd", "MLP 8x128, plain SGD, batch 64, He init (Clevert et al. 2016, sec. 4.1: --preset clevert2016)",
        (("model", "mlp"), ("width", 128), ("depth", 8), ("optimizer", "sgd"), ("lr", 0.1),
         ("batch_size", 64), ("init", "he")), (0.05, 0.1, 0.2, 0.4)),
}
DEEP_REGIME = "deep-fc"
"""Deep fully connected networks at initialisation (the setting of the SELU paper's experiments):
depth `Profile.deep_depths`, width `Profile.random_net_width`, each activation's derived gain
(LeCun normal for SELU), fed a batch of real inputs; no training."""
TUNING_OFFSET = 10_000
"""Tuning seeds are TUNING_OFFSET + 0 .. tuning_seeds - 1: no comparison uses them."""


@dataclasses.dataclass(frozen=True)
class Profile:
    """How much evidence a ledger gathers."""

    name: str
    seeds: int
    datasets: tuple[str, ...]
    regimes: tuple[str, ...]
    cap: int
    """the most epochs a configuration trains (it stops earlier when validation accuracy stops improving)"""
    patience: int
    width_scale: float
    """hidden widths are the regime's times this"""
    timing_rounds: int
    random_net_width: int
    compute: str
    """the compute it needs, said up front"""
    tuning_seeds: int = 4
    """seeds that tune the learning rate (trained in the same ensembles, never compared)"""
    deep_depths: tuple[int, ...] = (32,)
    """depths of the deep fully connected networks of the depth claims"""
    lr_grids: tuple[tuple[str, tuple[float, ...]], ...] = ()
    """(regime, grid) where this profile tunes on a grid other than the regime's (`lr_grid`)"""
    left_out: tuple[tuple[str, str], ...] = ()
    """(regime, dataset) pairs this profile does not train, for their compute (`trains`); every ledger says so"""

    def lr_grid(self, regime: str) -> tuple[float, ...]:
        """The learning rates this profile tunes `regime` on (x2 steps)."""
        return dict(self.lr_grids).get(regime, REGIMES[regime].lr_grid)

    def trains(self, regime: str, dataset: str) -> bool:
        return (regime, dataset) not in self.left_out

    def as_dict(self) -> dict[str, Any]:
        return {k: json.loads(json.dumps(v)) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", seeds=8, datasets=("mnist1d", "digits", "breast_cancer"), regimes=("shallow-adam", "deep-sgd"),
                     cap=100, patience=10, width_scale=1.0, timing_rounds=15, random_net_width=256, tuning_seeds=4,
                     deep_depths=(32,), lr_grids=(("shallow-adam", (4e-3, 8e-3, 1.6e-2)), ("deep-sgd", (0.05, 0.1, 0.2))),
                     left_out=(("deep-sgd", "mnist1d"),),
                     compute="measured under protocol 4: 20 min 12 s on 2 idle cores of the development machine "
                             "(2,332 CPU-seconds, 135 arms of 12-member ensembles; docs/claims.md)"),
    "full": Profile("full", seeds=16, datasets=("mnist1d", "digits", "breast_cancer", "wine"),
                    regimes=("shallow-adam", "deep-sgd"), cap=300, patience=20, width_scale=1.0, timing_rounds=40,
                    random_net_width=1024, tuning_seeds=8, deep_depths=(32, 64),
                    compute="an estimate, not measured: 6-8 CPU-hours (quick's measured 2,300 CPU-s of arms x 2 for "
                            "24-member ensembles x 4/3 for 4-point grids x 1.5-2 for cap 300 / patience 20, plus deep "
                            "SGD on MNIST-1D at 113 CPU-s per quick arm, same factors; docs/claims.md); use --executor "
                            "ray on a cluster"),
    "tiny": Profile("tiny", seeds=3, datasets=("wine",), regimes=("shallow-adam", "deep-sgd"),
                    cap=3, patience=1, width_scale=0.125, timing_rounds=3, random_net_width=32, tuning_seeds=2,
                    deep_depths=(32,),
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
    """An arm's stored metrics on its comparison seeds: network[name] is (seeds, epochs + 1), layers[name]
    (seeds, layers, epochs + 1); `tuning` holds the network metrics of its tuning seeds (same shapes)."""

    arm: Arm
    network: dict[str, np.ndarray]
    layers: dict[str, np.ndarray]
    tuning: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    patience: int = 10
    cap: int = 0

    @cached_property
    def best(self) -> np.ndarray:
        """Each seed's checkpoint: its best-validation-accuracy epoch (its converged model)."""
        from elukit.experiments.converge import best_epochs

        return best_epochs(self.network["validation_accuracy"], self.network.get("validation_loss"))

    @property
    def cap_hits(self) -> int:
        """Comparison seeds that reached the cap still improving."""
        from elukit.experiments.converge import cap_hits

        return cap_hits(self.network["validation_accuracy"], self.network.get("validation_loss"), self.patience, self.cap)

    def at_best(self, name: str) -> np.ndarray:
        """A network metric of each seed at its checkpoint."""
        return self.network[name][np.arange(len(self.best)), self.best]

    def tuning_score(self) -> np.ndarray:
        """Each tuning seed's best validation accuracy (its checkpoint's); a diverged seed scores 0."""
        from elukit.experiments.converge import best_epochs

        accuracy = self.tuning["validation_accuracy"]
        best = best_epochs(accuracy, self.tuning.get("validation_loss"))
        score = accuracy[np.arange(len(best)), best]
        return np.where(np.isfinite(score), score, 0.0)

    def layers_at(self, name: str, epochs: np.ndarray | int | None = None) -> np.ndarray:
        """A per-layer metric (seeds, layers) at each seed's best epoch (or the given epoch(s))."""
        epochs = self.best if epochs is None else np.broadcast_to(np.asarray(epochs), self.best.shape)
        values = self.layers[name]
        return values[np.arange(values.shape[0]), :, epochs]


@dataclasses.dataclass(frozen=True)
class Tuned:
    """An arm with its learning rate tuned on tuning seeds (the validation split; never a compared seed)."""

    lr: float
    result: ArmResult
    """the arm at the chosen learning rate"""
    grid: dict[float, ArmResult]
    seed_best_lr: np.ndarray
    """the learning rate each comparison seed would have chosen on its own (highest best validation accuracy)"""
    near_tie: bool = False
    """the choice beat the runner-up by less than one standard error (over the tuning seeds)"""
    edge: bool = False
    """the chosen rate is the grid's smallest or largest"""
    margin: float = math.nan
    """mean best validation accuracy of the choice minus the runner-up's"""

    def describe(self, name: str) -> str:
        flags = [flag for flag, on in (("near-tie", self.near_tie), ("grid edge", self.edge)) if on]
        return f"{name} lr {self.lr:g}" + (f" ({', '.join(flags)})" if flags else "")


def choose_rate(scores: dict[float, np.ndarray]) -> tuple[float, bool, float]:
    """The rate with the highest mean tuning score (ties: the smaller rate), whether it beat the
    runner-up by less than one standard error of their paired difference over the tuning seeds,
    and by how much."""
    rates = sorted(scores)
    chosen = max(rates, key=lambda lr: (float(np.mean(scores[lr])), -lr))
    others = [lr for lr in rates if lr != chosen]
    if not others:
        return chosen, False, math.nan
    runner = max(others, key=lambda lr: (float(np.mean(scores[lr])), -lr))
    difference = np.asarray(scores[chosen]) - np.asarray(scores[runner])
    margin = float(difference.mean())
    standard_error = float(difference.std(ddof=1)) / math.sqrt(len(difference)) if len(difference) > 1 else math.inf
    return chosen, bool(margin <= standard_error), margin


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
        """The comparison seeds."""
        return list(range(self.profile.seeds))

    @property
    def tuning_seeds(self) -> list[int]:
        """The seeds that tune learning rates: trained in the same ensembles, never compared."""
        return [TUNING_OFFSET + s for s in range(self.profile.tuning_seeds)]

    def arm_seeds(self, arm: Arm) -> list[int]:
        return [s + arm.seed_offset for s in self.seeds + self.tuning_seeds]

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
            from elukit.experiments.converge import held_out_split

            self._splits[dataset] = held_out_split(dataset, self.cache_dir)
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
        seeds = self.arm_seeds(arm)
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
        comparison = [s + arm.seed_offset for s in self.seeds]
        tuning = [s + arm.seed_offset for s in self.tuning_seeds]
        epochs = max(int(r[1]) for r in rows)
        layer_count = max(int(r[3]) for r in rows) + 1
        position = {seed: (True, i) for i, seed in enumerate(comparison)} | {seed: (False, i) for i, seed in enumerate(tuning)}
        network: dict[str, np.ndarray] = {}
        layers: dict[str, np.ndarray] = {}
        tuned: dict[str, np.ndarray] = {}
        for seed, epoch, name, layer, value in rows:
            value = np.nan if value is None else value
            compared, index = position[int(seed)]
            if layer == NETWORK:
                target, count = (network, len(comparison)) if compared else (tuned, len(tuning))
                target.setdefault(name, np.full((count, epochs + 1), np.nan))[index, epoch] = value
            elif compared:
                layers.setdefault(name, np.full((len(comparison), layer_count, epochs + 1), np.nan))[
                    index, layer, epoch] = value
        return ArmResult(arm, network, layers, tuned, self.profile.patience, self.profile.cap)

    def tuned(self, regime: str, dataset: str, activation: str, batch_norm: bool = False, init: str | None = None,
              seed_offset: int = 0) -> Tuned:
        """The arm trained at each learning rate of the regime's grid; the chosen rate has the highest
        mean best validation accuracy over the *tuning* seeds (`choose_rate`; a diverged seed scores 0),
        flagged when it won by less than one standard error or lies on the grid's edge."""
        lr_grid = self.profile.lr_grid(regime)
        grid = {lr: self.result(Arm(regime, dataset, activation, batch_norm, init=init, lr=lr, seed_offset=seed_offset))
                for lr in lr_grid}
        chosen, near_tie, margin = choose_rate({lr: r.tuning_score() for lr, r in grid.items()})
        rates = list(grid)
        scores = np.stack([np.where(np.isfinite(s := r.at_best("validation_accuracy")), s, 0.0) for r in grid.values()])
        seed_best = np.asarray(rates)[np.argmax(scores, axis=0)]
        return Tuned(chosen, grid[chosen], grid, seed_best, near_tie, chosen in (min(rates), max(rates)), margin)


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
        names = ("validation_loss", "validation_accuracy", "test_accuracy", "noisy_test_accuracy", "train_loss")
        network = {name: np.ones((seeds, epochs + 1)) for name in names}
        tuning = {name: np.ones((self.profile.tuning_seeds, epochs + 1)) for name in names}
        layers = {name: np.ones((seeds, 2, epochs + 1)) for name in
                  ("gradient_sparsity", "mean_activation", "dead_fraction", "activation_variance", "gradient_norm")}
        return ArmResult(arm, network, layers, tuning, self.profile.patience, self.profile.cap)

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
                             splits[arm.dataset], context.arm_seeds(arm), arm.label,
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


__all__ = ["Arm", "ArmResult", "Context", "DEEP_REGIME", "LEDGER_SCHEMA", "PROFILES", "Profile", "REGIMES", "Regime",
           "TUNING_OFFSET", "Tuned", "check_profile", "choose_rate", "independent_arms", "prefetch"]
