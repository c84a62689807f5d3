"""Replay buffers behind one contract: every batch is a :class:`SequenceBatch` of windows.

- :class:`ReplayBuffer` stores transitions and samples windows of length one (classic DDPG
  with a memoryless encoder): the batch's fields are views of one gathered block of rows.
- :class:`SequenceReplayBuffer` stores each environment's step stream with its episode boundaries
  and samples windows of length L that never cross an episode, padded and masked, optionally
  with the recurrent states recorded while acting (R2D2-style burn-in).

Both take the same calls (:class:`Replay`), keep ``terminated`` (no bootstrap) and
``truncated`` (bootstrap) apart, and sample with their own ``torch.Generator``. The loop and the
agent never ask which one they have; :func:`make_replay` is the one place that chooses, and
:func:`replay_memory` says beforehand how much memory that buffer and its batches take.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from rlkit.buffers.base import ArrayLike, Replay, SequenceBatch
from rlkit.buffers.sequences import SequenceReplayBuffer
from rlkit.buffers.transitions import ReplayBuffer
from rlkit.config import ModelConfig, ReplayConfig
from rlkit.tree import tree_flatten

FLOAT_BYTES = 4
"""Every stored value is float32 (episode starts: int64)."""


def make_replay(replay: ReplayConfig, model: ModelConfig, *, num_envs: int, obs_dim: int,
                action_dim: int, device: torch.device, generator: torch.Generator,
                state_example: Any = None) -> Replay:
    """Transitions for a memoryless encoder on windows of one step, windows otherwise.

    Args:
        replay: the replay section, with ``seq_len`` resolved.
        model: the model section (its backbone decides whether windows need a stream).
        num_envs: envs feeding the buffer.
        obs_dim: observation dimension.
        action_dim: action dimension.
        device: storage and sampling device.
        generator: draws the samples.
        state_example: in ``stored`` state mode, a state tree with one row (its shapes are
            stored per step).
    """
    if replay.seq_len is None:
        raise ValueError("replay.seq_len must be resolved before the buffer is built")
    if replay.transitions(model.memory):
        return ReplayBuffer(replay.buffer_size, obs_dim, action_dim, device, generator)
    return SequenceReplayBuffer(replay, num_envs=num_envs, obs_dim=obs_dim, action_dim=action_dim,
                          device=device, generator=generator, state_example=state_example)


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


__all__ = ["ArrayLike", "Replay", "ReplayBuffer", "ReplayMemory", "SequenceBatch",
           "SequenceReplayBuffer", "make_replay", "replay_memory"]
