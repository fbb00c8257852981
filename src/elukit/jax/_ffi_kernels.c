/* elukit's compiled kernels as an XLA FFI handler, for elukit.jax on the CPU.

   The kernels are those of src/elukit/_exponential_linear.c, compiled into this module from the
   same source (included below), so jax.jit programs call them with no Python in between: one
   custom call per evaluation, over XLA's own buffers. The handler is written against XLA's
   stable FFI C API (xla/ffi/api/c_api.h, shipped with jaxlib); setup.py builds this module only
   where that header is found.

   Call frame: operands x (float32 or float64, any shape, dense row-major) and optionally grad
   (same dtype and shape); one result of x's dtype and shape; one attribute "plan", a float64
   array (kind, threads, c_hi, c_lo, d_hi, d_lo, m_hi, m_lo, m_exponent, floor, positive, scale,
   beta) -- the constants of elukit._native, with the kind of _exponential_linear.c.

   XLA runs CPU programs with denormals flushed (FTZ/DAZ set on its threads), which would turn the
   kernels' subnormal inputs and results into zeros; the handler clears those flags while the
   kernels run and restores them after. Threads the kernels start inherit the cleared state. */
#include "../_exponential_linear.c"

#include "xla/ffi/api/c_api.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define ELUKIT_FLUSH_BITS 0x8040u /* MXCSR: FTZ (bit 15) and DAZ (bit 6) */
typedef unsigned int fp_state;
static fp_state keep_subnormals(void) {
    fp_state saved = _mm_getcsr();
    _mm_setcsr(saved & ~ELUKIT_FLUSH_BITS);
    return saved;
}
static void restore_fp_state(fp_state saved) { _mm_setcsr(saved); }
#elif defined(__aarch64__) && defined(__GNUC__)
typedef unsigned long long fp_state;
static fp_state keep_subnormals(void) {
    fp_state saved;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved));
    fp_state cleared = saved & ~(1ULL << 24); /* FPCR.FZ */
    __asm__ __volatile__("msr fpcr, %0" : : "r"(cleared));
    return saved;
}
static void restore_fp_state(fp_state saved) { __asm__ __volatile__("msr fpcr, %0" : : "r"(saved)); }
#else
#error "elukit._ffi_kernels: no known way to clear flush-to-zero on this architecture"
#endif

#define PLAN_LENGTH 13

/* ---- float64, correctly rounded (kind | CORRECTLY_ROUNDED, elukit.jax's float64) -----------------
   The jnp float64 kernels of elukit.jax round correctly (pairs of doubles, ~2^-100), so the
   compiled kernels must too, where elukit._native's float64 kernels are faithful only (their
   series carries ~2^-58). Two stages, Ziv's way:

   1. A double-double evaluation with an error below about 2^-71 relative (estimated below; tests
      check the result against the jnp kernels and mpmath), from the 128-entry table of 2^(j/128):
          x/beta = n ln2/128 + r, |r| <= ln2/256, n = 128k + j,
          e^(x/beta) = 2^k T (1 + E),  E = expm1(r) = r + r^2/2 + r^3 (1/6 + ... + r^5/8!)
      with r^2 exact (TwoProduct), the r^3 tail in double (three roundings of a term below
      r^2/6 |r| <= 2^-19.6 |r|: about 2^-71 of |r|, the largest error; |expm1(x/beta)| is not
      below |r|/2), the series cut below 2^-87 |r|, and ln2/128 to 2^-88 relative (n ln2/128
      error below 2^-77 absolute for |x/beta| <= 1420). The result hi + lo is rounded to hi when
      the exact value, within 2^-66 |hi| of it (32 times the estimate), cannot lie on the other
      side of a midpoint (`certain`): all but about 1 element in 10^4 (measured on N(0, 9)).
   2. The others, and every element with a tiny input (|x| < 2^-900) or a result outside the
      normal range, are evaluated in binary128 (libquadmath: expm1q/expq, ~2^-112) and rounded
      once by the conversion to double, subnormals included.
   Correctly rounded, then, except where the exact value lies within ~2^-110 relative of a
   midpoint, as the jnp kernels are within ~2^-100. */
#if defined(__x86_64__) || defined(__i386__)
#include <quadmath.h>
typedef __float128 quad;
#define QUAD_EXPM1 expm1q
#define QUAD_EXP expq
#define QUAD_LDEXP ldexpq
#elif defined(__aarch64__) && defined(__linux__) /* long double is binary128 there */
typedef long double quad;
#define QUAD_EXPM1 expm1l
#define QUAD_EXP expl
#define QUAD_LDEXP ldexpl
#else
#error "elukit._ffi_kernels: no binary128 type known on this platform"
#endif

#define CORRECTLY_ROUNDED 8

/* Whether hi is hi + lo correctly rounded even if the exact value is 2^-66 |hi| away from hi + lo.
   |hi| is taken at least 2^-900 (smaller results are sent to stage 2 anyway): with flush-to-zero
   off, as here, the ulp arithmetic of a zero hi would be subnormal, and every such operation costs
   a microcode assist (it made the whole loop 10x slower: positive x have hi = 0 here). */
static ELUKIT_INLINE int certain(double hi, double lo) {
    double a = fabs(hi) > 0x1p-900 ? fabs(hi) : 0x1p-900;
    double up = from_bits(to_bits(a) + 1) - a;                 /* ulp above |hi| */
    double down = a - from_bits(to_bits(a) - 1);               /* ulp below (half of up at a power of 2) */
    double half = ((hi >= 0.0) == (lo >= 0.0) ? up : down) * 0.5;
    return fabs(lo) + a * 0x1p-66 < half;
}

/* expm1(q + q_lo) - as 2^k T (1 + E) - 1 - for -60 <= q <= 0: returns (T(1+E)) and -1 separately
   folded in by the callers. */
typedef struct {
    double t_hi, t_lo;
    dd e; /* expm1(r) */
    int64_t k;
} accurate_reduced;

static ELUKIT_INLINE accurate_reduced accurate_reduce(double q, double q_lo) {
    double shifted = fma(q, INV_L128, ROUND_SHIFT);
    double n = shifted - ROUND_SHIFT;
    int64_t n_int = (int64_t)(to_bits(shifted) - to_bits(ROUND_SHIFT));
    dd r = two_sum(fma(-n, L128_HI, q), fma(-n, L128_LO, q_lo)); /* the first term is exact */
    dd square = two_product(r.hi, r.hi);
    double poly = fma(fma(fma(fma(fma(1.0 / 40320.0, r.hi, 1.0 / 5040.0), r.hi, 1.0 / 720.0), r.hi, 1.0 / 120.0), r.hi,
                          1.0 / 24.0), r.hi, 1.0 / 6.0);
    double cube_tail = (square.hi * r.hi) * poly;
    dd e = fast_two_sum(r.hi, square.hi * 0.5);                    /* |r| > r^2/2 */
    e.lo += r.lo + (square.lo * 0.5 + (r.hi * r.lo + cube_tail));
    int64_t j = n_int & 127;
    return (accurate_reduced){EXP2_HI[j], EXP2_LO[j], e, n_int >> 7};
}

typedef struct {
    double value;
    int64_t unsure;
} rounded;

/* unit: c = 1 exactly (ELU and CELU with alpha 1), where the product by c and its renormalisation
   are the identity on v (v is normalised), so they are skipped: the same bits. */
static ELUKIT_INLINE rounded accurate_value_of(double x, const constants *k, int has_beta, int unit) {
    ratio t = divide(x, k->beta, has_beta, VALUE_CLAMP);
    accurate_reduced e = accurate_reduce(t.q, t.q_lo);
    double power = power_of_two(e.k);                            /* k in [-87, 0] */
    double a = power * e.t_hi;
    dd m = fast_two_sum(-1.0, a);                                /* a - 1, exact */
    dd te = product_dd_dd(e.t_hi, e.t_lo, e.e.hi, e.e.lo);       /* T E */
    dd u = two_sum(m.hi, power * te.hi);
    double tail = u.lo + (m.lo + (power * e.t_lo + power * te.lo));
    dd v = fast_two_sum(u.hi, tail);                             /* expm1(x/beta) */
    dd c = v;
    if (!unit) {
        c = product_dd_dd(k->c_hi, k->c_lo, v.hi, v.lo);
        c = fast_two_sum(c.hi, c.lo);
    }
    double positive = x * k->scale;
    int64_t is_positive = x > 0.0;
    double result = copysign(is_positive ? positive : c.hi, x);
    int64_t doubtful = (certain(c.hi, c.lo) ^ 1) | (fabs(x) < 0x1p-900) | (fabs(c.hi) < 0x1p-960);
    return (rounded){x != x ? x : result, (is_positive ^ 1) & (x == x) & (x != 0.0) & doubtful};
}

static ELUKIT_INLINE rounded accurate_value(double x, const constants *k, int has_beta) {
    return accurate_value_of(x, k, has_beta, 0);
}

static ELUKIT_INLINE rounded accurate_value_unit(double x, const constants *k, int has_beta) {
    return accurate_value_of(x, k, has_beta, 1);
}

static ELUKIT_INLINE rounded accurate_exponential(double x, const constants *k, int has_beta) {
    ratio t = divide(x, k->beta, has_beta, k->floor);
    accurate_reduced e = accurate_reduce(t.below ? 0.0 : t.q, t.below ? 0.0 : t.q_lo);
    dd te = two_product(e.t_hi, e.e.hi);
    dd w = fast_two_sum(e.t_hi, te.hi);                          /* T (1 + E), |T| >= 1 > |T E| */
    w.lo += te.lo + (e.t_hi * e.e.lo + (e.t_lo + e.t_lo * e.e.hi));
    dd z = product_dd_dd(k->m_hi, k->m_lo, w.hi, w.lo);
    z = fast_two_sum(z.hi, z.lo);
    int64_t total = e.k + k->m_exponent;
    int64_t first = (int64_t)(((uint64_t)(total + 2048)) >> 1) - 1024;
    double negative = z.hi * power_of_two(first) * power_of_two(total - first);
    negative = negative * (t.below ? 0.0 : 1.0);                 /* below 2^-2043: rounds to +0 */
    int64_t is_positive = x > 0.0;
    double result = is_positive ? k->positive : negative;
    int64_t outside = (fabs(negative) < 0x1p-1000) | (fabs(negative) > 0x1p1000);
    int64_t doubtful = (certain(z.hi, z.lo) ^ 1) | outside;
    return (rounded){x != x ? x : result, (is_positive ^ 1) & (x == x) & (t.below ^ 1) & doubtful};
}

/* Stage 2, binary128. */
static double quad_value(double x, const constants *k) {
    quad c = (quad)k->c_hi + (quad)k->c_lo;
    quad q = (quad)x / (quad)k->beta;
    return copysign((double)(c * QUAD_EXPM1(q)), x);
}

static double quad_exponential(double x, const constants *k) {
    quad m = ((quad)k->m_hi + (quad)k->m_lo) * QUAD_LDEXP((quad)1, (int)k->m_exponent);
    quad q = (quad)x / (quad)k->beta;
    return (double)(m * QUAD_EXP(q));
}

/* Stage 1 marks an element it cannot round as NaN in `out` (a non-NaN input never gives NaN), so
   that its loop reads and writes doubles only and vectorises; stage 2 then scans a tile for the
   marks while it is still in cache (a second pass over the whole arrays cost 10-15% at 2^22), and
   only in tiles that have one: a vectorised test for any NaN comes first, as the scan itself is
   scalar (the test inside the first loop stopped its vectorisation). */
#define ACCURATE_TILE 1024
#define DEFINE_ACCURATE_LOOP(NAME, FUNCTION, QUAD, HAS_BETA)                                              \
    ELUKIT_CLONES                                                                                            \
    static void NAME(const double *restrict x, double *restrict out, int64_t n, const constants *pk) {    \
        const constants k = *pk;                                                                             \
        for (int64_t start = 0; start < n; start += ACCURATE_TILE) {                                        \
            int64_t end = n - start < ACCURATE_TILE ? n : start + ACCURATE_TILE;                            \
            for (int64_t i = start; i < end; i++) {                                                          \
                rounded r = FUNCTION(x[i], &k, HAS_BETA);                                                    \
                out[i] = r.unsure ? NAN : r.value;                                                           \
            }                                                                                                \
            int64_t any = 0;                                                                                 \
            for (int64_t i = start; i < end; i++) any |= out[i] != out[i];                                   \
            for (int64_t i = start; any && i < end; i++)                                                     \
                if (out[i] != out[i] && x[i] == x[i]) out[i] = QUAD(x[i], &k);                              \
        }                                                                                                    \
    }

DEFINE_ACCURATE_LOOP(accurate_value_plain, accurate_value, quad_value, 0)
DEFINE_ACCURATE_LOOP(accurate_value_beta, accurate_value, quad_value, 1)
DEFINE_ACCURATE_LOOP(accurate_value_unit_plain, accurate_value_unit, quad_value, 0)
DEFINE_ACCURATE_LOOP(accurate_exponential_plain, accurate_exponential, quad_exponential, 0)
DEFINE_ACCURATE_LOOP(accurate_exponential_beta, accurate_exponential, quad_exponential, 1)

typedef struct {
    const double *x;
    double *out;
    int64_t n;
    const constants *k;
    int exponential;
} accurate_task;

static void *run_accurate(void *argument) {
    const accurate_task *t = (const accurate_task *)argument;
    if (t->exponential)
        (t->k->has_beta ? accurate_exponential_beta : accurate_exponential_plain)(t->x, t->out, t->n, t->k);
    else
        (t->k->has_beta                                   ? accurate_value_beta
         : t->k->c_hi == 1.0 && t->k->c_lo == 0.0 ? accurate_value_unit_plain
                                                  : accurate_value_plain)(t->x, t->out, t->n, t->k);
    return NULL;
}

/* Splits the elements across `threads` (at least MIN_ELEMENTS_PER_THREAD each); the threads
   inherit the caller's cleared flush-to-zero state (pthreads copy the floating-point environment). */
static void run_accurate_parallel(const double *x, double *out, int64_t n, const constants *k, int exponential,
                                  int threads) {
    int64_t most = n / MIN_ELEMENTS_PER_THREAD;
    int count = threads < most ? threads : (int)(most < 1 ? 1 : most);
    if (count > MAX_THREADS) count = MAX_THREADS;
    accurate_task tasks[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 0; i < count; i++) {
        int64_t begin = n * i / count, end = n * (i + 1) / count;
        tasks[i] = (accurate_task){x + begin, out + begin, end - begin, k, exponential};
    }
    for (int i = 1; i < count; i++) started[i] = pthread_create(&ids[i], NULL, run_accurate, &tasks[i]) == 0;
    run_accurate(&tasks[0]);
    for (int i = 1; i < count; i++) {
        if (started[i])
            pthread_join(ids[i], NULL);
        else
            run_accurate(&tasks[i]);
    }
}

static XLA_FFI_Error *fail(const XLA_FFI_CallFrame *frame, const char *message) {
    XLA_FFI_Error_Create_Args args = {XLA_FFI_Error_Create_Args_STRUCT_SIZE, NULL, message,
                                      XLA_FFI_Error_Code_INVALID_ARGUMENT};
    return frame->api->XLA_FFI_Error_Create(&args);
}

/* XLA asks a handler for the FFI version it was compiled against before it first calls it. */
static int answered_metadata(XLA_FFI_CallFrame *frame) {
    XLA_FFI_Extension_Base *extension = frame->extension_start;
    if (extension == NULL || extension->type != XLA_FFI_Extension_Metadata) return 0;
    XLA_FFI_Metadata *metadata = ((XLA_FFI_Metadata_Extension *)extension)->metadata;
    metadata->api_version.major_version = XLA_FFI_API_MAJOR;
    metadata->api_version.minor_version = XLA_FFI_API_MINOR;
    metadata->traits = 0;
    return 1;
}

static int64_t element_count(const XLA_FFI_Buffer *buffer) {
    int64_t count = 1;
    for (int64_t i = 0; i < buffer->rank; i++) count *= buffer->dims[i];
    return count;
}

static int same_shape(const XLA_FFI_Buffer *a, const XLA_FFI_Buffer *b) {
    if (a->rank != b->rank || a->dtype != b->dtype) return 0;
    for (int64_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i]) return 0;
    return 1;
}

static XLA_FFI_Error *exponential_linear(XLA_FFI_CallFrame *frame) {
    if (answered_metadata(frame)) return NULL;
    if (frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return NULL;
    int64_t operands = frame->args.size;
    if (operands < 1 || operands > 2 || frame->rets.size != 1 || frame->args.types[0] != XLA_FFI_ArgType_BUFFER ||
        (operands == 2 && frame->args.types[1] != XLA_FFI_ArgType_BUFFER) ||
        frame->rets.types[0] != XLA_FFI_RetType_BUFFER)
        return fail(frame, "elukit_exponential_linear: expects operands (x) or (x, grad) and one result");
    const XLA_FFI_Buffer *x = (const XLA_FFI_Buffer *)frame->args.args[0];
    const XLA_FFI_Buffer *grad = operands == 2 ? (const XLA_FFI_Buffer *)frame->args.args[1] : NULL;
    const XLA_FFI_Buffer *out = (const XLA_FFI_Buffer *)frame->rets.rets[0];
    if (x->dtype != XLA_FFI_DataType_F32 && x->dtype != XLA_FFI_DataType_F64)
        return fail(frame, "elukit_exponential_linear: x must be float32 or float64");
    if (!same_shape(x, out) || (grad != NULL && !same_shape(x, grad)))
        return fail(frame, "elukit_exponential_linear: grad and the result must match x in dtype and shape");
    const XLA_FFI_Array *plan = NULL;
    for (int64_t i = 0; i < frame->attrs.size; i++) {
        const XLA_FFI_ByteSpan *name = frame->attrs.names[i];
        if (name->len == 4 && memcmp(name->ptr, "plan", 4) == 0 && frame->attrs.types[i] == XLA_FFI_AttrType_ARRAY)
            plan = (const XLA_FFI_Array *)frame->attrs.attrs[i];
    }
    if (plan == NULL || plan->dtype != XLA_FFI_DataType_F64 || plan->size != PLAN_LENGTH)
        return fail(frame, "elukit_exponential_linear: needs the float64 array attribute 'plan' of 13 values");
    const double *p = (const double *)plan->data;
    int kind = (int)p[0], threads = (int)p[1];
    int correctly_rounded = (kind & CORRECTLY_ROUNDED) != 0;
    kind &= ~CORRECTLY_ROUNDED;
    if (kind < 0 || kind > (EXPONENTIAL | FAST | LINEAR) || (grad != NULL && (kind & EXPONENTIAL) == VALUE) ||
        (correctly_rounded && (grad != NULL || (kind & (FAST | LINEAR)) || x->dtype != XLA_FFI_DataType_F64)))
        return fail(frame, "elukit_exponential_linear: inconsistent kind");
    constants k;
    k.c_hi = p[2], k.c_lo = p[3], k.d_hi = p[4], k.d_lo = p[5], k.m_hi = p[6], k.m_lo = p[7];
    k.floor = p[9], k.positive = p[10], k.scale = p[11], k.beta = p[12];
    complete_constants(&k, (long long)p[8]);
    int64_t count = element_count(x);
    if (count == 0) return NULL;
    task whole = {kind, x->dtype == XLA_FFI_DataType_F64, (const char *)x->data,
                  grad != NULL ? (const char *)grad->data : NULL, (char *)out->data, (Py_ssize_t)count, &k, NULL};
    fp_state saved = keep_subnormals();
    if (correctly_rounded)
        run_accurate_parallel((const double *)x->data, (double *)out->data, count, &k, kind & EXPONENTIAL, threads);
    else
        run_parallel(whole, threads);
    restore_fp_state(saved);
    return NULL;
}

static PyObject *handler(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyCapsule_New((void *)exponential_linear, NULL, NULL);
}

static PyMethodDef ffi_methods[] = {
    {"handler", handler, METH_NOARGS,
     "handler()\n\nThe XLA FFI handler of the exponential-linear kernels, as a PyCapsule for "
     "jax.ffi.register_ffi_target(..., platform='cpu')."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ffi_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "elukit.jax._ffi_kernels",
    .m_doc = "elukit's compiled exponential-linear kernels as an XLA FFI handler (see elukit.jax.functional).",
    .m_size = -1,
    .m_methods = ffi_methods,
};

PyMODINIT_FUNC PyInit__ffi_kernels(void) { return PyModule_Create(&ffi_module); }
