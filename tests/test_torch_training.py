"""The fused training forward: f and f' from one exponential, f' saved instead of x.

Behaviour tests run on elukit and, as a control, on torch.nn.functional's own function; tests of
elukit's own guarantees (bit-for-bit agreement with the separate kernels and with the path that
saves x) run on elukit alone.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import elukit  # noqa: E402
from elukit import _native  # noqa: E402
from elukit.torch import _kernels, _ops  # noqa: E402
from elukit.torch import functional as EF  # noqa: E402

TF = torch.nn.functional
PARAMS = {"elu": {"alpha": 0.7}, "selu": {}, "celu": {"alpha": 3.0}}
KERNEL_SPECS = [("elu", {}), ("elu", {"alpha": 0.7}), ("selu", {}), ("celu", {"alpha": 2.0}),
                ("celu", {"alpha": 0.3}), ("elu", {"alpha": 1e-5})]
DTYPES = [torch.float32, torch.float64]
INTEGER = {torch.float32: torch.int32, torch.float64: torch.int64}

needs_kernels = pytest.mark.skipif(not _native.AVAILABLE, reason="elukit was built without its compiled kernels")


@pytest.fixture(params=["elukit", "elukit-python", "elukit-fused", "elukit-fused-python", "torch"])
def backend(request, monkeypatch):
    """torch's own function (the control), and elukit: its default training node (saves x), the
    fused one (`use_fused_training`), each from the C++ module (`_native_ops`) where it was built
    and from Python ("-python")."""
    if request.param.endswith("-python"):
        python_only(monkeypatch)
    if "fused" in request.param:
        monkeypatch.setitem(_kernels._FUSED, "enabled", True)
    return request.param


def python_only(monkeypatch):
    monkeypatch.setattr(_kernels, "_NATIVE_OPS", None)
    monkeypatch.setattr(_kernels, "_TRAINING", {})  # plans name the C++ module's copy; made anew without it


@pytest.fixture(params=["c++", "python"])
def implementation(request, monkeypatch):
    """elukit's fused training node (switched on) from its C++ module where it was built, and from Python."""
    monkeypatch.setitem(_kernels._FUSED, "enabled", True)
    if request.param == "c++":
        if _kernels._NATIVE_OPS is None:
            pytest.skip("elukit.torch._native_ops was not built (no torch at build time)")
    else:
        python_only(monkeypatch)
    return request.param


@pytest.fixture(params=list(PARAMS))
def name(request):
    return request.param


def function(backend, name):
    module = TF if backend == "torch" else EF
    return lambda t: getattr(module, name)(t, **PARAMS[name])


def spec_of(name, params):
    return elukit.get(name, **params)


def every_binade(dtype):
    """Magnitudes over every binade (subnormals to the largest finite), both signs, the branch
    region in detail, zeros, infinities and NaN."""
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64
    info = np.finfo(numpy_dtype)
    mantissas = np.concatenate([np.linspace(0.5, 1.0, 8, endpoint=False),
                                np.random.default_rng(0).uniform(0.5, 1.0, 8)])
    exponents = np.arange(info.minexp - info.nmant, info.maxexp + 1)
    binades = np.ldexp(mantissas[None, :], exponents[:, None]).ravel().astype(numpy_dtype)
    magnitudes = np.concatenate([binades, np.linspace(0.0, 800.0, 20_001, dtype=numpy_dtype), [info.max]])
    values = np.concatenate([magnitudes, -magnitudes, np.array([np.inf, -np.inf, np.nan], dtype=numpy_dtype)])
    return torch.from_numpy(values.astype(numpy_dtype))


def bits(t):
    return t.view(INTEGER[t.dtype])


def saved_by(call, x):
    """The tensors autograd keeps for backward when `call(x)` runs."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = call(x)
    return y, saved


def old_path(name, params):
    """The operator's autograd node that saves x (what out-of-place training ran before)."""
    values = list(spec_of(name, params).parameters.values())
    return lambda t: _ops.ActivationFunction.apply(t, name, values, 0, False, None)


# --- the kernel ------------------------------------------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,params", KERNEL_SPECS)
def test_value_and_derivative_are_the_separate_kernels_bit_for_bit(name, params, dtype):
    spec = spec_of(name, params)
    x = every_binade(dtype)
    plan = _kernels._kernel_plan(spec)
    assert plan is not None
    value, derivative = EF.value_and_derivative(plan, x)
    assert torch.equal(bits(value), bits(EF.evaluate_order(spec, 0, x)))
    separate = EF.evaluate_order(spec, 1, x)
    assert torch.equal(bits(derivative), bits(torch.where(x > 0, separate, -separate)))  # the branch in the sign bit


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_value_and_derivative_without_a_shared_reduction(dtype):
    """Constants whose derivative floor lies above the value's clamp (no spec has them) make the
    kernel run the two loops one after the other: still the separate kernels' bits."""
    spec = spec_of("celu", {"alpha": 2.0})
    constants = list(_kernels._kernel_plan(spec)[0])
    constants[7] = -10.0  # the floor, above both clamps (-30 for float32, -60 for float64)
    constants = tuple(constants)
    x = every_binade(dtype)
    value, derivative = torch.empty_like(x), torch.empty_like(x)
    _native.run_both_addresses(x.data_ptr(), value.data_ptr(), derivative.data_ptr(), x.numel(),
                               dtype == torch.float64, constants, 1)
    wanted_value, wanted_derivative = torch.empty_like(x), torch.empty_like(x)
    is_double = dtype == torch.float64
    _native.run_addresses(_native.FAST, x.data_ptr(), wanted_value.data_ptr(), 0, 0, x.numel(), is_double, constants, 1)
    _native.run_addresses(1 | _native.FAST, x.data_ptr(), wanted_derivative.data_ptr(), 0, 0, x.numel(), is_double,
                          constants, 1)
    assert torch.equal(bits(value), bits(wanted_value))
    assert torch.equal(bits(derivative), bits(torch.where(x > 0, wanted_derivative, -wanted_derivative)))


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_value_and_derivative_do_not_depend_on_the_thread_split(dtype):
    spec = spec_of("selu", {})
    x = torch.randn(3 * 65536 + 17, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 30
    plan = _kernels._kernel_plan(spec)
    one = EF.value_and_derivative(plan, x)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = EF.value_and_derivative(plan, x)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(one, two))


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_times_magnitude_is_torch_mul_bit_for_bit(dtype):
    generator = torch.Generator().manual_seed(1)
    derivative = torch.randn(4099, dtype=dtype, generator=generator)
    grad = torch.randn(4099, dtype=dtype, generator=generator)
    assert torch.equal(EF.times_magnitude(grad, derivative), grad * derivative.abs())
    scalar = torch.tensor(0.3, dtype=dtype).expand(4099)  # what sum().backward() hands in
    assert torch.equal(EF.times_magnitude(scalar, derivative), 0.3 * derivative.abs())
    strided = torch.randn(4099, 2, dtype=dtype, generator=generator)[:, 0]
    assert torch.equal(EF.times_magnitude(strided, derivative), strided * derivative.abs())


# --- which path runs ---------------------------------------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_training_forward_saves_the_derivative_not_the_input(name, dtype, implementation):
    x = torch.randn(8, 5, dtype=dtype).requires_grad_()
    y, saved = saved_by(lambda t: EF.activation(t, name, **PARAMS[name]), x)
    assert "Training" in y.grad_fn.name()
    spec = spec_of(name, PARAMS[name])
    separate = EF.evaluate_order(spec, 1, x.detach())
    assert len(saved) == 1
    assert torch.equal(bits(saved[0].detach()), bits(torch.where(x > 0, separate, -separate)))


@pytest.mark.parametrize("case", ["default", "exact", "non-contiguous", "gelu", "float16"])
def test_training_forward_keeps_saving_x_unless_fused_training_is_on(case, monkeypatch):
    if case != "default":
        monkeypatch.setitem(_kernels._FUSED, "enabled", True)
    x = torch.randn(6, 4, dtype=torch.float64)
    call = {"default": EF.elu, "exact": lambda t: EF.elu(t, exact=True), "non-contiguous": EF.elu,
            "gelu": lambda t: EF.activation(t, "gelu"), "float16": EF.elu}[case]
    if case == "non-contiguous":
        x = x.t()
    if case == "float16":
        x = x.half()
    y, saved = saved_by(call, x.requires_grad_())
    assert "Training" not in y.grad_fn.name()
    assert len(saved) == 1 and saved[0] is x


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_default_training_node_gives_the_operators_bits(name, dtype, exact, implementation, monkeypatch):
    """Without use_fused_training, eager training (the C++ node where built) gives bit for bit what
    the operator's node gives, for f and derivatives of orders 1-3 with any gradient."""
    monkeypatch.setitem(_kernels._FUSED, "enabled", False)
    generator = torch.Generator().manual_seed(8)
    x = (torch.randn(3000, dtype=dtype, generator=generator) * 10).requires_grad_()
    outer = torch.randn(3000, dtype=dtype, generator=generator)
    values = list(spec_of(name, PARAMS[name]).parameters.values())
    results = []
    for f in (lambda t: EF.activation(t, name, exact=exact, **PARAMS[name]),
              lambda t: _ops.ActivationFunction.apply(t, name, values, 0, exact, None)):
        y = f(x)
        orders = [y.detach(), torch.autograd.grad(y, x, outer, retain_graph=True)[0]]
        for _ in range(3):
            (y,) = torch.autograd.grad(y, x, outer, create_graph=True)
            orders.append(y.detach())
        results.append(orders)
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(*results))


# --- derivatives (control: torch.nn.functional) --------------------------------------------------------

def test_gradcheck_and_gradgradcheck(backend, name):
    f = function(backend, name)
    x = (torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3)
    x = x[x.abs() > 1e-3].requires_grad_()  # away from the kink
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def closed_form(name, order, x):
    """The derivative of `order` >= 1 from its closed form in float64 (x <= 0: scale alpha /
    divisor^order e^{x/divisor}; x > 0: scale for order 1, else 0)."""
    scale, alpha, divisor = spec_of(name, PARAMS[name]).exponential_linear_form()
    left = scale * alpha / divisor ** order * torch.exp(x / divisor)
    return torch.where(x > 0, torch.full_like(x, scale if order == 1 else 0.0), left)


def test_derivatives_of_orders_one_to_four(backend, name):
    f = function(backend, name)
    x0 = torch.tensor([-30.0, -3.0, -0.5, -1e-8, 1e-8, 0.5, 3.0], dtype=torch.float64)  # the kink: test_torch
    x = x0.clone().requires_grad_()
    y = f(x)
    gradients = []
    for order in range(1, 5):
        (y,) = torch.autograd.grad(y.sum(), x, create_graph=order < 4)
        gradients.append(y)
    for order, gradient in enumerate(gradients, start=1):
        torch.testing.assert_close(gradient, closed_form(name, order, x0), rtol=4e-16 * order, atol=0.0)


def test_the_output_may_be_modified_in_place_before_backward(backend, name):
    """The training forward saves neither x nor the output: an in-place op on the output after it
    (a later `inplace=True` layer) leaves backward working, as it does for torch's own op."""
    f = function(backend, name)
    x = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    y = f(x)
    y.mul_(2.0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, 2.0 * closed_form(name, 1, x.detach()), rtol=4e-16, atol=0.0)


def test_backward_twice_with_retain_graph(backend, name):
    f = function(backend, name)
    x = torch.randn(16, dtype=torch.float32, generator=torch.Generator().manual_seed(4)).requires_grad_()
    y = f(x).sum()
    first = torch.autograd.grad(y, x, retain_graph=True)[0]
    second = torch.autograd.grad(y, x)[0]
    assert torch.equal(first, second)


def test_saved_memory_is_one_tensor_like_x(backend, name):
    """What backward keeps: one tensor of x's size (elukit: f'(x); torch: x itself)."""
    f = function(backend, name)
    x = torch.randn(1024, dtype=torch.float32).requires_grad_()
    source = x * 1.0
    saved = {}
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) and t,
            lambda t: t):
        f(source)
    assert sum(saved.values()) == x.nbytes


# --- against the path that saves x (elukit's own guarantee) -------------------------------------------

@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_first_order_gradient_is_grad_times_the_rounded_derivative(name, dtype, implementation):
    """Backward is one multiplication: grad * f'(x) with f'(x) as the separate kernel rounds it,
    bit for bit; with one gradient value for every element (sum().backward()) that is the old
    path's result exactly, otherwise within 1 ulp of it (the old path rounds grad * f'(x) once)."""
    generator = torch.Generator().manual_seed(5)
    x = (torch.randn(50_000, dtype=dtype, generator=generator) * 20)
    grad = torch.randn(50_000, dtype=dtype, generator=generator)
    spec = spec_of(name, PARAMS[name])
    fused = torch.autograd.grad(EF.activation(x.requires_grad_(), name, **PARAMS[name]), x, grad)[0]
    assert torch.equal(fused, grad * EF.evaluate_order(spec, 1, x.detach()))
    old = torch.autograd.grad(old_path(name, PARAMS[name])(x), x, grad)[0]
    ulp = torch.nextafter(old.abs(), torch.tensor(math.inf, dtype=dtype)) - old.abs()
    assert bool(((fused - old).abs() <= ulp).all())
    ones_fused = torch.autograd.grad(EF.activation(x, name, **PARAMS[name]).sum(), x)[0]
    ones_old = torch.autograd.grad(old_path(name, PARAMS[name])(x).sum(), x)[0]
    assert torch.equal(bits(ones_fused), bits(ones_old))


@needs_kernels
def test_higher_orders_agree_with_the_path_that_saves_x(name, implementation):
    generator = torch.Generator().manual_seed(6)
    x = (torch.randn(2000, dtype=torch.float64, generator=generator) * 10).requires_grad_()
    results = []
    for f in (function("elukit", name), old_path(name, PARAMS[name])):
        y, orders = f(x), []
        for order in range(1, 4):
            (y,) = torch.autograd.grad(y.sum(), x, create_graph=True)
            orders.append(y.detach())
        results.append(orders)
    for fused, old in zip(*results):
        torch.testing.assert_close(fused, old, rtol=8.9e-16, atol=0.0)  # 4 ulp


@pytest.mark.parametrize("inplace", [False, True], ids=["out-of-place", "inplace"])
def test_second_derivative_of_celu_keeps_its_ratio_in_float64(backend, inplace):
    """Regression: f''/f' = 1/alpha went through torch.where with a Python float, which rounded
    it to float32 (CELU(3)'s second derivative was 3e-8 relative off in float64)."""
    f = (lambda t: TF.celu(t, alpha=3.0, inplace=inplace)) if backend == "torch" else \
        (lambda t: EF.celu(t, alpha=3.0, inplace=inplace))
    x0 = torch.linspace(-9.0, -0.1, 50, dtype=torch.float64)
    x = x0.clone().requires_grad_()
    (first,) = torch.autograd.grad(f(x * 1.0).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    torch.testing.assert_close(second, torch.exp(x0 / 3.0) / 3.0, rtol=1e-14, atol=0.0)  # torch's own: 8 ulp


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_cpp_and_python_nodes_agree_bit_for_bit(name, dtype, monkeypatch):
    if _kernels._NATIVE_OPS is None:
        pytest.skip("elukit.torch._native_ops was not built (no torch at build time)")
    generator = torch.Generator().manual_seed(7)
    x = (torch.randn(3000, dtype=dtype, generator=generator) * 10).requires_grad_()
    outer = torch.randn(3000, dtype=dtype, generator=generator)

    def orders():
        y = EF.activation(x, name, **PARAMS[name])
        results = [y.detach()]
        for _ in range(3):
            (y,) = torch.autograd.grad(y, x, outer, create_graph=True)
            results.append(y.detach())
        results.append(torch.autograd.grad(EF.activation(x, name, **PARAMS[name]), x, outer)[0])  # first order alone
        return results

    native = orders()
    python_only(monkeypatch)
    python = orders()
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(native, python))


# --- the kernel table ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case,wanted", [
    (("elu", torch.float32, "cpu", False), "compiled C kernels"),
    (("elu", torch.float64, "cpu", True), "compiled C kernels"),
    (("gelu", torch.float64, "cpu", True), "NumPy in extended precision"),
    (("gelu", torch.float32, "cpu", False), "NumPy kernels"),
    (("gelu", torch.float64, "cpu", False), "the spec's torch kernels in float64, rounded once"),
    (("elu", torch.float64, "meta", False), "the spec's torch kernels in float64, rounded once"),
])
def test_the_kernel_table_names_the_kernel_for_device_dtype_and_mode(case, wanted):
    name, dtype, device, exact = case
    if wanted == "compiled C kernels" and not _native.AVAILABLE:
        wanted = "NumPy in extended precision" if exact and dtype == torch.float64 else "NumPy kernels"
    x = torch.zeros(5, dtype=dtype, device=device)
    assert _kernels.kernel_for(elukit.get(name), 0, x, exact) == wanted


def test_the_modules_import_without_a_cycle():
    """_kernels imports neither _ops nor functional; _ops imports _kernels, not functional."""
    import ast
    import pathlib

    root = pathlib.Path(_kernels.__file__).parent

    def imports(module):
        tree = ast.parse((root / f"{module}.py").read_text(encoding="utf-8"))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "elukit.torch":
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("elukit.torch."):
                found.add(node.module.rsplit(".", 1)[1])
        return found

    assert not {"_ops", "functional"} & imports("_kernels")
    assert "functional" not in imports("_ops")
