"""Loss functions and target-network updates, as plain functions."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``(pred - target)^2`` over the entries where ``mask`` is 1.

    Args:
        pred: ``(B, T)``.
        target: ``(B, T)``, no gradient expected.
        mask: ``(B, T)`` of 0/1; an all-zero mask gives 0.
    """
    err = (pred - target.detach()) ** 2
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * online`` for every parameter (buffers copied)."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(f"target has {len(t_params)} parameters, online has {len(o_params)}")
    torch._foreach_lerp_(t_params, o_params, tau)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)
