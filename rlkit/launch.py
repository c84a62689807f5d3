"""Run a grid of training runs: as local processes (default) or as tasks on a Ray cluster.

The launcher knows nothing of agents or environments: it calls ``fn(config, run_dir)`` for
each run (``agents.train.run_in`` from the command line) and keeps one run directory per run
under the grid directory. On Ray, each task trains in a scratch directory on its worker and
sends the run directory's files back, so the runs are gathered where the user asked whatever
the cluster's file systems.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

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


def _run_local(fn: RunFn, config: Any, run_dir: str, threads: int) -> dict[str, float]:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    return fn(config, run_dir)


def _run_remote(fn: RunFn, config: Any, name: str) -> tuple[dict[str, float], dict[str, bytes]]:
    """Ray task body: train in a scratch directory, return the result and the run's files."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="rlkit-ray-") as tmp:
        run_dir = Path(tmp) / name
        result = fn(config, str(run_dir))
        files = {str(p.relative_to(run_dir)): p.read_bytes()
                 for p in run_dir.rglob("*") if p.is_file()}
    return result, files


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
    bar = tqdm(total=len(runs), desc=f"grid {grid_dir.name}", unit="run", disable=not progress)
    if launcher == "local":
        _launch_local(fn, runs, outcomes, jobs, bar)
    else:
        _launch_ray(fn, runs, outcomes, jobs, ray_address, bar)
    bar.close()
    return [outcomes[n] for n in names]


def _finish(bar: tqdm, outcomes: dict[str, RunOutcome]) -> None:
    failed = sum(o.error is not None for o in outcomes.values())
    bar.update(1)
    bar.set_postfix(failed=failed)


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


def _launch_local(fn: RunFn, runs: Sequence[GridRun], outcomes: dict[str, RunOutcome],
                  jobs: int, bar: tqdm) -> None:
    threads = threads_per_job(jobs)
    ctx = mp.get_context("spawn")  # no forked torch state
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        pending: dict[Future, str] = {
            pool.submit(_run_local, fn, r.config, str(outcomes[r.name].run_dir), threads): r.name
            for r in runs
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                name = pending.pop(fut)
                try:
                    outcomes[name].result = fut.result()
                except BaseException as e:  # noqa: BLE001  (reported per run)
                    outcomes[name].error = "".join(traceback.format_exception_only(e)).strip()
                _finish(bar, outcomes)


def _launch_ray(fn: RunFn, runs: Sequence[GridRun], outcomes: dict[str, RunOutcome], jobs: int,
                ray_address: str | None, bar: tqdm) -> None:
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
    if started_here:
        if ray_address is None:
            ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=ray_address, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_run_remote)
        refs = {task.remote(fn, r.config, r.name): r.name for r in runs}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                name = refs.pop(ref)
                try:
                    result, files = ray.get(ref)
                    for rel, data in files.items():
                        path = outcomes[name].run_dir / rel
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(data)
                    outcomes[name].result = result
                except Exception as e:  # noqa: BLE001  (reported per run)
                    outcomes[name].error = "".join(traceback.format_exception_only(e)).strip()
                _finish(bar, outcomes)
    finally:
        if started_here:
            ray.shutdown()
