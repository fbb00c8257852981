"""Speed of vectorised closed-form Gaussian moments (elukit.theory.moments).

Run: python benchmarks/bench_theory.py [--points 1000000]

Prints the time for all six moments of ELU/SELU/CELU/ReLU at N parameter points (means, stds and
alphas drawn at random), and the ratio against one np.exp over the same N points measured in the
same run (the cost of a single transcendental pass), plus the ratio against Gauss-Hermite
quadrature (the general path) on a 100x smaller set, scaled per point.
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

from elukit import theory


def best(function, repeat=5):
    function()
    return min(timeit.repeat(function, number=1, repeat=repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10**6)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.points
    mean, std, alpha = rng.normal(size=n), rng.uniform(0.05, 5, n), rng.uniform(0.1, 5, n)
    baseline = best(lambda: np.exp(mean))
    print(f"{n} points; one np.exp pass: {1e3 * baseline:.1f} ms")
    for name, params in (("elu", {"alpha": alpha}), ("celu", {"alpha": alpha}), ("selu", {}), ("relu", {})):
        seconds = best(lambda: theory.moments(name, mean, std, **params))
        small = slice(0, n // 100)
        scalar_params = {k: 1.0 for k in params}
        quadrature = best(lambda: theory.moments(name, mean[small], std[small], quadrature=True, **scalar_params), 3) * 100
        print(f"{name:<5} closed form: {seconds:.3f} s ({seconds / baseline:.1f}x np.exp); "
              f"Gauss-Hermite would take {quadrature:.1f} s ({quadrature / seconds:.0f}x slower)")


if __name__ == "__main__":
    main()
