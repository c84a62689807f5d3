"""``torch.compile`` of the update's forward passes and losses, with an eager fallback.

:class:`CompiledFunction` runs a function through ``torch.compile`` with static shapes; on CUDA
first with ``mode="reduce-overhead"`` (CUDA graphs), then ``"max-autotune-no-cudagraphs"``; on
other devices with the default mode. When every mode fails it runs the function eagerly and
warns once per device type.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def compile_modes(device_type: str) -> tuple[str, ...]:
    """``torch.compile`` modes tried in turn on ``device_type``: CUDA graphs first on CUDA."""
    if device_type == "cuda":
        return ("reduce-overhead", "max-autotune-no-cudagraphs")
    return ("default",)


class CompiledFunction:
    """``fn`` through ``torch.compile`` (static shapes), falling back to eager with one warning.

    The first call on a device type compiles with the first of :func:`compile_modes`; when
    compiling or running fails, the next mode is tried, and after the last one ``fn`` runs
    eagerly from then on, with one ``RuntimeWarning`` per device type and process naming the
    reason. If the eager call fails too, its error is raised (the failure was not the
    compiler's).

    Args:
        fn: the function (e.g. a forward pass and loss; its backward is compiled with it).
        name: what ``fn`` is, for the warning.
    """

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn, self.name = fn, name
        self.mode: str | None = None
        """The mode in use after the first call; ``None`` while eager."""
        self._compiled: Callable[..., Any] | None = None
        self._modes: list[str] | None = None
        self._device_type = "cpu"

    @property
    def uses_cudagraphs(self) -> bool:
        """True when the compiled function replays CUDA graphs."""
        return self.mode == "reduce-overhead"

    def __call__(self, *args: Any) -> Any:
        if self._modes is None:
            self._device_type = _device_type(args)
            self._modes = list(compile_modes(self._device_type))
            self._next_mode()
        errors = []
        while self._compiled is not None:
            try:
                return self._compiled(*args)
            except Exception as e:  # noqa: BLE001  (any compiler failure falls back)
                errors.append(f"{self.mode}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
                self._next_mode()
        out = self.fn(*args)
        if errors:
            _warn_once(self._device_type, f"torch.compile of {self.name} failed on "
                       f"{self._device_type} ({'; '.join(errors)}); running it eagerly")
        return out

    def _next_mode(self) -> None:
        if self._modes:
            self.mode = self._modes.pop(0)
            self._compiled = torch.compile(self.fn, mode=self.mode, dynamic=False)
        else:
            self.mode, self._compiled = None, None


def mark_step_begin(*fns: Callable[..., Any]) -> None:
    """Start a new iteration for CUDA graphs when any of ``fns`` replays them (a no-op else).

    Call it once per update, before the first compiled call: outputs of the previous
    iteration's replays may then be overwritten (clone what must outlive the iteration).
    """
    if any(isinstance(f, CompiledFunction) and f.uses_cudagraphs for f in fns):
        torch.compiler.cudagraph_mark_step_begin()


def _device_type(args: tuple[Any, ...]) -> str:
    """The device type of the first tensor found in ``args`` (nested tuples included)."""
    stack = list(args)
    while stack:
        a = stack.pop(0)
        if isinstance(a, Tensor):
            return a.device.type
        if isinstance(a, (tuple, list)):
            stack.extend(a)
    return "cpu"



__all__ = ["CompiledFunction", "compile_modes", "mark_step_begin"]
