"""elukit: exact ELU-family activations, their Gaussian theory, and experiments that test them.

>>> import elukit
>>> elu = elukit.get("elu", alpha=1.0)
>>> float(elu(-2.2))
-0.8891968416376661
"""

from __future__ import annotations

from typing import Any

from numpy.typing import ArrayLike

from elukit._numerics import EXTENDED_PRECISION_AVAILABLE
from elukit._registry import activations, get, parse, register
from elukit._spec import Activation, Param, Reference
from elukit.constants import SELU_ALPHA, SELU_SCALE

__version__ = "0.1.0"


def elu(x: ArrayLike, alpha: float = 1.0) -> Any:
    r"""ELU: :math:`x\ (x > 0),\ \alpha\,\mathrm{expm1}(x)\ (x \le 0)`, rounded once to x's dtype.

    Args:
        x: array_like of reals; ints become float64.
        alpha: finite and > 0, else ValueError naming it.
    """
    return get("elu", alpha=alpha).value(x)


def elu_derivative(x: ArrayLike, alpha: float = 1.0) -> Any:
    r"""ELU': :math:`1\ (x > 0),\ \alpha e^{x}\ (x \le 0)`; alpha at x = 0 (left branch)."""
    return get("elu", alpha=alpha).derivative(x)


def selu(x: ArrayLike) -> Any:
    r"""SELU: :math:`\lambda\,\mathrm{ELU}(x; \alpha)` with `SELU_SCALE` and `SELU_ALPHA`."""
    return get("selu").value(x)


def celu(x: ArrayLike, alpha: float = 1.0) -> Any:
    r"""CELU: :math:`x\ (x > 0),\ \alpha\,\mathrm{expm1}(x/\alpha)\ (x \le 0)`."""
    return get("celu", alpha=alpha).value(x)


__all__ = [
    "EXTENDED_PRECISION_AVAILABLE",
    "SELU_ALPHA",
    "SELU_SCALE",
    "Activation",
    "Param",
    "Reference",
    "activations",
    "celu",
    "elu",
    "elu_derivative",
    "get",
    "parse",
    "register",
    "selu",
]
