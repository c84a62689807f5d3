"""The training program behind ``train.py``: config, building, one run, resume.

    from agents.train import TrainConfig, main
    from rlkit.config import replace_fields
    main(replace_fields(TrainConfig(), env="rlkit/Pendulum-V-v0", backbone="gru"))

Set this way the fields are the defaults plus those given: no recipe is applied, and
``config.json`` records ``run.recipe`` as ``none``. A name given there is recorded as given, and
must be a shipped recipe's; it is not applied (``agents.recipes.recipes()[NAME].apply(cfg)``
applies one), and a config that holds none of that recipe's values is warned of.
``agents.cli.parse_config(["--env", ..., "--backbone", ...])`` gives the config ``train.py``
would run (the recipe for the env, then the flags).

Every run writes ``RUN_DIR/config.json`` (a :class:`rlkit.rundir.RunRecord`),
``metrics.jsonl`` and ``checkpoint.pt``, and holds ``RUN_DIR/run.lock`` while it runs (one
process per run directory). Before the replay buffer is built its memory is compared with the
memory available (:func:`rlkit.buffers.check_replay_memory`). The config is
:class:`agents.config.TrainConfig`; resuming is :mod:`agents.resume`. Grids of runs and the
command line are in :mod:`agents.cli`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import uuid
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch

from agents import recipes
from agents.config import TrainConfig, env_modules
from agents.ddpg import DDPG
from agents.resume import (
    RESUME_MAY_CHANGE,
    RESUME_MAY_DIFFER,
    check_checkpoint_record,
    resume_config,
)
from rlkit.buffers import check_replay_memory, make_replay
from rlkit.checkpoint import CheckpointError, load_checkpoint, previous_path
from rlkit.compile import choose_compile
from rlkit.config import (
    EnvConfig,
    end_step,
    flag,
    parse_device,
    replace_fields,
    updates_made,
)
from rlkit.evaluate import eval_time_limited, import_env_modules, time_limit
from rlkit.faults import COLOUR, EnvError, first_line
from rlkit.loopstate import check_agent_state
from rlkit.noise import make_noise
from rlkit.precision import PrecisionConfig, require_precision
from rlkit.resume import check_run_dir
from rlkit.rundir import (
    SECTIONS,
    RunLock,
    RunPaths,
    RunRecord,
    fresh_dir,
    make_dir,
    slug,
)
from rlkit.runlog import RunLogger, truncate_metrics
from rlkit.seeding import seed_everything
from rlkit.trainer import Trainer


def resolve(cfg: TrainConfig, max_episode_steps: int | None = None) -> TrainConfig:
    """``cfg`` with the defaults that depend on the backbone and the task filled in: the
    replay windows (:meth:`rlkit.config.ReplayConfig.resolved`: transitions for ``mlp``,
    whole episodes for memory backbones when they fit) and the encoders' inputs (previous
    actions for memory backbones; previous rewards with ``--prev-reward``). The one place that
    decides whether a run trains on transitions or on windows.

    Raises:
        ValueError: inputs that need sequence training on transitions, stored Transformer
            states that the burn-in does not recompute (:func:`stale_stored_state`), or
            windows the replay cannot sample or that reach past every episode of the task
            (:meth:`rlkit.config.ReplayConfig.check_resolved`).
    """
    m, a = cfg.model, cfg.agent
    if stale := stale_stored_state(cfg, max_episode_steps):
        raise ValueError(stale)
    replay = cfg.replay.resolved(m.memory, max_episode_steps,
                                 reach=m.reach_in(max_episode_steps))
    replay.check_resolved(max_episode_steps)
    if not replay.transitions(m.memory):
        agent = dataclasses.replace(
            a, actor_prev_action=a.actor_prev_action or m.feeds_prev_action,
            critic_prev_action=a.critic_prev_action or m.feeds_prev_action,
            actor_prev_reward=a.actor_prev_reward or m.prev_reward,
            critic_prev_reward=a.critic_prev_reward or m.prev_reward)
    elif given := [flag for flag, on in (
            ("--agent.actor-prev-action", a.actor_prev_action),
            ("--agent.actor-prev-reward", a.actor_prev_reward),
            ("--agent.critic-prev-action", a.critic_prev_action),
            ("--agent.critic-prev-reward", a.critic_prev_reward)) if on]:
        raise ValueError(f"previous actions/rewards as inputs need sequence training; got "
                         f"{' '.join(given)} with --backbone {m.backbone} and --seq-len 1 "
                         "(expected --seq-len > 1 or a memory backbone)")
    elif a.n_step > 1:
        raise ValueError(f"--agent.n-step {a.n_step} sums rewards along a window; got --backbone "
                         f"mlp with --seq-len 1, which trains on single transitions (expected "
                         f"--seq-len > 1, a memory backbone or --agent.n-step 1)")
    else:
        agent = a
    agent.check_embed_inputs()
    if agent.input_norm and cfg.loop.learning_starts == 0:
        raise ValueError("--agent.input-norm takes the scale of the encoders' inputs from the "
                         "random-action steps before learning starts; got --learning-starts 0 "
                         "(expected --learning-starts > 0)")
    return dataclasses.replace(cfg, replay=replay, agent=agent)


def check_new_run(cfg: TrainConfig) -> None:
    """Refuse what a new run may not be given but a run made before the check may hold (and
    a resume, which cannot change it, goes on with): ``--initial-updates`` with
    ``--learning-starts 0``, where no random-action steps are gathered for them.

    Raises:
        ValueError: named by flag.
    """
    if cfg.loop.initial_updates and cfg.loop.learning_starts == 0:
        raise ValueError(f"--initial-updates {cfg.loop.initial_updates} are made on the "
                         "random-action steps gathered before learning starts; got "
                         "--learning-starts 0, where there are none (expected --learning-starts "
                         "> 0, or no --initial-updates)")


def stale_stored_state(cfg: TrainConfig, episode_steps: int | None = None) -> str | None:
    """Why stored Transformer states would reach the trained steps unrefreshed (``None``
    otherwise).

    A stored state is what the online networks computed while acting; the target networks
    start from it too. A recurrent state is refreshed step by step over the burn-in; the
    Transformer's cached keys and values are not recomputed at all, and they reach a trained
    step through attention until ``n_layers * (context - 1)`` steps have passed. A burn-in that
    long recomputes every key and value the trained steps see, online and target alike; so does
    ``--state-mode prefix`` with that burn-in, which stores nothing. On a task whose episodes
    last at most ``episode_steps``, that reach is at most ``episode_steps - 1``.
    """
    reach, r = cfg.model.reach_in(episode_steps), cfg.replay
    if reach is None or r.state_mode != "stored" or r.burn_in >= reach:
        return None  # a recurrent state, refreshed over the burn-in; or a reach replayed
    return (f"--state-mode stored --burn-in {r.burn_in}: the Transformer's stored keys and "
            f"values were computed by the online network while acting and would reach the "
            f"target networks as they are. Use --state-mode prefix --burn-in {reach} "
            f"(--n-layers x (--context - 1), at most an episode: the trained steps see only "
            f"recomputed keys and values, and nothing is stored), or a --burn-in of at least "
            f"{reach} with stored states, or whole episodes")


def make_env(env: EnvConfig | str) -> gym.Env:
    """``gym.make`` of the configured id, after importing :func:`env_modules`; checks the
    spaces."""
    env = env if isinstance(env, EnvConfig) else EnvConfig(id=env)
    import_env_modules(env_modules(env), env.id)
    try:
        made = gym.make(env.gym_id)
    except gym.error.Error as e:
        raise ValueError(f"unknown env id {env.gym_id!r} ({e}); expected a registered "
                         "Gymnasium id such as Pendulum-v1 or rlkit/Pendulum-V-v0") from e
    except Exception as e:  # noqa: BLE001  (the env's own code failed)
        raise EnvError.wrap(e, env.id, "construction") from e
    for kind, space in (("action", made.action_space), ("observation", made.observation_space)):
        if not isinstance(space, gym.spaces.Box):
            made.close()
            raise ValueError(f"env {env.id!r} has {kind} space {space}; expected a continuous "
                             f"Box {kind} space")
        if len(space.shape) != 1:  # the networks take (B, D) vectors
            made.close()
            flatten = (" (gymnasium.wrappers.FlattenObservation flattens one; images need an "
                       "encoder of their own)" if kind == "observation" else "")
            raise ValueError(f"env {env.id!r} has {kind} space {space} of shape {space.shape}; "
                             f"expected a 1-D Box {kind} space{flatten}")
    return made


def check_buffer_holds_a_window(cfg: TrainConfig) -> None:
    """Refuse a resolved config whose buffer holds fewer steps per environment than a window,
    by its flags (the buffer's own check names its arguments).

    Raises:
        ValueError: ``--buffer-size`` / ``--num-envs`` below ``--seq-len``.
    """
    replay, n = cfg.replay, cfg.env.num_envs
    if (per_env := replay.buffer_size // n) < replay.seq_len:
        raise ValueError(f"--buffer-size {replay.buffer_size} holds {per_env} steps per "
                         f"environment (--num-envs {n}), fewer than a window (--seq-len "
                         f"{replay.seq_len}): expected --buffer-size at least "
                         f"{replay.seq_len * n}")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; another name as
    :func:`rlkit.config.parse_device` checks it (CUDA refused where there is none)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return parse_device(name)


def check_device(cfg: TrainConfig) -> torch.device:
    """The run's device, refusing CUDA without a device and an unsupported precision."""
    device = resolve_device(cfg.run.device)
    require_precision(cfg.model.precision, device.type, name="--precision")
    return device


def build(cfg: TrainConfig, device: torch.device) -> tuple[TrainConfig, DDPG, gym.Env]:
    """The resolved config (:func:`resolve`, with the task's episode length), the agent, and a
    probe env of the task (the evaluation env: without a time limit of its own, cut at
    :data:`rlkit.evaluate.EVAL_STEP_LIMIT` steps). Warns when the resolved config trains a
    memory encoder on other histories than it acts on
    (:meth:`rlkit.config.ReplayConfig.act_gap`; with the reason, where a short --seq-len
    dropped the default burn-in: :meth:`rlkit.config.ReplayConfig.dropped_start`), when a
    Transformer trained on windows that span its episodes cannot see all of them
    (:meth:`rlkit.config.ModelConfig.reach_gap`), when its cache is longer than any
    episode (:meth:`rlkit.config.ModelConfig.empty_cache`), when a family-specific flag is
    given to a backbone that does not use it (:meth:`rlkit.config.ModelConfig.unused_flags`)
    or a replay flag to a run that does not use it (:meth:`rlkit.config.ReplayConfig.unused_flags`),
    when updates run under mixed precision (autocast) while acting runs in fp32, and when
    the run ends before its first update. Refuses a buffer that holds fewer steps
    than a window (:func:`check_buffer_holds_a_window`)."""
    env = make_env(cfg.env)
    steps = time_limit(env)
    dropped = cfg.replay.dropped_start(cfg.model.memory, steps, reach=cfg.model.reach_in(steps))
    try:
        cfg = resolve(cfg, steps)
        check_buffer_holds_a_window(cfg)
    except ValueError:
        env.close()
        raise
    if gap := cfg.replay.act_gap(cfg.model.memory, steps, reach=cfg.model.reach_in(steps)):
        why = f" ({dropped})" if dropped else ""
        warnings.warn(f"train != act: {gap}{why}", UserWarning, stacklevel=2)
    if cfg.model.precision != "fp32":
        warnings.warn(f"train != act: updates run under {cfg.model.precision} autocast and "
                      "acting in fp32, so the policy trains on outputs that differ from those "
                      "it acts on by autocast's rounding (measured in the README, --precision)",
                      UserWarning, stacklevel=2)
    if short := cfg.model.reach_gap(steps, cfg.replay.seq_len):
        warnings.warn(f"short reach: {short}", UserWarning, stacklevel=2)
    if empty := cfg.model.empty_cache(steps):
        warnings.warn(f"long context: {empty}", UserWarning, stacklevel=2)
    if unused := "; ".join(filter(None, (cfg.model.unused_flags(),
                                         cfg.replay.unused_flags(cfg.model.memory),
                                         cfg.agent.unused_flags(), cfg.noise.unused_flags()))):
        warnings.warn(f"unused flags: {unused}", UserWarning, stacklevel=2)
    n = cfg.env.num_envs  # the envs step together: the run's last step is a multiple of n
    if end_step(cfg.loop.total_steps, n) < cfg.loop.learning_starts:
        warnings.warn(f"no update: --total-steps {cfg.loop.total_steps} ends before "
                      f"--learning-starts {cfg.loop.learning_starts} (random actions until then):"
                      f" the policy evaluated is the untrained one", UserWarning, stacklevel=2)
    elif updates_made(cfg.loop, n, stop_at=1) == 0:
        lp = cfg.loop
        warnings.warn(f"no update: --updates-per-step {lp.updates_per_step} from --learning-starts"
                      f" {lp.learning_starts}, made at multiples of --update-every "
                      f"{lp.update_every}, comes to no whole update by --total-steps "
                      f"{lp.total_steps}: the policy evaluated is the untrained one", UserWarning,
                      stacklevel=2)
    m = dataclasses.replace(cfg.model, compile="on" if choose_compile(
        cfg.model.compile, cfg.model.backbone, device.type) else "off")
    cfg = dataclasses.replace(cfg, model=m)  # config.json records the choice
    agent = DDPG(
        obs_dim=int(np.prod(env.observation_space.shape)),
        action_low=torch.as_tensor(env.action_space.low),
        action_high=torch.as_tensor(env.action_space.high),
        backbone=m.backbone,
        backbone_cfg=m.backbone_config(),
        cfg=cfg.agent,
        precision=PrecisionConfig(m.precision),
        compile=m.compile == "on",
    ).to(device)
    return cfg, agent, eval_time_limited(env)  # it evaluates: episodes that end


def check_memory(cfg: TrainConfig, agent: DDPG, device: torch.device) -> None:
    """:func:`rlkit.buffers.check_replay_memory` for a resolved ``cfg`` and its agent."""
    check_replay_memory(cfg.replay, cfg.model, num_envs=cfg.env.num_envs, obs_dim=agent.obs_dim,
                        action_dim=agent.action_dim, state_example=agent.initial_state(1),
                        device=device)


def check_fits(cfg: TrainConfig) -> None:
    """Build ``cfg``'s agent and refuse it as a run would if its replay does not fit in memory
    (a grid checks each backbone before any run starts; the runs warn for themselves).

    Raises:
        ValueError: see :func:`rlkit.buffers.check_replay_memory`.
    """
    device = check_device(resolve(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg, agent, env = build(cfg, device)
    env.close()
    check_memory(cfg, agent, device)


def new_run_dir(cfg: TrainConfig) -> Path:
    """The run directory; an existing non-empty one is refused, never overwritten.

    Raises:
        FileExistsError: it exists and is not empty.
        rlkit.rundir.RunDirError: it is a file.
        rlkit.faults.FileSystemError: it cannot be created (read-only file system, ...).
    """
    name = f"{slug(cfg.env.id)}__{cfg.model.backbone}__s{cfg.run.seed}__"
    path = fresh_dir(cfg.run.run_dir, name, "run directory", flag("run_dir"))
    return make_dir(path, "run directory")


def _record(cfg: TrainConfig, agent: DDPG, device: torch.device, wandb_id: str | None
            ) -> RunRecord:
    return RunRecord(
        **{name: getattr(cfg, name) for name in SECTIONS},
        agent=dataclasses.asdict(agent.cfg), obs_dim=agent.obs_dim,
        action_dim=agent.action_dim,
        action_low=tuple(agent.actor.center.sub(agent.actor.scale).tolist()),
        action_high=tuple(agent.actor.center.add(agent.actor.scale).tolist()),
        device=str(device), wandb_run_id=wandb_id)


def main(cfg: TrainConfig, given: Collection[str] = (), *,
         recipe_applied: bool = False) -> dict[str, float]:
    """Validate, build, train (or resume), save; returns the final evaluation. ``given``: with
    ``--resume``, the fields that may change that the command line gave (see
    :func:`agents.resume.resume_config`). ``recipe_applied``: ``cfg`` is the command line's
    (:func:`agents.cli.parse_config`: its recipe applied, then the flags); otherwise a config
    that names a recipe and holds none of its values is warned of (setting the name from
    Python applies nothing).

    The run directory is locked for the whole run (:class:`rlkit.rundir.RunLock`); a resumed
    one before anything in it is read or changed. Side effects beyond the run directory: the
    process's global generators (``random``, NumPy's and torch's) are seeded from the run's
    seed (:func:`rlkit.seeding.seed_everything`: weight initialisation draws from torch's,
    every other component from a generator of its own) and left where the run leaves them, and
    the run directory and final return are printed on one line to stdout.

    Raises:
        ValueError: bad input (flags, env, not enough memory, ...), named by flag.
        rlkit.rundir.RunDirBusy: another process runs in the run directory.
        CheckpointError: ``--resume`` found no readable checkpoint of this run.
        rlkit.faults.NonFiniteError, rlkit.faults.NonFiniteLossError: see the loop.
        rlkit.faults.FileSystemError: a run file could not be written.
        rlkit.faults.EnvError: the env raised an exception (its traceback kept).
        rlkit.faults.TrainingInterrupted: SIGINT / SIGTERM, after a checkpoint.
    """
    with contextlib.ExitStack() as held:
        run_dir = ckpt = record = None
        if cfg.run.resume is not None:
            run_dir = Path(cfg.run.resume)
            check_run_dir(run_dir)
            held.enter_context(RunLock(run_dir))  # before anything in it is read or changed
            cfg, record, ckpt = resume_config(cfg, given)
        else:
            known = recipes.check_name(cfg.run.recipe)
            check_new_run(cfg)
            if cfg.run.recipe == "auto":  # only the command line chooses and applies one
                cfg = replace_fields(cfg, recipe="none")
            elif cfg.run.recipe != "none" and not recipe_applied and \
                    (missing := known[cfg.run.recipe].missing_from(cfg)):
                warnings.warn(f"run.recipe is {cfg.run.recipe!r}, but none of its values is in "
                              f"this config ({', '.join(missing)}): setting the name does not "
                              f"apply a recipe; apply it with agents.recipes.recipes()"
                              f"[{cfg.run.recipe!r}].apply(cfg) (or agents.cli.parse_config), "
                              f"or set recipe='none'", UserWarning, stacklevel=2)
        return _run(cfg, run_dir, record, ckpt, held)


def _run(cfg: TrainConfig, run_dir: Path | None, resumed: RunRecord | None, ckpt: dict | None,
         held: contextlib.ExitStack) -> dict[str, float]:
    device = check_device(resolve(cfg))
    seeds = seed_everything(cfg.run.seed, buffer_device=device)
    cfg, agent, eval_env = build(cfg, device)
    held.callback(eval_env.close)
    check_memory(cfg, agent, device)
    buffer = make_replay(cfg.replay, cfg.model, num_envs=cfg.env.num_envs,
                         obs_dim=agent.obs_dim, action_dim=agent.action_dim, device=device,
                         generator=seeds.buffer, state_example=agent.initial_state(1))
    agent.noise_gen = torch.Generator(device=device).manual_seed(cfg.run.seed + 1)
    envs_vec = gym.vector.SyncVectorEnv(
        [lambda: make_env(cfg.env) for _ in range(cfg.env.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    held.callback(envs_vec.close)
    n = cfg.noise
    noise = make_noise(n.kind, cfg.env.num_envs, agent.action_dim, n.sigma, seeds.noise,
                       theta=n.ou_theta, dt=n.ou_dt)
    if run_dir is None:
        run_dir = new_run_dir(cfg)
        held.enter_context(RunLock(run_dir))
    if ckpt is not None:
        wandb_id = ckpt.get("wandb_run_id")
    else:
        wandb_id = resumed.wandb_run_id if resumed is not None else None
    if wandb_id is None and cfg.run.wandb != "disabled":
        wandb_id = uuid.uuid4().hex[:12]
    record = _record(dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, run_dir=str(run_dir))), agent, device, wandb_id)
    if ckpt is not None:  # refuse a misfit before the run directory is touched
        check_agent_state(agent, ckpt["agent"])
    if resumed is not None:  # events after the checkpoint are logged again
        if ckpt is not None and ckpt["step"] > 0 and not RunPaths(run_dir).metrics.exists():
            warnings.warn(f"{RunPaths(run_dir).metrics} is missing: the rows logged up to "
                          f"step {ckpt['step']} are lost; the run goes on logging from there",
                          UserWarning, stacklevel=2)
        truncate_metrics(run_dir, 0 if ckpt is None else ckpt["step"])
    record.write(run_dir)
    r = cfg.run
    logger = RunLogger(run_dir, record.to_json(), r.wandb, project=r.wandb_project,
                       group=r.wandb_group or f"{cfg.env.id}/{cfg.model.backbone}",
                       name=run_dir.name, tags=(cfg.env.id, cfg.model.backbone, f"seed{r.seed}"),
                       resume_id=wandb_id, elapsed=0.0 if ckpt is None else ckpt["wall_time"])
    held.callback(logger.close)
    trainer = Trainer(agent, envs=envs_vec, eval_env=eval_env, buffer=buffer, noise=noise,
                      cfg=cfg.loop, batch_size=cfg.replay.batch_size, logger=logger,
                      rng=seeds.noise, device=device, env_seed=seeds.env_seed,
                      eval_seed=seeds.eval_env_seed, run_dir=run_dir,
                      checkpoint_meta={"config": record.to_json(), "wandb_run_id": wandb_id},
                      eval_policy=agent.policy(cfg.loop.eval_policy))
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
        # loaded: its copies (the replay's filled steps, on the CPU) would otherwise stay for
        # the run's whole life, one more replay than a fresh run holds (main holds it too)
        ckpt.clear()
        print(f"resuming {run_dir} at step {trainer.step} of {cfg.loop.total_steps}",
              file=sys.stderr)
    elif resumed is not None:
        print(f"resuming {run_dir}: it stopped before its first checkpoint; starting it again "
              f"from step 0 of {cfg.loop.total_steps}", file=sys.stderr)
    result = trainer.run()  # writes checkpoint.pt (start, periodic, final, on SIGINT / SIGTERM)
    print(f"run dir: {run_dir}  final eval return: {result['eval_return_mean']:.1f} "
          f"+- {result['eval_return_std']:.1f}", flush=True)  # the result, on stdout
    return result


def load_agent(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[DDPG, RunRecord]:
    """The trained agent of a run directory (its ``checkpoint.pt``, or, where that cannot be
    read, the one kept before it, with a warning, as ``--resume`` takes it) and its record.
    Warns when the checkpoint is not the run's final one (a run stopped, or still going).

    Raises:
        ValueError: ``device`` is not cpu, cuda or cuda:N, or a CUDA device this machine
            does not have.
        rlkit.rundir.RunDirError: no valid ``config.json``.
        rlkit.checkpoint.CheckpointError: the checkpoint is missing, unsafe or corrupt, of
            another run (``config.json`` was edited or the checkpoint replaced: the first
            field that differs is named), or its weights do not fit the agent.
    """
    parse_device(device, "device")
    record = RunRecord.read(run_dir)
    agent = DDPG.from_record(record)
    path = RunPaths(Path(run_dir)).checkpoint
    try:
        ckpt = load_checkpoint(path, map_location=device)
    except CheckpointError as newest:  # as --resume: the one kept before it, if it reads
        prev = previous_path(path)
        if path.is_dir() or not prev.is_file():
            raise
        try:
            ckpt = load_checkpoint(prev, map_location=device)
        except CheckpointError as older:
            raise CheckpointError(f"{newest}; and {older}") from older
        warnings.warn(f"{newest}; the policy is that of {prev.name} (step {ckpt['step']}), "
                      f"the checkpoint kept before it", UserWarning, stacklevel=2)
        path = prev
    check_checkpoint_record(record, ckpt, str(path))
    try:
        agent.load_checkpoint_state(ckpt["agent"])
    except (RuntimeError, KeyError, ValueError) as e:  # weights of another shape or family
        raise CheckpointError(f"{path}: its weights do not fit the agent that config.json "
                              f"builds: {first_line(e)}") from e
    if ckpt.get("kind") != "final" or ckpt["step"] < record.loop.total_steps:
        warnings.warn(f"{run_dir}: the run's checkpoint is at step {ckpt['step']} of "
                      f"--total-steps {record.loop.total_steps}, not its final one (the run "
                      "stopped, or is still going): the policy is the one of that step",
                      UserWarning, stacklevel=2)
    return agent.to(device).eval(), record


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              line: str | None = None) -> str:
    kind = "warning" if category is UserWarning else category.__name__
    terminal = getattr(sys.stderr, "isatty", lambda: False)()
    text = str(message) if terminal else COLOUR.sub("", str(message))
    return f"{kind}: {text}\n"


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside the block a warning shows as ``warning: <message>`` (the category's name for
    other than :class:`UserWarning`), without the source line that raised it: how the
    command line and a grid's runs show them."""
    shown = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        yield
    finally:
        warnings.formatwarning = shown


class Resumed(NamedTuple):
    """A grid's run to continue: its ``--resume`` config and the fields that may change on
    resume that the command line gave (they apply even at their default value)."""

    cfg: TrainConfig
    given: tuple[str, ...]


def run_in(cfg: TrainConfig | Resumed, run_dir: str) -> dict[str, float]:
    """One run of a grid: :func:`main` in ``run_dir``, without a progress bar. A
    :class:`Resumed` run continues the run in ``run_dir`` (wherever the grid is now, however
    its path is written, and on Ray the worker's copy of it), not the one its ``--resume``
    named when the grid was read."""
    if isinstance(cfg, Resumed):
        cfg, given = replace_fields(cfg.cfg, resume=run_dir), cfg.given
    else:
        cfg, given = replace_fields(cfg, run_dir=run_dir), ()
    with one_line_warnings():
        return main(replace_fields(cfg, progress=False), given, recipe_applied=True)


__all__ = ["RESUME_MAY_CHANGE", "RESUME_MAY_DIFFER", "TrainConfig", "build", "check_fits",
           "check_new_run",
           "Resumed", "check_buffer_holds_a_window", "check_memory", "load_agent", "main",
           "make_env", "one_line_warnings", "resolve", "resume_config", "run_in"]
