"""Ensembles of identical networks, one member per seed, evaluated together with batched matmuls.

Member s of every layer holds the parameters of seed s; inputs have shape (members, batch, ...).
Members never interact: the loss is a sum of per-member losses, so the gradient of member s is
that of training it alone. Each member is initialised from its own torch.Generator(seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from elukit._spec import Activation as Spec
from elukit.theory import edge_of_chaos, gain
from elukit.torch._torch import torch
from elukit.torch.modules import Activation

nn = torch.nn
INITS = ("gain", "torch", "he", "eoc")


def _weight_std(init: str, spec: Spec, fan_in: int) -> float | None:
    """std of the weights: elukit's derived gain, He's sqrt(2) for every activation, or None for
    PyTorch's default (uniform +-1/sqrt(fan_in))."""
    if init == "gain":
        return gain(spec) / math.sqrt(fan_in)
    if init == "he":
        return math.sqrt(2.0) / math.sqrt(fan_in)
    if init == "torch":
        return None
    if init == "eoc":  # the edge of chaos at sigma_b^2 = 0, the one bias variance where ReLU has one too
        eoc = edge_of_chaos(spec, 0.0)
        if not math.isfinite(float(eoc.weight_variance)):
            raise ValueError(f"--init eoc: {spec.label()} has no edge of chaos at bias variance 0: {eoc.reason}")
        return math.sqrt(float(eoc.weight_variance) / fan_in)
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def _fill(weight: torch.Tensor, bias: torch.Tensor, seeds: Sequence[int], std: float | None, fan_in: int,
          salt: int) -> None:
    with torch.no_grad():
        for member, seed in enumerate(seeds):
            generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + salt)
            if std is None:
                bound = 1.0 / math.sqrt(fan_in)
                weight[member].uniform_(-bound, bound, generator=generator)
                bias[member].uniform_(-bound, bound, generator=generator)
            else:
                weight[member].normal_(0.0, std, generator=generator)
                bias[member].zero_()


class EnsembleLinear(nn.Module):
    """y[s] = x[s] @ W[s] + b[s] for every member s (torch.baddbmm).

    A narrow layer (fewer than 64 outputs, e.g. 10 classes) is computed on weights padded with
    zero columns to a multiple of 16 and sliced back: the batched matmuls run 2x faster at that
    width (forward+backward of 16 x (100x100 @ 100x10): 370 us at 10 columns, 189 us at 16, one
    thread). The padding is rebuilt each call, so the parameters keep their shape.
    """

    def __init__(self, seeds: Sequence[int], fan_in: int, fan_out: int, std: float | None, salt: int) -> None:
        super().__init__()
        members = len(seeds)
        self.weight = nn.Parameter(torch.empty(members, fan_in, fan_out))
        self.bias = nn.Parameter(torch.empty(members, 1, fan_out))
        _fill(self.weight, self.bias, seeds, std, fan_in, salt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.weight.shape[-1]
        pad = -outputs % 16 if outputs < 64 else 0
        if pad == 0:
            return torch.baddbmm(self.bias, x, self.weight)
        padded = torch.baddbmm(nn.functional.pad(self.bias, (0, pad)), x, nn.functional.pad(self.weight, (0, pad)))
        return padded[..., :outputs]


class EnsembleBatchNorm(nn.Module):
    """Batch normalisation over the batch dimension, separately for each member and unit."""

    def __init__(self, members: int, units: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, units))
        self.bias = nn.Parameter(torch.zeros(members, 1, units))
        self.register_buffer("running_mean", torch.zeros(members, 1, units))
        self.register_buffer("running_var", torch.ones(members, 1, units))
        self.momentum, self.eps = momentum, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(dim=1, keepdim=True)
            var = x.var(dim=1, keepdim=True, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * x.shape[1] / max(x.shape[1] - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class EnsembleMLP(nn.Module):
    """`depth` hidden layers of `width` units: Linear -> [BatchNorm] -> activation, then Linear."""

    unit_dim = -1

    def __init__(self, seeds: Sequence[int], features: int, classes: int, spec: Spec, width: int = 100,
                 depth: int = 2, init: str = "gain", batch_norm: bool = False) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
        layers: list[nn.Module] = []
        fan_in = features
        for index in range(depth):
            layers.append(EnsembleLinear(seeds, fan_in, width, _weight_std(init, spec, fan_in), salt=index))
            if batch_norm:
                layers.append(EnsembleBatchNorm(len(seeds), width))
            layers.append(Activation(spec.name, **spec.parameters))
            fan_in = width
        layers.append(EnsembleLinear(seeds, fan_in, classes, _weight_std(init, spec, fan_in) if init != "gain"
                                     else 1.0 / math.sqrt(fan_in), salt=depth))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(start_dim=2))


class EnsembleConv1d(nn.Module):
    """1-D convolution for every member at once: a grouped convolution with one group per member."""

    def __init__(self, seeds: Sequence[int], channels_in: int, channels_out: int, kernel: int, stride: int,
                 std: float | None, salt: int) -> None:
        super().__init__()
        members = len(seeds)
        self.members, self.stride, self.padding = members, stride, kernel // 2
        self.weight = nn.Parameter(torch.empty(members, channels_out, channels_in * kernel))
        self.bias = nn.Parameter(torch.empty(members, 1, channels_out))
        _fill(self.weight, self.bias, seeds, std, channels_in * kernel, salt)
        self.shape = (channels_out, channels_in, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch, channels, length = x.shape
        grouped = x.permute(1, 0, 2, 3).reshape(batch, members * channels, length)
        weight = self.weight.reshape(members * self.shape[0], self.shape[1], self.shape[2])
        out = torch.nn.functional.conv1d(grouped, weight, self.bias.reshape(-1), stride=self.stride,
                                         padding=self.padding, groups=members)
        return out.reshape(batch, members, self.shape[0], -1).permute(1, 0, 2, 3)


class EnsembleCNN(nn.Module):
    """A small 1-D CNN for sequences such as MNIST-1D: `depth` conv layers of `width` channels
    (kernel 5, stride 2) with the activation, then a linear classifier."""

    unit_dim = 2

    def __init__(self, seeds: Sequence[int], length: int, classes: int, spec: Spec, width: int = 32,
                 depth: int = 3, init: str = "gain", batch_norm: bool = False) -> None:
        super().__init__()
        if batch_norm:
            raise ValueError("--batch-norm is implemented for the MLP only")
        layers: list[nn.Module] = []
        channels = 1
        for index in range(depth):
            layers.append(EnsembleConv1d(seeds, channels, width, 5, 2, _weight_std(init, spec, channels * 5), salt=index))
            layers.append(Activation(spec.name, **spec.parameters))
            channels = width
            length = (length + 2 * 2 - 5) // 2 + 1
        self.features = nn.Sequential(*layers)
        fan_in = width * length
        self.classifier = EnsembleLinear(seeds, fan_in, classes, 1.0 / math.sqrt(fan_in) if init == "gain"
                                         else _weight_std(init, spec, fan_in), salt=depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch = x.shape[:2]
        hidden = self.features(x.reshape(members, batch, 1, -1))
        return self.classifier(hidden.reshape(members, batch, -1))


def build_model(kind: str, seeds: Sequence[int], sample_shape: tuple[int, ...], classes: int, spec: Spec,
                width: int, depth: int, init: str, batch_norm: bool) -> nn.Module:
    features = int(math.prod(sample_shape))
    if kind == "mlp":
        return EnsembleMLP(seeds, features, classes, spec, width, depth, init, batch_norm)
    if kind == "cnn":
        return EnsembleCNN(seeds, features, classes, spec, width, depth, init, batch_norm)
    raise ValueError(f"model must be 'mlp' or 'cnn', got {kind!r}")
