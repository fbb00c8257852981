"""What a new user meets (issue 22), each through the real entry point: bad `elukit compare` flags
refused before torch is imported, a SELU that is no longer self-normalising said so, ReLU's marginal
fixed point at sigma_b^2 = 0, 2-D `--data` samples, and `import elukit.keras` without TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from elukit.cli.app import main


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# -- bad compare flags: one line, before any heavy import ----------------------------------------------

BAD_COMPARE_FLAGS = [
    (["--epochs", "0"], "'--epochs': 0 is not in the range x>=1"),
    (["--seeds", "0"], "'--seeds': 0 is not in the range x>=1"),
    (["--width", "-3"], "'--width': -3 is not in the range x>=1"),
    (["--depth", "0"], "'--depth': 0 is not in the range x>=1"),
    (["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
    (["--lr", "0"], "'--lr': 0.0 is not finite and > 0"),
    (["--lr", "nan"], "'--lr': nan is not finite and > 0"),
    (["--lr", "inf"], "'--lr': inf is not finite and > 0"),
    (["--activations", "relu,nope"], "unknown activation 'nope'"),
    (["--activations", "elu:alpha=-1"], "alpha"),
    (["--activations", "relu,elu,relu"], "--activations lists an activation twice"),
    (["--activations", ","], "--activations ',' names no activation"),
    (["--dataset", "nope"], "--dataset: unknown dataset 'nope'"),
    (["--dataset", "wine", "--data", "x.npz"], "either --dataset or --data"),
    (["--data", "missing.npz"], "--data 'missing.npz': no such file"),
    (["--model", "cnn", "--batch-norm"], "--batch-norm is implemented for --model mlp only"),
    (["--resume", "--out", "empty"], "--resume: no results database"),
    (["--workers", "2"], "--workers needs --executor ray"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "--ray-address '127.0.0.1:1': cannot connect"),
    (["--out", "a-file/sub"], "--out 'a-file/sub'"),
]

HEAVY = ("torch", "matplotlib", "sklearn", "ray", "mnist1d", "jax")

_PROBE = textwrap.dedent("""
    import json, sys
    from click.testing import CliRunner
    from elukit.cli.app import main
    open("a-file", "w").close()
    results = []
    for args in json.loads(sys.argv[1]):
        result = CliRunner().invoke(main, ["compare", "--quiet", *args])
        results.append([result.exit_code, result.output])
    print(json.dumps({"results": results, "imported": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
""")


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """Every bad flag through `elukit compare` in one fresh interpreter, and the heavy modules it
    imported along the way (none may be)."""
    folder = tmp_path_factory.mktemp("bad-flags")
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([a for a, _ in BAD_COMPARE_FLAGS]), json.dumps(HEAVY)],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), folder


def test_bad_compare_flags_import_nothing_heavy(bad_flag_runs):
    runs, folder = bad_flag_runs
    assert runs["imported"] == []  # torch alone takes 2.5-15 s to import
    assert sorted(p.name for p in folder.iterdir()) == ["a-file"]  # nothing written


@pytest.mark.parametrize("index", range(len(BAD_COMPARE_FLAGS)),
                         ids=[" ".join(args) for args, _ in BAD_COMPARE_FLAGS])
def test_a_bad_compare_flag_is_one_line_before_any_work(bad_flag_runs, index):
    exit_code, output = bad_flag_runs[0]["results"][index]
    message = BAD_COMPARE_FLAGS[index][1]
    assert exit_code == 2, output
    errors = [line for line in output.splitlines() if "rror" in line]
    assert len(errors) == 1 and message in errors[0], output
    assert "Traceback" not in output


# -- SELU with other parameters ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["eval", "selu", "--alpha", "2", "--", "1"],
                                  ["eval", "selu:alpha=2", "--", "1"],
                                  ["stats", "selu", "--scale", "1"],
                                  ["compare", "--activations", "selu:alpha=2,relu", "--workers", "2"]])
def test_a_selu_that_is_not_self_normalising_says_so(args):
    result = cli(*args)
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, result.output
    assert "is not self-normalising" in warnings[0] and "self_normalizing_constants" in warnings[0]


@pytest.mark.parametrize("args", [["eval", "selu", "--", "1"],
                                  ["eval", "selu", "--alpha", "1.6732632423543772", "--scale", "1.0507009873554805",
                                   "--", "1"],
                                  ["eval", "elu", "--alpha", "2", "--", "1"],
                                  ["eval", "celu", "--alpha", "3", "--", "1"]])
def test_self_normalising_or_other_activations_do_not_warn(args):
    result = cli(*args)
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output


def test_the_selu_warning_gives_the_measured_map():
    from elukit import get, theory

    moments = theory.moments(get("selu", alpha=2.0))
    result = cli("eval", "selu", "--alpha", "2", "--", "1")
    assert f"mean {float(moments.mean):+.4g}, variance {float(moments.variance):.4g}" in result.stderr


# -- chaos at sigma_b^2 = 0 for piecewise-linear activations --------------------------------------------

@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_chaos_says_any_q_star_where_every_q_is_a_fixed_point(name):
    result = cli("chaos", name, "--bias-variance", "0")
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output and "repels" not in result.output
    assert "q* = any (every q is a marginal fixed point" in result.output
    assert "q* = any (marginal)" in result.output


def test_chaos_keeps_a_real_q_star():
    result = cli("chaos", "elu", "tanh", "--bias-variance", "0.05")
    assert result.exit_code == 0 and "any" not in result.output, result.output


# -- 2-D samples -----------------------------------------------------------------------------------------

@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x_train=rng.normal(size=(40, 4, 4)), y_train=np.arange(40) % 2,
             x_test=rng.normal(size=(8, 4, 4)), y_test=np.arange(8) % 2)
    return path


def test_2d_samples_are_refused_by_the_cnn_before_anything_is_stored(images, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    result = cli("compare", "--data", images, "--model", "cnn", "--quiet", "--out", out)
    assert result.exit_code == 2, result.output
    assert "samples of shape (4, 4)" in result.output and "--model mlp" in result.output
    assert not (out / "results.db").exists()


def test_2d_samples_are_flattened_by_the_mlp_and_it_says_so(images, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    result = cli("compare", "--data", images, "--activations", "relu", "--seeds", "1", "--epochs", "1", "--width", "4",
                 "--threads", "1", "--quiet", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "samples of shape (4, 4) are flattened to 16 features for the MLP" in result.stderr


# -- import elukit.keras where Keras's default backend is missing ---------------------------------------------

def test_keras_without_its_default_backend_names_keras_backend(tmp_path):
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)  # no keras.json naming another backend
    code = ("import sys; sys.modules['tensorflow'] = None\n"  # as where TensorFlow is not installed
            "import elukit.keras")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "Keras is installed" in last and "KERAS_BACKEND=jax" in last and "KERAS_BACKEND=torch" in last, last
    assert "needs Keras 3" not in done.stderr


# -- progress of the long accuracy runs -----------------------------------------------------------------------

def test_accuracy_program_reports_progress_on_stderr():
    pytest.importorskip("mpmath")
    args = ["-m", "elukit.accuracy", "--points", "100", "--activation", "elu", "--dtype", "float32", "float64",
            "--quantity", "value", "derivative", "--workers", "2", "--json"]
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 4  # stdout stays the table alone
    lines = [line for line in done.stderr.splitlines() if line.startswith("python -m elukit.accuracy: [")]
    assert [line.split("]")[0].split("[")[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("elapsed" in line and "left" in line for line in lines)
    quiet = subprocess.run([sys.executable, *args, "--quiet"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "[1/4]" not in quiet.stderr


def test_audit_reports_progress_on_stderr():
    pytest.importorskip("mpmath")
    result = cli("audit", "--points", "100", "--dtype", "float32", "--activation", "elu", "--activation", "relu", "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)
    assert "elukit audit: [1/2] elu float32" in result.stderr and "elukit audit: [2/2] relu float32" in result.stderr
    quiet = cli("audit", "--points", "100", "--dtype", "float32", "--activation", "elu", "--quiet")
    assert quiet.exit_code == 0 and "[1/1]" not in quiet.stderr
