"""Seeding in one place: every random component gets its own generator derived from one seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Seeds:
    """Independent generators and seeds derived from one run seed."""

    seed: int
    noise: np.random.Generator
    """Exploration noise and random warm-up actions."""
    buffer: torch.Generator
    """Replay sampling (on the buffer's device)."""
    env_seed: int
    """Seed passed to the training envs' first reset (env i gets env_seed + i)."""
    eval_env_seed: int
    """Seed for the evaluation env."""


def eval_env_seed(seed: int) -> int:
    """The evaluation seed :func:`seed_everything` derives from the run ``seed`` (evaluation
    episode ``k`` resets with it ``+ k``), without seeding anything."""
    return int(np.random.SeedSequence(seed).spawn(4)[3].generate_state(1)[0])


def seed_everything(seed: int, buffer_device: torch.device | str = "cpu") -> Seeds:
    """Seed Python, NumPy and torch (for code we do not own, e.g. weight init), then derive
    one generator per component.

    Args:
        seed: the run seed, a non-negative integer.
        buffer_device: device of the replay buffer's generator.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    ss = np.random.SeedSequence(seed)
    noise_ss, buf_ss, env_ss, _ = ss.spawn(4)
    buffer = torch.Generator(device=buffer_device)
    buffer.manual_seed(int(buf_ss.generate_state(1, dtype=np.uint64)[0] % 2**63))
    return Seeds(
        seed=seed,
        noise=np.random.default_rng(noise_ss),
        buffer=buffer,
        env_seed=int(env_ss.generate_state(1)[0]),
        eval_env_seed=eval_env_seed(seed),
    )


def global_rng_state() -> dict[str, object]:
    """The states of the global generators: Python ``random``, NumPy's legacy global one,
    torch's CPU generator and, when CUDA is initialised, every CUDA device's."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_global_rng_state(state: dict[str, object]) -> None:
    """Inverse of :func:`global_rng_state` (CUDA states only when CUDA has as many devices)."""
    random.setstate(_as_tuple(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch_cpu"])
    cuda = state["torch_cuda"]
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def _as_tuple(value: object) -> object:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value
