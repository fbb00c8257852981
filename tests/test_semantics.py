"""dtype policy, special values (generated from each spec), parameter checks and error messages."""

import math

import numpy as np
import pytest

import elukit

NAMES = elukit.activations()
QUANTITIES = ("value", "derivative", "second_derivative")


def _dtypes(bfloat16=None):
    return [np.float16, np.float32, np.float64] + ([bfloat16] if bfloat16 is not None else [])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype_name", ["float16", "float32", "float64", "bfloat16"])
def test_special_values_from_spec(name, dtype_name):
    from elukit.accuracy import dtype_from_name

    if dtype_name == "bfloat16":
        pytest.importorskip("ml_dtypes")
    dtype = dtype_from_name(dtype_name)
    spec = elukit.get(name)
    for x, *expressions in spec.special_values:
        for quantity, expression in zip(QUANTITIES, expressions):
            got = getattr(spec, quantity)(np.array([x]).astype(dtype))
            assert got.dtype == dtype
            got = float(got.astype(np.float64)[0])
            wanted = float(np.array([spec.evaluate_expression(expression)]).astype(dtype).astype(np.float64)[0])
            context = f"{name}.{quantity}({x!r}) in {dtype_name}: got {got!r}, wanted {expression} = {wanted!r}"
            if math.isnan(wanted):
                assert math.isnan(got), context
            elif wanted == 0 or math.isinf(wanted):
                assert got == wanted, context
                if quantity == "value":
                    assert math.copysign(1, got) == math.copysign(1, wanted), context + " (sign of zero)"
            else:
                assert abs(got - wanted) <= abs(wanted) * float(np.finfo(np.float32 if dtype_name != "float64" else np.float64).eps) * 2 ** 13, context
                if dtype_name == "float64":
                    assert abs(got - wanted) <= abs(wanted) * 2.0**-52, context


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.longdouble])
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_dtype_in_is_dtype_out(name, dtype, quantity):
    x = np.linspace(-3, 3, 7).astype(dtype).reshape(7, 1)
    result = getattr(elukit.get(name), quantity)(x)
    assert result.dtype == dtype and result.shape == (7, 1)


def test_bfloat16_in_is_bfloat16_out(bfloat16):
    x = np.array([-1.0, 2.0], dtype=bfloat16)
    assert elukit.elu(x).dtype == bfloat16


@pytest.mark.parametrize("x", [3, np.int8(-2), np.array([1, -2]), [True, False], np.uint16(7)])
def test_ints_and_bools_become_float64(x):
    assert np.asarray(elukit.elu(x)).dtype == np.float64


def test_python_scalars_give_numpy_scalars_and_arrays_stay_arrays():
    assert isinstance(elukit.elu(-1.0), np.float64)
    assert isinstance(elukit.elu(np.array(-1.0)), np.ndarray)
    assert isinstance(elukit.elu([-1.0, 1.0]), np.ndarray)


def test_kink_convention_derivative_at_zero_is_left_branch():
    assert elukit.elu_derivative(0.0, alpha=0.5) == 0.5
    assert elukit.elu_derivative(-0.0, alpha=0.5) == 0.5
    assert elukit.get("selu").derivative(0.0) == np.float64(elukit.SELU_SCALE) * elukit.SELU_ALPHA
    assert elukit.get("celu", alpha=3.0).second_derivative(0.0) == 1 / 3.0
    assert elukit.get("relu").derivative(0.0) == 0.0
    assert elukit.get("leaky_relu", slope=0.2).derivative(0.0) == 0.2


def test_sign_of_zero_kept_for_the_elu_family():
    for name in ("elu", "selu", "celu"):
        assert math.copysign(1, elukit.get(name)(-0.0)) == -1
        assert math.copysign(1, elukit.get(name)(0.0)) == 1


def test_no_warning_on_every_float16_pattern_and_extremes():
    # filterwarnings=error turns any RuntimeWarning into a failure
    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    extremes = np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max, 5e-324, -5e-324, np.inf, -np.inf, np.nan])
    with np.errstate(over="ignore"):
        extremes32 = extremes.astype(np.float32)
    for name in NAMES:
        for params in ({}, *({p.name: 1e300} for p in elukit.get(name).params)):
            spec = elukit.get(name, **params)
            for quantity in QUANTITIES:
                getattr(spec, quantity)(patterns)
                getattr(spec, quantity)(extremes)
                getattr(spec, quantity)(extremes32)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("name,param", [("elu", "alpha"), ("celu", "alpha"), ("selu", "alpha"),
                                        ("selu", "scale"), ("leaky_relu", "slope")])
def test_invalid_parameter_value_error_names_it(name, param, bad):
    with pytest.raises(ValueError, match=rf"{param}.*{bad!r}".replace("(", r"\(")):
        elukit.get(name, **{param: bad})


@pytest.mark.parametrize("bad", ["1.0", None, 1j, [1.0], True])
def test_non_numeric_parameter_type_error(bad):
    with pytest.raises(TypeError, match="alpha"):
        elukit.get("elu", alpha=bad)


def test_functional_shortcuts_validate_alpha():
    with pytest.raises(ValueError, match="alpha"):
        elukit.elu(1.0, alpha=-2)
    with pytest.raises(ValueError, match="alpha"):
        elukit.celu(1.0, alpha=math.nan)


@pytest.mark.parametrize("bad", ["1.0", b"1", 1 + 2j, np.array([1 + 1j]), np.array(["a"]), np.array([object()]), {"a": 1}])
def test_bad_input_type_error(bad):
    with pytest.raises(TypeError):
        elukit.elu(bad)


def test_unknown_activation_lists_known_names():
    with pytest.raises(ValueError, match="known activations: elu, selu, celu"):
        elukit.get("swishy")


def test_unknown_parameter_names_the_valid_ones():
    with pytest.raises(ValueError, match="has no parameter 'beta'.*alpha"):
        elukit.get("elu", beta=1.0)


def test_parse_cli_syntax():
    spec = elukit.parse("celu:alpha=0.5")
    assert spec.name == "celu" and spec.parameters == {"alpha": 0.5}
    with pytest.raises(ValueError, match="must be a number"):
        elukit.parse("elu:alpha=x")


def test_functional_shortcuts_agree_with_specs():
    x = np.linspace(-5, 5, 101)
    assert np.array_equal(elukit.elu(x, alpha=0.7), elukit.get("elu", alpha=0.7)(x))
    assert np.array_equal(elukit.elu_derivative(x, 0.7), elukit.get("elu", alpha=0.7).derivative(x))
    assert np.array_equal(elukit.selu(x), elukit.get("selu")(x))
    assert np.array_equal(elukit.celu(x, 2.0), elukit.get("celu", alpha=2.0)(x))


def test_registry_lists_every_activation_and_refuses_duplicates():
    assert elukit.activations() == ["elu", "selu", "celu", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "softplus"]
    with pytest.raises(ValueError, match="already registered"):
        elukit.register(elukit.get("elu"))


def test_selu_constants_are_the_correctly_rounded_published_values():
    assert elukit.SELU_ALPHA == float("1.6732632423543772848170429916717")
    assert elukit.SELU_SCALE == float("1.0507009873554804934193349852946")
