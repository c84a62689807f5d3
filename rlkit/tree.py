"""Nested tuples (NamedTuples included), lists and dicts of tensors: map, flatten, rebuild.

Recurrent states are such trees (a backbone's state is a tuple of tensors, an agent's a
NamedTuple of them); the loop, the checkpoint and the replay buffer handle them without
knowing their layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

Spec = Any
"""How to rebuild a tree from its leaves: ``None`` for a leaf, else ``(type, children)``."""


def tree_map(fn: Callable[[Tensor], Any], tree: Any) -> Any:
    """``tree`` with ``fn`` applied to every tensor (other leaves are kept)."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # NamedTuple
        return type(tree)(*(tree_map(fn, t) for t in tree))
    if isinstance(tree, list | tuple):
        return type(tree)(tree_map(fn, t) for t in tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return tree


def tree_flatten(tree: Any) -> tuple[list[Tensor], Spec]:
    """The tensors of a tree of tuples / lists (depth first, in order) and its :data:`Spec`."""
    if isinstance(tree, Tensor):
        return [tree], None
    if isinstance(tree, list | tuple):
        leaves: list[Tensor] = []
        specs = []
        for t in tree:
            sub, spec = tree_flatten(t)
            leaves += sub
            specs.append(spec)
        return leaves, (type(tree), specs)
    raise TypeError(f"a state tree holds tensors, tuples and lists, got {type(tree).__name__}")


def tree_unflatten(leaves: list[Tensor], spec: Spec) -> Any:
    """Inverse of :func:`tree_flatten`."""
    it = iter(leaves)

    def build(s: Spec) -> Any:
        if s is None:
            return next(it)
        kind, children = s
        items = [build(c) for c in children]
        return kind(*items) if hasattr(kind, "_fields") else kind(items)

    out = build(spec)
    if next(it, None) is not None:
        raise ValueError("more leaves than the spec holds")
    return out
