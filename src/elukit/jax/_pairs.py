r"""Error-free arithmetic on pairs of floats (double-float32, double-double) in jax.numpy.

JAX has no float64 unless ``jax_enable_x64`` is on, so elukit.jax cannot do what the NumPy and
torch backends do (evaluate float32 in float64 and round once). Instead a value is carried as an
unevaluated sum ``hi + lo`` of two floats of the working dtype (float32 for 16/32-bit inputs,
float64 for float64 inputs), which carries about twice the working precision (48 bits for
float32 pairs, 106 for float64). Every step below says what the plain version loses.

What XLA does to such code, checked on CPU (and pinned by tests/test_jax.py):

* it does not reassociate floating-point sums, so ``two_sum`` stays error-free;
* it flushes subnormal float32/float64 results to zero and treats subnormal inputs as zero
  (FTZ/DAZ). Splitting is done on the bit pattern (never with Veltkamp's ``(2^s+1)*a`` trick,
  whose ``c - a`` step a fused multiply-add contraction would make exact and so break).
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
from jax import lax

Pair = tuple[jnp.ndarray, jnp.ndarray]


class Format:
    """Constants of a working dtype: its bit layout and the pair splits of ln 2 and 2^(j/32)."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        info = np.finfo(self.dtype)
        self.precision = info.nmant + 1  # 24 or 53 significant bits
        self.mantissa_bits = info.nmant
        self.int_dtype = np.dtype(np.int32 if self.dtype.itemsize == 4 else np.int64)
        self.exponent_bias = info.maxexp - 1
        # split: round the significand to `keep` bits (12 of 24, 26 of 53), so that the rest is
        # at most `keep` bits with its sign and every partial product is exact.
        self.drop = self.precision - self.precision // 2
        self.keep = self.precision // 2
        # ln 2 in three parts; n*LN2_HI and n*LN2_MID are exact for |n| < 2^(precision - keep - 1).
        ln2 = _decimal_constant(lambda: Decimal(2).ln())
        # |k| <= 2^13 (float32) or 2^16 (float64) in `reduced_exponential`: parts of
        # precision - 13 or - 16 bits make k*part exact.
        part_bits = self.precision - (13 if self.precision == 24 else 16)
        self.ln2_hi = _truncate(ln2, part_bits)
        self.ln2_mid = _truncate(ln2 - Fraction(self.ln2_hi), part_bits)
        self.ln2_lo = float(self.dtype.type(ln2 - Fraction(self.ln2_hi) - Fraction(self.ln2_mid)))
        self.inv_ln2_32 = float(self.dtype.type(32 / math.log(2)))
        table = [_decimal_constant(lambda j=j: Decimal(2) ** (Decimal(j) / 32)) for j in range(32)]
        self.table_hi = np.array([_to(self.dtype, v) for v in table], dtype=self.dtype)
        self.table_lo = np.array([_to(self.dtype, v - Fraction(float(h))) for v, h in zip(table, self.table_hi)],
                                 dtype=self.dtype)
        # Taylor coefficients of expm1 beyond r^2/2 (r^3/3!, ...), enough for 2^-(2*precision-8)
        # relative on |r| <= ln2/64.
        terms = 4 if self.precision == 24 else 9
        self.series = tuple(float(self.dtype.type(1 / math.factorial(k))) for k in range(3, 3 + terms))
        # below this t, e^t no longer matters to a pair (and 2^n stays representable)
        self.lowest_exponent_argument = -120.0 if self.precision == 24 else -800.0
        # Below `small`, expm1(t) = t + t^2/2 to beyond a pair's precision; such x are scaled by
        # 2^small_scale first, so that no partial product of a TwoProduct underflows (XLA flushes
        # subnormals: ELU(alpha=3) of -1.5e-32 in float32 came out 1 ulp off).
        self.small = 2.0**-26 if self.precision == 24 else 2.0**-55
        self.small_scale = 100 if self.precision == 24 else 600  # keeps the tail of K*x normal, K >= 2^-10

    def constant(self, value: Fraction | float) -> tuple[float, float]:
        """A real number as the pair (hi, lo) of this dtype closest to it."""
        exact = Fraction(value)
        hi = _to(self.dtype, exact)
        return hi, _to(self.dtype, exact - Fraction(hi)) if math.isfinite(hi) else 0.0


def _decimal_constant(compute) -> Fraction:
    with localcontext() as context:
        context.prec = 60
        return Fraction(compute())


def _to(dtype: np.dtype, value: Fraction) -> float:
    """`value` rounded once to `dtype` (float32 through `_round_fraction`: float64 -> float32
    would round twice)."""
    if np.dtype(dtype) == np.float64 or value == 0:
        return float(value)
    return _round_fraction(value, 24)


def _round_fraction(value: Fraction, bits: int) -> float:
    """`value` rounded to nearest (ties to even) with `bits` significant bits (normal range)."""
    if value == 0:
        return 0.0
    sign = -1 if value < 0 else 1
    value = abs(value)
    exponent = math.floor(math.log2(value))
    while Fraction(2) ** exponent > value:
        exponent -= 1
    while Fraction(2) ** (exponent + 1) <= value:
        exponent += 1
    scale = Fraction(2) ** (exponent - bits + 1)
    quotient = value / scale
    integer = math.floor(quotient)
    remainder = quotient - integer
    if remainder > Fraction(1, 2) or (remainder == Fraction(1, 2) and integer % 2 == 1):
        integer += 1
    return sign * float(integer * scale)


def _truncate(value: Fraction, bits: int) -> float:
    """`value` truncated to `bits` significant bits (so that small multiples of it are exact)."""
    exponent = math.floor(math.log2(abs(value)))
    scale = Fraction(2) ** (exponent - bits + 1)
    return float(math.floor(value / scale) * scale)


# --- error-free transformations -------------------------------------------------------------------

def two_sum(a, b) -> Pair:
    """a + b = s + e exactly (Knuth). The plain sum loses e."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def fast_two_sum(a, b) -> Pair:
    """a + b = s + e exactly when |a| >= |b| (Dekker), in three operations."""
    s = a + b
    return s, b - (s - a)


def split(a, fmt: Format, bounded: bool = False) -> Pair:
    """a = hi + lo with hi rounded to `fmt.keep` bits and lo the exact rest (at most as many bits).

    Done on the bit pattern: Veltkamp's ``c = (2^s+1)*a; hi = c - (c - a)`` breaks when the
    compiler contracts ``c - a`` into a fused multiply-add.
    """
    bits = lax.bitcast_convert_type(a, fmt.int_dtype)
    half = fmt.int_dtype.type(1 << (fmt.drop - 1))
    mask = fmt.int_dtype.type(~((1 << fmt.drop) - 1))
    hi = lax.bitcast_convert_type((bits + half) & mask, fmt.dtype)
    if not bounded:  # rounding up the largest finite values would overflow
        hi = jnp.where(jnp.isfinite(hi), hi, a)
    return hi, a - hi


def two_product(a, b, fmt: Format, b_split: Pair | None = None, bounded: bool = False) -> Pair:
    """a * b = p + e exactly (Dekker, with bit-pattern splits), unless p overflows or underflows.
    `bounded`: a and b are known to be far from overflow (skips a guard)."""
    p = a * b
    a_hi, a_lo = split(a, fmt, bounded)
    b_hi, b_lo = split(b, fmt, bounded) if b_split is None else b_split
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def split_constant(value: float, fmt: Format) -> Pair:
    """`split` of a Python constant, done once at trace time."""
    hi = _round_fraction(Fraction(value), fmt.keep) if value != 0 else 0.0
    return fmt.dtype.type(hi), fmt.dtype.type(value - hi)


def product_with_constant(x, constant: tuple[float, float], fmt: Format) -> Pair:
    """(c_hi + c_lo) * x as a pair, c a constant pair; about 2*precision - 2 bits."""
    c_hi, c_lo = constant
    if c_lo == 0 and _is_power_of_two(c_hi):
        return x * fmt.dtype.type(c_hi), jnp.zeros_like(x)
    p, e = two_product(x, fmt.dtype.type(c_hi), fmt, split_constant(c_hi, fmt))
    e = jnp.where(jnp.isfinite(p), e + x * fmt.dtype.type(c_lo), fmt.dtype.type(0))  # p = +-inf: no NaN
    return fast_two_sum(p, e)


def product_with_constant_exact(x, value: float | Fraction, fmt: Format) -> Pair:
    """value * x as a pair whose sign of (hi + lo - value*x) is right, for a float64 `value`
    with more bits than a float32 pair (0.01 has 53): `product_with_constant` would make
    0.01 * 150 * 2^-24 an exact float16 midpoint while the true product lies above it."""
    one = fmt.dtype.type
    c1 = _to(fmt.dtype, Fraction(value))
    c2 = _to(fmt.dtype, Fraction(value) - Fraction(c1))
    c3 = _to(fmt.dtype, Fraction(value) - Fraction(c1) - Fraction(c2))
    if c3 == 0:
        return product_with_constant(x, (c1, c2), fmt)
    p1, e1 = two_product(x, one(c1), fmt, split_constant(c1, fmt))
    p2, e2 = two_product(x, one(c2), fmt, split_constant(c2, fmt))
    finite = jnp.isfinite(p1)
    middle, rest = two_sum(jnp.where(finite, e1, one(0)), jnp.where(finite, p2, one(0)))
    hi, lo = fast_two_sum(p1, middle)
    rest = rest + jnp.where(finite, e2 + x * one(c3), one(0))
    return hi, nudge(lo, rest)  # (x*c3 is rounded, but below the midpoint test's reach)


def nudge(lo, tail, default_sign=0.0):
    """lo + tail, moved one ulp of lo toward the tail where the plain sum drops it (toward
    `default_sign` where the tail itself underflowed to 0): the pair then still says on which
    side of a rounding midpoint the exact value lies (a tie hi + lo would otherwise round to
    even whatever the tail)."""
    total = lo + tail
    direction = jnp.where(tail != 0, jnp.sign(tail), default_sign)
    lost = (total == lo) & (direction != 0) & (lo != 0)
    return jnp.where(lost, jnp.nextafter(lo, jnp.where(direction > 0, jnp.inf, -jnp.inf).astype(lo.dtype)), total)


def multiply(a: Pair, b: Pair, fmt: Format, bounded: bool = False) -> Pair:
    """Pair product (relative error about 2^(2 - 2*precision))."""
    p, e = two_product(a[0], b[0], fmt, bounded=bounded)
    return fast_two_sum(p, e + (a[0] * b[1] + a[1] * b[0]))


def multiply_constant(a: Pair, constant: tuple[float, float], fmt: Format) -> Pair:
    """Pair times a constant pair."""
    c_hi, c_lo = constant
    if c_lo == 0 and _is_power_of_two(c_hi):
        factor = fmt.dtype.type(c_hi)
        return a[0] * factor, a[1] * factor
    p, e = two_product(a[0], fmt.dtype.type(c_hi), fmt, split_constant(c_hi, fmt))
    return fast_two_sum(p, e + (a[0] * fmt.dtype.type(c_lo) + a[1] * fmt.dtype.type(c_hi)))


def add(a: Pair, b: Pair) -> Pair:
    """Pair sum, accurate also when the two cancel (two_sum of the heads)."""
    s, e = two_sum(a[0], b[0])
    return fast_two_sum(s, e + (a[1] + b[1]))


def _is_power_of_two(value: float) -> bool:
    return value > 0 and math.frexp(value)[0] == 0.5


def power_of_two(n, fmt: Format):
    """2^n for integer-valued n in the normal range, built from its bit pattern."""
    exponent = (n.astype(fmt.int_dtype) + fmt.int_dtype.type(fmt.exponent_bias)) << fmt.int_dtype.type(fmt.mantissa_bits)
    return lax.bitcast_convert_type(exponent, fmt.dtype)


# --- the exponential ---------------------------------------------------------------------------

def reduced_exponential(t: Pair, fmt: Format):
    """e^t = 2^n * (T + T*E) with T = 2^(j/32) and E = expm1(r), |r| <= ln2/64, as pairs.

    Returns (n, T, E). t must be <= 0 and >= fmt.lowest_exponent_argument; ``t_hi - n*ln2``
    is formed from a three-part ln 2 so it loses nothing to cancellation (the plain reduction
    loses up to 8 bits at t = -120).
    """
    one = fmt.dtype.type
    k = jnp.round(t[0] * one(fmt.inv_ln2_32))
    r_hi, e1 = two_sum(t[0], -k * one(fmt.ln2_hi / 32))
    r_hi, e2 = two_sum(r_hi, -k * one(fmt.ln2_mid / 32))
    r_lo = (e1 + e2) + (t[1] - k * one(fmt.ln2_lo / 32))
    r_hi, r_lo = fast_two_sum(r_hi, r_lo)
    k_int = k.astype(fmt.int_dtype)
    j = k_int & fmt.int_dtype.type(31)
    n = (k_int - j) >> fmt.int_dtype.type(5)
    table = (jnp.take(jnp.asarray(fmt.table_hi), j), jnp.take(jnp.asarray(fmt.table_lo), j))
    # expm1(r) = r + r^2/2 + r^3 * (1/3! + r/4! + ...): the first two terms as pairs.
    square = two_product(r_hi, r_hi, fmt, bounded=True)
    tail = jnp.full_like(r_hi, fmt.series[-1])
    for coefficient in fmt.series[-2::-1]:
        tail = tail * r_hi + one(coefficient)
    tail = tail * (square[0] * r_hi) + r_lo * r_hi  # + r_lo * r_hi: the cross term of r^2/2
    half_square = (square[0] * one(0.5), square[1] * one(0.5))
    expm1_r = add((r_hi, r_lo), half_square)
    expm1_r = fast_two_sum(expm1_r[0], expm1_r[1] + tail)
    return n, table, expm1_r


def scale(a: Pair, n, fmt: Format) -> Pair:
    """a * 2^n for n >= 2*min_exponent, in two exact steps (2^n alone would underflow)."""
    first = n // 2
    f1, f2 = power_of_two(first, fmt), power_of_two(n - first, fmt)
    return (a[0] * f1) * f2, (a[1] * f1) * f2


def round_to_odd(hi, lo, default_sign, fmt: Format):
    """hi + lo rounded to hi's dtype with a sticky last bit (round to odd), so that rounding it
    again to float16/bfloat16 rounds hi + lo once. Where lo is 0, `default_sign` (+1, -1 or 0)
    says on which side a tail lost below the pair's precision lay."""
    sticky = jnp.where(lo != 0, jnp.sign(lo), default_sign)
    bits = lax.bitcast_convert_type(hi, fmt.int_dtype)
    even = (bits & fmt.int_dtype.type(1)) == 0
    move = even & (sticky != 0) & jnp.isfinite(hi) & (hi != 0)
    toward = jnp.where(sticky > 0, jnp.inf, -jnp.inf).astype(hi.dtype)
    return jnp.where(move, jnp.nextafter(hi, toward), hi)


# --- subnormal numbers, which XLA flushes to zero in arithmetic -----------------------------------

def _bits_of(value: float, fmt: Format):
    return fmt.int_dtype.type(np.asarray(value, fmt.dtype).view(fmt.int_dtype))


def classify(x, fmt: Format):
    """(positive, negative, subnormal) masks of x from its bit pattern: XLA reads a subnormal x
    as 0 in comparisons (SELU'(1e-45) took the left branch), and NaN is neither sign."""
    bits = lax.bitcast_convert_type(x, fmt.int_dtype)
    magnitude = bits & ~_sign_mask(fmt)
    finite_or_inf = magnitude <= _bits_of(np.inf, fmt)
    nonzero = magnitude != 0
    positive = (bits > 0) & finite_or_inf
    negative = (bits < 0) & nonzero & finite_or_inf
    subnormal = nonzero & (magnitude < _bits_of(np.finfo(fmt.dtype).tiny, fmt))
    return positive, negative, subnormal


def _sign_mask(fmt: Format):
    return fmt.int_dtype.type(np.iinfo(fmt.int_dtype).min)


def scaled_up(x, subnormal, exponent: int, fmt: Format):
    """x * 2^exponent exactly, also for subnormal x (rebuilt from its integer significand;
    XLA would read it as 0)."""
    one = fmt.dtype.type
    bits = lax.bitcast_convert_type(x, fmt.int_dtype)
    significand = (bits & ~_sign_mask(fmt)).astype(fmt.dtype)  # exact: < 2^mantissa_bits
    quantum = exponent - (fmt.exponent_bias - 1 + fmt.mantissa_bits)  # 2^quantum: smallest subnormal * 2^exponent
    rebuilt = significand * one(2.0**quantum)
    rebuilt = jnp.where(bits < 0, -rebuilt, rebuilt)
    return jnp.where(subnormal, rebuilt, x * one(2.0**exponent))


def finish(hi, lo, shift, fmt: Format, odd: bool = False, default_sign=None):
    """(hi + lo) * 2^shift rounded once to the working dtype: to nearest, or to odd (`odd`, for a
    later rounding to float16/bfloat16), subnormal results included.

    XLA flushes a subnormal product to zero, so a subnormal result is assembled from its integer
    count of the smallest subnormal. `default_sign`: see `round_to_odd`.
    """
    one = fmt.dtype.type
    if default_sign is None:
        default_sign = jnp.zeros_like(hi)
    rounded = round_to_odd(hi, lo, default_sign, fmt) if odd else hi + lo
    normal = scale((rounded, rounded), shift, fmt)[0]
    # subnormal: q = (hi + lo) / smallest subnormal, rounded to an integer
    q_hi, q_lo = scale((hi, lo), shift + (fmt.exponent_bias - 1 + fmt.mantissa_bits), fmt)
    negative = q_hi < 0
    a_hi, a_lo = jnp.abs(q_hi), jnp.where(negative, -q_lo, q_lo)
    whole = jnp.floor(a_hi)
    fraction = a_hi - whole  # exact, in [0, 1); the pair's tail a_lo is compared, never added
    borrow = (fraction == 0) & (a_lo < 0)  # just below an integer
    whole = jnp.where(borrow, whole - 1, whole)
    fraction = jnp.where(borrow, one(1), fraction)
    # the side of a tail lost below the pair, in magnitude
    toward = jnp.where(negative, -default_sign, default_sign)
    if odd:
        exact = (fraction == 0) & (a_lo == 0)
        whole = jnp.where(exact & (toward < 0) & (whole > 0), whole - 1, whole)
        inexact = ~exact | (toward != 0)
        count = whole.astype(fmt.int_dtype) | inexact.astype(fmt.int_dtype)
    else:
        odd_whole = jnp.fmod(whole, one(2)) == 1
        tie_up = jnp.where(a_lo != 0, a_lo > 0, jnp.where(toward != 0, toward > 0, odd_whole))
        up = (fraction > one(0.5)) | ((fraction == one(0.5)) & tie_up)
        count = (whole + jnp.where(up, one(1), one(0))).astype(fmt.int_dtype)
    count = jnp.where(negative, count | _sign_mask(fmt), count)
    subnormal_result = lax.bitcast_convert_type(count, fmt.dtype)
    hi_exponent = (lax.bitcast_convert_type(rounded, fmt.int_dtype) >> fmt.int_dtype.type(fmt.mantissa_bits)) & \
        fmt.int_dtype.type(2 * fmt.exponent_bias + 1)
    below_normal = hi_exponent.astype(shift.dtype if hasattr(shift, "dtype") else fmt.int_dtype) + shift < 1
    return jnp.where(below_normal & jnp.isfinite(rounded), subnormal_result, normal)
