"""Named recipes: tuned settings for a family of tasks, shipped as JSON files beside this module.

A recipe is a file ``NAME.json`` holding a description, the env ids it is the default for, and
values for the command line's fields (flag names as :func:`rlkit.config.replace_fields` takes
them: ``total_steps``, ``d_model``, ``agent.gamma``). ``python train.py --env ID`` uses the
recipe whose ``envs`` list ``ID`` (``--recipe auto``, the default), ``--recipe NAME`` a chosen
one, ``--recipe none`` none. Flags given on the command line win over a recipe's values, and
``config.json`` records the resolved values and the recipe's name (``run.recipe``).
Every backbone gets the same values, so that a comparison of backbones is a comparison of
backbones. ``python train.py --help`` lists the recipes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.config import replace_fields

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

    def apply(self, cfg: Any) -> Any:
        """``cfg`` with this recipe's values and ``run.recipe`` set to its name."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.values.items()}
        return replace_fields(cfg, **values, recipe=self.name)


def _load(path: Path) -> Recipe:
    data = json.loads(path.read_text())
    unknown = set(data) - {"description", "envs", "values"}
    if unknown or not isinstance(data.get("values"), dict):
        raise ValueError(f"recipe {path}: expected keys description, envs, values; got "
                         f"{sorted(data)}")
    return Recipe(path.stem, str(data.get("description", "")), tuple(data.get("envs", ())),
                  dict(data["values"]))


def recipes() -> dict[str, Recipe]:
    """Every shipped recipe, by name."""
    return {p.stem: _load(p) for p in sorted(_DIR.glob("*.json"))}


def choose(name: str, env_id: str) -> Recipe | None:
    """The recipe ``name`` (``auto``: the one listing ``env_id``, if any; ``none``: none).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    known = recipes()
    if name == "none":
        return None
    if name == "auto":
        gym_id = env_id.partition(":")[2] or env_id
        return next((r for r in known.values() if gym_id in r.envs), None)
    if name not in known:
        raise ValueError(f"unknown --recipe {name!r}; expected auto, none or one of "
                         f"{', '.join(known) or '(none shipped)'}")
    return known[name]


def describe() -> str:
    """One line per recipe, for ``--help``."""
    lines = [f"  {r.name}: {r.description} (default for {', '.join(r.envs) or 'no env'})"
             for r in recipes().values()]
    return "recipes (--recipe NAME; auto: the one made for --env):\n" + "\n".join(lines)


__all__ = ["Recipe", "choose", "describe", "recipes"]
