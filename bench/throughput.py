"""Throughput of the MLP-DDPG training loop against Stable-Baselines3 and a bare update loop.

    python bench/throughput.py                         # Pendulum-v1 and HalfCheetah-v5
    python bench/throughput.py --envs Pendulum-v1 --steps 3000 --threads 1

All three use the same networks (two hidden layers of 256: the encoder layer and one head layer;
the action enters the critic after its first layer, as in the DDPG paper), batch 256 and one
gradient update per env step. Timing starts after the warm-up (random actions, no updates).

- ours: ``train.py``'s loop (vector env of 1, OU noise, replay on the device, metrics logging).
- sb3: ``stable_baselines3.DDPG`` with ``net_arch=[256, 256]`` (needs ``pip install .[bench]``).
- bare: the same update written plainly on random tensors: no env, no replay, no logging.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from rlkit.runlog import read_metrics  # noqa: E402


def bench_ours(env_id: str, warmup: int, steps: int, device: str) -> tuple[float, float]:
    """Env steps/s and updates/s of our loop, over the steps after the warm-up."""
    out = Path(tempfile.mkdtemp(prefix="rlkit-tp-")) / "run"
    cfg = train.TrainConfig(env=env_id, total_steps=warmup + steps, learning_starts=warmup,
                            eval_every=0, eval_episodes=1, log_every=steps, progress=False,
                            device=device, run_dir=str(out))
    train.main(cfg)
    row = [r for r in read_metrics(out) if "updates_per_s" in r][-1]
    return row["sps"], row["updates_per_s"]


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


def bench_bare(obs_dim: int, act_dim: int, steps: int, device: str) -> float:
    """Updates/s of a plain DDPG update on random tensors (the ceiling)."""
    dev = torch.device(device)
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
        with torch.no_grad():
            y = rew + 0.99 * (1 - term) * critic_t(nxt, actor_t(nxt))
        c_loss = ((critic(obs, act) - y) ** 2).mean()
        c_opt.zero_grad()
        c_loss.backward()
        c_opt.step()
        for p in critic.parameters():
            p.requires_grad_(False)
        a_loss = -critic(obs, actor(obs)).mean()
        a_opt.zero_grad()
        a_loss.backward()
        a_opt.step()
        for p in critic.parameters():
            p.requires_grad_(True)
        with torch.no_grad():
            for t, o in ((actor_t, actor), (critic_t, critic)):
                for pt, po in zip(t.parameters(), o.parameters()):
                    pt.lerp_(po, 0.005)

    for _ in range(50):
        update()
    t0 = time.perf_counter()
    for _ in range(steps):
        update()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=["Pendulum-v1", "HalfCheetah-v5"])
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-sb3", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import gymnasium as gym

    rows = []
    for env_id in a.envs:
        env = gym.make(env_id)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        bare = bench_bare(obs_dim, act_dim, a.steps, a.device)
        ours_sps, ours_ups = bench_ours(env_id, a.warmup, a.steps, a.device)
        sb3 = (float("nan"), float("nan")) if a.skip_sb3 else \
            bench_sb3(env_id, a.warmup, a.steps, a.device)
        rows.append((env_id, ours_sps, ours_ups, sb3[1], bare))
    print(f"\nMLP-DDPG throughput, batch 256, 1 update/env step, {a.steps} timed steps, "
          f"{a.threads} torch thread(s), device {a.device}")
    print("| env | ours env steps/s | ours updates/s | SB3 updates/s | bare updates/s "
          "| ours / SB3 | ours / bare |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for env_id, sps, ups, sb3, bare in rows:
        print(f"| {env_id} | {sps:.0f} | {ups:.0f} | {sb3:.0f} | {bare:.0f} | "
              f"{ups / sb3:.2f}x | {ups / bare:.0%} |")


if __name__ == "__main__":
    main()
