"""Checks of the arguments the tasks, wrappers and references take, each naming the argument
and what was expected (a bool is neither an integer nor a real number here)."""

from __future__ import annotations

import numbers
from typing import Any


def count(value: Any, name: str, least: int) -> int:
    """``value`` as an ``int`` (Python or NumPy integer), at least ``least``.

    Raises:
        TypeError: not an integer. ValueError: below ``least``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {least}, got {value!r} "
                        f"({type(value).__name__})")
    if value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def real(value: Any, name: str) -> float:
    """``value`` as a ``float`` (any real type but ``bool``).

    Raises:
        TypeError: not a real number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)
