"""elukit.keras: exact ELU-family activations, layers and initializers for Keras 3.

Needs Keras 3 (``pip install 'elukit[keras]'``) with the JAX or PyTorch backend
(``elukit[jax]`` / ``elukit[torch]``): activations and the ELU/SELU/CELU/PELU layers dispatch
to `elukit.jax` or `elukit.torch`; on other backends (TensorFlow, NumPy) they raise
NotImplementedError naming the supported ones, while `initializers.Gain` and `AlphaDropout`
(plain Keras operations) work everywhere.

Everything is registered for Keras serialization under the package name ``elukit``: import
``elukit.keras`` before ``keras.saving.load_model`` and no ``custom_objects`` are needed.
"""

from elukit.keras import activations, initializers, layers
from elukit.keras._keras import SUPPORTED_BACKENDS
from elukit.keras.layers import CELU, ELU, PELU, SELU, AlphaDropout

__all__ = ["CELU", "ELU", "PELU", "SELU", "SUPPORTED_BACKENDS", "AlphaDropout", "activations", "initializers", "layers"]
