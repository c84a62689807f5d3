"""The off-policy training loop: act in vector envs, store, update, evaluate, log, checkpoint.

It works with any agent that follows :class:`Agent` (``agents.ddpg.DDPG`` does) and either
replay buffer. Recurrent state and exploration noise are reset on the same per-environment done
mask (``terminated | truncated``); the two flags are stored apart.

Checkpoints and resume
    With a run directory, the trainer writes ``checkpoint.pt`` every ``checkpoint_every`` env
    steps, at the end, and when SIGINT or SIGTERM arrive; each write is atomic and the one
    before it is kept as ``checkpoint.prev.pt``. A checkpoint holds what the loop needs to go on
    as if it had never stopped (:meth:`Trainer.state_dict`): the agent (networks, targets,
    optimizers, whatever ``checkpoint_state`` returns), the replay buffer, the noise process,
    the counters, the loop's carried values (observations, recurrent states, previous actions
    and rewards, episode returns, update credit, next log and evaluation steps), the random
    generators (Python, NumPy's global and the loop's, torch CPU and CUDA, the buffer's, the
    agent's ``noise_gen``) and each training env's state (:mod:`rlkit.envstate`). An env whose
    state is not fully captured restarts its episode on resume, with a warning; the resumed
    run then differs from an uninterrupted one.

Signals
    The first SIGINT or SIGTERM sets a flag; the loop finishes the current step (updates, log,
    evaluation), writes the checkpoint and raises :class:`TrainingInterrupted`, whose
    ``exit_code`` is 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal
    stops at once with ``KeyboardInterrupt`` (the last checkpoint stays).

Numerical faults
    A non-finite observation or reward raises :class:`NonFiniteError` naming the env and the
    step, unless ``drop_nonfinite``: then the transition is dropped, the env's episode restarts,
    and the count is logged as ``dropped_transitions`` (a sequence buffer stores one row per
    env per step, so there the whole step is dropped and every stream starts a new episode in
    the buffer, the envs themselves going on). A non-finite loss is recorded on the
    device as the first bad update's index (no host synchronisation per update) and checked at
    log, evaluation and checkpoint points: the run stops with ``diagnostic.pt`` written and
    :class:`NonFiniteLossError`, and ``checkpoint.pt`` keeps the last good state. Updates that
    report ``grad_scale`` (fp16 with a GradScaler, which skips non-finite steps itself) are not
    checked.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from rlkit.buffers import ReplayBuffer, SequenceReplayBuffer
from rlkit.checkpoint import CheckpointError, check_state_dict, save_checkpoint
from rlkit.envstate import restore_env, snapshot_env, sub_envs
from rlkit.noise import ActionNoise
from rlkit.runlog import RunLogger
from rlkit.seeding import global_rng_state, set_global_rng_state

CHECKPOINT = "checkpoint.pt"
DIAGNOSTIC = "diagnostic.pt"


class Agent(Protocol):
    """What the loop needs from an agent (and, optionally, a ``noise_gen`` generator)."""

    def initial_state(self, batch_size: int) -> Any: ...

    def reset_state(self, state: Any, done: Tensor) -> Any: ...

    def act(self, obs: Tensor, state: Any, prev_action: Tensor | None = None,
            prev_reward: Tensor | None = None, track_critic: bool = False
            ) -> tuple[Tensor, Any]: ...

    def update(self, batch: Any) -> dict[str, Tensor]: ...

    def checkpoint_state(self) -> dict[str, Any]: ...

    def load_checkpoint_state(self, state: dict[str, Any]) -> None: ...


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
    checkpoint_every: int = 0
    """Write ``checkpoint.pt`` every this many env steps (0: only at the end and on signals)."""
    drop_nonfinite: bool = False
    """Drop transitions with a non-finite observation or reward (and restart that env's
    episode) instead of stopping."""


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA memory allocated by torch on a GPU, the process's peak resident
    set size on the CPU (what ``ru_maxrss`` reports, in MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class NonFiniteError(RuntimeError):
    """An environment returned a NaN or infinite observation or reward."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; ``diagnostic.pt`` holds the state where it was seen."""


class TrainingInterrupted(Exception):  # noqa: N818 (a stop, not a failure)
    """SIGINT or SIGTERM stopped the run after a checkpoint was written.

    Attributes:
        signum: the signal.
        step: env steps done (the checkpoint's step).
        path: the checkpoint written, or ``None`` without a run directory.
        exit_code: 128 + ``signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, step: int, path: Path | None) -> None:
        self.signum, self.step, self.path = signum, step, path
        self.exit_code = 128 + signum
        where = f"checkpoint written to {path}" if path else "no run directory, no checkpoint"
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; "
                         f"{where}; continue with --resume {path.parent if path else 'RUN_DIR'}")


def evaluate(agent: Agent, env: gym.Env, episodes: int, device: torch.device,
             seed: int | None = None) -> dict[str, float]:
    """Run the deterministic policy (step mode, state carried) for ``episodes`` episodes.

    Episode ``k`` resets ``env`` with ``seed + k``; nothing here draws from the training loop's
    generators, so evaluating does not change what training does next.

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


def _tree_map(fn: Callable[[Tensor], Tensor], tree: Any) -> Any:
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, list | tuple):
        return type(tree)(_tree_map(fn, t) for t in tree)
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return tree


@dataclass
class LoopState:
    """What the loop carries from one step to the next (N environments)."""

    obs: np.ndarray  # (N, obs_dim) the observations acted on next
    state: Any  # the agent's recurrent state, one row per environment
    prev_action: Tensor  # (N, act_dim) zero at episode starts
    prev_reward: Tensor  # (N,) zero at episode starts
    episode_return: np.ndarray  # (N,) float64
    episode_length: np.ndarray  # (N,) int64
    next_log: int
    next_eval: int
    credit: float = 0.0  # updates owed (fractional updates_per_step)
    recent_returns: list[float] = field(default_factory=list)  # returns since the last log
    last_metrics: dict[str, Tensor] = field(default_factory=dict)  # of the latest update

    def state_dict(self) -> dict[str, Any]:
        cpu = _tree_map(lambda t: t.detach().cpu(), {
            "state": self.state, "prev_action": self.prev_action,
            "prev_reward": self.prev_reward, "last_metrics": self.last_metrics})
        return {**cpu, "obs": self.obs.copy(), "episode_return": self.episode_return.copy(),
                "episode_length": self.episode_length.copy(), "next_log": self.next_log,
                "next_eval": self.next_eval, "credit": self.credit,
                "recent_returns": list(self.recent_returns)}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any], device: torch.device) -> LoopState:
        dev = _tree_map(lambda t: t.to(device), {
            k: d[k] for k in ("state", "prev_action", "prev_reward", "last_metrics")})
        return cls(obs=np.array(d["obs"]), episode_return=np.array(d["episode_return"]),
                   episode_length=np.array(d["episode_length"]), next_log=int(d["next_log"]),
                   next_eval=int(d["next_eval"]), credit=float(d["credit"]),
                   recent_returns=[float(r) for r in d["recent_returns"]], **dev)


def check_agent_state(agent: Agent, state: dict[str, Any]) -> None:
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


class Trainer:
    """Runs the loop; see :meth:`run` and the module docstring.

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
        run_dir: where checkpoints go; ``None``: no checkpoints.
        checkpoint_meta: plain data stored in every checkpoint (the run's config, W&B id, ...).
    """

    def __init__(self, agent: Agent, envs: gym.vector.VectorEnv, eval_env: gym.Env,
                 buffer: ReplayBuffer | SequenceReplayBuffer, noise: ActionNoise,
                 cfg: LoopConfig, logger: RunLogger, rng: np.random.Generator,
                 device: torch.device, env_seed: int, eval_seed: int,
                 run_dir: str | Path | None = None,
                 checkpoint_meta: dict[str, Any] | None = None) -> None:
        if cfg.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {cfg.checkpoint_every}")
        self.agent, self.envs, self.eval_env, self.buffer = agent, envs, eval_env, buffer
        self.noise, self.cfg, self.logger, self.rng, self.device = noise, cfg, logger, rng, device
        self.env_seed, self.eval_seed = env_seed, eval_seed
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.checkpoint_meta = dict(checkpoint_meta or {})
        space = envs.single_action_space
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
        self.half_range = (self.high - self.low) / 2
        self.stored_states = isinstance(buffer, SequenceReplayBuffer) and \
            buffer.state_mode == "stored"
        self.step = 0
        self.num_updates = 0
        self.episodes = 0
        self.dropped_transitions = 0
        self.last_eval: dict[str, float] = {}
        self.loop: LoopState | None = None
        self.checkpoint_step: int | None = None  # step of the newest checkpoint.pt
        self._first_bad_update: Tensor | None = None  # index of the first non-finite loss
        self._signal: int | None = None  # the signal that asked to stop
        self._next_checkpoint: int | None = None
        self._rates = (time.time(), 0, 0)  # (time, step, updates) of the last log

    # ----------------------------------------------------------------------------- the loop
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
        every = cfg.checkpoint_every
        self._next_checkpoint = (self.step // every + 1) * every if every > 0 else None
        self._rates = (time.time(), self.step, self.num_updates)
        bar = tqdm(total=cfg.total_steps, initial=self.step, disable=not cfg.progress,
                   dynamic_ncols=True, unit="step")
        try:
            with self._signal_handlers():
                while self.step < cfg.total_steps:
                    self._env_step()
                    bar.update(self.envs.num_envs)
                    self._learn()
                    self._maybe_log()
                    self._maybe_evaluate(bar)
                    if self._signal is not None:
                        raise TrainingInterrupted(self._signal, self.step, self.save("interrupt"))
                    if self._next_checkpoint is not None and self.step >= self._next_checkpoint:
                        self._next_checkpoint += every
                        if self.step < cfg.total_steps:  # the last step gets the final one
                            self.save("periodic")
                self._check_losses()
                if not self.last_eval or self.last_eval.get("step") != self.step:
                    self._evaluate()
                self.save("final")
        finally:
            bar.close()
        return self.last_eval

    def _initial_loop_state(self) -> LoopState:
        n, dev, cfg = self.envs.num_envs, self.device, self.cfg
        obs, _ = self.envs.reset(seed=self.env_seed)
        return LoopState(
            obs=obs, state=self.agent.initial_state(n),
            prev_action=torch.zeros(n, len(self.low), device=dev),
            prev_reward=torch.zeros(n, device=dev),
            episode_return=np.zeros(n), episode_length=np.zeros(n, dtype=np.int64),
            next_log=cfg.log_every, next_eval=cfg.eval_every,
        )

    def _env_step(self) -> None:
        """Act, step the envs, store the transitions, reset what ended."""
        cfg, dev, n, loop = self.cfg, self.device, self.envs.num_envs, self.loop
        obs_t = torch.as_tensor(loop.obs, device=dev, dtype=torch.float32)
        a, new_state = self.agent.act(obs_t, loop.state, loop.prev_action, loop.prev_reward,
                                      track_critic=self.stored_states)
        if self.step < cfg.learning_starts:
            action = self.rng.uniform(self.low, self.high, size=(n, len(self.low)))
        else:
            action = a.cpu().numpy() + self.noise.sample() * self.half_range
            action = np.clip(action, self.low, self.high)
        next_obs, reward, term, trunc, info = self.envs.step(action.astype(np.float32))
        done = term | trunc
        real_next = next_obs.copy()
        for i in np.flatnonzero(done):
            real_next[i] = info["final_obs"][i]
        bad = self._nonfinite(next_obs, real_next, reward)
        restart = done | bad
        self._store(loop.obs, action, reward, real_next, term, trunc, loop.state, bad)
        if bad.any():
            self._restart_envs(bad, next_obs)
        done_t = torch.as_tensor(restart, device=dev)
        loop.state = self.agent.reset_state(new_state, done_t) if restart.any() else new_state
        self.noise.reset(restart)
        loop.prev_action = torch.as_tensor(np.where(restart[:, None], 0.0, action),
                                           device=dev, dtype=torch.float32)
        loop.prev_reward = torch.as_tensor(np.where(restart, 0.0, reward), device=dev,
                                           dtype=torch.float32)
        loop.episode_return += np.where(bad, 0.0, reward)
        loop.episode_length += 1
        for i in np.flatnonzero(restart):
            if not bad[i]:
                loop.recent_returns.append(float(loop.episode_return[i]))
                self.episodes += 1
            loop.episode_return[i], loop.episode_length[i] = 0.0, 0
        loop.obs = next_obs
        self.step += n

    def _nonfinite(self, next_obs: np.ndarray, real_next: np.ndarray, reward: np.ndarray
                   ) -> np.ndarray:
        """Rows with a non-finite value, shape ``(N,)``; raises unless ``drop_nonfinite``."""
        def bad_rows(x: np.ndarray) -> np.ndarray:
            return ~np.isfinite(x).reshape(len(x), -1).all(1)

        bad_next, bad_final, bad_reward = bad_rows(next_obs), bad_rows(real_next), \
            ~np.isfinite(reward)
        bad = bad_next | bad_final | bad_reward
        if bad.any() and not self.cfg.drop_nonfinite:
            i = int(np.flatnonzero(bad)[0])
            what = [name for name, b in (("observation", bad_next[i] or bad_final[i]),
                                         ("reward", bad_reward[i])) if b]
            raise NonFiniteError(
                f"env {i} returned a non-finite {' and '.join(what)} at step "
                f"{self.step + self.envs.num_envs} (reward={reward[i]}); expected finite "
                "values (drop_nonfinite / --drop-nonfinite drops such transitions instead)"
            )
        return bad

    def _store(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
               real_next: np.ndarray, term: np.ndarray, trunc: np.ndarray, state: Any,
               bad: np.ndarray) -> None:
        """Add the step's transitions; rows in ``bad`` are dropped (and counted).

        A sequence buffer takes one row per env per step, so there a bad row drops the whole
        step and every stream starts a new episode after it (windows never span the gap).
        """
        if isinstance(self.buffer, SequenceReplayBuffer):
            if bad.any():
                self.dropped_transitions += len(bad)
                self.buffer.start_new_episodes(np.ones(len(bad), dtype=bool))
                return
            states = (state[0], *state[1]) if self.stored_states else ()
            self.buffer.add(obs, action, reward, real_next, term, trunc, states=states)
            return
        keep = ~bad
        self.dropped_transitions += int(bad.sum())
        if keep.all():
            self.buffer.add(obs, action, reward, real_next, term, trunc)
        elif keep.any():
            self.buffer.add(obs[keep], action[keep], reward[keep], real_next[keep], term[keep],
                            trunc[keep])

    def _restart_envs(self, mask: np.ndarray, obs: np.ndarray) -> None:
        """Reset the sub-envs in ``mask`` (their episodes restart); writes their first
        observations into ``obs``."""
        subs = sub_envs(self.envs)
        if subs is None:
            raise NonFiniteError(f"cannot restart single envs of a {type(self.envs).__name__} "
                                 "(it does not expose its sub-envs); use SyncVectorEnv")
        for i in np.flatnonzero(mask):
            first, _ = subs[i].reset()
            if not np.isfinite(first).all():
                raise NonFiniteError(f"env {i} returned a non-finite observation from reset "
                                     f"at step {self.step + self.envs.num_envs}")
            obs[i] = first

    def _learn(self) -> None:
        cfg = self.cfg
        if self.step < cfg.learning_starts:
            return
        loop = self.loop
        loop.credit += cfg.updates_per_step * self.envs.num_envs
        while loop.credit >= 1.0:
            metrics = self.agent.update(self.buffer.sample(cfg.batch_size))
            self.num_updates += 1
            loop.credit -= 1.0
            loop.last_metrics = metrics
            if "grad_scale" not in metrics:  # fp16: the scaler skips non-finite steps itself
                self._record_nonfinite(metrics)

    def _record_nonfinite(self, metrics: dict[str, Tensor]) -> None:
        """Keep the index of the first update whose losses are not finite, on the device."""
        losses = [v for k, v in metrics.items() if k.endswith("_loss")]
        if not losses:
            return
        total = losses[0].float()
        for v in losses[1:]:
            total = total + v.float()  # non-finite iff one of them is
        if self._first_bad_update is None:
            self._first_bad_update = torch.full((), -1, dtype=torch.long, device=total.device)
        first = self._first_bad_update
        first.masked_fill_(~torch.isfinite(total) & (first < 0), self.num_updates)

    def _maybe_log(self) -> None:
        loop, cfg = self.loop, self.cfg
        if self.step < loop.next_log:
            return
        loop.next_log += cfg.log_every
        row = {k: float(v) for k, v in loop.last_metrics.items()}
        now = time.time()
        t0, step0, updates0 = self._rates
        dt = max(now - t0, 1e-9)
        row.update(sps=(self.step - step0) / dt, updates=self.num_updates,
                   updates_per_s=(self.num_updates - updates0) / dt)
        self._rates = (now, self.step, self.num_updates)
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
        res = evaluate(self.agent, self.eval_env, self.cfg.eval_episodes, self.device,
                       self.eval_seed)
        self.logger.log(self.step, res)
        self.last_eval = {**res, "step": self.step}

    # ----------------------------------------------------------------------------- signals
    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        """SIGINT / SIGTERM set a flag the loop checks after each step (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._signal is not None:
                raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now")
            self._signal = signum
            print(f"\n{signal.Signals(signum).name} received: stopping at the end of this "
                  "step with a checkpoint (send it again to stop at once)", file=sys.stderr,
                  flush=True)

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)

    # ----------------------------------------------------------------------------- saving
    def _check_losses(self) -> None:
        """Stop with ``diagnostic.pt`` if a loss was non-finite (one host synchronisation)."""
        if self._first_bad_update is None:
            return
        update = int(self._first_bad_update)
        if update < 0:
            return
        path = None
        if self.run_dir is not None:
            path = save_checkpoint(self.run_dir / DIAGNOSTIC, {
                **self.checkpoint_meta, "kind": "diagnostic", "first_nonfinite_update": update,
                **self.state_dict()})
        last = {k: float(v) for k, v in self.loop.last_metrics.items()}
        good = (f"the last good checkpoint is {self.run_dir / CHECKPOINT} at step "
                f"{self.checkpoint_step}" if self.checkpoint_step is not None
                else "no checkpoint was written before")
        raise NonFiniteLossError(
            f"a loss became non-finite at update {update} (seen at step {self.step}; last "
            f"update's metrics {last}); "
            + (f"diagnostic checkpoint written to {path}; " if path else "") + good)

    def save(self, kind: str) -> Path | None:
        """Write ``checkpoint.pt`` (``kind``: periodic, final, interrupt); ``None`` without a
        run directory.

        Raises:
            NonFiniteLossError: a loss was non-finite; ``diagnostic.pt`` is written instead.
        """
        self._check_losses()
        if self.run_dir is None:
            return None
        path = save_checkpoint(self.run_dir / CHECKPOINT,
                               {**self.checkpoint_meta, "kind": kind, **self.state_dict()},
                               keep_previous=True)
        self.checkpoint_step = self.step
        return path

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`run` needs to continue exactly (see the module docstring)."""
        if self.loop is None:
            raise RuntimeError("the loop has not started: nothing to save")
        subs = sub_envs(self.envs)
        noise_gen = getattr(self.agent, "noise_gen", None)
        return {
            "step": self.step,
            "episodes": self.episodes,
            "num_updates": self.num_updates,
            "dropped_transitions": self.dropped_transitions,
            "last_eval": dict(self.last_eval),
            "wall_time": self.logger.elapsed,
            "agent": self.agent.checkpoint_state(),
            "buffer": self.buffer.state_dict(),
            "noise": self.noise.state_dict(),
            "loop": self.loop.state_dict(),
            "rng": {
                "global": global_rng_state(),
                "loop": self.rng.bit_generator.state,
                "agent_noise_gen": None if noise_gen is None else noise_gen.get_state(),
            },
            "envs": None if subs is None else [snapshot_env(e) for e in subs],
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`save` (built like the saved run).

        Raises:
            CheckpointError: the checkpoint does not fit (parameter shapes by key, buffer
                fields, number of envs, env wrappers).
        """
        self._load_agent(ckpt["agent"])
        try:
            self.buffer.load_state_dict(ckpt["buffer"])
            self.noise.load_state_dict(ckpt["noise"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint does not fit this run: {e}") from e
        self.step, self.episodes = int(ckpt["step"]), int(ckpt["episodes"])
        self.num_updates = int(ckpt["num_updates"])
        self.dropped_transitions = int(ckpt["dropped_transitions"])
        self.last_eval = dict(ckpt["last_eval"])
        self.checkpoint_step = self.step
        self.loop = LoopState.from_state_dict(ckpt["loop"], self.device)
        if len(self.loop.obs) != self.envs.num_envs:
            raise CheckpointError(f"checkpoint has {len(self.loop.obs)} envs, this run "
                                  f"{self.envs.num_envs}")
        self._restore_envs(ckpt["envs"])
        rng = ckpt["rng"]
        self.rng.bit_generator.state = rng["loop"]
        noise_gen = getattr(self.agent, "noise_gen", None)
        if noise_gen is not None and rng["agent_noise_gen"] is not None:
            noise_gen.set_state(rng["agent_noise_gen"])
        set_global_rng_state(rng["global"])

    def _load_agent(self, state: dict[str, Any]) -> None:
        check_agent_state(self.agent, state)
        try:
            self.agent.load_checkpoint_state(state)
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint agent state does not fit this run: {e}") from e

    def _restore_envs(self, snapshots: list[dict[str, Any]] | None) -> None:
        """Reset the envs as a new run would, then put each in its saved state; an env that
        cannot be restored exactly restarts its episode."""
        self.envs.reset(seed=self.env_seed)
        subs = sub_envs(self.envs)
        n = self.envs.num_envs
        if subs is None or snapshots is None:
            warnings.warn("resume: the env states were not saved or cannot be restored here; "
                          "every episode restarts", stacklevel=3)
            self._restart_on_resume(np.ones(n, dtype=bool))
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
                              stacklevel=3)
                restart[i] = True
        if restart.any():
            self._restart_on_resume(restart)

    def _restart_on_resume(self, mask: np.ndarray) -> None:
        loop, dev = self.loop, self.device
        subs = sub_envs(self.envs)
        if subs is None:
            loop.obs, _ = self.envs.reset()
        else:
            for i in np.flatnonzero(mask):
                loop.obs[i] = subs[i].reset()[0]
        mask_t = torch.as_tensor(mask, device=dev)
        loop.state = self.agent.reset_state(loop.state, mask_t)
        self.noise.reset(mask)
        loop.prev_action = loop.prev_action * (~mask_t).float()[:, None]
        loop.prev_reward = loop.prev_reward * (~mask_t).float()
        loop.episode_return[mask], loop.episode_length[mask] = 0.0, 0
        if isinstance(self.buffer, SequenceReplayBuffer):
            self.buffer.start_new_episodes(mask)
