"""The training loop's state, and its checkpoint: everything needed to go on as if it had not
stopped.

A checkpoint (:func:`loop_checkpoint`) holds: the agent (networks, targets, optimizers,
whatever its ``checkpoint_state`` returns), the replay buffer, the noise process, the counters,
the loop's carried values (:class:`LoopState`: observations, recurrent states, previous actions
and rewards, episode returns, update credit, next log and evaluation steps), the random
generators (Python, NumPy's global and the loop's, torch CPU and CUDA, the buffer's, the
agent's ``noise_gen``) and each training env's state (:mod:`rlkit.envstate`).
:func:`restore_loop` puts a loop built like the saved run back in that state; an env whose
state is not fully captured restarts its episode, with a warning (the resumed run then differs
from an uninterrupted one).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from rlkit.checkpoint import CheckpointError, check_state_dict
from rlkit.envstate import restore_env, snapshot_env, sub_envs
from rlkit.faults import check_reset_obs, env_calls, row_names
from rlkit.seeding import global_rng_state, set_global_rng_state
from rlkit.tree import tree_map


@dataclass
class LoopState:
    """What the loop carries from one step to the next (N environments)."""

    obs: np.ndarray  # (N, obs_dim) the observations acted on next
    state: Any  # the agent's recurrent state, one row per environment
    prev_action: Tensor  # (N, act_dim) zero at episode starts
    prev_reward: Tensor  # (N,) zero at episode starts
    episode_return: np.ndarray  # (N,) float64
    next_log: int
    next_eval: int
    credit: float = 0.0  # updates owed (fractional updates_per_step)
    recent_returns: list[float] = field(default_factory=list)  # returns since the last log
    last_metrics: dict[str, Tensor] = field(default_factory=dict)  # of the latest update
    last_log_step: int = 0  # the step of the latest training row (0: none yet)

    def state_dict(self) -> dict[str, Any]:
        # a NamedTuple state is saved as a plain tuple (weights_only loading takes no classes)
        state = tuple(self.state) if hasattr(self.state, "_fields") else self.state
        cpu = tree_map(lambda t: t.detach().cpu(), {
            "state": state, "prev_action": self.prev_action,
            "prev_reward": self.prev_reward, "last_metrics": self.last_metrics})
        return {**cpu, "obs": self.obs.copy(), "episode_return": self.episode_return.copy(),
                "next_log": self.next_log, "next_eval": self.next_eval, "credit": self.credit,
                "recent_returns": list(self.recent_returns), "last_log_step": self.last_log_step}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any], device: torch.device,
                        state_like: Any = None) -> LoopState:
        """Inverse of :meth:`state_dict`; ``state_like``: a state of the agent's own kind, so
        the carried state comes back as that kind (a checkpoint holds plain tuples)."""
        dev = tree_map(lambda t: t.to(device), {
            k: d[k] for k in ("state", "prev_action", "prev_reward", "last_metrics")})
        if state_like is not None and hasattr(state_like, "_fields"):
            dev["state"] = type(state_like)(*dev["state"])
        return cls(obs=np.array(d["obs"]), episode_return=np.array(d["episode_return"]),
                   next_log=int(d["next_log"]), next_eval=int(d["next_eval"]),
                   credit=float(d["credit"]),
                   recent_returns=[float(r) for r in d["recent_returns"]],
                   # a checkpoint from before the field: the step it was saved at (no row
                   # after it is known)
                   last_log_step=int(d.get("last_log_step", -1)), **dev)


class Loop(Protocol):
    """What a checkpoint reads from and writes to the training loop (``rlkit.trainer``)."""

    agent: Any
    buffer: Any
    noise: Any
    envs: Any
    logger: Any
    rng: np.random.Generator
    device: torch.device
    env_seed: int
    loop: LoopState | None
    step: int
    episodes: int
    num_updates: int
    dropped_transitions: int
    last_eval: dict[str, float]
    checkpoint_step: int | None


def check_agent_state(agent: Any, state: dict[str, Any]) -> None:
    """Refuse an agent checkpoint whose module parameters differ from ``agent``'s in keys or
    shapes (named by key).

    Raises:
        CheckpointError: e.g. ``actor.encoder.net.0.weight has shape (16, 3) in the
            checkpoint, (32, 3) in this run``.
    """
    for name, sd in agent.checkpoint_state().items():  # module state dicts: all tensors
        if isinstance(sd, dict) and sd and all(isinstance(v, Tensor) for v in sd.values()):
            if name not in state:
                raise CheckpointError(f"checkpoint has no agent.{name}")
            check_state_dict(state[name], sd, name)


def loop_checkpoint(tr: Loop) -> dict[str, Any]:
    """Everything the loop (``rlkit.trainer.Trainer.run``) needs to continue exactly (see the
    module docstring)."""
    if tr.loop is None:
        raise RuntimeError("the loop has not started: nothing to save")
    subs = sub_envs(tr.envs)
    noise_gen = getattr(tr.agent, "noise_gen", None)
    return {
        "step": tr.step,
        "episodes": tr.episodes,
        "num_updates": tr.num_updates,
        "dropped_transitions": tr.dropped_transitions,
        "last_eval": dict(tr.last_eval),
        "wall_time": tr.logger.elapsed,
        "agent": tr.agent.checkpoint_state(),
        "buffer": tr.buffer.state_dict(),
        "noise": tr.noise.state_dict(),
        "loop": tr.loop.state_dict(),
        "rng": {
            "global": global_rng_state(),
            "loop": tr.rng.bit_generator.state,
            "agent_noise_gen": None if noise_gen is None else noise_gen.get_state(),
        },
        "envs": None if subs is None else [snapshot_env(e) for e in subs],
    }


def restore_loop(tr: Loop, ckpt: dict[str, Any]) -> None:
    """Put ``tr`` (built like the saved run) in the state of :func:`loop_checkpoint`'s ``ckpt``.

    Raises:
        CheckpointError: the checkpoint does not fit (parameter shapes by key, buffer fields,
            number of envs, env wrappers).
    """
    check_agent_state(tr.agent, ckpt["agent"])
    try:
        tr.agent.load_checkpoint_state(ckpt["agent"])
        tr.buffer.load_state_dict(ckpt["buffer"])
        tr.noise.load_state_dict(ckpt["noise"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint does not fit this run: {e}") from e
    tr.step, tr.episodes = int(ckpt["step"]), int(ckpt["episodes"])
    tr.num_updates = int(ckpt["num_updates"])
    tr.dropped_transitions = int(ckpt["dropped_transitions"])
    tr.last_eval = dict(ckpt["last_eval"])
    tr.checkpoint_step = tr.step
    tr.loop = LoopState.from_state_dict(ckpt["loop"], tr.device, tr.agent.initial_state(1))
    if len(tr.loop.obs) != tr.envs.num_envs:
        raise CheckpointError(f"checkpoint has {len(tr.loop.obs)} envs, this run "
                              f"{tr.envs.num_envs}")
    _restore_envs(tr, ckpt["envs"])
    rng = ckpt["rng"]
    tr.rng.bit_generator.state = rng["loop"]
    noise_gen = getattr(tr.agent, "noise_gen", None)
    if noise_gen is not None and rng["agent_noise_gen"] is not None:
        noise_gen.set_state(rng["agent_noise_gen"])
    set_global_rng_state(rng["global"])


def _restore_envs(tr: Loop, snapshots: list[dict[str, Any]] | None) -> None:
    """Reset the envs as a new run would, then put each in its saved state; an env that
    cannot be restored exactly restarts its episode."""
    with env_calls(tr.envs, "reset"):
        tr.envs.reset(seed=tr.env_seed)
    subs = sub_envs(tr.envs)
    n = tr.envs.num_envs
    if subs is None or snapshots is None:
        warnings.warn("resume: the env states were not saved or cannot be restored here; "
                      "every episode restarts", stacklevel=4)
        _restart_on_resume(tr, np.ones(n, dtype=bool))
        return
    restart = np.zeros(n, dtype=bool)
    for i, (env, snap) in enumerate(zip(subs, snapshots, strict=True)):
        try:
            restore_env(env, snap)
        except ValueError as e:
            raise CheckpointError(f"env {i}: {e}") from e
        if snap["uncaptured"]:
            warnings.warn(f"resume: env {i} keeps state the checkpoint cannot hold "
                          f"({', '.join(snap['uncaptured'])}); its episode restarts",
                          stacklevel=4)
            restart[i] = True
    if restart.any():
        _restart_on_resume(tr, restart)


def _restart_on_resume(tr: Loop, mask: np.ndarray) -> None:
    """Restart the episodes of the envs in ``mask`` at the resumed step (their first
    observations checked as every reset's is)."""
    loop, dev = tr.loop, tr.device
    subs = sub_envs(tr.envs)
    if subs is None:
        with env_calls(tr.envs, "reset"):
            loop.obs, _ = tr.envs.reset()
    else:
        for i in np.flatnonzero(mask):
            with env_calls(subs[i], "reset"):
                loop.obs[i] = subs[i].reset()[0]
    check_reset_obs(loop.obs, np.flatnonzero(mask), row_names(tr.envs), tr.step)
    mask_t = torch.as_tensor(mask, device=dev)
    loop.state = tr.agent.reset_state(loop.state, mask_t)
    tr.noise.reset(mask)
    loop.prev_action = loop.prev_action * (~mask_t).float()[:, None]
    loop.prev_reward = loop.prev_reward * (~mask_t).float()
    loop.episode_return[mask] = 0.0
    tr.buffer.start_new_episodes(mask)


class CheckpointClock:
    """When the loop writes its periodic checkpoints: every ``every`` env steps (0: never) and
    whenever ``minutes`` of wall-clock time have passed since the last write (0: never)."""

    def __init__(self, every: int, minutes: float, step: int) -> None:
        self.every, self.period = every, minutes * 60.0
        self.next_step = (step // every + 1) * every if every > 0 else None
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        """Whether a checkpoint is due at ``step`` (call once per loop step: it advances the
        step schedule)."""
        due = self.period > 0 and time.monotonic() - self.last >= self.period
        if self.next_step is not None and step >= self.next_step:
            self.next_step += self.every
            due = True
        return due

    def saved(self) -> None:
        """A checkpoint was written now."""
        self.last = time.monotonic()


__all__ = ["CheckpointClock", "LoopState", "check_agent_state", "loop_checkpoint", "restore_loop"]
