"""Checks of command-line values shared by the bench scripts.

Each refuses a bad value with ``parser.error`` (exit 2, no traceback), naming the flag, the value
and what was expected. The scripts import this module as ``argchecks``: run as
``python bench/SCRIPT.py``, their folder is on the path.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping
from typing import Any

import torch

from rlkit.config import parse_device


def _dest(flag: str) -> str:
    """The argparse destination of an option string (``--d-model`` -> ``d_model``)."""
    return flag.lstrip("-").replace("-", "_")


def fill_defaults(args: argparse.Namespace, defaults: Mapping[str, Any]) -> None:
    """Give each destination of ``defaults`` left at ``None`` its default (a copy). Flags that
    default to ``None`` tell a value given from one left out, for checks that refuse a flag
    given where it does not apply; this fills them in after those checks."""
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, copy.copy(default))


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace,
                     *flags: str) -> None:
    """Refuse the first of ``flags`` (option strings such as ``"--batch"``) whose value, or one
    of whose values for a list flag, is not a positive integer. A flag whose value is ``None``
    (not given, no default) is skipped."""
    for flag in flags:
        value = getattr(args, _dest(flag))
        if isinstance(value, list):
            if any(v <= 0 for v in value):
                parser.error(f"{flag} must be positive integers, got {' '.join(map(str, value))}")
        elif value is not None and value <= 0:
            parser.error(f"{flag} must be a positive integer, got {value}")


def require_distinct(parser: argparse.ArgumentParser, args: argparse.Namespace,
                     *flags: str) -> None:
    """Refuse the first of the list ``flags`` that names a value twice: each value is a row, a
    column or a table of its own, so a repeat would time the same thing twice. A flag whose
    value is ``None`` is skipped."""
    for flag in flags:
        values = getattr(args, _dest(flag))
        if values is None:
            continue
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            parser.error(f"{flag} names {', '.join(repeated)} more than once, got "
                         f"{' '.join(map(str, values))}; expected each value once")


def require_device(parser: argparse.ArgumentParser, name: str,
                   flag: str = "--device") -> torch.device:
    """The torch device ``name`` (``cpu``, ``cuda`` or ``cuda:N``); refuses another string and a
    CUDA device this machine does not have."""
    try:
        return parse_device(name, flag)
    except ValueError as e:
        parser.error(str(e))
