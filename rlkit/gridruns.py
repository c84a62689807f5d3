"""The runs of a grid directory, read for reports: each run directory parsed into a
:class:`Run`, or skipped with the reason (:class:`Skipped`).

A run directory is a folder holding ``config.json`` (a :class:`rlkit.rundir.RunRecord`) and
``metrics.jsonl``. A malformed or missing file, or a run without any value of the metric (one
that failed before its first evaluation), makes the run skipped, never the whole scan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.rundir import GRID_MANIFEST, RunDirError, RunPaths, RunRecord


class ReportError(ValueError):
    """No run was found, or a run's files are malformed (the message names file and line)."""


@dataclass(frozen=True)
class Run:
    """One run directory, parsed."""

    path: Path
    env: str
    backbone: str
    seed: Any
    rows: list[dict[str, Any]]
    """The rows of ``metrics.jsonl`` in file order, numbers as floats."""
    eval_policy: str = "actor"
    """The policy its evaluations ran (``LoopConfig.eval_policy``)."""
    record: RunRecord | None = None
    """Its ``config.json``."""

    @property
    def finished(self) -> bool:
        """It logged its final evaluation, at its ``--total-steps``: the last thing a run does
        before its final checkpoint (a run stopped or still going has not, nor one killed
        between its last training row and that evaluation). A grid's ``--resume`` keeps the
        same runs."""
        if self.record is None:
            return True
        total = self.record.loop.total_steps
        return any(r["step"] >= total for r in self.rows if "eval_return_mean" in r)

    @property
    def last_step(self) -> float:
        """The step of its last row (0 without rows)."""
        return max((r["step"] for r in self.rows), default=0.0)


@dataclass(frozen=True)
class Skipped:
    """A run directory the report left out, and why."""

    path: Path
    reason: str


def _number(value: Any) -> float | None:
    # RunLogger writes non-finite floats as the strings "nan", "inf", "-inf".
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "infinity"):
        return float(value)
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)


def load_run(run_dir: str | Path, metric: str) -> Run:
    """Parse one run directory; fields other than step, wall_time and ``metric`` that are not
    numbers are dropped.

    Args:
        run_dir: a folder holding ``config.json`` and ``metrics.jsonl``.
        metric: a field that must be a number wherever it appears.

    Returns:
        The run; raises :class:`ReportError` naming the file (and line) when one is malformed.
    """
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    met_path = paths.metrics
    try:
        record = RunRecord.read(run_dir)
    except (RunDirError, OSError) as e:
        raise ReportError(str(e)) from e
    try:
        text = met_path.read_text()
    except FileNotFoundError as e:
        raise ReportError(f"{met_path}: no such file (the run stopped before it logged)") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{met_path}: cannot read it ({e})") from e
    rows = []
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{met_path}:{lineno}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):  # a last line without its newline: a write cut short
                break  # (a kill during it; a resume drops it too)
            raise ReportError(f"{where}: invalid JSON ({e.msg})") from e
        if not isinstance(raw, dict) or "step" not in raw or "wall_time" not in raw:
            raise ReportError(f"{where}: expected an object with 'step' and 'wall_time', "
                              f"got {line.strip()[:80]!r}")
        row = {k: _number(v) for k, v in raw.items()}
        for key in ("step", "wall_time", metric):
            if key in row and row[key] is None:
                raise ReportError(f"{where}: {key!r} must be a number, got {raw[key]!r}")
        rows.append({k: v for k, v in row.items() if v is not None})
    return Run(run_dir, record.env.id, record.model.backbone, record.run.seed, rows,
               record.loop.eval_policy, record)


def scan_runs(grid_dir: str | Path, metric: str = "eval_return_mean",
              exclude: Mapping[Path, str] | None = None, unfinished: bool = False,
              ) -> tuple[list[Run], list[Skipped]]:
    """Every run directory at any depth below ``grid_dir`` (itself included), sorted by path:
    the usable runs, and the skipped ones with the reason.

    Args:
        grid_dir: the folder searched.
        metric: a run without any value of it is skipped.
        exclude: run directories to leave out, with the reason (e.g. failed grid runs);
            they are listed as skipped whether or not they exist.
        unfinished: keep runs without their final evaluation at their ``--total-steps``
            (stopped, or still going), at the step they reached; by default they are skipped. The
            runs a grid's ``grid.json`` lists that have no directory are skipped as never started.

    Raises:
        ReportError: ``grid_dir`` is not a directory, or holds no ``config.json``.
    """
    grid = Path(grid_dir)
    if not grid.is_dir():
        raise ReportError(f"{grid}: not a directory")
    dirs = sorted({p.parent for p in grid.rglob("config.json")})
    if not dirs:
        raise ReportError(f"{grid}: no run directory found (a folder with config.json and "
                          "metrics.jsonl) at any depth")
    excluded = {Path(p).resolve(): why for p, why in (exclude or {}).items()}
    runs, skipped = [], []
    for d in dirs:
        if d.resolve() in excluded:
            skipped.append(Skipped(d, excluded[d.resolve()]))
            continue
        try:
            run = load_run(d, metric)
            series(run, metric)
        except ReportError as e:
            skipped.append(Skipped(d, str(e)))
            continue
        if not unfinished and not run.finished:
            total = run.record.loop.total_steps
            short = " without its final evaluation" if run.last_step >= total else ""
            skipped.append(Skipped(d, f"did not finish: last logged at step {run.last_step:.0f} of "
                                      f"--total-steps {total}{short} (stopped or still going; "
                                      "--unfinished reports it as it is)"))
            continue
        runs.append(run)
    found = {d.resolve() for d in dirs}
    skipped += [Skipped(Path(p), why) for p, why in (exclude or {}).items()
                if Path(p).resolve() not in found]  # excluded runs that never started
    listed = {p.resolve() for p in map(Path, (exclude or {}))}
    skipped += [Skipped(p, "never started (listed in grid.json)") for p in _grid_runs(grid)
                if p.resolve() not in found | listed]
    return runs, sorted(skipped, key=lambda s: str(s.path))


def _grid_runs(grid: Path) -> list[Path]:
    """The run directories that ``grid/grid.json`` lists (none without a readable one)."""
    try:
        names = json.loads((grid / GRID_MANIFEST).read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [grid / name for name in names] if isinstance(names, dict) else []


def find_runs(grid_dir: str | Path, metric: str = "eval_return_mean") -> list[Run]:
    """The usable runs below ``grid_dir`` (see :func:`scan_runs`), sorted by path.

    Raises:
        ReportError: when there is none (the message gives each skipped run's reason).
    """
    runs, skipped = scan_runs(grid_dir, metric)
    if not runs:
        raise ReportError(none_usable(Path(grid_dir), skipped))
    return runs


def none_usable(grid: Path, skipped: list[Skipped]) -> str:
    reasons = "; ".join(f"{s.path}: {s.reason}" if not s.reason.startswith(str(s.path))
                        else s.reason for s in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return f"{grid}: no usable run among {len(skipped)}: {reasons}{more}"


def series(run: Run, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation steps of ``metric`` in ``run`` and its values there (a step logged twice:
    the later row wins).

    Raises:
        ReportError: no row has the metric.
    """
    by_step = {r["step"]: r[metric] for r in run.rows if metric in r}  # later row wins
    if not by_step:
        names = sorted({k for r in run.rows for k in r} - {"step", "wall_time"})
        early = metric.startswith("eval_") and not any(k.startswith("eval_") for k in names)
        raise ReportError(f"{run.path / 'metrics.jsonl'}: no row has the metric {metric!r}"
                          + (" (the run stopped before its first evaluation)" if early else "")
                          + f"; its rows have {', '.join(names) or 'no metric'}")
    steps = np.array(sorted(by_step))
    return steps, np.array([by_step[s] for s in steps])


__all__ = ["ReportError", "Run", "Skipped", "find_runs", "load_run", "none_usable", "scan_runs",
           "series"]
