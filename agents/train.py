"""The training program behind ``train.py``: config, building, one run, resume.

    from agents.train import TrainConfig, main
    from rlkit.config import replace_fields
    main(replace_fields(TrainConfig(), env="rlkit/Pendulum-V-v0", backbone="gru"))

Every run writes ``RUN_DIR/config.json`` (a :class:`rlkit.rundir.RunRecord`),
``metrics.jsonl`` and ``checkpoint.pt``. Grids of runs and the command line are in
:mod:`agents.cli`.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import gymnasium as gym
import numpy as np
import torch
import tyro

from agents.ddpg import DDPG, DDPGConfig
from rlkit.backbones import backbone_config
from rlkit.buffers import make_replay
from rlkit.checkpoint import CheckpointError, load_checkpoint
from rlkit.config import (
    EnvConfig,
    GridConfig,
    LoopConfig,
    ModelConfig,
    NoiseConfig,
    ReplayConfig,
    RunConfig,
    flag,
)
from rlkit.loopstate import check_agent_state
from rlkit.noise import make_noise
from rlkit.precision import PrecisionConfig, require_precision
from rlkit.resume import load_run_checkpoint, merge_config
from rlkit.rundir import SECTIONS, RunPaths, RunRecord, fresh_dir, slug
from rlkit.runlog import RunLogger, truncate_metrics
from rlkit.seeding import seed_everything
from rlkit.trainer import Trainer

Flat = tyro.conf.OmitArgPrefixes

ENV_REGISTRY = "envs"
"""The module that registers the ``rlkit/`` ids (imported before ``gym.make`` of one)."""


@dataclass(frozen=True)
class TrainConfig:
    """Train DDPG with a swappable sequence backbone."""

    run: Annotated[RunConfig, Flat] = field(default_factory=RunConfig)
    env: Annotated[EnvConfig, Flat] = field(default_factory=EnvConfig)
    replay: Annotated[ReplayConfig, Flat] = field(default_factory=ReplayConfig)
    model: Annotated[ModelConfig, Flat] = field(default_factory=ModelConfig)
    noise: Annotated[NoiseConfig, Flat] = field(default_factory=NoiseConfig)
    loop: Annotated[LoopConfig, Flat] = field(default_factory=LoopConfig)
    grid: Annotated[GridConfig, Flat] = field(default_factory=GridConfig)
    agent: DDPGConfig = field(default_factory=DDPGConfig)
    """Agent hyper-parameters (``--agent.gamma``, ``--agent.twin-critics``, ...)."""

    @classmethod
    def from_record(cls, record: RunRecord) -> TrainConfig:
        """The (resolved) config of a run directory's record."""
        agent = dict(record.agent)
        agent["head_hidden"] = tuple(agent["head_hidden"])
        sections = {name: getattr(record, name) for name in SECTIONS}
        return cls(**sections, agent=DDPGConfig(**agent))


def episode_steps(env: gym.Env) -> int | None:
    """The task's longest episode: its time limit, or what the env says of itself
    (``max_episode_steps``); ``None`` when unknown."""
    limit = env.spec.max_episode_steps if env.spec is not None else None
    return limit or getattr(env.unwrapped, "max_episode_steps", None)


def resolve(cfg: TrainConfig, max_episode_steps: int | None = None) -> TrainConfig:
    """``cfg`` with the defaults that depend on the backbone and the task filled in: the
    replay windows (:meth:`rlkit.config.ReplayConfig.resolved`: transitions for ``mlp``,
    whole episodes for memory backbones when they fit) and the encoders' inputs (previous
    actions for memory backbones; previous rewards with ``--prev-reward``). The one place that
    decides whether a run trains on transitions or on windows."""
    m, a = cfg.model, cfg.agent
    replay = cfg.replay.resolved(m.memory, max_episode_steps)
    if not replay.transitions(m.memory):
        prev_action = m.prev_action if m.prev_action is not None else m.memory
        agent = dataclasses.replace(
            a, actor_prev_action=a.actor_prev_action or prev_action,
            critic_prev_action=a.critic_prev_action or prev_action,
            actor_prev_reward=a.actor_prev_reward or m.prev_reward,
            critic_prev_reward=a.critic_prev_reward or m.prev_reward)
    elif a.actor_prev_action or a.actor_prev_reward or a.critic_prev_action or \
            a.critic_prev_reward:
        raise ValueError("previous actions/rewards as inputs need sequence training; got "
                         "--backbone mlp with --seq-len 1 (expected --seq-len > 1 or a "
                         "memory backbone)")
    else:
        agent = a
    return dataclasses.replace(cfg, replay=replay, agent=agent)


def env_modules(env: EnvConfig) -> tuple[str, ...]:
    """Modules to import before ``gym.make`` of ``env``: the ``rlkit/`` ids' registry for those
    ids, and the ``module`` of ``module:EnvId``."""
    return (*((ENV_REGISTRY,) if env.gym_id.startswith("rlkit/") else ()), *env.imports)


def make_env(env: EnvConfig | str) -> gym.Env:
    """``gym.make`` of the configured id, after importing :func:`env_modules`; checks the
    spaces."""
    env = env if isinstance(env, EnvConfig) else EnvConfig(id=env)
    for module in env_modules(env):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"cannot import module {module!r} for --env {env.id}: {e}") from e
    try:
        made = gym.make(env.gym_id)
    except gym.error.Error as e:
        raise ValueError(f"unknown env id {env.gym_id!r} ({e}); expected a registered "
                         "Gymnasium id such as Pendulum-v1 or rlkit/Pendulum-V-v0") from e
    for kind, space in (("action", made.action_space), ("observation", made.observation_space)):
        if not isinstance(space, gym.spaces.Box):
            made.close()
            raise ValueError(f"env {env.id!r} has {kind} space {space}; expected a continuous "
                             f"Box {kind} space")
    return made


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_device(cfg: TrainConfig) -> torch.device:
    """The run's device, refusing CUDA without a device and an unsupported precision."""
    if cfg.run.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    device = resolve_device(cfg.run.device)
    require_precision(cfg.model.precision, device.type, name="--precision")
    return device


def build(cfg: TrainConfig, device: torch.device) -> tuple[TrainConfig, DDPG, gym.Env]:
    """The resolved config (:func:`resolve`, with the task's episode length), the agent, and a
    probe env of the task. Warns when the resolved config trains a memory encoder on other
    histories than it acts on (:meth:`rlkit.config.ReplayConfig.act_gap`)."""
    env = make_env(cfg.env)
    steps = episode_steps(env)
    cfg = resolve(cfg, steps)
    if gap := cfg.replay.act_gap(cfg.model.memory, steps):
        warnings.warn(f"train != act: {gap}", UserWarning, stacklevel=2)
    m = cfg.model
    agent = DDPG(
        obs_dim=int(np.prod(env.observation_space.shape)),
        action_low=torch.as_tensor(env.action_space.low),
        action_high=torch.as_tensor(env.action_space.high),
        backbone=m.backbone,
        backbone_cfg=backbone_config(m.backbone, m.d_model, m.n_layers, m.grad_checkpoint,
                                     m.context),
        cfg=cfg.agent,
        precision=PrecisionConfig(m.precision),
        compile=m.compile,
    ).to(device)
    return cfg, agent, env


RESUME_MAY_CHANGE = ("total_steps", "checkpoint_every", "drop_nonfinite", "progress")
"""Fields a command line may change when resuming a run (others must match the run's)."""


def resume_config(cfg: TrainConfig) -> tuple[TrainConfig, RunRecord, dict]:
    """The config, record and last checkpoint of the run in ``--resume`` (see there)."""
    run_dir = Path(cfg.run.resume)
    ckpt = load_run_checkpoint(run_dir)
    record = RunRecord.read(run_dir)
    try:
        record.check_same_run(RunRecord.from_json(ckpt["config"], "checkpoint config"))
    except ValueError as e:
        raise CheckpointError(f"--resume {run_dir}: {e}") from e
    merged = merge_config(cfg, TrainConfig.from_record(record), RESUME_MAY_CHANGE,
                          keep=("resume",))
    merged = dataclasses.replace(
        merged, run=dataclasses.replace(merged.run, run_dir=str(run_dir), device=record.device))
    if merged.loop.total_steps <= ckpt["step"]:
        raise ValueError(f"--resume {run_dir}: the run is at step {ckpt['step']} of "
                         f"--total-steps {merged.loop.total_steps}; pass a larger "
                         "--total-steps to continue it")
    return merged, record, ckpt


def new_run_dir(cfg: TrainConfig) -> Path:
    """The run directory; an existing non-empty one is refused, never overwritten."""
    name = f"{slug(cfg.env.id)}__{cfg.model.backbone}__s{cfg.run.seed}__"
    path = fresh_dir(cfg.run.run_dir, name, "run directory", flag("run_dir"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _record(cfg: TrainConfig, agent: DDPG, device: torch.device, wandb_id: str | None
            ) -> RunRecord:
    return RunRecord(
        **{name: getattr(cfg, name) for name in SECTIONS},
        agent=dataclasses.asdict(agent.cfg), obs_dim=agent.obs_dim,
        action_dim=agent.action_dim,
        action_low=tuple(agent.actor.center.sub(agent.actor.scale).tolist()),
        action_high=tuple(agent.actor.center.add(agent.actor.scale).tolist()),
        device=str(device), wandb_run_id=wandb_id)


def main(cfg: TrainConfig) -> dict[str, float]:
    """Validate, build, train (or resume), save; returns the final evaluation."""
    ckpt = None
    if cfg.run.resume is not None:
        cfg, _, ckpt = resume_config(cfg)
    device = check_device(resolve(cfg))
    seeds = seed_everything(cfg.run.seed, buffer_device=device)
    cfg, agent, eval_env = build(cfg, device)
    buffer = make_replay(cfg.replay, cfg.model, num_envs=cfg.env.num_envs,
                         obs_dim=agent.obs_dim, action_dim=agent.action_dim, device=device,
                         generator=seeds.buffer, state_example=agent.initial_state(1))
    agent.noise_gen = torch.Generator(device=device).manual_seed(cfg.run.seed + 1)
    envs_vec = gym.vector.SyncVectorEnv(
        [lambda: make_env(cfg.env) for _ in range(cfg.env.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    n = cfg.noise
    noise = make_noise(n.kind, cfg.env.num_envs, agent.action_dim, n.sigma, seeds.noise,
                       theta=n.ou_theta, dt=n.ou_dt)
    run_dir = new_run_dir(cfg) if ckpt is None else Path(cfg.run.run_dir)
    wandb_id = ckpt.get("wandb_run_id") if ckpt is not None else None
    if wandb_id is None and cfg.run.wandb != "disabled":
        wandb_id = uuid.uuid4().hex[:12]
    record = _record(dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, run_dir=str(run_dir))), agent, device, wandb_id)
    if ckpt is not None:  # refuse a misfit before the run directory is touched
        check_agent_state(agent, ckpt["agent"])
        truncate_metrics(run_dir, ckpt["step"])  # events after the checkpoint are logged again
    record.write(run_dir)
    r = cfg.run
    logger = RunLogger(run_dir, record.to_json(), r.wandb, project=r.wandb_project,
                       group=r.wandb_group or f"{cfg.env.id}/{cfg.model.backbone}",
                       name=run_dir.name, tags=(cfg.env.id, cfg.model.backbone, f"seed{r.seed}"),
                       resume_id=wandb_id, elapsed=0.0 if ckpt is None else ckpt["wall_time"])
    trainer = Trainer(agent, envs=envs_vec, eval_env=eval_env, buffer=buffer, noise=noise,
                      cfg=cfg.loop, batch_size=cfg.replay.batch_size, logger=logger,
                      rng=seeds.noise, device=device, env_seed=seeds.env_seed,
                      eval_seed=seeds.eval_env_seed, run_dir=run_dir,
                      checkpoint_meta={"config": record.to_json(), "wandb_run_id": wandb_id})
    try:
        if ckpt is not None:
            trainer.load_state_dict(ckpt)
            print(f"resuming {run_dir} at step {trainer.step} of {cfg.loop.total_steps}",
                  file=sys.stderr)
        result = trainer.run()  # writes checkpoint.pt (periodic, final, on SIGINT / SIGTERM)
    finally:
        logger.close()
        envs_vec.close()
        eval_env.close()
    print(f"run dir: {run_dir}  final eval return: {result['eval_return_mean']:.1f} "
          f"+- {result['eval_return_std']:.1f}", file=sys.stderr)
    return result


def load_agent(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[DDPG, RunRecord]:
    """The trained agent of a run directory (its ``checkpoint.pt``) and its record.

    Raises:
        rlkit.rundir.RunDirError: no valid ``config.json``.
        rlkit.checkpoint.CheckpointError: the checkpoint is missing, unsafe or corrupt.
    """
    record = RunRecord.read(run_dir)
    agent = DDPG.from_record(record)
    ckpt = load_checkpoint(RunPaths(Path(run_dir)).checkpoint, map_location=device)
    agent.load_checkpoint_state(ckpt["agent"])
    return agent.to(device).eval(), record


def run_in(cfg: TrainConfig, run_dir: str) -> dict[str, float]:
    """One run of a grid: :func:`main` in ``run_dir``, without a progress bar."""
    return main(dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, run_dir=run_dir),
        loop=dataclasses.replace(cfg.loop, progress=False)))


__all__ = ["TrainConfig", "build", "load_agent", "main", "make_env", "resolve", "run_in"]
