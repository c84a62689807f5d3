"""``torch.compile`` of the update's forward passes and losses, with an eager fallback.

:class:`CompiledFunction` runs a function through ``torch.compile`` with static shapes; on CUDA
first with ``mode="reduce-overhead"`` (CUDA graphs), then ``"max-autotune-no-cudagraphs"``; on
other devices with the default mode. When every mode fails it runs the function eagerly and
warns once per function name and device type. Each new input shape compiles the function again;
a function called with more input shapes than PyTorch's recompile limit (8 by default) runs
eagerly from then on, with the same warning, where dynamo alone would run the new shapes
eagerly with only a log line.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from rlkit.faults import first_line

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


_COMPLEX = "Torchinductor does not support code generation for complex operators"
"""Inductor's warning on complex tensors (S4's kernel): it runs that part eagerly, which the
timings behind :data:`COMPILE_PAYS` include, so it is not shown."""


class CompiledFunction:
    """``fn`` through ``torch.compile`` (static shapes), falling back to eager with one warning.

    The first call on a device type compiles with the first of :func:`compile_modes`; when
    compiling or running fails, the next mode is tried, and after the last one ``fn`` runs
    eagerly from then on (:attr:`fell_back`), with one ``RuntimeWarning`` per name, device
    type and process naming the reason. The same happens at the first call with more distinct
    input shapes (of the tensors in its arguments) than PyTorch's recompile limit. If the eager
    call fails too, its error is raised (the failure was not the compiler's).

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
        self._shapes: set[tuple[Any, ...]] = set()  # the input shapes met so far

    @property
    def fell_back(self) -> bool:
        """True once every mode failed and ``fn`` runs eagerly."""
        return self._modes is not None and self._compiled is None

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
        shapes = _shapes(args)
        compiles = shapes not in self._shapes  # a new shape: this call compiles
        if self._compiled is not None and self._new_shape_past_limit(shapes):
            errors.append(f"{len(self._shapes)} input shapes, more than PyTorch's recompile "
                          f"limit ({_recompile_limit()})")
            self._modes, self.mode, self._compiled = [], None, None
        while self._compiled is not None:
            try:
                if not compiles:  # (a filter on every call would show "once" warnings again)
                    return self._compiled(*args)
                with warnings.catch_warnings():  # S4's kernel is complex: inductor leaves that
                    warnings.filterwarnings("ignore", message=_COMPLEX)  # part eager, as timed
                    return self._compiled(*args)
            except Exception as e:  # noqa: BLE001  (any compiler failure falls back)
                compiles = True  # the next mode compiles
                errors.append(f"{self.mode}: {first_line(e)}")
                self._next_mode()
        out = self.fn(*args)
        if errors:
            _warn_once(f"{self._device_type}/{self.name}", f"torch.compile of {self.name} "
                       f"failed on {self._device_type} ({'; '.join(errors)}); running it eagerly")
        return out

    def _new_shape_past_limit(self, shapes: tuple[Any, ...]) -> bool:
        """Record the input ``shapes`` of a call (:func:`_shapes`); True when they are new and
        the function has already met as many as PyTorch compiles it for."""
        if shapes in self._shapes:
            return False
        self._shapes.add(shapes)
        return len(self._shapes) > _recompile_limit()

    def _next_mode(self) -> None:
        if self._modes:
            self.mode = self._modes.pop(0)
            self._compiled = torch.compile(self.fn, mode=self.mode, dynamic=False)
        else:
            self.mode, self._compiled = None, None


COMPILE_PAYS: dict[str, frozenset[str]] = {
    "cpu": frozenset({"s4", "mamba2"}),
}
"""Backbone families whose compiled update ran at least 1.1x as many updates/s as the eager
one (the mean of two rounds), by device type: ``python bench/throughput.py --sequence --modes
fp32 compile --threads 1 --updates 60`` (batch 32 x window 64, d_model 128) on one thread of a
2-core x86 CPU gave s4 1.17x / 1.07x and mamba2 1.22x / 1.12x; transformer 0.94x / 1.10x, gru
1.10x / 0.90x, lstm 0.90x / 0.91x, rnn 0.65x / 0.90x, mlp 0.69x / 0.74x and mamba 0.30x were
not faster. Device types without a measurement (CUDA) are absent: ``--compile auto`` leaves
them eager."""

CompileSetting = Literal["auto", "on", "off"]


def choose_compile(setting: CompileSetting, backbone: str, device_type: str) -> bool:
    """Whether to compile the update: ``on`` / ``off`` as given; ``auto`` where
    :data:`COMPILE_PAYS` lists ``backbone`` for ``device_type``."""
    if setting == "auto":
        return backbone in COMPILE_PAYS.get(device_type, frozenset())
    return setting == "on"


def mark_step_begin(*fns: Callable[..., Any]) -> None:
    """Start a new iteration for CUDA graphs when any of ``fns`` replays them (a no-op else).

    Call it once per update, before the first compiled call: outputs of the previous
    iteration's replays may then be overwritten (clone what must outlive the iteration).
    """
    if any(isinstance(f, CompiledFunction) and f.uses_cudagraphs for f in fns):
        torch.compiler.cudagraph_mark_step_begin()


def _recompile_limit() -> int:
    """How many shapes dynamo compiles a function for before it runs it eagerly."""
    config = torch._dynamo.config
    return int(getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 8)))


def _shapes(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The shape, dtype and device of every tensor in ``args`` (nested tuples, lists and named
    tuples included), in order."""
    out: list[Any] = []
    stack = [args]
    while stack:
        a = stack.pop()
        if isinstance(a, Tensor):
            out.append((tuple(a.shape), a.dtype, a.device))
        elif isinstance(a, (tuple, list)):
            stack.extend(reversed(a))
    return tuple(out)


def reset_warnings() -> None:
    """Warn again about functions already warned about in this process (a new run)."""
    _WARNED.clear()


def _device_type(args: tuple[Any, ...]) -> str:
    """The device type of the first tensor found in ``args`` (nested tuples included)."""
    shapes = _shapes(args)
    return shapes[0][2].type if shapes else "cpu"


__all__ = ["COMPILE_PAYS", "CompileSetting", "CompiledFunction", "choose_compile", "compile_modes",
           "mark_step_begin", "reset_warnings"]
