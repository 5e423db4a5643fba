"""Atomic file writing: readers never see half a file, and a failure leaves no temporary file behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "json_default"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def json_default(value: Any) -> Any:
    """JSON encoding of tensors, numpy values and paths (``json.dumps(default=...)``)."""
    if hasattr(value, "tolist"):  # tensors and numpy arrays / scalars
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def atomic_write_json(data: Any, path: str | os.PathLike) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, json.dumps(data, indent=2, default=json_default).encode("utf-8"))
