"""Fast paths of the update: mixed precision (autocast, one shared GradScaler) and torch.compile.

Mixed precision (``--precision``):

- ``fp32``: no autocast, no scaler.
- ``bf16``: forward passes under ``torch.autocast(dtype=torch.bfloat16)``; bf16 has fp32's
  exponent range, so no loss scaling is needed.
- ``fp16``: forward passes under ``torch.autocast(dtype=torch.float16)`` and ONE
  ``torch.amp.GradScaler`` shared by every optimizer of an update, as in PyTorch's AMP notes
  for several models and optimizers: each loss is scaled before ``backward``, each optimizer's
  gradients are unscaled before their norm is measured or clipped, each optimizer steps through
  the scaler (which skips the step when its gradients hold an inf or NaN) and the scale is
  updated once per update iteration. Skipped iterations are counted on the device and reported
  as metrics (``skipped_steps``, ``grad_scale``), never applied silently.

Parameters (the master weights) and optimizer states stay fp32 in every mode: autocast casts
on the fly, and the SSM backbones keep their ``_keep_fp32`` parameters and their scans in fp32
inside autocast themselves.

Compilation (``--compile``): :class:`CompiledFunction` runs a function through
``torch.compile`` with static shapes; on CUDA first with ``mode="reduce-overhead"`` (CUDA
graphs), then ``"max-autotune-no-cudagraphs"``; on other devices with the default mode. When
every mode fails it runs the function eagerly and warns once.

Nothing here calls ``.item()`` or otherwise waits for the device (except ``state_dict``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
"""Every accepted ``--precision`` value."""

_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, name: str = "precision") -> None:
    """Raise ``ValueError`` naming ``precision`` unless it is one of :data:`PRECISIONS`.

    Args:
        precision: the value to check.
        name: how the message calls it (``"--precision"`` for the command line).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown {name} {precision!r}; expected one of "
                         f"{', '.join(PRECISIONS)}")


def autocast_supported(precision: str, device_type: str) -> bool:
    """Whether autocast to ``precision``'s dtype works on ``device_type`` (probes one matmul).

    Args:
        precision: one of :data:`PRECISIONS` (``fp32`` needs no autocast: always True).
        device_type: ``"cpu"``, ``"cuda"``, ...

    Returns:
        True when a matmul under autocast comes out in the requested dtype.
    """
    check_precision(precision)
    dtype = _DTYPES[precision]
    if dtype is None:
        return True
    if not torch.amp.is_autocast_available(device_type):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unsupported dtype warns and disables autocast
            x = torch.ones(2, 2, device=device_type)
            with torch.autocast(device_type, dtype=dtype):
                y = torch.mm(x, x)
    except (RuntimeError, AssertionError):
        return False
    return y.dtype == dtype


def require_precision(precision: str, device_type: str, name: str = "precision") -> None:
    """Raise ``ValueError`` naming the value unless ``precision`` is usable on ``device_type``.

    Args:
        precision: one of :data:`PRECISIONS`.
        device_type: ``"cpu"``, ``"cuda"``, ...
        name: how the message calls it (``"--precision"`` for the command line).
    """
    check_precision(precision, name)
    if not autocast_supported(precision, device_type):
        usable = [p for p in PRECISIONS if autocast_supported(p, device_type)]
        raise ValueError(f"{name} {precision!r} is not supported by autocast on "
                         f"{device_type} with torch {torch.__version__}; expected one of "
                         f"{', '.join(usable)}")


@dataclass(frozen=True)
class PrecisionConfig:
    """How the update computes: autocast dtype and fp16 loss scaling."""

    precision: Precision = "fp32"
    """``fp32``; ``bf16`` (autocast, no scaler); ``fp16`` (autocast and a shared GradScaler)."""
    init_scale: float = 2.0**16
    """fp16: the GradScaler's initial loss scale."""
    growth_interval: int = 2000
    """fp16: update iterations without inf/NaN before the scale doubles."""

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {self.init_scale}")
        if self.growth_interval <= 0:
            raise ValueError(f"growth_interval must be a positive integer, got "
                             f"{self.growth_interval}")

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, ``None`` for fp32."""
        return _DTYPES[self.precision]

    @property
    def uses_scaler(self) -> bool:
        """True for fp16, the only mode that scales losses."""
        return self.precision == "fp16"


class MixedPrecision:
    """Autocast context and the GradScaler shared by every optimizer of an update.

    Per update iteration::

        with mp.autocast(device_type):
            loss = ...                     # forward passes; losses in fp32
        mp.scale(loss).backward()
        mp.unscale_(opt)                   # true gradients from here on
        norm = grad_norm(params)           # measured / clipped on unscaled gradients
        mp.step(opt)                       # skipped by the scaler on inf / NaN gradients
        ...                                # the same for every other optimizer
        metrics.update(mp.update())        # once per iteration

    With fp32 and bf16 every call but :meth:`autocast` is a pass-through. The scaler is made at
    the first :meth:`scale`, on the loss's device.

    Args:
        cfg: the precision policy.
    """

    def __init__(self, cfg: PrecisionConfig) -> None:
        self.cfg = cfg
        self.scaler: torch.amp.GradScaler | None = None
        self._skipped: Tensor | None = None  # cumulative skipped iterations, on the device
        self._pending: dict[str, Any] = {}  # loaded before the scaler existed
        self._checked: set[str] = set()

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """The autocast context for ``device_type`` (a no-op for fp32).

        Raises:
            ValueError: on the first eager call for a device type where autocast does not
                support the dtype (under ``torch.compile`` autocast itself warns instead).
        """
        if self.cfg.dtype is None:
            return contextlib.nullcontext()
        if device_type not in self._checked and not torch.compiler.is_compiling():
            require_precision(self.cfg.precision, device_type)
            self._checked.add(device_type)
        return torch.autocast(device_type, dtype=self.cfg.dtype)

    def scale(self, loss: Tensor) -> Tensor:
        """``loss`` times the current scale (fp16), else ``loss``."""
        if not self.cfg.uses_scaler:
            return loss
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(loss.device.type, init_scale=self.cfg.init_scale,
                                               growth_interval=self.cfg.growth_interval)
            if self._pending.get("scaler"):
                self.scaler.load_state_dict(self._pending["scaler"])
        return self.scaler.scale(loss)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale and record whether any is inf / NaN."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, skipped by the scaler when its gradients were not finite.

        Without a device sync only for optimizers that take the scaler's ``found_inf``
        themselves (``fused=True``); others make the scaler read ``found_inf`` on the host.
        """
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)

    def update(self) -> dict[str, Tensor]:
        """Update the scale once per iteration; count the iteration if a step was skipped.

        Returns:
            ``{}`` without a scaler; else 0-dim tensors ``skipped_steps`` (cumulative count of
            iterations in which the scaler found inf / NaN gradients and skipped the step of
            the optimizer(s) holding them) and ``grad_scale`` (the scale after the update).
        """
        if self.scaler is None:
            return {}
        # The public get_scale() syncs; the async scale tensor is updated in place.
        scale = self.scaler._get_scale_async()
        before = scale.clone()
        self.scaler.update()
        if self._skipped is None:
            start = int(self._pending.get("skipped_steps", 0))
            self._skipped = torch.full((), start, dtype=torch.int64, device=scale.device)
        self._skipped += scale < before  # the scaler backs off exactly when it found inf / NaN
        return {"skipped_steps": self._skipped.clone(), "grad_scale": scale.clone()}

    def state_dict(self) -> dict[str, Any]:
        """Precision, scaler state and skip count (reads them from the device)."""
        if self.scaler is None:
            return {"precision": self.cfg.precision, **self._pending}
        skipped = int(self._skipped) if self._skipped is not None else 0
        return {"precision": self.cfg.precision, "scaler": self.scaler.state_dict(),
                "skipped_steps": skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; a scaler state saved under another precision is
        ignored (the scaler starts afresh)."""
        if state.get("precision") != self.cfg.precision:
            return
        self._pending = {k: v for k, v in state.items() if k in ("scaler", "skipped_steps")}
        if self.scaler is not None and self._pending.get("scaler"):
            self.scaler.load_state_dict(self._pending["scaler"])
        if self._skipped is not None:
            self._skipped.fill_(int(self._pending.get("skipped_steps", 0)))


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)`` keeping this optimizer's kind.

    ``load_state_dict`` takes the ``foreach`` / ``fused`` / ``capturable`` flags from the saved
    groups; a state saved by an older version (foreach Adam) would switch the kind.
    The flags are restored and step counters moved where the kind keeps them (the parameter's
    device for fused / capturable, else the CPU).

    Args:
        optimizer: the optimizer to load into.
        state: a state dict from ``optimizer.state_dict()`` of the same parameter layout.
    """
    flags = ("foreach", "fused", "capturable")
    kinds = [{f: g.get(f) for f in flags} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kind in zip(optimizer.param_groups, kinds):
        group.update({f: v for f, v in kind.items() if f in group})
        on_device = bool(kind.get("fused") or kind.get("capturable"))
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, Tensor):
                device = p.device if on_device else torch.device("cpu")
                optimizer.state[p]["step"] = step.to(device, torch.float32)


# ------------------------------------------------------------------------------------ compile
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


__all__ = [
    "PRECISIONS",
    "CompiledFunction",
    "MixedPrecision",
    "Precision",
    "PrecisionConfig",
    "autocast_supported",
    "check_precision",
    "compile_modes",
    "load_optimizer_state",
    "mark_step_begin",
    "require_precision",
]
