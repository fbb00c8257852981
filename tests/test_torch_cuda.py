"""CUDA paths of elukit.torch (run on a GPU machine; skipped where CUDA is unavailable)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import elukit  # noqa: E402
from elukit.torch import _kernels  # noqa: E402
from elukit.torch import functional as F  # noqa: E402

NAMES = elukit.activations()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_cuda_values_and_gradients_match_cpu(name, dtype):
    x = (torch.randn(4096, dtype=torch.float64) * 6).to(dtype)
    x[:4] = torch.tensor([-20.0, -1e-8, 0.0, float("nan")], dtype=dtype)
    spec = elukit.get(name)
    for quantity in ("value", "derivative", "second_derivative"):
        cpu = _kernels._torch_kernel(spec, quantity, x).double().numpy()  # the torch kernels on the CPU
        gpu = F.evaluate(spec, quantity, x.cuda()).cpu().double().numpy()
        same = (cpu == gpu) | (np.isnan(cpu) & np.isnan(gpu))
        if dtype != torch.float64:
            # CPU and CUDA libm differ by ~1 ulp of float64, which moves only results that sit
            # at a rounding boundary of the narrow dtype
            assert same.mean() >= 0.999, (name, dtype, quantity)
        elif name in ("elu", "selu", "celu", "relu", "leaky_relu"):
            finite = np.isfinite(cpu)
            ulps = np.abs(gpu[finite] - cpu[finite]) / np.maximum(np.spacing(np.abs(cpu[finite])), 5e-324)
            assert ulps.max() <= 8, (name, quantity, ulps.max())
        else:  # the comparators' float64 results cancel near their roots (SiLU', GELU'): absolute bound
            finite = np.isfinite(cpu)
            assert np.all(np.abs(gpu[finite] - cpu[finite]) <= 1e-14 * np.maximum(1.0, np.abs(cpu[finite])))


def test_cuda_16_bit_elu_is_correctly_rounded_on_every_input():
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.arange(2**16, dtype=torch.int32).to(torch.int16).view(dtype)
        x = x[torch.isfinite(x)]
        gpu = F.evaluate(elukit.get("elu"), "value", x.cuda()).cpu().to(torch.float32).numpy()
        cpu = _kernels._torch_kernel(elukit.get("elu"), "value", x).to(torch.float32).numpy()
        assert np.array_equal(gpu, cpu, equal_nan=True)


@pytest.mark.parametrize("name", NAMES)
def test_cuda_gradcheck_and_gradgradcheck(name):
    x = (torch.randn(32, dtype=torch.float64, device="cuda") * 2)
    x[x.abs() < 1e-3] = 0.5
    x.requires_grad_()
    function = lambda t: F.activation(t, name)  # noqa: E731
    assert torch.autograd.gradcheck(function, (x,))
    assert torch.autograd.gradgradcheck(function, (x,))


def test_cuda_gradient_does_not_collapse_and_inplace_works():
    x = torch.tensor([-20.0, -40.0], device="cuda", requires_grad=True)
    F.elu(x).sum().backward()
    assert x.grad[0].item() == np.float32(2.0611537e-09)
    y = torch.tensor([-20.0, 1.0], device="cuda", requires_grad=True)
    F.elu(y * 1.0, inplace=True).sum().backward()
    assert y.grad[0].item() == np.float32(2.0611537e-09) and y.grad[1].item() == 1.0


def test_cuda_compile_fullgraph():
    compiled = torch.compile(lambda t: F.selu(t).sum(), fullgraph=True)
    x = torch.randn(1024, device="cuda", requires_grad=True)
    compiled(x).backward()
    expected = torch.from_numpy(elukit.get("selu").derivative(x.detach().cpu().numpy()))
    assert torch.equal(x.grad.cpu(), expected)


def test_cuda_operators_compose_with_torch_func_and_compile():
    x = torch.randn(6, 5, dtype=torch.float64, device="cuda")
    per_sample = torch.func.vmap(torch.func.grad(lambda row: F.elu(row).sum()))(x)
    expected = torch.from_numpy(elukit.get("elu").derivative(x.cpu().numpy())).cuda()
    torch.testing.assert_close(per_sample, expected)
    compiled = torch.compile(lambda t: F.elu(t, inplace=True), fullgraph=True, backend="aot_eager")
    y = x.clone()
    compiled(y)
    torch.testing.assert_close(y, F.elu(x))
    assert F.elu(torch.empty(3, device="meta")).device.type == "meta"
