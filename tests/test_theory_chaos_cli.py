"""The edge of chaos outside elukit.theory: `elukit chaos`, `elukit.torch.init.edge_of_chaos_` and
`elukit compare --init eoc`, each through its real entry point."""

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

import elukit
from elukit import theory
from elukit.cli.app import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_chaos_prints_the_edge_of_chaos_point_and_depth_scales():
    result = run("chaos", "elu", "--bias-variance", "0.05")
    assert result.exit_code == 0, result.output
    eoc = theory.edge_of_chaos("elu", 0.05)
    scales = theory.depth_scales("elu", float(eoc.weight_variance), 0.05)
    assert f"sigma_w^2 = {float(eoc.weight_variance):.6g}, q* = {float(eoc.q_star):.6g}" in result.output
    assert f"xi_q = {scales.xi_q:.4g}" in result.output and "xi_c = inf" in result.output
    assert "critical" in result.output and "chi_1 = 1" in result.output


def test_chaos_help_has_examples():
    result = run("chaos", "--help")
    assert result.exit_code == 0 and "elukit chaos elu tanh relu -o phase.png" in result.output


def test_chaos_json_is_what_the_library_returns():
    result = run("chaos", "tanh", "relu", "--bias-variance", "0.05", "--weight-variance", "2.5", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    scales = theory.depth_scales("tanh", 2.5, 0.05)
    assert payload["tanh"]["c_star"] == scales.c_star and payload["tanh"]["phase"] == "chaotic"
    assert payload["relu"]["edge_of_chaos_weight_variance"] == "nan" and "single point" in payload["relu"]["reason"]


def test_chaos_draws_the_phase_diagram(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "phase.png"
    result = run("chaos", "elu", "tanh", "relu", "-o", str(path), "--grid", "4")
    assert result.exit_code == 0, result.output
    assert path.stat().st_size > 10_000 and f"wrote {path}" in result.output


@pytest.mark.parametrize("args,message", [
    (("chaos", "nope"), "unknown activation"),
    (("chaos", "elu", "--bias-variance", "-1"), "--bias-variance"),
    (("chaos", "elu", "--weight-variance", "0"), "--weight-variance"),
    (("chaos", "elu", "-o", "phase.txt"), "must end in"),
    (("chaos", "relu", "--alpha", "2"), "--alpha does not apply"),
])
def test_chaos_bad_input_is_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_chaos_through_the_installed_script():
    executable = shutil.which("elukit")
    if executable is None:
        pytest.skip("console script not installed")
    out = subprocess.run([executable, "chaos", "elu", "--bias-variance", "0.05"], capture_output=True, text=True,
                         check=True)
    assert "edge of chaos at sigma_b^2 = 0.05" in out.stdout


torch = pytest.importorskip("torch")


@pytest.fixture(params=["elukit", "torch"])
def eoc_init(request):
    """edge_of_chaos_, or (control) torch's own normal_ with the same variances."""
    def initialize(model, bias_variance, weight_variance, generator):
        if request.param == "elukit":
            from elukit.torch.init import edge_of_chaos_

            return edge_of_chaos_(model, bias_variance=bias_variance, generator=generator)
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, 0.0, math.sqrt(weight_variance / layer.in_features),
                                      generator=generator)
                torch.nn.init.normal_(layer.bias, 0.0, math.sqrt(bias_variance), generator=generator)
        return None
    return initialize


def test_edge_of_chaos_init_propagates_as_the_mean_field_predicts(eoc_init):
    """A width-1000, depth-12 ELU MLP initialised on the EOC: the per-layer pre-activation
    variance follows elukit.theory.propagate (towards q*) within finite-width noise."""
    torch.set_num_threads(1)
    bias_variance, width, depth = 0.05, 1000, 12
    weight_variance = float(theory.edge_of_chaos("elu", bias_variance).weight_variance)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width, dtype=torch.float64), torch.nn.ELU()]
    model = torch.nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(7)
    done = eoc_init(model, bias_variance, weight_variance, generator)
    if done is not None:
        assert len(done) == depth and all(abs(w - weight_variance) < 1e-15 and b == bias_variance
                                          for _, label, w, b in done)
    predicted = theory.propagate("elu", depth, weight_variance, bias_variance).preactivation_variance
    h = torch.randn(64, width, dtype=torch.float64, generator=generator)
    measured = []
    with torch.no_grad():
        for layer in model:
            h = layer(h)
            if isinstance(layer, torch.nn.Linear):
                measured.append(float(h.pow(2).mean()))
    ratio = np.array(measured) / predicted
    assert np.all(np.abs(ratio - 1) < 0.1), ratio


def test_edge_of_chaos_init_refuses_where_there_is_none():
    from elukit.torch.init import edge_of_chaos_

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    with pytest.raises(ValueError, match="relu has no edge of chaos at bias_variance=0.05"):
        edge_of_chaos_(model, bias_variance=0.05)
    (name, label, weight, bias), = edge_of_chaos_(model, bias_variance=0.0)
    assert weight == 2.0 and bias == 0.0 and torch.all(model[0].bias == 0)


def test_compare_init_eoc(tmp_path):
    from elukit.experiments.models import _weight_std

    assert _weight_std("eoc", elukit.get("elu"), 100) == math.sqrt(float(theory.edge_of_chaos("elu", 0.0).weight_variance) / 100)
    with pytest.raises(ValueError, match="softplus has no edge of chaos"):
        _weight_std("eoc", elukit.get("softplus"), 100)
    result = CliRunner().invoke(main, ["compare", "--dataset", "wine", "--activations", "relu,elu", "--seeds", "2",
                                       "--epochs", "1", "--width", "8", "--init", "eoc", "--quiet", "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
