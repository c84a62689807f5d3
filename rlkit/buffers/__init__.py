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

from typing import Any

import torch

from rlkit.buffers.base import ArrayLike, Replay, SequenceBatch
from rlkit.buffers.memory import ReplayMemory, available_memory, check_replay_memory, replay_memory
from rlkit.buffers.sequences import SequenceReplayBuffer
from rlkit.buffers.transitions import ReplayBuffer
from rlkit.config import ModelConfig, ReplayConfig

COMPILED_WINDOW_LENGTHS = 4
"""Episode window lengths a compiled update meets at most (``SequenceReplayBuffer``'s
``window_lengths`` when ``model.compile`` is ``"on"``): each length compiles the update once
more, and ``torch.compile`` stops compiling a function after 8 shapes."""


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

    A compiled update (``model.compile == "on"``) gets episode windows of at most
    :data:`COMPILED_WINDOW_LENGTHS` lengths; an eager one, windows cut after their longest
    episode.
    """
    if replay.seq_len is None:
        raise ValueError("replay.seq_len must be resolved before the buffer is built")
    if replay.transitions(model.memory):
        return ReplayBuffer(replay.buffer_size, obs_dim, action_dim, device, generator)
    return SequenceReplayBuffer(replay, num_envs=num_envs, obs_dim=obs_dim, action_dim=action_dim,
                          device=device, generator=generator, state_example=state_example,
                          window_lengths=COMPILED_WINDOW_LENGTHS if model.compile == "on"
                          else None)


__all__ = ["COMPILED_WINDOW_LENGTHS", "ArrayLike", "Replay", "ReplayBuffer", "ReplayMemory",
           "SequenceBatch", "SequenceReplayBuffer", "available_memory", "check_replay_memory",
           "make_replay", "replay_memory"]
