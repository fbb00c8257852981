"""elukit compare: data validation, batched ensembles, diagnostics, store integrity, resume, report."""

import multiprocessing
import shutil
import sqlite3
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from click.testing import CliRunner  # noqa: E402

import elukit  # noqa: E402
from elukit.cli.app import main  # noqa: E402
from elukit.experiments.data import DATASETS, load_dataset, load_npz  # noqa: E402
from elukit.experiments.models import build_model  # noqa: E402
from elukit.experiments.report import build_report  # noqa: E402
from elukit.statistics import epochs_to_target, mean_interval  # noqa: E402
from elukit.experiments.store import Store  # noqa: E402
from elukit.experiments.train import StudyConfig, run_study  # noqa: E402
from elukit.torch.diagnostics import Monitor  # noqa: E402

TINY = dict(dataset="wine", activations=("relu", "elu"), seeds=2, epochs=3, width=16, depth=2, batch_size=32)


@pytest.mark.parametrize("name", list(DATASETS))
def test_builtin_datasets_load_offline_and_are_standardised(name, tmp_path):
    if name == "mnist1d":
        pytest.importorskip("mnist1d")
    data = load_dataset(name, cache_dir=tmp_path)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert np.allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    assert data.classes >= 2 and len(data.x_test) > 0
    if name == "mnist1d":
        assert (tmp_path / "mnist1d-5000-seed42.npz").exists()  # cached after the first run
        assert np.array_equal(load_dataset(name, cache_dir=tmp_path).x_test, data.x_test)


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good():
    rng = np.random.default_rng(0)
    return dict(x_train=rng.normal(size=(20, 3)), y_train=np.arange(20) % 2, x_test=rng.normal(size=(5, 3)), y_test=np.arange(5) % 2)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop("y_test"), "lacks arrays"),
    (lambda a: a.__setitem__("x_train", np.full((20, 3), np.nan)), "NaN"),
    (lambda a: a.__setitem__("x_test", np.zeros((5, 4))), "sample shape"),
    (lambda a: a.__setitem__("y_train", np.arange(19) % 2), "shape"),
    (lambda a: a.__setitem__("y_train", np.linspace(0, 1, 20)), "integer class labels"),
    (lambda a: a.__setitem__("y_test", -np.ones(5, dtype=int)), "negative"),
    (lambda a: a.__setitem__("y_train", np.zeros(20, dtype=int)), "single class"),
    (lambda a: a.__setitem__("x_train", np.array(["a"] * 20)), "numeric"),
])
def test_bad_npz_data_gets_a_clear_error(tmp_path, change, message):
    arrays = _good()
    change(arrays)
    path = _write(tmp_path / "data.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(path)


def test_user_npz_loads(tmp_path):
    data = load_npz(_write(tmp_path / "data.npz", **_good()))
    assert data.features == 3 and data.classes == 2


def test_ensemble_members_are_independent_and_deterministic_per_seed():
    spec = elukit.get("elu")
    torch.manual_seed(0)
    x = torch.randn(8, 5)
    pair = build_model("mlp", [3, 7], (5,), 4, spec, 16, 2, "gain", False)
    alone = build_model("mlp", [7], (5,), 4, spec, 16, 2, "gain", False)
    assert torch.equal(pair(x.expand(2, -1, -1))[1], alone(x.unsqueeze(0))[0])
    cnn_pair = build_model("cnn", [3, 7], (40,), 4, spec, 8, 2, "gain", False)
    cnn_alone = build_model("cnn", [7], (40,), 4, spec, 8, 2, "gain", False)
    z = torch.randn(6, 40)
    assert torch.allclose(cnn_pair(z.expand(2, -1, -1))[1], cnn_alone(z.unsqueeze(0))[0], rtol=1e-6, atol=1e-6)


def test_monitor_counts_dead_units_and_gradient_sparsity():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1))
    with torch.no_grad():
        model[0].bias[:2] = -100.0  # units 0 and 1 never activate
    monitor = Monitor(model)
    with monitor.recording():
        model(torch.randn(256, 4)).sum().backward()
    stats = monitor.collect()["1"]
    assert stats.dead_fraction.item() == pytest.approx(2 / 6)
    assert 2 / 6 < stats.gradient_sparsity.item() < 1
    assert stats.gradient_norm.item() > 0
    with pytest.raises(ValueError, match="no activation module"):
        Monitor(torch.nn.Linear(2, 2))


def test_study_is_deterministic_and_stored_and_independent_of_threads(tmp_path):
    store_a, study_a = run_study(StudyConfig(**TINY), tmp_path / "a", threads=1)
    store_b, study_b = run_study(StudyConfig(**TINY), tmp_path / "b", threads=2)
    torch.set_num_threads(1)
    rows_a, rows_b = store_a.metrics(study_a), store_b.metrics(study_b)
    assert rows_a == rows_b
    names = {r[3] for r in rows_a}
    assert {"train_loss", "test_accuracy", "mean_activation", "dead_fraction", "gradient_sparsity", "gradient_norm"} <= names


def test_default_threads_use_a_second_core_for_the_mlp_only():
    import os

    from elukit.experiments.train import default_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_threads("mlp", load=0.0) == (2 if cores >= 2 else 1)
    assert default_threads("mlp", load=float(cores)) == 1  # no idle core: a second thread would wait on a parked one
    assert default_threads("cnn", load=0.0) == 1


def test_resume_after_interrupt_neither_loses_nor_duplicates(tmp_path):
    clean_store, clean_study = run_study(StudyConfig(**TINY), tmp_path / "clean")
    calls = []

    def interrupt(progress):
        calls.append(progress)
        if progress.label == "elu" and progress.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(StudyConfig(**TINY), tmp_path / "resumed", progress=interrupt)
    store, study = run_study(StudyConfig(**TINY), tmp_path / "resumed", resume=True)
    assert store.metrics(study) == clean_store.metrics(clean_study)
    count = store.connection.execute("SELECT COUNT(*), COUNT(DISTINCT run_id || epoch || name || layer) FROM metric").fetchone()
    assert count[0] == count[1]


def test_resume_refuses_different_arguments(tmp_path):
    run_study(StudyConfig(**TINY), tmp_path)
    with pytest.raises(ValueError, match="epochs: stored 3, given 4"):
        run_study(StudyConfig(**{**TINY, "epochs": 4}), tmp_path, resume=True)


def _write_study(out, activation):
    run_study(StudyConfig(**{**TINY, "activations": (activation,)}), out)


def test_two_concurrent_writers_do_not_corrupt_the_store(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_study, args=(tmp_path, a)) for a in ("relu", "elu")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    with sqlite3.connect(tmp_path / "results.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        studies = db.execute("SELECT COUNT(*) FROM study WHERE finished IS NOT NULL").fetchone()[0]
        rows = db.execute("SELECT COUNT(*) FROM metric").fetchone()[0]
    assert studies == 2 and rows == 2 * len(Store(tmp_path / "results.db").metrics(1))


def test_statistics():
    interval = mean_interval(np.array([1.0, 2.0, 3.0]))
    assert interval.mean == 2.0 and interval.low < 2.0 < interval.high
    assert list(epochs_to_target(np.array([[3, 2, 1], [3, 3, 3]]), 2.0)[:1]) == [1.0]
    assert np.isnan(epochs_to_target(np.array([[3, 3, 3]]), 2.0)[0])


def test_report_html_and_markdown(tmp_path):
    run_study(StudyConfig(**TINY), tmp_path)
    paths = build_report(tmp_path / "results.db", tmp_path / "report")
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") >= 3 and "<table>" in page and "relu" in page
    markdown = paths["markdown"].read_text()
    assert "| elu |" in markdown and "learning_curves.png" in markdown
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        shot = tmp_path / "shot.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,2000",
                        paths["html"].as_uri()], check=True, capture_output=True, timeout=120)
        assert shot.stat().st_size > 10_000


def test_compare_and_report_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(main, ["compare", "--dataset", "wine", "--activations", "relu,elu:alpha=0.5", "--seeds", "2",
                                  "--epochs", "2", "--width", "8", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report" / "report.html").exists() and "report" in result.output
    again = runner.invoke(main, ["report", str(out / "results.db"), "-o", str(tmp_path / "r2")])
    assert again.exit_code == 0 and (tmp_path / "r2" / "report.md").exists()
    bad = runner.invoke(main, ["compare", "--data", str(tmp_path / "missing.npz"), "--quiet", "--out", str(out)])
    assert bad.exit_code == 2 and "no such file" in bad.output
    bad = runner.invoke(main, ["compare", "--activations", "relu,nope", "--quiet", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown activation" in bad.output
    assert "--preset" in runner.invoke(main, ["compare", "--help"]).output
