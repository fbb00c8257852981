"""The MNIST-1D paper's baselines (Greydanus & Kobak 2020, "Scaling down deep learning"), rebuilt
as elukit ensembles, so that a verdict on MNIST-1D can be set against models trained as the paper did.

The paper reports test accuracies of 32% (logistic regression), 68% (MLP) and 94% (CNN). Its code
(github.com/greydanus/mnist1d, ``models.py`` and ``train.py``) trains, with PyTorch's default
initialisation, ReLU, Adam at learning rate 1e-2, no weight decay, batch 100, for 6000 steps
taken over the training set in order (batch ``i`` starts at ``100 i mod 4000``):

* linear: ``Linear(40, 10)``;
* MLP: ``Linear(40, 100) - ReLU - Linear(100, 100) - ReLU - Linear(100, 10)``;
* CNN: ``Conv1d(1, 25, 5, stride 2, padding 1) - ReLU - Conv1d(25, 25, 3, 2, 1) - ReLU -
  Conv1d(25, 25, 3, 2, 1) - ReLU - Linear(125, 10)``.

The inputs are the raw MNIST-1D sequences (not standardised), 4000 train / 1000 test, generated
offline by the ``mnist1d`` package with its default arguments (`elukit.experiments.data`).
Run: ``python -m elukit.experiments.mnist1d_baselines [--seeds 3] [--steps 6000]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import numpy as np

from elukit._registry import get
from elukit.experiments.data import default_cache_dir
from elukit.experiments.models import EnsembleConv1d, EnsembleLinear, EnsembleMLP
from elukit.torch._torch import torch
from elukit.torch.modules import Activation

PAPER = {"linear": 0.32, "mlp": 0.68, "cnn": 0.94}
"""Test accuracies reported by Greydanus & Kobak 2020 (Table 1)."""


class _PaperCNN(torch.nn.Module):
    def __init__(self, seeds: Sequence[int], activation: str = "relu") -> None:
        super().__init__()
        spec = get(activation)
        layers, channels = [], 1
        for index, kernel in enumerate((5, 3, 3)):
            conv = EnsembleConv1d(seeds, channels, 25, kernel, 2, None, salt=index)
            conv.padding = 1  # the paper pads by 1 for every kernel size
            layers += [conv, Activation(spec.name, **spec.parameters)]
            channels = 25
        self.features = torch.nn.Sequential(*layers)
        self.classifier = EnsembleLinear(seeds, 125, 10, None, salt=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch = x.shape[:2]
        return self.classifier(self.features(x.reshape(members, batch, 1, -1)).reshape(members, batch, -1))


def build(kind: str, seeds: Sequence[int], activation: str = "relu") -> torch.nn.Module:
    """One of the paper's models as an ensemble (one member per seed), PyTorch's default init."""
    if kind == "linear":
        return EnsembleLinear(seeds, 40, 10, None, salt=0)
    if kind == "mlp":
        return EnsembleMLP(seeds, 40, 10, get(activation), width=100, depth=2, init="torch")
    if kind == "cnn":
        return _PaperCNN(seeds, activation)
    raise ValueError(f"model must be one of {', '.join(PAPER)}, got {kind!r}")


def raw_mnist1d() -> tuple[np.ndarray, ...]:
    """x_train, y_train, x_test, y_test of MNIST-1D as generated (float32, not standardised)."""
    from elukit.experiments.data import _mnist1d

    x_train, y_train, x_test, y_test = _mnist1d(default_cache_dir())
    return (x_train.astype(np.float32), y_train.astype(np.int64), x_test.astype(np.float32), y_test.astype(np.int64))


def train_baseline(kind: str, seeds: Sequence[int], steps: int = 6000, lr: float = 1e-2, batch: int = 100,
                   eval_every: int = 250, activation: str = "relu") -> dict[str, np.ndarray]:
    """Train the paper's model `kind` for every seed at once; returns per-seed ``final`` and ``best``
    test accuracy (over evaluations every `eval_every` steps) and the ``curve`` (evaluations, seeds)."""
    if steps < 1 or batch < 1 or eval_every < 1 or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"steps, batch and eval_every must be >= 1 and lr > 0, got {steps}, {batch}, {eval_every}, {lr}")
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in raw_mnist1d())
    model = build(kind, seeds, activation)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    members = len(seeds)
    curve = []

    def accuracy() -> np.ndarray:
        with torch.no_grad():
            logits = model(x_test.unsqueeze(0).expand(members, *x_test.shape))
            return (logits.argmax(-1) == y_test).double().mean(1).numpy()

    for step in range(steps):
        start = (step * batch) % len(x_train)
        xb, yb = x_train[start:start + batch], y_train[start:start + batch]
        logits = model(xb.unsqueeze(0).expand(members, *xb.shape))
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), yb.unsqueeze(0).expand(members, -1),
                                                 reduction="none").mean(1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append(accuracy())
    stacked = np.stack(curve)
    return {"final": stacked[-1], "best": stacked.max(axis=0), "curve": stacked}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Reproduce the MNIST-1D paper's linear / MLP / CNN baselines.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--models", default="linear,mlp,cnn")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    torch.set_num_threads(1)
    print("| model | paper | measured final (mean [min, max] over seeds) | best during training | seconds |")
    print("|---|---|---|---|---|")
    for kind in args.models.split(","):
        started = time.perf_counter()
        result = train_baseline(kind.strip(), list(range(args.seeds)), args.steps)
        final, best = result["final"], result["best"]
        print(f"| {kind} | {100 * PAPER[kind]:.0f}% | {100 * final.mean():.1f}% [{100 * final.min():.1f}, "
              f"{100 * final.max():.1f}] | {100 * best.mean():.1f}% | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["PAPER", "build", "raw_mnist1d", "train_baseline"]
