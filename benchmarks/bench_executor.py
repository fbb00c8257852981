"""The same 4-configuration study in this process and on a 2-worker local Ray instance.

Run: python benchmarks/bench_executor.py [--epochs 10]

Prints Ray's start-up cost (start a local instance, run one trivial task), the wall time of the
study with each executor (Ray's start-up included in its figure and also given apart), and the
ratio local / ray. Both train each configuration on one torch thread, so their rows are equal
(checked here too); on 2 cores the Ray executor trains two configurations at once.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import ray

from elukit.experiments.executors import startup_seconds
from elukit.experiments.train import StudyConfig, run_study


def rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT c.label, r.seed, m.epoch, m.name, m.layer, m.value FROM metric m JOIN run r "
                          "ON r.id = m.run_id JOIN configuration c ON c.id = r.configuration_id ORDER BY 1, 2, 3, 4, 5"
                          ).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    config = StudyConfig(activations=("relu", "leaky_relu", "elu", "selu"), seeds=5, epochs=args.epochs)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        store, _ = run_study(config, Path(folder) / "local", threads=1)
        store.close()
        local = time.perf_counter() - started
        startup = startup_seconds()
        ray.shutdown()
        started = time.perf_counter()
        store, _ = run_study(config, Path(folder) / "ray", threads=1, executor="ray", workers=2)
        store.close()
        on_ray = time.perf_counter() - started
        same = rows(Path(folder) / "local" / "results.db") == rows(Path(folder) / "ray" / "results.db")
    print(f"study: mnist1d MLP, 4 activations x 5 seeds x {args.epochs} epochs, 1 torch thread per configuration")
    print(f"ray start-up (local instance + one trivial task): {startup:.1f} s")
    print(f"local executor: {local:.1f} s")
    print(f"ray executor, 2 workers: {on_ray:.1f} s (start-up included)")
    print(f"ratio local / ray: {local / on_ray:.2f}x; same rows: {same}")


if __name__ == "__main__":
    main()
