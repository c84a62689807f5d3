"""Mixed precision of the update: autocast and one GradScaler shared by every optimizer.

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
on the fly, and the SSM backbones run their discretisations and scans in fp32 inside autocast
themselves (a half-precision model of an SSM family is refused).

Nothing here calls ``.item()`` or otherwise waits for the device (except ``state_dict``).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from rlkit.fields import check_finite, is_count

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


MIN_LOSS_SCALE = 2.0**-24
"""fp16's smallest (subnormal) value: a loss scale below it flushes every scaled gradient
(a run whose scale falls below it stops: :class:`rlkit.faults.LossWatch`)."""


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
        try:
            check_finite(self.init_scale, "init_scale", MIN_LOSS_SCALE)
        except ValueError:
            raise ValueError(f"init_scale must be a finite number >= 2**-24 (fp16's smallest "
                             f"value), got {self.init_scale!r}") from None
        if not is_count(self.growth_interval):
            raise ValueError(f"growth_interval must be an integer >= 1, got "
                             f"{self.growth_interval!r}")

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
        # what the scaler's own update reads: one flag per optimizer and device, set where
        # unscale_ found inf / NaN (a scale that cannot shrink, 0 or inf, hides a skip)
        found = [f for state in self.scaler._per_optimizer_states.values()
                 for f in state["found_inf_per_device"].values()]
        self.scaler.update()
        if self._skipped is None:
            start = int(self._pending.get("skipped_steps", 0))
            self._skipped = torch.full((), start, dtype=torch.int64, device=scale.device)
        if found:
            self._skipped += torch.stack(found).to(scale.device).sum() > 0
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


__all__ = [
    "PRECISIONS",
    "MIN_LOSS_SCALE",
    "MixedPrecision",
    "Precision",
    "PrecisionConfig",
    "autocast_supported",
    "check_precision",
    "require_precision",
]
