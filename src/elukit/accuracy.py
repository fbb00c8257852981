"""Accuracy tables: ULP error of every activation, quantity and dtype against mpmath.

Run ``python -m elukit.accuracy`` (``--help`` for options). For each row it reports the largest
error in ulps of the result dtype, the 99.9th percentile, and the share of points where the
result is the correctly rounded value. float16 and bfloat16 rows cover every finite input; the
float32 and float64 rows use `sample_points`, which mixes uniformly random bit patterns (every
binade, subnormals included) with dense sampling of the exponential regime and named edge cases.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np

from elukit._registry import get
from elukit._spec import Activation
from elukit.constants import SELU_SCALE
from elukit.reference import QUANTITIES, ErrorSummary, exact_values, summarize

EDGE_CASES: tuple[float, ...] = (
    0.0, -0.0, 5e-324, -5e-324, 1.4e-45, -1.4e-45, -6e-8, -1e-8, -1e-300, -2.2250738585072014e-308,
    -1.1754944e-38, -0.5, -1.0, -2.2, -0.6, -17.32367706298828, -17.3, -20.0, -37.4, -40.0,
    -87.33654, -103.27893, -103.97208, -708.39642, -744.44007, -745.13321, -1e4, -3.4028235e38,
    -1.7976931348623157e308, 0.11, 50.2, 33.5, 1e-8, 88.72, 709.78, 3.4028235e38, 1.7976931348623157e308,
)
"""Inputs named in the issues and the boundaries of each dtype (underflow of exp, subnormals,
the largest finite values). Values not representable in a dtype are rounded to it; infinities
are dropped (they are covered by the specs' special values)."""


def dtype_from_name(name: str) -> np.dtype:
    """float16/float32/float64 from NumPy, bfloat16 from ml_dtypes."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as error:
            raise ImportError("bfloat16 needs ml_dtypes: pip install 'elukit[bfloat16]'") from error
        return np.dtype(ml_dtypes.bfloat16)
    if name not in ("float16", "float32", "float64"):
        raise ValueError(f"dtype must be float16, bfloat16, float32 or float64, got {name!r}")
    return np.dtype(name)


def all_finite_values(dtype: np.dtype) -> np.ndarray:
    """Every finite value of a 16-bit float dtype (all 65,536 bit patterns less inf/NaN)."""
    if dtype.itemsize != 2:
        raise ValueError(f"all_finite_values needs a 16-bit dtype, got {dtype}")
    values = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(dtype)
    with np.errstate(invalid="ignore"):
        as_float = values.astype(np.float64)
    return values[np.isfinite(as_float)]


def sample_points(dtype: np.dtype, count: int, seed: int = 0) -> np.ndarray:
    """`count` test inputs of `dtype` (all finite values for 16-bit dtypes, whatever `count`).

    For float32/float64: the edge cases, then 40% random bit patterns, 30% negative values
    log-uniform in [2^-40, 2^10], 20% uniform over the exponential branch down to where exp
    underflows, and 10% positive values log-uniform in [2^-40, 2^10].
    """
    dtype = np.dtype(dtype)
    if dtype.itemsize == 2:
        return all_finite_values(dtype)
    rng = np.random.default_rng(seed)
    uint = np.uint32 if dtype.itemsize == 4 else np.uint64
    bits = rng.integers(0, np.iinfo(uint).max, size=int(0.4 * count), dtype=uint, endpoint=True)
    with np.errstate(invalid="ignore"):
        patterns = bits.view(dtype).astype(np.float64)
    patterns = patterns[np.isfinite(patterns)]
    negative_log = -np.exp2(rng.uniform(-40, 10, size=int(0.3 * count)))
    underflow = 104.0 if dtype.itemsize == 4 else 746.0
    branch = rng.uniform(-underflow, 0.0, size=int(0.2 * count))
    positive_log = np.exp2(rng.uniform(-40, 10, size=count // 10))
    with np.errstate(over="ignore"):
        candidates = np.concatenate([np.array(EDGE_CASES), patterns, negative_log, branch, positive_log])
        points = candidates.astype(dtype)
    points = points[np.isfinite(points)]
    return points[:count]


def measure(activation: Activation, quantity: str, dtype: Any, points: np.ndarray | None = None,
            count: int = 100_000, seed: int = 0) -> ErrorSummary:
    """ULP error summary of `activation`'s `quantity` on `dtype` inputs against mpmath."""
    dtype = np.dtype(dtype) if not isinstance(dtype, str) else dtype_from_name(dtype)
    if points is None:
        points = sample_points(dtype, count, seed)
    points = np.asarray(points).astype(dtype)
    got = np.asarray(getattr(activation, quantity)(points)).astype(np.float64)
    exact = exact_values(activation, quantity, points.astype(np.float64))
    return summarize(activation.label(), quantity, dtype, points.astype(np.float64), got, exact)


DEFAULT_ROWS: tuple[tuple[str, dict[str, float]], ...] = (
    ("elu", {}), ("elu", {"alpha": 0.5}), ("elu", {"alpha": 3.0}), ("selu", {}),
    ("celu", {}), ("celu", {"alpha": 0.1}), ("celu", {"alpha": 3.0}),
    ("relu", {}), ("leaky_relu", {}), ("sigmoid", {}), ("tanh", {}), ("gelu", {}),
    ("silu", {}), ("softplus", {}),
)
DEFAULT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _measure_task(task: tuple[str, dict[str, float], str, str, int, int]) -> dict[str, Any]:
    name, params, quantity, dtype_name, count, seed = task
    return measure(get(name, **params), quantity, dtype_name, count=count, seed=seed).as_dict()


Progress = Callable[[int, int, str, float], None]
"""``progress(done, total, what, elapsed_seconds)``, called after each finished step."""


def progress_line(program: str) -> Progress:
    """A progress sink printing ``program: [done/total] what (elapsed, ~remaining left)`` to stderr."""

    def report(done: int, total: int, what: str, elapsed: float) -> None:
        left = elapsed / done * (total - done)
        print(f"{program}: [{done}/{total}] {what} ({_duration(elapsed)} elapsed, ~{_duration(left)} left)",
              file=sys.stderr, flush=True)

    return report


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def accuracy_table(rows: Sequence[tuple[str, dict[str, float]]] = DEFAULT_ROWS,
                   dtypes: Sequence[str] = DEFAULT_DTYPES, quantities: Sequence[str] = QUANTITIES,
                   count: int = 100_000, seed: int = 0, workers: int | None = None,
                   progress: Progress | None = None) -> list[dict[str, Any]]:
    """One `ErrorSummary` dict per (activation, quantity, dtype), computed in parallel;
    `progress` hears of each finished one (the full table takes minutes: issue 22)."""
    tasks = [(name, params, q, d, count, seed) for name, params in rows for q in quantities for d in dtypes]
    workers = workers or os.cpu_count() or 1
    started = time.monotonic()

    def finished(done: int, task: tuple) -> None:
        if progress is not None:
            name, params, quantity, dtype = task[:4]
            progress(done, len(tasks), f"{get(name, **params).label()} {quantity} {dtype}", time.monotonic() - started)

    if workers == 1:
        results = []
        for task in tasks:
            results.append(_measure_task(task))
            finished(len(results), task)
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_measure_task, task): index for index, task in enumerate(tasks)}
        results_by_index: dict[int, dict[str, Any]] = {}
        for future in as_completed(futures):
            results_by_index[futures[future]] = future.result()
            finished(len(results_by_index), tasks[futures[future]])
        return [results_by_index[i] for i in range(len(tasks))]


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of results (max and 99.9% ulp, share correctly rounded)."""
    lines = [
        "| activation | quantity | dtype | points | max ulp | 99.9% ulp | correctly rounded |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['activation']} | {r['quantity']} | {r['dtype']} | {r['points']} | "
            f"{r['max_ulp']:.3g} | {r['p999_ulp']:.3g} | {100 * r['correctly_rounded']:.4f}% |"
        )
    return "\n".join(lines)


# --- audit: elukit against the implementations users actually run --------------------------------------

AUDIT_ROWS: tuple[tuple[str, dict[str, float]], ...] = (("elu", {}), ("selu", {}), ("celu", {"alpha": 3.0}))


def _textbook(spec: Activation) -> dict[str, Any] | None:
    """The textbook NumPy formula ``np.where(x <= 0, alpha*(np.exp(x)-1), x)`` (scaled for SELU)."""
    params = spec.parameters
    if spec.name not in ("elu", "selu", "celu"):
        return None
    alpha, scale = params.get("alpha", 1.0), params.get("scale", 1.0)
    rate = 1 / alpha if spec.name == "celu" else 1.0
    dtype_of = lambda x: x.dtype.type  # noqa: E731

    def value(x):
        one = dtype_of(x)
        return np.where(x <= 0, one(scale * alpha) * (np.exp(x * one(rate)) - one(1)), one(scale) * x)

    def derivative(x):
        one = dtype_of(x)
        return np.where(x <= 0, one(scale * alpha * rate) * np.exp(x * one(rate)), one(scale))

    def second(x):
        one = dtype_of(x)
        return np.where(x <= 0, one(scale * alpha * rate * rate) * np.exp(x * one(rate)), one(0))

    return {"value": value, "derivative": derivative, "second_derivative": second}


def _torch_implementations(spec: Activation) -> dict[str, dict[str, Any]]:
    """elukit.torch (its default and exact=True), PyTorch's native op and its in-place variant,
    through autograd."""
    try:
        import torch
    except ImportError:
        return {}
    from elukit.torch import functional as elukit_functional

    params = spec.parameters
    native = {
        "elu": (lambda t: torch.nn.functional.elu(t, params.get("alpha", 1.0)),
                lambda t: torch.nn.functional.elu_(t, params.get("alpha", 1.0))),
        "selu": (torch.nn.functional.selu, torch.nn.functional.selu_),
        "celu": (lambda t: torch.nn.functional.celu(t, params.get("alpha", 1.0)),
                 lambda t: torch.nn.functional.celu_(t, params.get("alpha", 1.0))),
    }.get(spec.name) if spec.parameters.get("scale", 0) in (0, SELU_SCALE) else None

    def through_autograd(function, inplace=False):
        def quantity(x, order):
            leaf = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
            source = leaf.clone() if inplace else leaf
            out = function(source)
            if order == 0:
                return out.detach().numpy()
            (grad,) = torch.autograd.grad(out.sum(), leaf, create_graph=order == 2)
            if order == 1:
                return grad.detach().numpy()
            (second,) = torch.autograd.grad(grad.sum(), leaf)
            return second.numpy()

        names = ("value", "derivative") if inplace else QUANTITIES
        return {name: (lambda x, order=order: quantity(x, order)) for order, name in enumerate(names)}

    result = {"elukit.torch": through_autograd(lambda t: elukit_functional.activation(t, spec)),
              "elukit.torch (exact=True)": through_autograd(lambda t: elukit_functional.activation(t, spec, exact=True))}
    if native is not None:
        result["torch (native)"] = through_autograd(native[0])
        result["torch (native, in-place)"] = through_autograd(native[1], inplace=True)
    return result


def _jax_implementation(spec: Activation) -> dict[str, Any] | None:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    params = spec.parameters
    function = {"elu": lambda t: jax.nn.elu(t, params.get("alpha", 1.0)), "selu": jax.nn.selu,
                "celu": lambda t: jax.nn.celu(t, params.get("alpha", 1.0))}.get(spec.name)
    if function is None:
        return None
    first = jax.vmap(jax.grad(function))
    second = jax.vmap(jax.grad(jax.grad(function)))
    return {"value": lambda x: np.asarray(function(jnp.asarray(x))), "derivative": lambda x: np.asarray(first(jnp.asarray(x))),
            "second_derivative": lambda x: np.asarray(second(jnp.asarray(x)))}


def _elukit_jax_implementation(spec: Activation) -> dict[str, Any] | None:
    """elukit.jax, derivatives through jax.grad (x64 on for the float64 rows; float32 results
    do not depend on it)."""
    try:
        import jax
        import jax.numpy as jnp

        from elukit.jax import functional
    except ImportError:
        return None
    if spec.exponential_linear is None and spec.linear_branches is None:
        return None
    jax.config.update("jax_enable_x64", True)

    def function(t):
        return functional.activation(t, spec)

    compiled = [jax.jit(function), jax.jit(jax.vmap(jax.grad(function))), jax.jit(jax.vmap(jax.grad(jax.grad(function))))]
    return {name: (lambda x, f=f: np.asarray(f(jnp.asarray(x)))) for name, f in zip(QUANTITIES, compiled)}


def audit(rows: Sequence[tuple[str, dict[str, float]]] = AUDIT_ROWS, dtypes: Sequence[str] = ("float32", "float64"),
          count: int = 20_000, seed: int = 0, progress: Progress | None = None) -> list[dict[str, Any]]:
    """ULP errors of f, f', f'' for elukit (NumPy, torch), PyTorch's native ops (regular and
    in-place, derivatives through autograd), the textbook NumPy formula and jax.nn (if installed),
    against the same mpmath references on the same points. `progress` hears of each finished
    (activation, dtype)."""
    results = []
    started, steps = time.monotonic(), len(rows) * len(dtypes)
    for row, (name, params) in enumerate(rows):
        spec = get(name, **params)
        implementations: dict[str, dict[str, Any]] = {
            "elukit (NumPy)": {q: getattr(spec, q) for q in QUANTITIES}}
        implementations.update(_torch_implementations(spec))
        textbook = _textbook(spec)
        if textbook:
            implementations["textbook NumPy"] = textbook
        jax_functions = _jax_implementation(spec)
        if jax_functions:
            implementations["jax.nn"] = jax_functions
        elukit_jax_functions = _elukit_jax_implementation(spec)
        if elukit_jax_functions:
            implementations["elukit.jax"] = elukit_jax_functions
        for dtype_name in dtypes:
            dtype = dtype_from_name(dtype_name)
            points = sample_points(dtype, count, seed)
            as_float = points.astype(np.float64)
            for quantity in QUANTITIES:
                exact = exact_values(spec, quantity, as_float)
                for label, functions in implementations.items():
                    if quantity not in functions:
                        continue
                    with np.errstate(all="ignore"):
                        got = np.asarray(functions[quantity](points.copy())).astype(np.float64)
                    summary = summarize(spec.label(), quantity, dtype, as_float, got, exact).as_dict()
                    results.append({"implementation": label, **summary})
            if progress is not None:
                progress(row * len(dtypes) + dtypes.index(dtype_name) + 1, steps, f"{spec.label()} {dtype_name}",
                         time.monotonic() - started)
    return results


def audit_skipped() -> dict[str, str]:
    """{implementation: why its rows are missing from `audit`} for the optional packages this
    environment lacks, so that a missing row is said, not silently left out."""
    skipped = {}
    try:
        import torch  # noqa: F401
    except ImportError:
        skipped["elukit.torch, torch (native)"] = "PyTorch is not installed (pip install 'elukit[torch]')"
    try:
        import jax  # noqa: F401
    except ImportError:
        skipped["jax.nn"] = "JAX is not installed (pip install jax)"
    return skipped


def _environment_problems(dtypes: Sequence[str], dtypes_given: bool) -> tuple[list[str], list[str], str | None]:
    """(dtypes to run, notes on what is skipped, an error line or None), before any work starts."""
    try:
        import mpmath  # noqa: F401
    except ImportError:
        return [], [], "the accuracy tables need mpmath: pip install 'elukit[accuracy]'"
    kept, notes = [], []
    for name in dtypes:
        try:
            dtype_from_name(name)
        except ImportError as error:
            if dtypes_given:
                return [], [], str(error)
            notes.append(f"skipped the {name} rows: {error}")
            continue
        kept.append(name)
    return kept, notes, None


def format_audit(results: Sequence[dict[str, Any]]) -> str:
    lines = ["| activation | dtype | quantity | implementation | max ulp | 99.9% ulp | correctly rounded |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['activation']} | {r['dtype']} | {r['quantity']} | {r['implementation']} | {r['max_ulp']:.3g} | "
                     f"{r['p999_ulp']:.3g} | {100 * r['correctly_rounded']:.3f}% |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m elukit.accuracy",
        description="ULP error of elukit's activations against correctly rounded mpmath values.",
        epilog="example: python -m elukit.accuracy --points 100000 --activation elu selu celu",
    )
    parser.add_argument("--points", type=int, default=100_000, help="points per float32/float64 row")
    parser.add_argument("--activation", nargs="*", help="names (name:param=value) to measure; default: all")
    parser.add_argument("--dtype", nargs="*", choices=DEFAULT_DTYPES, default=list(DEFAULT_DTYPES))
    parser.add_argument("--quantity", nargs="*", choices=QUANTITIES, default=list(QUANTITIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.points <= 0:
        parser.error(f"--points must be > 0, got {args.points}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    given = argv if argv is not None else sys.argv[1:]
    dtypes, notes, problem = _environment_problems(args.dtype, any(a.startswith("--dtype") for a in given))
    if problem:
        print(f"python -m elukit.accuracy: error: {problem}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"python -m elukit.accuracy: {note}", file=sys.stderr)
    args.dtype = dtypes
    rows = DEFAULT_ROWS
    if args.activation:
        from elukit._registry import parse

        rows = tuple((spec.name, spec.parameters) for spec in map(parse, args.activation))
    results = accuracy_table(rows, args.dtype, args.quantity, args.points, args.seed, args.workers,
                             progress=None if args.quiet else progress_line("python -m elukit.accuracy"))
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
    else:
        print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
