r"""Keras 3 layers: ELU, SELU, CELU (exact kernels), PELU (learnable), AlphaDropout (any ELU-family
activation, constants from `elukit.theory`). All registered with Keras (package ``elukit``)."""

from __future__ import annotations

import math
from typing import Any

from elukit._registry import get
from elukit.keras._keras import apply, backend_functions, keras

_register = keras.saving.register_keras_serializable(package="elukit")


class _Activation(keras.layers.Layer):
    """An elukit activation as a layer; its parameters are validated when it is built."""

    name_in_registry = ""

    def __init__(self, **kwargs: Any) -> None:
        params = {p.name: kwargs.pop(p.name) for p in get(self.name_in_registry).params if p.name in kwargs}
        super().__init__(**kwargs)
        self.params = get(self.name_in_registry, **params).parameters
        self.supports_masking = True

    def call(self, inputs: Any) -> Any:
        return apply(inputs, self.name_in_registry, **self.params)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.params}


class _AlphaActivation(_Activation):
    """An activation whose one parameter is alpha."""

    def __init__(self, alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(alpha=alpha, **kwargs)


@_register
class ELU(_AlphaActivation):
    r"""ELU layer: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x)\ (x\le0)`. Args: alpha (> 0)."""

    name_in_registry = "elu"


@_register
class SELU(_Activation):
    r"""SELU layer with the self-normalizing constants (elukit.SELU_ALPHA, SELU_SCALE)."""

    name_in_registry = "selu"


@_register
class CELU(_AlphaActivation):
    r"""CELU layer: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x/\alpha)\ (x\le0)`. Args: alpha (> 0)."""

    name_in_registry = "celu"


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"PELU {name} must be a finite number > 0, got {value!r}")
    return float(value)


@_register
class PELU(keras.layers.Layer):
    r"""Parametric ELU with learnable positive per-channel a, b (Trottier et al. 2017).

    :math:`f(x) = (a/b)x\ (x>0),\ a\,\mathrm{expm1}(x/b)\ (x\le0)`, channels last (one a, b
    per feature of the last axis, or shared with ``shared=True``). a and b are stored as logs,
    so they stay positive under any optimizer step. Computed with the backend's own operations
    in the input dtype (elukit.jax.pelu / elukit.torch.functional.pelu).

    Args: alpha, beta: initial a, b (> 0). shared: one a, b for all channels.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, shared: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = _check_positive("alpha", alpha)
        self.beta = _check_positive("beta", beta)
        self.shared = bool(shared)

    def build(self, input_shape: Any) -> None:
        channels = 1 if self.shared else input_shape[-1]
        if channels is None:
            raise ValueError(f"PELU needs a known last dimension (channels), got input shape {input_shape}")
        self.log_a = self.add_weight(shape=(channels,), initializer=keras.initializers.Constant(math.log(self.alpha)),
                                     name="log_a")
        self.log_b = self.add_weight(shape=(channels,), initializer=keras.initializers.Constant(math.log(self.beta)),
                                     name="log_b")

    def call(self, inputs: Any) -> Any:
        a, b = keras.ops.exp(self.log_a), keras.ops.exp(self.log_b)
        functions = backend_functions()
        if keras.backend.backend() == "torch":
            return functions.pelu(inputs, a, b, channel_dim=-1)
        return functions.pelu(inputs, a, b)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "shared": self.shared}


@_register
class AlphaDropout(keras.layers.Layer):
    """Alpha dropout for any ELU-family activation, with constants from `elukit.theory`.

    Dropped units are set to the activation's negative saturation value and the result is
    corrected by ``a*x + b`` so that inputs with `mean` and `variance` keep both
    (`elukit.theory.alpha_dropout_constants`). Identity at inference. Keras's AlphaDropout
    hard-codes SELU's constants. Works on every Keras backend.

    Args: rate in [0, 1); activation: an elukit name; mean, variance: of the inputs; seed;
        **params: the activation's parameters.
    """

    def __init__(self, rate: float = 0.05, activation: str = "selu", mean: float = 0.0, variance: float = 1.0,
                 seed: int | None = None, params: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from elukit.theory import alpha_dropout_constants

        self.rate, self.activation, self.mean, self.variance, self.seed = rate, activation, mean, variance, seed
        self.params = dict(params or {})
        self.a, self.b, self.saturation = alpha_dropout_constants(rate, get(activation, **self.params), mean, variance)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training or self.rate == 0.0:
            return inputs
        keep = keras.random.uniform(keras.ops.shape(inputs), seed=self.seed_generator, dtype=inputs.dtype) >= self.rate
        dropped = keras.ops.where(keep, inputs, keras.ops.full_like(inputs, self.saturation))
        return dropped * self.a + self.b

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "activation": self.activation, "mean": self.mean,
                "variance": self.variance, "seed": self.seed, "params": self.params}


__all__ = ["CELU", "ELU", "PELU", "SELU", "AlphaDropout"]
