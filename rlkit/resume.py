"""Resuming a run: its saved config merged with the command line, and its last checkpoint.

A run directory holds ``config.json`` (the resolved config), ``metrics.jsonl`` and
``checkpoint.pt`` (with ``checkpoint.prev.pt``, the one before). :func:`merge_config` rebuilds
the run's config dataclass from ``config.json``; a value given on the command line (one that
differs from the dataclass default) must either equal the run's or be one of the fields that
may change on resume. :func:`load_run_checkpoint` reads the newest readable checkpoint.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

from rlkit.checkpoint import (
    CheckpointError,
    load_checkpoint,
    previous_path,
    remove_stale_temp_files,
)

T = TypeVar("T")


def _like(default: Any, value: Any) -> Any:
    """``value`` read from JSON, in the type of ``default`` (dataclasses, tuples)."""
    if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
        names = {f.name for f in dataclasses.fields(default)}
        kwargs = {k: _like(getattr(default, k), v) for k, v in value.items() if k in names}
        return dataclasses.replace(default, **kwargs)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def merge_config(requested: T, saved: Mapping[str, Any], may_change: Collection[str],
                 keep: Collection[str] = ()) -> T:
    """The run's saved config as a ``type(requested)`` dataclass, with the changes asked for.

    Args:
        requested: the config from the command line; a field that differs from the class
            default counts as given.
        saved: the run's ``config.json``.
        may_change: fields a given value replaces (e.g. ``total_steps``).
        keep: fields taken from ``requested`` as they are (e.g. ``resume``).

    Raises:
        ValueError: a given field outside ``may_change`` differs from the run's, e.g.
            ``--resume: run backbone 'gru' != requested backbone 'lstm'``.
    """
    cls = type(requested)
    default = cls()
    values = {}
    for f in dataclasses.fields(cls):
        asked, base = getattr(requested, f.name), getattr(default, f.name)
        if f.name in keep or f.name not in saved:  # fields newer than the run: as asked
            values[f.name] = asked
            continue
        old = _like(base, saved[f.name])
        if asked == base or asked == old:
            values[f.name] = old
        elif f.name in may_change:
            values[f.name] = asked
        else:
            allowed = ", ".join(_flag(n) for n in may_change)
            raise ValueError(f"--resume: run {f.name} {old!r} != requested {f.name} {asked!r}; "
                             f"only {allowed} may change when resuming")
    return cls(**values)


def load_run_checkpoint(run_dir: str | Path, name: str = "checkpoint.pt") -> dict[str, Any]:
    """The newest readable checkpoint of a run (``name``, else the one kept before it).

    Deletes temporary files that a killed write left behind. When ``name`` cannot be read but
    the previous checkpoint can, warns and returns the previous one.

    Raises:
        ValueError: ``run_dir`` is not a run directory (missing, or no ``config.json``).
        CheckpointError: no readable checkpoint (the message says why, for each file tried).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"--resume {run_dir}: no such run directory")
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"--resume {run_dir}: not a run directory (no config.json)")
    path = run_dir / name
    remove_stale_temp_files(path)
    try:
        return load_checkpoint(path)
    except CheckpointError as newest:
        prev = previous_path(path)
        if not prev.is_file():
            raise CheckpointError(f"--resume {run_dir}: {newest}") from newest
        try:
            ckpt = load_checkpoint(prev)
        except CheckpointError as older:
            raise CheckpointError(f"--resume {run_dir}: {newest}; and {older}") from older
        warnings.warn(f"{newest}; resuming from {prev.name} (step {ckpt.get('step')}) instead",
                      stacklevel=2)
        return ckpt
