"""Recurrent backbones: Elman RNN, LSTM and GRU through torch's fused modules (cuDNN on a GPU).

Architecture: ``Linear(d_in -> d_model)`` then one multi-layer ``nn.RNN`` / ``nn.LSTM`` /
``nn.GRU`` (``n_layers`` layers, ``batch_first``) called once over the whole sequence. There is
no residual connection or normalisation between the layers: the fused multi-layer call is the
fast path on cuDNN, and the plain stacked cell is what the recurrent RL baselines use.

State (batch first, fp32, also under autocast): ``(h,)`` for ``rnn`` / ``gru`` and ``(h, c)``
for ``lstm``, each of shape ``(B, n_layers, d_model)``; zeros at an episode start. Internally
torch's layout ``(n_layers, B, d_model)`` is used.

Glossary: ``h_t`` (hidden state) -> ``h``, ``c_t`` (LSTM cell state) -> ``c``, ``L`` (layers) ->
``cfg.n_layers``, ``H`` (hidden width, also ``D_out``) -> ``cfg.d_model``, ``b_f`` / ``b_i``
(LSTM forget / input gate biases) -> the second / first ``H`` rows of ``rnn.bias_ih_l{k}``,
``b_z`` (GRU update gate bias) -> the second ``H`` rows, ``T_max`` (chrono) -> ``cfg.chrono``.

Chrono initialisation (Tallec & Ollivier, 2018; ``chrono = T_max > 0``): at torch's default
init the gates sit near 1/2, so a step's memory halves at every step and a cue 100 steps back
reaches the output with a gradient near 1e-20. Chrono sets ``b_f = log(u)`` (GRU: ``b_z``) with
``u`` spread evenly over ``[1, T_max - 1]`` across the ``H`` units (the paper draws ``u`` at
random; an even spread needs no generator), ``b_i = -b_f`` for the LSTM, and the recurrent
biases of those gates to 0, so that the units keep their memory over 1 to ``T_max`` steps.

Orthogonal initialisation (``init = "orthogonal"``, as pomdp-baselines' recurrent agents): every
weight matrix of the recurrent module (input-to-hidden and hidden-to-hidden, each gate's block
of rows together) is drawn (semi-)orthogonal and every bias of it set to 0; the input projection
keeps torch's default. Chrono, if asked, sets its gate biases after that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rlkit.backbones.base import (
    Backbone,
    BackboneConfig,
    State,
    check_batch_size,
    check_state_shapes,
)

Cell = Literal["rnn", "lstm", "gru"]
Init = Literal["torch", "orthogonal"]
_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def check_chrono(value: object, name: str) -> None:
    """Refuse a chrono setting that is not 0 (off) or an integer >= 2, naming it as ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value == 1:
        raise ValueError(f"{name} must be 0 (off) or an integer >= 2 (the longest memory in "
                         f"steps), got {value!r}")


@dataclass(frozen=True)
class RNNConfig(BackboneConfig):
    """Options of :class:`RNNBackbone` (the common ones plus the cell type)."""

    cell: Cell = "gru"
    """Recurrent cell: ``"rnn"`` (tanh Elman), ``"lstm"`` or ``"gru"``."""
    chrono: int = 0
    """Chrono initialisation of the gate biases for memories of up to ``chrono`` steps (see
    the module docstring); 0 keeps torch's default. LSTM and GRU only (the RNN has no gates)."""
    init: Init = "torch"
    """Initialisation of the recurrent module: torch's default, or orthogonal weights with zero
    biases (see the module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cell not in _CELLS:
            raise ValueError(f"cell must be one of {', '.join(_CELLS)}, got {self.cell!r}")
        check_chrono(self.chrono, "chrono")
        if self.init not in ("torch", "orthogonal"):
            raise ValueError(f"init must be 'torch' or 'orthogonal', got {self.init!r}")
        if self.chrono and self.cell == "rnn":
            raise ValueError(f"chrono initialises gate biases: it needs cell lstm or gru, got "
                             f"cell rnn (with chrono={self.chrono})")


class RNNBackbone(Backbone):
    """Input projection followed by a multi-layer RNN / LSTM / GRU.

    Args:
        d_in: input feature dimension ``D_in``.
        cfg: sizes and cell type; see :class:`RNNConfig`.
    """

    def __init__(self, d_in: int, cfg: RNNConfig) -> None:
        super().__init__(d_in, cfg)
        self.in_proj = nn.Linear(d_in, cfg.d_model)
        self.rnn = _CELLS[cfg.cell](cfg.d_model, cfg.d_model, cfg.n_layers, batch_first=True)
        self._n_state = 2 if cfg.cell == "lstm" else 1
        if cfg.init == "orthogonal":
            self._orthogonal_init()
        if cfg.chrono:
            self._chrono_init(cfg.chrono)

    @torch.no_grad()
    def _orthogonal_init(self) -> None:
        """(Semi-)orthogonal weights and zero biases for the recurrent module. Draws from torch's
        global generator, as every default initialisation of a module does."""
        for name, p in self.rnn.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(p)
            else:
                p.zero_()

    @torch.no_grad()
    def _chrono_init(self, t_max: int) -> None:
        """Gate biases for memories of 1 to ``t_max`` steps (torch's gate order: LSTM i, f, g,
        o; GRU r, z, n; each a block of H rows)."""
        H = self.cfg.d_model
        b = torch.log(torch.linspace(1.0, t_max - 1.0, H))  # (H,) in [0, log(T_max - 1)]
        for k in range(self.cfg.n_layers):
            b_ih, b_hh = getattr(self.rnn, f"bias_ih_l{k}"), getattr(self.rnn, f"bias_hh_l{k}")
            b_ih[H:2 * H], b_hh[H:2 * H] = b, 0.0  # LSTM forget gate / GRU update gate
            if self.cfg.cell == "lstm":
                b_ih[:H], b_hh[:H] = -b, 0.0  # input gate

    def _state_dtype(self) -> torch.dtype:
        return torch.promote_types(self.in_proj.weight.dtype, torch.float32)

    def _recur(self, u: Tensor, *hx: Tensor) -> tuple[Tensor, ...]:
        """Run the fused module: u ``(B, T, H)``, hx in torch's ``(L, B, H)`` layout."""
        y, hn = self.rnn(u, hx if self._n_state == 2 else hx[0])
        return (y, *(hn if self._n_state == 2 else (hn,)))

    def _run(self, x: Tensor, state: State | None, use_ckpt: bool) -> tuple[Tensor, State]:
        b = x.shape[0]
        if state is None:
            state = self.initial_state(b, x.device)
        shape = (b, self.cfg.n_layers, self.cfg.d_model)  # (B, L, H) each
        check_state_shapes(self.cfg.cell, state, [shape] * self._n_state)
        hx = tuple(s.transpose(0, 1).contiguous() for s in state)  # (L, B, H) each
        u = self.in_proj(x)  # (B, T, H)
        if use_ckpt:
            y, *hn = checkpoint(self._recur, u, *hx, use_reentrant=False)
        else:
            y, *hn = self._recur(u, *hx)  # y: (B, T, H)
        dt = self._state_dtype()
        new_state = tuple(h.transpose(0, 1).to(dt) for h in hn)  # (B, L, H) each
        return y, new_state

    def _forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One fused recurrent call over x ``(B, T, D_in)``: the last layer's hidden states
        ``(B, T, d_model)`` and the state after ``x[:, -1]`` (fp32, batch first)."""
        return self._run(x, state, self.checkpointing)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One step of x ``(B, D_in)`` (constant cost) -> ``(B, d_model)``."""
        y, state = self._run(x.unsqueeze(1), state, use_ckpt=False)  # y: (B, 1, H)
        return y[:, 0], state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zeros: ``n_state`` tensors of shape ``(batch_size, n_layers, d_model)`` in fp32."""
        check_batch_size(self.cfg.cell, batch_size)
        shape = (batch_size, self.cfg.n_layers, self.cfg.d_model)
        dt = self._state_dtype()
        device = self._state_device(device)
        return tuple(torch.zeros(shape, device=device, dtype=dt) for _ in range(self._n_state))
