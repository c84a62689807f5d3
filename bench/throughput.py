"""Throughput of the MLP-DDPG training loop against Stable-Baselines3 and a bare update loop.

    python bench/throughput.py                         # Pendulum-v1 and HalfCheetah-v5
    python bench/throughput.py --envs Pendulum-v1 --steps 3000 --threads 1
    python bench/throughput.py --threads 1 --precision fp32 bf16   # also bf16 autocast
    python bench/throughput.py --threads 1 --precision fp32 bf16 --rounds 3   # medians
    python bench/throughput.py --sequence              # agent updates/s: fp32, bf16, compiled
    python bench/throughput.py --sequence --modes fp32 --windows 64 256  # fp32 at L = 64, 256

All three use the same networks (two hidden layers of 256: the encoder layer and one head layer;
the action enters the critic after its first layer, as in the DDPG paper), batch 256 and one
gradient update per env step. Timing starts after the warm-up (random actions, no updates).

- ours: ``train.py``'s loop (vector env of 1, OU noise, replay on the device, metrics logging).
- sb3: ``stable_baselines3.DDPG`` with ``net_arch=[256, 256]`` (needs ``pip install .[bench]``).
- bare: the same update written plainly on random tensors: no env, no replay, no logging.
- bare (same algebra): the bare update written as the agent's is (both losses at the same
  parameters, the actor's Q from the critic's first-layer product, one backward pass): the
  ceiling for our update, which does two fewer 256x256 matmuls than the plain one.

``--sequence`` prints a second table instead: updates/s of the agent's ``update`` alone on fixed
random batches, for the MLP agent (batch 256 transitions, width 256) and each sequence
backbone's agent (batch 32 windows of 64 steps, d_model 128, head 256, previous actions as
inputs), in fp32, bf16 autocast and fp32 with ``--compile`` (compile time excluded, shown
apart), with the ratios bf16 / fp32 and compile / fp32 and each agent's fp32 / the GRU's fp32
where fp32 ran (and gru for the last); one table per window length of ``--windows``.
``agent_table`` and ``format_agent_table`` are reused by ``bench/gpu_check.py``.

``--envs``, ``--warmup``, ``--steps``, ``--rounds``, ``--precision`` and ``--skip-sb3`` set the
loop table, ``--backbones``, ``--modes``, ``--updates`` and ``--windows`` the agent table (each
is refused with the other table); ``--threads`` and ``--device`` set both.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from argchecks import (  # bench/argchecks.py (same folder)
    fill_defaults,
    require_device,
    require_distinct,
    require_positive,
)
from torch import nn

import envs  # noqa: F401  (registers the rlkit/ task ids, for --envs)
from agents import train
from agents.ddpg import DDPG, DDPGConfig
from rlkit.backbones import BACKBONE_NAMES, BackboneConfig
from rlkit.buffers import SequenceBatch
from rlkit.config import replace_fields
from rlkit.precision import PrecisionConfig
from rlkit.runlog import read_metrics


def machine() -> str:
    """The CPU model, torch's CPU kernel level and torch version: the ratios differ by machine
    (bf16 autocast is faster than fp32 only where the CPU has fast bf16 matmuls)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.backends.cpu.get_cpu_capability()})")


def bench_ours(env_id: str, warmup: int, steps: int, device: str,
               precision: str = "fp32") -> tuple[float, float]:
    """Env steps/s and updates/s of our loop, over the steps after the warm-up."""
    if warmup % 500 or steps % 500:
        raise ValueError(f"warmup and steps must be multiples of 500, got {warmup}, {steps}")
    with tempfile.TemporaryDirectory(prefix="rlkit-tp-") as tmp:  # the run is removed after
        out = Path(tmp) / "run"
        cfg = replace_fields(train.TrainConfig(), env=env_id, total_steps=warmup + steps,
                             learning_starts=warmup, eval_every=0, eval_episodes=1,
                             log_every=500, progress=False, device=device, run_dir=str(out),
                             precision=precision)
        with contextlib.redirect_stdout(io.StringIO()):  # its "run dir: ..." line
            train.main(cfg)
        # rows every 500 steps; those after the warm-up cover the timed steps, equal intervals
        rows = [r for r in read_metrics(out) if "updates_per_s" in r and r["step"] > warmup]
    sps = len(rows) / sum(1 / r["sps"] for r in rows)  # harmonic mean: total steps / time
    ups = len(rows) / sum(1 / r["updates_per_s"] for r in rows)
    return sps, ups


def bench_sb3(env_id: str, warmup: int, steps: int, device: str) -> tuple[float, float]:
    """Env steps/s and updates/s of SB3's DDPG, timed from the end of its warm-up."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DDPG
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import OrnsteinUhlenbeckActionNoise

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == warmup:
                self.t0 = time.perf_counter()
            return True

    env = gym.make(env_id)
    n = env.action_space.shape[0]
    noise = OrnsteinUhlenbeckActionNoise(np.zeros(n), 0.2 * np.ones(n))
    model = DDPG("MlpPolicy", env, learning_rate=1e-3, buffer_size=1_000_000,
                 learning_starts=warmup, batch_size=256, tau=0.005, gamma=0.99, train_freq=1,
                 gradient_steps=1, action_noise=noise, policy_kwargs={"net_arch": [256, 256]},
                 device=device, seed=0, verbose=0)
    clock = Clock()
    model.learn(warmup + steps, callback=clock)
    dt = time.perf_counter() - clock.t0
    return steps / dt, steps / dt


class BareActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, 256), nn.ReLU(), nn.Linear(256, 256),
                                 nn.ReLU(), nn.Linear(256, act_dim), nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class BareCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(obs_dim, 256), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(256 + act_dim, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.enc(obs), act], -1)).squeeze(-1)


def bench_bare(obs_dim: int, act_dim: int, steps: int, device: str,
               precision: str = "fp32", same_algebra: bool = False) -> float:
    """Updates/s of a plain DDPG update on random tensors (the ceiling); with ``"bf16"`` the
    forward passes run under bf16 autocast.

    The plain update steps the critic, then evaluates the actor loss through the stepped critic
    in full. ``same_algebra`` writes the update the way the agent does it: both losses at the
    same parameters, the actor's Q from the critic's first-layer product
    (``pre + W_a (mu - a)``), one backward pass (two fewer 256x256 matmuls per update).
    """
    dev = torch.device(device)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    actor, critic = BareActor(obs_dim, act_dim).to(dev), BareCritic(obs_dim, act_dim).to(dev)
    actor_t, critic_t = copy.deepcopy(actor), copy.deepcopy(critic)
    a_opt = torch.optim.Adam(actor.parameters(), lr=1e-3)
    c_opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    B = 256
    data = [torch.randn(B, obs_dim, device=dev), torch.rand(B, act_dim, device=dev) * 2 - 1,
            torch.randn(B, device=dev), torch.randn(B, obs_dim, device=dev),
            torch.zeros(B, device=dev)]

    def update() -> None:
        obs, act, rew, nxt, term = data
        with torch.no_grad(), amp:
            y = rew + 0.99 * (1 - term) * critic_t(nxt, actor_t(nxt)).float()
        with amp:
            q = critic(obs, act).float()
        c_loss = ((q - y) ** 2).mean()
        c_opt.zero_grad()
        c_loss.backward()
        c_opt.step()
        for p in critic.parameters():
            p.requires_grad_(False)
        with amp:
            a_loss = -critic(obs, actor(obs)).float().mean()
        a_opt.zero_grad()
        a_loss.backward()
        a_opt.step()
        for p in critic.parameters():
            p.requires_grad_(True)
        with torch.no_grad():
            for t, o in ((actor_t, actor), (critic_t, critic)):
                for pt, po in zip(t.parameters(), o.parameters()):
                    pt.lerp_(po, 0.005)

    def update_same_algebra() -> None:
        obs, act, rew, nxt, term = data
        with torch.no_grad(), amp:
            y = rew + 0.99 * (1 - term) * critic_t(nxt, actor_t(nxt)).float()
        first, last = critic.head[0], critic.head[2]
        with amp:
            pre = first(torch.cat([critic.enc(obs), act], -1))
            q = last(torch.relu(pre)).squeeze(-1).float()
            pre_pi = pre.detach() + F.linear(actor(obs) - act, first.weight[:, 256:].detach())
            q_pi = F.linear(torch.relu(pre_pi), last.weight.detach(), last.bias.detach())
        c_loss = ((q - y) ** 2).mean()
        a_loss = -q_pi.float().mean()
        c_opt.zero_grad()
        a_opt.zero_grad()
        (c_loss + a_loss).backward()
        c_opt.step()
        a_opt.step()
        with torch.no_grad():
            for t, o in ((actor_t, actor), (critic_t, critic)):
                for pt, po in zip(t.parameters(), o.parameters()):
                    pt.lerp_(po, 0.005)

    if same_algebra:
        update = update_same_algebra
    for _ in range(50):
        update()
    _sync(torch.device(device))  # the warm-up's queued kernels stay out of the timing
    t0 = time.perf_counter()
    for _ in range(steps):
        update()
    _sync(torch.device(device))  # and the last updates' kernels in it
    return steps / (time.perf_counter() - t0)


AGENT_MODES: tuple[str, ...] = ("fp32", "bf16", "compile")
"""Columns of the agent table: fp32, bf16 autocast, fp32 with ``compile=True``."""
OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah's sizes


@dataclass(frozen=True)
class AgentBenchConfig:
    """Sizes of the agent table."""

    mlp_batch: int = 256
    """Transitions per MLP update."""
    mlp_width: int = 256
    """MLP encoder width (classic DDPG: 256, then a 256 head layer)."""
    batch: int = 32
    """Windows per sequence update."""
    window: int = 64
    """Window length L."""
    d_model: int = 128
    """Sequence backbone width."""
    head: int = 256
    """Hidden width of the actor and critic heads."""
    n_layers: int = 1
    """Backbone layers (sequence agents)."""
    warmup: int = 3
    """Untimed updates first (the compiled update compiles in the first)."""
    updates: int = 10
    """Timed updates per cell."""


def make_bench_agent(backbone: str, cfg: AgentBenchConfig, device: torch.device,
                     precision: str = "fp32", compile: bool = False,
                     grad_checkpoint: bool = False) -> DDPG:
    """The agent of one table row (MLP on transitions, others on windows with prev actions)."""
    torch.manual_seed(0)
    sequence = backbone != "mlp"
    width = cfg.d_model if sequence else cfg.mlp_width
    agent_cfg = DDPGConfig(head_hidden=(cfg.head,), actor_prev_action=sequence,
                           critic_prev_action=sequence)
    layers = cfg.n_layers if sequence else 1
    return DDPG(OBS_DIM, -torch.ones(ACT_DIM), torch.ones(ACT_DIM), backbone,
                BackboneConfig(width, layers, grad_checkpoint), agent_cfg,
                PrecisionConfig(precision), compile).to(device)


def bench_batch(backbone: str, cfg: AgentBenchConfig, device: torch.device,
                window: int | None = None) -> SequenceBatch:
    """A fixed random batch: ``mlp_batch`` transitions, or ``batch`` windows of ``window``."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device)

    if backbone == "mlp":
        n = cfg.mlp_batch
        zeros = torch.zeros(n, device=device)
        return SequenceBatch.from_transitions(rand(n, OBS_DIM), rand(n, ACT_DIM).tanh(), rand(n),
                                              rand(n, OBS_DIM), zeros, zeros)
    n, L = cfg.batch, window or cfg.window
    ones, zeros = torch.ones(n, L, device=device), torch.zeros(n, L, device=device)
    return SequenceBatch(obs=rand(n, L + 1, OBS_DIM), action=rand(n, L, ACT_DIM).tanh(),
                         reward=rand(n, L), terminated=zeros, truncated=zeros,
                         prev_action=rand(n, L + 1, ACT_DIM).tanh(), prev_reward=rand(n, L + 1),
                         mask=ones)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AgentTiming(NamedTuple):
    """One agent in one mode: what :func:`bench_agent_update` measured."""

    updates_per_s: float
    warmup_s: float
    """The untimed updates first (compiling included for ``"compile"``)."""
    fell_back: bool
    """``"compile"``: a loss that failed to compile ran eagerly (always False otherwise)."""


def bench_agent_update(backbone: str, mode: str, cfg: AgentBenchConfig,
                       device: torch.device) -> AgentTiming:
    """Updates/s of one agent in one mode of :data:`AGENT_MODES`, the warm-up seconds, and
    whether a compiled loss fell back to eager (read from the agent, not from a warning, which
    is shown once a process)."""
    if mode == "compile":  # compiled code an earlier agent left would be reused (its warm-up
        torch.compiler.reset()  # not counted) or fill dynamo's recompile limit (run eagerly)
    agent = make_bench_agent(backbone, cfg, device, "bf16" if mode == "bf16" else "fp32",
                             compile=mode == "compile")
    batch = bench_batch(backbone, cfg, device)
    t0 = time.perf_counter()
    for _ in range(cfg.warmup):
        agent.update(batch)
    _sync(device)
    t1 = time.perf_counter()
    for _ in range(cfg.updates):
        agent.update(batch)
    _sync(device)
    ups = cfg.updates / (time.perf_counter() - t1)
    return AgentTiming(ups, t1 - t0, agent.compile_fallbacks > 0)


def agent_table(device: torch.device, cfg: AgentBenchConfig,
                backbones: Sequence[str] = BACKBONE_NAMES,
                modes: Sequence[str] = AGENT_MODES) -> list[dict[str, float | str]]:
    """One row per backbone: updates/s per mode and the compile warm-up time.

    A row whose compiled losses fell back to eager says ``eager`` for compile.
    """
    rows: list[dict[str, float | str]] = []
    for name in backbones:
        row: dict[str, float | str] = {"backbone": name}
        for mode in modes:
            timing = bench_agent_update(name, mode, cfg, device)
            row[mode] = timing.updates_per_s
            if mode == "compile":
                row["compile_s"] = timing.warmup_s
                row["compiled"] = "eager" if timing.fell_back else "yes"
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"{m} {row[m]:.1f}/s" for m in modes), file=sys.stderr)
    return rows


def format_agent_table(rows: list[dict[str, float | str]], cfg: AgentBenchConfig,
                       device: torch.device, threads: int) -> str:
    """The agent table as Markdown: one column per mode found in the rows, then the ratios that
    the modes run allow (``bf16 / fp32`` and ``compile / fp32`` where fp32 ran too, the
    compile warm-up where compile ran, ``fp32 / gru fp32`` where fp32 ran and gru is a row).

    A compiled row that fell back to eager says so on its ``compile / fp32`` cell, or on its
    ``compile upd/s`` cell where fp32 did not run. The header gives the MLP's sizes only when
    mlp is a row, the sequence sizes only when a sequence backbone is.
    """
    modes = [m for m in AGENT_MODES if rows and m in rows[0]]
    names = [str(r["backbone"]) for r in rows]
    sizes = []
    if "mlp" in names:
        sizes.append(f"MLP: batch {cfg.mlp_batch}, width {cfg.mlp_width}")
    if any(name != "mlp" for name in names):
        sizes.append(f"sequence: batch {cfg.batch} x window {cfg.window}, d_model {cfg.d_model}, "
                     f"head {cfg.head}")
    gru = next((r for r in rows if r["backbone"] == "gru"), None)
    ratios = [(f"{m} / fp32", m) for m in ("bf16", "compile") if m in modes and "fp32" in modes]
    heads = [f"{m} upd/s" for m in modes] + [head for head, _ in ratios]
    heads += ["compile warm-up s"] if "compile" in modes else []
    heads += ["fp32 / gru fp32"] if gru is not None and "fp32" in modes else []
    lines = ["; ".join([f"Agent updates/s, device {device}, {threads} torch thread(s), "
                        f"{cfg.updates} timed updates after {cfg.warmup} warm-up", *sizes]),
             "| agent | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for r in rows:
        cells = {f"{m} upd/s": f"{r[m]:.1f}" for m in modes}
        cells |= {head: f"{r[m] / r['fp32']:.2f}x" for head, m in ratios}
        if "compile" in modes:
            cells["compile warm-up s"] = f"{r['compile_s']:.0f}"
            if r["compiled"] != "yes":
                noted = "compile / fp32" if "compile / fp32" in cells else "compile upd/s"
                cells[noted] += " (eager fallback)"
        if "fp32 / gru fp32" in heads:
            cells["fp32 / gru fp32"] = f"{r['fp32'] / gru['fp32']:.2f}x"
        lines.append(f"| {r['backbone']} | " + " | ".join(cells[head] for head in heads) + " |")
    return "\n".join(lines)


def format_loop_table(rows: list[tuple]) -> str:
    """The MLP-DDPG loop table: a row ``(env, precision, ours env steps/s, ours updates/s, SB3
    updates/s or None when SB3 was skipped, bare updates/s, bare (same algebra) updates/s)``."""
    lines = ["| env | precision | ours env steps/s | ours updates/s | SB3 updates/s | bare "
             "updates/s | bare (same algebra) updates/s | ours / SB3 | ours / bare | ours / bare "
             "(same algebra) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for env_id, precision, sps, ups, sb3, bare, same in rows:
        sb3_cells = ("-", "-") if sb3 is None else (f"{sb3:.0f}", f"{ups / sb3:.2f}x")
        lines.append(f"| {env_id} | {precision} | {sps:.0f} | {ups:.0f} | {sb3_cells[0]} | "
                     f"{bare:.0f} | {same:.0f} | {sb3_cells[1]} | {ups / bare:.0%} | "
                     f"{ups / same:.0%} |")
    return "\n".join(lines)


LOOP_DEFAULTS: dict[str, object] = {
    "envs": ["Pendulum-v1", "HalfCheetah-v5"], "warmup": 1000, "steps": 3000, "rounds": 1,
    "precision": ["fp32"], "skip_sb3": False}
"""Flags of the loop table (without ``--sequence``) and their defaults."""
SEQUENCE_DEFAULTS: dict[str, object] = {
    "backbones": list(BACKBONE_NAMES), "modes": list(AGENT_MODES),
    "updates": AgentBenchConfig.updates, "windows": [AgentBenchConfig.window]}
"""Flags of the agent table (``--sequence``) and their defaults."""


def _flag(name: str) -> str:
    """The option string of the argparse destination ``name`` (``skip_sb3`` -> ``--skip-sb3``)."""
    return "--" + name.replace("_", "-")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options, each bad value refused with a parser error (exit 2).

    The flags of one table are refused with the other (:data:`LOOP_DEFAULTS`,
    :data:`SEQUENCE_DEFAULTS`): they default to ``None`` so that a given one is told from one
    left out, and get their defaults after that check.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+",
                   help=f"loop table: Gymnasium env ids (default: "
                   f"{' '.join(LOOP_DEFAULTS['envs'])})")
    p.add_argument("--warmup", type=int,
                   help=f"loop table: env steps before the timed ones, a positive multiple of "
                   f"500 (default: {LOOP_DEFAULTS['warmup']})")
    p.add_argument("--steps", type=int,
                   help=f"loop table: timed env steps, a positive multiple of 500 (default: "
                   f"{LOOP_DEFAULTS['steps']})")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="both tables: torch threads, a positive integer (default: torch's, "
                   "%(default)s here)")
    p.add_argument("--device", default="cpu",
                   help="both tables: cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--skip-sb3", action="store_true", default=None,
                   help="loop table: leave out SB3 (its columns show -)")
    p.add_argument("--rounds", type=int,
                   help=f"loop table: alternate the loops this many times and report medians "
                   f"(default: {LOOP_DEFAULTS['rounds']})")
    p.add_argument("--precision", nargs="+", choices=("fp32", "bf16"),
                   help=f"loop table: precisions of our loop and of the bare loops it is compared "
                   f"with (default: {' '.join(LOOP_DEFAULTS['precision'])})")
    p.add_argument("--sequence", action="store_true",
                   help="print the agent table (agent updates/s by backbone and mode) instead of "
                   "the loop table")
    p.add_argument("--backbones", nargs="+", choices=BACKBONE_NAMES,
                   help="--sequence: the agents, one row each (default: all)")
    p.add_argument("--modes", nargs="+", choices=AGENT_MODES,
                   help="--sequence: fp32, bf16 autocast, fp32 compiled; one column each "
                   "(default: all three)")
    p.add_argument("--updates", type=int,
                   help=f"--sequence: timed updates per cell, a positive integer (default: "
                   f"{SEQUENCE_DEFAULTS['updates']})")
    p.add_argument("--windows", type=int, nargs="+",
                   help=f"--sequence: window lengths L of the sequence agents, positive integers, "
                   f"one table each (default: {' '.join(map(str, SEQUENCE_DEFAULTS['windows']))})")
    a = p.parse_args(argv)
    other, table = ((LOOP_DEFAULTS, "the loop table, not to --sequence") if a.sequence
                    else (SEQUENCE_DEFAULTS, "--sequence (the agent table), not to the loop table"))
    if given := [_flag(name) for name in other if getattr(a, name) is not None]:
        p.error(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to {table}")
    if a.windows is not None and a.backbones is not None and set(a.backbones) == {"mlp"}:
        p.error("--windows sets the window of the sequence agents, and --backbones mlp has none: "
                "leave --windows out or add a sequence backbone")
    fill_defaults(a, {**LOOP_DEFAULTS, **SEQUENCE_DEFAULTS})
    require_positive(p, a, "--rounds", "--threads", "--updates", "--windows")
    require_distinct(p, a, "--envs", "--precision", "--backbones", "--modes", "--windows")
    for name in ("warmup", "steps"):  # our loop logs a row every 500 steps
        if not a.sequence and (getattr(a, name) <= 0 or getattr(a, name) % 500):
            p.error(f"--{name} must be a positive multiple of 500, got {getattr(a, name)}")
    require_device(p, a.device)
    if not a.sequence:
        import gymnasium as gym

        for env_id in a.envs:
            try:
                env = gym.make(env_id)
            except gym.error.Error as e:
                p.error(f"--envs {env_id}: {e}")
            space = env.action_space
            env.close()
            if not isinstance(space, gym.spaces.Box):
                p.error(f"--envs {env_id} has actions {space}; expected a Box (continuous)")
    if not a.sequence and not a.skip_sb3 and importlib.util.find_spec("stable_baselines3") is None:
        p.error("the SB3 column needs stable-baselines3, which is not installed: pip install -e "
                "'.[bench]', or leave SB3 out with --skip-sb3")
    return a


def main(argv: Sequence[str] | None = None) -> None:
    """Print the loop table, or with ``--sequence`` the agent tables."""
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.sequence:
        device = torch.device(a.device)
        for window in a.windows:
            cfg = AgentBenchConfig(updates=a.updates, window=window)
            rows = agent_table(device, cfg, a.backbones, a.modes)
            print("\n" + format_agent_table(rows, cfg, device, a.threads))
        print(f"machine: {machine()}")
        return
    import gymnasium as gym

    rows = []
    for env_id in a.envs:
        env = gym.make(env_id)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        # Rounds alternate the three loops, so a slow spell of the machine hits all of them;
        # each figure is the median over rounds.
        runs: dict[str, list[float]] = {}
        for _ in range(a.rounds):
            if not a.skip_sb3:
                runs.setdefault("sb3", []).append(bench_sb3(env_id, a.warmup, a.steps,
                                                            a.device)[1])
            for precision in a.precision:
                runs.setdefault(f"bare {precision}", []).append(
                    bench_bare(obs_dim, act_dim, a.steps, a.device, precision))
                runs.setdefault(f"bare same {precision}", []).append(
                    bench_bare(obs_dim, act_dim, a.steps, a.device, precision, True))
                sps, ups = bench_ours(env_id, a.warmup, a.steps, a.device, precision)
                runs.setdefault(f"ours sps {precision}", []).append(sps)
                runs.setdefault(f"ours {precision}", []).append(ups)
        med = {k: statistics.median(v) for k, v in runs.items()}
        for precision in a.precision:
            rows.append((env_id, precision, med[f"ours sps {precision}"], med[f"ours {precision}"],
                         med.get("sb3"), med[f"bare {precision}"],
                         med[f"bare same {precision}"]))
    print(f"\nMLP-DDPG throughput, batch 256, 1 update/env step, {a.steps} timed steps, "
          f"median of {a.rounds} round(s), "
          f"{a.threads} torch thread(s), device {a.device}; SB3 in fp32 (it has no autocast), "
          f"the bare loops in the row's precision; bare: the plain update, bare (same algebra): "
          f"written as the agent's (both losses at the same parameters, the first-layer product "
          f"reused, one backward pass)")
    print(f"machine: {machine()}")
    print(format_loop_table(rows))


if __name__ == "__main__":
    main()
