"""Loss functions and target-network updates, as plain functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``(pred - target)^2`` over the entries where ``mask`` is 1.

    Args:
        pred: ``(B, T)``.
        target: ``(B, T)``, no gradient expected.
        mask: ``(B, T)`` of 0/1; an all-zero mask gives 0.

    Raises:
        ValueError: the three shapes differ (a ``(B, T, 1)`` target or a ``(T,)`` mask would
            broadcast into another loss without an error where ``B == T``).
    """
    if not pred.shape == target.shape == mask.shape:
        raise ValueError(f"pred, target and mask must have one shape, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)} and {tuple(mask.shape)}")
    err = (pred - target.detach()) ** 2
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


@torch.no_grad()
def polyak_update(
    target: nn.Module | Sequence[Tensor], online: nn.Module | Sequence[Tensor], tau: float
) -> None:
    """``target <- (1 - tau) * target + tau * online`` for every parameter.

    Takes two modules (their buffers are copied) or two lists of tensors (cache the lists on a
    hot path: walking a module's parameters costs more than the update of a small network).
    """
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    t_params = list(target.parameters()) if isinstance(target, nn.Module) else list(target)
    o_params = list(online.parameters()) if isinstance(online, nn.Module) else list(online)
    if len(t_params) != len(o_params):
        raise ValueError(f"target has {len(t_params)} parameters, online has {len(o_params)}")
    torch._foreach_lerp_(t_params, o_params, tau)
    if isinstance(target, nn.Module) and isinstance(online, nn.Module):
        for tb, ob in zip(target.buffers(), online.buffers()):
            tb.copy_(ob)

def grad_norm(params: Iterable[Tensor], max_norm: float | None = None) -> Tensor:
    """Total L2 norm of the gradients; clips them to ``max_norm`` when it is given.

    Returns a 0-dim tensor (no host synchronisation).
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm is not None:
        return nn.utils.clip_grad_norm_(params, max_norm)
    norms = torch._foreach_norm([p.grad for p in params])
    return torch.linalg.vector_norm(torch.stack(norms))
