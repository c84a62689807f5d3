"""What the best controller can get on a Pendulum episode: a reference for reading returns.

Pendulum returns depend as much on where an episode starts as on the policy: from the bottom at
rest even the optimal controller scores about -300 (a long swing-up), from near the top almost
0. Ten evaluation episodes therefore differ by tens of points from one seed's
set of starts to another's. :class:`PendulumOptimum` solves the task from the *full* state
(angle and velocity, which the P and V variants hide) by dynamic programming over the episode's
200 steps, and ``optimum_returns(env_id, seed, n)`` plays its controller on the ``n`` episodes
an evaluation with the same ``seed`` runs, to compare an agent's returns with.

What the figures are (default grid; from the bottom at rest the controller scores -302.9):

- :func:`optimum_returns` are the returns of the solver's greedy controller: returns actually
  played, so each is a lower bound on the best return possible on its episode. On most starts
  it is within a few points of the best: on 300 random starts (as Pendulum-v1 draws them) it
  was within 1 point of the best controller found (a finer grid, close calls played out) on
  89% and within 3 on 96%. On starts near a swing-up decision (push back or swing around,
  swing once more or not), where the grid's interpolated value is least accurate, it can be
  tens of points below: from (theta, theta_dot) = (pi, 1) it scores -341.8 where a better
  controller scores -282.6, and 10 to 24 points below on 1% of those starts. An agent that
  sees less can therefore beat it on such an episode, though hardly on average: over the 100
  episodes from seed 1,000,000 its mean, -142.38, is 0.4 below the best controller found.
- :meth:`PendulumOptimum.value` is the grid's prediction of the best return, not a bound: on
  single starts it errs by tens of points either way (played minus predicted from -49 to +46
  on those 300 starts, beyond 10 points on 5.7% of them; a 512 x 513 grid still -35 to +41).
  On seed 2's first evaluation episode (``rlkit.seeding.eval_env_seed(2)``) it predicts -68.7
  for a start from which even full torque cannot hold the pendulum up; the controller swings
  it around and scores -125.4. Averages over many episodes agree: -142.62 predicted against
  -142.38 played on the 100 episodes above.

Method: finite-horizon value iteration on a periodic grid of angle x velocity (bilinear
interpolation, the env's own dynamics, cost and constants read from ``env.unwrapped``), then a
one-step look-ahead over a finer set of torques when acting. Solving the default grid takes
about ten seconds on one core.

With a discount ``gamma < 1`` it solves instead what a discounted agent aims for: the stationary
policy that maximises the discounted return sum_t gamma^t r_t over an unending episode (the
agent bootstraps through the time limit, a truncation), by value iteration to a fixed point.
Its undiscounted 200-step return is what an agent trained with that discount aims for: at
gamma = 0.9 the swing-up is short-sighted and costs tens of points against the optimum.

Glossary (Pendulum-v1): theta = angle from upright (``th``), theta_dot = angular velocity
(``w``), u = torque in [-max_torque, max_torque], cost = theta^2 + 0.1 theta_dot^2 + 0.001 u^2;
V_k = optimal cost-to-go with k steps left; gamma = discount (1: none, finite horizon).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from envs._checks import count, real

__all__ = ["PendulumOptimum", "optimum_returns", "optimum_rewards"]


def _wrap(theta: np.ndarray) -> np.ndarray:
    return ((theta + np.pi) % (2 * np.pi)) - np.pi


def _positive(value: Any, name: str) -> float:
    number = real(value, name)
    if not (math.isfinite(number) and number > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return number


def _name(env: gym.Env) -> str:
    return repr(env.spec.id if env.spec else env)


def _pendulum(env: gym.Env) -> PendulumEnv:
    base = env.unwrapped
    if not isinstance(base, PendulumEnv):
        raise ValueError(f"expected a Pendulum-v1 task, got {_name(env)} ({type(base).__name__})")
    return base


def _time_limit(env: gym.Env) -> int | None:
    return env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else None


def _constants(base: PendulumEnv) -> dict[str, float]:
    return {name: float(getattr(base, name))
            for name in ("g", "m", "l", "dt", "max_speed", "max_torque")}


class PendulumOptimum:
    """Full-state finite-horizon optimal control of Pendulum-v1 by dynamic programming.

    Args:
        horizon: steps per episode: the env's time limit (Pendulum-v1's, 200).
            :func:`optimum_returns` refuses a solver for another limit (:meth:`check_task`).
        n_theta: grid points over the angle (periodic).
        n_omega: grid points over the velocity, from -max_speed to max_speed.
        n_actions: torques tried per grid point while solving (acting tries twice as many).
        g, m, l, dt, max_speed, max_torque: the env's constants (Pendulum-v1's defaults).
        gamma: discount in (0, 1]; 1 (the default) is the undiscounted finite-horizon optimum,
            below 1 the stationary discounted optimum (``steps_left`` then only checked).
        tol: with ``gamma < 1``, iterate until no value moves by more than this.

    Integers may be Python or NumPy integers, real numbers any real type but ``bool``.

    Raises:
        TypeError: a grid size or ``horizon`` is not an integer, or a constant, ``gamma`` or
            ``tol`` not a real number (a bool is neither).
        ValueError: ``horizon < 1``, ``n_theta`` or ``n_omega < 4``, ``n_actions < 2``; ``g``
            is not finite; ``m``, ``l``, ``dt``, ``max_speed``, ``max_torque`` or ``tol`` is
            not finite and > 0; ``gamma`` is not in (0, 1].
    """

    def __init__(self, horizon: int = 200, n_theta: int = 256, n_omega: int = 257,
                 n_actions: int = 41, *, g: float = 10.0, m: float = 1.0, l: float = 1.0,
                 dt: float = 0.05, max_speed: float = 8.0, max_torque: float = 2.0,
                 gamma: float = 1.0, tol: float = 1e-3) -> None:
        horizon, n_theta = count(horizon, "horizon", 1), count(n_theta, "n_theta", 4)
        n_omega, n_actions = count(n_omega, "n_omega", 4), count(n_actions, "n_actions", 2)
        g = real(g, "g")
        if not math.isfinite(g):
            raise ValueError(f"g must be finite, got {g!r}")
        m, l, dt = _positive(m, "m"), _positive(l, "l"), _positive(dt, "dt")
        max_speed = _positive(max_speed, "max_speed")
        max_torque = _positive(max_torque, "max_torque")
        gamma, tol = real(gamma, "gamma"), _positive(tol, "tol")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        self.horizon, self.n_theta, self.n_omega = horizon, n_theta, n_omega
        self.gamma = gamma
        self.g, self.m, self.l, self.dt = g, m, l, dt
        self.max_speed, self.max_torque = max_speed, max_torque
        self._acts = np.linspace(-max_torque, max_torque, 2 * n_actions - 1)
        theta = np.linspace(-np.pi, np.pi, n_theta, endpoint=False)
        omega = np.linspace(-max_speed, max_speed, n_omega)
        th, w = np.meshgrid(theta, omega, indexing="ij")  # (n_theta, n_omega)
        torques = np.linspace(-max_torque, max_torque, n_actions)
        stage = _wrap(th) ** 2 + 0.1 * w**2  # cost of the state part, (n_theta, n_omega)
        # Where each (state, torque) lands does not change with k: interpolate once.
        lands = [self._weights(*self._next(th, w, u)) for u in torques]
        def backup(v: np.ndarray) -> np.ndarray:  # min over torques, (n_theta, n_omega)
            return np.stack([stage + 0.001 * u**2 + gamma * self._gather(v, lw)
                             for u, lw in zip(torques, lands, strict=True)]).min(axis=0)

        values = [np.zeros_like(stage)]  # V_0 = 0; values[k] = V_k, (n_theta, n_omega)
        if gamma == 1.0:
            for _ in range(horizon):
                values.append(backup(values[-1]))
        else:  # a contraction by gamma: iterate to its fixed point, the same V for every k
            v, moved = values[0], np.inf
            while moved > tol:
                v_next = backup(v)
                moved, v = float(np.abs(v_next - v).max()), v_next
            values = [v] * (horizon + 1)
        self._values = values

    @classmethod
    def for_env(cls, env: gym.Env, **grid: float) -> PendulumOptimum:
        """A solver with ``env``'s time limit (200 without one) and constants (any wrapper of
        Pendulum-v1); ``grid``: the other arguments (grid sizes, ``gamma``, ``tol``).

        Raises:
            TypeError: ``grid`` names the horizon or a constant, which come from ``env``.
            ValueError: ``env`` is not a Pendulum-v1 task.
        """
        base = _pendulum(env)
        constants = _constants(base)
        taken = [k for k in grid if k == "horizon" or k in constants]
        if taken:
            raise TypeError(
                f"PendulumOptimum.for_env takes the horizon and the constants from the env, got "
                f"{', '.join(f'{k}={grid[k]!r}' for k in taken)}; expected only n_theta, "
                f"n_omega, n_actions, gamma or tol (or PendulumOptimum(...) for another task)")
        return cls(_time_limit(env) or 200, **grid, **constants)

    def check_task(self, env: gym.Env) -> None:
        """Check that this solver solves ``env``: a Pendulum-v1 task (any wrapper of it) whose
        time limit is :attr:`horizon` (any horizon for an env without one) and whose constants
        (``g``, ``m``, ``l``, ``dt``, ``max_speed``, ``max_torque``) are the solver's.

        Raises:
            ValueError: ``env`` is not a Pendulum-v1 task, or its time limit or a constant
                differs from the solver's (both named).
        """
        base = _pendulum(env)
        limit = _time_limit(env)
        if limit is not None and limit != self.horizon:
            raise ValueError(
                f"the solver's horizon is {self.horizon} steps but {_name(env)} has a time limit "
                f"of {limit}; solve for it with PendulumOptimum.for_env(env)")
        for name, value in _constants(base).items():
            if value != getattr(self, name):
                raise ValueError(
                    f"the solver's {name} is {getattr(self, name)!r} but {_name(env)} has "
                    f"{name} = {value!r}; solve for it with PendulumOptimum.for_env(env)")

    def _next(self, th: np.ndarray, w: np.ndarray, u: np.ndarray | float
              ) -> tuple[np.ndarray, np.ndarray]:
        """Pendulum-v1's step: velocity first (clipped), then the angle with the new velocity."""
        acc = 3 * self.g / (2 * self.l) * np.sin(th) + 3.0 / (self.m * self.l**2) * u
        w2 = np.clip(w + acc * self.dt, -self.max_speed, self.max_speed)
        return th + w2 * self.dt, w2

    def _weights(self, th: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
        """Grid corners and bilinear weights of the points ``(th, w)``."""
        x = (_wrap(th) + np.pi) / (2 * np.pi) * self.n_theta
        i0 = np.floor(x).astype(np.int64)
        fx = x - i0
        i0 %= self.n_theta
        i1 = (i0 + 1) % self.n_theta
        y = (w + self.max_speed) / (2 * self.max_speed) * (self.n_omega - 1)
        j0 = np.clip(np.floor(y).astype(np.int64), 0, self.n_omega - 2)
        fy = y - j0
        return i0, i1, j0, j0 + 1, fx, fy

    @staticmethod
    def _gather(v: np.ndarray, lw: tuple[np.ndarray, ...]) -> np.ndarray:
        i0, i1, j0, j1, fx, fy = lw
        return ((v[i0, j0] * (1 - fx) + v[i1, j0] * fx) * (1 - fy)
                + (v[i0, j1] * (1 - fx) + v[i1, j1] * fx) * fy)

    def _q(self, state: np.ndarray, steps_left: int) -> np.ndarray:
        if isinstance(steps_left, bool) or not isinstance(steps_left, numbers.Integral):
            raise TypeError(f"steps_left must be an integer in [1, {self.horizon}], got "
                            f"{steps_left!r} ({type(steps_left).__name__})")
        if not 1 <= steps_left <= self.horizon:
            raise ValueError(f"steps_left must be in [1, {self.horizon}], got {steps_left}")
        th, w = _state(state)
        u = self._acts
        th2, w2 = self._next(np.full_like(u, th), np.full_like(u, w), u)
        return 0.001 * u**2 + self.gamma * self._gather(self._values[steps_left - 1],
                                                        self._weights(th2, w2))

    def action(self, state: np.ndarray, steps_left: int) -> float:
        """The greedy torque for the full ``state`` = (theta, theta_dot) with ``steps_left`` to
        go: the best of ``2 * n_actions - 1`` torques by a one-step look-ahead on the grid's
        values. What it scores against the best possible: see the module docstring.

        Raises:
            ValueError: ``state`` is not finite or not of shape ``(2,)`` (an observation
                ``(cos, sin, theta_dot)`` is not the state), or ``steps_left`` is outside
                ``[1, horizon]``.
            TypeError: ``state`` is not numeric, or ``steps_left`` is not an integer."""
        return float(self._acts[int(np.argmin(self._q(state, steps_left)))])

    def value(self, state: np.ndarray, steps_left: int) -> float:
        """The grid's prediction of the best return (minus the cost-to-go) from ``state`` with
        ``steps_left`` to go; with ``gamma < 1`` of the discounted return of the unending
        episode. A prediction, not a bound: on single starts it can be tens of points above or
        below what :meth:`action` plays; averages over many starts agree (module docstring).

        Raises:
            ValueError, TypeError: as :meth:`action`."""
        th, w = _state(state)
        stage = _wrap(np.array(th)) ** 2 + 0.1 * w**2
        return -float(stage + self._q(state, steps_left).min())


def _state(state: Any) -> tuple[float, float]:
    """``(theta, theta_dot)`` from a full state of shape ``(2,)``, refused by name otherwise
    (the likely slip: an observation ``(cos, sin, theta_dot)`` given for the state)."""
    s = np.asarray(state)
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise TypeError(f"state must be (theta, theta_dot), real numbers of shape (2,), got "
                        f"{state!r} (dtype {s.dtype})")  # not bool, complex, text or objects
    s = s.astype(np.float64)
    if s.shape != (2,):
        raise ValueError(f"state must be (theta, theta_dot) of shape (2,), got shape {s.shape} "
                         f"({state!r}); an observation (cos, sin, theta_dot) is not the state: "
                         "env.unwrapped.state is")
    if not np.isfinite(s).all():
        raise ValueError(f"state must be finite, got {state!r}")
    return float(s[0]), float(s[1])


def optimum_returns(env_id: str, seed: int, episodes: int,
                    solver: PendulumOptimum | None = None) -> np.ndarray:
    """Returns of the solver's greedy controller (:meth:`PendulumOptimum.action`, from the
    full state) on ``env_id``'s episodes reset with ``seed + k``.

    Each is a return played, so a lower bound on the best return possible on its episode:
    within a few points of it on most starts, tens of points below on a few starts near a
    swing-up decision (see the module docstring).

    These are the episodes an evaluation with the same ``seed`` runs (``rlkit.evaluate``
    resets episode ``k`` with ``seed + k``), so the two can be compared episode by episode.

    Args:
        env_id: a Pendulum task: ``Pendulum-v1``, ``rlkit/Pendulum-P-v0``, ``rlkit/Pendulum-V-v0``.
        seed: seed of the first episode, an integer >= 0 (Python or NumPy).
        episodes: how many episodes, a positive integer (Python or NumPy).
        solver: a solved :class:`PendulumOptimum` to reuse (default: solved for the env); its
            horizon and constants must be the env's (see :meth:`PendulumOptimum.check_task`).

    Raises:
        TypeError: ``seed`` or ``episodes`` is not an integer (a bool is not), or ``solver`` is
            not a :class:`PendulumOptimum`.
        ValueError: ``episodes`` is not positive, ``seed`` is negative, ``env_id`` is not a
            Pendulum task, or ``solver`` was solved for another time limit or other constants.
    """
    return optimum_rewards(env_id, seed, episodes, solver).sum(axis=1)


def optimum_rewards(env_id: str, seed: int, episodes: int,
                    solver: PendulumOptimum | None = None) -> np.ndarray:
    """The rewards of :func:`optimum_returns`' episodes step by step, ``(episodes, horizon)``
    (zero after an episode ends): where in an episode an agent loses against the optimum.

    Raises:
        TypeError, ValueError: as :func:`optimum_returns`.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, numbers.Integral):
        raise TypeError(f"episodes must be a positive integer, got {episodes!r} "
                        f"({type(episodes).__name__})")
    if episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer >= 0, got {seed!r} ({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if solver is not None and not isinstance(solver, PendulumOptimum):
        raise TypeError(f"solver must be a PendulumOptimum or None, got {solver!r} "
                        f"({type(solver).__name__})")
    episodes, seed = int(episodes), int(seed)
    env = gym.make(env_id)
    try:
        if solver is None:
            solver = PendulumOptimum.for_env(env)
        else:
            solver.check_task(env)
        out = np.zeros((episodes, solver.horizon))
        for k in range(episodes):
            env.reset(seed=seed + k)
            for t in range(solver.horizon):
                u = solver.action(np.asarray(env.unwrapped.state), solver.horizon - t)
                _, r, terminated, truncated, _ = env.step(np.array([u], dtype=np.float32))
                out[k, t] = float(r)
                if terminated or truncated:
                    break
        return out
    finally:
        env.close()
