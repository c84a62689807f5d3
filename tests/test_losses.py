"""DDPG's loss functions: work done once where it can be shared."""

from __future__ import annotations

import re

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


def _n_step_by_hand(reward, terminated, truncated, mask, next_q, gamma, n):
    """The n-step target of every step written as the sum it is, one step at a time."""
    b, length = reward.shape
    out = torch.zeros(b, length)
    for i in range(b):
        for t in range(length):
            total, discount, s = 0.0, 1.0, t
            while True:
                total += discount * float(reward[i, s])
                if terminated[i, s]:
                    break  # nothing after a terminal step
                discount *= gamma
                last = s == length - 1 or truncated[i, s] or not mask[i, s + 1]
                if s - t + 1 == n or last:
                    total += discount * float(next_q[i, s])
                    break
                s += 1
            out[i, t] = total
    return out


def test_n_step_targets_sum_rewards_and_stop_at_episode_ends_padding_and_the_window_end():
    from agents.losses import n_step_returns

    g = torch.Generator().manual_seed(0)
    reward = torch.randn(4, 9, generator=g)
    next_q = torch.randn(4, 9, generator=g)
    terminated, truncated, mask = torch.zeros(4, 9), torch.zeros(4, 9), torch.ones(4, 9)
    terminated[0, 4], mask[0, 5:] = 1.0, 0.0  # a terminal step, padding after it
    truncated[1, 6], mask[1, 7:] = 1.0, 0.0  # a time limit, padding after it
    mask[2, 5:] = 0.0  # an episode still running when the window was sampled
    mask[3, :2] = 0.0  # a burn-in prefix; the window ends inside the episode
    for i in range(2):  # padding holds zeros, whatever the target critic makes of them
        reward[i][mask[i] == 0] = 0.0
    args = (reward, terminated, truncated, mask, next_q)
    for n in (1, 2, 3, 5, 20):
        want = _n_step_by_hand(*args, 0.9, n)
        got = n_step_returns(*args, 0.9, n)
        torch.testing.assert_close(got * mask, want * mask)
    # one step is the one-step target; three steps, by hand, in the middle of row 3
    torch.testing.assert_close(n_step_returns(*args, 0.9, 1),
                               reward + 0.9 * (1 - terminated) * next_q)
    want = reward[3, 2] + 0.9 * reward[3, 3] + 0.81 * reward[3, 4] + 0.729 * next_q[3, 4]
    torch.testing.assert_close(n_step_returns(*args, 0.9, 3)[3, 2], want)
    # row 2: step 4 is the last one stored; its target does not read the padded step 5
    poisoned, reward_p = next_q.clone(), reward.clone()
    poisoned[2, 5:], reward_p[2, 5:] = 1e6, 1e6
    y = n_step_returns(reward_p, terminated, truncated, mask, poisoned, 0.9, 5)
    assert float(y[2, :5].abs().max()) < 100


def test_the_agents_n_step_target_is_the_n_step_sum_of_its_one_step_parts():
    batch = _batch()
    one, three = _agent(gamma=0.9), _agent(gamma=0.9, n_step=3)
    three.load_state_dict(one.state_dict())
    y1, y3 = td_target(one, batch), td_target(three, batch)
    next_q = (y1 - batch.reward) / 0.9  # Q' at each next observation (0 after a terminal step)
    want = _n_step_by_hand(batch.reward, batch.terminated, batch.truncated, batch.mask, next_q,
                           0.9, 3)
    torch.testing.assert_close(y3 * batch.mask, want * batch.mask, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(y3 * batch.mask, y1 * batch.mask)


def test_an_n_step_update_under_bf16_autocast_is_finite_and_moves_every_critic_weight():
    from rlkit.precision import PrecisionConfig

    torch.manual_seed(0)
    cfg = DDPGConfig(head_hidden=(16,), actor_prev_action=True, critic_prev_action=True,
                     twin_critics=True, n_step=3)
    agent = DDPG(3, -torch.ones(2), torch.ones(2), "gru", BackboneConfig(d_model=16), cfg,
                 precision=PrecisionConfig("bf16"))
    batch = _batch()
    before = [p.detach().clone() for p in agent.critics.parameters()]
    metrics = agent.update(batch)
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert all(not torch.equal(b, p) for b, p in zip(before, agent.critics.parameters()))


def test_reward_scale_scales_the_rewards_of_the_agents_td_target_and_nothing_else():
    from helpers import critic_loss

    batch = _batch()
    for n_step in (1, 3):
        kw = dict(gamma=0.9, n_step=n_step, actor_prev_reward=True, critic_prev_reward=True)
        one, scaled = _agent(**kw), _agent(**kw, reward_scale=0.1)
        scaled.load_state_dict(one.state_dict())
        # the same bootstrap from the same target networks (which read the previous reward
        # as it was), the rewards a tenth
        y1 = td_target(one, batch)
        scaled_batch = batch._replace(reward=batch.reward * 0.1)
        want = td_target(one, scaled_batch)
        assert not torch.allclose(want * batch.mask, y1 * batch.mask)
        torch.testing.assert_close(td_target(scaled, batch), want)
        # the agent's own critic loss is taken against that target
        got = scaled._critic_losses(batch)[0]
        torch.testing.assert_close(got, critic_loss(scaled, batch, want)[0])


def test_prediction_loss_is_the_masked_error_of_the_next_observation_and_the_reward():
    from agents.losses import prediction_loss

    batch = _batch()
    assert (batch.mask == 0).any()  # windows that cross an episode's end are padded
    agent = _agent(predict_weight=0.5)
    critic = agent.critics[0]
    x = agent.cfg.critic_inputs(batch.obs, batch.prev_action, batch.prev_reward)[:, :-1]
    h = critic.encoder(x)[0]  # (B, L, H)
    pred = critic.predictor(torch.cat([h, batch.action], -1))  # (B, L, obs_dim + 1)
    assert pred.shape[-1] == 3 + 1
    want = torch.cat([batch.obs[:, 1:], batch.reward[..., None]], -1)
    err = (pred - want).pow(2).mean(-1)
    expected = (err * batch.mask).sum() / batch.mask.sum()
    got = prediction_loss(critic.predictor, h, batch)
    torch.testing.assert_close(got, expected)
    # a padded step's targets carry no loss; a loss-carrying step's do
    pad = batch.mask == 0
    next_obs = batch.obs[:, 1:] + 100 * pad[..., None]
    moved = batch._replace(obs=torch.cat([batch.obs[:, :1], next_obs], 1),
                           reward=batch.reward + 100 * pad)
    torch.testing.assert_close(prediction_loss(critic.predictor, h, moved), got)
    moved = batch._replace(reward=batch.reward + 100 * (~pad))
    assert prediction_loss(critic.predictor, h, moved) > got + 1000


def test_each_prediction_loss_trains_its_own_encoder_and_predictor_and_is_added_once():
    from helpers import losses_of

    from agents.losses import prediction_loss

    batch = _batch()
    plain, agent = _agent(), _agent(predict_weight=0.5)
    assert not any("predictor" in k for k in plain.state_dict())  # off: no predictor at all
    missing = agent.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".predictor." in k for k in missing)  # the rest is plain's
    closs, aloss = losses_of(agent, batch)
    plain_closs, plain_aloss = losses_of(plain, batch)

    def aux(net, inputs):
        x = inputs(batch.obs, batch.prev_action, batch.prev_reward)[:, :-1]
        return prediction_loss(net.predictor, net.encoder(x)[0], batch)

    critic_aux = [aux(c, agent.cfg.critic_inputs) for c in agent.critics]  # twin critics
    torch.testing.assert_close(closs, plain_closs + 0.5 * sum(critic_aux))
    torch.testing.assert_close(aloss, plain_aloss + 0.5 * aux(agent.actor, agent.cfg.actor_inputs))

    def grads(loss, net):
        params = list(net.parameters())
        return [g for g in torch.autograd.grad(loss, params, retain_graph=True,
                                               allow_unused=True) if g is not None]

    actor_pred, critic_pred = agent.actor.predictor, agent.critics[0].predictor
    assert not any(g.any() for g in grads(closs, actor_pred))
    assert all(g.abs().sum() > 0 for g in grads(closs, critic_pred))
    assert not any(g.any() for g in grads(aloss, critic_pred))
    assert all(g.abs().sum() > 0 for g in grads(aloss, actor_pred))
    # the prediction loss reaches the encoder under it
    enc = list(agent.critics[0].encoder.parameters())
    with_aux = torch.autograd.grad(closs, enc, retain_graph=True)
    without = torch.autograd.grad(closs - 0.5 * critic_aux[0], enc, retain_graph=True)
    assert any(not torch.allclose(a, b) for a, b in zip(with_aux, without))
    # the update logs critic 0's and the actor's, unweighted
    metrics = agent.update(batch)
    torch.testing.assert_close(metrics["predict_loss"], critic_aux[0].detach())
    assert "actor_predict_loss" in metrics and "predict_loss" not in plain.update(batch)


def test_an_actor_on_a_shared_encoder_it_does_not_train_has_no_predictor():
    shared = _agent(predict_weight=0.5, shared_encoder=True)
    assert shared.actor.predictor is None and shared.critics[0].predictor is not None
    trained = _agent(predict_weight=0.5, shared_encoder=True, shared_encoder_actor_grad=True)
    assert trained.actor.predictor is not None
    metrics = shared.update(_batch())
    assert "predict_loss" in metrics and "actor_predict_loss" not in metrics


def test_a_prediction_weight_below_zero_or_not_finite_is_refused():
    import pytest

    from agents.ddpg import DDPGConfig

    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=re.escape(
                f"--agent.predict-weight must be a finite number >= 0, got {bad!r}")):
            DDPGConfig(predict_weight=bad)
