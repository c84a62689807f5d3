"""Train a DDPG agent with a sequence backbone on a Gymnasium task.

    python train.py                                    # Pendulum-v1, MLP, a few minutes on a CPU
    python train.py --env rlkit/Pendulum-V-v0 --backbone gru --total-steps 30000
    python train.py --env mymodule:MyEnv-v0            # import mymodule first (it registers ids)

Every run writes ``RUN_DIR/config.json``, ``metrics.jsonl`` and ``checkpoint.pt``.

    python train.py --checkpoint-every 10000 --run-dir runs/a   # checkpoint every 10k steps
    python train.py --resume runs/a --total-steps 50000          # continue it (and extend)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import tyro

import envs  # noqa: F401  (registers the rlkit/ task ids)
from agents.ddpg import DDPG, DDPGConfig
from rlkit.backbones import BACKBONE_NAMES, backbone_config
from rlkit.buffers import ReplayBuffer, SequenceReplayBuffer
from rlkit.checkpoint import check_config
from rlkit.launch import GridRun, launch
from rlkit.noise import make_noise
from rlkit.precision import Precision, PrecisionConfig, require_precision
from rlkit.resume import load_run_checkpoint, merge_config
from rlkit.runlog import RunLogger, truncate_metrics
from rlkit.seeding import seed_everything
from rlkit.trainer import (
    LoopConfig,
    NonFiniteError,
    NonFiniteLossError,
    Trainer,
    TrainingInterrupted,
    check_agent_state,
)


@dataclass(frozen=True)
class TrainConfig:
    """Train DDPG with a swappable sequence backbone."""

    env: str = "Pendulum-v1"
    """Gymnasium id with a Box action space; ``module:EnvId`` imports ``module`` first."""
    backbone: str = "mlp"
    """Encoder family: mlp, rnn, lstm, gru, transformer, s4 or mamba. Several make a grid."""
    total_steps: int = 15_000
    """Environment steps in total (summed over the vector envs)."""
    seed: int = 0
    """Run seed; every random component derives its own generator from it. Several make a
    grid (``--seed 0 1 2``)."""
    num_envs: int = 1
    """Parallel training environments (Gymnasium SyncVectorEnv)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` picks CUDA when available."""
    eval_every: int = 5_000
    """Evaluate the deterministic policy every this many env steps (0: only at the end)."""
    eval_episodes: int = 5
    """Episodes per evaluation."""
    run_dir: str | None = None
    """Run directory; default ``runs/<env>__<backbone>__s<seed>__<time>``. Never overwritten."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint, with its ``config.json``;
    only --total-steps, --checkpoint-every, --drop-nonfinite and --progress may change."""
    checkpoint_every: int = 0
    """Write ``RUN_DIR/checkpoint.pt`` every this many env steps (0: only at the end and on
    SIGINT / SIGTERM)."""
    drop_nonfinite: bool = False
    """Drop transitions with a NaN / inf observation or reward (logged as
    ``dropped_transitions``) and restart that env's episode, instead of stopping."""
    wandb: Literal["disabled", "offline", "online"] = "disabled"
    """W&B logging; ``online`` falls back to ``offline`` without a key or network."""
    wandb_project: str = "rlkit"
    """W&B project."""
    wandb_group: str | None = None
    """W&B group; default ``<env>/<backbone>``, or the grid's name for a grid."""
    grid_dir: str | None = None
    """Grid directory when ``--backbone`` or ``--seed`` take several values (a grid)."""
    launcher: Literal["local", "ray"] = "local"
    """Where a grid's runs go: local processes or tasks on a Ray cluster."""
    jobs: int = 1
    """Runs of a grid at a time (local), or CPUs of a local Ray instance."""
    ray_address: str | None = None
    """Address of an existing Ray cluster; default: start a local Ray instance."""

    learning_starts: int = 1_000
    """Random actions (and no updates) before this many env steps."""
    batch_size: int = 256
    """Transitions (MLP) or windows (sequence backbones) per update."""
    buffer_size: int = 1_000_000
    """Replay capacity in steps."""
    updates_per_step: float = 1.0
    """Gradient updates per env step; fractions allowed (0.25: one update every 4 steps)."""
    log_every: int = 1_000
    """Write training metrics every this many env steps."""
    progress: bool = True
    """Show a progress bar."""

    noise: Literal["ou", "gaussian"] = "ou"
    """Exploration noise process."""
    noise_sigma: float = 0.2
    """Noise scale, as a fraction of the action half-range."""
    ou_theta: float = 0.15
    """OU mean-reversion rate."""
    ou_dt: float = 1e-2
    """OU time step."""

    seq_len: int | None = None
    """Window length L of sequence training; default 1 for mlp (transitions), 32 otherwise."""
    burn_in: int = 0
    """Steps at a window start that refresh a stored state and get no loss (needs stored)."""
    state_mode: Literal["zero", "stored"] = "zero"
    """Window start state: zero (pomdp-baselines) or the state stored while acting (R2D2)."""
    window_start: Literal["any", "episode"] = "any"
    """Windows start at any stored step, or at episode starts only (full-episode training)."""
    prev_action: bool | None = None
    """Sequence training: actor and critic encoders also see the previous action. Default: on
    for memory backbones, off for ``mlp`` (an MLP fed its own previous action can carry
    information from step to step through its actions: it would not be memoryless)."""
    prev_reward: bool = False
    """Sequence training: actor and critic encoders also see the previous reward
    (``--prev-reward``; ``mlp`` stays memoryless only with it off)."""
    d_model: int = 256
    """Backbone width."""
    n_layers: int = 1
    """Backbone layers."""
    grad_checkpoint: bool = False
    """Gradient checkpointing in the backbones."""
    context: int = 64
    """Transformer only: attention window K (each step sees itself and the K - 1 before)."""
    precision: Precision = "fp32"
    """Update arithmetic: fp32; bf16 autocast; fp16 autocast with loss scaling (skipped steps
    are logged as ``skipped_steps``). Weights stay fp32."""
    compile: bool = False
    """Compile the update's forward passes and losses with ``torch.compile`` (CUDA graphs on a
    GPU); falls back to eager with one warning where compiling fails."""
    agent: DDPGConfig = field(default_factory=DDPGConfig)
    """Agent hyper-parameters (``--agent.gamma``, ``--agent.twin-critics``, ...)."""


def make_env(env_id: str) -> gym.Env:
    """``gym.make(env_id)``, importing ``module`` first for ``module:EnvId``; checks the spaces."""
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"cannot import module {module!r} named in --env: {e}") from e
    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        raise ValueError(f"unknown env id {env_id!r} ({e}); expected a registered Gymnasium id "
                         "such as Pendulum-v1 or rlkit/Pendulum-V-v0") from e
    if not isinstance(env.action_space, gym.spaces.Box):
        env.close()
        raise ValueError(f"env {env_id!r} has action space {env.action_space}; expected a "
                         "continuous Box action space")
    if not isinstance(env.observation_space, gym.spaces.Box):
        env.close()
        raise ValueError(f"env {env_id!r} has observation space {env.observation_space}; "
                         "expected a Box observation space")
    return env


def validate(cfg: TrainConfig) -> None:
    """Refuse bad values before anything is built; each message names the value."""
    if cfg.backbone not in BACKBONE_NAMES:
        raise ValueError(f"unknown backbone {cfg.backbone!r}; expected one of "
                         f"{', '.join(BACKBONE_NAMES)}")
    positive = ("total_steps", "num_envs", "eval_episodes", "batch_size", "buffer_size",
                "log_every", "d_model", "n_layers", "jobs", "context")
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got "
                             f"{getattr(cfg, name)}")
    for name in ("learning_starts", "eval_every", "burn_in", "seed", "checkpoint_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.updates_per_step > 0:
        raise ValueError(f"--updates-per-step must be > 0, got {cfg.updates_per_step}")
    if cfg.seq_len is not None and cfg.seq_len <= 0:
        raise ValueError(f"--seq-len must be a positive integer, got {cfg.seq_len}")
    if cfg.batch_size > cfg.buffer_size:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than --buffer-size "
                         f"{cfg.buffer_size}; expected batch_size <= buffer_size")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    require_precision(cfg.precision, resolve_device(cfg.device).type, name="--precision")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def new_run_dir(cfg: TrainConfig) -> Path:
    """The run directory; an existing non-empty one is refused, never overwritten."""
    if cfg.run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        env = cfg.env.replace("/", "-").replace(":", "-")
        name = f"{env}__{cfg.backbone}__s{cfg.seed}__{stamp}"
        path = Path("runs") / name
    else:
        path = Path(cfg.run_dir)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"run directory {path} already exists and is not empty; "
                              "choose another --run-dir")
    path.mkdir(parents=True, exist_ok=True)
    return path


def build(cfg: TrainConfig, device: torch.device) -> tuple[DDPG, gym.Env, int]:
    """The agent for ``cfg.env``, a probe env, and the sequence length (1 = transitions)."""
    env = make_env(cfg.env)
    seq_len = cfg.seq_len or (1 if cfg.backbone == "mlp" else 32)
    sequence = not (cfg.backbone == "mlp" and seq_len == 1)
    agent_cfg = cfg.agent
    if sequence:
        a = agent_cfg
        prev_action = cfg.prev_action if cfg.prev_action is not None else cfg.backbone != "mlp"
        prev_reward = cfg.prev_reward
        agent_cfg = dataclasses.replace(
            a,
            actor_prev_action=a.actor_prev_action or prev_action,
            critic_prev_action=a.critic_prev_action or prev_action,
            actor_prev_reward=a.actor_prev_reward or prev_reward,
            critic_prev_reward=a.critic_prev_reward or prev_reward,
        )
    else:
        a = agent_cfg
        if a.actor_prev_action or a.actor_prev_reward or a.critic_prev_action or \
                a.critic_prev_reward:
            raise ValueError("previous actions/rewards as inputs need sequence training; got "
                             "--backbone mlp with --seq-len 1 (expected --seq-len > 1 or a "
                             "memory backbone)")
    common = backbone_config(cfg.backbone, cfg.d_model, cfg.n_layers, cfg.grad_checkpoint,
                             cfg.context)
    agent = DDPG(
        obs_dim=int(np.prod(env.observation_space.shape)),
        action_low=torch.as_tensor(env.action_space.low),
        action_high=torch.as_tensor(env.action_space.high),
        backbone=cfg.backbone,
        backbone_cfg=common,
        cfg=agent_cfg,
        precision=PrecisionConfig(cfg.precision),
        compile=cfg.compile,
    ).to(device)
    return agent, env, (seq_len if sequence else 1)


RESUME_MAY_CHANGE = ("total_steps", "checkpoint_every", "drop_nonfinite", "progress")
"""Fields a command line may change when resuming a run (others must match the run's)."""
RUN_IDENTITY = ("env", "backbone", "seed", "num_envs", "d_model", "n_layers", "seq_len",
                "state_mode", "burn_in", "buffer_size", "obs_dim", "action_dim", "agent_resolved")
"""Config entries a checkpoint must share with the run it resumes."""


def resume_config(cfg: TrainConfig) -> tuple[TrainConfig, dict]:
    """The config and last checkpoint of the run in ``cfg.resume`` (see ``--resume``)."""
    run_dir = Path(cfg.resume)
    ckpt = load_run_checkpoint(run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    check_config(ckpt["config"], saved, RUN_IDENTITY)
    merged = merge_config(cfg, saved, RESUME_MAY_CHANGE, keep=("resume",))
    merged = dataclasses.replace(merged, run_dir=str(run_dir))
    if merged.total_steps <= ckpt["step"]:
        raise ValueError(f"--resume {run_dir}: the run is at step {ckpt['step']} of "
                         f"--total-steps {merged.total_steps}; pass a larger --total-steps to "
                         "continue it")
    return merged, ckpt


def main(cfg: TrainConfig) -> dict[str, float]:
    """Validate, build, train (or resume), save; returns the final evaluation."""
    ckpt = None
    if cfg.resume is not None:
        cfg, ckpt = resume_config(cfg)
    validate(cfg)
    device = resolve_device(cfg.device)
    seeds = seed_everything(cfg.seed, buffer_device=device)
    agent, eval_env, seq_len = build(cfg, device)
    obs_dim, act_dim = agent.obs_dim, agent.action_dim
    if seq_len == 1:
        buffer: ReplayBuffer | SequenceReplayBuffer = ReplayBuffer(
            cfg.buffer_size, obs_dim, act_dim, device, seeds.buffer)
    else:
        shapes = ()
        if cfg.state_mode == "stored":
            a_state, c_states = agent.initial_state(1)
            shapes = tuple(tuple(tuple(s.shape[1:]) for s in g) for g in (a_state, *c_states))
        buffer = SequenceReplayBuffer(cfg.buffer_size, cfg.num_envs, obs_dim, act_dim, seq_len,
                                      device, seeds.buffer, cfg.state_mode, cfg.burn_in, shapes,
                                      cfg.window_start)
    agent.noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    envs_vec = gym.vector.SyncVectorEnv(
        [lambda: make_env(cfg.env) for _ in range(cfg.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    noise = make_noise(cfg.noise, cfg.num_envs, act_dim, cfg.noise_sigma, seeds.noise,
                       theta=cfg.ou_theta, dt=cfg.ou_dt)
    run_dir = new_run_dir(cfg) if ckpt is None else Path(cfg.run_dir)
    wandb_id = ckpt.get("wandb_run_id") if ckpt is not None else None
    if wandb_id is None and cfg.wandb != "disabled":
        wandb_id = uuid.uuid4().hex[:12]
    resolved = {**dataclasses.asdict(cfg), "seq_len": seq_len, "run_dir": str(run_dir),
                "wandb_run_id": wandb_id,
                "device": str(device), "obs_dim": obs_dim, "action_dim": act_dim,
                # what rlkit.evaluate needs to rebuild the agent and the env from the run
                "agent_entry_point": "agents.ddpg:DDPG.from_run_config",
                "agent_resolved": dataclasses.asdict(agent.cfg),
                "action_low": agent.actor.center.sub(agent.actor.scale).tolist(),
                "action_high": agent.actor.center.add(agent.actor.scale).tolist(),
                "env_imports": ["envs", *([cfg.env.partition(":")[0]] if ":" in cfg.env
                                          else [])]}
    if ckpt is not None:  # refuse a misfit before the run directory is touched
        check_agent_state(agent, ckpt["agent"])
        truncate_metrics(run_dir, ckpt["step"])  # events after the checkpoint are logged again
    logger = RunLogger(run_dir, resolved, cfg.wandb, project=cfg.wandb_project,
                       group=cfg.wandb_group or f"{cfg.env}/{cfg.backbone}",
                       name=run_dir.name, tags=(cfg.env, cfg.backbone, f"seed{cfg.seed}"),
                       resume_id=wandb_id, elapsed=0.0 if ckpt is None else ckpt["wall_time"])
    loop = LoopConfig(cfg.total_steps, cfg.learning_starts, cfg.batch_size,
                      cfg.updates_per_step, cfg.eval_every, cfg.eval_episodes, cfg.log_every,
                      cfg.progress, cfg.checkpoint_every, cfg.drop_nonfinite)
    trainer = Trainer(agent, envs_vec, eval_env, buffer, noise, loop, logger, seeds.noise,
                      device, seeds.env_seed, seeds.eval_env_seed, run_dir=run_dir,
                      checkpoint_meta={"config": json.loads(json.dumps(resolved)),
                                       "wandb_run_id": wandb_id})
    try:
        if ckpt is not None:
            trainer.load_state_dict(ckpt)
            print(f"resuming {run_dir} at step {trainer.step} of {cfg.total_steps}",
                  file=sys.stderr)
        result = trainer.run()  # writes checkpoint.pt (periodic, final, on SIGINT / SIGTERM)
    finally:
        logger.close()
        envs_vec.close()
        eval_env.close()
    print(f"run dir: {run_dir}  final eval return: {result['eval_return_mean']:.1f} "
          f"+- {result['eval_return_std']:.1f}", file=sys.stderr)
    return result


def run_in(cfg: TrainConfig, run_dir: str) -> dict[str, float]:
    """One run of a grid: ``main`` with the run directory given (module-level, picklable)."""
    return main(dataclasses.replace(cfg, run_dir=run_dir, progress=False))


def grid(cfg: TrainConfig, backbones: Sequence[str], seeds: Sequence[int]) -> Path:
    """Every (backbone, seed) combination, each in its own run directory, then a report.

    The grid directory is ``--grid-dir`` (default ``runs/grid-<env>-<time>``); runs are
    ``<grid>/<backbone>__s<seed>`` and share the W&B group ``<grid name>``.
    """
    for b in backbones:
        validate(dataclasses.replace(cfg, backbone=b))
    make_env(cfg.env).close()  # a bad env id stops the grid before any run starts
    if cfg.grid_dir is None:
        env = cfg.env.replace("/", "-").replace(":", "-")
        grid_dir = Path("runs") / f"grid-{env}-{time.strftime('%Y%m%d-%H%M%S')}"
    else:
        grid_dir = Path(cfg.grid_dir)
    if grid_dir.exists() and any(grid_dir.iterdir()):
        raise FileExistsError(f"grid directory {grid_dir} already exists and is not empty; "
                              "choose another --grid-dir")
    group = cfg.wandb_group or grid_dir.name
    runs = [
        GridRun(f"{b}__s{s}", dataclasses.replace(cfg, backbone=b, seed=s, wandb_group=group))
        for b in backbones for s in seeds
    ]
    outcomes = launch(run_in, runs, grid_dir, cfg.launcher, cfg.jobs, cfg.ray_address,
                      progress=cfg.progress)
    for o in outcomes:
        status = f"error: {o.error}" if o.error else \
            f"eval return {o.result['eval_return_mean']:.1f}"
        print(f"{o.name}: {status}", file=sys.stderr)
    if any(o.error is None for o in outcomes):
        from rlkit.report import build_report

        report = build_report(grid_dir)
        print(f"report: {report.html}", file=sys.stderr)
    if any(o.error for o in outcomes):
        raise RuntimeError(f"{sum(bool(o.error) for o in outcomes)} of {len(outcomes)} runs "
                           f"failed; see above")
    return grid_dir


def _take_list(argv: list[str], flag: str) -> tuple[list[str], list[str]]:
    """Remove ``flag V1 V2 ...`` (or ``flag=V``) from ``argv``; return (values, rest)."""
    values, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            continue
        if arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return values, rest


def parse_cli(argv: Sequence[str]) -> tuple[TrainConfig, list[str], list[int]]:
    """The config of the first run, and every backbone and seed asked for (``--backbone`` and
    ``--seed`` take several values)."""
    backbones, rest = _take_list(list(argv), "--backbone")
    seeds, rest = _take_list(rest, "--seed")
    extra = [f"--backbone={backbones[0]}"] if backbones else []
    extra += [f"--seed={seeds[0]}"] if seeds else []
    cfg = tyro.cli(TrainConfig, args=rest + extra)
    try:
        seed_values = [int(s) for s in seeds] or [cfg.seed]
    except ValueError as e:
        raise ValueError(f"--seed takes non-negative integers, got {seeds}") from e
    return cfg, backbones or [cfg.backbone], seed_values


def cli(argv: Sequence[str]) -> None:
    """``--backbone`` and ``--seed`` take several values; more than one run makes a grid."""
    cfg, backbone_values, seed_values = parse_cli(argv)
    if len(backbone_values) * len(seed_values) == 1:
        main(cfg)
    else:
        grid(cfg, backbone_values, seed_values)


if __name__ == "__main__":
    # exit codes: 0 done; 1 non-finite value or loss (diagnostic.pt for a loss); 2 bad input or
    # unreadable checkpoint; 130 / 143 stopped by SIGINT / SIGTERM after writing a checkpoint
    try:
        cli(sys.argv[1:])
    except TrainingInterrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (NonFiniteError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
