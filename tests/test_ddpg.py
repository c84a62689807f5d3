import copy
import dataclasses
import json
import math
import re

import pytest
import torch
from helpers import actor_loss, critic_loss, seq_buffer, td_target
from torch import nn

from agents.ddpg import DDPG, DDPGConfig
from agents.losses import saturation
from agents.networks import Actor, EncoderInputs, HeadEmbed, InputEmbed, ObsShortcut
from rlkit.backbones import BackboneConfig, make_backbone
from rlkit.buffers import SequenceBatch
from rlkit.losses import grad_norm, masked_mse, polyak_update

LOW, HIGH = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])


def make_agent(**kw) -> DDPG:
    torch.manual_seed(0)
    cfg = DDPGConfig(head_hidden=(32,), **kw)
    return DDPG(3, LOW, HIGH, "mlp", BackboneConfig(d_model=32), cfg)


def batch(n=16, seed=0, terminated=0.0, truncated=0.0) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    return SequenceBatch.from_transitions(
        obs=torch.randn(n, 3, generator=g),
        action=torch.rand(n, 2, generator=g) * (HIGH - LOW) + LOW,
        reward=torch.randn(n, generator=g),
        next_obs=torch.randn(n, 3, generator=g),
        terminated=torch.full((n,), terminated),
        truncated=torch.full((n,), truncated),
    )


def test_polyak_update_moves_target_by_tau():
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.clone() for p in target.parameters()]
    polyak_update(target, online, 0.1)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    polyak_update(target, online, 1.0)
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters()))
    with pytest.raises(ValueError, match=r"tau must be in \(0, 1\], got 0"):
        polyak_update(target, online, 0.0)


def test_masked_mse_ignores_masked_steps():
    pred, target = torch.tensor([[1.0, 5.0]]), torch.tensor([[0.0, 0.0]])
    assert masked_mse(pred, target, torch.tensor([[1.0, 0.0]])).item() == 1.0
    assert masked_mse(pred, target, torch.zeros(1, 2)).item() == 0.0


def test_masked_mse_refuses_shapes_that_would_broadcast():
    """With B == T a (B, T, 1) target or a (T,) mask broadcast into another loss (3.0 for
    1.0) without an error; the shapes are now named."""
    p, t, m = torch.zeros(3, 3), torch.ones(3, 3), torch.ones(3, 3)
    assert masked_mse(p, t, m).item() == 1.0
    with pytest.raises(ValueError, match=r"^pred, target and mask must have one shape, got "
                                         r"\(3, 3\), \(3, 3, 1\) and \(3, 3\)$"):
        masked_mse(p, t[..., None], m)
    with pytest.raises(ValueError, match=r"got \(3, 3\), \(3, 3\) and \(3,\)$"):
        masked_mse(p, t, torch.tensor([1.0, 1.0, 0.0]))


def test_actor_outputs_stay_within_bounds():
    agent = make_agent()
    obs = torch.randn(64, 1, 3) * 1e4
    a, _ = agent.actor(obs)
    assert torch.all(a >= LOW) and torch.all(a <= HIGH)
    assert a.shape == (64, 1, 2)


def test_actor_loss_gives_critic_no_gradient():
    agent = make_agent()
    seq = batch()
    target = td_target(agent, seq)
    _, _, h = critic_loss(agent, seq, target)
    actor_loss(agent, seq, h).backward()
    assert all(p.grad is None for p in agent.critics.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())


def _direct_actor_loss(agent: DDPG, seq, actor_state=None) -> torch.Tensor:
    """``-mean Q(h, mu)`` through critic 0 (``actor_q="min"``: the minimum over the critics)
    held fixed, computed the plain way."""
    critics = agent.critics if agent.cfg.actor_q == "min" else agent.critics[:1]
    x = agent.cfg.actor_inputs(seq.obs, seq.prev_action, seq.prev_reward)[:, :-1]
    action, _ = agent.actor(x, actor_state)
    x = agent.cfg.critic_inputs(seq.obs, seq.prev_action, seq.prev_reward)[:, :-1]
    qs = []
    for critic in critics:
        with torch.no_grad():
            h, _ = critic.encoder(x, None)
        qs.append(copy.deepcopy(critic).requires_grad_(False).q(h, action))
    q = torch.stack(qs).min(0).values
    return -(q * seq.mask).sum() / seq.mask.sum()


@pytest.mark.parametrize("kind", ["mlp", "gru", "twin", "deep_head", "twin_min", "gru_min",
                                  "gru_embed", "gru_embed_min", "gru_norm", "gru_embed_norm"])
def test_actor_loss_is_minus_q_of_the_actor_action(kind):
    """The actor loss reuses the critic loss's first-layer product (``pre + W_a (mu - a)``,
    with head embedders ``pre + W_e (relu(E [o, mu]) - relu(E [o, a]))``); its value and its
    actor gradients are those of ``-Q(h, mu)`` computed in full (with ``actor_q="min"``, of
    ``-min(Q1, Q2)``)."""
    if kind.startswith("gru"):
        kw = {"twin_critics": True, "actor_q": "min"} if kind.endswith("_min") else {}
        if "embed" in kind:
            kw.update(head_obs=True, head_embed=(5, 6))
        if kind.endswith("_norm"):
            kw.update(critic_norm=True)
        agent, seq = _seq_agent(**kw), None
        seq = _seq_batch(agent)
    else:
        kw = {"twin": {"twin_critics": True}, "deep_head": {},
              "twin_min": {"twin_critics": True, "actor_q": "min"}}.get(kind, {})
        torch.manual_seed(0)
        hidden = (32, 16) if kind == "deep_head" else (32,)
        agent = DDPG(3, LOW, HIGH, "mlp", BackboneConfig(d_model=32),
                     DDPGConfig(head_hidden=hidden, **kw))
        seq = batch()
    target = td_target(agent, seq)
    _, _, enc = critic_loss(agent, seq, target)
    loss = actor_loss(agent, seq, enc)
    loss.backward()
    grads = [p.grad.clone() for p in agent.actor.parameters()]
    agent.zero_grad(set_to_none=True)
    ref = _direct_actor_loss(agent, seq)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    for g, p in zip(grads, agent.actor.parameters()):
        torch.testing.assert_close(g, p.grad)
    assert all(p.grad is None for p in agent.critics.parameters())


def test_update_takes_both_losses_at_the_same_parameters():
    """One update = one Adam step of the critic on its loss and one of the actor on
    ``-Q(h, mu)`` through the critic as it was before its step."""
    agent = make_agent()
    b = batch()
    ref = copy.deepcopy(agent)
    seq = b
    aloss = _direct_actor_loss(ref, seq)  # before any step
    ref.actor_opt.zero_grad()
    aloss.backward()
    target = td_target(ref, seq)
    closs, _, _ = critic_loss(ref, seq, target)
    ref.critic_opt.zero_grad()
    closs.backward()
    ref.critic_opt.step()
    ref.actor_opt.step()
    metrics = agent.update(b)
    torch.testing.assert_close(metrics["actor_loss"], aloss.detach())
    for p, q in zip(agent.actor.parameters(), ref.actor.parameters()):
        torch.testing.assert_close(p, q)
    for p, q in zip(agent.critics.parameters(), ref.critics.parameters()):
        torch.testing.assert_close(p, q)


def test_update_leaves_critic_untouched_by_actor_step():
    agent = make_agent()
    b = batch()
    # what the critic becomes after its own step alone
    ref = copy.deepcopy(agent)
    seq = b
    target = td_target(ref, seq)
    loss, _, _ = critic_loss(ref, seq, target)
    ref.critic_opt.zero_grad()
    loss.backward()
    ref.critic_opt.step()
    agent.update(b)
    for p, q in zip(agent.critics.parameters(), ref.critics.parameters()):
        assert torch.equal(p, q)


def test_critic_update_lowers_td_error_on_fixed_batch():
    agent = make_agent(critic_lr=1e-2)
    seq = batch(64)
    target = td_target(agent, seq)
    losses = []
    for _ in range(30):
        loss, _, _ = critic_loss(agent, seq, target)
        losses.append(loss.item())
        agent.critic_opt.zero_grad()
        loss.backward()
        agent.critic_opt.step()
    assert losses[1] < losses[0]  # one update already lowers it
    assert losses[-1] < 0.5 * losses[0]


def test_td_target_bootstraps_through_truncated_not_terminated():
    agent = make_agent(gamma=0.9)
    b_term = batch(terminated=1.0)
    b_trunc = batch(truncated=1.0)
    b_none = batch()
    y_term = td_target(agent, b_term)
    y_trunc = td_target(agent, b_trunc)
    y_none = td_target(agent, b_none)
    assert torch.equal(y_term, b_term.reward)
    assert torch.equal(y_trunc, y_none)
    with torch.no_grad():
        a, _ = agent.actor_target(b_none.obs)
        h, _ = agent.critic_targets[0].encoder(b_none.obs)
        q = agent.critic_targets[0].q(h[:, 1:], a[:, 1:])
    assert torch.allclose(y_none, b_none.reward + 0.9 * q)


def test_td3_options_compose():
    agent = make_agent(twin_critics=True, target_noise=0.2, policy_delay=2)
    agent.noise_gen = torch.Generator().manual_seed(0)
    assert len(agent.critics) == 2 and len(agent.critic_targets) == 2
    actor_before = copy.deepcopy(agent.actor.state_dict())
    m1 = agent.update(batch())
    assert "actor_loss" not in m1  # delayed
    assert all(torch.equal(v, agent.actor.state_dict()[k]) for k, v in actor_before.items())
    m2 = agent.update(batch(seed=1))
    assert "actor_loss" in m2 and torch.isfinite(m2["actor_loss"])
    # the twin target is the minimum of the two target critics
    seq = batch(seed=2)
    agent.cfg = DDPGConfig(head_hidden=(32,), twin_critics=True)  # no smoothing noise
    y = td_target(agent, seq)
    with torch.no_grad():
        a, _ = agent.actor_target(seq.obs)
        qs = [c.q(c.encoder(seq.obs)[0][:, 1:], a[:, 1:]) for c in agent.critic_targets]
    assert torch.allclose(y, seq.reward + 0.99 * torch.minimum(*qs))


def test_update_returns_metrics():
    m = make_agent().update(batch())
    assert set(m) == {"critic_loss", "q_mean", "critic_grad_norm", "actor_loss",
                      "actor_grad_norm", "actor_saturation", "actor_pre_tanh"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in m.values())


def test_update_metrics_are_the_losses_q_and_gradient_norms_it_stepped_on():
    """``q_mean`` is critic 0's Q averaged over the trained (mask 1) steps, the losses those of
    the agent's loss path, the norms those of the gradients of the two losses."""
    agent = _seq_agent()
    b = _seq_batch(agent)
    assert (b.mask == 0).any()  # windows cut at episode ends: padding that q_mean leaves out
    ref = copy.deepcopy(agent)
    closs, q, enc = ref._critic_fn(b)
    aloss = ref._actor_fn(b, enc).loss
    (closs + aloss).backward()
    m = agent.update(b)
    torch.testing.assert_close(m["q_mean"], (q * b.mask).sum() / b.mask.sum())
    assert not torch.allclose(m["q_mean"], q.mean())
    torch.testing.assert_close(m["critic_loss"], closs.detach())
    torch.testing.assert_close(m["actor_loss"], aloss.detach())
    for name, params in (("critic_grad_norm", ref._critic_params),
                         ("actor_grad_norm", ref._actor_params)):
        norm = torch.cat([p.grad.flatten() for p in params]).norm()
        torch.testing.assert_close(m[name], norm, msg=name)


def test_agent_bad_config():
    with pytest.raises(ValueError, match=r"--agent.actor-lr must be a number in \(0, 1\], got 0.0"):
        DDPGConfig(actor_lr=0.0)
    with pytest.raises(ValueError, match=r"--agent.critic-lr must be a number in \(0, 1\], got -1"):
        DDPGConfig(critic_lr=-1.0)
    with pytest.raises(ValueError, match="action_high must exceed action_low"):
        DDPG(3, torch.tensor([1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="unknown backbone 'lstmx'"):
        DDPG(3, LOW, HIGH, "lstmx")


def _seq_agent(**kw) -> DDPG:
    torch.manual_seed(0)
    cfg = DDPGConfig(head_hidden=(16,), actor_prev_action=True, critic_prev_action=True, **kw)
    return DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=16), cfg)


def _seq_batch(agent: DDPG):

    buf = seq_buffer(200, 1, 3, 2, seq_len=5, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for t in range(40):
        buf.add(torch.randn(1, 3, generator=g), torch.rand(1, 2, generator=g),
                torch.randn(1, generator=g), torch.randn(1, 3, generator=g),
                [float(t % 10 == 9)], [0.0])
    return buf.sample(8)


def test_act_without_a_state_starts_from_the_initial_one():
    """``act(obs, None, ...)`` failed on ``None.actor``; a backbone takes ``None`` as its initial
    state, and so does the agent. Another type is refused by name."""
    agent = _seq_agent()
    obs, prev_a = torch.randn(4, 3), torch.zeros(4, 2)
    a0, s0 = agent.act(obs, None, prev_a)
    a1, s1 = agent.act(obs, agent.initial_state(4), prev_a)
    assert torch.equal(a0, a1) and all(torch.equal(x, y) for x, y in zip(s0.actor, s1.actor))
    with pytest.raises(ValueError, match=r"state must be an AgentState .* or None, got tuple"):
        agent.act(obs, tuple(s0), prev_a)


def test_shared_encoder_is_shared_and_trained_by_the_critic_only():
    agent = _seq_agent(shared_encoder=True)
    enc = agent.actor.encoder
    assert agent.critics[0].encoder is enc
    assert agent.critic_targets[0].encoder is agent.actor_target.encoder
    assert not any(p is q for p in enc.parameters() for g in agent.actor_opt.param_groups
                   for q in g["params"])
    b = _seq_batch(agent)
    ref = copy.deepcopy(agent)
    _, _, h = agent._critic_fn(b)  # the agent's own losses, as its update takes them
    agent._actor_fn(b, h).loss.backward()
    assert all(p.grad is None for p in enc.parameters())  # no gradient from the actor loss
    assert all(p.grad is None for p in agent.critics[0].head.parameters())
    assert all(p.grad is not None for p in agent.actor.head.parameters())
    # the update steps the encoder on the critic loss's gradient alone
    closs, _, _ = ref._critic_fn(b)
    critic_only = torch.autograd.grad(closs, list(ref.actor.encoder.parameters()))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    agent.zero_grad(set_to_none=True)
    m = agent.update(b)
    assert "actor_loss" in m  # the actor was updated too
    for p, g in zip(enc.parameters(), critic_only, strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_shared_encoder_actor_grad_goes_through_the_actor_path_only():
    agent = _seq_agent(shared_encoder=True, shared_encoder_actor_grad=True)
    b = _seq_batch(agent)
    target = td_target(agent, b)
    _, _, h = critic_loss(agent, b, target)
    actor_loss(agent, b, h).backward()
    assert all(p.grad is not None for p in agent.actor.encoder.parameters())
    assert all(p.grad is None for p in agent.critics[0].head.parameters())
    # the same loss with the actor's encoder path cut gives the encoder no gradient: the
    # gradient above came through mu(h), not through the critic's encoding
    agent.zero_grad(set_to_none=True)
    ref = _seq_agent(shared_encoder=True)
    ref.load_state_dict(agent.state_dict())
    actor_loss(ref, b, h).backward()
    assert all(p.grad is None for p in ref.actor.encoder.parameters())


def test_shared_encoder_trained_by_both_losses_steps_each_optimizer_on_its_own_gradient():
    agent = _seq_agent(shared_encoder=True, shared_encoder_actor_grad=True)
    b = _seq_batch(agent)

    def grads(loss_of) -> list[torch.Tensor | None]:
        m = copy.deepcopy(agent)
        target = td_target(m, b)
        closs, _, enc = critic_loss(m, b, target)
        loss_of(m, closs, enc).backward()
        return [p.grad for p in m.parameters()]

    g_critic = grads(lambda m, closs, enc: closs)
    g_actor = grads(lambda m, closs, enc: actor_loss(m, b, enc))
    ref = copy.deepcopy(agent)
    for p, g in zip(ref.parameters(), g_critic):
        p.grad = g
    ref.critic_opt.step()
    for p, g in zip(ref.parameters(), g_actor):
        p.grad = g
    ref.actor_opt.step()
    agent.update(b)
    for (name, p), q in zip(agent.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_shared_encoder_needs_matching_inputs():
    with pytest.raises(ValueError, match="a shared encoder needs the same inputs"):
        DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=16),
             DDPGConfig(shared_encoder=True, critic_prev_action=True))


def _count_calls(module: torch.nn.Module) -> list[int]:
    """A counter of ``module``'s forward calls (a forward hook)."""
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_critics_sharing_an_encoder_equal_two_critics_with_equal_encoders():
    """Twin critics on one encoder: one module in online and target critics, encoded once per
    window, and the loss and its gradients those of two critics whose encoders hold the same
    weights (the shared encoder's gradient is the sum of both heads')."""
    shared = _seq_agent(twin_critics=True, critics_share_encoder=True)
    c0, c1 = shared.critics
    assert c0.encoder is c1.encoder and c0.head is not c1.head
    assert c0.encoder is not shared.actor.encoder
    assert shared.critic_targets[0].encoder is shared.critic_targets[1].encoder
    assert shared.critic_targets[0].encoder is not c0.encoder
    opt_params = [p for g in shared.critic_opt.param_groups for p in g["params"]]
    assert len(opt_params) == len({id(p) for p in opt_params})
    assert {id(p) for p in c0.encoder.parameters()} <= {id(p) for p in opt_params}

    twin = _seq_agent(twin_critics=True)
    for name in ("critics", "critic_targets"):
        for a, b in zip(getattr(twin, name), getattr(shared, name)):
            a.load_state_dict(b.state_dict())  # both of twin's encoders get the shared weights
    twin.actor_target.load_state_dict(shared.actor_target.state_dict())
    b = _seq_batch(shared)
    online, target_enc = _count_calls(c0.encoder), _count_calls(shared.critic_targets[0].encoder)
    target = td_target(shared, b)
    loss, q, _ = critic_loss(shared, b, target)
    assert (online[0], target_enc[0]) == (1, 1)  # each window encoded once, not per critic
    twin_target = td_target(twin, b)
    twin_loss, twin_q, _ = critic_loss(twin, b, twin_target)
    torch.testing.assert_close(target, twin_target)
    torch.testing.assert_close(loss, twin_loss)
    torch.testing.assert_close(q, twin_q)
    loss.backward()
    twin_loss.backward()
    e0, e1 = (dict(c.encoder.named_parameters()) for c in twin.critics)
    for name, p in c0.encoder.named_parameters():
        assert e1[name].grad.abs().sum() > 0  # the second head's loss reaches the encoder
        torch.testing.assert_close(p.grad, e0[name].grad + e1[name].grad, msg=name)
    for h, th in zip((c0.head, c1.head), (twin.critics[0].head, twin.critics[1].head)):
        for p, tp in zip(h.parameters(), th.parameters()):
            torch.testing.assert_close(p.grad, tp.grad)


def test_critics_sharing_an_encoder_train_it_keep_one_state_and_round_trip():
    agent = _seq_agent(twin_critics=True, critics_share_encoder=True)
    enc = agent.critics[0].encoder
    calls, step = [0], enc.step

    def counted_step(*args):
        calls[0] += 1
        return step(*args)

    enc.step = counted_step
    obs, prev = torch.randn(2, 3), torch.zeros(2, 2)
    _, state = agent.act(obs, agent.initial_state(2), prev, track_critic=True)
    assert calls[0] == 1  # stepped once for both critics
    assert state.critics[0] is state.critics[1]
    ref = _seq_agent(twin_critics=True)  # an own-encoder critic steps to the same state
    ref.critics[0].encoder.load_state_dict(enc.state_dict())
    _, ref_state = ref.act(obs, ref.initial_state(2), prev, track_critic=True)
    torch.testing.assert_close(state.critics[0], ref_state.critics[0])
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    del enc.step
    agent.update(_seq_batch(agent))
    assert all(not torch.equal(before[k], v) for k, v in enc.state_dict().items())
    fresh = _seq_agent(twin_critics=True, critics_share_encoder=True)
    fresh.load_state_dict(agent.state_dict())
    fresh.critic_opt.load_state_dict(agent.critic_opt.state_dict())
    assert fresh.critics[0].encoder is fresh.critics[1].encoder
    for p, q in zip(fresh.parameters(), agent.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(("kw", "message"), [
    ({}, r"--agent.critics-share-encoder shares one encoder between the twin critics: expected "
         r"--agent.twin-critics, got one critic"),
    ({"twin_critics": True, "shared_encoder": True},
     r"--agent.critics-share-encoder with --agent.shared-encoder: .* expected one of the two"),
])
def test_critics_share_encoder_is_refused_without_two_critics_or_with_a_shared_encoder(
        kw, message):
    with pytest.raises(ValueError, match=message):
        DDPGConfig(critics_share_encoder=True, **kw)


def test_actor_q_min_climbs_the_lower_critic_at_each_step():
    """With ``actor_q="min"`` each step's Q is the lower of the two critics' (both reached by
    the actor's gradient where they are lower); with ``first``, critic 0's alone."""
    agent = _seq_agent(twin_critics=True, actor_q="min")
    b = _seq_batch(agent)
    _, _, enc = critic_loss(agent, b, td_target(agent, b))
    x = agent.cfg.actor_inputs(b.obs, b.prev_action, b.prev_reward)[:, :-1]
    with torch.no_grad():
        mu, _ = agent.actor(x)
        q0, q1 = (c.q(enc.h if i == 0 else c.encoder(x)[0], mu)
                  for i, c in enumerate(agent.critics))
    lower = (q1 < q0) & (b.mask > 0)
    assert 0 < lower.sum() < (b.mask > 0).sum()  # each critic is the lower one somewhere
    expected = -(torch.minimum(q0, q1) * b.mask).sum() / b.mask.sum()
    torch.testing.assert_close(actor_loss(agent, b, enc), expected)
    first = _seq_agent(twin_critics=True)  # the same draws, critic 0's Q alone
    first.load_state_dict(agent.state_dict())
    torch.testing.assert_close(actor_loss(first, b, enc), -(q0 * b.mask).sum() / b.mask.sum())


def test_actor_q_min_is_refused_without_twin_critics_and_names_a_bad_value():
    with pytest.raises(ValueError, match=r"--agent.actor-q min climbs the minimum over the twin "
                                         r"critics: expected --agent.twin-critics, got one critic"):
        DDPGConfig(actor_q="min")
    with pytest.raises(ValueError, match=r"--agent.actor-q must be 'first' or 'min', got 'max'"):
        DDPGConfig(twin_critics=True, actor_q="max")


def test_saturation_metrics_count_masked_actions_at_the_bounds():
    pre = torch.tensor([[[0.0, 10.0], [-3.0, 0.5]], [[20.0, 20.0], [0.1, 0.1]]])  # (2, 2, 2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # the last step is padding
    m = saturation(pre, mask)
    # |tanh| > 0.99 for 10, -3 (0.995), 20, 20: 4 of the 6 masked entries
    torch.testing.assert_close(m["actor_saturation"], torch.tensor(4 / 6))
    torch.testing.assert_close(m["actor_pre_tanh"], torch.tensor((10 + 3 + 0.5 + 40) / 6))


def test_pre_tanh_penalty_is_added_to_the_actor_loss_and_pulls_pre_tanh_to_zero():
    b = batch()
    plain, penalised = make_agent(), make_agent(pre_tanh_penalty=0.5)
    enc = critic_loss(plain, b, td_target(plain, b))[2]
    base = actor_loss(plain, b, enc)
    with_pen = actor_loss(penalised, b, enc)
    pre = plain.actor.pre_tanh(plain.actor.encoder(b.obs[:, :1])[0])
    torch.testing.assert_close(with_pen, base + 0.5 * pre.pow(2).mean())
    with pytest.raises(ValueError, match="--agent.pre-tanh-penalty must be a finite number >= 0"):
        DDPGConfig(pre_tanh_penalty=-1.0)


def test_encoder_lr_puts_encoders_in_their_own_optimizer_group():
    agent = make_agent(encoder_lr=1e-5, twin_critics=True)
    heads, enc = agent.actor_opt.param_groups
    assert enc["lr"] == 1e-5 and heads["lr"] == agent.cfg.actor_lr
    assert {id(p) for p in enc["params"]} == {id(p) for p in agent.actor.encoder.parameters()}
    c_heads, c_enc = agent.critic_opt.param_groups
    assert {id(p) for p in c_enc["params"]} == {
        id(p) for c in agent.critics for p in c.encoder.parameters()}
    assert c_heads["lr"] == agent.cfg.critic_lr
    # an update moves an encoder weight by about encoder_lr (Adam's first step is lr * sign)
    w = agent.actor.encoder.layers[0].weight
    before = w.detach().clone()
    agent.update(batch())
    step = (w.detach() - before).abs().max().item()
    assert 0 < step <= 1.01e-5
    assert len(make_agent().actor_opt.param_groups) == 1  # without it: one group, as before
    with pytest.raises(ValueError, match=r"--agent.encoder-lr must be a number in \(0, 1\]"):
        DDPGConfig(encoder_lr=0.0)


def _resumed(kw: dict, saved: dict, seeds: range) -> DDPG:
    """A fresh agent built from ``kw``, loaded from ``saved`` and updated on ``seeds``'s
    batches (what a resumed run does after the checkpoint)."""
    resumed = make_agent(**kw)
    resumed.load_checkpoint_state(saved)
    for k in seeds:
        resumed.update(batch(seed=k))
    return resumed


def _assert_same_weights(a: DDPG, b: DDPG) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_lr_warmup_scales_every_group_by_the_update_count_and_resumes_on_schedule():
    agent = make_agent(lr_warmup=4, encoder_lr=1e-4, actor_lr=2e-3, critic_lr=3e-3)
    bases = {id(opt): [g["lr"] for g in opt.param_groups]
             for opt in (agent.actor_opt, agent.critic_opt)}
    assert bases[id(agent.actor_opt)] == [2e-3, 1e-4]
    assert bases[id(agent.critic_opt)] == [3e-3, 1e-4]
    w = agent.actor.head[0].weight
    for k in range(1, 7):
        before = w.detach().clone()
        agent.update(batch(seed=k))
        for opt in (agent.actor_opt, agent.critic_opt):
            got = [g["lr"] for g in opt.param_groups]
            assert got == pytest.approx([b * min(1.0, k / 4) for b in bases[id(opt)]], rel=1e-12)
        if k == 1:  # Adam's first step is lr * sign: a quarter of the actor's rate
            assert 0 < (w.detach() - before).abs().max().item() <= 1.01 * 2e-3 / 4
        if k == 2:
            saved = copy.deepcopy(agent.checkpoint_state())
    # a fresh agent loaded after update 2 continues at 3/4, 4/4, ... and lands on the same weights
    resumed = _resumed(dict(lr_warmup=4, encoder_lr=1e-4, actor_lr=2e-3, critic_lr=3e-3), saved,
                       range(3, 4))
    assert [g["lr"] for g in resumed.actor_opt.param_groups] == pytest.approx([1.5e-3, 7.5e-5])
    for k in range(4, 7):
        resumed.update(batch(seed=k))
    _assert_same_weights(agent, resumed)
    assert [g["lr"] for g in make_agent().actor_opt.param_groups] == [1e-3]  # off by default


def _follows_schedule(kw: dict, factors: list[float], save_at: int) -> tuple[DDPG, DDPG]:
    """An agent updated once per factor, each group's rate checked to be its base times the
    factor; and one resumed from its checkpoint after update ``save_at`` and updated on."""
    agent = make_agent(**kw)
    bases = {id(opt): [g["lr"] for g in opt.param_groups]
             for opt in (agent.actor_opt, agent.critic_opt)}
    for k, f in enumerate(factors, start=1):
        agent.update(batch(seed=k))
        for opt in (agent.actor_opt, agent.critic_opt):
            assert [g["lr"] for g in opt.param_groups] == pytest.approx(
                [b * f for b in bases[id(opt)]], rel=1e-12)
        if k == save_at:
            saved = copy.deepcopy(agent.checkpoint_state())
    resumed = _resumed(kw, saved, range(save_at + 1, len(factors) + 1))
    _assert_same_weights(agent, resumed)
    return agent, resumed


def test_lr_decay_falls_linearly_to_its_fraction_composes_with_warmup_and_resumes_on_schedule():
    kw = dict(lr_warmup=2, lr_decay=4, lr_decay_to=0.25, encoder_lr=1e-4, actor_lr=2e-3)
    # warm-up factor min(1, k/2) times decay factor 1 - 0.75 * min(1, k/4)
    _, resumed = _follows_schedule(kw, [0.5 * 0.8125, 1.0 * 0.625, 0.4375, 0.25, 0.25, 0.25], 2)
    assert [g["lr"] for g in resumed.actor_opt.param_groups] == pytest.approx([5e-4, 2.5e-5])
    # decay to 0 stops learning after its last update: no parameter moves
    frozen = make_agent(lr_decay=1, lr_decay_to=0.0)
    frozen.update(batch(seed=1))
    before = [p.detach().clone() for p in frozen.parameters()]
    frozen.update(batch(seed=2))
    for p, b in zip(frozen.parameters(), before, strict=True):
        torch.testing.assert_close(p, b, rtol=0, atol=0)


def test_lr_decay_start_holds_the_full_rate_then_decays_and_resumes_on_schedule():
    kw = dict(lr_decay=4, lr_decay_to=0.2, lr_decay_start=3, encoder_lr=1e-4, actor_lr=2e-3)
    # full rate for updates 1-3, then 1 - 0.8 * min(1, (k - 3) / 4)
    _, resumed = _follows_schedule(kw, [1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2, 0.2], 4)
    assert [g["lr"] for g in resumed.actor_opt.param_groups] == pytest.approx([4e-4, 2e-5])
    # before the decay starts, the run is the run without a decay, weight for weight
    plain, held = make_agent(), make_agent(lr_decay=5, lr_decay_start=3)
    for k in range(1, 4):
        plain.update(batch(seed=k))
        held.update(batch(seed=k))
    _assert_same_weights(plain, held)


def _set_grads(params, norm: float) -> None:
    """Gradients of total norm ``norm`` on ``params``, all entries equal."""
    n = sum(p.numel() for p in params)
    for p in params:
        p.grad = torch.full_like(p, norm / n ** 0.5)


def test_spike_clip_cuts_only_norms_above_its_multiple_of_the_running_mean():
    agent = make_agent(spike_clip=2.0)
    params = agent._critic_params
    _set_grads(params, 10.0)  # first update: sets the mean, clips nothing
    assert agent._clip(params, 0).item() == pytest.approx(10.0, rel=1e-5)
    assert grad_norm(params).item() == pytest.approx(10.0, rel=1e-5)
    assert agent.grad_norm_mean.tolist() == pytest.approx([10.0, 0.0], rel=1e-5)
    _set_grads(params, 15.0)  # below 2 x 10: untouched, the mean moves 1% of the way
    assert agent._clip(params, 0).item() == pytest.approx(15.0, rel=1e-5)
    assert grad_norm(params).item() == pytest.approx(15.0, rel=1e-5)
    assert agent.grad_norm_mean[0].item() == pytest.approx(10.05, rel=1e-5)
    _set_grads(params, 500.0)  # a spike: cut to 2 x 10.05, reported before clipping
    assert agent._clip(params, 0).item() == pytest.approx(500.0, rel=1e-5)
    assert grad_norm(params).item() == pytest.approx(20.1, rel=1e-4)
    assert agent.grad_norm_mean[0].item() == pytest.approx(10.05 + 0.01 * 10.05, rel=1e-5)
    mean = agent.grad_norm_mean.clone()
    _set_grads(params, float("inf"))  # a non-finite norm (an fp16 step to skip) keeps the mean
    agent._clip(params, 0)
    assert torch.equal(agent.grad_norm_mean, mean)
    # with max_grad_norm as well: that clip first, then the spike clip on what it left
    agent = make_agent(spike_clip=2.0, max_grad_norm=5.0)
    _set_grads(params := agent._actor_params, 8.0)
    assert agent._clip(params, 1).item() == pytest.approx(8.0, rel=1e-5)
    assert agent.grad_norm_mean.tolist() == pytest.approx([0.0, 5.0], rel=1e-5)
    # off by default: nothing but the measured norm
    agent = make_agent()
    _set_grads(params := agent._critic_params, 500.0)
    assert agent._clip(params, 0).item() == pytest.approx(500.0, rel=1e-5)
    assert grad_norm(params).item() == pytest.approx(500.0, rel=1e-5)
    assert agent.grad_norm_mean.tolist() == [0.0, 0.0]


def test_spike_clip_means_are_saved_and_resume_exactly():
    agent = make_agent(spike_clip=1.5)
    for k in range(3):
        agent.update(batch(seed=k))
    saved = copy.deepcopy(agent.checkpoint_state())
    assert saved["grad_norm_mean"]["critic"] > 0 and saved["grad_norm_mean"]["actor"] > 0
    resumed = make_agent(spike_clip=1.5)
    resumed.load_checkpoint_state(saved)
    assert torch.equal(resumed.grad_norm_mean, agent.grad_norm_mean)
    for k in range(3, 6):
        agent.update(batch(seed=k))
        resumed.update(batch(seed=k))
    for a, b in zip(agent.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    old = {k: v for k, v in saved.items() if k != "grad_norm_mean"}  # a checkpoint from before
    fresh = make_agent(spike_clip=1.5)
    fresh.load_checkpoint_state(old)  # loads; its means start unset, as in a new run
    assert fresh.grad_norm_mean.tolist() == [0.0, 0.0]


def test_gamma_from_rises_linearly_in_the_horizon_trains_at_each_updates_discount_and_resumes():
    kw = dict(gamma_from=0.9, gamma=0.95, gamma_rise=4)
    agent = make_agent(**kw)
    # horizons 10 -> 20 over 4 updates: 12.5, 15, 17.5, 20, then 20
    expected = [1 - 1 / 12.5, 1 - 1 / 15, 1 - 1 / 17.5, 0.95, 0.95, 0.95]
    assert [agent.gamma_at(k) for k in range(1, 7)] == pytest.approx(expected, rel=1e-12)
    for k in range(1, 7):
        if k == 1:  # update 1 is the update of an agent at a fixed gamma of 0.92
            fixed = make_agent(gamma=float(torch.tensor(expected[0])))
            fixed.update(batch(seed=1))
        metrics = agent.update(batch(seed=k))
        assert metrics["gamma"].item() == pytest.approx(expected[k - 1], rel=1e-6)
        if k == 1:
            for a, b in zip(agent.parameters(), fixed.parameters(), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        if k == 2:
            saved = copy.deepcopy(agent.checkpoint_state())
    _assert_same_weights(agent, _resumed(kw, saved, range(3, 7)))
    assert "gamma" not in make_agent().update(batch())  # no rise: no metric, cfg.gamma
    assert make_agent(gamma=0.9).gamma_at(5) == 0.9


@pytest.mark.parametrize(("kw", "message"), [
    (dict(gamma_from=0.95, gamma=0.9, gamma_rise=10), r"--agent.gamma-from must be a number in "
     r"\[0, --agent.gamma\) with --agent.gamma below 1 .* --agent.gamma is 0.9\), got 0.95"),
    (dict(gamma_from=0.9, gamma=1.0, gamma_rise=10), r"--agent.gamma-from .* got 0.9"),
    (dict(gamma_from=float("nan"), gamma_rise=10), r"--agent.gamma-from .* got nan"),
    (dict(gamma_from=0.9), r"--agent.gamma-rise must be an integer >= 1 with "
                           r"--agent.gamma-from \(the updates the rise takes\), got 0"),
    (dict(gamma_rise=8000), r"--agent.gamma-rise 8000 sets how many updates the discount "
                            r"takes to rise from --agent.gamma-from: expected "
                            r"--agent.gamma-from, got none"),
    (dict(gamma_rise=-1), r"--agent.gamma-rise must be an integer >= 0, got -1"),
    (dict(gamma_rise=2.5), r"--agent.gamma-rise must be an integer >= 0, got 2.5"),
])
def test_bad_gamma_rise_values_name_their_flag(kw, message):
    with pytest.raises(ValueError, match=message):
        DDPGConfig(**kw)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("lr_warmup", -1, "--agent.lr-warmup must be an integer >= 0, got -1"),
    ("lr_warmup", 2.5, "--agent.lr-warmup must be an integer >= 0, got 2.5"),
    ("lr_decay", -3, "--agent.lr-decay must be an integer >= 0, got -3"),
    ("lr_decay", True, "--agent.lr-decay must be an integer >= 0, got True"),
    ("lr_decay_start", -2, "--agent.lr-decay-start must be an integer >= 0, got -2"),
    ("lr_decay_start", 1.5, "--agent.lr-decay-start must be an integer >= 0, got 1.5"),
    ("lr_decay_to", 1.5, r"--agent.lr-decay-to must be a number in \[0, 1\], got 1.5"),
    ("lr_decay_to", float("nan"), r"--agent.lr-decay-to must be a number in \[0, 1\], got nan"),
    ("actor_lr", float("inf"), r"--agent.actor-lr must be a number in \(0, 1\], got inf"),
    ("critic_lr", 1e300, r"--agent.critic-lr must be a number in \(0, 1\], got 1e\+300"),
    ("max_grad_norm", float("nan"), "--agent.max-grad-norm must be None .* got nan"),
    ("max_grad_norm", -1.0, "--agent.max-grad-norm must be None .* got -1.0"),
    ("max_grad_norm", 0.0, "--agent.max-grad-norm must be None .* got 0.0"),
    ("spike_clip", 0.5, r"--agent.spike-clip must be None \(off\) or a finite number >= 1, .* 0.5"),
    ("spike_clip", float("inf"), "--agent.spike-clip must be None .* got inf"),
    ("target_noise", float("nan"), "--agent.target-noise must be a finite number >= 0"),
    ("target_noise_clip", 0.0, "--agent.target-noise-clip must be a finite number > 0"),
    ("head_hidden", (0,), r"--agent.head-hidden must be one or more positive integers, got \(0,\)"),
    ("head_hidden", (), r"--agent.head-hidden must be one or more positive integers, got \(\)"),
    ("gamma", float("nan"), r"--agent.gamma must be in \[0, 1\], got nan"),
    ("reward_scale", 0.0, "--agent.reward-scale must be a finite number > 0, got 0.0"),
    ("reward_scale", float("inf"), "--agent.reward-scale must be a finite number > 0, got inf"),
    ("reward_scale", -0.1, "--agent.reward-scale must be a finite number > 0, got -0.1"),
    ("reward_scale", float("nan"), "--agent.reward-scale must be a finite number > 0, got nan"),
    ("reward_scale", True, "--agent.reward-scale must be a finite number > 0, got True"),
    ("policy_delay", 0, "--agent.policy-delay must be an integer >= 1, got 0"),
    ("n_step", 0, "--agent.n-step must be an integer >= 1, got 0"),
    ("n_step", 2.0, "--agent.n-step must be an integer >= 1, got 2.0"),
    ("final_init", 0.0, r"--agent.final-init must be None \(PyTorch's default\) or a finite "
                        r"number > 0, got 0.0"),
    ("final_init", float("inf"), "--agent.final-init must be None .* got inf"),
    ("input_embed", (32, 8), r"--agent.input-embed must be empty \(off\) or three positive "
                             r"integers \(observation, action, reward\), got \(32, 8\)"),
    ("input_embed", (32, 0, 8), r"--agent.input-embed must be .* got \(32, 0, 8\)"),
    ("input_embed", (32, True, 8), r"--agent.input-embed must be .* got \(32, True, 8\)"),
])
def test_bad_agent_values_name_their_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        DDPGConfig(**{field: value})


def test_final_init_draws_only_the_heads_last_layers_and_starts_the_actor_mid_range():
    w = 3e-3
    default, small = make_agent(), make_agent(final_init=w)
    nets = (small.actor, *small.critics, small.actor_target, *small.critic_targets)
    last = {id(p) for net in nets for p in net.head[-1].parameters()}
    for (name, p), q in zip(small.named_parameters(), default.parameters(), strict=True):
        if id(p) in last:  # within [-w, w], distinct draws, not the default's
            assert p.abs().max() <= w and p.unique().numel() == p.numel(), name
            assert not torch.equal(p, q), name
        else:  # every other layer: the default's weights, draw for draw
            assert torch.equal(p, q), name
    # the targets start as copies of the online networks
    assert torch.equal(small.actor_target.head[-1].weight, small.actor.head[-1].weight)
    obs = torch.randn(4, 7, small.actor.encoder.d_in, generator=torch.Generator().manual_seed(0))
    h, _ = small.actor.encoder(obs)
    pre_small, pre_default = small.actor.pre_tanh(h), default.actor.pre_tanh(h)
    assert pre_small.abs().max() < 0.1 < pre_default.abs().max()


# ------------------------------------------------------------------------------ targets in update
def _target_pairs(agent: DDPG) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(target parameter, online parameter) pairs, actor then critics."""
    return list(zip([*agent.actor_target.parameters(), *agent.critic_targets.parameters()],
                    [*agent.actor.parameters(), *agent.critics.parameters()], strict=True))


def test_update_moves_every_target_by_exactly_tau_toward_the_online_weights():
    tau = 0.1
    agent = make_agent(tau=tau)
    agent.update(batch())  # targets and online weights now differ
    before = [t.detach().clone() for t, _ in _target_pairs(agent)]
    agent.update(batch(seed=1))
    moved = 0
    for b, (t, o) in zip(before, _target_pairs(agent)):
        # target' = target + tau * (online' - target), with the online weights after the step
        torch.testing.assert_close(t, b + tau * (o - b), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(t, (1 - tau) * b + tau * o, rtol=1e-6, atol=1e-7)
        gap = (o - b).abs() > 1e-3
        if gap.any():  # the step covers the fraction tau of the gap, not more, not less
            ratio = ((t - b)[gap] / (o - b)[gap])
            torch.testing.assert_close(ratio, torch.full_like(ratio, tau), rtol=1e-3, atol=0)
            moved += 1
    assert moved >= 4  # weights of actor and critic


def test_delayed_policy_update_leaves_every_target_frozen_until_its_step():
    agent = make_agent(twin_critics=True, target_noise=0.2, policy_delay=2)
    agent.noise_gen = torch.Generator().manual_seed(0)
    agent.update(batch(seed=3))  # update 1: critics only
    agent.update(batch())  # update 2: actor and targets step, so targets differ from online
    targets = [t.detach().clone() for t, _ in _target_pairs(agent)]
    actor = [p.detach().clone() for p in agent.actor.parameters()]
    critics = [p.detach().clone() for p in agent.critics.parameters()]
    m = agent.update(batch(seed=1))  # update 3: critics only
    assert "actor_loss" not in m
    assert all(torch.equal(b, t) for b, (t, _) in zip(targets, _target_pairs(agent)))
    assert all(torch.equal(b, p) for b, p in zip(actor, agent.actor.parameters()))
    assert any(not torch.equal(b, p) for b, p in zip(critics, agent.critics.parameters()))
    agent.update(batch(seed=2))  # update 4: the delayed step moves them
    assert all(not torch.equal(b, t) for b, (t, _) in zip(targets, _target_pairs(agent)))


def test_first_update_with_policy_delay_2_changes_no_target():
    agent = make_agent(policy_delay=2)
    targets = [t.detach().clone() for t, _ in _target_pairs(agent)]
    assert "actor_loss" not in agent.update(batch())
    assert all(torch.equal(b, t) for b, (t, _) in zip(targets, _target_pairs(agent)))


def test_target_policy_noise_is_clipped_to_clip_times_the_half_range():
    clip = 0.05
    agent = make_agent(target_noise=10.0, target_noise_clip=clip)
    agent.noise_gen = torch.Generator().manual_seed(0)
    seq = batch(256)
    with torch.no_grad():
        plain = agent.actor_target(seq.obs[:, 1:])[0]  # (B, 1, A): the target action, no noise
    seen = []
    q = agent.critic_targets[0].q

    def recording(h, action):  # the target critic's input: the smoothed target action
        seen.append(action.detach().clone())
        return q(h, action)

    agent.critic_targets[0].q = recording
    agent.update(seq)
    (noisy,) = seen
    half = (HIGH - LOW) / 2  # [2.0, 0.5]
    shift = (noisy - plain).abs()  # (B, 1, A)
    assert torch.all(shift <= clip * half + 1e-6)
    # with std 10 >> clip nearly every draw is clipped: the shift is clip * half-range exactly,
    # except where the action bound cut it shorter
    at_clip = (shift - clip * half).abs() < 1e-5
    inside = (plain - LOW > clip * half) & (HIGH - plain > clip * half)
    assert at_clip[inside].float().mean() > 0.95 and inside.float().mean() > 0.5


def test_head_obs_gives_the_heads_the_current_observation_beside_the_encoding():
    plain, short = _seq_agent(), _seq_agent(head_obs=True)
    assert plain.actor.head[0].in_features == 16 and plain.critics[0].head[0].in_features == 18
    assert isinstance(short.actor.encoder, ObsShortcut)
    assert short.actor.head[0].in_features == 16 + 3  # [h, obs]
    assert short.critics[0].head[0].in_features == 16 + 3 + 2  # [h, obs, action]
    # the encoding is the backbone's output with the observation (the input's first 3 columns)
    x = torch.randn(4, 7, 5)  # (B, T, obs 3 + previous action 2)
    h, state = short.actor.encoder(x)
    ref, ref_state = short.actor.encoder.backbone(x)
    torch.testing.assert_close(h, torch.cat([ref, x[..., :3]], dim=-1), rtol=0, atol=0)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=0)
    # step equals forward, from the same state, step by step
    s = short.actor.encoder.initial_state(4)
    for t in range(7):
        y, s = short.actor.encoder.step(x[:, t], s)
        torch.testing.assert_close(y, h[:, t], rtol=0, atol=1e-6)
    # the action moves with the current observation alone (the memory held fixed)
    obs = torch.zeros(1, 1, 5)
    a0, _ = short.actor(obs)
    a1, _ = short.actor(obs + torch.tensor([[[1.0, 0, 0, 0, 0]]]))
    assert not torch.allclose(a0, a1)
    # an update reaches the observation's columns of both heads' first layers
    before = (short.actor.head[0].weight[:, 16:].clone(),
              short.critics[0].head[0].weight[:, 16:19].clone())
    short.update(_seq_batch(short))
    assert not torch.equal(before[0], short.actor.head[0].weight[:, 16:])
    assert not torch.equal(before[1], short.critics[0].head[0].weight[:, 16:19])


def test_head_obs_weights_do_not_load_into_an_agent_without_it():
    agent = _seq_agent(head_obs=True)
    twin = _seq_agent(head_obs=True)
    twin.load_state_dict(agent.state_dict())
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in agent.state_dict().items())
    with pytest.raises(RuntimeError, match="Missing key"):
        _seq_agent().load_state_dict(agent.state_dict())


def test_obs_shortcut_refuses_an_observation_wider_than_the_input():
    gru = make_backbone("gru", 5, BackboneConfig(d_model=8))
    for bad in (0, 6):
        with pytest.raises(ValueError, match=rf"obs_dim must be in \[1, 5\] \(the encoder's "
                                             rf"input width\), got {bad}"):
            ObsShortcut(gru, bad)


@pytest.mark.parametrize("which", ["target", "average"])
def test_copy_policies_act_with_their_copy_and_follow_its_updates(which):
    torch.manual_seed(0)
    agent = DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=16),
                 DDPGConfig(head_hidden=(32,), average_tau=0.1))
    copy_of = {"target": agent.actor_target, "average": agent.actor_average}[which]
    with torch.no_grad():  # the actor moves away from its copies
        for p in agent.actor.parameters():
            p.add_(0.3 * torch.randn_like(p))
    assert agent.policy("actor") is agent
    policy = agent.policy(which)
    g = torch.Generator().manual_seed(1)
    obs, prev_a, prev_r = (torch.randn(6, 2, 3, generator=g), torch.rand(6, 2, 2, generator=g),
                           torch.randn(6, 2, generator=g))

    def actions(policy) -> torch.Tensor:
        state, out = policy.initial_state(2), []
        for t in range(6):  # the recurrent state is carried from step to step
            a, state = policy.act(obs[t], state, prev_a[t], prev_r[t])
            out.append(a)
        return torch.stack(out)

    def with_copy_as_actor() -> DDPG:
        ref = copy.deepcopy(agent)
        ref.actor.load_state_dict(copy_of.state_dict())
        return ref

    torch.testing.assert_close(actions(policy), actions(with_copy_as_actor()), rtol=0, atol=0)
    assert (actions(policy) - actions(agent)).abs().max() > 1e-3  # not the actor's actions
    polyak_update(list(copy_of.parameters()), list(agent.actor.parameters()), 0.5)
    torch.testing.assert_close(actions(policy), actions(with_copy_as_actor()), rtol=0, atol=0)
    with pytest.raises(ValueError, match="must be 'actor', 'target' or 'average', got 'best'"):
        agent.policy("best")


def test_actor_average_moves_at_its_own_rate_and_changes_no_training():
    plain, averaged = _seq_agent(), _seq_agent(average_tau=0.2)
    assert plain.actor_average is None
    start = copy.deepcopy(averaged.actor.state_dict())
    assert all(torch.equal(v, averaged.actor_average.state_dict()[k]) for k, v in start.items())
    assert not any(p.requires_grad for p in averaged.actor_average.parameters())
    seq = _seq_batch(plain)
    for _ in range(3):
        expected = {k: v.clone() for k, v in averaged.actor_average.state_dict().items()}
        m_plain, m_avg = plain.update(seq), averaged.update(seq)
        actor = averaged.actor.state_dict()
        for k, v in averaged.actor_average.state_dict().items():  # 0.8 * old + 0.2 * actor
            if v.is_floating_point() and k.split(".")[-1] not in ("scale", "center"):
                torch.testing.assert_close(v, 0.8 * expected[k] + 0.2 * actor[k])
        assert m_plain.keys() == m_avg.keys()
        assert all(torch.equal(m_plain[k], m_avg[k]) for k in m_plain)
    # the same training draw for draw: every trained weight and target is equal
    for name in ("actor", "critics", "actor_target", "critic_targets"):
        a, b = getattr(plain, name).state_dict(), getattr(averaged, name).state_dict()
        assert all(torch.equal(v, b[k]) for k, v in a.items())
    moved = sum((v - start[k]).abs().sum() for k, v in averaged.actor_average.state_dict().items())
    assert moved > 0
    with pytest.raises(ValueError, match=r"^the policy 'average' evaluates the actor's average, "
                                         r"which only --agent.average-tau keeps"):
        plain.policy("average")


def test_actor_average_is_saved_and_resumes_exactly():
    agent = _seq_agent(average_tau=0.3)
    seq = _seq_batch(agent)
    agent.update(seq)
    saved = copy.deepcopy(agent.checkpoint_state())
    assert "actor_average" in saved and "actor_average" not in _seq_agent().checkpoint_state()
    resumed = _seq_agent(average_tau=0.3)
    resumed.load_checkpoint_state(saved)
    for _ in range(2):
        agent.update(seq)
        resumed.update(seq)
    for k, v in agent.actor_average.state_dict().items():
        torch.testing.assert_close(v, resumed.actor_average.state_dict()[k], rtol=0, atol=0)
    old = {k: v for k, v in saved.items() if k != "actor_average"}
    with pytest.raises(ValueError, match=r"keeps an average of the actor \(--agent.average-tau "
                                         r"0.3\) but the checkpoint has none"):
        _seq_agent(average_tau=0.3).load_checkpoint_state(old)


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5, float("nan"), True])
def test_average_tau_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match=rf"--agent.average-tau must be None \(not kept\) or a "
                                         rf"number in \(0, 1\], got {value!r}"):
        DDPGConfig(average_tau=value)


def test_input_embed_embeds_each_input_apart_and_keeps_step_equal_to_forward():
    """``input_embed = (O, A, R)``: the observation, previous action and previous reward each go
    through their own ``Linear -> ReLU`` before the backbone; ``step`` equals ``forward`` step by
    step (resets included); an update trains every embedder of actor and critic."""
    torch.manual_seed(0)
    cfg = DDPGConfig(head_hidden=(16,), actor_prev_action=True, critic_prev_action=True,
                     critic_prev_reward=True, input_embed=(6, 4, 2))
    agent = DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=16), cfg)
    actor_enc, critic_enc = agent.actor.encoder, agent.critics[0].encoder
    assert isinstance(actor_enc, InputEmbed) and isinstance(critic_enc, InputEmbed)
    # the actor sees [obs 3, prev action 2]; the critic [obs 3, prev action 2, prev reward 1]
    assert (actor_enc.d_in, actor_enc.backbone.d_in) == (5, 6 + 4)
    assert (critic_enc.d_in, critic_enc.backbone.d_in) == (6, 6 + 4 + 2)
    assert [(e.in_features, e.out_features) for e in critic_enc.embeds] == [(3, 6), (2, 4),
                                                                            (1, 2)]
    x = torch.randn(4, 9, 6)  # (B, T, obs 3 + previous action 2 + previous reward 1)
    parts = (x[..., :3], x[..., 3:5], x[..., 5:])
    ref = torch.cat([torch.relu(e(p)) for e, p in zip(critic_enc.embeds, parts)], dim=-1)
    h, state = critic_enc(x)
    ref_h, ref_state = critic_enc.backbone(ref)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=0)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=0)
    # step by step, with an episode boundary for rows 0 and 2 after step 4
    done = torch.tensor([True, False, True, False])
    first, _ = critic_enc(x[:, :5])
    second, _ = critic_enc(x[:, 5:])  # every row from a zero state
    s = critic_enc.initial_state(4)
    for t in range(9):
        if t == 5:
            s = critic_enc.reset_state(s, done)
        y, s = critic_enc.step(x[:, t], s)
        if t < 5:
            torch.testing.assert_close(y, first[:, t], rtol=0, atol=1e-6)
        else:
            torch.testing.assert_close(y[done], second[done, t - 5], rtol=0, atol=1e-6)
            torch.testing.assert_close(y[~done], h[~done, t], rtol=0, atol=1e-6)
    before = [e.weight.clone() for enc in (actor_enc, critic_enc) for e in enc.embeds]
    agent.update(_seq_batch(agent))
    after = [e.weight for enc in (actor_enc, critic_enc) for e in enc.embeds]
    assert all(not torch.equal(b, a) for b, a in zip(before, after))


def test_input_embed_composes_with_head_obs_and_the_heads_see_the_raw_observation():
    agent = _seq_agent(input_embed=(6, 4, 2), head_obs=True, critic_prev_reward=True)
    enc = agent.actor.encoder
    assert isinstance(enc, ObsShortcut) and isinstance(enc.backbone, InputEmbed)
    x = torch.randn(2, 3, 5)
    h, _ = enc(x)
    torch.testing.assert_close(h[..., 16:], x[..., :3], rtol=0, atol=0)  # [h, obs]


def test_head_embed_feeds_the_heads_the_memory_and_an_embedding_of_the_current_step():
    """``head_embed = (A, C)``: the actor's head takes ``[m, relu(E o)]``, the critic's
    ``[m, relu(E [o, a])]``, where ``[m, o]`` is the :class:`ObsShortcut` encoding; ``step``
    equals ``forward``; an update trains both embedders (the actor's by the actor loss, the
    critic's by the critic loss only)."""
    agent = _seq_agent(head_obs=True, head_embed=(5, 6), twin_critics=True,
                       critics_share_encoder=True)
    actor, critic = agent.actor, agent.critics[0]
    assert isinstance(actor.embed, HeadEmbed) and isinstance(critic.embed, HeadEmbed)
    assert (actor.embed.linear.in_features, actor.embed.linear.out_features) == (3, 5)
    assert (critic.embed.linear.in_features, critic.embed.linear.out_features) == (3 + 2, 6)
    assert actor.head[0].in_features == 16 + 5 and critic.head[0].in_features == 16 + 6
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, 5, generator=g)  # (B, T, obs 3 + previous action 2)
    a = torch.rand(4, 7, 2, generator=g) * 2 - 1
    h, _ = actor.encoder(x)  # (B, T, 16 + 3) = [m, o]
    m, o = h[..., :16], h[..., 16:]
    ref = actor.head(torch.cat([m, torch.relu(actor.embed.linear(o))], -1))
    torch.testing.assert_close(actor.pre_tanh(h), ref, rtol=0, atol=1e-6)
    hc, _ = critic.encoder(x)
    q_ref = critic.head(torch.cat([hc[..., :16], torch.relu(
        critic.embed.linear(torch.cat([hc[..., 16:], a], -1)))], -1)).squeeze(-1)
    torch.testing.assert_close(critic.q(hc, a), q_ref, rtol=0, atol=1e-6)
    actions, _ = actor(x)
    s = actor.encoder.initial_state(4)
    for t in range(7):
        y, s = actor.step(x[:, t], s)
        torch.testing.assert_close(y, actions[:, t], rtol=0, atol=1e-6)
    before = {name: e.linear.weight.clone()
              for name, e in (("actor", actor.embed), ("critic", critic.embed))}
    b = _seq_batch(agent)
    target = td_target(agent, b)
    _, _, enc = critic_loss(agent, b, target)
    actor_loss(agent, b, enc).backward()  # the actor loss alone: critic weights get nothing
    assert actor.embed.linear.weight.grad.abs().sum() > 0
    assert critic.embed.linear.weight.grad is None
    agent.zero_grad(set_to_none=True)
    agent.update(b)
    assert not torch.equal(before["actor"], actor.embed.linear.weight)
    assert not torch.equal(before["critic"], critic.embed.linear.weight)


def test_head_embed_needs_head_obs_and_two_positive_widths():
    with pytest.raises(ValueError, match=r"--agent.head-embed 32 48 embeds the current "
                                         r"observation .* expected --agent.head-obs"):
        DDPGConfig(head_embed=(32, 48))
    for bad in ((32,), (32, 0), (32, True), (32, 48, 8)):
        with pytest.raises(ValueError, match=r"--agent.head-embed must be empty \(off\) or two "
                                             r"positive integers \(actor, critic\), got "
                                             + re.escape(repr(bad))):
            DDPGConfig(head_embed=bad, head_obs=True)
    gru = make_backbone("gru", 5, BackboneConfig(d_model=8))
    with pytest.raises(ValueError, match=r"a head embedder embeds the current observation that "
                                         r"ObsShortcut .* got a RNNBackbone encoder"):
        Actor(gru, LOW, HIGH, (8,), embed_width=4)
    critic = _seq_agent(head_obs=True, head_embed=(5, 6)).critics[0]
    with pytest.raises(ValueError, match="needs the observations and the actions"):
        critic.q_moved(torch.zeros(2, 3, 16), torch.zeros(2, 3, 2))


def test_critic_norm_normalises_each_hidden_layer_of_the_critics_heads_only():
    """``critic_norm``: ``Q = w . relu(layer_norm(W [h, a] + b)) + c`` for every critic (and
    its target) with two hidden layers; the actor's head and every parameter are as without
    it (the LayerNorm holds none), and an update moves every critic weight."""
    def make(**kw) -> DDPG:
        torch.manual_seed(0)
        return DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=16), DDPGConfig(
            head_hidden=(16, 8), twin_critics=True, actor_prev_action=True,
            critic_prev_action=True, **kw))

    plain, agent = make(), make(critic_norm=True)
    for (name, p), q in zip(agent.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not any(isinstance(m, nn.LayerNorm) for m in agent.actor.modules())
    assert not any(isinstance(m, nn.LayerNorm) for m in agent.actor_target.modules())
    for critic in (*agent.critics, *agent.critic_targets):
        assert [type(m) for m in critic.head] == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear,
                                                  nn.LayerNorm, nn.ReLU, nn.Linear]
    critic, h, a = agent.critics[1], torch.randn(4, 7, 16), torch.rand(4, 7, 2) * 2 - 1
    x = torch.cat([h, a], -1)
    for lin in (critic.head[0], critic.head[3]):
        x = torch.relu(torch.nn.functional.layer_norm(lin(x), (lin.out_features,)))
    torch.testing.assert_close(critic.q(h, a), critic.head[6](x).squeeze(-1), rtol=0, atol=1e-6)
    before = [p.clone() for p in agent.critics.parameters()]
    metrics = agent.update(_seq_batch(agent))
    assert math.isfinite(metrics["critic_loss"])
    assert all(not torch.equal(p, q) for p, q in zip(agent.critics.parameters(), before))


def test_head_bias_starts_the_heads_hidden_biases_at_its_value_and_changes_nothing_else():
    default, agent = _seq_agent(final_init=3e-3), _seq_agent(final_init=3e-3, head_bias=0.1)
    hidden = {id(layer.bias) for net in (agent.actor, *agent.critics, agent.actor_target,
                                         *agent.critic_targets)
              for layer in list(net.head)[:-1] if isinstance(layer, nn.Linear)}
    assert len(hidden) == 4  # one hidden layer in each of actor, critic and their targets
    for (name, p), q in zip(agent.named_parameters(), default.parameters(), strict=True):
        if id(p) in hidden:
            assert torch.equal(p, torch.full_like(p, 0.1)), name
        else:  # every other parameter, the last layers' small draws included: as before
            assert torch.equal(p, q), name
    with pytest.raises(ValueError, match=r"--agent.head-bias must be None \(PyTorch's default\) "
                                         r"or a finite number, got nan"):
        DDPGConfig(head_bias=float("nan"))


def test_input_embed_refuses_widths_for_inputs_no_encoder_sees_and_a_mismatched_backbone():
    with pytest.raises(ValueError, match=r"--agent.input-embed 32 8 8: no encoder sees the "
                                         r"previous reward, so its width would not be used"):
        _seq_agent(input_embed=(32, 8, 8))
    with pytest.raises(ValueError, match="previous action or reward"):
        DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=8),
             DDPGConfig(head_hidden=(8,), input_embed=(4, 4, 4)))
    gru = make_backbone("gru", 7, BackboneConfig(d_model=8))
    with pytest.raises(ValueError, match=r"the backbone takes inputs of width 7, but the "
                                         r"embeddings \(4, 2, 1\) with .* give 6"):
        InputEmbed(gru, 3, 2, EncoderInputs(prev_action=True), (4, 2, 1))


def test_input_embed_config_round_trips_through_json():
    cfg = DDPGConfig(input_embed=(32, 8, 8), head_hidden=(16, 16))
    data = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples become lists
    assert DDPGConfig.from_json(data) == cfg
    old = {k: v for k, v in data.items() if k != "input_embed"}  # a record made before it
    assert DDPGConfig.from_json(old).input_embed == ()
    cfg = DDPGConfig(head_obs=True, head_embed=(32, 48), head_bias=0.1)
    data = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert DDPGConfig.from_json(data) == cfg
    old = {k: v for k, v in data.items() if k not in ("head_embed", "head_bias")}
    assert (DDPGConfig.from_json(old).head_embed, DDPGConfig.from_json(old).head_bias) == ((), None)


def test_act_names_the_input_that_does_not_fit():
    """``act``'s inputs are checked against what the agent takes (obs 3 wide, 2 actions, the
    previous action and reward): a wrong width, a missing ``prev_action`` or a NumPy array is
    named with the shape expected, not reported as the concatenated encoder input."""
    torch.manual_seed(0)
    agent = DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=8),
                 DDPGConfig(head_hidden=(8,), actor_prev_action=True, actor_prev_reward=True,
                            critic_prev_action=True, critic_prev_reward=True))
    state = agent.initial_state(2)
    obs, a, r = torch.randn(2, 3), torch.zeros(2, 2), torch.zeros(2)
    assert agent.act(obs, state, a, r)[0].shape == (2, 2)
    cases = [((torch.randn(2, 4), state, a, r), r"obs must be a tensor of shape \(N, 3\), "
                                                r"got \(2, 4\)"),
             ((torch.randn(3), state, a, r), r"obs must be a tensor of shape \(N, 3\), got \(3,\)"),
             ((obs.numpy(), state, a, r), r"obs must be a tensor .* got ndarray"),
             ((obs, state, None, r), r"prev_action must be a tensor of shape \(2, 2\) \(this "
                                     r"agent's encoders take it; zeros at an episode start\), "
                                     r"got NoneType"),
             ((obs, state, a, torch.zeros(2, 1)), r"prev_reward must be a tensor of shape "
                                                  r"\(2,\) .* got \(2, 1\)")]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            agent.act(*args)
    with pytest.raises(ValueError, match=r"prev_action must be a tensor of shape \(2, 2\)"):
        agent.policy("target").act(obs, agent.policy("target").initial_state(2), None, r)
    plain = make_agent()  # takes the observation alone: nothing else is asked for
    assert plain.act(obs, plain.initial_state(2))[0].shape == (2, 2)


@pytest.mark.parametrize(("change", "message"), [
    ({"head_hidden": 256}, "--agent.head-hidden must be a tuple of positive integers, got 256"),
    ({"head_hidden": [64]}, r"--agent.head-hidden must be a tuple of positive integers, "
                            r"got \[64\]"),
    ({"input_embed": [32, 8, 8]}, "--agent.input-embed must be a tuple of positive integers"),
    ({"twin_critics": "yes"}, "--agent.twin-critics must be True or False, got 'yes'"),
    ({"head_obs": 1}, "--agent.head-obs must be True or False, got 1"),
])
def test_a_config_of_the_wrong_kind_from_python_is_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        DDPGConfig(**change)


def test_lr_decay_start_without_a_decay_is_refused_by_name():
    with pytest.raises(ValueError, match=r"--agent.lr-decay-start 500 needs --agent.lr-decay N"):
        DDPGConfig(lr_decay_start=500)


def test_batches_of_the_wrong_shape_are_refused_by_field_name():
    g = torch.Generator().manual_seed(0)
    obs, act = torch.randn(8, 3, generator=g), torch.rand(8, 2, generator=g)
    r, z = torch.randn(8, generator=g), torch.zeros(8)
    good = SequenceBatch.from_transitions(obs, act, r, obs, z, z)
    # a (B, 1) reward or terminated broadcast into a wrong loss, silently
    with pytest.raises(ValueError, match=r"reward must have shape \(B,\) = \(8,\), got \(8, 1\)"):
        SequenceBatch.from_transitions(obs, act, r[:, None], obs, z, z)
    with pytest.raises(ValueError, match=r"terminated must have shape \(B,\) = \(8,\), got "
                                         r"\(8, 1\)"):
        SequenceBatch.from_transitions(obs, act, r, obs, z[:, None], z)
    with pytest.raises(ValueError, match=r"action must have shape \(B, act_dim\) with B = 8, "
                                         r"got \(7, 2\)"):
        SequenceBatch.from_transitions(obs, act[:7], r, obs, z, z)
    with pytest.raises(ValueError, match=r"obs and next_obs must both have shape"):
        SequenceBatch.from_transitions(obs, act, r, obs[:, :2], z, z)
    agent = make_agent()
    agent.update(good)
    for field, bad, message in [
        ("reward", good.reward[..., None], r"batch.reward must have shape \(B, L\) = \(8, 1\)"),
        ("obs", good.obs[:, :1], r"batch.action must have shape \(B, L, act_dim\) = "
                                 r"\(8, 0, 2\) \(B = 8, L = 0\), got \(8, 1, 2\)"),
        ("obs", torch.randn(8, 2, 4), r"batch.obs must have shape \(B, L \+ 1, obs_dim\) = "
                                      r"\(8, 2, 3\)"),
        ("action", torch.rand(8, 1, 3), r"batch.action must have shape \(B, L, act_dim\) = "
                                        r"\(8, 1, 2\)"),
        ("mask", torch.ones(8, 2), r"batch.mask must have shape \(B, L\) = \(8, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            agent.update(good._replace(**{field: bad}))
    assert agent.num_updates == 1  # nothing was stepped


def test_action_bounds_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="action_low and action_high must have one entry per "
                                         "action dimension each, got 2 and 1"):
        DDPG(3, torch.tensor([-1.0, -1.0]), torch.tensor([1.0]), "mlp", BackboneConfig(d_model=8))
