"""Exploration noise for deterministic policies, one process per environment.

Both processes own their random generator (``numpy.random.Generator``) and reset per environment
on the same done mask that resets the recurrent state.
"""

from __future__ import annotations

import numpy as np

from rlkit.fields import check_finite, is_count


class ActionNoise:
    """Interface: ``sample() -> (num_envs, action_dim)`` and ``reset(done_mask)``."""

    num_envs: int
    action_dim: int

    def sample(self) -> np.ndarray:
        raise NotImplementedError

    def reset(self, done_mask: np.ndarray | None = None) -> None:
        """Reset the process of the environments where ``done_mask`` is true (all if ``None``)."""

    def state_dict(self) -> dict[str, object]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.rng.bit_generator.state = state["rng"]


def _check(num_envs: int, action_dim: int, sigma: float, rng: np.random.Generator) -> None:
    for name, value in (("num_envs", num_envs), ("action_dim", action_dim)):
        if not is_count(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    check_finite(sigma, "sigma", 0.0)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator of the process's own (never the "
                         f"global one), got {type(rng).__name__}")


def _check_mask(done_mask: np.ndarray, num_envs: int) -> np.ndarray:
    done_mask = np.asarray(done_mask, dtype=bool)
    if done_mask.shape != (num_envs,):
        raise ValueError(f"done_mask must have shape ({num_envs},), got {done_mask.shape}")
    return done_mask


class GaussianNoise(ActionNoise):
    """Independent N(0, sigma^2) noise per step (memoryless)."""

    def __init__(
        self, num_envs: int, action_dim: int, sigma: float, rng: np.random.Generator
    ) -> None:
        _check(num_envs, action_dim, sigma, rng)
        self.num_envs, self.action_dim, self.sigma, self.rng = num_envs, action_dim, sigma, rng

    def sample(self) -> np.ndarray:
        return self.sigma * self.rng.standard_normal((self.num_envs, self.action_dim))

    def reset(self, done_mask: np.ndarray | None = None) -> None:
        """Memoryless: nothing to reset; the mask is checked as the OU process checks it."""
        if done_mask is not None:
            _check_mask(done_mask, self.num_envs)


class OrnsteinUhlenbeckNoise(ActionNoise):
    """Ornstein-Uhlenbeck process, as used by DDPG (Lillicrap et al., 2015).

    ``x <- x + theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1)``, one state row per
    environment, reset to ``x0`` (default ``mu``) where an episode ends.

    Args:
        num_envs: number of parallel environments.
        action_dim: action dimension.
        sigma: diffusion scale.
        rng: the generator this process draws from (never the global one).
        theta: rate of mean reversion.
        mu: long-run mean.
        dt: time step.
        x0: reset value; ``mu`` when ``None``.
    """

    def __init__(
        self,
        num_envs: int,
        action_dim: int,
        sigma: float,
        rng: np.random.Generator,
        theta: float = 0.15,
        mu: float = 0.0,
        dt: float = 1e-2,
        x0: float | None = None,
    ) -> None:
        _check(num_envs, action_dim, sigma, rng)
        check_finite(theta, "theta", 0.0, low_open=True)
        check_finite(dt, "dt", 0.0, low_open=True)
        check_finite(mu, "mu")
        if x0 is not None:
            check_finite(x0, "x0")
        self.num_envs, self.action_dim, self.sigma, self.rng = num_envs, action_dim, sigma, rng
        self.theta, self.mu, self.dt = theta, mu, dt
        self.x0 = mu if x0 is None else x0
        self.x = np.full((num_envs, action_dim), self.x0, dtype=np.float64)

    def sample(self) -> np.ndarray:
        dw = np.sqrt(self.dt) * self.rng.standard_normal(self.x.shape)
        self.x = self.x + self.theta * (self.mu - self.x) * self.dt + self.sigma * dw
        return self.x.copy()

    def reset(self, done_mask: np.ndarray | None = None) -> None:
        if done_mask is None:
            self.x[:] = self.x0
            return
        self.x[_check_mask(done_mask, self.num_envs)] = self.x0

    def state_dict(self) -> dict[str, object]:
        return {"rng": self.rng.bit_generator.state, "x": self.x.copy()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.x = np.array(state["x"], dtype=np.float64)


def make_noise(
    kind: str,
    num_envs: int,
    action_dim: int,
    sigma: float,
    rng: np.random.Generator,
    theta: float = 0.15,
    dt: float = 1e-2,
) -> ActionNoise:
    """Build ``"ou"`` (with ``theta``, ``dt``) or ``"gaussian"`` noise."""
    if kind == "ou":
        return OrnsteinUhlenbeckNoise(num_envs, action_dim, sigma, rng, theta=theta, dt=dt)
    if kind == "gaussian":
        return GaussianNoise(num_envs, action_dim, sigma, rng)
    raise ValueError(f"unknown noise {kind!r}; expected 'ou' or 'gaussian'")
