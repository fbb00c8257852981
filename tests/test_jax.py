"""elukit.jax: accuracy against mpmath (no x64 needed), special values, transforms, bad input."""

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

import elukit  # noqa: E402
import elukit.jax as ej  # noqa: E402
from elukit.accuracy import all_finite_values, dtype_from_name, sample_points  # noqa: E402
from elukit.reference import QUANTITIES, exact_values, float_format, round_exact, ulp_error  # noqa: E402

ROWS = [("elu", {}), ("elu", {"alpha": 3.0}), ("selu", {}), ("celu", {}), ("celu", {"alpha": 0.1}),
        ("leaky_relu", {}), ("relu", {})]
ELU_FAMILY = ["elu", "selu", "celu"]


@pytest.fixture
def x64_off():
    with jax.enable_x64(False):
        yield


@pytest.fixture
def x64_on():
    with jax.enable_x64(True):
        yield


def _subnormal(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Nonzero magnitudes below the normal range of the dtype XLA computes in (it flushes them)."""
    tiny = np.finfo(np.float64).tiny if dtype == np.float64 else np.finfo(np.float32).tiny
    magnitude = np.abs(values.astype(np.float64))
    return (magnitude != 0) & (magnitude < tiny)


def _check_against_mpmath(spec, quantity, points, got, wanted_numpy, min_correctly_rounded=1.0):
    """Every result faithful (< 1 ulp) against mpmath, with the given share correctly rounded.

    The NumPy backend (correctly rounded in 16/32 bits, faithful in float64) is the fast first
    check; every disagreement is settled by mpmath. Subnormal inputs and results included.
    """
    dtype = points.dtype
    fmt = float_format(dtype)
    got = np.asarray(got).astype(np.float64)
    wanted_numpy = np.asarray(wanted_numpy).astype(np.float64)
    same = ((got == wanted_numpy) & (np.signbit(got) == np.signbit(wanted_numpy))) | (np.isnan(got) & np.isnan(wanted_numpy))
    suspects = np.flatnonzero(~same)
    as_float = points[suspects].astype(np.float64)
    exact = exact_values(spec, quantity, as_float)
    errors = np.array([ulp_error(float(g), e, fmt) for g, e in zip(got[suspects], exact)])
    rounded = np.array([round_exact(e, fmt) for e in exact])
    wrong = suspects[got[suspects] != rounded]
    worst = sorted(zip(errors, as_float, got[suspects], rounded), reverse=True)[:5]
    context = f"{spec.label()} {quantity} {dtype}: worst (ulps, x, got, wanted) {worst}"
    assert (errors < 1).all(), context
    correctly_rounded = 1 - len(wrong) / len(points)
    assert correctly_rounded >= min_correctly_rounded, f"{correctly_rounded:.6f} correctly rounded; " + context
    return correctly_rounded


@pytest.mark.parametrize("name,params", ROWS, ids=[f"{n}{p}" for n, p in ROWS])
def test_float32_without_x64_is_faithful_and_correctly_rounded(x64_off, name, params):
    spec = elukit.get(name, **params)
    points = sample_points(np.dtype(np.float32), 100_000)
    for order, quantity in enumerate(QUANTITIES[:2]):
        got = jax.jit(lambda x, order=order: ej.derivative(x, spec, order))(points)
        assert got.dtype == jnp.float32
        _check_against_mpmath(spec, quantity, points, got, getattr(spec, quantity)(points), 0.999)


@pytest.mark.parametrize("name", ["elu", "celu"])
@pytest.mark.parametrize("alpha", [1e-3, 0.3, 10.0, 1e6])
def test_float32_correctly_rounded_at_other_parameters(x64_off, name, alpha):
    """Regression: ELU(alpha=1e-3) of -2.96774e-38 was 1 subnormal ulp off (the tail of the
    product alpha*x underflowed in the scaled domain)."""
    spec = elukit.get(name, alpha=alpha)
    points = sample_points(np.dtype(np.float32), 20_000, seed=1)
    for order, quantity in enumerate(QUANTITIES[:2]):
        got = ej.derivative(points, spec, order)
        _check_against_mpmath(spec, quantity, points, got, getattr(spec, quantity)(points), 1.0)


@pytest.mark.parametrize("name,params", ROWS, ids=[f"{n}{p}" for n, p in ROWS])
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_16_bit_correctly_rounded_on_every_input(x64_off, name, params, dtype_name):
    dtype = dtype_from_name(dtype_name)
    spec = elukit.get(name, **params)
    points = all_finite_values(dtype)
    for order, quantity in enumerate(QUANTITIES):
        got = jax.jit(lambda x, order=order: ej.derivative(x, spec, order))(points)
        assert got.dtype == points.dtype
        _check_against_mpmath(spec, quantity, points, got, getattr(spec, quantity)(points), 1.0)


@pytest.mark.parametrize("name,params", ROWS[:5], ids=[f"{n}{p}" for n, p in ROWS[:5]])
def test_float64_with_x64_is_faithful(x64_on, name, params):
    spec = elukit.get(name, **params)
    points = sample_points(np.dtype(np.float64), 20_000)
    for order, quantity in enumerate(QUANTITIES):
        got = ej.derivative(points, spec, order)
        assert got.dtype == jnp.float64
        _check_against_mpmath(spec, quantity, points, got, getattr(spec, quantity)(points, compiled=False), 0.999)


def test_float32_results_do_not_depend_on_x64():
    points = sample_points(np.dtype(np.float32), 5_000)
    with jax.enable_x64(False):
        without = [np.asarray(ej.derivative(points, "celu", order, alpha=0.1)) for order in range(3)]
    with jax.enable_x64(True):
        with_x64 = [np.asarray(ej.derivative(jnp.asarray(points, jnp.float32), "celu", order, alpha=0.1))
                    for order in range(3)]
    for a, b in zip(without, with_x64):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_subnormal_inputs_and_results_although_xla_flushes_them(x64_off, dtype_name):
    """XLA reads subnormal float32 inputs as 0 and flushes subnormal results to 0 (jax.nn.elu
    returns 0 for ELU(-1e-40)); elukit.jax builds them from their bits and rounds them correctly."""
    dtype = dtype_from_name(dtype_name)
    points = (sample_points(np.dtype(np.float32), 100_000) if dtype_name == "float32" else all_finite_values(dtype))
    for name in ELU_FAMILY:
        spec = elukit.get(name)
        for order, quantity in enumerate(QUANTITIES[:2]):
            wanted = np.asarray(getattr(spec, quantity)(points)).astype(np.float64)
            tiny = _subnormal(points, dtype) | _subnormal(wanted, dtype)
            assert tiny.sum() > 50
            got = ej.derivative(points[tiny], spec, order)
            _check_against_mpmath(spec, quantity, points[tiny], got, wanted[tiny], 1.0)
    assert float(jax.nn.elu(jnp.float32(-1e-40))) == 0.0  # the flush, in jax.nn
    assert float(ej.elu(jnp.float32(-1e-40))) == float(np.float32(-1e-40))


# --- the defects of jax.nn, as regression tests ----------------------------------------------------

def test_gradient_does_not_collapse_at_minus_20_where_jax_nn_elu_returns_0(x64_off):
    x = jnp.array([-20.0, -40.0, -87.0], dtype=jnp.float32)
    gradient = jax.vmap(jax.grad(ej.elu))(x)
    assert gradient[0] == np.float32(2.0611537e-09)
    assert (np.asarray(gradient) > 0).all()  # e^-87 = 1.6e-38 is still a normal float32
    assert float(jax.grad(jax.nn.elu)(x[0])) == 0.0  # the defect fixed here (output-based gradient)


def test_float64_gradient_at_minus_40(x64_on):
    assert float(jax.grad(ej.elu)(jnp.float64(-40.0))) == 4.248354255291589e-18


def test_celu_of_negative_zero_is_negative_zero(x64_off):
    for function in (ej.celu, ej.elu, ej.selu):
        assert np.signbit(np.asarray(function(jnp.float32(-0.0))))


# --- special values and the kink, generated from the specs ----------------------------------------

@pytest.mark.parametrize("name", ["elu", "selu", "celu", "relu", "leaky_relu"])
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
def test_special_values_from_spec(x64_on, name, dtype_name):
    dtype = dtype_from_name(dtype_name)
    spec = elukit.get(name)
    points = np.array([row[0] for row in spec.special_values]).astype(dtype)
    for order, (quantity, column) in enumerate(zip(QUANTITIES, range(1, 4))):
        got = np.asarray(ej.derivative(points, spec, order)).astype(np.float64)
        for x, row, value in zip(points.astype(np.float64), spec.special_values, got):
            wanted = float(np.asarray(getattr(spec, quantity)(np.array([x]).astype(dtype))).astype(np.float64)[0])
            expected = spec.evaluate_expression(row[column])
            context = f"{name}.{quantity}({x!r}) {dtype_name}: got {value!r}, wanted {row[column]} = {wanted!r}"
            if math.isnan(expected):
                assert math.isnan(value), context
            else:
                assert value == wanted and math.copysign(1, value) == math.copysign(1, wanted), context


@pytest.mark.parametrize("name", ELU_FAMILY)
def test_kink_takes_the_left_branch_for_every_order(x64_on, name):
    scale, alpha, divisor = elukit.get(name).exponential_linear_form()
    for zero in (0.0, -0.0):
        x = jnp.float64(zero)
        first = jax.grad(lambda t: ej.activation(t, name))(x)
        second = jax.grad(jax.grad(lambda t: ej.activation(t, name)))(x)
        third = jax.grad(jax.grad(jax.grad(lambda t: ej.activation(t, name))))(x)
        assert float(first) == scale * alpha / divisor
        assert float(second) == pytest.approx(scale * alpha / divisor**2, rel=1e-15)
        assert float(third) == pytest.approx(scale * alpha / divisor**3, rel=1e-15)


# --- transforms, against jax.nn as a control --------------------------------------------------------

@pytest.fixture(params=["elukit", "jax"])
def elu(request):
    return ej.elu if request.param == "elukit" else jax.nn.elu


X = np.linspace(-6.0, 3.0, 24) + 0.01  # away from the kink and from jax.nn's collapse
RTOL = 1e-12  # jax.nn's output-based gradient is 1.4e-14 off here; exactness is tested above


def _expected(x, order):
    x = np.asarray(x, dtype=np.float64)
    if order == 0:
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
    return np.where(x > 0, 1.0 if order == 1 else 0.0, np.exp(np.minimum(x, 0)))


def test_jit_and_vmap(x64_on, elu):
    x = jnp.asarray(X.reshape(4, 6))
    np.testing.assert_allclose(jax.jit(elu)(x), _expected(x, 0), rtol=RTOL)
    np.testing.assert_allclose(jax.vmap(jax.vmap(elu))(x), _expected(x, 0), rtol=RTOL)
    per_sample = jax.vmap(jax.grad(lambda row: elu(row).sum()))(x)
    np.testing.assert_allclose(per_sample, _expected(x, 1), rtol=RTOL)


def test_jacobians_and_hessian(x64_on, elu):
    x = jnp.asarray(X)
    for jacobian in (jax.jacfwd, jax.jacrev):
        np.testing.assert_allclose(jacobian(elu)(x), np.diag(_expected(x, 1)), rtol=RTOL, atol=0)
    hessian = jax.hessian(lambda t: elu(t).sum())(x)
    np.testing.assert_allclose(hessian, np.diag(_expected(x, 2)), rtol=RTOL, atol=0)


def test_higher_orders_under_jit(x64_on, elu):
    third = jax.jit(jax.vmap(jax.grad(jax.grad(jax.grad(elu)))))
    np.testing.assert_allclose(third(jnp.asarray(X)), _expected(X, 3), rtol=RTOL, atol=0)


def test_pmap(x64_on, elu):
    x = jnp.asarray(np.tile(X, (jax.local_device_count(), 1)))
    out = jax.pmap(jax.grad(lambda row: elu(row).sum()))(x)
    np.testing.assert_allclose(out, _expected(x, 1), rtol=RTOL)


def test_float32_values_agree_with_jax_nn_to_its_error(x64_off):
    x = jnp.asarray(sample_points(np.dtype(np.float32), 2_000)).clip(-80, 80)
    ours, theirs = np.asarray(ej.elu(x)), np.asarray(jax.nn.elu(x))
    np.testing.assert_allclose(ours, theirs, rtol=6e-7, atol=1e-37)


def test_higher_derivatives_use_the_input_not_the_output(x64_off):
    """f'' of ELU at -30 is e^-30 (9.4e-14), not 0 as a derivative of f(x) + alpha would be."""
    value = jax.grad(jax.grad(ej.elu))(jnp.float32(-30.0))
    assert float(value) == float(np.float32(math.exp(-30.0)))


# --- PELU ------------------------------------------------------------------------------------------

def test_pelu_matches_elu_and_has_gradients_for_its_parameters(x64_on):
    x = jnp.asarray(X.reshape(4, 6))
    np.testing.assert_allclose(ej.pelu(x, jnp.ones(6), jnp.ones(6)), _expected(x, 0), rtol=RTOL)
    a, b = jnp.full(6, 2.0), jnp.full(6, 0.5)
    grads = jax.grad(lambda a, b: ej.pelu(x, a, b).sum(), argnums=(0, 1))(a, b)
    eps = 1e-6
    numeric = (ej.pelu(x, a + eps, b).sum() - ej.pelu(x, a - eps, b).sum()) / (2 * eps)
    assert float(grads[0].sum()) == pytest.approx(float(numeric), rel=1e-7)


# --- bad input -------------------------------------------------------------------------------------

def test_integer_input_is_a_type_error():
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        ej.elu(jnp.arange(3))


def test_invalid_parameter_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'alpha'"):
        ej.elu(jnp.ones(3), alpha=-1.0)
    with pytest.raises(ValueError, match="'alpha'"):
        ej.celu(jnp.ones(3), alpha=0.0)


def test_family_without_kernels_is_a_value_error_naming_the_alternative():
    with pytest.raises(ValueError, match="jax.nn"):
        ej.activation(jnp.ones(3), "gelu")


def test_order_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match="order"):
        ej.derivative(jnp.ones(3), "elu", -1)


def test_audit_has_elukit_jax_rows_next_to_jax_nn():
    pytest.importorskip("mpmath")
    from elukit.accuracy import audit

    rows = audit(rows=(("celu", {"alpha": 3.0}),), dtypes=("float32",), count=300)
    ours = [r for r in rows if r["implementation"] == "elukit.jax"]
    assert {r["quantity"] for r in ours} == set(QUANTITIES)
    assert all(r["max_ulp"] < 1 and r["correctly_rounded"] == 1.0 for r in ours), ours
    assert any(r["implementation"] == "jax.nn" for r in rows)


# --- Flax --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["elukit", "jax"])
def test_flax_nnx_model_trains_on_digits(x64_off, name):
    """The docs' Flax example, with jax.nn.elu as the control."""
    nnx = pytest.importorskip("flax.nnx")
    optax = pytest.importorskip("optax")
    datasets = pytest.importorskip("sklearn.datasets")
    elu = ej.elu if name == "elukit" else jax.nn.elu

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(64, 64, rngs=rngs)
            self.out = nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            return self.out(elu(self.hidden(x)))

    digits = datasets.load_digits()
    x, y = jnp.asarray(digits.data / 16.0, jnp.float32), jnp.asarray(digits.target)
    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    for _ in range(40):
        train_step(model, optimizer, x, y)
    assert float((model(x).argmax(-1) == y).mean()) > 0.95


@pytest.mark.parametrize("module,extra", [("jax", "elukit[jax]"), ("keras", "elukit[keras]")])
def test_missing_framework_names_the_extra(module, extra):
    import subprocess
    import sys

    script = f"import sys; sys.modules[{module!r}] = None\ntry:\n    import elukit.{module}\nexcept ImportError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120).stdout
    assert f"pip install '{extra}'" in out, out
