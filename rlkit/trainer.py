"""The off-policy training loop: act in vector envs, store, update, evaluate, log.

It works with any agent that follows :class:`Agent` (``agents.ddpg.DDPG`` does) and either
replay buffer. Recurrent state and exploration noise are reset on the same per-environment done
mask (``terminated | truncated``); the two flags are stored apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from rlkit.buffers import ReplayBuffer, SequenceReplayBuffer
from rlkit.noise import ActionNoise
from rlkit.runlog import RunLogger


class Agent(Protocol):
    """What the loop needs from an agent."""

    def initial_state(self, batch_size: int) -> Any: ...

    def reset_state(self, state: Any, done: Tensor) -> Any: ...

    def act(self, obs: Tensor, state: Any, prev_action: Tensor | None = None,
            prev_reward: Tensor | None = None, track_critic: bool = False
            ) -> tuple[Tensor, Any]: ...

    def update(self, batch: Any) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class LoopConfig:
    """Schedule of the loop (counts are environment steps summed over environments)."""

    total_steps: int
    learning_starts: int
    batch_size: int
    updates_per_step: float = 1.0
    eval_every: int = 5000
    eval_episodes: int = 5
    log_every: int = 1000
    progress: bool = True


class NonFiniteError(RuntimeError):
    """An environment returned a NaN or infinite observation or reward."""


def evaluate(agent: Agent, env: gym.Env, episodes: int, device: torch.device,
             seed: int | None = None) -> dict[str, float]:
    """Run the deterministic policy (step mode, state carried) for ``episodes`` episodes.

    Returns:
        ``eval_return_mean``, ``eval_return_std``, ``eval_length_mean`` and, where the env
        reports ``success`` / ``is_success`` in ``info``, ``eval_success_rate``.
    """
    returns, lengths, successes = [], [], []
    act_dim = env.action_space.shape[0]
    for ep in range(episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + ep)
        state = agent.initial_state(1)
        prev_a = torch.zeros(1, act_dim, device=device)
        prev_r = torch.zeros(1, device=device)
        done, ret, length, info = False, 0.0, 0, {}
        while not done:
            o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)[None]
            a, state = agent.act(o, state, prev_a, prev_r)
            action = a[0].cpu().numpy()
            obs, r, term, trunc, info = env.step(action)
            ret, length, done = ret + float(r), length + 1, bool(term or trunc)
            prev_a, prev_r = a, torch.tensor([float(r)], device=device)
        returns.append(ret)
        lengths.append(length)
        s = info.get("success", info.get("is_success"))
        if s is not None:
            successes.append(float(s))
    out = {
        "eval_return_mean": float(np.mean(returns)),
        "eval_return_std": float(np.std(returns)),
        "eval_length_mean": float(np.mean(lengths)),
    }
    if successes:
        out["eval_success_rate"] = float(np.mean(successes))
    return out


class Trainer:
    """Runs the loop; see :meth:`run`.

    Args:
        agent: the learner.
        envs: a Gymnasium vector env with ``autoreset_mode=SAME_STEP``.
        eval_env: a separate single env for evaluation.
        buffer: transition or sequence replay.
        noise: exploration noise with one row per environment.
        cfg: the schedule.
        logger: where metrics go.
        rng: draws the random warm-up actions.
        device: the training device.
        env_seed: seed of the first reset of ``envs``.
        eval_seed: seed of the evaluation episodes.
    """

    def __init__(self, agent: Agent, envs: gym.vector.VectorEnv, eval_env: gym.Env,
                 buffer: ReplayBuffer | SequenceReplayBuffer, noise: ActionNoise,
                 cfg: LoopConfig, logger: RunLogger, rng: np.random.Generator,
                 device: torch.device, env_seed: int, eval_seed: int) -> None:
        self.agent, self.envs, self.eval_env, self.buffer = agent, envs, eval_env, buffer
        self.noise, self.cfg, self.logger, self.rng, self.device = noise, cfg, logger, rng, device
        self.env_seed, self.eval_seed = env_seed, eval_seed
        space = envs.single_action_space
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
        self.half_range = (self.high - self.low) / 2
        self.stored_states = isinstance(buffer, SequenceReplayBuffer) and \
            buffer.state_mode == "stored"
        self.step = 0
        self.num_updates = 0
        self.last_eval: dict[str, float] = {}

    def _check_finite(self, obs: np.ndarray, reward: np.ndarray) -> None:
        bad = ~np.isfinite(obs).reshape(len(obs), -1).all(1) | ~np.isfinite(reward)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise NonFiniteError(
                f"env {i} returned a non-finite observation or reward at step {self.step} "
                f"(reward={reward[i]}, obs finite={bool(np.isfinite(obs[i]).all())})"
            )

    def run(self) -> dict[str, float]:
        """Train for ``cfg.total_steps`` environment steps; returns the final evaluation."""
        cfg, dev, n = self.cfg, self.device, self.envs.num_envs
        obs, _ = self.envs.reset(seed=self.env_seed)
        state = self.agent.initial_state(n)
        prev_a = torch.zeros(n, len(self.low), device=dev)
        prev_r = torch.zeros(n, device=dev)
        ep_ret, ep_len = np.zeros(n), np.zeros(n, dtype=np.int64)
        credit, next_log, next_eval = 0.0, cfg.log_every, cfg.eval_every
        last_metrics, recent_returns = {}, []
        t_log, step_log, updates_log = time.time(), self.step, self.num_updates
        bar = tqdm(total=cfg.total_steps, disable=not cfg.progress, dynamic_ncols=True,
                   unit="step")
        while self.step < cfg.total_steps:
            obs_t = torch.as_tensor(obs, device=dev, dtype=torch.float32)
            a, new_state = self.agent.act(obs_t, state, prev_a, prev_r,
                                          track_critic=self.stored_states)
            if self.step < cfg.learning_starts:
                action = self.rng.uniform(self.low, self.high, size=(n, len(self.low)))
            else:
                action = a.cpu().numpy() + self.noise.sample() * self.half_range
                action = np.clip(action, self.low, self.high)
            next_obs, reward, term, trunc, info = self.envs.step(action.astype(np.float32))
            self._check_finite(next_obs, reward)
            done = term | trunc
            real_next = next_obs.copy()
            if done.any():
                for i in np.flatnonzero(done):
                    real_next[i] = info["final_obs"][i]
            if isinstance(self.buffer, SequenceReplayBuffer):
                states = (state[0], *state[1]) if self.stored_states else ()
                self.buffer.add(obs, action, reward, real_next, term, trunc, states=states)
            else:
                self.buffer.add(obs, action, reward, real_next, term, trunc)
            done_t = torch.as_tensor(done, device=dev)
            state = self.agent.reset_state(new_state, done_t) if done.any() else new_state
            self.noise.reset(done)
            keep = (~done_t).float()
            prev_a = torch.as_tensor(action, device=dev, dtype=torch.float32) * keep[:, None]
            prev_r = torch.as_tensor(reward, device=dev, dtype=torch.float32) * keep
            ep_ret += reward
            ep_len += 1
            for i in np.flatnonzero(done):
                recent_returns.append(float(ep_ret[i]))
                ep_ret[i], ep_len[i] = 0.0, 0
            obs = next_obs
            self.step += n
            bar.update(n)

            if self.step >= cfg.learning_starts:
                credit += cfg.updates_per_step * n
                while credit >= 1.0:
                    last_metrics = self.agent.update(self.buffer.sample(cfg.batch_size))
                    self.num_updates += 1
                    credit -= 1.0
            if self.step >= next_log:
                next_log += cfg.log_every
                row = {k: float(v) for k, v in last_metrics.items()}
                now = time.time()
                dt = max(now - t_log, 1e-9)
                row.update(sps=(self.step - step_log) / dt, updates=self.num_updates,
                           updates_per_s=(self.num_updates - updates_log) / dt)
                t_log, step_log, updates_log = now, self.step, self.num_updates
                if recent_returns:
                    row["train_return_mean"] = float(np.mean(recent_returns))
                    recent_returns = []
                self.logger.log(self.step, row)
            if cfg.eval_every > 0 and self.step >= next_eval:
                next_eval += cfg.eval_every
                t_eval = time.time()
                self._evaluate()
                t_log += time.time() - t_eval  # rates count training time only
                bar.set_postfix(eval=f"{self.last_eval['eval_return_mean']:.1f}")
        bar.close()
        if not self.last_eval or self.last_eval.get("step") != self.step:
            self._evaluate()
        return self.last_eval

    def _evaluate(self) -> None:
        res = evaluate(self.agent, self.eval_env, self.cfg.eval_episodes, self.device,
                       self.eval_seed)
        self.logger.log(self.step, res)
        self.last_eval = {**res, "step": self.step}
