"""How many elements a compiled elukit function computes differently from eager (a count, not a timing).

Run: python benchmarks/compile_bits.py  (1 thread; about a minute on a 2-core machine)

ELU(0.7), SELU, CELU(2) and Leaky ReLU(0.01), forward and backward (upstream gradient in [0.5, 1.5),
so the backward's product is rounded), float16 and bfloat16 over every bit pattern, float32 and
float64 over 200,000 normal values times 4 plus 0, -0, +-inf, NaN, -1e-300 and -745; compiled with
torch.compile(fullgraph=True) under aot_eager and inductor. Bits are compared as integers (sign of
zero included), NaN equal to NaN. docs/torch.md quotes its totals.
"""

from __future__ import annotations

import torch

from elukit.torch import functional as E

FUNCTIONS = {"elu": lambda t: E.elu(t, alpha=0.7), "selu": E.selu, "celu": lambda t: E.celu(t, alpha=2.0),
             "leaky_relu": lambda t: E.activation(t, "leaky_relu", slope=0.01)}
INTEGER = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def inputs(dtype: torch.dtype, count: int = 200_000) -> torch.Tensor:
    if dtype in (torch.float16, torch.bfloat16):
        return torch.arange(-2 ** 15, 2 ** 15, dtype=torch.int32).to(torch.int16).view(dtype)
    x = torch.randn(count, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 4
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), -1e-300, -745.0], dtype=torch.float64)
    return torch.cat([x, special]).to(dtype)


def forward_and_backward(function, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    y = function(x)
    upstream = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5).to(x.dtype)
    return y.detach(), torch.autograd.grad(y, x, upstream)[0]


def differing(got: torch.Tensor, wanted: torch.Tensor) -> int:
    nan = torch.isnan(got) | torch.isnan(wanted)
    integer = INTEGER[got.dtype]
    values = got.masked_fill(nan, 0).view(integer) != wanted.masked_fill(nan, 0).view(integer)
    return int((values | (torch.isnan(got) != torch.isnan(wanted))).sum())


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread")
    for compiler in ("aot_eager", "inductor"):
        totals = {"forward": [0, 0], "backward": [0, 0]}
        for name, function in FUNCTIONS.items():
            for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                torch._dynamo.reset()
                x = inputs(dtype)
                compiled = torch.compile(function, backend=compiler, fullgraph=True)
                got, wanted = forward_and_backward(compiled, x), forward_and_backward(function, x)
                for which, g, w in zip(("forward", "backward"), got, wanted):
                    count = differing(g, w)
                    totals[which][0] += count
                    totals[which][1] += x.numel()
                    if count:
                        print(f"  {compiler} {name} {dtype} {which}: {count} of {x.numel()} differ")
        for which, (count, total) in totals.items():
            print(f"{compiler:9s} {which:8s}: {count:,} of {total:,} elements differ from eager")


if __name__ == "__main__":
    main()
