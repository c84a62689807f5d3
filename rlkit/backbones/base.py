"""The backbone contract every sequence encoder implements.

A backbone maps a sequence of inputs ``x`` of shape ``(B, T, D_in)`` to outputs ``y`` of shape
``(B, T, D_out)``, causally, carrying a recurrent ``state`` between calls:

- ``forward(x, state=None) -> (y, state)``: the whole sequence, parallel over T where the family
  allows it. ``state=None`` means :meth:`initial_state`.
- ``step(x, state) -> (y, state)``: one time step, ``x`` of shape ``(B, D_in)``; ``state=None``
  means :meth:`initial_state` here too.
- ``initial_state(batch_size, device) -> state``: the state at an episode start.
- ``reset_state(state, done_mask) -> state``: the state with the rows where ``done_mask`` is true
  replaced by the initial state, the other rows untouched.

A state is a tuple of tensors, each with the batch as its first dimension and stored in fp32
(also under autocast). Backbones without memory use the empty tuple. ``x`` comes in the weights'
dtype (fp16 / bf16 only under autocast); ``done_mask`` is a bool tensor ``(B,)``. Other inputs
are refused by name.

Invariants (tested for every family in ``tests/test_backbones.py``):
1. step == forward: T calls of ``step`` give the outputs and final state of one ``forward``.
2. chunking: ``forward`` on ``x[:, :k]`` then on ``x[:, k:]`` with the carried state equals
   ``forward`` on ``x``.
3. causality: changing ``x[:, t:]`` leaves ``y[:, :t]`` unchanged.
4. precision: under bf16 autocast outputs stay close to fp32, with no NaN.
5. checkpointing: with gradient checkpointing on, outputs and gradients equal those with it off.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rlkit.fields import is_count

State = tuple[Tensor, ...]


@dataclass(frozen=True)
class BackboneConfig:
    """Size options every family takes. Each family's own config subclasses this one."""

    d_model: int = 64
    """Width of the hidden representation; also the output dimension ``D_out``."""
    n_layers: int = 1
    """Number of stacked layers (blocks)."""
    grad_checkpoint: bool = False
    """Recompute each layer's activations in the backward pass (``forward`` only)."""

    def __post_init__(self) -> None:
        positive_ints(self, "d_model", "n_layers")
        if not isinstance(self.grad_checkpoint, bool):
            raise ValueError(f"grad_checkpoint must be True or False, got "
                             f"{self.grad_checkpoint!r}")


def positive_ints(cfg: object, *names: str) -> None:
    """Refuse a field of ``cfg`` that is not a positive integer (a bool or a float included),
    naming it and its value."""
    for name in names:
        value = getattr(cfg, name)
        if not is_count(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def real_number(cfg: object, *names: str) -> None:
    """Refuse a field of ``cfg`` that is not a finite int or float (a bool, a string, NaN or
    an infinity), naming it and its value."""
    for name in names:
        value = getattr(cfg, name)
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not _finite(value)):
            raise ValueError(f"{name} must be a finite number, got {value!r}")


def _finite(value: float) -> bool:
    """Finite as a float (an int too large for one is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class Backbone(nn.Module, abc.ABC):
    """Abstract sequence encoder; see the module docstring for the contract.

    A family implements :meth:`_forward`, :meth:`_step` and :meth:`initial_state`; the public
    :meth:`forward` and :meth:`step` check the input's shape first. :meth:`run_blocks` runs a
    stack of blocks that each carry their own slice of the state.

    Args:
        d_in: input feature dimension ``D_in``.
        cfg: the family's config; ``cfg.d_model`` is the output dimension ``D_out``.
    """

    has_memory: bool = True
    """False for families whose output at t depends on x[:, t] alone (the MLP)."""
    float64: bool = True
    """Whether the family computes in float64 when its weights are (the state-space families
    keep float32 islands, so theirs refuse float64 weights by name)."""
    half_weights: bool = False
    """Whether the family computes with float16 / bfloat16 weights (the MLP and the
    Transformer); the others keep float32 states and steps and refuse them by name (half
    precision is autocast's, over float32 weights)."""

    def __init__(self, d_in: int, cfg: BackboneConfig) -> None:
        super().__init__()
        if not is_count(d_in):
            raise ValueError(f"{type(self).__name__}: d_in must be a positive integer, got "
                             f"{d_in!r}")
        self.cfg = cfg
        self.d_in, self.d_out = int(d_in), cfg.d_model

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Encode a sequence.

        Args:
            x: inputs, shape ``(B, T, D_in)``.
            state: the state before ``x[:, 0]``; ``None`` for :meth:`initial_state`.

        Returns:
            ``(y, state)``: outputs ``(B, T, D_out)`` and the state after ``x[:, -1]`` (for
            ``T = 0``, no outputs and the state given).
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a tensor of shape (B, T, {self.d_in}), got "
                             f"{type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"x must have shape (B, T, {self.d_in}), got {tuple(x.shape)}")
        self._check_inputs(x, state)
        if x.shape[1] == 0:  # no step: no output, and the state is where it was
            fresh = self.initial_state(x.shape[0], x.device)
            if state is None:
                state = fresh
            elif fresh:  # checked as a step would check it (a family without state ignores it)
                check_state_shapes(type(self).__name__, state,
                                   [tuple(s.shape) for s in fresh])
            return x.new_zeros(x.shape[0], 0, self.d_out), state
        return self._forward(x, state)

    def step(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Advance one time step.

        Args:
            x: inputs, shape ``(B, D_in)``.
            state: the state before ``x``; ``None`` for :meth:`initial_state`.

        Returns:
            ``(y, state)``: output ``(B, D_out)`` and the state after ``x``.
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a tensor of shape (B, {self.d_in}), got "
                             f"{type(x).__name__}")
        if x.dim() != 2 or x.shape[-1] != self.d_in:
            raise ValueError(f"x must have shape (B, {self.d_in}), got {tuple(x.shape)}")
        self._check_inputs(x, state)
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        return self._step(x, state)

    def _check_inputs(self, x: Tensor, state: State | None) -> None:
        """:meth:`_check_dtype`, :meth:`_check_state_dtype` and :meth:`_check_devices`, the
        weights read once (eagerly only: kept out of compiled graphs)."""
        if torch.compiler.is_compiling():
            return
        weight = next(self.parameters(), None)
        wdt = torch.float32 if weight is None else weight.dtype
        self._check_dtype(x, wdt)
        self._check_state_dtype(state, wdt)
        self._check_devices(x, state, None if weight is None else weight.device)

    def _check_devices(self, x: Tensor, state: State | None,
                       wdev: torch.device | None) -> None:
        """``x`` on the weights' device and every state tensor on ``x``'s (``initial_state``
        makes its state on the device it is given, by default the weights')."""
        name = type(self).__name__
        if wdev is not None and x.device != wdev:
            raise ValueError(f"{name}: x is on {x.device} but the weights are on {wdev}; move "
                             f"x (or the model) so that both are on one device")
        if state is not None and any(s.device != x.device for s in state):
            bad = sorted({str(s.device) for s in state if s.device != x.device})
            raise ValueError(f"{name}: state tensors on {', '.join(bad)} but x is on "
                             f"{x.device}; make the state with initial_state(batch_size, "
                             f"device=x.device) or move it")

    def _check_state_dtype(self, state: State | None, wdt: torch.dtype) -> None:
        """``state`` a tuple of tensors in the dtype :meth:`initial_state` gives (float32;
        float64 for a float64 model of a family that computes in it)."""
        if state is None:
            return
        name = type(self).__name__
        if not isinstance(state, tuple) or not all(isinstance(s, Tensor) for s in state):
            raise ValueError(f"{name}: state must be a tuple of tensors (as initial_state "
                             f"gives) or None, got {type(state).__name__}")
        want = torch.float64 if wdt == torch.float64 and self.float64 else torch.float32
        if bad := sorted({str(s.dtype).removeprefix("torch.") for s in state
                          if s.dtype != want}):
            raise ValueError(f"{name}: state tensors must be {str(want).removeprefix('torch.')} "
                             f"(as initial_state gives), got {', '.join(bad)}")

    def _check_dtype(self, x: Tensor, wdt: torch.dtype) -> None:
        """``x`` in the weights' dtype ``wdt``, or under autocast in a half precision (which
        autocast computes in); float64 weights only for a family that computes in them, half
        precision ones only for a family that computes in them."""
        name = type(self).__name__
        if wdt == torch.float64 and not self.float64:
            raise ValueError(f"{name}: float64 weights are not supported (its state-space "
                             "steps compute in float32); keep the model in float32")
        if wdt in (torch.float16, torch.bfloat16) and not self.half_weights:
            raise ValueError(f"{name}: {str(wdt).removeprefix('torch.')} weights are not "
                             "supported (its states and steps compute in float32); keep the "
                             "model in float32 and run it under autocast for half precision")
        allowed = {wdt}
        dev = x.device.type
        if torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev):
            allowed |= {torch.float16, torch.bfloat16}
        if x.dtype not in allowed:
            want = str(wdt).removeprefix("torch.")
            raise ValueError(f"{name}: x must be {want} (the weights' dtype; float16 or "
                             f"bfloat16 only under autocast), got "
                             f"{str(x.dtype).removeprefix('torch.')}")

    @abc.abstractmethod
    def _forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """:meth:`forward` on a checked ``x`` ``(B, T, D_in)``."""

    @abc.abstractmethod
    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """:meth:`step` on a checked ``x`` ``(B, D_in)``."""

    @property
    def checkpointing(self) -> bool:
        """Whether this forward pass recomputes activations in the backward pass."""
        return self.cfg.grad_checkpoint and torch.is_grad_enabled()

    def run_blocks(self, blocks: nn.ModuleList, h: Tensor, state: State, step: bool = False
                   ) -> tuple[Tensor, State]:
        """``h`` through ``blocks``; block i takes ``(h, *[s[:, i] for s in state])`` and
        returns ``(h, *its new states)``, which are stacked back on dim 1.

        Args:
            blocks: the layers (``forward`` for a sequence, ``step`` for one step).
            h: ``(B, T, D)`` or, with ``step``, ``(B, D)``.
            state: tensors of shape ``(B, n_layers, ...)``.
            step: call each block's ``step`` (never checkpointed).
        """
        outs: list[list[Tensor]] = [[] for _ in state]
        for i, block in enumerate(blocks):
            layer = [s[:, i] for s in state]
            if step:
                h, *new = block.step(h, *layer)
            elif self.checkpointing:
                h, *new = checkpoint(block, h, *layer, use_reentrant=False)
            else:
                h, *new = block(h, *layer)
            for out, s in zip(outs, new):
                out.append(s)
        return h, tuple(torch.stack(out, dim=1) for out in outs)

    @abc.abstractmethod
    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The state at an episode start for ``batch_size`` sequences (fp32), on ``device``
        (default: the device of the backbone's weights)."""

    def _state_device(self, device: torch.device | str | None) -> torch.device | str:
        """``device``, or where :meth:`initial_state` left at ``None`` puts the state: with the
        weights (the CPU for a backbone without any)."""
        if device is not None:
            return device
        return next((p.device for p in self.parameters()), torch.device("cpu"))

    def reset_state(self, state: State, done_mask: Tensor) -> State:
        """Return ``state`` with the rows where ``done_mask`` (shape ``(B,)``) is true reset.

        The default works for any family whose initial state is all zeros; the other rows are
        returned bit for bit.
        """
        if not isinstance(done_mask, torch.Tensor) or done_mask.dtype != torch.bool:
            what = (f"dtype {done_mask.dtype}" if isinstance(done_mask, torch.Tensor)
                    else type(done_mask).__name__)
            raise ValueError(f"done_mask must be a bool tensor of shape (B,), got {what} (a "
                             "float mask of 0.5 would be read as true)")
        if done_mask.dim() != 1:
            raise ValueError(f"done_mask must have shape (B,), got {tuple(done_mask.shape)}")
        out = []
        for s in state:
            if s.shape[0] != done_mask.shape[0]:
                raise ValueError(
                    f"done_mask has {done_mask.shape[0]} rows but the state has {s.shape[0]}"
                )
            keep = ~done_mask.to(device=s.device)
            out.append(torch.where(keep.view(-1, *([1] * (s.dim() - 1))), s, torch.zeros_like(s)))
        return tuple(out)


def check_batch_size(family: str, batch_size: object) -> None:
    """Raise ``ValueError`` naming ``family`` unless ``batch_size`` is an integer >= 0 (what
    ``initial_state`` takes)."""
    if not is_count(batch_size, minimum=0):
        raise ValueError(f"{family}.initial_state: batch_size must be an integer >= 0, got "
                         f"{batch_size!r}")


def check_state_shapes(family: str, state: State, expected: list[tuple[int, ...]]) -> None:
    """Raise ``ValueError`` naming ``family`` unless ``state`` has exactly these shapes."""
    got = [tuple(s.shape) for s in state]
    if got != expected:
        raise ValueError(f"{family} state must have shapes {expected}, got {got}")


def per_step(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn`` on every leading index of ``x`` ``(..., D)`` at once, as one 2-D batch ``(N, D)``.

    The leading dims are folded with ``reshape``, so ``fn``'s linear layers run plain 2-D
    matmuls whatever the strides of ``x`` (a 3-D non-contiguous input would make ``F.linear``
    fall back to a batched matmul with the weight expanded). Returns ``(..., D_out)``.
    """
    y = fn(x.reshape(-1, x.shape[-1]))  # (N, D_out)
    return y.view(*x.shape[:-1], y.shape[-1])
