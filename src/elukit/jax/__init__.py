"""elukit.jax: exact ELU-family activations for JAX, with exact derivatives of every order.

Needs JAX (``pip install 'elukit[jax]'``). See `elukit.jax.functional` for the precision policy.
"""

from elukit.jax._jax import jax as _jax  # noqa: F401 - raises the install hint first
from elukit.jax.functional import activation, celu, derivative, elu, pelu, selu

__all__ = ["activation", "celu", "derivative", "elu", "pelu", "selu"]
