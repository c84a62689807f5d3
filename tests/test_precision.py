"""Mixed precision, gradient checkpointing and the compiled update of the DDPG agent."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers import losses_of
from torch import nn

from agents import train
from agents.ddpg import DDPG, DDPGConfig
from rlkit import compile as compile_module
from rlkit.backbones import BACKBONE_NAMES, BackboneConfig
from rlkit.backbones import mamba as mamba_module
from rlkit.backbones.s4 import S4DLayer
from rlkit.buffers import SequenceBatch
from rlkit.compile import CompiledFunction
from rlkit.config import replace_fields
from rlkit.precision import (
    PRECISIONS,
    MixedPrecision,
    PrecisionConfig,
    autocast_supported,
)
from rlkit.runlog import read_metrics

ROOT = Path(__file__).resolve().parents[1]
B, L, OBS, ACT = 4, 6, 3, 2
LOW, HIGH = -torch.ones(ACT), torch.ones(ACT)


def seq_batch(seed: int = 0, reward: float | None = None) -> SequenceBatch:
    """A window batch ``(B, L)`` with the last window padded after 3 steps."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L)
    mask[-1, 3:] = 0.0
    rew = torch.randn(B, L, generator=g) if reward is None else torch.full((B, L), reward)
    return SequenceBatch(
        obs=torch.randn(B, L + 1, OBS, generator=g),
        action=torch.rand(B, L, ACT, generator=g) * 2 - 1,
        reward=rew,
        terminated=torch.zeros(B, L),
        truncated=torch.zeros(B, L),
        prev_action=torch.rand(B, L + 1, ACT, generator=g) * 2 - 1,
        prev_reward=torch.randn(B, L + 1, generator=g),
        mask=mask,
        states=None,
    )


def make_agent(backbone: str = "gru", precision: str = "fp32", compile: bool = False,
               grad_checkpoint: bool = False, init_scale: float = 2.0**10, **kw) -> DDPG:
    torch.manual_seed(0)
    cfg = DDPGConfig(head_hidden=(16,), actor_prev_action=True, critic_prev_action=True, **kw)
    return DDPG(OBS, LOW, HIGH, backbone, BackboneConfig(16, 2, grad_checkpoint), cfg,
                PrecisionConfig(precision, init_scale=init_scale), compile)


def online_params(agent: DDPG) -> list[torch.Tensor]:
    """Actor and critic parameters (the targets keep averaging toward them on a skip)."""
    return [p.detach().clone() for p in agent._online_params]


# ------------------------------------------------------------------------------ bad values
def test_bad_precision_value_names_it():
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'; expected one of fp32, "
                                         r"bf16, fp16"):
        PrecisionConfig("fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown --precision 'fp8'; expected one of fp32"):
        replace_fields(train.TrainConfig(), precision="fp8")
    with pytest.raises(ValueError, match=re.escape("init_scale must be a finite number >= 2**-24 "
                                                   "(fp16's smallest value), got 0.0")):
        PrecisionConfig("fp16", init_scale=0.0)


SCALE = "init_scale must be a finite number >= 2**-24 (fp16's smallest value), got "


@pytest.mark.parametrize(("kw", "message"), [
    (dict(init_scale=float("inf")), SCALE + "inf"),
    (dict(init_scale=True), SCALE + "True"),
    (dict(init_scale=1e-9), SCALE + "1e-09"),  # a run at it would stop at once on the floor
    (dict(init_scale="big"), SCALE + "'big'"),
    (dict(growth_interval=2.5), "growth_interval must be an integer >= 1, got 2.5"),
    (dict(growth_interval=True), "growth_interval must be an integer >= 1, got True"),
    (dict(growth_interval="10"), "growth_interval must be an integer >= 1, got '10'"),
])
def test_a_scaler_setting_that_is_not_a_number_of_its_kind_is_refused_by_name(kw, message):
    """``growth_interval=2.5`` was taken and failed at the first update inside torch, naming
    neither; ``init_scale=inf`` skipped every update while counting none."""
    with pytest.raises(ValueError, match=re.escape(message)):
        PrecisionConfig("fp16", **kw)


def test_a_skip_is_counted_where_the_scale_cannot_shrink():
    """The count reads the scaler's own inf / NaN flags: at a scale of inf (or 0) the scale
    does not go down on a skip, which the count used to be read from."""
    agent = make_agent("mlp", "fp16")
    agent.update(seq_batch(0))
    agent.amp.scaler._scale.fill_(float("inf"))
    m = agent.update(seq_batch(1))
    assert float(m["grad_scale"]) == float("inf") and int(m["skipped_steps"]) == 1


def test_bf16_keeps_q_and_the_actions_output_in_fp32():
    """Under bf16 autocast the heads' last layers run in fp32: a Q near -300 kept 8
    significant bits (steps of 2.0; every Q of a batch the same value) and the critic's
    gradient pointed elsewhere (cosine 0.84 to fp32's, 0.53 near -30)."""
    for level in (-30.0, -300.0):
        agent = make_agent("gru", "bf16")
        with torch.no_grad():
            for c in (agent.critics[0], agent.critic_targets[0]):
                c.head[-1].bias.fill_(level)
        b = seq_batch(0)
        b = b._replace(reward=level * (1 - agent.cfg.gamma) + 0.3 * b.reward)

        def grads(precision: str, agent: DDPG = agent, b: SequenceBatch = b):
            agent.amp.cfg = PrecisionConfig(precision)
            agent.zero_grad(set_to_none=True)
            loss, q, _ = agent._critic_losses(b)
            loss.backward()
            return torch.cat([p.grad.flatten() for p in agent.critics.parameters()]), q.detach()

        (g16, q16), (g32, q32) = grads("bf16"), grads("fp32")
        assert q16.dtype == torch.float32 and q16.unique().numel() == q16.numel()
        assert (q16 - q32).abs().max() < 0.05 * (1 + abs(level) / 100)
        assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.98
    agent = make_agent("gru", "bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, _ = agent.actor.encoder(torch.randn(2, 5, agent.actor.encoder.d_in))
        assert agent.actor.pre_tanh(h).dtype == torch.float32


def test_cli_refuses_bad_precision():
    out = subprocess.run([sys.executable, "train.py", "--precision", "fp8"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "fp8" in out.stderr and "fp16" in out.stderr


def test_cpu_autocast_supports_bf16_and_fp16():
    # torch >= 2.4 autocasts to both on the CPU; fp16 --precision is refused where it cannot.
    assert all(autocast_supported(p, "cpu") for p in PRECISIONS)


# ------------------------------------------------------------------------------ bf16 / fp16
# (rtol, atol) of losses and Q, then of gradient norms, against fp32 on the same batch: a few
# units of each format's rounding (bf16 eps 7.8e-3, fp16 eps 9.8e-4). Gradient norms get more
# room: the actor's gradient is small and passes through the whole network. Measured worst case
# over 8 batches and every backbone: under half of each tolerance.
TOLERANCE = {"bf16": ((2e-2, 5e-3), (1.5e-1, 1e-3)), "fp16": ((5e-3, 1e-3), (2e-2, 1e-4))}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_mixed_precision_update_close_to_fp32(backbone, precision):
    """Same weights, same batch: metrics within :data:`TOLERANCE` of fp32; fp32 master weights
    and optimizer states; everything finite. (Batch seed 1: with seed 0 the mamba2 agent's
    actor gradient is a near-cancellation of its head units' terms, which a bf16 or fp16
    rounding of the critic's first layer moves by 5%; other seeds move it by under 2%.)"""
    batch = seq_batch(1)
    ref = make_agent(backbone).update(batch)
    agent = make_agent(backbone, precision)
    m = agent.update(batch)
    assert all(torch.isfinite(v).all() for v in m.values())
    (rtol, atol), (rtol_g, atol_g) = TOLERANCE[precision]
    for k in ("critic_loss", "actor_loss", "q_mean"):
        torch.testing.assert_close(m[k], ref[k], rtol=rtol, atol=atol, msg=k)
    for k in ("critic_grad_norm", "actor_grad_norm"):
        torch.testing.assert_close(m[k], ref[k], rtol=rtol_g, atol=atol_g, msg=k)
    assert all(p.dtype == torch.float32 for p in agent.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in agent.critic_opt.state.values())
    assert ("skipped_steps" in m) == (precision == "fp16")


@pytest.mark.parametrize("backbone", ["mamba", "s4"])
def test_ssm_fp32_islands_hold_inside_the_agent(backbone, monkeypatch):
    """bf16 update: Linear layers run in bf16, while SSM parameters, discretisation and scan
    stay fp32."""
    seen: dict[str, set[torch.dtype]] = {"linear": set(), "ssm": set()}

    def spy(fn):
        def wrapped(dA_log, dBx, C, h0, *args):
            seen["ssm"].update({dA_log.dtype, dBx.dtype, C.dtype, h0.dtype})
            return fn(dA_log, dBx, C, h0, *args)
        return wrapped

    def spy_fused(fn):
        def wrapped(*tensors, **kw):  # delta, A, B, C, x, h0
            seen["ssm"].update(t.dtype for t in tensors)
            return fn(*tensors, **kw)
        return wrapped

    for name in ("selective_scan_sequential", "selective_scan_parallel"):
        monkeypatch.setattr(mamba_module, name, spy(getattr(mamba_module, name)))
    monkeypatch.setattr(mamba_module, "selective_scan_fused",
                        spy_fused(mamba_module.selective_scan_fused))
    agent = make_agent(backbone, "bf16")
    hooks = []
    for mod in agent.modules():
        if isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o: seen["linear"].add(o.dtype)))
        if isinstance(mod, S4DLayer):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o: seen["ssm"].update({o[0].dtype, o[1].dtype})))
    metrics = agent.update(seq_batch())
    for h in hooks:
        h.remove()
    assert torch.bfloat16 in seen["linear"]  # autocast was on
    assert seen["ssm"] and seen["ssm"] <= {torch.float32, torch.complex64}
    ssm = [p for mod in agent.modules() if isinstance(mod, S4DLayer) for p in mod.parameters()]
    if backbone == "mamba":
        block = agent.actor.encoder.blocks[0]
        ssm = [block.A_log, block.D, block.dt_proj.bias]
    assert ssm and all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in ssm)
    assert all(torch.isfinite(v) for v in metrics.values())


# ------------------------------------------------------------------------------ fp16 skips
def test_fp16_skips_the_step_with_inf_gradients_and_counts_it():
    agent = make_agent("gru", "fp16")
    agent.update(seq_batch(0))  # a clean step: the scaler and Adam states exist
    before = online_params(agent)
    steps = [s["step"].clone() for s in agent.critic_opt.state.values()]
    scale = agent.amp.scaler.get_scale()
    inf = torch.tensor(float("inf"))
    hooks = [agent.critics[0].head[0].weight.register_hook(lambda g: g + inf),
             agent.actor.head[0].weight.register_hook(lambda g: g + inf)]
    m = agent.update(seq_batch(1))
    for h in hooks:
        h.remove()
    assert int(m["skipped_steps"]) == 1
    assert float(m["grad_scale"]) == scale / 2
    assert not torch.isfinite(m["critic_grad_norm"]) and not torch.isfinite(m["actor_grad_norm"])
    assert all(torch.equal(a, b) for a, b in zip(agent._online_params, before))
    assert all(torch.equal(s["step"], t) for s, t in zip(agent.critic_opt.state.values(), steps))
    m = agent.update(seq_batch(2))  # clean again: it steps, the count stays
    assert int(m["skipped_steps"]) == 1
    assert all(not torch.equal(a, b) for a, b in zip(agent._online_params, before))


def test_fp16_inf_reward_skips_the_critic_step_only():
    """Each optimizer skips on its own gradients; the iteration is counted once."""
    agent = make_agent("mlp", "fp16")
    critic = [p.detach().clone() for p in agent.critics.parameters()]
    actor = [p.detach().clone() for p in agent.actor.parameters()]
    m = agent.update(seq_batch(reward=float("inf")))
    assert int(m["skipped_steps"]) == 1
    assert all(torch.equal(a, b) for a, b in zip(agent.critics.parameters(), critic))
    assert any(not torch.equal(a, b) for a, b in zip(agent.actor.parameters(), actor))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_update_reads_nothing_back_from_the_device(precision, monkeypatch):
    """No ``.item()``, ``float(t)``, ``int(t)``, ``if t:`` or ``.tolist()`` in the update.

    Adam's step counters are the only tensors allowed to be read (on the CPU, where this test
    runs, reading them is no device sync).
    """
    agent = make_agent("gru", precision, max_grad_norm=1.0)
    agent.update(seq_batch(0))
    host_steps = {id(s["step"]) for opt in (agent.actor_opt, agent.critic_opt)
                  for s in opt.state.values()}
    item = torch.Tensor.item

    def guarded_item(t):
        if id(t) not in host_steps:
            raise AssertionError(f"item() on a tensor of shape {tuple(t.shape)}")
        return item(t)

    def refuse(name):
        def f(t, *a, **k):
            raise AssertionError(f"{name} on a tensor of shape {tuple(t.shape)}")
        return f

    monkeypatch.setattr(torch.Tensor, "item", guarded_item)
    for name in ("__bool__", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse(name))
    m = agent.update(seq_batch(1))
    monkeypatch.undo()
    assert all(torch.isfinite(v) for v in m.values())


def test_scaler_state_round_trips_through_the_checkpoint():
    agent = make_agent("mlp", "fp16")
    agent.update(seq_batch(reward=float("inf")))  # one skip: scale halved, count 1
    state = agent.checkpoint_state()
    assert state["precision"]["skipped_steps"] == 1
    assert state["precision"]["scaler"]["scale"] == 2.0**9
    other = make_agent("mlp", "fp16", init_scale=2.0**16)
    other.load_checkpoint_state(copy.deepcopy(state))
    m = other.update(seq_batch(1))
    assert int(m["skipped_steps"]) == 1 and float(m["grad_scale"]) == 2.0**9
    # an fp32 checkpoint saved with foreach Adam (older versions) loads into an fp16 agent:
    # the optimizers stay fused
    fp32 = make_agent("mlp")
    fp32.update(seq_batch(0))
    old = fp32.checkpoint_state()
    for key in ("actor_opt", "critic_opt"):
        for g in old[key]["param_groups"]:
            g["foreach"], g["fused"] = True, None
    other.load_checkpoint_state(old)
    assert all(g["fused"] and not g["foreach"] for g in other.critic_opt.param_groups)
    assert all(torch.isfinite(v) for v in other.update(seq_batch(2)).values())


# ------------------------------------------------------------------------------ checkpointing
@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_grad_checkpointing_leaves_the_agents_gradients_unchanged(backbone):
    batch = seq_batch()
    grads = []
    for ckpt in (False, True):
        agent = make_agent(backbone, grad_checkpoint=ckpt)  # same seed: same weights
        closs, aloss = losses_of(agent, batch)
        closs.backward()
        aloss.backward()
        grads.append({n: p.grad for n, p in agent.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert g is not None and grads[1][name] is not None, name
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)


# ------------------------------------------------------------------------------ compile
@pytest.mark.parametrize(("backbone", "kw"), [
    ("mlp", {}), ("gru", {}), ("mlp", {"gamma_from": 0.5, "gamma": 0.9, "gamma_rise": 2})])
def test_compiled_update_equals_eager(backbone, kw):
    """Two updates (the second with the actor's Polyak step) on the same batches: parameters
    and metrics within 1e-5 relative / 1e-6 absolute (fused kernels reorder float sums). With
    a rising discount the two updates discount by 0.833 and 0.9: the compiled update reads
    each, not the first one it was traced with."""
    eager, compiled = make_agent(backbone, **kw), make_agent(backbone, compile=True, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for seed in (0, 1):
            m_c, m_e = compiled.update(seq_batch(seed)), eager.update(seq_batch(seed))
    fallback = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)
                and str(w.message).startswith("torch.compile of")]
    if compiled._critic_fn.mode is None or compiled._actor_fn.mode is None or fallback:
        why = fallback[0] if fallback else "it fell back to eager (warned earlier)"
        compiler = os.environ.get("CXX") or "g++"  # what inductor's CPU backend runs
        if shutil.which(compiler) or shutil.which("c++"):  # it should have compiled here
            pytest.fail(f"torch.compile fell back although a C++ compiler is present "
                        f"({shutil.which(compiler) or shutil.which('c++')}): {why}")
        pytest.skip(f"no C++ compiler ({compiler}) for torch.compile on the CPU: {why}")
    assert compiled._critic_fn.mode == "default" and compiled._actor_fn.mode == "default"
    for k in m_e:
        torch.testing.assert_close(m_c[k], m_e[k], rtol=1e-5, atol=1e-6, msg=k)
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_compile_failure_falls_back_with_one_warning_per_function(monkeypatch):
    def broken(fn, **kw):
        def run(*args):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(compile_module, "_WARNED", set())
    eager, agent = make_agent("mlp"), make_agent("mlp", compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in (0, 1):
            m, m_e = agent.update(seq_batch(seed)), eager.update(seq_batch(seed))
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 2  # one per function, each named, over both updates
    assert [msg.split(" failed")[0] for msg in msgs] == [
        "torch.compile of the critic loss", "torch.compile of the actor loss"]
    assert all("no compiler here" in msg and "eagerly" in msg for msg in msgs)
    assert agent._critic_fn.mode is None and agent._actor_fn.mode is None
    assert all(torch.equal(m[k], m_e[k]) for k in m_e)
    assert m["compile_fallbacks"] == 2.0 and "compile_fallbacks" not in m_e


def test_inductors_complex_operator_warning_is_not_shown(monkeypatch):
    """``--compile auto`` with S4 on a CPU printed inductor's "performance may be worse than
    eager" for the complex kernel, on the setting the README recommends; other warnings of the
    compiled call still show."""
    def warns(fn, **kw):
        def run(*args):
            warnings.warn("Torchinductor does not support code generation for complex "
                          "operators. Performance may be worse than eager.", stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
            return fn(*args)
        return run

    monkeypatch.setattr(torch, "compile", warns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert CompiledFunction(lambda x: x + 1, "f")(torch.zeros(2)).tolist() == [1.0, 1.0]
    assert [str(w.message) for w in caught] == ["something else"]

    def loop_warns(x):  # a warning shown once per place, as Python's default filter does
        warnings.warn("every step", UserWarning, stacklevel=1)
        return x

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    f = CompiledFunction(loop_warns, "g")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(5):
            f(torch.zeros(2))
    # shown on the call that compiles, once more after its filter is lifted (which forgets
    # what was shown), then no more: the filter is only where it compiles (on every call: 5)
    assert len(caught) == 2


def test_compiled_function_raises_errors_that_are_not_the_compilers(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    monkeypatch.setattr(compile_module, "_WARNED", set())

    def bad(x):
        raise ValueError(f"bad input {x.shape}")

    with pytest.raises(ValueError, match="bad input"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CompiledFunction(bad, "bad")(torch.zeros(2))


def test_a_shape_past_the_recompile_limit_falls_back_to_eager_with_a_warning(monkeypatch):
    # dynamo alone would run the new shapes eagerly with only a log line (and the run would log
    # compile_fallbacks 0); here it counts as a failed compile, decided by the function's own
    # input shapes (not by inner frames that graph breaks compile apart)
    from rlkit import compile as compile_module

    monkeypatch.setattr(compile_module, "_WARNED", set())
    f = CompiledFunction(lambda x, pair: x * 2 + pair[0].sum(), "double")
    pair = (torch.zeros(3), None)
    with torch._dynamo.config.patch(recompile_limit=2), \
            pytest.warns(RuntimeWarning, match=r"torch.compile of double failed on cpu \(3 input "
                                               r"shapes, more than PyTorch's recompile limit "
                                               r"\(2\)\); running it eagerly") as caught:
        for n, eager in ((1, False), (2, False), (1, False), (2, False), (3, True), (4, True),
                         (1, True)):  # two shapes compile; the third falls back, for good
            assert torch.equal(f(torch.ones(n), pair), torch.full((n,), 2.0))
            assert f.fell_back == eager and (f.mode is None) == eager, n
    assert f.fell_back and len([w for w in caught if "double" in str(w.message)]) == 1
    assert compile_module._shapes((torch.ones(2), [torch.ones(1, 3)], 5)) == (
        ((2,), torch.float32, torch.device("cpu")), ((1, 3), torch.float32, torch.device("cpu")))


# ------------------------------------------------------------------------------ train.py
@pytest.mark.parametrize(("backbone", "precision"), [("gru", "bf16"), ("mlp", "fp16")])
def test_train_py_runs_mixed_precision(tmp_path, backbone, precision):
    cfg = replace_fields(train.TrainConfig(), env="rlkit/Pendulum-V-v0", backbone=backbone,
                         total_steps=90, learning_starts=60, batch_size=4, seq_len=6,
                         d_model=16, eval_every=0, eval_episodes=1, log_every=30,
                         progress=False, device="cpu", agent=DDPGConfig(head_hidden=(16,)),
                         precision=precision, run_dir=str(tmp_path / "run"))
    train.main(cfg)
    rows = [r for r in read_metrics(tmp_path / "run") if "critic_loss" in r]
    assert rows and all(r["critic_loss"] == r["critic_loss"] for r in rows)  # not NaN
    assert ("skipped_steps" in rows[-1]) == (precision == "fp16")
    counts = ("updates", "skipped_steps") if precision == "fp16" else ("updates",)
    assert all(type(rows[-1][k]) is int for k in counts)  # counts stay counts in a row
    assert type(rows[-1]["critic_loss"]) is float


def test_mixed_precision_is_a_pass_through_in_fp32():
    mp = MixedPrecision(PrecisionConfig())
    loss = torch.tensor(2.0)
    assert mp.scale(loss) is loss and mp.update() == {} and mp.scaler is None


def test_compile_auto_picks_by_family_and_device_and_config_records_the_choice():
    from rlkit.compile import COMPILE_PAYS
    from rlkit.config import ModelConfig

    pays, not_pays = sorted(COMPILE_PAYS["cpu"])[0], "gru"
    assert not_pays not in COMPILE_PAYS["cpu"] and "cuda" not in COMPILE_PAYS
    for setting, backbone, want in [("auto", pays, True), ("auto", not_pays, False),
                                    ("on", not_pays, True), ("off", pays, False)]:
        cfg = replace_fields(train.TrainConfig(), d_model=16, device="cpu", backbone=backbone,
                             compile=setting)
        resolved, agent, env = train.build(cfg, torch.device("cpu"))
        env.close()
        assert resolved.model.compile == ("on" if want else "off"), (setting, backbone)
        assert isinstance(agent._critic_fn, CompiledFunction) == want, (setting, backbone)
    assert ModelConfig(compile=True).compile == "on"  # a config.json that recorded a bool
    assert ModelConfig(compile=False).compile == "off"
    with pytest.raises(ValueError, match="--compile must be auto, on or off, got 'yes'"):
        ModelConfig(compile="yes")


def test_train_py_passes_precision_and_compile_to_the_agent():
    cfg = replace_fields(train.TrainConfig(), d_model=16, device="cpu", precision="bf16",
                         compile="on")
    _, agent, env = train.build(cfg, torch.device("cpu"))
    env.close()
    assert agent.amp.cfg.precision == "bf16"
    assert isinstance(agent._critic_fn, CompiledFunction)
    assert isinstance(agent._actor_fn, CompiledFunction)
