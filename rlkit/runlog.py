"""Metrics of a run: ``metrics.jsonl`` in its run directory, and W&B without ever blocking.

W&B modes: ``disabled``; ``offline`` (written under the run directory, ``wandb sync`` later);
``online`` only when an API key is configured and the W&B host answers within a second,
otherwise it falls back to ``offline`` with one warning.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from rlkit.rundir import RunPaths

WandbMode = Literal["disabled", "offline", "online"]


def _wandb_reachable(timeout: float = 1.0) -> bool:
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    host = host.split("/")[0]
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def resolve_wandb_mode(mode: WandbMode) -> WandbMode:
    """The mode actually used: ``online`` falls back to ``offline`` (one warning) without a key
    or without network."""
    if mode not in ("disabled", "offline", "online"):
        raise ValueError(f"wandb mode must be disabled, offline or online, got {mode!r}")
    if mode == "online":
        if not _wandb_has_key():
            warnings.warn("W&B: no API key found; logging offline (sync later with `wandb sync`)",
                          stacklevel=2)
            return "offline"
        if not _wandb_reachable():
            warnings.warn("W&B: server unreachable; logging offline (sync later with "
                          "`wandb sync`)", stacklevel=2)
            return "offline"
    return mode


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunLogger:
    """Appends to ``metrics.jsonl`` in ``run_dir`` and mirrors to W&B.

    Args:
        run_dir: the run directory (created; the caller decides whether it may exist).
        config: the run's config for W&B (JSON-serialisable; ``config.json`` is written by
            :class:`rlkit.rundir.RunRecord`).
        wandb_mode: see the module docstring.
        project: W&B project.
        group: W&B group (runs of a grid share it).
        name: W&B run name.
        tags: W&B tags.
        resume_id: the W&B run id to append to (a new run gets this id when none has it).
        elapsed: seconds a resumed run already ran; ``wall_time`` continues from there.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        wandb_mode: WandbMode = "disabled",
        project: str = "rlkit",
        group: str | None = None,
        name: str | None = None,
        tags: tuple[str, ...] = (),
        resume_id: str | None = None,
        elapsed: float = 0.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(RunPaths(self.run_dir).metrics, "a", buffering=1)  # noqa: SIM115
        self._t0 = time.time() - elapsed
        self.wandb_mode = resolve_wandb_mode(wandb_mode)
        self._wandb = None
        if self.wandb_mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            self._wandb = wandb.init(
                project=project,
                group=group,
                name=name,
                tags=list(tags),
                config=config,
                dir=str(self.run_dir),
                mode=self.wandb_mode,
                id=resume_id,
                resume="allow" if resume_id else None,
                settings=wandb.Settings(init_timeout=30, console="off"),
            )

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (resumed runs included)."""
        return time.time() - self._t0

    @property
    def wandb_run_id(self) -> str | None:
        return None if self._wandb is None else self._wandb.id

    def log(self, step: int, metrics: dict[str, Any], wall_time: float | None = None) -> None:
        """Append one event: ``{"step", "wall_time", **metrics}``."""
        wall = time.time() - self._t0 if wall_time is None else wall_time
        row = {"step": int(step), "wall_time": round(wall, 3)}
        row.update({k: _jsonable(v) for k, v in metrics.items()})
        self._metrics.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(step))

    def close(self) -> None:
        self._metrics.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All events of a run's ``metrics.jsonl``."""
    path = RunPaths(Path(run_dir)).metrics
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: str | Path, step: int) -> int:
    """Drop the events logged after ``step`` from a run's ``metrics.jsonl`` (atomically).

    A resumed run calls this with its checkpoint's step, so the events it logs again are not
    duplicated. A last line cut short by a crash is dropped too.

    Returns:
        The number of lines dropped.
    """
    path = RunPaths(Path(run_dir)).metrics
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if int(row.get("step", 0)) <= step:
            kept.append(line)
        else:
            dropped += 1
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)
    return dropped
