"""elukit.keras on the JAX and PyTorch backends of Keras 3, each in its own process.

KERAS_BACKEND must be set before keras is imported, so every backend runs a script in a fresh
interpreter. The issue's example model runs twice: with elukit's activation and, as a control,
with Keras's own ``Activation('elu')``.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

# importing keras here would pick its default backend (TensorFlow) for the whole test process
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("sklearn") is None:
    pytest.skip("needs keras and scikit-learn: pip install 'elukit[keras]' scikit-learn", allow_module_level=True)

EXAMPLE = textwrap.dedent("""
    import os, sys, tempfile, warnings
    warnings.simplefilter("ignore")  # Keras warns about input_shape= in the example, kept as written
    import numpy as np
    import keras
    if keras.backend.backend() == "torch":
        import torch
        torch.set_num_threads(1)
    from keras.models import Sequential
    from keras.layers import Dense, Activation
    from sklearn.datasets import load_digits
    import elukit
    import elukit.keras
    from elukit.accuracy import sample_points

    keras.utils.set_random_seed(0)
    digits = load_digits()
    x_train = (digits.data / 16.0).astype("float32")
    y_train = keras.utils.to_categorical(digits.target, 10)
    input_dim, num_classes = x_train.shape[1], 10
    folder = tempfile.mkdtemp()

    # 1. The example, unchanged but for the activation; Keras's own 'elu' as the control.
    for elu in (elukit.keras.activations.elu, "elu"):
        model = Sequential([
            Dense(64, input_shape=(input_dim,)), Activation(elu),
            Dense(64), Activation(elu),
            Dense(num_classes), Activation('softmax'),
        ])
        model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
        model.summary()
        history = model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
        assert history.history["accuracy"][-1] > 0.8, (elu, history.history)
        path = os.path.join(folder, "example.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)  # no custom_objects
        if not isinstance(elu, str):
            assert loaded.layers[1].activation is elukit.keras.activations.elu
        np.testing.assert_array_equal(loaded.predict(x_train[:64], verbose=0), model.predict(x_train[:64], verbose=0))

    # 2. Values: elukit's are the spec's correctly rounded float32 results; Keras's within a few ulp.
    points = sample_points(np.dtype(np.float32), 20_000)
    points = points[np.abs(points) > 1.2e-38]  # XLA flushes subnormals (see tests/test_jax.py)
    tensor = keras.ops.convert_to_tensor(points)
    for name, ours, theirs in (("elu", elukit.keras.activations.elu, keras.activations.elu),
                               ("selu", elukit.keras.activations.selu, keras.activations.selu),
                               ("celu", elukit.keras.activations.celu, keras.activations.celu)):
        wanted = elukit.get(name).value(points)
        got = keras.ops.convert_to_numpy(ours(tensor))
        np.testing.assert_array_equal(got, wanted, err_msg=name)
        control = keras.ops.convert_to_numpy(theirs(tensor))
        np.testing.assert_allclose(control, wanted, rtol=1e-6, atol=1e-37, err_msg=name + " (keras control)")

    # 3. Layers and the initializer in one model; save/load round trip without custom_objects.
    L = elukit.keras
    inputs = keras.Input((input_dim,))
    h = keras.layers.Dense(32, kernel_initializer=L.initializers.Gain("elu"))(inputs)
    h = L.ELU(alpha=0.5)(h)
    h = keras.layers.Dense(32, kernel_initializer=L.initializers.Gain("celu", alpha=2.0))(h)
    h = L.CELU(alpha=2.0)(h)
    h = L.PELU(alpha=1.5, beta=0.5)(h)
    h = keras.layers.Dense(32, kernel_initializer=L.initializers.Gain("selu"))(h)
    h = L.SELU()(h)
    h = L.AlphaDropout(0.1, activation="selu", seed=1)(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    path = os.path.join(folder, "layers.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x_train[:64], verbose=0), model.predict(x_train[:64], verbose=0))
    kinds = {type(layer).__name__ for layer in loaded.layers}
    assert {"ELU", "CELU", "PELU", "SELU", "AlphaDropout"} <= kinds, kinds
    assert loaded.layers[2].get_config()["alpha"] == 0.5
    pelu = [layer for layer in loaded.layers if isinstance(layer, L.PELU)][0]
    assert pelu.log_a.shape == (32,)

    # 4. The initializer's standard deviation is elukit.theory.gain / sqrt(fan_in).
    weights = keras.ops.convert_to_numpy(L.initializers.Gain("elu", seed=3)((4000, 100)))
    wanted_std = elukit.theory.gain("elu") / np.sqrt(4000)
    assert abs(weights.std() / wanted_std - 1) < 0.01, (weights.std(), wanted_std)
    assert L.initializers.Gain("elu").get_config()["activation"] == "elu"

    # 5. AlphaDropout keeps mean 0 and variance 1 of standard normal inputs while training.
    z = keras.random.normal((200_000,), seed=4)
    dropped = keras.ops.convert_to_numpy(L.AlphaDropout(0.2, seed=5)(z, training=True))
    assert abs(dropped.mean()) < 0.01 and abs(dropped.var() - 1) < 0.02, (dropped.mean(), dropped.var())

    # 6. Gradients through the backend's autodiff come from the input: f'(-20) = e^-20 in float32
    # (jax.nn.elu, which Keras's own elu runs on the JAX backend, returns 0 there).
    if keras.backend.backend() == "jax":
        import jax
        gradient = float(jax.grad(elukit.keras.activations.elu)(np.float32(-20.0)))
    else:
        import torch
        leaf = torch.tensor(-20.0, requires_grad=True)
        elukit.keras.activations.elu(leaf).backward()
        gradient = leaf.grad.item()
    assert gradient == float(np.float32(2.0611537e-09)), gradient
    print("OK", keras.backend.backend())
""")

UNSUPPORTED = textwrap.dedent("""
    import numpy as np
    import keras
    import elukit.keras
    try:
        elukit.keras.activations.elu(np.zeros(3, dtype="float32"))
    except NotImplementedError as error:
        assert "KERAS_BACKEND=jax" in str(error), error
    else:
        raise AssertionError("no error on the numpy backend")
    weights = keras.ops.convert_to_numpy(elukit.keras.initializers.Gain("selu", seed=0)((50, 10)))
    assert weights.shape == (50, 10)
    print("OK", keras.backend.backend())
""")


def _run(script: str, backend: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result.stdout


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_example_model_layers_and_serialization(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"needs {backend}")
    out = _run(EXAMPLE, backend)
    assert "Total params: 8,970" in out  # model.summary() of the example
    assert out.strip().endswith(f"OK {backend}")


def test_unsupported_backend_is_a_clear_error_and_the_initializer_still_works():
    out = _run(UNSUPPORTED, "numpy")
    assert out.strip().endswith("OK numpy")
