"""Physical constants of the ELU family, each justified where it is defined.

SELU_ALPHA and SELU_SCALE are the float64 values nearest to the self-normalizing constants of
Klambauer et al. (2017), the unique (alpha, lambda) for which (mean 0, variance 1) is a fixed
point of the mean/variance map of lambda*ELU(z; alpha) with z ~ N(0, 1):

    alpha  = 1.6732632423543772848170429916717...
    lambda = 1.0507009873554804934193349852946...

(30+ digits, from solving E[f(z)] = 0 and E[f(z)^2] = 1 in closed form with mpmath at 50 digits;
`elukit.theory.selu_constants()` re-derives them.) Python rounds these literals correctly, so the
floats below are the correctly rounded constants. elukit's SELU is *defined* with these two
floats: SELU(x) = SELU_SCALE * SELU_ALPHA * expm1(x) evaluated exactly, then rounded once.
"""

SELU_ALPHA: float = 1.6732632423543772848170429916717
SELU_SCALE: float = 1.0507009873554804934193349852946

__all__ = ["SELU_ALPHA", "SELU_SCALE"]
