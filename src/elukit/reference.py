"""Correctly rounded mpmath references and ULP errors, for the accuracy tests and tables.

Needs mpmath (``pip install 'elukit[accuracy]'``). Each activation's spec carries its mpmath
formulas (`Activation.reference`); this module evaluates them at `WORKING_BITS` bits, rounds
the exact value once to a target float format with integer arithmetic (no double rounding
through float64), and measures errors in units in the last place (ulp) of that format.

The ulp of a real y in a format with p-bit significands and smallest normal 2^emin is
2^(max(e, emin) - p + 1) where 2^e <= |y| < 2^(e+1): below the normal range it is the
subnormal spacing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from elukit._spec import Activation

WORKING_BITS = 192
"""mpmath precision of the references: 139 bits beyond float64. Where that is not enough to
decide a rounding -- the value lies within 2^-185 relative of a midpoint of float64, float32,
float16 or bfloat16, as c*expm1(x) = c*x + c*x^2/2 does for tiny x -- `exact_values` recomputes
with more bits (Ziv's strategy), up to `MAX_BITS`."""

MAX_BITS = 4608
"""Enough to see the x^2 term of expm1 next to x for any float64 x (it is 2^-1074 relative at worst)."""

_PRECISIONS = (53, 24, 11, 8)
"""Significand bits of float64, float32, float16 and bfloat16."""

QUANTITIES = ("value", "derivative", "second_derivative")


def _mpmath() -> Any:
    try:
        import mpmath
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "elukit.reference needs mpmath: pip install 'elukit[accuracy]'"
        ) from error
    return mpmath


@dataclasses.dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: significand bits (with the implicit one), smallest
    normal exponent, and largest finite value."""

    name: str
    precision: int
    min_exponent: int
    max_finite: float


def float_format(dtype: Any) -> FloatFormat:
    """The `FloatFormat` of a NumPy or ml_dtypes float dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
    else:
        import ml_dtypes

        info = ml_dtypes.finfo(dtype)
    return FloatFormat(
        name=dtype.name,
        precision=int(info.nmant) + 1,
        min_exponent=int(info.minexp),
        max_finite=float(info.max),
    )


def _quantum_exponent(man: int, exp: int, fmt: FloatFormat) -> int:
    top = exp + man.bit_length() - 1
    return max(top, fmt.min_exponent) - fmt.precision + 1


def round_exact(value: Any, fmt: FloatFormat) -> float:
    """Round an mpmath number once, half to even, to `fmt`; returns it as a Python float.

    Values beyond the largest finite number round to +-inf as IEEE 754 prescribes.
    """
    mp = _mpmath()
    if not isinstance(value, mp.mpf):  # an mpf keeps all its bits (see exact_values)
        with mp.workprec(WORKING_BITS):
            value = mp.mpf(value)
    if mp.isnan(value):
        return math.nan
    if mp.isinf(value):
        return math.copysign(math.inf, float(value))
    sign, man, exp, _ = value._mpf_
    if man == 0:
        return -0.0 if sign else 0.0
    quantum = _quantum_exponent(man, exp, fmt)
    if exp >= quantum:
        integer, shift_exp = man << (exp - quantum), quantum
    elif quantum - exp > man.bit_length() + 1:
        integer, shift_exp = 0, quantum  # below half the smallest step: rounds to zero
    else:
        shift = quantum - exp
        integer = man >> shift
        remainder = man & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        if remainder > half or (remainder == half and integer & 1):
            integer += 1
        shift_exp = quantum
    try:
        magnitude = math.ldexp(integer, shift_exp)
    except OverflowError:
        magnitude = math.inf
    if magnitude > fmt.max_finite:
        magnitude = math.inf
    return -magnitude if sign else magnitude


def ulp_error(got: float, exact: Any, fmt: FloatFormat) -> float:
    """|got - exact| in ulps of `fmt` at `exact`; 0 for matching infinities/NaN, inf on a miss."""
    mp = _mpmath()
    exact = exact if isinstance(exact, mp.mpf) else mp.mpf(exact)
    bits = WORKING_BITS
    if exact._mpf_[1]:
        bits = max(bits, exact._mpf_[1].bit_length() + 64)  # keep a recomputed reference's bits
    with mp.workprec(bits):
        return _ulp_error(mp, got, exact, fmt)


def _ulp_error(mp: Any, got: float, exact: Any, fmt: FloatFormat) -> float:
    if math.isnan(got) or mp.isnan(exact):
        return 0.0 if (math.isnan(got) and mp.isnan(exact)) else math.inf
    if mp.isinf(exact) or math.isinf(got):
        if mp.isinf(exact) and math.isinf(got) and (got > 0) == (exact > 0):
            return 0.0
        if math.isinf(got) and round_exact(exact, fmt) == got:
            return 0.0  # a finite value past the overflow threshold correctly rounds to inf
        return math.inf
    if exact == 0:
        return 0.0 if got == 0 else math.inf
    _, man, exp, _ = exact._mpf_
    quantum = _quantum_exponent(man, exp, fmt)
    return float(abs(mp.mpf(got) - exact) / mp.ldexp(1, quantum))


def exact_values(activation: Activation, quantity: str, points: Iterable[float]) -> list[Any]:
    """The activation's `quantity` at each point, as mpmath numbers at `WORKING_BITS` bits."""
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    mp = _mpmath()
    formula = getattr(activation.reference, quantity)
    params = activation.parameters
    values = []
    for x in points:
        bits = WORKING_BITS
        while True:
            with mp.workprec(bits):
                value = formula(mp, mp.mpf(float(x)), **params)
            if bits >= MAX_BITS or not _near_a_midpoint(value, bits):
                break
            bits *= 2
        values.append(value)
    return values


def _near_a_midpoint(value: Any, bits: int) -> bool:
    """Whether `value`, known to about `bits` bits, lies so close to a rounding midpoint of a
    float format that its last few bits could decide the rounding (exact values are not)."""
    if not hasattr(value, "_mpf_"):
        return False
    _, man, _, _ = value._mpf_
    if man == 0:
        return False
    window = man << max(0, bits - man.bit_length())  # `bits` significant bits, trailing zeros restored
    length = window.bit_length()
    for precision in _PRECISIONS:
        rest = length - precision
        remainder = window & ((1 << rest) - 1)
        if abs(remainder - (1 << (rest - 1))) <= 64:
            return True
    return False


@dataclasses.dataclass(frozen=True)
class ErrorSummary:
    """ULP errors of one (activation, quantity, dtype) over a set of points."""

    activation: str
    quantity: str
    dtype: str
    points: int
    max_ulp: float
    p999_ulp: float
    correctly_rounded: float
    worst: tuple[tuple[float, float, float, float], ...]
    """(x, got, correctly rounded value, ulps) of the worst points, worst first."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _percentile_999(errors: np.ndarray) -> float:
    """The 99.9th percentile of ulp errors; inf (not NaN with a warning) where it falls among
    infinite errors (jax.nn's second derivative at -inf)."""
    if not len(errors):
        return 0.0
    with np.errstate(invalid="ignore"):
        value = float(np.quantile(errors, 0.999))
    return math.inf if math.isnan(value) else value


def summarize(
    activation: str,
    quantity: str,
    dtype: Any,
    points: Sequence[float],
    got: Sequence[float],
    exact: Sequence[Any],
    keep_worst: int = 5,
) -> ErrorSummary:
    """Compare results `got` at `points` with `exact` mpmath values, in ulps of `dtype`."""
    fmt = float_format(dtype)
    errors = np.array([ulp_error(float(g), e, fmt) for g, e in zip(got, exact)])
    rounded = np.array([round_exact(e, fmt) for e in exact])
    got_array = np.asarray(got, dtype=np.float64)
    same = (got_array == rounded) | (np.isnan(got_array) & np.isnan(rounded))
    order = np.argsort(-errors, kind="stable")[:keep_worst]
    worst = tuple(
        (float(points[i]), float(got_array[i]), float(rounded[i]), float(errors[i])) for i in order
    )
    return ErrorSummary(
        activation=activation,
        quantity=quantity,
        dtype=fmt.name,
        points=len(points),
        max_ulp=float(errors.max()) if len(errors) else 0.0,
        p999_ulp=_percentile_999(errors),
        correctly_rounded=float(same.mean()) if len(same) else 1.0,
        worst=worst,
    )
