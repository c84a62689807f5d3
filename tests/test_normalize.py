"""Input normalisation (``--agent.input-norm``): the running statistics, what the agent's
encoders see with it, what stays raw, its checkpoint, and which steps fix it in training."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from helpers import seq_buffer

from agents.config import TrainConfig
from agents.ddpg import DDPG, DDPGConfig
from agents.train import resolve
from rlkit.backbones import BackboneConfig
from rlkit.normalize import RunningNorm

LOW, HIGH = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])


def test_running_norm_equals_the_mean_and_variance_of_every_row_shown():
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(n, 3, generator=g) * torch.tensor([1.0, 5.0, 0.1]) + 2.0
            for n in (1, 7, 30)]
    norm = RunningNorm(3)
    for r in rows:
        norm.update(r)
    every = torch.cat(rows).double()
    torch.testing.assert_close(norm.mean, every.mean(0))
    torch.testing.assert_close(norm.var, every.var(0, unbiased=False))
    assert norm.count.item() == 38
    x = torch.randn(4, 5, 3, generator=g) * 3  # (B, T, D): any leading shape
    expected = (x.double() - norm.mean) / (norm.var + 1e-8).sqrt()
    assert expected.abs().max() > 10  # some are clipped
    torch.testing.assert_close(norm(x), expected.float().clamp(-10, 10))
    assert norm(x).dtype == torch.float32


def test_running_norm_is_the_identity_until_shown_and_clips():
    norm = RunningNorm(2, clip=3.0)
    x = torch.tensor([[0.5, -2.0]])
    torch.testing.assert_close(norm(x), x)
    norm.update(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))  # mean 1, std 1
    torch.testing.assert_close(norm(torch.tensor([[1.0, 100.0], [-9.0, 2.0]])),
                               torch.tensor([[0.0, 3.0], [-3.0, 1.0]]), atol=1e-6, rtol=0)


def test_a_feature_constant_in_what_was_shown_is_centred_not_scaled():
    """A sparse reward that stayed 0 over the random-action steps (or any constant feature)
    has no spread to scale by: a later 1 or 0.01 keeps its size instead of hitting the clip.
    A feature that varies, however little, is scaled as usual."""
    norm = RunningNorm(3)
    rows = torch.zeros(1000, 3)
    rows[:, 1] = 5.0
    rows[::2, 2] = 1e-3  # std 5e-4
    norm.update(rows[:600])
    norm.update(rows[600:])
    out = norm(torch.tensor([[1.0, 6.0, 1.5e-3], [0.01, 5.0, 5e-4]]))
    scaled = 1e-3 / (2.5e-7 + 1e-8) ** 0.5  # 1.96: one spread away, eps included
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, scaled], [0.01, 0.0, 0.0]]),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("make, message", [
    (lambda: RunningNorm(0), r"dim must be a positive integer, got 0"),
    (lambda: RunningNorm(True), r"dim must be a positive integer, got True"),
    (lambda: RunningNorm(2, clip=0.0), r"clip and eps must be > 0, got clip=0.0, eps=1e-08"),
    (lambda: RunningNorm(2).update(torch.zeros(3)),
     r"values must have shape \(N, 2\), got \(3,\)"),
    (lambda: RunningNorm(2).update(torch.tensor([[1.0, 2.0], [1.0, float("-inf")]])),
     r"values to normalise by must be finite, got -inf in row 1, feature 1"),
])
def test_running_norm_refuses_bad_values_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def _agents(**kw) -> tuple[DDPG, DDPG]:
    """The same GRU agent (same weights) without and with input_norm, its norms shown data."""
    made = []
    for norm in (False, True):
        torch.manual_seed(0)
        cfg = DDPGConfig(head_hidden=(16,), actor_prev_action=True, critic_prev_action=True,
                         actor_prev_reward=True, critic_prev_reward=True, input_norm=norm, **kw)
        made.append(DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=16), cfg))
    plain, normed = made
    g = torch.Generator().manual_seed(3)
    normed.observe_inputs(torch.randn(50, 3, generator=g) * 4 + 1, torch.randn(50, generator=g) - 6)
    plain.observe_inputs(torch.randn(5, 3, generator=g), torch.randn(5, generator=g))  # nothing
    assert plain.obs_norm is None and plain.checkpoint_state().keys() < \
        normed.checkpoint_state().keys()
    return plain, normed


def _batch():
    buf = seq_buffer(200, 1, 3, 2, seq_len=5, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for t in range(40):
        buf.add(torch.randn(1, 3, generator=g) * 4, torch.rand(1, 2, generator=g),
                torch.randn(1, generator=g) - 6, torch.randn(1, 3, generator=g) * 4,
                [float(t % 10 == 9)], [0.0])
    return buf.sample(8)


def test_the_encoders_see_normalised_observations_and_rewards_when_acting():
    plain, normed = _agents(average_tau=0.1)
    g = torch.Generator().manual_seed(4)
    obs, prev_a, prev_r = torch.randn(6, 3, generator=g) * 4, torch.rand(6, 2, generator=g), \
        torch.randn(6, generator=g) - 6
    n_obs, n_r = normed.normed_inputs(obs, prev_r)
    torch.testing.assert_close(n_obs, ((obs.double() - normed.obs_norm.mean) /
                                       (normed.obs_norm.var + 1e-8).sqrt()).float())
    a_norm, s_norm = normed.act(obs, None, prev_a, prev_r, track_critic=True)
    a_plain, s_plain = plain.act(n_obs, None, prev_a, n_r, track_critic=True)
    torch.testing.assert_close(a_norm, a_plain, atol=0, rtol=0)
    torch.testing.assert_close(s_norm.critics[0][0], s_plain.critics[0][0], atol=0, rtol=0)
    assert not torch.equal(a_norm, plain.act(obs, None, prev_a, prev_r)[0])
    for which in ("target", "average"):  # the copies act on the same inputs
        a_t, _ = normed.policy(which).act(obs, normed.actor_target.encoder.initial_state(6),
                                          prev_a, prev_r)
        p_t, _ = plain.policy(which).act(n_obs, plain.actor_target.encoder.initial_state(6),
                                         prev_a, n_r)
        torch.testing.assert_close(a_t, p_t, atol=0, rtol=0)


def test_an_update_normalises_the_inputs_and_leaves_the_td_targets_rewards_raw():
    """An agent with input_norm trains as the same agent without it on a batch whose
    observations and previous rewards are normalised and whose rewards are not: a norm that
    reached the TD target's rewards (or missed an input) fails this."""
    plain, normed = _agents()
    b = _batch()
    obs, prev_r = normed.normed_inputs(b.obs, b.prev_reward)
    pre = b._replace(obs=obs, prev_reward=prev_r)
    for _ in range(2):
        m_norm, m_plain = normed.update(b), plain.update(pre)
        for k in m_plain:
            torch.testing.assert_close(m_norm[k], m_plain[k], atol=1e-6, rtol=1e-6)
    wrong = plain.update(pre._replace(reward=normed.normed_inputs(b.obs, b.reward)[1]))
    assert not torch.allclose(wrong["critic_loss"], normed.update(b)["critic_loss"])


def test_input_norms_are_saved_and_a_checkpoint_that_disagrees_is_refused_both_ways():
    _, normed = _agents()
    saved = copy.deepcopy(normed.checkpoint_state())
    torch.manual_seed(0)
    fresh = DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=16), normed.cfg)
    fresh.load_checkpoint_state(saved)
    for a, b in ((normed.obs_norm, fresh.obs_norm), (normed.reward_norm, fresh.reward_norm)):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k])
    old = {k: v for k, v in saved.items() if k != "input_norm"}
    with pytest.raises(ValueError, match=r"normalises its encoders' inputs "
                                         r"\(--agent.input-norm\) but the checkpoint has no "
                                         r"input norms"):
        DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=16), normed.cfg
             ).load_checkpoint_state(old)
    plain = DDPG(3, LOW, HIGH, "gru", BackboneConfig(d_model=16),
                 dataclasses.replace(normed.cfg, input_norm=False))
    with pytest.raises(ValueError, match=r"the checkpoint's agent normalises its encoders' "
                                         r"inputs \(--agent.input-norm\) but this agent does not"):
        plain.load_checkpoint_state(saved)


def test_input_norm_without_random_action_steps_is_refused_by_name():
    cfg = TrainConfig()
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, input_norm=True),
                              loop=dataclasses.replace(cfg.loop, learning_starts=0))
    with pytest.raises(ValueError, match=r"^--agent.input-norm takes the scale of the encoders' "
                                         r"inputs from the random-action steps before learning "
                                         r"starts; got --learning-starts 0 \(expected "
                                         r"--learning-starts > 0\)$"):
        resolve(cfg, 200)
    resolve(dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, learning_starts=1)), 200)
