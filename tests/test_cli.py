"""Every verb through the real entry point (Click's runner), plus the installed console script."""

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

import elukit
from elukit import _native
from elukit.cli.app import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_bare_elukit_prints_help():
    result = run()
    assert result.exit_code == 0 and "Commands:" in result.output


def test_every_verb_has_help_with_an_example():
    for verb in ("list", "eval", "plot", "stats", "gain", "propagate"):
        result = run(verb, "--help")
        assert result.exit_code == 0 and "elukit " + verb in result.output


def test_list_shows_every_registered_activation():
    from elukit.cli.list_cmd import plain_formula

    result = run("list")
    for name in elukit.activations():
        assert name in result.output
        assert plain_formula(elukit.get(name).formula) in result.output
        assert "\\" not in plain_formula(elukit.get(name).formula)  # no raw LaTeX on the terminal
    rows = json.loads(run("list", "--json").output)
    assert [r["formula"] for r in rows] == [elukit.get(n).formula for n in elukit.activations()]
    compiled = {r["name"] for r in rows if r["compiled_kernels"]}
    assert compiled == ({"elu", "selu", "celu", "relu", "leaky_relu"} if _native.AVAILABLE else set())
    assert [r["name"] for r in rows] == elukit.activations()


def test_eval_issue_example():
    result = run("eval", "elu", "--alpha", "1", "--", "0.11", "-2.2", "0", "50.2", "33.5", "-0.6")
    assert result.exit_code == 0
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[2:]}
    assert lines["-2.2"] == ["-0.88919684", "0.11080316"]
    assert lines["-0.6"][1] == "0.54881164"


def test_eval_json_float32_and_second_derivative():
    result = run("eval", "celu:alpha=3", "--dtype", "float32", "--second", "--json", "--", "-20")
    payload = json.loads(result.output)
    assert payload["parameters"] == {"alpha": 3.0} and payload["dtype"] == "float32"
    assert set(payload["rows"][0]) == {"x", "f(x)", "f'(x)", "f''(x)"}


@pytest.mark.parametrize("args,message", [
    (("eval", "nope", "--", "1"), "unknown activation"),
    (("eval", "elu", "--alpha", "-1", "--", "1"), "alpha"),
    (("eval", "relu", "--alpha", "2", "--", "1"), "--alpha does not apply here: relu has no parameters"),
    (("plot", "elu", "-o", "figure.gif"), "must end in"),
])
def test_library_errors_become_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_a_figure(tmp_path, suffix):
    pytest.importorskip("matplotlib")
    path = tmp_path / f"activations{suffix}"
    result = run("plot", "elu", "relu", "leaky_relu", "--alpha", "1", "-o", str(path))
    assert result.exit_code == 0 and path.stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary file left behind


def test_installed_console_script():
    executable = shutil.which("elukit")
    if executable is None:
        pytest.skip("elukit is not installed as a console script")
    out = subprocess.run([executable, "eval", "selu", "--", "-1"], capture_output=True, text=True, check=True)
    assert "selu" in out.stdout


def test_accuracy_module_runs_as_a_program():
    pytest.importorskip("mpmath")
    from elukit.accuracy import main as accuracy_main

    assert accuracy_main(["--points", "300", "--activation", "elu:alpha=2", "--dtype", "float32", "--workers", "1"]) == 0


def test_stats_table_and_json():
    result = run("stats", "elu", "relu", "selu", "--mean", "0", "--std", "1")
    assert result.exit_code == 0 and "P[f'=0]" in result.output
    rows = json.loads(run("stats", "relu", "--json").output)["rows"]
    assert rows[0]["zero_gradient_probability"] == 0.5


def test_gain_reports_pytorch_value_where_it_has_one():
    rows = json.loads(run("gain", "elu", "selu", "--json").output)
    assert abs(rows[0]["gain"] - 1.2452) < 1e-4
    assert abs(rows[1]["chi"] - 1.0716) < 1e-4 or rows[1]["gain"] == 1.0
    text = run("gain", "elu", "--alpha", "1").output
    assert "1.2452" in text and "calculate_gain" in text


def test_propagate_writes_a_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "propagation.png"
    result = run("propagate", "elu", "--depth", "20", "-o", str(path))
    assert result.exit_code == 0 and path.stat().st_size > 1000
    assert "PyTorch nn.Linear default" in result.output


def test_audit_compares_implementations():
    pytest.importorskip("mpmath")
    pytest.importorskip("torch")
    rows = json.loads(run("audit", "--points", "300", "--dtype", "float32", "--json").stdout)
    implementations = {r["implementation"] for r in rows}
    assert {"elukit (NumPy)", "elukit.torch", "elukit.torch (exact=True)", "torch (native)", "torch (native, in-place)",
            "textbook NumPy"} <= implementations
    ours = [r for r in rows if r["implementation"].startswith("elukit") and r["quantity"] != "second_derivative"]
    assert all(r["max_ulp"] < 1 for r in ours)
    collapsed = [r for r in rows if r["implementation"] == "torch (native, in-place)" and r["quantity"] == "derivative"]
    assert all(r["max_ulp"] > 1e6 for r in collapsed)  # the gradient-from-output collapse, measured
