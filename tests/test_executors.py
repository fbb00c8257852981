"""The Ray executor: the same rows as the local one, nothing lost when a worker dies or the driver
is interrupted, and bad input refused before anything is written (a local Ray instance, 2 CPUs)."""

import sys

import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray")

from click.testing import CliRunner  # noqa: E402

from elukit.cli.app import main as cli  # noqa: E402
from _store_rows import rows  # noqa: E402
from elukit.experiments import executors  # noqa: E402
from elukit.experiments.train import StudyConfig, run_study  # noqa: E402

CONFIG = StudyConfig(dataset="digits", activations=("relu", "elu"), seeds=2, epochs=3, width=16)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    store, _ = run_study(CONFIG, out, threads=1)
    store.close()
    return rows(out / "results.db")


def test_a_ray_study_gives_the_local_rows(local_ray, local_rows, tmp_path):
    store, _ = run_study(CONFIG, tmp_path, threads=1, executor="ray")
    store.close()
    assert rows(tmp_path / "results.db") == local_rows
    assert len(local_rows) == 2 * 2 * 4 * 4 + 2 * 2 * 3 * 2 * 5  # seeds x epochs 0-3 x network + layers


def test_a_worker_killed_mid_configuration_loses_and_duplicates_nothing(local_ray, local_rows, tmp_path, monkeypatch):
    marker = tmp_path / "worker-exited"
    monkeypatch.setenv(executors.TEST_EXIT_AFTER_EPOCH, f"2:{marker}")
    store, _ = run_study(CONFIG, tmp_path / "out", threads=1, executor="ray", workers=1)
    store.close()
    assert marker.exists()  # a worker really died after storing epoch 2 of the first configuration
    assert rows(tmp_path / "out" / "results.db") == local_rows  # the primary key rules out duplicates


def test_the_writer_ignores_an_epoch_it_already_holds(tmp_path):
    writer = executors.StoreWriter(str(tmp_path / "results.db"))
    study = writer.store.create_study({"x": 1})
    configuration, runs = writer.configuration(study, "elu", {"x": 1}, [0])
    row = [(runs[0], "train_loss", -1, 1.0)]
    assert writer.write_epoch(configuration, 1, row, b"state", 1.0) is True
    assert writer.write_epoch(configuration, 1, row, b"state", 1.0) is False


def test_driver_interrupted_then_resumed_with_either_executor(local_ray, local_rows, tmp_path):
    for resume_with in ("ray", "local"):
        out = tmp_path / resume_with
        seen = []

        def interrupt(progress):
            seen.append(progress)
            if len(seen) == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_study(CONFIG, out, threads=1, executor="ray", workers=1, progress=interrupt)
        assert 0 < len(rows(out / "results.db")) < len(local_rows)
        store, _ = run_study(CONFIG, out, resume=True, threads=1, executor=resume_with)
        store.close()
        assert rows(out / "results.db") == local_rows


def invoke(*args):
    return CliRunner().invoke(cli, ["compare", "--dataset", "digits", "--quiet", *args])


def test_an_unreachable_address_is_one_line_and_writes_nothing(tmp_path):
    result = invoke("--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "--ray-address '127.0.0.1:1': cannot connect" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_ray_missing_names_the_extra_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    result = invoke("--executor", "ray", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "pip install 'elukit[ray]'" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray", "--workers", "0"], "'--workers': 0 is not in the range"),
    (["--workers", "2"], "--workers needs --executor ray"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "ray", "--ray-address", "nonsense"], "expected auto, host:port"),
])
def test_bad_executor_arguments_are_one_line(tmp_path, args, message):
    result = invoke(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_a_claims_ledger_on_ray_gives_the_local_ledger(local_ray, tmp_path):
    from elukit.claims import PROFILES, run_ledger, select

    claims = select("higher-accuracy,smooth-at-zero")  # the two controls come along

    def decided(ledger):
        return [(c["id"], c["verdict"], c["effect"], c["ci_low"], c["ci_high"], c["n"]) for c in ledger["claims"]]

    local = run_ledger(claims, PROFILES["tiny"], tmp_path / "local", workers=1)
    on_ray = run_ledger(claims, PROFILES["tiny"], tmp_path / "ray", workers=2, executor="ray")
    assert decided(on_ray) == decided(local)
    assert rows(tmp_path / "ray" / "results.db") == rows(tmp_path / "local" / "results.db")


def test_claims_refuse_a_stray_ray_address_before_writing(tmp_path):
    result = CliRunner().invoke(cli, ["claims", "--profile", "tiny", "--ray-address", "auto", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--ray-address needs --executor ray" in result.output
    assert not (tmp_path / "o").exists()
