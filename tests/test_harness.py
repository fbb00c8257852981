"""The experiment harness tried as a new user would (issue 11): every bad input is one line and a
non-zero exit before any work, nothing is recorded when loading fails, outputs follow the umask.

Most tests go through the real entry point (Click's runner on `elukit.cli.app.main`); a missing
package is simulated by ``sys.modules[name] = None``, which makes ``import name`` fail as it does
where the package is not installed.
"""

import hashlib
import json
import os
import sqlite3
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from elukit.cli.app import main

TINY_ARGS = ["--dataset", "wine", "--activations", "relu,elu", "--seeds", "2", "--epochs", "2", "--width", "8",
             "--batch-size", "32", "--quiet"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *fragments):
    """Exit 2, no traceback, and the message on one line containing every fragment."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert errors, result.output
    for fragment in fragments:
        assert fragment in errors[-1], result.output
    return errors[-1]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def good_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.normal(size=(30, 3)), y_train=np.arange(30) % 3,
                  x_test=rng.normal(size=(6, 3)), y_test=np.arange(6) % 3)

    def write(name="data.npz", **changes):
        path = tmp_path / name
        with open(path, "wb") as handle:
            np.savez(handle, **{**arrays, **changes})
        return path

    return write


# -- 1. report on a file that is not a results database -------------------------------------------------

@pytest.mark.parametrize("content", ["random", "npz", "foreign-sqlite"])
def test_report_on_a_file_that_is_not_a_results_database(tmp_path, content):
    pytest.importorskip("matplotlib")
    path = tmp_path / "file.db"
    if content == "random":
        path.write_bytes(np.random.default_rng(1).bytes(3000))
    elif content == "npz":
        with open(path, "wb") as handle:
            np.savez(handle, x=np.arange(3))
    else:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE other (x)")
    before = digest(path)
    result = cli("report", path, "-o", tmp_path / "r")
    one_line_error(result, "file.db", "elukit results database")
    assert digest(path) == before  # left untouched: no WAL switch, no tables added
    assert not (tmp_path / "r").exists()


# -- 2. --data that is not an .npz, or holds objects ------------------------------------------------------

@pytest.mark.parametrize("kind,fragment", [
    ("text", "not an .npz archive"),
    ("random", "not an .npz archive"),
    ("npy", "single .npy array"),
    ("truncated", "data.npz"),
    ("object", "array x_train holds Python objects"),
])
def test_bad_data_file_names_the_file_and_the_problem(tmp_path, good_npz, kind, fragment):
    pytest.importorskip("torch")
    path = tmp_path / "data.npz"
    if kind == "text":
        path.write_text("x_train,y_train\n1,2\n")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(2).bytes(500))
    elif kind == "npy":
        with open(path, "wb") as handle:
            np.save(handle, np.arange(4))
    elif kind == "truncated":
        data = good_npz().read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        good_npz(x_train=np.array([{"a": 1}] * 30, dtype=object))
    result = cli("compare", "--data", path, "--out", tmp_path / "out", "--quiet")
    line = one_line_error(result, fragment, "data.npz")
    assert "allow_pickle" not in line and "pickle" not in line
    assert not (tmp_path / "out" / "results.db").exists()


# -- 3. labels the model never trained on, labels with gaps ---------------------------------------------

def test_labels_unseen_in_training_or_with_gaps_are_errors(good_npz):
    from elukit.experiments.data import load_npz

    with pytest.raises(ValueError, match="y_test has labels 7 that y_train never has"):
        load_npz(good_npz(y_test=np.array([0, 1, 2, 7, 0, 1])))
    with pytest.raises(ValueError, match=r"missing 1, 2, 3, 4, 6, 7, 8, 9 .*labels 0, 5, 10"):
        load_npz(good_npz(y_train=np.arange(30) % 3 * 5, y_test=np.arange(6) % 3 * 5))
    assert load_npz(good_npz(y_test=np.zeros(6, dtype=int))).classes == 3  # a class absent from the test set is fine


# -- 4. every missing dependency found before any work, naming the extra of the whole verb ------------

@pytest.mark.parametrize("module,args", [
    ("torch", TINY_ARGS),
    ("matplotlib", TINY_ARGS),
    ("sklearn", TINY_ARGS),
    ("mnist1d", ["--quiet"]),
])
def test_compare_names_every_missing_module_and_the_experiments_extra_first(tmp_path, monkeypatch, module, args):
    monkeypatch.setenv("ELUKIT_CACHE", str(tmp_path / "cache"))  # no cached MNIST-1D: mnist1d is needed
    monkeypatch.setitem(sys.modules, module, None)
    result = cli("compare", *args, "--out", tmp_path / "out")
    name = {"sklearn": "scikit-learn"}.get(module, module)
    one_line_error(result, f"elukit compare needs {name}", "pip install 'elukit[experiments]'")
    assert not (tmp_path / "out").exists()


def test_report_and_plot_check_matplotlib_before_reading_anything(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    one_line_error(cli("report", tmp_path / "missing.db", "-o", tmp_path / "r"), "matplotlib", "elukit[experiments]")
    one_line_error(cli("plot", "elu", "-o", tmp_path / "a.png"), "matplotlib", "elukit[plot]")
    one_line_error(cli("propagate", "elu", "-o", tmp_path / "p.png"), "matplotlib", "elukit[plot]")
    assert list(tmp_path.iterdir()) == []


def test_audit_without_mpmath_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpmath", None)
    one_line_error(cli("audit", "--points", "100"), "mpmath", "elukit[accuracy]")


# -- 5. unwritable output paths -------------------------------------------------------------------------

def _unwritable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "sub"  # a folder inside a file: fails for root too


def test_unwritable_output_paths_are_one_line(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    bad = _unwritable(tmp_path)
    one_line_error(cli("compare", *TINY_ARGS, "--out", bad), "--out", "a-file")
    one_line_error(cli("plot", "elu", "-o", bad / "a.png"), "does not exist")
    one_line_error(cli("propagate", "elu", "-o", bad / "p.png"), "does not exist")
    if os.path.isdir("/proc/self"):  # as found: mkdir in /proc fails even as root
        one_line_error(cli("compare", *TINY_ARGS, "--out", "/proc/elukit-x"), "--out", "/proc/elukit-x")
    out = tmp_path / "out"
    assert cli("compare", *TINY_ARGS, "--out", out).exit_code == 0
    one_line_error(cli("report", out / "results.db", "-o", bad), "report folder", "a-file")
    if os.path.isdir("/proc/self"):
        one_line_error(cli("report", out / "results.db", "-o", "/proc/elukit-x"), "/proc/elukit-x")


# -- 6. nothing recorded when loading fails; --resume into an empty folder ---------------------------------

def test_failed_data_load_records_nothing_and_resume_works_after_the_fix(tmp_path, good_npz):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    small = ["--activations", "relu", "--seeds", "2", "--epochs", "2", "--width", "8", "--quiet", "--out", out]
    bad = good_npz(x_train=np.full((30, 3), np.nan))
    one_line_error(cli("compare", "--data", bad, *small), "NaN")
    one_line_error(cli("compare", "--dataset", "nope", *small), "unknown dataset")
    assert not (out / "results.db").exists()
    one_line_error(cli("compare", "--resume", *TINY_ARGS, "--out", tmp_path / "empty"), "--resume", "no results database")
    assert not (tmp_path / "empty").exists()

    assert cli("compare", *TINY_ARGS, "--out", out).exit_code == 0  # study 1
    one_line_error(cli("compare", "--data", bad, *small), "NaN")
    with sqlite3.connect(out / "results.db") as db:
        assert db.execute("SELECT COUNT(*) FROM study").fetchone()[0] == 1
    result = cli("compare", "--resume", *TINY_ARGS, "--out", out)  # study 1 is still the latest
    assert result.exit_code == 0, result.output


# -- 7. --activations "" ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["", " ", ","])
def test_empty_activation_list_is_an_error(tmp_path, value):
    one_line_error(cli("compare", "--activations", value, "--out", tmp_path / "out"), "--activations", "names no activation")
    assert not (tmp_path / "out").exists()


# -- 8. output files follow the umask -----------------------------------------------------------------------

@pytest.fixture
def umask():
    def set_to(value):
        os.umask(value)

    old = os.umask(0o022)
    os.umask(old)
    yield set_to
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_files_follow_the_umask(tmp_path, umask, mask, mode):
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    umask(mask)
    assert cli("plot", "elu", "-o", tmp_path / "a.png").exit_code == 0
    assert cli("compare", *TINY_ARGS, "--out", tmp_path / "out").exit_code == 0
    files = [tmp_path / "a.png", *(tmp_path / "out" / "report").iterdir()]
    assert {path.name for path in files} >= {"a.png", "report.html", "report.md", "learning_curves.png"}
    assert {oct(path.stat().st_mode & 0o777) for path in files} == {oct(mode)}
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary file left behind


# -- 9. python -m elukit.accuracy without ml_dtypes --------------------------------------------------------

def test_accuracy_program_skips_bfloat16_without_ml_dtypes_and_says_so(monkeypatch, capsys):
    pytest.importorskip("mpmath")
    import elukit.accuracy as accuracy

    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    measured = []
    monkeypatch.setattr(accuracy, "accuracy_table", lambda rows, dtypes, *rest, **options: measured.append(list(dtypes)) or [])
    assert accuracy.main(["--points", "100", "--activation", "elu"]) == 0
    assert measured == [["float16", "float32", "float64"]]
    assert "skipped the bfloat16 rows" in capsys.readouterr().err
    assert accuracy.main(["--points", "100", "--dtype", "bfloat16"]) == 2  # asked for explicitly: an error
    err = capsys.readouterr().err
    assert "bfloat16 needs ml_dtypes" in err and len(err.strip().splitlines()) == 1
    assert measured == [["float16", "float32", "float64"]]


def test_accuracy_program_rejects_a_bad_worker_count_in_one_line(capsys):
    import elukit.accuracy as accuracy

    with pytest.raises(SystemExit) as exit_info:
        accuracy.main(["--workers", "-1"])
    assert exit_info.value.code == 2 and "--workers must be >= 1" in capsys.readouterr().err


def test_accuracy_program_without_mpmath_is_one_line(monkeypatch, capsys):
    import elukit.accuracy as accuracy

    monkeypatch.setitem(sys.modules, "mpmath", None)
    assert accuracy.main(["--points", "100"]) == 2
    err = capsys.readouterr().err
    assert "elukit[accuracy]" in err and len(err.strip().splitlines()) == 1


# -- 10. audit says which rows it skipped ----------------------------------------------------------------

def test_audit_says_which_rows_it_skipped(monkeypatch):
    pytest.importorskip("mpmath")
    monkeypatch.setitem(sys.modules, "jax", None)
    result = cli("audit", "--points", "100", "--dtype", "float32", "--activation", "elu")
    assert result.exit_code == 0
    assert "jax.nn rows skipped: JAX is not installed" in result.output
    payload = CliRunner().invoke(main, ["audit", "--points", "100", "--dtype", "float32", "--activation", "elu", "--json"])
    assert json.loads(payload.stdout) and "jax.nn rows skipped" in payload.stderr  # the JSON stays parseable


# -- 12. training time measured after a warm-up that changes nothing ----------------------------------------

def test_warm_up_runs_before_timing_and_changes_no_result(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from elukit.experiments import train
    from elukit.experiments.train import StudyConfig, run_study

    config = StudyConfig(dataset="wine", activations=("relu", "elu"), seeds=2, epochs=2, width=8, batch_size=32)
    store, study = run_study(config, tmp_path / "warm")
    warm = store.metrics(study)
    store.close()
    events = []
    real_warm_up, real_clock = train.warm_up, train.time.perf_counter
    monkeypatch.setattr(train, "warm_up", lambda *a, **k: events.append("warm-up"))
    monkeypatch.setattr(train.time, "perf_counter", lambda: events.append("clock") or real_clock())
    store, study = run_study(config, tmp_path / "cold")
    assert store.metrics(study) == warm  # the warm-up trains a throwaway copy: same bits without it
    store.close()
    condensed = [event for i, event in enumerate(events) if i == 0 or event != events[i - 1]]
    assert condensed == ["warm-up", "clock", "warm-up", "clock"]  # each configuration: warm-up, then its timed epochs
    assert callable(real_warm_up)


# -- 13. the smaller items --------------------------------------------------------------------------------

def test_negative_number_without_double_dash_gets_a_hint():
    result = cli("eval", "elu", "-2.2")
    assert result.exit_code == 2 and "put -- before negative numbers" in result.output and "-- -2.2" in result.output


def test_stats_shows_a_cancelled_mean_as_zero_to_the_shown_precision():
    result = cli("stats", "selu")
    row = result.output.splitlines()[-1].split()
    assert row[:4] == ["selu", "0", "1", "1"]
    mean = json.loads(cli("stats", "selu", "--json").stdout)["rows"][0]["mean"]  # JSON: what was computed, unrounded
    assert abs(mean) < 1e-15


def test_parameter_option_for_an_activation_without_it():
    line = one_line_error(cli("plot", "relu", "leaky_relu", "--alpha", "2"), "--alpha does not apply here")
    assert "relu has no parameters" in line and "leaky_relu takes --slope" in line


def test_plot_does_not_create_missing_folders(tmp_path):
    pytest.importorskip("matplotlib")
    one_line_error(cli("plot", "elu", "-o", tmp_path / "no" / "such" / "a.png"), "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_data_run_records_no_builtin_dataset_and_resume_says_where_it_resumes(tmp_path, good_npz):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from elukit.experiments.train import StudyConfig, run_study

    out = tmp_path / "out"
    args = ["--data", good_npz(), "--activations", "relu,elu", "--seeds", "2", "--epochs", "3", "--width", "8",
            "--quiet", "--out", out]

    def interrupt(progress):
        if progress.label == "elu" and progress.epoch == 2:
            raise KeyboardInterrupt

    config = StudyConfig(data_file=str(good_npz().resolve()), activations=("relu", "elu"), seeds=2, epochs=3, width=8)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, out, progress=interrupt)
    result = cli("compare", "--resume", *args)
    assert result.exit_code == 0, result.output
    assert "resuming study 1" in result.output
    assert "relu: finished earlier (3 epochs), skipped" in result.output
    assert "elu: resuming after epoch 2 of 3" in result.output
    with sqlite3.connect(out / "results.db") as db:
        stored = json.loads(db.execute("SELECT config FROM study").fetchone()[0])
    assert stored["dataset"] is None and stored["data_file"].endswith("data.npz")


def _results(seconds=1.0):
    from elukit.experiments.report import StudyResults

    epochs, seeds = 4, 3
    loss = {"relu": np.array([[2.0, 1.0, 0.5, 0.4, 0.3]] * seeds), "leaky_relu": np.array([[2.0, 1.0, 0.5, 0.4, 0.3]] * seeds),
            "elu": np.array([[2.0, 1.5, 1.0, 0.6, 0.3]] * seeds)}
    network = {label: {"train_loss": curve, "test_loss": curve, "test_accuracy": np.linspace(0.1, 0.9, epochs + 1)[None].repeat(seeds, 0)}
               for label, curve in loss.items()}
    zeros = np.zeros((seeds, 2, epochs + 1))
    layers = {label: {"mean_activation": zeros + 0.5, "dead_fraction": zeros, "gradient_sparsity": zeros + 0.25,
                      "activation_variance": zeros, "gradient_norm": zeros} for label in loss}
    return StudyResults(1, {"dataset": "x"}, list(loss), {label: [0, 1, 2] for label in loss}, network, layers,
                        {label: seconds for label in loss})


def test_report_explains_its_columns_and_names_ties(tmp_path):
    from elukit.experiments.report import _claims, _notes, summary_table

    results = _results()
    rows, target, baseline = summary_table(results, 0.5)
    claims = " ".join(_claims(rows, results))
    assert "relu and leaky_relu, 2 epochs on average (a tie" in claims
    notes = " ".join(_notes(target, True, baseline))
    assert "(k/n) says that k of the n seeds did" in notes and "--target-loss" in notes and "warm-up" in notes


def test_report_figures_use_percent_styles_legends_and_a_sentence_for_all_zero_panels(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from elukit.experiments import report
    from elukit.plots import curves

    figures = {}

    def capture(figure, path):
        figures[path.name] = [(axis.get_ylabel(), axis.get_ylim(), [np.max(line.get_ydata()) for line in axis.get_lines()],
                               [line.get_linestyle() for line in axis.get_lines()], axis.get_legend() is not None,
                               [t.get_text() for t in axis.get_yticklabels(minor=False)])
                              for axis in figure.axes]
        return path

    monkeypatch.setattr(curves, "save_atomically", capture)
    paths, sentences = report._figures(_results(), tmp_path)
    assert "dead_fraction.png" not in figures  # every value 0: one sentence instead of an empty panel
    assert any(s.startswith("Dead units % per layer: 0 in every layer") for s in sentences)
    label, _, peaks, _, legend, _ = figures["gradient_sparsity.png"][0]
    assert "%" in label and max(peaks) == pytest.approx(25.0) and legend
    curves_panels = figures["learning_curves.png"]
    assert max(curves_panels[2][2]) == pytest.approx(90.0)  # test accuracy in percent
    assert all(panel[4] for panel in curves_panels)  # a legend on every panel
    assert len(set(curves_panels[0][3])) == 3  # three activations, three line styles (they overlap here)
    assert not any("10^" in t or "mathdefault" in t for t in curves_panels[0][5])  # log axis in plain numbers


def test_compare_help_and_report_carry_no_stale_timing_figure(tmp_path):
    assert "18 s" not in cli("compare", "--help").output


def test_unwritable_dataset_cache_is_one_line_naming_the_variable(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    pytest.importorskip("mnist1d")
    monkeypatch.setenv("ELUKIT_CACHE", str(_unwritable(tmp_path)))
    one_line_error(cli("compare", "--epochs", "1", "--seeds", "1", "--quiet", "--out", tmp_path / "out"), "ELUKIT_CACHE")
    assert not (tmp_path / "out").exists()
