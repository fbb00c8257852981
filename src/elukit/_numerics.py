"""dtype policy: which dtype a kernel works in, and how its result is rounded once.

Policy (documented in the README):

* float16, bfloat16 (ml_dtypes) and float32 inputs are evaluated in float64 and rounded once to
  the input dtype. float64 carries 29+ more bits than float32, so the single final rounding is
  wrong only when the exact value lies within ~2^-29 ulp of a rounding midpoint.
* float64 inputs are evaluated in ``np.longdouble`` for specs that ask for it
  (``extended_float64``), when that type has at least a 64-bit significand (x86-64 Linux, or a
  128-bit quad type). Otherwise float64 is used and the faithful-rounding guarantee for float64
  does not hold; `EXTENDED_PRECISION_AVAILABLE` tells which.
* np.longdouble inputs keep their dtype; specs without `extended_float64` compute them in
  float64 (SciPy's special functions stop there).
* ints and bools become float64, as with NumPy ufuncs; Python scalars give NumPy scalars.
* str, bytes, complex and object input raise TypeError.

A naive ``astype`` from float64 to bfloat16 rounds through float32 (two roundings), which
misrounds values just above a bfloat16 midpoint; `round_to_dtype` rounds once.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

EXTENDED_PRECISION_AVAILABLE: bool = np.finfo(np.longdouble).nmant >= 63
"""True when ``np.longdouble`` has a significand of at least 64 bits."""

_EXTENDED = np.longdouble if EXTENDED_PRECISION_AVAILABLE else np.float64


CHUNK = 32768
"""Elements per block when evaluating large arrays: the float64 temporaries of a block stay in
the L2 cache and are recycled by the allocator instead of page-faulting 8 MB at a time, which
made a 2^20-element float32 ELU 2.5x faster here (benchmarks/bench_numpy.py)."""


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A validated input, the dtype its kernel works in, and how to give the result back."""

    array: np.ndarray
    work_dtype: np.dtype
    out_dtype: np.dtype
    scalar: bool


def _ml_dtypes_float_info(dtype: np.dtype) -> Any | None:
    """finfo of an ml_dtypes floating type (bfloat16, float8_*), else None."""
    if dtype.kind != "V" or "ml_dtypes" not in sys.modules:
        return None
    ml_dtypes = sys.modules["ml_dtypes"]
    try:
        return ml_dtypes.finfo(dtype)
    except (ValueError, TypeError, KeyError):
        return None


def output_dtype(dtype: np.dtype) -> np.dtype:
    """The result dtype for an input dtype: floats keep theirs, ints and bools give float64."""
    if dtype.kind == "f":
        return dtype
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    if _ml_dtypes_float_info(dtype) is not None:
        return dtype
    if dtype.kind == "c":
        raise TypeError(f"x must be real; complex input (dtype {dtype}) is not supported")
    raise TypeError(f"x must be a real number or array of real numbers, got dtype {dtype}")


def working_dtype(out_dtype: np.dtype, extended: bool) -> np.dtype:
    """float64 for floats of <= 32 bits; longdouble for float64 when `extended`; else itself."""
    if out_dtype.itemsize <= 4:
        return np.dtype(np.float64)
    if out_dtype == np.float64 and extended:
        return np.dtype(_EXTENDED)
    if out_dtype.itemsize > 8 and not extended:
        return np.dtype(np.float64)  # SciPy's special functions stop at float64
    return out_dtype


def prepare(x: ArrayLike, extended: bool = False) -> Prepared:
    """Validate `x` and choose its working and output dtypes (see module docstring)."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"x must be a real number or array, got {type(x).__name__} {x!r}")
    if isinstance(x, complex):
        raise TypeError(f"x must be real; got complex {x!r}")
    scalar = np.ndim(x) == 0 and not isinstance(x, np.ndarray)
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as error:
        raise TypeError(f"x could not be read as an array of real numbers: {error}") from None
    out_dtype = output_dtype(array.dtype)
    return Prepared(array=array, work_dtype=working_dtype(out_dtype, extended), out_dtype=out_dtype, scalar=scalar)


def evaluate(kernel: Callable[..., np.ndarray], prepared: Prepared, params: dict[str, float]) -> Any:
    """Run an elementwise `kernel` block by block in the working dtype; round each result once.

    A kernel may return ``(head, tail)``: head the value rounded to the working dtype, tail its
    exact error (float64 only). Where the result is rounded again to a narrower dtype, head's last
    bit is made sticky (`round_to_odd`) so that this second rounding is the correct one.

    Non-finite intermediate results (overflow to inf, underflow) are intended, so floating-point
    warnings are silenced here and nowhere else.
    """
    array = prepared.array
    out = np.empty(array.shape, dtype=prepared.out_dtype)
    flat_in = array.reshape(-1)
    flat_out = out.reshape(-1)
    narrower = prepared.work_dtype == np.float64 and prepared.out_dtype != np.float64
    with np.errstate(all="ignore"):
        for start in range(0, flat_in.size, CHUNK):
            work = flat_in[start:start + CHUNK].astype(prepared.work_dtype)
            result = kernel(work, **params)
            if isinstance(result, tuple):  # (fl(value), its exact error): sticky before a second rounding
                head, tail = result
                result = round_to_odd(np.asarray(head), np.asarray(tail)) if narrower else head
            flat_out[start:start + CHUNK] = round_to_dtype(np.asarray(result), prepared.out_dtype)
    if prepared.scalar:
        return out[()]
    return out


def round_to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round `values` (float64 or wider) to `dtype` with a single round-half-even step.

    NumPy's casts to float16/32/64 already round once. ml_dtypes' cast from float64 goes
    through float32, which double-rounds; for those types we round the significand to the
    target precision in float64 first (exact scaling by powers of two, then `np.rint`), after
    which the cast is exact.
    """
    info = _ml_dtypes_float_info(dtype)
    if info is None:
        return values.astype(dtype)
    values = np.asarray(values, dtype=np.float64)
    precision = info.nmant + 1
    _, exponent = np.frexp(values)
    quantum_exponent = np.maximum(exponent - precision, info.minexp - info.nmant)
    rounded = np.ldexp(np.rint(np.ldexp(values, -quantum_exponent)), quantum_exponent)
    rounded = np.where(np.isfinite(values), rounded, values)
    return rounded.astype(dtype)


# --- sticky rounding: making the one final rounding exact -----------------------------------------

_VELTKAMP = 134217729.0  # 2^27 + 1 splits a float64 into two halves of <= 26 bits


def veltkamp_split(value: Any) -> tuple[Any, Any]:
    """(high, low) with high + low == value exactly, each of at most 26 significant bits, so
    that products of the halves with 26-bit numbers are exact. Pure arithmetic: works on Python
    floats, NumPy arrays and torch tensors alike (float64)."""
    scaled = value * _VELTKAMP
    high = scaled - (scaled - value)
    return high, value - high


def product_error(constant: float, x: Any) -> Any:
    """The exact rounding error ``constant*x - fl(constant*x)`` for float64 `x` of <= 26 bits.

    Dekker's TwoProduct with the constant split by Veltkamp: both partial products are exact
    because `x` comes from a float16/bfloat16/float32 input. Non-finite where `constant` is
    so large that splitting overflows; callers treat that as "unknown". NumPy or torch `x`.
    """
    high, low = veltkamp_split(float(constant))
    product = constant * x
    return (x * high - product) + x * low


def two_product_error(constant: float, x: Any, product: Any) -> Any:
    """The exact rounding error ``constant*x - product`` of ``product = fl(constant*x)`` for any
    float64 `x` (Dekker's TwoProduct, both factors split by Veltkamp). Exact unless the error
    underflows (|product| < 2^-969) or a split overflows (|x| or |constant| > 2^996, then
    non-finite, which `round_to_odd` ignores)."""
    c_high, c_low = veltkamp_split(float(constant))
    x_high, x_low = veltkamp_split(x)
    return (((c_high * x_high - product) + c_high * x_low) + c_low * x_high) + c_low * x_low


def round_to_odd(approximation: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Float64 `approximation` of ``approximation + tail`` with its last bit made sticky.

    Double rounding (float64, then float32 or narrower) is wrong exactly when the float64
    value lands on a midpoint of the narrow format while the true value lies to one side of it.
    Rounding to odd -- moving an even-significand result one ulp toward the true value whenever
    the tail is non-zero -- makes the following rounding to any format of <= 51 bits correct
    (Boldo and Melquiond 2008). `tail` needs only the right sign; non-finite tails are ignored.
    """
    bits = approximation.view(np.uint64)
    even = (bits & np.uint64(1)) == 0
    move = even & (tail != 0) & np.isfinite(tail) & np.isfinite(approximation) & (approximation != 0)
    toward = np.where(tail > 0, np.inf, -np.inf)
    return np.where(move, np.nextafter(approximation, toward), approximation)


def sum_rounded_to_odd(head: np.ndarray, tail: np.ndarray, lost_tail_sign: float = 1.0) -> np.ndarray:
    """``head + tail`` in float64 with a sticky last bit (`round_to_odd`).

    `tail` is much smaller than `head`. The rounding residual of the sum is recovered exactly
    (Fast2Sum); where `tail` underflowed to zero although the true tail is not zero, its sign is
    `lost_tail_sign`.
    """
    total = head + tail
    residual = (head - total) + tail
    sticky = np.where(residual != 0, residual, np.where(tail == 0, lost_tail_sign, 0.0))
    return round_to_odd(total, sticky)


def select(condition: np.ndarray, if_true: Any, if_false: np.ndarray) -> np.ndarray:
    """``np.where(condition, if_true, if_false)`` without branches for float64 arrays.

    np.where on an unpredictable mask costs ~4 ns per element here (branch mispredictions),
    more than ``expm1`` itself; blending the bit patterns with an all-ones mask costs ~1 ns.
    Other dtypes use np.where.
    """
    if if_false.dtype != np.float64 or if_false.ndim == 0:
        return np.where(condition, if_true, if_false)
    true_bits = np.broadcast_to(np.asarray(if_true, dtype=np.float64), if_false.shape).view(np.uint64)
    mask = np.negative(condition.astype(np.uint64))  # all ones where condition holds
    blended = np.bitwise_and(true_bits, mask)
    blended |= np.bitwise_and(if_false.view(np.uint64), ~mask)
    return blended.view(np.float64)


def half_x_plus_square(x: np.ndarray, value: np.ndarray, square_coefficient: float) -> np.ndarray:
    r"""`value` where |x| >= 2^-40, else :math:`x/2 + c x^2` summed with a sticky last bit.

    For tiny x both SiLU and GELU are x/2 + c x^2 (c = 1/4, 1/sqrt(2 pi)); in float64 the sum
    rounds to x/2, which for a float32 subnormal x is a float32 rounding midpoint, so the next
    rounding would go to even instead of up. `sum_rounded_to_odd` keeps the side.
    """
    if x.dtype != np.float64:
        return value
    tiny = (np.abs(x) < 2.0**-40) & (x != 0)
    if tiny.any():
        xs = x[tiny]
        value = value.copy()
        value[tiny] = sum_rounded_to_odd(0.5 * xs, square_coefficient * xs * xs, 1.0)
    return value
