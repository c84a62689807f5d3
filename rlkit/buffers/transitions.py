"""Uniform transition replay: windows of one step for a memoryless encoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlkit.buffers.base import (
    ArrayLike,
    SequenceBatch,
    as_tensor,
    check_keep,
    check_sizes,
    cpu_state_tensor,
)
from rlkit.fields import is_count


class ReplayBuffer:
    """Uniform transition replay in preallocated tensors, wrapping around when full.

    The fields live side by side in one ``(capacity, width)`` tensor, ``data``, of which
    ``obs``, ``next_obs``, ``action``, ``reward``, ``terminated`` and ``truncated`` are views: an
    :meth:`add` is one host-to-device copy and one write, a :meth:`sample` one gather. A sample
    is a :class:`SequenceBatch` of windows of length one whose fields are views of the gathered
    rows (``obs`` and ``next_obs`` are adjacent columns, so ``batch.obs`` is ``(B, 2, obs_dim)``
    without a copy); there are no previous actions or rewards (zeros) and every step carries
    a loss.

    Args:
        capacity: number of transitions kept.
        obs_dim: observation dimension.
        action_dim: action dimension.
        device: where the storage lives and batches are sampled.
        generator: the generator that draws sample indices (on ``device``).
    """

    FIELDS = ("obs", "next_obs", "action", "reward", "terminated", "truncated")
    ADD_ORDER = ("obs", "action", "reward", "next_obs", "terminated", "truncated")
    wants_states = False

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        check_sizes(capacity, obs_dim, action_dim)
        self.capacity, self.device = capacity, torch.device(device)
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.generator = generator or torch.Generator(device=self.device)
        widths = dict(obs=obs_dim, next_obs=obs_dim, action=action_dim, reward=1, terminated=1,
                      truncated=1)
        self._cols: dict[str, slice] = {}
        start = 0
        for name in self.FIELDS:
            self._cols[name] = slice(start, start + widths[name])
            start += widths[name]
        self._columns = {name: [c.start, c.stop] for name, c in self._cols.items()}  # saved
        self._vector = {"obs", "next_obs", "action"}
        self.data = torch.zeros(capacity, start, device=self.device)  # (capacity, width)
        for name in self.FIELDS:
            setattr(self, name, self._field(self.data, name))
        self._zero_action = torch.zeros(1, 1, action_dim, device=self.device)
        self._zero = torch.zeros(1, 1, device=self.device)
        self._one = torch.ones(1, 1, device=self.device)
        self.pos = 0  # next slot to write
        self.size = 0

    def _field(self, rows: Tensor, name: str) -> Tensor:
        """Field ``name`` of packed ``rows`` ``(N, width)`` as a view (1-D for scalars)."""
        cols = self._cols[name]
        return rows[:, cols] if name in self._vector else rows[:, cols.start]

    def __len__(self) -> int:
        return self.size

    def add(self, obs: ArrayLike, action: ArrayLike, reward: ArrayLike, next_obs: ArrayLike,
            terminated: ArrayLike, truncated: ArrayLike, *, states: Any = None,
            keep: np.ndarray | None = None) -> int:
        """Store N transitions (one per environment; every argument has N rows) but those
        where ``keep`` is false. Returns the number of rows dropped."""
        if states is not None:
            raise ValueError("states were given but a transition buffer stores none")
        values = dict(zip(self.ADD_ORDER, (obs, action, reward, next_obs, terminated, truncated)))
        obs_shape = tuple(obs.shape) if isinstance(obs, Tensor) else np.shape(obs)
        if len(obs_shape) != 2:
            raise ValueError(f"obs must have shape (N, {self.obs.shape[1]}), one row per env, "
                             f"got {obs_shape}")
        n = len(obs)
        parts, tensors = {}, False
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors = True
            else:
                value = np.asarray(value)
            want = (n, getattr(self, name).shape[1]) if name in self._vector else (n,)
            shape = tuple(value.shape)
            if shape != want and not (name not in self._vector and shape == (n, 1)):
                raise ValueError(f"{name} must have shape {want}, got {shape} (N = {n} envs, "
                                 "as in obs)")
            parts[name] = value.reshape(n, -1)
        dropped = 0
        keep = check_keep(keep, n)
        if keep is not None and not np.all(keep):
            rows_kept = np.flatnonzero(keep)
            dropped = n - len(rows_kept)
            parts = {k: v[rows_kept] for k, v in parts.items()}
            n = len(rows_kept)
            if n == 0:
                return dropped
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions to a buffer of capacity {self.capacity}")
        ordered = [parts[name] for name in self.FIELDS]
        if tensors:
            rows = torch.cat([as_tensor(x, self.device, torch.float32) for x in ordered], 1)
        else:  # one host array, one copy to the device
            rows = torch.from_numpy(np.concatenate(ordered, 1, dtype=np.float32))
        rows = rows.to(self.device)  # (n, width)
        if self.pos + n <= self.capacity:  # contiguous slots: a plain copy
            self.data[self.pos : self.pos + n] = rows
        else:  # wraps around the end
            self.data[(self.pos + torch.arange(n, device=self.device)) % self.capacity] = rows
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        return dropped

    def start_new_episodes(self, mask: ArrayLike) -> None:
        """Nothing to do: transitions carry no episode bookkeeping."""

    def sample(self, batch_size: int) -> SequenceBatch:
        """Draw ``batch_size`` transitions uniformly (with replacement), as windows of one."""
        if not is_count(batch_size):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(
            self.size, (batch_size,), device=self.device, generator=self.generator
        )
        # index_select: a plain row gather (advanced indexing costs about 4x more on the CPU)
        rows = torch.index_select(self.data, 0, idx)  # (B, width)
        b, o = batch_size, self._cols["obs"].start
        return SequenceBatch(
            obs=rows[:, o : o + 2 * self.obs_dim].unflatten(1, (2, self.obs_dim)),  # (B, 2, D)
            action=self._field(rows, "action")[:, None],  # (B, 1, A)
            reward=self._field(rows, "reward")[:, None],  # (B, 1)
            terminated=self._field(rows, "terminated")[:, None],
            truncated=self._field(rows, "truncated")[:, None],
            prev_action=self._zero_action.expand(b, 2, self.action_dim),
            prev_reward=self._zero.expand(b, 2),
            mask=self._one.expand(b, 1),
        )

    def state_dict(self) -> dict[str, object]:
        """The filled rows of ``data`` as a CPU tensor, and the columns each field takes in it.

        The rows of a full buffer on the CPU are ``data`` itself, not a copy (write them before
        the buffer changes). Older checkpoints hold one tensor per field; both load.
        """
        return {
            "data": cpu_state_tensor(self.data[: self.size]),  # (size, width)
            "columns": self._columns,
            "pos": self.pos,
            "size": self.size,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        n, pos = int(state["size"]), int(state["pos"])
        if n > self.capacity:
            raise ValueError(f"checkpoint holds {n} transitions, capacity is {self.capacity}")
        if not 0 <= pos < self.capacity or (n < self.capacity and pos != n):
            raise ValueError(f"checkpoint's replay position is {pos} with {n} transitions held; "
                             f"expected {n} (or, once full, 0 to {self.capacity - 1})")
        if "data" in state:
            if state["columns"] != self._columns:
                raise ValueError(f"replay columns in the checkpoint are {state['columns']}, "
                                 f"expected {self._columns} (obs_dim {self.obs_dim}, "
                                 f"action_dim {self.action_dim})")
            value = state["data"]
            if tuple(value.shape) != (n, self.data.shape[1]):
                raise ValueError(f"replay data has shape {tuple(value.shape)} in the checkpoint, "
                                 f"expected {(n, self.data.shape[1])} ({n} transitions)")
            self.data[:n] = value.to(self.device)
        else:  # one tensor per field (checkpoints before the packed rows)
            for name in self.FIELDS:
                value = state[name]
                if tuple(value.shape) != (n, *getattr(self, name).shape[1:]):
                    raise ValueError(
                        f"replay field {name} has shape {tuple(value.shape)} in the checkpoint, "
                        f"expected {(n, *getattr(self, name).shape[1:])} ({n} transitions)"
                    )
                getattr(self, name)[:n] = value.to(self.device)
        self.pos, self.size = pos, n
        self.generator.set_state(state["generator"])
