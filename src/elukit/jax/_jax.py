"""Import JAX or explain how to install it."""

from __future__ import annotations

try:
    import jax
    import jax.numpy as jnp
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("elukit.jax needs JAX: pip install 'elukit[jax]'") from error

__all__ = ["jax", "jnp"]
