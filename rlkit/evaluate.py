"""Evaluate a saved run: ``python -m rlkit.evaluate RUN_DIR --episodes N [--video]``.

Loads ``RUN_DIR/checkpoint.pt`` (``weights_only=True``), rebuilds the agent named in the run's
``config.json`` (its ``agent_entry_point``), runs the deterministic policy in step mode with the
recurrent state carried, and prints return statistics. ``--video`` records MP4s through
Gymnasium's ``RecordVideo`` (needs ``moviepy``; MuJoCo tasks render headless with
``MUJOCO_GL=egl`` or ``osmesa``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlkit.checkpoint import load_checkpoint
from rlkit.trainer import evaluate


class RenderError(RuntimeError):
    """The environment cannot render frames here (no renderer or missing package)."""


def _resolve(entry_point: str) -> Any:
    module, _, attr = entry_point.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The trained agent of a run and its resolved config.

    Raises:
        FileNotFoundError: no ``config.json`` in ``run_dir``.
        rlkit.checkpoint.CheckpointError: the checkpoint is missing, unsafe or corrupt.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    config = json.loads(config_path.read_text())
    for module in config.get("env_imports", []):
        importlib.import_module(module)
    agent = _resolve(config["agent_entry_point"])(config)
    ckpt = load_checkpoint(run_dir / "checkpoint.pt", map_location=device)
    agent.load_checkpoint_state(ckpt["agent"])
    return agent.to(device).eval(), config


def make_eval_env(env_id: str, video_dir: Path | None) -> gym.Env:
    """The evaluation env, recording every episode to ``video_dir`` when given."""
    env_id = env_id.partition(":")[2] or env_id
    if video_dir is None:
        return gym.make(env_id)
    try:
        env = gym.make(env_id, render_mode="rgb_array")
        env.reset(seed=0)
        frame = env.render()
    except Exception as e:  # noqa: BLE001  (any backend failure means: no renderer)
        raise RenderError(
            f"cannot render {env_id!r} here ({type(e).__name__}: {e}); for MuJoCo tasks set "
            "MUJOCO_GL=egl or MUJOCO_GL=osmesa, for classic control install pygame"
        ) from e
    if not isinstance(frame, np.ndarray):
        raise RenderError(f"{env_id!r} returned no rgb_array frame (got {type(frame).__name__})")
    try:
        import moviepy  # noqa: F401
    except ImportError as e:
        raise RenderError("--video needs moviepy: pip install 'rlkit[video]'") from e
    return gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda _: True,
                                    name_prefix="eval")


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(prog="python -m rlkit.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--video", action="store_true", help="write MP4s to RUN_DIR/videos")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.episodes <= 0:
        p.error(f"--episodes must be a positive integer, got {a.episodes}")
    agent, config = load_run(a.run_dir, a.device)
    video_dir = a.run_dir / "videos" if a.video else None
    env = make_eval_env(config["env"], video_dir)
    try:
        stats = evaluate(agent, env, a.episodes, torch.device(a.device), a.seed)
    finally:
        env.close()
    print(f"{config['env']} / {config['backbone']}: return {stats['eval_return_mean']:.2f} "
          f"+- {stats['eval_return_std']:.2f} over {a.episodes} episodes "
          f"(mean length {stats['eval_length_mean']:.1f})")
    if "eval_success_rate" in stats:
        print(f"success rate {stats['eval_success_rate']:.2f}")
    if video_dir is not None:
        print(f"videos: {sorted(str(v) for v in video_dir.glob('*.mp4'))}")
    return stats


if __name__ == "__main__":
    try:
        main()
    except (RenderError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
