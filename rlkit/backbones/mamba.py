"""Mamba: a selective state-space backbone (Gu & Dao 2023, https://arxiv.org/abs/2312.00752).

Each block projects its input to a stream ``x`` and a gate ``z``, runs ``x`` through a short causal
depthwise convolution and a diagonal state-space model whose step size and input/output matrices
depend on the token (the "selection"), and gates the result with ``SiLU(z)``.

Glossary (paper symbol -> code name, shapes with B = batch, T = time, E·D = ``d_inner``):
    Δ (delta, dt)  per-token, per-channel step size ``delta`` (B, T, E·D) =
                   softplus(dt_proj(Δ_raw)); Δ_raw has ``dt_rank`` features.
    A              diagonal state matrix ``A = -exp(A_log)`` (E·D, N); S4D-Real init -(1, ..., N).
    B, C           token-dependent input / output matrices ``B_ssm``, ``C_ssm`` (B, T, N).
    D              skip connection ``D`` (E·D,).
    N              state size per channel, ``d_state``.
    E              expansion factor ``expand``: ``d_inner = expand * d_model``.
    conv state     the last ``d_conv - 1`` inputs of the causal convolution, so that windows
                   (and single steps) can be chained.
    ZOH            zero-order hold: ``dA = exp(Δ·A)``; B is discretised as ``Δ·B`` (Euler), as in
                   Mamba. The reference scans take ``dA_log = Δ·A`` (the log of ``dA``, always
                   <= 0); the fused scan takes Δ, A, B, C and x and forms ``dA`` chunk by chunk.

Precision: the weights are fp32 (half-precision weights are refused; mixed precision is
autocast), and ``A_log``, ``D`` and ``dt_proj.bias`` are read in fp32; the causal convolution,
Δ, the discretisation and the scan run in fp32 with autocast disabled (so forward and step agree
under autocast too), the RMSNorms take fp32 inputs, and the returned states are fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlkit.backbones.base import (
    Backbone,
    BackboneConfig,
    State,
    check_batch_size,
    check_state_shapes,
    positive_ints,
)
from rlkit.backbones.scan import (
    selective_scan_fused,
    selective_scan_parallel,
    selective_scan_sequential,
)
from rlkit.fields import is_count

_DT_MIN, _DT_MAX = 1e-3, 1e-1  # range of the initial step sizes Δ


@dataclass(frozen=True)
class MambaConfig(BackboneConfig):
    """Options of :class:`MambaBackbone`."""

    d_state: int = 16
    """State size N per channel."""
    d_conv: int = 4
    """Width of the causal depthwise convolution (the conv state keeps ``d_conv - 1`` inputs)."""
    expand: int = 2
    """Expansion factor E: the block works at width ``d_inner = expand * d_model``."""
    dt_rank: int | None = None
    """Rank of the Δ projection; ``None`` for ``ceil(d_model / 16)``."""
    chunk: int = 32
    """Chunk length L of the parallel scan: 2 L + T / L sequential steps, fewest at sqrt(T/2)."""
    scan: Literal["auto", "fused", "parallel", "sequential"] = "auto"
    """Which scan ``forward`` uses; all give the same result up to rounding. ``auto``: the
    parallel scan on CUDA (fewer sequential steps, each a cheap launch) and the fused one on the
    CPU, where each step is bound by memory traffic: it never builds the (B, T, E·D, N) decays
    and inputs, and its backward is written by hand. ``sequential`` (autograd through a loop
    over T) is the reference for both."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_ints(self, "d_state", "d_conv", "expand", "chunk")
        if self.dt_rank is not None and not is_count(self.dt_rank):
            raise ValueError(f"dt_rank must be a positive integer or None, got {self.dt_rank!r}")
        if self.scan not in ("auto", "fused", "parallel", "sequential"):
            raise ValueError(
                f"scan must be 'auto', 'fused', 'parallel' or 'sequential', got {self.scan!r}"
            )


class MambaBlock(nn.Module):
    """Pre-norm residual Mamba block: ``x + out_proj(SSM(SiLU(conv(x_in))) * SiLU(z))``."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        d_model, N = cfg.d_model, cfg.d_state
        d_inner = cfg.expand * d_model
        self.d_inner, self.d_state, self.d_conv = d_inner, N, cfg.d_conv
        self.dt_rank = cfg.dt_rank or math.ceil(d_model / 16)
        self.scan, self.chunk = cfg.scan, cfg.chunk

        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, cfg.d_conv, groups=d_inner)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

        # Δ = softplus(bias) spans [_DT_MIN, _DT_MAX] log-uniformly at init (inverse softplus)
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
            dt = torch.logspace(math.log10(_DT_MIN), math.log10(_DT_MAX), d_inner)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(d_inner, 1)  # (E·D, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))

    def _ssm_inputs(self, xs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Δ (fp32), -exp(A_log), B and C from the conv output ``xs`` (..., E·D)."""
        dt_raw, B_ssm, C_ssm = self.x_proj(xs).split([self.dt_rank, self.d_state, self.d_state], -1)
        with torch.autocast(device_type=xs.device.type, enabled=False):
            w, b = self.dt_proj.weight.float(), self.dt_proj.bias.float()
            delta = F.softplus(F.linear(dt_raw.float(), w, b))  # (..., E·D)
            A = -torch.exp(self.A_log.float())  # (E·D, N)
        return delta, A, B_ssm.float(), C_ssm.float()

    def forward(self, x: Tensor, h0: Tensor, conv0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Args: x ``(B, T, d_model)``, h0 ``(B, E·D, N)``, conv0 ``(B, E·D, d_conv - 1)``.
        Returns the block output ``(B, T, d_model)`` and the two states after the last step."""
        xs, z = self.in_proj(self.norm(x.float())).chunk(2, dim=-1)  # (B, T, E·D) each
        window = torch.cat([conv0.to(xs.dtype), xs.transpose(1, 2)], dim=2)  # (B, E·D, K-1+T)
        conv_state = window[:, :, window.shape[2] - (self.d_conv - 1) :].float()
        with torch.autocast(device_type=x.device.type, enabled=False):  # fp32, as in step
            conv = self.conv1d
            xs = F.conv1d(window.float(), conv.weight.float(), conv.bias.float(),
                          groups=conv.groups)
        xs = F.silu(xs).transpose(1, 2)  # (B, T, E·D)
        delta, A, B_ssm, C_ssm = self._ssm_inputs(xs)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xs, h0 = xs.float(), h0.float()
            scan = self.scan if self.scan != "auto" else ("parallel" if xs.is_cuda else "fused")
            if scan == "fused":
                y, h = selective_scan_fused(delta, A, B_ssm, C_ssm, xs, h0)
            else:
                dA_log = delta.unsqueeze(-1) * A  # (B, T, E·D, N)
                dBx = (delta * xs).unsqueeze(-1) * B_ssm.unsqueeze(2)  # (B, T, E·D, N)
                if scan == "parallel":
                    y, h = selective_scan_parallel(dA_log, dBx, C_ssm, h0, self.chunk)
                else:
                    y, h = selective_scan_sequential(dA_log, dBx, C_ssm, h0)
            y = y + self.D.float() * xs  # (B, T, E·D)
        y = y * F.silu(z)
        return x + self.out_proj(y), h, conv_state

    def step(self, x: Tensor, h: Tensor, conv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step: x ``(B, d_model)``, h ``(B, E·D, N)``, conv ``(B, E·D, d_conv - 1)``."""
        xs, z = self.in_proj(self.norm(x.float())).chunk(2, dim=-1)  # (B, E·D) each
        window = torch.cat([conv.to(xs.dtype), xs.unsqueeze(-1)], dim=-1)  # (B, E·D, K)
        weight = self.conv1d.weight.squeeze(1)  # (E·D, K)
        xs = F.silu((window * weight).sum(-1) + self.conv1d.bias)  # (B, E·D)
        delta, A, B_ssm, C_ssm = self._ssm_inputs(xs)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xs = xs.float()
            dA = torch.exp(delta.unsqueeze(-1) * A)  # (B, E·D, N)
            h = dA * h.float() + (delta * xs).unsqueeze(-1) * B_ssm.unsqueeze(1)
            y = torch.matmul(h, C_ssm.unsqueeze(-1)).squeeze(-1) + self.D.float() * xs
        y = y * F.silu(z)
        return x + self.out_proj(y), h, window[:, :, 1:].float()


class MambaBackbone(Backbone):
    """Input projection, ``n_layers`` pre-norm residual Mamba blocks, final RMSNorm.

    State: ``(ssm, conv)``, fp32, ``ssm`` of shape ``(B, n_layers, d_inner, d_state)`` and
    ``conv`` of shape ``(B, n_layers, d_inner, d_conv - 1)``; zeros at an episode start.
    """

    float64 = False  # float32 islands (Δ, the decays, the scan)

    def __init__(self, d_in: int, cfg: MambaConfig) -> None:
        super().__init__(d_in, cfg)
        self.embed = nn.Linear(d_in, cfg.d_model)
        self.blocks = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model, eps=1e-5)

    def _state_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        block = self.blocks[0]
        shape = (batch_size, self.cfg.n_layers, block.d_inner)
        return [(*shape, block.d_state), (*shape, block.d_conv - 1)]

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zero states ``(ssm, conv)``, shapes as in the class docstring."""
        check_batch_size("Mamba", batch_size)
        device = self._state_device(device)
        return tuple(torch.zeros(s, device=device) for s in self._state_shapes(batch_size))

    def _check_state(self, state: State, batch_size: int) -> None:
        check_state_shapes("Mamba", state, self._state_shapes(batch_size))

    def _forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """x ``(B, T, d_in)``, state ``(ssm, conv)`` or ``None`` -> y ``(B, T, d_model)``."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        self._check_state(state, x.shape[0])
        h, state = self.run_blocks(self.blocks, self.embed(x), state)  # h: (B, T, d_model)
        return self.norm_f(h.float()), state

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x ``(B, d_in)``, state ``(ssm, conv)`` -> y ``(B, d_model)``."""
        self._check_state(state, x.shape[0])
        h, state = self.run_blocks(self.blocks, self.embed(x), state, step=True)  # (B, d_model)
        return self.norm_f(h.float()), state
