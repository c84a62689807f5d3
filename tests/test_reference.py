"""The full-state Pendulum optimum used as a reference for evaluation returns."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the rlkit/ ids)
from envs.reference import PendulumOptimum, optimum_returns, optimum_rewards
from rlkit.seeding import eval_env_seed, seed_everything

COARSE = {"n_theta": 128, "n_omega": 129, "n_actions": 21}


@pytest.fixture(scope="module")
def solver() -> PendulumOptimum:
    return PendulumOptimum(200, **COARSE)


def _rollout(solver: PendulumOptimum, start: tuple[float, float], torque=None) -> tuple[float,
                                                                                         float]:
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    env.unwrapped.state = np.array(start)
    total = 0.0
    for t in range(200):
        state = np.asarray(env.unwrapped.state)
        u = solver.action(state, 200 - t) if torque is None else torque
        _, r, _, _, _ = env.step(np.array([u], dtype=np.float32))
        total += float(r)
    theta = float(env.unwrapped.state[0])
    env.close()
    return total, float(np.cos(theta))


def test_it_swings_up_from_the_bottom_and_holds_the_pendulum_upright(solver):
    ret, cos_end = _rollout(solver, (np.pi, 0.0))
    idle, _ = _rollout(solver, (np.pi, 0.0), torque=0.0)
    assert cos_end > 0.99  # upright at the end
    assert ret > -400 and idle < -1900  # resting at the bottom costs pi^2 per step
    near_top, _ = _rollout(solver, (0.1, 0.0))
    assert -5 < near_top < 0


def test_its_value_predicts_the_return_it_gets(solver):
    for start in [(np.pi, 0.0), (2.0, -1.0), (-0.7, 0.5)]:
        ret, _ = _rollout(solver, start)
        assert solver.value(np.array(start), 200) == pytest.approx(ret, rel=0.05, abs=2.0)


def test_it_beats_or_ties_a_swing_up_heuristic_on_every_start(solver):
    def heuristic(th: float, w: float) -> float:
        th = (th + np.pi) % (2 * np.pi) - np.pi
        if np.cos(th) > 0.92:
            return float(np.clip(-(10 * th + 2 * w), -2, 2))
        return (2.0 if w >= 0 else -2.0) if 0.5 * w**2 + 15 * (np.cos(th) - 1) < 0 else 0.0

    env = gym.make("Pendulum-v1")
    for k in range(5):
        got = optimum_returns("Pendulum-v1", 100 + k, 1, solver)[0]
        env.reset(seed=100 + k)
        ret = 0.0
        for _ in range(200):
            u = heuristic(*env.unwrapped.state)
            ret += float(env.step(np.array([u], dtype=np.float32))[1])
        assert got >= ret - 5.0
    env.close()


def test_the_p_and_v_tasks_start_where_pendulum_v1_starts(solver):
    base = optimum_returns("Pendulum-v1", 7, 3, solver)
    for env_id in ("rlkit/Pendulum-P-v0", "rlkit/Pendulum-V-v0"):
        np.testing.assert_allclose(optimum_returns(env_id, 7, 3, solver), base)


def test_optimum_rewards_are_the_optimums_returns_step_by_step(solver):
    rewards = optimum_rewards("Pendulum-v1", 7, 3, solver)
    assert rewards.shape == (3, 200) and (rewards <= 0).all()
    np.testing.assert_allclose(rewards.sum(axis=1), optimum_returns("Pendulum-v1", 7, 3, solver))
    env = gym.make("Pendulum-v1")  # the first steps, replayed by hand
    env.reset(seed=8)
    for t in range(3):
        u = solver.action(np.asarray(env.unwrapped.state), 200 - t)
        assert env.step(np.array([u], dtype=np.float32))[1] == pytest.approx(rewards[1, t])
    env.close()


@pytest.fixture(scope="module")
def discounted() -> dict[float, PendulumOptimum]:
    return {g: PendulumOptimum(200, gamma=g, **COARSE) for g in (0.9, 0.99)}


def _discounted_rollout(solver: PendulumOptimum, start: tuple[float, float], steps: int = 300
                        ) -> tuple[float, float]:
    """(discounted return over ``steps``, undiscounted return of the first 200) from ``start``."""
    env = gym.make("Pendulum-v1", max_episode_steps=steps)
    env.reset(seed=0)
    env.unwrapped.state = np.array(start)
    disc = ret = 0.0
    for t in range(steps):
        u = solver.action(np.asarray(env.unwrapped.state), 200)
        r = float(env.step(np.array([u], dtype=np.float32))[1])
        disc += solver.gamma**t * r
        ret += r if t < 200 else 0.0
    env.close()
    return disc, ret


@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_the_discounted_optimums_value_predicts_its_discounted_return(discounted, gamma):
    solver = discounted[gamma]
    for start in [(np.pi, 0.0), (2.0, -1.0), (-0.7, 0.5)]:
        disc, _ = _discounted_rollout(solver, start)  # 300 steps: what is left is ~0
        assert solver.value(np.array(start), 200) == pytest.approx(disc, rel=0.02, abs=1.0)
        assert solver.value(np.array(start), 1) == solver.value(np.array(start), 200)


def test_a_short_sighted_discount_swings_up_later_than_the_optimum(solver, discounted):
    """From the bottom the gamma = 0.9 policy pays for a swing-up it starts late (the payoff
    lies beyond its horizon of about ten steps); at 0.99 it is the optimum's, up to the grid."""
    best, _ = _rollout(solver, (np.pi, 0.0))
    _, short = _discounted_rollout(discounted[0.9], (np.pi, 0.0))
    _, long = _discounted_rollout(discounted[0.99], (np.pi, 0.0))
    assert short < best - 50.0
    assert long == pytest.approx(best, abs=5.0)
    assert (optimum_returns("Pendulum-v1", 100, 5, discounted[0.9])
            <= optimum_returns("Pendulum-v1", 100, 5, solver) + 2.0).all()


def test_for_env_reads_the_envs_constants():
    env = gym.make("Pendulum-v1", g=9.81)
    solver = PendulumOptimum.for_env(env, **COARSE)
    assert solver.g == pytest.approx(9.81) and solver.horizon == 200
    env.close()


@pytest.mark.parametrize("given, named", [
    ({"horizon": 100}, "got horizon=100;"), ({"g": 9.0, "dt": 0.1}, "got g=9.0, dt=0.1;")])
def test_for_env_refuses_the_horizon_and_constants_that_come_from_the_env(given, named):
    env = gym.make("Pendulum-v1")
    with pytest.raises(TypeError, match=re.escape(
            "takes the horizon and the constants from the env, " + named)):
        PendulumOptimum.for_env(env, **COARSE, **given)
    env.close()


def test_eval_env_seed_is_the_seed_a_run_evaluates_with():
    # The values runs have always evaluated with: changing them changes every published figure.
    assert [eval_env_seed(s) for s in (0, 1, 2)] == [3685993406, 3056722145, 2854122131]
    for s in (0, 1, 2, 17):
        assert eval_env_seed(s) == seed_everything(s).eval_env_seed


def test_bad_input_is_refused_with_the_value_named(solver):
    with pytest.raises(ValueError, match="episodes must be a positive integer, got 0"):
        optimum_returns("Pendulum-v1", 0, 0, solver)
    with pytest.raises(ValueError, match="expected a Pendulum-v1 task, got 'MountainCarContinuous"):
        optimum_returns("MountainCarContinuous-v0", 0, 1)
    with pytest.raises(ValueError, match=r"steps_left must be in \[1, 200\], got 0"):
        solver.action(np.zeros(2), 0)
    # the state: before, NaN gave -2.0, an observation (cos, sin, theta_dot) a wrong action
    for call in (solver.action, solver.value):
        with pytest.raises(ValueError, match=r"state must be finite, got array\(\[nan"):
            call(np.array([np.nan, 0.0]), 5)
        with pytest.raises(ValueError, match=r"state must be \(theta, theta_dot\) of shape "
                                             r"\(2,\), got shape \(3,\).*an observation \(cos, "
                                             r"sin, theta_dot\) is not the state"):
            call(np.array([1.0, 0.0, 0.0]), 5)
        with pytest.raises(ValueError, match=r"of shape \(2,\), got shape \(\)"):
            call(5.0, 5)
        for bad in (["a", "b"], ["0.5", "1.0"], [True, False], [1 + 1j, 0j]):
            with pytest.raises(TypeError, match=r"state must be \(theta, theta_dot\), real "
                                                r"numbers"):
                call(bad, 5)
    assert solver.action((0.0, 0.0), 5) == solver.action(np.zeros(2), 5)
    with pytest.raises(ValueError, match="n_theta must be an integer >= 4, got 2"):
        PendulumOptimum(200, n_theta=2)
    for gamma in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"gamma must be in \(0, 1\], got {gamma}"):
            PendulumOptimum(200, gamma=gamma, **COARSE)
    with pytest.raises(ValueError, match="tol must be finite and > 0, got 0.0"):
        PendulumOptimum(200, gamma=0.9, tol=0.0, **COARSE)


TINY = {"n_theta": 8, "n_omega": 8, "n_actions": 3}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "rlkit/Hopper-P-v0", "MountainCarContinuous-v0"])
def test_a_non_pendulum_task_is_refused_with_or_without_a_solver(env_id):
    tiny = PendulumOptimum(200, **TINY)
    for solver in (tiny, None):
        with pytest.raises(ValueError, match=rf"expected a Pendulum-v1 task, got '{env_id}'"):
            optimum_returns(env_id, 0, 1, solver)
    with pytest.raises(ValueError, match=rf"expected a Pendulum-v1 task, got '{env_id}'"):
        optimum_rewards(env_id, 0, 1, tiny)


@pytest.mark.parametrize("horizon", [50, 300])
def test_a_solver_for_another_horizon_is_refused(horizon):
    message = (rf"the solver's horizon is {horizon} steps but 'rlkit/Pendulum-V-v0' has a time "
               r"limit of 200; solve for it with PendulumOptimum.for_env\(env\)")
    with pytest.raises(ValueError, match=message):
        optimum_returns("rlkit/Pendulum-V-v0", 0, 1, PendulumOptimum(horizon, **TINY))
    env = gym.make("Pendulum-v1", max_episode_steps=horizon)
    PendulumOptimum(horizon, **TINY).check_task(env)  # the env's own limit: accepted
    with pytest.raises(ValueError, match=r"the solver's horizon is 200 steps but 'Pendulum-v1' "):
        PendulumOptimum(200, **TINY).check_task(env)
    env.close()


@pytest.mark.parametrize(
    ("constant", "value", "env_value"),
    [("g", 9.81, 10.0), ("m", 2.0, 1.0), ("l", 0.5, 1.0), ("dt", 0.02, 0.05),
     ("max_speed", 10.0, 8.0), ("max_torque", 1.0, 2.0)],
)
def test_a_solver_for_other_constants_is_refused(constant, value, env_value):
    solver = PendulumOptimum(200, **TINY, **{constant: value})
    message = (rf"the solver's {constant} is {value} but 'Pendulum-v1' has {constant} = "
               rf"{env_value}; solve for it with PendulumOptimum.for_env\(env\)")
    with pytest.raises(ValueError, match=message):
        optimum_rewards("Pendulum-v1", 0, 1, solver)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"horizon": True}, TypeError, r"horizon must be an integer >= 1, got True \(bool\)"),
        ({"horizon": 0}, ValueError, r"horizon must be an integer >= 1, got 0"),
        ({"n_theta": 8.0}, TypeError, r"n_theta must be an integer >= 4, got 8.0 \(float\)"),
        ({"n_omega": "8"}, TypeError, r"n_omega must be an integer >= 4, got '8' \(str\)"),
        ({"n_actions": 1}, ValueError, r"n_actions must be an integer >= 2, got 1"),
        ({"gamma": True}, TypeError, r"gamma must be a real number, got True \(bool\)"),
        ({"gamma": "x"}, TypeError, r"gamma must be a real number, got 'x' \(str\)"),
        ({"gamma": float("nan")}, ValueError, r"gamma must be in \(0, 1\], got nan"),
        ({"tol": float("inf")}, ValueError, r"tol must be finite and > 0, got inf"),
        ({"g": float("nan")}, ValueError, r"g must be finite, got nan"),
        ({"g": None}, TypeError, r"g must be a real number, got None \(NoneType\)"),
        ({"m": 0.0}, ValueError, r"m must be finite and > 0, got 0.0"),
        ({"l": -1.0}, ValueError, r"l must be finite and > 0, got -1.0"),
        ({"dt": -0.05}, ValueError, r"dt must be finite and > 0, got -0.05"),
        ({"max_speed": 0.0}, ValueError, r"max_speed must be finite and > 0, got 0.0"),
        ({"max_torque": -2.0}, ValueError, r"max_torque must be finite and > 0, got -2.0"),
        ({"max_torque": float("inf")}, ValueError, r"max_torque must be finite and > 0, got inf"),
    ],
)
def test_every_constructor_argument_is_checked_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        PendulumOptimum(**{"horizon": 2, **TINY, **kwargs})


def test_numpy_numbers_are_taken_where_numbers_are_expected():
    solver = PendulumOptimum(np.int64(2), np.int32(8), np.int64(8), np.int16(3),
                             g=np.float32(10.0), dt=np.float64(0.05), gamma=np.float64(1.0))
    assert solver.horizon == 2 and type(solver.horizon) is int and type(solver.g) is float
    tiny = PendulumOptimum(200, **TINY)
    assert optimum_returns("Pendulum-v1", np.int64(3), np.int64(2), tiny).shape == (2,)
    np.testing.assert_array_equal(optimum_rewards("Pendulum-v1", np.uint32(3), 2, tiny),
                                  optimum_rewards("Pendulum-v1", 3, 2, tiny))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"episodes": True}, TypeError, r"episodes must be a positive integer, got True \(bool\)"),
        ({"episodes": 2.0}, TypeError, r"episodes must be a positive integer, got 2.0 \(float\)"),
        ({"seed": -1}, ValueError, r"seed must be an integer >= 0, got -1"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer >= 0, got 1.5 \(float\)"),
        ({"seed": False}, TypeError, r"seed must be an integer >= 0, got False \(bool\)"),
        ({"solver": "fine"}, TypeError, r"solver must be a PendulumOptimum or None, got 'fine'"),
    ],
)
def test_optimum_returns_checks_its_arguments_by_name(kwargs, error, message):
    args = {"env_id": "Pendulum-v1", "seed": 0, "episodes": 1, "solver": None, **kwargs}
    with pytest.raises(error, match=message):
        optimum_returns(**args)


def test_steps_left_must_be_an_integer(solver):
    with pytest.raises(TypeError, match=r"steps_left must be an integer in \[1, 200\], got True"):
        solver.action(np.zeros(2), True)
    with pytest.raises(TypeError, match=r"steps_left must be an integer in \[1, 200\], got 1.0"):
        solver.value(np.zeros(2), 1.0)
    assert solver.action(np.zeros(2), np.int64(200)) == solver.action(np.zeros(2), 200)
