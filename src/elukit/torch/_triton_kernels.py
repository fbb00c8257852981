r"""The compiled CPU kernels of src/elukit/_exponential_linear.c, written again in Triton.

One kernel, `exponential_linear`, evaluates f, grad * f^(n) or f^(n) of the exponential-linear
family (ELU, SELU, CELU) and the piecewise-linear one (ReLU, Leaky ReLU) in one pass over memory,
with the same algorithm, operation for operation, as the C kernels: so it returns the same bits.
Each helper below names the C function it mirrors; read that one for the error analysis.

What keeps the bits equal:

* Every operation is an explicit IEEE +, -, *, / or fma on float64, rounded to nearest; no
  libdevice function (``tl.exp`` is evaluated by NumPy under the interpreter and by the GPU's own
  approximation when compiled), and the launcher passes ``enable_fp_fusion=False`` so that the
  compiler never contracts ``a*b + c`` into an fma behind the error-free transformations' back.
* Constants enter as float64 tensors: a Python float given to ``tl.fma`` (or as a kernel
  argument) would be made a float32 first. `_f64` builds them.
* The C kernels' data-dependent slow paths (elements their rounding test sends to double-double)
  are evaluated for every element and selected with ``tl.where``: same result, no divergence.

float32: the double evaluation with the rounding test, else double-double rounded to odd (C:
run_task). float64: the fast table kernels with their fallback (kind | FAST, elukit.torch's
default) or the double-double ones (``exact=True``). float16/bfloat16 (elukit.torch evaluates
them in float64 and rounds once, through a round-to-odd float32): double-double rounded to odd
twice, then to the narrow dtype; orders >= 3 of the exponential family from the float64 f''.

This module is loaded twice by `elukit.torch._triton`: compiled for CUDA tensors, and under
Triton's interpreter (NumPy, on CPU tensors) for the tests.
"""

from __future__ import annotations

import triton
import triton.language as tl


def _hex(text: str) -> tl.constexpr:
    return tl.constexpr(float.fromhex(text))


LN2_HI = _hex("0x1.62e42fefa3800p-1")
LN2_LO = _hex("0x1.ef35793c76730p-45")
INV_LN2 = _hex("0x1.71547652b82fep+0")
ROUND_SHIFT = _hex("0x1.8p52")
ROUND_SHIFT_BITS = tl.constexpr(0x4338000000000000)
VALUE_CLAMP = tl.constexpr(-60.0)
TINY_RATIO = _hex("0x1p-60")
INV_L128 = _hex("0x1.71547652b82fep+7")
L128_HI = _hex("0x1.62e42fef80000p-8")
L128_LO = _hex("0x1.1cf79abc9e3b4p-43")
LN2 = _hex("0x1.62e42fefa39efp-1")
FLOAT_VALUE_CLAMP = tl.constexpr(-30.0)
LARGEST = _hex("0x1.fffffffffffffp+1023")
SMALLEST_NORMAL = _hex("0x1p-1022")
SMALLEST_SUBNORMAL = _hex("0x1p-1074")
NO_SIGN = tl.constexpr(0x7FFFFFFFFFFFFFFF)
SIGN = tl.constexpr(-0x8000000000000000)
EXPONENT_MASK = tl.constexpr(0x7FF0000000000000)
TWO_M100 = _hex("0x1p-100")
TWO_200 = _hex("0x1p200")
# C: series_tail's degree-8 polynomial for (expm1(r) - r)/r^2, constant term first (tests/test_float32_series.py)
SERIES_0 = _hex("0x1.0000000000000p-1")
SERIES_1 = _hex("0x1.5555555553b79p-3")
SERIES_2 = _hex("0x1.5555555554cb7p-5")
SERIES_3 = _hex("0x1.1111111c4725cp-7")
SERIES_4 = _hex("0x1.6c16c1738faf6p-10")
SERIES_5 = _hex("0x1.a019ada56ce53p-13")
SERIES_6 = _hex("0x1.a019c9a6c2942p-16")
SERIES_7 = _hex("0x1.72c729cbdb150p-19")
SERIES_8 = _hex("0x1.28803f36ecdd5p-22")
TWO_M900 = _hex("0x1p-900")
TWO_M950 = _hex("0x1p-950")
TWO_1023 = _hex("0x1p1023")
TWO_M126 = _hex("0x1p-126")

# MODE: how the result is evaluated and rounded
FLOAT32 = tl.constexpr(0)          # C run_task
FLOAT64_FAST = tl.constexpr(1)     # C run_float64, kind | FAST
FLOAT64_EXACT = tl.constexpr(2)    # C run_float64
NARROW = tl.constexpr(3)           # float16/bfloat16, orders 0-2: double-double, odd, odd, nearest
NARROW_FROM_FAST = tl.constexpr(4)  # float16/bfloat16, orders >= 3: float64 f'' (fast) / divisor^(n-2)
NARROW_FROM_EXACT = tl.constexpr(5)  # ... from the double-double f''


@triton.jit
def _f64(like, value: tl.constexpr):
    """`value` as a float64 tensor shaped like `like` (never through float32)."""
    return tl.full(like.shape, value, tl.float64)


@triton.jit
def _bits(x):
    return x.to(tl.int64, bitcast=True)


@triton.jit
def _from_bits(bits):
    return bits.to(tl.float64, bitcast=True)


@triton.jit
def _power_of_two(k):
    """2^k for integer k in [-1022, 1023], from its bits (C: power_of_two)."""
    return _from_bits((k + 1023) << 52)


@triton.jit
def _copysign(value, sign_of):
    return _from_bits((_bits(value) & NO_SIGN) | (_bits(sign_of) & SIGN))


@triton.jit
def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@triton.jit
def _fast_two_sum(a, b):
    s = a + b
    return s, b - (s - a)


@triton.jit
def _two_product(a, b):
    p = a * b
    return p, tl.fma(a, b, -p)


@triton.jit
def _product_dd(a, b_hi, b_lo):
    """a * (b_hi + b_lo); the low part is zeroed where the high part overflows (C: product_dd)."""
    p, e = _two_product(a, b_hi)
    low = e + a * b_lo
    return p, tl.where(tl.abs(p) <= LARGEST, low, 0.0)


@triton.jit
def _product_dd_dd(a_hi, a_lo, b_hi, b_lo):
    p, e = _two_product(a_hi, b_hi)
    return p, e + (a_hi * b_lo + a_lo * b_hi)


@triton.jit
def _reduce_and_expm1(q, q_lo):
    """expm1(q + q_lo) = 2^k (1 + p) - 1, p = expm1(r) as a double-double (C: reduce_and_expm1)."""
    shifted = q * INV_LN2 + ROUND_SHIFT
    k = shifted - ROUND_SHIFT
    k_int = _bits(shifted) - ROUND_SHIFT_BITS
    r_head = tl.fma(-k, _f64(q, LN2_HI), q)
    r_hi, r_lo = _two_sum(r_head, q_lo - k * LN2_LO)
    inner = _f64(q, 1.0 / 87178291200.0)
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 6227020800.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 479001600.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 39916800.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 3628800.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 362880.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 40320.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 5040.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 720.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 120.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 24.0))
    inner = tl.fma(inner, r_hi, _f64(q, 1.0 / 6.0))
    half = _f64(q, 0.5)
    half_and_more = tl.fma(inner, r_hi, half)
    half_and_more_lo = tl.fma(inner, r_hi, half - half_and_more)
    square_hi, square_lo = _two_product(r_hi, r_hi)
    h_hi = square_hi * half_and_more
    h_lo = tl.fma(square_hi, half_and_more, -h_hi) + (square_lo * half_and_more + square_hi * half_and_more_lo)
    p_hi, p_lo = _fast_two_sum(r_hi, h_hi)
    p_lo += h_lo + r_lo * (1.0 + p_hi)
    return p_hi, p_lo, k_int


@triton.jit
def _divide(x, beta, HAS_BETA: tl.constexpr, floor):
    """min(x, 0)/beta as q + q_lo, clamped below at `floor` (C: divide)."""
    negative = tl.where(x < 0.0, x, 0.0)
    if HAS_BETA:
        q = negative / beta
        q_lo = tl.fma(-q, beta, negative) / beta
    else:
        q = negative
        q_lo = _f64(x, 0.0)
    below = q < floor
    return tl.where(below, floor, q), tl.where(below, 0.0, q_lo), below


@triton.jit
def _value_dd(x, c_hi, c_lo, d_hi, d_lo, scale, beta, HAS_BETA: tl.constexpr):
    """f(x) as an unnormalised double-double (C: value_dd)."""
    q, q_lo, _ = _divide(x, beta, HAS_BETA, _f64(x, VALUE_CLAMP))
    p_hi, p_lo, k = _reduce_and_expm1(q, q_lo)
    two_k = _power_of_two(k)
    m_hi, m_lo = _fast_two_sum(_f64(x, -1.0), two_k)
    s_hi, s_lo = _fast_two_sum(m_hi, two_k * p_hi)
    s_lo += m_lo + two_k * p_lo
    n_hi, n_lo = _product_dd_dd(c_hi, c_lo, s_hi, s_lo)
    if HAS_BETA:
        t_hi, t_lo = _product_dd(x, d_hi, d_lo)
        t_lo += t_hi * (q * 0.5)
        use_tiny = q > -TINY_RATIO
        n_hi = tl.where(use_tiny, t_hi, n_hi)
        n_lo = tl.where(use_tiny, t_lo, n_lo)
    n_lo += tl.where(q > -TINY_RATIO, -n_hi * TWO_M100, 0.0)
    pos_hi, pos_lo = _product_dd(x, scale, _f64(x, 0.0))
    is_positive = x > 0.0
    return tl.where(is_positive, pos_hi, n_hi), tl.where(is_positive, pos_lo, n_lo)


@triton.jit
def _exponential_dd(x, grad, m_hi, m_lo, m_exponent, floor, positive, beta, HAS_BETA: tl.constexpr):
    """grad * f^(n)(x) as (hi, lo, scale_a, scale_b, exponent, first) (C: exponential_dd)."""
    q, q_lo, below = _divide(x, beta, HAS_BETA, floor)
    grad = tl.where(below, grad * 0.0, grad)
    p_hi, p_lo, k = _reduce_and_expm1(q, q_lo)
    o_hi, o_lo = _fast_two_sum(_f64(x, 1.0), p_hi)
    o_lo += p_lo
    s_hi, s_lo = _product_dd_dd(m_hi, m_lo, o_hi, o_lo)
    n_hi, n_lo = _product_dd(grad, s_hi, s_lo)
    total = k + m_exponent
    first = ((total + 2048) >> 1) - 1024
    factor_a = _power_of_two(first)
    factor_b = _power_of_two(total - first)
    pos_hi, pos_lo = _product_dd(grad, positive, _f64(x, 0.0))
    is_positive = x > 0.0
    return (tl.where(is_positive, pos_hi, n_hi), tl.where(is_positive, pos_lo, n_lo),
            tl.where(is_positive, 1.0, factor_a), tl.where(is_positive, 1.0, factor_b),
            tl.where(is_positive, 0, total), tl.where(is_positive, 0, first))


@triton.jit
def _round_scaled_double(hi, lo, scale_a, scale_b, total, first):
    """(hi + lo) * 2^total rounded once, subnormal results included (C: round_scaled_double)."""
    nearest = (hi + lo) * scale_a * scale_b
    head = hi * scale_a * scale_b
    clamped = tl.where(total < -53, total, -53)
    residual = (hi - head * _power_of_two(-(total - first)) * _power_of_two(-first)) + lo
    half_grid = _power_of_two(-1075 - clamped)
    step = tl.where(residual > half_grid, SMALLEST_SUBNORMAL, tl.where(residual < -half_grid, -SMALLEST_SUBNORMAL, 0.0))
    return tl.where(tl.abs(head) < SMALLEST_NORMAL, head + step, nearest)


@triton.jit
def _round_to_odd(hi, lo):
    """hi + lo as a double with a sticky last bit (C: round_to_odd)."""
    s, e = _fast_two_sum(hi, lo)
    bits = _bits(s)
    low = _bits(e)
    magnitude = low & NO_SIGN
    inexact = (magnitude != 0) & (magnitude < EXPONENT_MASK)
    opposite = (bits ^ low) < 0
    nudge = inexact & ((bits & 1) == 0)
    return _from_bits(tl.where(nudge, tl.where(opposite, bits - 1, bits + 1), bits))


@triton.jit
def _value_needs_scaling(result):
    return (tl.abs(result) < TWO_M950) & (result != 0.0)


@triton.jit
def _needs_subnormal_rounding(result, x, grad):
    return (tl.abs(result) < SMALLEST_NORMAL) & ((result != 0.0) | ((x <= 0.0) & (grad != 0.0)))


@triton.jit
def _exact_value(x, c_hi, c_lo, d_hi, d_lo, scale, beta, HAS_BETA: tl.constexpr):
    """f(x) in double-double, rounded to nearest, tiny results scaled (C: value loops + exact_element)."""
    v_hi, v_lo = _value_dd(x, c_hi, c_lo, d_hi, d_lo, scale, beta, HAS_BETA)
    result = _copysign(v_hi + v_lo, x)
    tiny = tl.abs(x) < TWO_M900
    s_hi, s_lo = _value_dd(tl.where(tiny, x * TWO_200, x), c_hi, c_lo, d_hi, d_lo, scale, beta, HAS_BETA)
    factor = tl.where(tiny, TWO_M100, 1.0)
    scaled = _round_scaled_double(s_hi, s_lo, factor, factor, tl.where(tiny, -200, 0).to(tl.int64),
                                  tl.where(tiny, -100, 0).to(tl.int64))
    result = tl.where(_value_needs_scaling(result), _copysign(scaled, x), result)
    return tl.where(x != x, x, result)


@triton.jit
def _exact_exponential(x, grad, m_hi, m_lo, m_exponent, floor, positive, beta, HAS_BETA: tl.constexpr):
    """grad * f^(n)(x) in double-double, subnormal results rounded exactly (C: gradient loops +
    exact_element)."""
    hi, lo, scale_a, scale_b, total, first = _exponential_dd(x, grad, m_hi, m_lo, m_exponent, floor, positive, beta,
                                                             HAS_BETA)
    result = (hi + lo) * scale_a * scale_b
    redo = _needs_subnormal_rounding(result, x, grad)
    result = tl.where(redo, _round_scaled_double(hi, lo, scale_a, scale_b, total, first), result)
    return tl.where(x != x, x, result)


@triton.jit
def _table_reduce(q, q_lo, table_hi_ptr, table_lo_ptr):
    """q + q_lo = (128k + j) ln2/128 + r, with 2^(j/128) from the table (C: table_reduce)."""
    shifted = tl.fma(q, _f64(q, INV_L128), _f64(q, ROUND_SHIFT))
    n = shifted - ROUND_SHIFT
    n_int = _bits(shifted) - ROUND_SHIFT_BITS
    r_hi, r_lo = _two_sum(tl.fma(-n, _f64(q, L128_HI), q), tl.fma(-n, _f64(q, L128_LO), q_lo))
    poly = tl.fma(tl.fma(tl.fma(_f64(q, 1.0 / 720.0), r_hi, _f64(q, 1.0 / 120.0)), r_hi, _f64(q, 1.0 / 24.0)), r_hi,
                  _f64(q, 1.0 / 6.0))
    h = (r_hi * r_hi) * tl.fma(poly, r_hi, _f64(q, 0.5))
    j = n_int & 127
    t_hi = tl.load(table_hi_ptr + j)
    t_lo = tl.load(table_lo_ptr + j)
    return t_hi, t_lo, r_hi, r_lo, h, n_int >> 7


@triton.jit
def _fast_value64(x, c_hi, c_lo, scale, beta, table_hi_ptr, table_lo_ptr, HAS_BETA: tl.constexpr):
    """f(x), faithful, and whether the double-double kernel must redo it (C: fast_value64)."""
    q, q_lo, _ = _divide(x, beta, HAS_BETA, _f64(x, VALUE_CLAMP))
    t_hi, t_lo, r_hi, r_lo, h, k = _table_reduce(q, q_lo, table_hi_ptr, table_lo_ptr)
    power = _power_of_two(k)
    a = power * t_hi
    m_hi, m_lo = _fast_two_sum(_f64(x, -1.0), a)
    p_hi, p_lo = _two_product(a, r_hi)
    u_hi, u_lo = _fast_two_sum(m_hi, p_hi)
    bracket = tl.fma(a, h + tl.fma(r_lo, r_hi, r_lo), power * tl.fma(t_lo, r_hi, t_lo))
    tail = u_lo + (m_lo + (p_lo + bracket))
    negative = tl.fma(c_hi, u_hi, tl.fma(c_hi, tail, c_lo * u_hi))
    result = _copysign(tl.where(x > 0.0, x * scale, negative), x)
    tiny = (x < 0.0) & (q > -TINY_RATIO)
    return tl.where(x != x, x, result), tiny


@triton.jit
def _fast_exponential64(x, grad, m_hi, m_lo, m_exponent, floor, positive, beta, table_hi_ptr, table_lo_ptr,
                        HAS_BETA: tl.constexpr):
    """grad * f^(n)(x), faithful, and whether the double-double kernel must redo it (C:
    fast_exponential64)."""
    q, q_lo, below = _divide(x, beta, HAS_BETA, floor)
    grad = grad * tl.where(below, 0.0, 1.0)
    t_hi, t_lo, r_hi, r_lo, h, k = _table_reduce(q, q_lo, table_hi_ptr, table_lo_ptr)
    b_lo = tl.fma(t_hi, r_hi + h, t_lo)
    a_hi = grad * m_hi
    a_lo = tl.fma(grad, m_hi, -a_hi) + grad * m_lo
    product = tl.fma(a_hi, t_hi, tl.fma(a_hi, b_lo, a_lo * t_hi))
    total = k + m_exponent
    first = ((total + 2048) >> 1) - 1024
    negative = product * _power_of_two(first) * _power_of_two(total - first)
    is_positive = x > 0.0
    result = tl.where(is_positive, grad * positive + 0.0, negative)
    outside = ~(tl.abs(negative) >= SMALLEST_NORMAL) | ~(tl.abs(product) < TWO_1023)  # NaN: outside, as in C
    unsure = tl.where(is_positive, _needs_subnormal_rounding(result, x, grad), outside) & (x == x)
    return tl.where(x != x, x, result), unsure


@triton.jit
def _fast_reduce(x, inverse_beta, HAS_BETA: tl.constexpr, floor):
    """min(x, 0)/beta in plain double reduced to k ln2 + r (C: fast_reduce)."""
    negative = tl.where(x > 0.0, 0.0, x)
    if HAS_BETA:
        q = negative * inverse_beta
    else:
        q = negative
    q = tl.where(q < floor, floor, q)
    shifted = tl.fma(q, _f64(q, INV_LN2), _f64(q, ROUND_SHIFT))
    k_int = _bits(shifted) - ROUND_SHIFT_BITS
    return tl.fma(-(shifted - ROUND_SHIFT), _f64(q, LN2), q), k_int


@triton.jit
def _series_tail(r):
    """C: series_tail."""
    tail = _f64(r, SERIES_8)
    tail = tl.fma(tail, r, _f64(r, SERIES_7))
    tail = tl.fma(tail, r, _f64(r, SERIES_6))
    tail = tl.fma(tail, r, _f64(r, SERIES_5))
    tail = tl.fma(tail, r, _f64(r, SERIES_4))
    tail = tl.fma(tail, r, _f64(r, SERIES_3))
    tail = tl.fma(tail, r, _f64(r, SERIES_2))
    tail = tl.fma(tail, r, _f64(r, SERIES_1))
    return tl.fma(tail, r, _f64(r, SERIES_0))


@triton.jit
def _unsafe_for_float(y):
    """Whether rounding y to float could go wrong (C: unsafe_for_float; the sum is taken on the
    low 29 bits alone, where the C one wraps around, so no signed overflow can occur)."""
    low = ((_bits(y) & 0x1FFFFFFF) + 0x10000400) & 0x1FFFFFFF
    magnitude = tl.abs(y)
    return (low < 2048) | ((magnitude < TWO_M126) & (magnitude != 0.0))


@triton.jit
def _linear_product(x, factor, IS_DOUBLE: tl.constexpr):
    """x * factor rounded once to float64, or exact and rounded to odd (C: linear_product)."""
    p, e = _two_product(x, factor)
    e = tl.where(tl.abs(p) <= LARGEST, e, 0.0)
    if IS_DOUBLE:
        return p
    return tl.where(e == 0.0, p, _round_to_odd(p, e))


@triton.jit
def _round_to_odd_float32(y):
    """float64 -> float32 with a sticky last bit, so that a cast to float16/bfloat16 after it
    rounds once (elukit.torch.functional.round_to_odd_float32)."""
    rounded = y.to(tl.float32)
    back = rounded.to(tl.float64)
    bits = rounded.to(tl.int32, bitcast=True)
    inexact = (back != y) & (tl.abs(rounded) < float("inf")) & (rounded != 0.0)
    away = tl.abs(y) > tl.abs(back)
    nudged = tl.where(away, bits + 1, bits - 1)
    return tl.where(inexact & ((bits & 1) == 0), nudged, bits).to(tl.float32, bitcast=True)


@triton.jit
def _to_float32(value):
    """float16/bfloat16/float32 -> float32, exactly. bfloat16 is widened on the bits: the
    interpreter's cast flushes its subnormals to zero."""
    if value.dtype == tl.bfloat16:
        return (value.to(tl.int16, bitcast=True).to(tl.int32) << 16).to(tl.float32, bitcast=True)
    return value.to(tl.float32)


@triton.jit
def _to_narrow(value, DTYPE: tl.constexpr):
    """float32 -> float16/bfloat16, rounded to nearest even. bfloat16 is rounded on the bits: the
    interpreter's cast truncates, the GPU's rounds, so the cast itself cannot be trusted for bits."""
    if DTYPE == tl.bfloat16:
        bits = value.to(tl.int32, bitcast=True)
        rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        rounded = tl.where(value != value, (bits >> 16) | 0x40, rounded)  # NaN stays a (quiet) NaN
        return rounded.to(tl.int16).to(tl.bfloat16, bitcast=True)
    return value.to(DTYPE)


@triton.jit
def _float64_result(x, grad, c_hi, c_lo, d_hi, d_lo, m_hi, m_lo, m_exponent, floor, positive, scale, beta,
                    table_hi_ptr, table_lo_ptr, KIND: tl.constexpr, FAST: tl.constexpr, HAS_BETA: tl.constexpr):
    """The C kernels' float64 result (run_float64), fast with its fallback or double-double."""
    if KIND == 0:
        exact = _exact_value(x, c_hi, c_lo, d_hi, d_lo, scale, beta, HAS_BETA)
        if FAST:
            fast, unsure = _fast_value64(x, c_hi, c_lo, scale, beta, table_hi_ptr, table_lo_ptr, HAS_BETA)
            return tl.where(unsure, exact, fast)
        return exact
    if FAST:
        fast, unsure = _fast_exponential64(x, grad, m_hi, m_lo, m_exponent, floor, positive, beta,
                                                    table_hi_ptr, table_lo_ptr, HAS_BETA)
        exact = _exact_exponential(x, grad, m_hi, m_lo, m_exponent, floor, positive, beta, HAS_BETA)
        return tl.where(unsure, exact, fast)
    return _exact_exponential(x, grad, m_hi, m_lo, m_exponent, floor, positive, beta, HAS_BETA)


@triton.jit
def exponential_linear(x_ptr, grad_ptr, out_ptr, constants_ptr, table_hi_ptr, table_lo_ptr, n,
                       KIND: tl.constexpr, LINEAR: tl.constexpr, MODE: tl.constexpr, HAS_BETA: tl.constexpr,
                       HAS_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    """out = f(x) (KIND 0) or [grad *] f^(n)(x) (KIND 1) over n elements.

    constants_ptr: float64 (c_hi, c_lo, d_hi, d_lo, m_hi, m_lo, m_exponent, floor, positive, scale,
    beta, 1/beta, float_floor, divisor^(n-2)) -- elukit._native's tuple and the C kernels' derived
    fields. out may be x (in place).
    """
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x_in = tl.load(x_ptr + offsets, mask=mask, other=0.0)
    if x_in.dtype == tl.float64:
        x = x_in
    else:
        x = _to_float32(x_in).to(tl.float64)
    c_hi = tl.load(constants_ptr + 0)
    c_lo = tl.load(constants_ptr + 1)
    d_hi = tl.load(constants_ptr + 2)
    d_lo = tl.load(constants_ptr + 3)
    m_hi = tl.load(constants_ptr + 4)
    m_lo = tl.load(constants_ptr + 5)
    m_exponent = tl.load(constants_ptr + 6).to(tl.int64)
    floor = tl.load(constants_ptr + 7)
    positive = tl.load(constants_ptr + 8)
    scale = tl.load(constants_ptr + 9)
    beta = tl.load(constants_ptr + 10)
    inverse_beta = tl.load(constants_ptr + 11)
    float_floor = tl.load(constants_ptr + 12)
    divisor_power = tl.load(constants_ptr + 13)
    if HAS_GRAD:
        grad_in = tl.load(grad_ptr + offsets, mask=mask, other=0.0)
        if grad_in.dtype == tl.float64:
            grad = grad_in
        else:
            grad = _to_float32(grad_in).to(tl.float64)
    else:
        grad = _f64(x, 1.0)
    if MODE >= NARROW:
        # the derivative alone, rounded to the narrow dtype; elukit.torch multiplies by grad after.
        # The piecewise-linear product is exact and rounded to odd, as in elukit's NumPy kernels
        # (rounded to nearest float64 first, it could land on a narrow midpoint and round twice).
        unit = _f64(x, 1.0)
        if LINEAR:
            if KIND == 0:
                factor = tl.where(x > 0.0, scale, c_hi)
                y = tl.where(tl.where(x <= 0.0, c_hi, 1.0) == 0.0, 0.0, _linear_product(x, factor, False))
            else:
                y = _linear_product(unit, tl.where(x > 0.0, positive, m_hi), True)
            y = tl.where(x != x, x, y)
        elif MODE == NARROW:
            if KIND == 0:
                v_hi, v_lo = _value_dd(x, c_hi, c_lo, d_hi, d_lo, scale, beta, HAS_BETA)
                y = _copysign(_round_to_odd(v_hi, v_lo), x)
            else:
                hi, lo, scale_a, scale_b, total, first = _exponential_dd(x, unit, m_hi, m_lo, m_exponent, floor,
                                                                         positive, beta, HAS_BETA)
                factor = scale_a * scale_b
                y = _round_to_odd(hi * factor, lo * factor)
            y = tl.where(x != x, x, y)
        else:
            second = _float64_result(x, unit, c_hi, c_lo, d_hi, d_lo, m_hi, m_lo, m_exponent, floor, positive, scale,
                                     beta, table_hi_ptr, table_lo_ptr, KIND, MODE == NARROW_FROM_FAST, HAS_BETA)
            y = second / divisor_power
        narrow = _to_narrow(_round_to_odd_float32(y), out_ptr.dtype.element_ty)
        if HAS_GRAD:
            narrow = _to_narrow(_to_float32(grad_in) * _to_float32(narrow), out_ptr.dtype.element_ty)
        tl.store(out_ptr + offsets, narrow, mask=mask)
    elif LINEAR:
        if KIND == 0:
            factor = tl.where(x > 0.0, scale, c_hi)
            y = tl.where(tl.where(x <= 0.0, c_hi, 1.0) == 0.0, 0.0, _linear_product(x, factor, MODE != FLOAT32))
        else:
            y = _linear_product(grad, tl.where(x > 0.0, positive, m_hi), MODE != FLOAT32)
        y = tl.where(x != x, x, y)
        tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)
    elif MODE == FLOAT32:
        if KIND == 0:
            r, k = _fast_reduce(x, inverse_beta, HAS_BETA, _f64(x, FLOAT_VALUE_CLAMP))
            two_k = _power_of_two(k)
            fast = c_hi * tl.fma(two_k, tl.fma(r * r, _series_tail(r), r), two_k - 1.0)
            fast = _copysign(tl.where(x > 0.0, x * scale, fast), x)
            v_hi, v_lo = _value_dd(x, c_hi, c_lo, d_hi, d_lo, scale, beta, HAS_BETA)
            slow = _copysign(_round_to_odd(v_hi, v_lo), x)
        else:
            r, k = _fast_reduce(x, inverse_beta, HAS_BETA, float_floor)
            exp_r = tl.fma(tl.fma(_series_tail(r), r, _f64(r, 1.0)), r, _f64(r, 1.0))
            fast = (grad * (m_hi * _power_of_two(k + m_exponent))) * exp_r
            fast = tl.where(x > 0.0, grad * positive, fast)
            hi, lo, scale_a, scale_b, total, first = _exponential_dd(x, grad, m_hi, m_lo, m_exponent, floor, positive,
                                                                     beta, HAS_BETA)
            factor = scale_a * scale_b
            slow = _round_to_odd(hi * factor, lo * factor)
        y = tl.where(x != x, x, tl.where(_unsafe_for_float(fast), slow, fast))
        tl.store(out_ptr + offsets, y.to(tl.float32), mask=mask)
    else:
        y = _float64_result(x, grad, c_hi, c_lo, d_hi, d_lo, m_hi, m_lo, m_exponent, floor, positive, scale, beta,
                            table_hi_ptr, table_lo_ptr, KIND, MODE == FLOAT64_FAST, HAS_BETA)
        tl.store(out_ptr + offsets, y, mask=mask)
