"""elukit.torch: exact autograd activations, modules, conversion, initialization, diagnostics.

Needs PyTorch (``pip install 'elukit[torch]'``).
"""

from elukit.torch import functional
from elukit.torch._ops import library_path
from elukit.torch.functional import keep_operators
from elukit.torch.convert import replace_activations
from elukit.torch.modules import CELU, ELU, PELU, SELU, Activation, AlphaDropout

__all__ = ["CELU", "ELU", "PELU", "SELU", "Activation", "AlphaDropout", "functional", "keep_operators", "library_path",
           "replace_activations"]
