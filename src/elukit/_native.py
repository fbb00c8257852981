r"""The compiled kernels of the exponential-linear family, for float32/float64 arrays.

A spec opts in with ``exponential_linear=...``: a function of its bound parameters returning
``(scale, alpha, divisor)`` for

.. math:: f(x) = \lambda x\ (x > 0), \quad \lambda\alpha\,\mathrm{expm1}(x/\delta)\ (x \le 0),

so f'(x) = lambda or (lambda alpha/delta) e^{x/delta}, f''(x) = 0 or (lambda alpha/delta^2)
e^{x/delta}. ELU is (1, alpha, 1), SELU (scale, alpha, 1) and CELU (1, alpha, alpha); the
product lambda*alpha is formed exactly.

`evaluate` fills an output buffer with f, f' or f'' (or grad*f') from the C kernels in
``_exponential_linear.c``: float64 results are faithful, float32 results correctly rounded but
within 2^-56 relative of a midpoint. It returns False where the kernels do not apply (not
compiled, another dtype, parameters whose constants leave double range), so callers fall back.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
from fractions import Fraction
from typing import Any

_TABLE_GATHERS = os.environ.get("ELUKIT_TABLE_GATHERS")
if _TABLE_GATHERS not in (None, "0", "1"):  # the C kernels would take any other value as unset
    raise ValueError(f"ELUKIT_TABLE_GATHERS must be 0 or 1 (or unset: the CPU's choice), got {_TABLE_GATHERS!r}")

try:
    from elukit import _exponential_linear as _compiled
except ImportError:  # built without a C compiler
    _compiled = None

AVAILABLE = _compiled is not None
"""Whether the compiled kernels were built with this installation."""

_QUANTITIES = ("value", "derivative", "second_derivative")
_LARGEST_EXPONENT = 900
"""Constants beyond 2^±900 (absurd parameters) would push exp's scaling out of double range."""


def _split(exact: Fraction) -> tuple[float, float]:
    """An exact rational as a double-double hi + lo (|lo| <= ulp(hi)/2)."""
    high = float(exact)
    return high, float(exact - Fraction(high))


def kernel_constants(form: tuple[float, float, float], quantity: str) -> tuple | None:
    """The constant tuple of `_exponential_linear.evaluate` for `form` and `quantity`
    ("derivative" or "second_derivative"; the value uses the derivative's), or None where the
    kernels cannot represent it."""
    return derivative_constants(form, 1 if quantity == "derivative" else 2)


@functools.lru_cache(maxsize=256)
def derivative_constants(form: tuple[float, float, float], order: int) -> tuple | None:
    """The constant tuple of the exponential kernel for the derivative of `order` >= 1, or None.

    Every derivative of order n >= 1 is lambda (n = 1) or 0 (n >= 2) for x > 0 and
    (lambda alpha / delta^n) e^{x/delta} for x <= 0; the coefficient is formed exactly and split
    into a double-double, so each order is evaluated as accurately as f'."""
    linear_scale, alpha, divisor = form
    if not all(math.isfinite(v) and v > 0 for v in form) or order < 1:
        return None
    c = Fraction(linear_scale) * Fraction(alpha)
    if abs(math.frexp(float(c))[1]) > _LARGEST_EXPONENT:
        return None
    d = c / Fraction(divisor)
    exponential = d / Fraction(divisor) ** (order - 1)
    positive = linear_scale if order == 1 else 0.0
    exponent = math.frexp(float(exponential))[1] - 1
    if abs(exponent) > _LARGEST_EXPONENT:
        return None
    mantissa = exponential / Fraction(2) ** exponent
    # Below `floor` the kernels flush grad * exp(x/delta) * constant to 0: it is under 2^-2043, so
    # that product underflows for every |grad| < 2^967. The floor keeps the scaling 2^(k + exponent)
    # within two normal factors and k = round(x/(delta ln2)) above -2^11, where the kernels'
    # Cody-Waite step is exact.
    floor = max((-2043 - exponent) * math.log(2), -2047 * math.log(2))
    c_hi, c_lo = _split(c)
    d_hi, d_lo = _split(d)
    m_hi, m_lo = _split(mantissa)
    return (c_hi, c_lo, d_hi, d_lo, m_hi, m_lo, exponent, floor, positive, linear_scale, divisor)


KIND = {"value": 0, "derivative": 1, "second_derivative": 1}
"""The kernel kind of each quantity (the derivatives share one exponential kernel)."""

FAST = 2
"""Added to a kind: float64 from the fast faithful kernels (< 0.52 ulp, in about 60% of the time)
instead of the double-double ones (correctly rounded but within 2^-56 of a midpoint). float32 has
one kernel, fast and correctly rounded, either way."""

LINEAR = 4
"""Added to a kind: the piecewise-linear family f(x) = a x (x > 0), b x (x <= 0), a > 0, b >= 0
(b = 0, ReLU, gives +0 on the whole negative branch)."""


def constants_for(form: tuple[float, float, float], quantity: str) -> tuple | None:
    """`kernel_constants` for a quantity (the value uses the derivative's constants)."""
    return kernel_constants(tuple(form), "derivative" if quantity == "value" else quantity)


def linear_constants(form: tuple[float, float], quantity: str) -> tuple | None:
    """The constant tuple of `_exponential_linear.evaluate` for the linear family with
    `form` = (a, b), or None where the kernels do not apply (a not finite and positive, b not
    finite and non-negative)."""
    positive, negative = form
    if not (math.isfinite(positive) and positive > 0 and math.isfinite(negative) and negative >= 0):
        return None
    derivative = quantity != "second_derivative"
    d_positive, d_negative = (positive, negative) if derivative else (0.0, 0.0)
    return (negative, 0.0, 0.0, 0.0, d_negative, 0.0, 0, 0.0, d_positive, positive, 1.0)


def _plan(spec: Any) -> dict[str, tuple[int, tuple]] | None:
    exponential, linear = spec.exponential_linear_form(), spec.linear_branches_form()
    if exponential is not None:
        plan = {q: (KIND[q], constants_for(exponential, q)) for q in _QUANTITIES}
    elif linear is not None:
        plan = {q: (KIND[q] | LINEAR, linear_constants(tuple(linear), q)) for q in _QUANTITIES}
    else:
        return None
    return plan if all(constants is not None for _, constants in plan.values()) else None


def order_plan(spec: Any, order: int) -> tuple[int, tuple] | None:
    """(kind, constants) of the derivative of `order` >= 1 of `spec`, or None where the compiled
    kernels do not serve it. Orders above 2 exist for the ELU family (`derivative_constants`) and
    the piecewise-linear one (where they are f'' = 0)."""
    plan = kernels_for(spec) if _compiled is not None else None
    if plan is None or order < 1:
        return None
    if order <= 2:
        return plan[_QUANTITIES[order]]
    exponential = spec.exponential_linear_form()
    if exponential is None:
        return plan["second_derivative"]
    constants = derivative_constants(tuple(exponential), order)
    return None if constants is None else (KIND["derivative"], constants)


_PLANS: dict[int, tuple[Any, dict[str, tuple[int, tuple]] | None]] = {}


def kernels_for(spec: Any) -> dict[str, tuple[int, tuple]] | None:
    """(kind, constants) per quantity for a spec the compiled kernels serve (the ELU family
    through `exponential_linear`, piecewise-linear ones through `linear_branches`), or None.

    Computed once per spec object (1.4 us, a third of a scalar NumPy call): both the NumPy API and
    elukit.torch ask on every call."""
    entry = _PLANS.get(id(spec))
    if entry is None or entry[0] is not spec:
        if len(_PLANS) > 4096:
            _PLANS.clear()
        entry = _PLANS[id(spec)] = (spec, _plan(spec))  # the spec is kept, so its id stays its own
    return entry[1]


def _launch(kind: int, constants: tuple | None, quantity: str, x: Any, out: Any, grad: Any, threads: int,
            fast: bool) -> bool:
    """The one call into the C kernels from the buffer entry points (see `evaluate`)."""
    if quantity == "value" and grad is not None:
        raise ValueError("grad multiplies the derivatives only, not the value")
    if constants is None:
        return False
    _compiled.evaluate(kind | (FAST if fast else 0), x, out, grad, constants, int(threads))
    return True


def evaluate(form: tuple[float, float, float] | None, quantity: str, x: Any, out: Any, grad: Any = None,
             threads: int = 1, fast: bool = False) -> bool:
    """Write `quantity` of `form` at `x` (times `grad` for the derivatives) into `out`.

    `x`, `out` and `grad` are C-contiguous float32 or float64 buffers of one dtype and length
    (`grad` may also hold a single value for every element); `out` may be `x` itself. Returns False, writing nothing, where the kernels do not apply.
    float64 is evaluated in double-double (faithful, max 0.515 ulp measured), or with `fast` by
    the faithful table-driven kernels; float32 in double (a rounding test sends the elements it
    cannot round safely to double-double).
    """
    if _compiled is None or form is None or quantity not in _QUANTITIES:
        return False
    return _launch(KIND[quantity], constants_for(form, quantity), quantity, x, out, grad, threads, fast)


def evaluate_spec(spec: Any, quantity: str, x: Any, out: Any, grad: Any = None, threads: int = 1,
                  fast: bool = False) -> bool:
    """`evaluate` for any spec the compiled kernels serve (see `kernels_for`); False elsewhere."""
    plan = kernels_for(spec) if _compiled is not None else None
    if plan is None or quantity not in plan:
        return False
    return _launch(*plan[quantity], quantity, x, out, grad, threads, fast)


def run_addresses(kind: int, x: int, out: int, grad: int, grad_count: int, count: int, is_double: bool,
                  constants: tuple, threads: int) -> None:
    """The kernels on raw addresses of `count` contiguous elements (grad 0: none; grad_count 1:
    one value for all). Only for callers that guarantee the memory (elukit.torch)."""
    _compiled.evaluate_addresses(kind, x, out, grad, grad_count, count, is_double, constants, threads)


def run_both_addresses(x: int, value: int, derivative: int, count: int, is_double: bool, constants: tuple,
                       threads: int) -> None:
    """f(x) into `value` and f'(x) into `derivative` (with the branch in its sign bit: -f'(x) where
    x <= 0 or NaN) from one exponential per element, on raw addresses of `count` contiguous
    elements; float64 from the fast faithful kernels. Bit for bit kinds 0 and 1 (grad 1). Only for
    callers that guarantee the memory (elukit.torch)."""
    _compiled.evaluate_both_addresses(KIND["derivative"] | FAST, x, value, derivative, count, is_double, constants,
                                      threads)


def multiply_magnitude_addresses(x: int, grad: int, grad_count: int, out: int, count: int, is_double: bool,
                                 threads: int) -> None:
    """out = grad * |x| in x's dtype (grad_count 1: one value for all), on raw addresses of `count`
    contiguous elements. Only for callers that guarantee the memory (elukit.torch)."""
    _compiled.multiply_magnitude_addresses(x, grad, grad_count, out, count, is_double, threads)


_OPENMP_SYMBOLS = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")


def loaded_openmp_runtimes() -> list[str]:
    """Paths of the OpenMP runtimes (GNU, Intel or LLVM) loaded in this process (Linux only)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if re.search(r"/lib(gomp|iomp5|omp)[-.\w]*\.so", p))


def share_openmp_runtime(path: str | None) -> bool:
    """Run the kernels' parallel parts on the OpenMP team of the runtime at `path` (one already
    loaded, e.g. PyTorch's), or on threads of their own (None). Returns whether it took effect.

    PyTorch's OpenMP workers spin for a while after each parallel op; threads of our own would
    then share the cores with them (2 threads, float32 forward+backward at 2^22: 2.2x F.elu's
    time instead of 1.2x).
    """
    if _compiled is None:
        return False
    if path is None:
        _compiled.set_openmp(0, 0, 0)
        return True
    addresses = openmp_entry_points(path)
    if addresses is None:
        return False
    _compiled.set_openmp(*addresses)
    return True


def openmp_entry_points(path: str) -> list[int] | None:
    """The addresses of GOMP_parallel, omp_get_thread_num and omp_get_num_threads in the OpenMP
    runtime at `path` (what the kernels' set_openmp takes), or None where it has none of them."""
    try:
        library = ctypes.CDLL(path)
        return [ctypes.cast(getattr(library, name), ctypes.c_void_p).value for name in _OPENMP_SYMBOLS]
    except (OSError, AttributeError):
        return None


__all__ = ["AVAILABLE", "FAST", "KIND", "LINEAR", "constants_for", "derivative_constants", "evaluate", "evaluate_spec",
           "kernel_constants", "kernels_for", "linear_constants", "loaded_openmp_runtimes", "multiply_magnitude_addresses", "openmp_entry_points",
           "order_plan", "run_addresses", "run_both_addresses",
           "share_openmp_runtime"]
