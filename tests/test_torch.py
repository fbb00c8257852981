"""elukit.torch: exactness, shape independence, autograd, compile, modules, conversion, init."""

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import elukit  # noqa: E402
from elukit.torch import CELU, ELU, PELU, SELU, Activation, AlphaDropout, replace_activations  # noqa: E402
from elukit.torch import _kernels  # noqa: E402
from elukit.torch import functional as F  # noqa: E402
from elukit.torch.init import init_, kaiming_normal_, kaiming_uniform_  # noqa: E402

NAMES = elukit.activations()


def test_gradient_does_not_collapse_where_pytorch_inplace_does():
    x = torch.tensor([-20.0, -40.0], requires_grad=True)
    F.elu(x).sum().backward()
    assert x.grad[0].item() == np.float32(2.0611537e-09)
    y = torch.tensor([-20.0, -40.0]).requires_grad_()
    F.elu(y.clone(), inplace=True).sum().backward()
    assert torch.equal(y.grad, x.grad)


def test_float64_derivative_at_minus_40():
    x = torch.tensor([-40.0], dtype=torch.float64, requires_grad=True)
    F.elu(x).backward(torch.ones(1, dtype=torch.float64))
    assert x.grad.item() == 4.248354255291589e-18


@pytest.mark.parametrize("name", ["elu", "selu", "celu", "elu_alpha_3"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_results_equal_the_correctly_rounded_numpy_backend(name, dtype):
    bits = torch.arange(2**16, dtype=torch.int32).to(torch.int16)
    x = bits.view(getattr(torch, dtype))
    x = x[torch.isfinite(x)]
    spec = elukit.get(name.split("_alpha_")[0], alpha=3.0) if name in ("celu", "elu_alpha_3") else elukit.get(name)
    reference = x.to(torch.float32).numpy()
    if dtype == "float16":
        reference = reference.astype(np.float16)
    else:
        ml_dtypes = pytest.importorskip("ml_dtypes")
        reference = reference.astype(ml_dtypes.bfloat16)
    for quantity in ("value", "derivative"):
        got = F.evaluate(spec, quantity, x).to(torch.float32).numpy()
        wanted = getattr(spec, quantity)(reference).astype(np.float32)
        same = (got == wanted) | (np.isnan(got) & np.isnan(wanted))
        assert same.all(), (quantity, x[~torch.from_numpy(same)][:5])


@pytest.mark.parametrize("name", ["elu", "selu", "celu"])
def test_float32_matches_numpy_backend(name):
    from elukit.accuracy import sample_points

    x = torch.from_numpy(sample_points(np.dtype(np.float32), 50_000))
    spec = elukit.get(name)
    for quantity in ("value", "derivative"):
        got = F.evaluate(spec, quantity, x).numpy()
        wanted = getattr(spec, quantity)(x.numpy(), compiled=False)
        same = (got == wanted) | (np.isnan(got) & np.isnan(wanted))
        assert np.mean(same) >= 0.99999
        finite = np.isfinite(wanted)
        with np.errstate(over="ignore"):  # the spacing of float32's largest value is inf
            assert np.all(np.abs(got[finite].astype(np.float64) - wanted[finite]) <= np.spacing(np.abs(wanted[finite])))


def test_result_does_not_depend_on_shape_stride_or_position():
    values = torch.tensor([-17.32367706298828, -1e-8, -20.0, float("nan"), 0.5, -0.0, -3.0])
    alone = torch.stack([F.elu(v.reshape(1))[0] for v in values])
    for length in range(1, 65):
        for i, v in enumerate(values):
            tensor = torch.full((length,), 0.25)
            tensor[length - 1] = v
            got = F.elu(tensor)[length - 1]
            assert torch.equal(got, alone[i]) or (got.isnan() and alone[i].isnan())
    strided = values.repeat_interleave(3)[::3]
    batched = values.expand(4, -1)
    assert torch.allclose(F.elu(strided), alone, equal_nan=True, rtol=0, atol=0)
    assert torch.allclose(F.elu(batched)[2], alone, equal_nan=True, rtol=0, atol=0)
    x = values.clone().requires_grad_()
    F.elu(x).sum().backward()
    assert x.grad[3].isnan()  # the gradient at NaN is NaN everywhere, not 1 in a scalar tail


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_and_gradgradcheck_float64(name):
    x = (torch.randn(16, dtype=torch.float64) * 2).requires_grad_()
    x.data[x.data.abs() < 1e-3] = 0.5  # away from the kink
    function = lambda t: F.activation(t, name)  # noqa: E731
    assert torch.autograd.gradcheck(function, (x,))
    assert torch.autograd.gradgradcheck(function, (x,))


def test_kink_convention_is_the_left_branch_for_first_and_second_derivative():
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.elu(x, alpha=0.5).sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert g.item() == 0.5 and gg.item() == 0.5


def test_exact_float64_path_is_faithful_for_celu_alpha_3():
    mpmath = pytest.importorskip("mpmath")
    x = torch.tensor([-2000.0, -1500.123], dtype=torch.float64)
    got = F.evaluate(elukit.get("celu", alpha=3.0), "derivative", x, exact=True)
    with mpmath.workprec(200):
        for value, point in zip(got.tolist(), x.tolist()):
            exact = mpmath.exp(mpmath.mpf(point) / 3)
            assert abs(value - exact) < mpmath.mpf(np.spacing(value))


@pytest.mark.parametrize("name", ["elu", "selu", "celu_alpha_3"])
def test_float64_default_is_within_an_ulp_of_exact_true_which_rounds_like_numpy(name):
    spec = elukit.get("celu", alpha=3.0) if name == "celu_alpha_3" else elukit.get(name)
    x = torch.cat([torch.randn(50_000, dtype=torch.float64) * 5, -torch.logspace(-320, 3, 2000, dtype=torch.float64)])
    for quantity in ("value", "derivative", "second_derivative"):
        fast, exact = F.evaluate(spec, quantity, x), F.evaluate(spec, quantity, x, exact=True)
        assert np.array_equal(exact.numpy(), getattr(spec, quantity)(x.numpy())), quantity  # the NumPy API rounds correctly
        one_ulp = torch.clamp(torch.abs(exact) * 2.0**-52, min=2.0**-1074)
        assert ((fast - exact).abs() <= one_ulp).all(), quantity


@pytest.mark.parametrize("name, params, dtype", [("relu", {}, torch.float32), ("relu", {}, torch.float64),
                                                  ("leaky_relu", {"slope": 0.1}, torch.float64)])
def test_piecewise_linear_kernels_run_in_the_input_dtype_with_the_numpy_bits(name, params, dtype, monkeypatch):
    spec = elukit.get(name, **params)
    integer = {torch.float32: np.uint32, torch.float64: np.uint64}[dtype]
    bits = np.random.default_rng(5).integers(0, np.iinfo(integer).max, size=50_000, dtype=np.uint64).astype(integer)
    x = np.concatenate([bits.view(str(dtype)[6:]), np.array([0.0, -0.0, np.inf, -np.inf, np.nan], str(dtype)[6:])])
    wanted = {q: getattr(spec, q)(x) for q in ("value", "derivative", "second_derivative")}
    monkeypatch.setattr(_kernels, "_numpy_backend", None)  # never reached: the torch kernels run directly
    monkeypatch.setattr(_kernels._native, "AVAILABLE", False)  # as without the compiled kernels (or on CUDA)
    for quantity, expected in wanted.items():
        got = F.evaluate(spec, quantity, torch.from_numpy(x)).numpy()
        same = (got.view(integer) == expected.view(integer)) | (np.isnan(got) & np.isnan(expected))
        assert same.all(), (quantity, x[~same][:3])


def test_inplace_writes_into_the_input_and_differentiates_twice():
    x = torch.tensor([-1.0, 2.0])
    out = F.elu(x, inplace=True)
    assert out.data_ptr() == x.data_ptr() and abs(x[0].item() + 0.6321205496788025) < 1e-7
    leaf = torch.tensor([-1.0, 2.0], requires_grad=True)
    y = F.elu(leaf * 1.0, inplace=True)
    (g,) = torch.autograd.grad(y.sum(), leaf, create_graph=True)
    (second,) = torch.autograd.grad(g.sum(), leaf)
    assert second.tolist() == [pytest.approx(0.36787944117144233), 0.0]
    y = F.activation(leaf * 1.0, "gelu", inplace=True)  # any spec: the derivatives at the copy of x
    (g,) = torch.autograd.grad(y.sum(), leaf, create_graph=True)
    (second,) = torch.autograd.grad(g.sum(), leaf)
    assert torch.equal(second, F.evaluate_order(elukit.get("gelu"), 2, leaf.detach()))


@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")  # raised inside dynamo
def test_torch_compile_fullgraph_forward_and_backward():
    compiled = torch.compile(lambda t: F.elu(t, alpha=0.7).sum(), fullgraph=True, backend="eager")
    x = torch.randn(32, requires_grad=True)
    compiled(x).backward()
    expected = torch.from_numpy(elukit.elu_derivative(x.detach().numpy(), 0.7))
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("bad", [torch.tensor([1, 2]), torch.tensor([True]), np.array([1.0])])
def test_non_floating_input_is_a_type_error(bad):
    with pytest.raises(TypeError, match="x must be"):
        F.elu(bad)


def test_invalid_parameter_is_a_value_error():
    with pytest.raises(ValueError, match="alpha"):
        ELU(alpha=-1.0)


def test_modules_repr_and_pickle_and_no_state_dict_entries():
    for module in (ELU(0.5), SELU(), CELU(2.0), Activation("leaky_relu", slope=0.2), Activation("gelu")):
        assert repr(module).startswith(type(module).__name__)
        clone = pickle.loads(pickle.dumps(module))
        x = torch.randn(8)
        assert torch.equal(clone(x), module(x))
        assert clone.spec == module.spec
        assert module.state_dict() == {}  # like torch.nn's activations: configuration is not state


def test_pelu_learns_positive_parameters_and_checks_shapes():
    pelu = PELU(num_parameters=3, alpha=torch.tensor([0.5, 1.0, 2.0]))
    x = torch.randn(4, 3, 5)
    out = pelu(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert pelu.log_a.grad is not None and pelu.log_b.grad is not None
    with pytest.raises(ValueError, match=r"shape \(2,\).*\(3,\)"):
        PELU(num_parameters=3, alpha=torch.ones(2))
    with pytest.raises(ValueError, match="channels"):
        pelu(torch.randn(4, 5))


def test_alpha_dropout_keeps_mean_and_variance_for_any_elu_family_activation():
    torch.manual_seed(0)
    for activation, params in (("selu", {}), ("elu", {"alpha": 1.0})):
        dropout = AlphaDropout(0.1, activation, **params)
        x = torch.randn(2_000_000, dtype=torch.float64)
        y = dropout(x)
        assert abs(y.mean().item()) < 4e-3 and abs(y.var().item() - 1) < 4e-3
        dropout.eval()
        assert dropout(x) is x


def test_replace_activations_everywhere():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.ReLU(),
        torch.nn.ModuleDict({"block": torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())}),
        torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.Tanh()]),
    )
    model, replaced = replace_activations(model, to="elu", match=(torch.nn.ReLU,), alpha=0.5)
    assert [name for name, _, _ in replaced] == ["1", "2.block.1", "3.0"]
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    assert isinstance(model[3][1], torch.nn.Tanh)


def test_init_uses_the_derived_gain():
    torch.manual_seed(0)
    weight = torch.empty(512, 1024)
    kaiming_normal_(weight, "elu")
    assert abs(weight.std().item() * 32 - elukit.theory.gain("elu")) < 0.01
    kaiming_uniform_(weight, "selu")
    assert abs(weight.std().item() * 32 - 1.0) < 0.01
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), ELU(), torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
    done = init_(model)
    assert [(name, label) for name, label, _ in done] == [("0", "elu"), ("2", "tanh")]
    assert torch.all(model[0].bias == 0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compiled_kernels_are_bit_identical_to_the_unfused_ones():
    import shutil

    from elukit.accuracy import sample_points

    if not any(shutil.which(compiler) for compiler in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile's CPU backend needs a C++ compiler")

    x = torch.from_numpy(sample_points(np.dtype(np.float32), 20_000))
    spec = elukit.get("selu")
    F.use_compiled_kernels(True)
    try:
        for quantity in ("value", "derivative"):
            fused = F.evaluate(spec, quantity, x).numpy()
            wanted = getattr(spec, quantity)(x.numpy(), compiled=False)
            assert np.array_equal(fused, wanted, equal_nan=True), quantity
        leaf = x.clone().requires_grad_()
        F.selu(leaf).backward(torch.ones_like(x))
        assert np.array_equal(leaf.grad.numpy(), spec.derivative(x.numpy(), compiled=False), equal_nan=True)
        assert _kernels._COMPILE["enabled"], "compilation fell back to the unfused kernels"
    finally:
        F.use_compiled_kernels(False)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_kernels_carry_the_tie_fix_for_alpha_3(dtype):
    """The torch kernels (used on CUDA) give the correctly rounded results of the NumPy backend
    where float64 lands exactly on a rounding midpoint (3*x for tiny x)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bits = torch.arange(2**16, dtype=torch.int32).to(torch.int16)
    x = bits.view(getattr(torch, dtype))
    x = x[torch.isfinite(x)]
    spec = elukit.get("elu", alpha=3.0)
    numpy_dtype = np.float16 if dtype == "float16" else ml_dtypes.bfloat16
    for quantity in ("value", "derivative"):
        got = _kernels._torch_kernel(spec, quantity, x).to(torch.float32).numpy()
        wanted = getattr(spec, quantity)(x.to(torch.float32).numpy().astype(numpy_dtype)).astype(np.float32)
        assert np.array_equal(got, wanted, equal_nan=True), quantity


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["selu", "celu_alpha_3"])
def test_backward_of_a_sum_equals_the_derivative_and_float64_is_faithful(name, dtype):
    spec = elukit.get("celu", alpha=3.0) if name == "celu_alpha_3" else elukit.get(name)
    x = (torch.linspace(-60, 5, 2**17 + 3, dtype=torch.float64) ** 3 / 100).to(dtype).requires_grad_()
    F.activation(x, spec).sum().backward()  # the gradient arrives as one expanded value
    derivative = F.evaluate(spec, "derivative", x.detach())
    assert torch.equal(x.grad, derivative)
    if dtype == torch.float64:
        exact = F.evaluate(spec, "derivative", x.detach(), exact=True)  # correctly rounding kernels
        one_ulp = torch.clamp(torch.abs(exact) * 2.0**-52, min=2.0**-1074)  # an ulp bound, subnormals too
        assert ((derivative - exact).abs() <= one_ulp).all()


def test_two_torch_threads_give_the_same_bits_on_torchs_openmp_team():
    from elukit import _native

    x = torch.randn(2**18, dtype=torch.float32) * 10
    spec = elukit.get("celu", alpha=3.0)
    one = F.evaluate(spec, "value", x)
    torch.set_num_threads(2)
    try:
        assert torch.equal(F.evaluate(spec, "value", x), one)
    finally:
        torch.set_num_threads(1)
    if _native.AVAILABLE and "parallel backend: OpenMP" in torch.__config__.parallel_info():
        assert _native.loaded_openmp_runtimes()


@pytest.mark.parametrize("layout", ["transposed", "channels_last", "strided"])
def test_permuted_and_strided_tensors_keep_their_layout_and_values(layout):
    base = torch.randn(4, 6, 5, 7) * 10
    if layout == "transposed":
        x = base.transpose(1, 3)
    elif layout == "channels_last":
        x = base.contiguous(memory_format=torch.channels_last)
    else:
        x = base[:, ::2]
    spec = elukit.get("selu")
    got = F.selu(x)
    assert torch.equal(got, F.selu(x.contiguous()))
    if layout != "strided":
        assert got.stride() == x.stride()  # evaluated in place of a contiguous copy
    leaf = x.detach().requires_grad_()
    F.selu(leaf).backward(torch.ones_like(leaf))
    assert torch.equal(leaf.grad, F.evaluate(spec, "derivative", x.contiguous()))
    inplace = x.clone()
    F.selu(inplace, inplace=True)
    assert torch.equal(inplace, got)
