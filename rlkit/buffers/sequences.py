"""Sequence replay: per-environment step streams, sampled as masked windows."""

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
from rlkit.config import ReplayConfig
from rlkit.fields import is_count
from rlkit.tree import tree_flatten, tree_unflatten


def _check(cfg: ReplayConfig, num_envs: int, obs_dim: int, action_dim: int,
           state_example: Any) -> None:
    """Refuse sizes and modes the buffer cannot hold, naming the value."""
    capacity, seq_len = cfg.buffer_size, cfg.seq_len
    check_sizes(capacity, obs_dim, action_dim)
    cfg.check_resolved()
    if not is_count(num_envs):
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if cfg.state_mode == "stored" and state_example is None:
        raise ValueError("state_mode 'stored' needs a state_example to size the stored states")
    if capacity // num_envs < seq_len:
        raise ValueError(f"capacity {capacity} holds {capacity // num_envs} steps per environment "
                         f"for {num_envs} environments, fewer than seq_len={seq_len}")


def _trim(batch: SequenceBatch, lengths: int | None = None) -> SequenceBatch:
    """``batch`` without the trailing steps that are padding in every window; with ``lengths``,
    cut at the first multiple of ``ceil(L / lengths)`` that holds them (at most ``lengths``
    window lengths in all, for a compiled update's few shapes)."""
    n = int(batch.mask.sum(1).max().item()) if batch.mask.numel() else 0
    length = batch.mask.shape[1]
    if lengths is not None:
        step = -(-length // lengths)
        n = min(-(-n // step) * step, length)
    if n == 0 or n == length:
        return batch
    return batch._replace(
        obs=batch.obs[:, : n + 1], action=batch.action[:, :n], reward=batch.reward[:, :n],
        terminated=batch.terminated[:, :n], truncated=batch.truncated[:, :n],
        prev_action=batch.prev_action[:, : n + 1], prev_reward=batch.prev_reward[:, : n + 1],
        mask=batch.mask[:, :n])


class SequenceReplayBuffer:
    """Per-environment step streams with episode bookkeeping; samples masked windows.

    Storage is ``(num_envs, capacity // num_envs, ...)``: each environment's steps are
    contiguous, so a window is a run of slots of one stream. A window starts at a uniformly drawn
    stored step and ends at its episode's end or after L steps, whichever comes first; the rest is
    padding (``mask = 0``). In ``"stored"`` state mode, the states recorded while acting (the
    state before each step's observation was seen) are kept and returned for the window start;
    the first ``burn_in`` steps of a window then carry no loss, unless the window starts at its
    episode's start (where the stored state is the exact initial state). In ``"prefix"`` mode
    nothing is stored: a window starts from the initial state ``burn_in`` steps before a
    uniformly drawn step (or at its episode's start, if later), and only the steps from the
    drawn one on carry a loss.

    Args:
        cfg: the replay section (``buffer_size`` steps in all, split evenly across the envs;
            ``seq_len`` resolved; ``state_mode``, ``burn_in``, ``window_start``).
        num_envs: number of parallel environments feeding the buffer.
        obs_dim: observation dimension.
        action_dim: action dimension.
        device: storage and sampling device.
        generator: draws window starts.
        state_example: in ``"stored"`` mode, a state tree (tuples of tensors with one row each,
            e.g. the agent's initial state) whose shapes are kept per step; a sampled batch's
            ``states`` is a tree of the same kind.
        window_lengths: episode windows (``window_start`` episode) are cut after the longest
            episode drawn; with ``window_lengths`` N, at the first of N evenly spaced lengths
            that holds it (multiples of ``ceil(seq_len / N)``), so that a compiled update meets
            at most N shapes (each new shape compiles again, and ``torch.compile`` runs eagerly
            once it has compiled a function 8 times). The extra steps are padding.
    """

    def __init__(
        self,
        cfg: ReplayConfig,
        *,
        num_envs: int,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        state_example: Any = None,
        window_lengths: int | None = None,
    ) -> None:
        _check(cfg, num_envs, obs_dim, action_dim, state_example)
        if window_lengths is not None and not is_count(window_lengths):
            raise ValueError(f"window_lengths must be a positive integer or None, got "
                             f"{window_lengths!r}")
        self.window_lengths = window_lengths
        seq_len, burn_in, state_mode = cfg.seq_len, cfg.burn_in, cfg.state_mode or "zero"
        self.window_start, self.episode_sampling = cfg.window_start, cfg.episode_sampling
        self.num_envs, self.per_env = num_envs, cfg.buffer_size // num_envs
        self.seq_len, self.burn_in = seq_len, burn_in
        self.state_mode, self.device = state_mode, torch.device(device)
        self.generator = generator or torch.Generator(device=self.device)
        z = dict(device=self.device, dtype=torch.float32)
        e, c = num_envs, self.per_env
        self.obs = torch.zeros(e, c, obs_dim, **z)
        self.next_obs = torch.zeros(e, c, obs_dim, **z)
        self.action = torch.zeros(e, c, action_dim, **z)
        self.reward = torch.zeros(e, c, **z)
        self.terminated = torch.zeros(e, c, **z)
        self.truncated = torch.zeros(e, c, **z)
        # Absolute stream index (per env) of each stored step's episode start.
        self.episode_start = torch.zeros(e, c, device=self.device, dtype=torch.long)
        # Stored states: the state before every K-th step of a stream (absolute index t with
        # t % K == 0) in a ring of S = ceil(per_env / K) slots, which outlives the steps.
        self.state_every = cfg.state_every or seq_len - burn_in  # K
        if state_mode == "stored" and c <= self.state_every:
            # after a wrap the ring would hold no chunk start with its state at every multiple
            # of K: nothing to draw a window from but episode starts
            raise ValueError(
                f"capacity {cfg.buffer_size} holds {c} steps per environment for {num_envs} "
                f"environments; --state-mode stored keeps a state every {self.state_every} "
                f"steps (--state-every, default --seq-len minus --burn-in) and needs more "
                f"steps per environment than that: a --buffer-size of at least "
                f"{(self.state_every + 1) * num_envs}")
        self.state_slots = -(-c // self.state_every)  # S
        self.states: list[Tensor] = []  # one (E, S, *shape) store per state leaf
        self._state_spec = None
        if state_mode == "stored":
            leaves, self._state_spec = tree_flatten(state_example)
            self.states = [torch.zeros(e, self.state_slots, *leaf.shape[1:], **z)
                           for leaf in leaves]
        self.count = 0  # steps added per environment (absolute stream index of the next step)
        self._current_start = torch.zeros(e, device=self.device, dtype=torch.long)

    @property
    def wants_states(self) -> bool:
        """True in ``"stored"`` mode: :meth:`add` needs the states recorded while acting."""
        return self.state_mode == "stored"

    def __len__(self) -> int:
        return min(self.count, self.per_env) * self.num_envs

    def add(self, obs: ArrayLike, action: ArrayLike, reward: ArrayLike, next_obs: ArrayLike,
            terminated: ArrayLike, truncated: ArrayLike, *, states: Any = None,
            keep: np.ndarray | None = None) -> int:
        """Store one step of every environment (each argument has ``num_envs`` rows).

        ``next_obs`` is the observation after the step (the final observation where the episode
        ended). ``states`` are the recurrent states before the step's observation was seen (a
        tree like ``state_example``), required in ``"stored"`` mode and refused otherwise.
        The buffer holds one row per env per step, so a row that ``keep`` drops drops the whole
        step, and every stream starts a new episode after it (windows never span the gap).

        Returns:
            The number of rows dropped (0, or ``num_envs``).
        """
        keep = check_keep(keep, self.num_envs)
        f = dict(device=self.device, dtype=torch.float32)
        rows = {
            "obs": as_tensor(obs, **f),
            "action": as_tensor(action, **f),
            "reward": as_tensor(reward, **f),
            "next_obs": as_tensor(next_obs, **f),
            "terminated": as_tensor(terminated, **f),
            "truncated": as_tensor(truncated, **f),
        }
        for name, value in rows.items():
            want = (self.num_envs, *getattr(self, name).shape[2:])
            if len(want) == 1 and tuple(value.shape) == (*want, 1):  # (N, 1) as (N,)
                value = rows[name] = value.reshape(want)
            if tuple(value.shape) != want:
                raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)} "
                                 f"(one row per env)")
        leaves: list[Tensor] = []
        if self.state_mode == "stored":
            leaves = tree_flatten(states)[0] if states is not None else []
            got = [tuple(s.shape) for s in leaves]
            want = [(self.num_envs, *s.shape[2:]) for s in self.states]
            if got != want:
                raise ValueError(f"states must have shapes {want}, got {got}")
        elif states is not None:
            raise ValueError(f"states were given but the buffer's state_mode is "
                             f"{self.state_mode!r}")
        if keep is not None and not np.all(keep):  # checked as a kept step is, then dropped
            self.start_new_episodes(np.ones(self.num_envs, dtype=bool))
            return self.num_envs
        slot = self.count % self.per_env
        for name, value in rows.items():
            getattr(self, name)[:, slot] = value
        self.episode_start[:, slot] = self._current_start
        if self.count % self.state_every == 0:
            for store, s in zip(self.states, leaves):
                store[:, (self.count // self.state_every) % self.state_slots] = \
                    s.detach().to(**f)
        self.count += 1
        done = (rows["terminated"] > 0) | (rows["truncated"] > 0)
        self._current_start = torch.where(
            done, torch.full_like(self._current_start, self.count), self._current_start
        )
        return 0

    def start_new_episodes(self, mask: ArrayLike) -> None:
        """Start a new episode in the streams where ``mask`` (shape ``(num_envs,)``) is true,
        although the last stored step did not end one: windows never run across the cut (used
        when an episode is restarted or a step is dropped)."""
        mask = as_tensor(mask, self.device, torch.bool).reshape(-1)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"mask must have shape ({self.num_envs},), got {tuple(mask.shape)}")
        self._current_start = torch.where(
            mask, torch.full_like(self._current_start, self.count), self._current_start)

    def sample(self, batch_size: int) -> SequenceBatch:
        """Draw ``batch_size`` windows: from uniformly drawn stored steps, or (``window_start``
        episode) from episode starts, each stored episode equally likely or in proportion to
        its length (``episode_sampling``). Episode windows are cut after the longest episode
        drawn, so a batch of short episodes carries no padding beyond its longest one (with
        ``window_lengths``, beyond the first of those lengths that holds it)."""
        if not is_count(batch_size):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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
            starts = absolute[pos]  # (N,) one per stored episode
            if self.episode_sampling == "steps":  # in proportion to the stored length
                # keys relative to the oldest stored step (0: an episode started before it,
                # never drawn), so the count's size is bounded by the buffer, not the run
                span = stored + 1
                rel = (self.episode_start[:, slots] - first).clamp_min(-1) + 1  # (E, S)
                keys = torch.arange(self.num_envs, device=self.device)[:, None] * span + rel
                counts = torch.bincount(keys.flatten(), minlength=self.num_envs * span)
                lengths = counts[env_idx * span + starts - first + 1].float()  # (N,)
                pick = torch.multinomial(lengths, batch_size, replacement=True, generator=g)
            else:
                pick = torch.randint(len(env_idx), (batch_size,), device=self.device,
                                     generator=g)
            return _trim(self._gather(env_idx[pick], starts[pick]), self.window_lengths)
        env = torch.randint(self.num_envs, (batch_size,), device=self.device, generator=g)
        # after a wrap, the oldest stored step's previous action and reward are gone: no window
        # starts there (unless it starts an episode, which the episode mode above handles)
        lost = int(first > 0)
        if self.state_mode != "stored":
            start = first + lost + torch.randint(stored - lost, (batch_size,),
                                                 device=self.device, generator=g)
            if self.state_mode == "zero":
                return self._gather(env, start)
            # prefix: replay up to burn_in earlier steps of the episode (still stored) first
            ep = self.episode_start[env, start % self.per_env]
            lo = torch.where(ep >= first, ep, first + lost)  # earliest usable start
            begin = torch.maximum(start - self.burn_in, lo)
            return gather_windows(self, env, begin, trained_from=start)
        # stored states: a uniformly drawn step's window starts at its chunk start (a step with
        # a stored state) or at its episode start, whichever is later. After a wrap the steps
        # before the oldest chunk start still stored (fewer than K per env) are not drawn.
        k = self.state_every
        oldest = -(-(first + lost) // k) * k  # the oldest chunk start still usable
        if oldest >= self.count:
            raise RuntimeError("no stored step has a stored state yet")
        step = oldest + torch.randint(self.count - oldest, (batch_size,), device=self.device,
                                      generator=g)
        ep = self.episode_start[env, step % self.per_env]
        return self._gather(env, torch.maximum(torch.div(step, k, rounding_mode="floor") * k, ep))

    def _gather(self, env: Tensor, start: Tensor) -> SequenceBatch:
        """Windows of ``seq_len`` steps of stream ``env[b]`` from absolute index ``start[b]``."""
        return gather_windows(self, env, start)

    def state_dict(self) -> dict[str, object]:
        """The filled slots only (``min(count, per_env)`` steps per environment), on the CPU;
        those of a full buffer on the CPU are its own fields, not copies (write them before
        the buffer changes)."""
        n = min(self.count, self.per_env)
        return {
            "obs": cpu_state_tensor(self.obs[:, :n]),
            "next_obs": cpu_state_tensor(self.next_obs[:, :n]),
            "action": cpu_state_tensor(self.action[:, :n]),
            "reward": cpu_state_tensor(self.reward[:, :n]),
            "terminated": cpu_state_tensor(self.terminated[:, :n]),
            "truncated": cpu_state_tensor(self.truncated[:, :n]),
            "episode_start": cpu_state_tensor(self.episode_start[:, :n]),
            "states": [cpu_state_tensor(s[:, : min(-(-self.count // self.state_every),
                                              self.state_slots)]) for s in self.states],
            "state_every": self.state_every,
            "count": self.count,
            "current_start": cpu_state_tensor(self._current_start),
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
        self.count = int(state["count"])
        _load_states(self, state)
        self._current_start = state["current_start"].to(self.device)
        self.generator.set_state(state["generator"])


def gather_windows(buf: SequenceReplayBuffer, env: Tensor, start: Tensor,
                   trained_from: Tensor | None = None) -> SequenceBatch:
    """Windows of ``buf.seq_len`` steps of stream ``env[b]`` from absolute index ``start[b]``:
    padded and masked after the episode's end, previous action and reward at the start (zero
    at an episode start), burn-in steps without loss (those before ``trained_from[b]`` when
    given), and the stored (or, at an episode start, initial) states."""
    L = buf.seq_len
    t = start[:, None] + torch.arange(L, device=buf.device)  # (B, L) absolute indices
    slot = t % buf.per_env
    e = env[:, None].expand_as(t)
    ep = buf.episode_start[env, start % buf.per_env]  # (B,)
    # Inside the window's episode: same episode start and already written.
    valid = (t < buf.count) & (buf.episode_start[e, slot] == ep[:, None])
    # The episode may end inside the window: stop at the first terminated/truncated step.
    done = (buf.terminated[e, slot] + buf.truncated[e, slot]) > 0
    ended_before = torch.cumsum(done.long(), dim=1) - done.long()  # dones strictly before t
    valid = valid & (ended_before == 0)
    vf = valid.float()
    n_valid = valid.sum(1)  # (B,) >= 1: the start step itself is always valid

    obs = torch.zeros(len(env), L + 1, buf.obs.shape[-1], device=buf.device)
    obs[:, :L] = buf.obs[e, slot] * vf[..., None]
    last = slot.gather(1, (n_valid - 1)[:, None]).squeeze(1)  # slot of the last valid step
    obs[torch.arange(len(env), device=buf.device), n_valid] = buf.next_obs[env, last]

    action = buf.action[e, slot] * vf[..., None]  # (B, L, A)
    reward = buf.reward[e, slot] * vf
    at_episode_start = start == ep  # (B,)
    prev_slot = (start - 1) % buf.per_env
    keep_prev = (~at_episode_start).float()
    prev0_a = buf.action[env, prev_slot] * keep_prev[:, None]  # (B, A)
    prev0_r = buf.reward[env, prev_slot] * keep_prev
    prev_action = torch.cat([prev0_a[:, None], action], dim=1)  # (B, L + 1, A)
    prev_reward = torch.cat([prev0_r[:, None], reward], dim=1)  # (B, L + 1)

    mask = vf.clone()
    burn = None  # (B,) loss-free steps at the window start
    if trained_from is not None:
        burn = trained_from - start  # prefix steps
    elif buf.burn_in:
        burn = torch.where(at_episode_start, 0, buf.burn_in)
    if burn is not None:
        mask = mask * (torch.arange(L, device=buf.device)[None] >= burn[:, None]).float()
    states = None
    if buf._state_spec is not None:  # initial (zero) states at episode starts
        chunk = torch.div(start, buf.state_every, rounding_mode="floor") % buf.state_slots
        fresh = at_episode_start.float()
        states = tree_unflatten([
            store[env, chunk] * (1 - fresh).view(-1, *[1] * (store.dim() - 2))
            for store in buf.states], buf._state_spec)
    return SequenceBatch(
        obs=obs,
        action=action,
        reward=reward,
        terminated=buf.terminated[e, slot] * vf,
        truncated=buf.truncated[e, slot] * vf,
        prev_action=prev_action,
        prev_reward=prev_reward,
        mask=mask,
        states=states,
    )


def _load_states(buf: SequenceReplayBuffer, state: dict[str, object]) -> None:
    """The stored states of a checkpoint; older versions kept one per step (and grouped
    them per network): their chunk starts are picked out."""
    saved = state["states"]
    if saved and isinstance(saved[0], list | tuple):  # one list per group
        saved = [s for group in saved for s in group]
    if len(saved) != len(buf.states):
        raise ValueError(f"checkpoint holds {len(saved)} stored state tensors, this buffer "
                         f"{len(buf.states)}")
    if not saved:
        return
    k, slots = buf.state_every, buf.state_slots
    chunks = torch.arange(-(-max(buf.count - buf.per_env, 0) // k), -(-buf.count // k))
    if "state_every" in state:  # one per chunk, in the ring
        if int(state["state_every"]) != k:
            raise ValueError(f"checkpoint keeps a state every {state['state_every']} steps, "
                             f"this buffer every {k}")
        rows = chunks % slots
    else:  # one per step, at the step's slot
        rows = (chunks * k) % buf.per_env
    for store, s in zip(buf.states, saved):
        store[:, chunks % slots] = s[:, rows].to(store)
