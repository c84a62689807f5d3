"""Position-only (P) and velocity-only (V) variants of standard Gymnasium control tasks.

Each layout below is the observation of the task built with its default arguments, read from
the task's ``_get_obs`` in Gymnasium 1.x (``gymnasium/envs/classic_control/pendulum.py``,
``gymnasium/envs/mujoco/*_v5.py``) and checked against ``data.qpos`` / ``data.qvel`` in
``tests/test_envs.py``:

=================  =====  ===========================  ===============================
task               size   P (positions)                V (velocities)
=================  =====  ===========================  ===============================
Pendulum-v1        3      0-1: cos(theta), sin(theta)  2: theta_dot
HalfCheetah-v5     17     0-7: qpos[1:9]               8-16: qvel[0:9]
Hopper-v5          11     0-4: qpos[1:6]               5-10: clip(qvel[0:6], -10, 10)
Walker2d-v5        17     0-7: qpos[1:9]               8-16: clip(qvel[0:9], -10, 10)
Ant-v5             105    0-12: qpos[2:15]             13-26: qvel[0:14]
=================  =====  ===========================  ===============================

The MuJoCo tasks leave out the root's x (and, for Ant, y) coordinate by default
(``exclude_current_positions_from_observation=True``). Ant-v5 also appends by default
(``include_cfrc_ext_in_observation=True``) 78 clipped external contact forces (entries
27-104, ``cfrc_ext[1:]``): they are neither positions nor velocities, so both Ant variants
drop them.

Only the observation is masked. The ``info`` of a MuJoCo variant is the base task's own and
holds what the variant hides: every task's ``x_position`` (hidden even from the full task)
and ``x_velocity`` (hidden by P); by task ``y_position``, ``y_velocity`` and
``distance_from_origin`` (Ant) or ``z_distance_from_origin`` (Hopper, Walker2d: the root's
height less its initial height, hidden by V); and reward terms such as ``reward_forward``
(proportional to ``x_velocity``). An agent of a partially observed task must not read
``info``; rlkit's agent does not.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from envs.wrappers import MaskObservation

__all__ = ["POMDP_LAYOUTS", "MaskedEntry", "ObservationLayout", "make_masked_env", "make_pomdp",
           "pomdp_id"]

Kind = Literal["p", "v"]


@dataclass(frozen=True)
class ObservationLayout:
    """Where the positions and velocities sit in a task's default observation."""

    size: int
    """Length of the full observation vector."""
    positions: tuple[int, ...]
    """Indices kept by the P variant."""
    velocities: tuple[int, ...]
    """Indices kept by the V variant."""

    def __post_init__(self) -> None:
        """Refuse a layout that could not describe an observation: ``size`` not an integer
        >= 1, an index list that is empty, repeats an index or leaves ``[0, size)``, or the
        two lists sharing an index.

        Raises:
            TypeError: ``size`` or an index is not an integer, or a list is not a tuple.
            ValueError: as above.
        """
        if isinstance(self.size, bool) or not isinstance(self.size, numbers.Integral):
            raise TypeError(f"ObservationLayout size must be an integer, got {self.size!r}")
        if self.size < 1:
            raise ValueError(f"ObservationLayout size must be >= 1, got {self.size}")
        for name in ("positions", "velocities"):
            idx = getattr(self, name)
            if not isinstance(idx, tuple) or not all(
                    isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in idx):
                raise TypeError(f"ObservationLayout {name} must be a tuple of integers, got "
                                f"{idx!r}")
            if not idx or len(set(idx)) != len(idx) or not all(0 <= i < self.size for i in idx):
                raise ValueError(f"ObservationLayout {name} must be distinct indices in "
                                 f"[0, {self.size}), at least one, got {idx!r}")
        if shared := sorted(set(self.positions) & set(self.velocities)):
            raise ValueError(f"ObservationLayout positions and velocities must not share an "
                             f"index, got {shared} in both")

    def indices(self, kind: Kind) -> tuple[int, ...]:
        """Return the indices kept by the ``kind`` variant.

        Args:
            kind: ``"p"`` for positions, ``"v"`` for velocities.

        Returns:
            The kept indices, in observation order.
        """
        _check_kind(kind)
        return self.positions if kind == "p" else self.velocities


def _span(start: int, stop: int) -> tuple[int, ...]:
    return tuple(range(start, stop))


POMDP_LAYOUTS: dict[str, ObservationLayout] = {
    "Pendulum-v1": ObservationLayout(3, _span(0, 2), _span(2, 3)),
    "HalfCheetah-v5": ObservationLayout(17, _span(0, 8), _span(8, 17)),
    "Hopper-v5": ObservationLayout(11, _span(0, 5), _span(5, 11)),
    "Walker2d-v5": ObservationLayout(17, _span(0, 8), _span(8, 17)),
    "Ant-v5": ObservationLayout(105, _span(0, 13), _span(13, 27)),
}
"""Default observation layout of each supported base task, keyed by its Gymnasium id."""


def _check_kind(kind: str) -> None:
    if kind not in ("p", "v"):
        raise ValueError(f"kind must be 'p' or 'v', got {kind!r}")


def _layout(base_id: str) -> ObservationLayout:
    if not isinstance(base_id, str) or base_id not in POMDP_LAYOUTS:
        raise ValueError(f"base_id must be one of {sorted(POMDP_LAYOUTS)}, got {base_id!r}")
    return POMDP_LAYOUTS[base_id]


def pomdp_id(base_id: str, kind: Kind) -> str:
    """Return the registered id of a variant, e.g. ``("Hopper-v5", "p") -> "rlkit/Hopper-P-v0"``.

    Args:
        base_id: a key of :data:`POMDP_LAYOUTS`.
        kind: ``"p"`` for positions only, ``"v"`` for velocities only.

    Returns:
        The ``rlkit/`` id.

    Raises:
        ValueError: unknown ``base_id`` or ``kind``.
    """
    _layout(base_id)
    _check_kind(kind)
    name = base_id.rsplit("-", 1)[0]
    return f"rlkit/{name}-{kind.upper()}-v0"


def make_masked_env(
    base_id: str, kind: Kind, render_mode: str | None = None, **base_kwargs: Any
) -> MaskObservation:
    """A P/V task (what its id's entry point builds): the base task unwrapped, its observation
    masked.

    The base env is built from its registered entry point (without ``gym.make``'s wrappers);
    ``gym.make`` then adds the time limit and checkers around the masked env once.

    Args:
        base_id: a key of :data:`POMDP_LAYOUTS`.
        kind: ``"p"`` for positions only, ``"v"`` for velocities only.
        render_mode: forwarded to the base task.
        **base_kwargs: forwarded to the base task's constructor; arguments that change the
            observation layout are rejected.

    Returns:
        The base task wrapped in :class:`~envs.wrappers.MaskObservation`.

    Raises:
        ValueError: unknown ``base_id`` or ``kind``, a ``render_mode`` the base task does not
            have, or the base observation does not have the layout's size.
    """
    layout = _layout(base_id)
    indices = layout.indices(kind)
    kwargs: dict[str, Any] = {**gym.spec(base_id).kwargs, **base_kwargs}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    env = _base_creator(base_id)(**kwargs)
    modes = list(env.metadata.get("render_modes", []))
    if render_mode is not None and render_mode not in modes:
        env.close()
        raise ValueError(f"render_mode {render_mode!r} is not one of {base_id}'s render modes "
                         f"{modes}; expected one of them or None")
    shape = env.observation_space.shape
    if shape != (layout.size,):
        env.close()
        raise ValueError(
            f"{base_id} with kwargs {base_kwargs} has observation shape {shape}; the "
            f"{kind.upper()} variant expects the default layout of shape ({layout.size},)"
        )
    return MaskObservation(env, indices)


def _base_creator(base_id: str) -> Callable[..., gym.Env[Any, Any]]:
    """The registered entry point of the base task ``base_id``, loaded."""
    entry = gym.spec(base_id).entry_point
    return entry if callable(entry) else load_env_creator(entry)


class MaskedEntry:
    """Entry point of one P/V id: :func:`make_masked_env` of the id's base task and kind.

    The id names both, so no keyword can change them: a ``base_id`` or ``kind`` that names
    another is refused (as registered keywords, Gymnasium would let a caller's override them and
    build another task under the id). Its ``metadata`` is the base task's, read when
    ``gym.make`` asks, so ``gym.make`` treats render modes as for the base task (e.g.
    ``rgb_array_list`` through ``RenderCollection``).

    Args:
        base_id: a key of :data:`POMDP_LAYOUTS`.
        kind: ``"p"`` or ``"v"``.
    """

    def __init__(self, base_id: str, kind: Kind) -> None:
        self.base_id, self.kind = base_id, kind

    @property
    def metadata(self) -> dict[str, Any]:
        """The base task's metadata (its render modes)."""
        return dict(getattr(_base_creator(self.base_id), "metadata", {}))

    def __call__(self, render_mode: str | None = None, **base_kwargs: Any) -> MaskObservation:
        """Build the task; ``base_kwargs`` go to the base task's constructor.

        Raises:
            ValueError: a ``base_id`` or ``kind`` other than the id's, or as
                :func:`make_masked_env`.
        """
        for name, own in (("base_id", self.base_id), ("kind", self.kind)):
            given = base_kwargs.pop(name, own)
            if not isinstance(given, str) or given != own:
                raise ValueError(
                    f"{pomdp_id(self.base_id, self.kind)} is {self.base_id} with "
                    f"{'positions' if self.kind == 'p' else 'velocities'} only, got {name}="
                    f"{given!r}; expected {name}={own!r} or none (another variant has its own "
                    f"id, e.g. envs.pomdp_id(base_id, kind))")
        return make_masked_env(self.base_id, self.kind, render_mode, **base_kwargs)

    def __repr__(self) -> str:
        return f"MaskedEntry({self.base_id!r}, {self.kind!r})"


def make_pomdp(base_id: str, kind: Kind, render_mode: str | None = None) -> gym.Env[Any, Any]:
    """``gym.make`` the P or V variant of a base task.

    Args:
        base_id: a key of :data:`POMDP_LAYOUTS`, e.g. ``"Hopper-v5"``.
        kind: ``"p"`` for positions only, ``"v"`` for velocities only.
        render_mode: forwarded to ``gym.make``.

    Returns:
        The env, with the base task's time limit.

    Raises:
        ValueError: unknown ``base_id`` or ``kind``.
        TypeError: ``render_mode`` is neither None nor a string.
    """
    env_id = pomdp_id(base_id, kind)
    if render_mode is not None and not isinstance(render_mode, str):
        raise TypeError(f"render_mode must be None or a string (e.g. 'rgb_array'), got "
                        f"{render_mode!r} ({type(render_mode).__name__})")
    if render_mode is None:
        return gym.make(env_id)
    return gym.make(env_id, render_mode=render_mode)
