"""Replay buffers in preallocated tensors on the training device.

- :class:`ReplayBuffer` stores transitions ``(obs, action, reward, next_obs, terminated,
  truncated)`` and samples uniform batches (the memoryless path).
- :class:`SequenceReplayBuffer` stores the step stream of each environment, keeps episode
  boundaries, and samples windows of length L that never cross an episode boundary, padded and
  masked, optionally with the recurrent states recorded while acting (R2D2-style burn-in).

Both keep ``terminated`` (no bootstrap) and ``truncated`` (bootstrap) apart, and sample with
their own ``torch.Generator``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

ArrayLike = np.ndarray | Tensor
StateMode = Literal["zero", "stored"]
WindowStart = Literal["any", "episode"]


class TransitionBatch(NamedTuple):
    """A batch of B transitions."""

    obs: Tensor  # (B, obs_dim)
    action: Tensor  # (B, act_dim)
    reward: Tensor  # (B,)
    next_obs: Tensor  # (B, obs_dim)
    terminated: Tensor  # (B,) float, 1.0 where the episode ended in a terminal state
    truncated: Tensor  # (B,) float, 1.0 where the episode was cut (time limit)


class SequenceBatch(NamedTuple):
    """A batch of B windows of L steps.

    ``obs`` holds L + 1 observations: ``obs[:, t]`` is the observation at step t and
    ``obs[:, t + 1]`` the one after it (the episode's final observation where it ended inside
    the window). ``prev_action[:, t]`` and ``prev_reward[:, t]`` are the action and reward that
    led to ``obs[:, t]`` (zero at an episode start). ``mask`` is 1 where step t carries a loss:
    inside the episode and past the burn-in prefix. ``valid`` is 1 inside the episode.
    """

    obs: Tensor  # (B, L + 1, obs_dim)
    action: Tensor  # (B, L, act_dim)
    reward: Tensor  # (B, L)
    terminated: Tensor  # (B, L)
    truncated: Tensor  # (B, L)
    prev_action: Tensor  # (B, L + 1, act_dim)
    prev_reward: Tensor  # (B, L + 1)
    mask: Tensor  # (B, L)
    valid: Tensor  # (B, L)
    states: tuple[tuple[Tensor, ...], ...]  # stored states at the window start, () in zero mode


def _as_tensor(x: ArrayLike, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(device, dtype)


def _check_sizes(capacity: int, obs_dim: int, action_dim: int) -> None:
    for name, v in (("capacity", capacity), ("obs_dim", obs_dim), ("action_dim", action_dim)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _cpu_copy(x: Tensor) -> Tensor:
    """A CPU copy of ``x`` that owns its memory (saving a view of a CPU tensor would write its
    whole storage: the full capacity instead of the filled slots)."""
    return x.to("cpu", copy=True)


class ReplayBuffer:
    """Uniform transition replay in preallocated tensors, wrapping around when full.

    The fields live side by side in one ``(capacity, width)`` tensor, ``data``, of which
    ``obs``, ``action``, ``reward``, ``next_obs``, ``terminated`` and ``truncated`` are views:
    an :meth:`add` is one host-to-device copy and one write, a :meth:`sample` one gather (the
    batch's fields are views of the gathered rows).

    Args:
        capacity: number of transitions kept.
        obs_dim: observation dimension.
        action_dim: action dimension.
        device: where the storage lives and batches are sampled.
        generator: the generator that draws sample indices (on ``device``).
    """

    FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        _check_sizes(capacity, obs_dim, action_dim)
        self.capacity, self.device = capacity, torch.device(device)
        self.generator = generator or torch.Generator(device=self.device)
        widths = (obs_dim, action_dim, 1, obs_dim, 1, 1)  # per field, in FIELDS order
        self._cols: dict[str, slice] = {}
        start = 0
        for name, w in zip(self.FIELDS, widths):
            self._cols[name] = slice(start, start + w)
            start += w
        self._shapes = {name: (w,) if name in ("obs", "action", "next_obs") else ()
                        for name, w in zip(self.FIELDS, widths)}
        self.data = torch.zeros(capacity, start, device=self.device)  # (capacity, width)
        for name, view in zip(self.FIELDS, self._views(self.data)):
            setattr(self, name, view)
        self.pos = 0  # next slot to write
        self.size = 0

    def _views(self, rows: Tensor) -> TransitionBatch:
        """The fields of packed ``rows`` ``(N, width)`` as views (1-D for the scalars)."""
        return TransitionBatch(*(
            rows[:, self._cols[name]] if self._shapes[name] else rows[:, self._cols[name].start]
            for name in self.FIELDS))

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: ArrayLike,
        action: ArrayLike,
        reward: ArrayLike,
        next_obs: ArrayLike,
        terminated: ArrayLike,
        truncated: ArrayLike,
    ) -> None:
        """Store N transitions (one per environment); every argument has N rows."""
        values = (obs, action, reward, next_obs, terminated, truncated)
        n = len(obs)
        parts, tensors = [], False
        for name, value in zip(self.FIELDS, values):
            if isinstance(value, Tensor):
                tensors = True
            else:
                value = np.asarray(value)
            want = (n, *self._shapes[name])
            shape = tuple(value.shape)
            if shape != want and not (not self._shapes[name] and shape == (n, 1)):
                raise ValueError(f"{name} must have shape {want}, got {shape}")
            parts.append(value.reshape(n, -1))
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions to a buffer of capacity {self.capacity}")
        if tensors:
            rows = torch.cat([_as_tensor(x, self.device, torch.float32) for x in parts], 1)
        else:  # one host array, one copy to the device
            rows = torch.from_numpy(np.concatenate(parts, 1, dtype=np.float32))
        rows = rows.to(self.device)  # (n, width)
        if self.pos + n <= self.capacity:  # contiguous slots: a plain copy
            self.data[self.pos : self.pos + n] = rows
        else:  # wraps around the end
            self.data[(self.pos + torch.arange(n, device=self.device)) % self.capacity] = rows
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> TransitionBatch:
        """Draw ``batch_size`` transitions uniformly (with replacement)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(
            self.size, (batch_size,), device=self.device, generator=self.generator
        )
        # index_select: a plain row gather (advanced indexing costs about 4x more on the CPU)
        return self._views(torch.index_select(self.data, 0, idx))  # (B, width) -> fields

    def state_dict(self) -> dict[str, object]:
        """The filled slots, field by field, as CPU tensors of their own."""
        n = self.size
        return {
            **{name: _cpu_copy(getattr(self, name)[:n]) for name in self.FIELDS},
            "pos": self.pos,
            "size": self.size,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        n = int(state["size"])
        if n > self.capacity:
            raise ValueError(f"checkpoint holds {n} transitions, capacity is {self.capacity}")
        for name in self.FIELDS:
            value = state[name]
            if tuple(value.shape[1:]) != tuple(getattr(self, name).shape[1:]):
                raise ValueError(
                    f"replay field {name} has shape {tuple(value.shape[1:])} per row in the "
                    f"checkpoint, expected {tuple(getattr(self, name).shape[1:])}"
                )
            getattr(self, name)[:n] = value.to(self.device)
        self.pos, self.size = int(state["pos"]), n
        self.generator.set_state(state["generator"])


class SequenceReplayBuffer:
    """Per-environment step streams with episode bookkeeping; samples masked windows.

    Storage is ``(num_envs, capacity // num_envs, ...)``: each environment's steps are
    contiguous, so a window is a run of slots of one stream. A window starts at a uniformly drawn
    stored step and ends at its episode's end or after L steps, whichever comes first; the rest is
    padding (``valid = 0``). In ``"stored"`` state mode, the states recorded while acting (the
    state before each step's observation was seen) are kept and returned for the window start;
    the first ``burn_in`` steps of a window then carry no loss, unless the window starts at its
    episode's start (where the stored state is the exact initial state).

    Args:
        capacity: total steps kept (split evenly across environments).
        num_envs: number of parallel environments feeding the buffer.
        obs_dim: observation dimension.
        action_dim: action dimension.
        seq_len: window length L (steps carrying a loss, plus burn-in when set).
        device: storage and sampling device.
        generator: draws window starts.
        state_mode: ``"zero"`` (windows start from the initial state) or ``"stored"``.
        burn_in: steps at a window's start that refresh a stored state and get no loss.
        state_shapes: in ``"stored"`` mode, the per-row shapes of each state tuple to keep
            (for example ``(actor_state_shapes, critic_state_shapes)``).
        window_start: ``"any"`` stored step, or only ``"episode"`` starts (full-episode
            training when ``seq_len`` covers the longest episode).
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_dim: int,
        action_dim: int,
        seq_len: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        state_mode: StateMode = "zero",
        burn_in: int = 0,
        state_shapes: tuple[tuple[tuple[int, ...], ...], ...] = (),
        window_start: WindowStart = "any",
    ) -> None:
        _check_sizes(capacity, obs_dim, action_dim)
        if window_start not in ("any", "episode"):
            raise ValueError(f"window_start must be 'any' or 'episode', got {window_start!r}")
        self.window_start = window_start
        if num_envs <= 0:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs}")
        if seq_len <= 0:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len}")
        if burn_in < 0 or burn_in >= seq_len:
            raise ValueError(f"burn_in must be in [0, seq_len={seq_len}), got {burn_in}")
        if state_mode not in ("zero", "stored"):
            raise ValueError(f"state_mode must be 'zero' or 'stored', got {state_mode!r}")
        if state_mode == "zero" and burn_in:
            raise ValueError(f"burn_in={burn_in} needs state_mode='stored'")
        per_env = capacity // num_envs
        if per_env < seq_len:
            raise ValueError(
                f"capacity {capacity} holds {per_env} steps per environment for {num_envs} "
                f"environments, fewer than seq_len={seq_len}"
            )
        self.num_envs, self.per_env = num_envs, per_env
        self.seq_len, self.burn_in = seq_len, burn_in
        self.state_mode, self.device = state_mode, torch.device(device)
        self.generator = generator or torch.Generator(device=self.device)
        z = dict(device=self.device, dtype=torch.float32)
        e, c = num_envs, per_env
        self.obs = torch.zeros(e, c, obs_dim, **z)
        self.next_obs = torch.zeros(e, c, obs_dim, **z)
        self.action = torch.zeros(e, c, action_dim, **z)
        self.reward = torch.zeros(e, c, **z)
        self.terminated = torch.zeros(e, c, **z)
        self.truncated = torch.zeros(e, c, **z)
        # Absolute stream index (per env) of each stored step's episode start.
        self.episode_start = torch.zeros(e, c, device=self.device, dtype=torch.long)
        self.state_shapes = state_shapes if state_mode == "stored" else ()
        self.states = tuple(
            tuple(torch.zeros(e, c, *shape, **z) for shape in group) for group in self.state_shapes
        )
        self.count = 0  # steps added per environment (absolute stream index of the next step)
        self._current_start = torch.zeros(e, device=self.device, dtype=torch.long)

    def __len__(self) -> int:
        return min(self.count, self.per_env) * self.num_envs

    def add(
        self,
        obs: ArrayLike,
        action: ArrayLike,
        reward: ArrayLike,
        next_obs: ArrayLike,
        terminated: ArrayLike,
        truncated: ArrayLike,
        states: tuple[tuple[Tensor, ...], ...] = (),
    ) -> None:
        """Store one step of every environment (each argument has ``num_envs`` rows).

        ``next_obs`` is the observation after the step (the final observation where the episode
        ended). ``states`` are the recurrent states before the step's observation was seen,
        required in ``"stored"`` mode and refused otherwise.
        """
        f = dict(device=self.device, dtype=torch.float32)
        rows = {
            "obs": _as_tensor(obs, **f),
            "action": _as_tensor(action, **f),
            "reward": _as_tensor(reward, **f).reshape(-1),
            "next_obs": _as_tensor(next_obs, **f),
            "terminated": _as_tensor(terminated, **f).reshape(-1),
            "truncated": _as_tensor(truncated, **f).reshape(-1),
        }
        for name, value in rows.items():
            want = (self.num_envs, *getattr(self, name).shape[2:])
            if tuple(value.shape) != want:
                raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")
        if self.state_mode == "stored":
            got = tuple(tuple(tuple(s.shape[1:]) for s in g) for g in states)
            if got != self.state_shapes or any(
                s.shape[0] != self.num_envs for g in states for s in g
            ):
                raise ValueError(
                    f"states must have per-row shapes {self.state_shapes} with {self.num_envs} "
                    f"rows, got {got}"
                )
        elif states:
            raise ValueError("states were given but the buffer's state_mode is 'zero'")
        slot = self.count % self.per_env
        for name, value in rows.items():
            getattr(self, name)[:, slot] = value
        self.episode_start[:, slot] = self._current_start
        for store_group, group in zip(self.states, states):
            for store, s in zip(store_group, group):
                store[:, slot] = s.detach().to(**f)
        self.count += 1
        done = (rows["terminated"] > 0) | (rows["truncated"] > 0)
        self._current_start = torch.where(
            done, torch.full_like(self._current_start, self.count), self._current_start
        )

    def start_new_episodes(self, mask: ArrayLike) -> None:
        """Start a new episode in the streams where ``mask`` (shape ``(num_envs,)``) is true,
        although the last stored step did not end one: windows never run across the cut (used
        when an episode is restarted or a step is dropped)."""
        mask = _as_tensor(mask, self.device, torch.bool).reshape(-1)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"mask must have shape ({self.num_envs},), got {tuple(mask.shape)}")
        self._current_start = torch.where(
            mask, torch.full_like(self._current_start, self.count), self._current_start)

    def sample(self, batch_size: int) -> SequenceBatch:
        """Draw ``batch_size`` windows with uniformly drawn start steps."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if self.count == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        stored = min(self.count, self.per_env)
        first = self.count - stored  # oldest absolute index still stored
        g = self.generator
        if self.window_start == "episode":
            # absolute index of every stored slot; keep those that start an episode
            absolute = first + torch.arange(stored, device=self.device)  # (S,)
            slots = absolute % self.per_env
            is_start = self.episode_start[:, slots] == absolute  # (E, S)
            env_idx, pos = torch.nonzero(is_start, as_tuple=True)
            if len(env_idx) == 0:
                raise RuntimeError("no stored step starts an episode (all were overwritten)")
            pick = torch.randint(len(env_idx), (batch_size,), device=self.device, generator=g)
            return self._gather(env_idx[pick], absolute[pos[pick]])
        env = torch.randint(self.num_envs, (batch_size,), device=self.device, generator=g)
        start = first + torch.randint(stored, (batch_size,), device=self.device, generator=g)
        return self._gather(env, start)

    def _gather(self, env: Tensor, start: Tensor) -> SequenceBatch:
        """Windows of ``seq_len`` steps of stream ``env[b]`` from absolute index ``start[b]``."""
        L = self.seq_len
        t = start[:, None] + torch.arange(L, device=self.device)  # (B, L) absolute indices
        slot = t % self.per_env
        e = env[:, None].expand_as(t)
        ep = self.episode_start[env, start % self.per_env]  # (B,)
        # Inside the window's episode: same episode start and already written.
        valid = (t < self.count) & (self.episode_start[e, slot] == ep[:, None])
        # The episode may end inside the window: stop at the first terminated/truncated step.
        done = (self.terminated[e, slot] + self.truncated[e, slot]) > 0
        ended_before = torch.cumsum(done.long(), dim=1) - done.long()  # dones strictly before t
        valid = valid & (ended_before == 0)
        vf = valid.float()
        n_valid = valid.sum(1)  # (B,) >= 1: the start step itself is always valid

        obs = torch.zeros(len(env), L + 1, self.obs.shape[-1], device=self.device)
        obs[:, :L] = self.obs[e, slot] * vf[..., None]
        last = slot.gather(1, (n_valid - 1)[:, None]).squeeze(1)  # slot of the last valid step
        obs[torch.arange(len(env), device=self.device), n_valid] = self.next_obs[env, last]

        action = self.action[e, slot] * vf[..., None]  # (B, L, A)
        reward = self.reward[e, slot] * vf
        at_episode_start = start == ep  # (B,)
        prev_slot = (start - 1) % self.per_env
        keep_prev = (~at_episode_start).float()
        prev0_a = self.action[env, prev_slot] * keep_prev[:, None]  # (B, A)
        prev0_r = self.reward[env, prev_slot] * keep_prev
        prev_action = torch.cat([prev0_a[:, None], action], dim=1)  # (B, L + 1, A)
        prev_reward = torch.cat([prev0_r[:, None], reward], dim=1)  # (B, L + 1)

        mask = vf.clone()
        if self.burn_in:
            burn = torch.where(at_episode_start, 0, self.burn_in)  # (B,)
            mask = mask * (torch.arange(L, device=self.device)[None] >= burn[:, None]).float()
        states = tuple(
            tuple(store[env, start % self.per_env] for store in group) for group in self.states
        )
        return SequenceBatch(
            obs=obs,
            action=action,
            reward=reward,
            terminated=self.terminated[e, slot] * vf,
            truncated=self.truncated[e, slot] * vf,
            prev_action=prev_action,
            prev_reward=prev_reward,
            mask=mask,
            valid=vf,
            states=states,
        )

    def state_dict(self) -> dict[str, object]:
        """The filled slots only (``min(count, per_env)`` steps per environment), on the CPU."""
        n = min(self.count, self.per_env)
        return {
            "obs": _cpu_copy(self.obs[:, :n]),
            "next_obs": _cpu_copy(self.next_obs[:, :n]),
            "action": _cpu_copy(self.action[:, :n]),
            "reward": _cpu_copy(self.reward[:, :n]),
            "terminated": _cpu_copy(self.terminated[:, :n]),
            "truncated": _cpu_copy(self.truncated[:, :n]),
            "episode_start": _cpu_copy(self.episode_start[:, :n]),
            "states": [[_cpu_copy(s[:, :n]) for s in g] for g in self.states],
            "count": self.count,
            "current_start": _cpu_copy(self._current_start),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore from :meth:`state_dict` (the filled slots, or every slot as older versions
        saved them)."""
        n = min(int(state["count"]), self.per_env)
        for name in ("obs", "next_obs", "action", "reward", "terminated", "truncated",
                     "episode_start"):
            value, store = state[name], getattr(self, name)
            filled = (store.shape[0], n, *store.shape[2:])
            if tuple(value.shape) not in (filled, tuple(store.shape)):
                raise ValueError(
                    f"sequence replay field {name} has shape {tuple(value.shape)} in the "
                    f"checkpoint, expected {filled} (count {state['count']})"
                )
            store[:, :n].copy_(value[:, :n])
        for store_group, group in zip(self.states, state["states"], strict=True):
            for store, s in zip(store_group, group, strict=True):
                store[:, :n].copy_(s[:, :n])
        self.count = int(state["count"])
        self._current_start = state["current_start"].to(self.device)
        self.generator.set_state(state["generator"])
