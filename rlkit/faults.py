"""What stops a run early: non-finite values, non-finite losses, SIGINT / SIGTERM.

Numerical faults
    A non-finite observation or reward raises :class:`NonFiniteError` naming the env and the
    step, unless non-finite transitions are to be dropped (``--drop-nonfinite``). A non-finite
    loss is recorded on the device by :class:`LossWatch` as the first bad update's index (no
    host synchronisation per update) and checked at log, evaluation and checkpoint points; the
    run then stops with :class:`NonFiniteLossError`. fp16 updates are checked the same way:
    their loss is computed in fp32 before scaling, so a non-finite one comes from the forward
    pass, which the GradScaler cannot mend. An fp16 run also stops when its loss scale falls
    below ``2**-24``, fp16's smallest value, which only update after update with gradients
    that are not finite brings (left alone, the scale reaches 0, and ``1 / scale`` turns
    finite gradients into NaN after the scaler has checked them).

Signals
    :func:`stop_signals` makes the first SIGINT or SIGTERM set a flag; the loop finishes the
    current step, writes a checkpoint and raises :class:`TrainingInterrupted`, whose
    ``exit_code`` is 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal
    ends the process at once, even inside a long tensor operation (the first one puts the
    signals' default action back), without a checkpoint; the last one written stays.

File system
    A run's files that cannot be written or read (a read-only or full file system, a path that
    is not a directory) raise :class:`FileSystemError`, naming the path and the cause; what
    was written before stays (checkpoints are replaced atomically, metrics are appended).

Environments
    An exception raised by an environment's construction, ``reset`` or ``step`` is raised again
    as :class:`EnvError`, which keeps the env's own traceback (``env_traceback``) for the
    command line to print.

``agents.cli`` maps each to an exit code of ``train.py`` (1 non-finite, 3 file system, 4 env,
128 + signal).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlkit.envstate import sub_envs
from rlkit.precision import MIN_LOSS_SCALE
from rlkit.signals import on_stop_signals


class FileSystemError(OSError):
    """A run's file could not be written (or read) by the file system: read-only, full, a
    path that is not a directory, a directory where a file should be, ...

    Attributes:
        path: the file or directory concerned.
        cause: the ``OSError`` the file system raised.
    """

    def __init__(self, action: str, path: str | Path, cause: OSError, note: str = "") -> None:
        self.path, self.cause = Path(path), cause
        reason = cause.strerror or str(cause) or type(cause).__name__
        name = errno.errorcode.get(cause.errno) if cause.errno is not None else None
        self.message = (f"cannot {action} {path}: {reason}" + (f" [{name}]" if name else "")
                        + (f"; {note}" if note else ""))
        super().__init__(self.message)
        self.errno, self.strerror, self.filename = cause.errno, reason, str(path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:  # pickled as its message (e.g. to a grid's launcher)
        return (_restore, (self.message, self.path, self.errno))


def _restore(message: str, path: Path, code: int | None) -> FileSystemError:
    error = FileSystemError("use", path, OSError(code, message))
    error.message = message
    return error


@contextlib.contextmanager
def file_errors(action: str, path: str | Path, note: str = "") -> Iterator[None]:
    """Raise an ``OSError`` of the block as :class:`FileSystemError` (``action path``)."""
    try:
        yield
    except FileSystemError:
        raise
    except OSError as e:
        raise FileSystemError(action, path, e, note) from e


def write_atomic(path: Path, text: str, action: str = "write") -> None:
    """Write ``text`` to ``path`` through a temporary file beside it (``.NAME.tmp``, which a
    run directory's emptiness check ignores) renamed over it: a reader sees the old file or
    the new one, never part of one.

    Raises:
        FileSystemError: it cannot be written (``action path``).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with file_errors(action, path):
        tmp.write_text(text)
        os.replace(tmp, path)


COLOUR = re.compile(r"\x1b\[[0-9;]*m")
"""A terminal colour code (Gymnasium colours its warnings, Ray the traceback of a failed
task): dropped from text that goes to a file."""


_RENDERER_DIRS = re.compile(r"[\\/](OpenGL|mujoco[\\/](egl|osmesa|glfw))[\\/]")


def _renderer_hint(error: BaseException, call: str) -> str:
    """A hint when ``MUJOCO_GL`` is set and ``error``, raised while building an env, came from
    loading a renderer (PyOpenGL, MuJoCo's GL backends): importing MuJoCo loads the backend it
    names, so one that cannot load here fails every MuJoCo task, video or not."""
    gl = os.environ.get("MUJOCO_GL")
    files = [frame.filename for frame in traceback.extract_tb(error.__traceback__)]
    if call != "construction" or not gl or not any(_RENDERER_DIRS.search(f) for f in files):
        return ""
    other = "osmesa" if gl == "egl" else "egl"
    return (f" (MUJOCO_GL={gl} is set and that renderer failed to load here; set MUJOCO_GL to "
            f"one this machine has, such as {other}, or leave it unset where no video is made)")


class EnvError(RuntimeError):
    """An environment raised an exception in its construction, ``reset`` or ``step``.

    Attributes:
        env_traceback: the env's own traceback, formatted (ends with the original exception).
    """

    def __init__(self, message: str, env_traceback: str = "") -> None:
        super().__init__(message)
        self.env_traceback = env_traceback

    @classmethod
    def wrap(cls, error: BaseException, env: str, call: str, step: int | None = None
             ) -> EnvError:
        """An :class:`EnvError` for ``error``, raised by ``env``'s ``call``."""
        at = f" at env step {step}" if step is not None else ""
        first = f": {str(error).splitlines()[0]}" if str(error).strip() else ""
        return cls(f"env {env} raised {type(error).__name__} in {call}{at}{first}"
                   f"{_renderer_hint(error, call)}",
                   "".join(traceback.format_exception(type(error), error, error.__traceback__)))

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.env_traceback))


class NonFiniteError(RuntimeError):
    """An environment returned a NaN or infinite observation or reward."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; ``diagnostic.pt`` holds the state where it was seen."""


class TrainingInterrupted(Exception):  # noqa: N818 (a stop, not a failure)
    """SIGINT or SIGTERM stopped the run after a checkpoint was written.

    Attributes:
        signum: the signal.
        step: env steps done (the checkpoint's step).
        path: the checkpoint written, or ``None`` without a run directory.
        exit_code: 128 + ``signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, step: int, path: Path | None) -> None:
        self.signum, self.step, self.path = signum, step, path
        self.exit_code = 128 + signum
        where = f"checkpoint written to {path}" if path else "no run directory, no checkpoint"
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; "
                         f"{where}; continue with --resume {path.parent if path else 'RUN_DIR'}")


def nonfinite_rows(next_obs: np.ndarray, final_obs: np.ndarray, reward: np.ndarray, step: int,
                   drop: bool, names: Sequence[str] | None = None) -> np.ndarray:
    """Rows (envs) of a vector step with a non-finite value, shape ``(N,)``.

    Args:
        next_obs: the observations after the step ``(N, ...)`` (first ones of new episodes).
        final_obs: the observations the step led to ``(N, ...)`` (final ones where it ended).
        reward: ``(N,)``.
        step: the env step reached, for the message.
        drop: return the rows instead of raising.
        names: each row's env id (:func:`row_names`), named in the message beside the row.

    Raises:
        NonFiniteError: a row is non-finite and ``drop`` is false.
    """
    def bad_rows(x: np.ndarray) -> np.ndarray:
        return ~np.isfinite(x).reshape(len(x), -1).all(1)

    bad_next, bad_final, bad_reward = bad_rows(next_obs), bad_rows(final_obs), \
        ~np.isfinite(reward)
    bad = bad_next | bad_final | bad_reward
    if bad.any() and not drop:
        i = int(np.flatnonzero(bad)[0])
        what = [name for name, b in (("observation", bad_next[i] or bad_final[i]),
                                     ("reward", bad_reward[i])) if b]
        raise NonFiniteError(
            f"{env_row(i, names)} returned a non-finite {' and '.join(what)} at step {step} "
            f"(reward={reward[i]}); expected finite values (drop_nonfinite / "
            "--drop-nonfinite drops such transitions instead)"
        )
    return bad


class LossWatch:
    """Keeps, on the device, the index of the first update whose losses were not finite and
    of the first whose fp16 loss scale fell below :attr:`MIN_SCALE`."""

    MIN_SCALE = MIN_LOSS_SCALE
    """fp16's smallest (subnormal) value: a scale below it flushes every scaled gradient."""

    def __init__(self) -> None:
        self.first_bad: Tensor | None = None
        self.first_low_scale: Tensor | None = None

    @staticmethod
    def _mark(first: Tensor | None, bad: Tensor, update: int) -> Tensor:
        if first is None:
            first = torch.full((), -1, dtype=torch.long, device=bad.device)
        return first.masked_fill_(bad & (first < 0), update)

    def record(self, metrics: dict[str, Tensor], update: int) -> None:
        """Note update ``update``'s losses (the metrics ending in ``_loss``) and, for fp16, its
        ``grad_scale``."""
        losses = [v for k, v in metrics.items() if k.endswith("_loss")]
        if losses:
            total = losses[0].float()
            for v in losses[1:]:
                total = total + v.float()  # non-finite iff one of them is
            self.first_bad = self._mark(self.first_bad, ~torch.isfinite(total), update)
        if "grad_scale" in metrics:
            self.first_low_scale = self._mark(self.first_low_scale,
                                              metrics["grad_scale"] < self.MIN_SCALE, update)

    def first_fault(self) -> tuple[int, str] | None:
        """The first bad update's index and what was wrong (``"loss"``: a loss not finite;
        ``"scale"``: the fp16 loss scale below :attr:`MIN_SCALE`), or ``None`` (one host
        synchronisation)."""
        marks = [(t, why) for t, why in ((self.first_bad, "loss"),
                                         (self.first_low_scale, "scale")) if t is not None]
        if not marks:
            return None
        updates = torch.stack([t for t, _ in marks]).tolist()  # the one synchronisation
        found = [(u, why) for u, (_, why) in zip(updates, marks) if u >= 0]
        return min(found) if found else None


class StopFlag:
    """The signal that asked the run to stop, if any."""

    signum: int | None = None


_requested: list[int] = []
"""The signal of a stop asked for with :func:`request_stop` and not withdrawn (at most one)."""
_in_force: list[StopFlag] = []
"""The flags of the :func:`stop_signals` blocks in force."""
_stop_lock = threading.Lock()
"""Held by :func:`request_stop` (any thread) and by a :func:`stop_signals` block entering and
leaving, so that a request made as a block is entered reaches its flag (signal handlers, which
run in the main thread between bytecodes, never take it)."""


def request_stop(signum: int) -> None:
    """Stop the training loop as a first ``signum`` (SIGINT / SIGTERM) to its process would,
    from any thread, for runs that no signal reaches (Ray's workers block SIGINT): a loop in
    its :func:`stop_signals` block checkpoints and stops at the end of its step, and one
    entered later (a run still starting) at its first step; a run past its loop finishes.
    :func:`clear_stop_request` withdraws it."""
    with _stop_lock:
        if not _requested:
            _requested.append(signum)
        for flag in _in_force:
            if flag.signum is None:
                flag.signum = signum
                print(f"\n{signal.Signals(signum).name} received by the grid: stopping at the "
                      "end of this step with a checkpoint", file=sys.stderr, flush=True)


def clear_stop_request() -> None:
    """Withdraw a :func:`request_stop` (loops stopped by it stay stopped)."""
    with _stop_lock:
        _requested.clear()


@contextlib.contextmanager
def stop_signals() -> Iterator[StopFlag]:
    """The first SIGINT / SIGTERM sets the yielded flag and puts both signals' default action
    back, so that a second one ends the process at once; the handlers from before the block
    come back after it (main thread only; elsewhere the flag stays unset and signals keep
    their handlers). A :func:`request_stop` sets the flag too, one made before the block
    on entering it."""
    flag = StopFlag()

    def handler(signum: int, frame: Any) -> None:
        if flag.signum is not None:  # both signals were pending before this handler ran
            stop = KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now")
            stop.exit_code = 128 + signum  # type: ignore[attr-defined]  (read by the CLI)
            raise stop
        flag.signum = signum
        # A Python handler runs between bytecodes only, so it would wait for a long tensor
        # operation to return; the default action ends the process at once, wherever it is.
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_DFL)
        print(f"\n{signal.Signals(signum).name} received: stopping at the end of this "
              "step with a checkpoint (send it again to stop at once, without one)",
              file=sys.stderr, flush=True)

    with _stop_lock:
        _in_force.append(flag)
        if _requested:
            flag.signum = _requested[0]
    try:
        with on_stop_signals(handler):
            yield flag
    finally:
        with _stop_lock:
            _in_force.remove(flag)


def env_name(env: Any) -> str:
    """An env's id (its spec's, or its first sub-env's for a vector env), else its type."""
    spec = getattr(env, "spec", None)
    if spec is None and sub_envs(env):
        spec = getattr(sub_envs(env)[0], "spec", None)
    return spec.id if spec is not None else type(env).__name__


def row_names(envs: Any) -> list[str] | None:
    """The id of each row of a vector env: its sub-envs' own, or the vector env's for every
    row where it does not expose them; None where no id is known."""
    subs = sub_envs(envs)
    specs = [getattr(s, "spec", None) for s in subs] if subs else \
        [getattr(envs, "spec", None)] * envs.num_envs
    return None if any(s is None for s in specs) else [s.id for s in specs]


def env_row(i: int, names: Sequence[str] | None) -> str:
    """Row ``i`` of a vector env in a message: ``env ID (vector index i)``, or ``env i``
    where the ids are not known (``names`` None, :func:`row_names`)."""
    return f"env {i}" if names is None else f"env {names[i]} (vector index {i})"


def check_reset_obs(obs: np.ndarray, rows: Sequence[int], names: Sequence[str] | None,
                    step: int) -> None:
    """Refuse a reset whose first observation is not finite in one of ``rows`` (row ``i``
    of ``obs`` is the first observation of vector index ``i``).

    Raises:
        NonFiniteError: ``env ID (vector index i) returned a non-finite observation from
            reset at step N`` (the first such row).
    """
    for i in rows:
        if not np.isfinite(obs[i]).all():
            raise NonFiniteError(f"{env_row(i, names)} returned a non-finite observation "
                                 f"from reset at step {step}")


@contextlib.contextmanager
def env_calls(env: Any, call: str, step: int | None = None) -> Iterator[None]:
    """Raise an exception of the env's ``call`` in the block as :class:`EnvError` (its
    traceback kept); errors of the loop itself pass."""
    try:
        yield
    except (EnvError, NonFiniteError, TrainingInterrupted):
        raise
    except Exception as e:  # noqa: BLE001  (whatever the env raised)
        raise EnvError.wrap(e, env_name(env), call, step) from e


class GuardedEnv(gym.Wrapper):
    """An env whose ``reset`` / ``step`` exceptions come out as :class:`EnvError`.

    Args:
        env: the env.
        role: what the env is used for, in the message (``evaluation``).
    """

    def __init__(self, env: gym.Env, role: str) -> None:
        super().__init__(env)
        self.role = role

    def reset(self, **kwargs: Any) -> Any:
        with env_calls(self.env, f"reset ({self.role})"):
            return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        with env_calls(self.env, f"step ({self.role})"):
            return self.env.step(action)


def first_line(e: BaseException, with_type: bool = True, limit: int = 200) -> str:
    """``Type: first line of the message`` of ``e`` (``with_type=False``: the line alone), the
    line cut at ``limit`` characters; the class name alone when the message is empty."""
    lines = str(e).strip().splitlines()
    if not lines:
        return type(e).__name__
    return f"{type(e).__name__}: {lines[0][:limit]}" if with_type else lines[0][:limit]


__all__ = ["COLOUR", "EnvError", "FileSystemError", "GuardedEnv", "LossWatch", "NonFiniteError",
           "NonFiniteLossError", "StopFlag", "TrainingInterrupted", "clear_stop_request",
           "env_calls", "env_name", "file_errors", "first_line", "nonfinite_rows",
           "request_stop", "stop_signals", "write_atomic"]
