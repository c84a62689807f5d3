"""The update schedule of the training loop: fractional and multiple updates per env step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.buffers import ReplayBuffer
from rlkit.config import LoopConfig, updates_made
from rlkit.noise import GaussianNoise
from rlkit.runlog import RunLogger
from rlkit.trainer import Trainer


class Counter(gym.Env):
    """Observation = the step count; episodes of 5 steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 0.0, self.t >= 5, False, {}


class CountingAgent:
    """Acts with zeros; records the trainer's env step at every update."""

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.update_steps: list[int] = []

    def initial_state(self, batch_size):
        return ()

    def reset_state(self, state, done):
        return state

    def act(self, obs, state, prev_action=None, prev_reward=None, track_critic=False):
        return torch.zeros(len(obs), 1), state

    def update(self, batch):
        self.update_steps.append(self.trainer.step)
        return {"critic_loss": torch.zeros(())}

    def checkpoint_state(self):
        return {}

    def load_checkpoint_state(self, state):
        pass


def run_loop(tmp_path, updates_per_step: float, num_envs: int, total: int = 40,
             starts: int = 8, initial: int = 0, every: int = 1) -> list[int]:
    agent = CountingAgent()
    envs = gym.vector.SyncVectorEnv([Counter] * num_envs,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    cfg = LoopConfig(total_steps=total, learning_starts=starts,
                     updates_per_step=updates_per_step, initial_updates=initial,
                     update_every=every, eval_every=0, eval_episodes=1,
                     log_every=total, progress=False)
    buffer = ReplayBuffer(100, 1, 1, torch.device("cpu"), torch.Generator().manual_seed(0))
    noise = GaussianNoise(num_envs, 1, 0.1, np.random.default_rng(0))
    logger = RunLogger(tmp_path, {}, "disabled")
    trainer = Trainer(agent, envs=envs, eval_env=Counter(), buffer=buffer, noise=noise, cfg=cfg,
                      batch_size=2, logger=logger, rng=np.random.default_rng(0),
                      device=torch.device("cpu"), env_seed=0, eval_seed=0)
    agent.trainer = trainer
    try:
        trainer.run()
    finally:
        logger.close()
        envs.close()
    return agent.update_steps


@pytest.mark.parametrize("num_envs", [1, 2])
def test_quarter_update_per_step_updates_every_fourth_env_step(tmp_path, num_envs):
    steps = run_loop(tmp_path, 0.25, num_envs, total=40, starts=8)
    # env steps 8 .. 40 owe updates (33 of them with one env, 34 with two): one per 4
    credited = 40 - 8 + num_envs
    assert len(steps) == credited // 4
    assert all(b - a == 4 for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("num_envs", [1, 2])
def test_four_updates_per_step(tmp_path, num_envs):
    steps = run_loop(tmp_path, 4.0, num_envs)
    # every vector step of num_envs env steps owes 4 * num_envs updates
    expected = [s for s in range(8, 41, num_envs) for _ in range(4 * num_envs)]
    assert steps == expected


@pytest.mark.parametrize(("num_envs", "starts"), [(1, 8), (2, 8), (2, 7), (1, 0)])
def test_initial_updates_come_once_when_learning_starts(tmp_path, num_envs, starts):
    """``initial_updates`` are made at the first env step that learns (the one that reaches
    ``learning_starts``; with 0, the first step), then the schedule goes on as before."""
    plain = run_loop(tmp_path / "plain", 1.0, num_envs, starts=starts)
    steps = run_loop(tmp_path / "initial", 1.0, num_envs, starts=starts, initial=6)
    first = plain[0]
    assert first == max(starts, 1) + (-max(starts, 1)) % num_envs  # the first step >= starts
    assert steps == [first] * 6 + plain


def test_initial_updates_must_be_a_count():
    with pytest.raises(ValueError, match=r"--initial-updates must be an integer >= 0, got -1"):
        LoopConfig(initial_updates=-1)


@pytest.mark.parametrize(("num_envs", "ups", "initial"), [(1, 1.0, 0), (2, 1.0, 0), (1, 0.5, 6),
                                                          (2, 2.0, 6)])
def test_update_every_makes_the_same_updates_in_rounds_at_its_multiples(tmp_path, num_envs, ups,
                                                                         initial):
    """With ``update_every`` 5 the updates owed come in rounds, at the first env step at or past
    each multiple of 5: as many in all as after every step (40 is a multiple), none earlier."""
    plain = run_loop(tmp_path / "plain", ups, num_envs, initial=initial)
    steps = run_loop(tmp_path / "rounds", ups, num_envs, initial=initial, every=5)
    assert len(steps) == len(plain) > 0
    rounds = sorted(set(steps))
    assert all(s // 5 > (s - num_envs) // 5 for s in rounds)  # each round reaches a multiple
    for last, s in zip([0, *rounds], rounds):  # each round: the updates owed since the last
        assert steps.count(s) == sum(1 for p in plain if last < p <= s)
    assert rounds[0] == 10


def test_update_every_must_be_a_positive_count():
    with pytest.raises(ValueError, match=r"--update-every must be a positive integer, got 0"):
        LoopConfig(update_every=0)


@pytest.mark.parametrize(("updates_per_step", "num_envs", "starts", "initial", "every", "total"), [
    (0.25, 1, 8, 0, 1, 40), (0.25, 2, 8, 0, 1, 40), (4.0, 2, 8, 0, 1, 40), (1.0, 2, 7, 6, 1, 40),
    (1.0, 1, 0, 6, 1, 40), (1.0, 1, 8, 0, 16, 40), (0.5, 2, 10, 3, 12, 41), (1.0, 1, 8, 0, 50, 40),
    (0.01, 1, 8, 0, 1, 40), (0.01, 1, 8, 1, 1, 40), (1.0, 1, 45, 0, 1, 40), (1.0, 3, 0, 0, 7, 20),
    (0.1, 1, 191, 0, 1, 200),  # ten additions of 0.1 sum to just under 1: no update
])
def test_updates_made_counts_what_the_trainer_makes(tmp_path, updates_per_step, num_envs,
                                                    starts, initial, every, total):
    """``train.py`` warns of a run that makes no update from this count, before it starts."""
    made = run_loop(tmp_path, updates_per_step, num_envs, total=total, starts=starts,
                    initial=initial, every=every)
    loop = LoopConfig(total_steps=total, learning_starts=starts,
                      updates_per_step=updates_per_step, initial_updates=initial,
                      update_every=every)
    assert updates_made(loop, num_envs) == len(made)
    assert min(updates_made(loop, num_envs, stop_at=1), 1) == min(len(made), 1)  # train.py's
