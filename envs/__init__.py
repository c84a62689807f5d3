"""Gymnasium tasks for memory-based control, registered under the ``rlkit/`` namespace.

Importing this package registers the ids in :data:`ENV_IDS`: nothing is built and MuJoCo is not
imported until ``gym.make``. Registration is idempotent (an id already in the registry is left
as is), so reloading the package neither fails nor warns. ``rlkit/MemoryCorridor-v0`` has a
string entry point; the P/V ids and ``rlkit/MemoryCorridor-L{n}-v0`` have entry-point objects
that refuse a keyword turning the id into another task, so Gymnasium cannot write their specs
as JSON (``env.spec.to_json()`` raises; pickling a spec and ``gym.make(spec)`` work).

Ids:

- ``rlkit/Pendulum-P-v0``, ``rlkit/Pendulum-V-v0``: Pendulum-v1 seeing only
  ``(cos theta, sin theta)`` or only ``theta_dot``; 200 steps.
- ``rlkit/{HalfCheetah,Hopper,Walker2d,Ant}-{P,V}-v0``: the MuJoCo v5 tasks seeing only joint
  positions or only joint velocities; 1000 steps. Layouts in :mod:`envs.pomdp`. Their ``info``
  is the MuJoCo task's own, unchanged, and holds part of what a variant hides (``x_position``,
  ``x_velocity``, ``reward_forward``, ...): an agent must act on observations only and not read
  it. rlkit's agent does not (training reads only ``info["final_obs"]``, the masked observation
  an episode ended on; evaluation only a ``success`` flag, for its metrics).
- ``rlkit/MemoryCorridor-v0``: recall a cue after ``length`` steps (default 20), e.g.
  ``gym.make("rlkit/MemoryCorridor-v0", length=100)``, or ``rlkit/MemoryCorridor-L{20,50,100}-v0``
  on the command line; episodes of ``length + 1`` steps that
  always terminate, so no time limit. See :mod:`envs.memory`.

:mod:`envs.reference` solves Pendulum from the full state (dynamic programming): the returns of
its controller on given episodes, to read an agent's evaluation against (a lower bound on the
best return possible, within a few points of it on most episodes).

This package imports only the standard library, NumPy and Gymnasium.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym

from envs.memory import CorridorEntry, MemoryCorridorEnv
from envs.pomdp import POMDP_LAYOUTS, MaskedEntry, ObservationLayout, make_pomdp, pomdp_id
from envs.wrappers import FlickerObservation, GaussianObservationNoise, MaskObservation

__all__ = [
    "ENV_IDS",
    "MEMORY_CORRIDOR_ID",
    "MEMORY_CORRIDOR_IDS",
    "POMDP_IDS",
    "POMDP_LAYOUTS",
    "FlickerObservation",
    "GaussianObservationNoise",
    "MaskObservation",
    "MemoryCorridorEnv",
    "ObservationLayout",
    "make_pomdp",
    "pomdp_id",
]

POMDP_IDS: tuple[str, ...] = tuple(
    pomdp_id(base_id, kind) for base_id in POMDP_LAYOUTS for kind in ("p", "v")
)
"""The P/V ids, e.g. ``rlkit/Hopper-P-v0``."""

MEMORY_CORRIDOR_ID = "rlkit/MemoryCorridor-v0"

MEMORY_CORRIDOR_LENGTHS: tuple[int, ...] = (20, 50, 100)
"""Corridor lengths with an id of their own, e.g. ``rlkit/MemoryCorridor-L100-v0`` (for the
command line, where keyword arguments cannot be passed)."""

MEMORY_CORRIDOR_IDS: tuple[str, ...] = (
    MEMORY_CORRIDOR_ID,
    *(f"rlkit/MemoryCorridor-L{n}-v0" for n in MEMORY_CORRIDOR_LENGTHS),
)

ENV_IDS: tuple[str, ...] = (*POMDP_IDS, *MEMORY_CORRIDOR_IDS)
"""Every id this package registers."""


def _register(
    env_id: str, entry_point: str | Callable[..., gym.Env], kwargs: dict[str, object],
    max_episode_steps: int | None
) -> None:
    if env_id not in gym.registry:
        gym.register(
            id=env_id,
            entry_point=entry_point,
            max_episode_steps=max_episode_steps,
            kwargs=kwargs,
        )


for _base_id in POMDP_LAYOUTS:
    for _kind in ("p", "v"):
        _register(
            pomdp_id(_base_id, _kind),
            MaskedEntry(_base_id, _kind),
            kwargs={},
            max_episode_steps=gym.spec(_base_id).max_episode_steps,
        )
_register(
    MEMORY_CORRIDOR_ID,
    "envs.memory:MemoryCorridorEnv",
    kwargs={"length": 20},
    max_episode_steps=None,
)
for _n in MEMORY_CORRIDOR_LENGTHS:
    _register(f"rlkit/MemoryCorridor-L{_n}-v0", CorridorEntry(_n), kwargs={},
              max_episode_steps=None)
del _base_id, _kind, _n
