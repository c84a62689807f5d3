"""Changing fields of a config of sections by their command-line names.

A config of sections (``agents.config.TrainConfig``) is flat on the command line: every field
name is unique across its sections. :func:`replace_fields` changes fields by those names and
rebuilds each changed section, so that it validates itself again.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, TypeVar, get_type_hints

import tyro

C = TypeVar("C")

FLAG_NAMES = {"env": "env.id", "noise": "noise.kind", "noise_sigma": "noise.sigma"}
"""Fields whose command-line name is not their field name (``--env`` sets ``env.id``)."""


def is_count(v: object, minimum: int = 1) -> bool:
    """``v`` is an integer >= ``minimum``: a Python or NumPy one; not a bool, not a float."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum


def check_finite(value: float, name: str, low: float = -math.inf,
                 low_open: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a finite Python number at least
    ``low`` (above it with ``low_open``), not a bool; the bound is left out of the message
    when there is none."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = number and math.isfinite(value) and (value > low if low_open else value >= low)
    if not ok:
        bound = "" if low == -math.inf else f" {'>' if low_open else '>='} {low}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")


def _fields_by_name(cfg: Any) -> dict[str, list[str]]:
    """Field name -> the sections holding it (dotted paths), for a config of sections."""
    out: dict[str, list[str]] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                out.setdefault(g.name, []).append(f.name)
        else:
            out.setdefault(f.name, []).append("")
    return out


def replace_fields(cfg: C, **changes: Any) -> C:
    """``cfg`` with fields of its sections replaced, named as on the command line.

    A name is a field of one section (``total_steps``, ``backbone``), a flag's name
    (``env``, ``noise_sigma``: :data:`FLAG_NAMES`) or a dotted path (``agent.gamma``); a whole
    section may be given too (``loop=LoopConfig(...)``). Every
    changed section is rebuilt, so it validates itself again.

    Raises:
        ValueError: a name that no section has, or that several have.
    """
    per_section: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for name, value in changes.items():
        if name in FLAG_NAMES and not dataclasses.is_dataclass(value):
            name = FLAG_NAMES[name]
        section, field_name = _locate(cfg, name, "set")
        if not section:  # a whole section, or a field of the top level
            top[name] = value
        else:
            per_section.setdefault(section, {})[field_name] = value
    for section, values in per_section.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **top)


def field_value(cfg: Any, name: str) -> Any:
    """The value of the field ``name`` of ``cfg``'s sections, named as :func:`replace_fields`
    names it (a field of one section, a flag's name, or a dotted path); nothing is rebuilt or
    checked.

    Raises:
        ValueError: a name that no section has, or that several have.
    """
    section, field_name = _locate(cfg, FLAG_NAMES.get(name, name), "read")
    return getattr(getattr(cfg, section), field_name) if section else getattr(cfg, field_name)


def _locate(cfg: Any, name: str, verb: str) -> tuple[str, str]:
    """(section, field) that ``name`` (a field of one section, of the top level, or a dotted
    path) names in ``cfg``; the section is empty for the top level.

    Raises:
        ValueError: a name that no section has, or that several have.
    """
    section, _, field_name = name.rpartition(".")
    if section or name in {f.name for f in dataclasses.fields(cfg)}:
        return section, field_name
    sections = _fields_by_name(cfg).get(name, [])
    if len(sections) != 1:
        what = "no section has" if not sections else f"sections {sections} all have"
        raise ValueError(f"cannot {verb} {name!r}: {what} a field of that name")
    return sections[0], name


def flag_names(cls: type, prefix: str = "") -> dict[str, str]:
    """Field name -> its command-line name without the dashes, for the fields of the dataclass
    ``cls`` whose flags carry ``prefix`` (``agent.``, or empty): ``total_steps`` ->
    ``total-steps``, ``id`` -> ``env`` (renamed with ``tyro.conf.arg``); a section whose flags
    carry no prefix (``tyro.conf.OmitArgPrefixes``) -> ``""``, another section -> its own
    prefix (``agent``)."""
    out = {}
    for name, hint in get_type_hints(cls, include_extras=True).items():
        meta = getattr(hint, "__metadata__", ())
        renamed = [m.name for m in meta if getattr(m, "name", None)]
        own = (renamed[0] if renamed else name).replace("_", "-")
        out[name] = "" if tyro.conf.OmitArgPrefixes in meta else prefix + own
    return out


def switch(name: str, on: bool) -> str:
    """A boolean flag as typed, from its name without the dashes: ``--agent.twin-critics`` or
    ``--agent.no-twin-critics``."""
    section, _, own = name.rpartition(".")
    return f"--{section}{'.' if section else ''}{'' if on else 'no-'}{own}"
