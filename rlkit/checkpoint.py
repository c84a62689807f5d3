"""Versioned checkpoints: dicts of state dicts, written atomically, loaded with weights_only."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
"""Bumped whenever the layout of a checkpoint changes."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded: unreadable, unsafe, or not of this format."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus ``format_version``) to ``path`` atomically.

    The data goes to a temporary file in the same directory, is flushed to disk, and then
    renamed over ``path``: a crash mid-write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and check its format version.

    Raises:
        CheckpointError: if the file is missing, truncated, carries code (a pickle that is not
            plain data), or has another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-data checkpoint ({e})"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or corrupt ({e})") from e
    if not isinstance(data, dict) or "format_version" not in data:
        raise CheckpointError(f"{path} is not an rlkit checkpoint (no format_version)")
    if data["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {data['format_version']}, expected {FORMAT_VERSION}"
        )
    return data
