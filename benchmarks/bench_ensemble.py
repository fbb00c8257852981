"""Batched seed ensembles vs sequential training (the `elukit compare` engine).

Run: python benchmarks/bench_ensemble.py [--seeds 16] [--epochs 2] [--model mlp]

Trains the same MNIST-1D model for N seeds (a) as one batched ensemble and (b) one seed at a time,
with one and with two torch threads, and prints the ratios of the times measured in this run, with
and without the diagnostics monitor: per thread count, and with each side at its own best thread
count (small single models gain little from a second thread; the batched matmuls do).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import elukit
from elukit.experiments.data import load_dataset
from elukit.experiments.models import build_model
from elukit.experiments.train import make_optimizer, member_rows
from elukit.torch.diagnostics import Monitor


def train(seeds, data, model_kind, epochs, monitor: bool) -> float:
    spec = elukit.get("elu")
    model = build_model(model_kind, seeds, data.x_train.shape[1:], data.classes, spec, 100 if model_kind == "mlp" else 32,
                        2 if model_kind == "mlp" else 3, "gain", False)
    optimizer = make_optimizer("adam", model.parameters(), 1e-3)  # as elukit compare
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    watcher = Monitor(model, ensemble_dim=0, unit_dim=model.unit_dim) if monitor else None
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.from_numpy(np.stack([np.random.default_rng([s, epoch]).permutation(len(x)) for s in seeds]))
        for start in range(0, len(x), 100):
            index = order[:, start:start + 100]
            logits = model(member_rows(x, index))
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), member_rows(y, index), reduction="none").mean(1).sum()
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
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
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
    data = load_dataset("mnist1d")
    seeds = list(range(args.seeds))
    for monitor in (False, True):
        batched, sequential = {}, {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            batched[threads] = train(seeds, data, args.model, args.epochs, monitor)
            sequential[threads] = sum(train([s], data, args.model, args.epochs, monitor) for s in seeds)
            print(f"{args.model}, {args.seeds} seeds, {args.epochs} epochs, monitor {'on' if monitor else 'off'}, "
                  f"{threads} thread{'s' if threads > 1 else ''}: batched {batched[threads]:.2f} s, "
                  f"sequential {sequential[threads]:.2f} s, speed-up {sequential[threads] / batched[threads]:.2f}x")
        best_batched, best_sequential = min(batched, key=batched.get), min(sequential, key=sequential.get)
        print(f"  each at its best thread count on this machine (batched {best_batched}, sequential "
              f"{best_sequential}): speed-up {sequential[best_sequential] / batched[best_batched]:.2f}x")
    if args.model == "mlp":
        for threads in (1, 2):
            torch.set_num_threads(threads)
            plain = sum(train_plain_torch(s, data, args.epochs) for s in seeds)
            batched_plain = train(seeds, data, args.model, args.epochs, False)
            print(f"plain PyTorch nn.Sequential + torch.nn.ELU, {args.seeds} seeds one after another, {threads} "
                  f"thread{'s' if threads > 1 else ''}: {plain:.2f} s; elukit batched ensemble (exact ELU): "
                  f"{batched_plain:.2f} s, speed-up {plain / batched_plain:.2f}x")
    torch.set_num_threads(1)


if __name__ == "__main__":
    main()
