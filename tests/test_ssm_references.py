"""S4D and Mamba layers against float64 references written from the papers' equations.

The references below use elementwise ops, explicit powers, direct sums and loops over time only;
they never call the modules' helpers (``discretise``, the scans, the FFT convolution). The
layers run in fp32 with their parameters copied to the references in float64 (fp32 values are
exact in float64, so both compute the same function), and gradients of a scalar loss come from
autograd through each. Tolerances are relative to the largest entry of the reference tensor
(``max |ref|``), tensor by tensor, because fp32 round-off in a sum scales with its largest terms.

S4D (Gu et al. 2022, https://arxiv.org/abs/2206.11893), per channel, N/2 stored complex modes:

    dA = exp(Δ A),  dB = (Δ A)^-1 (exp(Δ A) - 1) Δ B                         (ZOH)
    (a) K[l] = 2 Re(sum_n C_n dB_n dA_n^l),  y_t = sum_{k<=t} K[t-k] u_k + D u_t
              + 2 Re(sum_n C_n dA_n^(t+1) s_{-1,n})                          (convolution)
    (b) s_t = dA s_{t-1} + dB u_t,  y_t = 2 Re(C s_t) + D u_t                 (recurrence)

Mamba (Gu & Dao 2023, https://arxiv.org/abs/2312.00752), selective scan with Euler B as in the
reference implementation:

    h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) B_t,  y_t = C_t · h_t + D x_t

and the block: RMSNorm, in_proj -> (x, z), causal depthwise conv over [conv state, x], SiLU,
x_proj -> (Δ_raw, B, C), Δ = softplus(dt_proj(Δ_raw)), A = -exp(A_log), the scan, gate SiLU(z),
out_proj, residual.

Sizes: batch 2, S4D H=4 channels and N=8 (4 stored modes), Mamba d_model=4 (d_inner 8), N=8,
d_conv 4, dt_rank 2, chunk 8; T up to 37, including T=1, T < d_conv - 1 and T not a multiple
of the chunk. Every test starts from a non-zero carried state unless its name says otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from rlkit.backbones.mamba import (
    MambaBlock,
    MambaConfig,
    selective_scan_parallel,
    selective_scan_sequential,
)
from rlkit.backbones.s4 import S4Config, S4DLayer

BATCH = 2
S4_H, S4_N = 4, 8
M_MODEL, M_STATE, M_CONV, M_RANK, M_CHUNK = 4, 8, 4, 2, 8
RMS_EPS = 1e-5  # Mamba's RMSNorm epsilon

# Float64 reference against float64 reference (or a float64 run of a module scan): the two
# orders of summation agree to ~1e-15 of max |ref| here; 1e-12 leaves room for other BLAS.
TOL_F64 = 1e-12
# fp32 module against the float64 reference, relative to max |ref|. The worst observed errors
# are 1.3e-6 for outputs and states (the S4D state after 37 fp32 steps; the Mamba branch y - x,
# which loses a few ulps of x to cancellation) and 1.3e-6 for gradients; the bounds leave a
# margin of 7x or more and stay far below what a wrong equation changes (1e-3 of max |ref| or
# more).
TOL_FP32_OUT = 1e-5
TOL_FP32_GRAD = 3e-5


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_close_rel(got: Tensor, ref: Tensor, tol: float, name: str) -> None:
    """max |got - ref| <= tol * max |ref|, ``got`` promoted to ``ref``'s dtype."""
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    scale = ref.abs().max().item()
    assert scale > 0, f"{name}: the reference is all zeros, the comparison would be vacuous"
    torch.testing.assert_close(got.to(ref.dtype), ref, atol=tol * scale, rtol=0, msg=name)


def float64_leaves(module: nn.Module) -> dict[str, Tensor]:
    """The module's parameters as float64 leaves that require grad, by name."""
    return {n: p.detach().double().requires_grad_() for n, p in module.named_parameters()}


def as_complex(x: Tensor) -> Tensor:
    """(..., 2) real -> (...) complex, without ``view_as_complex``'s layout requirements."""
    return torch.complex(x[..., 0], x[..., 1])


# --- S4D reference ---------------------------------------------------------------------------


def s4d_zoh(p: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """ZOH of ds/dt = A s + B u with step Δ: ``(dA, dB, C)``, complex128 (H, N/2)."""
    A = torch.complex(-p["log_neg_A_real"].exp(), p["A_imag"])
    dt = p["log_dt"].exp().unsqueeze(-1)  # (H, 1)
    dA = torch.exp(dt * A)
    dB = (dA - 1) / (dt * A) * (dt * as_complex(p["B"]))
    return dA, dB, as_complex(p["C"])


def s4d_convolution_reference(
    p: dict[str, Tensor], u: Tensor, s0: Tensor
) -> tuple[Tensor, Tensor]:
    """(a): kernel from explicit powers, direct O(T^2) causal sum, carried-state terms.

    Args: u (B, T, H) float64, s0 (B, H, N/2) complex128. Returns y (B, T, H), s (B, H, N/2).
    """
    dA, dB, C = s4d_zoh(p)
    T = u.shape[1]
    powers = [torch.ones_like(dA)]
    for _ in range(T):
        powers.append(powers[-1] * dA)
    P = torch.stack(powers)  # (T+1, H, N/2): dA^0 .. dA^T
    K = 2 * (C * dB * P[:T]).sum(-1).real  # (T, H)
    y = torch.zeros_like(u)
    for t in range(T):
        for k in range(t + 1):
            y[:, t] = y[:, t] + K[t - k] * u[:, k]
    y = y + p["D"] * u
    y = y + 2 * torch.einsum("hn,thn,bhn->bth", C, P[1:], s0).real
    s = P[T] * s0
    for k in range(T):
        s = s + P[T - 1 - k] * dB * u[:, k].unsqueeze(-1)
    return y, s


def s4d_recurrence_reference(
    p: dict[str, Tensor], u: Tensor, s0: Tensor
) -> tuple[Tensor, Tensor]:
    """(b): the diagonal recurrence one step at a time (shapes as in (a))."""
    dA, dB, C = s4d_zoh(p)
    s, ys = s0, []
    for t in range(u.shape[1]):
        s = dA * s + dB * u[:, t].unsqueeze(-1)  # (B, H, N/2)
        ys.append(2 * (C * s).sum(-1).real + p["D"] * u[:, t])
    return torch.stack(ys, dim=1), s


def s4d_case(init: str, T: int, seed: int, s0_scale: float = 1.0
             ) -> tuple[S4DLayer, Tensor, Tensor]:
    """A layer with the given init of A, other parameters perturbed so that channels differ and
    B is not 1 (the init makes B, Re A identical across channels); fp32 input u and complex64
    state s0."""
    torch.manual_seed(seed)
    cfg = S4Config(
        d_model=S4_H, d_state=S4_N, init=init, dt_min=0.01, dt_max=0.5  # type: ignore[arg-type]
    )
    layer = S4DLayer(S4_H, cfg)
    g = gen(seed + 1)
    with torch.no_grad():
        layer.log_neg_A_real.add_(0.5 * torch.randn(layer.log_neg_A_real.shape, generator=g))
        layer.B.add_(0.5 * torch.randn(layer.B.shape, generator=g))
        layer.D.copy_(torch.randn(layer.D.shape, generator=g))
    u = torch.randn(BATCH, T, S4_H, generator=g)
    s0 = s0_scale * torch.randn(BATCH, S4_H, S4_N // 2, 2, generator=g)
    return layer, u, torch.view_as_complex(s0)


def run_s4d_layer(layer: S4DLayer, u: Tensor, s0: Tensor, path: str) -> tuple[Tensor, Tensor]:
    if path == "forward":
        return layer(u, s0)
    s, ys = s0, []
    for t in range(u.shape[1]):
        y_t, s = layer.step(u[:, t], s)
        ys.append(y_t)
    return torch.stack(ys, dim=1), s


def test_s4d_zoh_equals_integral_of_continuous_system() -> None:
    """The reference dB equals the exact input response of ds/dt = A s + B u over one step of
    a constant u, int_0^Δ exp(A τ) dτ B, by composite Simpson with 4000 intervals (rtol 1e-10,
    float64), and dA the free response exp(Δ A)."""
    layer, _, _ = s4d_case("legs", 1, seed=0)
    p = float64_leaves(layer)
    dA, dB, _ = s4d_zoh(p)
    A = torch.complex(-p["log_neg_A_real"].exp(), p["A_imag"]).detach()
    dt = p["log_dt"].exp().detach().unsqueeze(-1)
    w = torch.ones(4001, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    tau = torch.linspace(0, 1, 4001, dtype=torch.float64)[:, None, None] * dt  # (4001, H, 1)
    integral = (w[:, None, None] * torch.exp(A * tau)).sum(0) * dt / (3 * 4000)
    expected = integral * as_complex(p["B"]).detach()
    torch.testing.assert_close(dB.detach(), expected, atol=0, rtol=1e-10)
    torch.testing.assert_close(dA.detach(), torch.exp(A * dt), atol=0, rtol=1e-15)


@pytest.mark.parametrize("s0_scale", [0.0, 1.0], ids=["s0=0", "s0!=0"])
@pytest.mark.parametrize("T", [1, 16, 37])
@pytest.mark.parametrize("init", ["legs", "lin"])
@torch.no_grad()
def test_s4d_references_agree(init: str, T: int, s0_scale: float) -> None:
    """(a) convolution == (b) recurrence in float64: outputs and final state (1e-12 of max)."""
    layer, u, s0 = s4d_case(init, T, seed=T, s0_scale=s0_scale)
    p = float64_leaves(layer)
    y_a, s_a = s4d_convolution_reference(p, u.double(), s0.to(torch.complex128))
    y_b, s_b = s4d_recurrence_reference(p, u.double(), s0.to(torch.complex128))
    assert_close_rel(y_a, y_b, TOL_F64, "y")
    assert_close_rel(s_a, s_b, TOL_F64, "s_T")


@torch.no_grad()
def test_s4d_reference_equals_conjugate_completed_real_system() -> None:
    """Why outputs are 2 Re(...): the system with all N modes (the N/2 stored ones and their
    conjugates, state and parameters alike) has a real output, 1e-12 of max in float64, equal
    to the recurrence reference's."""
    layer, u, s0 = s4d_case("legs", 37, seed=3)
    p = float64_leaves(layer)
    dA, dB, C = s4d_zoh(p)
    dA, dB, C = (torch.cat([v, v.conj()], dim=-1) for v in (dA, dB, C))  # (H, N)
    s = torch.cat([s0, s0.conj()], dim=-1).to(torch.complex128)  # (B, H, N)
    ys = []
    for t in range(u.shape[1]):
        s = dA * s + dB * u[:, t].double().unsqueeze(-1)
        ys.append((C * s).sum(-1) + p["D"] * u[:, t].double())
    y = torch.stack(ys, dim=1)  # (B, T, H) complex
    y_ref, _ = s4d_recurrence_reference(p, u.double(), s0.to(torch.complex128))
    assert y.imag.abs().max() <= 1e-12 * y.real.abs().max()
    assert_close_rel(y.real, y_ref, 1e-12, "y")


@pytest.mark.parametrize("path", ["forward", "step"])
@pytest.mark.parametrize("s0_scale", [0.0, 1.0], ids=["s0=0", "s0!=0"])
@pytest.mark.parametrize("T", [1, 16, 37])
@pytest.mark.parametrize("init", ["legs", "lin"])
@torch.no_grad()
def test_s4d_layer_matches_reference(init: str, T: int, s0_scale: float, path: str) -> None:
    """S4DLayer.forward (FFT convolution + Vandermonde state terms) and unrolled step, fp32,
    against the float64 recurrence: outputs and final state within 1e-5 of max |ref|."""
    layer, u, s0 = s4d_case(init, T, seed=10 + T, s0_scale=s0_scale)
    y, s = run_s4d_layer(layer, u, s0, path)
    assert y.dtype == torch.float32 and s.dtype == torch.complex64
    y_ref, s_ref = s4d_recurrence_reference(
        float64_leaves(layer), u.double(), s0.to(torch.complex128)
    )
    assert_close_rel(y, y_ref, TOL_FP32_OUT, "y")
    assert_close_rel(s, s_ref, TOL_FP32_OUT, "s_T")


@pytest.mark.parametrize("path", ["forward", "step"])
@pytest.mark.parametrize("T", [1, 37])
@pytest.mark.parametrize("init", ["legs", "lin"])
def test_s4d_layer_gradients_match_reference(init: str, T: int, path: str) -> None:
    """Gradients of sum(w_y * y) + sum(w_s * s_T) w.r.t. every parameter, u and s0: the fp32
    layer against autograd through the float64 recurrence, within 3e-5 of max |ref grad|."""
    layer, u, s0 = s4d_case(init, T, seed=20 + T)
    g = gen(99)
    w_y = torch.randn(BATCH, T, S4_H, generator=g)
    w_s = torch.randn(BATCH, S4_H, S4_N // 2, 2, generator=g)

    u, s0 = u.requires_grad_(), s0.requires_grad_()
    y, s = run_s4d_layer(layer, u, s0, path)
    loss = (w_y * y).sum() + (w_s * torch.view_as_real(s)).sum()
    names = [n for n, _ in layer.named_parameters()]
    grads = torch.autograd.grad(loss, [*layer.parameters(), u, s0])

    p = float64_leaves(layer)
    u64 = u.detach().double().requires_grad_()
    s064 = s0.detach().to(torch.complex128).requires_grad_()
    y_ref, s_ref = s4d_recurrence_reference(p, u64, s064)
    loss_ref = (w_y.double() * y_ref).sum() + (w_s.double() * torch.view_as_real(s_ref)).sum()
    grads_ref = torch.autograd.grad(loss_ref, [*p.values(), u64, s064])

    for name, got, ref in zip([*names, "u", "s0"], grads, grads_ref):
        assert_close_rel(got, ref, TOL_FP32_GRAD, f"grad {name}")


# --- Mamba reference -------------------------------------------------------------------------


def silu(x: Tensor) -> Tensor:
    return x / (1 + torch.exp(-x))


def softplus(x: Tensor) -> Tensor:
    return torch.log1p(torch.exp(x))


def selective_scan_reference(
    x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor
) -> tuple[Tensor, Tensor]:
    """h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) B_t,  y_t = C_t · h_t + D x_t.

    Args: x, delta (B, T, E·D); A (E·D, N); B, C (B, T, N); D (E·D,); h0 (B, E·D, N).
    Returns: y (B, T, E·D) and h after the last step (B, E·D, N).
    """
    h, ys = h0, []
    for t in range(x.shape[1]):
        decay = torch.exp(delta[:, t, :, None] * A)  # (B, E·D, N)
        h = decay * h + (delta[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])  # (B, E·D)
    return torch.stack(ys, dim=1), h


def mamba_block_reference(
    p: dict[str, Tensor], x: Tensor, h0: Tensor, conv0: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One Mamba block in float64 from its parameters ``p`` (names as in MambaBlock).

    Args: x (B, T, d_model), h0 (B, E·D, N), conv0 (B, E·D, d_conv - 1): the conv inputs before
    x[:, 0], oldest first. Returns the block output (B, T, d_model), h_T and the conv state.
    """
    T, d_inner = x.shape[1], p["D"].shape[0]
    xn = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * p["norm.weight"]
    xz = xn @ p["in_proj.weight"].T  # (B, T, 2 E·D)
    xs, z = xz[..., :d_inner], xz[..., d_inner:]
    # causal depthwise conv: out_t = bias + sum_j w[j] * inputs[t - (K - 1) + j]
    w = p["conv1d.weight"][:, 0]  # (E·D, K)
    K = w.shape[1]
    inputs = torch.cat([conv0.transpose(1, 2), xs], dim=1)  # (B, K - 1 + T, E·D)
    conv = p["conv1d.bias"] + sum(w[:, j] * inputs[:, j : j + T] for j in range(K))
    conv_state = inputs[:, T:].transpose(1, 2)  # the last K - 1 inputs, (B, E·D, K - 1)
    xc = silu(conv)  # (B, T, E·D)
    proj = xc @ p["x_proj.weight"].T  # (B, T, R + 2N)
    R = p["dt_proj.weight"].shape[1]
    N = (proj.shape[-1] - R) // 2
    dt_raw, B, C = proj[..., :R], proj[..., R : R + N], proj[..., R + N :]
    delta = softplus(dt_raw @ p["dt_proj.weight"].T + p["dt_proj.bias"])  # (B, T, E·D)
    A = -torch.exp(p["A_log"])  # (E·D, N)
    y, h = selective_scan_reference(xc, delta, A, B, C, p["D"], h0)
    return x + (y * silu(z)) @ p["out_proj.weight"].T, h, conv_state


def mamba_case(scan: str, T: int, seed: int) -> tuple[MambaBlock, Tensor, Tensor, Tensor]:
    """A block whose norm weight, A_log, D and Δ bias are perturbed so that channels differ
    (Δ spans [0.05, 1] at zero input), with fp32 input x and non-zero states h0 and conv0."""
    torch.manual_seed(seed)
    cfg = MambaConfig(d_model=M_MODEL, d_state=M_STATE, d_conv=M_CONV, dt_rank=M_RANK,
                      chunk=M_CHUNK, scan=scan)  # type: ignore[arg-type]
    block = MambaBlock(cfg)
    g = gen(seed + 1)
    with torch.no_grad():
        block.norm.weight.add_(0.3 * torch.randn(block.norm.weight.shape, generator=g))
        block.A_log.add_(0.3 * torch.randn(block.A_log.shape, generator=g))
        block.D.copy_(torch.randn(block.D.shape, generator=g))
        dt = torch.logspace(math.log10(0.05), 0.0, block.d_inner)
        block.dt_proj.bias.copy_(dt[torch.randperm(block.d_inner, generator=g)].expm1().log())
    x = torch.randn(BATCH, T, M_MODEL, generator=g)
    h0 = torch.randn(BATCH, block.d_inner, M_STATE, generator=g)
    conv0 = torch.randn(BATCH, block.d_inner, M_CONV - 1, generator=g)
    return block, x, h0, conv0


def run_mamba_block(block: MambaBlock, x: Tensor, h0: Tensor, conv0: Tensor, path: str
                    ) -> tuple[Tensor, Tensor, Tensor]:
    if path != "step":
        return block(x, h0, conv0)
    h, conv, ys = h0, conv0, []
    for t in range(x.shape[1]):
        y_t, h, conv = block.step(x[:, t], h, conv)
        ys.append(y_t)
    return torch.stack(ys, dim=1), h, conv


def scan_case(T: int, seed: int) -> list[Tensor]:
    """Float64 leaves x, Δ, A, B, C, D, h0 (B=2, E·D=3, N=4); Δ in [0.01, 3], A in [-8, -0.1]."""
    g = gen(seed)
    x = torch.randn(BATCH, T, 3, generator=g, dtype=torch.float64)
    delta = torch.empty(BATCH, T, 3, dtype=torch.float64).uniform_(-4.6, 1.1, generator=g).exp()
    A = -torch.empty(3, 4, dtype=torch.float64).uniform_(-2.3, 2.1, generator=g).exp()
    B = torch.randn(BATCH, T, 4, generator=g, dtype=torch.float64)
    C = torch.randn(BATCH, T, 4, generator=g, dtype=torch.float64)
    D = torch.randn(3, generator=g, dtype=torch.float64)
    h0 = torch.randn(BATCH, 3, 4, generator=g, dtype=torch.float64)
    return [t.requires_grad_() for t in (x, delta, A, B, C, D, h0)]


@pytest.mark.parametrize("scan", ["sequential", "parallel"])
@pytest.mark.parametrize("T", [1, 8, 21, 37])
def test_selective_scans_match_reference(scan: str, T: int) -> None:
    """selective_scan_{sequential,parallel} (chunk 8) run in float64 on dA_log = Δ A and
    dBx = Δ x B, plus D x, against the reference scan: y, h_T and the gradients of
    sum(w_y * y) + sum(w_h * h_T) w.r.t. x, Δ, A, B, C, D, h0 (1e-12 of max, float64)."""
    inputs = scan_case(T, seed=T)
    x, delta, A, B, C, D, h0 = inputs
    g = gen(100 + T)
    w_y = torch.randn(BATCH, T, 3, generator=g, dtype=torch.float64)
    w_h = torch.randn(BATCH, 3, 4, generator=g, dtype=torch.float64)

    dA_log = delta.unsqueeze(-1) * A  # (B, T, E·D, N)
    dBx = (delta * x).unsqueeze(-1) * B.unsqueeze(2)  # (B, T, E·D, N)
    if scan == "parallel":
        y, h = selective_scan_parallel(dA_log, dBx, C, h0, chunk=M_CHUNK)
    else:
        y, h = selective_scan_sequential(dA_log, dBx, C, h0)
    y = y + D * x
    assert y.dtype == h.dtype == torch.float64
    grads = torch.autograd.grad((w_y * y).sum() + (w_h * h).sum(), inputs)

    y_ref, h_ref = selective_scan_reference(*inputs)
    grads_ref = torch.autograd.grad((w_y * y_ref).sum() + (w_h * h_ref).sum(), inputs)
    assert_close_rel(y, y_ref, TOL_F64, "y")
    assert_close_rel(h, h_ref, TOL_F64, "h_T")
    for name, got, ref in zip(["x", "delta", "A", "B", "C", "D", "h0"], grads, grads_ref):
        assert_close_rel(got, ref, TOL_F64, f"grad {name}")


@pytest.mark.parametrize("path", ["sequential", "parallel", "step"])
@pytest.mark.parametrize("T", [1, 2, 13, 37])
@torch.no_grad()
def test_mamba_block_matches_reference(path: str, T: int) -> None:
    """MambaBlock.forward (either scan, chunk 8) and unrolled step, fp32, from non-zero h0 and
    conv state, against the float64 block reference: the residual branch y - x, h_T and the conv
    state within 1e-5 of max |ref| (the branch alone, since x would dominate max |y|).
    T=1, 2 < d_conv - 1 keep part of the carried conv state."""
    block, x, h0, conv0 = mamba_case("sequential" if path == "step" else path, T, seed=T)
    y, h, conv = run_mamba_block(block, x, h0, conv0, path)
    assert y.dtype == h.dtype == conv.dtype == torch.float32
    y_ref, h_ref, conv_ref = mamba_block_reference(
        float64_leaves(block), x.double(), h0.double(), conv0.double()
    )
    assert_close_rel(y - x, y_ref - x.double(), TOL_FP32_OUT, "y - x")
    assert_close_rel(h, h_ref, TOL_FP32_OUT, "h_T")
    assert_close_rel(conv, conv_ref, TOL_FP32_OUT, "conv state")


@pytest.mark.parametrize("path", ["sequential", "parallel", "step"])
@pytest.mark.parametrize("T", [2, 37])
def test_mamba_block_gradients_match_reference(path: str, T: int) -> None:
    """Gradients of sum(w_y * y) + sum(w_h * h_T) + sum(w_c * conv) w.r.t. every parameter,
    x, h0 and conv0: the fp32 block against autograd through the float64 block reference,
    within 3e-5 of max |ref grad|."""
    block, x, h0, conv0 = mamba_case("sequential" if path == "step" else path, T, seed=50 + T)
    g = gen(7)
    w_y = torch.randn(BATCH, T, M_MODEL, generator=g)
    w_h = torch.randn(BATCH, block.d_inner, M_STATE, generator=g)
    w_c = torch.randn(BATCH, block.d_inner, M_CONV - 1, generator=g)

    inputs = [t.requires_grad_() for t in (x, h0, conv0)]
    y, h, conv = run_mamba_block(block, *inputs, path)
    loss = (w_y * y).sum() + (w_h * h).sum() + (w_c * conv).sum()
    names = [n for n, _ in block.named_parameters()]
    grads = torch.autograd.grad(loss, [*block.parameters(), *inputs])

    p = float64_leaves(block)
    inputs64 = [t.detach().double().requires_grad_() for t in inputs]
    y_ref, h_ref, conv_ref = mamba_block_reference(p, *inputs64)
    loss_ref = ((w_y.double() * y_ref).sum() + (w_h.double() * h_ref).sum()
                + (w_c.double() * conv_ref).sum())
    grads_ref = torch.autograd.grad(loss_ref, [*p.values(), *inputs64])

    for name, got, ref in zip([*names, "x", "h0", "conv0"], grads, grads_ref):
        assert_close_rel(got, ref, TOL_FP32_GRAD, f"grad {name}")
