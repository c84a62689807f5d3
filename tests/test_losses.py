"""DDPG's loss functions: work done once where it can be shared."""

from __future__ import annotations

import torch
from helpers import seq_buffer, td_target

from agents.ddpg import DDPG, DDPGConfig
from rlkit.backbones import BackboneConfig


def _agent(**kw) -> DDPG:
    torch.manual_seed(0)
    cfg = DDPGConfig(head_hidden=(16,), actor_prev_action=True, critic_prev_action=True,
                     twin_critics=True, **kw)
    return DDPG(3, -torch.ones(2), torch.ones(2), "gru", BackboneConfig(d_model=16), cfg)


def _batch():
    buf = seq_buffer(200, 1, 3, 2, seq_len=5, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for t in range(40):
        buf.add(torch.randn(1, 3, generator=g), torch.rand(1, 2, generator=g),
                torch.randn(1, generator=g), torch.randn(1, 3, generator=g),
                [float(t % 10 == 9)], [0.0])
    return buf.sample(8)


def _count_calls(modules) -> list[int]:
    calls = [0] * len(modules)
    for i, m in enumerate(modules):
        m.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


def test_a_shared_target_encoder_encodes_the_window_once():
    batch = _batch()
    shared = _agent(shared_encoder=True)
    enc = shared.actor_target.encoder
    assert all(c.encoder is enc for c in shared.critic_targets)
    calls = _count_calls([enc])
    y_shared = td_target(shared, batch)
    assert calls == [1]  # actor and both critics read one encoding
    own = _agent()
    calls = _count_calls([own.actor_target.encoder, *(c.encoder for c in own.critic_targets)])
    td_target(own, batch)
    assert calls == [1, 1, 1]
    # the same target as encoding it for each network
    with torch.no_grad():
        x = shared.cfg.actor_inputs(batch.obs, batch.prev_action, batch.prev_reward)
        h = enc(x)[0][:, 1:]
        qs = [c.q(h, shared.actor_target.act_on(h)) for c in shared.critic_targets]
        want = batch.reward + shared.cfg.gamma * (1 - batch.terminated) * torch.minimum(*qs)
    torch.testing.assert_close(y_shared, want)


def test_pre_tanh_penalty_leaves_the_margin_free():
    from helpers import actor_loss, critic_loss

    batch = _batch()
    agents = {m: _agent(pre_tanh_penalty=0.5, pre_tanh_margin=m) for m in (0.0, 1e6)}
    plain = _agent()
    enc = critic_loss(plain, batch, td_target(plain, batch))[2]
    base = actor_loss(plain, batch, enc)
    torch.testing.assert_close(actor_loss(agents[1e6], batch, enc), base)  # all inside
    x = plain.cfg.actor_inputs(batch.obs, batch.prev_action, batch.prev_reward)[:, :-1]
    pre = plain.actor.pre_tanh(plain.actor.encoder(x)[0])
    margin = float(pre.detach().abs().median())
    half = _agent(pre_tanh_penalty=0.5, pre_tanh_margin=margin)
    excess = (pre.abs() - margin).clamp_min(0).pow(2).mean(-1)
    want = base + 0.5 * (excess * batch.mask).sum() / batch.mask.sum()
    torch.testing.assert_close(actor_loss(half, batch, enc), want)


def test_inverting_squash_keeps_the_value_and_lets_a_saturated_action_leave_its_bound():
    import pytest

    actor = _agent().actor  # bounds [-1, 1]
    pre = torch.tensor([[0.0, 0.0], [6.0, 6.0], [-6.0, -6.0]])  # (3, A): centre, +bound, -bound
    grads = {}
    for mode in ("tanh", "inverting"):
        x = pre.clone().requires_grad_(True)
        a = actor.squash(x, mode)
        torch.testing.assert_close(a, actor.squash(pre))  # same action either way
        # the loss asks for a lower first action and a higher second one, in every row
        (a[:, 0] - a[:, 1]).sum().backward()
        grads[mode] = x.grad
    y = torch.tanh(pre)
    torch.testing.assert_close(grads["tanh"][:, 0], 1 - y[:, 0] ** 2)
    # inverting: d/dx = 1 + y * sign(g); moving away from a bound is at (nearly) twice the rate
    torch.testing.assert_close(grads["inverting"][:, 0], 1 + y[:, 0])
    torch.testing.assert_close(grads["inverting"][:, 1], -(1 - y[:, 1]))
    assert grads["tanh"][1:].abs().max() < 1e-4  # saturated: the tanh's gradient is gone
    assert grads["inverting"][1, 0] > 1.99 and grads["inverting"][2, 1] < -1.99  # leave the bound
    assert grads["inverting"][1, 1].abs() < 1e-4 and grads["inverting"][2, 0] < 1e-4  # not beyond
    with pytest.raises(ValueError, match="--agent.squash-grad must be 'tanh' or 'inverting', "
                                         "got 'relu'"):
        DDPGConfig(squash_grad="relu")
    with pytest.raises(ValueError, match="squash grad must be 'tanh' or 'inverting', got 'x'"):
        actor.squash(pre, "x")


def test_inverting_squash_reaches_a_saturated_actor_through_the_actor_loss():
    from helpers import critic_loss

    from agents.losses import actor_loss

    batch = _batch()
    norms = {}
    for mode, bound in [(m, b) for m in ("tanh", "inverting") for b in (8.0, -8.0)]:
        agent = _agent(squash_grad=mode)
        with torch.no_grad():  # saturate the actor: every action at the upper / lower bound
            agent.actor.head[-1].bias.fill_(bound)
        enc = critic_loss(agent, batch, td_target(agent, batch))[2]
        a_state = None if batch.states is None else batch.states.actor
        loss = actor_loss(agent.actor, agent.critics[0], batch, a_state, enc,
                          agent.cfg.actor_inputs, squash_grad=agent.cfg.squash_grad).loss
        agent.actor.zero_grad()
        loss.backward()
        norms[mode, bound] = agent.actor.head[-1].bias.grad.norm()
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in agent.critics[0].parameters())
    # where the critic asks for an action away from the bound, only the inverting gradient moves it
    assert max(norms["tanh", 8.0], norms["tanh", -8.0]) < 1e-4
    assert max(norms["inverting", 8.0], norms["inverting", -8.0]) > 1e-2
