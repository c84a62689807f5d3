"""What a run directory holds, owned by this one module.

::

    RUN_DIR/
      config.json          a RunRecord: the resolved config and the facts of the run
      metrics.jsonl        one JSON object per log event (step, wall_time, metrics)
      checkpoint.pt        the newest checkpoint (rlkit.checkpoint); checkpoint.prev.pt before it
      diagnostic.pt        written when a loss became non-finite
      run.lock             locked by the process that runs it (its PID and host inside)
      videos/              evaluation videos
      wandb/               W&B's offline files

:class:`RunRecord` is the typed content of ``config.json``: the config sections of
:mod:`rlkit.config`, the agent's resolved hyper-parameters (a dict in the agent's own schema),
and what building the run fixed (window length, dimensions, action bounds, device, W&B id).
Training writes it, resume and evaluation rebuild the run from it, reports group runs by it.
``config.json`` files written before the sections existed (schema 1, flat keys) are read and
converted.

One process at a time runs in a run directory: :class:`RunLock` holds an exclusive
``flock`` on ``run.lock`` for the whole run (a second process is refused with
:class:`RunDirBusy`, naming the holder); the kernel drops the lock when the holder ends, however
it ends, so the lock of a killed process is taken over by the next one.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import itertools
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None

from rlkit.config import (
    EnvConfig,
    GridConfig,
    LoopConfig,
    ModelConfig,
    NoiseConfig,
    ReplayConfig,
    RunConfig,
)
from rlkit.faults import FileSystemError, file_errors, write_atomic

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


LOCK_NAME = "run.lock"
"""The lock file of a run directory (see :class:`RunLock`)."""


class RunDirError(ValueError):
    """A run directory's ``config.json`` or ``metrics.jsonl`` is missing or malformed, or
    disagrees with its checkpoint (the message names the file and the field)."""


class RunDirBusy(RunDirError):
    """Another live process runs in this run directory (the message names it)."""


GRID_MANIFEST = "grid.json"
"""The file of a grid directory that lists its runs and their configs (for ``--resume``)."""


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

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME


class RunLock:
    """An exclusive lock on a run directory, held by one process for the whole run.

    ``fcntl.flock`` on ``RUN_DIR/run.lock``, which then holds the holder's PID, host and start
    time. A second process (or a second lock in the same process) is refused; the kernel
    releases the lock when its holder exits, however it exits (``kill -9`` included), so a
    stale lock is taken over without any cleanup. The file stays behind (its content names
    the last holder). Where the file system has no ``flock`` the run goes on unlocked, with a
    warning.

    Raises:
        RunDirBusy: another live process holds the lock (from :meth:`acquire`).
        rlkit.faults.FileSystemError: the lock file cannot be created.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = RunPaths(Path(run_dir)).lock
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        with file_errors("create the lock file", self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            os.close(fd)
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise RunDirBusy(
                f"run directory {self.path.parent} is in use by another process "
                f"({' '.join(holder.split()) or 'holder unknown'}); one process at a time "
                "may run in it: wait for that one to end, or stop it (SIGTERM writes a "
                "checkpoint) and then --resume") from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise FileSystemError("lock", self.path, e) from e
            warnings.warn(f"{self.path}: the file system does not support locks ({e}); "
                          "the run directory is not protected from a second process",
                          stacklevel=2)
        stamp = (f"pid {os.getpid()} on host {socket.gethostname()} since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode()
        try:
            with file_errors("write the lock file", self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, stamp, 0)
        except FileSystemError:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (the file stays)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
    """The W&B run id given to the run when W&B is not ``disabled`` (None when it is). It is
    chosen before W&B starts, so it is recorded even when W&B then failed to start; a resume
    logs to the same W&B run under it."""
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
            said = [f"{what} field(s) {sorted(names)}" for what, names in
                    (("unknown", unknown), ("missing", missing)) if names]
            raise RunDirError(f"{where}: {', '.join(said)}")
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
        """Write ``run_dir/config.json`` (atomically: a temporary file renamed over it).

        Raises:
            rlkit.faults.FileSystemError: it cannot be written.
        """
        write_atomic(RunPaths(Path(run_dir)).config,
                     json.dumps(self.to_json(), indent=2, sort_keys=True))

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord:
        """The record of ``run_dir``.

        Raises:
            RunDirError: no ``config.json``, or one that is not a valid record.
        """
        path = RunPaths(Path(run_dir)).config
        if not path.is_file():
            why = ("no such directory" if not Path(run_dir).exists() else
                   "a file, not a directory" if not Path(run_dir).is_dir() else "no config.json")
            raise RunDirError(f"{run_dir} is not a run directory ({why})")
        try:
            with file_errors("read", path):
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

    def flat(self) -> dict[str, Any]:
        """Every value by dotted path (``"loop.total_steps"``, ``"agent.gamma"``), as JSON
        holds it."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_json())
        return out

    def differences(self, other: RunRecord) -> list[str]:
        """Dotted paths whose values differ between this record and ``other``, sorted."""
        mine, theirs = self.flat(), other.flat()
        return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))

    def check_same_run(self, other: RunRecord, what: str = "checkpoint",
                       may_differ: tuple[str, ...] = ()) -> None:
        """Refuse ``other`` (e.g. a checkpoint's own record) unless it records this run.

        Args:
            other: the record to compare with.
            what: what ``other`` is, for the message.
            may_differ: dotted paths allowed to differ (the fields that may change on resume).

        Raises:
            RunDirError: an :data:`IDENTITY` entry differs (``checkpoint is of another run:
                model.backbone is 'gru' there, 'lstm' in this run's config.json``), or any
                other field outside ``may_differ`` (``agent.gamma is 0.5 in config.json, 0.99
                in the checkpoint``: config.json was edited).
        """
        diff = [k for k in self.differences(other) if k not in may_differ]
        mine, theirs = self.flat(), other.flat()
        for key in IDENTITY:
            if key != "agent" and key in diff:
                raise RunDirError(f"{what} is of another run: {key} is {theirs.get(key)!r} "
                                  f"there, {mine.get(key)!r} in this run's config.json")
        if diff:
            key = diff[0]
            more = f" (and {', '.join(diff[1:4])}{', ...' if len(diff) > 4 else ''})" \
                if len(diff) > 1 else ""
            raise RunDirError(
                f"config.json disagrees with the {what}'s own record of the run: {key} is "
                f"{mine.get(key, '(absent)')!r} in config.json, {theirs.get(key, '(absent)')!r} "
                f"in the {what}{more}; config.json must not be edited (the {what} was trained "
                f"with its values)")


def holds_files(path: Path) -> bool:
    """``path`` is a directory that holds more than a lock file and temporary files (what a
    run stopped before it wrote anything leaves behind)."""
    with file_errors("read", path):
        return path.is_dir() and any(
            p.name != LOCK_NAME and not (p.name.startswith(".") and p.name.endswith(".tmp"))
            for p in path.iterdir())


def fresh_dir(given: str | None, default_name: str, what: str, flag: str) -> Path:
    """``given``, refused if it exists and is not empty (nothing is ever overwritten); or,
    where none is given, ``runs/<default_name><time>`` created here, with ``-2``, ``-3``, ...
    after it where that exists already (two runs started in the same second each get their
    own). ``what`` and ``flag`` name it in the message."""
    if given is None:
        return _claim(Path("runs") / f"{default_name}{time.strftime('%Y%m%d-%H%M%S')}", what)
    path = Path(given)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{flag} {path} is a file, not a directory; expected a new or empty "
                          "directory")
    if holds_files(path):
        held = RunPaths(path).config.is_file() or (path / GRID_MANIFEST).is_file()
        raise FileExistsError(f"{what} {path} already exists and is not empty; choose another "
                              f"{flag}" + (f", or go on with what it holds: --resume {path}"
                                           if held else ""))
    return path


def _claim(path: Path, what: str) -> Path:
    """Create ``path``, or the first of ``path-2``, ``path-3``, ... that does not exist (an
    atomic ``mkdir``: of processes claiming names at once, each gets its own)."""
    make_dir(path.parent, f"parent of the {what}")
    for k in itertools.count(1):
        candidate = path if k == 1 else path.with_name(f"{path.name}-{k}")
        with file_errors(f"create the {what}", candidate):
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate
    raise AssertionError("unreachable")


def make_dir(path: Path, what: str) -> Path:
    """``mkdir -p path``, or :class:`rlkit.faults.FileSystemError` naming it and the cause."""
    with file_errors(f"create the {what}", path):
        path.mkdir(parents=True, exist_ok=True)
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


def dir_arg(text: str) -> Path:
    """An ``argparse`` type for a directory argument: the path, with an empty one refused
    (``Path("")`` is the current directory, which an empty string does not mean)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a directory, got {text!r}")
    return Path(text)


__all__ = ["IDENTITY", "LOCK_NAME", "SCHEMA", "SECTIONS", "RunDirBusy", "RunDirError", "RunLock",
           "RunPaths", "RunRecord", "dir_arg", "fresh_dir", "holds_files", "make_dir", "slug"]
