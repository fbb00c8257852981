"""Statistics over seeds: means with t intervals, epochs to a target loss, paired bootstrap tests.

Every function takes ``{activation: array(seeds, ...)}`` (or arrays) and an explicit
``numpy.random.Generator`` where it resamples.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats


class Interval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean with a two-sided Student-t confidence interval (the mean alone when n = 1)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def epochs_to_target(curves: np.ndarray, target: float) -> np.ndarray:
    """First epoch index at which each curve (seeds, epochs) is <= target; NaN if never."""
    curves = np.asarray(curves, dtype=np.float64)
    reached = curves <= target
    first = np.argmax(reached, axis=1).astype(np.float64)
    first[~reached.any(axis=1)] = np.nan
    return first


class PairedTest(NamedTuple):
    difference: float
    low: float
    high: float
    p_value: float
    n: int


def paired_bootstrap(values: np.ndarray, baseline: np.ndarray, rng: np.random.Generator,
                     resamples: int = 10_000, confidence: float = 0.95) -> PairedTest:
    """Mean paired difference (values - baseline, paired by seed) with a percentile bootstrap
    interval and a two-sided bootstrap p-value for "no difference" (the share of resampled means
    on the other side of 0, doubled)."""
    values, baseline = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if values.shape != baseline.shape:
        raise ValueError(f"paired samples need equal shapes, got {values.shape} and {baseline.shape}")
    differences = values - baseline
    n = len(differences)
    if n < 2:
        return PairedTest(float(differences.mean()) if n else math.nan, math.nan, math.nan, math.nan, n)
    indices = rng.integers(0, n, size=(resamples, n))
    means = differences[indices].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    observed = float(differences.mean())
    if np.all(differences == 0):
        p_value = 1.0
    else:
        p_value = float(min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0))))
    return PairedTest(observed, float(low), float(high), p_value, n)
