"""Mamba-2 checks beyond the shared contract (which test_backbones runs for every family).

The chunked SSD against the sequential recurrence (outputs, final state, gradients) in float64
and fp32, for T a multiple of the chunk, not a multiple, and shorter than it, from a non-zero
state; the same through the whole backbone (every parameter's gradient). Precision: the SSD runs
in fp32 under bf16 autocast and a tiny decay is not rounded away. Config and state errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import rlkit.backbones.mamba2 as mamba2
from rlkit.backbones import backbone_config, make_backbone
from rlkit.backbones.mamba2 import Mamba2Backbone, Mamba2Config, ssd_chunked, ssd_sequential

SHAPE = {"B": 2, "H": 3, "P": 4, "N": 5}
# (rtol, atol) of chunked vs sequential, values and gradients up to ~75: float64 leaves only
# summation-order round-off (measured worst: 1% of its tolerance), fp32 a few ulps (measured
# worst: under half of its tolerance, on the gradient w.r.t. dt).
TOLERANCE = {torch.float64: (1e-12, 1e-12), torch.float32: (5e-5, 1e-5)}
TINY_DT, T_DECAY = 1e-4, 64  # a step size whose decay exp(dt A) bf16 rounds to 1, and a length


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ssd_inputs(T: int, seed: int, dtype: torch.dtype) -> list[Tensor]:
    """x, dt, A, B, C, D, h0 with per-step decays exp(dt A) from ~1 - 4e-4 to ~exp(-16), so
    chunk sums reach the clamp floor; h0 non-zero."""
    g, (b, H, P, N) = gen(seed), SHAPE.values()
    x = torch.randn(b, T, H, P, generator=g)
    dt = torch.empty(b, T, H).uniform_(-7.0, 0.0, generator=g).exp()
    A = -torch.empty(H).uniform_(-1.0, math.log(16.0), generator=g).exp()
    B, C = torch.randn(b, T, N, generator=g), torch.randn(b, T, N, generator=g)
    D, h0 = torch.randn(H, generator=g), torch.randn(b, H, P, N, generator=g)
    return [t.to(dtype).requires_grad_() for t in (x, dt, A, B, C, D, h0)]


# --- chunked SSD == sequential recurrence --------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    ("T", "chunk"), [(1, 16), (7, 16), (32, 16), (45, 16), (47, 16), (50, 8)],
    ids=["T=1", "T<Q", "T=2Q", "3 chunks of 15", "3 of 16, 1 padded", "7 of 8, 6 padded"],
)
def test_chunked_matches_sequential(T: int, chunk: int, dtype: torch.dtype) -> None:
    """y, h_T and the gradients w.r.t. x, dt, A, B, C, D, h0 agree within TOLERANCE."""
    inputs = ssd_inputs(T, seed=T, dtype=dtype)
    g, (b, H, P, N) = gen(1000 + T), SHAPE.values()
    w_y = torch.randn(b, T, H, P, generator=g, dtype=dtype)
    w_h = torch.randn(b, H, P, N, generator=g, dtype=dtype)
    results = []
    for ssd in (ssd_sequential, lambda *a: ssd_chunked(*a, chunk=chunk)):
        y, h = ssd(*inputs)
        grads = torch.autograd.grad((y * w_y).sum() + (h * w_h).sum(), inputs)
        results.append((y, h, *grads))
    assert results[1][0].shape == (b, T, H, P) and results[1][1].shape == (b, H, P, N)
    rtol, atol = TOLERANCE[dtype]
    names = ["y", "h_T", *(f"grad {n}" for n in ("x", "dt", "A", "B", "C", "D", "h0"))]
    for name, ref, got in zip(names, *results):
        assert got.dtype == dtype and torch.isfinite(got).all(), name
        torch.testing.assert_close(got, ref, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("big", [1e2, 1e3, 1e4])
def test_one_large_decay_in_a_chunk_costs_the_chunked_form_no_precision(big: float) -> None:
    """One step of |dt A| = ``big`` in every 16 (a head forgetting), fp32 against a float64
    reference: the chunked form is as close as the recurrence that ``step`` runs. It took each
    decay as the difference of two running sums, which lost the digits after a large step:
    errors of 2.4e-5, 2.7e-4 and 5.0e-3 here, against 9.2e-7 for the recurrence and 7.3e-7 now
    (|dt A| sums of about 1,000 inside a 32-step chunk occur in a trained Pendulum-V policy)."""
    x, dt, A, B, C, D, h0 = (t.detach() for t in ssd_inputs(64, seed=3, dtype=torch.float32))
    dt[:, 5::16] = big / A.abs()
    x[:, 5::16] = 0.0
    inputs = [x, dt, A, B, C, D, h0]
    ref, h_ref = ssd_sequential(*(t.double() for t in inputs))
    y_seq, h_seq = ssd_sequential(*inputs)
    y, h = ssd_chunked(*inputs, chunk=32)
    err_seq = (y_seq.double() - ref).abs().max().item()
    assert (y.double() - ref).abs().max().item() <= max(4 * err_seq, 1e-5)
    torch.testing.assert_close(h.double(), h_ref, rtol=1e-5, atol=1e-5)
    # the gradients, A's above all (it reaches every exponent): through a difference of
    # running sums (forward or backward) it was 6e-5 to 6e-4 from float64 here, relative to its
    # largest entry, at 1e3 and 1e4; summed directly, about 2e-7
    w = torch.randn(x.shape, generator=gen(5))
    leaves = [t.clone().requires_grad_() for t in inputs]
    grads = torch.autograd.grad((ssd_chunked(*leaves, chunk=32)[0] * w).sum(), leaves)
    leaves64 = [t.double().requires_grad_() for t in inputs]
    refs = torch.autograd.grad((ssd_sequential(*leaves64)[0] * w.double()).sum(), leaves64)
    for name, g, r in zip(("x", "dt", "A", "B", "C", "D", "h0"), grads, refs):
        rel = ((g.double() - r).abs().max() / r.abs().max()).item()
        assert rel < 1e-5, (name, rel)


def test_chunked_rejects_bad_chunk() -> None:
    with pytest.raises(ValueError, match="chunk.*0"):
        ssd_chunked(*ssd_inputs(5, seed=0, dtype=torch.float32), chunk=0)


def test_backbone_chunked_matches_sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backbone (chunk 16, T=45, 2 layers) from a carried non-zero state equals the same
    weights with the SSD swapped for the recurrence: outputs, both states and every
    parameter's gradient (atol 1e-4, rtol 1e-5, fp32: gradients reach ~77, where an fp32 ulp is
    8e-6, and sum over B T; measured worst: a quarter of the tolerance)."""
    torch.manual_seed(0)
    model = Mamba2Backbone(5, Mamba2Config(d_model=16, n_layers=2, chunk=16))
    x = torch.randn(3, 45, 5, generator=gen(1))
    w = torch.randn(3, 45, 16, generator=gen(2))
    state = tuple(torch.randn(s.shape, generator=gen(3)) for s in model.initial_state(3))
    results = []
    for ssd in (ssd_chunked, lambda *a: ssd_sequential(*a[:-1])):
        monkeypatch.setattr(mamba2, "ssd_chunked", ssd)
        model.zero_grad()
        y, new_state = model(x, state)
        (y * w).sum().backward()
        results.append((y.detach(), *new_state, *(p.grad for p in model.parameters())))
    names = ["y", "ssm", "conv", *(name for name, _ in model.named_parameters())]
    for name, ref, got in zip(names, results[1], results[0]):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4, msg=name)


# --- precision: the SSD in fp32 under bf16 autocast ----------------------------------------


def test_ssd_runs_in_fp32_under_bf16_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CPU bf16 autocast every tensor the chunked SSD and the step's recurrence receive
    is fp32, and so is what they return."""
    seen: list[torch.dtype] = []

    def spy(fn):
        def wrapped(*args):
            seen.extend(a.dtype for a in args if isinstance(a, Tensor))
            out = fn(*args)
            seen.extend(t.dtype for t in out)
            return out
        return wrapped

    monkeypatch.setattr(mamba2, "ssd_chunked", spy(ssd_chunked))
    monkeypatch.setattr(mamba2, "ssd_sequential", spy(ssd_sequential))
    torch.manual_seed(0)
    model = Mamba2Backbone(3, Mamba2Config(d_model=16, chunk=4))
    x = torch.randn(2, 10, 3, generator=gen(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = model(x)
        model.step(x[:, 0], state)
    assert len(seen) == 2 * 9 and set(seen) == {torch.float32}


@pytest.mark.parametrize("path", ["forward", "step"])
@torch.no_grad()
def test_tiny_dt_decays_under_bf16_autocast(path: str) -> None:
    """With dt = 1e-4 for every head (dt weights 0) and B = 0 (its projection and conv 0), the
    state only decays: h_T = exp(dt A T) h_0. Under CPU bf16 autocast the final state is fp32
    and within 1e-5 of that (float64) value; a bf16 exp(dt A) (= 1 for the slow heads) would
    miss by more than 5e-3, and so would an unchanged h_0."""
    torch.manual_seed(0)
    model = Mamba2Backbone(3, Mamba2Config(d_model=16, n_layers=1, chunk=16))
    block = model.blocks[0]
    d_inner, N = block.d_inner, block.d_state
    b_rows = slice(2 * d_inner, 2 * d_inner + N)  # in_proj rows: z, x, B, C, dt
    block.in_proj.weight[b_rows].zero_()
    block.in_proj.weight[-block.n_heads :].zero_()
    block.conv1d.weight[d_inner : d_inner + N].zero_()
    block.conv1d.bias[d_inner : d_inner + N].zero_()
    block.dt_bias.fill_(math.log(math.expm1(TINY_DT)))  # softplus^-1(dt)
    ssm0, conv0 = model.initial_state(2)
    ssm0 = ssm0 + 1.0
    x = torch.randn(2, T_DECAY, 3, generator=gen(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if path == "step":
            state = (ssm0, conv0)
            for t in range(T_DECAY):
                _, state = model.step(x[:, t], state)
        else:
            _, state = model(x, (ssm0, conv0))
    assert all(s.dtype == torch.float32 for s in state)
    rate = (TINY_DT * block.A_log.double().exp())[:, None, None]  # -dt A per head, (H, 1, 1)
    expected = torch.exp(-rate * T_DECAY) * ssm0[:, 0].double()
    torch.testing.assert_close(state[0][:, 0].double(), expected, atol=1e-5, rtol=0)
    bf16_decay = torch.exp(-rate).to(torch.bfloat16).double() ** T_DECAY
    assert (bf16_decay * ssm0[:, 0] - expected).abs().max() > 5e-3
    assert (ssm0[:, 0] - expected).abs().max() > 5e-3


# --- config, registry and state errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chunk": 0}, "chunk.*0"),
        ({"chunk": -3}, "chunk.*-3"),
        ({"d_state": 0}, "d_state.*0"),
        ({"d_conv": 0}, "d_conv.*0"),
        ({"expand": 0}, "expand.*0"),
        ({"head_dim": 0}, "head_dim.*0"),
        ({"head_dim": 2.5}, "head_dim.*2.5"),
        ({"d_model": 16, "head_dim": 12}, r"expand \* d_model = 32.*head_dim=12"),
        ({"d_model": 20, "expand": 1}, r"= 20 .*expand=1, d_model=20, head_dim=16"),
    ],
)
def test_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Mamba2Config(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("d_model", [16, 64])
def test_backbone_config_defaults(d_model: int) -> None:
    """The registry builds mamba2 from the common fields: heads of 16 over 2 d_model, state
    shapes (B, n_layers, H, 16, 16) and (B, n_layers, 2 d_model + 32, 3)."""
    cfg = backbone_config("mamba2", d_model=d_model, n_layers=2)
    assert isinstance(cfg, Mamba2Config)
    model = make_backbone("mamba2", 3, cfg)
    H = 2 * d_model // 16
    ssm, conv = model.initial_state(4)
    assert ssm.shape == (4, 2, H, 16, 16) and conv.shape == (4, 2, 2 * d_model + 32, 3)
    y, _ = model(torch.randn(4, 5, 3, generator=gen(0)))
    assert y.shape == (4, 5, d_model)


def test_state_shape_errors() -> None:
    """A state of the wrong shape raises ValueError naming the family and both shapes."""
    model = make_backbone("mamba2", 3)
    bad = tuple(s[:, :0] for s in model.initial_state(2))
    with pytest.raises(ValueError, match="Mamba2 state must have shapes"):
        model(torch.zeros(2, 4, 3), bad)
    with pytest.raises(ValueError, match="Mamba2 state must have shapes"):
        model.step(torch.zeros(2, 3), model.initial_state(3))
