"""A reusable monitor of what activations do inside a network (forward/backward hooks).

Attach it to any model (plain or an ensemble of stacked models) to collect, per activation
layer and per epoch: mean activation, activation variance, the fraction of dead units (units
whose derivative was zero on every sample seen), gradient sparsity (the fraction of exactly
zero local derivatives f'(x)), and the norm of the gradient reaching the activation's output.

    monitor = Monitor(model)                 # finds elukit and torch activation modules
    with monitor.recording():                # hooks count only inside this block
        loss = criterion(model(x), y); loss.backward()
    stats = monitor.collect()                # {layer name: LayerStatistics}, and resets

For an ensemble whose activations have shape (members, batch, ..., units) pass
``ensemble_dim=0``; every statistic then has one value per member. ``unit_dim`` says which
dimension indexes units (-1 for MLPs, the channel dimension for convolutions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from elukit._spec import Activation as Spec
from elukit.torch import functional
from elukit.torch._torch import torch
from elukit.torch.init import spec_of


@dataclass
class LayerStatistics:
    """Per-epoch statistics of one activation layer; tensors of shape (members,) (or (1,))."""

    mean_activation: torch.Tensor
    activation_variance: torch.Tensor
    dead_fraction: torch.Tensor
    gradient_sparsity: torch.Tensor
    gradient_norm: torch.Tensor


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


class _Accumulator:
    def __init__(self) -> None:
        self.count = 0
        self.total = None
        self.total_squares = None
        self.zero_derivatives = None
        self.alive = None
        self.gradient_norm_sum = None
        self.gradient_batches = 0


class Monitor:
    """Collects activation statistics from hooks on every activation module of `model`."""

    def __init__(self, model: torch.nn.Module, ensemble_dim: int | None = None, unit_dim: int = -1) -> None:
        self.ensemble_dim = ensemble_dim
        self.unit_dim = unit_dim
        self._recording = False
        self._accumulators: dict[str, _Accumulator] = {}
        self._handles = []
        self.layers: list[str] = []
        for name, module in model.named_modules():
            spec = spec_of(module)
            if spec is None:
                continue
            self.layers.append(name)
            self._accumulators[name] = _Accumulator()
            self._handles.append(module.register_forward_hook(self._make_hook(name, spec)))
        if not self.layers:
            raise ValueError("the model has no activation module that elukit recognises")

    # -- shaping ----------------------------------------------------------------------------
    def _as_members_samples_units(self, tensor: torch.Tensor) -> torch.Tensor:
        """Reshape to (members, samples, units)."""
        unit_dim = self.unit_dim % tensor.dim()
        if self.ensemble_dim is None:
            moved = tensor.movedim(unit_dim, -1).unsqueeze(0)
        else:
            ensemble_dim = self.ensemble_dim % tensor.dim()
            moved = tensor.movedim((ensemble_dim, unit_dim), (0, -1))
        return moved.reshape(moved.shape[0], -1, moved.shape[-1])

    def _make_hook(self, name: str, spec: Spec):
        def hook(module, inputs, output):
            if not self._recording:
                return
            accumulator = self._accumulators[name]
            with torch.no_grad():
                x = inputs[0].detach()
                derivative = functional.evaluate(spec, "derivative", x)
                values = self._as_members_samples_units(_at_least_float32(output.detach()))
                zero = self._as_members_samples_units(derivative == 0)
                # a batch's sums in the activation's dtype (float32: relative error ~1e-7 at these
                # sizes), accumulated over the epoch in float64
                total = values.sum(dim=(1, 2)).to(torch.float64)
                squares = torch.linalg.vector_norm(values, dim=(1, 2)).to(torch.float64) ** 2
                zeros = zero.sum(dim=(1, 2)).to(torch.float64)
                alive = (~zero).any(dim=1)
                if accumulator.total is None:
                    accumulator.total, accumulator.total_squares = total, squares
                    accumulator.zero_derivatives, accumulator.alive = zeros, alive
                else:
                    accumulator.total += total
                    accumulator.total_squares += squares
                    accumulator.zero_derivatives += zeros
                    accumulator.alive |= alive
                accumulator.count += values.shape[1] * values.shape[2]
            if output.requires_grad:
                output.register_hook(self._make_gradient_hook(accumulator))

        return hook

    def _make_gradient_hook(self, accumulator: _Accumulator):
        def gradient_hook(grad):
            with torch.no_grad():
                flat = self._as_members_samples_units(_at_least_float32(grad.detach()))
                norm = torch.linalg.vector_norm(flat, dim=(1, 2)).to(torch.float64)
                accumulator.gradient_norm_sum = norm if accumulator.gradient_norm_sum is None else accumulator.gradient_norm_sum + norm
                accumulator.gradient_batches += 1

        return gradient_hook

    # -- public --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def recording(self) -> Iterator[Monitor]:
        """Count forward passes (and their backward passes) made inside this block."""
        self._recording = True
        try:
            yield self
        finally:
            self._recording = False

    def collect(self) -> dict[str, LayerStatistics]:
        """Statistics since the last call (one epoch, typically), then reset."""
        result = {}
        for name, acc in self._accumulators.items():
            if acc.total is None:
                continue
            units = acc.alive.shape[1]
            mean = acc.total / (acc.count / 1.0)
            variance = (acc.total_squares / acc.count - mean * mean).clamp_min(0.0)
            gradient = (acc.gradient_norm_sum / acc.gradient_batches if acc.gradient_batches
                        else torch.full_like(mean, float("nan")))
            result[name] = LayerStatistics(
                mean_activation=mean,
                activation_variance=variance,
                dead_fraction=1.0 - acc.alive.to(torch.float64).sum(dim=1) / units,
                gradient_sparsity=acc.zero_derivatives / acc.count,
                gradient_norm=gradient,
            )
            self._accumulators[name] = _Accumulator()
        return result

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
