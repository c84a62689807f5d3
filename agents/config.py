"""The config of a training run: :class:`TrainConfig`, one frozen section per part
(:mod:`rlkit.config`) plus the agent's (:class:`agents.ddpg.DDPGConfig`). The command line
(:mod:`agents.cli`) is generated from it with tyro; a run directory's ``config.json``
(:class:`rlkit.rundir.RunRecord`) holds it resolved.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Annotated, Any

import tyro

from agents.ddpg import NO_AVERAGE, DDPGConfig
from rlkit.config import (
    EnvConfig,
    GridConfig,
    LoopConfig,
    ModelConfig,
    NoiseConfig,
    ReplayConfig,
    RunConfig,
)
from rlkit.rundir import SECTIONS, RunDirError, RunRecord

Flat = tyro.conf.OmitArgPrefixes

@dataclass(frozen=True)
class TrainConfig:
    """Train DDPG with a swappable sequence backbone."""

    run: Annotated[RunConfig, Flat] = field(default_factory=RunConfig)
    env: Annotated[EnvConfig, Flat] = field(default_factory=EnvConfig)
    replay: Annotated[ReplayConfig, Flat] = field(default_factory=ReplayConfig)
    model: Annotated[ModelConfig, Flat] = field(default_factory=ModelConfig)
    noise: Annotated[NoiseConfig, Flat] = field(default_factory=NoiseConfig)
    loop: Annotated[LoopConfig, Flat] = field(default_factory=LoopConfig)
    grid: Annotated[GridConfig, Flat] = field(default_factory=GridConfig)
    agent: DDPGConfig = field(default_factory=DDPGConfig)
    """Agent hyper-parameters (``--agent.gamma``, ``--agent.twin-critics``, ...)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # a section of another type failed on a field later
            want = DDPGConfig if f.name == "agent" else SECTIONS[f.name]
            if not isinstance(getattr(self, f.name), want):
                raise TypeError(f"TrainConfig.{f.name} must be a {want.__name__}, got "
                                f"{type(getattr(self, f.name)).__name__}")
        if self.loop.eval_policy == "average" and self.agent.average_tau is None:
            raise ValueError(f"--eval-policy average {NO_AVERAGE}")

    @classmethod
    def from_record(cls, record: RunRecord) -> TrainConfig:
        """The (resolved) config of a run directory's record."""
        sections = {name: getattr(record, name) for name in SECTIONS}
        return cls(**sections, agent=DDPGConfig.from_json(record.agent))

    def to_json(self) -> dict[str, Any]:
        """Every section as plain JSON data (tuples as lists); :meth:`from_json` reads it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: Any, where: str) -> TrainConfig:
        """Inverse of :meth:`to_json`.

        Raises:
            RunDirError: not such data, or a value a section refuses; the message starts with
                ``where``.
        """
        names = {*SECTIONS, "agent"}
        if not isinstance(data, dict) or set(data) != names:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise RunDirError(f"{where}: expected an object with the sections {sorted(names)}, "
                              f"got {got}")
        try:
            sections = {name: section(**data[name]) for name, section in SECTIONS.items()}
            return cls(**sections, agent=DDPGConfig.from_json(dict(data["agent"])))
        except (TypeError, ValueError, KeyError) as e:
            raise RunDirError(f"{where}: {e}") from e

ENV_REGISTRY = "envs"
"""The module that registers the ``rlkit/`` ids (imported before ``gym.make`` of one)."""


def env_modules(env: EnvConfig) -> tuple[str, ...]:
    """Modules to import before ``gym.make`` of ``env``: the ``rlkit/`` ids' registry for those
    ids, and the ``module`` of ``module:EnvId``."""
    return (*((ENV_REGISTRY,) if env.gym_id.startswith("rlkit/") else ()), *env.imports)


__all__ = ["ENV_REGISTRY", "Flat", "TrainConfig", "env_modules"]
