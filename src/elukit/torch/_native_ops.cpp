// elukit.torch's eager hot paths in C++: the calls of the operators elukit::activation and activation_
// from Python without torch.ops' argument parsing (`activation`, `activation_`), the fused training node of the ELU family
// (saving f', `use_fused_training`) and the forward without autograd, on the compiled kernels of
// elukit._exponential_linear (reached through its "_C_API" capsule, so the kernels are compiled once).
//
// Optional: built by setup.py only where torch is importable at build time
// (`pip install --no-build-isolation`), against that torch's headers and libraries; elukit.torch
// uses the Python implementation of the same computation (`_ops.TrainingFunction`,
// `functional.evaluate_order`) where this module is missing or does not load. The results are bit
// for bit the same; what changes is the per-call cost (no Python autograd Function, and backward
// runs without the GIL).
//
// A plan is registered once per spec (`register_plan`): the kernel constants and f''/f' on the
// branch x <= 0; calls name it by its index.

#include <torch/extension.h>

#include <array>
#include <mutex>
#include <vector>

namespace {

struct KernelApi {
    int version;
    void (*run)(int kind, int is_double, const void *x, const void *grad, Py_ssize_t grad_count, void *out,
                void *out2, Py_ssize_t count, const double *constants, int threads);
};

const KernelApi *kernels = nullptr;

constexpr int VALUE = 0, EXPONENTIAL = 1, FAST = 2, BOTH = 8, MAGNITUDE = 16;

struct Plan {
    std::array<double, 11> constants;
    double ratio;  // f''/f' on the branch x <= 0 (1/divisor)
};

std::mutex plans_mutex;
std::vector<Plan> plans;  // only grows: indices stay valid

const Plan &plan_at(int64_t index) {
    std::lock_guard<std::mutex> lock(plans_mutex);
    TORCH_CHECK(index >= 0 && index < static_cast<int64_t>(plans.size()), "elukit: unknown kernel plan ", index);
    return plans[static_cast<size_t>(index)];
}

int64_t register_plan(const std::vector<double> &constants, double ratio) {
    TORCH_CHECK(constants.size() == 11, "elukit: a kernel plan has 11 constants, got ", constants.size());
    Plan plan;
    std::copy(constants.begin(), constants.end(), plan.constants.begin());
    plan.ratio = ratio;
    std::lock_guard<std::mutex> lock(plans_mutex);
    plans.push_back(plan);
    return static_cast<int64_t>(plans.size()) - 1;
}

bool is_double(const at::Tensor &t) { return t.scalar_type() == at::kDouble; }

// Whether t is a plain dense CPU tensor with storage, seen by no functorch transform (batched or
// wrapped tensors, as gradcheck's batched-gradient check makes) and no Python dispatch mode: only
// then may the kernels read its memory directly.
bool plain(const at::Tensor &t) {
    static const c10::DispatchKeySet reference = at::empty({0}).key_set();
    return t.key_set() == reference && t.has_storage() && !c10::impl::dispatch_mode_enabled() &&
           !c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode);
}

// grad * |derivative| in derivative's dtype: one pass of the kernels where grad is laid out like it
// or one broadcast value (what sum().backward() hands in), else ATen (the same bits).
at::Tensor times_magnitude(const at::Tensor &grad, const at::Tensor &derivative) {
    if (grad.scalar_type() == derivative.scalar_type() && plain(grad) && plain(derivative) &&
        derivative.is_contiguous() && grad.sizes() == derivative.sizes()) {
        bool broadcast = true;
        for (auto stride : grad.strides()) broadcast = broadcast && stride == 0;
        if (grad.is_contiguous() || broadcast) {
            at::Tensor out = at::empty_like(derivative);
            const int64_t count = derivative.numel();
            if (count) {
                static const std::array<double, 11> unused{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
                kernels->run(MAGNITUDE, is_double(derivative), derivative.data_ptr(), grad.data_ptr(),
                             grad.is_contiguous() ? count : 1, out.data_ptr(), nullptr, count, unused.data(),
                             at::get_num_threads());
            }
            return out;
        }
    }
    return grad * derivative.abs();
}

// f(x) (and f'(x) with the branch in its sign bit as a hidden second output) from one exponential;
// saves f'(x) instead of x. The gradient reaching the hidden output is taken with respect to f'
// as stored (signed), so its contribution is grad_derivative * d/dx(signed f') =
// grad_derivative * ratio * min(signed f', 0): every order is one multiplication more.
struct Training : public torch::autograd::Function<Training> {
    static torch::autograd::variable_list forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x,
                                                  int64_t index) {
        const Plan &plan = plan_at(index);
        at::Tensor source = x.detach();
        at::Tensor value = at::empty_like(source), derivative = at::empty_like(source);
        const int64_t count = source.numel();
        if (count)
            kernels->run(EXPONENTIAL | FAST | BOTH, is_double(source), source.data_ptr(), nullptr, 0,
                         value.data_ptr(), derivative.data_ptr(), count, plan.constants.data(), at::get_num_threads());
        ctx->set_materialize_grads(false);
        ctx->saved_data["ratio"] = plan.ratio;
        ctx->save_for_backward({derivative});
        return {value, derivative};
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                   torch::autograd::variable_list grads) {
        const at::Tensor derivative = ctx->get_saved_variables()[0];
        at::Tensor result;
        if (grads[0].defined())
            result = at::GradMode::is_enabled() ? grads[0] * derivative.abs() : times_magnitude(grads[0], derivative);
        if (grads[1].defined()) {
            at::Tensor term = grads[1] * (derivative.clamp_max(0) * ctx->saved_data["ratio"].toDouble());
            result = result.defined() ? result + term : term;
        }
        return {result, at::Tensor()};
    }
};

at::Tensor train(const at::Tensor &x, int64_t index) { return Training::apply(x, index)[0]; }

// elukit::activation(x, name, params, 0, exact) through the C++ dispatcher (the operator library,
// _operators.cpp, defines it): the operator itself, checks, autograd node and kernels included,
// without the Python argument parsing of a torch.ops call (2 us of F.elu's 2-4 us).
at::Tensor activation(const at::Tensor &x, const std::string &name, const std::vector<double> &params, bool exact) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("elukit::activation", "")
                               .typed<at::Tensor(const at::Tensor &, c10::string_view, c10::ArrayRef<double>,
                                                 int64_t, bool)>();
    return op.call(x, name, params, 0, exact);
}

// elukit::activation_(x, name, params, exact) through the C++ dispatcher, returning x: the in-place
// operator (its checks, version counter and autograd node, _operators.cpp) from Python.
at::Tensor activation_inplace(const at::Tensor &x, const std::string &name, const std::vector<double> &params,
                              bool exact) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("elukit::activation_", "")
            .typed<void(const at::Tensor &, c10::string_view, c10::ArrayRef<double>, bool)>();
    op.call(x, name, params, exact);
    return x;
}

// f(x) without autograd (the caller checked: contiguous CPU float32/float64, no grad needed).
at::Tensor value(const at::Tensor &x, int64_t index, bool exact) {
    const Plan &plan = plan_at(index);
    at::Tensor out = at::empty_like(x);
    const int64_t count = x.numel();
    if (count)
        kernels->run(VALUE | (exact ? 0 : FAST), is_double(x), x.data_ptr(), nullptr, 0, out.data_ptr(), nullptr,
                     count, plan.constants.data(), at::get_num_threads());
    return out;
}

}  // namespace

PYBIND11_MODULE(_native_ops, m) {
    m.doc() = "elukit.torch's eager hot paths in C++ (see src/elukit/torch/_native_ops.cpp)";
    auto api = pybind11::module_::import("elukit._exponential_linear").attr("_C_API");
    kernels = static_cast<const KernelApi *>(PyCapsule_GetPointer(api.ptr(), "elukit._exponential_linear._C_API"));
    if (kernels == nullptr) throw pybind11::error_already_set();
    if (kernels->version != 1) throw std::runtime_error("elukit: _exponential_linear's C interface is not version 1");
    m.def("register_plan", &register_plan, "register_plan(constants, ratio) -> index");
    using release = pybind11::call_guard<pybind11::gil_scoped_release>;
    m.def("train", &train, "f(x) with the fused training node (f' saved, not x)", release());
    m.def("activation", &activation, "elukit::activation(x, name, params, 0, exact) through the dispatcher",
          release());
    m.def("activation_", &activation_inplace,
          "elukit::activation_(x, name, params, exact) through the dispatcher; returns x", release());
    m.def("value", &value, "f(x), no autograd", release());
    m.def("times_magnitude", &times_magnitude, "grad * |derivative|", release());
}
