"""What a replay buffer will take, before it is built: :func:`replay_memory` estimates the
bytes of the buffer :func:`rlkit.buffers.make_replay` builds and of its largest sampled batch;
:func:`check_replay_memory` refuses a buffer that would not fit in the memory available
(:func:`available_memory`), naming the estimate and the flag to lower.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from rlkit.config import ModelConfig, ReplayConfig
from rlkit.tree import tree_flatten

FLOAT_BYTES = 4
"""Every stored value is float32 (episode starts: int64)."""


class ReplayMemory(NamedTuple):
    """Bytes a replay buffer holds and a sampled batch takes (see :func:`replay_memory`)."""

    rows: int
    """Steps stored (the capacity)."""
    row_bytes: int
    """Bytes per stored step, stored states excluded."""
    states: int
    """Bytes of the stored states (``--state-mode stored``; one every ``state_every`` steps)."""
    batch: int
    """Bytes of one sampled batch at its widest (the gathered windows, with their indices)."""

    @property
    def buffer(self) -> int:
        """Bytes of the buffer: rows and stored states."""
        return self.rows * self.row_bytes + self.states

    @property
    def total(self) -> int:
        return self.buffer + self.batch


def replay_memory(replay: ReplayConfig, model: ModelConfig, *, num_envs: int, obs_dim: int,
                  action_dim: int, state_example: Any = None) -> ReplayMemory:
    """The memory of the buffer :func:`make_replay` builds for the same arguments, before it is
    built: its preallocated tensors (rows x widths x 4 bytes, stored states included) and the
    largest temporaries of one :meth:`Replay.sample` of ``replay.batch_size`` windows of
    ``replay.seq_len`` steps (the windows' values and their int64 / bool indices).

    Args:
        replay: the replay section, resolved (``seq_len`` and ``batch_size`` set).
        model: the model section.
        num_envs: envs feeding the buffer.
        obs_dim: observation dimension (all entries of an image observation).
        action_dim: action dimension.
        state_example: in ``stored`` state mode, a state tree with one row.
    """
    if replay.seq_len is None or replay.batch_size is None:
        raise ValueError("replay.seq_len and replay.batch_size must be resolved first")
    f, b, length = FLOAT_BYTES, replay.batch_size, replay.seq_len
    if replay.transitions(model.memory):  # one (capacity, 2 obs + action + 3) block
        width = 2 * obs_dim + action_dim + 3
        return ReplayMemory(replay.buffer_size, width * f, 0, 2 * b * width * f + b * 8)
    per_env = replay.buffer_size // num_envs
    row = (2 * obs_dim + action_dim + 3) * f + 8  # obs, next_obs, action, reward, flags; start
    states = 0
    if replay.state_mode == "stored" and state_example is not None:
        width = sum(leaf[0].numel() for leaf in tree_flatten(state_example)[0])
        every = replay.state_every or length - replay.burn_in
        states = num_envs * -(-per_env // every) * width * f
    # per window step: the gathered values (obs twice, actions and previous actions, rewards,
    # flags, mask) and about seven int64 / float index and mask tensors
    window_step = (3 * obs_dim + 4 * action_dim + 12) * f + 7 * 8
    return ReplayMemory(per_env * num_envs, row, states, b * (length + 1) * window_step)


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """Bytes of memory free for new allocations on ``device``, and where that figure comes
    from: CUDA's free memory on a GPU, ``MemAvailable`` of ``/proc/meminfo`` on a Linux CPU;
    ``None`` where it is unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_replay_memory(replay: ReplayConfig, model: ModelConfig, *, num_envs: int,
                        obs_dim: int, action_dim: int, state_example: Any,
                        device: torch.device) -> ReplayMemory:
    """:func:`replay_memory` for these arguments, refused when it exceeds
    :func:`available_memory` on ``device`` (not checked where that is unknown).

    Raises:
        ValueError: giving the estimate, what is available and the flag to change.
    """
    r = replay
    need = replay_memory(r, model, num_envs=num_envs, obs_dim=obs_dim, action_dim=action_dim,
                         state_example=state_example)
    available = available_memory(device)
    if available is None or need.total <= available[0]:
        return need
    free, source = available
    if need.batch > need.buffer:
        fix = f"lower --batch-size ({r.batch_size}) or --seq-len ({r.seq_len})"
    else:
        per_step = need.buffer / need.rows
        fit = max(0, int((free - need.batch) / per_step))
        fix = f"lower --buffer-size (about {fit:,} steps would fit)"
        if need.states > need.rows * need.row_bytes:
            fix += ", or store fewer states (a larger --state-every, or --state-mode zero)"
    states = f" + {_size(need.states)} of stored states" if need.states else ""
    raise ValueError(
        f"not enough memory for the replay buffer: it needs about {_size(need.buffer)} "
        f"(--buffer-size {r.buffer_size:,} steps x {need.row_bytes:,} bytes{states}) and a "
        f"sampled batch about {_size(need.batch)} (--batch-size {r.batch_size} windows of "
        f"--seq-len {r.seq_len} steps), {_size(need.total)} in all, but {_size(free)} is "
        f"available ({source}); {fix}")


__all__ = ["FLOAT_BYTES", "ReplayMemory", "available_memory", "check_replay_memory",
           "replay_memory"]
