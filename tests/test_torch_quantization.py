"""FX int8 quantization: elukit's ELU family lowers as torch.nn's does (torch.nn is the control)."""

import pytest

torch = pytest.importorskip("torch")

from torch.ao.quantization import get_default_qconfig_mapping  # noqa: E402
from torch.ao.quantization.quantize_fx import convert_fx  # noqa: E402
from torch.ao.quantization.quantize_fx import prepare_fx as torch_prepare_fx  # noqa: E402

import elukit.torch as E  # noqa: E402
from elukit.torch import functional as EF  # noqa: E402
from elukit.torch import quantization  # noqa: E402

TF = torch.nn.functional
# torch 2.13 still ships FX quantization but warns that it is deprecated (torchao's pt2e replaces it)
# and its default x86 qconfig warns about its own observers' reduce_range
pytestmark = [pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning"),
              pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor, torch.quantize_per_channel:UserWarning")]


class Functional(torch.nn.Module):
    """Linear layers with the activations called as functions inside forward."""

    def __init__(self, elu, selu, celu):
        super().__init__()
        self.first, self.second, self.third = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)
        self.elu, self.selu, self.celu = elu, selu, celu

    def forward(self, x):
        return self.third(self.celu(self.second(self.selu(self.elu(self.first(x), alpha=0.5))), alpha=2.0))


def build(backend, form):
    """The same weights with torch.nn's activations (control) or elukit's, as modules or functions."""
    torch.manual_seed(0)
    if form == "modules":
        nn = torch.nn if backend == "torch" else E
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), nn.ELU(0.5), torch.nn.Linear(8, 8), nn.SELU(),
                                    torch.nn.Linear(8, 8), nn.CELU(2.0), torch.nn.Linear(8, 4))
    else:
        module = TF if backend == "torch" else EF
        model = Functional(module.elu, lambda t: module.selu(t), module.celu)
    return model.eval()


def quantized(backend, form):
    model = build(backend, form)
    calibration = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    prepare = torch_prepare_fx if backend == "torch" else quantization.prepare_fx
    prepared = prepare(model, get_default_qconfig_mapping("x86"), (calibration,))
    prepared(calibration)
    return convert_fx(prepared)


def graph_ops(model):
    """What the converted graph calls: module class names and function names, in order."""
    modules = dict(model.named_modules())
    found = []
    for node in model.graph.nodes:
        if node.op == "call_module":
            found.append(type(modules[node.target]).__name__)
        elif node.op in ("call_function", "call_method"):
            found.append(getattr(node.target, "__name__", str(node.target)))
    return found


@pytest.mark.parametrize("form", ["modules", "functions"])
@pytest.mark.parametrize("backend", ["elukit", "torch"])
def test_elu_lowers_to_the_quantized_elu_and_selu_celu_stay_float(backend, form):
    ops = graph_ops(quantized(backend, form))
    if form == "modules":
        model = quantized(backend, form)
        assert dict(model.named_modules())["1"]._get_name() == "QuantizedELU"  # torch.ao.nn.quantized.ELU
    else:
        assert "elu" in ops  # torch.ops.quantized.elu
    assert ops.count("dequantize") >= 2  # SELU and CELU run in float, as torch.nn's do


@pytest.mark.parametrize("form", ["modules", "functions"])
def test_elukit_and_torch_quantized_models_agree_exactly(form):
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(2))
    assert graph_ops(quantized("elukit", form)) == graph_ops(quantized("torch", form))
    assert torch.equal(quantized("elukit", form)(x), quantized("torch", form)(x))


def test_torch_equivalent_leaves_the_model_and_other_activations_alone():
    model = torch.nn.Sequential(E.ELU(0.5), E.Activation("gelu"))
    converted = quantization.torch_equivalent(model)
    assert isinstance(model[0], E.ELU)
    assert isinstance(dict(converted.named_modules())["0"], torch.nn.ELU)
    x = torch.randn(10)
    torch.testing.assert_close(converted(x), model(x))
