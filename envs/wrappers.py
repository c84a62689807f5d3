"""Observation wrappers that turn a fully observed Box task into a partially observed one.

One job per wrapper, each for a single ``gymnasium.Env`` (not a vector env: to wrap the
sub-envs of one, pass the wrapper to ``gym.make_vec(env_id, num_envs, wrappers=[...])``) whose
observation space is a ``Box``, with what each further needs of that Box:

- :class:`MaskObservation` keeps a fixed subset of the observation's entries: a 1-D Box.
- :class:`FlickerObservation` zeroes the whole observation with probability ``p``: bounds that
  contain 0, since the observation space is kept and zeros must lie in it.
- :class:`GaussianObservationNoise` adds independent ``N(0, std**2)`` noise: a floating-point
  dtype (the space's bounds become infinite).

Anything else is refused when the wrapper is built, with an error naming what was expected.

The random wrappers own their generator. It is seeded from ``reset(seed=...)`` through a
``SeedSequence`` whose spawn key is private to the wrapper class and to the number of wrappers
of that class beneath it, so its stream is independent of the wrapped env's ``np_random``
(which ``reset`` seeds with the same integer), of the other wrapper classes, and of the other
copies of the same class in one chain: two noise wrappers stacked add noise of standard
deviation ``sqrt(2) * std``, two flickers stacked zero ``1 - (1 - p)**2`` of the observations.
The global NumPy RNG is never used. Without a seeded reset the generator draws its entropy
from the operating system. A ``seed`` must be None or a Python integer ``>= 0``; anything else
(a float, a bool, a NumPy integer: Gymnasium's ``reset`` refuses NumPy integers too) is
refused before the env sees it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs._checks import real

__all__ = ["FlickerObservation", "GaussianObservationNoise", "MaskObservation"]

# Spawn keys that keep each wrapper's stream apart from the env's and from each other.
_FLICKER_KEY = 0xF11C
_NOISE_KEY = 0x9A55


def _require_box(env: gym.Env, wrapper: str) -> spaces.Box:
    if isinstance(env, gym.vector.VectorEnv):
        raise TypeError(
            f"{wrapper} expects a gymnasium.Env, not a vector env, got {type(env).__name__}; "
            f"to wrap each sub-env, pass the wrapper to gym.make_vec(env_id, num_envs, "
            f"wrappers=[lambda env: {wrapper}(env, ...)])"
        )
    if not isinstance(env, gym.Env):
        raise TypeError(f"{wrapper} expects a gymnasium.Env, got {env!r} ({type(env).__name__})")
    space = env.observation_space
    if not isinstance(space, spaces.Box):
        raise TypeError(f"{wrapper} expects a Box observation space, got {space!r}")
    return space


def _check_seed(seed: Any) -> None:
    # Gymnasium's reset takes None or a Python int >= 0 (NumPy integers are refused there too).
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(
            f"seed must be None or a Python integer >= 0, got {seed!r} ({type(seed).__name__})"
        )
    if seed < 0:
        raise ValueError(f"seed must be None or a Python integer >= 0, got {seed}")


def _index_sequence(indices: Any) -> tuple[Any, ...]:
    # An ordered sequence only: a set has no order, a dict's keys are rarely meant.
    if isinstance(indices, np.ndarray):
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(
                f"indices as an array must be 1-D of an integer dtype, got shape "
                f"{indices.shape} of dtype {indices.dtype}"
            )
        return tuple(indices.tolist())
    if not isinstance(indices, list | tuple | range):
        raise TypeError(
            "indices must be a list, tuple, range or 1-D integer array, got "
            f"{indices!r} ({type(indices).__name__})"
        )
    return tuple(indices)


def _generator(seed: int | None, spawn_key: tuple[int, ...]) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn_key)))


class _RandomObservationWrapper(
    gym.ObservationWrapper[np.ndarray, Any, np.ndarray], gym.utils.RecordConstructorArgs
):
    """An observation wrapper with a generator of its own, reseeded by ``reset(seed=...)``."""

    _KEY: int  # the spawn key that keeps this wrapper class's stream apart

    def _init_rng(self) -> None:
        # One wrapper of a class keeps the spawn key (_KEY,); the n-th copy stacked above it
        # gets (_KEY, n), so that stacked copies draw independently.
        beneath, layer = 0, self.env
        while isinstance(layer, gym.Wrapper):
            if isinstance(layer, _RandomObservationWrapper) and layer._KEY == self._KEY:
                beneath += 1
            layer = layer.env
        self._spawn_key: tuple[int, ...] = (self._KEY, beneath) if beneath else (self._KEY,)
        self._rng = _generator(None, self._spawn_key)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the env; a given ``seed`` also reseeds this wrapper's generator.

        Args:
            seed: seed for the wrapped env and for this wrapper's generator: None or a Python
                integer ``>= 0``.
            options: forwarded to the wrapped env.

        Returns:
            The (transformed) first observation and the env's info.

        Raises:
            TypeError: ``seed`` is neither None nor a Python integer, e.g. a float, a bool or
                a NumPy integer (Gymnasium's own ``reset`` refuses NumPy integers too).
            ValueError: ``seed`` is negative.
        """
        _check_seed(seed)
        if seed is not None:
            self._rng = _generator(seed, self._spawn_key)
        return super().reset(seed=seed, options=options)


class MaskObservation(
    gym.ObservationWrapper[np.ndarray, Any, np.ndarray], gym.utils.RecordConstructorArgs
):
    """Keep only the given entries of a 1-D Box observation, in the given order.

    The observation space becomes the Box of the kept entries' bounds, with the dtype kept.

    Example:
        >>> env = MaskObservation(gym.make("Pendulum-v1"), indices=(0, 1))  # cos, sin only
        >>> env.observation_space.shape
        (2,)
    """

    def __init__(
        self, env: gym.Env[np.ndarray, Any], indices: Sequence[int] | np.ndarray
    ) -> None:
        """Wrap ``env``.

        Args:
            env: a ``gymnasium.Env`` (not a vector env) with a 1-D ``Box`` observation space of
                size ``n``.
            indices: distinct integers in ``[0, n)``, at least one, in output order: a list,
                tuple or range of integers, or a 1-D array of an integer dtype.

        Raises:
            TypeError: ``env`` is not a ``gymnasium.Env`` or its observation space not a Box;
                ``indices`` is not one of the sequences above, or an index is not an integer.
            ValueError: the space is not 1-D, or the indices are empty, repeated or out of range.
        """
        space = _require_box(env, "MaskObservation")
        if len(space.shape) != 1:
            raise ValueError(
                f"MaskObservation expects a 1-D Box observation space, got shape {space.shape}"
            )
        size = space.shape[0]
        kept = _index_sequence(indices)
        for position, index in enumerate(kept):
            if isinstance(index, bool) or not isinstance(index, numbers.Integral):
                raise TypeError(
                    f"indices must be integers, got {index!r} ({type(index).__name__}) "
                    f"at position {position}"
                )
        kept = tuple(int(i) for i in kept)
        if not kept:
            raise ValueError("indices must hold at least one index, got 0 indices")
        for index in kept:
            if not 0 <= index < size:
                raise ValueError(f"indices must lie in [0, {size}), got {index}")
        if len(set(kept)) != len(kept):
            repeated = sorted({i for i in kept if kept.count(i) > 1})
            raise ValueError(f"indices must be distinct, got {repeated} more than once")

        gym.utils.RecordConstructorArgs.__init__(self, indices=kept)
        gym.ObservationWrapper.__init__(self, env)
        self.indices: tuple[int, ...] = kept
        """The kept entries of the wrapped observation, in output order."""
        self._index = np.asarray(kept, dtype=np.intp)
        self.observation_space = spaces.Box(
            low=space.low[self._index],
            high=space.high[self._index],
            dtype=space.dtype,  # type: ignore[arg-type]
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Return the kept entries.

        Args:
            observation: the wrapped env's observation, shape ``(n,)``.

        Returns:
            A new array of shape ``(len(indices),)``.
        """
        return np.asarray(observation)[self._index]


class FlickerObservation(_RandomObservationWrapper):
    """Replace the whole observation by zeros with probability ``p``, independently each time.

    Every observation is subject to flicker, the one from ``reset`` included. The observation
    space is unchanged, so its bounds must contain 0.
    """

    _KEY = _FLICKER_KEY

    def __init__(self, env: gym.Env[np.ndarray, Any], p: float) -> None:
        """Wrap ``env``.

        Args:
            env: a ``gymnasium.Env`` (not a vector env) with a ``Box`` observation space whose
                bounds contain 0.
            p: probability in ``[0, 1]`` that an observation is zeroed.

        Raises:
            TypeError: ``env`` is not a ``gymnasium.Env`` or its observation space not a Box,
                or ``p`` is not a real number.
            ValueError: ``p`` lies outside ``[0, 1]``, or the bounds exclude 0.
        """
        space = _require_box(env, "FlickerObservation")
        prob = real(p, "p")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p!r}")
        if not (np.all(space.low <= 0) and np.all(space.high >= 0)):
            raise ValueError(
                "FlickerObservation expects observation bounds that contain 0, "
                f"got low={space.low!r}, high={space.high!r}"
            )
        gym.utils.RecordConstructorArgs.__init__(self, p=prob)
        gym.ObservationWrapper.__init__(self, env)
        self.p: float = prob
        """Probability that an observation is zeroed."""
        self._init_rng()

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Return ``observation`` or, with probability ``p``, zeros of its shape and dtype.

        Args:
            observation: the wrapped env's observation.

        Returns:
            An array of the same shape and dtype.
        """
        if self._rng.random() < self.p:
            return np.zeros_like(observation)
        return observation


class GaussianObservationNoise(_RandomObservationWrapper):
    """Add independent ``N(0, std**2)`` noise to every entry of every observation.

    The observation space keeps its shape and floating dtype; its bounds become unbounded,
    since Gaussian noise has unbounded support.
    """

    _KEY = _NOISE_KEY

    def __init__(self, env: gym.Env[np.ndarray, Any], std: SupportsFloat) -> None:
        """Wrap ``env``.

        Args:
            env: a ``gymnasium.Env`` (not a vector env) with a floating-point ``Box``
                observation space.
            std: finite standard deviation of the noise, ``>= 0``.

        Raises:
            TypeError: ``env`` is not a ``gymnasium.Env``, its observation space is not a
                floating-point Box, or ``std`` is not a real number.
            ValueError: ``std`` is negative, not finite, or too large for the observation dtype.
        """
        space = _require_box(env, "GaussianObservationNoise")
        if not np.issubdtype(space.dtype, np.floating):
            raise TypeError(
                f"GaussianObservationNoise expects a floating observation dtype, got {space.dtype}"
            )
        scale = real(std, "std")
        if not (np.isfinite(scale) and scale >= 0.0):
            raise ValueError(f"std must be finite and >= 0, got {std!r}")
        if scale > (top := float(np.finfo(space.dtype).max) / 100):
            raise ValueError(f"std must be at most {top:.3g} for {space.dtype} observations "
                             f"(a hundredth of the dtype's largest value, so that noisy "
                             f"observations stay finite), got {std!r}")
        gym.utils.RecordConstructorArgs.__init__(self, std=scale)
        gym.ObservationWrapper.__init__(self, env)
        self.std: float = scale
        """Standard deviation of the added noise."""
        self.observation_space = spaces.Box(
            low=-np.inf,
            high=np.inf,
            shape=space.shape,
            dtype=space.dtype,  # type: ignore[arg-type]
        )
        self._init_rng()

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Return ``observation`` plus noise, in the observation space's dtype.

        Args:
            observation: the wrapped env's observation.

        Returns:
            A new array of the same shape.
        """
        observation = np.asarray(observation)
        noise = self._rng.normal(0.0, self.std, size=observation.shape)
        return (observation + noise).astype(self.observation_space.dtype, copy=False)
