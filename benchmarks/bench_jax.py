"""jit(elukit.jax.elu) and its gradient against jit(jax.nn.elu), measured in one run.

Prints the median time per call of each and the ratio elukit/jax.nn (wall clock, and process CPU
time, which other processes on a shared machine disturb less), for float32 and float64 and 2^16,
2^19 and 2^22 elements; forward and forward+backward (``grad(sum(elu(x)))``). Each is timed over
batches of consecutive calls (2^20 elements a batch, at least one call). Ratios, not pass/fail times.

    python benchmarks/bench_jax.py            # all rows (about a minute on 2 cores)
    python benchmarks/bench_jax.py --quick    # 2^16 only
    python benchmarks/bench_jax.py --paired   # ABBA pairs: median ratio and its bootstrap interval
"""

from __future__ import annotations

import argparse
import os
import time

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import elukit.jax  # noqa: E402


def _median_times(baseline, ours, x, repeats: int) -> tuple[float, float, float, float]:
    """Median seconds per call of two functions (wall, then process CPU time: all threads, not
    counting time other processes take the cores), each timed over batches of consecutive calls
    so that each runs in its own steady state of XLA's buffer allocation, batches alternating so
    that load from other processes hits both alike. Single calls measured one at a time swung by
    up to 2x: a fresh output buffer costs page faults in some calls and not in others."""
    jax.block_until_ready(baseline(x))  # compile
    jax.block_until_ready(ours(x))
    calls = max(1, 2**20 // x.size)
    times: tuple[list[tuple[float, float]], list[tuple[float, float]]] = ([], [])
    for _ in range(repeats):
        for function, record in ((baseline, times[0]), (ours, times[1])):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                result = function(x)
            jax.block_until_ready(result)
            record.append(((time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls))
    (base_wall, base_cpu), (our_wall, our_cpu) = np.median(times[0], axis=0), np.median(times[1], axis=0)
    return float(base_wall), float(our_wall), float(base_cpu), float(our_cpu)


def _paired_ratios(baseline, ours, x, rounds: int) -> np.ndarray:
    """Per round, ours' wall time over the baseline's, timed ABBA (baseline, ours, ours, baseline)
    over batches of consecutive calls, so that a drift in the machine's speed falls on both."""
    jax.block_until_ready(baseline(x))
    jax.block_until_ready(ours(x))
    calls = max(1, 2**20 // x.size)

    def timed(function) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            result = function(x)
        jax.block_until_ready(result)
        return time.perf_counter() - start

    ratios = []
    for _ in range(rounds):
        a1, b1, b2, a2 = timed(baseline), timed(ours), timed(ours), timed(baseline)
        ratios.append((b1 + b2) / (a1 + a2))
    return np.array(ratios)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2^16 elements only")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--paired", action="store_true",
                        help="per-round ratios of ABBA pairs: their median and its 95%% BCa bootstrap interval")
    args = parser.parse_args(argv)
    sizes = (16,) if args.quick else (16, 19, 22)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, median of {args.repeats}, "
          f"compiled kernels (float32, float64): {elukit.jax.functional.COMPILED}, {len(os.sched_getaffinity(0))} CPUs usable")
    print(f"{'dtype':8} {'n':>6} {'pass':8} {'jax.nn ms':>10} {'elukit ms':>10} {'ratio':>6} {'CPU-time ratio':>15}")
    rng = np.random.default_rng(0)
    for dtype in (jnp.float32, jnp.float64):
        for log_n in sizes:
            x = jnp.asarray(rng.normal(0.0, 3.0, 2**log_n), dtype=dtype)
            for label, make in (("forward", lambda f: jax.jit(f)),
                                ("fwd+bwd", lambda f: jax.jit(jax.grad(lambda t: f(t).sum())))):
                if args.paired:
                    from elukit.statistics import bootstrap_interval

                    ratios = _paired_ratios(make(jax.nn.elu), make(elukit.jax.elu), x, args.repeats)
                    low, high = bootstrap_interval(ratios, np.median)
                    print(f"{jnp.dtype(dtype).name:8} 2^{log_n:<4} {label:8} paired median {np.median(ratios):.3f} "
                          f"(95% {low:.3f}-{high:.3f}), {int((ratios > 1.3).sum())} of {len(ratios)} rounds above 1.3")
                    continue
                baseline, ours, baseline_cpu, ours_cpu = _median_times(make(jax.nn.elu), make(elukit.jax.elu), x,
                                                                       args.repeats)
                print(f"{jnp.dtype(dtype).name:8} 2^{log_n:<4} {label:8} {baseline * 1e3:10.3f} {ours * 1e3:10.3f} "
                      f"{ours / baseline:6.2f} {ours_cpu / baseline_cpu:15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
