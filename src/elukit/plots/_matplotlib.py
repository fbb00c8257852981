"""Import matplotlib with a non-interactive backend, or explain how to install it."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install 'elukit[plot]'") from error
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


SUPPORTED_FORMATS = (".png", ".svg", ".pdf")


def check_output_path(path: Any) -> str:
    """The suffix of `path` if matplotlib can write it, else ValueError naming the argument."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_FORMATS:
        raise ValueError(f"output {str(path)!r} must end in one of {', '.join(SUPPORTED_FORMATS)}")
    return suffix
