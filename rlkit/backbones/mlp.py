"""MLP backbone: no memory, the same feed-forward network applied to every time step.

With ``n_layers=1`` and ``d_model=256`` it is exactly the ``Linear -> ReLU`` encoder of classic
DDPG on single transitions. Its state is the empty tuple ``()``.

Glossary: ``D_in`` -> ``d_in``, ``D`` (hidden width, also ``D_out``) -> ``cfg.d_model``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rlkit.backbones.base import Backbone, BackboneConfig, State, check_batch_size, per_step


@dataclass(frozen=True)
class MLPConfig(BackboneConfig):
    """Options of :class:`MLPBackbone`: only the common ones (``d_model``, ``n_layers``,
    ``grad_checkpoint``); the layers are plain ``Linear -> ReLU`` without residual or norm."""


class MLPBackbone(Backbone):
    """A stack of ``n_layers`` ``Linear -> ReLU`` layers, per time step.

    The first layer maps ``d_in -> d_model``, the others ``d_model -> d_model``.

    Args:
        d_in: input feature dimension ``D_in``.
        cfg: sizes; see :class:`MLPConfig`.
    """

    half_weights = True  # computes in float16 / bfloat16 weights as given
    has_memory = False

    def __init__(self, d_in: int, cfg: MLPConfig) -> None:
        super().__init__(d_in, cfg)
        widths = [d_in] + [cfg.d_model] * cfg.n_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def _layer(self, i: int, h: Tensor) -> Tensor:
        return torch.relu(self.layers[i](h))

    def _forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """Each step of x ``(B, T, D_in)`` on its own -> ``(B, T, d_model)``; no state."""
        use_ckpt = self.checkpointing

        def layers(h: Tensor) -> Tensor:  # (B·T, D_in) -> (B·T, D): time folded into the batch
            for i in range(len(self.layers)):
                h = checkpoint(self._layer, i, h, use_reentrant=False) if use_ckpt \
                    else self._layer(i, h)
            return h

        return per_step(layers, x), ()  # (B, T, D)

    def step(self, x: Tensor, state: State = ()) -> tuple[Tensor, State]:
        """One step of x ``(B, D_in)`` -> ``(B, d_model)``; the state is ignored (``()``)."""
        return super().step(x, state)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h = x  # (B, D_in)
        for i in range(len(self.layers)):
            h = self._layer(i, h)  # (B, D)
        return h, ()

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The empty state ``()`` (the MLP has no memory)."""
        check_batch_size("MLP", batch_size)
        return ()
