"""Causal Transformer backbone with a sliding attention window and a bounded KV cache.

Architecture: ``Linear(d_in -> d_model)``, then ``n_layers`` pre-norm blocks
(``h += proj(attn(LN(h)))``; ``h += MLP(LN(h))`` with GELU), then a final LayerNorm. Each position
attends to itself and the ``K - 1`` previous positions (window ``K = cfg.context``). Positions
enter through rotary embeddings computed from per-row absolute positions carried in the state,
so attention scores depend on relative positions only and a window slid by ``step`` equals the
window of ``forward``.

Attention paths (all through ``F.scaled_dot_product_attention``):

- fresh state (``state=None``) and ``T <= K``: ``is_causal=True`` and no mask, so PyTorch may pick
  its FlashAttention kernel; this is the training fast path.
- otherwise: the cached keys are concatenated in front of the new keys and an explicit boolean
  mask keeps, for query ``i``, the keys in the window ``[i - K + 1, i]`` that are valid (cache
  entries of a fresh or reset row are invalid). Every query sees at least itself, so no row of
  the mask is empty and no NaN can appear. Sequences longer than ``K`` are processed in chunks of
  ``K`` carrying the cache, which costs ``O(T K)`` instead of ``O(T^2)``; the first chunk of a
  fresh state still takes the fast path.
- ``step`` is the second path with ``T = 1``: one query against the ``K - 1`` cached keys and
  itself, never ``is_causal`` (with one query PyTorch aligns that mask top-left and the query
  would see only the first key).

State (batch first, stored fp32 or fp64 for an fp64 model; zeros are the initial state, so the
base :meth:`Backbone.reset_state` resets a row):

- ``k``: ``(B, n_layers, K - 1, n_heads, head_dim)`` the last ``K - 1`` keys, already rotated,
  right-aligned (slot ``K - 2`` is the most recent);
- ``v``: ``(B, n_layers, K - 1, n_heads, head_dim)`` the matching values;
- ``n_valid``: ``(B,)`` how many of the last slots hold real entries (integer valued, ``<= K - 1``);
- ``pos``: ``(B,)`` the absolute position of the next input (integer valued).

Glossary (paper symbol -> code name):
    Q, K, V (queries, keys, values)   -> ``q``, ``k``, ``v`` of shape ``(B, T, n_heads, head_dim)``
    K (window length, context)         -> ``cfg.context``; cache length ``C = K - 1`` -> ``n_cache``
    RoPE (rotary position embedding)   -> :func:`_rotate`, angles from :meth:`_rope_angles`
    theta_i (RoPE frequencies)         -> ``inv_freq``, base ``cfg.rope_base``
    d_model, h, d_head                 -> ``cfg.d_model``, ``cfg.n_heads``, ``head_dim``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rlkit.backbones.base import (
    Backbone,
    BackboneConfig,
    State,
    check_batch_size,
    positive_ints,
    real_number,
)


@dataclass(frozen=True)
class TransformerConfig(BackboneConfig):
    """Options of :class:`TransformerBackbone` (the common ones plus attention sizes)."""

    n_heads: int = 4
    """Number of attention heads; must divide ``d_model`` into an even ``head_dim``."""
    context: int = 64
    """Attention window ``K``: each position attends to itself and the ``K - 1`` previous ones."""
    mlp_ratio: int = 4
    """Hidden width of each block's MLP, as a multiple of ``d_model``."""
    rope_base: float = 10000.0
    """Base of the rotary frequencies ``theta_i = base ** (-2 i / head_dim)``."""
    branch_init: float = 1.0
    """Scale of each residual branch's last layer (``proj`` and the MLP's output) at
    initialisation, times PyTorch's default: 0 starts every block as the identity (ReZero,
    Fixup, GTrXL), so that the untrained Transformer is a per-step network."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_ints(self, "n_heads", "context", "mlp_ratio")
        real_number(self, "rope_base", "branch_init")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={self.d_model}, "
                f"n_heads={self.n_heads}"
            )
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(
                "rotary embeddings need an even head_dim = d_model / n_heads, got "
                f"{self.d_model} / {self.n_heads} = {self.d_model // self.n_heads}"
            )
        if self.rope_base <= 1.0:
            raise ValueError(f"rope_base must be greater than 1, got {self.rope_base}")
        if not 0.0 <= self.branch_init < float("inf"):
            raise ValueError(f"branch_init must be a finite number >= 0, got {self.branch_init}")


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE on the two halves of the last dim, in fp32 (fp64 for a float64 model): x
    ``(B, T, H, Dh)``, cos/sin ``(B, T, 1, Dh / 2)``."""
    x1, x2 = x.to(torch.promote_types(x.dtype, torch.float32)).chunk(2, dim=-1)  # (B, T, H, Dh/2)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, T, H, Dh)


def _window_mask(n_valid: Tensor, t: int, n_cache: int) -> Tensor:
    """``(B, 1, t, n_cache + t)`` bool: query ``i`` sees key ``j`` (``j < n_cache``: cache slot,
    else new key ``j - n_cache``) iff ``i <= j <= i + n_cache`` (causal, window ``n_cache + 1``)
    and ``j >= n_cache - n_valid`` (a valid cache entry)."""
    i = torch.arange(t, device=n_valid.device)[:, None]  # (t, 1)
    j = torch.arange(n_cache + t, device=n_valid.device)[None, :]  # (1, n_cache + t)
    band = (j >= i) & (j <= i + n_cache)  # (t, n_cache + t)
    valid = j >= (n_cache - n_valid.long())[:, None]  # (B, n_cache + t)
    return (band[None] & valid[:, None, :]).unsqueeze(1)  # (B, 1, t, n_cache + t)


def _last(x: Tensor, n: int) -> Tensor:
    """The last ``n`` entries of x ``(B, N, H, Dh)`` along time, zero-padded on the left."""
    if x.shape[1] >= n:
        return x[:, x.shape[1] - n :]  # (B, n, H, Dh)
    pad = x.new_zeros(x.shape[0], n - x.shape[1], *x.shape[2:])
    return torch.cat((pad, x), dim=1)  # (B, n, H, Dh)


class Block(nn.Module):
    """Pre-norm Transformer block: causal windowed self-attention and a GELU MLP."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.head_dim = cfg.n_heads, d // cfg.n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d)
        )
        if cfg.branch_init != 1.0:  # the residual branches' last layers, scaled at the start
            with torch.no_grad():
                for p in (*self.proj.parameters(), *self.mlp[2].parameters()):
                    p.mul_(cfg.branch_init)

    def forward(
        self,
        h: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache_k: Tensor | None,
        cache_v: Tensor | None,
        mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Apply the block to a chunk.

        Args:
            h: residual stream, shape ``(B, T, D)``.
            cos, sin: rotary factors for the chunk's positions, ``(B, T, 1, head_dim / 2)``.
            cache_k, cache_v: cached rotated keys / values ``(B, C, H, head_dim)``, or ``None``
                for a fresh state with ``T <= K`` (the ``is_causal`` fast path).
            mask: ``(B, 1, T, C + T)`` boolean attention mask, ``None`` on the fast path.

        Returns:
            ``(h, k, v)``: the new residual stream ``(B, T, D)`` and every key / value the chunk
            attended over (cache then new), ``(B, C + T, H, head_dim)`` (``C = 0`` when fresh).
        """
        b, t, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(d, dim=-1)  # (B, T, D) each
        dt = v.dtype  # the compute dtype (bf16 under autocast)
        q = _rotate(q.view(b, t, self.n_heads, self.head_dim), cos, sin).to(dt)  # (B, T, H, Dh)
        k = _rotate(k.view(b, t, self.n_heads, self.head_dim), cos, sin).to(dt)  # (B, T, H, Dh)
        v = v.view(b, t, self.n_heads, self.head_dim)  # (B, T, H, Dh)
        if cache_k is None or cache_v is None:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )  # (B, H, T, Dh)
        else:
            k = torch.cat((cache_k.to(dt), k), dim=1)  # (B, C + T, H, Dh)
            v = torch.cat((cache_v.to(dt), v), dim=1)  # (B, C + T, H, Dh)
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
            )  # (B, H, T, Dh)
        h = h + self.proj(out.transpose(1, 2).reshape(b, t, d))  # (B, T, D)
        h = h + self.mlp(self.ln2(h))  # (B, T, D)
        return h, k, v


class TransformerBackbone(Backbone):
    """Causal sliding-window Transformer with rotary positions and a bounded KV cache.

    Args:
        d_in: input feature dimension ``D_in``.
        cfg: sizes and attention options; see :class:`TransformerConfig`.
    """

    half_weights = True  # computes in float16 / bfloat16 weights as given

    def __init__(self, d_in: int, cfg: TransformerConfig) -> None:
        super().__init__(d_in, cfg)
        self.head_dim = cfg.d_model // cfg.n_heads
        self.n_cache = cfg.context - 1
        self.in_proj = nn.Linear(d_in, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def _state_dtype(self) -> torch.dtype:
        return torch.promote_types(self.in_proj.weight.dtype, torch.float32)

    def _rope_angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos and sin ``(B, T, 1, head_dim / 2)`` for absolute positions ``(B, T)``."""
        exponent = torch.arange(0, self.head_dim, 2, device=positions.device, dtype=positions.dtype)
        inv_freq = self.cfg.rope_base ** (-exponent / self.head_dim)  # (Dh / 2,)
        angles = positions[..., None] * inv_freq  # (B, T, Dh / 2)
        return angles.cos().unsqueeze(2), angles.sin().unsqueeze(2)

    def _check_state(self, state: State, batch_size: int) -> None:
        if len(state) != 4:
            raise ValueError(
                f"transformer state must be (k, v, n_valid, pos), got {len(state)} tensors"
            )
        kv = (batch_size, self.cfg.n_layers, self.n_cache, self.cfg.n_heads, self.head_dim)
        for name, s, want in zip(("k", "v", "n_valid", "pos"), state,
                                 (kv, kv, (batch_size,), (batch_size,))):
            if tuple(s.shape) != want:
                raise ValueError(f"transformer state {name} must have shape {want} (the state "
                                 f"is (k, v, n_valid, pos)), got {tuple(s.shape)}")

    def _run(self, x: Tensor, state: State | None, use_ckpt: bool) -> tuple[Tensor, State]:
        b, t, _ = x.shape
        fresh = state is None
        if state is None:
            state = self.initial_state(b, x.device)
        self._check_state(state, b)
        cache_k, cache_v, n_valid, pos = state
        ks, vs = list(cache_k.unbind(1)), list(cache_v.unbind(1))  # L x (B, C, H, Dh)
        sdt, k_win = self._state_dtype(), self.cfg.context
        h = self.in_proj(x)  # (B, T, D)
        outs = []
        for start in range(0, t, k_win):
            hc = h[:, start : start + k_win]  # (B, S, D), S <= K
            s = hc.shape[1]
            steps = torch.arange(s, device=x.device, dtype=pos.dtype)
            cos, sin = self._rope_angles(pos[:, None] + steps)  # (B, S, 1, Dh / 2) each
            fast = fresh and start == 0
            mask = None if fast else _window_mask(n_valid, s, self.n_cache)  # (B, 1, S, C + S)
            for i, block in enumerate(self.blocks):
                ck, cv = (None, None) if fast else (ks[i], vs[i])
                if use_ckpt:
                    hc, k, v = checkpoint(block, hc, cos, sin, ck, cv, mask, use_reentrant=False)
                else:
                    hc, k, v = block(hc, cos, sin, ck, cv, mask)  # k, v: (B, C + S, H, Dh)
                ks[i] = _last(k, self.n_cache).to(sdt)  # (B, C, H, Dh)
                vs[i] = _last(v, self.n_cache).to(sdt)  # (B, C, H, Dh)
            outs.append(hc)
            n_valid = (n_valid + s).clamp(max=self.n_cache)
            pos = pos + s
        y = self.ln_f(torch.cat(outs, dim=1))  # (B, T, D)
        return y, (torch.stack(ks, dim=1), torch.stack(vs, dim=1), n_valid, pos)

    def _forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """x ``(B, T, D_in)`` in parallel (chunks of ``K`` when longer than the window); a
        ``None`` state is a fresh start, which takes the FlashAttention-eligible ``is_causal``
        path. Returns ``(B, T, d_model)`` and the state ``(k, v, n_valid, pos)``."""
        return self._run(x, state, self.checkpointing)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One query ``(B, D_in)`` against the ``K - 1`` cached keys and itself."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        y, state = self._run(x.unsqueeze(1), state, use_ckpt=False)  # y: (B, 1, D)
        return y[:, 0], state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zeros: an empty cache ``k``, ``v`` ``(B, n_layers, K - 1, n_heads, head_dim)``,
        ``n_valid = 0`` and ``pos = 0`` ``(B,)``, in fp32."""
        check_batch_size("Transformer", batch_size)
        z = dict(device=self._state_device(device), dtype=self._state_dtype())
        kv = (batch_size, self.cfg.n_layers, self.n_cache, self.cfg.n_heads, self.head_dim)
        return (
            torch.zeros(kv, **z),
            torch.zeros(kv, **z),
            torch.zeros(batch_size, **z),
            torch.zeros(batch_size, **z),
        )
