"""Import matplotlib with a non-interactive backend, or explain how to install it."""

from __future__ import annotations

from typing import Any


MISSING_MATPLOTLIB = "plotting needs matplotlib: pip install 'elukit[plot]'"


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(MISSING_MATPLOTLIB) from error
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


SUPPORTED_FORMATS = (".png", ".svg", ".pdf")


def check_output_path(path: Any, writable: bool = False) -> str:
    """The suffix of `path` if matplotlib can write it, else ValueError naming the argument.
    With `writable`, also that its folder exists and can hold a new file (checked before any work)."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_FORMATS:
        raise ValueError(f"output {str(path)!r} must end in one of {', '.join(SUPPORTED_FORMATS)}")
    if writable:
        from elukit._files import check_output_file

        check_output_file(path, "output")
    return suffix
