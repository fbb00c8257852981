"""NumPy throughput of elukit's exact ELU against the textbook formula and np.copyto.

Run: python benchmarks/bench_numpy.py [--size 1048576] [--repeat 20]

Every figure is a ratio of best-of-N times measured in this run: time(elukit) / time(textbook)
(below 1 means elukit is faster) and time / time(np.copyto) (the cost of touching the memory).
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

import elukit


def textbook_elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x <= 0, alpha * (np.exp(x) - 1), x)


def textbook_elu_derivative(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x <= 0, alpha * np.exp(x), 1.0).astype(x.dtype)


def best_time(function, repeat: int) -> float:
    function()
    return min(timeit.repeat(function, number=1, repeat=repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2**20)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'dtype':<8} {'quantity':<11} {'elukit ms':>10} {'textbook ms':>12} {'vs textbook':>12} {'vs copyto':>10}")
    for dtype in (np.float16, np.float32, np.float64):
        x = (rng.standard_normal(args.size) * 3).astype(dtype)
        buffer = np.empty_like(x)
        copy = best_time(lambda: np.copyto(buffer, x), args.repeat)
        spec = elukit.get("elu", alpha=1.0)
        for quantity, ours, theirs in (
            ("value", spec.value, textbook_elu),
            ("derivative", spec.derivative, textbook_elu_derivative),
        ):
            with np.errstate(all="ignore"):
                mine = best_time(lambda: ours(x), args.repeat)
                baseline = best_time(lambda: theirs(x), args.repeat)
            print(f"{np.dtype(dtype).name:<8} {quantity:<11} {1e3 * mine:>10.3f} {1e3 * baseline:>12.3f} "
                  f"{mine / baseline:>11.2f}x {mine / copy:>9.1f}x")


if __name__ == "__main__":
    main()
