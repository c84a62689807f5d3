"""Resuming a run: its saved config merged with the command line, and its last checkpoint.

A run directory (:mod:`rlkit.rundir`) holds ``config.json``, ``metrics.jsonl`` and
``checkpoint.pt`` (with ``checkpoint.prev.pt``, the one before). :func:`merge_config` merges the
run's config with the command line: a value given there (one the command line names, or one
that differs from the dataclass default) must either equal the run's or be one of the fields
that may change on resume.
:func:`load_run_checkpoint` reads the newest readable checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

from rlkit.checkpoint import (
    CheckpointError,
    load_checkpoint,
    previous_path,
    remove_stale_temp_files,
)
from rlkit.fields import flag_names, switch
from rlkit.rundir import RunPaths, holds_files

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    """A value as the command line writes it: ``0.5``, ``gru``, ``64 64`` (a tuple)."""
    if isinstance(value, tuple | list):
        return " ".join(map(str, value)) or "(none)"
    return str(value) if value != "" else "''"


def merge_config(requested: T, saved: T, may_change: Collection[str],
                 keep: Collection[str] = (), given: Collection[str] = ()) -> T:
    """The run's saved config with the changes asked for, section by section.

    Args:
        requested: the config from the command line (a dataclass of sections); a field that
            differs from the class default counts as given.
        saved: the run's config, of the same class.
        may_change: field names a given value replaces (e.g. ``total_steps``).
        keep: field names taken from ``requested`` as they are (e.g. ``resume``).
        given: names of the fields that the command line gave: they count as given even at
            the class default (``--total-steps 15000`` where 15000 is the default, or
            ``--backbone mlp`` on a run of the GRU, which is refused).

    Raises:
        ValueError: a given field outside ``may_change`` differs from the run's, e.g.
            ``--resume: the run has --backbone gru, not lstm; only --total-steps, ... may
            change when resuming``.
    """
    return _merge(requested, saved, type(requested)(), may_change, keep, given, "")


def _merge(requested: Any, saved: Any, default: Any, may_change: Collection[str],
           keep: Collection[str], given: Collection[str], prefix: str) -> Any:
    values = {}
    flags = flag_names(type(requested), prefix)
    for f in dataclasses.fields(requested):
        asked, base, old = (getattr(c, f.name) for c in (requested, default, saved))
        if f.name in keep:
            values[f.name] = asked
        elif dataclasses.is_dataclass(asked):
            section = flags[f.name] + "." if flags[f.name] else ""
            values[f.name] = _merge(asked, old, base, may_change, keep, given, section)
        elif f.name in given and f.name in may_change:
            values[f.name] = asked
        elif asked == old or (asked == base and f.name not in given):
            values[f.name] = old
        elif f.name in may_change:
            values[f.name] = asked
        else:
            allowed = ", ".join(_flag(n) for n in may_change)
            name = flags[f.name]
            has, wants = ((switch(name, old), switch(name, asked)) if isinstance(old, bool)
                          else (f"--{name} {_shown(old)}", _shown(asked)))
            raise ValueError(f"--resume: the run has {has}, not {wants}; only {allowed} may "
                             "change when resuming")
    return type(requested)(**values)


def check_run_dir(run_dir: str | Path) -> None:
    """Refuse a ``--resume`` path that is not a run directory.

    Raises:
        ValueError: it does not exist, is not a directory, or has no ``config.json``.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ValueError(f"--resume {run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise ValueError(f"--resume {run_dir}: is a file, not a run directory")
    if RunPaths(run_dir).config.is_file():
        return
    if holds_files(run_dir):
        raise ValueError(f"--resume {run_dir}: not a run directory (no config.json, and files "
                         "that a run does not write before it); expected the directory of a "
                         "run of train.py")
    raise ValueError(f"--resume {run_dir}: not a run directory (no config.json); a run "
                     "stopped while starting, before it wrote config.json, has nothing to "
                     "resume: start it again with the same --run-dir")


def load_run_checkpoint(run_dir: str | Path, name: str = "checkpoint.pt") -> dict[str, Any]:
    """The newest readable checkpoint of a run (``name``, else the one kept before it).

    Deletes temporary files that a killed write left behind (call it only while holding the
    run's lock). When ``name`` cannot be read but the previous checkpoint can, warns and
    returns the previous one, and renames the unreadable file to ``NAME.corrupt.EXT`` (kept
    for a look, and out of the way: the next save would otherwise keep it as the previous
    checkpoint in place of the good one); a directory in place of ``name`` is refused
    outright (the run could not write its next checkpoint there).

    Raises:
        ValueError: ``run_dir`` is not a run directory (missing, or no ``config.json``).
        CheckpointError: no readable checkpoint (the message says why, for each file tried).
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    path = run_dir / name
    remove_stale_temp_files(path)
    try:
        return load_checkpoint(path)
    except CheckpointError as newest:
        prev = previous_path(path)
        if path.is_dir():  # it could not be written over either: refuse now, not mid-run
            raise CheckpointError(f"--resume {run_dir}: {newest}") from newest
        if not prev.is_file():
            raise CheckpointError(f"--resume {run_dir}: {newest}") from newest
        try:
            ckpt = load_checkpoint(prev)
        except CheckpointError as older:
            raise CheckpointError(f"--resume {run_dir}: {newest}; and {older}") from older
        kept = ""
        if path.is_file():  # set aside, so that the next save does not make it the previous one
            aside = _aside_path(path)
            os.replace(path, aside)
            kept = f"; the unreadable file is kept as {aside.name}"
        warnings.warn(f"{newest}; resuming from {prev.name} (step {ckpt.get('step')}) "
                      f"instead{kept}", stacklevel=2)
        return ckpt


def _aside_path(path: Path) -> Path:
    """A free name for an unreadable checkpoint set aside: ``NAME.corrupt.EXT``, else
    ``NAME.corrupt-2.EXT``, ``-3``, ..."""
    aside = path.with_name(f"{path.stem}.corrupt{path.suffix}")
    n = 2
    while aside.exists():
        aside = path.with_name(f"{path.stem}.corrupt-{n}{path.suffix}")
        n += 1
    return aside


__all__ = ["check_run_dir", "load_run_checkpoint", "merge_config"]
