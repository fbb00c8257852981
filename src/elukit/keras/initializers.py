r"""Kernel initializers with the gains derived in `elukit.theory` (Keras has none for ELU/CELU).

``Gain("elu")`` draws fan-in weights with standard deviation :math:`g/\sqrt{n}`, where
:math:`g = \sqrt{q / E[f(z)^2]}` for :math:`z \sim N(0, q)` keeps the pre-activation variance
(`elukit.theory.gain`; ELU: 1.2452). Works on every Keras backend.
"""

from __future__ import annotations

from typing import Any

from elukit._registry import get
from elukit.keras._keras import keras
from elukit.theory import gain


@keras.saving.register_keras_serializable(package="elukit")
class Gain(keras.initializers.VarianceScaling):
    """Variance scaling with scale = gain(activation)^2 (untruncated normal by default).

    Args:
        activation: an elukit activation name (``"elu"``, ``"selu"``, ``"celu"``, ...).
        mode: ``"fan_in"`` (default), ``"fan_out"`` or ``"fan_avg"``.
        distribution: ``"untruncated_normal"`` (default), ``"truncated_normal"`` or ``"uniform"``
            (each with the same variance, as in Keras).
        input_variance: q, the pre-activation variance to keep (> 0).
        seed: as for Keras initializers.
        **params: the activation's parameters (``alpha=0.5``), validated by `elukit.get`.
    """

    def __init__(self, activation: str = "elu", mode: str = "fan_in", distribution: str = "untruncated_normal",
                 input_variance: float = 1.0, seed: Any = None, **params: Any) -> None:
        spec = get(activation, **params)
        self.activation = activation
        self.input_variance = input_variance
        self.params = dict(params)
        self.gain = gain(spec, input_variance)
        super().__init__(scale=self.gain**2, mode=mode, distribution=distribution, seed=seed)

    def get_config(self) -> dict[str, Any]:
        return {"activation": self.activation, "mode": self.mode, "distribution": self.distribution,
                "input_variance": self.input_variance, "seed": super().get_config()["seed"], **self.params}


__all__ = ["Gain"]
