"""Pendulum with injected faults, for the reliability tests (also imported by ``train.py`` in
a subprocess through ``--env faulty_envs:rlkit-test/...``, with ``tests/`` on the path).

Each fault fires once, at the wrapper's ``at``-th step since it was built (episodes included),
and, with ``parity`` set, only in an env whose first seeded reset had a seed of that parity
(sub-env ``i`` of a vector env is reset with ``env_seed + i``, so this picks one sub-env).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import gymnasium as gym
import numpy as np

KILL_AT_ENV = "RLKIT_TEST_KILL_AT"
"""``kill`` fault: SIGKILL this process at that many training steps of the process (counted
over every env instance), when the variable is set."""

SLOW_STEP_S = 0.02
"""``slow`` fault: seconds each step of an armed env sleeps."""

_process_steps = 0


class FaultyPendulum(gym.Wrapper):
    """Pendulum-v1 that emits one fault.

    Args:
        env: the wrapped env.
        fault: ``nan_obs``, ``nan_reward``, ``huge_reward`` (1e30: finite, but its squared TD
            error overflows float32), ``kill`` (see :data:`KILL_AT_ENV`), ``raise`` (the env's
            own code raises ``RuntimeError("simulator diverged")``), ``slow`` (every step
            sleeps :data:`SLOW_STEP_S`), ``nan_reset`` (``nan_obs``, and every reset after it
            returns a non-finite observation), ``nan_rewards`` (every reward from ``at`` on is
            NaN) or ``opaque`` (no fault; holds state in an object
            a checkpoint cannot capture).
        at: the wrapper's step at which the fault fires.
        parity: fire only in the env whose first seeded reset had a seed of this parity.
    """

    def __init__(self, env: gym.Env, fault: str, at: int = 0, parity: int | None = None):
        super().__init__(env)
        self.fault, self.at, self.parity = fault, at, parity
        self.t = 0
        self.armed = parity is None
        self.first_seed: int | None = None
        if fault == "opaque":
            self.handle = _Opaque()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None and self.first_seed is None:
            self.first_seed = seed
            self.armed = self.parity is None or seed % 2 == self.parity
        obs, info = super().reset(seed=seed, options=options)
        if self.armed and self.fault == "nan_reset" and self.t >= self.at:
            obs = np.full_like(obs, np.nan)
        return obs, info

    def step(self, action):
        global _process_steps
        obs, reward, term, trunc, info = super().step(action)
        self.t += 1
        _process_steps += 1
        if self.fault == "kill" and os.environ.get(KILL_AT_ENV) and \
                _process_steps >= int(os.environ[KILL_AT_ENV]):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.armed and self.fault == "slow":
            time.sleep(SLOW_STEP_S)
        if self.armed and self.fault == "nan_rewards" and self.t >= self.at:
            reward = float("nan")
        if self.armed and self.t == self.at:
            if self.fault == "raise":
                _integrate(obs)
            if self.fault in ("nan_obs", "nan_reset"):
                obs = np.full_like(obs, np.nan)
            elif self.fault == "nan_reward":
                reward = float("nan")
            elif self.fault == "huge_reward":
                reward = 1e30
        return obs, reward, term, trunc, info


def _integrate(obs: np.ndarray) -> None:
    """Stands for a simulator's own code failing deep inside a step."""
    raise RuntimeError(f"simulator diverged at state {obs.round(3).tolist()}")


class _Opaque:
    """Stands for a simulator handle: state no snapshot can hold."""


def make(fault: str, at: int = 0, parity: int | None = None) -> gym.Env:
    return FaultyPendulum(gym.make("Pendulum-v1"), fault, at, parity)


class ImageEnv(gym.Env):
    """Flattened image observations (64 x 64 x 3 = 12,288 floats) and one action; for memory
    estimates only."""

    observation_space = gym.spaces.Box(0.0, 1.0, (64 * 64 * 3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return np.zeros(64 * 64 * 3, np.float32), {}

    def step(self, action):
        return np.zeros(64 * 64 * 3, np.float32), 0.0, False, False, {}


class MatrixEnv(gym.Env):
    """Observations or actions that are not vectors (``obs_shape``, ``action_shape``)."""

    def __init__(self, obs_shape: tuple[int, ...] = (3,), action_shape: tuple[int, ...] = (1,)
                 ) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, obs_shape, np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, action_shape, np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {}


class BrokenInit(gym.Env):
    """An env whose constructor fails."""

    def __init__(self) -> None:
        raise KeyError("missing asset 'pendulum.xml'")


class NoRenderer(gym.Env):
    """An env whose constructor fails where PyOpenGL does when the renderer that ``MUJOCO_GL``
    names has no library (as importing MuJoCo with ``MUJOCO_GL=osmesa`` and no OSMesa)."""

    def __init__(self) -> None:
        exec(compile("raise AttributeError(\"'NoneType' object has no attribute 'glGetError'\")",
                     os.path.join("site-packages", "OpenGL", "raw", "GL", "_errors.py"), "exec"))


IDS = {
    "rlkit-test/Kill-v0": {"fault": "kill"},
    "rlkit-test/Opaque-v0": {"fault": "opaque"},
    "rlkit-test/NaNObs-v0": {"fault": "nan_obs", "at": 250},
    "rlkit-test/NaNObsOdd-v0": {"fault": "nan_obs", "at": 250, "parity": 1},
    "rlkit-test/NaNObsEven-v0": {"fault": "nan_obs", "at": 250, "parity": 0},
    "rlkit-test/NaNRewardOdd-v0": {"fault": "nan_reward", "at": 250, "parity": 1},
    "rlkit-test/NaNRewardEven-v0": {"fault": "nan_reward", "at": 250, "parity": 0},
    "rlkit-test/NaNResetOdd-v0": {"fault": "nan_reset", "at": 250, "parity": 1},
    "rlkit-test/NaNResetEven-v0": {"fault": "nan_reset", "at": 250, "parity": 0},
    "rlkit-test/NaNFirstResetOdd-v0": {"fault": "nan_reset", "at": 0, "parity": 1},
    "rlkit-test/NaNFirstResetEven-v0": {"fault": "nan_reset", "at": 0, "parity": 0},
    "rlkit-test/HugeReward-v0": {"fault": "huge_reward", "at": 150},
    "rlkit-test/NaNRewards-v0": {"fault": "nan_rewards"},
    "rlkit-test/Raise-v0": {"fault": "raise", "at": 30},
    "rlkit-test/RaiseOdd-v0": {"fault": "raise", "at": 30, "parity": 1},
    "rlkit-test/RaiseEven-v0": {"fault": "raise", "at": 30, "parity": 0},
    "rlkit-test/Slow-v0": {"fault": "slow"},
    "rlkit-test/SlowOdd-v0": {"fault": "slow", "parity": 1},
    "rlkit-test/SlowEven-v0": {"fault": "slow", "parity": 0},
}
for _id, _kwargs in IDS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point="faulty_envs:make", kwargs=_kwargs)
for _id, _kwargs in {"rlkit-test/NaNObs50Odd-v0": {"fault": "nan_obs", "at": 250, "parity": 1},
                     "rlkit-test/NaNObs50Even-v0": {"fault": "nan_obs", "at": 250, "parity": 0}
                     }.items():  # 50-step episodes: the fault comes on the last step of one
    if _id not in gym.registry:
        gym.register(_id, entry_point="faulty_envs:make", kwargs=_kwargs, max_episode_steps=50)
for _id, _entry in {"rlkit-test/Image-v0": "faulty_envs:ImageEnv",
                    "rlkit-test/BrokenInit-v0": "faulty_envs:BrokenInit",
                    "rlkit-test/NoRenderer-v0": "faulty_envs:NoRenderer"}.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry, max_episode_steps=200)
for _id, _kwargs in {"rlkit-test/MatrixObs-v0": {"obs_shape": (2, 3)},
                     "rlkit-test/MatrixAction-v0": {"action_shape": (2, 2)}}.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point="faulty_envs:MatrixEnv", kwargs=_kwargs,
                     max_episode_steps=200)
