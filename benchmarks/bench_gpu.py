"""elukit's Triton kernels (backend="triton") on a CUDA device against F.elu and a device copy.

For float32 and bfloat16 at 2^16 ... 2^28 elements: forward, forward+backward and in-place, the
median time of elukit and of torch.nn.functional.elu, their ratio, and the share of the copy
bandwidth elukit reaches (bytes it must move / its time, over bytes / time of ``out.copy_(x)`` of
the same size: forward and in-place move 2 tensors, the backward 3, forward+backward 5). The
issue's target: forward and forward+backward >= 90% of the copy bandwidth at 2^24 and above.

Before timing, every dtype is checked bit for bit against elukit's CPU kernels on a sample with
the special values (the GPU's own arithmetic: fused multiply-add must be off, subnormals kept).

    python benchmarks/bench_gpu.py                  # all rows (a few minutes on one GPU)
    python benchmarks/bench_gpu.py --quick          # 2^20 and 2^24 only
    python benchmarks/bench_gpu.py --max-log2 26    # smaller memory

Ratios, not pass/fail times; the device's name is printed with them.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

import elukit
from elukit.torch import functional as F


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({torch.float64: torch.int64, torch.float32: torch.int32}.get(t.dtype, torch.int16))


def verify(device: torch.device) -> bool:
    """The Triton kernels on the device against the CPU kernels: values, orders 1-3 and grad * f'."""
    from elukit.torch import _triton

    generator = torch.Generator().manual_seed(0)
    ok = True
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        if dtype in (torch.float16, torch.bfloat16):
            x = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
        else:
            x = torch.cat([torch.randn(1 << 20, generator=generator, dtype=torch.float64) * 8,
                           torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), -1e-310, -745.2, -87.4,
                                         -103.9, 1e-40, -1e-40])]).to(dtype)
        grad = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype)
        for name, params in (("elu", {}), ("selu", {}), ("celu", {"alpha": 3.0}), ("leaky_relu", {}), ("relu", {})):
            spec = elukit.get(name, **params)
            for order in range(4):
                got = _triton.derivative(x.to(device), spec, order).cpu()
                wanted = F.evaluate_order(spec, order, x)
                checks = [(f"order {order}", got, wanted)]
                if order == 1:
                    checks.append(("grad * f'", _triton.gradient(grad.to(device), x.to(device), spec, 1).cpu(),
                                   F.gradient_times_derivative(spec, 1, x, grad)))
                for label, g, w in checks:
                    nan = torch.isnan(w)
                    bad = ((_bits(g) != _bits(w)) & ~nan) | (torch.isnan(g) != nan)
                    if bad.any():
                        ok = False
                        where = bad.nonzero()[:3, 0]
                        print(f"MISMATCH {spec.label()} {dtype} {label}: {int(bad.sum())} elements, x "
                              f"{x[where].tolist()} gpu {g[where].tolist()} cpu {w[where].tolist()}")
    print("bit-for-bit check against the CPU kernels:", "passed" if ok else "FAILED")
    return ok


def _time(function, repeats: int) -> float:
    """Median milliseconds of `function` over `repeats` runs, each timed with CUDA events."""
    for _ in range(3):
        function()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2^20 and 2^24 only")
    parser.add_argument("--max-log2", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-verify", action="store_true", help="skip the bit-for-bit check")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA device (torch.cuda.is_available() is False)")
        return 2
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, median of {args.repeats}")
    if not args.no_verify and not verify(device):
        return 1
    sizes = (20, 24) if args.quick else tuple(range(16, args.max_log2 + 1, 2))
    print(f"{'dtype':9} {'n':>5} {'pass':8} {'F.elu ms':>9} {'elukit ms':>10} {'ratio':>6} {'copy ms':>8} "
          f"{'% of copy bw':>12}")
    for dtype in (torch.float32, torch.bfloat16):
        for log_n in sizes:
            n = 1 << log_n
            x = torch.randn(n, device=device, dtype=dtype)
            grad = torch.randn(n, device=device, dtype=dtype)
            scratch = torch.empty_like(x)
            copy_ms = _time(lambda: scratch.copy_(x), args.repeats)  # 2 tensors' bytes

            def forward(backend):
                return lambda: F.elu(x, backend=backend) if backend else torch.nn.functional.elu(x)

            def both(backend):
                leaf = x.detach().requires_grad_()

                def run():
                    y = F.elu(leaf, backend=backend) if backend else torch.nn.functional.elu(leaf)
                    y.backward(grad)
                    leaf.grad = None
                return run

            def inplace(backend):
                def run():
                    scratch.copy_(x)
                    F.elu(scratch, inplace=True, backend=backend) if backend else torch.nn.functional.elu(
                        scratch, inplace=True)
                return run

            rows = (("forward", forward, 2.0, 0.0), ("fwd+bwd", both, 5.0, 0.0),
                    ("in-place", inplace, 2.0, copy_ms))  # in-place rows include one copy to restore x
            for label, make, tensors, extra in rows:
                native = _time(make(None), args.repeats) - extra
                ours = _time(make("triton"), args.repeats) - extra
                share = (tensors / 2.0) * copy_ms / ours * 100.0
                print(f"{str(dtype).removeprefix('torch.'):9} 2^{log_n:<3} {label:8} {native:9.3f} {ours:10.3f} "
                      f"{ours / native:6.2f} {copy_ms:8.3f} {share:11.0f}%")
            del x, grad, scratch
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
