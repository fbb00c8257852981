// elukit's operators in C++: a library of libtorch alone (no Python), so that a process that has not
// imported elukit (a TorchScript or torch.export artifact loaded with torch.ops.load_library, a
// libtorch program that dlopens it) runs graphs holding them, with the bits of eager elukit.
//
//   elukit::activation(Tensor x, str name, float[] params, int order=0, bool exact=False) -> Tensor
//   elukit::activation_backward(Tensor grad, Tensor x, str name, float[] params, int order=0,
//                               bool exact=False) -> Tensor
//   elukit::activation_(Tensor(a!) x, str name, float[] params, bool exact=False) -> ()
//
// and their torch.compile twins, activation_compiled, activation_backward_compiled and
// activation_compiled_ (the same schemas, no export decomposition; src/elukit/torch/_compiled.py),
// which get the same CPU and autograd kernels (see src/elukit/torch/_ops.py for what they compute). Registered here:
// - kernels (CPU; see the registration at the end): the compiled C kernels of src/elukit/_exponential_linear.c (compiled into this
//   library from the same source, _operator_kernels.c) for the specs that have them, the ELU family
//   (elu, selu, celu) and the piecewise-linear one (relu, leaky_relu), on float32/float64 tensors;
//   their constants are formed here exactly as elukit._native forms them (tests/test_torch_library.py
//   compares the bits for every spec of the registry). Everything else (other specs and dtypes,
//   orders whose constants need more than one rounding) goes to the Python kernel that
//   elukit.torch._ops registers under CompositeExplicitAutograd, or, where elukit's Python is not
//   imported, raises one error saying so. The tensor checks raise the Python checks' messages.
// - Autograd kernels of activation and activation_backward: backward is activation_backward one
//   order up, itself differentiable, so every order of reverse mode is exact; forward-mode AD is
//   computed the same way (tangent * f^(n+1)(x)), as native operators do it.
// - ADInplaceOrView of activation_ (the version counter) and its Autograd kernel: it keeps a copy of
//   x from before the write and differentiates at it with the operators above, so every derivative
//   of every order is inplace=False's, bit for bit; forward mode writes the tangent in place.
//   elukit.torch's Python (`_ops.InplaceFunction`) computes the same, where this library is not
//   loaded. So a process that loaded this library alone trains in place too.
// - The parameter checks of the specs it knows, with the messages of elukit's Python.
// - Meta kernels (meta tensors, FakeTensorMode, torch.export): elukit.torch's fake kernels in C++,
//   so elukit.torch registers none where this library is loaded.
// Vmap rules, the other devices and the export decomposition are elukit.torch's Python (`_ops.py`
// defines and registers whatever this library did not).

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cctype>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

extern "C" void elukit_kernels_run(int kind, int is_double, const void *x, const void *grad, std::ptrdiff_t grad_count,
                                   void *out, void *out2, std::ptrdiff_t count, const double *constants, int threads);

namespace {

using at::Tensor;
using torch::autograd::variable_list;

constexpr int VALUE = 0, EXPONENTIAL = 1, FAST = 2, LINEAR = 4;

// --- the tensor checks (the messages of elukit.torch._ops.check_input) --------------------------

std::string dtype_name(at::ScalarType type) {
    switch (type) {
        case at::kFloat: return "torch.float32";
        case at::kDouble: return "torch.float64";
        case at::kHalf: return "torch.float16";
        case at::kBFloat16: return "torch.bfloat16";
        case at::kComplexHalf: return "torch.complex32";
        case at::kComplexFloat: return "torch.complex64";
        case at::kComplexDouble: return "torch.complex128";
        case at::kBool: return "torch.bool";
        case at::kByte: return "torch.uint8";
        case at::kChar: return "torch.int8";
        case at::kShort: return "torch.int16";
        case at::kInt: return "torch.int32";
        case at::kLong: return "torch.int64";
        case at::kQInt8: return "torch.qint8";
        case at::kQUInt8: return "torch.quint8";
        case at::kQInt32: return "torch.qint32";
        default: {  // torch.uint16, torch.float8_e4m3fn, ...: c10's name in lower case, as Python writes it
            std::string text = c10::toString(type);
            for (char &c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            return "torch." + text;
        }
    }
}

std::string layout_name(at::Layout layout) {
    switch (layout) {
        case at::kSparse: return "torch.sparse_coo";
        case at::kSparseCsr: return "torch.sparse_csr";
        case at::kSparseCsc: return "torch.sparse_csc";
        case at::kSparseBsr: return "torch.sparse_bsr";
        case at::kSparseBsc: return "torch.sparse_bsc";
        case at::kMkldnn: return "torch._mkldnn";
        case at::kJagged: return "torch.jagged";
        default: return "torch.strided";
    }
}

void check_input(const Tensor &x, const char *argument) {
    TORCH_CHECK_TYPE(!x.is_complex(), argument, " must be a real floating-point tensor, got complex dtype ",
                     dtype_name(x.scalar_type()),
                     "; apply the activation to x.real and x.imag separately if that is what you mean");
    TORCH_CHECK_TYPE(x.is_floating_point(), argument, " must be a floating-point tensor, got dtype ",
                     dtype_name(x.scalar_type()), "; convert it with x.float()");
    TORCH_CHECK_TYPE(x.layout() == at::kStrided, argument, " must be a dense (strided) tensor, got layout ",
                     layout_name(x.layout()),
                     "; convert it with x.to_dense(), or apply the activation to x.values() of a sparse tensor");
}

void check_no_internal_overlap(const Tensor &x) {
    TORCH_CHECK(at::has_internal_overlap(x) != at::MemOverlap::Yes,
                "unsupported operation: more than one element of the written-to tensor refers to a single memory "
                "location. Please clone() the tensor before performing the operation.");
}

// --- the specs this library serves, and their kernel constants ----------------------------------
// (scale, alpha, divisor) of f(x) = scale x (x > 0), scale alpha expm1(x/divisor) (x <= 0), or
// (a, b) of f(x) = a x (x > 0), b x (x <= 0): each spec's exponential_linear / linear_branches form.
// Every parameter of these specs is checked finite and > 0 (elukit._spec.positive_finite); other
// values are left to elukit's Python, which raises its spec's error.

struct Form {
    bool linear;
    double first, second, third;
};

// repr(value) of a Python float: the shortest digits that read back as value, with Python's layout
// (an exponent below 1e-4 and from 1e16 on, ".0" on integers), so that the messages below are the
// Python checks' own.
std::string python_repr(double value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    if (value == 0.0) return std::signbit(value) ? "-0.0" : "0.0";
    char text[40];
    int precision = 1;
    for (; precision < 17; precision++) {
        std::snprintf(text, sizeof text, "%.*e", precision - 1, value);
        if (std::strtod(text, nullptr) == value) break;
    }
    std::snprintf(text, sizeof text, "%.*e", precision - 1, value);
    std::string written(text), digits;
    const size_t e = written.find('e');
    for (size_t i = 0; i < e; i++)
        if (std::isdigit(static_cast<unsigned char>(written[i]))) digits += written[i];
    const int point = std::atoi(written.c_str() + e + 1) + 1;  // value = 0.digits * 10^point
    const int count = static_cast<int>(digits.size());
    std::string result = value < 0 ? "-" : "";
    if (point <= -4 || point > 16) {
        const int exponent = point - 1;
        result += digits.substr(0, 1) + (count > 1 ? "." + digits.substr(1) : "") + "e" + (exponent < 0 ? "-" : "+") +
                  (std::abs(exponent) < 10 ? "0" : "") + std::to_string(std::abs(exponent));
    } else if (point <= 0) {
        result += "0." + std::string(-point, '0') + digits;
    } else if (point >= count) {
        result += digits + std::string(point - count, '0') + ".0";
    } else {
        result += digits.substr(0, point) + "." + digits.substr(point);
    }
    return result;
}

std::string python_list(c10::ArrayRef<double> values) {
    std::string text = "[";
    for (size_t i = 0; i < values.size(); i++) text += (i ? ", " : "") + python_repr(values[i]);
    return text + "]";
}

// The parameter names of the specs this library knows, in the spec's order.
std::optional<std::vector<const char *>> parameter_names(c10::string_view name) {
    if (name == "elu" || name == "celu") return std::vector<const char *>{"alpha"};
    if (name == "selu") return std::vector<const char *>{"alpha", "scale"};
    if (name == "relu") return std::vector<const char *>{};
    if (name == "leaky_relu") return std::vector<const char *>{"slope"};
    return std::nullopt;
}

// The spec checks of elukit's Python (`_ops.spec_for`, `_spec.positive_finite`), with their messages,
// for the specs this library knows: a bad parameter is the same error with or without elukit's
// Python (other names are left to it).
void check_parameters(c10::string_view name, c10::ArrayRef<double> params) {
    const auto names = parameter_names(name);
    if (!names) return;
    if (params.size() != names->size()) {
        std::string listed;
        for (size_t i = 0; i < names->size(); i++) listed += (i ? ", " : "") + std::string((*names)[i]);
        TORCH_CHECK_VALUE(false, "activation '", std::string(name), "' takes ", names->size(), " parameter(s) (",
                          listed.empty() ? "none" : listed, "), got ", params.size(), ": ", python_list(params));
    }
    for (size_t i = 0; i < params.size(); i++)
        TORCH_CHECK_VALUE(std::isfinite(params[i]) && params[i] > 0.0, "parameter '", (*names)[i],
                          "' must be finite and > 0, got ", python_repr(params[i]));
}

bool all_positive_finite(c10::ArrayRef<double> params, size_t count) {
    if (params.size() != count) return false;
    for (double value : params)
        if (!(std::isfinite(value) && value > 0.0)) return false;
    return true;
}

std::optional<Form> form_of(c10::string_view name, c10::ArrayRef<double> p) {
    if (name == "elu" && all_positive_finite(p, 1)) return Form{false, 1.0, p[0], 1.0};
    if (name == "selu" && all_positive_finite(p, 2)) return Form{false, p[1], p[0], 1.0};  // (alpha, scale)
    if (name == "celu" && all_positive_finite(p, 1)) return Form{false, 1.0, p[0], p[0]};
    if (name == "relu" && all_positive_finite(p, 0)) return Form{true, 1.0, 0.0, 0.0};
    if (name == "leaky_relu" && all_positive_finite(p, 1)) return Form{true, 1.0, p[0], 0.0};
    return std::nullopt;
}

using Constants = std::array<double, 11>;

// numerator / denominator as a double-double (hi, lo) = (RN(q), RN(q - RN(q))), q the exact quotient:
// the remainder numerator - hi * denominator is exact (one fma), and (q - hi) = remainder / denominator.
void quotient(double numerator, double denominator, double &hi, double &lo) {
    hi = numerator / denominator;
    lo = std::fma(-hi, denominator, numerator) / denominator;
}

constexpr int LARGEST_EXPONENT = 900;

// elukit._native.derivative_constants(form, order), formed without rationals: where it would need
// more than one rounding (a product scale*alpha that is inexact with a divisor != 1, or a power of
// the divisor that is inexact), nullopt (elukit's Python serves those).
std::optional<Constants> derivative_constants(double scale, double alpha, double divisor, int64_t order) {
    if (!(std::isfinite(scale) && scale > 0 && std::isfinite(alpha) && alpha > 0 && std::isfinite(divisor) &&
          divisor > 0) || order < 1)
        return std::nullopt;
    const double c_hi = scale * alpha, c_lo = std::fma(scale, alpha, -c_hi);
    int exponent_c;
    std::frexp(c_hi, &exponent_c);
    if (std::abs(exponent_c) > LARGEST_EXPONENT) return std::nullopt;
    double d_hi = c_hi, d_lo = c_lo, e_hi = c_hi, e_lo = c_lo;  // d = c/divisor, e = c/divisor^order
    if (divisor != 1.0) {
        if (c_lo != 0.0) return std::nullopt;
        quotient(c_hi, divisor, d_hi, d_lo);
        double power = divisor;
        for (int64_t k = 1; k < order; k++) {
            const double next = power * divisor;
            if (!std::isfinite(next) || next == 0.0 || std::fma(power, divisor, -next) != 0.0) return std::nullopt;
            power = next;
        }
        quotient(c_hi, power, e_hi, e_lo);
    }
    int exponent;
    std::frexp(e_hi, &exponent);
    exponent -= 1;
    if (std::abs(exponent) > LARGEST_EXPONENT) return std::nullopt;
    const double ln2 = std::log(2.0);
    const double floor = std::max((-2043.0 - exponent) * ln2, -2047.0 * ln2);
    return Constants{c_hi, c_lo, d_hi, d_lo, std::ldexp(e_hi, -exponent), std::ldexp(e_lo, -exponent),
                     static_cast<double>(exponent), floor, order == 1 ? scale : 0.0, scale, divisor};
}

struct Plan {
    int kind;
    Constants constants;
};

// (kind, constants) of the derivative of `order` (0: the value), as elukit._native.kernels_for and
// order_plan give them, or nullopt where the compiled kernels do not serve it from this library.
std::optional<Plan> plan_for(const Form &form, int64_t order) {
    if (form.linear) {
        const double a = form.first, b = form.second;
        const bool derivative = order <= 1;
        return Plan{(order == 0 ? VALUE : EXPONENTIAL) | LINEAR,
                    Constants{b, 0, 0, 0, derivative ? b : 0.0, 0, 0, 0, derivative ? a : 0.0, a, 1.0}};
    }
    // the spec is served only where f' and f'' are (elukit._native._plan); the value uses f''s constants
    if (!derivative_constants(form.first, form.second, form.third, 1) ||
        !derivative_constants(form.first, form.second, form.third, 2))
        return std::nullopt;
    auto constants = derivative_constants(form.first, form.second, form.third, order < 1 ? 1 : order);
    if (!constants) return std::nullopt;
    return Plan{order == 0 ? VALUE : EXPONENTIAL, *constants};
}

bool compiled_dtype(const Tensor &x) { return x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble; }

std::optional<Plan> served(const Tensor &x, c10::string_view name, c10::ArrayRef<double> params, int64_t order) {
    if (!x.device().is_cpu() || !compiled_dtype(x) || x.layout() != at::kStrided) return std::nullopt;
    auto form = form_of(name, params);
    if (!form) return std::nullopt;
    return plan_for(*form, order);
}

// f^(order)(x) (times grad where given: grad of x's dtype and shape) into `out` (laid out like the
// evaluated source; undefined: a new tensor): elukit.torch._kernels._compiled_kernel.
Tensor run_plan(const Plan &plan, bool exact, const Tensor &x, const Tensor &grad, Tensor out) {
    Tensor source = x.is_non_overlapping_and_dense() ? x : x.contiguous();
    if (!out.defined()) out = at::empty_like(source);  // the same strides as a dense source
    const int64_t count = source.numel();
    if (count == 0) return out;
    const void *gradient = nullptr;
    int64_t gradient_count = 0;
    Tensor laid_out;
    if (grad.defined()) {
        bool broadcast = true;
        for (auto stride : grad.strides()) broadcast = broadcast && stride == 0;
        if (broadcast) {  // sum().backward() hands in one value expanded to x's shape
            gradient = grad.data_ptr(), gradient_count = 1;
        } else {
            laid_out = grad;
            if (grad.strides() != source.strides() || !grad.is_non_overlapping_and_dense()) {
                laid_out = at::empty_like(source);
                laid_out.copy_(grad);
            }
            gradient = laid_out.data_ptr(), gradient_count = count;
        }
    }
    elukit_kernels_run(plan.kind | (exact ? 0 : FAST), source.scalar_type() == at::kDouble, source.data_ptr(),
                       gradient, gradient_count, out.data_ptr(), nullptr, count, plan.constants.data(),
                       at::get_num_threads());
    return out;
}

// --- elukit's Python kernels, for what this library does not serve ---------------------------------

std::string describe(const Tensor &x, c10::string_view name, c10::ArrayRef<double> params, int64_t order) {
    std::ostringstream text;
    text << "activation " << std::string(name) << " with parameters " << python_list(params) << ", derivative order "
         << order << ", on a " << dtype_name(x.scalar_type()) << " tensor";
    if (!x.device().is_cpu()) text << " on device " << x.device();
    return text.str();
}

// The CompositeExplicitAutograd kernel of `qualified` that elukit.torch._ops registers (Python) where
// elukit is imported; else one error naming what is missing.
void python_kernel(const char *qualified, const char *served_by, const std::string &what, torch::jit::Stack &stack) {
    auto op = c10::Dispatcher::singleton().findOp({qualified, ""});
    TORCH_CHECK(op && op->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd), served_by, ": ", what,
                " is not served by elukit's C++ operator library (it serves elu, selu, celu, relu and leaky_relu "
                "on CPU float32/float64 tensors and on meta tensors): `import elukit.torch` in this process for the "
                "other activations, dtypes and derivative orders (pip install 'elukit[torch]')");
    op->callBoxedForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd, stack);
}

void python_kernel(const char *qualified, const std::string &what, torch::jit::Stack &stack) {
    python_kernel(qualified, qualified, what, stack);
}

// --- CPU kernels --------------------------------------------------------------------------------

// Each kernel serves an operator and its torch.compile twin (`Qualified`: the operator whose Python
// kernel takes the cases the library hands back; see the twins at the end).
template <const char *Qualified>
Tensor activation_cpu(const Tensor &x, c10::string_view name, c10::ArrayRef<double> params, int64_t order,
                      bool exact) {
    check_input(x, "x");
    check_parameters(name, params);
    TORCH_CHECK_VALUE(order >= 0, "order must be >= 0, got ", order);
    if (auto plan = served(x, name, params, order)) return run_plan(*plan, exact, x, Tensor(), Tensor());
    torch::jit::Stack stack{x, std::string(name), params.vec(), order, exact};
    python_kernel(Qualified, describe(x, name, params, order), stack);
    return stack[0].toTensor();
}

template <const char *Qualified>
Tensor backward_cpu(const Tensor &grad, const Tensor &x, c10::string_view name, c10::ArrayRef<double> params,
                    int64_t order, bool exact) {
    check_input(x, "x");
    check_input(grad, "grad");
    check_parameters(name, params);
    TORCH_CHECK_VALUE(order >= 0, "order must be >= 0, got ", order);
    if (auto plan = served(x, name, params, order + 1)) {
        // elukit.torch._kernels.gradient_times_derivative: one pass where grad has x's dtype
        Tensor gradient = grad.sizes() == x.sizes() ? grad : grad.expand_as(x);
        if (gradient.scalar_type() == x.scalar_type() && gradient.device() == x.device())
            return run_plan(*plan, exact, x, gradient, Tensor());
        return gradient * run_plan(*plan, exact, x, Tensor(), Tensor());
    }
    torch::jit::Stack stack{grad, x, std::string(name), params.vec(), order, exact};
    python_kernel(Qualified, describe(x, name, params, order + 1), stack);
    return stack[0].toTensor();
}

template <const char *Qualified>
void inplace_cpu(const Tensor &x, c10::string_view name, c10::ArrayRef<double> params, bool exact) {
    check_input(x, "x");
    check_no_internal_overlap(x);
    check_parameters(name, params);
    if (auto plan = served(x, name, params, 0)) {
        if (x.is_non_overlapping_and_dense())
            run_plan(*plan, exact, x, Tensor(), x);
        else
            x.copy_(run_plan(*plan, exact, x, Tensor(), Tensor()));
        return;
    }
    torch::jit::Stack stack{x, std::string(name), params.vec(), exact};
    python_kernel(Qualified, describe(x, name, params, 0), stack);
}

constexpr char ACTIVATION[] = "elukit::activation", BACKWARD[] = "elukit::activation_backward",
               INPLACE[] = "elukit::activation_", ACTIVATION_TWIN[] = "elukit::activation_compiled",
               BACKWARD_TWIN[] = "elukit::activation_backward_compiled", INPLACE_TWIN[] = "elukit::activation_compiled_";

// --- meta tensors (FakeTensorMode, torch.export, torch.compile, shape inference) --------------------
// elukit.torch._ops' fake kernels, in C++, so that a process with this library alone runs meta tensors
// too: the same checks in the same order (x, grad, the spec, the order) with the same messages, and
// torch.empty_like(x) out (x's shape, dtype and, where x is dense, strides; grad's shape is not read);
// in place, nothing (x is kept; an x whose elements share memory is refused, as elukit.torch's
// autograd kernel and the real kernels refuse it). Sizes are not read, so symbolic shapes pass through. The parameters
// of the specs this library does not know are checked by elukit's Python (`_ops.spec_for`, through
// the operator elukit::spec_check that elukit.torch defines); without it, such a spec is refused,
// naming `import elukit.torch`, as on CPU.

void check_spec(const char *qualified, const Tensor &x, c10::string_view name, c10::ArrayRef<double> params,
                int64_t order) {
    if (parameter_names(name)) return check_parameters(name, params);
    torch::jit::Stack stack{std::string(name), params.vec()};
    python_kernel("elukit::spec_check", qualified, describe(x, name, params, order), stack);
}

Tensor activation_meta(const Tensor &x, c10::string_view name, c10::ArrayRef<double> params, int64_t order,
                       bool exact) {
    check_input(x, "x");
    check_spec("elukit::activation", x, name, params, order);
    TORCH_CHECK_VALUE(order >= 0, "order must be >= 0, got ", order);
    return at::empty_like(x);
}

Tensor backward_meta(const Tensor &grad, const Tensor &x, c10::string_view name, c10::ArrayRef<double> params,
                     int64_t order, bool exact) {
    check_input(x, "x");
    check_input(grad, "grad");
    check_spec("elukit::activation_backward", x, name, params, order + 1);
    TORCH_CHECK_VALUE(order >= 0, "order must be >= 0, got ", order);
    return at::empty_like(x);
}

void inplace_meta(const Tensor &x, c10::string_view name, c10::ArrayRef<double> params, bool exact) {
    check_input(x, "x");
    check_no_internal_overlap(x);  // as the real kernels (torch's elu_ checks it on CPU, not on meta)
    check_spec("elukit::activation_", x, name, params, 0);
}

// --- the operators, called through the dispatcher -------------------------------------------------

using ActivationSignature = Tensor(const Tensor &, c10::string_view, c10::ArrayRef<double>, int64_t, bool);
using BackwardSignature = Tensor(const Tensor &, const Tensor &, c10::string_view, c10::ArrayRef<double>, int64_t,
                                 bool);
using InplaceSignature = void(const Tensor &, c10::string_view, c10::ArrayRef<double>, bool);

template <const char *Qualified>
const c10::TypedOperatorHandle<ActivationSignature> &activation_op() {
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(Qualified, "").typed<ActivationSignature>();
    return op;
}

template <const char *Qualified>
const c10::TypedOperatorHandle<BackwardSignature> &backward_op() {
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(Qualified, "").typed<BackwardSignature>();
    return op;
}

template <const char *Qualified>
const c10::TypedOperatorHandle<InplaceSignature> &inplace_op() {
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(Qualified, "").typed<InplaceSignature>();
    return op;
}

// The operators' autograd differentiates through the operators themselves; the torch.compile twins'
// through the twins (so that a compiled graph's backward holds twins, which never decompose).
struct OperatorSet {
    const c10::TypedOperatorHandle<ActivationSignature> &(*activation)();
    const c10::TypedOperatorHandle<BackwardSignature> &(*backward)();
    const c10::TypedOperatorHandle<InplaceSignature> &(*inplace)();
};

constexpr OperatorSet OPERATORS{&activation_op<ACTIVATION>, &backward_op<BACKWARD>, &inplace_op<INPLACE>};
constexpr OperatorSet TWINS{&activation_op<ACTIVATION_TWIN>, &backward_op<BACKWARD_TWIN>, &inplace_op<INPLACE_TWIN>};

// --- autograd ---------------------------------------------------------------------------------------
// d/dx f^(n)(x) = f^(n+1)(x): the backward of activation is activation_backward one order up, and
// that of activation_backward (grad * f^(n+1)(x), linear in grad) is activation_backward again,
// so derivatives of every order come from the input x.

struct Arguments {
    std::string name;
    std::vector<double> params;
    int64_t order;
    bool exact;
};

// grad * f^(order+1)(at): the node of activation (at = x) and of activation_ (at = before, the copy of
// x from before the write, order 0; below), under each one's name. Its gradient is activation_backward,
// itself differentiable, so the higher orders reach x's history through `at`. (task_should_compute_output:
// with one output, the engine runs the node only where that output is wanted.)
struct DerivativeAt : public torch::autograd::Node {
    explicit DerivativeAt(const char *name) : name_(name) {}

    torch::autograd::SavedVariable at_;
    Arguments arguments_;
    const OperatorSet *operators_ = &OPERATORS;

    variable_list apply(variable_list &&grads) override {
        variable_list result(1);
        if (grads[0].defined() && task_should_compute_output(0)) {
            const auto &a = arguments_;
            result[0] = operators_->backward().call(grads[0], at_.unpack(), a.name, a.params, a.order, a.exact);
        }
        return result;
    }
    std::string name() const override { return name_; }
    void release_variables() override { at_.reset_data(); }

  private:
    const char *name_;
};

struct ActivationBackwardBackward : public torch::autograd::Node {
    torch::autograd::SavedVariable grad_, x_;
    Arguments arguments_;
    const OperatorSet *operators_ = &OPERATORS;

    variable_list apply(variable_list &&grads) override {
        variable_list result(2);
        const Tensor &outer = grads[0];
        if (!outer.defined()) return result;
        const Tensor x = x_.unpack();
        const auto &a = arguments_;
        if (should_compute_output(0)) result[0] = operators_->backward().call(outer, x, a.name, a.params, a.order, a.exact);
        if (should_compute_output(1)) {
            const Tensor grad = grad_.unpack();
            result[1] = operators_->backward().call(outer * grad, x, a.name, a.params, a.order + 1, a.exact);
        }
        return result;
    }
    std::string name() const override { return "ElukitActivationBackwardBackward"; }
    void release_variables() override {
        grad_.reset_data();
        x_.reset_data();
    }
};

template <const OperatorSet &Ops>
Tensor activation_autograd(c10::DispatchKeySet keys, const Tensor &x, c10::string_view name,
                           c10::ArrayRef<double> params, int64_t order, bool exact) {
    Tensor result;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        result = Ops.activation().redispatch(keys & c10::after_autograd_keyset, x, name, params, order, exact);
    }
    if (torch::autograd::compute_requires_grad(x)) {
        auto node = c10::make_intrusive<DerivativeAt>("ElukitActivationBackward");
        node->operators_ = &Ops;
        node->set_next_edges(torch::autograd::collect_next_edges(x));
        node->at_ = torch::autograd::SavedVariable(x, false);
        node->arguments_ = Arguments{std::string(name), params.vec(), order, exact};
        torch::autograd::set_history(result, node);
    }
    // forward mode: from the primals (x without its tangent), as derivative formulas of native operators
    // are evaluated; the tangent of a tangent belongs to an outer level (torch.func), not this one
    const Tensor tangent = x._fw_grad(/*level=*/0);
    if (tangent.defined())
        result._set_fw_grad(Ops.backward().call(tangent, x._fw_primal(0), name, params, order, exact), /*level=*/0,
                            /*is_inplace_op=*/false);
    return result;
}

template <const OperatorSet &Ops>
Tensor backward_autograd(c10::DispatchKeySet keys, const Tensor &grad, const Tensor &x, c10::string_view name,
                         c10::ArrayRef<double> params, int64_t order, bool exact) {
    Tensor result;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        result = Ops.backward().redispatch(keys & c10::after_autograd_keyset, grad, x, name, params, order, exact);
    }
    if (torch::autograd::compute_requires_grad(grad, x)) {
        auto node = c10::make_intrusive<ActivationBackwardBackward>();
        node->operators_ = &Ops;
        node->set_next_edges(torch::autograd::collect_next_edges(grad, x));
        node->grad_ = torch::autograd::SavedVariable(grad, false);
        node->x_ = torch::autograd::SavedVariable(x, false);
        node->arguments_ = Arguments{std::string(name), params.vec(), order, exact};
        torch::autograd::set_history(result, node);
    }
    const Tensor grad_tangent = grad._fw_grad(0), x_tangent = x._fw_grad(0);
    if (grad_tangent.defined() || x_tangent.defined()) {
        const Tensor grad_primal = grad._fw_primal(0), x_primal = x._fw_primal(0);
        Tensor tangent;
        if (grad_tangent.defined()) tangent = Ops.backward().call(grad_tangent, x_primal, name, params, order, exact);
        if (x_tangent.defined()) {
            Tensor term = Ops.backward().call(grad_primal * x_tangent, x_primal, name, params, order + 1, exact);
            tangent = tangent.defined() ? tangent + term : term;
        }
        result._set_fw_grad(tangent, 0, false);
    }
    return result;
}

// The version counter of the in-place write, bumped before it (PyTorch's inference-tensor error
// comes before anything is written), then the write.
template <const OperatorSet &Ops>
void inplace_or_view(c10::DispatchKeySet keys, const Tensor &x, c10::string_view name, c10::ArrayRef<double> params,
                     bool exact) {
    torch::autograd::impl::bump_version(x);
    at::AutoDispatchBelowADInplaceOrView guard;
    Ops.inplace().redispatch(keys & c10::after_ADInplaceOrView_keyset, x, name, params, exact);
}

// --- autograd of the in-place operator ---------------------------------------------------------------
// x <- f(x) overwrites x, so its node (`DerivativeAt`) keeps `before`, a copy of x from before the write, taken under
// autograd (so it is linked to x's history, at every torch.func level), and differentiates at it with
// the out-of-place operators: the gradient is activation_backward(grad, before), itself differentiable,
// so every order of every spec is inplace=False's, bit for bit, for any upstream gradient, as
// elukit.torch._ops.InplaceFunction (the Python path, where this library is not loaded) computes it.
// It keeps one extra tensor of x's size, where torch's in-place ELU keeps its output in x's own memory.

template <const OperatorSet &Ops>
void inplace_autograd(c10::DispatchKeySet keys, const Tensor &x, c10::string_view name, c10::ArrayRef<double> params,
                      bool exact) {
    check_input(x, "x");
    const bool recording = torch::autograd::compute_requires_grad(x);
    Tensor tangent = x._fw_grad(/*level=*/0);
    if (!recording && !tangent.defined()) {  // nothing to differentiate
        at::AutoDispatchBelowAutograd guard;
        Ops.inplace().redispatch(keys & c10::after_autograd_keyset, x, name, params, exact);
        return;
    }
    check_parameters(name, params);
    torch::autograd::check_inplace(x, recording);  // PyTorch's leaf and view errors, before any write
    check_no_internal_overlap(x);
    const Tensor before = x.clone();  // under autograd: the copy the derivatives are taken at
    c10::intrusive_ptr<DerivativeAt> node;
    if (recording) {
        node = c10::make_intrusive<DerivativeAt>("ElukitInplaceActivationBackward");
        node->operators_ = &Ops;
        node->set_next_edges(torch::autograd::collect_next_edges(x));
    }
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        Ops.inplace().redispatch(keys & c10::after_autograd_keyset, x, name, params, exact);
    }
    if (node) {
        node->at_ = torch::autograd::SavedVariable(before, false);
        node->arguments_ = Arguments{std::string(name), params.vec(), 0, exact};
        torch::autograd::rebase_history(x, node);
    }
    if (tangent.defined()) {  // forward mode: the tangent times f'(before), written into x's tangent
        tangent.copy_(Ops.backward().call(before._fw_grad(0), before._fw_primal(0), name, params, 0, exact));
        x._set_fw_grad(tangent, /*level=*/0, /*is_inplace_op=*/true);
    }
}

}  // namespace

TORCH_LIBRARY(elukit, m) {
    const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
    m.def("activation(Tensor x, str name, float[] params, int order=0, bool exact=False) -> Tensor", tags);
    m.def("activation_backward(Tensor grad, Tensor x, str name, float[] params, int order=0, bool exact=False) "
          "-> Tensor",
          tags);
    m.def("activation_(Tensor(a!) x, str name, float[] params, bool exact=False) -> ()", tags);
    // torch.compile's twins (elukit.torch._compiled: the same operators without the export
    // decomposition, which elukit.torch's Python records while dynamo traces): defined here so that
    // a compiled graph's run calls these C++ kernels (4-5 us a call), not Python's (17-22 us).
    m.def("activation_compiled(Tensor x, str name, float[] params, int order=0, bool exact=False) -> Tensor", tags);
    m.def("activation_backward_compiled(Tensor grad, Tensor x, str name, float[] params, int order=0, "
          "bool exact=False) -> Tensor",
          tags);
    m.def("activation_compiled_(Tensor(a!) x, str name, float[] params, bool exact=False) -> ()", tags);
}

// Registered for every backend (CompositeExplicitAutogradNonFunctional, ahead of the Python kernels'
// CompositeExplicitAutograd), not as a CPU kernel: a direct CPU kernel would tell torch.export and
// AOT tracing that autograd never decomposes the operators on CPU, and they would keep them where
// elukit's artifacts record the core-ATen decomposition (elukit.torch._decompose). Other devices
// and layouts go to the Python kernels, or raise.
TORCH_LIBRARY_IMPL(elukit, CompositeExplicitAutogradNonFunctional, m) {
    m.impl("activation", &activation_cpu<ACTIVATION>);
    m.impl("activation_backward", &backward_cpu<BACKWARD>);
    m.impl("activation_", &inplace_cpu<INPLACE>);
    m.impl("activation_compiled", &activation_cpu<ACTIVATION_TWIN>);
    m.impl("activation_backward_compiled", &backward_cpu<BACKWARD_TWIN>);
    m.impl("activation_compiled_", &inplace_cpu<INPLACE_TWIN>);
}

TORCH_LIBRARY_IMPL(elukit, Meta, m) {
    m.impl("activation", &activation_meta);
    m.impl("activation_backward", &backward_meta);
    m.impl("activation_", &inplace_meta);
}

TORCH_LIBRARY_IMPL(elukit, Autograd, m) {
    m.impl("activation", torch::CppFunction::makeFromUnboxedFunction(&activation_autograd<OPERATORS>));
    m.impl("activation_backward", torch::CppFunction::makeFromUnboxedFunction(&backward_autograd<OPERATORS>));
    m.impl("activation_", torch::CppFunction::makeFromUnboxedFunction(&inplace_autograd<OPERATORS>));
    m.impl("activation_compiled", torch::CppFunction::makeFromUnboxedFunction(&activation_autograd<TWINS>));
    m.impl("activation_backward_compiled", torch::CppFunction::makeFromUnboxedFunction(&backward_autograd<TWINS>));
    m.impl("activation_compiled_", torch::CppFunction::makeFromUnboxedFunction(&inplace_autograd<TWINS>));
}

TORCH_LIBRARY_IMPL(elukit, ADInplaceOrView, m) {
    m.impl("activation_", torch::CppFunction::makeFromUnboxedFunction(&inplace_or_view<OPERATORS>));
    m.impl("activation_compiled_", torch::CppFunction::makeFromUnboxedFunction(&inplace_or_view<TWINS>));
}
