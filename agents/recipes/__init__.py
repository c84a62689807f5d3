"""Named recipes: tuned settings for a family of tasks, shipped as JSON files beside this module.

A recipe is a file ``NAME.json`` holding a description, the env ids it is the default for, and
values for the command line's fields (flag names as :func:`rlkit.config.replace_fields` takes
them: ``total_steps``, ``d_model``, ``agent.gamma``). ``python train.py --env ID`` uses the
recipe whose ``envs`` list ``ID`` (``--recipe auto``, the default), ``--recipe NAME`` a chosen
one, ``--recipe none`` none. Flags given on the command line win over a recipe's values, and
``config.json`` records the resolved values and the recipe's name (``run.recipe``).
Every backbone gets the same values, so that a comparison of backbones is a comparison of
backbones, except where the file's ``backbones`` section gives one family its own values (on top
of ``values``; flags still win), each measured to be what that family needs to learn there, and
``env_backbones`` (env id -> family -> values, on top of both) gives a family values for one of
the recipe's envs only, where a setting measured to help it on one task hurts it on another.
``python train.py --help`` lists the recipes.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import find_highest_version, get_env_id, parse_env_id

from agents.config import env_modules
from rlkit.config import EnvConfig, replace_fields
from rlkit.evaluate import import_env_modules
from rlkit.fields import field_value

_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Recipe:
    """One recipe file."""

    name: str
    description: str
    envs: tuple[str, ...]
    """Env ids this recipe is the default for."""
    values: dict[str, Any]
    """Field values by flag name (``total_steps``, ``agent.gamma``)."""
    backbones: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Values for one backbone only, by backbone name, applied on top of :attr:`values`."""
    env_backbones: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Values for one backbone on one env only (env id -> backbone -> values), applied last."""

    def values_for(self, backbone: str, env_id: str = "") -> dict[str, Any]:
        """The values a run of ``backbone`` on ``env_id`` gets: :attr:`values`, then that
        backbone's own, then its own on that env."""
        return {**self.values, **self.backbones.get(backbone, {}),
                **self.env_backbones.get(registered_id(env_id), {}).get(backbone, {})}

    def apply(self, cfg: Any) -> Any:
        """``cfg`` with this recipe's values for ``cfg``'s backbone and env and ``run.recipe``
        set to its name."""
        return replace_fields(cfg, **self._values(cfg), recipe=self.name)

    def _values(self, cfg: Any) -> dict[str, Any]:
        return {k: tuple(v) if isinstance(v, list) else v
                for k, v in self.values_for(cfg.model.backbone, cfg.env.id).items()}

    def missing_from(self, cfg: Any) -> list[str]:
        """This recipe's values that would change ``cfg``'s defaults (for its backbone and env)
        when not one of them is in ``cfg``, as ``name=value``; empty when any one of them is
        (the recipe was applied, then some of its values changed) or none would change it."""
        default = type(cfg)()
        own = {k: v for k, v in self._values(cfg).items() if field_value(default, k) != v}
        if any(field_value(cfg, k) == v for k, v in own.items()):
            return []
        return [f"{k}={v}" for k, v in own.items()]


def _load(path: Path) -> Recipe:
    data = json.loads(path.read_text())
    unknown = set(data) - {"description", "envs", "values", "backbones", "env_backbones"}
    backbones, envs = data.get("backbones", {}), tuple(data.get("envs", ()))
    per_env = data.get("env_backbones", {})
    if unknown or not isinstance(data.get("values"), dict) or not _objects(backbones) \
            or not isinstance(per_env, dict) or not all(map(_objects, per_env.values())):
        raise ValueError(f"recipe {path}: expected keys description, envs, values (an object) "
                         f"and optionally backbones (an object of objects) and env_backbones "
                         f"(env id -> an object of objects); got {sorted(data)}")
    if set(per_env) - set(envs):
        raise ValueError(f"recipe {path}: env_backbones names envs the recipe is not for: "
                         f"{sorted(set(per_env) - set(envs))}; expected some of {list(envs)}")
    return Recipe(path.stem, str(data.get("description", "")), envs, dict(data["values"]),
                  {b: dict(v) for b, v in backbones.items()},
                  {e: {b: dict(v) for b, v in own.items()} for e, own in per_env.items()})


def registered_id(env_id: str) -> str:
    """The registered id of ``--env``: ``module:Id`` -> ``Id``, and an id without a version
    (``rlkit/Pendulum-P``) -> its latest registered version, the one Gymnasium makes for it."""
    plain = env_id.partition(":")[2] or env_id
    try:
        namespace, name, version = parse_env_id(plain)
    except gym.error.Error:
        return plain
    if version is not None:
        return plain
    with contextlib.suppress(Exception):  # what registers it; a failure is named by the run
        import_env_modules(env_modules(EnvConfig(id=env_id)), env_id)
    latest = find_highest_version(namespace, name)
    return plain if latest is None else get_env_id(namespace, name, latest)


def _objects(value: Any) -> bool:
    """Whether ``value`` is a dict of dicts."""
    return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())


def recipes() -> dict[str, Recipe]:
    """Every shipped recipe, by name."""
    return {p.stem: _load(p) for p in sorted(_DIR.glob("*.json"))}


def check_name(name: str) -> dict[str, Recipe]:
    """Every shipped recipe, by name, once ``name`` is found to be ``auto``, ``none`` or one
    of them.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    known = recipes()
    if name not in ("auto", "none", *known):
        raise ValueError(f"unknown --recipe {name!r}; expected auto, none or one of "
                         f"{', '.join(known) or '(none shipped)'}")
    return known


def choose(name: str, env_id: str) -> Recipe | None:
    """The recipe ``name`` (``auto``: the one listing ``env_id``, if any; ``none``: none);
    a recipe named for an env it does not list is applied, with a warning.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    known = check_name(name)
    if name == "none":
        return None
    if name == "auto":
        return next((r for r in known.values() if registered_id(env_id) in r.envs), None)
    recipe = known[name]
    if registered_id(env_id) not in recipe.envs:
        warnings.warn(f"--recipe {name} is made for {', '.join(recipe.envs) or 'no env'}, not "
                      f"{env_id}: its values apply as given", UserWarning, stacklevel=2)
    return recipe


def made_with(recorded: str) -> str:
    """The recipe a run was made with, from the name its ``config.json`` records: ``auto`` (a
    run configured from Python, where no recipe is applied) was made with ``none``."""
    return "none" if recorded == "auto" else recorded


def picks(name: str, env_id: str) -> str:
    """The recipe name ``name`` stands for on ``env_id``: ``auto`` the one made for the env, or
    ``none``; any other name itself.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name != "auto":
        check_name(name)
        return name
    made = choose("auto", env_id)
    return made.name if made else "none"


def describe() -> str:
    """One line per recipe, for ``--help``."""
    lines = [f"  {r.name}: {r.description} (default for {', '.join(r.envs) or 'no env'})"
             + "; every family: " + ", ".join(f"{k}={v}" for k, v in r.values.items())
             + "".join(f"; {b}: " + ", ".join(f"{k}={v}" for k, v in own.items())
                       for b, own in r.backbones.items())
             + "".join(f"; {b} on {e}: " + ", ".join(f"{k}={v}" for k, v in own.items())
                       for e, fams in r.env_backbones.items() for b, own in fams.items())
             for r in recipes().values()]
    return ("recipes (--recipe NAME; auto: the one made for --env; the defaults shown with each "
            "flag below are the package's, which a recipe's values replace and flags given "
            "replace in turn):\n" + "\n".join(lines))


__all__ = ["Recipe", "check_name", "choose", "describe", "recipes", "registered_id"]
