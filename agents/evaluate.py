"""Evaluate a saved run: ``python -m agents.evaluate RUN_DIR --episodes N [--video]``.

Loads ``RUN_DIR/checkpoint.pt`` (``weights_only=True``), rebuilds the agent from the run's
``config.json`` (:class:`rlkit.rundir.RunRecord`), runs the deterministic policy in step mode
with the recurrent state carried, and prints return statistics. The policy is the one the run
evaluated (its ``--eval-policy``) unless ``--policy actor``, ``target`` or ``average`` names
it (``average`` needs a run that kept one: ``--agent.average-tau``);
``--own-episodes`` runs the run's own evaluation episodes (those its evaluations logged).
A run that has not finished (stopped, or still going) is evaluated at its checkpoint's step,
with a warning that names it.
``--video`` records MP4s through Gymnasium's ``RecordVideo`` (needs ``moviepy``; MuJoCo tasks
render headless with ``MUJOCO_GL=egl`` or ``osmesa``; pygame's tasks with SDL's ``dummy`` video
driver, set unless ``SDL_VIDEODRIVER`` is).

Exit codes: 0 done; 2 a missing or damaged run directory (``config.json``, checkpoint), a
checkpoint of another run (or an edited ``config.json``: the field is named), no renderer, or
``--policy average`` for a run without an average, or the module of a ``module:EnvId`` task
that is not on the import path; 3 a file-system error; 4 the environment raised an exception,
its module's import included (its traceback is printed after the one-line message).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from agents.train import env_modules, load_agent, one_line_warnings
from rlkit.checkpoint import CheckpointError
from rlkit.config import EVAL_POLICIES, parse_device
from rlkit.evaluate import (
    EnvModuleError,
    Policy,
    RenderError,
    episode_rewards,
    evaluate,
    make_eval_env,
)
from rlkit.faults import EnvError, GuardedEnv
from rlkit.fields import is_count
from rlkit.rundir import RunDirError, RunPaths, RunRecord, dir_arg
from rlkit.seeding import eval_env_seed


def own_episodes(run_dir: Path) -> tuple[int, int]:
    """A run's own evaluation episodes, ``(count, seed of the first)``: those it logged."""
    record = RunRecord.read(run_dir)
    return record.loop.eval_episodes, eval_env_seed(record.run.seed)


@contextmanager
def _run_policy(run_dir: Path, device: str, video_dir: Path | None, policy: str | None
                ) -> Iterator[tuple[Policy, GuardedEnv, RunRecord]]:
    """A run's final policy (``policy`` or the run's ``--eval-policy``), its evaluation env
    (closed on exit) and its record."""
    agent, record = load_agent(run_dir, device)
    which = record.loop.eval_policy if policy is None else policy
    try:  # refused before an env is made
        chosen = agent.policy(which)
    except ValueError as e:
        raise RunDirError(f"{run_dir}: {e}") from e
    env = GuardedEnv(make_eval_env(record.env.id, video_dir, env_modules(record.env)),
                     "evaluation")
    try:
        yield chosen, env, record
    finally:
        env.close()


def check_episodes(episodes: int, seed: int, dash: str = "") -> None:
    """Refuse (``ValueError``) a count of episodes that is not positive or a negative first
    seed (Gymnasium's reset seeds are non-negative); ``dash``: ``--`` to name the flags."""
    if not is_count(episodes):
        raise ValueError(f"{dash}episodes must be a positive integer, got {episodes!r}")
    if not is_count(seed, minimum=0):
        raise ValueError(f"{dash}seed must be a non-negative integer (Gymnasium's reset seeds), "
                         f"got {seed!r}")


def evaluate_run(run_dir: Path, episodes: int, seed: int, device: str = "cpu",
                 video_dir: Path | None = None, policy: str | None = None
                 ) -> tuple[dict[str, float], RunRecord]:
    """A run's final policy (its checkpoint) on episodes ``seed .. seed + episodes - 1``:
    the statistics of :func:`rlkit.evaluate.evaluate` and the run's record. ``policy``:
    ``actor``, ``target`` or ``average`` (default: the run's ``--eval-policy``).

    Raises:
        ValueError: ``episodes`` is not positive, ``seed`` is negative, or ``device`` is not
            cpu, cuda or cuda:N (or a CUDA device this machine does not have).
        RunDirError: ``average`` for a run that kept no average of its actor."""
    check_episodes(episodes, seed)
    with _run_policy(run_dir, device, video_dir, policy) as (chosen, env, record):
        return evaluate(chosen, env, episodes, torch.device(device), seed), record


def run_rewards(run_dir: Path, episodes: int, seed: int, device: str = "cpu",
                policy: str | None = None) -> list[list[float]]:
    """The rewards, step by step, of :func:`evaluate_run`'s episodes (same arguments and
    errors)."""
    check_episodes(episodes, seed)
    with _run_policy(run_dir, device, None, policy) as (chosen, env, _):
        return [r for r, _ in episode_rewards(chosen, env, episodes, torch.device(device), seed)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m agents.evaluate",
                                description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=dir_arg)
    p.add_argument("--episodes", type=int, default=None, help="episodes (default 10)")
    p.add_argument("--seed", type=int, default=None, help="seed of the first episode (default 0)")
    p.add_argument("--own-episodes", action="store_true",
                   help="the run's own evaluation episodes (its evaluation seed and "
                        "--eval-episodes): what its evaluations logged")
    p.add_argument("--video", action="store_true",
                   help="write MP4s to RUN_DIR/videos/POLICY-seedS-Nep (one folder per policy, "
                        "first seed and number of episodes)")
    p.add_argument("--device", default="cpu", help="torch device to run on (default cpu)")
    p.add_argument("--policy", choices=EVAL_POLICIES, default=None,
                   help="the actor, the target actor or the actor's average (--agent.average-tau) "
                        "(default: the run's --eval-policy)")
    a = p.parse_args(argv)
    if a.own_episodes:
        if a.episodes is not None or a.seed is not None:
            p.error("--own-episodes sets the episodes and their seed: give neither --episodes "
                    "nor --seed with it")
        a.episodes, a.seed = own_episodes(a.run_dir)
    a.episodes = 10 if a.episodes is None else a.episodes
    a.seed = 0 if a.seed is None else a.seed
    try:
        check_episodes(a.episodes, a.seed, dash="--")
        parse_device(a.device)
    except ValueError as e:
        p.error(str(e))
    video_dir = None
    if a.video:  # a folder of its own: no file of another call's is listed as this one's
        which = a.policy or RunRecord.read(a.run_dir).loop.eval_policy
        video_dir = RunPaths(a.run_dir).videos / f"{which}-seed{a.seed}-{a.episodes}ep"
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # frames drawn off screen
    stats, record = evaluate_run(a.run_dir, a.episodes, a.seed, a.device, video_dir, a.policy)
    which = a.policy or record.loop.eval_policy
    print(f"{record.env.id} / {record.model.backbone} ({which}): return "
          f"{stats['eval_return_mean']:.2f} +- {stats['eval_return_std']:.2f} over {a.episodes} "
          f"episodes (mean length {stats['eval_length_mean']:.1f})")
    if "eval_success_rate" in stats:
        print(f"success rate {stats['eval_success_rate']:.2f}")
    if video_dir is not None:
        print(f"videos: {sorted(str(v) for v in video_dir.glob('*.mp4'))}")
    return stats


def run(argv: list[str] | None = None) -> int:
    """:func:`main` with the exit codes of the module docstring."""
    try:
        with one_line_warnings():
            main(argv)
    except EnvError as e:
        print(f"error: {e}\nthe env's traceback:\n{e.env_traceback.rstrip()}", file=sys.stderr)
        return 4
    except (RenderError, RunDirError, CheckpointError, EnvModuleError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(run())
