"""Mamba-2: state-space duality (SSD) (Dao & Gu 2024, https://arxiv.org/abs/2405.21060).

Each block projects its input to a gate ``z``, a stream ``x`` of H heads of width P, the input /
output matrices ``B``, ``C`` (shared by all heads) and a step size ``dt`` per head. ``(x, B, C)``
go through a short causal depthwise convolution and SiLU, then through an SSM whose state matrix
is a scalar times the identity per head:

    h_t = a_t h_{t-1} + dt_t x_t B_t^T,     y_t = h_t C_t + D x_t,     a_t = exp(dt_t A),

with ``h`` of shape (P, N) per head. A scalar decay makes the sequence map a masked matrix
``y = (L ∘ C B^T) (dt x)`` with ``L[t, s] = exp(sum_{s<k<=t} dt_k A)`` (the "duality"), so
:func:`ssd_chunked` does the work as matrix products inside chunks of length Q and carries only
the chunk-boundary states by a recurrence; :func:`ssd_sequential` is the plain recurrence.
The output is gated and normalised, ``RMSNorm(y * SiLU(z))`` (gate, then norm, as in Mamba-2).

Glossary (paper symbol -> code name, shapes with B = batch, T = time):
    H, P           heads ``n_heads`` and head dim ``head_dim``: ``d_inner = H P = expand d_model``.
    N              state size ``d_state``; B, C are ``B_ssm``, ``C_ssm`` (B, T, N), one group.
    A              one scalar per head ``A = -exp(A_log)`` (H,); init -A evenly over [1, 16].
    Δ (dt)         step size ``dt = softplus(dt_raw + dt_bias)`` (B, T, H), one per head.
    a_t            decay ``exp(dt_t A)``; the scans take its log ``dA_log = dt A`` (<= 0).
    D              skip ``D`` (H,).
    Q              chunk length (at most ``chunk``); L: the (Q, Q) segment-sum decay matrix.
    conv state     the last ``d_conv - 1`` inputs (x, B, C) of the causal convolution.

Precision: the weights are fp32 (half-precision weights are refused; mixed precision is
autocast), and ``A_log``, ``D`` and ``dt_bias`` are read in fp32; dt, the decays, their
cumulative sums and exponentials and the whole SSD run in fp32 with autocast disabled (so does
the short convolution), the RMSNorms take fp32 inputs, and the returned states are fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from rlkit.backbones.base import (
    Backbone,
    BackboneConfig,
    State,
    check_batch_size,
    check_state_shapes,
    positive_ints,
)

_DT_MIN, _DT_MAX = 1e-3, 1e-1  # range of the initial step sizes dt
_A_MIN, _A_MAX = 1.0, 16.0  # range of the initial -A
# Log-decays are clamped here before exp: exp(-80) ~ 2e-35 is zero next to fp32 outputs, and
# exp of arguments below about -87 (fp32 underflow) takes a path ~10x slower on the CPU.
_EXP_FLOOR = -80.0


@dataclass(frozen=True)
class Mamba2Config(BackboneConfig):
    """Options of :class:`Mamba2Backbone`."""

    d_state: int = 16
    """State size N (shared B, C); 16 keeps the state as large as Mamba's (d_inner N floats)."""
    d_conv: int = 4
    """Width of the causal depthwise convolution (the conv state keeps ``d_conv - 1`` inputs)."""
    expand: int = 2
    """Expansion factor: the block works at width ``d_inner = expand * d_model``."""
    head_dim: int = 16
    """Head dim P; ``expand * d_model`` must be a multiple of it (H = d_inner / P heads)."""
    chunk: int = 32
    """Longest chunk of the SSD: T is cut into ``n_c = ceil(T / chunk)`` chunks of the same length
    ``Q = ceil(T / n_c)`` ((Q, Q) products inside chunks, a recurrence of n_c steps)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_ints(self, "d_state", "d_conv", "expand", "head_dim", "chunk")
        if (self.expand * self.d_model) % self.head_dim:
            raise ValueError(
                f"d_inner = expand * d_model = {self.expand * self.d_model} must be divisible by "
                f"head_dim, got expand={self.expand}, d_model={self.d_model}, "
                f"head_dim={self.head_dim}"
            )


def _decay(log_decay: Tensor) -> Tensor:
    return torch.exp(log_decay.clamp(min=_EXP_FLOOR))


def _below(q: int, device: torch.device) -> Tensor:
    """``(q, q)`` bool, true strictly below the diagonal (row i > column j)."""
    return torch.ones(q, q, dtype=torch.bool, device=device).tril_(-1)


class _SegmentDecay(torch.autograd.Function):
    """``L ∘ CB`` from the per-step log-decays ``a`` (..., H, Q) and a lower-triangular ``CB``
    (..., 1, Q, Q), with ``L[i, j] = exp(a_{j+1} + ... + a_i)`` clamped to ``[_EXP_FLOOR, 0]``
    in the exponent (above the diagonal, where CB is 0, that gives 1 and no overflow).

    Each exponent is summed over its own segment (a masked cumulative sum), not taken as the
    difference ``s_i - s_j`` of two running sums: after one large ``|dt A|`` both sums are large
    and their difference would lose the digits that the recurrence of :meth:`step` keeps. The
    backward takes one (..., H, Q, Q) temporary where autograd through the same ops takes more."""

    @staticmethod
    def forward(ctx, a: Tensor, CB: Tensor) -> Tensor:  # type: ignore[override]
        # (..., H, Q, Q): the sum of a over (j, i]
        seg = (a.unsqueeze(-1) * _below(a.shape[-1], a.device)).cumsum(-2)
        L = seg.clamp_(_EXP_FLOOR, 0.0).exp_()  # (..., H, Q, Q)
        ctx.save_for_backward(L, CB)
        return L * CB

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        L, CB = ctx.saved_tensors
        G = grad * L  # (..., H, Q, Q)
        grad_CB = G.sum(-3, keepdim=True)
        G.mul_(CB)  # the gradient w.r.t. the exponent of L[i, j], i >= j
        # a_k is in the exponents of i >= k > j: summed directly (no difference of sums), each
        # row's prefix P[i, c] = sum over j <= c, then over the rows i > c: a_{c+1}'s gradient
        # (..., H, Q): index c holds a_{c+1}'s
        per_c = G.cumsum_(-1).mul_(_below(G.shape[-1], G.device)).sum(-2)
        return F.pad(per_c[..., :-1], (1, 0)), grad_CB  # a_0 is in no exponent


def ssd_sequential(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """Reference SSD, one time step at a time: ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T``,
    ``y_t = h_t C_t + D x_t`` per head.

    Args:
        x: inputs, shape ``(B, T, H, P)``.
        dt: step sizes (> 0), shape ``(B, T, H)``.
        A: decay rates (< 0), shape ``(H,)``.
        B, C: input / output matrices, shape ``(B, T, N)`` each.
        D: skip, shape ``(H,)``.
        h0: state before the first step, shape ``(B, H, P, N)``.

    Returns:
        ``(y, h_T)``: outputs ``(B, T, H, P)`` and the state after the last step ``(B, H, P, N)``.
    """
    h, ys = h0, []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        dBx = (dt_t.unsqueeze(-1) * x_t).unsqueeze(-1) * B_t[:, None, None, :]  # (B, H, P, N)
        h = torch.exp(dt_t * A)[..., None, None] * h + dBx
        ys.append(torch.matmul(h, C_t[:, None, :, None]).squeeze(-1) + D[:, None] * x_t)
    if not ys:
        return x.clone(), h0
    return torch.stack(ys, dim=1), h  # (B, T, H, P), (B, H, P, N)


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor,
                chunk: int = 32) -> tuple[Tensor, Tensor]:
    """Chunked SSD with the inputs and outputs of :func:`ssd_sequential`.

    Time is cut into ``n_c = ceil(T / chunk)`` chunks of length ``Q = ceil(T / n_c)`` (at most
    ``chunk``; T = 65 and chunk 32 give 3 chunks of 22, not 32 + 32 + 1 padded to 96), the end
    padded by fewer than ``n_c`` steps with ``dt = 0`` (decay 1, no input), which leaves the
    state unchanged. Per chunk, with
    ``s = cumsum(dt A)`` over the chunk and ``h_-`` the state before it:

    1. inside: ``y = (L ∘ C B^T) (dt x)``, ``L[i, j] = exp(s_i - s_j)`` for ``i >= j``, else 0;
    2. end state from inside: ``(dt x)^T (exp(s_-1 - s) ∘ B)``, shape (H, P, N);
    3. boundary states ``h_- <- exp(s_-1) h_- + (2.)``, a recurrence over the ``n_c`` chunks;
    4. start state to output: ``y += exp(s) ∘ C h_-^T``.

    Every exponent is a sum of ``dt A <= 0`` (no exponential of a positive number) over its own
    steps, ``s_i - s_j`` and ``s_-1 - s`` summed directly rather than subtracted (which would
    lose digits after one large ``|dt A|``), clamped at ``_EXP_FLOOR``. Args and returns as
    :func:`ssd_sequential`, plus ``chunk`` (Q, > 0).
    """
    if not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    bsz, T, H, P = x.shape
    N = B.shape[-1]
    if T == 0:
        return x.clone(), h0
    n_c = -(-T // chunk)
    Q = -(-T // n_c)
    pad = n_c * Q - T
    dA_log, B_c, C_c = dt * A, B, C  # dA_log: (B, T, H)
    xdt = x * dt.unsqueeze(-1)  # (B, T, H, P)
    if pad:
        dA_log, B_c, C_c = (F.pad(t, (0, 0, 0, pad)) for t in (dA_log, B_c, C_c))
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
    a = dA_log.reshape(bsz, n_c, Q, H)  # (B, n_c, Q, H)
    s = a.cumsum(2)  # (B, n_c, Q, H): the decay from the chunk's start
    xdt = xdt.reshape(bsz, n_c, Q, H, P)
    B_c, C_c = B_c.reshape(bsz * n_c, Q, N), C_c.reshape(bsz * n_c, Q, N)

    # 1. inside each chunk: L ∘ C B^T per head, one bmm over (B, n_c, H)
    CB = torch.bmm(C_c, B_c.transpose(1, 2)).tril().view(bsz, n_c, 1, Q, Q)
    M = _SegmentDecay.apply(a.transpose(2, 3).contiguous(), CB)  # (B, n_c, H, Q, Q)
    x_h = xdt.transpose(2, 3).reshape(-1, Q, P)  # (B n_c H, Q, P)
    y = torch.bmm(M.view(-1, Q, Q), x_h)  # (B n_c H, Q, P)
    y = y.view(bsz, n_c, H, Q, P).transpose(2, 3)  # (B, n_c, Q, H, P)

    # 2. each chunk's end state from a zero start; B is shared, so heads and P are one axis
    after = a.flip(2).cumsum(2).flip(2)[:, :, 1:]  # (B, n_c, Q - 1, H): sum of a over (i, Q)
    to_end = _decay(F.pad(after, (0, 0, 0, 1))).unsqueeze(-1)  # (B, n_c, Q, H, 1)
    W = (xdt * to_end).reshape(bsz * n_c, Q, H * P)
    local = torch.bmm(W.transpose(1, 2), B_c).view(bsz, n_c, H, P, N)

    # 3. carry the state across chunk boundaries
    chunk_decay = _decay(s[:, :, -1])[..., None, None]  # (B, n_c, H, 1, 1)
    starts, h = [], h0
    for decay_c, local_c in zip(chunk_decay.unbind(1), local.unbind(1)):
        starts.append(h)
        h = decay_c * h + local_c  # (B, H, P, N)
    h_start = torch.stack(starts, dim=1).view(bsz * n_c, H * P, N)

    # 4. the start state's contribution, decayed to each step
    y_off = torch.bmm(C_c, h_start.transpose(1, 2)).view(bsz, n_c, Q, H, P)
    y = (y_off * _decay(s).unsqueeze(-1) + y).reshape(bsz, n_c * Q, H, P)[:, :T]
    return y + D[:, None] * x, h


class Mamba2Block(nn.Module):
    """Pre-norm residual Mamba-2 block:
    ``x + out_proj(RMSNorm(SSD(SiLU(conv(x, B, C))) * SiLU(z)))``."""

    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        d_model, N = cfg.d_model, cfg.d_state
        d_inner = cfg.expand * d_model
        self.d_inner, self.d_state, self.d_conv, self.chunk = d_inner, N, cfg.d_conv, cfg.chunk
        self.head_dim, self.n_heads = cfg.head_dim, d_inner // cfg.head_dim
        self.conv_dim = d_inner + 2 * N  # (x, B, C)
        H = self.n_heads

        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        self.in_proj = nn.Linear(d_model, d_inner + self.conv_dim + H, bias=False)  # z, xBC, dt
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.d_conv, groups=self.conv_dim)
        self.norm_y = nn.RMSNorm(d_inner, eps=1e-5)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

        # dt = softplus(dt_bias) spans [_DT_MIN, _DT_MAX] log-uniformly over heads at init
        dt = torch.logspace(math.log10(_DT_MIN), math.log10(_DT_MAX), H)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.linspace(_A_MIN, _A_MAX, H)))
        self.D = nn.Parameter(torch.ones(H))

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z, xBC and dt (fp32) from the block input ``x`` (..., d_model)."""
        z, xBC, dt_raw = self.in_proj(self.norm(x.float())).split(
            [self.d_inner, self.conv_dim, self.n_heads], dim=-1
        )
        with torch.autocast(device_type=x.device.type, enabled=False):
            dt = F.softplus(dt_raw.float() + self.dt_bias.float())  # (..., H)
        return z, xBC, dt

    def _conv(self, window: Tensor) -> Tensor:
        """SiLU of the causal depthwise convolution with ``conv1d``'s weights, as K shifted
        multiply-adds in the time-major layout: ``(B, K-1+T, conv_dim)`` -> ``(B, T, conv_dim)``."""
        K, T = self.d_conv, window.shape[1] - self.d_conv + 1
        weight = self.conv1d.weight.squeeze(1).t()  # (K, conv_dim)
        out = torch.addcmul(self.conv1d.bias, window[:, :T], weight[0])
        for k in range(1, K):
            out = torch.addcmul(out, window[:, k : k + T], weight[k])
        return F.silu(out)

    def _ssm(self, xBC: Tensor, dt: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        """The SSD on the conv output ``xBC`` (B, T, conv_dim) and ``dt`` (B, T, H) from ``h0``
        (B, H, P, N), in fp32: ``y`` (B, T, d_inner) and the state after the last step."""
        bsz, T, _ = xBC.shape
        with torch.autocast(device_type=xBC.device.type, enabled=False):
            xs, B_ssm, C_ssm = xBC.float().split([self.d_inner, self.d_state, self.d_state], -1)
            xs = xs.reshape(bsz, T, self.n_heads, self.head_dim)  # (B, T, H, P)
            A = -torch.exp(self.A_log.float())  # (H,)
            if T == 1:  # acting: the recurrence itself
                y, h = ssd_sequential(xs, dt, A, B_ssm, C_ssm, self.D.float(), h0.float())
            else:
                y, h = ssd_chunked(xs, dt, A, B_ssm, C_ssm, self.D.float(), h0.float(), self.chunk)
        return y.reshape(bsz, T, self.d_inner), h

    def forward(self, x: Tensor, h0: Tensor, conv0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Args: x ``(B, T, d_model)``, h0 ``(B, H, P, N)``, conv0 ``(B, conv_dim, d_conv - 1)``.
        Returns the block output ``(B, T, d_model)`` and the two states after the last step."""
        z, xBC, dt = self._project(x)  # (B, T, d_inner), (B, T, conv_dim), (B, T, H)
        window = torch.cat([conv0.transpose(1, 2).to(xBC.dtype), xBC], dim=1)  # (B, K-1+T, C)
        conv_state = window[:, window.shape[1] - (self.d_conv - 1) :].transpose(1, 2).float()
        y, h = self._ssm(self._conv(window), dt, h0)  # (B, T, d_inner)
        y = self.norm_y(y * F.silu(z.float()))  # gate, then norm
        return x + self.out_proj(y), h, conv_state

    def step(self, x: Tensor, h: Tensor, conv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step: x ``(B, d_model)``, h ``(B, H, P, N)``, conv ``(B, conv_dim, d_conv - 1)``."""
        y, h, conv = self(x.unsqueeze(1), h, conv)
        return y.squeeze(1), h, conv


class Mamba2Backbone(Backbone):
    """Input projection, ``n_layers`` pre-norm residual Mamba-2 blocks, final RMSNorm.

    State: ``(ssm, conv)``, fp32, ``ssm`` of shape ``(B, n_layers, H, P, d_state)`` and ``conv``
    of shape ``(B, n_layers, d_inner + 2 d_state, d_conv - 1)``; zeros at an episode start.
    """

    float64 = False  # float32 islands (Δ, the decays, the scan)

    def __init__(self, d_in: int, cfg: Mamba2Config) -> None:
        super().__init__(d_in, cfg)
        self.embed = nn.Linear(d_in, cfg.d_model)
        self.blocks = nn.ModuleList(Mamba2Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model, eps=1e-5)

    def _state_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        block = self.blocks[0]
        n = (batch_size, self.cfg.n_layers)
        return [(*n, block.n_heads, block.head_dim, block.d_state),
                (*n, block.conv_dim, block.d_conv - 1)]

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zero states ``(ssm, conv)``, shapes as in the class docstring."""
        check_batch_size("Mamba2", batch_size)
        device = self._state_device(device)
        return tuple(torch.zeros(s, device=device) for s in self._state_shapes(batch_size))

    def _check_state(self, state: State, batch_size: int) -> None:
        check_state_shapes("Mamba2", state, self._state_shapes(batch_size))

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
