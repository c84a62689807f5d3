"""MemoryCorridor: the cue is seen once, memory is necessary and sufficient for success."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.memory import MemoryCorridorEnv

Policy = Callable[[np.ndarray], float]


def _episode(
    env: gym.Env[np.ndarray, np.ndarray], seed: int, act: Callable[[np.ndarray, int], float]
) -> tuple[list[np.ndarray], float, dict[str, object], int]:
    """Run one episode; ``act(obs, first_obs_cue)`` may read the cue only if it wants memory."""
    obs, _ = env.reset(seed=seed)
    first_cue = int(obs[0])
    observations, total, steps = [obs], 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(
            np.array([act(obs, first_cue)], dtype=np.float32)
        )
        observations.append(obs)
        total += float(reward)
        steps += 1
        assert not truncated
        if terminated:
            return observations, total, info, steps


def _seed_with_cue(env: MemoryCorridorEnv, cue: int) -> int:
    for seed in range(100):
        env.reset(seed=seed)
        if env.cue == cue:
            return seed
    raise AssertionError(f"no seed in range(100) draws cue {cue}")


@pytest.mark.parametrize("length", [1, 5, 20])
def test_optimal_memory_policy_always_succeeds(length: int) -> None:
    env = MemoryCorridorEnv(length=length)
    for seed in range(50):
        observations, total, info, steps = _episode(env, seed, lambda obs, cue: float(cue))
        assert steps == length + 1
        assert len(observations) == length + 2
        assert total == 1.0
        assert info == {"success": True, "is_success": True}


def test_wrong_choice_and_zero_action_fail() -> None:
    env = MemoryCorridorEnv(length=3)
    _, total, info, _ = _episode(env, 0, lambda obs, cue: -float(cue))
    assert total == -1.0 and info["success"] is False and info["is_success"] is False
    _, total, info, _ = _episode(env, 0, lambda obs, cue: 0.0)
    assert total == -1.0 and info["success"] is False


MEMORYLESS: dict[str, Policy] = {
    "always +1": lambda obs: 1.0,
    "always -1": lambda obs: -0.3,
    "copy cue field": lambda obs: float(obs[0]) if obs[0] != 0 else 1.0,
    "progress-based": lambda obs: 1.0 if obs[1] > 0.5 else -1.0,
}


@pytest.mark.parametrize("name", MEMORYLESS)
def test_memoryless_policies_succeed_half_the_time(name: str) -> None:
    policy = MEMORYLESS[name]
    env = MemoryCorridorEnv(length=10)
    successes = [
        _episode(env, seed, lambda obs, cue: policy(obs))[2]["success"] for seed in range(400)
    ]
    assert 0.4 <= np.mean(successes) <= 0.6


def test_cue_is_visible_only_in_the_first_observation() -> None:
    env = MemoryCorridorEnv(length=6)
    runs = {}
    for cue in (1, -1):
        seed = _seed_with_cue(env, cue)
        runs[cue], *_ = _episode(env, seed, lambda obs, c: 0.5)
    assert runs[1][0][0] == 1.0 and runs[-1][0][0] == -1.0
    np.testing.assert_array_equal(np.stack(runs[1][1:]), np.stack(runs[-1][1:]))
    progress = [obs[1] for obs in runs[1]]
    np.testing.assert_allclose(progress, [0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1], rtol=1e-6)
    assert all(obs.dtype == np.float32 for obs in runs[1])
    assert all(env.observation_space.contains(obs) for obs in runs[1] + runs[-1])


def test_info_reports_success_only_on_the_final_step() -> None:
    env = MemoryCorridorEnv(length=4)
    obs, info = env.reset(seed=0)
    assert info == {}
    for _ in range(4):
        _, reward, terminated, _, info = env.step(np.array([1.0], dtype=np.float32))
        assert info == {} and reward == 0.0 and not terminated
    _, _, terminated, _, info = env.step(np.array([1.0], dtype=np.float32))
    assert terminated and isinstance(info["success"], bool)
    assert info["success"] == (env.cue == 1)


def test_cues_are_balanced_and_reproducible() -> None:
    env = MemoryCorridorEnv()
    cues = []
    for seed in range(400):
        env.reset(seed=seed)
        cues.append(env.cue)
    assert 0.4 <= np.mean(np.array(cues) == 1) <= 0.6
    env.reset(seed=123)
    first = env.cue
    for _ in range(5):
        env.reset(seed=123)
        assert env.cue == first


def test_step_needs_an_active_episode() -> None:
    env = MemoryCorridorEnv(length=1)
    with pytest.raises(RuntimeError, match=r"without an active episode; call reset\(\) first"):
        env.step(np.zeros(1, dtype=np.float32))
    env.reset(seed=0)
    env.step(np.zeros(1, dtype=np.float32))
    env.step(np.zeros(1, dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"without an active episode"):
        env.step(np.zeros(1, dtype=np.float32))


def test_action_shape_is_checked() -> None:
    env = MemoryCorridorEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must have shape \(1,\), got shape \(2,\)"):
        env.step(np.zeros(2, dtype=np.float32))


@pytest.mark.parametrize("at_decision", [False, True])
def test_a_non_finite_or_non_numeric_action_is_refused_at_any_step(at_decision: bool) -> None:
    """Before, a NaN decision scored as a wrong answer (reward -1) and a string gave numpy's
    'could not convert string to float'."""
    env = MemoryCorridorEnv(length=2)
    env.reset(seed=0)
    if at_decision:
        for _ in range(2):
            env.step(np.zeros(1, dtype=np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match=r"action must be finite, got array\(\[.*(nan|inf)"):
            env.step(np.array([bad], dtype=np.float32))
    for bad in (np.array(["x"]), np.array([True]), np.array([None]), np.array([-1 + 5j])):
        with pytest.raises(TypeError, match=r"action must be a real number array of shape "
                                            r"\(1,\), got array"):
            env.step(bad)
    _, reward, terminated, _, _ = env.step(np.array([1.0], dtype=np.float32))  # still usable
    assert terminated is at_decision and reward in ((-1.0, 1.0) if at_decision else (0.0,))


@pytest.mark.parametrize(
    ("length", "error", "message"),
    [
        (0, ValueError, r"length must be >= 1, got 0"),
        (-5, ValueError, r"length must be >= 1, got -5"),
        (2.5, TypeError, r"length must be an integer, got 2.5 \(float\)"),
        (True, TypeError, r"length must be an integer, got True \(bool\)"),
    ],
)
def test_bad_length_is_rejected(length: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        MemoryCorridorEnv(length=length)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        gym.make("rlkit/MemoryCorridor-v0", length=length)


def test_render_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"render_mode must be None \(no rendering\), got 'human'"):
        MemoryCorridorEnv(render_mode="human")


def test_gym_make_with_length_runs_length_plus_one_steps() -> None:
    env = gym.make("rlkit/MemoryCorridor-v0", length=100)
    _, total, info, steps = _episode(env, 0, lambda obs, cue: float(cue))
    assert steps == 101 and total == 1.0 and info["success"] is True


def test_check_env_on_the_raw_env() -> None:
    check_env(MemoryCorridorEnv(length=3), skip_render_check=True)
