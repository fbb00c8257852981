"""The ledger's `costlier-than-relu` measurement with and without background load.

Run: python benchmarks/bench_step_cost_load.py [--rounds 15] [--profile quick] [--hogs N]

The claim is measured as ln(thread CPU time of ELU training steps / of ReLU steps), the two models
interleaved, minimum of 3 repeats per round, one value per round (`elukit.claims._measures`). Thread
CPU time leaves out the time spent waiting for a core, so the verdict should not depend on what else
the machine runs. This script measures the rows of each regime twice in one run: first as the
machine is, then with N processes (default: one per CPU) spinning at full load, and prints each
row's mean ln ratio, its interval and its verdict under the claim's rule (`elukit.statistics`),
side by side. Wall-clock time, which the ledger used before protocol 2, is shown for contrast.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import time

import numpy as np


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def _rows(context, regimes, rounds: int) -> dict[str, tuple[list[float], float]]:
    from elukit.claims._measures import _step_times

    rows = {}
    for regime in regimes:
        started = time.perf_counter()
        ratios = _step_times(context, regime, rounds)
        rows[regime] = (ratios, time.perf_counter() - started)
    return rows


def _decide(ratios: list[float]) -> str:
    from elukit.claims import get_claim
    from elukit.claims._rules import Evidence
    from elukit.statistics import Family

    rule = get_claim("costlier-than-relu").rule
    values = np.asarray(ratios)
    result = rule.decide(Evidence("bench", "ln(t_elu / t_relu)", values, False, values, np.zeros(len(values))),
                         Family("costlier-than-relu", 1))
    return (f"mean {np.mean(values):+.4f} [{result.ci_low:+.4f}, {result.ci_high:+.4f}] "
            f"(ELU/ReLU x{math.exp(np.mean(values)):.3f}), {result.verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from elukit.claims._context import Context, check_profile
    from elukit.torch._torch import torch

    torch.set_num_threads(1)
    profile = check_profile(args.profile)
    context = Context(None, 0, profile)  # type: ignore[arg-type]  # timing needs no store
    print(f"profile {profile.name}, {args.rounds} rounds per regime, {os.cpu_count()} CPUs, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    quiet = _rows(context, profile.regimes, args.rounds)
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    try:
        time.sleep(2.0)
        loaded = _rows(context, profile.regimes, args.rounds)
        load = os.getloadavg()[0]
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
    print(f"with {args.hogs} spinning processes (load average {load:.2f}):")
    for regime in profile.regimes:
        (q, q_wall), (busy, busy_wall) = quiet[regime], loaded[regime]
        print(f"  {regime}: as is: {_decide(q)}, {q_wall:.1f} s wall")
        print(f"  {' ' * len(regime)}  loaded: {_decide(busy)}, {busy_wall:.1f} s wall (x{busy_wall / q_wall:.2f})")


if __name__ == "__main__":
    main()
