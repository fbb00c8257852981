"""Import torch or explain how to install it."""

from __future__ import annotations

try:
    import torch
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("elukit.torch needs PyTorch: pip install 'elukit[torch]'") from error

__all__ = ["torch"]
