"""Every code block of README.md runs as written, so the README cannot drift from the code.

- ```python blocks are executed, each in a fresh namespace, in a temporary folder. A block that
  needs an optional package that is not installed is skipped, naming it; any other ImportError
  (a name that no longer exists) fails.
- ```bash blocks: each `elukit ...` and `python -m elukit...` command is run through the real entry
  point, in a copy of a folder where a tiny default study has been run and `mydata.npz` exists
  (so `--resume`, `report` and `--data mydata.npz` examples work), on tiny settings (`SHRINK`);
  each command in its own copy of that folder, since each is an example, not a step of a script.
  `pip` lines (the quick start's installs) are not run; CI runs the test command itself.

New README sections need nothing here: their blocks are found and run the same way. A new verb
that trains or runs long (a claims ledger, say) needs a SHRINK entry to stay within seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

README = Path(__file__).resolve().parent.parent / "README.md"

SHRINK: dict[str, dict[str, str]] = {
    "compare": {"--epochs": "1", "--seeds": "1", "--threads": "1", "--quiet": ""},
    "claims": {"--profile": "tiny", "--quiet": ""},
    "audit": {"--points": "100", "--dtype": "float32"},
    "elukit.accuracy": {"--points": "100", "--dtype": "float32", "--quantity": "value", "--workers": "1",
                        "--activation": "elu"},
}
"""Options set on each verb (replacing the README's value where it gives one) so that the examples
run in seconds: the README's commands are real, their sizes are not what is being tested."""

NOT_RUN = ("pip ",)


def blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, first line number, code) of each fenced block."""
    found = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        found.append((match.group(1), text[:match.start()].count("\n") + 2, match.group(2)))
    return found


def shrink(args: list[str], verb: str) -> list[str]:
    settings = SHRINK.get(verb, {})
    result, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg in settings:
            skip = bool(settings[arg]) and i + 1 < len(args) and not args[i + 1].startswith("--")
            continue
        result.append(arg)
    for option, value in settings.items():
        result += [option] + ([value] if value else [])
    return result


def commands(code: str) -> list[list[str]]:
    """The commands of a bash block, `&&` chains split; lines starting with NOT_RUN dropped."""
    found = []
    for line in code.splitlines():
        if line.startswith(NOT_RUN):
            continue
        for part in re.split(r"\s&&\s", line):
            words = shlex.split(part, comments=True)
            if words and not " ".join(words).startswith(NOT_RUN):
                found.append(words)
    return found


ALL_BLOCKS = [b for b in blocks(README.read_text(encoding="utf-8")) if b[0] in ("python", "bash")]


def _missing_optional(error: ImportError) -> str | None:
    """The optional package an ImportError is about, or None if it is a real failure."""
    message = str(error)
    if "pip install 'elukit[" in message or "pip install " in message:
        return message
    name = getattr(error, "name", None)
    if name and importlib.util.find_spec(name.split(".")[0]) is None:
        return f"{name} is not installed"
    return None


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A folder holding a tiny default study (elukit-results/) and mydata.npz; MNIST-1D is cached
    in a temporary ELUKIT_CACHE, not in the user's home."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from elukit.cli.app import main

    folder = tmp_path_factory.mktemp("readme")
    rng = np.random.default_rng(0)
    np.savez(folder / "mydata.npz", x_train=rng.normal(size=(60, 5)), y_train=np.arange(60) % 3,
             x_test=rng.normal(size=(15, 5)), y_test=np.arange(15) % 3)
    saved_cache, saved_cwd = os.environ.get("ELUKIT_CACHE"), os.getcwd()
    os.environ["ELUKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        os.chdir(folder)
        result = CliRunner().invoke(main, shrink(["compare"], "compare"))
        assert result.exit_code == 0, result.output
        os.chdir(saved_cwd)
        yield folder
    finally:
        os.chdir(saved_cwd)
        if saved_cache is None:
            os.environ.pop("ELUKIT_CACHE", None)
        else:
            os.environ["ELUKIT_CACHE"] = saved_cache


@pytest.mark.parametrize("language,line,code", ALL_BLOCKS,
                         ids=[f"{language}-line{line}" for language, line, _ in ALL_BLOCKS])
def test_readme_block_runs(language, line, code, tmp_path, monkeypatch, request):
    if language == "python":
        monkeypatch.chdir(tmp_path)
        try:
            exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
        except ImportError as error:
            reason = _missing_optional(error)
            if reason is None:
                raise
            pytest.skip(f"README.md line {line} needs an optional package: {reason}")
        return
    runnable = [c for c in commands(code) if c[0] == "elukit" or c[:3] == ["python", "-m", "elukit.accuracy"]]
    if not runnable:
        pytest.skip(f"README.md line {line}: no elukit command to run")
    from elukit.cli.app import main

    folder = request.getfixturevalue("prepared")
    for index, words in enumerate(runnable):  # each example on its own, as a reader would try it
        work = tmp_path / f"work{index}"
        shutil.copytree(folder, work)
        monkeypatch.chdir(work)
        if words[0] == "python":
            from elukit.accuracy import main as accuracy_main

            pytest.importorskip("mpmath")
            assert accuracy_main(shrink(words[3:], "elukit.accuracy")) == 0, words
            continue
        args = shrink(words[1:], words[1]) if len(words) > 1 else []
        result = CliRunner().invoke(main, args)
        if result.exit_code != 0 and "pip install 'elukit[" in result.output:
            pytest.skip(f"README.md line {line}: {' '.join(words)} needs an optional package: {result.output.strip()}")
        assert result.exit_code == 0, f"README.md line {line}: {' '.join(words)}\n{result.output}"


def test_ci_runs_exactly_the_readme_test_command():
    quick_start = next(code for language, _, code in ALL_BLOCKS if language == "bash")
    test_command = quick_start.strip().splitlines()[1]
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command
    assert quick_start.strip().splitlines()[0] == "pip install torch==2.13.0 -e '.[experiments]' && elukit compare"
    assert len(quick_start.strip().splitlines()) == 2


def test_shrink_replaces_given_values_and_adds_missing_ones():
    assert shrink(["--epochs", "20", "--model", "cnn", "--quiet"], "compare") == [
        "--model", "cnn", "--epochs", "1", "--seeds", "1", "--threads", "1", "--quiet"]
    assert commands("elukit list   # a comment\npip install x && elukit compare\nelukit a && elukit b") == [
        ["elukit", "list"], ["elukit", "a"], ["elukit", "b"]]


def test_only_a_missing_optional_package_skips_a_python_block():
    absent = ModuleNotFoundError("No module named 'surely_not_installed_pkg'", name="surely_not_installed_pkg")
    assert "surely_not_installed_pkg" in _missing_optional(absent)
    assert _missing_optional(ImportError("elukit.jax needs JAX: pip install 'elukit[jax]'")) is not None
    assert _missing_optional(ImportError("cannot import name 'nope' from 'elukit'", name="elukit")) is None
    assert _missing_optional(ModuleNotFoundError("No module named 'elukit.nope'", name="elukit.nope")) is None
