"""elukit claims: experimental measurements on synthetic worlds with known effects, and the ledger
through the real entry point (a tiny profile: seconds, not evidence)."""

import dataclasses
import json
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from click.testing import CliRunner  # noqa: E402

from elukit.claims import CLAIMS, PROFILES, REGIMES, ArmResult, Context, decide  # noqa: E402
from elukit.claims import combine, lean, run_ledger, select  # noqa: E402
from elukit.cli.app import main  # noqa: E402
from elukit.claims._protocol import PROTOCOL_VERSION, protocol_sha256  # noqa: E402

EXPERIMENTAL = [c for c in CLAIMS if any(m.kind == "experiments" for m in c.measure)]
SEEDS, EPOCHS, LAYERS = 12, 20, 3

# per activation: test accuracy, accuracy lost to noise, training-loss decay rate, gradient sparsity,
# mean activation, dead fraction, ln(first/last gradient norm), best learning rate (index in the grid)
CLAIMS_TRUE = {
    "relu": (0.80, 0.15, 0.25, 0.5, 0.4, 0.2, 0.0, 1),
    "relu bn": (0.85, 0.15, 0.25, 0.5, 0.1, 0.2, 0.0, 1),
    "elu": (0.85, 0.05, 0.5, 0.0, 0.05, 0.0, 0.0, 2),
    "elu bn": (0.88, 0.05, 0.5, 0.0, 0.05, 0.0, 0.0, 2),
    "elu:alpha=2": (0.87, 0.05, 0.5, 0.0, 0.05, 0.0, 0.0, 2),
    "elu:alpha=0.5": (0.83, 0.05, 0.5, 0.0, 0.05, 0.0, 0.0, 2),
    "selu": (0.86, 0.05, 0.5, 0.0, 0.0, 0.0, 0.0, 2),
    "sigmoid": (0.30, 0.1, 0.1, 0.0, 0.5, 0.0, -4.0, 1),
    "tanh": (0.60, 0.1, 0.1, 0.0, 0.0, 0.0, -2.0, 1),
}
NULL = {key: CLAIMS_TRUE["relu"] for key in CLAIMS_TRUE} | {"sigmoid": CLAIMS_TRUE["sigmoid"]}


class SyntheticContext(Context):
    """A Context whose arms are drawn from a table of known effects instead of trained."""

    def __init__(self, world):
        profile = dataclasses.replace(PROFILES["tiny"], seeds=SEEDS, datasets=("wine", "digits"))
        super().__init__(store=None, ledger_id=0, profile=profile)
        self.world = world

    def cached(self, key, compute):
        assert key.startswith("step-cost/"), key  # the only cached value experimental claims read
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        return list(0.3 * (self.world is CLAIMS_TRUE) + 0.01 * rng.normal(size=12))

    def result(self, arm):
        regime = REGIMES[arm.regime].config
        arm = dataclasses.replace(arm, lr=regime["lr"] if arm.lr is None else arm.lr,
                                  init=regime["init"] if arm.init is None else arm.init)
        key = arm.activation + (" bn" if arm.batch_norm else "")
        accuracy, drop, rate, sparsity, mean, dead, log_ratio, best_lr = self.world[key]
        rng = np.random.default_rng(zlib.crc32(f"{arm.regime}{arm.dataset}{arm.label}".encode()))
        epochs = np.arange(EPOCHS + 1)
        grid = REGIMES[arm.regime].lr_grid
        lr_index = grid.index(arm.lr) if arm.lr in grid else 0
        seed_rng = np.random.default_rng(zlib.crc32(f"{arm.regime}{arm.dataset}{key}{arm.seed_offset}".encode()))

        def curves(members):
            noise = lambda scale: scale * rng.normal(size=(members, 1))  # noqa: E731
            # seeds differ as real ones do (a tied row is never decisive): each seed's best grid point is
            # off by one now and then, its loss decays at its own rate
            seed_best = best_lr + seed_rng.choice([-1, 0, 0, 0, 1], size=(members, 1))
            seed_rate = rate * np.exp(0.15 * seed_rng.normal(size=(members, 1)))
            network = {
                "validation_loss": 0.5 + 0.1 * abs(lr_index - seed_best) + 0.001 * (epochs - 10) ** 2 + noise(0.001),
                "validation_accuracy": accuracy - 0.02 * abs(lr_index - seed_best) - 1e-4 * (epochs - 10) ** 2 + noise(0.001),
                "test_accuracy": np.full(EPOCHS + 1, accuracy) + noise(0.001),
                "train_loss": 2.3 * np.exp(-seed_rate * epochs) + np.abs(noise(0.001)),
            }
            network["noisy_test_accuracy"] = network["test_accuracy"] - drop + noise(0.001)
            return network

        network, tuning = curves(SEEDS), curves(self.profile.tuning_seeds)
        ones = np.ones((SEEDS, LAYERS, EPOCHS + 1))
        per_layer = lambda value, scale: value * ones + scale * rng.normal(size=(SEEDS, 1, 1))  # noqa: E731
        depth = np.arange(LAYERS)[None, :, None]
        layers = {
            "gradient_sparsity": per_layer(sparsity, 0.001 if sparsity else 0.0),
            "mean_activation": per_layer(mean, 0.005),
            "dead_fraction": per_layer(dead, 0.01 if dead else 0.0),
            "activation_variance": per_layer(1.0, 0.02),
            "gradient_norm": np.exp(log_ratio * (LAYERS - 1 - depth) / (LAYERS - 1) + 0.05 * rng.normal(size=(SEEDS, LAYERS, 1))) * ones,
        }
        return ArmResult(arm, network, layers, tuning, self.profile.patience, EPOCHS + 5)


def _verdicts(world, claims):
    """Each claim's verdict from its sampled experimental rows (exact rows hold in any world)."""
    context = SyntheticContext(world)
    measured = [(claim, row) for claim in claims for measurement in claim.measure
                if measurement.kind == "experiments" for row in measurement(context) if not row.exact]
    outcomes = decide(measured, [claim.rule for claim, _ in measured])
    by_claim = {}
    for (claim, row), outcome in zip(measured, outcomes):
        by_claim.setdefault(claim.id, []).append((outcome[2], lean(outcome[0]), row.applies))
    return {claim_id: combine(*zip(*rows)) for claim_id, rows in by_claim.items()}, measured


def test_every_experimental_claim_is_supported_in_a_world_where_it_holds():
    verdicts, measured = _verdicts(CLAIMS_TRUE, EXPERIMENTAL)
    expected = {claim.id: claim.expected or "supported" for claim in EXPERIMENTAL}
    expected["selu-self-normalizes"] = "inconclusive"  # its trained rows are 2 and 8 layers deep: shown, never deciding
    assert verdicts == expected
    regimes = {row.regime for claim, row in measured if claim.id == "higher-accuracy"}
    settings = {f"{r}/{d}" for r in ("shallow-adam", "deep-sgd") for d in ("wine", "digits")}
    grid = {r: REGIMES[r].lr_grid for r in ("shallow-adam", "deep-sgd")}
    assert regimes == settings | {f"{r}/{d} @ lr {lr:g}" for r in grid for d in ("wine", "digits") for lr in grid[r]}
    accuracy = [row for claim, row in measured if claim.id == "higher-accuracy"]
    assert all(row.depth == REGIMES[row.regime.split("/")[0]].config["depth"] for row in accuracy)
    tuned = [row for row in accuracy if row.fields["rate"] == "tuned"]
    assert all(set(row.lr) == {"elu", "relu"} for row in accuracy) and len(tuned) == 4
    # tuned on 4 tuning seeds whose best rate is off by one now and then: the true best (index 2) or a neighbour
    assert {row.lr["elu"] for row in tuned} <= set(REGIMES["shallow-adam"].lr_grid[1:]) | set(REGIMES["deep-sgd"].lr_grid[1:])
    assert all(set(row.fields["near_tie"]) == {"elu", "relu"} and row.fields["cap_hits"] == {"elu": 0, "relu": 0}
               for row in tuned)
    assert all(row.fields["checkpoint_epoch"] == {"elu": 10.0, "relu": 10.0} and row.fields["epochs_trained"]["elu"] == EPOCHS
               for row in tuned)
    lr = [row for claim, row in measured if claim.id == "higher-learning-rate"][0]
    assert np.mean(lr.differences) > 0.5 and np.ptp(lr.differences) > 0  # ELU's good rates reach higher, seeds vary
    zero = [row for claim, row in measured if claim.id == "nonzero-gradient" and "share" in row.comparison]
    assert zero and all(row.fields["zero_derivative_share"] == {"elu": 0.0, "relu": pytest.approx(0.5, abs=0.01)}
                        for row in zero)


def test_directional_experimental_claims_are_inconclusive_where_activations_do_not_differ():
    directional = [c for c in EXPERIMENTAL if type(c.rule).__name__ == "PairedDifference" and not c.is_control
                   and c.rule.alternative != "two-sided"]
    verdicts, measured = _verdicts(NULL, directional)
    # where ELU has ReLU's zeros, "never zero" cannot be supported: its share rows are refuted (the measure can fail)
    assert verdicts.pop("nonzero-gradient") in ("refuted", "mixed")
    share = [row for claim, row in measured if "share" in row.comparison]
    assert share and all(np.all(row.differences > 0.4) for row in share)
    assert set(verdicts.values()) == {"inconclusive"}, verdicts


def test_measurements_read_each_seed_at_its_best_validation_epoch_and_tune_on_other_seeds():
    context = SyntheticContext(CLAIMS_TRUE)
    tuned = context.tuned("shallow-adam", "wine", "elu")
    assert tuned.lr == REGIMES["shallow-adam"].lr_grid[2]
    assert np.all(tuned.result.best == 10)
    np.testing.assert_array_equal(tuned.result.at_best("test_accuracy"), tuned.result.network["test_accuracy"][:, 10])
    assert tuned.result.tuning["validation_accuracy"].shape[0] == context.profile.tuning_seeds


def test_a_rate_chosen_by_less_than_a_standard_error_is_flagged():
    from elukit.claims import choose_rate

    clear = choose_rate({1e-3: np.array([0.60, 0.61, 0.62]), 2e-3: np.array([0.65, 0.66, 0.66])})
    assert clear[0] == 2e-3 and not clear[1]
    close = choose_rate({1e-3: np.array([0.60, 0.64, 0.62]), 2e-3: np.array([0.63, 0.61, 0.625])})
    assert close[0] == 2e-3 and close[1] and close[2] == pytest.approx(0.005 / 3)


def test_checkpoints_on_validation_accuracy_and_cap_hits():
    from elukit.experiments.converge import best_epochs, cap_hits, last_improvement

    accuracy = np.array([[np.nan, 0.5, 0.7, 0.7, 0.6], [np.nan, 0.4, 0.5, 0.6, 0.65]])
    loss = np.array([[np.nan, 1.0, 0.9, 0.8, 1.0], [np.nan, 1.0, 0.9, 0.8, 0.7]])
    np.testing.assert_array_equal(best_epochs(accuracy, loss), [3, 4])  # a tie goes to the lower loss
    np.testing.assert_array_equal(best_epochs(accuracy), [2, 4])
    np.testing.assert_array_equal(last_improvement(accuracy), [2, 4])  # a tie at a lower loss is no improvement
    # member 0 last improved at epoch 2: 2 epochs before the cap, so it stopped at patience 2 but not at 3
    assert cap_hits(accuracy, loss, patience=2, cap=4) == 1 and cap_hits(accuracy, loss, patience=3, cap=4) == 2
    assert cap_hits(accuracy, loss, patience=1, cap=4) == 1
    assert cap_hits(accuracy, loss, patience=2, cap=10) == 0  # stopped before the cap


def test_training_stops_on_accuracy_and_evaluates_the_test_sets_at_checkpoints_only(tmp_path):
    """A member whose validation accuracy stays flat while its loss falls has converged; the test
    metrics exist at every member's checkpoint and epoch 0, and nowhere a checkpoint never was."""
    from elukit.experiments.converge import best_epochs, last_improvement, train_until_converged, validation_split
    from elukit.experiments.data import load_dataset
    from elukit.experiments.store import Store
    from elukit.experiments.train import StudyConfig

    split = validation_split(load_dataset("wine"))
    config = StudyConfig(dataset="wine", activations=("relu",), seeds=2, epochs=60, width=8, depth=2, lr=0.05,
                         optimizer="adam", batch_size=32).validated()
    store = Store(tmp_path / "r.db")
    study = store.create_study({"test": 1})
    configuration = train_until_converged(store, study, config, "relu", split, [0, 1], "relu", patience=3)
    rows = store.connection.execute(
        "SELECT run.seed, metric.epoch, metric.name, metric.value FROM metric JOIN run ON run.id = metric.run_id "
        "WHERE run.configuration_id = ? AND metric.layer = -1", (configuration,)).fetchall()
    last = max(r[1] for r in rows)
    series = {name: np.full((2, last + 1), np.nan) for name in ("validation_accuracy", "validation_loss", "test_accuracy")}
    for seed, epoch, name, value in rows:
        if name in series:
            series[name][seed, epoch] = value
    improved = last_improvement(series["validation_accuracy"])
    assert last < 60 and np.all(last - improved >= 3) and np.any(last - improved == 3)  # stopped on accuracy
    tested = np.isfinite(series["test_accuracy"]).any(axis=0)
    checkpoints = {0} | {int(e) for epoch in range(1, last + 1) for e in
                         best_epochs(series["validation_accuracy"][:, :epoch + 1], series["validation_loss"][:, :epoch + 1])}
    assert set(np.flatnonzero(tested)) == checkpoints and len(checkpoints) < last + 1
    store.close()


# -- the ledger through the CLI ----------------------------------------------------------------------------
ONLY = "smooth-at-zero,higher-accuracy"


def _run(args):
    return CliRunner().invoke(main, ["claims", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims")
    result = _run(["--only", ONLY, "--profile", "tiny", "--out", str(out), "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    (out / "stdout.txt").write_text(result.output)
    return out


def test_ledger_files_hold_every_field_and_the_printed_table(ledger_dir):
    ledger = json.loads((ledger_dir / "claims" / "ledger.json").read_text())
    assert [c["id"] for c in ledger["claims"]] == [c.id for c in select(ONLY)]
    for claim in ledger["claims"]:
        assert {"id", "statement", "sources", "verdict", "effect", "ci_low", "ci_high", "n", "regimes", "command"} <= set(claim)
        assert claim["command"] == f"elukit claims --only {claim['id']} --profile tiny"
        assert claim["verdict"] in ("supported", "refuted", "mixed", "inconclusive")
    accuracy = next(c for c in ledger["claims"] if c["id"] == "higher-accuracy")
    grid = sum(len(REGIMES[r].lr_grid) for r in PROFILES["tiny"].regimes)
    assert len(accuracy["regimes"]) == 2 + grid and all(r["n"] == PROFILES["tiny"].seeds for r in accuracy["regimes"])
    assert all({"depth", "lr", "decides", "applies", "cap_hits"} <= set(r) for r in accuracy["regimes"])
    assert set(accuracy["pooled"]) >= {"estimate", "ci_low", "ci_high", "i2", "tau2", "k"} and accuracy["pooled"]["k"] == 2
    assert ledger["protocol_sha256"] == protocol_sha256() and list(ledger)[0] == "protocol_sha256"
    assert protocol_sha256() in (ledger_dir / "claims" / "ledger.md").read_text()
    assert protocol_sha256() in (ledger_dir / "claims" / "ledger.html").read_text()
    assert (ledger_dir / "stdout.txt").read_text().splitlines()[0] == f"Protocol {PROTOCOL_VERSION}, sha256 {protocol_sha256()}."
    assert next(c for c in ledger["claims"] if c["id"] == "smooth-at-zero")["verdict"] == "supported"
    page = (ledger_dir / "claims" / "ledger.html").read_text()
    assert page.count("data:image/png;base64,") == len(ledger["claims"])  # one inlined figure per claim
    assert "control-negative" in (ledger_dir / "claims" / "ledger.md").read_text()


def test_a_rerun_gives_the_same_ledger_bit_for_bit(ledger_dir, tmp_path):
    result = _run(["--only", ONLY, "--profile", "tiny", "--out", str(tmp_path), "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    first = json.loads((ledger_dir / "claims" / "ledger.json").read_text())
    second = json.loads((tmp_path / "claims" / "ledger.json").read_text())
    assert first["claims"] == second["claims"]
    assert "higher-accuracy" in result.output and "elukit claims --only control-positive --profile tiny" in result.output


def test_an_interrupted_ledger_resumes_without_redoing_work(ledger_dir, tmp_path):
    profile = PROFILES["tiny"]
    arms = []

    def interrupt(message):
        arms.append(message)
        if len(arms) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ledger(select(ONLY), profile, tmp_path, progress=interrupt)
    resumed = []
    ledger = run_ledger(select(ONLY), profile, tmp_path, resume=True, progress=resumed.append)
    name = lambda message: message.rsplit(":", 1)[0]  # noqa: E731  (drop the seconds)
    trained_again = [name(m) for m in resumed if ": measured" not in m and not m.endswith(": stored")]
    assert trained_again and not set(trained_again) & {name(m) for m in arms}  # finished arms are not retrained
    reference = json.loads((ledger_dir / "claims" / "ledger.json").read_text())
    assert [c["regimes"] for c in ledger["claims"]] == [c["regimes"] for c in reference["claims"]]
    again = run_ledger(select(ONLY), profile, tmp_path, resume=True, progress=(seen := []).append)
    assert all(": measured" in m or m.endswith(": stored") for m in seen)  # everything is in the store now
    assert again["ledger_id"] == ledger["ledger_id"]


@pytest.mark.parametrize("args,message", [
    (["--only", "bogus"], "unknown claim 'bogus'; known claims: nonzero-gradient"),
    (["--profile", "huge"], "--profile must be one of quick, full, tiny, got 'huge'"),
    (["--seeds", "1"], "--seeds must be >= 2"),
    (["--resume"], "holds no claims ledger to resume"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, tmp_path):
    result = CliRunner().invoke(main, ["claims", *args, "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_a_tiny_ledger_at_two_seeds_decides_nothing_and_says_so(tmp_path):
    """Two seeds (and tied differences) never decide: every sampled row is 'inconclusive (n too small)';
    the page opens with the tiny-profile banner and, since the positive control cannot come out,
    with 'this ledger is invalid'."""
    result = _run(["--only", "alpha-sensitivity,higher-learning-rate,faster-learning", "--profile", "tiny", "--seeds", "2",
                   "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    ledger = json.loads((tmp_path / "claims" / "ledger.json").read_text())
    sampled = [r for c in ledger["claims"] for r in c["regimes"] if not r["exact"]]
    assert sampled and all(r["verdict"] == "inconclusive" and r["reason"] == "n too small" for r in sampled)
    assert all(r["p_value"] is None and not r["decides"] for r in sampled)
    assert {c["verdict"] for c in ledger["claims"]} == {"inconclusive"}
    assert "Profile tiny: a smoke test of the machinery, not evidence." in result.output
    assert "This ledger is invalid: control control-positive came out inconclusive, expected supported." in result.output
    page = (tmp_path / "claims" / "ledger.html").read_text()
    assert 'class="banner"' in page and "<nav>" in page and 'href="#faster-learning"' in page
    assert set(ledger["provenance"]) >= {"command", "elukit_version", "code_sha256", "date", "cpu", "threads"}
    assert "trained here: MLP 2x12 (width scaled by 0.125)" in ledger["regimes"]["shallow-adam"]  # not the 2x100 it names
    assert oct((tmp_path / "claims" / "ledger.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_resume_refuses_another_profile(ledger_dir):
    result = CliRunner().invoke(main, ["claims", "--only", ONLY, "--profile", "tiny", "--seeds", "4", "--resume",
                                       "--out", str(ledger_dir), "--quiet"])
    assert result.exit_code == 2 and "--resume refused" in result.output and "seeds: stored 3, given 4" in result.output


def test_list_is_driven_by_the_registry():
    result = _run(["--list"])
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.strip().splitlines()] == [c.id for c in CLAIMS]


def test_parallel_workers_give_the_same_measurements_bit_for_bit(ledger_dir, tmp_path):
    ledger = run_ledger(select("smooth-at-zero"), PROFILES["tiny"], tmp_path, workers=2)
    reference = json.loads((ledger_dir / "claims" / "ledger.json").read_text())
    rows = lambda ledger: {c["id"]: [r["differences"] for r in c["regimes"]] for c in ledger["claims"]}  # noqa: E731
    assert rows(ledger) == {k: v for k, v in rows(reference).items() if k != "higher-accuracy"}


def test_mnist1d_paper_models_have_the_papers_shapes():
    from elukit.experiments.mnist1d_baselines import build

    x = torch.zeros(2, 5, 40)
    counts = {}
    for kind in ("linear", "mlp", "cnn"):
        model = build(kind, [0, 1])
        assert model(x).shape == (2, 5, 10)
        counts[kind] = sum(p.numel() for p in model.parameters()) // 2  # per member
    # Linear(40,10); 40*100+100 + 100*100+100 + 100*10+10; convs 25*5+25, 2*(25*25*3+25), Linear(125,10)
    assert counts == {"linear": 410, "mlp": 15210, "cnn": 150 + 2 * 1900 + 1260}
    with pytest.raises(ValueError, match="model must be one of linear, mlp, cnn"):
        build("gru", [0])


def test_a_and_a_through_the_whole_pipeline_decides_at_the_nominal_rate(tmp_path, monkeypatch):
    """The negative control replicated 20 times at tiny scale: two ReLU arms on different seeds, each
    trained, checkpointed and tuned on its own tuning seeds, compared at their tuned rates and at every
    grid point, each replication one Bonferroni family combined into a verdict as the ledger does. The
    share of replications that decide anything stays within a 99.9% binomial interval of the nominal 5%."""
    from scipy import stats

    from elukit.claims import combine_rows, get_claim, lean
    from elukit.claims._context import LEDGER_SCHEMA, Regime
    from elukit.claims._measures import Side, _accuracy, compare
    from elukit.experiments.store import Store

    regime = REGIMES["shallow-adam"]
    monkeypatch.setitem(REGIMES, "shallow-adam", Regime(regime.name, regime.description, regime.settings, (4e-3, 8e-3)))
    profile = dataclasses.replace(PROFILES["tiny"], seeds=4, tuning_seeds=2, cap=3)
    store = Store(tmp_path / "results.db")
    with store.transaction() as db:
        for statement in filter(str.strip, LEDGER_SCHEMA.split(";")):
            db.execute(statement)
        db.execute("INSERT INTO claims_ledger (id, created, settings) VALUES (1, 0, '{}')")
    context = Context(store, 1, profile)
    rule = get_claim("control-negative").rule
    replications, families = 20, []
    try:
        for rep in range(replications):
            a, b = Side("relu", seed_offset=1000 * rep + 100), Side("relu", seed_offset=1000 * rep + 500)
            families.append(compare(context, a, b, _accuracy, "a - a", settings=[("shallow-adam", "wine", "shallow-adam/wine")]))
    finally:
        store.close()
    verdicts = []
    for rows in families:
        owner = object()  # one family per replication, as one claim's rows are
        outcomes = decide([(owner, row) for row in rows], [rule] * len(rows))
        verdicts.append(combine_rows([o[2] for o in outcomes], [lean(o[0]) for o in outcomes],
                                     set_aside=[row.set_aside for row in rows]).verdict)
        tuned = rows[0]
        assert bool(tuned.set_aside) == (len(set(tuned.lr.values())) > 1 and any(tuned.fields["near_tie"].values()))
    decided = sum(v != "inconclusive" for v in verdicts)
    low, high = stats.binom.interval(0.999, replications, 0.05)
    assert all(len(rows) == 3 for rows in families) and decided <= high, verdicts
    assert len({tuple(rows[0].treatment) for rows in families}) == replications  # every replication trained its own seeds


def test_a_tuned_row_whose_rates_differ_on_a_near_tie_is_set_aside():
    from elukit.claims._context import Arm, ArmResult, Tuned
    from elukit.claims._measures import tuning_confound

    result = ArmResult(Arm("shallow-adam", "wine", "relu"), {}, {})
    clear, close = Tuned(4e-3, result, {}, np.empty(0)), Tuned(8e-3, result, {}, np.empty(0), near_tie=True)
    assert tuning_confound(clear, close).startswith("rates 0.004 and 0.008 differ on a near-tie")
    assert tuning_confound(close, dataclasses.replace(close, near_tie=False)) == ""  # same rate: a matched comparison
    assert tuning_confound(clear, dataclasses.replace(close, near_tie=False)) == ""  # both choices clear


def test_resume_refuses_a_store_measured_under_another_protocol(tmp_path):
    from elukit.claims._context import LEDGER_SCHEMA
    from elukit.claims._ledger import _open_ledger
    from elukit.experiments.store import Store

    store = Store(tmp_path / "results.db")
    try:
        with store.transaction() as db:
            for statement in filter(str.strip, LEDGER_SCHEMA.split(";")):
                db.execute(statement)
            db.execute("INSERT INTO claims_ledger (created, settings) VALUES (0, ?)",
                       (json.dumps({"profile": PROFILES["tiny"].as_dict()}),))  # protocol 1 recorded no hash
        with pytest.raises(ValueError, match="measured under protocol unrecorded .version 1., this elukit's is"):
            _open_ledger(store, PROFILES["tiny"], resume=True)
        assert _open_ledger(store, PROFILES["tiny"], resume=False) == 2  # a new ledger starts fine
        assert _open_ledger(store, PROFILES["tiny"], resume=True) == 2
    finally:
        store.close()


def test_the_code_hash_changes_with_any_edit_of_the_measuring_code(tmp_path):
    """The protocol hash covers what is declared; `code_sha256` (in every ledger's provenance) covers
    the code: a one-character edit of a measure changes it, a compiled file or cache does not."""
    import shutil
    from pathlib import Path

    import elukit
    from elukit._provenance import code_sha256, provenance

    source = Path(elukit.__file__).parent
    copy = tmp_path / "elukit"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    assert code_sha256(copy) == code_sha256(source) == provenance()["code_sha256"]
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    assert code_sha256(copy) == code_sha256(source)
    measures = copy / "claims" / "_measures.py"
    measures.write_text(measures.read_text().replace("PLANTED_EFFECT = 0.03", "PLANTED_EFFECT = 0.04"))
    assert code_sha256(copy) != code_sha256(source)


def test_the_default_worker_count_is_the_usable_cores_however_busy_the_machine(monkeypatch, tmp_path):
    """Worker processes, one torch thread each, do not wait on each other: a busy machine (which
    keeps a study on one torch thread) is no reason to train the ledger's arms one at a time."""
    import os

    import elukit.claims
    from elukit.experiments.executors import usable_cores

    seen = {}

    def fake_run_ledger(*args, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before any work; the CLI then exits 130

    monkeypatch.setattr(elukit.claims, "run_ledger", fake_run_ledger)
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    result = CliRunner().invoke(main, ["claims", "--profile", "tiny", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 130 and seen["workers"] == usable_cores() == len(os.sched_getaffinity(0))
