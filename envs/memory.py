"""MemoryCorridor: a cue shown once must be recalled at the end of a corridor.

Timeline for ``length = L`` (``t`` counts the steps taken so far)::

    reset      t = 0      observation [cue, 0.0]        cue in {+1, -1}, shown only here
    step 1..L  t -> 1..L  observation [0, t / L]        reward 0 (walking; actions ignored)
    step L+1   decision   observation [0, 1.0]          reward +1 if sign(action) == cue else -1,
                                                        terminated=True, info["success"]

An episode is exactly ``L + 1`` steps, and the last decision is taken on the observation
``[0, 1.0]``, which is the same for both cues. Every observation after the first is a function
of ``t`` alone, so a memoryless policy succeeds with probability at most 1/2, while a policy
that remembers the first observation for ``L`` steps succeeds always (return +1).
"""

from __future__ import annotations

import numbers
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["CorridorEntry", "MemoryCorridorEnv"]


class MemoryCorridorEnv(gym.Env[np.ndarray, np.ndarray]):
    """Recall a +-1 cue, shown only in the first observation, after a corridor of ``L`` steps.

    Observation: ``Box([-1, 0], [1, 1], (2,), float32)`` holding ``[cue_or_0, progress]`` where
    ``cue_or_0`` is the cue at reset and 0 afterwards, and ``progress = min(t, L) / L``.

    Action: ``Box(-1, 1, (1,), float32)``. Only its sign at the decision step matters: a
    positive action chooses +1, a negative one -1, and 0 chooses neither (always wrong).

    Reward: 0 while walking; at the decision step +1 when the choice matches the cue and -1
    otherwise. No shaping. ``terminated`` is True after the decision; the env never truncates
    itself (an episode is always ``L + 1`` steps), so it is registered without a time limit.

    Info: on the decision step, ``info["success"]`` and ``info["is_success"]`` (the same bool);
    empty otherwise. The cue is never put in ``info``; tests and debugging read :attr:`cue`.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, length: int = 20, render_mode: str | None = None) -> None:
        """Build the corridor.

        Args:
            length: number of walking steps ``L`` between the cue and the decision, ``>= 1``.
            render_mode: must be None; the env has no rendering.

        Raises:
            TypeError: ``length`` is not an integer.
            ValueError: ``length < 1`` or ``render_mode`` is not None.
        """
        if isinstance(length, bool) or not isinstance(length, numbers.Integral):
            raise TypeError(f"length must be an integer, got {length!r} ({type(length).__name__})")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (no rendering), got {render_mode!r}")
        self.length: int = int(length)
        """Walking steps ``L``; an episode has ``L + 1`` steps."""
        self.render_mode = render_mode
        self.observation_space = spaces.Box(
            low=np.array([-1.0, 0.0], dtype=np.float32),
            high=np.array([1.0, 1.0], dtype=np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)
        self._cue = 0
        self._t: int | None = None  # None: needs a reset

    @property
    def max_episode_steps(self) -> int:
        """Every episode's length, ``L + 1`` (the env terminates; no time limit is needed)."""
        return self.length + 1

    @property
    def cue(self) -> int:
        """The current episode's cue, +1 or -1 (0 before the first reset)."""
        return self._cue

    def _obs(self, t: int, cue_visible: bool) -> np.ndarray:
        cue = float(self._cue) if cue_visible else 0.0
        return np.array([cue, min(t, self.length) / self.length], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a new cue from ``self.np_random`` and return the only observation showing it.

        Args:
            seed: seeds ``self.np_random`` (Gymnasium convention).
            options: unused.

        Returns:
            ``([cue, 0.0], {})``.
        """
        super().reset(seed=seed)
        self._cue = 1 if self.np_random.random() < 0.5 else -1
        self._t = 0
        return self._obs(0, cue_visible=True), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one cell, or take the decision when at the end of the corridor.

        Args:
            action: array of shape ``(1,)``; its sign is the choice at the decision step.

        Returns:
            ``(observation, reward, terminated, truncated, info)``; see the class docstring.

        Raises:
            ValueError: ``action`` does not have shape ``(1,)`` or is not finite (NaN or
                infinite), at any step.
            TypeError: ``action`` is not numeric.
            RuntimeError: called before ``reset`` or after the episode terminated.
        """
        if self._t is None or self._t > self.length:
            raise RuntimeError("step() called without an active episode; call reset() first")
        action = np.asarray(action)
        if action.shape != (1,):
            raise ValueError(f"action must have shape (1,), got shape {action.shape}")
        if not (np.issubdtype(action.dtype, np.floating)
                or np.issubdtype(action.dtype, np.integer)):  # not bool, complex or text
            raise TypeError(f"action must be a real number array of shape (1,), got {action!r} "
                            f"(dtype {action.dtype})")
        if not np.isfinite(action).all():
            raise ValueError(f"action must be finite, got {action!r}: a non-finite action is a "
                             "fault of the agent, not a choice")
        if self._t < self.length:
            self._t += 1
            return self._obs(self._t, cue_visible=False), 0.0, False, False, {}
        success = bool(np.sign(float(action[0])) == self._cue)
        self._t += 1
        info = {"success": success, "is_success": success}
        return self._obs(self._t, cue_visible=False), 1.0 if success else -1.0, True, False, info


class CorridorEntry:
    """Entry point of one ``rlkit/MemoryCorridor-L{n}-v0`` id: the corridor of the id's length.

    The id names the length, so no keyword can change it: a ``length`` other than the id's is
    refused (as a registered keyword, Gymnasium would let a caller's override it and build
    another corridor under the id).

    Args:
        length: the length the id names.
    """

    metadata: dict[str, Any] = MemoryCorridorEnv.metadata

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, length: int | None = None,
                 render_mode: str | None = None) -> MemoryCorridorEnv:
        """Build the corridor.

        Raises:
            ValueError: a ``length`` other than the id's, or as :class:`MemoryCorridorEnv`.
        """
        if length is not None and (isinstance(length, bool) or np.ndim(length) != 0
                                   or length != self.length):
            raise ValueError(f"rlkit/MemoryCorridor-L{self.length}-v0 is the corridor of length "
                             f"{self.length}, got length={length!r}; expected no length (or "
                             f"{self.length}); another length: gym.make('rlkit/MemoryCorridor-v0',"
                             f" length=N)")
        return MemoryCorridorEnv(self.length if length is None else length,
                                 render_mode=render_mode)

    def __repr__(self) -> str:
        return f"CorridorEntry({self.length})"
