"""Meta tensors, FakeTensorMode, torch.compile, torch.export and torch.func through elukit's operators,
with the C++ operator library (its Meta kernels), with the library alone (a process that never
imports elukit) and without it (elukit.torch's Python fake kernels, ``ELUKIT_TORCH_NATIVE_OPS=0``).

Each test runs twice: against elukit's operators and, as a control, against torch's own
``aten.elu`` / ``elu_backward`` / ``elu_``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import elukit.torch as et  # noqa: E402
from elukit.torch import _ops  # noqa: E402

needs_library = pytest.mark.skipif(_ops.LOADED_LIBRARY is None,
                                   reason="elukit was built without its C++ operator library")

MODES = ("library alone", "with the library", "without the library")

# Run in a fresh process: `mode` says what serves elukit's operators there. The cases are meta tensors
# of every floating dtype, 0-dim, transposed, strided (not dense), expanded and channels-last ones; for
# each, (shape, strides, dtype, device) of the out-of-place results, what the in-place call returns,
# whether it keeps x and by how much it moves x's version counter; then the argument errors.
_META = textwrap.dedent("""
    import json, sys
    import torch
    mode, library = sys.argv[1], sys.argv[2]
    if mode == "library alone":
        torch.ops.load_library(library)
    else:
        import elukit.torch
    A, E = torch.ops.aten, torch.ops.elukit
    OPS = {
        "torch": (lambda x: A.elu(x, 0.7), lambda g, x: A.elu_backward(g, 0.7, 1, 1, False, x),
                  lambda x: A.elu_(x, 0.7)),
        "elukit": (lambda x: E.activation(x, "elu", [0.7]), lambda g, x: E.activation_backward(g, x, "selu",
                   [1.6732632423543772, 1.0507009873554805], 1), lambda x: E.activation_(x, "celu", [2.0])),
    }

    def inputs():
        base = torch.empty(4, 6, device="meta")
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            yield f"{dtype} 4x6", base.to(dtype)
            yield f"{dtype} 0-dim", torch.empty((), device="meta", dtype=dtype)
        yield "transposed", base.t()
        yield "strided", base.t()[::2]
        yield "expanded", base[:1].expand(4, 6)
        yield "channels last", torch.empty(2, 3, 4, 5, device="meta").to(memory_format=torch.channels_last)
        yield "empty", torch.empty(0, 3, device="meta")

    def layout(t):
        return [list(t.shape), list(t.stride()), str(t.dtype), t.device.type]

    def outcome(call):
        try:
            return call()
        except Exception as error:
            return [type(error).__name__, str(error)]

    report = {}
    for framework, (forward, backward, inplace) in OPS.items():
        shapes = {}
        for label, x in inputs():
            shapes[label] = {"wanted": layout(torch.empty_like(x)), "forward": layout(forward(x)),
                             "backward": layout(backward(torch.empty_like(x), x))}
            if label == "expanded":  # refused by elukit (as on CPU: "expanded x in place" below), not by torch's meta
                continue
            before, version = layout(x), x._version
            returned = inplace(x)
            shapes[label]["in place"] = [returned is None or returned is x, layout(x) == before, x._version - version]
        report[framework] = shapes
    x, meta = torch.empty(3, device="meta"), lambda dtype: torch.empty(3, device="meta", dtype=dtype)
    report["errors"] = {label: outcome(call) for label, call in {
        "integer x": lambda: E.activation(meta(torch.int64), "elu", [1.0]),
        "bool x": lambda: E.activation_(meta(torch.bool), "elu", [1.0]),
        "uint16 x": lambda: E.activation(meta(torch.uint16), "elu", [1.0]),
        "complex x": lambda: E.activation(meta(torch.complex64), "elu", [1.0]),
        "complex grad": lambda: E.activation_backward(meta(torch.complex64), x, "elu", [1.0]),
        "integer x in backward": lambda: E.activation_backward(x, meta(torch.int32), "elu", [1.0]),
        "bad alpha": lambda: E.activation(x, "elu", [-1.0]),
        "bad alpha in place": lambda: E.activation_(x, "celu", [float("inf")]),
        "bad count": lambda: E.activation_backward(x, x, "selu", [1.0]),
        "negative order": lambda: E.activation(x, "elu", [1.0], -1),
        "negative order in backward": lambda: E.activation_backward(x, x, "elu", [1.0], -2),
        "gelu": lambda: layout(E.activation(x, "gelu", [])),
        "gelu with a parameter": lambda: E.activation(x, "gelu", [1.0]),
        "unknown": lambda: E.activation_(x, "nope", []),
        "expanded x in place": lambda: E.activation_(x[:1].expand(3), "elu", [1.0]),
    }.items()}
    report["torch refuses an integer meta tensor"] = outcome(lambda: A.elu(meta(torch.int64)))
    report["elukit imported"] = any(name.split(".")[0] == "elukit" for name in sys.modules)
    print(json.dumps(report))
""")


@functools.lru_cache(maxsize=None)
def _meta_report(mode: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment["ELUKIT_TORCH_NATIVE_OPS"] = "0" if mode == "without the library" else "1"
    library = et.library_path() if mode == "library alone" else ""
    result = subprocess.run([sys.executable, "-c", _META, mode, library], capture_output=True, text=True,
                            timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_library
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("framework", ["torch", "elukit"])
def test_meta_tensors_give_empty_like_x(framework, mode):
    """activation, activation_backward and activation_ on meta tensors, in a fresh process for each of
    the three ways the operators can be served: the out-of-place results are laid out as
    torch.empty_like(x) (what elukit's Python fake kernels return, and what torch's elu gives),
    every floating dtype, 0-dim, non-contiguous and empty included; the in-place call keeps x and
    moves its version counter by one, as torch's elu_.

    Regression: with the library alone (a libtorch program, torch.ops.load_library) meta tensors
    were refused, naming `import elukit.torch`."""
    report = _meta_report(mode)
    assert report["elukit imported"] is (mode != "library alone")
    for label, got in report[framework].items():
        wanted = got.pop("wanted")
        wanted = {"forward": wanted, "backward": wanted, "in place": [True, True, 1]}
        if label == "expanded":
            del wanted["in place"]
        assert got == wanted, (label, got)


@needs_library
def test_meta_argument_errors_are_the_python_fake_kernels_on_every_path():
    """What the C++ Meta kernels raise (with elukit's Python, and with the library alone) is what
    elukit's Python fake kernels raise (ELUKIT_TORCH_NATIVE_OPS=0): the same type and one-line
    message naming the argument, in the same order of checks. Specs the library does not know are
    checked by elukit's Python where it is imported; with the library alone they are refused in
    one line naming `import elukit.torch`. The control: torch's own elu refuses an integer meta
    tensor too."""
    python, with_library, alone = (_meta_report(mode)["errors"] for mode in reversed(MODES))
    assert _meta_report("library alone")["torch refuses an integer meta tensor"][0] == "RuntimeError"
    assert with_library == python
    for label, outcome in python.items():
        if label == "gelu":
            assert outcome == [[3], [1], "torch.float32", "meta"]
            continue
        assert outcome[0] in ("TypeError", "ValueError", "RuntimeError") and "\n" not in outcome[1], (label, outcome)
        if label in ("gelu with a parameter", "unknown"):
            assert alone[label][0] == "RuntimeError" and "import elukit.torch" in alone[label][1], alone[label]
            assert "device meta" in alone[label][1] and "\n" not in alone[label][1]
        else:
            assert alone[label] == outcome, label
    assert python["uint16 x"][1].startswith("x must be a floating-point tensor, got dtype torch.uint16;")
    assert python["complex grad"][1].startswith("grad must be a real floating-point tensor")
    assert python["negative order in backward"] == ["ValueError", "order must be >= 0, got -2"]
    overlap = python["expanded x in place"]
    assert overlap[0] == "RuntimeError" and "single memory location" in overlap[1], overlap


@needs_library
def test_the_library_serves_meta_and_elukit_registers_no_fake_kernel():
    """Where the library is loaded, its C++ Meta kernels are the operators' fake kernels: elukit.torch
    registers none of its own (torch.library.register_fake would replace them)."""
    for name in ("activation", "activation_backward", "activation_"):
        table = torch._C._dispatch_dump(f"elukit::{name}")
        meta = [line for line in table.splitlines() if line.startswith("Meta")]
        assert len(meta) == 1 and "_operators.cpp" in meta[0], table


_OPERATORS = {
    "torch": (lambda x: torch.ops.aten.elu(x, 0.7),
              lambda g, x: torch.ops.aten.elu_backward(g, 0.7, 1, 1, False, x),
              lambda x: torch.ops.aten.elu_(x, 0.7)),
    "elukit": (lambda x: torch.ops.elukit.activation(x, "elu", [0.7]),
               lambda g, x: torch.ops.elukit.activation_backward(g, x, "elu", [0.7]),
               lambda x: torch.ops.elukit.activation_(x, "elu", [0.7]) or x),
}


def _chain(forward, backward, inplace):
    def f(x):
        y = forward(x * 2.0)
        z = inplace(y * 1.0)
        return backward(z, x) + z
    return f


# The FutureWarning is torch's own (torch.export with dynamic shapes pickles a LeafSpec), for the control too.
@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")
@pytest.mark.parametrize("framework", ["torch", "elukit"])
def test_fake_tensors_compile_export_and_transforms(framework):
    """The three operators (called directly, as a graph holding them does) under FakeTensorMode,
    torch.compile (fullgraph, dynamic shapes, forward and backward), torch.export with a dynamic
    batch dimension (and run_decompositions) and torch.func (vmap and grad on meta tensors, jacrev
    on CPU ones): the shapes of empty_like and the eager values. In this process the C++ library's
    Meta kernels serve where it is built; `test_fake_tensors_compile_export_and_transforms_without_the_library`
    runs the same with elukit's Python fake kernels."""
    report = _tracing_report(framework)
    assert report == {"fake": [[[3, 5], [1, 3], "FakeTensor"]] * 3, "same": [True] * 8, "vmap": [4, 3],
                      "grad": [[4], "meta"]}, report


def _tracing_report(framework: str) -> dict:
    from torch._subclasses.fake_tensor import FakeTensorMode

    forward, backward, inplace = _OPERATORS[framework]
    f = _chain(forward, backward, inplace)
    with FakeTensorMode():
        x = torch.empty(5, 3).t()
        out = [forward(x), backward(x, x), inplace(x * 1.0)]
    fake = [[list(t.shape), list(t.stride()), type(t).__name__] for t in out]
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, dynamic=True, backend="aot_eager")
    xs = [torch.randn(n, 3, dtype=torch.float64) for n in (4, 7)]
    same = [torch.allclose(compiled(x), f(x)) for x in xs]
    leaves = [xs[1].clone().requires_grad_() for _ in range(2)]
    compiled(leaves[0]).sum().backward()
    f(leaves[1]).sum().backward()
    same.append(torch.allclose(leaves[0].grad, leaves[1].grad))

    class Model(torch.nn.Module):
        def forward(self, x):
            return f(x)

    batch = torch.export.Dim("batch")
    exported = torch.export.export(Model(), (xs[0],), dynamic_shapes=({0: batch},))
    same += [torch.allclose(exported.module()(x), f(x)) for x in xs]
    decomposed = exported.run_decompositions()
    same += [torch.allclose(decomposed.module()(x), f(x)) for x in xs]
    vmapped = torch.func.vmap(forward)(torch.empty(4, 3, device="meta"))
    gradient = torch.func.grad(lambda t: forward(t).sum())(torch.empty(4, device="meta"))
    row = xs[0][0]
    same.append(torch.allclose(torch.func.jacrev(forward)(row), torch.func.jacrev(_OPERATORS["torch"][0])(row)))
    return {"fake": fake, "same": same, "vmap": list(vmapped.shape),
            "grad": [list(gradient.shape), gradient.device.type]}


_WITHOUT_THE_LIBRARY = textwrap.dedent("""
    import json, sys, warnings
    import torch
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    import test_torch_meta
    from elukit.torch import _ops
    report = {framework: test_torch_meta._tracing_report(framework) for framework in ("torch", "elukit")}
    report["library"] = _ops.LOADED_LIBRARY
    print(json.dumps(report))
""")


def test_fake_tensors_compile_export_and_transforms_without_the_library():
    """`test_fake_tensors_compile_export_and_transforms` in a process where elukit.torch does not load
    its C++ library (ELUKIT_TORCH_NATIVE_OPS=0, as an install built without a compiler): elukit's
    Python fake kernels serve, with the same results, torch's operators as the control."""
    environment = dict(os.environ, ELUKIT_TORCH_NATIVE_OPS="0")
    result = subprocess.run([sys.executable, "-c", _WITHOUT_THE_LIBRARY, os.path.dirname(os.path.abspath(__file__))],
                            capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.pop("library") is None
    for framework in ("torch", "elukit"):
        assert report[framework] == {"fake": [[[3, 5], [1, 3], "FakeTensor"]] * 3, "same": [True] * 8,
                                     "vmap": [4, 3], "grad": [[4], "meta"]}, (framework, report[framework])
