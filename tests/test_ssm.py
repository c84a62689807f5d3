"""SSM-specific checks for the S4 and Mamba backbones (the shared contract is in test_backbones).

Mamba: the parallel and fused scans against the sequential reference (outputs, final state,
gradients), gradcheck of the fused scan's hand-written backward.
S4: FFT convolution against the recurrence, HiPPO-LegS / Lin init, no cached discretisation.
Precision: the discretisation exp(Δ·A) stays fp32 under bf16 autocast. Config errors.
Everything is small and fp32 unless stated; each test states its tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from rlkit.backbones import make_backbone, mamba
from rlkit.backbones.mamba import (
    MambaBackbone,
    MambaConfig,
    selective_scan_fused,
    selective_scan_parallel,
    selective_scan_sequential,
)
from rlkit.backbones.s4 import S4Backbone, S4Config, S4DLayer, hippo_legs_normal, s4d_init_A

TINY_DT, T_DECAY = 1e-4, 64  # a step size whose decay exp(Δ·A) bf16 rounds to 1, and a length


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scan_inputs(T: int, seed: int, h0_scale: float) -> list[Tensor]:
    """dA_log over decays from 1e-4 to ~50 per step (stability), dBx, C, h0; B=2, D=3, N=4."""
    g = gen(seed)
    dA_log = -torch.exp(torch.empty(2, T, 3, 4).uniform_(-9.0, 4.0, generator=g))
    dBx = torch.randn(2, T, 3, 4, generator=g)
    C = torch.randn(2, T, 4, generator=g)
    h0 = h0_scale * torch.randn(2, 3, 4, generator=g)
    return [t.requires_grad_() for t in (dA_log, dBx, C, h0)]


# --- Mamba: parallel scan == sequential reference ------------------------------------------


@pytest.mark.parametrize("h0_scale", [0.0, 1.0], ids=["h0=0", "h0!=0"])
@pytest.mark.parametrize("T", [1, 7, 16, 32, 45, 100])
def test_parallel_scan_matches_sequential(T: int, h0_scale: float) -> None:
    """Chunk 16, T not always a multiple: y, h_T and the gradients w.r.t. dA_log, dBx, C, h0
    agree (atol 1e-5, rtol 1e-5, fp32)."""
    inputs = scan_inputs(T, seed=T, h0_scale=h0_scale)
    g = gen(1000 + T)
    w_y, w_h = torch.randn(2, T, 3, generator=g), torch.randn(2, 3, 4, generator=g)
    results = []
    for scan in (selective_scan_sequential, lambda *a: selective_scan_parallel(*a, chunk=16)):
        y, h = scan(*inputs)
        grads = torch.autograd.grad((y * w_y).sum() + (h * w_h).sum(), inputs)
        results.append((y, h, *grads))
    assert results[0][0].shape == (2, T, 3) and results[0][1].shape == (2, 3, 4)
    names = ["y", "h_T", "grad dA_log", "grad dBx", "grad C", "grad h0"]
    for name, ref, par in zip(names, *results):
        assert torch.isfinite(par).all(), name
        torch.testing.assert_close(par, ref, atol=1e-5, rtol=1e-5, msg=name)


def test_parallel_scan_rejects_bad_chunk() -> None:
    dA_log, dBx, C, h0 = scan_inputs(5, seed=0, h0_scale=1.0)
    with pytest.raises(ValueError, match="chunk.*0"):
        selective_scan_parallel(dA_log, dBx, C, h0, chunk=0)


@torch.no_grad()
def test_mamba_backbone_parallel_equals_sequential() -> None:
    """scan="parallel" (chunk 16) == scan="sequential" over T=45 from a carried state
    (atol 1e-5, fp32), outputs and both states."""
    cfg = MambaConfig(d_model=16, n_layers=2, chunk=16)
    torch.manual_seed(0)
    par = MambaBackbone(5, cfg)
    seq = MambaBackbone(5, MambaConfig(d_model=16, n_layers=2, scan="sequential"))
    seq.load_state_dict(par.state_dict())
    x = torch.randn(3, 52, 5, generator=gen(1))
    _, state = seq(x[:, :7])
    y_par, s_par = par(x[:, 7:], state)
    y_seq, s_seq = seq(x[:, 7:], state)
    torch.testing.assert_close(y_par, y_seq, atol=1e-5, rtol=0)
    for a, b in zip(s_par, s_seq):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --- S4: convolution == recurrence, init, no caching ---------------------------------------


@pytest.mark.parametrize("init", ["legs", "lin"])
@torch.no_grad()
def test_s4_fft_forward_equals_recurrence(init: str) -> None:
    """The layer's FFT convolution + state terms equal T steps of s = dA s + dB u,
    y = 2 Re(C s) + D u, from a nonzero complex state (atol 1e-5, rtol 1e-5 on y and s, fp32;
    y reaches ~6, so rtol covers the FFT's rounding)."""
    torch.manual_seed(0)
    layer = S4DLayer(8, S4Config(d_model=8, d_state=16, init=init))  # type: ignore[arg-type]
    g = gen(1)
    u = torch.randn(2, 50, 8, generator=g)
    s0 = torch.view_as_complex(torch.randn(2, 8, 8, 2, generator=g))
    y, s = layer(u, s0)
    s_step, ys = s0, []
    for t in range(u.shape[1]):
        y_t, s_step = layer.step(u[:, t], s_step)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, dim=1), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_step, s, atol=1e-5, rtol=1e-5)


def test_hippo_legs_normal_part() -> None:
    """hippo_legs_normal(N) == A + P P^T for the HiPPO-LegS A and P = sqrt(n + 1/2), built here
    from the definition (atol 1e-12, float64); its diagonal is -1/2, the rest skew-symmetric."""
    N = 8
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    A = -torch.where(n[:, None] > n[None, :], r[:, None] * r[None, :], torch.diag(n + 1))
    P = torch.sqrt(n + 0.5)
    normal = hippo_legs_normal(N)
    torch.testing.assert_close(normal, A + torch.outer(P, P), atol=1e-12, rtol=0)
    torch.testing.assert_close(normal.diagonal(), torch.full((N,), -0.5, dtype=torch.float64))
    skew = normal + 0.5 * torch.eye(N, dtype=torch.float64)
    torch.testing.assert_close(skew, -skew.T, atol=0, rtol=0)


@pytest.mark.parametrize("N", [2, 16, 64])
def test_s4d_legs_init_is_eig_of_normal_part(N: int) -> None:
    """S4D-LegS modes: real part exactly -1/2, imaginary parts > 0 ascending and equal to the
    positive half of torch.linalg.eig of the normal part (rtol 1e-9, float64); the layer
    stores them (fp32, rtol 1e-6) for every channel."""
    A = s4d_init_A(N, "legs")
    assert A.shape == (N // 2,)
    assert torch.equal(A.real, torch.full((N // 2,), -0.5, dtype=torch.float64))
    assert (A.imag > 0).all() and (A.imag.diff() > 0).all()
    eig = torch.linalg.eigvals(hippo_legs_normal(N))
    torch.testing.assert_close(eig.real, torch.full_like(eig.real, -0.5), atol=1e-9, rtol=0)
    torch.testing.assert_close(A.imag, eig.imag[eig.imag > 0].sort().values, atol=0, rtol=1e-9)
    layer = S4DLayer(3, S4Config(d_model=3, d_state=N))
    torch.testing.assert_close(layer.log_neg_A_real.exp(), torch.full((3, N // 2), 0.5))
    torch.testing.assert_close(layer.A_imag, A.imag.float().expand(3, -1), atol=0, rtol=1e-6)


def test_s4d_lin_init() -> None:
    """S4D-Lin: A_n = -1/2 + i π n, n = 0 .. N/2 - 1 (exact in float64)."""
    A = s4d_init_A(8, "lin")
    n = torch.arange(4, dtype=torch.float64)
    expected = torch.complex(torch.full_like(n, -0.5), math.pi * n)
    torch.testing.assert_close(A, expected, atol=1e-15, rtol=0)


def test_s4_discretisation_is_recomputed_after_optimizer_step() -> None:
    """An SGD step that changes log Δ changes the next forward, which then equals a fresh model
    loaded with the updated parameters (atol 1e-6): nothing discretised is cached (no buffers)."""
    torch.manual_seed(0)
    model = make_backbone("s4", 4, S4Config(d_model=8, d_state=8))
    assert list(model.buffers()) == []
    x = torch.randn(2, 10, 4, generator=gen(1))
    y0, _ = model(x)
    log_dt = [p for name, p in model.named_parameters() if name.endswith("log_dt")]
    opt = torch.optim.SGD(log_dt, lr=1.0)
    y0.pow(2).sum().backward()
    before = [p.detach().clone() for p in log_dt]
    opt.step()
    assert all((p - b).abs().max() > 1e-4 for p, b in zip(log_dt, before))
    with torch.no_grad():
        y1, _ = model(x)
        fresh = make_backbone("s4", 4, S4Config(d_model=8, d_state=8))
        fresh.load_state_dict(model.state_dict())
        assert (y1 - y0).abs().max() > 1e-4
        torch.testing.assert_close(y1, fresh(x)[0], atol=1e-6, rtol=0)


# --- precision: exp(Δ·A) in fp32 under bf16 autocast ---------------------------------------


def test_bf16_cannot_represent_small_decay() -> None:
    """Why the discretisation must stay fp32: bf16 rounds exp(-0.0005) to exactly 1."""
    assert torch.tensor(-0.0005).exp().to(torch.bfloat16) == 1.0
    assert torch.tensor(-0.0005).exp() < 1.0


@pytest.mark.parametrize("scan", ["parallel", "sequential", "step"])
@torch.no_grad()
def test_mamba_tiny_dt_decays_under_bf16_autocast(scan: str) -> None:
    """With Δ = 1e-4 (Δ-projection weight 0) and B = 0, the SSM state only decays:
    h_T = exp(Δ A T) h_0. Under CPU bf16 autocast the final state is fp32 and within 1e-5 of
    that (float64) value; a bf16 exp(Δ A) (= 1 for the slow modes) would miss by more than 5e-3,
    and so would an unchanged h_0."""
    cfg = MambaConfig(
        d_model=8, n_layers=1, chunk=16, scan="sequential" if scan == "step" else scan
    )
    torch.manual_seed(0)
    model = MambaBackbone(3, cfg)
    block = model.blocks[0]
    dt_rank, N = block.dt_rank, block.d_state
    block.dt_proj.weight.zero_()
    block.dt_proj.bias.fill_(math.log(math.expm1(TINY_DT)))  # softplus^-1(Δ)
    block.x_proj.weight[dt_rank : dt_rank + N].zero_()  # B = 0, so dBx = 0
    ssm0, conv0 = model.initial_state(2)
    ssm0 = ssm0 + 1.0
    x = torch.randn(2, T_DECAY, 3, generator=gen(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if scan == "step":
            state = (ssm0, conv0)
            for t in range(T_DECAY):
                _, state = model.step(x[:, t], state)
        else:
            _, state = model(x, (ssm0, conv0))
    assert all(s.dtype == torch.float32 for s in state)
    rate = TINY_DT * block.A_log.double().exp()  # -Δ·A, (E·D, N)
    expected = torch.exp(-rate * T_DECAY) * ssm0[:, 0].double()
    torch.testing.assert_close(state[0][:, 0].double(), expected, atol=1e-5, rtol=0)
    bf16_decay = torch.exp(-rate).to(torch.bfloat16).double() ** T_DECAY
    assert (bf16_decay * ssm0[:, 0] - expected).abs().max() > 5e-3
    assert (ssm0[:, 0] - expected).abs().max() > 5e-3


@pytest.mark.parametrize("path", ["forward", "step"])
@torch.no_grad()
def test_s4_tiny_dt_decays_under_bf16_autocast(path: str) -> None:
    """With Δ = 1e-4 and B = 0 the state only evolves by s_T = exp(Δ A T) s_0. Under CPU bf16
    autocast the final state is fp32 and within 2e-5 of the complex128 value; with |dA| rounded
    to bf16 (= 1 here) it would miss by more than 1e-3, and so would an unchanged s_0."""
    torch.manual_seed(0)
    model = S4Backbone(3, S4Config(d_model=4, n_layers=1, d_state=8, init="lin"))
    layer = model.blocks[0].ssm
    layer.log_dt.fill_(math.log(TINY_DT))
    layer.B.zero_()
    s0 = torch.view_as_real(torch.full((2, 1, 4, 4), 1.0 + 0.5j, dtype=torch.complex64))
    x = torch.randn(2, T_DECAY, 3, generator=gen(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if path == "step":
            state = (s0,)
            for t in range(T_DECAY):
                _, state = model.step(x[:, t], state)
        else:
            _, state = model(x, (s0,))
    assert state[0].dtype == torch.float32
    A = torch.complex(-layer.log_neg_A_real.double().exp(), layer.A_imag.double())  # (H, N/2)
    s0_c = torch.view_as_complex(s0[:, 0]).to(torch.complex128)
    expected = torch.exp(TINY_DT * A * T_DECAY) * s0_c
    got = torch.view_as_complex(state[0][:, 0].contiguous()).to(torch.complex128)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    bf16_abs = torch.exp(TINY_DT * A.real).to(torch.bfloat16).double() ** T_DECAY
    assert (bf16_abs * s0_c.abs() - expected.abs()).abs().max() > 1e-3
    assert (s0_c - expected).abs().max() > 1e-3


# --- config errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_state": 7}, "d_state.*even.*7"),
        ({"d_state": 0}, "d_state.*0"),
        ({"init": "legt"}, "init.*'legt'"),
        ({"dt_min": 0.0}, "dt_min=0.0"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min=0.2, dt_max=0.1"),
    ],
)
def test_s4_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        S4Config(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chunk": 0}, "chunk.*0"),
        ({"chunk": -3}, "chunk.*-3"),
        ({"d_state": 0}, "d_state.*0"),
        ({"d_conv": 0}, "d_conv.*0"),
        ({"expand": 0}, "expand.*0"),
        ({"dt_rank": 0}, "dt_rank.*0"),
        ({"scan": "blelloch"}, "scan.*'blelloch'"),
    ],
)
def test_mamba_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MambaConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["s4", "mamba"])
def test_state_shape_errors(name: str) -> None:
    """A state of the wrong shape raises ValueError naming both shapes."""
    model = make_backbone(name, 3)
    bad = tuple(s[:, :0] for s in model.initial_state(2))
    with pytest.raises(ValueError, match="state must have shapes"):
        model(torch.zeros(2, 4, 3), bad)


# --- Mamba: fused scan == sequential reference ---------------------------------------------

# Fused against sequential, relative to max |sequential| tensor by tensor. Float64: the worst
# observed error is 1.4e-15 (grad A). fp32: 5.2e-7 (grad A, a sum over B and T); 5e-6 leaves a
# 10x margin. Both orders of summation differ; exp2(Δ·A·log2 e) differs from exp(Δ·A) in the
# last bit.
FUSED_TOL = {torch.float64: 1e-12, torch.float32: 5e-6}
FUSED_NAMES = ["delta", "A", "B", "C", "x", "h0"]


def fused_inputs(T: int, seed: int, dtype: torch.dtype, h0_scale: float = 1.0) -> list[Tensor]:
    """Leaves Δ, A, B, C, x, h0 (B=2, D=3, N=4). Δ in [1e-3, 20] and A in [-8, -0.1]
    (log-uniform), so Δ·A reaches -160: the fused scan's clamp at -80 is active."""
    g = gen(seed)
    f64 = torch.float64
    delta = torch.empty(2, T, 3, dtype=f64).uniform_(math.log(1e-3), math.log(20.0), generator=g)
    A = torch.empty(3, 4, dtype=f64).uniform_(math.log(0.1), math.log(8.0), generator=g)
    B, C = (torch.randn(2, T, 4, generator=g, dtype=f64) for _ in range(2))
    x = torch.randn(2, T, 3, generator=g, dtype=f64)
    h0 = h0_scale * torch.randn(2, 3, 4, generator=g, dtype=f64)
    return [t.to(dtype).requires_grad_() for t in (delta.exp(), -A.exp(), B, C, x, h0)]


def sequential_from_fused_inputs(delta: Tensor, A: Tensor, B: Tensor, C: Tensor, x: Tensor,
                                 h0: Tensor) -> tuple[Tensor, Tensor]:
    dA_log = delta.unsqueeze(-1) * A  # (B, T, D, N)
    dBx = (delta * x).unsqueeze(-1) * B.unsqueeze(2)  # (B, T, D, N)
    return selective_scan_sequential(dA_log, dBx, C, h0)


def assert_close_to_max(got: Tensor, ref: Tensor, tol: float, name: str) -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype, name
    torch.testing.assert_close(got, ref, atol=tol * ref.abs().max().item(), rtol=0, msg=name)


@pytest.mark.parametrize("grad_h", [False, True], ids=["dL/dh_T=0", "dL/dh_T!=0"])
@pytest.mark.parametrize("h0_scale", [0.0, 1.0], ids=["h0=0", "h0!=0"])
@pytest.mark.parametrize(("T", "chunk"), [(1, None), (8, 8), (37, 8), (37, None)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_mamba_fused_scan_matches_sequential(
    dtype: torch.dtype, T: int, chunk: int | None, h0_scale: float, grad_h: bool
) -> None:
    """y, h_T and the gradients of sum(w_y * y) [+ sum(w_h * h_T)] w.r.t. Δ, A, B, C, x, h0:
    fused (chunk 8: T=37 is 4 chunks and a tail of 5; None: one chunk here) against the
    sequential scan on Δ·A and (Δ·x)·B, within FUSED_TOL of max |sequential|."""
    inputs = fused_inputs(T, seed=T, dtype=dtype, h0_scale=h0_scale)
    g = gen(100 + T)
    w_y = torch.randn(2, T, 3, generator=g, dtype=torch.float64).to(dtype)
    w_h = grad_h * torch.randn(2, 3, 4, generator=g, dtype=torch.float64).to(dtype)
    results = []
    for scan in (sequential_from_fused_inputs, lambda *a: selective_scan_fused(*a, chunk=chunk)):
        y, h = scan(*inputs)
        grads = torch.autograd.grad((w_y * y).sum() + (w_h * h).sum(), inputs)
        results.append((y, h, *grads))
    assert results[1][0].shape == (2, T, 3) and results[1][1].shape == (2, 3, 4)
    for name, ref, got in zip(["y", "h_T", *[f"grad {n}" for n in FUSED_NAMES]], *results):
        assert torch.isfinite(got).all(), name
        assert_close_to_max(got, ref, FUSED_TOL[dtype], name)


def test_mamba_fused_scan_gradcheck() -> None:
    """torch.autograd.gradcheck of the hand-written backward (float64, B=2, T=5, D=3, N=2,
    chunks of 2: two full and a tail), from a non-zero h0, y and h_T both in the output."""
    g = gen(3)
    delta = torch.rand(2, 5, 3, generator=g, dtype=torch.float64) + 0.1
    A = -torch.rand(3, 2, generator=g, dtype=torch.float64) - 0.5
    B = torch.randn(2, 5, 2, generator=g, dtype=torch.float64)
    C = torch.randn(2, 5, 2, generator=g, dtype=torch.float64)
    x = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (delta, A, B, C, x, h0)]
    assert torch.autograd.gradcheck(lambda *a: selective_scan_fused(*a, chunk=2), inputs)


def test_mamba_fused_scan_saves_no_full_size_tensor() -> None:
    """Everything the fused scan saves for the backward (Δ, Δ·x, x, A, B, C and the states
    before its 5 chunks, T=37, chunk 8) is smaller than one (B, T, D, N) tensor; autograd
    through the sequential reference saves such tensors."""
    inputs = fused_inputs(37, seed=0, dtype=torch.float32)
    full = 2 * 37 * 3 * 4
    for scan, expect_full in ((lambda *a: selective_scan_fused(*a, chunk=8), False),
                              (sequential_from_fused_inputs, True)):
        sizes: list[int] = []

        def pack(t: Tensor, sizes: list[int] = sizes) -> Tensor:
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            scan(*inputs)
        assert (max(sizes) >= full) == expect_full, sizes


def test_mamba_fused_scan_errors() -> None:
    """A wrong shape names the input, the expected and the actual shape; chunk must be > 0."""
    delta, A, B, C, x, h0 = fused_inputs(5, seed=0, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"A must have shape \(3, 4\), got \(4, 3\)"):
        selective_scan_fused(delta, A.T, B, C, x, h0)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 3, 4\), got \(2, 4\)"):
        selective_scan_fused(delta, A, B, C, x, h0[:, 0])
    with pytest.raises(ValueError, match="chunk.*0"):
        selective_scan_fused(delta, A, B, C, x, h0, chunk=0)


def test_mamba_fused_scan_empty_sequence() -> None:
    """T=0: y is (B, 0, D) and h_T is h0."""
    delta, A, B, C, x, h0 = fused_inputs(0, seed=0, dtype=torch.float32)
    y, h = selective_scan_fused(delta, A, B, C, x, h0)
    assert y.shape == (2, 0, 3)
    assert torch.equal(h, h0)


def test_mamba_auto_scan_is_fused_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """scan="auto" calls the fused scan on the CPU, once per block."""
    calls = []

    def spy(*args: Tensor) -> tuple[Tensor, Tensor]:
        calls.append(args[0].shape)
        return selective_scan_fused(*args)

    monkeypatch.setattr(mamba, "selective_scan_fused", spy)
    model = MambaBackbone(5, MambaConfig(d_model=16, n_layers=2))
    model(torch.randn(3, 4, 5, generator=gen(0)))
    assert calls == [(3, 4, 32), (3, 4, 32)]


def test_mamba_backbone_fused_equals_sequential() -> None:
    """scan="fused" == scan="sequential" over T=45 from a carried state (2 layers, fp32):
    outputs, both states, and the gradients of sum(w_y * y) + sum(w_h * ssm state) w.r.t. every
    parameter and the carried ssm state, within 5e-6 of max |sequential| tensor by tensor
    (observed: 2.8e-7)."""
    torch.manual_seed(0)
    fused = MambaBackbone(5, MambaConfig(d_model=16, n_layers=2, scan="fused"))
    seq = MambaBackbone(5, MambaConfig(d_model=16, n_layers=2, scan="sequential"))
    seq.load_state_dict(fused.state_dict())
    x = torch.randn(3, 52, 5, generator=gen(1))
    with torch.no_grad():
        ssm0, conv0 = seq(x[:, :7])[1]
    g = gen(2)
    w_y, w_h = torch.randn(3, 45, 16, generator=g), torch.randn(ssm0.shape, generator=g)
    results = []
    for model in (seq, fused):
        ssm = ssm0.clone().requires_grad_()
        y, state = model(x[:, 7:], (ssm, conv0))
        loss = (w_y * y).sum() + (w_h * state[0]).sum()
        grads = torch.autograd.grad(loss, [*model.parameters(), ssm])
        results.append((y, *state, *grads))
    names = ["y", "ssm state", "conv state", *[n for n, _ in seq.named_parameters()], "ssm0"]
    for name, ref, got in zip(names, *results):
        assert_close_to_max(got, ref, FUSED_TOL[torch.float32], name)


@torch.no_grad()
def test_mamba_fused_tiny_dt_decays_under_bf16_autocast() -> None:
    """The bf16-autocast check above, for scan="fused"."""
    test_mamba_tiny_dt_decays_under_bf16_autocast("fused")
