"""elukit.jax's compiled CPU kernels (an XLA FFI custom call): the same bits as the jnp kernels,
every transform, and the jnp kernels wherever the program does not run on the CPU.

Without the compiled module (elukit built without XLA's FFI header, see setup.py) the tests that
compare both paths are skipped; tests/test_jax.py then covers the jnp kernels alone.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import elukit.jax as ej  # noqa: E402
from elukit.jax import functional as ejf  # noqa: E402

needs_compiled = pytest.mark.skipif(not ejf.COMPILED, reason="elukit.jax._ffi_kernels not built (no XLA FFI header)")

ROWS = [("elu", {}), ("elu", {"alpha": 0.3}), ("selu", {}), ("celu", {"alpha": 3.0}), ("relu", {}),
        ("leaky_relu", {"slope": 0.2})]


@pytest.fixture
def kernels(request):
    """Run a test with the compiled kernels switched to `request.param`, restoring the default."""
    before = ejf._SETTINGS["compiled"]
    ejf._SETTINGS["compiled"] = request.param
    yield request.param
    ejf._SETTINGS["compiled"] = before


def _sample(dtype, size=100_000, seed=0):
    """Normal and log-uniform points of both signs, with zeros, infinities, NaN, subnormals and
    the edges where the exponential underflows."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    normal = rng.normal(0.0, 4.0, size // 2)
    magnitude = np.exp(rng.uniform(np.log(float(info.smallest_subnormal)), np.log(200.0), size // 2))
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, float(info.smallest_subnormal), -float(info.smallest_subnormal),
               -float(info.tiny), -float(info.tiny) / 3, -87.3, -88.7, -103.9, -104.0, -110.0, -1e30,
               float(info.max), -float(info.max)]
    values = np.concatenate([normal, magnitude * rng.choice([-1.0, 1.0], size // 2), special])
    return values.astype(dtype)


def _bits(values):
    values = np.asarray(values)
    return values.view(np.int32 if values.dtype == np.float32 else np.int64)


def _evaluate(x, name, params, order, compiled):
    before = ejf._SETTINGS["compiled"]
    ejf._SETTINGS["compiled"] = compiled
    try:
        return np.asarray(jax.jit(lambda t: ej.derivative(t, name, order, **params))(x))
    finally:
        ejf._SETTINGS["compiled"] = before


@needs_compiled
@pytest.mark.parametrize("name, params", ROWS)
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_compiled_float32_bits_equal_the_jnp_kernels(name, params, order):
    x = _sample(np.float32)
    compiled, reference = _evaluate(x, name, params, order, True), _evaluate(x, name, params, order, False)
    different = np.flatnonzero(_bits(compiled) != _bits(reference))
    assert different.size == 0, f"{name}{params} order {order}: x {x[different[:5]]}, compiled {compiled[different[:5]]}, " \
                                f"jnp {reference[different[:5]]}"


def _sample64(size=100_000, seed=0):
    """float64 points: normal, log-uniform over every binade of both signs (subnormals included),
    and the edges: tiny inputs, the clamp of x/beta at -60, subnormal and vanishing derivatives."""
    rng = np.random.default_rng(seed)
    info = np.finfo(np.float64)
    normal = rng.normal(0.0, 6.0, size // 2)
    magnitude = np.exp(rng.uniform(np.log(float(info.smallest_subnormal)), np.log(2000.0), size // 2))
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, -info.tiny, -info.tiny / 3, -1e-300, -2.0**-60,
               -1e-17, -36.7, -40.0, -59.9, -60.0, -60.5, -708.4, -709.8, -744.4, -745.1, -745.2, -746.0, -1000.0,
               -1e30, float(info.max), -float(info.max)]
    return np.concatenate([normal, magnitude * rng.choice([-1.0, 1.0], size // 2), special])


F64_ROWS = [("elu", {}), ("elu", {"alpha": 0.3}), ("selu", {}), ("celu", {"alpha": 3.0}), ("celu", {"alpha": 0.1})]


@needs_compiled
@pytest.mark.parametrize("name, params", F64_ROWS)
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_compiled_float64_bits_equal_the_jnp_kernels(name, params, order):
    """The compiled float64 kernels (double-double with a rounding test, binary128 for the rest) give
    the jnp kernels' correctly rounded bits. (A 2^-30 relative error put into their series tail
    changed 230-380 of 2*10^5 such results per row: the comparison sees such errors.)"""
    x = _sample64()
    with jax.enable_x64(True):
        compiled, reference = _evaluate(x, name, params, order, True), _evaluate(x, name, params, order, False)
    assert compiled.dtype == np.float64
    different = np.flatnonzero((_bits(compiled) != _bits(reference)) & ~(np.isnan(compiled) & np.isnan(reference)))
    assert different.size == 0, f"{name}{params} order {order}: x {x[different[:5]]}, compiled {compiled[different[:5]]}, " \
                                f"jnp {reference[different[:5]]}"


@needs_compiled
@pytest.mark.parametrize("name, params", F64_ROWS[:4])
def test_compiled_float64_is_correctly_rounded_against_mpmath_at_the_edges(name, params):
    """Special values, both sides of the branch, tiny and subnormal inputs and results, the clamp
    of x/beta and the underflow of the derivatives: each result equals mpmath's, rounded once."""
    from elukit import get
    from elukit.reference import exact_values, float_format, round_exact

    spec, fmt = get(name, **params), float_format(np.float64)
    x = np.array([-5e-324, -1e-320, -2.2250738585072014e-308, -1e-300, -1e-200, -2.0**-60, -1e-17, -1e-9, -1e-3,
                  -0.5, -1.0, -2.5, -36.7, -40.0, -59.9, -60.0, -60.5, -100.0, -700.0, -708.4, -709.8, -744.4,
                  -745.1, -745.2, -1000.0, -np.inf, 0.0, 5e-324, 1e-300, 0.5, 3.0, 1e300])
    for order, quantity in enumerate(("value", "derivative", "second_derivative")):
        with jax.enable_x64(True):
            got = _evaluate(x, name, params, order, True)
        finite = np.isfinite(x)
        wanted = np.array([round_exact(e, fmt) for e in exact_values(spec, quantity, x[finite])])
        wrong = np.flatnonzero(_bits(got[finite]) != _bits(wanted))
        assert wrong.size == 0, f"{name}{params} {quantity}: x {x[finite][wrong]}, got {got[finite][wrong]}, " \
                                f"mpmath {wanted[wrong]}"


@needs_compiled
def test_compiled_call_is_in_the_cpu_program_and_absent_from_a_gpu_one():
    x = jnp.zeros(8, jnp.float32)
    traced = jax.jit(ej.elu).trace(x)
    assert "elukit_exponential_linear" in traced.lower().as_text()
    gpu = traced.lower(lowering_platforms=("cuda",)).as_text()
    assert "elukit_exponential_linear" not in gpu
    assert "custom_call" not in gpu


@needs_compiled
def test_exported_programs_hold_the_jnp_kernels_and_the_same_bits():
    """jax.export refuses custom calls without compatibility guarantees, and a saved program must
    load without elukit: exporting lowers the jnp kernels."""
    from jax import export

    x = _sample(np.float32, 2000)
    exported = export.export(jax.jit(jax.grad(lambda t: ej.selu(t).sum())))(jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert "custom_call" not in exported.mlir_module()
    np.testing.assert_array_equal(_bits(exported.call(x)), _bits(jax.jit(jax.grad(lambda t: ej.selu(t).sum()))(x)))


@needs_compiled
def test_subnormals_survive_xla_flushing_them():
    """XLA runs CPU programs with FTZ/DAZ set: the handler clears them around the kernels."""
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    x = np.array([-tiny, -3 * tiny, -np.finfo(np.float32).tiny / 2, 1e-40], np.float32)
    got = np.asarray(jax.jit(ej.elu)(x))
    np.testing.assert_array_equal(_bits(got), _bits(x))  # ELU(x) rounds to x for tiny x
    assert np.asarray(jax.jit(lambda t: ej.derivative(t, "elu", 1))(np.float32(-100.0))) > 0  # e^-100: subnormal


def _control_elu(framework):
    return jax.nn.elu if framework == "jax.nn" else ej.elu


@pytest.mark.parametrize("kernels", [True, False] if ejf.COMPILED else [False], indirect=True)
@pytest.mark.parametrize("framework", ["jax.nn", "elukit"])
def test_every_transform(kernels, framework):
    elu = _control_elu(framework)
    x = jnp.asarray(np.linspace(-3.0, 2.0, 12, dtype=np.float32).reshape(3, 4))
    expected_grad = np.where(np.asarray(x) > 0, 1.0, np.exp(np.asarray(x, np.float64)))
    per_row = jax.jit(jax.vmap(jax.grad(lambda row: elu(row).sum())))(x)
    np.testing.assert_allclose(per_row, expected_grad, rtol=2e-6)
    jacobian = jax.jacfwd(elu)(x[0])
    np.testing.assert_allclose(jacobian, np.diag(expected_grad[0]), rtol=2e-6)
    np.testing.assert_allclose(jax.jacrev(elu)(x[0]), np.diag(expected_grad[0]), rtol=2e-6)
    hessian = jax.hessian(lambda row: elu(row).sum())(x[1])
    expected_second = np.where(np.asarray(x[1]) > 0, 0.0, np.exp(np.asarray(x[1], np.float64)))
    np.testing.assert_allclose(hessian, np.diag(expected_second), rtol=2e-6, atol=1e-7)
    nested = jax.vmap(jax.vmap(elu))(x[None])
    np.testing.assert_allclose(nested[0], jax.jit(elu)(x), rtol=2e-6)


@pytest.mark.parametrize("kernels", [True, False] if ejf.COMPILED else [False], indirect=True)
@pytest.mark.parametrize("framework", ["jax.nn", "elukit"])
def test_every_transform_in_float64(kernels, framework):
    """jit, vmap, grad, jacfwd, jacrev, hessian and nested vmap with x64 on (the compiled float64
    kernels where `kernels`), jax.nn.elu as the control."""
    elu = _control_elu(framework)
    with jax.enable_x64(True):
        x = jnp.asarray(np.linspace(-3.0, 2.0, 12).reshape(3, 4))
        assert x.dtype == jnp.float64
        expected_grad = np.where(np.asarray(x) > 0, 1.0, np.exp(np.asarray(x)))
        per_row = jax.jit(jax.vmap(jax.grad(lambda row: elu(row).sum())))(x)
        np.testing.assert_allclose(per_row, expected_grad, rtol=1e-14)
        np.testing.assert_allclose(jax.jacfwd(elu)(x[0]), np.diag(expected_grad[0]), rtol=1e-14)
        np.testing.assert_allclose(jax.jacrev(elu)(x[0]), np.diag(expected_grad[0]), rtol=1e-14)
        hessian = jax.hessian(lambda row: elu(row).sum())(x[1])
        expected_second = np.where(np.asarray(x[1]) > 0, 0.0, np.exp(np.asarray(x[1])))
        np.testing.assert_allclose(hessian, np.diag(expected_second), rtol=1e-14, atol=1e-300)
        nested = jax.vmap(jax.vmap(elu))(x[None])
        np.testing.assert_allclose(nested[0], jax.jit(elu)(x), rtol=1e-15)
        if framework == "elukit" and kernels:
            assert "elukit_exponential_linear" in jax.jit(elu).trace(x).lower().as_text()


@needs_compiled
def test_zero_size_and_scalar_inputs():
    assert jax.jit(ej.elu)(jnp.zeros((0, 3), jnp.float32)).shape == (0, 3)
    assert float(jax.jit(ej.elu)(jnp.float32(-1.0))) == float(np.float32(np.expm1(-1.0)))


def test_forcing_missing_compiled_kernels_names_the_fix(monkeypatch):
    monkeypatch.setattr(ejf, "COMPILED", False)
    with pytest.raises(RuntimeError, match="no-build-isolation"):
        ejf.use_compiled_kernels(True)
