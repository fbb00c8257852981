"""The compiled ELU-family kernels (elukit._native): accuracy in ULPs against mpmath, agreement
with the correctly rounded NumPy backend, special values, gradients, threads and bad input."""

import pathlib
import shutil
import sysconfig

import numpy as np
import pytest

import elukit
from elukit import _native
from elukit.accuracy import exact_values, sample_points, summarize

pytest.importorskip("mpmath")

ROWS = [("elu", {}), ("elu", {"alpha": 0.5}), ("elu", {"alpha": 3.0}), ("selu", {}),
        ("celu", {}), ("celu", {"alpha": 0.1}), ("celu", {"alpha": 3.0})]
QUANTITIES = ("value", "derivative", "second_derivative")


def test_the_kernels_are_built_wherever_a_c_compiler_is():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}); elukit installs without its compiled kernels")
    assert _native.AVAILABLE, "a C compiler is here but elukit._exponential_linear was not built"


needs_kernels = pytest.mark.skipif(not _native.AVAILABLE, reason="built without the compiled kernels")


def _run(spec, quantity, x, grad=None, threads=1, fast=False):
    out = np.empty_like(x)
    assert _native.evaluate_spec(spec, quantity, x, out, grad, threads=threads, fast=fast)
    return out


MODES = pytest.mark.parametrize("fast", [False, True], ids=["exact", "fast"])


@needs_kernels
@MODES
@pytest.mark.parametrize("name, params", ROWS)
def test_float64_is_faithful_against_mpmath(name, params, fast):
    """Measured on 2*10^4 points per row: <= 0.51 ulp exact (double-double), <= 0.5042 ulp fast."""
    spec = elukit.get(name, **params)
    points = sample_points(np.dtype(np.float64), 4000, seed=3)
    for quantity in QUANTITIES:
        exact = exact_values(spec, quantity, points)
        got = _run(spec, quantity, points, fast=fast)
        summary = summarize(spec.label(), quantity, np.dtype(np.float64), points, got, exact)
        assert summary.max_ulp < (0.52 if fast else 0.55), summary
        assert summary.correctly_rounded > (0.995 if fast else 0.998), summary


@needs_kernels
def test_fast_float64_table_holds_2_to_the_j_over_128():
    import mpmath

    with mpmath.workprec(300):
        for j, (hi, lo) in enumerate(_native._compiled.exp2_table()):
            exact = mpmath.mpf(2) ** (mpmath.mpf(j) / 128)
            assert hi == float(exact) and lo == float(exact - mpmath.mpf(hi)), j


@needs_kernels
@pytest.mark.parametrize("name, params", ROWS)
def test_fast_float64_is_within_an_ulp_of_the_double_double_kernels_and_equal_at_the_edges(name, params):
    spec = elukit.get(name, **params)
    rng = np.random.default_rng(9)
    bits = rng.integers(0, 2**64, size=2**16, dtype=np.uint64).view(np.float64)
    x = np.concatenate([bits[np.isfinite(bits)], rng.standard_normal(2**16) * 3, rng.standard_normal(4096) * 1e-3,
                        -np.ldexp(1.0, np.arange(-1074, 11)), [0.0, -0.0, np.inf, -np.inf, np.nan]])
    grad = np.concatenate([rng.standard_normal(x.size - 6) * 10.0 ** rng.integers(-300, 300, x.size - 6),
                           [0.0, -0.0, 1e308, -np.inf, np.nan, 5e-324]])
    for quantity, g in (("value", None), ("derivative", None), ("second_derivative", None), ("derivative", grad)):
        fast, exact = _run(spec, quantity, x, g, fast=True), _run(spec, quantity, x, g)
        assert np.array_equal(np.isnan(fast), np.isnan(exact)), quantity
        finite = np.isfinite(exact)
        assert np.array_equal(fast[~finite & ~np.isnan(exact)], exact[~finite & ~np.isnan(exact)]), quantity
        steps = np.abs(fast[finite] - exact[finite]) / np.spacing(np.abs(exact[finite]))
        assert steps.max() <= 1.0, (quantity, x[finite][steps > 1][:4])
        # zeros, tiny and subnormal results come from the double-double kernels: the same bits
        edge = finite & (np.abs(exact) < 2.0**-1000)
        assert np.array_equal(fast[edge].view(np.uint64), exact[edge].view(np.uint64)), quantity


@needs_kernels
def test_tiny_inputs_break_ties_the_right_way():
    import mpmath

    spec = elukit.get("elu", alpha=3.0)
    mantissas = 2.0**52 - np.arange(1, 400, 2, dtype=np.float64)  # odd, > 2^53/3: 3m has 54 bits
    x = -np.ldexp(mantissas, -1050)  # so 3x lands exactly on a midpoint; x^2 underflows
    got = _run(spec, "value", x)
    with mpmath.workprec(3000):
        for xi, yi in zip(x, got):
            exact = 3 * mpmath.expm1(mpmath.mpf(float(xi)))
            neighbours = [np.nextafter(yi, -np.inf), np.nextafter(yi, np.inf)]
            assert all(abs(mpmath.mpf(float(yi)) - exact) < abs(mpmath.mpf(float(n)) - exact) for n in neighbours), xi


@needs_kernels
@MODES
def test_tiny_inputs_near_a_midpoint_are_not_pushed_across_it(fast):
    """SELU(x) for x ~ -2^-197: c*x lies within 2^-70 relative of a midpoint (found by search),
    and the true value differs from c*x by 2^-198 relative, so it rounds as c*x does. A tie-breaking
    nudge of 2^-70 used to push 10 of these 33 searched inputs across the midpoint."""
    from fractions import Fraction

    spec = elukit.get("selu")
    c = Fraction(elukit.SELU_SCALE) * Fraction(elukit.SELU_ALPHA)
    mantissas = [8838676033756613, 6469115148866102, 4901030743437809, 8628896572163659, 6832285868739030,
                 8463670740376071, 7705452316890097, 6571638752715939, 6240945907396710, 6981666095154044,
                 7236349407345167, 4972390363379344]
    x = -np.ldexp(np.array(mantissas, dtype=np.float64), -250)
    assert _run(spec, "value", x, fast=fast).tolist() == [float(c * Fraction(float(xi))) for xi in x]


@needs_kernels
@pytest.mark.parametrize("name, params", ROWS)
def test_float32_equals_the_correctly_rounded_numpy_backend(name, params):
    spec = elukit.get(name, **params)
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2**32, size=2**17, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([x[np.isfinite(x)], sample_points(np.dtype(np.float32), 20_000, seed=5)])
    for quantity in QUANTITIES:
        got, wanted = _run(spec, quantity, x), getattr(spec, quantity)(x, compiled=False)
        same = (got.view(np.uint32) == wanted.view(np.uint32)) | (np.isnan(got) & np.isnan(wanted))
        assert same.all(), (quantity, x[~same][:5], got[~same][:5], wanted[~same][:5])


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, params", ROWS)
@MODES
def test_special_values_and_signed_zero(name, params, dtype, fast):
    spec = elukit.get(name, **params)
    for x, *expressions in spec.special_values:
        for quantity, expression in zip(QUANTITIES, expressions):
            got = _run(spec, quantity, np.array([x], dtype=dtype), fast=fast)[0]
            wanted = dtype(spec.evaluate_expression(expression))
            if np.isnan(wanted):
                assert np.isnan(got), (x, quantity)
            else:
                assert got == wanted and np.signbit(got) == np.signbit(wanted), (x, quantity, got, wanted)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@MODES
def test_derivative_never_collapses_to_zero_where_it_is_normal(dtype, fast):
    spec = elukit.get("elu")
    smallest_normal = np.finfo(dtype).tiny
    x = -np.linspace(0, -np.log(smallest_normal) - 0.01, 50_001).astype(dtype)
    assert (_run(spec, "derivative", x, fast=fast) >= smallest_normal).all()


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@MODES
def test_gradient_is_grad_times_derivative_rounded_once(dtype, fast):
    spec = elukit.get("celu", alpha=3.0)
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(20_000) * 20).astype(dtype)
    grad = (rng.standard_normal(20_000) * 1e3).astype(dtype)
    got = _run(spec, "derivative", x, grad, fast=fast)
    exact = exact_values(spec, "derivative", x.astype(np.float64))
    import mpmath

    product = np.array([float(mpmath.mpf(float(g)) * e) for g, e in zip(grad, exact)]).astype(dtype)
    ulps = np.abs(got.astype(np.float64) - product) / np.spacing(np.abs(product).astype(dtype)).astype(np.float64)
    assert ulps.max() <= 1.0


def _product_in_float32(a, b):
    """a*b (two doubles) rounded once to float32 by elukit's reference."""
    import mpmath

    from elukit.reference import float_format, round_exact

    with mpmath.workprec(120):  # the product of two doubles is exact in 106 bits
        return round_exact(mpmath.mpf(float(a)) * mpmath.mpf(float(b)), float_format(np.float32))


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, params", [("relu", {}), ("leaky_relu", {}), ("leaky_relu", {"slope": 0.1}),
                                          ("leaky_relu", {"slope": 0.3333}), ("leaky_relu", {"slope": 2.5})])
def test_piecewise_linear_kernels_round_each_product_once(name, params, dtype):
    """The NumPy kernels' bits, except float32 Leaky ReLU values, where the NumPy kernels round
    slope*x to float64 and then to float32 (twice): there the compiled value must be the exact
    product rounded once."""
    spec = elukit.get(name, **params)
    integer = np.uint32 if dtype == np.float32 else np.uint64
    bits = np.random.default_rng(8).integers(0, np.iinfo(integer).max, size=100_000, dtype=np.uint64)
    x = np.concatenate([bits.astype(integer).view(dtype), np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype)])
    for quantity in QUANTITIES:
        got, wanted = getattr(spec, quantity)(x), getattr(spec, quantity)(x, compiled=False)
        assert np.array_equal(_run(spec, quantity, x, threads=3).view(integer), got.view(integer))
        same = (got.view(integer) == wanted.view(integer)) | (np.isnan(got) & np.isnan(wanted))
        if dtype == np.float32 and name == "leaky_relu" and quantity == "value":
            slope = spec.parameters["slope"]
            assert all(got[i] == _product_in_float32(x[i], slope) for i in np.nonzero(~same)[0])
        else:
            assert same.all(), (quantity, x[~same][:3], got[~same][:3], wanted[~same][:3])


@needs_kernels
def test_piecewise_linear_gradient_is_grad_times_slope_rounded_once():
    spec = elukit.get("leaky_relu", slope=0.3333)
    rng = np.random.default_rng(12)
    x = rng.standard_normal(3000).astype(np.float32)
    grad = (rng.standard_normal(3000) * 10.0 ** rng.integers(-30, 30, 3000)).astype(np.float32)
    got = _run(spec, "derivative", x, grad)
    slopes = [1.0 if xi > 0 else 0.3333 for xi in x]
    assert all(g == _product_in_float32(gi, s) for g, gi, s in zip(got, grad, slopes))


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_gradient_keeps_the_sign_of_zero_and_nan_of_every_grad(dtype):
    """ReLU's kernels skip the product (its slopes are exactly 1 and 0): grad * f'(x) must still be
    grad where x > 0 and grad * 0.0 elsewhere (a signed zero, NaN for an infinite grad), NaN x kept."""
    spec = elukit.get("relu")
    specials = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.0e38], dtype)
    x = np.repeat(specials, len(specials))
    grad = np.tile(specials, len(specials))
    got = _run(spec, "derivative", x, grad)
    with np.errstate(invalid="ignore"):
        wanted = np.where(np.isnan(x), x, np.where(x > 0, grad, grad * dtype(0.0)))
    same = (got.view(np.uint8) == wanted.view(np.uint8)).reshape(len(x), -1).all(axis=1) | (np.isnan(got) & np.isnan(wanted))
    assert same.all(), (x[~same], grad[~same], got[~same], wanted[~same])


@needs_kernels
@MODES
def test_large_gradients_times_a_vanishing_derivative(fast):
    """grad * f'(x) for grads far above 1: flushed to 0 where it underflows, and right where it
    does not (the kernels once clamped x/beta where f' alone underflows and returned garbage)."""
    import mpmath

    spec = elukit.get("elu")
    x = np.array([-2.7e197, -1e4, -1500.0, -760.0, -745.5])
    grad = np.array([4e28, 1e300, 1e300, 2.0**100, 8.0])
    got = _run(spec, "derivative", x, grad, fast=fast)
    with mpmath.workprec(200):
        wanted = [float(mpmath.mpf(float(g)) * mpmath.exp(mpmath.mpf(float(xi)))) for xi, g in zip(x, grad)]
    assert got.tolist() == wanted


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@MODES
def test_one_gradient_value_serves_every_element(dtype, fast):
    spec = elukit.get("selu")
    x = np.linspace(-50, 5, 3001, dtype=dtype)
    assert np.array_equal(_run(spec, "derivative", x, np.array([2.5], dtype), fast=fast),
                          _run(spec, "derivative", x, np.full_like(x, 2.5), fast=fast))


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_threads_openmp_or_length(dtype):
    import sys

    spec = elukit.get("selu")
    x = (np.random.default_rng(2).standard_normal(300_001) * 10).astype(dtype)
    whole = _run(spec, "value", x, threads=1)
    fast = _run(spec, "value", x, threads=1, fast=True)
    try:
        for runtime in [None, *_native.loaded_openmp_runtimes()]:  # our own threads, then OpenMP teams
            if not _native.share_openmp_runtime(runtime):
                continue
            assert np.array_equal(_run(spec, "value", x, threads=4), whole), runtime
            assert np.array_equal(_run(spec, "value", x, threads=4, fast=True), fast), runtime
            assert np.array_equal(_run(spec, "derivative", x, threads=3), _run(spec, "derivative", x)), runtime
            assert np.array_equal(_run(spec, "derivative", x, threads=3, fast=True),
                                  _run(spec, "derivative", x, fast=True)), runtime
    finally:
        _native.share_openmp_runtime(None)
        if "elukit.torch.functional" in sys.modules:
            sys.modules["elukit.torch.functional"]._share_torch_openmp()
    assert np.array_equal(np.concatenate([_run(spec, "value", x[i:i + 7]) for i in range(0, 70, 7)]), whole[:70])
    assert np.array_equal(np.concatenate([_run(spec, "value", x[i:i + 7], fast=True) for i in range(0, 70, 7)]), fast[:70])


def test_share_openmp_runtime_refuses_a_library_without_openmp():
    assert not _native.share_openmp_runtime("/nonexistent/libgomp.so.1")


@needs_kernels
def test_out_may_be_the_input():
    spec = elukit.get("elu", alpha=0.5)
    x = np.linspace(-30, 5, 10_001, dtype=np.float32)
    wanted = spec.value(x, compiled=False)
    assert _native.evaluate(spec.exponential_linear_form(), "value", x, x)
    assert np.array_equal(x, wanted)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("quantity", ["value", "derivative"])
def test_out_may_be_the_input_or_the_gradient_where_elements_take_the_slow_path(dtype, fast, quantity):
    """The kernels write straight into `out` and redo a few elements afterwards from their inputs
    (float32: every result below 2^-126, e.g. f'(x) for x < -87; float64: tiny and subnormal results).
    Where `out` is x or grad, the inputs of those elements must still be there: the bits equal a
    separate `out`'s."""
    spec = elukit.get("selu")
    form = spec.exponential_linear_form()
    rng = np.random.default_rng(7)
    tiny = np.finfo(dtype).tiny
    x = np.concatenate([rng.uniform(-120, 5, 5000), -np.exp(rng.uniform(-740, 6, 5000)), [-tiny, -1e-310, -745.0],
                        rng.normal(0, 3, 3000)]).astype(dtype)
    x = x[rng.permutation(x.size)]
    grad = rng.normal(0, 2, x.size).astype(dtype) if quantity != "value" else None
    separate = np.empty_like(x)
    assert _native.evaluate(form, quantity, x, separate, grad, fast=fast)
    same = x.copy()
    assert _native.evaluate(form, quantity, same, same, grad, fast=fast)
    assert np.array_equal(same.view(np.uint8), separate.view(np.uint8))
    if grad is not None:
        into_grad = grad.copy()
        assert _native.evaluate(form, quantity, x, into_grad, into_grad, fast=fast)
        assert np.array_equal(into_grad.view(np.uint8), separate.view(np.uint8))


@needs_kernels
def test_bad_buffers_are_rejected_with_the_argument_named():
    form = elukit.get("elu").exponential_linear_form()
    x = np.zeros(8)
    with pytest.raises(ValueError, match="out must match x"):
        _native.evaluate(form, "value", x, np.zeros(7))
    with pytest.raises(ValueError, match="out must match x"):
        _native.evaluate(form, "value", x, np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="x must hold float32 or float64"):
        _native.evaluate(form, "value", np.zeros(8, np.int64), np.zeros(8, np.int64))
    with pytest.raises(ValueError, match="grad must match x"):
        _native.evaluate(form, "derivative", x, np.zeros(8), np.zeros(3))
    with pytest.raises(ValueError, match="grad must match x"):
        _native.evaluate(form, "derivative", x, np.zeros(8), np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="grad multiplies the derivatives only"):
        _native.evaluate(form, "value", x, np.zeros(8), np.zeros(8))
    with pytest.raises(TypeError, match="out must be a C-contiguous writable buffer"):
        _native.evaluate(form, "value", x, np.zeros(16)[::2])
    constants = _native.constants_for(form, "value")
    for kind in (-1, 8):  # kinds are a quantity (0, 1) plus FAST (2) plus LINEAR (4)
        with pytest.raises(ValueError, match="kind must be 0 \\(value\\) or 1"):
            _native._compiled.evaluate(kind, x, np.zeros(8), None, constants, 1)


def test_parameters_beyond_double_range_fall_back():
    assert _native.kernel_constants((1.0, 1e300, 1e-300), "derivative") is None
    assert not _native.evaluate((1.0, 1e300, 1e-300), "value", np.zeros(2), np.zeros(2))
    assert not _native.evaluate(None, "value", np.zeros(2), np.zeros(2))


@needs_kernels
@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_baseline_x86_64_build_gives_the_same_bits(tmp_path):
    """The installed module picks an AVX2 or AVX-512 clone at load time; a build without clones
    (SSE2 and library fma on x86-64) must give the same results, since every operation is an
    exactly specified IEEE operation."""
    import importlib.util
    import subprocess

    source = pathlib.Path(elukit.__file__).with_name("_exponential_linear.c")
    if not source.exists():
        pytest.skip("the C source is not installed beside the package")
    library = tmp_path / ("_exponential_linear" + sysconfig.get_config_var("EXT_SUFFIX"))
    command = ["cc", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-std=c11", "-pthread", "-shared", "-fPIC",
               "-DELUKIT_NO_CLONES", f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(library), "-lm"]
    subprocess.run(command, check=True, capture_output=True)
    spec_ = importlib.util.spec_from_file_location("elukit._exponential_linear", library)
    baseline = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(baseline)
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        x = np.concatenate([rng.standard_normal(50_000) * 30, -np.abs(rng.standard_normal(1000)) * 800,
                            rng.standard_normal(1000) * 1e-300]).astype(dtype)
        for name, params in ROWS:
            form = elukit.get(name, **params).exponential_linear_form()
            for quantity in QUANTITIES:
                constants = _native.kernel_constants(form, "derivative" if quantity == "value" else quantity)
                for kind in (_native.KIND[quantity], _native.KIND[quantity] | _native.FAST):
                    ours, theirs = np.empty_like(x), np.empty_like(x)
                    _native._compiled.evaluate(kind, x, ours, None, constants, 1)
                    baseline.evaluate(kind, x, theirs, None, constants, 1)
                    assert np.array_equal(ours.view(np.uint8), theirs.view(np.uint8)), (name, params, quantity, kind, dtype)


@needs_kernels
def test_float32_rounds_correctly_where_the_numpy_kernels_do_not():
    """SELU(-0.4646979) in float32 lies 2^-57 relative from a midpoint: float64 arithmetic (the
    NumPy kernels) misrounds it; the compiled kernel's double-double slow path does not."""
    import mpmath

    spec = elukit.get("selu")
    x = np.array([-0.4646979], dtype=np.float32)
    got = spec.value(x)[0]
    with mpmath.workprec(200):
        exact = mpmath.mpf(elukit.SELU_SCALE) * mpmath.mpf(elukit.SELU_ALPHA) * mpmath.expm1(mpmath.mpf(float(x[0])))
        errors = [abs(mpmath.mpf(float(c)) - exact) for c in (got, np.nextafter(got, np.float32(0)),
                                                               np.nextafter(got, np.float32(-1)))]
    assert errors[0] < min(errors[1:])
    assert got == np.float32(-0.6534417)


@needs_kernels
def test_address_entry_point_matches_the_buffer_one_and_checks_its_arguments():
    spec = elukit.get("celu", alpha=3.0)
    constants = _native.constants_for(spec.exponential_linear_form(), "derivative")
    x = np.linspace(-40, 5, 1001)
    grad = np.linspace(-2, 2, 1001)
    out = np.empty_like(x)
    _native.run_addresses(1, x.ctypes.data, out.ctypes.data, grad.ctypes.data, x.size, x.size, True, constants, 1)
    assert np.array_equal(out, _run(spec, "derivative", x, grad))
    with pytest.raises(ValueError, match="inconsistent"):
        _native.run_addresses(0, x.ctypes.data, out.ctypes.data, grad.ctypes.data, x.size, x.size, True, constants, 1)
    with pytest.raises(ValueError, match="inconsistent"):
        _native.run_addresses(1, x.ctypes.data, out.ctypes.data, grad.ctypes.data, 7, x.size, True, constants, 1)


_GATHER_CHILD = r"""
import sys
import numpy as np
import elukit
from elukit import _native

outputs = []
rng = np.random.default_rng(11)
x = np.concatenate([rng.standard_normal(20_000) * 30, -np.abs(rng.standard_normal(2_000)) * 800,
                    rng.standard_normal(1_000) * 1e-300, -rng.random(1_000) * 1e-17,
                    [0.0, -0.0, np.inf, -np.inf, np.nan, -745.2, -708.4, -1e-320, 5e-324]])
grad = rng.standard_normal(x.size) * np.where(rng.random(x.size) < 0.1, 1e-300, 1.0)
for name, params in ROWS:
    spec = elukit.get(name, **params)
    form = spec.exponential_linear_form()
    for quantity in ("value", "derivative", "second_derivative"):
        constants = _native.kernel_constants(form, "derivative" if quantity == "value" else quantity)
        for g in (None, grad):
            if g is not None and quantity == "value":
                continue
            out = np.empty_like(x)
            _native._compiled.evaluate(_native.KIND[quantity] | _native.FAST, x, out, g, constants, 1)
            outputs.append(out)
    value, derivative = np.empty_like(x), np.empty_like(x)
    _native.run_both_addresses(x.ctypes.data, value.ctypes.data, derivative.ctypes.data, x.size, True,
                                    _native.kernel_constants(form, "derivative"), 1)
    outputs += [value, derivative]
np.save(sys.argv[1], np.concatenate(outputs))
print(_native._compiled.table_gathers())
"""


@needs_kernels
def test_table_gathers_give_the_bits_of_table_loads(tmp_path):
    """The fast float64 loops have a second copy that reads the 2^(j/128) table with AVX-512
    gathers (on CPUs where gathers are fast): every value, derivative and fused pair must be the
    bits of the copy that loads the table an entry at a time. Each runs in its own process, as the
    choice is made once per process (ELUKIT_TABLE_GATHERS)."""
    import os
    import subprocess
    import sys

    child = f"ROWS = {ROWS!r}\n" + _GATHER_CHILD
    used = {}
    for setting in ("0", "1"):
        environment = dict(os.environ, ELUKIT_TABLE_GATHERS=setting)
        used[setting] = subprocess.run([sys.executable, "-c", child, str(tmp_path / f"{setting}.npy")],
                                       env=environment, check=True, capture_output=True, text=True).stdout.strip()
    assert used["0"] == "False"
    if used["1"] != "True":
        pytest.skip("this CPU has no AVX-512 (x86-64-v4), or the build has no gathering copy (GCC < 12)")
    loads, gathers = (np.load(tmp_path / f"{setting}.npy") for setting in ("0", "1"))
    differ = np.flatnonzero(loads.view(np.uint64) != gathers.view(np.uint64))
    assert differ.size == 0, (f"{differ.size} of {loads.size} results differ; first at {differ[:5].tolist()}: "
                              f"{loads[differ[:5]].tolist()} (loads) against {gathers[differ[:5]].tolist()} (gathers)")


@pytest.mark.parametrize("setting", ["2", "true", " 1", ""])
def test_a_bad_table_gathers_setting_is_one_line_before_any_work(setting):
    """ELUKIT_TABLE_GATHERS other than 0 or 1: one line naming it when elukit's kernels load (the C
    kernels alone would take it as unset, silently)."""
    import os
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", "import elukit; elukit.get('elu').value(-1.0)"],
                         env=dict(os.environ, ELUKIT_TABLE_GATHERS=setting), capture_output=True, text=True)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last == f"ValueError: ELUKIT_TABLE_GATHERS must be 0 or 1 (or unset: the CPU's choice), got {setting!r}"
