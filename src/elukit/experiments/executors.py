"""Where a study's configurations train: in this process (local) or as Ray tasks on a cluster.

One configuration (all seeds of one activation, trained as one batched ensemble) is one unit of
work. Wherever it trains, its epochs come back to one writer of the SQLite store:

- ``local``: `train_configuration` in this process, one configuration after another.
- ``ray``: each configuration is a Ray task declaring its CPUs (the torch threads it trains
  on). The dataset goes once through Ray's object store, so workers need not see the driver's
  disk. One actor, pinned to the driver's node, owns the store's connection; each worker sends
  each finished epoch (metrics and checkpoint) to it, one transaction per epoch, as the local
  executor writes them. A task whose worker dies is retried by Ray and resumes from the last
  stored checkpoint; the writer ignores an epoch it already holds, so a retried epoch is neither
  lost nor duplicated.

The results are the same rows either way (tested): every member's randomness comes from its
seed, and a configuration trains on the same number of threads.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from elukit.experiments.data import Dataset
from elukit.experiments.store import Store

EXECUTORS = ("local", "ray")
RAY_HINT = "pip install 'elukit[ray]'"
TEST_EXIT_AFTER_EPOCH = "ELUKIT_TEST_EXIT_AFTER_EPOCH"
"""Test hook: ``EPOCH:MARKER_FILE``: a Ray worker exits (as if killed) right after storing EPOCH,
once (the marker file records that it happened)."""
TEST_PAUSE_AFTER_EPOCH = "ELUKIT_TEST_PAUSE_AFTER_EPOCH"
"""Test hook: ``EPOCH:MARKER_FILE``: the first Ray worker to store EPOCH writes its node id to the
marker file and waits (up to 120 s), so that a test can remove that node from the cluster while a
configuration is half trained on it."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(f"--executor ray needs Ray: {RAY_HINT}") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ValueError in one line unless a TCP connection to ``host:port`` (or ``ray://host:port``)
    opens within `timeout` seconds (Ray itself would wait much longer before failing)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--ray-address {address!r}: expected auto, host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ValueError(f"--ray-address {address!r}: cannot connect ({error.strerror or error}); is a Ray head "
                         "node running there? Start one with `ray start --head`") from None


class LocalExecutor:
    """Each configuration in this process, in order."""

    name = "local"

    def run(self, train: Callable[..., None], store: Store, study_id: int, config: Any, dataset: Dataset,
            progress: Callable[[Any], None] | None, threads: int, log: Callable[[str], None] | None = None) -> None:
        total = len(config.activations)
        for index, activation in enumerate(config.activations):
            train(store, study_id, config, activation, dataset, index, total, progress, log)

    def close(self) -> None:
        pass


class RayExecutor:
    """Each configuration as a Ray task; one writer actor on the driver's node.

    Args:
        address: None starts a local Ray instance; ``auto`` joins the cluster this machine
            belongs to; ``host:port`` or ``ray://host:port`` a given head node.
        workers: configurations training at once (default: the cluster's CPUs // threads).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.ray = _import_ray()
        if address not in (None, "auto"):
            check_reachable(address)
        self.started_here = not self.ray.is_initialized()
        if self.started_here:
            try:
                self.ray.init(address=address, include_dashboard=False, log_to_driver=False,
                              logging_level="ERROR", configure_logging=True)
            except (ConnectionError, RuntimeError) as error:
                raise ValueError(f"--ray-address {address!r}: {str(error).splitlines()[0]}") from None
        self.workers = workers

    def run(self, train: Callable[..., None], store: Store, study_id: int, config: Any, dataset: Dataset,
            progress: Callable[[Any], None] | None, threads: int, log: Callable[[str], None] | None = None) -> None:
        dataset_ref = self.ray.put(dataset)
        total = len(config.activations)
        jobs = [(_train_configuration_job, (train, study_id, config, activation, dataset_ref, index, total))
                for index, activation in enumerate(config.activations)]
        self.run_jobs(store, jobs, threads, progress, log)

    def run_jobs(self, store: Store, jobs: Sequence[tuple[Callable[..., Any], tuple]], threads: int = 1,
                 progress: Callable[[Any], None] | None = None, log: Callable[[str], None] | None = None) -> None:
        """Run each ``(function, args)`` of `jobs` as a Ray task, ``function(store, *args, report)``,
        where `store` sends its calls to one writer actor of `store`'s database on this node and
        `report(update)` passes a progress update (or a log line) to the driver."""
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        # Every path is resolved here, on the driver: an actor's or a worker's working directory is
        # the one its raylet was started in (`ray start`), not the driver's, so a relative --out
        # would name a second, empty database there (issue 22).
        database = str(Path(store.path).resolve())
        writer = ray.remote(num_cpus=0)(StoreWriter).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(database)
        task = ray.remote(_run_job).options(num_cpus=threads, max_retries=3, retry_exceptions=False)
        capacity = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        hook = (_absolute_hook(os.environ.get(TEST_EXIT_AFTER_EPOCH)), _absolute_hook(os.environ.get(TEST_PAUSE_AFTER_EPOCH)))
        waiting = list(jobs)
        running: dict[Any, int] = {}
        seen: dict[str, Any] = {}
        try:
            while waiting or running:
                while waiting and len(running) < capacity:
                    function, args = waiting.pop(0)
                    running[task.remote(writer, function, args, threads, hook)] = len(running)
                done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                self._report(ray.get(writer.progress.remote()), seen, progress, log)
                for ref in done:
                    ray.get(ref)  # raises the task's error, if any, here
                    running.pop(ref)
            self._report(ray.get(writer.progress.remote()), seen, progress, log)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            ray.kill(writer)

    @staticmethod
    def _report(news: tuple[dict[str, Any], list[str]], seen: dict[str, Any], progress: Callable[[Any], None] | None,
                log: Callable[[str], None] | None) -> None:
        """Pass the workers' log lines, and each configuration's newest progress once, to the driver."""
        updates, lines = news
        for line in lines:
            if log is not None:
                log(line)
        for label, update in sorted(updates.items(), key=lambda item: item[1].configuration):
            if progress is not None and seen.get(label) != update:
                progress(update)
            seen[label] = update

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(name: str, address: str | None = None, workers: int | None = None) -> LocalExecutor | RayExecutor:
    """The executor `name` ("local" or "ray"), connected and ready: every error comes before any work."""
    if name == "local":
        if address is not None:
            raise ValueError("--ray-address needs --executor ray")
        if workers is not None and workers != 1:
            raise ValueError("--workers needs --executor ray (the local executor trains one configuration at a time)")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, workers)
    raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")


class StoreWriter:
    """The one writer of a study's store (a Ray actor on the driver's node).

    It exposes the `Store` methods that training calls; `write_epoch` ignores an epoch the store
    already holds for that configuration (a retried task's), so writes are idempotent."""

    def __init__(self, path: str) -> None:
        self.store = Store(path)
        self.latest: dict[str, Any] = {}
        self.lines: list[str] = []

    def configuration(self, study_id: int, label: str, config: dict[str, Any], seeds: Sequence[int]):
        return self.store.configuration(study_id, label, config, seeds)

    def configuration_finished(self, configuration_id: int) -> bool:
        return self.store.configuration_finished(configuration_id)

    def checkpoint(self, configuration_id: int):
        return self.store.checkpoint(configuration_id)

    def metric_series(self, runs: Sequence[int], name: str, layer: int = -1):
        return self.store.metric_series(runs, name, layer)

    def write_epoch(self, configuration_id: int, epoch: int, rows, state, seconds: float) -> bool:
        stored = self.store.checkpoint(configuration_id)
        if stored is not None and stored[0] >= epoch:
            return False
        self.store.write_epoch(configuration_id, epoch, rows, state, seconds)
        return True

    def finish_configuration(self, configuration_id: int) -> None:
        self.store.finish_configuration(configuration_id)

    def record_progress(self, update: Any) -> None:
        self.latest[update.label] = update

    def record_log(self, line: str) -> None:
        self.lines.append(line)

    def progress(self) -> tuple[dict[str, Any], list[str]]:
        """The newest progress of each configuration, and the log lines since the last call."""
        lines, self.lines = self.lines, []
        return dict(self.latest), lines


def _absolute_hook(hook: str | None) -> str | None:
    """A test hook ``EPOCH:MARKER_FILE`` with the marker's path resolved on the driver."""
    if not hook:
        return None
    epoch, _, marker = hook.partition(":")
    return f"{epoch}:{Path(marker).resolve()}"


def _parse_hook(hook: str | None) -> tuple[int, str] | None:
    if not hook:
        return None
    epoch, _, marker = hook.partition(":")
    return int(epoch), marker


class _RemoteStore:
    """What `train_configuration` sees of the store on a Ray worker: calls to the writer actor."""

    def __init__(self, writer: Any, ray: Any, exit_after: tuple[int, str] | None,
                 pause_after: tuple[int, str] | None = None) -> None:
        self.writer, self.ray, self.exit_after, self.pause_after = writer, ray, exit_after, pause_after

    def __getattr__(self, name: str):
        method = getattr(self.writer, name)
        return lambda *args: self.ray.get(method.remote(*args))

    def write_epoch(self, configuration_id, epoch, rows, state, seconds) -> None:
        self.ray.get(self.writer.write_epoch.remote(configuration_id, epoch, rows, state, seconds))
        if self.exit_after is not None and epoch == self.exit_after[0] and not os.path.exists(self.exit_after[1]):
            with open(self.exit_after[1], "w", encoding="utf-8") as marker:
                marker.write(f"worker {os.getpid()} exited after storing epoch {epoch}\n")
            os._exit(1)  # as if the worker were killed: Ray retries the task
        if self.pause_after is not None and epoch == self.pause_after[0]:
            try:
                descriptor = os.open(self.pause_after[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return  # another worker paused already (or this is the retry)
            with os.fdopen(descriptor, "w", encoding="utf-8") as marker:
                marker.write(self.ray.get_runtime_context().get_node_id())
            time.sleep(120)  # the test removes this node meanwhile


def _run_job(writer: Any, function: Callable[..., Any], args: tuple, threads: int,
             hook: tuple[str | None, str | None]) -> Any:
    """A Ray task: `function(store, *args, report)` with the store behind the writer actor."""
    import ray

    from elukit.torch._torch import torch

    torch.set_num_threads(threads)
    args = tuple(ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args)
    return function(_RemoteStore(writer, ray, _parse_hook(hook[0]), _parse_hook(hook[1])), *args,
                    lambda update: (writer.record_log if isinstance(update, str) else writer.record_progress).remote(update))


def _train_configuration_job(store: Any, train: Callable[..., None], study_id: int, config: Any, activation: str,
                             dataset: Dataset, index: int, total: int, report: Callable[[Any], None]) -> None:
    """One configuration of a study (`train`, i.e. `train_configuration`), as a Ray job."""
    train(store, study_id, config, activation, dataset, index, total, report, report)


def startup_seconds(address: str | None = None) -> float:
    """Seconds to start (or join) Ray and run one trivial task (for the benchmark)."""
    ray = _import_ray()
    started = time.perf_counter()
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.get(ray.remote(lambda: None).remote())
    return time.perf_counter() - started


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all CPUs where that is unknown): the
    default number of worker processes, each on one torch thread. Unlike a study's torch threads
    (`elukit.experiments.train.default_threads`), separate processes do not wait for each other at
    every matmul, so a busy machine is no reason to use fewer."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "StoreWriter", "check_reachable", "make_executor",
           "startup_seconds", "usable_cores"]
