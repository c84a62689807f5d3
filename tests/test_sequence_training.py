"""Memory-based DDPG: sequence updates, acting with carried state, resets, stored states."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import losses_of
from helpers import seq_buffer as SequenceReplayBuffer  # noqa: N812

from agents import train
from agents.ddpg import DDPG, DDPGConfig
from agents.networks import ObsShortcut
from rlkit.backbones import BACKBONE_NAMES, BackboneConfig
from rlkit.config import LoopConfig, replace_fields
from rlkit.noise import OrnsteinUhlenbeckNoise
from rlkit.runlog import RunLogger
from rlkit.trainer import Trainer

TINY = replace_fields(train.TrainConfig(), env="rlkit/Pendulum-V-v0", total_steps=90,
                      learning_starts=60, batch_size=4, seq_len=6, d_model=16, eval_every=0,
                      eval_episodes=1, log_every=30, progress=False, device="cpu",
                      agent=DDPGConfig(head_hidden=(16,)))


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_train_py_end_to_end_every_backbone(tmp_path, backbone):
    cfg = replace_fields(TINY, backbone=backbone, run_dir=str(tmp_path / backbone))
    if backbone == "mlp":
        cfg = replace_fields(cfg, seq_len=6)  # the memoryless control, trained on the same windows
    result = train.main(cfg)
    assert np.isfinite(result["eval_return_mean"])
    assert (tmp_path / backbone / "checkpoint.pt").is_file()


def test_stored_state_mode_with_burn_in_end_to_end(tmp_path):
    cfg = replace_fields(TINY, backbone="gru", state_mode="stored", burn_in=2, num_envs=2,
                         run_dir=str(tmp_path / "r"))
    assert np.isfinite(train.main(cfg)["eval_return_mean"])


def test_critics_sharing_an_encoder_train_end_to_end_with_stored_states(tmp_path):
    agent = DDPGConfig(head_hidden=(16,), twin_critics=True, critics_share_encoder=True)
    cfg = replace_fields(TINY, backbone="gru", state_mode="stored", burn_in=2, num_envs=2,
                         agent=agent, run_dir=str(tmp_path / "r"))
    assert np.isfinite(train.main(cfg)["eval_return_mean"])
    assert '"critics_share_encoder": true' in (tmp_path / "r" / "config.json").read_text()


class ShortEpisodes(gym.Env):
    """Observation = the step count; episodes end after a length drawn per episode."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.n = 0, int(self.np_random.integers(2, 6))
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 0.0, self.t >= self.n, False, {}


class Recorder:
    """Wraps an agent; records the state handed to every ``act`` call."""

    def __init__(self, agent: DDPG) -> None:
        self.agent, self.states = agent, []

    def __getattr__(self, name):
        return getattr(self.agent, name)

    def act(self, obs, state, prev_action=None, prev_reward=None, track_critic=False):
        self.states.append((state, obs.clone(), prev_action.clone()))
        return self.agent.act(obs, state, prev_action, prev_reward, track_critic)


def _loop(tmp_path, stored: bool, total: int = 40):
    torch.manual_seed(0)
    agent = DDPG(1, torch.tensor([-1.0]), torch.tensor([1.0]), "gru", BackboneConfig(8),
                 DDPGConfig(head_hidden=(8,), actor_prev_action=True, critic_prev_action=True))
    rec = Recorder(agent)
    envs = gym.vector.SyncVectorEnv([ShortEpisodes, ShortEpisodes],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    a_state, c_states = agent.initial_state(1)
    shapes = tuple(tuple(tuple(s.shape[1:]) for s in g) for g in (a_state, *c_states))
    buf = SequenceReplayBuffer(1000, 2, 1, 1, 4, state_mode="stored" if stored else "zero",
                               state_shapes=shapes if stored else ())
    noise = OrnsteinUhlenbeckNoise(2, 1, 0.5, np.random.default_rng(0))
    noise_rows = []
    sample = noise.sample

    def sample_and_record():
        noise_rows.append(noise.x.copy())  # the state the step starts from
        return sample()

    noise.sample = sample_and_record
    loop = LoopConfig(total_steps=total, learning_starts=0, eval_every=0, eval_episodes=1,
                      log_every=1000, progress=False)
    trainer = Trainer(rec, envs=envs, eval_env=ShortEpisodes(), buffer=buf, noise=noise,
                      cfg=loop, batch_size=2, logger=RunLogger(tmp_path, {}),
                      rng=np.random.default_rng(0), device=torch.device("cpu"), env_seed=3,
                      eval_seed=0)
    trainer.run()
    return rec, buf, noise_rows


def test_state_and_noise_reset_per_env_on_the_same_done_mask(tmp_path):
    rec, _, noise_rows = _loop(tmp_path, stored=False)
    init = rec.agent.initial_state(2)[0][0]
    steps = rec.states[: 40 // 2]  # training steps only (the final evaluation follows)
    resets = 0
    for k in range(1, len(steps)):
        (a_state, _), obs, prev_a = steps[k]
        (prev_state, _), _, _ = steps[k - 1]
        for i in range(2):
            started = obs[i, 0].item() == 0.0  # observation 0 = a fresh episode
            if started:
                resets += 1
                assert torch.equal(a_state[0][i], init[i])  # recurrent state reset
                assert np.all(noise_rows[k][i] == 0.0)  # noise reset on the same mask
                assert torch.all(prev_a[i] == 0)  # previous action cleared
            else:
                assert not torch.equal(a_state[0][i], init[i])  # carried across steps
    assert resets >= 6  # both envs ended episodes, at different times


def test_stored_states_are_the_ones_recorded_while_acting(tmp_path):
    """The buffer keeps the state recorded before every K-th step (K = seq_len - burn_in = 4
    here) of each stream, for the actor and the critic; that windows started from them train
    on what the agent acted on is tested in test_train_act.py."""
    rec, buf, _ = _loop(tmp_path, stored=True)
    steps = rec.states[: 40 // 2]
    assert buf.state_every == 4
    for t, ((a_state, c_states), _, _) in enumerate(steps):
        if t % 4:
            continue
        for i in range(2):
            assert torch.equal(buf.states[0][i, t // 4], a_state[0][i])  # actor's h
            assert torch.equal(buf.states[1][i, t // 4], c_states[0][0][i])  # critic's h
    assert not torch.equal(buf.states[0][:, 1], buf.states[0][:, 2])  # they differ by chunk


def test_burn_in_and_padding_steps_carry_no_loss():
    torch.manual_seed(0)
    agent = DDPG(2, torch.tensor([-1.0]), torch.tensor([1.0]), "gru", BackboneConfig(8),
                 DDPGConfig(head_hidden=(8,), critic_prev_action=True))
    buf = SequenceReplayBuffer(100, 1, 2, 1, seq_len=6, state_mode="stored", burn_in=2,
                               state_shapes=(((1, 8),), ((1, 8),)),
                               generator=torch.Generator().manual_seed(0))
    for t in range(20):
        buf.add(np.random.randn(1, 2), np.random.rand(1, 1), [1.0], np.random.randn(1, 2),
                [float(t == 19)], [0.0], states=((torch.randn(1, 1, 8),), (torch.randn(1, 1, 8),)))
    b = buf._gather(torch.tensor([0, 0]), torch.tensor([5, 16]))  # mid-episode; near its end
    assert b.mask[0].tolist() == [0, 0, 1, 1, 1, 1] and b.mask[1].tolist() == [0, 0, 1, 1, 0, 0]

    base = losses_of(agent, b)
    # change rewards and actions where mask == 0 (burn-in and padding steps), and the
    # observations of the padding steps after the last one's next observation: the encoders
    # read them there, and the critic loss the rewards and actions
    off = b.mask == 0
    assert b.terminated[1].tolist() == [0, 0, 0, 1, 0, 0]  # row 1: steps 16 to 19, 19 the last
    padding_obs = torch.zeros(b.obs.shape[:2], dtype=torch.bool)
    padding_obs[1, 5:] = True  # after obs[4], the next observation of step 19
    changed = b._replace(reward=torch.where(off, b.reward + 100.0, b.reward),
                         action=torch.where(off[..., None], b.action + 0.5, b.action),
                         obs=torch.where(padding_obs[..., None], b.obs + 100.0, b.obs))
    for x, y in zip(base, losses_of(agent, changed)):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)
    # a change where mask == 1 does move each loss
    trained = torch.cat([~off, torch.zeros_like(off[:, :1])], 1)[..., None]  # (B, L + 1, 1)
    on = b._replace(obs=torch.where(trained, b.obs + 1.0, b.obs))
    assert all(not torch.allclose(x, y) for x, y in zip(base, losses_of(agent, on)))
    # the stored states start both losses: the actor's moves the actor loss and, through the
    # target actor, the critic loss; the critics' move the critic loss
    st = b.states
    actor_moved = b._replace(states=st._replace(actor=tuple(x + 1 for x in st.actor)))
    critic_moved = b._replace(states=st._replace(
        critics=tuple(tuple(x + 1 for x in c) for c in st.critics)))
    assert all(not torch.allclose(x, y) for x, y in zip(base, losses_of(agent, actor_moved)))
    assert not torch.allclose(base[0], losses_of(agent, critic_moved)[0])


def test_sequence_update_reaches_every_encoder_parameter():
    torch.manual_seed(0)
    agent = DDPG(2, torch.tensor([-1.0]), torch.tensor([1.0]), "gru", BackboneConfig(8),
                 DDPGConfig(head_hidden=(8,), actor_prev_action=True, critic_prev_action=True))
    buf = SequenceReplayBuffer(100, 1, 2, 1, seq_len=5, generator=torch.Generator().manual_seed(0))
    for t in range(30):
        buf.add(np.random.randn(1, 2), np.random.rand(1, 1), np.random.randn(1),
                np.random.randn(1, 2), [float(t % 10 == 9)], [0.0])
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    m = agent.update(buf.sample(8))
    after = agent.state_dict()
    for k in before:
        if k.startswith(("actor.", "critics.")) and "scale" not in k and "center" not in k:
            assert not torch.equal(before[k], after[k]), k
    assert all(torch.isfinite(v) for v in m.values())


def test_prev_inputs_need_sequence_training(tmp_path):
    cfg = replace_fields(TINY, env="Pendulum-v1", backbone="mlp", seq_len=1,
                         run_dir=str(tmp_path / "r"), agent=DDPGConfig(actor_prev_action=True))
    with pytest.raises(ValueError, match="previous actions/rewards as inputs need sequence"):
        train.main(cfg)
    assert not (tmp_path / "r").exists()


def test_shared_encoder_end_to_end(tmp_path):
    cfg = replace_fields(TINY, backbone="gru", state_mode="stored", burn_in=2,
                         agent=DDPGConfig(head_hidden=(16,), shared_encoder=True),
                         run_dir=str(tmp_path / "r"))
    assert np.isfinite(train.main(cfg)["eval_return_mean"])


def test_mlp_control_sees_no_previous_action_by_default():
    mlp_cfg, mlp_agent, env = train.build(replace_fields(TINY, backbone="mlp"),
                                          torch.device("cpu"))
    _, gru_agent, _ = train.build(replace_fields(TINY, backbone="gru"), torch.device("cpu"))
    env.close()
    assert mlp_cfg.replay.seq_len == 6
    assert not mlp_agent.cfg.actor_prev_action and not mlp_agent.cfg.critic_prev_action
    assert mlp_agent.actor.encoder.d_in == mlp_agent.obs_dim
    assert gru_agent.cfg.actor_prev_action and gru_agent.cfg.critic_prev_action


def test_head_obs_end_to_end_and_rebuilt_from_the_run(tmp_path):
    run = tmp_path / "r"
    cfg = replace_fields(TINY, backbone="gru", run_dir=str(run),
                         agent=DDPGConfig(head_hidden=(16,), head_obs=True))
    assert np.isfinite(train.main(cfg)["eval_return_mean"])
    agent, record = train.load_agent(run)
    assert record.agent["head_obs"] is True
    assert isinstance(agent.actor.encoder, ObsShortcut)
    assert agent.actor.head[0].in_features == 16 + 1  # Pendulum-V: one observed value
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert any(k.startswith("encoder.backbone.") for k in saved["agent"]["actor"])
