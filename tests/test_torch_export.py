"""Saved artifacts of elukit models run without elukit: torch.export, TorchScript, ONNX.

Each workflow runs on a model built from elukit.torch and, as a control, on the same model built
from torch.nn. The artifacts hold core ATen ops (`elukit.torch._decompose`); their values are
within the bound documented there (float16/bfloat16/float32: 1 ulp, float64: 3 ulp) of eager elukit.
"""

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import elukit  # noqa: E402
from elukit.torch import CELU, ELU, SELU, Activation  # noqa: E402
from elukit.torch import _decompose  # noqa: E402
from elukit.torch import functional as EF  # noqa: E402

TF = torch.nn.functional
pytestmark = pytest.mark.filterwarnings(  # raised inside torch.export in torch 2.13
    "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")
ULP_BOUND = {torch.float16: 1, torch.bfloat16: 1, torch.float32: 1, torch.float64: 3}
"""The documented bound of the decomposition against eager elukit (module docstring of _decompose)."""


@pytest.fixture(params=["elukit", "torch"])
def backend(request):
    return request.param


def activations(backend, inplace=False):
    """ELU(0.5), SELU (in place where asked) and CELU(2.0), from elukit or torch.nn."""
    if backend == "elukit":
        return [ELU(0.5), SELU(inplace=inplace), CELU(2.0)]
    return [torch.nn.ELU(0.5), torch.nn.SELU(inplace=inplace), torch.nn.CELU(2.0)]


class Side(torch.nn.Module):
    """Each activation applied to the same input (a chain would compound their rounding)."""

    def __init__(self, modules):
        super().__init__()
        self.branches = torch.nn.ModuleList(modules)

    def forward(self, x):
        return torch.stack([branch(x) for branch in self.branches])


def model(backend, inplace=False):
    torch.manual_seed(0)
    layers = []
    for activation in activations(backend, inplace):
        layers += [torch.nn.Linear(6, 6), activation]
    return torch.nn.Sequential(*layers).eval()


def ulps(got, wanted):
    """|got - wanted| in units of wanted's last place (wanted's dtype); equal infinities and NaNs are 0."""
    got64, wanted64 = got.detach().to(torch.float64), wanted.detach().to(torch.float64)
    magnitude = wanted.detach().abs()
    spacing = (torch.nextafter(magnitude, torch.full_like(magnitude, float("inf"))) - magnitude).to(torch.float64)
    same = (got64 == wanted64) | (got64.isnan() & wanted64.isnan())
    return torch.where(same, torch.zeros_like(got64), (got64 - wanted64).abs() / spacing)


def assert_within_ulps(got, wanted, bound):
    distance = ulps(got, wanted)
    worst = int(distance.argmax())
    assert distance.max() <= bound, (f"{distance.max().item()} ulp at x index {worst}: got {got.flatten()[worst].item()!r}, "
                                     f"wanted {wanted.flatten()[worst].item()!r}")


def sample_points(dtype, n=100_000, seed=0):
    """Every float16 bit pattern; otherwise normal samples at scale 5 and negative values over every binade."""
    if dtype == torch.float16:
        every = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)
        return every[torch.isfinite(every)]
    generator = torch.Generator().manual_seed(seed)
    smallest = -300 if dtype == torch.float64 else -40
    spread = -torch.logspace(smallest, 2.5, n, dtype=torch.float64)
    return torch.cat([torch.randn(n, generator=generator, dtype=torch.float64) * 5, spread, -spread,
                      torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan")], dtype=torch.float64)]).to(dtype)


SPECS = [elukit.get("elu", alpha=0.7), elukit.get("selu"), elukit.get("celu", alpha=2.0), elukit.get("celu", alpha=3.0)]


# --- the decomposition itself --------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.label())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_decomposition_ulp_bound(spec, dtype):
    x = sample_points(dtype)
    for order in (0, 1, 2):
        assert_within_ulps(_decompose.decompose(spec, order, x), EF.evaluate_order(spec, order, x), ULP_BOUND[dtype])


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.label())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_autograd_through_the_decomposition_gives_the_exact_derivatives(spec, dtype):
    # Differentiating Kahan's quotient directly is wrong by up to 100% next to u = 1 (regression test)
    x = sample_points(dtype, n=20_000)
    x = x[torch.isfinite(x)].requires_grad_()
    (first,) = torch.autograd.grad(_decompose.decompose(spec, 0, x).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    assert_within_ulps(first, EF.evaluate_order(spec, 1, x.detach()), ULP_BOUND[dtype])
    assert_within_ulps(second, EF.evaluate_order(spec, 2, x.detach()), ULP_BOUND[dtype])


@pytest.mark.parametrize("name, params", [("relu", {}), ("leaky_relu", {"slope": 0.1}), ("leaky_relu", {"slope": 0.01}),
                                          ("leaky_relu", {"slope": 0.3}), ("leaky_relu", {"slope": 2.99999995})])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_piecewise_linear_decomposition_is_exact_with_the_sign_of_zero(name, params, dtype):
    """Exact in every dtype: narrower than float64, the product is formed as a float64 sum and its
    error and rounded once (regression: rounding the float64 product put float16 Leaky ReLU(0.01)
    1 ulp off on 21 inputs, float32 on 169 of 10^6). 16-bit dtypes: every bit pattern."""
    spec = elukit.get(name, **params)
    if dtype in (torch.float16, torch.bfloat16):
        x = torch.arange(-2 ** 15, 2 ** 15, dtype=torch.int32).to(torch.int16).view(dtype)
    else:
        x = sample_points(dtype, n=20_000)
    for order in (0, 1, 2):
        got, wanted = _decompose.decompose(spec, order, x), EF.evaluate_order(spec, order, x)
        assert_within_ulps(got, wanted, 0)
        number = ~wanted.isnan()  # a NaN's sign bit is no value (bfloat16's eager kernels return +NaN)
        assert torch.equal(got.isnan(), wanted.isnan()) and torch.equal(got.signbit()[number], wanted.signbit()[number])


@pytest.mark.parametrize("dtype, x, slope", [(torch.float16, -21840.0, 2.99999995),
                                              (torch.bfloat16, -2.0 ** 127, (2 - 2 ** -8) - 2 ** -30),
                                              (torch.float32, -2.6767726300346975e38, 1.271241169166179)], ids=str)
def test_leaky_relu_decomposition_rounds_at_the_overflow_threshold(dtype, x, slope):
    """Regression: where x * slope lies just inside the midpoint between the largest finite number
    and the next power of two, the decomposition gave -inf (the midpoint test read inf's neighbour as
    inf); eager elukit, and now the decomposition, give the largest finite number. Also through
    jit.trace and an exported program."""
    spec = elukit.get("leaky_relu", slope=slope)
    t = torch.tensor([x, -x], dtype=dtype)
    wanted = EF.evaluate_order(spec, 0, t)
    assert wanted[0] == -torch.finfo(dtype).max
    assert torch.equal(_decompose.decompose(spec, 0, t), wanted)
    module = Activation("leaky_relu", slope=slope)
    assert torch.equal(torch.jit.trace(module, (t,))(t), wanted)
    assert torch.equal(torch.export.export(module, (t,)).run_decompositions().module()(t), wanted)


def test_celu_value_with_a_divisor_below_one_keeps_the_float64_bound():
    """Regression: where x/alpha < -800 (clamped), the division residual was still added: CELU(0.1)
    at x = -631 gave -0.1 * (1 + e^-41 * 5510), 62 ulp off. (Its f' and f'' in float64 are not
    within 3 ulp everywhere: 5 ulp among subnormal results, 4 ulp in autograd's f''; not covered.)"""
    spec = elukit.get("celu", alpha=0.1)
    x = sample_points(torch.float64)
    assert_within_ulps(_decompose.decompose(spec, 0, x), EF.evaluate_order(spec, 0, x), ULP_BOUND[torch.float64])


@pytest.mark.parametrize("alpha", [0.7, 1.3])
def test_a_traced_float64_celu_keeps_the_decomposition_bound(backend, alpha):
    """Regression: TorchScript's trace merges constants that are equal in float32, so alpha next to
    its Veltkamp high part (the division residual) made a traced CELU(0.7) 3.8e7 ulp off."""
    function = (lambda t: EF.celu(t, alpha=alpha)) if backend == "elukit" else (lambda t: TF.celu(t, alpha=alpha))
    x = sample_points(torch.float64, n=20_000)
    assert_within_ulps(torch.jit.trace(function, x)(x), function(x), ULP_BOUND[torch.float64])


# --- torch.export -------------------------------------------------------------------------------------

def _core_aten_only(program):
    """The call_function targets of a graph that are not core ATen ops."""
    left = set()
    for node in program.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            if torch.Tag.core not in node.target.tags and node.target.namespace == "aten" and not node.target._schema.is_mutable:
                if node.target not in (torch.ops.aten._assert_tensor_metadata.default,):
                    left.add(str(node.target))
            if node.target.namespace != "aten":
                left.add(str(node.target))
    return left


@pytest.mark.parametrize("table", ["default", "core_aten"])
def test_run_decompositions_leaves_only_core_aten(backend, table):
    network = model(backend)
    x = torch.randn(5, 6)
    program = torch.export.export(network, (x,))
    decomposed = program.run_decompositions(None if table == "default" else torch._decomp.core_aten_decompositions())
    assert _core_aten_only(decomposed) == set()
    torch.testing.assert_close(decomposed.module()(x), network(x))


def test_an_exported_graph_of_the_operators_themselves_decomposes(backend):
    # a graph can hold elukit's operators (e.g. a model that calls torch.ops.elukit directly)
    class Direct(torch.nn.Module):
        def forward(self, x):
            if backend == "torch":
                return TF.elu(x, 2.0) + torch.where(x > 0, 1.0, 2.0 * torch.exp(x)) * x
            return (torch.ops.elukit.activation(x, "elu", [2.0], 0, False)
                    + torch.ops.elukit.activation_backward(x, x, "elu", [2.0], 0, False))

    x = torch.randn(50, dtype=torch.float64)
    program = torch.export.export(Direct(), (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert ("elukit.activation.default" in targets) == (backend == "elukit")
    decomposed = program.run_decompositions()
    assert _core_aten_only(decomposed) == set()
    torch.testing.assert_close(decomposed.module()(x), Direct()(x), rtol=4e-16, atol=0)


# --- artifacts loaded in a process that never imports elukit -------------------------------------------

_LOADER = textwrap.dedent("""
    import json, sys
    import torch
    folder = sys.argv[1]
    x = torch.load(folder + "/input.pt")
    results = {}
    for name in ("export", "script", "trace"):
        path = folder + "/" + name + (".pt2" if name == "export" else ".pt")
        loaded = torch.export.load(path).module() if name == "export" else torch.jit.load(path)
        leaf = x.clone().requires_grad_()
        out = loaded(leaf)
        out.sum().backward()
        torch.save((out.detach(), leaf.grad), folder + "/" + name + "_out.pt")
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "elukit")))
""")


def test_saved_artifacts_load_and_train_in_a_process_without_elukit(backend, tmp_path):
    network = model(backend, inplace=True)
    x = torch.randn(7, 6)
    torch.save(x, tmp_path / "input.pt")
    torch.export.save(torch.export.export(network, (x,)), tmp_path / "export.pt2")
    torch.jit.save(torch.jit.script(network), tmp_path / "script.pt")
    torch.jit.save(torch.jit.trace(network, x), tmp_path / "trace.pt")
    done = subprocess.run([sys.executable, "-c", _LOADER, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # elukit was never imported there
    leaf = x.clone().requires_grad_()
    wanted = network(leaf)
    wanted.sum().backward()
    for name in ("export", "script", "trace"):
        out, grad = torch.load(tmp_path / f"{name}_out.pt")
        torch.testing.assert_close(out, wanted.detach(), msg=name)
        torch.testing.assert_close(grad, leaf.grad, msg=name)


def test_functional_form_inside_a_scripted_forward(backend):
    elu, selu, celu = (EF.elu, EF.selu, EF.celu) if backend == "elukit" else (TF.elu, TF.selu, TF.celu)

    class Uses(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = elu(x, 0.5) + selu(x) + celu(x, 2.0)
            return celu(y.clone(), 3.0, inplace=True)

    scripted = torch.jit.script(Uses())
    x = torch.randn(4000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 5
    leaf, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, wanted = scripted(leaf), Uses()(reference)
    torch.testing.assert_close(got, wanted, rtol=8e-16, atol=0)
    got.sum().backward()
    wanted.sum().backward()
    # four functions composed: measured up to 3.8 ulp over 40 seeds (an unseeded 8e-16 failed now and then)
    torch.testing.assert_close(leaf.grad, reference.grad, rtol=1e-15, atol=0)


def test_functional_form_inside_a_scripted_forward_checks_alpha():
    @torch.jit.script
    def negative(x: torch.Tensor) -> torch.Tensor:
        return EF.celu(x, -1.0)

    with pytest.raises(torch.jit.Error, match="alpha must be finite and > 0"):
        negative(torch.ones(2))


def test_scripted_module_of_a_spec_without_a_decomposition_keeps_the_operator():
    # GELU has no TorchScript decomposition: its script calls elukit's operator (load needs elukit.torch)
    scripted = torch.jit.script(Activation("gelu"))
    assert "elukit::activation" in str(scripted.graph)
    x = torch.randn(20)
    assert torch.equal(scripted(x), EF.activation(x, "gelu"))


# --- ONNX, run in onnxruntime ---------------------------------------------------------------------------

def _onnx_run(network, x, dynamo):
    pytest.importorskip("onnxscript" if dynamo else "onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    if dynamo:
        proto = torch.onnx.export(network, (x,), dynamo=True, verbose=False).model_proto.SerializeToString()
    else:
        buffer = io.BytesIO()
        torch.onnx.export(network, (x,), buffer, dynamo=False)
        proto = buffer.getvalue()
    session = onnxruntime.InferenceSession(proto, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]), proto


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated in torch 2.13
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_runs_in_onnxruntime(backend, dynamo):
    network = model(backend, inplace=True)
    x = torch.randn(64, 6)
    got, proto = _onnx_run(network, x, dynamo)
    # torch.nn's models lower to onnxruntime's Elu/Selu/Celu, which compute exp(x) - 1 in float32
    # (4 digits lost at x = -1e-5): the control passes at this tolerance, elukit at 1 ulp below
    torch.testing.assert_close(got, network(x.clone()), rtol=1e-4, atol=1e-6)
    onnx = pytest.importorskip("onnx")
    assert all(node.domain in ("", "ai.onnx") for node in onnx.load_from_string(proto).graph.node)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_onnx_values_are_within_the_decomposition_bound(dynamo, dtype, request):
    if dynamo and dtype == torch.float64:  # runs, and fails the day the exporter keeps float64 constants
        request.applymarker(pytest.mark.xfail(strict=True, reason="torch 2.13's dynamo ONNX exporter rounds each Python float constant of a float64 graph to "
                     "float32 (SELU's scale: 3e-8 relative); use dynamo=False for float64 (docs/torch.md)"))
    # elukit only: onnxruntime has no float64 Elu, and its float32 Elu returns 0 for x = -1e-20
    network = Side(activations("elukit")).eval()
    x = sample_points(dtype, n=3000)
    got, _ = _onnx_run(network, x, dynamo)
    wanted = network(x)
    # the sign of f(-0.0) is not kept: the exporters' graph rewrites lose it (docs/torch.md); equal zeros pass
    assert_within_ulps(got, wanted, ULP_BOUND[dtype])


def test_onnx_files_hold_only_standard_operators():
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    program = torch.onnx.export(Side(activations("elukit")).eval(), (torch.randn(3),), dynamo=True, verbose=False)
    for node in onnx.load_from_string(program.model_proto.SerializeToString()).graph.node:
        assert node.domain in ("", "ai.onnx") and onnx.defs.has(node.op_type), (node.domain, node.op_type)
    assert np.all([domain.domain in ("", "ai.onnx") for domain in program.model_proto.opset_import])


_AOTI_LOADER = textwrap.dedent("""
    import sys
    import torch
    x, = torch.load(sys.argv[1] + "/aoti_input.pt")
    torch.save(torch._inductor.aoti_load_package(sys.argv[1] + "/model.pt2")(x), sys.argv[1] + "/aoti_out.pt")
    print(sorted(m for m in sys.modules if m.split(".")[0] == "elukit"))
""")


@pytest.mark.slow  # compiles C++ (minutes here); the exported program it compiles is the one tested above
def test_aotinductor_package_runs_in_a_process_without_elukit(backend, tmp_path):
    network = model(backend)
    x = torch.randn(3, 6)
    torch.save((x,), tmp_path / "aoti_input.pt")
    torch._inductor.aoti_compile_and_package(torch.export.export(network, (x,)), package_path=str(tmp_path / "model.pt2"))
    done = subprocess.run([sys.executable, "-c", _AOTI_LOADER, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    torch.testing.assert_close(torch.load(tmp_path / "aoti_out.pt"), network(x))
