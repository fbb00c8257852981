"""Import Keras 3 or explain how to install it; dispatch to elukit.jax or elukit.torch."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

try:
    import keras
except ImportError as error:
    if importlib.util.find_spec("keras") is None:  # pragma: no cover - exercised only without the extra
        raise ImportError("elukit.keras needs Keras 3: pip install 'elukit[keras]' (and 'elukit[jax]' or "
                          "'elukit[torch]')") from error
    # Keras is installed but its backend is not: by default Keras 3 imports TensorFlow (issue 22)
    chosen = os.environ.get("KERAS_BACKEND")
    backend = f"the backend KERAS_BACKEND={chosen}" if chosen else "its default backend (TensorFlow, or keras.json's)"
    raise ImportError(f"Keras is installed, but importing it failed because {backend} cannot be imported "
                      f"({type(error).__name__}: {error}). elukit.keras runs on JAX or PyTorch: set "
                      f"KERAS_BACKEND=jax or KERAS_BACKEND=torch before importing keras (with "
                      f"pip install 'elukit[jax]' or 'elukit[torch]')") from error

if not hasattr(keras, "saving") or int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover
    raise ImportError(f"elukit.keras needs Keras 3, found {keras.__version__}: pip install 'elukit[keras]'")

SUPPORTED_BACKENDS = ("jax", "torch")
"""Keras backends whose tensors elukit's exact kernels run on (elukit.jax, elukit.torch)."""


def backend_functions() -> Any:
    """The module with elukit's kernels for the active Keras backend, or a clear error."""
    backend = keras.backend.backend()
    if backend == "jax":
        from elukit.jax import functional

        return functional
    if backend == "torch":
        from elukit.torch import functional

        return functional
    raise NotImplementedError(
        f"elukit.keras activations run on the Keras backends {', '.join(SUPPORTED_BACKENDS)}; the active backend is "
        f"{backend!r}. Set KERAS_BACKEND=jax or KERAS_BACKEND=torch before importing keras, or use keras.activations "
        "(not exact). elukit.keras.initializers and AlphaDropout work on every backend.")


def apply(x: Any, name: str, **params: Any) -> Any:
    """The activation `name` of a backend tensor, through elukit.jax or elukit.torch."""
    return backend_functions().activation(x, name, **params)


__all__ = ["SUPPORTED_BACKENDS", "apply", "backend_functions", "keras"]
