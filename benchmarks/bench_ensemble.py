"""Batched seed ensembles vs sequential training (the `elukit compare` engine).

Run: python benchmarks/bench_ensemble.py [--seeds 16] [--epochs 2] [--model mlp]

Trains the same MNIST-1D model for N seeds (a) as one batched ensemble and (b) one seed at a time,
each with one torch thread, and prints the ratio of the two times measured in this run, with and
without the diagnostics monitor.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import elukit
from elukit.experiments.data import load_dataset
from elukit.experiments.models import build_model
from elukit.torch.diagnostics import Monitor


def train(seeds, data, model_kind, epochs, monitor: bool) -> float:
    spec = elukit.get("elu")
    model = build_model(model_kind, seeds, data.x_train.shape[1:], data.classes, spec, 100 if model_kind == "mlp" else 32,
                        2 if model_kind == "mlp" else 3, "gain", False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    watcher = Monitor(model, ensemble_dim=0, unit_dim=model.unit_dim) if monitor else None
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.from_numpy(np.stack([np.random.default_rng([s, epoch]).permutation(len(x)) for s in seeds]))
        for start in range(0, len(x), 100):
            index = order[:, start:start + 100]
            logits = model(x[index])
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y[index], reduction="none").mean(1).sum()
            optimizer.zero_grad()
            if watcher:
                with watcher.recording():
                    loss.backward()
            else:
                loss.backward()
            optimizer.step()
        if watcher:
            watcher.collect()
    return time.perf_counter() - started


def train_plain_torch(seed, data, epochs) -> float:
    """One seed as an ordinary nn.Sequential with torch.nn.ELU (the usual sequential baseline)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(40, 100), torch.nn.ELU(), torch.nn.Linear(100, 100), torch.nn.ELU(),
                                torch.nn.Linear(100, data.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(x)))
        for start in range(0, len(x), 100):
            index = order[start:start + 100]
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--compile", action="store_true", help="use elukit's torch.compile'd kernels")
    args = parser.parse_args()
    if args.compile:
        from elukit.torch.functional import use_compiled_kernels

        use_compiled_kernels(True)
        for monitor in (False, True):  # compile every kernel and shape outside the timing
            train(list(range(args.seeds)), load_dataset("mnist1d"), args.model, 1, monitor)
            train([0], load_dataset("mnist1d"), args.model, 1, monitor)
    torch.set_num_threads(1)
    data = load_dataset("mnist1d")
    seeds = list(range(args.seeds))
    for monitor in (False, True, False):
        batched = train(seeds, data, args.model, args.epochs, monitor)
        sequential = sum(train([s], data, args.model, args.epochs, monitor) for s in seeds)
        print(f"{args.model}, {args.seeds} seeds, {args.epochs} epochs, monitor {'on' if monitor else 'off'}: "
              f"batched {batched:.2f} s, sequential {sequential:.2f} s, speed-up {sequential / batched:.2f}x")
    if args.model == "mlp":
        plain = sum(train_plain_torch(s, data, args.epochs) for s in seeds)
        batched = train(seeds, data, args.model, args.epochs, False)
        print(f"plain PyTorch nn.Sequential + torch.nn.ELU, {args.seeds} seeds one after another: {plain:.2f} s; "
              f"elukit batched ensemble (exact ELU): {batched:.2f} s, speed-up {plain / batched:.2f}x")


if __name__ == "__main__":
    main()
