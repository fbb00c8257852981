/* A test driver for elukit's compiled kernels outside Python, so that the same kernels can be built
   for another architecture (aarch64, run under qemu-user) and compared bit for bit with the native
   build (tests/test_native_aarch64.py builds both and compares them).

   It includes src/elukit/jax/_ffi_kernels.c (which includes src/elukit/_exponential_linear.c) and
   is compiled with setup.py's flags. The Python bindings in those files are never called: the
   build drops them with -ffunction-sections -fdata-sections -Wl,--gc-sections, so no libpython
   is needed.

   Usage: kernels_driver CONSTANTS OUTPUT
   CONSTANTS: one line per (name, order): `name order c_hi c_lo d_hi d_lo m_hi m_lo m_exponent
   floor positive scale beta`, the tuple of elukit._native.derivative_constants (or
   linear_constants for names starting with "linear"), floats in C99 hex (%a) so that they are
   read exactly. Order 1 serves the value and f', order 2 f''.
   OUTPUT: a binary file of sections: a 48-byte NUL-padded name, the element size (uint32: 4 or
   8), the element count (uint64), then the elements' bits. It holds the inputs too, so a
   mismatch can be checked against mpmath.
   stdout: a few `check name value` lines about the floating-point control register (FPCR on
   aarch64, MXCSR on x86) and the stage-1 counts; the caller asserts on them.

   Every input is made from a fixed integer generator with exact floating-point operations only,
   so both builds evaluate the same inputs. */
#include "../../src/elukit/jax/_ffi_kernels.c"

#include <stdio.h>
#include <stdlib.h>

/* ---- the control register, set as XLA sets it (with the driver's own accessors, so that a broken
   keep_subnormals/restore_fp_state in the handler cannot hide itself) -------------------------------- */
#if defined(__x86_64__) || defined(__i386__)
static fp_state read_fp_state(void) { return _mm_getcsr(); }
static void write_fp_state(fp_state state) { _mm_setcsr(state); }
#define FLUSH_BITS 0x8040u /* MXCSR FTZ and DAZ */
#define ARCH_NAME "x86_64"
#elif defined(__aarch64__)
static fp_state read_fp_state(void) {
    fp_state state;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(state));
    return state;
}
static void write_fp_state(fp_state state) { __asm__ __volatile__("msr fpcr, %0" : : "r"(state)); }
#define FLUSH_BITS (1ULL << 24) /* FPCR.FZ, the bit XLA (tsl's denormal.cc) sets */
#define ARCH_NAME "aarch64"
#endif

static void set_flush_to_zero(void) { write_fp_state(read_fp_state() | FLUSH_BITS); }

/* ---- inputs ------------------------------------------------------------------------------------ */
static uint64_t generator_state = 0x243f6a8885a308d3ULL;

static uint64_t next_bits(void) { /* splitmix64 */
    uint64_t z = (generator_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform(void) { return (double)(next_bits() >> 11) * 0x1p-53; } /* exact, in [0, 1) */

static double normal3(void) { /* 3 N(0, 1) roughly (Irwin-Hall of 12): exact IEEE operations only */
    double sum = 0.0;
    for (int i = 0; i < 12; i++) sum += uniform();
    return 3.0 * (sum - 6.0);
}

static double with_exponent_field(uint64_t bits, uint64_t field) {
    return from_bits((bits & 0x800fffffffffffffULL) | (field << 52));
}

/* Random bits with an exponent field below `fields` (+ `lowest`); two statements, as the order in
   which C evaluates a call's arguments is unspecified (x86 and aarch64 GCC differ). */
static double random_binade(uint64_t lowest, uint64_t fields) {
    uint64_t bits = next_bits();
    uint64_t field = lowest + next_bits() % fields;
    return with_exponent_field(bits, field);
}

typedef struct {
    double *data;
    int64_t n, capacity;
} doubles;

static void push(doubles *a, double v) {
    if (a->n == a->capacity) {
        a->capacity = a->capacity ? 2 * a->capacity : 1024;
        a->data = realloc(a->data, (size_t)a->capacity * sizeof(double));
        if (a->data == NULL) abort();
    }
    a->data[a->n++] = v;
}

/* Special values, log-uniform over all binades, N(0, 9), uniform on the negative branch down to
   the derivatives' underflow and flush floor, subnormals, and tiny |x| < 2^-900 (binary128 stage). */
static doubles float64_inputs(void) {
    doubles x = {0};
    const double special[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, -NAN, 0x1p-1074, -0x1p-1074, 0x1p-1022, -0x1p-1022,
                              -0x1p-1022 / 3, -0x1.fffffffffffffp-1023, 0x1.fffffffffffffp+1023, -0x1.fffffffffffffp+1023,
                              -1e-310, -1e-300, -0x1p-900, -0x1.fffffffffffffp-901, -0x1p-60, -0x1p-61, -1e-20,
                              -1.0, 1.0, -0.5, -3.0, -30.0, -60.0, -60.5, -87.3, -88.7, -103.9, -104.0, -110.0,
                              -700.0, -708.4, -709.8, -744.5, -745.2, -1400.0, -1416.0, -1420.0, -2100.0, -1e30, 1e30};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) push(&x, special[i]);
    for (int i = 0; i < 8192; i++) push(&x, random_binade(0, 2047));
    for (int i = 0; i < 16384; i++) push(&x, normal3());
    for (int i = 0; i < 8192; i++) push(&x, -2200.0 * uniform());
    for (int i = 0; i < 4096; i++) push(&x, -40.0 * uniform());
    for (int i = 0; i < 2048; i++) push(&x, with_exponent_field(next_bits(), 0));          /* subnormal */
    for (int i = 0; i < 2048; i++) push(&x, random_binade(1, 123)); /* < 2^-900 */
    return x;
}

typedef struct {
    float *data;
    int64_t n;
} floats;

/* The float64 inputs narrowed, and float32 bit patterns over all binades (subnormals included). */
static floats float32_inputs(const doubles *x) {
    floats f = {malloc((size_t)(x->n + 16384) * sizeof(float)), x->n + 16384};
    for (int64_t i = 0; i < x->n; i++) f.data[i] = (float)x->data[i];
    for (int64_t i = x->n; i < f.n; i++) {
        uint32_t bits = (uint32_t)next_bits();
        uint32_t field = (uint32_t)(next_bits() % 255);
        bits = (bits & 0x807fffffu) | (field << 23);
        memcpy(&f.data[i], &bits, sizeof bits);
    }
    return f;
}

/* ---- output ------------------------------------------------------------------------------------ */
static FILE *output;

static void write_section(const char *name, const void *data, uint32_t size, uint64_t count) {
    char padded[48] = {0};
    strncpy(padded, name, sizeof padded - 1);
    if (fwrite(padded, 1, sizeof padded, output) != sizeof padded || fwrite(&size, sizeof size, 1, output) != 1 ||
        fwrite(&count, sizeof count, 1, output) != 1 || (count && fwrite(data, size, count, output) != count)) {
        fprintf(stderr, "write failed\n");
        exit(2);
    }
}

/* ---- the FFI handler, called as XLA calls it ---------------------------------------------------- */
static int failures = 0;

static void check(const char *name, long long value) { printf("check %s %lld\n", name, value); }

/* One call of the handler with flush-to-zero set beforehand (XLA's CPU threads run so), checking
   that the handler leaves the control register as it found it. */
static void call_handler(double kind, int threads, const double *constants, int is_double, const void *x,
                         const void *grad, void *out, int64_t n) {
    int64_t dims[1] = {n};
    XLA_FFI_DataType dtype = is_double ? XLA_FFI_DataType_F64 : XLA_FFI_DataType_F32;
    XLA_FFI_Buffer x_buffer = {XLA_FFI_Buffer_STRUCT_SIZE, NULL, dtype, (void *)x, 1, dims};
    XLA_FFI_Buffer grad_buffer = {XLA_FFI_Buffer_STRUCT_SIZE, NULL, dtype, (void *)grad, 1, dims};
    XLA_FFI_Buffer out_buffer = {XLA_FFI_Buffer_STRUCT_SIZE, NULL, dtype, out, 1, dims};
    XLA_FFI_ArgType arg_types[2] = {XLA_FFI_ArgType_BUFFER, XLA_FFI_ArgType_BUFFER};
    void *args[2] = {&x_buffer, &grad_buffer};
    XLA_FFI_RetType ret_types[1] = {XLA_FFI_RetType_BUFFER};
    void *rets[1] = {&out_buffer};
    double plan_values[PLAN_LENGTH] = {kind, (double)threads};
    memcpy(plan_values + 2, constants, 11 * sizeof(double));
    XLA_FFI_Array plan = {XLA_FFI_DataType_F64, PLAN_LENGTH, plan_values};
    XLA_FFI_ByteSpan plan_name = {"plan", 4};
    XLA_FFI_ByteSpan *names[1] = {&plan_name};
    XLA_FFI_AttrType attr_types[1] = {XLA_FFI_AttrType_ARRAY};
    void *attrs[1] = {&plan};
    XLA_FFI_CallFrame frame = {XLA_FFI_CallFrame_STRUCT_SIZE, NULL, NULL, NULL, XLA_FFI_ExecutionStage_EXECUTE,
                               {XLA_FFI_Args_STRUCT_SIZE, NULL, grad ? 2 : 1, arg_types, args},
                               {XLA_FFI_Rets_STRUCT_SIZE, NULL, 1, ret_types, rets},
                               {XLA_FFI_Attrs_STRUCT_SIZE, NULL, 1, attr_types, names, attrs},
                               NULL};
    fp_state before = read_fp_state();
    set_flush_to_zero();
    fp_state flushing = read_fp_state();
    XLA_FFI_Error *error = exponential_linear(&frame);
    fp_state after = read_fp_state();
    write_fp_state(before);
    if ((flushing & FLUSH_BITS) != FLUSH_BITS) failures++; /* the flag was really set */
    if (error != NULL) {
        fprintf(stderr, "handler refused kind %g\n", kind);
        exit(2);
    }
    if (after != flushing) failures++;
}

/* ---- the kernels ---------------------------------------------------------------------------------- */
typedef struct {
    char name[32];
    int order;
    double c[11];
} constant_line;

static constant_line lines[32];
static int line_count = 0;

static const double *constants_of(const char *name, int order) {
    for (int i = 0; i < line_count; i++)
        if (strcmp(lines[i].name, name) == 0 && lines[i].order == order) return lines[i].c;
    fprintf(stderr, "no constants for %s order %d\n", name, order);
    exit(2);
}

/* The kernels' constants from a line's 11 values, as the handler forms them. */
static constants constants_from(const double *c) {
    constants k;
    k.c_hi = c[0], k.c_lo = c[1], k.d_hi = c[2], k.d_lo = c[3], k.m_hi = c[4], k.m_lo = c[5];
    k.floor = c[7], k.positive = c[8], k.scale = c[9], k.beta = c[10];
    complete_constants(&k, (long long)c[6]);
    return k;
}

static void read_constants(const char *path) {
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        perror(path);
        exit(2);
    }
    char token[64];
    while (line_count < 32 && fscanf(file, "%31s %d", lines[line_count].name, &lines[line_count].order) == 2) {
        for (int j = 0; j < 11; j++) {
            if (fscanf(file, "%63s", token) != 1) exit(2);
            lines[line_count].c[j] = strtod(token, NULL);
        }
        line_count++;
    }
    fclose(file);
}

/* The float64 correctly rounded kernels (kind | CORRECTLY_ROUNDED): over the inputs, and over the
   hard cases that stage 1 cannot round among 2^20 N(0, 9) inputs. */
static void accurate_sections(const char *name, const doubles *x) {
    const char *quantities[3] = {"value", "derivative", "second"};
    char section[96];
    double *out = malloc((size_t)x->n * sizeof(double));
    for (int q = 0; q < 3; q++) {
        const double *c = constants_of(name, q == 2 ? 2 : 1);
        double kind = (q == 0 ? VALUE : EXPONENTIAL) | CORRECTLY_ROUNDED;
        call_handler(kind, 1, c, 1, x->data, NULL, out, x->n);
        snprintf(section, sizeof section, "f64.accurate.%s.%s", name, quantities[q]);
        write_section(section, out, 8, (uint64_t)x->n);

        /* stage 1 alone, as the loop runs it, to find the hard cases */
        constants k = constants_from(c);
        doubles hard = {0};
        uint64_t saved = generator_state;
        generator_state = 0x13198a2e03707344ULL + (uint64_t)q;
        for (int i = 0; i < (1 << 20); i++) {
            double xi = normal3();
            rounded r = q == 0 ? accurate_value(xi, &k, k.has_beta) : accurate_exponential(xi, &k, k.has_beta);
            if (r.unsure) push(&hard, xi);
        }
        generator_state = saved;
        double *hard_out = malloc((size_t)(hard.n ? hard.n : 1) * sizeof(double));
        if (hard.n) call_handler(kind, 1, c, 1, hard.data, NULL, hard_out, hard.n);
        snprintf(section, sizeof section, "f64.hard.%s.%s.x", name, quantities[q]);
        write_section(section, hard.data, 8, (uint64_t)hard.n);
        snprintf(section, sizeof section, "f64.hard.%s.%s", name, quantities[q]);
        write_section(section, hard_out, 8, (uint64_t)hard.n);
        snprintf(section, sizeof section, "hard_count.%s.%s", name, quantities[q]);
        check(section, hard.n);
        free(hard.data);
        free(hard_out);
    }
    free(out);
}

/* The kernels of _exponential_linear.c through the handler: float64 (double-double and FAST) and
   float32, value and derivatives, without and with a gradient operand. */
static void kernel_sections(const char *name, int linear, const doubles *x, const double *grad64, const floats *f,
                            const float *grad32) {
    char section[96];
    double *out = malloc((size_t)x->n * sizeof(double));
    float *out32 = malloc((size_t)f->n * sizeof(float));
    const char *quantities[3] = {"value", "derivative", "second"};
    for (int q = 0; q < 3; q++) {
        const double *c = constants_of(name, q == 2 ? 2 : 1);
        int base = (q == 0 ? VALUE : EXPONENTIAL) | (linear ? LINEAR : 0);
        for (int fast = 0; fast < 2; fast++) {
            if (fast && linear) continue;
            for (int with_grad = 0; with_grad < (q == 0 ? 1 : 2); with_grad++) {
                call_handler(base | (fast ? FAST : 0), 1, c, 1, x->data, with_grad ? grad64 : NULL, out, x->n);
                snprintf(section, sizeof section, "f64.%s.%s.%s%s", fast ? "fast" : "dd", name, quantities[q],
                         with_grad ? ".grad" : "");
                write_section(section, out, 8, (uint64_t)x->n);
            }
        }
        for (int with_grad = 0; with_grad < (q == 0 ? 1 : 2); with_grad++) {
            call_handler(base, 1, c, 0, f->data, with_grad ? grad32 : NULL, out32, f->n);
            snprintf(section, sizeof section, "f32.%s.%s%s", name, quantities[q], with_grad ? ".grad" : "");
            write_section(section, out32, 4, (uint64_t)f->n);
        }
    }
    free(out);
    free(out32);
}

/* f and f' from one exponential (kind BOTH: elukit.torch's training forward), float32 and float64. */
static void both_sections(const char *name, const doubles *x, const floats *f) {
    constants k = constants_from(constants_of(name, 1));
    char section[96];
    double *value = malloc((size_t)x->n * sizeof(double)), *derivative = malloc((size_t)x->n * sizeof(double));
    run_parallel((task){EXPONENTIAL | FAST | BOTH, 1, (const char *)x->data, NULL, (char *)value, x->n, &k,
                        (char *)derivative},
                 1);
    snprintf(section, sizeof section, "f64.both.%s.value", name);
    write_section(section, value, 8, (uint64_t)x->n);
    snprintf(section, sizeof section, "f64.both.%s.derivative", name);
    write_section(section, derivative, 8, (uint64_t)x->n);
    float *value32 = malloc((size_t)f->n * sizeof(float)), *derivative32 = malloc((size_t)f->n * sizeof(float));
    run_parallel((task){EXPONENTIAL | BOTH, 0, (const char *)f->data, NULL, (char *)value32, f->n, &k,
                        (char *)derivative32},
                 1);
    snprintf(section, sizeof section, "f32.both.%s.value", name);
    write_section(section, value32, 4, (uint64_t)f->n);
    snprintf(section, sizeof section, "f32.both.%s.derivative", name);
    write_section(section, derivative32, 4, (uint64_t)f->n);
    free(value), free(derivative), free(value32), free(derivative32);
}

/* Flush-to-zero: the handler must keep subnormal results with the flag set around it, on its own
   threads too; the same kernels run with the flag left set must lose them (else the check could
   not fail). */
static void flush_checks(const char *name) {
    const double *c = constants_of(name, 1);
    enum { N = 4 * 65536 }; /* enough elements for 4 threads */
    double *x = malloc(N * sizeof(double)), *one = malloc(N * sizeof(double)), *four = malloc(N * sizeof(double));
    for (int i = 0; i < N; i++) x[i] = i % 2 ? -1e-310 * (1.0 + i * 0x1p-20) : -740.0 - i * 0x1p-16; /* f, f' subnormal */
    int64_t subnormal[2] = {0, 0};
    for (int q = 0; q < 2; q++) {
        double kind = (q == 0 ? VALUE : EXPONENTIAL) | CORRECTLY_ROUNDED;
        call_handler(kind, 1, c, 1, x, NULL, one, N);
        call_handler(kind, 4, c, 1, x, NULL, four, N);
        int64_t same = memcmp(one, four, N * sizeof(double)) == 0;
        for (int i = 0; i < N; i++) subnormal[q] += four[i] != 0.0 && fabs(four[i]) < 0x1p-1022;
        check(q == 0 ? "threads_same_bits.value" : "threads_same_bits.derivative", same);
        call_handler(q == 0 ? VALUE : EXPONENTIAL, 4, c, 1, x, NULL, four, N);
        int64_t kept = 0;
        for (int i = 0; i < N; i++) kept += four[i] != 0.0 && fabs(four[i]) < 0x1p-1022;
        check(q == 0 ? "subnormal_kept.dd.value" : "subnormal_kept.dd.derivative", kept);
    }
    check("subnormal_kept.accurate.value", subnormal[0]);
    check("subnormal_kept.accurate.derivative", subnormal[1]);
    check("subnormal_elements", N / 2);
    /* control: the kernels themselves with the flag left set */
    fp_state before = read_fp_state();
    set_flush_to_zero();
    constants k = constants_from(c);
    accurate_value_plain(x, one, N, &k); /* SELU: beta 1 */
    write_fp_state(before);
    int64_t kept = 0;
    for (int i = 0; i < N; i++) kept += one[i] != 0.0 && fabs(one[i]) < 0x1p-1022;
    check("subnormal_kept_with_flush_set.control", kept);
    free(x), free(one), free(four);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CONSTANTS OUTPUT\n", argv[0]);
        return 2;
    }
    read_constants(argv[1]);
    output = fopen(argv[2], "wb");
    if (output == NULL) {
        perror(argv[2]);
        return 2;
    }
    printf("arch %s\n", ARCH_NAME);
    doubles x = float64_inputs();
    floats f = float32_inputs(&x);
    double *grad64 = malloc((size_t)x.n * sizeof(double));
    float *grad32 = malloc((size_t)f.n * sizeof(float));
    for (int64_t i = 0; i < x.n; i++) grad64[i] = i % 97 == 0 ? random_binade(0, 2047) : normal3();
    for (int64_t i = 0; i < f.n; i++) grad32[i] = (float)grad64[i % x.n];
    write_section("input.f64", x.data, 8, (uint64_t)x.n);
    write_section("input.f32", f.data, 4, (uint64_t)f.n);
    write_section("grad.f64", grad64, 8, (uint64_t)x.n);
    write_section("grad.f32", grad32, 4, (uint64_t)f.n);
    const char *exponential[3] = {"elu", "selu", "celu3"};
    for (int i = 0; i < 3; i++) {
        accurate_sections(exponential[i], &x);
        kernel_sections(exponential[i], 0, &x, grad64, &f, grad32);
        both_sections(exponential[i], &x, &f);
    }
    kernel_sections("linear_leaky", 1, &x, grad64, &f, grad32);
    flush_checks("selu");
    check("fp_state_changed_by_handler", failures);
    fclose(output);
    return 0;
}
