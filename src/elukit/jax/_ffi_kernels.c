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
    if (kind < 0 || kind > (EXPONENTIAL | FAST | LINEAR) || (grad != NULL && (kind & EXPONENTIAL) == VALUE))
        return fail(frame, "elukit_exponential_linear: inconsistent kind");
    constants k;
    k.c_hi = p[2], k.c_lo = p[3], k.d_hi = p[4], k.d_lo = p[5], k.m_hi = p[6], k.m_lo = p[7];
    k.floor = p[9], k.positive = p[10], k.scale = p[11], k.beta = p[12];
    complete_constants(&k, (long long)p[8]);
    int64_t count = element_count(x);
    if (count == 0) return NULL;
    task whole = {kind, x->dtype == XLA_FFI_DataType_F64, (const char *)x->data,
                  grad != NULL ? (const char *)grad->data : NULL, (char *)out->data, (Py_ssize_t)count, &k};
    fp_state saved = keep_subnormals();
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
