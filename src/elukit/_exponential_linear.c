/* Compiled kernels for the exponential-linear family (ELU, SELU, CELU) on float32 and float64.

   Every member of the family has the form
       f(x)   = scale*x                           (x > 0)
              = c * expm1(x/beta)                 (x <= 0),   c = scale*alpha
       f'(x)  = scale (x > 0),  d * exp(x/beta)  (x <= 0),   d = c/beta
       f''(x) = 0     (x > 0),  s * exp(x/beta)  (x <= 0),   s = c/beta^2
   (ELU: scale 1, beta 1; SELU: beta 1; CELU: scale 1, beta alpha). The constants arrive from
   Python as double-doubles (hi + lo, exact), with d and s split into a mantissa and a power of
   two so that exp's scaling never overflows or underflows before the final rounding.

   float64 elements are evaluated in double-double arithmetic from one Cody-Waite reduction
   x/beta = k*ln2 + r, |r| <= ln2/2, and the Taylor series of expm1(r) (degree 14, truncation
   below 2^-60 relative). The result carries an error below 2^-56 relative before its final
   rounding, so it is faithful (< 1 ulp; correctly rounded except within that margin of a
   midpoint). The rare tiny or subnormal results are redone with exact scaling (run_float64).
   With FAST added to the kind, float64 is evaluated instead from a 128-entry table of 2^(j/128)
   and a degree-6 polynomial with one exact product (fast_value64, fast_exponential64): faithful,
   within 0.52 ulp, in about 60% of the time; the elements those kernels flag (tiny inputs,
   zero, subnormal or clamped results) come from the double-double kernels.

   float32 elements are evaluated once in plain double (error < 2^-44) and rounded directly
   unless a rounding test finds them within 2^-42 of a float midpoint; only those are redone in
   double-double and rounded to odd first (fast_value, run_task). So float32 results are correctly
   rounded except within 2^-56 relative of a midpoint.

   Parallel parts run on PyTorch's OpenMP team when Python registered it (set_openmp), else on
   threads of our own.

   The loops are branch-free so the compiler vectorises them; target_clones builds AVX2+FMA and
   AVX-512 versions next to the baseline one and picks one at load time. -ffp-contract=off is
   required: the error-free transformations below break if the compiler fuses a*b + c on its own.
*/
#ifdef ELUKIT_KERNELS_ONLY
/* The kernels without Python (elukit.torch's operator library, src/elukit/torch/_operator_kernels.c):
   everything up to the Python section below, plus elukit_kernels_run. */
#include <stddef.h>
typedef ptrdiff_t Py_ssize_t;
#else
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__) && \
    !defined(ELUKIT_NO_CLONES)
#define ELUKIT_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#define ELUKIT_HAS_CLONES 1
#else
#define ELUKIT_CLONES
#endif

#if defined(__GNUC__)
#define ELUKIT_INLINE inline __attribute__((always_inline)) /* compiled into each clone's target */
#else
#define ELUKIT_INLINE inline
#endif

typedef struct {
    double hi, lo;
} dd;

#define LN2_HI 0x1.62e42fefa3800p-1 /* 42 bits: k*LN2_HI is exact for |k| < 2^11 */
#define LN2_LO 0x1.ef35793c76730p-45
#define INV_LN2 0x1.71547652b82fep+0
#define ROUND_SHIFT 0x1.8p52 /* (y + ROUND_SHIFT) - ROUND_SHIFT rounds y to an integer */
#define VALUE_CLAMP (-60.0)  /* expm1(x) rounds like -1 + e^-60 below: e^-60 < 2^-86 */
#define TINY_RATIO 0x1p-60   /* |x/beta| below: f(x) = d*x*(1 + x/(2 beta)) exactly enough */

static ELUKIT_INLINE double from_bits(uint64_t bits) {
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static ELUKIT_INLINE uint64_t to_bits(double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static ELUKIT_INLINE dd two_sum(double a, double b) {
    double s = a + b;
    double bb = s - a;
    return (dd){s, (a - (s - bb)) + (b - bb)};
}

static ELUKIT_INLINE dd fast_two_sum(double a, double b) { /* |a| >= |b| */
    double s = a + b;
    return (dd){s, b - (s - a)};
}

static ELUKIT_INLINE dd two_product(double a, double b) {
    double p = a * b;
    return (dd){p, fma(a, b, -p)};
}

/* a * (b_hi + b_lo), |result error| ~ 2^-104 relative; the low part is zeroed when the high
   part overflows (its fma would be inf - inf). */
static ELUKIT_INLINE dd product_dd(double a, double b_hi, double b_lo) {
    dd p = two_product(a, b_hi);
    double low = p.lo + a * b_lo;
    return (dd){p.hi, fabs(p.hi) <= 0x1.fffffffffffffp+1023 ? low : 0.0};
}

static ELUKIT_INLINE dd product_dd_dd(double a_hi, double a_lo, double b_hi, double b_lo) {
    dd p = two_product(a_hi, b_hi);
    return (dd){p.hi, p.lo + (a_hi * b_lo + a_lo * b_hi)};
}

/* 2^k for integer k in [-1022, 1023], from its bits. */
static ELUKIT_INLINE double power_of_two(int64_t k) { return from_bits((uint64_t)(k + 1023) << 52); }

/* expm1(q + q_lo) = 2^k * (1 + p) - 1 with p = expm1(r) as a double-double, for q <= 0 (or NaN)
   clamped to a range where |k| < 2^11. */
typedef struct {
    dd p;
    int64_t k;
} reduced;

static ELUKIT_INLINE reduced reduce_and_expm1(double q, double q_lo) {
    double shifted = q * INV_LN2 + ROUND_SHIFT;
    double k = shifted - ROUND_SHIFT;
    int64_t k_int = (int64_t)(to_bits(shifted) - to_bits(ROUND_SHIFT));
    double r_head = fma(-k, LN2_HI, q);            /* exact */
    dd r = two_sum(r_head, q_lo - k * LN2_LO);      /* r = x/beta - k*ln2 as a double-double */
    double inner = 1.0 / 87178291200.0;             /* 1/14! */
    inner = fma(inner, r.hi, 1.0 / 6227020800.0);
    inner = fma(inner, r.hi, 1.0 / 479001600.0);
    inner = fma(inner, r.hi, 1.0 / 39916800.0);
    inner = fma(inner, r.hi, 1.0 / 3628800.0);
    inner = fma(inner, r.hi, 1.0 / 362880.0);
    inner = fma(inner, r.hi, 1.0 / 40320.0);
    inner = fma(inner, r.hi, 1.0 / 5040.0);
    inner = fma(inner, r.hi, 1.0 / 720.0);
    inner = fma(inner, r.hi, 1.0 / 120.0);
    inner = fma(inner, r.hi, 1.0 / 24.0);
    inner = fma(inner, r.hi, 1.0 / 6.0);
    /* (expm1(r) - r) / r^2 = 1/2 + r*inner, with the rounding error of that last step kept */
    double half_and_more = fma(inner, r.hi, 0.5);
    double half_and_more_lo = fma(inner, r.hi, 0.5 - half_and_more);
    dd square = two_product(r.hi, r.hi);
    double h_hi = square.hi * half_and_more;
    double h_lo = fma(square.hi, half_and_more, -h_hi) + (square.lo * half_and_more + square.hi * half_and_more_lo);
    dd p = fast_two_sum(r.hi, h_hi);                /* |h| < |r|/5 */
    p.lo += h_lo + r.lo * (1.0 + p.hi);             /* expm1(r + dr) ~ expm1(r) + dr*e^r */
    return (reduced){p, k_int};
}

/* x/beta as q + q_lo (exact to 2^-106 relative) and clamped below at `floor`; `below` is 1 where
   it was clamped. */
typedef struct {
    double q, q_lo;
    int64_t below;
} ratio;

static ELUKIT_INLINE ratio divide(double x, double beta, int has_beta, double floor) {
    double negative = x < 0.0 ? x : 0.0;
    double q = negative, q_lo = 0.0;
    if (has_beta) {
        q = negative / beta;
        q_lo = fma(-q, beta, negative) / beta;
    }
    int64_t clamped = q < floor ? 1 : 0;
    return (ratio){clamped ? floor : q, clamped ? 0.0 : q_lo, clamped};
}

typedef struct {
    double c_hi, c_lo;      /* scale*alpha */
    double d_hi, d_lo;      /* scale*alpha/beta, for the tiny-ratio series of the value */
    double m_hi, m_lo;      /* mantissa of the exponential's constant (d or s) */
    int64_t m_exponent;     /* ... and its power of two */
    double floor;           /* x/beta below which grad * the exponential is flushed to 0 (see _native.py) */
    double float_floor;     /* ... the same for the fast float32 kernels, which need k + m_exponent >= -1022 */
    double positive;        /* f'(x) or f''(x) for x > 0 */
    double scale;           /* f(x) = scale*x for x > 0 */
    double beta;
    double inverse_beta;    /* 1/beta rounded, for the fast float32 kernels */
    int has_beta;           /* beta != 1 */
    double grad_scalar;     /* the gradient when one value serves every element (default 1) */
} constants;

/* f(x) as an unnormalised double-double (the sign of zero is fixed by the caller). */
static ELUKIT_INLINE dd value_dd(double x, const constants *k, int has_beta) {
    ratio t = divide(x, k->beta, has_beta, VALUE_CLAMP);
    reduced e = reduce_and_expm1(t.q, t.q_lo);
    double two_k = power_of_two(e.k);                 /* k in [-87, 0] */
    dd m = fast_two_sum(-1.0, two_k);                 /* 2^k - 1, exact */
    dd s = fast_two_sum(m.hi, two_k * e.p.hi);        /* |m| >= 1/2 > |2^k p| unless k = 0, m = 0 */
    s.lo += m.lo + two_k * e.p.lo;
    dd negative = product_dd_dd(k->c_hi, k->c_lo, s.hi, s.lo);
    if (has_beta) {
        dd tiny = product_dd(x, k->d_hi, k->d_lo);
        tiny.lo += tiny.hi * (t.q * 0.5);
        int use_tiny = t.q > -TINY_RATIO;
        negative.hi = use_tiny ? tiny.hi : negative.hi;
        negative.lo = use_tiny ? tiny.lo : negative.lo;
    }
    /* For |x/beta| < 2^-60 the x^2 term may underflow, leaving hi + lo exactly on a midpoint
       that the true value (always above it: expm1(t) > t) is not on. A nudge toward zero decides
       such ties the right way. It is 2^-100 relative: still exact in lo, and below the distance
       of c*x from any midpoint it is not on but for about 1 input in 2^47 (a 2^-70 nudge flipped
       about 1 tiny SELU input in 2^17 that lay within 2^-70 of a midpoint). */
    negative.lo += t.q > -TINY_RATIO ? -negative.hi * 0x1p-100 : 0.0;
    dd positive = product_dd(x, k->scale, 0.0);
    int is_positive = x > 0.0;
    return (dd){is_positive ? positive.hi : negative.hi, is_positive ? positive.lo : negative.lo};
}

/* f'(x) or f''(x), times `grad`: (hi + lo) * scale_a * scale_b. The scaling is exact unless the
   result is subnormal, so float64 rounds hi + lo first and scales after. */
typedef struct {
    dd v;
    double scale_a, scale_b; /* 2^first and 2^(exponent - first) */
    int64_t exponent, first;
} scaled_dd;

static ELUKIT_INLINE scaled_dd exponential_dd(double x, double grad, const constants *k, int has_beta) {
    ratio t = divide(x, k->beta, has_beta, k->floor);
    grad = t.below ? grad * 0.0 : grad;
    reduced e = reduce_and_expm1(t.q, t.q_lo);
    dd one_plus = fast_two_sum(1.0, e.p.hi);
    one_plus.lo += e.p.lo;
    dd scaled = product_dd_dd(k->m_hi, k->m_lo, one_plus.hi, one_plus.lo);
    dd negative = product_dd(grad, scaled.hi, scaled.lo);
    /* 2^(k + m_exponent) in two normal factors; bias by 2048 so the halving is a logical shift */
    int64_t total = e.k + k->m_exponent;
    int64_t first = (int64_t)(((uint64_t)(total + 2048)) >> 1) - 1024;
    double factor_a = power_of_two(first), factor_b = power_of_two(total - first);
    dd positive = product_dd(grad, k->positive, 0.0);
    int is_positive = x > 0.0;
    return (scaled_dd){{is_positive ? positive.hi : negative.hi, is_positive ? positive.lo : negative.lo},
                       is_positive ? 1.0 : factor_a, is_positive ? 1.0 : factor_b,
                       is_positive ? 0 : total, is_positive ? 0 : first};
}

/* (hi + lo) * 2^total rounded once. A subnormal result has fewer bits than hi, so rounding
   hi alone can land on the wrong side when lo is included: the residual decides. */
static ELUKIT_INLINE double round_scaled_double(scaled_dd s) {
    double nearest = (s.v.hi + s.v.lo) * s.scale_a * s.scale_b;
    double head = s.v.hi * s.scale_a * s.scale_b;
    int64_t total = s.exponent;
    int64_t clamped = total < -53 ? total : -53; /* keeps 2^(-1075 - total) in range */
    double residual = (s.v.hi - head * power_of_two(-(total - s.first)) * power_of_two(-s.first)) + s.v.lo;
    double half_grid = power_of_two(-1075 - clamped);
    double step = residual > half_grid ? 0x1p-1074 : (residual < -half_grid ? -0x1p-1074 : 0.0);
    return fabs(head) < 0x1p-1022 ? head + step : nearest;
}

/* hi + lo as a double with a sticky last bit (round to odd): the cast to float (>= 2 bits
   fewer) then rounds once. Non-finite low parts are ignored. */
static ELUKIT_INLINE double round_to_odd(dd v) {
    dd s = fast_two_sum(v.hi, v.lo);
    uint64_t bits = to_bits(s.hi), low = to_bits(s.lo);
    uint64_t magnitude = low & 0x7fffffffffffffffULL;
    uint64_t inexact = magnitude - 1 < 0x7fefffffffffffffULL; /* finite and nonzero */
    uint64_t opposite = (bits ^ low) >> 63;                    /* lo shrinks |hi| */
    uint64_t nudge = inexact & ~bits & 1;                      /* only an even hi moves */
    return from_bits(bits + nudge - 2 * (nudge & opposite));
}


/* f(x) as a scaled double-double. Inputs below 2^-900 are scaled up by 2^200 first: there
   f(x) = c*x to far below an ulp (expm1(x) = x + x^2/2), and without the scaling the rounding
   errors of c*x, kept in the low part, would fall below the subnormal range (SELU(-3.4e-308)
   was 0.83 ulp off). */
static ELUKIT_INLINE scaled_dd value_scaled(double x, const constants *k, int has_beta) {
    int tiny = fabs(x) < 0x1p-900;
    dd v = value_dd(tiny ? x * 0x1p200 : x, k, has_beta);
    return (scaled_dd){v, tiny ? 0x1p-100 : 1.0, tiny ? 0x1p-100 : 1.0, tiny ? -200 : 0, tiny ? -100 : 0};
}

enum { VALUE = 0, EXPONENTIAL = 1, FAST = 2, LINEAR = 4, BOTH = 8, MAGNITUDE = 16 };
/* BOTH: f(x) and f'(x) from one exponential (run_both), for a training forward that saves f'(x)
   instead of x. MAGNITUDE: out = grad * |x| in x's dtype (its backward: one multiplication). */
/* FAST: float64 faithful kernels (float32 ignores it). LINEAR: the piecewise-linear family
   f(x) = a x (x > 0), b x (x <= 0) with a > 0, b >= 0, instead (run_linear; FAST is ignored), with a = scale and
   b = c_hi for the value, and f' = positive (x > 0), m_hi (x <= 0) for the derivatives. */

/* One loop per (beta != 1, output rounding, quantity), so that no test inside a loop body is left
   for the vectoriser to hoist. The loops read and write double: float32 is converted in tiles
   (the vectoriser gives up on a loop body that mixes the two widths). NaN passes through. */
/* Whether a value result may have lost its low part below the subnormal range (see value_scaled). */
static ELUKIT_INLINE int64_t value_needs_scaling(double result) {
    return (fabs(result) < 0x1p-950) & (result != 0.0);
}

/* Whether a derivative result (rounded to nearest in double, then scaled) may be off in the
   subnormal range: nonzero below 2^-1022, or 0 where the truth need not be (x <= 0, grad != 0). */
static ELUKIT_INLINE int64_t needs_subnormal_rounding(double result, double x, double grad) {
    return (fabs(result) < 0x1p-1022) & ((result != 0.0) | ((x <= 0.0) & (grad != 0.0)));
}

/* One loop per (beta != 1, quantity), so that no test inside a loop body is left for the
   vectoriser to hoist. Each rounds hi + lo to nearest and returns whether an element may need the
   care of value_scaled / round_scaled_double, which the caller then applies to those elements
   alone. NaN passes through. */
#define DEFINE_LOOPS(SUFFIX, HAS_BETA)                                                                           \
    ELUKIT_CLONES                                                                                                \
    static int64_t value_##SUFFIX(const double *restrict x, double *restrict out, Py_ssize_t n,                  \
                                  const constants *pk) {                                                         \
        const constants k = *pk;                                                                                 \
        int64_t subnormal = 0;                                                                                   \
        for (Py_ssize_t i = 0; i < n; i++) {                                                                     \
            double xi = x[i];                                                                                    \
            dd v = value_dd(xi, &k, HAS_BETA);                                                                   \
            double result = copysign(v.hi + v.lo, xi);                                                           \
            out[i] = xi != xi ? xi : result;                                                                     \
            subnormal |= value_needs_scaling(result);                                                            \
        }                                                                                                        \
        return subnormal;                                                                                        \
    }                                                                                                            \
    ELUKIT_CLONES                                                                                                \
    static int64_t gradient_##SUFFIX(const double *restrict x, const double *restrict grad, double *restrict out, \
                                     Py_ssize_t n, const constants *pk) {                                        \
        const constants k = *pk;                                                                                 \
        int64_t subnormal = 0;                                                                                   \
        if (grad == NULL) {                                                                                      \
            for (Py_ssize_t i = 0; i < n; i++) {                                                                 \
                double xi = x[i];                                                                                \
                scaled_dd s = exponential_dd(xi, k.grad_scalar, &k, HAS_BETA);                                   \
                double result = (s.v.hi + s.v.lo) * s.scale_a * s.scale_b;                                       \
                out[i] = xi != xi ? xi : result;                                                                 \
                subnormal |= needs_subnormal_rounding(result, xi, k.grad_scalar);                               \
            }                                                                                                    \
            return subnormal;                                                                                    \
        }                                                                                                        \
        for (Py_ssize_t i = 0; i < n; i++) {                                                                     \
            double xi = x[i];                                                                                    \
            scaled_dd s = exponential_dd(xi, grad[i], &k, HAS_BETA);                                             \
            double result = (s.v.hi + s.v.lo) * s.scale_a * s.scale_b;                                           \
            out[i] = xi != xi ? xi : result;                                                                     \
            subnormal |= needs_subnormal_rounding(result, xi, grad[i]);                                          \
        }                                                                                                        \
        return subnormal;                                                                                        \
    }

DEFINE_LOOPS(nearest, 0)
DEFINE_LOOPS(nearest_beta, 1)

typedef struct {
    double result;
    int64_t unsure; /* 1 where the caller must redo the element with the double-double kernels */
} checked;

/* ---- float64, fast and faithful (kind | FAST) ---------------------------------------------------
   For callers that trade correct rounding for speed (elukit.torch's default): the same result to
   within about 0.52 ulp, in roughly half the operations. x/beta = n*ln2/128 + r, |r| <= ln2/256,
   n = 128k + j, and
       exp(x/beta) = 2^k * 2^(j/128) * (1 + r + h),   h = r^2 (1/2 + r/6 + ... + r^4/720)
   with 2^(j/128) from a table of double-doubles. At this |r|, h (< 2^-18) is accurate enough in
   plain double, and the products need just one exact step each. */
#include "_exp2_table.h" /* EXP2_HI[j] + EXP2_LO[j] = 2^(j/128), j = 0..127 */

#define INV_L128 0x1.71547652b82fep+7 /* 128/ln2 */
#define L128_HI 0x1.62e42fef80000p-8  /* ln2/128 to 34 bits: n*L128_HI is exact for |n| < 2^19 */
#define L128_LO 0x1.1cf79abc9e3b4p-43 /* L128_HI + L128_LO = ln2/128 to 2^-88 relative */

typedef struct {
    double t_hi, t_lo; /* 2^(j/128) */
    dd r;              /* q + q_lo - n ln2/128 (to 2^-53 of n*L128_LO, far below r's ulp) */
    double h;          /* exp(r) - 1 - r to 2^-51 relative; truncation below 2^-63.5 |r| */
    int64_t k;
} table_reduced;

static ELUKIT_INLINE table_reduced table_reduce(double q, double q_lo) {
    double shifted = fma(q, INV_L128, ROUND_SHIFT);
    double n = shifted - ROUND_SHIFT;
    int64_t n_int = (int64_t)(to_bits(shifted) - to_bits(ROUND_SHIFT));
    dd r = two_sum(fma(-n, L128_HI, q), fma(-n, L128_LO, q_lo)); /* the first term is exact */
    double poly = fma(fma(fma(1.0 / 720.0, r.hi, 1.0 / 120.0), r.hi, 1.0 / 24.0), r.hi, 1.0 / 6.0);
    double h = (r.hi * r.hi) * fma(poly, r.hi, 0.5);
    int64_t j = n_int & 127;
    return (table_reduced){EXP2_HI[j], EXP2_LO[j], r, h, n_int >> 7};
}

/* f(x). With a = 2^k T_hi (exact, <= 1):
       expm1(x/beta) = (a - 1) + a r + [a (h + r_lo (1 + r)) + 2^k T_lo (1 + r)]
   (a - 1) and a r are formed exactly and summed with their error kept, so near x = 0, where they
   cancel, the bracket's roundings (2^-53 of a term below 2^-17.9 a) stay below 2^-60 of the
   result; times c = c_hi + c_lo, one final fma rounds. Error before that rounding: < 2^-58
   relative, so < 0.5 + 2^-5 ulp after it. Inputs with |x/beta| < 2^-60 are flagged for the
   double-double kernel. */
/* f(x) from the reduction of x/beta; where t.q lies below VALUE_CLAMP (a reduction clamped lower,
   shared with the derivative: run_both), the result is `clamped`, f at the clamp. */
static ELUKIT_INLINE checked fast_value64_reduced_of(double x, ratio t, table_reduced e, const constants *k,
                                                     double clamped, int unit) {
    double power = power_of_two(e.k);              /* k in [-87, 0] */
    double a = power * e.t_hi;
    dd m = fast_two_sum(-1.0, a);                  /* a - 1 */
    dd p = two_product(a, e.r.hi);                 /* a r */
    dd u = fast_two_sum(m.hi, p.hi);               /* |m.hi| >= 2^-7.5 > |p.hi|, or m = 0 */
    double bracket = fma(a, e.h + fma(e.r.lo, e.r.hi, e.r.lo), power * fma(e.t_lo, e.r.hi, e.t_lo));
    double tail = u.lo + (m.lo + (p.lo + bracket));
    /* unit (c = 1 exactly): fma(1, u.hi, fma(1, tail, 0 u.hi)) is u.hi + tail but for the sign of a
       zero tail, which the sum with u.hi != 0 (or copysign at x = 0) does not see */
    double negative = unit ? u.hi + tail : fma(k->c_hi, u.hi, fma(k->c_hi, tail, k->c_lo * u.hi));
    negative = t.q < VALUE_CLAMP ? clamped : negative;
    double positive = x * k->scale;
    double result = copysign(x > 0.0 ? positive : negative, x);
    /* |x/beta| < 2^-60: x/beta may have lost bits (subnormal), c x its low part; value_dd's series
       and scaling take these, as they do the ties at tiny x */
    int64_t tiny = (x < 0.0 ? 1 : 0) & (t.q > -TINY_RATIO ? 1 : 0);
    return (checked){x != x ? x : result, tiny};
}

static ELUKIT_INLINE checked fast_value64_reduced(double x, ratio t, table_reduced e, const constants *k,
                                                  double clamped) {
    return fast_value64_reduced_of(x, t, e, k, clamped, 0);
}

static ELUKIT_INLINE checked fast_value64_of(double x, const constants *k, int has_beta, int unit) {
    ratio t = divide(x, k->beta, has_beta, VALUE_CLAMP);
    return fast_value64_reduced_of(x, t, table_reduce(t.q, t.q_lo), k, 0.0, unit); /* t.q >= VALUE_CLAMP */
}

static ELUKIT_INLINE checked fast_value64(double x, const constants *k, int has_beta) {
    return fast_value64_of(x, k, has_beta, 0);
}

/* grad * f'(x) or grad * f''(x) = grad * M * 2^(k + E) * T exp(r): (grad M) as a double-double,
   T exp(r) = T_hi + b_lo with b_lo = T_hi (r + h) + T_lo (+ T_lo r, below 2^-61.5) to < 2^-59
   relative, one fma to round, and the exact power of two after. Results outside the normal range
   (subnormal, zero, overflowing before the scaling) are flagged for exponential_dd. */
static ELUKIT_INLINE checked fast_exponential64_reduced_of(double x, double grad, ratio t, table_reduced e,
                                                           const constants *k, int unit) {
    grad = grad * (t.below ? 0.0 : 1.0); /* a zero result is flagged: exponential_dd flushes it */
    double b_lo = fma(e.t_hi, e.r.hi + e.h, e.t_lo);
    double a_hi = grad * k->m_hi;
    double a_lo = fma(grad, k->m_hi, -a_hi) + grad * k->m_lo;
    /* unit (grad m = 1 exactly, m_exponent 0, see unit_derivative): a_hi is 1 (0 below the floor) and
       a_lo 0, so the product is T_hi + b_lo (T_hi >= 1: a zero b_lo's sign is not seen), or +0 */
    double product = unit ? (e.t_hi + b_lo) * grad : fma(a_hi, e.t_hi, fma(a_hi, b_lo, a_lo * e.t_hi));
    int64_t total = e.k + k->m_exponent;
    int64_t first = (int64_t)(((uint64_t)(total + 2048)) >> 1) - 1024;
    double negative = product * power_of_two(first) * power_of_two(total - first);
    double positive = grad * k->positive + 0.0; /* +0.0: a zero gradient gives +0, as in exponential_dd */
    int64_t is_positive = x > 0.0;
    double result = is_positive ? positive : negative;
    int64_t outside = fabs(negative) >= 0x1p-1022 ? (fabs(product) < 0x1p1023 ? 0 : 1) : 1;
    int64_t unsure = (is_positive & needs_subnormal_rounding(result, x, grad)) | ((is_positive ^ 1) & outside);
    return (checked){x != x ? x : result, unsure & (x == x)};
}

static ELUKIT_INLINE checked fast_exponential64_reduced(double x, double grad, ratio t, table_reduced e,
                                                        const constants *k) {
    return fast_exponential64_reduced_of(x, grad, t, e, k, 0);
}

static ELUKIT_INLINE checked fast_exponential64_of(double x, double grad, const constants *k, int has_beta, int unit) {
    ratio t = divide(x, k->beta, has_beta, k->floor);
    return fast_exponential64_reduced_of(x, grad, t, table_reduce(t.q, t.q_lo), k, unit);
}

static ELUKIT_INLINE checked fast_exponential64(double x, double grad, const constants *k, int has_beta) {
    return fast_exponential64_of(x, grad, k, has_beta, 0);
}

/* Where the 2^(j/128) table is read: the compiler's generic tuning loads each entry on its own (two
   loads, inserts and extracts per element), as gathers are slow on some CPUs (Intel's Skylake to
   Ice Lake with the Gather Data Sampling microcode). On Intel CPUs with AVX512-FP16 (Sapphire
   Rapids and later, which that microcode does not slow), a second copy of each float64 fast loop,
   compiled for them, reads 8 entries per instruction: the same arithmetic and the same bits, about
   20% less time for the derivative (docs/kernels.md). AMD's AVX-512 CPUs keep the loads: their
   gathers were not measured. ELUKIT_TABLE_GATHERS=0 turns the copy off, =1 on wherever AVX-512
   (x86-64-v4) runs (elukit._native refuses any other value in one line; the C++ operator
   library loaded alone takes it as unset): a benchmark run under each compares them.
   It is read at the first float64 fast call, once per process in each module that holds these
   kernels (the NumPy module, the torch operator library, elukit.jax's FFI handler); GCC 12 or newer
   builds the copy. */
#if defined(ELUKIT_HAS_CLONES) && __GNUC__ >= 12 /* __builtin_cpu_supports("avx512fp16"), tune=sapphirerapids */
#define ELUKIT_GATHERS_TARGET __attribute__((target("arch=x86-64-v4,tune=sapphirerapids,prefer-vector-width=512")))

static int decide_table_gathers(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("x86-64-v4")) return 0;
    const char *setting = getenv("ELUKIT_TABLE_GATHERS");
    if (setting != NULL && (setting[0] == '0' || setting[0] == '1') && setting[1] == '\0') return setting[0] == '1';
    return __builtin_cpu_is("intel") && __builtin_cpu_supports("avx512fp16");
}

/* Decided once per process; the race of two first callers stores the same answer. */
static int table_gathers_decided = -1;

static int table_gathers(void) {
    int decided = __atomic_load_n(&table_gathers_decided, __ATOMIC_RELAXED);
    if (decided < 0) {
        decided = decide_table_gathers();
        __atomic_store_n(&table_gathers_decided, decided, __ATOMIC_RELAXED);
    }
    return decided;
}

#define DEFINE_TABLE_LOOP(NAME, PARAMETERS, BODY, ARGUMENTS)                       \
    ELUKIT_CLONES static int64_t NAME##_loads PARAMETERS { return BODY; }          \
    ELUKIT_GATHERS_TARGET static int64_t NAME##_gathers PARAMETERS { return BODY; } \
    static int64_t NAME PARAMETERS { return table_gathers() ? NAME##_gathers ARGUMENTS : NAME##_loads ARGUMENTS; }
#else
static inline int table_gathers(void) { return 0; } /* inline: unused where only the kernels are built */
#define DEFINE_TABLE_LOOP(NAME, PARAMETERS, BODY, ARGUMENTS) \
    ELUKIT_CLONES static int64_t NAME PARAMETERS { return BODY; }
#endif

static ELUKIT_INLINE int64_t fast_value64_loop(const double *restrict x, double *restrict out,
                                               int64_t *restrict unsure, Py_ssize_t n, const constants *pk,
                                               int has_beta, int unit) {
    const constants k = *pk;
    int64_t any = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        checked c = fast_value64_of(x[i], &k, has_beta, unit);
        out[i] = c.result;
        unsure[i] = c.unsure;
    }
    for (Py_ssize_t i = 0; i < n; i++) any |= unsure[i]; /* in the loop above, it blocks the vectoriser */
    return any;
}

#define FAST_VALUE_PARAMETERS \
    (const double *restrict x, double *restrict out, int64_t *restrict unsure, Py_ssize_t n, const constants *pk)
#define DEFINE_FAST_VALUE_LOOP(SUFFIX, HAS_BETA, UNIT)                                                                \
    DEFINE_TABLE_LOOP(fast_value64_##SUFFIX, FAST_VALUE_PARAMETERS,                                                   \
                      fast_value64_loop(x, out, unsure, n, pk, HAS_BETA, UNIT), (x, out, unsure, n, pk))

DEFINE_FAST_VALUE_LOOP(plain, 0, 0)
DEFINE_FAST_VALUE_LOOP(beta, 1, 0)
DEFINE_FAST_VALUE_LOOP(unit, 0, 1) /* c = 1 exactly: ELU, CELU(1) */

static ELUKIT_INLINE int64_t fast_gradient64_loop(const double *restrict x, const double *restrict grad,
                                                  double *restrict out, int64_t *restrict unsure, Py_ssize_t n,
                                                  const constants *pk, int has_beta, int unit) {
    const constants k = *pk;
    int64_t any = 0;
    if (grad == NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            checked c = fast_exponential64_of(x[i], k.grad_scalar, &k, has_beta, unit);
            out[i] = c.result;
            unsure[i] = c.unsure;
            any |= c.unsure;
        }
        return any;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        checked c = fast_exponential64(x[i], grad[i], &k, has_beta);
        out[i] = c.result;
        unsure[i] = c.unsure;
        any |= c.unsure;
    }
    return any;
}

#define FAST_GRADIENT_PARAMETERS                                                                            \
    (const double *restrict x, const double *restrict grad, double *restrict out, int64_t *restrict unsure, \
     Py_ssize_t n, const constants *pk)
#define DEFINE_FAST_GRADIENT_LOOP(SUFFIX, HAS_BETA, UNIT)                                                    \
    DEFINE_TABLE_LOOP(fast_gradient64_##SUFFIX, FAST_GRADIENT_PARAMETERS,                                   \
                      fast_gradient64_loop(x, grad, out, unsure, n, pk, HAS_BETA, UNIT), (x, grad, out, unsure, n, pk))

DEFINE_FAST_GRADIENT_LOOP(plain, 0, 0)
DEFINE_FAST_GRADIENT_LOOP(beta, 1, 0)
DEFINE_FAST_GRADIENT_LOOP(unit, 0, 1) /* grad NULL only: see unit_derivative */

ELUKIT_CLONES
static void widen(const float *restrict x, double *restrict out, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) out[i] = x[i];
}

typedef struct {
    int kind, is_double;
    const char *x, *grad;
    char *out;
    Py_ssize_t n;
    const constants *k;
    char *out2; /* kind BOTH: f'(x) with the branch in its sign bit (out holds f(x)) */
} task;

/* float32: a fast evaluation in double, then a rounding test (Ziv's strategy). The fast result
   is within 2^-44 relative of the truth wherever it is a normal float: the series below errs by
   at most 2^-48.2 relative (see series_tail); reducing with one ln2 constant costs |k| 2^-55.3
   <= 2^-48 (|k| <= 150 where the result is a normal float; 0 at k = 0); x/beta formed as
   x*(1/beta) costs |x/beta| 2^-52 <= 2^-45.3, as |x/beta| <= 104 there; a few roundings of
   2^-53. Where it lies within 2^-42 relative of a float midpoint, or outside float's normal
   range, rounding it could go wrong, and the element is recomputed in double-double with the
   float64 machinery and rounded to odd. float32 results are therefore correctly rounded except
   where the double-double result itself is within 2^-56 of a midpoint; about one random input
   in 2^18 takes the slow path (and every result below 2^-126, e.g. f'(x) for x < -87). */
/* T(r) = (expm1(r) - r)/r^2 = 1/2 + r/3! + r^2/4! + ..., the tail both short series share
   (expm1 = r + r^2 T, exp = 1 + r (1 + r T)), as a degree-8 polynomial fitted on
   |r| <= 0.3466 (> ln2/2 and the rounding of r's reduction): Chebyshev interpolation, the
   coefficients rounded to double. |T - P| <= 2^-46.96 there, proved in
   tests/test_float32_series.py (the exact difference of P and T's Taylor series to degree 30,
   on a grid of the interval plus the grid's bound from the second derivative, plus the series'
   remainder). In the results: expm1's relative error is |r| |T - P| |r/expm1(r)| <= 0.41 |T - P|
   (2^-48.2) at k = 0, below that elsewhere (2^k r^2 |T - P| / |expm1| <= 0.21 |T - P|); exp's
   is r^2 |T - P| e^-r <= 0.17 |T - P|. Taylor's degree 11 (one step more) erred 2^-45.4 at
   k = 0. */
static ELUKIT_INLINE double series_tail(double r) {
    double tail = 0x1.28803f36ecdd5p-22;
    tail = fma(tail, r, 0x1.72c729cbdb150p-19);
    tail = fma(tail, r, 0x1.a019c9a6c2942p-16);
    tail = fma(tail, r, 0x1.a019ada56ce53p-13);
    tail = fma(tail, r, 0x1.6c16c1738faf6p-10);
    tail = fma(tail, r, 0x1.1111111c4725cp-7);
    tail = fma(tail, r, 0x1.5555555554cb7p-5);
    tail = fma(tail, r, 0x1.5555555553b79p-3);
    return fma(tail, r, 0x1.0000000000000p-1);
}

static ELUKIT_INLINE double expm1_short(double r) { return fma(r * r, series_tail(r), r); }

static ELUKIT_INLINE double exp_short(double r) { return fma(fma(series_tail(r), r, 1.0), r, 1.0); }

#define LN2 0x1.62e42fefa39efp-1
#define FLOAT_VALUE_CLAMP (-30.0) /* expm1(-30) = -1 + 9e-14: rounds like -1 in float */

/* 1 where rounding y to float is not safe: within 2^10 double ulps (2^-42 relative) of a float
   midpoint, or a nonzero |y| below float's normal range (where float's grid is coarser). The
   hardware's double -> float conversion itself rounds correctly, overflow and NaN included.
   As two unsigned keys, so that a loop can test a whole tile with two minimums: the distance of
   y's low 29 bits from a float midpoint's (plus 2^10), below 2^11 near one; and |y|'s bits minus 1,
   below those of 2^-126 minus 1 for a nonzero |y| below 2^-126 (zero wraps to the top; NaN is
   above). */
#define NEAR_MIDPOINT 2048ULL
#define BELOW_NORMAL 0x380fffffffffffffULL /* the bits of 2^-126, minus 1 */
static ELUKIT_INLINE uint64_t midpoint_key(double y) { return (to_bits(y) + (1024 - 0x10000000ULL)) & 0x1fffffffULL; }

static ELUKIT_INLINE uint64_t magnitude_key(double y) { return (to_bits(y) & 0x7fffffffffffffffULL) - 1; }

static ELUKIT_INLINE int64_t unsafe_for_float(double y) {
    return (int64_t)((midpoint_key(y) < NEAR_MIDPOINT) | (magnitude_key(y) < BELOW_NORMAL));
}

/* min(x, 0)/beta clamped below at `floor`, reduced to k*ln2 + r in plain double (one ln2
   constant, x*(1/beta): see the error budget above). NaN stays NaN through r. */
typedef struct {
    double r;
    int64_t k;
} fast_reduced;

static ELUKIT_INLINE fast_reduced fast_reduce(double x, const constants *k, int has_beta, double floor) {
    double negative = x > 0.0 ? 0.0 : x;
    double q = has_beta ? negative * k->inverse_beta : negative;
    q = q < floor ? floor : q;
    double shifted = fma(q, INV_LN2, ROUND_SHIFT);
    int64_t k_int = (int64_t)(to_bits(shifted) - to_bits(ROUND_SHIFT));
    return (fast_reduced){fma(-(shifted - ROUND_SHIFT), LN2, q), k_int};
}

static ELUKIT_INLINE double fast_value_reduced(double x, fast_reduced e, const constants *k) {
    double two_k = power_of_two(e.k);
    double result = k->c_hi * fma(two_k, expm1_short(e.r), two_k - 1.0);
    return copysign(x > 0.0 ? x * k->scale : result, x); /* f has the sign of x, zeros included */
}

static ELUKIT_INLINE double fast_value(double x, const constants *k, int has_beta) {
    return fast_value_reduced(x, fast_reduce(x, k, has_beta, FLOAT_VALUE_CLAMP), k);
}

static ELUKIT_INLINE double fast_exponential_reduced(double x, double grad, fast_reduced e, const constants *k) {
    double exponential = (grad * (k->m_hi * power_of_two(e.k + k->m_exponent))) * exp_short(e.r);
    return x > 0.0 ? grad * k->positive : exponential;
}

static ELUKIT_INLINE double fast_exponential(double x, double grad, const constants *k, int has_beta) {
    /* the floor keeps k + m_exponent >= -1022 */
    return fast_exponential_reduced(x, grad, fast_reduce(x, k, has_beta, k->float_floor), k);
}

static double slow_value(double x, const constants *k) {
    double result = copysign(round_to_odd(value_dd(x, k, k->has_beta)), x);
    return x != x ? x : result;
}

static double slow_exponential(double x, double grad, const constants *k) {
    scaled_dd s = exponential_dd(x, grad, k, k->has_beta);
    double factor = s.scale_a * s.scale_b; /* exact: the result is a float, far above 2^-1022 */
    double result = round_to_odd((dd){s.v.hi * factor, s.v.lo * factor});
    return x != x ? x : result;
}

/* These loops run on double tiles of float32 data (see run_task). */
ELUKIT_CLONES
static void fast_value_loop(const double *restrict x, double *restrict out, Py_ssize_t n, const constants *pk) {
    const constants k = *pk;
    if (k.has_beta)
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_value(x[i], &k, 1);
        }
    else
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_value(x[i], &k, 0);
        }
}

ELUKIT_CLONES
static void fast_exponential_loop(const double *restrict x, const double *restrict grad, double *restrict out,
                                  Py_ssize_t n, const constants *pk) {
    const constants k = *pk;
    if (grad == NULL && k.has_beta)
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_exponential(x[i], k.grad_scalar, &k, 1);
        }
    else if (grad == NULL)
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_exponential(x[i], k.grad_scalar, &k, 0);
        }
    else if (k.has_beta)
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_exponential(x[i], grad[i], &k, 1);
        }
    else
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_exponential(x[i], grad[i], &k, 0);
        }
}

/* ELU with alpha 1 (also CELU(1)): f(x) = x (x > 0), expm1(x) (x <= 0), and f' = 1 (x > 0), exp(x), with
   the gradient 1 (JAX's derivative, torch's sum().backward()). The loops below give these their own
   copy of the loop, in which every product by one is gone (x * 1 is x, NaN payloads included). */
static int unit_value(const constants *k) { return !k->has_beta && k->c_hi == 1.0 && k->scale == 1.0; }

static int unit_derivative(const constants *k) {
    return !k->has_beta && k->m_hi == 1.0 && k->m_lo == 0.0 && k->m_exponent == 0 && k->positive == 1.0 &&
           k->grad_scalar == 1.0;
}

/* The same loops reading the float32 data themselves (no widened copy of x and grad: the rare
   unsafe elements read them again). */
ELUKIT_CLONES
static void fast_value_float_loop(const float *restrict x, double *restrict out, Py_ssize_t n, const constants *pk) {
    const constants k = *pk;
    if (unit_value(&k)) {
        constants unit = k; /* the compiler folds the products by 1 away: the same bits */
        unit.c_hi = 1.0, unit.scale = 1.0;
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_value((double)x[i], &unit, 0);
        }
    } else if (k.has_beta)
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_value((double)x[i], &k, 1);
        }
    else
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_value((double)x[i], &k, 0);
        }
}

ELUKIT_CLONES
static void fast_exponential_float_loop(const float *restrict x, const float *restrict grad, double *restrict out,
                                        Py_ssize_t n, const constants *pk) {
    const constants k = *pk;
    if (grad == NULL && unit_derivative(&k)) {
        constants unit = k; /* as in fast_value_float_loop */
        unit.m_hi = 1.0, unit.m_exponent = 0, unit.positive = 1.0;
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_exponential((double)x[i], 1.0, &unit, 0);
        }
    } else if (grad == NULL && k.has_beta)
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_exponential((double)x[i], k.grad_scalar, &k, 1);
        }
    else if (grad == NULL)
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_exponential((double)x[i], k.grad_scalar, &k, 0);
        }
    else if (k.has_beta)
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_exponential((double)x[i], (double)grad[i], &k, 1);
        }
    else
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = fast_exponential((double)x[i], (double)grad[i], &k, 0);
        }
}

/* out = (float)y; returns whether any element was unsafe to round that way. */
ELUKIT_CLONES
static int64_t narrow_checked(const double *restrict y, float *restrict out, Py_ssize_t n) {
    uint64_t midpoint = UINT64_MAX, magnitude = UINT64_MAX; /* unsafe_for_float, as two minimums */
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = (float)y[i];
        uint64_t a = midpoint_key(y[i]), b = magnitude_key(y[i]);
        midpoint = a < midpoint ? a : midpoint;
        magnitude = b < magnitude ? b : magnitude;
    }
    return (int64_t)((midpoint < NEAR_MIDPOINT) | (magnitude < BELOW_NORMAL));
}


/* float64 in tiles: the rare elements whose result is tiny are redone with scaling and exact
   subnormal rounding (or, FAST, those the fast kernels flag) while x is still intact: where out
   may be x or grad, each tile is computed into a local buffer and copied out (run_float64). */
#define TILE 512

/* One element as the double-double loops give it: f(x) with tiny results scaled, or grad * f'(x)
   with subnormal results rounded exactly. */
static double exact_element(int value, double x, double grad, const constants *k, int has_beta) {
    if (value) {
        dd v = value_dd(x, k, has_beta);
        double result = copysign(v.hi + v.lo, x);
        if (value_needs_scaling(result)) result = copysign(round_scaled_double(value_scaled(x, k, has_beta)), x);
        return x != x ? x : result;
    }
    scaled_dd s = exponential_dd(x, grad, k, has_beta);
    double result = (s.v.hi + s.v.lo) * s.scale_a * s.scale_b;
    if (needs_subnormal_rounding(result, x, grad)) result = round_scaled_double(s);
    return x != x ? x : result;
}

/* Whether the n bytes at a and at b overlap. */
static int overlaps(const void *a, const void *b, size_t n) {
    uintptr_t p = (uintptr_t)a, q = (uintptr_t)b;
    return p < q + n && q < p + n;
}

static void run_float64(const task *t) {
    const double *x_all = (const double *)t->x, *grad_all = (const double *)t->grad;
    double *out_all = (double *)t->out;
    double tile[TILE];
    int64_t unsure[TILE];
    /* out may be x or grad: then each tile is computed into a local buffer, so that the rare
       elements redone below still read their inputs, and copied out after; else straight into out */
    size_t bytes = (size_t)t->n * sizeof(double);
    int aliased = overlaps(out_all, x_all, bytes) || (grad_all && overlaps(out_all, grad_all, bytes));
    int beta = t->k->has_beta, value = (t->kind & EXPONENTIAL) == VALUE, fast = (t->kind & FAST) != 0;
    int unit = value ? !beta && t->k->c_hi == 1.0 && t->k->c_lo == 0.0 : grad_all == NULL && unit_derivative(t->k);
    for (Py_ssize_t start = 0; start < t->n; start += TILE) {
        Py_ssize_t count = t->n - start < TILE ? t->n - start : TILE;
        const double *x = x_all + start, *grad = grad_all ? grad_all + start : NULL;
        double *out = aliased ? tile : out_all + start;
        int64_t any;
        if (fast)
            any = value ? (beta   ? fast_value64_beta(x, out, unsure, count, t->k)
                           : unit ? fast_value64_unit(x, out, unsure, count, t->k)
                                  : fast_value64_plain(x, out, unsure, count, t->k))
                        : (beta   ? fast_gradient64_beta(x, grad, out, unsure, count, t->k)
                           : unit ? fast_gradient64_unit(x, grad, out, unsure, count, t->k)
                                  : fast_gradient64_plain(x, grad, out, unsure, count, t->k));
        else
            any = value ? (beta ? value_nearest_beta(x, out, count, t->k) : value_nearest(x, out, count, t->k))
                        : (beta ? gradient_nearest_beta(x, grad, out, count, t->k)
                                : gradient_nearest(x, grad, out, count, t->k));
        for (Py_ssize_t i = 0; any && i < count; i++) {
            double g = grad ? grad[i] : t->k->grad_scalar;
            int redo = fast ? unsure[i] != 0
                            : (value ? value_needs_scaling(out[i]) : needs_subnormal_rounding(out[i], x[i], g));
            if (redo) out[i] = exact_element(value, x[i], g, t->k, beta);
        }
        if (aliased) memcpy(out_all + start, tile, (size_t)count * sizeof(double));
    }
}

/* The piecewise-linear family: one product per element. float64 rounds it once; float32 forms
   it in double as an exact double-double (x has 24 bits) and rounds to odd first, so the cast to
   float rounds once too. NaN passes through; so do signed zeros and infinities where b > 0, and
   b = 0 (ReLU) gives +0 on the whole negative branch. */
static ELUKIT_INLINE double linear_product(double x, double factor, int is_double) {
    dd p = two_product(x, factor);
    p.lo = fabs(p.hi) <= 0x1.fffffffffffffp+1023 ? p.lo : 0.0; /* an infinite x leaves lo NaN */
    return is_double || p.lo == 0.0 ? p.hi : round_to_odd(p); /* exact products keep their signed zero */
}

ELUKIT_CLONES
static void linear_loop(const double *restrict x, const double *restrict grad, double *restrict out, Py_ssize_t n,
                        const constants *pk, int value, int is_double) {
    const constants k = *pk;
    double positive = value ? k.scale : k.positive, negative = value ? k.c_hi : k.m_hi;
    if (value)
        for (Py_ssize_t i = 0; i < n; i++) {
            double product = linear_product(x[i], x[i] > 0.0 ? positive : negative, is_double);
            /* b = 0 (ReLU): the negative branch is the constant +0, for -0 and -inf too */
            out[i] = x[i] <= 0.0 && negative == 0.0 ? 0.0 : product;
        }
    else if (grad == NULL)
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = x[i] != x[i] ? x[i] : linear_product(k.grad_scalar, x[i] > 0.0 ? positive : negative, is_double);
    else
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = x[i] != x[i] ? x[i] : linear_product(grad[i], x[i] > 0.0 ? positive : negative, is_double);
}

ELUKIT_CLONES
static void narrow(const double *restrict y, float *restrict out, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) out[i] = (float)y[i];
}

/* ReLU's shape, a = 1 and b = 0: every product is x, g or a signed zero, exact in any precision, so
   the float32 data need no widening and no double-double (the results equal linear_loop's bit for
   bit: value x (x > 0), +0 (x <= 0, -0 and -inf too), NaN kept; derivative g or g * 0.0, NaN x kept). */
#define ELUKIT_UNIT_STEP_LOOP(NAME, T)                                                                      \
    ELUKIT_CLONES                                                                                            \
    static void NAME(const T *restrict x, const T *restrict grad, T *restrict out, Py_ssize_t n, T grad_scalar, \
                     int value) {                                                                            \
        if (value)                                                                                           \
            for (Py_ssize_t i = 0; i < n; i++) out[i] = x[i] > 0 ? x[i] : (x[i] != x[i] ? x[i] : (T)0);      \
        else if (grad == NULL)                                                                               \
            for (Py_ssize_t i = 0; i < n; i++)                                                               \
                out[i] = x[i] != x[i] ? x[i] : (x[i] > 0 ? grad_scalar : grad_scalar * (T)0);                \
        else                                                                                                 \
            for (Py_ssize_t i = 0; i < n; i++) out[i] = x[i] != x[i] ? x[i] : (x[i] > 0 ? grad[i] : grad[i] * (T)0); \
    }
ELUKIT_UNIT_STEP_LOOP(unit_step_double, double)
ELUKIT_UNIT_STEP_LOOP(unit_step_float, float)

static void run_linear(const task *t) {
    int value = (t->kind & EXPONENTIAL) == VALUE;
    double positive = value ? t->k->scale : t->k->positive, negative = value ? t->k->c_hi : t->k->m_hi;
    if (positive == 1.0 && negative == 0.0 && (t->is_double || (float)t->k->grad_scalar == t->k->grad_scalar)) {
        if (t->is_double)
            unit_step_double((const double *)t->x, (const double *)t->grad, (double *)t->out, t->n, t->k->grad_scalar, value);
        else
            unit_step_float((const float *)t->x, (const float *)t->grad, (float *)t->out, t->n, (float)t->k->grad_scalar, value);
        return;
    }
    if (t->is_double) {
        linear_loop((const double *)t->x, (const double *)t->grad, (double *)t->out, t->n, t->k, value, 1);
        return;
    }
    double x[TILE], grad[TILE], out[TILE];
    const float *x_float = (const float *)t->x, *grad_float = (const float *)t->grad;
    for (Py_ssize_t start = 0; start < t->n; start += TILE) {
        Py_ssize_t count = t->n - start < TILE ? t->n - start : TILE;
        widen(x_float + start, x, count);
        if (grad_float) widen(grad_float + start, grad, count);
        linear_loop(x, grad_float ? grad : NULL, out, count, t->k, value, 0);
        narrow(out, (float *)t->out + start, count);
    }
}

/* f'(x) with the branch in its sign bit: -f'(x) where x <= 0 or NaN (f' >= 0, so the bit is free). */
static ELUKIT_INLINE double signed_by_branch(double x, double derivative) { return x > 0.0 ? derivative : -derivative; }

/* ---- f(x) and f'(x) from one exponential (kind BOTH) ------------------------------------------
   A training forward needs f(x) now and f'(x) for backward. Both come from the same reduction
   x/beta = k ln2 + r and the same polynomial, so one pass gives both, each bit for bit what its own
   kernel gives (fast_value / fast_exponential with grad 1 for float32, fast_value64 /
   fast_exponential64 for float64): the two kernels reduce the same x/beta, clamped at different
   floors. Below the value's clamp (FLOAT_VALUE_CLAMP, VALUE_CLAMP) f is the constant f(-inf),
   evaluated once per call; above it the reductions coincide, because the derivative's floor lies
   below the value's clamp (checked per call: both_shares_reduction; else the two kernels run one
   after the other on each tile, still in one pass over memory).
   f'(x) is written with the branch in its sign bit: +f'(x) for x > 0, -f'(x) for x <= 0 and NaN
   (f' >= 0 on both branches, so the bit is free), which is what higher derivatives read. */
static ELUKIT_INLINE void fast_both(double x, const constants *k, int has_beta, double clamped, double *value,
                                    double *derivative) {
    fast_reduced e = fast_reduce(x, k, has_beta, k->float_floor);
    double negative_x = x > 0.0 ? 0.0 : x;
    double q = has_beta ? negative_x * k->inverse_beta : negative_x; /* as fast_reduce forms it */
    double shared = fast_value_reduced(x, e, k);                      /* the polynomial is common */
    *value = q < FLOAT_VALUE_CLAMP ? clamped : shared;
    *derivative = signed_by_branch(x, fast_exponential_reduced(x, 1.0, e, k));
}

/* float32 in, float32 out, in one loop: each element evaluated as fast_both and narrowed, the
   double results kept in the tiles for the rounding test that follows. */
ELUKIT_CLONES
static void fast_both_float_loop(const float *restrict x, float *restrict value_out, float *restrict derivative_out,
                                 double *restrict value, double *restrict derivative, Py_ssize_t n,
                                 const constants *pk, double clamped) {
    const constants k = *pk;
    if (k.has_beta)
        for (Py_ssize_t i = 0; i < n; i++) {
            fast_both((double)x[i], &k, 1, clamped, &value[i], &derivative[i]);
            value_out[i] = (float)value[i];
            derivative_out[i] = (float)derivative[i];
        }
    else
        for (Py_ssize_t i = 0; i < n; i++) {
            fast_both((double)x[i], &k, 0, clamped, &value[i], &derivative[i]);
            value_out[i] = (float)value[i];
            derivative_out[i] = (float)derivative[i];
        }
}

ELUKIT_CLONES
static int64_t any_unsafe_for_float(const double *restrict a, const double *restrict b, Py_ssize_t n) {
    uint64_t midpoint = UINT64_MAX, magnitude = UINT64_MAX; /* unsafe_for_float, as two minimums */
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t m = midpoint_key(a[i]) < midpoint_key(b[i]) ? midpoint_key(a[i]) : midpoint_key(b[i]);
        uint64_t g = magnitude_key(a[i]) < magnitude_key(b[i]) ? magnitude_key(a[i]) : magnitude_key(b[i]);
        midpoint = m < midpoint ? m : midpoint;
        magnitude = g < magnitude ? g : magnitude;
    }
    return (int64_t)((midpoint < NEAR_MIDPOINT) | (magnitude < BELOW_NORMAL));
}

static ELUKIT_INLINE void fast_both64(double x, const constants *k, int has_beta, double clamped, double *value,
                                      int64_t *value_unsure, double *derivative, int64_t *derivative_unsure) {
    ratio t = divide(x, k->beta, has_beta, k->floor);
    table_reduced e = table_reduce(t.q, t.q_lo);
    checked v = fast_value64_reduced(x, t, e, k, clamped);
    /* grad is k->grad_scalar (1 here): a literal 1.0 folds needs_subnormal_rounding into a shape
       GCC 12 does not vectorise */
    checked d = fast_exponential64_reduced(x, k->grad_scalar, t, e, k);
    *value = v.result;
    *value_unsure = v.unsure;
    *derivative = signed_by_branch(x, d.result);
    *derivative_unsure = d.unsure;
}

static ELUKIT_INLINE int64_t fast_both64_loop(const double *restrict x, double *restrict value,
                                              int64_t *restrict value_unsure, double *restrict derivative,
                                              int64_t *restrict derivative_unsure, Py_ssize_t n, const constants *pk,
                                              double clamped, int has_beta) {
    const constants k = *pk;
    int64_t any = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        fast_both64(x[i], &k, has_beta, clamped, &value[i], &value_unsure[i], &derivative[i], &derivative_unsure[i]);
    for (Py_ssize_t i = 0; i < n; i++) any |= value_unsure[i] | derivative_unsure[i];
    return any;
}

#define FAST_BOTH_PARAMETERS                                                                                  \
    (const double *restrict x, double *restrict value, int64_t *restrict value_unsure, double *restrict derivative, \
     int64_t *restrict derivative_unsure, Py_ssize_t n, const constants *pk, double clamped)
#define DEFINE_FAST_BOTH64_LOOP(SUFFIX, HAS_BETA)                                                             \
    DEFINE_TABLE_LOOP(fast_both64_##SUFFIX, FAST_BOTH_PARAMETERS,                                             \
                      fast_both64_loop(x, value, value_unsure, derivative, derivative_unsure, n, pk, clamped, HAS_BETA), \
                      (x, value, value_unsure, derivative, derivative_unsure, n, pk, clamped))

DEFINE_FAST_BOTH64_LOOP(plain, 0)
DEFINE_FAST_BOTH64_LOOP(beta, 1)

/* narrow_checked of two tiles in one loop. */
ELUKIT_CLONES
static int64_t narrow_both_checked(const double *restrict a, const double *restrict b, float *restrict a_out,
                                   float *restrict b_out, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        a_out[i] = (float)a[i];
        b_out[i] = (float)b[i];
    }
    return any_unsafe_for_float(a, b, n);
}

/* Whether the derivative's floor lies below the value's clamp, so that one reduction serves both. */
static int both_shares_reduction(const constants *k, int is_double) {
    return is_double ? k->floor < VALUE_CLAMP : k->float_floor < FLOAT_VALUE_CLAMP;
}

static void run_both(const task *t) {
    const constants *k = t->k;
    int beta = k->has_beta, shared = both_shares_reduction(k, t->is_double);
    double value[TILE], derivative[TILE];
    if (t->is_double) {
        const double *x_all = (const double *)t->x;
        int64_t value_unsure[TILE], derivative_unsure[TILE];
        double clamped = fast_value64(-INFINITY, k, beta).result;
        for (Py_ssize_t start = 0; start < t->n; start += TILE) {
            Py_ssize_t count = t->n - start < TILE ? t->n - start : TILE;
            const double *x = x_all + start;
            int64_t any;
            if (shared) {
                any = beta ? fast_both64_beta(x, value, value_unsure, derivative, derivative_unsure, count, k, clamped)
                           : fast_both64_plain(x, value, value_unsure, derivative, derivative_unsure, count, k, clamped);
            } else {
                any = beta ? fast_value64_beta(x, value, value_unsure, count, k)
                           : fast_value64_plain(x, value, value_unsure, count, k);
                any |= beta ? fast_gradient64_beta(x, NULL, derivative, derivative_unsure, count, k)
                            : fast_gradient64_plain(x, NULL, derivative, derivative_unsure, count, k);
                for (Py_ssize_t i = 0; i < count; i++) derivative[i] = signed_by_branch(x[i], derivative[i]);
            }
            for (Py_ssize_t i = 0; any && i < count; i++) {
                if (value_unsure[i]) value[i] = exact_element(1, x[i], 0.0, k, beta);
                if (derivative_unsure[i]) derivative[i] = signed_by_branch(x[i], exact_element(0, x[i], 1.0, k, beta));
            }
            memcpy((double *)t->out + start, value, (size_t)count * sizeof(double));
            memcpy((double *)t->out2 + start, derivative, (size_t)count * sizeof(double));
        }
        return;
    }
    double x[TILE];
    const float *x_float = (const float *)t->x;
    float *value_float = (float *)t->out, *derivative_float = (float *)t->out2;
    double clamped = fast_value(-INFINITY, k, beta);
    for (Py_ssize_t start = 0; start < t->n; start += TILE) {
        Py_ssize_t count = t->n - start < TILE ? t->n - start : TILE;
        int64_t unsafe;
        if (shared) {
            fast_both_float_loop(x_float + start, value_float + start, derivative_float + start, value, derivative,
                                 count, k, clamped);
            unsafe = any_unsafe_for_float(value, derivative, count);
            if (unsafe) widen(x_float + start, x, count);
        } else {
            widen(x_float + start, x, count);
            fast_value_loop(x, value, count, k);
            fast_exponential_loop(x, NULL, derivative, count, k);
            for (Py_ssize_t i = 0; i < count; i++) derivative[i] = signed_by_branch(x[i], derivative[i]);
            unsafe = narrow_both_checked(value, derivative, value_float + start, derivative_float + start, count);
        }
        /* the rounding test is symmetric in the sign, so the signed f' is tested as it stands */
        if (unsafe)
            for (Py_ssize_t i = 0; i < count; i++) {
                if (unsafe_for_float(value[i])) value_float[start + i] = (float)slow_value(x[i], k);
                if (unsafe_for_float(derivative[i]))
                    derivative_float[start + i] = (float)signed_by_branch(x[i], slow_exponential(x[i], 1.0, k));
            }
    }
}

/* out = grad * |x| in x's dtype (kind MAGNITUDE; grad NULL: the one value k->grad_scalar): the
   backward of a training forward that saved f'(x) with the branch in its sign bit. One rounding,
   as torch.mul(grad, x.abs()) gives. */
ELUKIT_CLONES
static void magnitude_double(const double *restrict x, const double *restrict grad, double *restrict out, Py_ssize_t n,
                             double scalar) {
    if (grad == NULL)
        for (Py_ssize_t i = 0; i < n; i++) out[i] = scalar * fabs(x[i]);
    else
        for (Py_ssize_t i = 0; i < n; i++) out[i] = grad[i] * fabs(x[i]);
}

ELUKIT_CLONES
static void magnitude_float(const float *restrict x, const float *restrict grad, float *restrict out, Py_ssize_t n,
                            float scalar) {
    if (grad == NULL)
        for (Py_ssize_t i = 0; i < n; i++) out[i] = scalar * fabsf(x[i]);
    else
        for (Py_ssize_t i = 0; i < n; i++) out[i] = grad[i] * fabsf(x[i]);
}

static void run_magnitude(const task *t) {
    if (t->is_double)
        magnitude_double((const double *)t->x, (const double *)t->grad, (double *)t->out, t->n, t->k->grad_scalar);
    else
        magnitude_float((const float *)t->x, (const float *)t->grad, (float *)t->out, t->n, (float)t->k->grad_scalar);
}

static void run_task(const task *t) {
    if (t->kind & MAGNITUDE) {
        run_magnitude(t);
        return;
    }
    if (t->kind & BOTH) {
        run_both(t);
        return;
    }
    if (t->kind & LINEAR) {
        run_linear(t);
        return;
    }
    if (t->is_double) {
        run_float64(t);
        return;
    }
    double out[TILE];
    float x_copy[TILE], grad_copy[TILE];
    const float *x_float = (const float *)t->x, *grad_float = (const float *)t->grad;
    float *out_float = (float *)t->out;
    /* out may be x or grad: the unsafe elements are redone from a copy of the tile's inputs then */
    int aliased = overlaps(t->out, t->x, t->n * sizeof(float)) ||
                  (grad_float && overlaps(t->out, t->grad, t->n * sizeof(float)));
    for (Py_ssize_t start = 0; start < t->n; start += TILE) {
        Py_ssize_t count = t->n - start < TILE ? t->n - start : TILE;
        const float *x = x_float + start, *g = grad_float ? grad_float + start : NULL;
        if (aliased) {
            memcpy(x_copy, x, (size_t)count * sizeof(float));
            x = x_copy;
            if (g) {
                memcpy(grad_copy, g, (size_t)count * sizeof(float));
                g = grad_copy;
            }
        }
        if ((t->kind & EXPONENTIAL) == VALUE)
            fast_value_float_loop(x, out, count, t->k);
        else
            fast_exponential_float_loop(x, g, out, count, t->k);
        if (!narrow_checked(out, out_float + start, count)) continue;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (!unsafe_for_float(out[i])) continue;
            double slow = (t->kind & EXPONENTIAL) == VALUE ? slow_value((double)x[i], t->k)
                                           : slow_exponential((double)x[i], g ? (double)g[i] : t->k->grad_scalar, t->k);
            out_float[start + i] = (float)slow;
        }
    }
}

static void *run_thread(void *argument) {
    run_task((const task *)argument);
    return NULL;
}

#define MAX_THREADS 64
#define MIN_ELEMENTS_PER_THREAD 65536        /* starting a thread costs ~20 us */
#define MIN_ELEMENTS_PER_OPENMP_THREAD 8192  /* waking a team member costs ~2 us */

/* OpenMP entry points of the runtime PyTorch already runs (see set_openmp). Running our parts on
   its team instead of threads of our own matters: after each parallel op PyTorch's OpenMP
   workers spin for a while, and threads of ours would share the cores with them. */
typedef void (*gomp_parallel_function)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_function)(void);
static gomp_parallel_function gomp_parallel = NULL;
static omp_int_function omp_thread_num = NULL, omp_num_threads = NULL;

/* The part of `whole` that worker `index` of `count` evaluates: contiguous, 16-element aligned. */
static task task_part(const task *whole, int index, int count) {
    size_t item = whole->is_double ? sizeof(double) : sizeof(float);
    Py_ssize_t per = ((whole->n + count - 1) / count + 15) / 16 * 16;
    Py_ssize_t begin = (Py_ssize_t)index * per;
    Py_ssize_t end = begin + per < whole->n ? begin + per : whole->n;
    task part = *whole;
    if (begin > whole->n) begin = whole->n;
    part.n = end > begin ? end - begin : 0;
    part.x = whole->x + (size_t)begin * item;
    part.out = whole->out + (size_t)begin * item;
    part.grad = whole->grad ? whole->grad + (size_t)begin * item : NULL;
    part.out2 = whole->out2 ? whole->out2 + (size_t)begin * item : NULL;
    return part;
}

static void openmp_body(void *argument) {
    task part = task_part((const task *)argument, omp_thread_num(), omp_num_threads());
    run_task(&part);
}

/* Evaluate in parallel parts (each element's result does not depend on the split): on the
   OpenMP team when one was registered, else on threads of our own. */
static void run_parallel(task whole, int threads) {
    Py_ssize_t most = whole.n / (gomp_parallel ? MIN_ELEMENTS_PER_OPENMP_THREAD : MIN_ELEMENTS_PER_THREAD);
    if (threads > most) threads = (int)(most > 1 ? most : 1);
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads <= 1) {
        run_task(&whole);
        return;
    }
    if (gomp_parallel != NULL) {
        gomp_parallel(openmp_body, &whole, (unsigned)threads, 0);
        return;
    }
    task parts[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 0; i < threads; i++) parts[i] = task_part(&whole, i, threads);
    for (int i = 1; i < threads; i++)
        started[i] = pthread_create(&ids[i], NULL, run_thread, &parts[i]) == 0;
    run_task(&parts[0]);
    for (int i = 1; i < threads; i++) {
        if (started[i])
            pthread_join(ids[i], NULL);
        else
            run_task(&parts[i]);
    }
}

/* The derived fields of `k` once the parsed ones are in. */
static void complete_constants(constants *k, long long m_exponent) {
    k->m_exponent = (int64_t)m_exponent;
    k->has_beta = k->beta != 1.0;
    k->inverse_beta = 1.0 / k->beta;
    /* results this small are below float's range: the rounding test sends them to the slow path */
    double float_floor = (-1021.5 - (double)k->m_exponent) * LN2;
    k->float_floor = float_floor > k->floor ? float_floor : k->floor;
    k->grad_scalar = 1.0;
}

/* ---- a C interface for other compiled modules (elukit.torch._native_ops) -------------------------
   The capsule "elukit._exponential_linear._C_API" holds an elukit_kernel_api: run() evaluates a
   kind on raw addresses without touching the GIL (it may be called from threads that do not hold
   it, such as PyTorch's autograd engine). constants: the 11 values of the Python tuple, the
   exponent (index 6) as a double. */
typedef struct {
    int version; /* 1 */
    void (*run)(int kind, int is_double, const void *x, const void *grad, Py_ssize_t grad_count, void *out,
                void *out2, Py_ssize_t count, const double *constants, int threads);
} elukit_kernel_api;

static void api_run(int kind, int is_double, const void *x, const void *grad, Py_ssize_t grad_count, void *out,
                    void *out2, Py_ssize_t count, const double *c, int threads) {
    constants k;
    k.c_hi = c[0], k.c_lo = c[1], k.d_hi = c[2], k.d_lo = c[3], k.m_hi = c[4], k.m_lo = c[5];
    k.floor = c[7], k.positive = c[8], k.scale = c[9], k.beta = c[10];
    complete_constants(&k, (long long)c[6]);
    if (grad != NULL && grad_count == 1 && count != 1) {
        k.grad_scalar = is_double ? *(const double *)grad : (double)*(const float *)grad;
        grad = NULL;
    }
    task whole = {kind, is_double, (const char *)x, (const char *)grad, (char *)out, count, &k, (char *)out2};
    run_parallel(whole, threads);
}

#ifdef ELUKIT_KERNELS_ONLY
#if defined(__GNUC__)
#define ELUKIT_EXPORT __attribute__((visibility("default")))
#else
#define ELUKIT_EXPORT
#endif
/* The entry points of the operator library (elukit.torch's _operators.cpp): api_run, and
   set_openmp's C form (the runtime's three entry points, or NULLs for threads of our own). */
ELUKIT_EXPORT void elukit_kernels_run(int kind, int is_double, const void *x, const void *grad, Py_ssize_t grad_count,
                                      void *out, void *out2, Py_ssize_t count, const double *c, int threads) {
    api_run(kind, is_double, x, grad, grad_count, out, out2, count, c, threads);
}

ELUKIT_EXPORT void elukit_kernels_set_openmp(void *parallel, void *thread_num, void *num_threads) {
    gomp_parallel = (gomp_parallel_function)parallel;
    omp_thread_num = (omp_int_function)thread_num;
    omp_num_threads = (omp_int_function)num_threads;
}
#else /* the Python module */

PyDoc_STRVAR(set_openmp_doc,
             "set_openmp(parallel, thread_num, num_threads)\n\n"
             "Addresses of GOMP_parallel, omp_get_thread_num and omp_get_num_threads of an OpenMP\n"
             "runtime loaded in this process (0, 0, 0: use threads of our own).");

static PyObject *set_openmp(PyObject *self, PyObject *args) {
    unsigned long long parallel, thread_num, num_threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKK", &parallel, &thread_num, &num_threads)) return NULL;
    if ((parallel == 0) != (thread_num == 0) || (parallel == 0) != (num_threads == 0)) {
        PyErr_SetString(PyExc_ValueError, "set_openmp needs all three addresses or none");
        return NULL;
    }
    gomp_parallel = (gomp_parallel_function)(uintptr_t)parallel;
    omp_thread_num = (omp_int_function)(uintptr_t)thread_num;
    omp_num_threads = (omp_int_function)(uintptr_t)num_threads;
    Py_RETURN_NONE;
}

static int get_buffer(PyObject *object, Py_buffer *view, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s buffer", name, writable ? " writable" : "");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(evaluate_doc,
             "evaluate(kind, x, out, grad, constants, threads)\n\n"
             "kind 0: f(x); kind 1: grad * (the exponential quantity) (grad None: the quantity itself);\n"
             "add 2 (FAST) for float64's fast faithful kernels instead of the correctly rounding ones;\n"
             "add 4 (LINEAR) for the piecewise-linear family a*x | b*x instead of the exponential one.\n"
             "x, out (and grad) are C-contiguous float32 or float64 buffers of equal length and type (grad\n"
             "may also hold one value for every element);\n"
             "out may be x. constants: (c_hi, c_lo, d_hi, d_lo, m_hi, m_lo, m_exponent, floor, positive,\n"
             "scale, beta). The GIL is released while the kernel runs.");

/* Run `kind` over `count` elements without the GIL. A gradient of one element serving more
   elements is passed as the scalar k->grad_scalar. */
static void launch(constants *k, int kind, int is_double, const void *x, const void *grad, Py_ssize_t grad_count,
                   void *out, Py_ssize_t count, int threads) {
    if (grad != NULL && grad_count == 1 && count != 1) {
        k->grad_scalar = is_double ? *(const double *)grad : (double)*(const float *)grad;
        grad = NULL;
    }
    task whole = {kind, is_double, (const char *)x, (const char *)grad, (char *)out, count, k, NULL};
    Py_BEGIN_ALLOW_THREADS
    run_parallel(whole, threads);
    Py_END_ALLOW_THREADS
}

static PyObject *evaluate(PyObject *self, PyObject *args) {
    int kind, threads;
    PyObject *x_object, *out_object, *grad_object;
    constants k;
    long long m_exponent;
    (void)self;
    if (!PyArg_ParseTuple(args, "iOOO(ddddddLdddd)i", &kind, &x_object, &out_object, &grad_object, &k.c_hi,
                          &k.c_lo, &k.d_hi, &k.d_lo, &k.m_hi, &k.m_lo, &m_exponent, &k.floor, &k.positive, &k.scale,
                          &k.beta, &threads))
        return NULL;
    if (kind < 0 || kind > (EXPONENTIAL | FAST | LINEAR)) {
        PyErr_Format(PyExc_ValueError,
                     "kind must be 0 (value) or 1 (exponential), plus 2 for fast float64 and 4 for the linear family, "
                     "got %d", kind);
        return NULL;
    }
    complete_constants(&k, m_exponent);
    Py_buffer x, out, grad;
    if (get_buffer(x_object, &x, 0, "x") < 0) return NULL;
    if (get_buffer(out_object, &out, 1, "out") < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    int has_grad = grad_object != Py_None;
    if (has_grad && get_buffer(grad_object, &grad, 0, "grad") < 0) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&out);
        return NULL;
    }
    const char *format = x.format ? x.format : "B";
    int is_double = strcmp(format, "d") == 0 && x.itemsize == 8;
    int is_float = strcmp(format, "f") == 0 && x.itemsize == 4;
    const char *problem = NULL;
    if (!is_double && !is_float)
        problem = "x must hold float32 or float64";
    else if (out.len != x.len || out.itemsize != x.itemsize || strcmp(out.format ? out.format : "B", format) != 0)
        problem = "out must match x in length and dtype";
    else if (has_grad && ((grad.len != x.len && grad.len != grad.itemsize) || grad.itemsize != x.itemsize ||
                          strcmp(grad.format ? grad.format : "B", format) != 0))
        problem = "grad must match x in dtype and in length (or hold one value for all)";
    else if (has_grad && (kind & EXPONENTIAL) == VALUE)
        problem = "grad applies to kind 1 only";
    if (problem == NULL)
        launch(&k, kind, is_double, x.buf, has_grad ? grad.buf : NULL, has_grad ? grad.len / x.itemsize : 0,
               out.buf, x.len / x.itemsize, threads);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    if (has_grad) PyBuffer_Release(&grad);
    if (problem != NULL) {
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(evaluate_addresses_doc,
             "evaluate_addresses(kind, x, out, grad, grad_count, count, is_double, constants, threads)\n\n"
             "evaluate() on raw addresses, for callers that have checked them (elukit.torch: contiguous\n"
             "CPU tensors of one dtype and `count` elements). grad is 0 for none; grad_count is 1 when one\n"
             "gradient value serves every element. Skips the buffer protocol's per-call cost.");

static PyObject *evaluate_addresses(PyObject *self, PyObject *args) {
    int kind, threads, is_double;
    unsigned long long x_address, out_address, grad_address;
    Py_ssize_t grad_count, count;
    constants k;
    long long m_exponent;
    (void)self;
    if (!PyArg_ParseTuple(args, "iKKKnnp(ddddddLdddd)i", &kind, &x_address, &out_address, &grad_address, &grad_count,
                          &count, &is_double, &k.c_hi, &k.c_lo, &k.d_hi, &k.d_lo, &k.m_hi, &k.m_lo, &m_exponent,
                          &k.floor, &k.positive, &k.scale, &k.beta, &threads))
        return NULL;
    if (kind < 0 || kind > (EXPONENTIAL | FAST | LINEAR) || count < 0 || x_address == 0 || out_address == 0 ||
        (grad_address != 0 && ((kind & EXPONENTIAL) == VALUE || (grad_count != 1 && grad_count != count)))) {
        PyErr_SetString(PyExc_ValueError, "evaluate_addresses: inconsistent arguments");
        return NULL;
    }
    complete_constants(&k, m_exponent);
    launch(&k, kind, is_double, (const void *)(uintptr_t)x_address, (const void *)(uintptr_t)grad_address, grad_count,
           (void *)(uintptr_t)out_address, count, threads);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(evaluate_both_doc,
             "evaluate_both_addresses(kind, x, value, derivative, count, is_double, constants, threads)\n\n"
             "f(x) into value and f'(x) into derivative, with the branch in f's sign bit (-f'(x) where\n"
             "x <= 0 or NaN), from one exponential per element: bit for bit what kinds 0 and 1 (grad 1)\n"
             "give. kind: 1 (float32), 1 + 2 (FAST, required for float64). Raw addresses of contiguous\n"
             "CPU tensors of one dtype and `count` elements (elukit.torch checks them).");

static PyObject *evaluate_both_addresses(PyObject *self, PyObject *args) {
    int kind, threads, is_double;
    unsigned long long x_address, value_address, derivative_address;
    Py_ssize_t count;
    constants k;
    long long m_exponent;
    (void)self;
    if (!PyArg_ParseTuple(args, "iKKKnp(ddddddLdddd)i", &kind, &x_address, &value_address, &derivative_address, &count,
                          &is_double, &k.c_hi, &k.c_lo, &k.d_hi, &k.d_lo, &k.m_hi, &k.m_lo, &m_exponent, &k.floor,
                          &k.positive, &k.scale, &k.beta, &threads))
        return NULL;
    if ((kind & ~FAST) != EXPONENTIAL || (is_double && !(kind & FAST)) || count < 0 || x_address == 0 ||
        value_address == 0 || derivative_address == 0) {
        PyErr_SetString(PyExc_ValueError, "evaluate_both_addresses: inconsistent arguments (kind 1, plus 2 for float64)");
        return NULL;
    }
    complete_constants(&k, m_exponent);
    task whole = {kind | BOTH, is_double, (const char *)(uintptr_t)x_address, NULL, (char *)(uintptr_t)value_address,
                  count, &k, (char *)(uintptr_t)derivative_address};
    Py_BEGIN_ALLOW_THREADS
    run_parallel(whole, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(multiply_magnitude_doc,
             "multiply_magnitude_addresses(x, grad, grad_count, out, count, is_double, threads)\n\n"
             "out = grad * |x| in x's dtype (grad_count 1: one gradient value for every element), on raw\n"
             "addresses of contiguous CPU tensors (elukit.torch checks them).");

static PyObject *multiply_magnitude_addresses(PyObject *self, PyObject *args) {
    int threads, is_double;
    unsigned long long x_address, grad_address, out_address;
    Py_ssize_t grad_count, count;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKnKnpi", &x_address, &grad_address, &grad_count, &out_address, &count, &is_double,
                          &threads))
        return NULL;
    if (count < 0 || x_address == 0 || grad_address == 0 || out_address == 0 || (grad_count != 1 && grad_count != count)) {
        PyErr_SetString(PyExc_ValueError, "multiply_magnitude_addresses: inconsistent arguments");
        return NULL;
    }
    constants k;
    memset(&k, 0, sizeof k);
    k.beta = 1.0;
    complete_constants(&k, 0);
    launch(&k, MAGNITUDE, is_double, (const void *)(uintptr_t)x_address, (const void *)(uintptr_t)grad_address,
           grad_count, (void *)(uintptr_t)out_address, count, threads);
    Py_RETURN_NONE;
}

static const elukit_kernel_api kernel_api = {1, api_run};

static PyObject *exp2_table(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    PyObject *rows = PyTuple_New(128);
    if (rows == NULL) return NULL;
    for (Py_ssize_t j = 0; j < 128; j++) {
        PyObject *row = Py_BuildValue("(dd)", EXP2_HI[j], EXP2_LO[j]);
        if (row == NULL) {
            Py_DECREF(rows);
            return NULL;
        }
        PyTuple_SET_ITEM(rows, j, row);
    }
    return rows;
}

static PyObject *table_gathers_in_use(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(table_gathers());
}

static PyMethodDef methods[] = {
    {"evaluate", evaluate, METH_VARARGS, evaluate_doc},
    {"set_openmp", set_openmp, METH_VARARGS, set_openmp_doc},
    {"evaluate_addresses", evaluate_addresses, METH_VARARGS, evaluate_addresses_doc},
    {"evaluate_both_addresses", evaluate_both_addresses, METH_VARARGS, evaluate_both_doc},
    {"multiply_magnitude_addresses", multiply_magnitude_addresses, METH_VARARGS, multiply_magnitude_doc},
    {"exp2_table", exp2_table, METH_NOARGS, "exp2_table()\n\nThe fast float64 kernels' table of 2^(j/128), j = 0..127, as (hi, lo) pairs."},
    {"table_gathers", table_gathers_in_use, METH_NOARGS,
     "table_gathers()\n\nWhether the fast float64 kernels read their table with AVX-512 gathers in this process\n"
     "(the CPU's choice, or ELUKIT_TABLE_GATHERS=0/1): the same bits either way."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "elukit._exponential_linear",
    .m_doc = "Compiled float32/float64 kernels of the exponential-linear family (see elukit._native).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__exponential_linear(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *capsule = PyCapsule_New((void *)&kernel_api, "elukit._exponential_linear._C_API", NULL);
    if (capsule == NULL || PyModule_AddObject(m, "_C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
#endif /* ELUKIT_KERNELS_ONLY */
