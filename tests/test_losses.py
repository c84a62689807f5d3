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
    margin = float(pre.abs().median())
    half = _agent(pre_tanh_penalty=0.5, pre_tanh_margin=margin)
    excess = (pre.abs() - margin).clamp_min(0).pow(2).mean(-1)
    want = base + 0.5 * (excess * batch.mask).sum() / batch.mask.sum()
    torch.testing.assert_close(actor_loss(half, batch, enc), want)
