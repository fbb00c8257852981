"""The float32 kernels' series (series_tail in src/elukit/_exponential_linear.c, _series_tail in
elukit.torch._triton_kernels): a degree-8 polynomial P for T(r) = (expm1(r) - r)/r^2 whose error
the float32 rounding test relies on. Proved here, in exact rational arithmetic: |T - P| <= 2^-46.9
on |r| <= 0.3466 (the reduced argument's range, ln2/2 plus its rounding)."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "elukit"
BOUND_LOG2 = -46.9  # the figure the C comment's error budget uses (2^-46.96 there)
HALF_WIDTH = Fraction(3466, 10000)


def _c_coefficients() -> list[float]:
    text = (SOURCE / "_exponential_linear.c").read_text()
    body = re.search(r"static ELUKIT_INLINE double series_tail\(double r\) \{(.*?)\n\}", text, re.S).group(1)
    highest_first = [float.fromhex(h) for h in re.findall(r"0x[0-9a-f.]+p[-+]?\d+", body)]
    return highest_first[::-1]


def _triton_coefficients() -> list[float]:
    text = (SOURCE / "torch" / "_triton_kernels.py").read_text()
    found = dict(re.findall(r'^SERIES_(\d) = _hex\("(0x[0-9a-f.]+p[-+]?\d+)"\)', text, re.M))
    body = re.search(r"def _series_tail\(r\):(.*?)\n\n", text, re.S).group(1)
    used = [int(j) for j in re.findall(r"SERIES_(\d)", body)]
    assert used == list(range(8, -1, -1)), used  # Horner, highest first, every coefficient once
    return [float.fromhex(found[str(j)]) for j in range(len(found))]


def error_bound(coefficients: list[float], half_width: Fraction = HALF_WIDTH, points: int = 1000,
                terms: int = 30) -> Fraction:
    """A rigorous bound on max |T(r) - P(r)| for |r| <= half_width. D = (T's Taylor series to degree
    `terms`) - P is a polynomial with exact rational coefficients: between neighbouring grid points
    |D| is at most the larger grid value plus h^2/8 max|D''| (linear interpolation's error), with
    max|D''| <= sum j(j-1)|d_j| a^(j-2); T's series beyond `terms` adds at most 2 a^(terms+1)/(terms+3)!."""
    taylor = [Fraction(1, math.factorial(j + 2)) for j in range(terms + 1)]
    d = [taylor[j] - (Fraction(coefficients[j]) if j < len(coefficients) else 0) for j in range(terms + 1)]
    a = half_width
    second = sum(abs(d[j]) * j * (j - 1) * a ** (j - 2) for j in range(2, terms + 1))
    h = 2 * a / points
    worst = Fraction(0)
    for i in range(points + 1):
        r = -a + i * h
        value = Fraction(0)
        for c in reversed(d):
            value = value * r + c
        worst = max(worst, abs(value))
    remainder = 2 * a ** (terms + 1) / math.factorial(terms + 3)
    return worst + h * h / 8 * second + remainder


def test_c_and_triton_evaluate_the_same_polynomial():
    assert len(_c_coefficients()) == 9
    assert _c_coefficients() == _triton_coefficients()


def test_series_error_is_within_the_budget():
    bound = error_bound(_c_coefficients())
    assert math.log2(bound) <= BOUND_LOG2, math.log2(bound)


def test_the_bound_is_tight_enough_to_fail():
    """Control: Taylor's own coefficients to degree 8 (one step fewer than the kernels had) break
    the budget, and so does the fitted polynomial on a wider interval."""
    taylor = [1 / math.factorial(j + 2) for j in range(9)]
    assert math.log2(error_bound(taylor)) > BOUND_LOG2
    assert math.log2(error_bound(_c_coefficients(), half_width=Fraction(4, 10))) > BOUND_LOG2


@pytest.mark.parametrize("r", [-0.3466, -0.1, -1e-3, 0.0, 1e-3, 0.2, 0.3466])
def test_polynomial_matches_expm1(r):
    """expm1 = r + r^2 P(r), evaluated in double, agrees with math.expm1 to the budget's 0.41 |T - P|
    relative (2^-48.2; the extremes of T - P lie at the interval's ends), plus a few roundings."""
    tail = 0.0
    for c in reversed(_c_coefficients()):
        tail = tail * r + c
    value = r + r * r * tail
    assert abs(value - math.expm1(r)) <= 2**-47.9 * abs(math.expm1(r))
