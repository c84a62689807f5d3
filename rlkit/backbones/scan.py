"""Selective scans of the Mamba block (Gu & Dao 2023, https://arxiv.org/abs/2312.00752).

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) B_t,    y_t = C_t · h_t

(symbols as in the glossary of :mod:`rlkit.backbones.mamba`; here D = ``d_inner``). Three
implementations of the same function, each checked against the one before it:

- :func:`selective_scan_sequential`: the reference, one step at a time, autograd through the
  loop, on ``dA_log = Δ·A`` and ``dBx = (Δ·x)·B`` built as (B, T, D, N) tensors;
- :func:`selective_scan_parallel`: the same inputs, chunked so that there are ``2 L + T / L``
  sequential steps instead of ``T`` (the choice on CUDA);
- :func:`selective_scan_fused`: Δ, A, B, C, x in, never a (B, T, D, N) tensor of decays or
  inputs, a hand-written backward that rescans chunk by chunk (the choice on the CPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# The fused scan clamps log-decays at _EXP_FLOOR: exp(-80) ~ 2e-35 is zero next to fp32 outputs,
# and an exponential below fp32 underflow takes a path ~10x slower on the CPU. It takes
# exp2(Δ·A·log2 e), which equals exp(Δ·A) up to rounding and runs ~3x faster than exp there.
_EXP_FLOOR = -80.0
_LOG2E = math.log2(math.e)
_CHUNK_ELEMS = 2**19  # elements of one (L, B, N, D) buffer of the fused scan: 2 MiB in fp32


def selective_scan_sequential(
    dA_log: Tensor, dBx: Tensor, C: Tensor, h0: Tensor
) -> tuple[Tensor, Tensor]:
    """Reference scan, one time step at a time: ``h_t = exp(dA_log_t) h_{t-1} + dBx_t``,
    ``y_t = sum_n C_t[n] h_t[:, n]``.

    Args:
        dA_log: log of the discretised decay, ``Δ·A`` (<= 0), shape ``(B, T, D, N)``.
        dBx: discretised input ``Δ·B·x``, shape ``(B, T, D, N)``.
        C: output matrices, shape ``(B, T, N)``.
        h0: state before the first step, shape ``(B, D, N)``.

    Returns:
        ``(y, h_T)``: outputs ``(B, T, D)`` and the state after the last step ``(B, D, N)``.
    """
    h = h0
    ys = []
    for dA_t, dBx_t, C_t in zip(dA_log.exp().unbind(1), dBx.unbind(1), C.unbind(1)):
        h = dA_t * h + dBx_t  # (B, D, N)
        ys.append(torch.matmul(h, C_t.unsqueeze(-1)).squeeze(-1))  # (B, D)
    if not ys:
        return dBx.new_zeros(dBx.shape[:3]), h0
    return torch.stack(ys, dim=1), h  # (B, T, D), (B, D, N)


def selective_scan_parallel(
    dA_log: Tensor, dBx: Tensor, C: Tensor, h0: Tensor, chunk: int = 32
) -> tuple[Tensor, Tensor]:
    """Chunked scan with the same inputs and outputs as :func:`selective_scan_sequential`.

    Time is cut into ``n_c`` chunks of length ``L = chunk`` (the last one padded with
    ``dA_log = 0, dBx = 0``, which leaves the state unchanged). Three phases, each a Python loop
    of vectorised ops, so ``2 L + n_c`` sequential steps instead of ``T``:

    1. every chunk but the last is scanned from a zero state, all chunks at once, giving its
       local end state;
    2. chunk start states are carried across chunks: ``s_{c+1} = exp(sum_c dA_log) s_c + end_c``
       (the chunk's cumulative decay taken in log space);
    3. every chunk is scanned again from its true start state, all chunks at once, giving ``y``.

    All decays are products of ``exp(dA_log) <= 1`` (no division and no exponential of a
    positive number), so the scan is as stable as the sequential one for any Δ.

    Args:
        dA_log: ``Δ·A`` (<= 0), shape ``(B, T, D, N)``.
        dBx: ``Δ·B·x``, shape ``(B, T, D, N)``.
        C: shape ``(B, T, N)``.
        h0: shape ``(B, D, N)``.
        chunk: chunk length ``L``, a positive integer.

    Returns:
        ``(y, h_T)``: ``(B, T, D)`` and ``(B, D, N)``.
    """
    if not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    bsz, T, D, N = dBx.shape
    if T == 0:
        return dBx.new_zeros(bsz, 0, D), h0
    L = min(chunk, T)
    n_c = -(-T // L)
    pad = n_c * L - T
    if pad:
        dA_log = F.pad(dA_log, (0, 0, 0, 0, 0, pad))  # (B, n_c * L, D, N)
        dBx = F.pad(dBx, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))  # (B, n_c * L, N)
    dA_log = dA_log.view(bsz, n_c, L, D, N)
    dA = dA_log.exp().unbind(2)  # L x (B, n_c, D, N)
    dBx_l = dBx.view(bsz, n_c, L, D, N).unbind(2)  # L x (B, n_c, D, N)
    C_l = C.view(bsz, n_c, L, N, 1).unbind(2)  # L x (B, n_c, N, 1)

    # 1. local end states of chunks 0 .. n_c - 2 (the last chunk's is never needed)
    starts = [h0]
    if n_c > 1:
        end = dBx_l[0][:, :-1]  # (B, n_c - 1, D, N)
        for dA_t, dBx_t in zip(dA[1:], dBx_l[1:]):
            end = dA_t[:, :-1] * end + dBx_t[:, :-1]
        decay = dA_log[:, :-1].sum(dim=2).exp()  # (B, n_c - 1, D, N)
        # 2. carry the state across chunks
        for decay_c, end_c in zip(decay.unbind(1), end.unbind(1)):
            starts.append(decay_c * starts[-1] + end_c)  # (B, D, N)
    h = torch.stack(starts, dim=1)  # (B, n_c, D, N)

    # 3. all chunks from their start states
    ys = []
    for dA_t, dBx_t, C_t in zip(dA, dBx_l, C_l):
        h = dA_t * h + dBx_t  # (B, n_c, D, N)
        ys.append(torch.matmul(h, C_t).squeeze(-1))  # (B, n_c, D)
    y = torch.stack(ys, dim=2).reshape(bsz, n_c * L, D)  # (B, n_c * L, D)
    return y[:, :T], h[:, -1]


def _decays(out: Tensor, A2: Tensor, delta: Tensor) -> Tensor:
    """``exp(Δ·A)`` of one chunk into ``out`` (L, B, N, D), from ``A2 = log2(e)·Aᵀ`` (N, D) and
    Δ (L, B, D)."""
    out = torch.mul(A2, delta.unsqueeze(-2), out=out)
    return out.clamp_(min=_EXP_FLOOR * _LOG2E).exp2_()


class _FusedScan(torch.autograd.Function):
    """The scan of :func:`selective_scan_fused`, with a hand-written backward.

    Time-major, with the state laid out ``(B, N, D)`` so that D is contiguous. Time is cut into
    chunks of ``L`` steps; per chunk the decays ``dA`` and inputs ``(Δ·x)·B`` are formed into two
    reused ``(L, B, N, D)`` buffers, the states are scanned into the second one, and only the
    state before each chunk is saved. The backward scans each chunk again from its saved state,
    runs the reverse recurrence ``g_t = C_t ⊗ dy_t + dA_{t+1} ⊙ g_{t+1}`` (``g_t = dL/dh_t``)
    through it, and reduces the chunk's gradients in a few batched ops.
    """

    @staticmethod
    def forward(ctx, delta, A, B, C, x, h0, L):  # type: ignore[override]
        bsz, T, D = x.shape
        N = A.shape[1]
        dt = delta.transpose(0, 1).contiguous()  # (T, B, D)
        dx = (delta * x).transpose(0, 1).contiguous()  # (T, B, D), Δ·x
        B_t, C_t = B.transpose(0, 1).contiguous(), C.transpose(0, 1).contiguous()  # (T, B, N)
        A2 = (A * _LOG2E).T.contiguous()  # (N, D)
        starts = h0.new_empty(-(-T // L), bsz, N, D)  # the state before each chunk
        y = h0.new_empty(T, bsz, 1, D)
        dA_buf, h_buf = h0.new_empty(L, bsz, N, D), h0.new_empty(L, bsz, N, D)
        h = starts[0].copy_(h0.transpose(1, 2))  # (B, N, D)
        for c, t0 in enumerate(range(0, T, L)):
            s, l = slice(t0, min(T, t0 + L)), min(L, T - t0)
            if c:
                h = starts[c].copy_(h)
            dA = _decays(dA_buf[:l], A2, dt[s])  # (l, B, N, D)
            hs = torch.mul(B_t[s].unsqueeze(-1), dx[s].unsqueeze(-2), out=h_buf[:l])
            for dA_t, h_t in zip(dA, hs):
                h = h_t.addcmul_(dA_t, h)  # h_t = dA_t ⊙ h_{t-1} + (Δ_t x_t) B_t
            torch.bmm(C_t[s].view(l * bsz, 1, N), hs.view(l * bsz, N, D),
                      out=y[s].view(l * bsz, 1, D))  # y_t = C_t · h_t
        ctx.save_for_backward(dt, dx, A, B_t, C_t, x, starts)
        ctx.chunk = L
        return y.view(T, bsz, D).transpose(0, 1), h.transpose(1, 2).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_T):  # type: ignore[override]
        with torch.autocast(device_type=dy.device.type, enabled=False):
            return (*_fused_scan_backward(*ctx.saved_tensors, dy, dh_T, ctx.chunk), None)


def _fused_scan_backward(dt: Tensor, dx: Tensor, A: Tensor, B_t: Tensor, C_t: Tensor, x: Tensor,
                         starts: Tensor, dy: Tensor, dh_T: Tensor, L: int) -> tuple[Tensor, ...]:
    T, (_, bsz, N, D) = dt.shape[0], starts.shape
    A_T = A.T.contiguous()  # (N, D)
    A2 = A_T * _LOG2E
    dy = dy.transpose(0, 1).contiguous()  # (T, B, D)
    grad_dx = dy.new_empty(T, bsz, 1, D)  # w.r.t. Δ·x
    grad_delta = dy.new_empty(T, bsz, D)
    grad_B, grad_C = dy.new_empty(T, bsz, N), dy.new_empty(T, bsz, N)
    grad_A = dy.new_zeros(N, D)
    dA_buf, h_buf, g_buf = (dy.new_empty(L, bsz, N, D) for _ in range(3))
    q = dh_T.transpose(1, 2).contiguous()  # q_{t+1} = dA_{t+1} ⊙ g_{t+1}; at t = T: dL/dh_T
    for c in reversed(range(starts.shape[0])):
        t0 = c * L
        s, l = slice(t0, min(T, t0 + L)), min(L, T - t0)
        dA = _decays(dA_buf[:l], A2, dt[s])  # (l, B, N, D)
        hs = torch.mul(B_t[s].unsqueeze(-1), dx[s].unsqueeze(-2), out=h_buf[:l])
        h = starts[c]
        for dA_t, h_t in zip(dA, hs):
            h = h_t.addcmul_(dA_t, h)  # the chunk's states again
        g = torch.mul(C_t[s].unsqueeze(-1), dy[s].unsqueeze(-2), out=g_buf[:l])  # C_t ⊗ dy_t
        for i in reversed(range(l)):
            q = dA[i].mul_(g[i].add_(q))  # g_t = C_t ⊗ dy_t + q_{t+1}; q_t = dA_t ⊙ g_t
        q = q.clone()  # dA_buf is overwritten below
        torch.bmm(B_t[s].view(l * bsz, 1, N), g.view(l * bsz, N, D),
                  out=grad_dx[s].view(l * bsz, 1, D))  # sum_n g_t B_t
        torch.sum(g.mul_(dx[s].unsqueeze(-2)), -1, out=grad_B[s])  # sum_d g_t Δ_t x_t
        w = dA  # w_t = q_t ⊙ h_{t-1}, the gradient w.r.t. Δ_t·A: (l, B, N, D)
        w[0].mul_(starts[c])
        w[1:].mul_(hs[:-1])
        torch.sum(hs.mul_(dy[s].unsqueeze(-2)), -1, out=grad_C[s])  # sum_d h_t dy_t
        grad_A += torch.mul(w, dt[s].unsqueeze(-2), out=g).sum((0, 1))  # sum_{t, b} w_t Δ_t
        torch.sum(w.mul_(A_T), -2, out=grad_delta[s])  # sum_n w_t A
    grad_dx = grad_dx.view(T, bsz, D)
    grad_delta.addcmul_(grad_dx, x.transpose(0, 1))
    grad_x = grad_dx.mul_(dt)
    return (grad_delta.transpose(0, 1), grad_A.T, grad_B.transpose(0, 1),
            grad_C.transpose(0, 1), grad_x.transpose(0, 1), q.transpose(1, 2))


def selective_scan_fused(
    delta: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor, h0: Tensor,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Selective scan from Δ, A, B, C, x: ``h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) B_t``,
    ``y_t = C_t · h_t``. The same function as :func:`selective_scan_sequential` on
    ``dA_log = Δ·A`` and ``dBx = (Δ·x)·B``, without building those (B, T, D, N) tensors; the
    backward is written by hand and rescans the states chunk by chunk.

    Runs in fp32 (float64 if ``x`` is) with autocast disabled. Decays are ``exp2(Δ·A·log2 e)``
    with ``Δ·A`` clamped at -80 (see ``_EXP_FLOOR``); the gradient w.r.t. ``Δ·A`` is taken as
    the decay times the gradient w.r.t. the decay, also where the clamp is active (< 2e-35).

    Args:
        delta: step sizes Δ (> 0), shape ``(B, T, D)``.
        A: diagonal state matrix (< 0), shape ``(D, N)``.
        B: input matrices, shape ``(B, T, N)``.
        C: output matrices, shape ``(B, T, N)``.
        x: inputs, shape ``(B, T, D)``.
        h0: state before the first step, shape ``(B, D, N)``.
        chunk: steps per chunk, a positive integer; ``None`` for as many as fit a cache-sized
            ``(L, B, N, D)`` buffer (``_CHUNK_ELEMS`` elements; 4 steps at B=32, D=256, N=16).

    Returns:
        ``(y, h_T)``: outputs ``(B, T, D)`` and the state after the last step ``(B, D, N)``.
    """
    bsz, T, D = x.shape
    N = B.shape[-1]
    expected = {"delta": (bsz, T, D), "A": (D, N), "B": (bsz, T, N), "C": (bsz, T, N),
                "h0": (bsz, D, N)}
    for name, t in zip(expected, (delta, A, B, C, h0)):
        if t.shape != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]}, got {tuple(t.shape)}")
    if chunk is not None and (not isinstance(chunk, int) or chunk <= 0):
        raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if T == 0:
        return x.new_zeros(bsz, 0, D, dtype=dtype), h0.to(dtype)
    L = min(T, chunk or max(1, _CHUNK_ELEMS // max(1, bsz * N * D)))
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _FusedScan.apply(*(t.to(dtype) for t in (delta, A, B, C, x, h0)), L)
