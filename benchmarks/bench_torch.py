"""elukit.torch.functional.elu against torch.nn.functional.elu on CPU.

Run: python benchmarks/bench_torch.py  (``--small``: the per-call rows only; ``--training``: the
1-thread forward+backward rows at 2^16-2^22 only; ``--paired``: the per-call and training-size targets, native
and elukit alternating over 21 rounds, the median ratio with its bootstrap interval (not in the
default run); ``--compiled``: the torch.compile'd model rows only; several: those, in one run)

Small tensors first (64, 2^10 and 2^12 elements, float32, 1 thread), where the per-call overhead
dominates: the time per call in microseconds for elukit and native, forward (no grad),
forward+backward, in-place forward (no grad, applied again and again to one buffer: its values stay
finite and the kernels' cost does not depend on them) and in-place forward+backward (on a non-leaf
copy; elukit keeps a copy of x from before the write, so it differentiates twice, as torch does),
and the ratios. Then forward and forward+backward, float32 and float64, 2^16 and
2^22 elements, 1 and 2 threads: the
default path (elukit's compiled C kernels where they were built: float64 from the fast faithful
kernels), exact=True (float64 from the correctly rounding double-double kernels; the NumPy backend
where the extension is missing), and with `use_compiled_kernels(True)` (torch.compile; compiled before timing; for ELU the C
kernels take precedence, so it matters where they are missing);
every figure is a ratio to the native op measured in the same run. Then the peak extra memory of
the in-place mode (bytes allocated beyond the input, from the tensors autograd keeps) against the
native in-place op, whose backward collapses to zero for x <= -17.3 (float32).
"""

from __future__ import annotations

import sys
import timeit

import torch
import torch.nn.functional as F

from elukit import _native
from elukit.torch import functional as E


def best(function, repeat=7, number=3):
    function()
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number


def forward_backward(function, x):
    def run():
        leaf = x.detach().requires_grad_()
        function(leaf).sum().backward()
    return run


def inplace_forward_backward(function, x):
    def run():
        leaf = x.detach().requires_grad_()
        function(leaf * 1.0, inplace=True).sum().backward()
    return run


def small_tensors() -> None:
    """Per-call time where the overhead of a call dominates: functional.elu against F.elu, and the
    ELU module against torch.nn.ELU (module rows: forward and forward+backward ratios)."""
    from elukit.torch import ELU

    torch.set_num_threads(1)
    print(f"{'size':>6} {'fwd native us':>14} {'fwd elukit us':>14} {'fwd ratio':>10} "
          f"{'f+b native us':>14} {'f+b elukit us':>14} {'f+b ratio':>10} {'inplace fwd ratio':>18} {'inplace f+b ratio':>18} "
          f"{'module fwd':>11} {'module f+b':>11}")
    native_module, our_module = torch.nn.ELU(), ELU()
    for size in (64, 2**10, 2**12):
        x = torch.randn(size) * 3
        native = best(lambda: F.elu(x), number=300)
        ours = best(lambda: E.elu(x), number=300)
        native_fb = best(forward_backward(F.elu, x), number=300)
        ours_fb = best(forward_backward(E.elu, x), number=300)
        buffer_native, buffer_ours = x.clone(), x.clone()
        native_if = best(lambda: F.elu(buffer_native, inplace=True), number=300)
        ours_if = best(lambda: E.elu(buffer_ours, inplace=True), number=300)
        native_in = best(inplace_forward_backward(F.elu, x), number=300)
        ours_in = best(inplace_forward_backward(E.elu, x), number=300)
        native_m = best(lambda: native_module(x), number=300)
        ours_m = best(lambda: our_module(x), number=300)
        native_mfb = best(forward_backward(native_module, x), number=300)
        ours_mfb = best(forward_backward(our_module, x), number=300)
        print(f"{size:>6} {1e6 * native:>14.1f} {1e6 * ours:>14.1f} {ours / native:>9.2f}x "
              f"{1e6 * native_fb:>14.1f} {1e6 * ours_fb:>14.1f} {ours_fb / native_fb:>9.2f}x {ours_if / native_if:>17.2f}x {ours_in / native_in:>17.2f}x "
              f"{ours_m / native_m:>10.2f}x {ours_mfb / native_mfb:>10.2f}x")


def training_sizes(sizes=(2**16, 2**18, 2**20, 2**22), repeat=7) -> None:
    """Forward+backward, out of place, 1 thread, the sizes of the fused training forward's target
    (<= 1.0x F.elu): the default training node (saves x) and the fused one (`use_fused_training`:
    f and f' from one exponential, f' saved), each a ratio to native measured in the same run, best
    of `repeat`; fwd(grad) is the forward of a tensor that requires grad."""
    torch.set_num_threads(1)
    print(f"{'dtype':>8} {'size':>8} {'fwd native ms':>14} {'fwd ratio':>10} {'f+b native ms':>14} {'f+b ratio':>10} "
          f"{'f+b fused':>10} {'fwd(grad)':>10} {'fwd(grad) fused':>16}")
    for dtype in (torch.float32, torch.float64):
        for size in sizes:
            x = torch.randn(size, dtype=dtype) * 3
            number = max(1, 2**20 // size)
            leaf_native = x.detach().requires_grad_()
            leaf_ours = x.detach().requires_grad_()
            native = best(lambda: F.elu(x), repeat, number)
            ours = best(lambda: E.elu(x), repeat, number)
            native_fb = best(forward_backward(F.elu, x), repeat, number)
            ours_fb = best(forward_backward(E.elu, x), repeat, number)
            native_g = best(lambda: F.elu(leaf_native), repeat, number)
            ours_g = best(lambda: E.elu(leaf_ours), repeat, number)
            E.use_fused_training(True)
            try:
                fused_fb = best(forward_backward(E.elu, x), repeat, number)
                fused_g = best(lambda: E.elu(leaf_ours), repeat, number)
            finally:
                E.use_fused_training(False)
            print(f"{str(dtype)[6:]:>8} {size:>8} {1e3 * native:>14.3f} {ours / native:>9.2f}x "
                  f"{1e3 * native_fb:>14.3f} {ours_fb / native_fb:>9.2f}x {fused_fb / native_fb:>9.2f}x "
                  f"{ours_g / native_g:>9.2f}x {fused_g / native_g:>15.2f}x")


def paired(sizes=(2**16, 2**18, 2**20, 2**22), rounds=21) -> None:
    """The issue's targets measured in pairs, 1 thread: per call at 64 and 1,024 elements (forward,
    forward+backward, module forward+backward; float32) and forward+backward at the training sizes
    (float32 and float64), native and elukit alternating in one process (ABBA within each round, so
    drift in the machine's speed falls on both): each round's ratio of the two wall-clock times, and
    the median ratio over the rounds with its 95% BCa bootstrap interval (elukit.statistics). For a
    shared machine, where one best-of-7 ratio moves by +-10% or more from run to run."""
    import time

    import numpy as np

    from elukit.statistics import bootstrap_interval

    from elukit.torch import ELU

    torch.set_num_threads(1)
    print(f"{'paired':>22} {'size':>8} {'native us':>10} {'median ratio':>13} {'95% interval':>16} "
          f"{'rounds > 1':>11}")
    x64, x1024 = torch.randn(64) * 3, torch.randn(1024) * 3
    native_module, our_module = torch.nn.ELU(), ELU()
    cases = [("forward", x64, lambda: F.elu(x64), lambda: E.elu(x64), 300),
             ("forward", x1024, lambda: F.elu(x1024), lambda: E.elu(x1024), 300),
             ("f+b", x64, forward_backward(F.elu, x64), forward_backward(E.elu, x64), 100),
             ("f+b", x1024, forward_backward(F.elu, x1024), forward_backward(E.elu, x1024), 100),
             ("module f+b", x64, forward_backward(native_module, x64), forward_backward(our_module, x64), 100),
             ("module f+b", x1024, forward_backward(native_module, x1024), forward_backward(our_module, x1024), 100)]
    for dtype in (torch.float32, torch.float64):
        for size in sizes:
            x = torch.randn(size, dtype=dtype) * 3
            cases.append((f"f+b {str(dtype)[6:]}", x, forward_backward(F.elu, x), forward_backward(E.elu, x),
                          max(1, 2**20 // size)))
    def timed(run, number):
        start = time.perf_counter()
        for _ in range(number):
            run()
        return (time.perf_counter() - start) / number

    for label, x, native, ours, number in cases:
        native(), ours()
        ratios, native_times = [], []
        for _ in range(rounds):
            a1, b1, b2, a2 = timed(native, number), timed(ours, number), timed(ours, number), timed(native, number)
            ratios.append((b1 + b2) / (a1 + a2))
            native_times.append((a1 + a2) / 2)
        ratios = np.array(ratios)
        low, high = bootstrap_interval(ratios, np.median)
        print(f"{label:>22} {x.numel():>8} {1e6 * np.median(native_times):>10.1f} "
              f"{np.median(ratios):>12.3f}x {f'{low:.3f}-{high:.3f}x':>16} {int((ratios > 1).sum()):>6} of {rounds}")


def compiled_models(sizes=(2**10, 2**16)) -> None:
    """torch.compile'd Linear + activation (a graph that calls elukit's torch.compile twins; torch's
    ELU fuses into inductor's generated code instead), per call, 1 thread: forward (parameters
    requiring grad, as in training) and forward+backward, elukit's ELU against torch.nn.ELU
    compiled the same way, out of place and in place. Each model is compiled before timing."""
    from elukit.torch import ELU

    torch.set_num_threads(1)
    print(f"{'compiled Linear+ELU':>20} {'size':>8} {'fwd native us':>14} {'fwd ratio':>10} {'f+b native us':>14} "
          f"{'f+b ratio':>10}")
    for size in sizes:
        x = torch.randn(64, size // 64)
        for inplace in (False, True):
            times = {}
            for label, activation in (("native", torch.nn.ELU(inplace=inplace)), ("elukit", ELU(inplace=inplace))):
                torch.manual_seed(0)
                model = torch.compile(torch.nn.Sequential(torch.nn.Linear(size // 64, size // 64), activation))
                number = max(3, 2**16 // size)
                times[label] = (best(lambda: model(x), number=number),
                                best(lambda: model(x).sum().backward(), number=number))
            (native, native_fb), (ours, ours_fb) = times["native"], times["elukit"]
            print(f"{'in place' if inplace else 'out of place':>20} {size:>8} {1e6 * native:>14.1f} "
                  f"{ours / native:>9.2f}x {1e6 * native_fb:>14.1f} {ours_fb / native_fb:>9.2f}x")


def main() -> None:
    print(f"elukit compiled kernels: {'built' if _native.AVAILABLE else 'missing (the torch/NumPy kernels run)'}")
    flags = set(sys.argv[1:]) & {"--small", "--training", "--paired", "--compiled"}
    if flags:  # any of them, in one run
        if "--small" in flags:
            small_tensors()
        if "--training" in flags:
            training_sizes()
        if "--paired" in flags:
            paired()
        if "--compiled" in flags:
            compiled_models()
        return
    small_tensors()
    training_sizes()
    compiled_models()
    print(f"{'threads':>7} {'dtype':>8} {'size':>8} {'fwd native ms':>14} {'fwd ratio':>10} {'fwd exact=True':>15} "
          f"{'f+b native ms':>14} {'f+b ratio':>10} {'f+b exact=True':>15} {'fwd compiled':>13} {'f+b compiled':>13}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.float64):
            for size in (2**16, 2**22):
                x = torch.randn(size, dtype=dtype) * 3
                native = best(lambda: F.elu(x))
                ours = best(lambda: E.elu(x))
                exact = best(lambda: E.elu(x, exact=True))
                native_fb = best(forward_backward(F.elu, x))
                ours_fb = best(forward_backward(E.elu, x))
                exact_fb = best(forward_backward(lambda t: E.elu(t, exact=True), x))
                E.use_compiled_kernels(True)
                compiled = best(lambda: E.elu(x))
                compiled_fb = best(forward_backward(E.elu, x))
                E.use_compiled_kernels(False)
                print(f"{threads:>7} {str(dtype)[6:]:>8} {size:>8} {1e3 * native:>14.3f} {ours / native:>9.2f}x "
                      f"{exact / native:>14.2f}x {1e3 * native_fb:>14.3f} {ours_fb / native_fb:>9.2f}x "
                      f"{exact_fb / native_fb:>14.2f}x {compiled / native:>12.2f}x {compiled_fb / native_fb:>12.2f}x")
    torch.set_num_threads(1)
    x = torch.randn(2**22) * 3
    for label, function in (("elukit inplace=True", lambda t: E.elu(t, inplace=True)),
                            ("elukit out-of-place", E.elu), ("torch F.elu_", F.elu_), ("torch F.elu", F.elu)):
        leaf = x.clone().requires_grad_()
        saved = {}  # by storage: the in-place modes save the output, which is the input's own memory
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) and t,
                lambda t: t):
            value = function(leaf * 1.0)
        shared = "" if value.untyped_storage().data_ptr() not in saved else ", including the output"
        print(f"{label:<22} keeps {sum(saved.values()) / 2**20:6.1f} MiB for backward{shared} "
              f"(input is {x.numel() * 4 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
