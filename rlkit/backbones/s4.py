"""S4D: a diagonal structured state-space backbone (Gu et al. 2022, https://arxiv.org/abs/2206.11893).

Each channel h of an S4D layer is a linear time-invariant system with a diagonal complex state
``s`` of ``N/2`` modes; the other ``N/2`` are the complex conjugates and are never stored, which is
why outputs are ``2 Re(...)``. After ZOH discretisation with step Δ:

    s_t = dA s_{t-1} + dB u_t,        y_t = 2 Re(C s_t) + D u_t,
    dA = exp(Δ A),                    dB = (dA - 1) / A · B.

Unrolled from a state ``s_{-1}`` carried in from an earlier call:

    y_t = sum_{k<=t} K[t-k] u_k + D u_t + 2 Re(sum_n C_n dA_n^(t+1) s_{-1,n}),
    K[l] = 2 Re(sum_n C_n dB_n dA_n^l),
    s_{T-1} = dA^T s_{-1} + sum_k dA^(T-1-k) dB u_k,

so ``forward`` is one causal FFT convolution plus two Vandermonde contractions (all parallel over
T), and ``step`` is the recurrence. The kernel is rebuilt from the parameters on every call.

Glossary (paper symbol -> code name): H channels = ``d_model``; N = ``d_state`` (N/2 stored
modes); A = ``-exp(log_neg_A_real) + i A_imag`` (H, N/2); B, C = ``B``, ``C`` stored as real
(H, N/2, 2) tensors (``view_as_complex``); Δ = ``exp(log_dt)`` (H,); D = ``D`` (H,).

Init: S4D-LegS takes A from the eigenvalues of the normal part of the HiPPO-LegS matrix,
S4D-Lin takes ``A_n = -1/2 + i π n``; B = 1, C ~ complex normal, Δ log-spaced in [dt_min, dt_max].

Precision: the weights are fp32 (half-precision weights are refused; mixed precision is
autocast); the discretisation, the kernel, the FFT convolution and the state run in fp32 /
complex64 with autocast disabled; states are fp32.
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
    real_number,
)
from rlkit.fields import is_count


@dataclass(frozen=True)
class S4Config(BackboneConfig):
    """Options of :class:`S4Backbone`."""

    d_state: int = 64
    """State size N per channel, even: N/2 complex modes are stored, plus their conjugates."""
    init: Literal["legs", "lin"] = "legs"
    """Init of A: ``"legs"`` (S4D-LegS, HiPPO-LegS normal part) or ``"lin"`` (-1/2 + i π n)."""
    dt_min: float = 1e-3
    """Smallest initial step size Δ."""
    dt_max: float = 1e-1
    """Largest initial step size Δ."""

    def __post_init__(self) -> None:
        super().__post_init__()
        real_number(self, "dt_min", "dt_max")
        if not is_count(self.d_state) or self.d_state % 2:
            raise ValueError(
                f"d_state must be a positive even integer (conjugate pairs), got {self.d_state!r}"
            )
        if self.init not in ("legs", "lin"):
            raise ValueError(f"init must be 'legs' or 'lin', got {self.init!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(
                f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min!r}, dt_max={self.dt_max!r}"
            )


def hippo_legs_normal(N: int) -> Tensor:
    """Normal part ``A + P P^T = -1/2 I + S`` (S skew-symmetric) of HiPPO-LegS, (N, N) float64."""
    r = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)  # (N,)
    S = 0.5 * r[:, None] * r[None, :]  # (N, N)
    S = torch.tril(S, -1).neg() + torch.triu(S, 1)
    return S - 0.5 * torch.eye(N, dtype=torch.float64)


def s4d_init_A(N: int, init: Literal["legs", "lin"]) -> Tensor:
    """The N/2 diagonal modes of A (positive imaginary parts, ascending), complex128 (N/2,).

    S4D-LegS: the normal part is ``-1/2 I + S`` with S real skew-symmetric, so its eigenvalues
    are ``-1/2 + i w`` with ``w`` the eigenvalues of the Hermitian ``-i S`` (a Hermitian solver
    keeps the real part exactly -1/2); they come in conjugate pairs and we keep ``w > 0``.
    S4D-Lin: ``-1/2 + i π n`` for n = 0 .. N/2 - 1.
    """
    if init == "lin":
        n = torch.arange(N // 2, dtype=torch.float64)
        return torch.complex(torch.full_like(n, -0.5), math.pi * n)
    S = hippo_legs_normal(N) + 0.5 * torch.eye(N, dtype=torch.float64)
    w = torch.linalg.eigvalsh(-1j * S.to(torch.complex128))  # (N,) ascending, pairs +-w
    w = w[N // 2 :]
    return torch.complex(torch.full_like(w, -0.5), w)


class S4DLayer(nn.Module):
    """One S4D convolution over H channels; fp32 inside whatever the autocast state."""

    def __init__(self, d_model: int, cfg: S4Config) -> None:
        super().__init__()
        H, N2 = d_model, cfg.d_state // 2
        A = s4d_init_A(cfg.d_state, cfg.init).to(torch.complex64).repeat(H, 1)  # (H, N/2)
        self.log_neg_A_real = nn.Parameter(torch.log(-A.real))
        self.A_imag = nn.Parameter(A.imag.clone())
        self.log_dt = nn.Parameter(torch.linspace(math.log(cfg.dt_min), math.log(cfg.dt_max), H))
        self.B = nn.Parameter(torch.view_as_real(torch.ones(H, N2, dtype=torch.complex64)).clone())
        self.C = nn.Parameter(torch.empty(H, N2, 2))
        nn.init.normal_(self.C, std=0.5**0.5)  # complex normal with E|C_n|^2 = 1
        self.D = nn.Parameter(torch.ones(H))

    def discretise(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """ZOH from the current parameters (never cached), all complex64 (H, N/2).

        Returns:
            ``(dtA, dA, dB, C)`` with ``dtA = Δ A``, ``dA = exp(Δ A)``, ``dB = (dA - 1) / A · B``.
        """
        with torch.autocast(device_type=self.log_dt.device.type, enabled=False):
            A = torch.complex(-self.log_neg_A_real.float().exp(), self.A_imag.float())  # (H, N/2)
            dtA = self.log_dt.float().exp().unsqueeze(-1) * A  # (H, N/2)
            dA = torch.exp(dtA)
            dB = (dA - 1) / A * torch.view_as_complex(self.B.float())
            return dtA, dA, dB, torch.view_as_complex(self.C.float())

    def forward(self, u: Tensor, s0: Tensor) -> tuple[Tensor, Tensor]:
        """Args: u ``(B, T, H)``, s0 complex ``(B, H, N/2)``.
        Returns y ``(B, T, H)`` fp32 and the state after the last step, complex ``(B, H, N/2)``."""
        T = u.shape[1]
        if T == 0:
            return u.float(), s0
        with torch.autocast(device_type=u.device.type, enabled=False):
            dtA, _, dB, C = self.discretise()
            u = u.float().transpose(1, 2)  # (B, H, T)
            powers = torch.arange(T + 1, device=u.device, dtype=torch.float32)
            V = torch.exp(dtA.unsqueeze(-1) * powers)  # (H, N/2, T+1): dA^0 .. dA^T
            K = 2 * torch.einsum("hn,hnt->ht", C * dB, V[..., :T]).real  # (H, T)
            n = 2 * T
            y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)[..., :T]
            y = y + self.D.float().unsqueeze(-1) * u  # (B, H, T)
            y = y + 2 * torch.einsum("bhn,hnt->bht", C * s0, V[..., 1:]).real
            # s_T = dA^T s0 + dB sum_k dA^(T-1-k) u_k, with dA^(T-1-k) = V[..., :T] reversed
            u_hist = torch.einsum("bht,hnt->bhn", u.to(V.dtype), V[..., :T].flip(-1))  # (B, H, N/2)
            s = V[..., T] * s0 + dB * u_hist
            return y.transpose(1, 2), s  # (B, T, H), (B, H, N/2)

    def step(self, u: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Args: u ``(B, H)``, s complex ``(B, H, N/2)``. Returns y ``(B, H)`` (fp32), state."""
        with torch.autocast(device_type=u.device.type, enabled=False):
            _, dA, dB, C = self.discretise()
            u = u.float()
            s = dA * s + dB * u.unsqueeze(-1)  # (B, H, N/2)
            y = 2 * (C * s).sum(-1).real + self.D.float() * u
            return y, s


class S4Block(nn.Module):
    """Pre-norm residual block: ``x + GLU(Linear(GELU(S4D(LayerNorm(x)))))``."""

    def __init__(self, cfg: S4Config) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.ssm = S4DLayer(cfg.d_model, cfg)
        self.out = nn.Linear(cfg.d_model, 2 * cfg.d_model)

    def _mix(self, x: Tensor, y: Tensor) -> Tensor:
        return x + F.glu(self.out(F.gelu(y)), dim=-1)

    def forward(self, x: Tensor, s0: Tensor) -> tuple[Tensor, Tensor]:
        """Args: x ``(B, T, H)``, s0 real ``(B, H, N/2, 2)``. Returns x and the real state."""
        y, s = self.ssm(self.norm(x), torch.view_as_complex(s0.float().contiguous()))
        return self._mix(x, y), torch.view_as_real(s)

    def step(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Args: x ``(B, H)``, s real ``(B, H, N/2, 2)``. Returns x and the real state."""
        y, s = self.ssm.step(self.norm(x), torch.view_as_complex(s.float().contiguous()))
        return self._mix(x, y), torch.view_as_real(s)


class S4Backbone(Backbone):
    """Input projection, ``n_layers`` pre-norm residual S4D blocks, final LayerNorm.

    State: one fp32 tensor of shape ``(B, n_layers, d_model, d_state / 2, 2)``, the complex modes
    of every layer as (real, imaginary) pairs; zeros at an episode start.
    """

    float64 = False  # float32 islands (Δ, the decays, the scan)

    def __init__(self, d_in: int, cfg: S4Config) -> None:
        super().__init__(d_in, cfg)
        self.embed = nn.Linear(d_in, cfg.d_model)
        self.blocks = nn.ModuleList(S4Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.LayerNorm(cfg.d_model)

    def _state_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, self.cfg.n_layers, self.cfg.d_model, self.cfg.d_state // 2, 2)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zero state, shape as in the class docstring."""
        check_batch_size("S4", batch_size)
        return (torch.zeros(self._state_shape(batch_size), device=self._state_device(device)),)

    def _check_state(self, state: State, batch_size: int) -> None:
        check_state_shapes("S4", state, [self._state_shape(batch_size)])

    def _forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """x ``(B, T, d_in)``, state ``(s,)`` or ``None`` for zeros -> y ``(B, T, d_model)``."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        self._check_state(state, x.shape[0])
        if x.shape[0] == 0:  # MKL's FFT refuses a batch of none: the recurrence, step by step
            ys = []
            for t in range(x.shape[1]):
                y, state = self._step(x[:, t], state)  # (0, d_model)
                ys.append(y)
            return torch.stack(ys, 1), state
        h, state = self.run_blocks(self.blocks, self.embed(x), state)  # h: (B, T, d_model)
        return self.norm_f(h), state

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x ``(B, d_in)``, state ``(s,)`` -> y ``(B, d_model)``."""
        self._check_state(state, x.shape[0])
        h, state = self.run_blocks(self.blocks, self.embed(x), state, step=True)  # (B, d_model)
        return self.norm_f(h), state
