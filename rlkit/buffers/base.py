"""The replay contract: the batch type both buffers sample and the calls they take."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from rlkit.fields import is_count

ArrayLike = np.ndarray | Tensor


class SequenceBatch(NamedTuple):
    """A batch of B windows of L steps (L = 1 for transitions).

    ``obs`` holds L + 1 observations: ``obs[:, t]`` is the observation at step t and
    ``obs[:, t + 1]`` the one after it (the episode's final observation where it ended inside
    the window). ``prev_action[:, t]`` and ``prev_reward[:, t]`` are the action and reward that
    led to ``obs[:, t]`` (zero at an episode start). ``mask`` is 1 where step t carries a loss:
    inside the episode and past the burn-in prefix; padded steps hold zeros.
    """

    obs: Tensor  # (B, L + 1, obs_dim)
    action: Tensor  # (B, L, act_dim)
    reward: Tensor  # (B, L)
    terminated: Tensor  # (B, L) 1.0 where the episode ended in a terminal state
    truncated: Tensor  # (B, L) 1.0 where the episode was cut (time limit)
    prev_action: Tensor  # (B, L + 1, act_dim)
    prev_reward: Tensor  # (B, L + 1)
    mask: Tensor  # (B, L)
    states: Any = None
    """The recurrent states stored at the window start (same tree as given to ``add``), or
    ``None``: windows start from the initial state."""

    def check(self, obs_dim: int | None = None, action_dim: int | None = None) -> None:
        """Raise ``ValueError`` naming the field unless every field has the shape the class
        docstring gives (with ``obs_dim`` / ``action_dim`` when given): a reward of shape
        ``(B, L, 1)`` would broadcast into a wrong loss, silently."""
        if self.obs.dim() != 3:
            raise ValueError(f"batch.obs must have shape (B, L + 1, obs_dim), got "
                             f"{tuple(self.obs.shape)}")
        b, l1, d = self.obs.shape
        a = self.action.shape[-1] if self.action.dim() == 3 else action_dim
        expected = {"obs": (b, l1, obs_dim or d), "action": (b, l1 - 1, action_dim or a),
                    "reward": (b, l1 - 1), "terminated": (b, l1 - 1),
                    "truncated": (b, l1 - 1), "prev_action": (b, l1, action_dim or a),
                    "prev_reward": (b, l1), "mask": (b, l1 - 1)}
        names = {"obs": "(B, L + 1, obs_dim)", "action": "(B, L, act_dim)",
                 "prev_action": "(B, L + 1, act_dim)", "prev_reward": "(B, L + 1)"}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"batch.{name} must have shape {names.get(name, '(B, L)')} = "
                                 f"{shape} (B = {b}, L = {l1 - 1}), got {got}")

    @classmethod
    def from_transitions(cls, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor,
                         terminated: Tensor, truncated: Tensor) -> SequenceBatch:
        """B transitions as B windows of one step (no previous actions or rewards).

        Args:
            obs, next_obs: ``(B, obs_dim)``.
            action: ``(B, act_dim)``.
            reward, terminated, truncated: ``(B,)``.

        Raises:
            ValueError: a shape is not these (named with what was given).
        """
        if obs.dim() != 2 or next_obs.shape != obs.shape:
            raise ValueError(f"obs and next_obs must both have shape (B, obs_dim), got "
                             f"{tuple(obs.shape)} and {tuple(next_obs.shape)}")
        b = obs.shape[0]
        if action.dim() != 2 or action.shape[0] != b:
            raise ValueError(f"action must have shape (B, act_dim) with B = {b}, got "
                             f"{tuple(action.shape)}")
        for name, x in (("reward", reward), ("terminated", terminated),
                        ("truncated", truncated)):
            if tuple(x.shape) != (b,):
                raise ValueError(f"{name} must have shape (B,) = ({b},), got {tuple(x.shape)}")
        return cls(
            obs=torch.stack([obs, next_obs], dim=1),  # (B, 2, obs_dim)
            action=action[:, None], reward=reward[:, None],
            terminated=terminated[:, None], truncated=truncated[:, None],
            prev_action=action.new_zeros(b, 2, action.shape[-1]),
            prev_reward=reward.new_zeros(b, 2),
            mask=reward.new_ones(b, 1),
        )


class Replay(Protocol):
    """What the loop and the agent use of a replay buffer."""

    wants_states: bool
    """Whether :meth:`add` takes the recurrent states recorded while acting."""

    def __len__(self) -> int: ...

    def add(self, obs: ArrayLike, action: ArrayLike, reward: ArrayLike, next_obs: ArrayLike,
            terminated: ArrayLike, truncated: ArrayLike, *, states: Any = None,
            keep: np.ndarray | None = None) -> int:
        """Store one step of N envs (``next_obs``: the final observation where an episode
        ended); rows where ``keep`` is false are dropped. Returns the number of rows dropped."""

    def start_new_episodes(self, mask: ArrayLike) -> None:
        """The next step of the envs in ``mask`` starts a new episode (a restart)."""

    def sample(self, batch_size: int) -> SequenceBatch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def as_tensor(x: ArrayLike, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``x`` (array or tensor) as a tensor on ``device`` in ``dtype``."""
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(device, dtype)


def check_keep(keep: ArrayLike | None, rows: int) -> np.ndarray | None:
    """``keep`` (one flag per row added, or ``None``) as a boolean array of shape ``(rows,)``.

    Raises:
        ValueError: another shape (it indexed the rows wrongly, or was taken as "keep all").
    """
    if keep is None:
        return None
    flags = np.asarray(keep.cpu() if isinstance(keep, Tensor) else keep, dtype=bool)
    if flags.shape != (rows,):
        raise ValueError(f"keep must have shape ({rows},), one flag per row added, got "
                         f"{flags.shape}")
    return flags


def check_sizes(capacity: int, obs_dim: int, action_dim: int) -> None:
    """Refuse non-positive sizes, naming the value."""
    for name, v in (("capacity", capacity), ("obs_dim", obs_dim), ("action_dim", action_dim)):
        if not is_count(v):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def cpu_state_tensor(x: Tensor) -> Tensor:
    """``x`` on the CPU as a tensor that spans its whole storage, for a state dict.

    Saving a view of a CPU tensor writes the whole storage behind it (the full capacity
    instead of the filled slots), so a view is copied. A CPU tensor that already spans its
    storage (a field of a full buffer) is returned as it is, shared with the buffer as a
    module's ``state_dict`` shares its parameters: a checkpoint of a full buffer then holds no
    second copy of it in memory while it is written.
    """
    whole = (x.is_contiguous() and x.storage_offset() == 0
             and x.untyped_storage().nbytes() == x.numel() * x.element_size())
    return x if x.device.type == "cpu" and whole else x.to("cpu", copy=True)
