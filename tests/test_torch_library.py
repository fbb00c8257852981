"""elukit's C++ operator library (src/elukit/torch/_operators.cpp): artifacts that keep elukit's
operators run in a process that never imports elukit, with eager's bits; the C++ kernels give the
Python kernels' bits for every spec; the C++ checks name the argument.

Each integration test runs twice: against elukit and, as a control, against torch.nn's own
function.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import elukit.torch as et  # noqa: E402
from elukit._registry import activations, get  # noqa: E402
from elukit.torch import _kernels, _ops  # noqa: E402

needs_library = pytest.mark.skipif(_ops.LOADED_LIBRARY is None,
                                   reason="elukit was built without its C++ operator library")

_FRESH = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    folder, library = sys.argv[1], sys.argv[2]
    if library:
        torch.ops.load_library(library)
    report = {}
    for dtype in ("float32", "float64"):
        saved = torch.load(f"{folder}/io_{dtype}.pt")
        x = saved["x"]
        scripted = torch.jit.load(f"{folder}/model_{dtype}.pt")
        exported = torch.export.load(f"{folder}/model_{dtype}.pt2").module()
        leaf = x.clone().requires_grad_()
        scripted(leaf).sum().backward()
        report[dtype] = [torch.equal(scripted(x), saved["y"]), torch.equal(exported(x), saved["y"]),
                         torch.equal(leaf.grad, saved["grad"])]
    report["elukit imported"] = any(name.split(".")[0] == "elukit" for name in sys.modules)
    if library:
        try:
            torch.ops.elukit.activation(x, "gelu", [], 0, False)
        except RuntimeError as error:
            report["unserved"] = str(error)
        import elukit.torch  # after the library: it is used as it is, and the Python side completes it
        from elukit.torch import _ops
        report["after import"] = [_ops.LOADED_LIBRARY == library,
                                  torch.equal(torch.ops.elukit.activation(x, "gelu", [], 0, False),
                                              elukit.torch.functional.activation(x, "gelu"))]
    print(json.dumps(report))
""")


def _model(framework: str) -> torch.nn.Module:
    nn = torch.nn if framework == "torch" else et
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), nn.ELU(alpha=0.7), torch.nn.Linear(8, 6), nn.SELU(),
                               nn.CELU(alpha=2.0), torch.nn.Linear(6, 3), nn.ELU())


@needs_library
@pytest.mark.parametrize("framework", ["torch", "elukit"])
def test_artifacts_with_the_operators_run_where_elukit_is_not_imported(framework, tmp_path):
    """Scripted and exported models (float32, float64) saved under keep_operators hold elukit's
    operators and, in a fresh process that loads the C++ library and never imports elukit, give
    eager's bits, forward and backward (the C++ autograd kernels); an operator call the library does
    not serve says what to import."""
    for dtype in (torch.float32, torch.float64):
        model = _model(framework).to(dtype)
        x = torch.randn(16, 4, dtype=dtype) * 3
        with et.keep_operators():
            scripted = torch.jit.script(model)
            exported = torch.export.export(model, (x,))
        if framework == "elukit":
            assert "elukit::activation" in str(scripted.inlined_graph)
            assert any(node.target is _ops.ACTIVATION for node in exported.graph.nodes)
        leaf = x.clone().requires_grad_()
        model(leaf).sum().backward()
        name = str(dtype).removeprefix("torch.")
        torch.jit.save(scripted, str(tmp_path / f"model_{name}.pt"))
        torch.export.save(exported, str(tmp_path / f"model_{name}.pt2"))
        torch.save({"x": x, "y": model(x).detach(), "grad": leaf.grad}, str(tmp_path / f"io_{name}.pt"))
    library = et.library_path() if framework == "elukit" else ""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", _FRESH, str(tmp_path), library], capture_output=True, text=True,
                            timeout=300, cwd=str(tmp_path), env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["float32"] == report["float64"] == [True, True, True], report
    assert not report["elukit imported"]
    if framework == "elukit":
        assert "import elukit.torch" in report["unserved"]
        assert report["after import"] == [True, True]


def _parameter_sets(spec):
    """The default parameters, and others spanning the kernels' cases (divisor != 1, tiny, large)."""
    if not spec.params:
        return [{}]
    sets = [{}]
    for value in (0.3, 2.5, 1e-3, 7.0):
        sets.append({p.name: value * (1.5 if i else 1.0) for i, p in enumerate(spec.params)})
    return sets


def _points(dtype):
    torch.manual_seed(1)
    finfo = torch.finfo(dtype)
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), finfo.tiny, -finfo.tiny,
                            finfo.max, -finfo.max, -1e-30, 1e-30, -100.0, -700.0], dtype=torch.float64)
    return torch.cat([torch.randn(2000, dtype=torch.float64) * 8, special]).to(dtype)


@needs_library
@pytest.mark.parametrize("operators", ["operators", "torch.compile twins"])
@pytest.mark.parametrize("name", activations())
def test_the_cpp_kernels_give_the_python_kernels_bits_for_every_spec(name, operators):
    """torch.ops.elukit.* on CPU (the C++ kernels where they serve, elukit's Python kernels where they
    do not) against elukit.torch._kernels called from Python: the same bits, orders 0-3, both modes,
    float16/float32/float64, every spec of the registry with torch kernels. The same for the twins
    that torch.compile records (elukit.torch._compiled), whose C++ kernels hand the cases they do not
    serve to the twins' own Python kernels."""
    if get(name).torch is None:
        pytest.skip("no torch kernels")
    from elukit.torch import _compiled

    activation, backward, inplace = ((_ops.ACTIVATION, _ops.ACTIVATION_BACKWARD, _ops.ACTIVATION_INPLACE)
                                     if operators == "operators" else
                                     (_compiled.ACTIVATION, _compiled.ACTIVATION_BACKWARD, _compiled.ACTIVATION_INPLACE))
    for params in _parameter_sets(get(name)):
        spec = get(name, **params)
        values = list(spec.parameters.values())
        highest = 3 if (spec.exponential_linear_form() or spec.linear_branches_form()) else 2  # f'' for the others
        for dtype in (torch.float16, torch.float32, torch.float64):
            x = _points(dtype)
            grad = torch.randn(x.shape, dtype=torch.float64).to(dtype)
            for exact in (False, True):
                for order in range(highest + 1):
                    got = activation(x, name, values, order, exact)
                    wanted = _kernels.evaluate_order(spec, order, x, exact)
                    torch.testing.assert_close(got, wanted, rtol=0, atol=0, equal_nan=True,
                                               msg=lambda m: f"{spec.label()} {dtype} order {order} exact {exact}: {m}")
                    if order == highest:
                        continue
                    got = backward(grad, x, name, values, order, exact)
                    wanted = _kernels.gradient_times_derivative(spec, order + 1, x, grad, exact)
                    torch.testing.assert_close(got, wanted, rtol=0, atol=0, equal_nan=True)
                written = x.clone()
                inplace(written, name, values, exact)
                torch.testing.assert_close(written, _kernels.evaluate_order(spec, 0, x, exact), rtol=0, atol=0,
                                           equal_nan=True)


@needs_library
def test_torch_compile_twins_run_the_cpp_kernels():
    """Where the library is loaded, it defines torch.compile's twin operators and serves them on the
    CPU (a compiled graph's run calls no Python kernel there), and none of them decomposes (what
    the twins are for: see elukit.torch._compiled)."""
    from elukit.torch import _compiled

    for twin in (_compiled.ACTIVATION, _compiled.ACTIVATION_BACKWARD, _compiled.ACTIVATION_INPLACE):
        operator = twin._schema.name.split("::")[1]
        dump = torch._C._dispatch_dump(f"elukit::{operator}")
        assert "_operators.cpp" in dump.split("\n")[2], dump  # the schema's own registration
        served = [line for line in dump.splitlines() if line.startswith("CompositeExplicitAutogradNonFunctional")]
        assert served and "_operators.cpp" in served[0], dump
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(f"elukit::{operator}",
                                                                  "CompositeImplicitAutograd"), dump


@needs_library
def test_the_cpp_kernels_give_the_same_bits_on_several_threads():
    """The library's kernels run their parallel parts on PyTorch's OpenMP team (import elukit.torch
    shares it): the split does not change a bit."""
    x = torch.randn(2**17, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 10
    spec = get("celu", alpha=0.7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        for order in (0, 1):
            wanted = _kernels.evaluate_order(spec, order, x)
            torch.set_num_threads(4)
            assert torch.equal(_ops.ACTIVATION(x, "celu", [0.7], order, False), wanted)
            assert torch.equal(_ops.ACTIVATION(x.float(), "celu", [0.7], order, False),
                               _kernels.evaluate_order(spec, order, x.float()))
    finally:
        torch.set_num_threads(threads)


_BAD_INPUTS = {
    "integer": lambda: torch.arange(4),
    "complex": lambda: torch.ones(4, dtype=torch.complex64),
    "sparse": lambda: torch.ones(4).to_sparse(),
}


@pytest.mark.parametrize("framework", ["torch", "elukit"])
@pytest.mark.parametrize("case", sorted(_BAD_INPUTS))
@pytest.mark.parametrize("call", ["functional", "module", "operator"])
def test_bad_inputs_raise_one_line_naming_the_argument(framework, case, call):
    """What the C++ checks raise (elukit's fast path and the operators): a TypeError of one line
    naming x. The control is that torch's own elu refuses these inputs too (with its own error)."""
    x = _BAD_INPUTS[case]()
    if framework == "torch":
        function = {"functional": torch.nn.functional.elu, "module": torch.nn.ELU(),
                    "operator": torch.ops.aten.elu.default}[call]
        if case == "sparse" and call != "operator":
            pytest.skip("torch's elu accepts sparse COO tensors")
        with pytest.raises((TypeError, RuntimeError, NotImplementedError)):
            function(x)
        return
    function = {"functional": et.functional.elu, "module": et.ELU(),
                "operator": lambda t: torch.ops.elukit.activation(t, "elu", [1.0])}[call]
    with pytest.raises(TypeError) as error:
        function(x)
    message = str(error.value)
    assert message.startswith("x must be a ") and "\n" not in message, message


@needs_library
@pytest.mark.parametrize("framework", ["torch", "elukit"])
def test_the_backward_operator_names_grad(framework):
    x = torch.randn(4, requires_grad=True)
    y = torch.nn.functional.elu(x) if framework == "torch" else et.functional.elu(x)
    with pytest.raises((TypeError, RuntimeError)) as error:
        y.backward(torch.ones(4, dtype=torch.complex64))
    if framework == "elukit":
        assert "grad must be a real floating-point tensor" in str(error.value) or "complex" in str(error.value)


_IN_PLACE_WITH_THE_LIBRARY_ALONE = """
import json, sys
import torch
from torch.autograd import forward_ad
torch.ops.load_library(sys.argv[1])
torch.set_num_threads(1)
F = torch.nn.functional
SPECS = {"elu": ([0.7], lambda t: F.elu(t, 0.7, inplace=True)), "selu": ([1.6732632423543772, 1.0507009873554805],
         lambda t: F.selu(t, inplace=True)), "celu": ([2.0], lambda t: F.celu(t, 2.0, inplace=True))}
report = {}
for dtype in (torch.float32, torch.float64):
    x = torch.tensor([-30.0, -2.0, -0.5, -1e-3, 0.25, 3.0], dtype=dtype)
    for name, (params, control) in SPECS.items():
        for framework in ("torch", "elukit"):
            def f(t):
                if framework == "torch":
                    return control(t)
                torch.ops.elukit.activation_(t, name, params, False)
                return t
            leaf = x.clone().requires_grad_()
            y = f(leaf * 1.0)
            (first,) = torch.autograd.grad(y.sum(), leaf, create_graph=True)
            (second,) = torch.autograd.grad(first.sum(), leaf)
            with forward_ad.dual_level():
                dual = forward_ad.make_dual(x.clone(), torch.ones_like(x))
                tangent = forward_ad.unpack_dual(f(dual)).tangent
            report[f"{framework} {name} {dtype}"] = [t.detach().tolist() for t in (y, first, second, tangent)]
report["elukit imported"] = any(module.split(".")[0] == "elukit" for module in sys.modules)
print(json.dumps(report))
"""


@needs_library
def test_in_place_training_with_the_library_alone():
    """A process that loaded the operator library alone (no elukit Python: a TorchScript artifact in
    a libtorch program, torch.ops.load_library) trains in place: f, f', f'' (create_graph) and the
    forward-mode tangent of elu/selu/celu, float32 and float64, are elukit's exact bits, with
    torch.nn.functional's in-place functions as the control (close to the same reference; torch's
    gradient at x = -30 in float32 collapses to 0, within the default tolerance; x = 0 is left out:
    torch's in-place backward takes it on the right branch, elukit on the left, as out of place).

    Regression: autograd's fallback first let the in-place operator through as the identity
    (gradient [1, 1] for ELU at [-2, 2]); then it was refused, naming `import elukit.torch`."""
    result = subprocess.run([sys.executable, "-c", _IN_PLACE_WITH_THE_LIBRARY_ALONE, et.library_path()],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report.pop("elukit imported") is False
    for key, quantities in report.items():
        framework, name, dtype = key.split()
        dtype = getattr(torch, dtype.split(".")[1])
        spec = get(name, **({"alpha": 0.7} if name == "elu" else {"alpha": 2.0} if name == "celu" else {}))
        x = torch.tensor([-30.0, -2.0, -0.5, -1e-3, 0.25, 3.0], dtype=dtype)
        wanted = [et.functional.evaluate_order(spec, order, x) for order in (0, 1, 2, 1)]
        for label, got, want in zip(("f", "f'", "f''", "tangent"), quantities, wanted):
            got = torch.tensor(got, dtype=dtype)
            if framework == "elukit":
                assert torch.equal(got, want), (key, label, got, want)
            else:
                torch.testing.assert_close(got, want, msg=f"{key} {label}")


_ERRORS = """
import json, sys
import torch
x = torch.tensor([-1.0, 0.5], dtype=torch.float64)
cases = {
    "op bad value": lambda: torch.ops.elukit.activation(x, "elu", [-1.0]),
    "op bad count": lambda: torch.ops.elukit.activation(x, "selu", [1.0]),
    "op bad slope": lambda: torch.ops.elukit.activation_(x.clone(), "leaky_relu", [float("inf")]),
    "backward bad value": lambda: torch.ops.elukit.activation_backward(x, x, "celu", [0.0]),
    "meta bad value": lambda: torch.ops.elukit.activation(x.to("meta"), "elu", [-1.0]),
}
if sys.argv[1] == "library alone":
    torch.ops.load_library(sys.argv[2])
    cases["meta gelu"] = lambda: torch.ops.elukit.activation(x.to("meta"), "gelu", [])
else:
    from elukit.torch import functional as F
    f = lambda t: F.elu(t * 1.0, inplace=True)
    cases.update({
        "alpha 10**400": lambda: F.elu(x, alpha=10**400),
        "alpha 10**400 inplace": lambda: F.celu(x.clone(), alpha=-10**400, inplace=True),
        "alpha 10**400 activation": lambda: F.activation(x, "elu", alpha=10**400),
        "alpha True": lambda: F.elu(x, alpha=True),
        "alpha True inplace": lambda: F.celu(x.clone(), alpha=True, inplace=True),
    })
    import elukit
    wanted = F.evaluate_order(elukit.get("elu"), 2, x)  # the exact f''
    nested = {
        "jacrev(jacrev)": lambda: torch.einsum("iii->i", torch.func.jacrev(torch.func.jacrev(f))(x)),
        "hessian": lambda: torch.func.hessian(lambda t: f(t).sum())(x).diagonal(),
        "jacfwd(grad)": lambda: torch.func.jacfwd(torch.func.grad(lambda t: f(t).sum()))(x).diagonal(),
    }
    cases.update({label: lambda route=route: torch.equal(route(), wanted) for label, route in nested.items()})
report = {}
for label, case in cases.items():
    try:
        report[label] = case()
    except Exception as error:
        report[label] = [type(error).__name__, str(error)]
print(json.dumps(report))
"""


def _errors(mode: str) -> dict:
    environment = dict(os.environ, ELUKIT_TORCH_NATIVE_OPS="0" if mode == "without the library" else "1")
    library = et.library_path() if mode == "library alone" else ""
    result = subprocess.run([sys.executable, "-c", _ERRORS, mode, library], capture_output=True, text=True,
                            timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@needs_library
def test_bad_arguments_get_the_same_one_line_error_on_every_path():
    """The same error, one line naming the argument, with the C++ library and elukit's Python (this
    process), with elukit's Python alone (ELUKIT_TORCH_NATIVE_OPS=0) and with the library alone.

    Regressions found in review: alpha=10**400 (an int too large for a float) gave pybind's multi-line
    "incompatible function arguments" on the C++ fast path and float()'s OverflowError, naming no
    argument, without it; with the library alone a bad parameter and a meta tensor got "not served by
    elukit's C++ operator library" (the meta tensor described as a float64 tensor; meta tensors are
    now served, tests/test_torch_meta.py, and a spec the library does not know names the device). torch.func's
    second derivatives through inplace=True (PyTorch INTERNAL ASSERTs before) give the exact f''
    (without the library jacfwd(grad(f)) is refused naming hessian(f), as out of place: an outer level
    does not see Python autograd Functions while an inner grad is live). alpha=True is refused on every path
    (torch.nn.functional.elu takes it as 1.0; in elukit a bool is refused as a parameter, so that
    elu(x, True), meaning inplace=True, cannot silently run out of place with alpha 1)."""
    with_library = _errors("with the library")
    without = _errors("without the library")
    alone = _errors("library alone")
    for report in (with_library, without):
        for label in ("jacrev(jacrev)", "hessian", "jacfwd(grad)"):
            outcome = report.pop(label)
            if report is without and label == "jacfwd(grad)":  # Python autograd Functions: grad nested, refused
                assert outcome[0] == "NotImplementedError" and "hessian(f)" in outcome[1], outcome
            else:
                assert outcome is True, (label, outcome)  # computed: the exact f'', bit for bit
    for report in (with_library, without, alone):
        for label, outcome in report.items():
            assert isinstance(outcome, list) and "\n" not in outcome[1], (label, outcome)
    for label in ("op bad value", "op bad count", "op bad slope", "backward bad value", "meta bad value"):
        assert with_library[label] == without[label] == alone[label], label
    assert with_library["op bad value"] == ["ValueError", "parameter 'alpha' must be finite and > 0, got -1.0"]
    assert with_library["op bad count"] == [
        "ValueError", "activation 'selu' takes 2 parameter(s) (alpha, scale), got 1: [1.0]"]
    for label in ("alpha 10**400", "alpha 10**400 inplace", "alpha 10**400 activation", "alpha True",
                  "alpha True inplace"):
        assert with_library[label] == without[label], label
        assert "parameter 'alpha'" in with_library[label][1], (label, with_library[label])
    assert "device meta" in alone["meta gelu"][1] and "import elukit.torch" in alone["meta gelu"][1]


@pytest.mark.parametrize("order", [-1, -2, -5])
@pytest.mark.parametrize("operator", ["activation", "activation_backward"])
def test_a_negative_order_is_refused_by_every_kernel(operator, order):
    """Regression: the C++ backward kernel took order -1 as f itself (ignoring grad) and -2 as
    grad * f'; the Python ones raised unrelated errors or returned a value (order -2). The real,
    meta and fake kernels now refuse it in one line."""
    x = torch.tensor([-2.0, -0.5, 0.5, 2.0], dtype=torch.float64)
    call = getattr(torch.ops.elukit, operator)
    arguments = (x, "elu", [1.0], order) if operator == "activation" else (torch.ones_like(x), x, "elu", [1.0], order)
    for device in ("cpu", "meta"):
        with pytest.raises(ValueError, match=f"order must be >= 0, got {order}"):
            call(*[a.to(device) if isinstance(a, torch.Tensor) else a for a in arguments])


@pytest.mark.parametrize("flags", [{"exact": "no"}, {"exact": 1}, {"exact": []}, {"inplace": "yes"}], ids=str)
@pytest.mark.parametrize("function", ["elu", "selu", "celu", "activation"])
def test_non_bool_flags_are_one_line_on_every_path(function, flags):
    """Found in review: on the C++ fast path exact="no" gave pybind's multi-line "incompatible
    function arguments", and without the library it was taken as true. Now one line, as the
    modules already said it, with and without the library."""
    call = getattr(et.functional, function)
    x = torch.randn(4)
    with pytest.raises(TypeError, match="inplace and exact must be bools") as error:
        call(x, "elu", **flags) if function == "activation" else call(x, **flags)
    assert "\n" not in str(error.value)


def test_library_path_names_the_file_or_the_build_command():
    if _ops.LOADED_LIBRARY is None and _ops._library_file() is None:
        with pytest.raises(ImportError, match="no-build-isolation"):
            et.library_path()
    else:
        assert os.path.exists(et.library_path())


_LIBTORCH_PROGRAM = r"""
#include <dlfcn.h>
#include <torch/script.h>

#include <cstdio>

// argv[1]: elukit's operator library; argv[2]: a scripted module with buffers x, y (its output) and
// grad (the gradient of its output's sum with respect to x), all computed by eager elukit.
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    if (dlopen(argv[1], RTLD_NOW) == nullptr) {
        std::fprintf(stderr, "%s\n", dlerror());
        return 2;
    }
    torch::jit::Module module = torch::jit::load(argv[2]);
    const torch::Tensor x = module.attr("x").toTensor().clone().requires_grad_();
    const torch::Tensor out = module.forward({x}).toTensor();
    out.sum().backward();
    const bool same = torch::equal(out.detach(), module.attr("y").toTensor()) &&
                      torch::equal(x.grad(), module.attr("grad").toTensor());
    std::printf(same ? "same bits\n" : "different\n");
    return same ? 0 : 1;
}
"""


class _Holder(torch.nn.Module):
    """A model with its input, output and input gradient as buffers, for the C++ program."""

    def __init__(self, model, x):
        super().__init__()
        self.model = model
        leaf = x.clone().requires_grad_()
        out = model(leaf)
        out.sum().backward()
        self.register_buffer("x", x)
        self.register_buffer("y", out.detach())
        self.register_buffer("grad", leaf.grad)

    def forward(self, x):
        return self.model(x)


@pytest.mark.slow  # compiles a libtorch program (about a minute here); the fresh-process test above covers the same
@needs_library
@pytest.mark.parametrize("framework", ["torch", "elukit"])
def test_a_libtorch_program_dlopens_the_library_and_runs_a_script(framework, tmp_path):
    """A C++ program linked with libtorch alone dlopens elukit's operator library and runs a scripted
    model holding elukit's operators: eager's bits, forward and backward."""
    import shutil

    from torch.utils.cpp_extension import include_paths, library_paths

    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    model = _model(framework).double()
    with et.keep_operators():
        holder = torch.jit.script(_Holder(model, torch.randn(16, 4, dtype=torch.float64) * 3))
    if framework == "elukit":
        assert "elukit::activation" in str(holder.model.inlined_graph) or "elukit::activation" in str(
            holder.inlined_graph)
    holder.save(str(tmp_path / "model.pt"))
    (tmp_path / "main.cpp").write_text(_LIBTORCH_PROGRAM)
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    command = [compiler, "-std=c++17", "-O0", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", str(tmp_path / "main.cpp"),
               "-o", str(tmp_path / "main")]
    command += [f"-I{path}" for path in include_paths()]
    command += [f"-L{path}" for path in library_paths()] + [f"-Wl,-rpath,{library_paths()[0]}"]
    command += ["-ltorch", "-ltorch_cpu", "-lc10", "-ldl"]
    subprocess.run(command, check=True, capture_output=True, timeout=900)
    library = et.library_path() if framework == "elukit" else "libc.so.6"
    result = subprocess.run([str(tmp_path / "main"), library, str(tmp_path / "model.pt")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "same bits", result.stdout + result.stderr[-2000:]


def _in_place_results(call, x, grad):
    leaf = x.clone().requires_grad_()
    y = call(leaf * 1.0)
    (first,) = torch.autograd.grad(y, leaf, grad, create_graph=True)
    (second,) = torch.autograd.grad(first, leaf, grad)
    return [t.detach().view(getattr(torch, f"int{8 * x.dtype.itemsize}")) for t in (y, first, second)]


def _python_in_place(t, spec, values, exact):
    """The Python in-place autograd (`_ops.InplaceFunction`), what serves without the library."""
    from torch._functorch.utils import enable_single_level_autograd_function

    with enable_single_level_autograd_function():
        return _ops.InplaceFunction.apply(t, t.clone(), spec, values, exact, None, None, _ops.ACTIVATION_BACKWARD)


@needs_library
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("spec", ["elu", "selu", "celu", "relu", "leaky_relu", "gelu"])
def test_in_place_autograd_in_cpp_gives_the_python_bits(spec, dtype):
    """activation_'s C++ autograd kernel against elukit's Python one (`_ops.InplaceFunction`, what
    serves without the library) and against the out-of-place operator: f, grad * f' and the second
    derivative (a random upstream gradient, a transposed view, special values), bit for bit, with
    exact=False and True."""
    parameters = {"elu": {"alpha": 0.7}, "celu": {"alpha": 3.0}, "leaky_relu": {"slope": 0.2}}.get(spec, {})
    values = list(get(spec, **parameters).parameters.values())
    generator = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(58, generator=generator, dtype=torch.float64) * 6,
                   torch.tensor([0.0, -0.0, float("inf"), -float("inf"), -1e-310, 1e-310], dtype=torch.float64)])
    x = x.to(dtype).reshape(8, 8).t()  # a view that is not contiguous
    grad = torch.randn(8, 8, generator=generator, dtype=torch.float64).to(dtype)
    for exact in (False, True):
        cpp = _in_place_results(lambda t: torch.ops.elukit.activation_(t, spec, values, exact) or t, x, grad)
        python = _in_place_results(lambda t: _python_in_place(t, spec, values, exact), x, grad)
        out_of_place = _in_place_results(lambda t: torch.ops.elukit.activation(t, spec, values, 0, exact), x, grad)
        for label, a, b, c in zip(("f", "f'", "f''"), cpp, python, out_of_place):
            assert torch.equal(a, b) and torch.equal(a, c), (label, exact)


@needs_library
def test_the_python_fallback_passes_the_composition_and_view_tests():
    """Installs without a C++ compiler run elukit.torch's Python operators and autograd nodes. The
    composition and view tests (in place on views and their errors, torch.func transforms, compile,
    modules, checkpoints) must pass there too: tests/test_torch_compose.py, test_torch_views.py and
    the compiled derivative transforms of test_torch_compile_bits.py in a process where the library
    is not loaded (ELUKIT_TORCH_NATIVE_OPS=0). It found an inference tensor written in place outside
    inference mode without PyTorch's error there, and a compiled jvp whose elukit tangent was zero."""
    import pathlib

    tests = pathlib.Path(__file__).resolve().parent
    environment = dict(os.environ, ELUKIT_TORCH_NATIVE_OPS="0")
    environment.pop("PYTEST_XDIST_WORKER", None)
    check = subprocess.run([sys.executable, "-c", "from elukit.torch import _ops; print(_ops.LOADED_LIBRARY)"],
                           env=environment, capture_output=True, text=True, timeout=300)
    assert check.stdout.strip() == "None", check.stdout + check.stderr  # the fallback is what runs below
    compiled = tests / "test_torch_compile_bits.py"
    run = subprocess.run([sys.executable, "-m", "pytest", str(tests / "test_torch_compose.py"),
                          str(tests / "test_torch_views.py"),
                          f"{compiled}::test_compiled_forward_mode_gives_the_eager_bits",
                          f"{compiled}::test_grad_of_grad_compiled_is_right_or_one_clear_error", "-q", "-p",
                          "no:cacheprovider"], cwd=tests.parent, env=environment,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]
