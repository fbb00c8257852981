"""`elukit compare` through the real CLI: what its report may and may not conclude (issue 18).

Each case is a study a user can run: two seeds, a diverged study, an interrupted one, two studies
into one --out at once, and a rerun into the same --out."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from click.testing import CliRunner  # noqa: E402

from elukit.cli.app import main  # noqa: E402

SMALL = ["--dataset", "wine", "--width", "8", "--quiet"]


def compare(out, *args):
    return CliRunner().invoke(main, ["compare", *SMALL, "--out", str(out), *args])


def report(out):
    return (out / "report" / "report.md").read_text()


def test_two_seeds_conclude_nothing_and_print_no_p_value(tmp_path):
    result = compare(tmp_path, "--seeds", "2", "--epochs", "3", "--activations", "relu,elu")
    assert result.exit_code == 0, result.output
    text = report(tmp_path)
    assert "p<0.001" not in text and "p = 0" not in text and "paired bootstrap" not in text
    assert "elu vs relu:" in text and "not tested (n too small, 2 seeds): no conclusion" in text
    assert "trained: 2 seeds (seeds 0-1) of the 2 planned" in text


def test_conclusions_state_each_comparison_with_its_family_interval_test_and_power(tmp_path):
    result = compare(tmp_path, "--seeds", "4", "--epochs", "4", "--activations", "relu,elu,sigmoid")
    assert result.exit_code == 0, result.output
    text = report(tmp_path)
    conclusions = text.split("## Conclusions")[1].split("|")[0]
    assert "(97.5% interval, test accuracy vs relu: 2 comparisons)" in conclusions
    assert "paired t, n=4" in conclusions and "p adjusted" in conclusions
    assert any(phrase in conclusions for phrase in ("no detectable difference at 4 seeds", "higher than relu at 4 seeds",
                                                    "a significant deficit against relu at 4 seeds"))
    command = "elukit compare --dataset wine --activations relu,elu,sigmoid --seeds 4 --epochs 4 --width 8 --out"
    assert f"Made by `{command} {tmp_path} --quiet` with elukit 0.1.0" in text and "torch thread" in text


def test_a_diverged_study_is_marked_and_left_out_of_the_means(tmp_path):
    result = compare(tmp_path, "--seeds", "3", "--epochs", "2", "--activations", "relu,elu", "--optimizer", "sgd",
                     "--lr", "1e6")
    assert result.exit_code == 0, result.output
    text = report(tmp_path)
    assert "elu: 3 of 3 seeds diverged (non-finite loss; diverged at epoch 1)" in text
    assert re.search(r"relu: [123] of 3 seeds diverged", text)
    assert "+nan" not in text and "[nan" not in text and "| 3 (3 diverged) | n/a |" in text


def test_an_interrupted_study_is_marked_incomplete_with_what_was_trained(tmp_path):
    from elukit.experiments.report import build_report
    from elukit.experiments.train import StudyConfig, run_study

    calls = []

    def stop_after_two_epochs(progress):
        calls.append(progress)
        if progress.label == "elu" and progress.epoch == 2:
            raise KeyboardInterrupt

    config = StudyConfig(dataset="wine", activations=("relu", "elu", "selu"), seeds=3, epochs=4, width=8)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, tmp_path, progress=stop_after_two_epochs)
    build_report(tmp_path / "results.db", tmp_path / "report")
    text = report(tmp_path)
    assert text.startswith("# elukit compare report (incomplete)")
    assert "Incomplete study: trained relu 4 of 4 epochs, elu 2 of 4 epochs; not started: selu" in text
    assert "compared at epoch 2 of the 4 epochs planned" in text


def test_two_studies_into_one_out_never_mix(tmp_path):
    """The second process is refused in one line naming the first, which finishes normally."""
    first = subprocess.Popen([sys.executable, "-m", "elukit.cli.app", "compare", *SMALL, "--out", str(tmp_path),
                              "--seeds", "2", "--epochs", "40", "--activations", "relu"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        lock = tmp_path / ".elukit.lock"
        while not (lock.exists() and lock.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.1)
        # paused while the second one runs, so that it cannot finish (and free the lock) first: on a
        # loaded machine it sometimes did, in the seconds the second process takes to import torch
        os.kill(first.pid, signal.SIGSTOP)
        second = subprocess.run([sys.executable, "-m", "elukit.cli.app", "compare", *SMALL, "--out", str(tmp_path),
                                 "--seeds", "2", "--epochs", "2", "--activations", "elu"],
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"in use by another elukit process (pid {first.pid}" in lines[0]
        assert "--activations relu" in lines[0]
    finally:
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert str(tmp_path / "report" / "report.html") in out
    assert json.loads((tmp_path / "report" / "study.json").read_text())["study"] == 1


def test_a_rerun_keeps_the_earlier_report_and_says_where(tmp_path):
    assert compare(tmp_path, "--seeds", "2", "--epochs", "1", "--activations", "relu").exit_code == 0
    first = report(tmp_path)
    result = compare(tmp_path, "--seeds", "2", "--epochs", "1", "--activations", "elu")
    assert result.exit_code == 0, result.output
    assert f"is kept in {tmp_path / 'report-study-1'}" in result.output
    assert (tmp_path / "report-study-1" / "report.md").read_text() == first
    assert "Study 2:" in report(tmp_path)
    rebuilt = CliRunner().invoke(main, ["report", str(tmp_path / "results.db"), "-o", str(tmp_path / "report")])
    assert rebuilt.exit_code == 0 and "kept in" not in rebuilt.output  # the same study: rebuilt in place


def test_one_seed_prints_no_nan_interval(tmp_path):
    result = compare(tmp_path, "--seeds", "1", "--epochs", "1", "--activations", "relu,elu")
    assert result.exit_code == 0, result.output
    text = report(tmp_path)
    assert "nan" not in text.replace(str(tmp_path), "")
    assert "[+nan" not in text and "(1 seed: no interval)" in text and "1 seeds" not in text and "1 epochs" not in text
