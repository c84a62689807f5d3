"""What a run directory holds, owned by this one module.

::

    RUN_DIR/
      config.json          a RunRecord: the resolved config and the facts of the run
      metrics.jsonl        one JSON object per log event (step, wall_time, metrics)
      checkpoint.pt        the newest checkpoint (rlkit.checkpoint); checkpoint.prev.pt before it
      diagnostic.pt        written when a loss became non-finite
      videos/              evaluation videos
      wandb/               W&B's offline files

:class:`RunRecord` is the typed content of ``config.json``: the config sections of
:mod:`rlkit.config`, the agent's resolved hyper-parameters (a dict in the agent's own schema),
and what building the run fixed (window length, dimensions, action bounds, device, W&B id).
Training writes it, resume and evaluation rebuild the run from it, reports group runs by it.
``config.json`` files written before the sections existed (schema 1, flat keys) are read and
converted.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.config import (
    EnvConfig,
    GridConfig,
    LoopConfig,
    ModelConfig,
    NoiseConfig,
    ReplayConfig,
    RunConfig,
)

SCHEMA = 2
"""Version of ``config.json`` (1: flat keys; 2: sections)."""

SECTIONS: dict[str, type] = {
    "run": RunConfig, "env": EnvConfig, "replay": ReplayConfig, "model": ModelConfig,
    "noise": NoiseConfig, "loop": LoopConfig, "grid": GridConfig,
}
"""The config sections a record holds, by name."""

IDENTITY = ("env.id", "model.backbone", "run.seed", "env.num_envs", "model.d_model",
            "model.n_layers", "model.context", "replay.state_mode", "replay.burn_in",
            "replay.buffer_size", "replay.seq_len", "obs_dim", "action_dim", "agent")
"""Entries a checkpoint must share with the run directory it resumes."""

_SCHEMA1_NAMES = {"env.id": "env", "noise.kind": "noise", "noise.sigma": "noise_sigma"}


class RunDirError(ValueError):
    """A run directory's ``config.json`` is missing or malformed (the message names it)."""


@dataclass(frozen=True)
class RunPaths:
    """The files of a run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def diagnostic(self) -> Path:
        return self.root / "diagnostic.pt"

    @property
    def videos(self) -> Path:
        return self.root / "videos"


@dataclass(frozen=True)
class RunRecord:
    """The content of ``config.json``: everything needed to rebuild, resume or compare a run."""

    run: RunConfig
    env: EnvConfig
    replay: ReplayConfig
    model: ModelConfig
    noise: NoiseConfig
    loop: LoopConfig
    grid: GridConfig
    agent: dict[str, Any]
    """The agent's resolved hyper-parameters (what it was built with)."""
    obs_dim: int
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    device: str
    """The device the run trained on (``--device auto`` resolved)."""
    wandb_run_id: str | None = None
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        # JSON's view of the agent's values (tuples as lists), as config.json holds them
        object.__setattr__(self, "agent", json.loads(json.dumps(self.agent)))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: Any, where: str = "config") -> RunRecord:
        """Parse (and validate) a record; schema-1 dicts are converted.

        Raises:
            RunDirError: not an object, an unknown schema, a missing or unknown field, or a
                value its section refuses; the message starts with ``where``.
        """
        if not isinstance(data, dict):
            raise RunDirError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if "schema" not in data:
            data = _from_schema1(data)
        if data.get("schema") != SCHEMA:
            raise RunDirError(f"{where}: schema {data.get('schema')!r} is not one this version "
                              f"reads (expected {SCHEMA})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = set(data) - names, {
            f.name for f in dataclasses.fields(cls)
            if f.name not in data and f.default is dataclasses.MISSING}
        if unknown or missing:
            raise RunDirError(f"{where}: unknown field(s) {sorted(unknown)}, missing field(s) "
                              f"{sorted(missing)}")
        values = dict(data)
        try:
            for name, section in SECTIONS.items():
                values[name] = _section(section, data[name], f"{where}: {name}")
            for name in ("action_low", "action_high"):
                values[name] = tuple(float(x) for x in data[name])
            if not isinstance(data["agent"], dict):
                raise RunDirError(f"{where}: agent must be an object")
            return cls(**values)
        except (TypeError, ValueError) as e:
            if isinstance(e, RunDirError):
                raise
            raise RunDirError(f"{where}: {e}") from e

    def write(self, run_dir: str | Path) -> None:
        """Write ``run_dir/config.json``."""
        RunPaths(Path(run_dir)).config.write_text(
            json.dumps(self.to_json(), indent=2, sort_keys=True))

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord:
        """The record of ``run_dir``.

        Raises:
            RunDirError: no ``config.json``, or one that is not a valid record.
        """
        path = RunPaths(Path(run_dir)).config
        if not path.is_file():
            raise RunDirError(f"{run_dir} is not a run directory (no config.json)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"{path}: not valid JSON ({e})") from e
        return cls.from_json(data, str(path))

    def get(self, dotted: str) -> Any:
        """A field by dotted path: ``"model.backbone"``, ``"obs_dim"``."""
        value: Any = self
        for part in dotted.split("."):
            value = getattr(value, part)
        return value

    def check_same_run(self, other: RunRecord, what: str = "checkpoint") -> None:
        """Raise ``ValueError`` naming the first :data:`IDENTITY` entry where ``other`` (e.g.
        a checkpoint's record) differs from this one."""
        for key in IDENTITY:
            mine, theirs = self.get(key), other.get(key)
            if mine != theirs:
                raise ValueError(f"{what} is of another run: {key} is {theirs!r} there, "
                                 f"{mine!r} in this run's config.json")


def fresh_dir(given: str | None, default_name: str, what: str, flag: str) -> Path:
    """``given``, or ``runs/<default_name>-<time>``; refused if it exists and is not empty
    (nothing is ever overwritten). ``what`` and ``flag`` name it in the message."""
    if given is None:
        path = Path("runs") / f"{default_name}{time.strftime('%Y%m%d-%H%M%S')}"
    else:
        path = Path(given)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{what} {path} already exists and is not empty; choose another "
                              f"{flag}")
    return path


def slug(env_id: str) -> str:
    """An env id as a file name: ``rlkit/Pendulum-V-v0`` -> ``rlkit-Pendulum-V-v0``."""
    return env_id.replace("/", "-").replace(":", "-")


def _section(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise RunDirError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    if unknown := set(data) - names:
        raise RunDirError(f"{where}: unknown field(s) {sorted(unknown)}")
    return cls(**data)


def _from_schema1(flat: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 (flat) ``config.json`` in schema 2."""
    out: dict[str, Any] = {"schema": SCHEMA}
    for name, cls in SECTIONS.items():
        section = {}
        for f in dataclasses.fields(cls):
            key = _SCHEMA1_NAMES.get(f"{name}.{f.name}", f.name)
            if key in flat:
                section[f.name] = flat[key]
        out[name] = section
    # schema 1 kept the device and the window length (seq_len) as resolved
    out["agent"] = flat.get("agent_resolved", flat.get("agent"))
    for key in ("obs_dim", "action_dim", "action_low", "action_high", "device",
                "wandb_run_id"):
        if key in flat:
            out[key] = flat[key]
    return out


__all__ = ["IDENTITY", "SCHEMA", "SECTIONS", "RunDirError", "RunPaths", "RunRecord", "fresh_dir",
           "slug"]
