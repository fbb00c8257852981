"""elukit.torch's Triton kernels (backend="triton"), run on CPU tensors by Triton's interpreter:
the same bits as the CPU kernels (backend=None, the control) for values, gradients and higher
orders, every dtype, every special value, a large random sample and every float16/bfloat16 input.

TRITON_INTERPRET=1 is set per test (monkeypatch), never for the process: elukit loads its
interpreted kernels as a separate copy with Triton's interpreter switched on for that load alone,
so no other Triton code in this pytest worker changes mode.
"""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import elukit  # noqa: E402
from elukit import _native  # noqa: E402
from elukit.torch import functional as F  # noqa: E402
from elukit.torch import _triton  # noqa: E402
from elukit.torch import _ops  # noqa: E402

SPECS = [("elu", {}), ("selu", {}), ("celu", {"alpha": 3.0}), ("relu", {}), ("leaky_relu", {})]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
_INTS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.set_num_threads(1)


def _sample(dtype: torch.dtype) -> torch.Tensor:
    """Every bit pattern of a 16-bit dtype; for float32/float64 normal and log-uniform points of
    both signs (every binade, subnormals included) and the special values."""
    if dtype in (torch.float16, torch.bfloat16):
        return torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    generator = torch.Generator().manual_seed(0)
    info = torch.finfo(dtype)
    normal = torch.randn(20000, generator=generator, dtype=torch.float64) * 6
    exponents = torch.rand(20000, generator=generator, dtype=torch.float64) * (
        np.log2(float(info.max)) - np.log2(float(info.smallest_normal) * float(info.eps))) + np.log2(
        float(info.smallest_normal) * float(info.eps))
    signs = torch.where(torch.rand(20000, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), -1e-300, -745.2, -708.4, -87.4,
                            -103.9, -104.0, -1e-45, 1e-45, -17.5, -30.0, -60.0, -61.0], dtype=torch.float64)
    return torch.cat([normal, signs * torch.exp2(exponents), special]).to(dtype)


def _assert_same_bits(got: torch.Tensor, wanted: torch.Tensor, x: torch.Tensor, context: str) -> None:
    assert got.dtype == wanted.dtype and got.shape == wanted.shape
    nan = torch.isnan(wanted)
    bad = ((got.view(_INTS[got.dtype]) != wanted.view(_INTS[got.dtype])) & ~nan) | (torch.isnan(got) != nan)
    where = bad.nonzero()[:5, 0]
    assert not bad.any(), (f"{context}: {int(bad.sum())} differ; x {x.reshape(-1)[where].tolist()}, triton "
                           f"{got.reshape(-1)[where].tolist()}, cpu {wanted.reshape(-1)[where].tolist()}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, params", SPECS)
def test_every_order_and_gradient_has_the_cpu_kernels_bits(name, params, dtype):
    spec = elukit.get(name, **params)
    x = _sample(dtype)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    modes = (False, True) if dtype == torch.float64 or dtype in (torch.float16, torch.bfloat16) else (False,)
    for exact in modes:
        for order in range(4):
            if exact and dtype != torch.float64 and order < 3:
                continue  # exact changes float64 and (through the float64 f'') narrow orders >= 3 only
            context = f"{spec.label()} {dtype} order {order} exact={exact}"
            _assert_same_bits(_triton.derivative(x, spec, order, exact), F.evaluate_order(spec, order, x, exact), x,
                              context)
            if order >= 1:
                _assert_same_bits(_triton.gradient(grad, x, spec, order, exact),
                                  F.gradient_times_derivative(spec, order, x, grad, exact), x, "grad * " + context)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("function, kwargs", [(F.elu, {}), (F.elu, {"alpha": 0.5}), (F.selu, {}),
                                              (F.celu, {"alpha": 2.0})])
def test_autograd_first_second_and_third_order_bits(function, kwargs, dtype):
    generator = torch.Generator().manual_seed(2)
    x = (torch.randn(3000, generator=generator, dtype=torch.float64) * 4).to(dtype)
    outer = torch.randn(3000, generator=generator, dtype=torch.float64).to(dtype)
    results = []
    for backend in (None, "triton"):
        leaf = x.clone().requires_grad_()
        y = function(leaf, **kwargs, backend=backend)
        (first,) = torch.autograd.grad(y, leaf, outer, create_graph=True)
        (second,) = torch.autograd.grad(first, leaf, outer, create_graph=True)
        (third,) = torch.autograd.grad(second.sum(), leaf)
        results.append((y.detach(), first.detach(), second.detach(), third))
    for label, got, wanted in zip(("f", "f'", "f''", "f'''"), results[1], results[0]):
        _assert_same_bits(got, wanted, x, f"{function.__name__}{kwargs} {dtype} {label}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_inplace_writes_the_same_bits_and_keeps_the_gradient(dtype):
    x = _sample(dtype)[:5000]
    cpu = F.elu(x.clone(), alpha=0.7, inplace=True)
    target = x.clone()
    version = target._version
    returned = F.elu(target, alpha=0.7, inplace=True, backend="triton")
    assert returned is target and target._version > version
    _assert_same_bits(target, cpu, x, f"in-place {dtype}")
    finite = x[torch.isfinite(x)][:2000]
    grads = []
    for backend in (None, "triton"):
        leaf = finite.clone().requires_grad_()
        F.elu(leaf * 1, alpha=0.7, inplace=True, backend=backend).backward(torch.ones_like(finite))
        grads.append(leaf.grad)
    _assert_same_bits(grads[1], grads[0], finite, f"in-place gradient {dtype}")


@pytest.mark.parametrize("implementation", ["torch", "elukit", "triton"])
@pytest.mark.parametrize("name", ["elu", "selu", "celu"])
def test_in_place_second_derivative_is_the_out_of_place_one(implementation, name):
    """PyTorch's OpInfo test_inplace_gradgrad: differentiating an in-place call twice gives the
    out-of-place second derivative (torch.nn.functional is the control, a few ulp off; elukit's
    backends differentiate a copy of x from before the write, so theirs are the same bits)."""
    kwargs = {"alpha": 0.5} if name == "celu" else {}
    functional = getattr(torch.nn.functional, name)
    if implementation != "torch":
        backend = "triton" if implementation == "triton" else None
        functional = getattr(F, name)
        kwargs["backend"] = backend
    x = torch.tensor([-3.0, -0.7, -1e-3, 0.4, 2.5], dtype=torch.float64, requires_grad=True)

    def second(inplace):
        y = functional(x * 1.0, inplace=inplace, **kwargs)
        (first,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        return torch.autograd.grad(first.sum(), x)[0]

    out_of_place, in_place = second(False), second(True)
    if implementation == "torch":  # torch's in-place ELU differentiates its output: a few ulp off
        torch.testing.assert_close(in_place, out_of_place, rtol=1e-14, atol=0)
    else:
        assert torch.equal(in_place, out_of_place), (in_place - out_of_place).tolist()
    assert (out_of_place[:3] != 0).all() and (out_of_place[3:] == 0).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gradcheck_and_gradgradcheck_away_from_the_kink(backend):
    elu = (lambda t: torch.nn.functional.elu(t, alpha=1.3)) if backend == "torch" else (
        lambda t: F.elu(t, alpha=1.3, backend="triton"))
    x = torch.tensor([-1.2, 0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(elu, (x,))
    assert torch.autograd.gradgradcheck(elu, (x,))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_kink_takes_the_left_branch(backend):
    elu = torch.nn.functional.elu if backend == "torch" else (lambda t, alpha: F.elu(t, alpha, backend="triton"))
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    elu(x, alpha=2.0).backward()
    assert x.grad.item() == 2.0


def test_non_contiguous_and_empty_tensors():
    x = torch.randn(64, 48, dtype=torch.float64).t()[::2]
    _assert_same_bits(F.selu(x, backend="triton"), F.selu(x), x, "transposed view")
    assert F.elu(torch.empty(0, 3), backend="triton").shape == (0, 3)
    view = x.clone()
    F.selu(view, inplace=True, backend="triton")
    _assert_same_bits(view, F.selu(x), x, "in place on a transposed view")


def test_the_exp2_table_is_the_c_kernels_table():
    if not _native.AVAILABLE:
        pytest.skip("elukit built without its compiled kernels")
    high, low = _triton._exp2_table()
    assert list(zip(high, low)) == list(_native._compiled.exp2_table())


def test_the_interpreter_is_switched_on_for_elukit_alone():
    import triton

    os.environ.pop("TRITON_INTERPRET")
    module = _triton._kernels.__wrapped__(True)  # a fresh load, whatever the cache holds
    assert type(module.exponential_linear).__name__ == "InterpretedFunction"
    assert not triton.knobs.runtime.interpret
    assert "TRITON_INTERPRET" not in os.environ


def test_cpu_tensors_without_the_interpreter_are_refused_in_one_line(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1") as error:
        F.elu(torch.zeros(3), backend="triton")
    assert "\n" not in str(error.value)


def test_unknown_backend_and_family_without_kernels_are_value_errors():
    with pytest.raises(ValueError, match="backend must be None"):
        F.elu(torch.zeros(3), backend="cuda")
    with pytest.raises(ValueError, match="has none: use backend=None"):
        F.activation(torch.zeros(3), "gelu", backend="triton")
    with pytest.raises(TypeError, match="floating-point tensor"):
        F.elu(torch.zeros(3, dtype=torch.int32), backend="triton")


def test_missing_triton_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.delitem(sys.modules, "elukit.torch._triton")
    monkeypatch.delattr(sys.modules["elukit.torch"], "_triton")  # else `from elukit.torch import _triton` finds it
    with pytest.raises(ImportError, match=r"pip install triton==3\.9\.0") as error:
        F.elu(torch.zeros(3), backend="triton")
    assert "\n" not in str(error.value)


def test_operators_trace_into_a_graph_with_fake_tensors():
    """make_fx (what torch.compile and torch.export build on) records the Triton operators."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def function(t):
        return F.celu(t, alpha=2.0, backend="triton")

    graph = make_fx(function, tracing_mode="fake")(torch.randn(8))
    assert "elukit_triton.activation" in str(graph.graph)


def test_torch_compile_runs_the_operators_with_the_same_bits():
    """aot_eager: the AOT graph holds the operators (on the CPU the interpreted one, opaque)."""
    torch._dynamo.reset()
    x = torch.randn(500, dtype=torch.float32)
    compiled = torch.compile(lambda t: F.elu(t, alpha=0.5, backend="triton") * 2, backend="aot_eager", fullgraph=True)
    leaf = x.clone().requires_grad_()
    y = compiled(leaf)
    y.sum().backward()
    reference = x.clone().requires_grad_()
    (F.elu(reference, alpha=0.5) * 2).sum().backward()
    _assert_same_bits(y.detach(), F.elu(x, alpha=0.5) * 2, x, "compiled forward")
    _assert_same_bits(leaf.grad, reference.grad, x, "compiled backward")


# --- forward-mode AD (torch.func.jvp/jacfwd/hessian, torch.autograd.forward_ad) ------------------------
# Regression: before forward-mode rules were registered, torch.func.jvp through backend="triton"
# returned a zero tangent and jacfwd a zero Jacobian, silently; forward_ad gave no tangent at all.

def _forward_mode_results(function, x, tangent):
    """Tangents and derivatives of `function` by every forward-mode route (and torch.func's
    reverse-mode ones, which now run through the same autograd kernels)."""
    import torch.autograd.forward_ad as forward_ad

    small = x[:6]
    results = [*torch.func.jvp(function, (x,), (tangent,)),
               torch.func.jvp(lambda v: function(v.clone(), inplace=True), (x,), (tangent,))[1],
               torch.func.jacfwd(function)(small), torch.func.jacfwd(torch.func.jacrev(function))(small),
               torch.func.hessian(lambda v: function(v).sum())(small),
               torch.func.vmap(torch.func.grad(lambda v: function(v).sum()))(small.reshape(2, 3))]
    with forward_ad.dual_level():
        results.append(forward_ad.unpack_dual(function(forward_ad.make_dual(x, tangent))).tangent)
        dual = forward_ad.make_dual(x.clone(), tangent.clone())
        function(dual, inplace=True)
        results.append(forward_ad.unpack_dual(dual).tangent.clone())
    return results


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, params", SPECS)
def test_forward_mode_ad_has_the_default_backends_bits(name, params, dtype):
    generator = torch.Generator().manual_seed(3)
    x = torch.cat([(torch.randn(2000, generator=generator, dtype=torch.float64) * 6),
                   torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), -1e-300, -745.2])]).to(dtype)
    tangent = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype)
    results = {backend: _forward_mode_results(lambda v, inplace=False, backend=backend: F.activation(
        v, name, inplace=inplace, backend=backend, **params), x, tangent) for backend in (None, "triton")}
    labels = ("f", "jvp", "jvp in place", "jacfwd", "jacfwd(jacrev)", "hessian", "vmap(grad)", "forward_ad",
              "forward_ad in place")
    assert len(results["triton"]) == len(labels)
    for label, got, wanted in zip(labels, results["triton"], results[None]):
        assert got is not None, label
        _assert_same_bits(got, wanted, x, f"{name}{params} {dtype} {label}")


IMPLEMENTATIONS = ["torch", "elukit", "triton"]


def _elu_of(implementation):
    def elu(v, inplace=False):
        if implementation == "torch":
            return torch.nn.functional.elu(v, alpha=1.3, inplace=inplace)
        return F.elu(v, alpha=1.3, inplace=inplace, backend="triton" if implementation == "triton" else None)
    return elu


_X = [-5.0, -2.5, -1e-3, 0.5, 4.0]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_forward_mode_ad_values_with_torch_as_control(implementation):
    """f'(x) t for ELU(alpha=1.3) by jvp, jacfwd, forward over reverse and forward_ad (also in
    place), against the closed form."""
    import torch.autograd.forward_ad as forward_ad

    elu = _elu_of(implementation)
    x = torch.tensor(_X, dtype=torch.float64)
    tangent = torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0], dtype=torch.float64)
    derivative = torch.where(x > 0, 1.0, 1.3 * torch.exp(x))
    torch.testing.assert_close(torch.func.jvp(elu, (x,), (tangent,))[1], derivative * tangent)
    torch.testing.assert_close(torch.func.jacfwd(elu)(x), torch.diag(derivative))
    torch.testing.assert_close(torch.func.jacfwd(torch.func.jacrev(elu))(x).diagonal().diagonal(),
                               torch.where(x > 0, 0.0, 1.3 * torch.exp(x)))
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(x.clone(), tangent.clone())
        torch.testing.assert_close(forward_ad.unpack_dual(elu(dual)).tangent, derivative * tangent)
        elu(dual, inplace=True)
        torch.testing.assert_close(forward_ad.unpack_dual(dual).tangent, derivative * tangent)


@pytest.mark.parametrize("route", ["jacfwd(jacfwd)", "jacrev(jacfwd)", "grad(jvp)"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_forward_mode_nested_in_another_transform_is_right_or_one_clear_error(implementation, route):
    """Regression: jacfwd(jacfwd(elukit's elu)) returned a zero Hessian, on both backends, silently
    (torch switches forward-mode AD off inside an autograd.Function's jvp: pytorch/pytorch#197867).
    The operators' C++ autograd kernels (where the operator library was built) compute forward mode
    as native operators do, so the default backend gives the right values there; the Python
    autograd Functions (the Triton backend, installs without the library) raise one line naming the
    alternative. torch's own elu is the control."""
    elu = _elu_of(implementation)
    x = torch.tensor(_X, dtype=torch.float64)
    second = torch.where(x > 0, 0.0, 1.3 * torch.exp(x))
    if route == "grad(jvp)":
        def compute():
            return torch.func.grad(lambda v: torch.func.jvp(elu, (v,), (torch.ones_like(v),))[1].sum())(x)
    else:
        outer = torch.func.jacfwd if route.startswith("jacfwd") else torch.func.jacrev

        def compute():
            return outer(torch.func.jacfwd(elu))(x).diagonal().diagonal()
    if implementation == "torch" or (implementation == "elukit" and _ops.LOADED_LIBRARY is not None):
        torch.testing.assert_close(compute(), second, rtol=1e-15, atol=0)
        return
    with pytest.raises(NotImplementedError, match=r"hessian\(f\) or jacfwd\(jacrev\(f\)\)") as error:
        compute()
    assert "\n" not in str(error.value)


_ROUTES_SOURCE = """
import torch
_REVERSE_ROUTES = {
    "grad(grad)": lambda f, x: torch.func.grad(lambda u: torch.func.grad(lambda v: f(v).sum())(u).sum())(x),
    "jacrev(grad)": lambda f, x: torch.func.jacrev(torch.func.grad(lambda v: f(v).sum()))(x).diagonal(),
    "vjp(grad)": lambda f, x: torch.func.vjp(torch.func.grad(lambda v: f(v).sum()), x)[1](torch.ones_like(x))[0],
    "vmap(grad(grad))": lambda f, x: torch.func.vmap(torch.func.grad(torch.func.grad(f)))(x),
    "jacrev(jacrev)": lambda f, x: torch.func.jacrev(torch.func.jacrev(lambda v: f(v).sum()))(x).diagonal(),
    "grad(vjp)": lambda f, x: torch.func.grad(
        lambda u: torch.func.vjp(lambda v: f(v).sum(), u)[1](torch.ones((), dtype=u.dtype))[0].sum())(x),
    "hessian": lambda f, x: torch.func.hessian(lambda v: f(v).sum())(x).diagonal(),
    "jvp(grad)": lambda f, x: torch.func.jvp(torch.func.grad(lambda v: f(v).sum()), (x,), (torch.ones_like(x),))[1],
    "jacfwd(grad)": lambda f, x: torch.func.jacfwd(torch.func.grad(lambda v: f(v).sum()))(x).diagonal(),
}
"""
_namespace: dict = {}
exec(_ROUTES_SOURCE, _namespace)
_REVERSE_ROUTES = _namespace["_REVERSE_ROUTES"]
_REFUSED = ("grad(grad)", "jacrev(grad)", "vjp(grad)", "vmap(grad(grad))", "jvp(grad)", "jacfwd(grad)")  # an inner grad inside


@pytest.mark.parametrize("route", list(_REVERSE_ROUTES))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_reverse_mode_nested_in_another_transform_is_right_or_one_clear_error(implementation, route):
    """Regression: grad(grad(elukit's elu)) (and jacrev/vjp/vmap of a grad) returned zeros for x < 0
    through the Python autograd Functions (Triton backend, installs without the operator library,
    torch.compile's twins): an outer torch.func.grad does not see them while an inner one is live.
    The C++ autograd kernels are right; the Python ones now raise one line naming the alternatives.
    The routes whose inner backward runs after the inner level ends are right on every backend."""
    elu = _elu_of(implementation)
    x = torch.tensor(_X, dtype=torch.float64)
    second = torch.where(x > 0, 0.0, 1.3 * torch.exp(x))
    if route not in _REFUSED or implementation == "torch" or (
            implementation == "elukit" and _ops.LOADED_LIBRARY is not None):
        torch.testing.assert_close(_REVERSE_ROUTES[route](elu, x), second, rtol=1e-15, atol=0)
        return
    with pytest.raises(NotImplementedError, match=r"jacrev\(jacrev\(f\)\) or torch.func.hessian\(f\)") as error:
        _REVERSE_ROUTES[route](elu, x)
    assert "\n" not in str(error.value)


def test_reverse_mode_nested_without_the_operator_library_is_right_or_one_clear_error():
    """The same routes in a process where elukit's C++ operator library is switched off
    (ELUKIT_TORCH_NATIVE_OPS=0: the Python autograd kernels, as in installs built without torch)."""
    import subprocess
    import textwrap

    script = textwrap.dedent(f"""
        from elukit.torch import functional as F, _ops
        assert _ops.LOADED_LIBRARY is None
        x = torch.tensor({_X!r}, dtype=torch.float64)
        second = torch.where(x > 0, 0.0, 1.3 * torch.exp(x))
        for route, compute in _REVERSE_ROUTES.items():
            try:
                got = compute(lambda v: F.elu(v, alpha=1.3), x)
            except NotImplementedError as error:
                print(route, "refused" if "torch.func.hessian(f)" in str(error) else "other error")
            else:
                print(route, "right" if torch.allclose(got, second, rtol=1e-15, atol=0) else "WRONG")
    """)
    env = dict(os.environ, ELUKIT_TORCH_NATIVE_OPS="0")
    result = subprocess.run([sys.executable, "-c", _ROUTES_SOURCE + script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert outcome == {route: "refused" if route in _REFUSED else "right" for route in _REVERSE_ROUTES}, outcome
