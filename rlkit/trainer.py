"""The off-policy training loop: act in vector envs, store, update, evaluate, log, checkpoint.

It works with any agent that follows :class:`Agent` (``agents.ddpg.DDPG`` does) and any replay
buffer that follows :class:`rlkit.buffers.Replay`. Recurrent state and exploration noise are
reset on the same per-environment done mask (``terminated | truncated``); the two flags are
stored apart.

Around the loop: evaluation in :mod:`rlkit.evaluate`, the loop's state and its checkpoint in
:mod:`rlkit.loopstate`, non-finite values and signals in :mod:`rlkit.faults`. With a run
directory, ``checkpoint.pt`` is written when the loop starts (so that a run killed at any
moment can be resumed), every ``checkpoint_every`` env steps, whenever ``checkpoint_minutes``
of wall-clock time have passed since the last one, at the end, and when SIGINT or SIGTERM
arrive; each write is atomic and the one before is kept as ``checkpoint.prev.pt``. Writing a
checkpoint only reads the loop's state: training computes the same with or without them.
An exception raised by an env's ``reset`` or ``step`` is raised as
:class:`rlkit.faults.EnvError`, which keeps the env's traceback; a checkpoint that cannot be
written, as :class:`rlkit.faults.FileSystemError`. A non-finite loss stops the run with
``diagnostic.pt`` written and ``checkpoint.pt`` kept at the last good state. With
``drop_nonfinite``, a non-finite transition is dropped (the buffer says how many rows that
costs), its env's episode restarts, and the count is logged as ``dropped_transitions``. A
sequence buffer drops the whole step (one row per env) and cuts every stream there, so then
every env's episode restarts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from rlkit.buffers import Replay, SequenceBatch
from rlkit.checkpoint import save_checkpoint
from rlkit.config import LoopConfig
from rlkit.envstate import sub_envs
from rlkit.evaluate import Policy, evaluate
from rlkit.faults import (
    FileSystemError,
    GuardedEnv,
    LossWatch,
    NonFiniteError,
    NonFiniteLossError,
    TrainingInterrupted,
    check_reset_obs,
    env_calls,
    nonfinite_rows,
    row_names,
    stop_signals,
)
from rlkit.loopstate import CheckpointClock, LoopState, loop_checkpoint, restore_loop
from rlkit.noise import ActionNoise
from rlkit.rundir import RunPaths
from rlkit.runlog import RunLogger


class Agent(Protocol):
    """What the loop needs from an agent. Optionally also a ``noise_gen`` generator, and an
    ``observe_inputs(obs, reward)`` method, which the loop shows each step before learning
    starts (``(N, obs_dim)`` and ``(N,)``, the rows whose step came back finite; e.g. to fix
    its inputs' scale)."""

    def initial_state(self, batch_size: int) -> Any: ...

    def reset_state(self, state: Any, done: Tensor) -> Any: ...

    def act(self, obs: Tensor, state: Any, prev_action: Tensor | None = None,
            prev_reward: Tensor | None = None, track_critic: bool = False
            ) -> tuple[Tensor, Any]: ...

    def update(self, batch: SequenceBatch) -> dict[str, Tensor]: ...

    def checkpoint_state(self) -> dict[str, Any]: ...

    def load_checkpoint_state(self, state: dict[str, Any]) -> None: ...


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA memory allocated by torch on a GPU, the process's peak resident
    set size on the CPU (what ``ru_maxrss`` reports, in MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Trainer:
    """Runs the loop; see :meth:`run` and the module docstring.

    Args:
        agent: the learner.
        envs: a Gymnasium vector env with ``autoreset_mode=SAME_STEP``.
        eval_env: a separate single env for evaluation.
        buffer: the replay buffer.
        noise: exploration noise with one row per environment.
        cfg: the schedule.
        batch_size: samples per update.
        logger: where metrics go.
        rng: draws the random warm-up actions.
        device: the training device.
        env_seed: seed of the first reset of ``envs``.
        eval_seed: seed of the evaluation episodes.
        run_dir: where checkpoints go; ``None``: no checkpoints.
        checkpoint_meta: plain data stored in every checkpoint (the run's record, W&B id, ...).
        eval_policy: the policy evaluations run (default: ``agent`` itself; see
            ``LoopConfig.eval_policy``).
    """

    def __init__(self, agent: Agent, *, envs: gym.vector.VectorEnv, eval_env: gym.Env,
                 buffer: Replay, noise: ActionNoise, cfg: LoopConfig, batch_size: int,
                 logger: RunLogger, rng: np.random.Generator, device: torch.device,
                 env_seed: int, eval_seed: int, run_dir: str | Path | None = None,
                 checkpoint_meta: dict[str, Any] | None = None,
                 eval_policy: Policy | None = None) -> None:
        self.agent, self.envs, self.buffer = agent, envs, buffer
        self._row_names = row_names(envs)  # each row's env id, for messages
        # optional: shown each random-action step (e.g. to fix the scale of its inputs)
        self._observe = getattr(agent, "observe_inputs", None)
        self.eval_policy: Policy = agent if eval_policy is None else eval_policy
        self.eval_env = GuardedEnv(eval_env, "evaluation")
        self.noise, self.cfg, self.logger, self.rng, self.device = noise, cfg, logger, rng, device
        self.batch_size, self.env_seed, self.eval_seed = batch_size, env_seed, eval_seed
        self.paths = None if run_dir is None else RunPaths(Path(run_dir))
        self.checkpoint_meta = dict(checkpoint_meta or {})
        space = envs.single_action_space
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
        self.half_range = (self.high - self.low) / 2
        self.step = self.num_updates = self.episodes = self.dropped_transitions = 0
        self.last_eval: dict[str, float] = {}
        self.loop: LoopState | None = None
        self.checkpoint_step: int | None = None  # step of the newest checkpoint.pt
        self.losses = LossWatch()
        self._rates = (time.time(), 0, 0)  # (time, step, updates) of the last log

    def run(self) -> dict[str, float]:
        """Train until ``cfg.total_steps`` environment steps (from the start, or from where
        :meth:`load_state_dict` left off); returns the final evaluation.

        Raises:
            NonFiniteError: an env returned a non-finite value (without ``drop_nonfinite``).
            NonFiniteLossError: a loss became non-finite (``diagnostic.pt`` written).
            TrainingInterrupted: SIGINT / SIGTERM (checkpoint written).
        """
        cfg = self.cfg
        if self.loop is None:
            self.loop = self._initial_loop_state()
        if self.loop.last_log_step < 0:  # loaded from a checkpoint that did not record it
            self.loop.last_log_step = self.step
        clock = CheckpointClock(cfg.checkpoint_every, cfg.checkpoint_minutes, self.step)
        self._rates = (time.time(), self.step, self.num_updates)
        bar = tqdm(total=cfg.total_steps, initial=self.step, disable=not cfg.progress,
                   dynamic_ncols=True, unit="step")
        try:
            with stop_signals() as stop:
                if self.checkpoint_step is None:  # from here on a killed run can resume
                    self.save("start")
                clock.saved()
                while self.step < cfg.total_steps:
                    self._env_step()
                    bar.update(self.envs.num_envs)
                    self._learn()
                    self._maybe_log()
                    self._maybe_evaluate(bar)
                    if stop.signum is not None:
                        raise TrainingInterrupted(stop.signum, self.step, self.save("interrupt"))
                    # (the last step gets the final checkpoint)
                    if clock.due(self.step) and self.step < cfg.total_steps:
                        self.save("periodic")
                        clock.saved()
                # steps since the last row (of this process or the one it resumed): a final one
                if self.step > self.loop.last_log_step:
                    self._log()
                self._check_losses()
                if not self.last_eval or self.last_eval.get("step") != self.step:
                    self._evaluate()
                self.save("final")
        finally:
            bar.close()
        return self.last_eval

    def _initial_loop_state(self) -> LoopState:
        n, dev, cfg = self.envs.num_envs, self.device, self.cfg
        with env_calls(self.envs, "reset"):
            obs, _ = self.envs.reset(seed=self.env_seed)
        check_reset_obs(obs, range(n), self._row_names, self.step)
        return LoopState(
            obs=obs, state=self.agent.initial_state(n),
            prev_action=torch.zeros(n, len(self.low), device=dev),
            prev_reward=torch.zeros(n, device=dev), episode_return=np.zeros(n),
            next_log=cfg.log_every, next_eval=cfg.eval_every,
        )

    def _env_step(self) -> None:
        """Act, step the envs, store the transitions, reset what ended."""
        cfg, dev, n, loop = self.cfg, self.device, self.envs.num_envs, self.loop
        obs_t = torch.as_tensor(loop.obs, device=dev, dtype=torch.float32)
        a, new_state = self.agent.act(obs_t, loop.state, loop.prev_action, loop.prev_reward,
                                      track_critic=self.buffer.wants_states)
        if self.step < cfg.learning_starts:
            action = self.rng.uniform(self.low, self.high, size=(n, len(self.low)))
        else:
            action = a.cpu().numpy() + self.noise.sample() * self.half_range
            action = np.clip(action, self.low, self.high)
        with env_calls(self.envs, "step", self.step + n):
            next_obs, reward, term, trunc, info = self.envs.step(action.astype(np.float32))
        done = term | trunc
        real_next = next_obs.copy()
        for i in np.flatnonzero(done):
            real_next[i] = info["final_obs"][i]
        bad = nonfinite_rows(next_obs, real_next, reward, self.step + n, cfg.drop_nonfinite,
                             self._row_names)
        dropped = self.buffer.add(loop.obs, action, reward, real_next, term, trunc,
                                  states=loop.state if self.buffer.wants_states else None,
                                  keep=~bad if bad.any() else None)
        self.dropped_transitions += dropped
        if self._observe is not None and self.step < cfg.learning_starts:
            keep = ~bad  # the random-action steps fix the scale of the agent's inputs
            self._observe(obs_t[torch.as_tensor(keep, device=dev)],
                          torch.as_tensor(reward[keep], device=dev, dtype=torch.float32))
        cut = bad
        if dropped > bad.sum():
            # The buffer dropped the whole step (one row per env) and every stream starts a
            # new episode after it: every env restarts too, so that each acts from the
            # initial state where its stored episode starts (training computes what acting
            # computes). The envs that ended this step have restarted already.
            cut = bad | ~done
        if cut.any():
            self._restart_envs(cut, next_obs)
        restart = done | cut
        done_t = torch.as_tensor(restart, device=dev)
        loop.state = self.agent.reset_state(new_state, done_t) if restart.any() else new_state
        self.noise.reset(restart)
        loop.prev_action = torch.as_tensor(np.where(restart[:, None], 0.0, action),
                                           device=dev, dtype=torch.float32)
        loop.prev_reward = torch.as_tensor(np.where(restart, 0.0, reward), device=dev,
                                           dtype=torch.float32)
        loop.episode_return += np.where(bad, 0.0, reward)
        for i in np.flatnonzero(restart):
            if not cut[i]:  # an episode cut by a dropped step is not a return
                loop.recent_returns.append(float(loop.episode_return[i]))
                self.episodes += 1
            loop.episode_return[i] = 0.0
        loop.obs = next_obs
        self.step += n

    def _restart_envs(self, mask: np.ndarray, obs: np.ndarray) -> None:
        """Reset the sub-envs in ``mask`` (their episodes restart); writes their first
        observations into ``obs``."""
        subs = sub_envs(self.envs)
        if subs is None:
            raise NonFiniteError(f"cannot restart single envs of a {type(self.envs).__name__} "
                                 "(it does not expose its sub-envs); use SyncVectorEnv")
        for i in np.flatnonzero(mask):
            with env_calls(subs[i], "reset"):
                first, _ = subs[i].reset()
            obs[i] = first
        check_reset_obs(obs, np.flatnonzero(mask), self._row_names,
                        self.step + self.envs.num_envs)

    def _learn(self) -> None:
        if self.step < self.cfg.learning_starts:
            return
        loop, n = self.loop, self.envs.num_envs
        loop.credit += self.cfg.updates_per_step * n
        if self.step - n < max(self.cfg.learning_starts, 1):  # the first call that learns
            loop.credit += self.cfg.initial_updates
        every = self.cfg.update_every
        if self.step // every == (self.step - n) // every:  # no multiple of it reached yet
            return
        if loop.credit >= 1.0 and len(self.buffer) == 0:  # every transition was dropped
            names = self._row_names
            which = f"env {', '.join(sorted(set(names)))}" if names else "the env"
            raise NonFiniteError(
                f"nothing to train on at step {self.step}: every step so far had a non-finite "
                f"observation or reward ({which}) and --drop-nonfinite dropped it "
                f"({self.dropped_transitions} rows), so the replay is empty")
        while loop.credit >= 1.0:
            metrics = self.agent.update(self.buffer.sample(self.batch_size))
            self.num_updates += 1
            loop.credit -= 1.0
            loop.last_metrics = metrics
            self.losses.record(metrics, self.num_updates)

    def _maybe_log(self) -> None:
        if self.step < self.loop.next_log:
            return
        self.loop.next_log += self.cfg.log_every
        self._log()

    def _log(self) -> None:
        """One training row: the last update's metrics, rates since the last row, memory."""
        loop, cfg = self.loop, self.cfg
        row = {k: _row_value(v) for k, v in loop.last_metrics.items()}
        now = time.time()
        t0, step0, updates0 = self._rates
        dt = max(now - t0, 1e-9)
        row["updates"] = self.num_updates
        if self.step > step0:  # no rate from a row without steps (resumed at the last step)
            row.update(sps=(self.step - step0) / dt,
                       updates_per_s=(self.num_updates - updates0) / dt)
        self._rates = (now, self.step, self.num_updates)
        loop.last_log_step = self.step
        row["peak_memory_mb"] = peak_memory_mb(self.device)
        if loop.recent_returns:
            row["train_return_mean"] = float(np.mean(loop.recent_returns))
            loop.recent_returns = []
        if cfg.drop_nonfinite:
            row["dropped_transitions"] = self.dropped_transitions
        self.logger.log(self.step, row)
        self._check_losses()

    def _maybe_evaluate(self, bar: tqdm) -> None:
        loop, cfg = self.loop, self.cfg
        if cfg.eval_every <= 0 or self.step < loop.next_eval:
            return
        loop.next_eval += cfg.eval_every
        self._check_losses()
        t_eval = time.time()
        self._evaluate()
        t0, step0, updates0 = self._rates
        self._rates = (t0 + time.time() - t_eval, step0, updates0)  # rates: training time only
        bar.set_postfix(eval=f"{self.last_eval['eval_return_mean']:.1f}")

    def _evaluate(self) -> None:
        res = evaluate(self.eval_policy, self.eval_env, self.cfg.eval_episodes, self.device,
                       self.eval_seed)
        if not np.isfinite(res["eval_return_mean"]):
            raise NonFiniteError(
                f"the evaluation env returned a non-finite reward in the evaluation at step "
                f"{self.step} (return {res['eval_return_mean']}); expected finite values "
                "(--drop-nonfinite drops training transitions only)")
        self.logger.log(self.step, res)
        self.last_eval = {**res, "step": self.step}

    def _check_losses(self) -> None:
        """Stop with ``diagnostic.pt`` if a loss was non-finite or the fp16 loss scale fell
        below its floor (one host synchronisation)."""
        fault = self.losses.first_fault()
        if fault is None:
            return
        update, why = fault
        path = None
        if self.paths is not None:
            path = save_checkpoint(self.paths.diagnostic, {
                **self.checkpoint_meta, "kind": "diagnostic",
                ("first_nonfinite_update" if why == "loss" else "first_low_scale_update"): update,
                **self.state_dict()})
        last = {k: float(v) for k, v in self.loop.last_metrics.items()}
        good = (f"the last good checkpoint is {self.paths.checkpoint} at step "
                f"{self.checkpoint_step}" if self.checkpoint_step is not None
                else "no checkpoint was written before")
        what = "a loss became non-finite" if why == "loss" else (
            f"the fp16 loss scale fell below 2**-24 ({LossWatch.MIN_SCALE:.3g}): update after "
            "update had gradients that were not finite and was skipped (skipped_steps counts "
            "them; bf16, or fp32, needs no scale)")
        raise NonFiniteLossError(
            f"{what} at update {update} (seen at step {self.step}; last "
            f"update's metrics {last}); "
            + (f"diagnostic checkpoint written to {path}; " if path else "") + good)

    def save(self, kind: str) -> Path | None:
        """Write ``checkpoint.pt`` (``kind``: periodic, final, interrupt); ``None`` without a
        run directory.

        Raises:
            NonFiniteLossError: a loss was non-finite; ``diagnostic.pt`` is written instead.
        """
        self._check_losses()
        if self.paths is None:
            return None
        try:
            path = save_checkpoint(self.paths.checkpoint,
                                   {**self.checkpoint_meta, "kind": kind, **self.state_dict()},
                                   keep_previous=True)
        except FileSystemError as e:
            kept = (f"the checkpoint of step {self.checkpoint_step} is kept"
                    if self.checkpoint_step is not None else "no checkpoint was written before")
            raise FileSystemError(f"write the {kind} checkpoint of step {self.step} to",
                                  e.path, e.cause, f"{kept}; once the file system is fixed, "
                                  f"continue with --resume {self.paths.root}") from e
        self.checkpoint_step = self.step
        return path

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`run` needs to continue exactly (:func:`loop_checkpoint`)."""
        return loop_checkpoint(self)

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`save` (:func:`restore_loop`)."""
        restore_loop(self, ckpt)


def _row_value(v: Tensor | float | int) -> float | int:
    """A metric as a row holds it: counts (integer tensors and ints, e.g. ``skipped_steps``,
    ``compile_fallbacks``) as integers, the rest as floats."""
    v = v.item() if isinstance(v, Tensor) else v
    return v if isinstance(v, int) and not isinstance(v, bool) else float(v)


__all__ = ["Agent", "NonFiniteError", "NonFiniteLossError", "Trainer", "TrainingInterrupted",
           "peak_memory_mb"]
