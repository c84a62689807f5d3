"""Train == act: for a recorded episode stream (two envs, episodes of several lengths, resets),
the actions the agent computes while acting step by step equal the actions its training path
computes for the same steps, for every backbone and every training mode that promises it; the
mode that cannot (zero-start windows from any step) is shown to differ and is named by a
warning."""

from __future__ import annotations

import dataclasses
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.ddpg import DDPG, DDPGConfig
from rlkit.backbones import BACKBONE_NAMES, backbone_config
from rlkit.buffers import SequenceReplayBuffer
from rlkit.buffers.sequences import gather_windows
from rlkit.config import LoopConfig, ModelConfig, ReplayConfig
from rlkit.noise import GaussianNoise
from rlkit.runlog import RunLogger
from rlkit.trainer import Trainer

MEMORY = [b for b in BACKBONE_NAMES if b != "mlp"]
STEPS = 60  # vector steps of 2 envs: about 8 episodes of 5 to 11 steps each
CONTEXT = 4  # the transformer's window, shorter than most episodes


class Episodes(gym.Env):
    """Random observations; episodes of 5 to 11 steps; some end terminated, some truncated."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.n = 0, int(self.np_random.integers(5, 12))
        return self.np_random.normal(size=3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.normal(size=3).astype(np.float32)
        end = self.t >= self.n
        return obs, float(self.np_random.normal()), end and self.n % 2 == 0, \
            end and self.n % 2 == 1, {}


class Recorder:
    """The agent, recording the deterministic action of every ``act`` call; its updates change
    nothing (the parameters stay fixed)."""

    def __init__(self, agent: DDPG) -> None:
        self.agent, self.actions = agent, []

    def update(self, batch):
        return {"critic_loss": torch.zeros(())}

    def __getattr__(self, name):
        return getattr(self.agent, name)

    def act(self, obs, state, prev_action=None, prev_reward=None, track_critic=False):
        action, state = self.agent.act(obs, state, prev_action, prev_reward, track_critic)
        self.actions.append(action.clone())
        return action, state


def acted(backbone: str, replay: ReplayConfig, tmp_path, head_obs: bool = False,
          input_norm: bool = False, learning_starts: int = 10**6
          ) -> tuple[DDPG, SequenceReplayBuffer, torch.Tensor]:
    """Run the training loop without updates (the parameters stay fixed); returns the agent,
    the filled buffer and the acted actions ``(2, STEPS, 2)`` by env and stream index."""
    torch.manual_seed(0)
    cfg = DDPGConfig(head_hidden=(16,), actor_prev_action=True, critic_prev_action=True,
                     actor_prev_reward=True, critic_prev_reward=True, head_obs=head_obs,
                     input_norm=input_norm)
    bcfg = backbone_config(backbone, 16, 2, context=CONTEXT)
    agent = DDPG(3, -2 * torch.ones(2), 2 * torch.ones(2), backbone, bcfg, cfg)
    rec = Recorder(agent)
    envs = gym.vector.SyncVectorEnv([Episodes, Episodes],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    buffer = SequenceReplayBuffer(replay, num_envs=2, obs_dim=3, action_dim=2,
                                  generator=torch.Generator().manual_seed(0),
                                  state_example=agent.initial_state(1))
    loop = LoopConfig(total_steps=2 * STEPS, learning_starts=learning_starts, eval_every=0,
                      eval_episodes=1, log_every=10**6, progress=False)
    trainer = Trainer(rec, envs=envs, eval_env=Episodes(), buffer=buffer,
                      noise=GaussianNoise(2, 2, 0.1, np.random.default_rng(0)), cfg=loop,
                      batch_size=4, logger=RunLogger(tmp_path, {}),
                      rng=np.random.default_rng(0), device=torch.device("cpu"), env_seed=0,
                      eval_seed=0)
    trainer.run()
    actions = torch.stack(rec.actions[:STEPS], dim=1)  # (2, STEPS, 2): training steps only
    return agent, buffer, actions


@torch.no_grad()
def trained_on(agent: DDPG, buffer: SequenceReplayBuffer, env: int, start: int
               ) -> tuple[torch.Tensor, int]:
    """The training path's actions ``(L, 2)`` for the window of stream ``env`` from
    ``start`` (what the actor loss differentiates), and how many of its steps lie in the
    episode."""
    b = buffer._gather(torch.tensor([env]), torch.tensor([start]))
    obs, prev_reward = agent.normed_inputs(b.obs, b.prev_reward)  # as DDPG.update does
    x = agent.cfg.actor_inputs(obs, b.prev_action, prev_reward)[:, :-1]
    state = None if b.states is None else b.states.actor
    actions, _ = agent.actor(x, state)  # (1, L, 2)
    return actions[0], _valid(buffer, env, start)


def _valid(buffer: SequenceReplayBuffer, env: int, start: int) -> int:
    """Steps of the window from ``start`` inside its episode."""
    ep = buffer.episode_start[env, start]
    n = 0
    for t in range(start, min(start + buffer.seq_len, buffer.count)):
        if buffer.episode_start[env, t] != ep:
            break
        n += 1
        if buffer.terminated[env, t] or buffer.truncated[env, t]:
            break
    return n


def episode_starts(buffer: SequenceReplayBuffer, env: int) -> list[int]:
    return [t for t in range(buffer.count) if int(buffer.episode_start[env, t]) == t]


def stored_starts(buffer: SequenceReplayBuffer, env: int) -> list[int]:
    """Where stored-state windows start: every ``state_every``-th step (a state is kept
    there) and every episode start."""
    return sorted(set(range(0, STEPS - 1, buffer.state_every)) | set(episode_starts(buffer, env)))


def compare(agent, buffer, actions, starts_of) -> int:
    """Assert train == act on every valid step of the windows from ``starts_of(env)``;
    returns the number of steps compared."""
    compared = 0
    for env in range(2):
        for start in starts_of(env):
            out, n = trained_on(agent, buffer, env, start)
            torch.testing.assert_close(out[:n], actions[env, start:start + n], atol=2e-5,
                                       rtol=0, msg=f"env {env}, window from step {start}")
            compared += n
    return compared


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_whole_episode_windows_train_on_what_the_agent_acts_on(backbone, tmp_path):
    replay = ReplayConfig(buffer_size=1000, seq_len=12, window_start="episode")
    agent, buffer, actions = acted(backbone, replay, tmp_path)
    assert replay.act_gap(True, 11) is None
    assert compare(agent, buffer, actions, lambda env: episode_starts(buffer, env)) \
        >= 2 * STEPS - 12  # every step of every finished episode


@pytest.mark.parametrize("backbone", MEMORY)
def test_stored_state_windows_train_on_what_the_agent_acts_on(backbone, tmp_path):
    """Windows from any step, started from the state stored while acting (and the stored
    critic states too), give the acted actions at every step, burn-in included."""
    replay = ReplayConfig(buffer_size=1000, seq_len=6, state_mode="stored", burn_in=2,
                          window_start="any")
    agent, buffer, actions = acted(backbone, replay, tmp_path)
    assert replay.act_gap(True, 11) is None
    assert compare(agent, buffer, actions, lambda env: stored_starts(buffer, env)) > 60


@pytest.mark.parametrize("backbone", ["gru", "mamba2"])
def test_heads_that_see_the_observation_train_on_what_the_agent_acts_on(backbone, tmp_path):
    """``--agent.head-obs``: the same invariant, whole episodes and stored states."""
    whole = ReplayConfig(buffer_size=1000, seq_len=12, window_start="episode")
    agent, buffer, actions = acted(backbone, whole, tmp_path / "whole", head_obs=True)
    assert agent.actor.head[0].in_features == 16 + 3
    assert compare(agent, buffer, actions, lambda env: episode_starts(buffer, env)) \
        >= 2 * STEPS - 12
    stored = ReplayConfig(buffer_size=1000, seq_len=6, state_mode="stored", burn_in=2,
                          window_start="any")
    agent, buffer, actions = acted(backbone, stored, tmp_path / "stored", head_obs=True)
    assert compare(agent, buffer, actions, lambda env: stored_starts(buffer, env)) > 60


@pytest.mark.parametrize("backbone", ["gru", "transformer"])
def test_normalised_inputs_train_on_what_the_agent_acts_on_once_learning_starts(backbone,
                                                                                  tmp_path):
    """``--agent.input-norm``: the norms are shown the steps before learning starts and fixed
    after; windows acted after that train on what was acted (whole episodes and stored
    states), and windows acted while the statistics still moved do not (what keeping them
    moving would do to every window)."""
    first = 10  # vector steps of random actions (learning_starts counts env steps: 2 a step)
    whole = ReplayConfig(buffer_size=1000, seq_len=12, window_start="episode")
    agent, buffer, actions = acted(backbone, whole, tmp_path / "whole", input_norm=True,
                                   learning_starts=2 * first)
    assert agent.obs_norm.count.item() == pytest.approx(2 * first, abs=1e-3)
    shown = buffer.obs[:, :first].reshape(-1, 3).double()  # (20, 3)
    torch.testing.assert_close(agent.obs_norm.mean, shown.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(agent.reward_norm.mean, buffer.reward[:, :first].double().mean()
                               [None], atol=1e-4, rtol=0)
    assert compare(agent, buffer, actions, lambda env: [
        t for t in episode_starts(buffer, env) if t >= first]) >= 2 * (STEPS - first) - 24
    early = [(env, t) for env in range(2) for t in episode_starts(buffer, env) if t < first]
    assert early and all(not torch.allclose(
        trained_on(agent, buffer, env, t)[0][:2], actions[env, t:t + 2], atol=2e-5, rtol=0)
        for env, t in early)
    if backbone == "transformer":
        return
    stored = ReplayConfig(buffer_size=1000, seq_len=6, state_mode="stored", burn_in=2,
                          window_start="any")
    agent, buffer, actions = acted(backbone, stored, tmp_path / "stored", input_norm=True,
                                   learning_starts=2 * first)
    assert compare(agent, buffer, actions, lambda env: [
        t for t in stored_starts(buffer, env) if t >= first]) > 40


@pytest.mark.parametrize("backbone", MEMORY)
def test_zero_start_windows_inside_episodes_do_not_and_are_named(backbone, tmp_path):
    """The mode that cannot promise it: a zero state in the middle of an episode."""
    replay = ReplayConfig(buffer_size=1000, seq_len=6, window_start="any")
    agent, buffer, actions = acted(backbone, replay, tmp_path)
    mid = [(env, s) for env in range(2) for s in range(1, STEPS - 6)
           if int(buffer.episode_start[env, s]) < s][:6]
    differ = []
    for env, start in mid:
        out, n = trained_on(agent, buffer, env, start)
        differ.append((out[:n] - actions[env, start:start + n]).abs().max().item())
    assert max(differ) > 1e-3
    gap = replay.resolved(True, 11).act_gap(True, 11)
    assert gap is not None and "acts on histories it never trained on" in gap
    # a Transformer at --context 1 sees no step back: no history to miss (its short reach
    # is warned about on its own); at --context 2 the gap is there
    assert replay.resolved(True, 11).act_gap(True, 11, reach=0) is None
    assert "sees 1 step back" in replay.resolved(True, 11).act_gap(True, 11, reach=1)


def test_whole_episodes_are_the_default_for_memory_backbones_when_they_fit():
    r = ReplayConfig().resolved(memory=True, episode_steps=200)
    assert (r.window_start, r.seq_len, r.batch_size) == ("episode", 200, 32)
    assert r.act_gap(True, 200) is None
    long = ReplayConfig().resolved(memory=True, episode_steps=1000)  # beyond --max-window
    assert (long.window_start, long.seq_len, long.state_mode, long.burn_in) == \
        ("any", 80, "stored", 16)  # 64 trained steps after a burn-in of 16 (R2D2)
    assert long.act_gap(True, 1000) is None
    zero = ReplayConfig(state_mode="zero").resolved(memory=True, episode_steps=1000)
    assert (zero.window_start, zero.seq_len, zero.burn_in) == ("any", 64, 0)
    assert "never trained on" in zero.act_gap(True, 1000)
    asked = ReplayConfig(window_start="any").resolved(memory=True, episode_steps=1000)
    assert (asked.state_mode, asked.seq_len) == ("zero", 64)  # windows chosen: no default
    mlp = ReplayConfig().resolved(memory=False, episode_steps=200)
    assert (mlp.seq_len, mlp.batch_size) == (1, 256) and mlp.act_gap(False, 200) is None
    cut = ReplayConfig(seq_len=50, window_start="episode").resolved(True, 200)
    assert "first 50 steps of each episode" in cut.act_gap(True, 200)


def test_the_transformer_replays_its_reach_by_default_when_episodes_do_not_fit():
    """Windows shorter than the episodes: the Transformer (reach R = 63 at the defaults) gets
    prefix windows of R + 64 steps, which train on what it acts on (the other memory families
    stored states); an explicit ``--state-mode zero`` or a window too short for the prefix is
    kept, and named."""
    from agents.train import TrainConfig, resolve
    from rlkit.config import replace_fields

    r = resolve(replace_fields(TrainConfig(), backbone="transformer"), 1000).replay
    assert (r.state_mode, r.burn_in, r.seq_len, r.window_start) == ("prefix", 63, 127, "any")
    assert r.act_gap(True, 1000, reach=63) is None
    whole = resolve(replace_fields(TrainConfig(), backbone="transformer"), 200).replay
    assert (whole.state_mode, whole.burn_in, whole.window_start) == ("zero", 0, "episode")
    for change in ({"state_mode": "zero"}, {"seq_len": 40}):
        kept = resolve(replace_fields(TrainConfig(), backbone="transformer", **change), 1000)
        assert (kept.replay.state_mode, kept.replay.burn_in) == ("zero", 0)
        assert "--state-mode prefix --burn-in 63" in kept.replay.act_gap(True, 1000, reach=63)
    gru = resolve(replace_fields(TrainConfig(), backbone="gru"), 1000).replay
    assert (gru.state_mode, gru.burn_in, gru.seq_len) == ("stored", 16, 80)


def test_the_flags_of_a_default_window_give_that_window():
    """``--state-mode stored --burn-in 16`` (the GRU's default beyond --max-window) and
    ``--state-mode prefix --burn-in 63`` (the Transformer's, as its refusal advises) resolve
    to the default windows: 64 trained steps after the burn-in, not 64 steps in all (which
    left the Transformer one trained step a window). A given --seq-len is kept; on episodes
    shorter than 64 steps a default window trains the episode's length."""
    from agents.train import TrainConfig, resolve
    from rlkit.config import replace_fields

    for backbone, mode, burn in (("gru", "stored", 16), ("transformer", "prefix", 63)):
        default = resolve(replace_fields(TrainConfig(), backbone=backbone), 1000).replay
        asked = resolve(replace_fields(TrainConfig(), backbone=backbone, state_mode=mode,
                                       burn_in=burn), 1000).replay
        assert asked == default and asked.seq_len - asked.burn_in == 64
    kept = resolve(replace_fields(TrainConfig(), backbone="gru", state_mode="stored",
                                  burn_in=16, seq_len=48), 1000).replay
    assert (kept.seq_len, kept.burn_in) == (48, 16)
    short = ReplayConfig(state_mode="stored", burn_in=8).resolved(memory=True, episode_steps=50)
    assert (short.seq_len, short.burn_in) == (58, 8)
    short.check_resolved(50)
    zero = ReplayConfig(window_start="any").resolved(memory=True, episode_steps=50)
    assert zero.seq_len == 50


def test_a_burn_in_given_alone_takes_the_default_mode_where_episodes_do_not_fit():
    """``--burn-in 32`` without ``--state-mode`` on 1,000-step episodes: the GRU refreshes a
    stored state over it and the Transformer replays it (their default modes there), before
    64 trained steps; on episodes that fit, whole episodes start from the initial state and a
    burn-in still needs a mode."""
    from agents.train import TrainConfig, resolve
    from rlkit.config import replace_fields

    for backbone, mode in (("gru", "stored"), ("transformer", "prefix")):
        r = resolve(replace_fields(TrainConfig(), backbone=backbone, burn_in=32), 1000).replay
        assert (r.state_mode, r.burn_in, r.seq_len, r.window_start) == (mode, 32, 96, "any")
    with pytest.raises(ValueError, match="--burn-in 32 needs --state-mode stored or prefix"):
        resolve(replace_fields(TrainConfig(), backbone="gru", burn_in=32), 200)




def test_the_default_burn_in_of_stored_windows_fits_short_episodes():
    """Episodes of at most 16 steps that are longer than --max-window: the default burn-in of
    16 was taken as it is, and the config the package made was refused ("--burn-in 16 is as
    long as the task's episodes") though no --burn-in was given. It is now at most one step
    less than an episode, as the Transformer's replayed reach already was."""
    from agents.train import TrainConfig, resolve
    from rlkit.config import replace_fields

    gru = replace_fields(TrainConfig(), backbone="gru", max_window=4)
    for steps, burn in ((8, 7), (16, 15), (17, 16), (1000, 16)):
        r = resolve(gru, steps).replay
        assert (r.state_mode, r.burn_in, r.seq_len) == ("stored", burn, burn + min(64, steps))
    with pytest.raises(ValueError, match=r"--burn-in 8 is as long as the task's episodes"):
        resolve(replace_fields(gru, burn_in=8), 8)  # given: refused as before
    # a --seq-len up to the default of 16 still trains zero-start windows of all its steps
    # (the cap decided the mode in a first version: stored, 15 steps of burn-in, 1 trained)
    r = resolve(replace_fields(gru, seq_len=16), 16).replay
    assert (r.state_mode, r.burn_in, r.seq_len) == ("zero", 0, 16)

def test_a_window_no_longer_than_the_default_burn_in_says_why_it_starts_from_zero():
    """``--seq-len`` at or below the default burn-in (16 stored, the Transformer's reach
    replayed) leaves no trained step after it, so the windows start from the initial state: the
    ``train != act`` warning says so (it read as if zero-start windows had been asked for),
    and a longer window or a shorter --burn-in keeps the default start."""
    import warnings

    from agents.train import TrainConfig, build, resolve
    from rlkit.config import replace_fields

    def warned(cfg):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build(replace_fields(cfg, total_steps=10, d_model=8), torch.device("cpu"))[2].close()
        return [str(w.message) for w in caught if str(w.message).startswith("train != act")]

    cheetah = replace_fields(TrainConfig(), env="rlkit/HalfCheetah-V-v0", backbone="gru")
    r = resolve(replace_fields(cheetah, seq_len=16), 1000).replay
    assert (r.state_mode, r.burn_in) == ("zero", 0)
    said = warned(replace_fields(cheetah, seq_len=16))
    assert len(said) == 1 and said[0].endswith(
        "(--seq-len 16 leaves no step to train after the default burn-in of 16 (--state-mode "
        "stored), so its windows start from the initial state instead; a --seq-len above 16, "
        "or a --burn-in below 16, keeps the stored start)"), said
    assert warned(replace_fields(cheetah, seq_len=17)) == []  # stored, burn-in 16
    assert warned(replace_fields(cheetah, seq_len=16, burn_in=8)) == []
    said = warned(replace_fields(cheetah, seq_len=16, state_mode="zero"))  # asked for: no why
    assert len(said) == 1 and "default burn-in" not in said[0]
    r = replace_fields(cheetah, backbone="transformer", seq_len=40).replay
    assert "burn-in of 63 (--state-mode prefix)" in r.dropped_start(True, 1000, reach=63)
    pendulum = replace_fields(TrainConfig(), backbone="gru", seq_len=200).replay
    assert pendulum.dropped_start(True, 200) is None  # whole episodes: no burn-in to drop

def test_replay_flags_a_run_does_not_use_are_named():
    """--state-every outside stored mode, a stored mode for an encoder that carries no state,
    and --episode-sampling on windows from any step are recorded but change nothing: named
    in the ``unused flags`` warning, as the family-specific flags are."""
    from agents.train import TrainConfig, build, resolve
    from rlkit.config import replace_fields

    gru = replace_fields(TrainConfig(), backbone="gru")
    assert resolve(gru, 1000).replay.unused_flags(True) is None
    every = resolve(replace_fields(gru, state_mode="zero", state_every=10), 1000).replay
    assert every.unused_flags(True) == ("--state-every 10 is for --state-mode stored; this "
                                        "run's is zero")
    assert resolve(replace_fields(gru, state_every=10), 1000).replay.unused_flags(True) is None
    sampling = resolve(replace_fields(gru, episode_sampling="steps"), 1000).replay
    assert sampling.unused_flags(True) == ("--episode-sampling steps is for --window-start "
                                           "episode; this run's windows start at any step")
    assert resolve(replace_fields(gru, episode_sampling="steps"),
                   200).replay.unused_flags(True) is None  # whole episodes: used
    mlp = resolve(replace_fields(TrainConfig(), state_mode="stored"), 200).replay
    assert mlp.unused_flags(False) == ("--state-mode stored starts windows from the state "
                                       "carried while acting; this encoder carries none")
    cfg = replace_fields(TrainConfig(), env="rlkit/Pendulum-V-v0", backbone="gru", d_model=8,
                         window_start="any", seq_len=8, episode_sampling="steps",
                         total_steps=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(cfg, torch.device("cpu"))[2].close()
    assert [str(w.message) for w in caught if str(w.message).startswith("unused")] == [
        "unused flags: --episode-sampling steps is for --window-start episode; this run's "
        "windows start at any step"]


def test_a_buffer_smaller_than_a_window_is_refused_by_its_flags():
    """Against the window the run trains on (its task's episode length known): a 50-step
    buffer holds the memory corridor's 21-step episodes, not 80-step windows."""
    from agents.train import TrainConfig, build, check_buffer_holds_a_window, resolve
    from rlkit.config import replace_fields

    cfg = replace_fields(TrainConfig(), backbone="gru", buffer_size=150, num_envs=2)
    with pytest.raises(ValueError, match=r"^--buffer-size 150 holds 75 steps per environment "
                                         r"\(--num-envs 2\), fewer than a window \(--seq-len "
                                         r"80\): expected --buffer-size at least 160$"):
        check_buffer_holds_a_window(resolve(cfg, 1000))
    check_buffer_holds_a_window(resolve(replace_fields(cfg, buffer_size=160), 1000))
    corridor = replace_fields(TrainConfig(), env="rlkit/MemoryCorridor-L20-v0", backbone="gru",
                              buffer_size=50, d_model=8)
    built, _, env = build(corridor, torch.device("cpu"))
    env.close()
    assert built.replay.seq_len == 21
    with pytest.raises(ValueError, match=r"^--buffer-size 20 holds 20 steps per environment "
                                         r"\(--num-envs 1\), fewer than a window \(--seq-len "
                                         r"21\)"):
        build(replace_fields(corridor, buffer_size=20, batch_size=8), torch.device("cpu"))


def test_windows_that_reach_past_every_episode_are_refused_and_a_long_reach_is_capped():
    """A window trains at most an episode's steps, and a burn-in is shorter than an episode
    (the rest would be padding: windows of 100,000 steps on 200-step episodes crawled): both
    refused, naming the longest that fits; the limit itself is accepted. A Transformer context
    above the episodes plus one is named (every step attends over its whole cache). A
    Transformer whose reach is longer than the episodes replays at most ``episode_steps - 1``
    steps before its windows (no step sees further back), and that prefix is still exact."""
    from agents.train import TrainConfig, resolve
    from rlkit.config import replace_fields

    gru = replace_fields(TrainConfig(), backbone="gru", d_model=8)
    with pytest.raises(ValueError, match=r"--seq-len 100000 trains 100000 steps a window, more "
                                         r"than the task's episodes hold \(at most 200 steps\): "
                                         r"the rest of every window would be padding; expected "
                                         r"--seq-len at most 200"):
        resolve(replace_fields(gru, seq_len=100000), 200)
    stored = replace_fields(gru, window_start="any", state_mode="stored", burn_in=16)
    with pytest.raises(ValueError, match=r"--seq-len 300 trains 284 steps a window after a "
                                         r"burn-in of 16, .* expected --seq-len at most 216"):
        resolve(replace_fields(stored, seq_len=300), 200)
    with pytest.raises(ValueError, match=r"--burn-in 200 is as long as the task's episodes "
                                         r"\(at most 200 steps\).* expected --burn-in at most 199"):
        resolve(replace_fields(stored, burn_in=200, seq_len=210), 200)
    assert resolve(replace_fields(gru, seq_len=200), 200).replay.seq_len == 200
    assert resolve(replace_fields(stored, seq_len=216), 200).replay.seq_len == 216
    assert resolve(replace_fields(gru, seq_len=100000), None).replay.seq_len == 100000

    tf = replace_fields(TrainConfig(), backbone="transformer", context=100000,
                        max_window=64)  # the pendulum-pomdp recipe's windows
    assert tf.model.empty_cache(200) == (
        "--context 100000 keeps a cache of 99999 steps, but the task's episodes last at most "
        "200 steps: every step attends over the empty slots too. --context 201 sees as much, "
        "for less (its 200 cached steps reach an episode's first from the observation after its "
        "last, which the critic's target reads; --context 200 lets every step acted on see its "
        "whole episode)")
    assert replace_fields(tf, context=201).model.empty_cache(200) is None
    assert tf.model.empty_cache(None) is None
    assert ModelConfig(backbone="gru").empty_cache(2) is None
    deep = replace_fields(tf, context=201, n_layers=2)  # reach 400, past any episode start
    r = resolve(deep, 200).replay
    assert (r.state_mode, r.burn_in, r.seq_len) == ("prefix", 199, 263)
    assert r.act_gap(True, 200, reach=deep.model.reach_in(200)) is None
    assert deep.model.reach_in(200) == 199 and deep.model.reach_in(None) == 400
    assert resolve(replace_fields(tf, context=64), 200).replay.burn_in == 63  # unchanged
    from agents.train import build

    with pytest.warns(UserWarning, match=r"long context: --context 300 keeps a cache of 299 "):
        build(replace_fields(tf, context=300, d_model=8, env="rlkit/Pendulum-V-v0"),
              torch.device("cpu"))


def test_a_refused_window_warns_nothing_first():
    """``build`` refuses a window before it warns about training on other histories than
    the agent acts on: no warning for a config that does not run."""
    from agents.train import TrainConfig, build
    from rlkit.config import replace_fields

    cfg = replace_fields(TrainConfig(), env="rlkit/Pendulum-V-v0", backbone="gru", d_model=8,
                         burn_in=100, seq_len=50, state_mode="stored")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"--burn-in must be in \[0, seq_len=50\), got 100"):
            build(cfg, torch.device("cpu"))
    assert [str(w.message) for w in caught] == []


def test_stored_transformer_states_without_a_full_burn_in_are_refused():
    """The Transformer's stored keys and values (online network, acting time) reach trained
    steps for n_layers * (context - 1) steps; a shorter burn-in is refused, naming that length
    and prefix mode."""
    from agents.train import TrainConfig, resolve, stale_stored_state
    from rlkit.config import replace_fields

    cfg = replace_fields(TrainConfig(), backbone="transformer", context=8, n_layers=2,
                         state_mode="stored", burn_in=4, seq_len=20)
    msg = stale_stored_state(cfg)
    assert msg is not None and "--state-mode prefix --burn-in 14" in msg
    with pytest.raises(ValueError, match="--state-mode stored --burn-in 4: the Transformer"):
        resolve(cfg, 200)
    assert stale_stored_state(replace_fields(cfg, burn_in=14)) is None
    assert stale_stored_state(replace_fields(cfg, backbone="gru")) is None
    assert stale_stored_state(replace_fields(cfg, state_mode="prefix")) is None
    resolve(replace_fields(cfg, state_mode="prefix", burn_in=14), 200)


def prefix_compare(agent, buffer, actions, burn_in: int) -> tuple[float, int]:
    """Largest |train - act| over every trained step of the prefix windows of every stored
    step (a window from the initial state ``burn_in`` steps earlier, or from the episode
    start), and how many steps were compared."""
    worst, compared = 0.0, 0
    for env in range(2):
        for s in range(STEPS):
            begin = max(s - burn_in, int(buffer.episode_start[env, s]))
            b = gather_windows(buffer, torch.tensor([env]), torch.tensor([begin]),
                               trained_from=torch.tensor([s]))
            assert torch.all(b.mask[0, : s - begin] == 0) and b.mask[0, s - begin] == 1
            x = agent.cfg.actor_inputs(b.obs, b.prev_action, b.prev_reward)[:, :-1]
            with torch.no_grad():
                out = agent.actor(x, None)[0][0]  # (L, 2)
            n = _valid(buffer, env, begin)
            diff = out[s - begin:n] - actions[env, s:begin + n]
            worst, compared = max(worst, diff.abs().max().item()), compared + len(diff)
    return worst, compared


def test_prefix_windows_train_on_what_the_transformer_acts_on(tmp_path):
    """Prefix mode with a burn-in of the Transformer's reach, n_layers x (context - 1): every
    trained step of every window equals the acted step, with nothing stored. A shorter prefix,
    and the same prefix for a recurrent family, differ and are named."""
    reach = 2 * (CONTEXT - 1)
    replay = ReplayConfig(buffer_size=1000, seq_len=reach + 4, state_mode="prefix",
                          burn_in=reach, window_start="any")
    agent, buffer, actions = acted("transformer", replay, tmp_path)
    assert replay.act_gap(True, 11, reach=reach) is None and buffer.states == []
    worst, compared = prefix_compare(agent, buffer, actions, reach)
    assert compared >= 2 * STEPS - 12 and worst < 2e-5
    short, _ = prefix_compare(agent, buffer, actions, reach - 2)
    assert short > 1e-3
    gap = dataclasses.replace(replay, burn_in=reach - 2).act_gap(True, 11, reach=reach)
    assert gap is not None and f"--burn-in {reach}" in gap
    gru, gru_buffer, gru_actions = acted("gru", replay, tmp_path / "gru")
    assert prefix_compare(gru, gru_buffer, gru_actions, reach)[0] > 1e-3
    assert "state carried over whole episodes" in replay.act_gap(True, 11, reach=None)


def test_a_transformer_that_cannot_see_its_whole_training_episodes_is_named():
    """Whole episodes of 101 steps with the default reach (63): the last step cannot see the
    first 37, which a long-memory task needs; ``build`` warns with the context that covers the
    episode, and stays quiet once it is given (or when windows are not whole episodes, or for a
    family whose state carries the whole episode)."""
    from agents.train import TrainConfig, build, resolve
    from rlkit.config import replace_fields

    corridor = "rlkit/MemoryCorridor-L100-v0"  # 101 steps, trained whole by default
    cfg = replace_fields(TrainConfig(), backbone="transformer", id=corridor, d_model=8)
    m = cfg.model
    assert resolve(cfg, 101).replay.seq_len == 101
    gap = m.reach_gap(101, 101)
    assert "sees 63 steps back" in gap and "cannot see its first 37" in gap
    assert "--context 101 or more lets every step see" in gap
    # prefix windows that span the episode (burn-in 2 + 8 trained on 8-step episodes) are
    # not whole episodes: the warning said they were
    short = dataclasses.replace(m, context=3)  # reach 2
    assert "but trains on windows that span its episodes of up to 8 steps: the last step of " \
        "an episode cannot see its first 5" in short.reach_gap(8, 10)
    two = dataclasses.replace(m, n_layers=2, context=32)  # reach 62; 2 x (K - 1) >= 100: 51
    assert "sees 62 steps back" in two.reach_gap(101, 101)
    assert "--context 51 or more" in two.reach_gap(101, 101)
    assert dataclasses.replace(m, n_layers=2).reach_gap(101, 101) is None  # reach 126
    assert dataclasses.replace(two, context=51).reach_gap(101, 101) is None
    assert dataclasses.replace(m, context=101).reach_gap(101, 101) is None
    assert m.reach_gap(101, 64) is None  # windows, not whole episodes: the reach is a choice
    for steps, window in ((101, 64), (None, 64)):  # on windows, reach 0 is still no memory
        assert dataclasses.replace(m, context=1).reach_gap(steps, window) == (
            "the Transformer at --context 1 attends to no earlier step, in training and in "
            "acting: only each step's own inputs reach it (the previous action, where it is "
            "one). --context 2 or more lets it attend to earlier steps")
    assert dataclasses.replace(m, context=2).reach_gap(101, 64) is None
    assert m.reach_gap(None, 101) is None  # episode length unknown
    blind = dataclasses.replace(m, context=1)  # reach 0: memoryless, warned all the same
    assert "sees 0 steps back (--n-layers 1 x (--context 1 - 1))" in blind.reach_gap(101, 101)
    assert "sees 1 step back" in dataclasses.replace(m, context=2).reach_gap(101, 101)
    for name in ("gru", "mlp"):
        assert dataclasses.replace(m, backbone=name).reach_gap(101, 101) is None
    with pytest.warns(UserWarning, match=r"short reach: .*--context 101"):
        build(cfg, torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(replace_fields(cfg, context=101), torch.device("cpu"))


def test_a_family_flag_given_to_a_backbone_that_does_not_use_it_is_named():
    """``--chrono``, ``--rnn-init``, ``--context`` and ``--branch-init`` change one family
    each; given to another backbone they change nothing, so ``build`` warns, naming the flag,
    its families and the backbone. At their defaults, or for their own family, nothing."""
    import warnings

    from agents.train import TrainConfig, build
    from rlkit.config import ModelConfig, replace_fields

    assert ModelConfig(backbone="mlp", chrono=100).unused_flags() == \
        "--chrono 100 is for lstm and gru only; mlp does not use it"
    assert ModelConfig(backbone="gru", context=32, branch_init=0.0).unused_flags() == \
        ("--context 32 is for transformer only; --branch-init 0.0 is for transformer only; "
         "gru does not use them")
    assert ModelConfig(backbone="s4", rnn_init="orthogonal").unused_flags() == \
        "--rnn-init orthogonal is for rnn, lstm and gru only; s4 does not use it"
    for used in (ModelConfig(backbone="gru", chrono=100, rnn_init="orthogonal"),
                 ModelConfig(backbone="transformer", context=32, branch_init=0.0),
                 ModelConfig(backbone="mlp")):
        assert used.unused_flags() is None
    cfg = replace_fields(TrainConfig(), backbone="mlp", chrono=100, d_model=8)
    with pytest.warns(UserWarning, match=r"unused flags: --chrono 100 is for lstm and gru only; "
                                         r"mlp does not use it"):
        build(cfg, torch.device("cpu"))[2].close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(replace_fields(cfg, chrono=0), torch.device("cpu"))[2].close()


@pytest.mark.parametrize("backbone", MEMORY)
def test_the_agents_losses_start_mid_episode_windows_from_the_stored_states(backbone,
                                                                              tmp_path):
    """The agent's own loss path (``_critic_fn`` and ``_actor_fn``, which ``update`` runs):
    a window from the middle of an episode, started from the states stored while acting, gives
    on its trained steps the Q, actor outputs and losses (TD targets included) that the
    window from its episode's start, which starts from the exact initial state, gives on the
    same steps. Windows of 12 hold whole episodes (5 to 11 steps); a state every 3 steps."""
    burn = 2
    replay = ReplayConfig(buffer_size=1000, seq_len=12, state_mode="stored", burn_in=burn,
                          state_every=3, window_start="any")
    agent, buffer, _ = acted(backbone, replay, tmp_path)
    checked = 0
    for env in range(2):
        for start in range(3, STEPS - 12, 3):
            ep = int(buffer.episode_start[env, start])
            n = _valid(buffer, env, start)  # steps from start to its episode's end
            if ep == start or n <= burn:
                continue
            mid = buffer._gather(torch.tensor([env]), torch.tensor([start]))
            assert mid.mask[0].tolist() == [0] * burn + [1] * (n - burn) + [0] * (12 - n)
            d = start - ep
            whole = buffer._gather(torch.tensor([env]), torch.tensor([ep]))
            mask = torch.zeros_like(whole.mask)
            mask[0, d + burn:d + n] = 1  # the same trained steps, in the episode's window
            whole = whole._replace(mask=mask)
            (cm, qm, em), (cw, qw, ew) = agent._critic_fn(mid), agent._critic_fn(whole)
            am, aw = agent._actor_fn(mid, em), agent._actor_fn(whole, ew)
            on, on_whole = slice(burn, n), slice(d + burn, d + n)
            def where(m, env=env, start=start, ep=ep):
                return f"env {env}, window from step {start} (episode from {ep}): {m}"

            torch.testing.assert_close(qm[0, on], qw[0, on_whole], atol=2e-5, rtol=0, msg=where)
            torch.testing.assert_close(am.pre_tanh[0, on], aw.pre_tanh[0, on_whole], atol=2e-5,
                                       rtol=0, msg=where)
            torch.testing.assert_close(cm, cw, atol=1e-4, rtol=1e-5, msg=where)
            torch.testing.assert_close(am.loss, aw.loss, atol=1e-4, rtol=1e-5, msg=where)
            checked += 1
    assert checked >= 10
