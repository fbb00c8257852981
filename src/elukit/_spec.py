"""What an activation is: one frozen `Activation` spec per function family.

Every other part of elukit (NumPy evaluation, accuracy tables, theory, torch, plots, CLI) reads
these specs; none of them redefines a formula, a parameter check or a special value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from elukit import _native, _numerics

Kernel = Callable[..., np.ndarray]
"""A kernel takes an ndarray in the working dtype and the bound parameters as keywords."""


def positive_finite(name: str, value: Any) -> float:
    """Return `value` as a float if it is a finite real number > 0, else raise naming `name`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"parameter {name!r} must be a real number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range (float() would say so without naming the parameter)
        raise ValueError(f"parameter {name!r} must be finite and > 0, got an int of {len(str(abs(value)))} digits, "
                         "too large for a float") from None
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"parameter {name!r} must be finite and > 0, got {value!r}")
    return number


@dataclasses.dataclass(frozen=True)
class Param:
    """A scalar parameter of an activation family: its name, default and validity check."""

    name: str
    default: float
    check: Callable[[str, Any], float] = positive_finite
    doc: str = ""

    def validate(self, value: Any) -> float:
        return self.check(self.name, value)


@dataclasses.dataclass(frozen=True)
class Reference:
    """mpmath reference of an activation, used by the accuracy tests and `elukit.accuracy`.

    Each callable takes ``(mp, x, **params)`` where ``mp`` is the mpmath module (passed in so
    that importing elukit never needs mpmath) and ``x`` an ``mp.mpf``; it returns an ``mp.mpf``
    exact to the working precision of ``mp``.
    """

    value: Callable[..., Any]
    derivative: Callable[..., Any]
    second_derivative: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class TorchKernels:
    """PyTorch versions of the kernels, used by `elukit.torch`.

    Each callable takes ``(torch, x, **params)``: the torch module is passed in so that the
    family modules never import torch. ``x`` is already in the working dtype (float64 for
    16/32-bit inputs); the result is rounded once by `elukit.torch`.

    ``tie_fix(torch, quantity, x, result, **params)``, if given, is applied to float64 results
    that will be rounded again to a narrower dtype (the NumPy kernels' round-to-odd step).

    ``exact_dtypes``: the dtypes (e.g. ``("float32", "float64")``) in which the kernels, run
    directly on a tensor of that dtype with no working dtype and no rounding step, give the
    spec's exact result (the NumPy kernels' bits). `elukit.torch` then runs them that way, on any
    device. Piecewise-linear functions qualify (a comparison and at most one multiplication), but
    a multiplication by a parameter only in float64: torch multiplies float32 by the parameter
    rounded to float32, where the spec rounds the exact product once.
    """

    value: Callable[..., Any]
    derivative: Callable[..., Any]
    second_derivative: Callable[..., Any]
    tie_fix: Callable[..., Any] | None = None
    exact_dtypes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation function family, with bound parameter values.

    Build one with `elukit.get(name, **params)`; calling it evaluates `value`. The kernels run
    on the working dtype chosen by `elukit._numerics` (float64 for 8-32 bit floats, extended
    precision for float64 when the spec asks for it) and the result is rounded once to the
    input's dtype.

    Attributes:
        name: registry name, e.g. ``"elu"``.
        params: the family's parameters (name, default, check).
        formula: the definition in LaTeX, with the branch taken at the kink.
        value, derivative, second_derivative: NumPy kernels ``f(x, **params)``.
        special_values: ``(x, f(x), f'(x), f''(x))`` rows written as expressions of the
            parameters (``"-alpha"``); tests and docs are generated from them.
        reference: mpmath reference for accuracy tests.
        torch: PyTorch kernels (`TorchKernels`), or None (no torch backend).
        gaussian: closed-form Gaussian moments ``(mean, std, **params) -> Moments``, or None
            (then `elukit.theory` uses Gauss-Hermite quadrature).
        extended_float64: evaluate float64 inputs in ``np.longdouble`` (faithful float64).
        exponential_linear: for the ELU family, ``(**params) -> (scale, alpha, divisor)`` with
            f(x) = scale*x (x > 0), scale*alpha*expm1(x/divisor) (x <= 0); it selects the
            compiled float32/float64 kernels of `elukit._native`. None for other families.
        linear_branches: for piecewise-linear functions, ``(**params) -> (a, b)`` with a > 0, b >= 0
            and f(x) = a*x (x > 0), b*x (x <= 0) (b = 0: +0 for every x <= 0, as ReLU); it selects
            the compiled kernels as well.
        zero_gradient_set: where f' is exactly zero, in words (``"x <= 0"``) or ``""``.
        bounded_below: the infimum of f as an expression of the parameters, or ``None``.
        references: literature.
        bound: the parameter values of this instance, in `params` order.
    """

    name: str
    params: tuple[Param, ...]
    formula: str
    value_kernel: Kernel
    derivative_kernel: Kernel
    second_derivative_kernel: Kernel
    special_values: tuple[tuple[float, str, str, str], ...]
    reference: Reference
    description: str = ""
    gaussian: Callable[..., Any] | None = None
    torch: TorchKernels | None = None
    extended_float64: bool = False
    exponential_linear: Callable[..., tuple[float, float, float]] | None = None
    linear_branches: Callable[..., tuple[float, float]] | None = None
    zero_gradient_set: str = ""
    bounded_below: str | None = None
    references: tuple[str, ...] = ()
    bound: tuple[tuple[str, float], ...] = ()

    # --- parameters -----------------------------------------------------------------------
    def bind(self, **params: Any) -> Activation:
        """Return a copy with validated parameter values; unknown names raise ValueError."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(
                f"activation {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are: {', '.join(known) or '(none)'}"
            )
        current = dict(self.bound) or {p.name: p.default for p in self.params}
        for name, value in params.items():
            current[name] = known[name].validate(value)
        return dataclasses.replace(self, bound=tuple((p.name, current[p.name]) for p in self.params))

    @property
    def parameters(self) -> dict[str, float]:
        """The bound parameter values (defaults when unbound)."""
        if self.bound:
            return dict(self.bound)
        return {p.name: p.default for p in self.params}

    def exponential_linear_form(self) -> tuple[float, float, float] | None:
        """(scale, alpha, divisor) of an ELU-family member at the bound parameters, or None."""
        if self.exponential_linear is None:
            return None
        return self.exponential_linear(**self.parameters)

    def linear_branches_form(self) -> tuple[float, float] | None:
        """(a, b) of a piecewise-linear member at the bound parameters, or None."""
        if self.linear_branches is None:
            return None
        return self.linear_branches(**self.parameters)

    def evaluate_expression(self, expression: str) -> float:
        """Evaluate a special-value expression such as ``"-alpha"`` or ``"scale*alpha"``."""
        namespace = {"inf": math.inf, "nan": math.nan, "__builtins__": {}}
        namespace.update(self.parameters)
        return float(eval(expression, namespace))  # noqa: S307 - expressions come from specs

    # --- evaluation -----------------------------------------------------------------------
    def _apply(self, quantity: str, kernel: Kernel, x: ArrayLike, compiled: bool) -> Any:
        prepared = _numerics.prepare(x, extended=self.extended_float64)
        if compiled:
            result = self._compiled(quantity, prepared)
            if result is not None:
                return result
        return _numerics.evaluate(kernel, prepared, self.parameters)

    def _compiled(self, quantity: str, prepared: _numerics.Prepared) -> Any:
        """`quantity` from the compiled kernels (`elukit._native`), or None where they do not apply."""
        dtype = prepared.array.dtype
        if not _native.AVAILABLE or dtype not in (np.float32, np.float64) or dtype != prepared.out_dtype:
            return None
        source = np.ascontiguousarray(prepared.array).reshape(-1)
        out = np.empty_like(source)
        if not _native.evaluate_spec(self, quantity, source, out):
            return None
        out = out.reshape(prepared.array.shape)
        return out[()] if prepared.scalar else out

    def value(self, x: ArrayLike, *, compiled: bool = True) -> Any:
        """f(x), rounded once to x's float dtype (ints give float64).

        ``compiled=False`` skips elukit's compiled kernels (ELU family, float32/float64) for the
        NumPy kernels, which evaluate float64 in extended precision (see `elukit._native`).
        """
        return self._apply("value", self.value_kernel, x, compiled)

    def derivative(self, x: ArrayLike, *, compiled: bool = True) -> Any:
        """f'(x); at a kink the left (x <= 0) branch is taken."""
        return self._apply("derivative", self.derivative_kernel, x, compiled)

    def second_derivative(self, x: ArrayLike, *, compiled: bool = True) -> Any:
        """f''(x); at a kink the left (x <= 0) branch is taken, as for f'."""
        return self._apply("second_derivative", self.second_derivative_kernel, x, compiled)

    def __call__(self, x: ArrayLike) -> Any:
        return self.value(x)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.parameters.items())
        return f"Activation({self.name!r}{', ' if args else ''}{args})"

    def label(self) -> str:
        """Short human label with non-default parameters, e.g. ``elu(alpha=0.5)``."""
        changed = {p.name: v for p, v in zip(self.params, self.parameters.values()) if v != p.default}
        if not changed:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v:g}" for k, v in changed.items()) + ")"
