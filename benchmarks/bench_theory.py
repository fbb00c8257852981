"""Speed of vectorised closed-form Gaussian moments (elukit.theory.moments) and of the
correlation maps (elukit.theory.correlation_map).

Run: python benchmarks/bench_theory.py [--points 1000000]

Prints the time for all six moments of ELU/SELU/CELU/ReLU at N parameter points (means, stds and
alphas drawn at random), and the ratio against one np.exp over the same N points measured in the
same run (the cost of a single transcendental pass), plus the ratio against Gauss-Hermite
quadrature (the general path) on a 100x smaller set, scaled per point.

Then the correlation map c -> c' at N correlations drawn in [-1, 1] (one q, as when iterating a
network at its fixed point), for ELU/CELU/SELU/ReLU, with the same np.exp baseline and the ratio
against the direct one-dimensional reduction at every point (measured on 1000 points, scaled).
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
    c = rng.uniform(-1, 1, n)
    print(f"correlation_map at {n} correlations, q = 1.3, sigma_w^2 = 1.6, sigma_b^2 = 0.05:")
    for name, params in (("elu", {}), ("celu", {"alpha": 0.2}), ("selu", {}), ("relu", {})):
        def mapped(points=c):
            return theory.correlation_map(name, points, 1.3, weight_variance=1.6, bias_variance=0.05, **params)

        seconds = best(mapped, 3)
        direct = best(lambda: mapped(c[:1000]), 3) * n / 1000
        print(f"{name:<5} correlation map: {seconds:.3f} s ({seconds / baseline:.1f}x np.exp); "
              f"the per-point path (measured on 1000 points) would take {direct:.1f} s")


if __name__ == "__main__":
    main()
