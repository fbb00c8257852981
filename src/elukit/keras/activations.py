r"""Exact activations for Keras 3, usable wherever Keras takes an activation.

``keras.layers.Activation(elukit.keras.activations.elu)`` or ``Dense(64, activation=...)``.
On the JAX backend they run `elukit.jax`, on the PyTorch backend `elukit.torch`; both round
every result once and differentiate from the input (see docs/jax-keras.md). Each function is
registered with Keras (package ``elukit``), so a saved model loads again once ``elukit.keras``
is imported; no ``custom_objects`` needed.
"""

from __future__ import annotations

from typing import Any

from elukit.keras._keras import apply, keras

_register = keras.saving.register_keras_serializable(package="elukit")


@_register
def elu(x: Any, alpha: float = 1.0) -> Any:
    r"""ELU: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x)\ (x\le0)`; f'(0) = alpha (left branch)."""
    return apply(x, "elu", alpha=alpha)


@_register
def selu(x: Any) -> Any:
    r"""SELU: :math:`\lambda\,\mathrm{ELU}(x; \alpha)` with elukit.SELU_SCALE and SELU_ALPHA."""
    return apply(x, "selu")


@_register
def celu(x: Any, alpha: float = 1.0) -> Any:
    r"""CELU: :math:`x\ (x>0),\ \alpha\,\mathrm{expm1}(x/\alpha)\ (x\le0)`."""
    return apply(x, "celu", alpha=alpha)


def get(name: str) -> Any:
    """The activation function called `name` (``"elu"``, ``"selu"``, ``"celu"``)."""
    functions = {"elu": elu, "selu": selu, "celu": celu}
    if name not in functions:
        raise ValueError(f"unknown elukit.keras activation {name!r}; known: {', '.join(functions)}")
    return functions[name]


__all__ = ["celu", "elu", "get", "selu"]
