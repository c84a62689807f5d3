"""Check a backbone against the contract's invariants (:mod:`rlkit.backbones.base`).

``check_backbone(model)`` is what ``tests/test_backbones.py`` asserts of every built-in family,
for a family of one's own before it is registered and trained:

1. step == forward: T calls of ``step`` give the outputs and final state of one ``forward``
   (which makes ``forward`` causal too, invariant 3: ``step`` sees no later input);
2. chunking: ``forward`` on ``x[:, :k]`` then on ``x[:, k:]`` with the carried state equals
   ``forward`` on ``x``;
3. reset: ``reset_state`` sets the done rows to ``initial_state``'s and leaves the others bit
   for bit; states are tuples of fp32 tensors with the batch first.

It runs an fp32 model on its device, without gradients and with autocast off, and raises
``AssertionError`` naming the invariant, the step and the largest difference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlkit.backbones.base import Backbone, State


def _close(what: str, got: Tensor, want: Tensor, atol: float, rtol: float) -> None:
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    if got.numel() == 0 or torch.equal(got, want):  # equal infinities are equal
        return
    diff = (got - want).abs()
    if not bool((diff <= atol + rtol * want.abs()).all()):  # also catches NaN
        raise AssertionError(f"{what}: differs by {diff.max().item():.3g} (atol {atol:g}, "
                             f"rtol {rtol:g})")


def _same(what: str, got: Tensor, want: Tensor) -> None:
    if not torch.equal(got, want):
        raise AssertionError(f"{what}: not bit for bit equal")


def _states_close(what: str, got: State, want: State, atol: float, rtol: float) -> None:
    if len(got) != len(want):
        raise AssertionError(f"{what}: {len(got)} state tensors != {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        _close(f"{what}, state tensor {i}", g, w, atol, rtol)


@torch.no_grad()
def check_backbone(model: Backbone, batch: int = 3, steps: int = 12, atol: float = 1e-5,
                   rtol: float = 1e-4, seed: int = 0) -> None:
    """Assert the contract's invariants on random inputs ``(batch, steps, model.d_in)``.

    Args:
        model: the backbone (its weights as they are; put it in ``eval()`` if it has dropout).
        batch, steps: the input's size; ``steps`` >= 2.
        atol, rtol: the difference allowed between two exact computations done in another
            order, ``atol + rtol * |want|`` (fp32; kernels that use TF32 on a GPU may need
            more).
        seed: of the inputs' generator (nothing is drawn from global state).

    Raises:
        AssertionError: an invariant does not hold (named, with the difference).
        ValueError: ``batch`` < 1 or ``steps`` < 2, or the model's weights are not fp32.
    """
    if batch < 1 or steps < 2:
        raise ValueError(f"check_backbone needs batch >= 1 and steps >= 2, got {batch}, {steps}")
    weight = next(model.parameters(), None)
    if weight is not None and weight.dtype != torch.float32:
        raise ValueError(f"check_backbone checks fp32 models, got {weight.dtype} weights")
    dev = torch.device("cpu") if weight is None else weight.device
    with torch.autocast(dev.type, enabled=False):
        _check(model, batch, steps, atol, rtol, seed, dev)


def _check(model: Backbone, batch: int, steps: int, atol: float, rtol: float, seed: int,
           dev: torch.device) -> None:
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, steps, model.d_in, generator=g).to(dev)  # (B, T, D_in)
    init = model.initial_state(batch, dev)
    for i, s in enumerate(init):
        if s.shape[:1] != (batch,) or s.dtype != torch.float32:
            raise AssertionError(f"initial_state: tensor {i} must be fp32 with the batch "
                                 f"first, got {s.dtype} {tuple(s.shape)}")
    y, final = model(x)  # (B, T, D_out)
    if y.shape != (batch, steps, model.d_out):
        raise AssertionError(f"forward: y must have shape (B, T, d_out) = "
                             f"{(batch, steps, model.d_out)}, got {tuple(y.shape)}")
    # 1. step == forward
    state: State = init
    for t in range(steps):
        y_t, state = model.step(x[:, t], state)  # (B, D_out)
        _close(f"step == forward, output at t = {t}", y_t, y[:, t], atol, rtol)
    _states_close("step == forward, final state", state, final, atol, rtol)
    # 2. chunking
    k = steps // 2
    y1, mid = model(x[:, :k])
    y2, end = model(x[:, k:], mid)
    _close(f"chunking at k = {k}, outputs", torch.cat([y1, y2], dim=1), y, atol, rtol)
    _states_close(f"chunking at k = {k}, final state", end, final, atol, rtol)
    # 3. reset
    done = torch.zeros(batch, dtype=torch.bool, device=dev)
    done[0] = True
    reset = model.reset_state(final, done)
    for i, (r, s, z) in enumerate(zip(reset, final, init)):
        _same(f"reset_state: done row, state tensor {i}", r[:1], z[:1])
        _same(f"reset_state: other rows, state tensor {i}", r[1:], s[1:])


__all__ = ["check_backbone"]
