"""Every ```python block of docs/*.md runs as written, each in a fresh interpreter in a temporary
folder (issue 22: the Keras example raised NameError and used the deprecated `input_shape`), and
the one line the Keras example documents for loading is the one that is needed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

NOT_RUN = {
    ("claims.md", "Claim("): "the shape of a claim record, with the names of its measurements, not a script",
}
"""(page, how the block starts) -> why that block is an illustration rather than an example."""


def python_blocks():
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            line = text[:match.start()].count("\n") + 2
            found.append(pytest.param(page.name, line, match.group(1), id=f"{page.name}:{line}"))
    return found


def run(code: str, folder: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}  # each example sets its own
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout)


NEEDS = {"jax": "jax", "flax": "flax", "keras": "keras"}


@pytest.mark.parametrize("page, line, code", python_blocks())
def test_docs_python_block_runs(page, line, code, tmp_path):
    for (skipped_page, start), why in NOT_RUN.items():
        if page == skipped_page and code.startswith(start):
            pytest.skip(f"docs/{page}:{line}: {why}")
    for word, module in NEEDS.items():
        if re.search(rf"^\s*(import|from) {word}\b", code, flags=re.M) and importlib.util.find_spec(module) is None:
            pytest.skip(f"docs/{page}:{line} needs {module}, not installed")
    done = run(code, tmp_path)
    assert done.returncode == 0, f"docs/{page}:{line}\n{done.stderr[-3000:]}"
    assert "Warning" not in done.stderr, done.stderr[-3000:]  # e.g. Keras's deprecated input_shape


SAVE = textwrap.dedent("""
    import os
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import elukit.keras
    activation = {activation}
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3), keras.layers.Activation(activation)])
    model.save("model.keras")
""")

LOAD = textwrap.dedent("""
    import os
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    {import_line}
    model = keras.saving.load_model("model.keras")
    print(type(model).__name__)
""")


@pytest.mark.parametrize("activation", ["keras", "elukit"])
def test_a_saved_model_loads_after_the_one_documented_import(activation, tmp_path):
    """Control: Keras's own 'elu' loads with no import. elukit's loads after `import elukit.keras`,
    and without it fails as docs/jax-keras.md says (Keras imports no third-party module itself)."""
    for module in ("keras", "jax"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    chosen = '"elu"' if activation == "keras" else "elukit.keras.activations.elu"
    saved = run(SAVE.format(activation=chosen), tmp_path)
    assert saved.returncode == 0, saved.stderr[-3000:]
    loaded = run(LOAD.format(import_line="import elukit.keras"), tmp_path)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "Sequential", loaded.stderr[-3000:]
    bare = run(LOAD.format(import_line=""), tmp_path)
    if activation == "keras":
        assert bare.returncode == 0, bare.stderr[-3000:]
    else:
        assert bare.returncode != 0 and "TypeError" in bare.stderr and "Could not locate function 'elukit>elu'" in bare.stderr
        assert "import elukit.keras" in (DOCS / "jax-keras.md").read_text(encoding="utf-8").split(
            "keras.saving.load_model", 1)[0].rsplit("```python", 1)[1]  # the line sits next to the example
