"""Run a grid of training runs: as local processes (default) or as tasks on a Ray cluster.

The launcher knows nothing of agents or environments: it calls ``fn(config, run_dir)`` for
each run (``agents.train.run_in`` from the command line) and keeps one run directory per run
under the grid directory. On Ray, each task trains in a scratch directory on its worker and
sends the run directory's files back, so the runs are gathered where the user asked whatever
the cluster's file systems.

Local runs are one process each (``jobs`` at a time), in their own process group. Stopping:

- SIGINT or SIGTERM to the launcher is passed on to every running run, which writes its
  interrupt checkpoint and ends as a single run does (a run still starting has none to write,
  and starts from the beginning on ``--resume``); runs not yet started are not started;
  :func:`launch` then raises :class:`GridInterrupted` holding every outcome (a second signal
  is passed on too: the runs then stop at once);
- a run whose launcher died without passing a signal on (``kill -9``) notices within a second
  that its parent is gone and sends itself SIGTERM (so it checkpoints and ends, instead of
  training on for nobody).

On Ray the same signal to the launcher reaches each running task through a small actor whose
answer the task awaits as a future (no task blocks in Ray, which would lend its CPU to another
task): the task's run stops as a local one does, with its checkpoint (a run still starting at
its loop's first step), and its files come back; a task that starts after the signal does not
train, or stops at its first steps; a second signal cancels the running tasks at once (what
they wrote since they started stays in their workers' temporary directories).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from rlkit.faults import (
    COLOUR,
    EnvError,
    FileSystemError,
    TrainingInterrupted,
    clear_stop_request,
    first_line,
    request_stop,
)
from rlkit.rundir import RunDirBusy, RunDirError, RunLock, RunPaths, RunRecord, make_dir
from rlkit.signals import on_stop_signals

Launcher = Literal["local", "ray"]
RunFn = Callable[[Any, str], dict[str, float]]


@dataclass(frozen=True)
class GridRun:
    """One run of a grid."""

    name: str
    """Directory name under the grid directory, e.g. ``gru__s0``."""
    config: Any
    """Whatever ``fn`` takes (picklable)."""


@dataclass
class RunOutcome:
    """What became of one run."""

    name: str
    run_dir: Path
    result: dict[str, float] | None = None
    error: str | None = None
    stopped: bool = False
    """A stop signal ended it, or kept it from starting (``error`` says which)."""
    details: str | None = None
    """The traceback that a failed run's one-line ``error`` leaves out, as a single run prints
    it: the env's own for an :class:`rlkit.faults.EnvError`, the whole one for an error that
    is not a ``ValueError``, ``RuntimeError`` or ``OSError`` (a bug, not bad input)."""


class GridInterrupted(Exception):  # noqa: N818 (a stop, not a failure)
    """SIGINT or SIGTERM stopped a grid; each run that was in its training loop wrote its
    checkpoint (one still starting had none to write).

    Attributes:
        signum: the signal.
        outcomes: every run's outcome, in the order given (stopped and not started ones carry
            an error saying so).
        exit_code: 128 + ``signum``.
    """

    def __init__(self, signum: int, outcomes: list[RunOutcome], grid_dir: Path) -> None:
        self.signum, self.outcomes, self.exit_code = signum, outcomes, 128 + signum
        left = [o for o in outcomes if o.error is not None and o.result is None]
        saved = sum(RunPaths(o.run_dir).checkpoint.is_file() for o in left)
        kept = ("" if not left else
                "each with a checkpoint to go on from" if saved == len(left) else
                "none with a checkpoint: they start from the beginning" if not saved else
                f"{saved} of them with a checkpoint to go on from, the others start from the "
                "beginning")
        super().__init__(f"grid interrupted by {signal.Signals(signum).name}; {len(left)} of "
                         f"{len(outcomes)} runs did not finish" + (f" ({kept})" if kept else "")
                         + f"; continue with --resume {grid_dir}")


PARENT_CHECK_S = 1.0
"""How often a local run checks that its launcher is alive (seconds)."""


def _watch_parent(parent: int, period: float = PARENT_CHECK_S, grace: float = 600.0) -> None:
    """In a run's process: once the launcher ``parent`` is gone, SIGTERM this process (it then
    checkpoints and ends); SIGKILL it if it is still there ``grace`` seconds later."""
    while os.getppid() == parent:
        time.sleep(period)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)
    os.kill(os.getpid(), signal.SIGKILL)


def _run_local(fn: RunFn, config: Any, run_dir: str, threads: int, conn: Connection,
               parent: int) -> None:
    """Body of a local run's process: run ``fn`` and send :func:`_run_message`'s message
    back to the launcher."""
    with contextlib.suppress(OSError):
        os.setpgrp()  # a terminal's Ctrl-C reaches the launcher only, which passes it on once
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="rlkit-parent-watch").start()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    with _run_warnings(Path(run_dir).name):
        message = _run_message(fn, config, run_dir, threads)
    with contextlib.suppress(OSError):  # the launcher may be gone
        conn.send(message)
    conn.close()


@contextlib.contextmanager
def _run_warnings(name: str) -> Iterator[None]:
    """In a run's process, while one run trains: start each warning it prints with ``[name]``,
    so that a grid's output says which of its runs warned, and show each warning once for this
    run (a Ray worker that runs several shows every run's own, not only its first run's)."""
    from rlkit.compile import reset_warnings  # (torch: imported in the run's process only)

    reset_warnings()
    with warnings.catch_warnings():  # entering forgets which warnings were already shown
        shown = warnings.showwarning

        # The name goes on the shown line, whichever formatter the run sets (the command
        # line's one-line warnings, agents.train.one_line_warnings, included).
        def named(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
            text = warnings.formatwarning(message, category, filename, lineno, line)
            with contextlib.suppress(OSError):  # as Python's own: a closed stderr loses it
                (sys.stderr if file is None else file).write(f"[{name}] {text}")

        warnings.showwarning = named
        try:
            yield
        finally:
            warnings.showwarning = shown


def _run_message(fn: RunFn, config: Any, run_dir: str, threads: int) -> tuple[Any, ...]:
    """``("ok", result)`` of ``fn(config, run_dir)`` at ``threads`` torch threads,
    ``("stopped", message)`` when a stop signal ended it (its training loop's checkpoint and
    stop; a second signal; a SIGINT outside the loop, while it starts or after it), or
    ``("error", message, details)`` (:attr:`RunOutcome.details`)."""
    try:
        import torch

        torch.set_num_threads(threads)
        return ("ok", fn(config, run_dir))
    except TrainingInterrupted as e:  # its loop wrote its checkpoint
        return ("stopped", str(e))
    except KeyboardInterrupt as e:  # str(e): the loop's "second SIGTERM: stopping now"
        why = str(e) or "SIGINT outside its training loop"
        return ("stopped", _stopped(why, Path(run_dir)))
    except BaseException as e:  # noqa: BLE001  (reported per run)
        return ("error", _one_line(e), _details(e))


_STOPS = {-signal.SIGINT.value: "SIGINT", -signal.SIGTERM.value: "SIGTERM",
          128 + signal.SIGINT.value: "SIGINT", 128 + signal.SIGTERM.value: "SIGTERM"}
"""A run's exit code when a stop signal ended it: killed by it (negative), or exited with
128 + it (a SIGINT while its modules loaded)."""


def _not_started(signum: int) -> str:
    """Why a run that a stop kept from starting did not finish."""
    return f"not started: the grid was stopped by {signal.Signals(signum).name}"


def _stopped(why: str, run_dir: Path) -> str:
    """``why``, and whether the run has a checkpoint to go on from."""
    kept = ("its last checkpoint is kept" if RunPaths(run_dir).checkpoint.is_file()
            else "no checkpoint yet: --resume starts it from the beginning")
    return f"{why}; {kept}"


def _one_line(e: BaseException) -> str:
    """``Type: message`` of an exception (the class name without its module)."""
    return f"{type(e).__name__}: {e}".strip().rstrip(":")


def _details(e: BaseException) -> str | None:
    """What a single run prints after the one line of ``e`` (:attr:`RunOutcome.details`)."""
    if isinstance(e, EnvError):
        return e.env_traceback.rstrip() or None
    if isinstance(e, (ValueError, RuntimeError, OSError)):
        return None
    return "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()


RAY_TASK_THREADS = 1
"""Torch threads of each Ray task (Ray schedules a task on one CPU)."""


def _run_file_paths(run_dir: Path) -> list[Path]:
    """Every file under ``run_dir`` (none where it does not exist) but its lock file: each
    side of a Ray task keeps its own."""
    lock = RunPaths(run_dir).lock
    return [p for p in run_dir.rglob("*") if p.is_file() and p != lock] \
        if run_dir.is_dir() else []


def _run_files(run_dir: Path) -> dict[str, bytes]:
    """:func:`_run_file_paths` by relative path, with their contents."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in _run_file_paths(run_dir)}


SHIP_BYTES = 2 * 2**30
"""Bytes of run files (a resumed run's checkpoints) that a Ray grid's driver holds for the
tasks in flight at most; one run is always let through, whatever its size."""


def _files_size(run_dir: Path) -> int:
    """What :func:`_run_files` of ``run_dir`` would hold, in bytes."""
    return sum(p.stat().st_size for p in _run_file_paths(run_dir))


def _write_files(run_dir: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_bytes(data)


STOP_POLL_S = 0.5
"""How often the grid's Ray driver looks for a stop signal between its waits (seconds)."""

BOX_TIMEOUT_S = 10.0
"""How long a Ray task waits for the stop box to say whether its grid was stopped before it
starts (it trains if the box does not answer), and the driver for it to take a stop (seconds)."""


class _StopBox:
    """Ray actor (async): the stop signal a grid's driver received. A task starting asks
    :meth:`start`, answered at once, and :meth:`stopped`, answered only once the grid is
    stopped (what its run's stop watch awaits)."""

    def __init__(self) -> None:
        import asyncio

        self.signum: int | None = None
        self.event = asyncio.Event()
        self.started: set[str] = set()

    async def stop(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
            self.event.set()

    async def stopped(self) -> int:
        await self.event.wait()
        assert self.signum is not None
        return self.signum

    async def start(self, name: str) -> int | None:
        """The grid's stop signal if it was stopped (the task should not start), else
        ``None``, and the run ``name`` counts as started."""
        if self.signum is None:
            self.started.add(name)
        return self.signum

    async def started_runs(self) -> set[str]:
        """The runs whose tasks started (:meth:`start` answered ``None``)."""
        return set(self.started)


BOX_CALLS = 100_000
"""Calls the stop box serves at once: one :meth:`_StopBox.stopped` per running task, and
a few more (a box that served fewer would stop answering once that many tasks ran at once)."""


def _ask_stop(box: Any, name: str) -> tuple[int | None, Any, Future[int]]:
    """In a Ray task starting run ``name``: the grid's stop signal if it was stopped already
    (``None`` if not, or if the box did not answer within :data:`BOX_TIMEOUT_S`: the task
    then trains), the reference of a :meth:`_StopBox.stopped` call, and a future that
    completes with the grid's stop signal once there is one.

    Nothing here blocks in Ray: Ray lends the CPU of a task blocked in ``ray.get`` or
    ``ray.wait`` to another task, so that a polling task would let a grid run more tasks than
    it has CPUs (measured on a 1-CPU local instance). ``ObjectRef.future`` completes through a
    callback instead, and the task waits on plain futures."""
    ref = box.stopped.remote()
    stopped = ref.future()
    try:
        signum = box.start.remote(name).future().result(timeout=BOX_TIMEOUT_S)
    except Exception:  # noqa: BLE001  (a box that does not answer: train, watched)
        signum = None
    return signum, ref, stopped


@contextlib.contextmanager
def _stop_watch(stopped: Future[int]) -> Iterator[None]:
    """In a Ray task: once ``stopped`` completes, stop the run's training loop as that signal
    to its process would (:func:`rlkit.faults.request_stop`: Ray's workers block SIGINT and
    exit on SIGTERM), so that it checkpoints and stops; a run still starting stops at its
    loop's first step, a run past its loop finishes. Withdrawn when the block ends (a worker
    runs several tasks). A box gone with its driver fails the future: the run trains on."""
    done, lock = [False], threading.Lock()

    def on_stop(f: Future[int]) -> None:  # in Ray's thread, or this one if already done
        if f.cancelled() or f.exception() is not None:
            return
        with lock:
            if not done[0]:
                request_stop(f.result())

    stopped.add_done_callback(on_stop)
    try:
        yield
    finally:
        with lock:
            done[0] = True
            clear_stop_request()


def _run_remote(fn: RunFn, config: Any, name: str, files: dict[str, bytes], box: Any = None
                ) -> tuple[str, Any, dict[str, bytes]]:
    """Ray task body: put ``files`` (what the run's directory holds already: a resumed run's
    checkpoint and logs) in a scratch directory, train there, return ``("ok", result,
    files)``, or ``("stopped", why, files)`` when the grid's stop (``box``, a
    :class:`_StopBox`) ended the run, or ``("not started", signum, {})`` when the grid was
    stopped before the task started (``signum`` its signal). A failed run raises, its files
    attached."""
    if box is None:
        return _train_remote(fn, config, name, files, None)
    signum, ref, stopped = _ask_stop(box, name)
    if signum is not None:
        return ("not started", signum, {})
    try:  # a box gone with its driver fails the future, which the watch ignores: train
        return _train_remote(fn, config, name, files, stopped)
    finally:
        if not stopped.done():  # the box's call ends with the task, so that a box
            import ray  # serving BOX_CALLS at once serves a grid of any length

            with contextlib.suppress(Exception):
                ray.cancel(ref)


def _train_remote(fn: RunFn, config: Any, name: str, files: dict[str, bytes],
                  stopped: Future[int] | None) -> tuple[str, Any, dict[str, bytes]]:
    """:func:`_run_remote`'s training, watching ``stopped`` (:func:`_stop_watch`) if given."""
    import torch

    torch.set_num_threads(RAY_TASK_THREADS)
    torch.compiler.reset()  # a worker's earlier runs leave no compiled code to this one
    with _run_warnings(name), tempfile.TemporaryDirectory(prefix="rlkit-ray-") as tmp:
        run_dir = Path(tmp) / name
        _write_files(run_dir, files)
        try:
            with _stop_watch(stopped) if stopped is not None else contextlib.nullcontext():
                result = fn(config, str(run_dir))
        except TrainingInterrupted as e:  # its loop wrote its checkpoint
            return ("stopped", f"stopped by {signal.Signals(e.signum).name} at step {e.step}",
                    _run_files(run_dir))
        except BaseException as e:
            e.run_files = _run_files(run_dir)  # what it left (checkpoints, logs) comes back too
            raise
        files = _run_files(run_dir)
    return ("ok", result, files)


def _record_home(run_dir: Path) -> None:
    """Make the ``config.json`` of a run that came back from a Ray worker name ``run_dir``,
    where the run now is, instead of the worker's scratch directory."""
    if RunPaths(run_dir).config.is_file():
        record = RunRecord.read(run_dir)
        resume = None if record.run.resume is None else str(run_dir)  # it resumed itself
        dataclasses.replace(record, run=dataclasses.replace(
            record.run, run_dir=str(run_dir), resume=resume)).write(run_dir)


def launch(
    fn: RunFn,
    runs: Sequence[GridRun],
    grid_dir: str | Path,
    launcher: Launcher = "local",
    jobs: int = 1,
    ray_address: str | None = None,
    progress: bool = True,
) -> list[RunOutcome]:
    """Run every ``GridRun`` and return their outcomes (in the order given).

    Args:
        fn: ``fn(config, run_dir) -> final metrics``; module-level, so it can be pickled.
        runs: the grid; names must be unique.
        grid_dir: parent of the run directories.
        launcher: ``"local"`` processes or ``"ray"`` tasks.
        jobs: local processes at a time (local), or CPUs of the local Ray instance started when
            no ``ray_address`` is given.
        ray_address: address of an existing Ray cluster (``"auto"``, ``"ray://host:10001"``);
            ``None`` starts a local Ray instance.
        progress: show a progress bar over the whole grid.

    A failing run does not stop the others; its outcome carries the error.

    Raises:
        GridInterrupted: SIGINT / SIGTERM stopped the grid (see the module docstring).
    """
    if launcher not in ("local", "ray"):
        raise ValueError(f"launcher must be 'local' or 'ray', got {launcher!r}")
    if jobs <= 0:
        raise ValueError(f"jobs must be a positive integer, got {jobs}")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    grid_dir = Path(grid_dir)
    grid_dir.mkdir(parents=True, exist_ok=True)
    outcomes = {r.name: RunOutcome(r.name, grid_dir / r.name) for r in runs}
    threads = threads_per_job(jobs) if launcher == "local" else RAY_TASK_THREADS
    how = (f"{jobs} at a time, " if launcher == "local" else "on Ray, ") \
        + f"{threads} thread{'s' * (threads > 1)} each"
    bar = tqdm(total=len(runs), desc=f"grid {grid_dir.name} ({how})", unit="run",
               disable=not progress)
    try:
        if launcher == "local":
            _launch_local(fn, runs, outcomes, jobs, threads, bar, grid_dir)
        else:
            _launch_ray(fn, runs, outcomes, jobs, ray_address, bar, grid_dir)
    finally:
        bar.close()
    return [outcomes[n] for n in names]


def _finish(bar: tqdm, outcomes: dict[str, RunOutcome]) -> None:
    """Count on the bar the runs that ended, of ``outcomes`` (every run of the grid, those
    not ended yet without a result or an error); a stopped run has not ended: it goes on
    when the grid is resumed."""
    stopped = sum(o.stopped for o in outcomes.values())
    failed = sum(o.error is not None and not o.stopped for o in outcomes.values())
    ended = failed + sum(o.result is not None for o in outcomes.values())
    bar.update(ended - bar.n)
    bar.set_postfix(dict(failed=failed, **({"stopped": stopped} if stopped else {})))


def threads_per_job(jobs: int, cpu_count: int | None = None,
                    omp_num_threads: str | None = None) -> int:
    """Torch threads for each of ``jobs`` parallel local runs: the cores shared out evenly,
    and never more than ``OMP_NUM_THREADS`` when the user has set it (several grids side by
    side then do not oversubscribe the cores)."""
    threads = max(1, (cpu_count or os.cpu_count() or 1) // jobs)
    cap = os.environ.get("OMP_NUM_THREADS") if omp_num_threads is None else omp_num_threads
    if cap and cap.strip():
        first = cap.split(",")[0].strip()  # OpenMP allows a list, one entry per nesting level
        if not first.isdigit() or int(first) < 1:
            raise ValueError(f"OMP_NUM_THREADS must be a positive integer (or a list of them), "
                             f"got {cap!r}")
        threads = min(threads, int(first))
    return threads


@dataclass
class _Running:
    name: str
    process: Any  # multiprocessing.Process
    conn: Connection
    message: tuple[Any, ...] | None = None


class _Relay:
    """SIGINT / SIGTERM handlers that pass the signal on to the running runs (main thread
    only; elsewhere signals keep their handlers)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.running: dict[str, _Running] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        print(f"\n{signal.Signals(signum).name} received: "
              + ("passing it on to the running runs, which checkpoint and stop; no new run "
                 "starts" if first else "passing it on again: the runs stop at once"),
              file=sys.stderr, flush=True)
        for r in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.process.pid, signum)


@contextlib.contextmanager
def _relay_signals() -> Iterator[_Relay]:
    relay = _Relay()
    with on_stop_signals(relay):
        yield relay


def _launch_local(fn: RunFn, runs: Sequence[GridRun], outcomes: dict[str, RunOutcome],
                  jobs: int, threads: int, bar: tqdm, grid_dir: Path) -> None:
    ctx = mp.get_context("spawn")  # no forked torch state
    queue = list(runs)
    with _relay_signals() as relay:
        running = relay.running
        while queue or running:
            while queue and len(running) < jobs and relay.signum is None:
                r = queue.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_run_local, name=f"rlkit-{r.name}", args=(
                    fn, r.config, str(outcomes[r.name].run_dir), threads, send, os.getpid()))
                p.start()
                send.close()
                running[r.name] = _Running(r.name, p, receive)
            if not running:
                break
            waits = {**{x.conn: x for x in running.values() if x.message is None},
                     **{x.process.sentinel: x for x in running.values()}}
            for ready in wait_any(list(waits)):
                x = waits[ready]
                if ready is x.conn:
                    if x.message is None and not x.conn.closed:
                        x.message = _receive(x.conn)
                elif x.name in running:
                    _collect(x, outcomes[x.name])
                    del running[x.name]
                    _finish(bar, outcomes)
        for r in queue:  # one resumed may have a checkpoint from before
            outcomes[r.name].error = _stopped(_not_started(relay.signum),
                                              outcomes[r.name].run_dir)
            outcomes[r.name].stopped = True
    if relay.signum is not None:
        raise GridInterrupted(relay.signum, [outcomes[r.name] for r in runs], grid_dir)


def _receive(conn: Connection) -> tuple[str, Any]:
    """The message of a run, or ``("gone", None)`` when its process closed the pipe first."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return ("gone", None)


def _collect(x: _Running, outcome: RunOutcome) -> None:
    """The outcome of a run whose process has ended."""
    x.process.join()
    if x.message is None and not x.conn.closed:
        with contextlib.suppress(OSError):
            x.message = _receive(x.conn) if x.conn.poll() else None
    x.conn.close()
    code = x.process.exitcode
    if x.message is not None and x.message[0] == "ok":
        outcome.result = x.message[1]
    elif x.message is not None and x.message[0] in ("error", "stopped"):
        outcome.error, outcome.stopped = x.message[1], x.message[0] == "stopped"
        outcome.details = x.message[2] if len(x.message) > 2 else None
    elif code in _STOPS:  # a second signal, or one before its loop took it over
        why = (f"killed by {_STOPS[code]}, a second signal or one outside its training loop"
               if code < 0 else f"stopped by {_STOPS[code]} while it started")
        outcome.error = _stopped(why, outcome.run_dir)
        outcome.stopped = True
    else:
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 \
            else f"exit code {code}"
        outcome.error = f"the run's process died ({how}) before it reported"


def _ray_host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address; None for ``auto``
    and for an address without a port."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


_RAY_EXPECTED = ("expected the address of a running Ray cluster's head (HOST:PORT, "
                 "ray://HOST:PORT, or auto for a cluster started on this machine)")


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` or ``ray://HOST:PORT`` address where nothing answers within
    ``timeout`` seconds (Ray itself would retry for minutes); ``auto`` is left to Ray.

    Raises:
        RuntimeError: nothing answers at ``address``.
    """
    hp = _ray_host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except OSError as e:
        raise RuntimeError(f"--ray-address {address}: nothing answers at {hp[0]}:{hp[1]} "
                           f"({e}); {_RAY_EXPECTED}") from e


def _connect_ray(ray: Any, address: str | None, jobs: int) -> None:
    """``ray.init``: a local instance of ``jobs`` CPUs, or the cluster at ``address``
    (:func:`check_ray_address` first); Ray's own failure to connect is one RuntimeError.

    Raises:
        RuntimeError: nothing answers at ``address``, or Ray cannot connect to it.
    """
    if address is None:
        ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
        return
    check_ray_address(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RuntimeError(f"--ray-address {address}: Ray cannot connect "
                           f"({first_line(e, with_type=False)}); {_RAY_EXPECTED}") from e


def _take_ray_result(ray: Any, ref: Any, outcome: RunOutcome, cancelled: int | None = None,
                     started: bool = True) -> None:
    """A finished Ray task into ``outcome``: its files written into the run directory (a
    failed or stopped run's too, what it wrote before it ended), its result or its error.
    ``cancelled``: the signal whose second arrival cancelled the task, if it did;
    ``started``: whether the task had started its run by then."""
    run_dir = outcome.run_dir
    try:
        status, payload, files = ray.get(ref)
        _write_files(run_dir, files)
        _record_home(run_dir)
        if status == "ok":
            outcome.result = payload
        else:
            outcome.stopped = True
            outcome.error = _stopped(
                payload if status == "stopped" else _not_started(payload), run_dir)
    except Exception as e:  # noqa: BLE001  (reported per run)
        if cancelled is not None and isinstance(
                e, (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
            outcome.stopped = True
            name = signal.Signals(cancelled).name
            outcome.error = _stopped(
                f"cancelled by a second {name} (what it wrote since it started stays in its "
                f"worker's temporary directory)" if started else
                f"not started: cancelled by a second {name}", run_dir)
            return
        cause = getattr(e, "cause", None)  # a RayTaskError's: the run's own
        lost = ""
        if files := getattr(cause, "run_files", None):
            try:
                _write_files(run_dir, files)
                _record_home(run_dir)
            except (OSError, RunDirError) as back:
                lost = f" (and what it wrote did not come back: {_one_line(back)})"
        if isinstance(cause, BaseException):  # as a local run reports it
            outcome.error = _one_line(cause) + lost
            details = _details(cause)
            if details and not isinstance(cause, EnvError):  # frames: the worker's,
                details = COLOUR.sub("", str(e)).rstrip() or details  # in Ray's text
            outcome.details = details
        else:
            outcome.error = "".join(traceback.format_exception_only(e)).strip()


class _Signals:
    """SIGINT / SIGTERM handler that only counts them (the Ray driver acts on them between
    its waits, not inside Ray's own code)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum
        self.count += 1


def _launch_ray(fn: RunFn, runs: Sequence[GridRun], outcomes: dict[str, RunOutcome], jobs: int,
                ray_address: str | None, bar: tqdm, grid_dir: Path) -> None:
    try:
        import cloudpickle
        import ray
    except ImportError as e:
        raise RuntimeError("--launcher ray needs Ray: pip install 'rlkit[ray]'") from e
    # A run function defined in a script (``__main__``) cannot be imported by the workers:
    # ship that module by value. Everything it imports must be installed there.
    module = sys.modules.get(getattr(fn, "__module__", ""), None)
    if module is not None and module.__name__ == "__main__":
        cloudpickle.register_pickle_by_value(module)
    started_here = not ray.is_initialized()
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init puts its own in place
    if started_here:
        _connect_ray(ray, ray_address, jobs)
    locks: dict[str, RunLock] = {}
    signals = _Signals()
    try:
        with on_stop_signals(signals):  # until Ray has shut down: a signal then is counted
            try:
                task = ray.remote(num_cpus=RAY_TASK_THREADS, max_retries=0)(_run_remote)
                box = ray.remote(num_cpus=0, max_concurrency=BOX_CALLS)(_StopBox).remote()
                # A resumed run's files (its replay, in its checkpoints) are read when its
                # task is submitted, and tasks wait on the driver while those in flight hold
                # SHIP_BYTES: a grid of large checkpoints is not all in memory at once. Runs
                # without files (new ones) are all submitted at once, so that a cluster sees
                # the whole demand.
                waiting, refs, shipped = list(runs), {}, {}
                _ray_loop(ray, task, box, fn, waiting, refs, shipped, outcomes, locks, bar,
                          signals)
                for r in waiting:  # never submitted
                    outcomes[r.name].error = _stopped(_not_started(signals.signum),
                                                      outcomes[r.name].run_dir)
                    outcomes[r.name].stopped = True
                _finish(bar, outcomes)
            finally:
                for lock in locks.values():
                    lock.release()
                if started_here:
                    ray.shutdown()
    finally:
        if started_here and main and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    if signals.signum is not None:
        raise GridInterrupted(signals.signum, [outcomes[r.name] for r in runs], grid_dir)


def _ray_loop(ray: Any, task: Any, box: Any, fn: RunFn, waiting: list[GridRun],
              refs: dict[Any, str], shipped: dict[str, int], outcomes: dict[str, RunOutcome],
              locks: dict[str, RunLock], bar: tqdm, signals: _Signals) -> None:
    """Submit the ``waiting`` runs within the shipping budget and take each result as it
    comes; a first stop signal goes to ``box`` (no run is submitted after it), a second
    cancels the tasks in flight."""
    told, sizes = 0, {}
    started: set[str] | None = None  # the runs whose tasks had started when a second signal came

    def size(name: str) -> int:  # read once: the driver looks again every STOP_POLL_S
        if name not in sizes:
            sizes[name] = _files_size(outcomes[name].run_dir)
        return sizes[name]

    while (waiting and signals.signum is None) or refs:
        while waiting and signals.signum is None and (
                not refs or sum(shipped.values()) + size(waiting[0].name) <= SHIP_BYTES):
            r = waiting.pop(0)
            run_dir = outcomes[r.name].run_dir  # the grid holds each run's directory while
            try:  # its task runs, as a local run holds its own
                make_dir(run_dir, "run directory")
                locks[r.name] = RunLock(run_dir).acquire()
            except (RunDirBusy, FileSystemError) as e:
                outcomes[r.name].error = _one_line(e)
                _finish(bar, outcomes)
                continue
            files = _run_files(run_dir)
            shipped[r.name] = sum(map(len, files.values()))
            refs[task.remote(fn, r.config, r.name, files, box)] = r.name
            del files
        if not refs:
            continue
        done, _ = ray.wait(list(refs), num_returns=1, timeout=STOP_POLL_S)
        if signals.count > told:
            name = signal.Signals(signals.signum).name
            if told == 0:
                try:
                    ray.get(box.stop.remote(signals.signum), timeout=BOX_TIMEOUT_S)
                    print(f"\n{name} received: passing it on to the running runs, which "
                          "checkpoint and stop; no new run starts", file=sys.stderr, flush=True)
                except Exception as e:  # noqa: BLE001  (said, and a second signal still works)
                    print(f"\n{name} received, but it could not be passed on to the running "
                          f"runs ({first_line(e)}); no new run starts; send it again to cancel "
                          "them at once (on a local Ray instance, a signal to the launcher's "
                          "whole process group also ends Ray's own processes: send it to the "
                          "launcher's PID alone)", file=sys.stderr, flush=True)
            if signals.count >= 2:
                print(f"\n{name} received again: cancelling the running runs at once",
                      file=sys.stderr, flush=True)
                if started is None:
                    with contextlib.suppress(Exception):  # unknown: each said to have started
                        started = ray.get(box.started_runs.remote(), timeout=BOX_TIMEOUT_S)
                for ref in refs:
                    ray.cancel(ref, force=True)
            told = signals.count
        for ref in done:
            name = refs.pop(ref)
            shipped.pop(name)
            _take_ray_result(ray, ref, outcomes[name],
                             signals.signum if signals.count >= 2 else None,
                             started is None or name in started)
            _finish(bar, outcomes)
            locks.pop(name).release()


__all__ = ["GridInterrupted", "GridRun", "RunOutcome", "check_ray_address", "launch",
           "threads_per_job"]
