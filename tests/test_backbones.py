"""The backbone contract, one suite parametrised over every registered family.

Sizes are small (D_in=5, d_model=16, 2 layers, batch 3, T=12, transformer window K=8) so that the
whole file runs in seconds on one CPU thread. Everything runs in fp32; each test states its
tolerance. Invariants: step == forward, chunking, causality, reset_state, bf16 autocast,
gradient checkpointing, gradient flow; then registry / config errors and transformer specifics.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from rlkit.backbones import (
    BACKBONE_NAMES,
    Backbone,
    BackboneConfig,
    State,
    backbone_config,
    backbone_config_class,
    check_backbone,
    make_backbone,
)
from rlkit.backbones.mlp import MLPConfig
from rlkit.backbones.rnn import RNNBackbone, RNNConfig
from rlkit.backbones.transformer import TransformerConfig

B, T, D_IN, D_MODEL, N_LAYERS, K = 3, 12, 5, 16, 2, 8
ATOL = 1e-5  # fp32 parity between two exact computations done in a different order
FAMILY_OPTIONS: dict[str, dict[str, object]] = {
    "rnn": {"cell": "rnn"},
    "lstm": {"cell": "lstm"},
    "gru": {"cell": "gru"},
    "transformer": {"n_heads": 4, "context": K},
    "mamba2": {"chunk": 5},  # T=12: 3 chunks of 4; 2 heads of 16 at d_model=16
}
families = pytest.mark.parametrize("name", BACKBONE_NAMES)


def config(name: str, **overrides: object) -> BackboneConfig:
    cfg_cls = backbone_config_class(name)
    options = {"d_model": D_MODEL, "n_layers": N_LAYERS, **FAMILY_OPTIONS.get(name, {})}
    return cfg_cls(**{**options, **overrides})


def build(name: str, seed: int = 0, **overrides: object) -> Backbone:
    cfg = config(name, **overrides)
    torch.manual_seed(seed)
    return make_backbone(name, D_IN, cfg)


def randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def run_steps(model: Backbone, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
    state = model.initial_state(x.shape[0]) if state is None else state
    ys = []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)  # (B, D)
        ys.append(y)
    return torch.stack(ys, dim=1), state  # (B, T, D)


def assert_states_close(a: State, b: State, atol: float) -> None:
    assert len(a) == len(b)
    for sa, sb in zip(a, b):
        torch.testing.assert_close(sa, sb, atol=atol, rtol=0)


def rel_err(a: Tensor, ref: Tensor) -> float:
    return ((a.float() - ref).norm() / ref.norm()).item()


# --- 1. step == forward --------------------------------------------------------------------


@families
@pytest.mark.parametrize("t", [K - 2, T], ids=["T<=K", "T>K"])
@torch.no_grad()
def test_step_equals_forward(name: str, t: int) -> None:
    """T calls of step give forward's outputs and final state (atol 1e-5, fp32)."""
    model = build(name)
    x = randn(B, t, D_IN, seed=1)
    y, state = model(x)
    y_step, state_step = run_steps(model, x)
    assert y.shape == (B, t, model.d_out)
    torch.testing.assert_close(y_step, y, atol=ATOL, rtol=0)
    assert_states_close(state_step, state, atol=ATOL)


# --- 2. chunking ---------------------------------------------------------------------------


@families
@pytest.mark.parametrize("k", [1, 5, K, T - 1])
@torch.no_grad()
def test_chunking(name: str, k: int) -> None:
    """forward(x[:, :k]) then forward(x[:, k:], state) == forward(x) (atol 1e-5, fp32)."""
    model = build(name)
    x = randn(B, T, D_IN, seed=2)
    y, state = model(x)
    y1, s1 = model(x[:, :k])
    y2, s2 = model(x[:, k:], s1)
    torch.testing.assert_close(torch.cat((y1, y2), dim=1), y, atol=ATOL, rtol=0)
    assert_states_close(s2, state, atol=ATOL)


@families
@torch.no_grad()
def test_explicit_initial_state_equals_none(name: str) -> None:
    """forward(x, initial_state) == forward(x, None) (atol 1e-5), states in fp32."""
    model = build(name)
    x = randn(B, T, D_IN, seed=3)
    init = model.initial_state(B)
    assert all(s.dtype == torch.float32 and s.shape[0] == B for s in init)
    y, state = model(x)
    y0, state0 = model(x, init)
    torch.testing.assert_close(y0, y, atol=ATOL, rtol=0)
    assert_states_close(state0, state, atol=ATOL)


# --- 3. causality --------------------------------------------------------------------------


@families
@pytest.mark.parametrize("warm", [False, True], ids=["fresh", "warm"])
@pytest.mark.parametrize("t", [1, 5, 9])
@torch.no_grad()
def test_causality(name: str, t: int, warm: bool) -> None:
    """Perturbing x[:, t:] leaves y[:, :t] unchanged and changes y[:, t:] (by > 1e-3).

    Tolerance atol 1e-6 + rtol 1e-6: FFT convolutions (S4) spread fp32 round-off of later inputs
    over all times, about one ulp (up to 1e-6 at |y| ~ 8); a real leak moves y by far more."""
    model = build(name)
    state = model(randn(B, 4, D_IN, seed=4))[1] if warm else None
    x = randn(B, T, D_IN, seed=5)
    x2 = x.clone()
    x2[:, t:] += randn(B, T - t, D_IN, seed=6)
    y, _ = model(x, state)
    y2, _ = model(x2, state)
    torch.testing.assert_close(y2[:, :t], y[:, :t], atol=1e-6, rtol=1e-6)
    assert (y2[:, t:] - y[:, t:]).abs().max() > 1e-3


@families
@torch.no_grad()
def test_has_memory_flag(name: str) -> None:
    """Perturbing x[:, :5] changes y[:, 5:] (by > 1e-3) iff the family has memory; a family
    without memory has the empty state."""
    model = build(name)
    x = randn(B, T, D_IN, seed=18)
    x2 = x.clone()
    x2[:, :5] += randn(B, 5, D_IN, seed=19)
    y, _ = model(x)
    y2, _ = model(x2)
    assert bool((y2[:, 5:] - y[:, 5:]).abs().max() > 1e-3) == model.has_memory
    if not model.has_memory:
        assert model.initial_state(B) == ()


# --- reset_state ---------------------------------------------------------------------------


@families
@torch.no_grad()
def test_reset_state(name: str) -> None:
    """Reset rows equal the initial state exactly; the other rows are bit-identical."""
    model = build(name)
    _, state = model(randn(B, T, D_IN, seed=7))
    done = torch.tensor([True, False, True])
    reset = model.reset_state(state, done)
    init = model.initial_state(B)
    assert len(reset) == len(state) == len(init)
    for r, s, i in zip(reset, state, init):
        assert r.dtype == s.dtype and r.shape == s.shape
        assert torch.equal(r[done], i[done])
        assert torch.equal(r[~done], s[~done])

    # A reset row then behaves like a fresh episode, a kept row like the carried one (atol 1e-5).
    x = randn(B, T, D_IN, seed=8)
    y, _ = model(x, reset)
    torch.testing.assert_close(y[done], model(x)[0][done], atol=ATOL, rtol=0)
    torch.testing.assert_close(y[~done], model(x, state)[0][~done], atol=ATOL, rtol=0)
    y_step, _ = run_steps(model, x, reset)  # stepping from the reset state: the same outputs
    torch.testing.assert_close(y_step, y, atol=ATOL, rtol=0)


@families
def test_reset_state_rejects_bad_mask(name: str) -> None:
    """A done_mask that is not (B,) raises ValueError."""
    model = build(name)
    state = model.initial_state(B)
    with pytest.raises(ValueError, match="done_mask"):
        model.reset_state(state, torch.zeros(B, 1, dtype=torch.bool))
    if state:  # a stateless family has no rows to compare the mask's length against
        with pytest.raises(ValueError, match="rows"):
            model.reset_state(state, torch.zeros(B + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"done_mask must be a bool tensor of shape \(B,\), "
                                         r"got dtype torch.float32"):
        model.reset_state(state, torch.full((B,), 0.5))
    with pytest.raises(ValueError, match=r"done_mask must be a bool tensor .*, got list"):
        model.reset_state(state, [True] * B)


@families
def test_state_of_another_batch_is_refused_by_name(name: str) -> None:
    """A state made for another batch size raises a ValueError naming the shapes, in ``step``
    and in ``forward``, rather than an error from deep inside the family's kernels."""
    model = build(name)
    state = model.initial_state(B + 1)
    if not state:  # a stateless family has nothing to check
        return
    want = tuple(model.initial_state(B)[0].shape)
    for call in (lambda: model.step(randn(B, D_IN, seed=0), state),
                 lambda: model(randn(B, 4, D_IN, seed=0), state)):
        with pytest.raises(ValueError, match="state") as e:
            call()
        assert str(want) in str(e.value) and str(tuple(state[0].shape)) in str(e.value)


@families
def test_step_without_a_state_starts_from_the_initial_state(name: str) -> None:
    """``step(x, None)`` is ``step(x, initial_state(B))`` in every family, as ``forward``'s
    ``None`` is (some families took it, others failed inside their kernels)."""
    model = build(name)
    x = randn(B, D_IN, seed=1)
    y, state = model.step(x, None)
    y0, state0 = model.step(x, model.initial_state(B))
    assert torch.equal(y, y0) and all(torch.equal(a, b) for a, b in zip(state, state0))


@families
def test_an_empty_sequence_gives_no_outputs_and_leaves_the_state(name: str) -> None:
    """``T = 0``: outputs ``(B, 0, D_out)`` and the state given (the initial one for None), in
    every family (some returned that, others failed inside their kernels); ``B = 0`` alike, its
    outputs still on the weights' graph."""
    model = build(name)
    _, state = model(randn(B, 3, D_IN, seed=0))
    y, after = model(torch.zeros(B, 0, D_IN), state)
    assert y.shape == (B, 0, D_MODEL) and all(a is b for a, b in zip(after, state))
    y, start = model(torch.zeros(B, 0, D_IN))
    assert all(torch.equal(a, b) for a, b in zip(start, model.initial_state(B)))
    # no rows: S4's FFT failed in MKL; every family gives (0, T, D_out), with a graph
    y, none = model(torch.zeros(0, 3, D_IN))
    assert y.shape == (0, 3, D_MODEL) and all(s.shape[0] == 0 for s in none)
    y.sum().backward()
    if state:  # a state of other shapes is refused at T = 0 as at T > 0 (it came back as given)
        wrong = tuple(torch.zeros(B + 1, *s.shape[1:], dtype=s.dtype) for s in state)
        for t in (0, 2):
            with pytest.raises(ValueError, match=r"state .*must (have|be)"):
                model(torch.zeros(B, t, D_IN), wrong)


@pytest.mark.parametrize("which", [0, 1, 2, 3])
@pytest.mark.parametrize("path", ["forward", "step"])
def test_every_tensor_of_a_transformer_state_is_checked(which: int, path: str) -> None:
    """Only ``k`` was checked: an ``n_valid`` or ``pos`` of batch 1 for a batch of 3 was
    broadcast (wrong outputs, and a state of batch 1 came back), a bad ``v`` failed inside
    torch. Each of the four is now refused by name, with its shape, in forward and step (at
    T = 0 a state of other shapes is refused as well: the empty-sequence test)."""
    model = build("transformer")
    _, state = model(randn(B, 4, D_IN, seed=0))
    names = ("k", "v", "n_valid", "pos")
    for bad in (state[which][:1], state[which][..., None]):
        wrong = tuple(bad if i == which else s for i, s in enumerate(state))
        want = r"\(3,\)" if which >= 2 else r"\(3, 2, 7, 4, 4\)"
        with pytest.raises(ValueError, match=rf"transformer state {names[which]} must have shape "
                                             rf"{want} \(the state is \(k, v, n_valid, pos\)\), "
                                             rf"got {re.escape(str(tuple(bad.shape)))}"):
            if path == "forward":
                model(randn(B, 3, D_IN, seed=1), wrong)
            else:
                model.step(randn(B, D_IN, seed=1), wrong)


@families
def test_inputs_or_a_state_on_another_device_are_refused_by_name(name: str) -> None:
    """Before: torch's own 'Tensor on device cpu is not on the expected device meta!' (or the
    RNN's 'Input and hidden tensors are not at the same device'), naming no argument. The
    meta device stands in for a second device on a CPU-only machine."""
    model = build(name)
    meta = torch.zeros(B, 3, D_IN, device="meta")
    with pytest.raises(ValueError, match=rf"{type(model).__name__}: x is on meta but the "
                                         r"weights are on cpu; move x \(or the model\)"):
        model(meta)
    with pytest.raises(ValueError, match=r"x is on meta but the weights are on cpu"):
        model.step(meta[:, 0])
    state = model.initial_state(B, device="meta")
    if state:
        with pytest.raises(ValueError, match=rf"{type(model).__name__}: state tensors on meta "
                                             r"but x is on cpu; make the state with "
                                             r"initial_state\(batch_size, device=x.device\)"):
            model(randn(B, 3, D_IN, seed=0), state)
        with pytest.raises(ValueError, match=r"state tensors on meta but x is on cpu"):
            model.step(randn(B, D_IN, seed=0), state)



@families
def test_initial_state_left_without_a_device_is_made_where_the_weights_are(name: str) -> None:
    """It was made on the CPU whatever the model's device, so ``step`` on a GPU model refused
    the state ``initial_state(B)`` gave it. The meta device stands in for a GPU."""
    model = build(name)
    assert all(s.device.type == "cpu" for s in model.initial_state(B))
    model = model.to("meta")
    state = model.initial_state(B)
    assert all(s.device.type == "meta" for s in state)
    assert all(s.device.type == "cpu" for s in model.initial_state(B, device="cpu"))

def test_a_float64_transformer_rotates_its_queries_and_keys_in_float64() -> None:
    """RoPE cast q and k to float32 in a float64 model: outputs 1e-8 from float64 arithmetic,
    where the other float64 families agree to 1e-15."""
    from rlkit.backbones import transformer as tr

    model = build("transformer").double()
    x = randn(B, T, D_IN, seed=0).double()
    y, _ = model(x)
    q = randn(B, T, 4, 4, seed=1).double()
    cos, sin = (f(torch.linspace(0, 3, 2 * B * T).double()).view(B, T, 1, 2) for f in
                (torch.cos, torch.sin))
    assert tr._rotate(q, cos, sin).dtype == torch.float64
    x1, x2 = q.chunk(2, dim=-1)
    torch.testing.assert_close(tr._rotate(q, cos, sin),
                               torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1),
                               rtol=0, atol=1e-15)
    assert y.dtype == torch.float64
    assert tr._rotate(q.float(), cos.float(), sin.float()).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tr._rotate(q.bfloat16(), cos.float(), sin.float()).dtype == torch.float32


@families
def test_inputs_of_another_dtype_are_refused_by_name(name: str) -> None:
    """A float64 or integer input names the family and the dtype expected (it failed in a
    matmul that named neither); half precisions are accepted (autocast computes in them)."""
    model = build(name)
    cls = type(model).__name__
    for bad, got in ((randn(B, 4, D_IN, seed=0).double(), "float64"),
                     (torch.ones(B, 4, D_IN, dtype=torch.int64), "int64")):
        for call, x in ((model, bad), (lambda x: model.step(x, None), bad[:, 0])):
            with pytest.raises(ValueError, match=rf"{cls}: x must be float32 \(the weights' "
                                                 rf"dtype; float16 or bfloat16 only under "
                                                 rf"autocast\), got {got}"):
                call(x)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        model(randn(B, 4, D_IN, seed=0).bfloat16())
    # outside autocast a half input met float32 weights in a matmul that named neither
    with pytest.raises(ValueError, match=rf"{cls}: x must be float32 .* got bfloat16"):
        model(randn(B, 4, D_IN, seed=0).bfloat16())
    # a NumPy array failed on its missing .dim() (AttributeError)
    with pytest.raises(ValueError, match=rf"^x must be a tensor of shape \(B, T, {D_IN}\), got "
                                         r"ndarray$"):
        model(randn(B, 4, D_IN, seed=0).numpy())
    with pytest.raises(ValueError, match=rf"^x must be a tensor of shape \(B, {D_IN}\), got list$"):
        model.step([[0.0] * D_IN])


@families
def test_float64_models_compute_in_float64_or_are_refused_by_name(name: str) -> None:
    """The state-space families keep float32 islands: float64 weights met float32 activations
    in a matmul deep inside; they are refused by name. The others compute in float64."""
    model = build(name).double()
    x = randn(B, 4, D_IN, seed=0).double()
    if name in ("s4", "mamba", "mamba2"):
        with pytest.raises(ValueError, match=rf"{type(model).__name__}: float64 weights are not "
                                             rf"supported"):
            model(x)
    else:
        y, _ = model(x)
        assert y.dtype == torch.float64


@families
@torch.no_grad()
def test_a_state_of_another_dtype_or_type_is_refused_by_name(name: str) -> None:
    """A float64 state on a float32 model failed in a matmul (RNN, GRU), in oneDNN (LSTM), was
    cast silently (the state-space families) or came back in float64 (the Transformer's
    counters); a state that is not a tuple of tensors failed on iterating it."""
    model = build(name)
    cls = type(model).__name__
    x = randn(B, 4, D_IN, seed=0)
    state = model.initial_state(B)
    if state:
        double = tuple(s.double() for s in state)
        for call in (lambda: model(x, double), lambda: model.step(x[:, 0], double)):
            with pytest.raises(ValueError, match=rf"{cls}: state tensors must be float32 \(as "
                                                 rf"initial_state gives\), got float64"):
                call()
    with pytest.raises(ValueError, match=rf"{cls}: state must be a tuple of tensors .*got int"):
        model(x, 0)
    y, after = model.step(x[:, 0])  # no state: initial_state's, as forward takes it
    assert torch.allclose(y, model(x[:, :1])[0][:, 0], atol=ATOL)


@families
@torch.no_grad()
def test_half_precision_weights_compute_or_are_refused_by_name(name: str) -> None:
    """The recurrent and state-space families keep float32 states and steps: float16 or
    bfloat16 weights met them in a matmul (or in oneDNN's LSTM) that named neither; they are
    refused by name. The MLP and the Transformer compute in them."""
    for dtype in (torch.bfloat16, torch.float16):
        model = build(name).to(dtype)
        x = randn(B, 4, D_IN, seed=0).to(dtype)
        if name in ("mlp", "transformer"):
            y, state = model(x)
            assert y.dtype == dtype and torch.isfinite(y.float()).all()
            continue
        short = str(dtype).removeprefix("torch.")
        with pytest.raises(ValueError, match=rf"{type(model).__name__}: {short} weights are not "
                                             rf"supported .* run it under autocast"):
            model(x)
        with pytest.raises(ValueError, match=rf"{short} weights are not supported"):
            model.step(x[:, 0], model.initial_state(B))


@pytest.mark.parametrize("value", [16.5, "16", True, 0])
def test_a_size_that_is_not_a_positive_integer_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match=rf"d_model must be a positive integer, got "
                                         rf"{repr(value)}"):
        BackboneConfig(d_model=value)  # type: ignore[arg-type]


# --- 4. precision --------------------------------------------------------------------------


@families
@torch.no_grad()
def test_bf16_autocast(name: str) -> None:
    """Under CPU bf16 autocast: relative L2 error vs fp32 < 5e-2, no NaN, fp32 states."""
    model = build(name)
    x = randn(B, T, D_IN, seed=9)
    y32, _ = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, state = model(x)
        y_step, state_step = model.step(x[:, 0], model.initial_state(B))
    assert torch.isfinite(y16).all() and torch.isfinite(y_step).all()
    assert rel_err(y16, y32) < 5e-2
    assert all(s.dtype == torch.float32 for s in (*state, *state_step))


@pytest.mark.parametrize("name", ["transformer", "mamba", "mamba2", "lstm"])
@torch.no_grad()
def test_forward_equals_step_under_bf16_autocast(name: str) -> None:
    """Under CPU bf16 autocast, step by step gives forward's outputs (to fp32 rounding) for the
    families whose two paths run the same operations (Mamba-1's convolution ran in bf16 in
    forward and in fp32 in step: 1e-2 apart). The RNN and GRU (fused cell against one-step
    cells) and S4 (FFT against the recurrence) compute differently and are left out; acting
    runs in fp32."""
    model = build(name)
    x = randn(B, T, D_IN, seed=9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = model(x)
        y_step, state_step = run_steps(model, x)
    torch.testing.assert_close(y, y_step.to(y.dtype), atol=1e-5, rtol=0)
    assert_states_close(state, state_step, atol=1e-6)


# --- 5. checkpointing ----------------------------------------------------------------------


@families
def test_grad_checkpoint_matches(name: str) -> None:
    """Checkpointing on == off: outputs and every parameter's gradient (atol 1e-6, rtol 1e-5)."""
    plain = build(name)
    ckpt = build(name, grad_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = randn(B, T, D_IN, seed=10)
    w = randn(B, T, D_MODEL, seed=11)
    outs = []
    for model in (plain, ckpt):
        torch.manual_seed(12)  # same dropout masks, should a family use dropout
        y, _ = model(x)
        (y * w).sum().backward()
        outs.append(y.detach())
    torch.testing.assert_close(outs[1], outs[0], atol=1e-6, rtol=1e-5)
    grads = dict(plain.named_parameters())
    for pname, p in ckpt.named_parameters():
        torch.testing.assert_close(p.grad, grads[pname].grad, atol=1e-6, rtol=1e-5, msg=pname)


@families
def test_gradients_reach_every_parameter(name: str) -> None:
    """After backward of a random projection of y, every p.grad is set and not all zero."""
    model = build(name)
    y, _ = model(randn(B, T, D_IN, seed=13))
    (y * randn(B, T, D_MODEL, seed=14)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().max() > 0, pname


# --- registry and config errors ------------------------------------------------------------


def test_unknown_name_lists_families() -> None:
    with pytest.raises(ValueError, match=r"'nope'.*mlp, rnn, lstm, gru, transformer"):
        make_backbone("nope", D_IN)


def test_wrong_config_type() -> None:
    with pytest.raises(TypeError, match="RNNConfig.*MLPConfig"):
        make_backbone("gru", D_IN, MLPConfig())
    with pytest.raises(ValueError, match="cell"):
        make_backbone("lstm", D_IN, RNNConfig(cell="gru"))


@families
def test_config_rejects_nonpositive_d_model(name: str) -> None:
    cfg_cls = type(config(name))
    with pytest.raises(ValueError, match="d_model.*-4"):
        cfg_cls(d_model=-4)
    with pytest.raises(ValueError, match="d_model.*0"):
        BackboneConfig(d_model=0)
    with pytest.raises(ValueError, match="d_in"):
        make_backbone(name, 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_model": 18, "n_heads": 4}, "divisible by n_heads.*d_model=18, n_heads=4"),
        ({"d_model": 12, "n_heads": 4}, "even head_dim.*3"),
        ({"context": 0}, "context.*0"),
        ({"n_heads": 0}, "n_heads.*0"),
        ({"branch_init": -0.5}, r"branch_init must be a finite number >= 0, got -0.5"),
        ({"branch_init": float("nan")}, r"branch_init must be a finite number, got nan"),
    ],
)
def test_transformer_config_errors(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TransformerConfig(**kwargs)


def test_rnn_config_rejects_unknown_cell() -> None:
    with pytest.raises(ValueError, match="rnn, lstm, gru.*'tcn'"):
        RNNConfig(cell="tcn")  # type: ignore[arg-type]


# --- transformer specifics -----------------------------------------------------------------


@torch.no_grad()
def test_transformer_branch_init_scales_the_residual_branches_last_layers() -> None:
    torch.manual_seed(0)
    default = make_backbone("transformer", 3, TransformerConfig(d_model=16, n_layers=2, context=4))
    torch.manual_seed(0)
    tenth = make_backbone("transformer", 3, TransformerConfig(d_model=16, n_layers=2, context=4,
                                                               branch_init=0.1))
    for (name, p), q in zip(default.named_parameters(), tenth.parameters(), strict=True):
        scaled = ".proj." in name or ".mlp.2." in name
        torch.testing.assert_close(q, 0.1 * p if scaled else p, rtol=0, atol=0)
    assert sum(".proj." in n or ".mlp.2." in n for n, _ in default.named_parameters()) == 8


def test_transformer_branch_init_zero_starts_as_a_per_step_network() -> None:
    """Every block starts as the identity: each output depends on its own step only, and the
    first gradients reach the branches' last layers (and the embedding) but no attention or
    MLP input weights, since the branches' outputs are multiplied by zero."""
    torch.manual_seed(0)
    model = make_backbone("transformer", 3, TransformerConfig(d_model=16, n_layers=2, context=4,
                                                               branch_init=0.0))
    x = torch.randn(2, 7, 3)  # (B, T, D_in)
    y, _ = model(x)  # (B, T, D)
    torch.testing.assert_close(y, model.ln_f(model.in_proj(x)))
    x2 = x.clone()
    x2[:, :6] += 1.0  # change every step but the last
    torch.testing.assert_close(model(x2)[0][:, 6], y[:, 6])
    y.square().sum().backward()
    for block in model.blocks:
        assert block.qkv.weight.grad.abs().max() == 0 and block.mlp[0].weight.grad.abs().max() == 0
        assert block.proj.weight.grad.abs().max() > 0 and block.mlp[2].weight.grad.abs().max() > 0
    assert model.in_proj.weight.grad.abs().max() > 0


def test_transformer_flash_backend_matches_default() -> None:
    """Forcing FLASH_ATTENTION (fresh state, T <= K) runs and equals the default and the math
    backend (atol 1e-5 fp32); the CPU flash kernel also takes bf16 (rel. error < 5e-2)."""
    model = build("transformer")
    x = randn(B, K, D_IN, seed=15)
    y, _ = model(x)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        y_flash, _ = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_flash16, _ = model(x)
    with sdpa_kernel(SDPBackend.MATH):
        y_math, _ = model(x)
    torch.testing.assert_close(y_flash, y, atol=ATOL, rtol=0)
    torch.testing.assert_close(y_math, y, atol=ATOL, rtol=0)
    assert torch.isfinite(y_flash16).all() and rel_err(y_flash16, y) < 5e-2


@torch.no_grad()
def test_transformer_attention_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh forward with T <= K calls SDPA with is_causal and no mask; step never uses
    is_causal and always passes a mask."""
    calls: list[tuple[bool, bool]] = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args: Tensor, **kwargs: object) -> Tensor:
        calls.append((bool(kwargs.get("is_causal", False)), kwargs.get("attn_mask") is not None))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = build("transformer")
    x = randn(B, K, D_IN, seed=16)
    _, state = model(x)
    assert calls == [(True, False)] * N_LAYERS
    calls.clear()
    model.step(x[:, 0], state)
    model.step(x[:, 0], model.initial_state(B))
    assert calls == [(False, True)] * (2 * N_LAYERS)


@torch.no_grad()
def test_transformer_step_slides_past_window() -> None:
    """Over T = 3K the bounded-cache step equals forward with window K (atol 1e-5), and y[:, t]
    ignores x[:, 0] once t is past the receptive field n_layers * (K - 1) (atol 1e-6)."""
    model = build("transformer")
    x = randn(B, 3 * K, D_IN, seed=17)
    y, state = model(x)
    y_step, state_step = run_steps(model, x)
    torch.testing.assert_close(y_step, y, atol=ATOL, rtol=0)
    assert_states_close(state_step, state, atol=ATOL)
    assert state[0].shape == (B, N_LAYERS, K - 1, 4, D_MODEL // 4)
    assert torch.equal(state[2], torch.full((B,), K - 1.0))  # n_valid capped at K - 1
    assert torch.equal(state[3], torch.full((B,), 3.0 * K))  # next position

    x2 = x.clone()
    x2[:, 0] += 1.0
    y2, _ = model(x2)
    field = N_LAYERS * (K - 1)
    torch.testing.assert_close(y2[:, field + 1 :], y[:, field + 1 :], atol=1e-6, rtol=0)
    assert (y2[:, field] - y[:, field]).abs().max() > 1e-4


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chrono_sets_the_memory_gate_biases_and_nothing_else(cell: str) -> None:
    """``chrono = T_max``: per layer, the LSTM's forget-gate biases (GRU: update gate) are
    ``log(u)``, u evenly over [1, T_max - 1], the LSTM's input-gate biases minus that, their
    recurrent biases 0; every other parameter is torch's default (same seed)."""
    plain, chrono = build(cell), build(cell, chrono=100)
    H = D_MODEL
    want = torch.log(torch.linspace(1.0, 99.0, H))
    changed = set()
    for k in range(N_LAYERS):
        b_ih, b_hh = chrono.rnn.get_parameter(f"bias_ih_l{k}"), chrono.rnn.get_parameter(
            f"bias_hh_l{k}")
        torch.testing.assert_close(b_ih[H:2 * H], want)
        assert torch.equal(b_hh[H:2 * H], torch.zeros(H))
        if cell == "lstm":
            torch.testing.assert_close(b_ih[:H], -want)
            assert torch.equal(b_hh[:H], torch.zeros(H))
        gates = slice(0, 2 * H) if cell == "lstm" else slice(H, 2 * H)
        for name in (f"bias_ih_l{k}", f"bias_hh_l{k}"):
            a, b = plain.rnn.get_parameter(name), chrono.rnn.get_parameter(name)
            keep = torch.ones(a.shape[0], dtype=torch.bool)
            keep[gates] = False
            assert torch.equal(a[keep], b[keep])
            changed.add(name)
    for name, p in plain.named_parameters():
        if name.removeprefix("rnn.") not in changed:
            assert torch.equal(p, chrono.get_parameter(name)), name


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chrono_lets_a_gradient_cross_a_hundred_steps_at_init(cell: str) -> None:
    """The last output's gradient with respect to the first input of 101 steps: near 1e-20 at
    torch's init (the memory halves at every step), above 1e-4 with ``chrono = 100``."""
    x = randn(4, 101, D_IN, seed=1)

    def reach(model: Backbone) -> float:
        xs = x.clone().requires_grad_(True)
        y, _ = model(xs)
        y[:, -1].sum().backward()
        return float(xs.grad[:, 0].norm())

    assert reach(build(cell, n_layers=1, d_model=64)) < 1e-12
    assert reach(build(cell, n_layers=1, d_model=64, chrono=100)) > 1e-4


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_orthogonal_init_draws_orthonormal_recurrent_weights_and_zero_biases(cell: str) -> None:
    """``init = "orthogonal"``: every weight of the recurrent module has orthonormal columns
    (``W^T W = I``; each is taller than wide), every bias of it is 0, the input projection is
    torch's default (same seed); chrono then sets its gate biases on top."""
    plain, ortho = build(cell), build(cell, init="orthogonal")
    weights = [n for n, _ in ortho.rnn.named_parameters() if n.startswith("weight")]
    assert len(weights) == 2 * N_LAYERS
    for name, p in ortho.rnn.named_parameters():
        if name.startswith("weight"):
            torch.testing.assert_close(p.T @ p, torch.eye(p.shape[1]), atol=1e-5, rtol=0)
            assert not torch.allclose(p.T @ p, plain.rnn.get_parameter(name).T
                                      @ plain.rnn.get_parameter(name), atol=1e-2)
        else:
            assert torch.equal(p, torch.zeros_like(p)), name
    assert torch.equal(plain.in_proj.weight, ortho.in_proj.weight)
    if cell != "rnn":
        both = build(cell, init="orthogonal", chrono=100)
        H = D_MODEL
        torch.testing.assert_close(both.rnn.bias_ih_l0[H:2 * H],
                                   torch.log(torch.linspace(1.0, 99.0, H)))
        assert torch.equal(both.rnn.bias_hh_l0, torch.zeros_like(both.rnn.bias_hh_l0))


@pytest.mark.parametrize(("name", "options", "message"), [
    ("transformer", {"context": 8.0}, "context must be a positive integer, got 8.0"),
    ("transformer", {"n_heads": True}, "n_heads must be a positive integer, got True"),
    ("transformer", {"branch_init": "x"}, "branch_init must be a finite number, got 'x'"),
    ("mamba", {"d_state": True}, "d_state must be a positive integer, got True"),
    ("mamba", {"expand": True}, "expand must be a positive integer, got True"),
    ("mamba2", {"expand": True}, "expand must be a positive integer, got True"),
    ("gru", {"grad_checkpoint": "no"}, "grad_checkpoint must be True or False, got 'no'"),
])
def test_an_option_of_the_wrong_type_is_refused_by_name(name, options, message) -> None:
    """From Python these were accepted: a float context failed later inside torch, True
    counted as 1, and ``grad_checkpoint='no'`` turned checkpointing on."""
    with pytest.raises(ValueError, match=message):
        backbone_config(name, D_MODEL, 1, **options)


@pytest.mark.parametrize(("name", "options", "message"), [
    ("transformer", {"rope_base": float("nan")}, "rope_base must be a finite number, got nan"),
    ("transformer", {"rope_base": float("inf")}, "rope_base must be a finite number, got inf"),
    ("transformer", {"branch_init": float("nan")}, "branch_init must be a finite number, got nan"),
    ("s4", {"dt_max": float("inf")}, "dt_max must be a finite number, got inf"),
    ("s4", {"dt_min": float("nan")}, "dt_min must be a finite number, got nan"),
    ("transformer", {"rope_base": 10**400}, "rope_base must be a finite number, got 1000"),
])
def test_a_non_finite_number_option_is_refused_by_name(name, options, message) -> None:
    """Before: rope_base NaN gave NaN keys in step's cache (the first forward finite), inf
    zeroed every frequency but one; S4's dt_max inf gave NaN outputs."""
    with pytest.raises(ValueError, match=message):
        backbone_config_class(name)(d_model=D_MODEL, **options)


def test_an_s4_step_range_that_is_not_a_number_is_refused_by_name() -> None:
    """``0 < 'x'`` raised a TypeError that named neither the field nor the value."""
    with pytest.raises(ValueError, match=r"dt_min must be a finite number, got 'x'"):
        backbone_config_class("s4")(d_model=D_MODEL, dt_min="x")


def test_a_numpy_integer_input_width_is_taken_as_an_int() -> None:
    model = make_backbone("gru", np.int64(D_IN), backbone_config("gru", D_MODEL, 1))
    assert type(model.d_in) is int and model(randn(B, 2, D_IN, seed=0))[0].shape == (B, 2, D_MODEL)


@pytest.mark.parametrize("d_in", [True, 5.0, "5", 0])
def test_an_input_width_that_is_not_a_positive_integer_is_refused(d_in) -> None:
    with pytest.raises(ValueError, match=rf"^d_in must be a positive integer, got "
                                         rf"{re.escape(repr(d_in))}$"):
        make_backbone("gru", d_in, backbone_config("gru", D_MODEL, 1))
    with pytest.raises(ValueError, match=r"^RNNBackbone: d_in must be a positive integer"):
        RNNBackbone(d_in, RNNConfig(d_model=D_MODEL, cell="gru"))


def test_a_config_of_another_cell_names_its_own_cell() -> None:
    """The message showed the value needed twice (``needs {'cell': 'lstm'}, got config with
    {'cell': 'lstm'}``) instead of the config's."""
    with pytest.raises(ValueError, match=r"backbone 'lstm' needs \{'cell': 'lstm'\}, got "
                                         r"config with \{'cell': 'gru'\}"):
        make_backbone("lstm", D_IN, backbone_config("gru", 16, 1))


def test_orthogonal_init_is_refused_outside_its_choices() -> None:
    with pytest.raises(ValueError, match="init must be 'torch' or 'orthogonal', got 'xavier'"):
        RNNConfig(cell="gru", init="xavier")


@pytest.mark.parametrize(("options", "message"), [
    ({"cell": "rnn", "chrono": 100}, "needs cell lstm or gru, got cell rnn"),
    ({"cell": "lstm", "chrono": 1}, "chrono must be 0 .* or an integer >= 2 .*got 1"),
    ({"cell": "gru", "chrono": -5}, "got -5"),
    ({"cell": "gru", "chrono": True}, "got True"),
])
def test_chrono_refuses_what_it_cannot_initialise(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RNNConfig(**options)


def test_whether_a_family_has_memory_is_read_from_its_class(monkeypatch) -> None:
    """Whether a family has memory (``ModelConfig.memory``: transitions or windows,
    previous-action inputs) is its class's ``has_memory``, not a test of its name: the MLP
    class registered under another name has none."""
    from rlkit import backbones
    from rlkit.config import ModelConfig

    monkeypatch.setitem(backbones._REGISTRY, "mlp2", backbones._REGISTRY["mlp"])
    assert backbones.backbone_has_memory("mlp2") is False
    assert not ModelConfig(backbone="mlp").memory and ModelConfig(backbone="gru").memory
    assert [backbones.backbone_has_memory(n) for n in BACKBONE_NAMES] == \
        [n != "mlp" for n in BACKBONE_NAMES]
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        backbones.backbone_has_memory("nope")


class EMABackbone(Backbone):
    """A family written outside the package: ``h_t = a h_{t-1} + (1 - a) W x_t``."""

    def __init__(self, d_in: int, cfg: BackboneConfig) -> None:
        super().__init__(d_in, cfg)
        self.proj = torch.nn.Linear(d_in, cfg.d_model)
        self.a = 0.9

    def _forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        h = self.initial_state(x.shape[0], x.device)[0] if state is None else state[0]
        ys = []
        for t in range(x.shape[1]):
            y, (h,) = self._step(x[:, t], (h,))
            ys.append(y)
        return torch.stack(ys, dim=1), (h,)  # (B, T, D)

    def _step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h = self.a * state[0] + (1 - self.a) * self.proj(x)  # (B, D)
        return h, (h,)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return (torch.zeros(batch_size, self.cfg.d_model, device=device),)


def test_a_registered_family_trains_resumes_and_loads_like_a_built_in_one(tmp_path,
                                                                          monkeypatch) -> None:
    """``register_backbone`` adds a family to ``make_backbone``, ``ModelConfig`` and the agent:
    a run trains with it, is loaded back with the same weights, and resumes; a taken name or
    a class that is not a Backbone is refused by name."""
    from agents import train
    from rlkit import backbones
    from rlkit.backbones import backbone_names, register_backbone
    from rlkit.config import ModelConfig, replace_fields

    monkeypatch.setattr(backbones, "_ADDED", {})
    with pytest.raises(ValueError, match=r"unknown backbone 'ema'; .* known only to a process "
                                         r"that registers it: rlkit.backbones.register_backbone"):
        ModelConfig(backbone="ema")
    register_backbone("ema", EMABackbone)
    assert backbone_names() == (*BACKBONE_NAMES, "ema") and ModelConfig(backbone="ema").memory
    model = make_backbone("ema", D_IN, BackboneConfig(d_model=D_MODEL))
    x = randn(B, T, D_IN, seed=0)
    assert torch.allclose(model(x)[0], run_steps(model, x)[0], atol=ATOL)
    for bad, said in ((("ema", EMABackbone), "expected a new name"),
                      (("gru", EMABackbone), "expected a new name"),
                      (("ema2", torch.nn.GRU), "expected a subclass of rlkit.backbones.Backbone"),
                      (("ema3", EMABackbone, dict), "as its config")):
        with pytest.raises(ValueError, match=said):
            register_backbone(*bad)
    run = tmp_path / "run"
    cfg = replace_fields(train.TrainConfig(), env="rlkit/Pendulum-V-v0", backbone="ema",
                         d_model=8, total_steps=120, learning_starts=40, batch_size=4,
                         eval_every=0, eval_episodes=1, progress=False, run_dir=str(run))
    train.main(cfg)
    agent, record = train.load_agent(run)
    assert record.model.backbone == "ema" and isinstance(agent.actor.encoder, EMABackbone)
    assert record.replay.window_start == "episode"  # a memory family: whole episodes
    out = train.main(replace_fields(train.TrainConfig(), resume=str(run), total_steps=160))
    assert out["step"] == 160


@families
@pytest.mark.parametrize("bad", [-1, 2.0, True, "3"])
def test_initial_state_refuses_a_batch_size_that_is_not_a_count(name, bad):
    model = build(name)
    with pytest.raises(ValueError, match=rf"initial_state: batch_size must be an integer >= 0, "
                                         rf"got {re.escape(repr(bad))}"):
        model.initial_state(bad)
    for ok in (0, 3, np.int64(3)):  # numpy counts too; an empty batch is a batch
        assert all(s.shape[0] == ok for s in model.initial_state(ok))


@families
def test_check_backbone_passes_every_built_in_family(name: str) -> None:
    check_backbone(build(name))


class _Leaky(EMABackbone):
    """Its forward sees the whole sequence's mean: not causal, and not what step computes."""

    def _forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        y, s = super()._forward(x, state)
        return y + 0.1 * x.mean(dim=1, keepdim=True).sum(-1, keepdim=True), s


class _Forgets(EMABackbone):
    """Its forward ignores the state it is given: step and one forward agree, chunks do not."""

    def _forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        return super()._forward(x, None)


class _SkipsReset(EMABackbone):
    def reset_state(self, state: State, done_mask: Tensor) -> State:
        return state


def test_check_backbone_names_the_invariant_a_family_breaks() -> None:
    cfg = BackboneConfig(d_model=8)
    check_backbone(EMABackbone(4, cfg))
    with pytest.raises(AssertionError, match=r"step == forward, output at t = 0: differs by"):
        check_backbone(_Leaky(4, cfg))
    with pytest.raises(AssertionError, match=r"chunking at k = 6, outputs: differs by"):
        check_backbone(_Forgets(4, cfg))
    with pytest.raises(AssertionError, match=r"reset_state: done row, state tensor 0: not bit "
                                             r"for bit equal"):
        check_backbone(_SkipsReset(4, cfg))
    with pytest.raises(ValueError, match="check_backbone checks fp32 models, got torch.float64"):
        check_backbone(EMABackbone(4, cfg).double())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # an ambient autocast is switched off
        check_backbone(build("gru"))
    with pytest.raises(ValueError, match="steps >= 2"):
        check_backbone(EMABackbone(4, cfg), steps=1)
