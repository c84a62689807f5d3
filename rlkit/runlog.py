"""Metrics of a run: ``metrics.jsonl`` in its run directory, and W&B without ever blocking.

W&B modes: ``disabled``; ``offline`` (written under the run directory, ``wandb sync`` later);
``online`` only when an API key is configured and the W&B host answers within 3 seconds (a TLS
handshake or an HTTP reply, not just a connection), otherwise it falls back to ``offline``
with one warning. W&B never stops a run: an online
start that fails (a wrong key or server) falls back to ``offline``, and a W&B that cannot be
imported, started or written to leaves the run logging to ``metrics.jsonl`` alone, each with
one warning.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import ssl
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from rlkit.faults import FileSystemError, file_errors, first_line, write_atomic
from rlkit.rundir import RunDirError, RunPaths

WandbMode = Literal["disabled", "offline", "online"]


def _wandb_reachable(timeout: float = 3.0) -> bool:
    """Whether the W&B host (``WANDB_BASE_URL``) answers within ``timeout`` seconds, its name's
    lookup included: a TLS handshake (any TLS answer, a certificate W&B may be set up to
    accept included) for https, an HTTP reply for http. A host that takes the connection
    and never answers is not reachable: ``wandb.init`` would wait on it for about a
    minute."""
    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    scheme, _, rest = url.rpartition("://")
    host = rest.split("/")[0]
    name, _, port = host.partition(":")
    https = scheme.lower() != "http"
    deadline = time.monotonic() + timeout
    try:
        sock = _connect(_resolve(name, int(port or (443 if https else 80)), timeout), deadline)
        with sock:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))  # the same 3 s in all
            if https:
                with ssl.create_default_context().wrap_socket(sock, server_hostname=name):
                    return True
            sock.sendall(f"HEAD / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            return bool(sock.recv(1))
    except ssl.SSLError:
        return True  # it answered (a certificate W&B may accept, a close: W&B fails fast)
    except (OSError, ValueError):
        return False


def _resolve(name: str, port: int, timeout: float) -> list[tuple[Any, ...]]:
    """``name``'s addresses (``getaddrinfo``'s entries), looked up in a daemon thread so that
    a slow resolver (which ``socket`` cannot time out) costs at most ``timeout`` seconds.

    Raises:
        OSError: the name does not resolve, or not within ``timeout``.
    """
    found: list[Any] = []

    def lookup() -> None:
        with contextlib.suppress(OSError, UnicodeError):
            found.extend(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))

    thread = threading.Thread(target=lookup, name="wandb-resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        raise OSError(f"{name!r} did not resolve within {timeout:g} s")
    return found


def _connect(addresses: list[tuple[Any, ...]], deadline: float) -> socket.socket:
    """A connection to the first of ``addresses`` that takes one before ``deadline`` (as
    ``socket.create_connection`` tries each: a dual-stack name whose IPv6 address has no
    route, a name with one host of several down).

    Raises:
        OSError: none took it in time.
    """
    error: OSError = OSError("no address")
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error


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


def start_wandb(mode: WandbMode, **init: Any) -> tuple[Any, WandbMode]:
    """``wandb.init(mode=mode, **init)`` and the mode it runs in: an online start that fails
    is tried again offline, and a W&B that cannot be imported or started gives ``(None,
    "disabled")``, each with one warning."""
    try:
        import wandb
    except ImportError as e:
        warnings.warn(f"W&B: cannot import wandb ({first_line(e)}); this run logs to "
                      "metrics.jsonl only", stacklevel=2)
        return None, "disabled"
    for m in (["online", "offline"] if mode == "online" else [mode]):
        try:
            return wandb.init(mode=m, settings=wandb.Settings(init_timeout=30, console="off"),
                              **init), m
        except Exception as e:  # noqa: BLE001  (wandb's own errors: CommError, UsageError, ...)
            if m == "online":
                warnings.warn(f"W&B: the online start failed ({first_line(e)}); logging "
                              "offline (sync later with `wandb sync`)", stacklevel=2)
                with contextlib.suppress(Exception):  # the failed start holds the run's id
                    wandb.teardown()
            else:
                env = {k: os.environ[k] for k in ("WANDB_MODE", "WANDB_DIR") if k in os.environ}
                hint = f"; the environment sets {env}, which W&B reads too" if env else ""
                warnings.warn(f"W&B: cannot start ({first_line(e)}{hint}); this run logs to "
                              "metrics.jsonl only", stacklevel=2)
    return None, "disabled"


def _plain(v: Any) -> Any:
    """A tensor or numpy scalar as a Python number."""
    return v.item() if hasattr(v, "item") else v


def _jsonable(v: Any) -> Any:
    """``v`` for ``metrics.jsonl``: a float that is not finite as its text (``"nan"``), which
    JSON has no number for (:mod:`rlkit.gridruns` reads it back as a float)."""
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v


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
        self.path = RunPaths(self.run_dir).metrics
        with file_errors("open", self.path):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = open(self.path, "a", buffering=1)  # noqa: SIM115
        self._failed = False  # a write failed: closing must not raise a second error
        self._t0 = time.time() - elapsed
        self._wandb = None
        self.wandb_mode = resolve_wandb_mode(wandb_mode)
        if self.wandb_mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb, self.wandb_mode = start_wandb(
                self.wandb_mode, project=project, group=group, name=name, tags=list(tags),
                config=config, dir=str(self.run_dir), id=resume_id,
                resume="allow" if resume_id else None)

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (resumed runs included)."""
        return time.time() - self._t0

    @property
    def wandb_run_id(self) -> str | None:
        return None if self._wandb is None else self._wandb.id

    def log(self, step: int, metrics: dict[str, Any], wall_time: float | None = None) -> None:
        """Append one event: ``{"step", "wall_time", **metrics}``.

        Raises:
            rlkit.faults.FileSystemError: the line cannot be written (the rows before it stay;
                a line cut short is dropped on resume).
        """
        wall = time.time() - self._t0 if wall_time is None else wall_time
        row = {"step": int(step), "wall_time": round(wall, 3)}
        row.update({k: _plain(v) for k, v in metrics.items()})
        try:
            self._metrics.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
        except OSError as e:
            self._failed = True
            raise FileSystemError("write", self.path, e, "the rows written before are kept"
                                  ) from e
        if self._wandb is not None:
            try:
                # numbers as numbers (nan and inf too, which W&B takes as floats)
                self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(step))
            except Exception as e:  # noqa: BLE001  (W&B never stops a run)
                warnings.warn(f"W&B: logging failed ({first_line(e)}); the rest of this run "
                              "logs to metrics.jsonl only", stacklevel=2)
                self._stop_wandb()

    def close(self) -> None:
        try:
            self._metrics.close()
        except OSError as e:
            if not self._failed:  # after a failed write the error was raised already
                raise FileSystemError("write", self.path, e) from e
        self._stop_wandb()

    def _stop_wandb(self) -> None:
        w, self._wandb = self._wandb, None
        if w is not None:
            try:
                w.finish()
            except Exception as e:  # noqa: BLE001  (W&B never stops a run)
                warnings.warn(f"W&B: finishing the run failed ({first_line(e)})", stacklevel=2)


def _rows(path: Path) -> list[tuple[str, dict[str, Any] | None]]:
    """``(line, row)`` of every non-blank line of a metrics file; ``row`` is ``None`` for a last
    line cut short (no newline, not JSON: a write that a crash interrupted).

    Raises:
        RunDirError: any other line that is not a JSON object with an integer ``step``
            (named by file and line).
    """
    with file_errors("read", path):
        data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RunDirError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); "
                          "expected one JSON object per line") from e
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # the last line, without its newline: cut short
                out.append((line, None))
                continue
            raise RunDirError(f"{path}:{i}: not valid JSON ({e.msg}); expected one JSON "
                              "object per line") from e
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise RunDirError(f"{path}:{i}: expected a JSON object with an integer 'step', "
                              f"got {line.strip()[:80]!r}")
        out.append((line, row))
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All events of a run's ``metrics.jsonl`` (a last line cut short by a crash left out).

    Raises:
        RunDirError: a malformed line (named by file and line).
    """
    return [row for _, row in _rows(RunPaths(Path(run_dir)).metrics) if row is not None]


def truncate_metrics(run_dir: str | Path, step: int) -> int:
    """Drop the events logged after ``step`` from a run's ``metrics.jsonl`` (atomically).

    A resumed run calls this with its checkpoint's step, so the events it logs again are not
    duplicated. A last line cut short by a crash is dropped too.

    Returns:
        The number of lines dropped.

    Raises:
        RunDirError: a malformed line elsewhere (named by file and line; the file is left
            as it was).
        rlkit.faults.FileSystemError: the file cannot be read or rewritten.
    """
    path = RunPaths(Path(run_dir)).metrics
    if not path.is_file():
        return 0
    rows = _rows(path)
    kept = [line for line, row in rows if row is not None and row["step"] <= step]
    write_atomic(path, "".join(f"{line}\n" for line in kept), "rewrite")
    return len(rows) - len(kept)
