import copy
import io
import re

import numpy as np
import pytest
import torch
from helpers import seq_buffer as SequenceReplayBuffer  # noqa: N812

from rlkit.buffers import ReplayBuffer


def _add(buf, i, n=1, term=0.0, trunc=0.0):
    buf.add(np.full((n, 3), i), np.full((n, 2), -i), np.full(n, float(i)),
            np.full((n, 3), i + 1), np.full(n, term), np.full(n, trunc))


def test_replay_wraps_around_and_keeps_newest():
    buf = ReplayBuffer(5, 3, 2, generator=torch.Generator().manual_seed(0))
    for i in range(7):
        _add(buf, i)
    assert len(buf) == 5 and buf.pos == 2
    # slots 0 and 1 were overwritten by transitions 5 and 6
    assert buf.reward.tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    assert torch.equal(buf.next_obs[:, 0], buf.obs[:, 0] + 1)


def test_replay_rows_of_one_add_split_across_the_end():
    buf = ReplayBuffer(5, 3, 2, generator=torch.Generator().manual_seed(0))
    _add(buf, 0, n=2)  # slots 0, 1
    _add(buf, 1, n=2)  # slots 2, 3
    _add(buf, 2, n=3)  # slot 4, then 0 and 1 again
    assert len(buf) == 5 and buf.pos == 2
    assert buf.reward.tolist() == [2.0, 2.0, 1.0, 1.0, 2.0]
    assert buf.action[:, 0].tolist() == [-2.0, -2.0, -1.0, -1.0, -2.0]
    assert torch.equal(buf.next_obs, buf.obs + 1)


def test_replay_sample_shapes_and_flags_apart():
    buf = ReplayBuffer(10, 3, 2, generator=torch.Generator().manual_seed(0))
    _add(buf, 0, term=1.0)
    _add(buf, 1, trunc=1.0)
    b = buf.sample(64)  # windows of one step: obs holds the observation and the next one
    assert b.obs.shape == (64, 2, 3) and b.action.shape == (64, 1, 2)
    assert b.reward.shape == b.terminated.shape == b.mask.shape == (64, 1)
    assert torch.all(b.mask == 1) and b.states is None
    assert torch.all(b.prev_action == 0) and b.prev_action.shape == (64, 2, 2)
    assert torch.all(b.prev_reward == 0) and b.prev_reward.shape == (64, 2)
    # the two flags never coincide and each follows its own transition
    assert torch.all(b.terminated == (b.reward == 0).float())
    assert torch.all(b.truncated == (b.reward == 1).float())
    assert torch.all(b.terminated + b.truncated == 1)


def test_replay_sample_is_reproducible_with_generator():
    def draw(seed):
        buf = ReplayBuffer(10, 3, 2, generator=torch.Generator().manual_seed(seed))
        for i in range(10):
            _add(buf, i)
        return buf.sample(8).reward
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_replay_bad_input():
    with pytest.raises(ValueError, match="capacity must be a positive integer, got 0"):
        ReplayBuffer(0, 3, 2)
    buf = ReplayBuffer(4, 3, 2)
    with pytest.raises(ValueError, match=r"obs must have shape \(1, 3\), got \(1, 4\) \(N = 1 "
                                         r"envs, as in obs\)"):
        buf.add(np.zeros((1, 4)), np.zeros((1, 2)), np.zeros(1), np.zeros((1, 3)),
                np.zeros(1), np.zeros(1))
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(2)
    _add(buf, 0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        buf.sample(0)


def test_replay_state_dict_round_trip():
    buf = ReplayBuffer(6, 3, 2, generator=torch.Generator().manual_seed(1))
    for i in range(8):
        _add(buf, i)
    other = ReplayBuffer(6, 3, 2)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.sample(5).reward, buf.sample(5).reward)


def _saved_bytes(state) -> int:
    f = io.BytesIO()
    torch.save(state, f)
    return len(f.getvalue())


def test_replay_checkpoint_holds_the_filled_slots_only():
    buf = ReplayBuffer(100_000, 3, 2)  # 3.6 MB of storage
    for i in range(10):
        _add(buf, i)
    state = buf.state_dict()
    assert state["data"].shape == (10, 3 + 3 + 2 + 1 + 1 + 1)
    assert _saved_bytes(state) < 20_000  # not the whole storage behind the views
    assert state["data"].data_ptr() != buf.data.data_ptr()  # the filled rows, copied


def test_a_full_buffers_state_is_its_own_storage_not_a_copy():
    """A checkpoint of a full replay buffer holds no second copy of it in memory."""
    buf = ReplayBuffer(6, 3, 2, generator=torch.Generator().manual_seed(1))
    for i in range(8):
        _add(buf, i)
    state = buf.state_dict()
    assert state["data"].data_ptr() == buf.data.data_ptr()  # shared, not copied
    assert state["data"].shape == buf.data.shape
    other = ReplayBuffer(6, 3, 2)
    other.load_state_dict(copy.deepcopy(state))
    assert torch.equal(other.data, buf.data) and (other.pos, other.size) == (2, 6)
    seq = _stored_buffer()
    _fill(seq, 60)  # 50 slots per env: full
    seq_state = seq.state_dict()
    for name in ("obs", "next_obs", "action", "reward", "terminated", "truncated",
                 "episode_start"):
        assert seq_state[name].data_ptr() == getattr(seq, name).data_ptr(), name
    assert seq_state["states"][0].data_ptr() == seq.states[0].data_ptr()


def test_a_replay_state_of_per_field_tensors_loads_as_the_packed_rows_do():
    """Checkpoints written before the packed rows hold one tensor per field."""
    buf = ReplayBuffer(6, 3, 2, generator=torch.Generator().manual_seed(1))
    for i in range(4):
        _add(buf, i, term=float(i == 2))
    state = buf.state_dict()
    old = {**{name: getattr(buf, name)[:4].clone() for name in ReplayBuffer.FIELDS},
           **{k: state[k] for k in ("pos", "size", "generator")}}
    a, b = ReplayBuffer(6, 3, 2), ReplayBuffer(6, 3, 2)
    a.load_state_dict(old)
    b.load_state_dict(state)
    assert torch.equal(a.data, b.data) and torch.equal(a.data[:4], buf.data[:4])
    assert torch.equal(a.sample(5).obs, b.sample(5).obs)


def test_replay_fields_are_views_of_one_storage_and_batches_keep_them_apart():
    buf = ReplayBuffer(8, 3, 2, generator=torch.Generator().manual_seed(0))
    # gymnasium gives bool flags, float64 observations and rewards
    buf.add(np.arange(6.0).reshape(2, 3), np.array([[0.5, -0.5], [1.5, -1.5]]),
            np.array([1.0, 2.0]), np.arange(6.0).reshape(2, 3) + 10,
            np.array([True, False]), np.array([False, True]))
    assert buf.data.shape == (8, 3 + 2 + 1 + 3 + 1 + 1)
    assert buf.obs.data_ptr() == buf.data.data_ptr()
    # obs and next_obs side by side: a batch's (B, 2, obs_dim) window is a view, not a copy
    assert buf.data[:2].tolist() == [[0, 1, 2, 10, 11, 12, 0.5, -0.5, 1, 1, 0],
                                     [3, 4, 5, 13, 14, 15, 1.5, -1.5, 2, 0, 1]]
    b = buf.sample(32)
    first = b.reward == 1.0
    assert torch.equal(b.obs[:, 0][first[:, 0]][0], torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(b.obs[:, 1], b.obs[:, 0] + 10)
    assert torch.equal(b.action[:, :, 0], b.reward - 0.5)
    assert torch.equal(b.terminated, first.float()) and torch.equal(b.truncated, 1 - b.terminated)
    # tensors are taken as well as arrays; a (N, 1) reward is a column of N rewards
    buf.add(torch.zeros(1, 3), torch.zeros(1, 2), torch.tensor([[7.0]]), torch.zeros(1, 3),
            torch.zeros(1), torch.zeros(1))
    assert buf.reward[2].item() == 7.0 and len(buf) == 3
    with pytest.raises(ValueError, match=r"reward must have shape \(1,\), got \(1, 2\)"):
        buf.add(np.zeros((1, 3)), np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 3)),
                np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match=r"terminated must have shape \(2,\), got \(1,\)"):
        buf.add(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros(2), np.zeros((2, 3)),
                np.zeros(1), np.zeros(2))
    assert len(buf) == 3  # a refused add writes nothing


# ---------------------------------------------------------------------------- sequences
def _episodes(buf, lengths, terminal=True, num_envs=1):
    """Feed episodes of the given lengths; obs value = 100 * episode + t."""
    for ep, n in enumerate(lengths):
        for t in range(n):
            last = t == n - 1
            o = np.full((num_envs, 1), 100.0 * ep + t)
            buf.add(o, np.full((num_envs, 1), t + 0.5), np.full(num_envs, float(t)), o + 1,
                    np.full(num_envs, float(last and terminal)),
                    np.full(num_envs, float(last and not terminal)))


def test_windows_never_cross_episodes_and_masks_at_both_ends():
    buf = SequenceReplayBuffer(100, 1, 1, 1, seq_len=4, generator=torch.Generator().manual_seed(0))
    _episodes(buf, [3, 6, 2])
    b = buf.sample(256)
    ep = torch.div(b.obs[:, 0, 0], 100, rounding_mode="floor")
    # every valid step belongs to the start step's episode
    same = torch.div(b.obs[:, :4, 0], 100, rounding_mode="floor") == ep[:, None]
    assert torch.all(same | (b.mask == 0))
    # valid is a prefix of ones; padding is zero
    assert torch.all(b.mask[:, 1:] <= b.mask[:, :-1])
    assert torch.all(b.action[b.mask == 0] == 0) and torch.all(b.reward[b.mask == 0] == 0)
    # the step after the last valid one holds the episode's final next observation
    n = b.mask.sum(1).long()
    last_obs = b.obs[torch.arange(256), n - 1, 0]
    assert torch.allclose(b.obs[torch.arange(256), n, 0], last_obs + 1)
    # terminated only at an episode's last step
    t_in_ep = b.obs[:, :4, 0] - 100 * ep[:, None]
    lengths = torch.tensor([3.0, 6.0, 2.0])[ep.long()]
    assert torch.equal(b.terminated, ((t_in_ep == lengths[:, None] - 1) & (b.mask > 0)).float())
    # previous action is zero at an episode start and the stored action otherwise
    first = t_in_ep[:, 0] == 0
    assert torch.all(b.prev_action[first, 0] == 0)
    assert torch.allclose(b.prev_action[~first, 0, 0], t_in_ep[~first, 0] - 1 + 0.5)
    assert torch.equal(b.prev_action[:, 1:], b.action)


def test_truncated_episode_end_is_a_boundary_too():
    buf = SequenceReplayBuffer(50, 1, 1, 1, seq_len=5, generator=torch.Generator().manual_seed(0))
    _episodes(buf, [2, 2], terminal=False)
    b = buf.sample(64)
    assert torch.all(b.mask.sum(1) <= 2)
    assert torch.all(b.terminated == 0)
    assert torch.all(b.truncated.sum(1) == 1)


def test_unfinished_episode_windows_stop_at_the_newest_step():
    buf = SequenceReplayBuffer(50, 1, 1, 1, seq_len=8, generator=torch.Generator().manual_seed(0))
    for t in range(3):
        buf.add([[t]], [[0.0]], [0.0], [[t + 1]], [0.0], [0.0])
    b = buf.sample(32)
    assert torch.all(b.mask.sum(1) == 3 - b.obs[:, 0, 0])


@pytest.mark.parametrize("mode", ["zero", "stored"])
def test_after_a_wrap_windows_read_their_previous_action_from_their_own_stream(mode):
    """Once a stream has wrapped, the oldest stored step's previous action is gone (its slot
    holds the newest step): no window may start there and read it."""
    shapes = (((1,),),) if mode == "stored" else ()
    buf = SequenceReplayBuffer(8, 1, 1, 1, seq_len=3, generator=torch.Generator().manual_seed(0),
                               state_mode=mode, state_shapes=shapes, state_every=1)
    for t in range(11):  # one endless episode; action t and reward 10 t at step t
        buf.add([[t]], [[float(t)]], [10.0 * t], [[t + 1]], [0.0], [0.0],
                states=((torch.tensor([[float(t)]]),),) if shapes else None)
    b = buf.sample(256)
    start = b.obs[:, 0, 0]
    assert start.min() == 4  # steps 3 .. 10 are stored; 3 lost its previous step
    assert torch.equal(b.prev_action[:, 0, 0], start - 1)
    assert torch.equal(b.prev_reward[:, 0], 10 * (start - 1))


def test_wrap_around_keeps_per_env_streams():
    buf = SequenceReplayBuffer(8, 2, 1, 1, seq_len=3, generator=torch.Generator().manual_seed(0))
    for t in range(10):  # one endless episode per env, env 1 offset by 1000
        o = np.array([[t], [1000 + t]], dtype=np.float32)
        buf.add(o, np.zeros((2, 1)), np.zeros(2), o + 1, np.zeros(2), np.zeros(2))
    assert len(buf) == 8
    b = buf.sample(128)
    d = b.obs[:, 1:4, 0] - b.obs[:, 0:3, 0]
    assert torch.all((d == 1) | (b.mask == 0))  # consecutive steps of one stream
    assert b.obs[:, 0, 0].remainder(1000).min() >= 6  # only the 4 newest steps per env remain


def test_stored_states_and_burn_in_mask():
    shapes = (((2,),),)
    buf = SequenceReplayBuffer(100, 1, 1, 1, seq_len=5, generator=torch.Generator().manual_seed(0),
                               state_mode="stored", burn_in=2, state_shapes=shapes)
    for t in range(12):
        last = t == 11
        buf.add([[t]], [[0.0]], [0.0], [[t + 1]], [float(last)], [0.0],
                states=((torch.tensor([[t, -t]], dtype=torch.float32),),))
    b = buf.sample(128)
    start = b.obs[:, 0, 0]
    (s,) = b.states.actor
    # windows start where a state is kept: every K = seq_len - burn_in = 3 steps
    assert buf.state_every == 3 and torch.all(start % 3 == 0)
    assert set(start.tolist()) == {0.0, 3.0, 6.0, 9.0}
    # the stored state is the one recorded with the window's first step
    assert torch.equal(s, torch.stack([start, -start], 1))
    # burn-in steps get no loss, except for windows at the episode start
    at_start = start == 0
    assert torch.all(b.mask[~at_start, :2] == 0)
    valid = (torch.arange(5)[None] < (12 - start)[:, None]).float()  # inside the episode
    assert torch.equal(b.mask[at_start], valid[at_start])
    assert torch.equal(b.mask[~at_start, 2:], valid[~at_start, 2:])


def test_prefix_windows_replay_up_to_burn_in_steps_of_their_episode_before_the_trained_ones():
    """Prefix mode: a window starts from the initial state up to ``burn_in`` steps before a
    uniformly drawn step, never before its episode's start (nor, after a wrap, at the oldest
    step, whose previous action is gone); only the drawn step and those after it get a loss."""
    buf = SequenceReplayBuffer(30, 1, 1, 1, seq_len=6, state_mode="prefix", burn_in=3,
                               generator=torch.Generator().manual_seed(0))
    _episodes(buf, [7, 2, 9, 12, 5])  # 35 steps: the 5 oldest were overwritten
    assert not buf.wants_states and buf.states == []
    b = buf.sample(512)
    ep = torch.div(b.obs[:, 0, 0], 100, rounding_mode="floor")
    t0 = b.obs[:, 0, 0] - 100 * ep  # step in its episode at the window start
    burn = (b.mask == 0).long().cumprod(1).sum(1)  # loss-free steps before the first trained
    drawn = t0 + burn  # the drawn step, in its episode
    assert torch.all(burn <= 3)
    # the prefix is burn_in steps long, or reaches back to the episode start
    assert torch.all((burn == 3) | (t0 == 0) | ((ep == 0) & (t0 == 6)))
    # episode 0 lost steps 0..4, and step 5 its previous action: nothing starts before 6
    assert torch.all((ep > 0) | (t0 >= 6))
    assert set(drawn[ep == 3].tolist()) == set(range(12))  # every step is drawn
    # after the first trained step the mask is the episode's remainder within the window
    lengths = torch.tensor([7.0, 2.0, 9.0, 12.0, 5.0])[ep.long()]
    inside = (t0[:, None] + torch.arange(6)[None]) < lengths[:, None]
    assert torch.equal(b.mask, (inside & (torch.arange(6)[None] >= burn[:, None])).float())
    assert b.states is None


def _stored_buffer(seed=0):
    return SequenceReplayBuffer(100, 2, 1, 1, seq_len=5,
                                generator=torch.Generator().manual_seed(seed),
                                state_mode="stored", burn_in=2, state_shapes=(((2,),),))


def _fill(buf, steps):
    for t in range(steps):
        buf.add([[t], [100 + t]], [[0.0], [1.0]], [0.0, 1.0], [[t + 1], [101 + t]],
                [float(t % 7 == 6)] * 2, [0.0, 0.0],
                states=((torch.tensor([[t, -t], [t, t]], dtype=torch.float32),),))


def test_sequence_buffer_checkpoint_keeps_only_filled_slots():
    big = SequenceReplayBuffer(100_000, 2, 3, 2, seq_len=4)  # 100k steps: about 4 MB
    for _ in range(10):
        big.add(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros(2), np.zeros((2, 3)),
                np.zeros(2), np.zeros(2))
    assert _saved_bytes(big.state_dict()) < 20_000  # not the whole storage behind the views
    buf = _stored_buffer()
    _fill(buf, 12)  # 12 of 50 slots per env
    state = buf.state_dict()
    assert state["obs"].shape == (2, 12, 1) and state["episode_start"].shape == (2, 12)
    assert state["states"][0].shape == (2, 4, 2)  # one state per K = 3 steps
    other = _stored_buffer(seed=1)
    other.load_state_dict(copy.deepcopy(state))
    a, b = buf.sample(64), other.sample(64)  # the generator state travels with the buffer
    for name in ("obs", "action", "reward", "mask", "terminated"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.states[0][0], b.states[0][0])
    # a full buffer saves every slot; a dict of every slot (older versions) loads too
    full = _stored_buffer()
    _fill(full, 60)
    assert full.state_dict()["obs"].shape == (2, 50, 1)
    old = {k: v for k, v in state.items()}
    old["obs"] = torch.cat([state["obs"], torch.zeros(2, 38, 1)], 1)
    _stored_buffer().load_state_dict(old)
    bad = dict(state, reward=torch.zeros(2, 11))
    with pytest.raises(ValueError, match=r"field reward has shape \(2, 11\).*expected \(2, 12\)"):
        _stored_buffer().load_state_dict(bad)


def test_sequence_buffer_bad_input():
    with pytest.raises(ValueError, match=r"--burn-in must be in \[0, seq_len=4\), got 4"):
        SequenceReplayBuffer(100, 1, 1, 1, seq_len=4, state_mode="stored", burn_in=4)
    with pytest.raises(ValueError, match="--burn-in 1 needs --state-mode stored or prefix"):
        SequenceReplayBuffer(100, 1, 1, 1, seq_len=4, burn_in=1)
    with pytest.raises(ValueError, match="fewer than seq_len=64"):
        SequenceReplayBuffer(100, 4, 1, 1, seq_len=64)
    buf = SequenceReplayBuffer(100, 1, 1, 1, seq_len=4)
    with pytest.raises(ValueError, match="states were given"):
        buf.add([[0]], [[0]], [0], [[0]], [0], [0], states=((torch.zeros(1, 2),),))


def test_episode_window_start_samples_whole_episodes_from_their_start():
    buf = SequenceReplayBuffer(100, 1, 1, 1, seq_len=6, generator=torch.Generator().manual_seed(0),
                               window_start="episode")
    _episodes(buf, [3, 6, 2])
    b = buf.sample(128)
    assert torch.all(b.obs[:, 0, 0].remainder(100) == 0)  # t = 0 of some episode
    ep = torch.div(b.obs[:, 0, 0], 100, rounding_mode="floor").long()
    assert torch.equal(b.mask.sum(1).long(), torch.tensor([3, 6, 2])[ep])
    assert set(ep.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="--window-start must be any or episode, got 'mid'"):
        SequenceReplayBuffer(100, 1, 1, 1, seq_len=4, window_start="mid")



def test_episodes_drawn_by_steps_weigh_each_stored_episode_by_its_stored_length(monkeypatch):
    """``--episode-sampling steps`` after the ring has wrapped many times: each stored episode
    is drawn in proportion to the steps of it still stored (an episode whose start was
    overwritten is never drawn), and the count behind it spans the buffer, not the whole run
    (it grew with every step added: 200 MB a draw at 10M steps)."""
    from rlkit.buffers.sequences import SequenceReplayBuffer as Buffer
    from rlkit.config import ReplayConfig

    cfg = ReplayConfig(buffer_size=200, batch_size=1, seq_len=12, window_start="episode",
                       episode_sampling="steps")
    buf = Buffer(cfg, num_envs=2, obs_dim=1, action_dim=1,
                 generator=torch.Generator().manual_seed(0))
    ends = [{i for i in range(5003) if i % 7 == 6}, {i for i in range(5003) if i % 11 in (2, 10)}]
    for i in range(5003):  # 100 steps kept per env: the ring wraps 50 times
        done = np.array([float(i in e) for e in ends])
        buf.add(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(2), np.zeros((2, 1)), done,
                np.zeros(2))
    want = []  # (env, start, stored length) of each episode that starts in the stored steps
    for e in range(2):
        start = 0
        for i in range(5003):
            if start >= 5003 - 100 and (i in ends[e] or i == 5002):
                want.append((e, start, i - start + 1))
            if i in ends[e]:
                start = i + 1
    weights, sizes = [], []
    real_multinomial, real_bincount = torch.multinomial, torch.bincount
    monkeypatch.setattr(torch, "multinomial", lambda w, *a, **k: weights.append(w.clone())
                        or real_multinomial(w, *a, **k))
    monkeypatch.setattr(torch, "bincount", lambda x, weights=None, minlength=0: sizes.append(
        minlength) or real_bincount(x, weights, minlength))
    b = buf.sample(64)
    assert weights[0].tolist() == [float(n) for _, _, n in want]
    assert max(sizes) <= 2 * (100 + 1), sizes
    assert set(b.mask.sum(1).long().tolist()) <= {n for _, _, n in want}

def test_episode_windows_are_cut_after_their_longest_episode_or_at_one_of_few_lengths():
    from rlkit.buffers import COMPILED_WINDOW_LENGTHS, make_replay
    from rlkit.buffers.sequences import SequenceReplayBuffer as Buffer
    from rlkit.config import ModelConfig, ReplayConfig

    cfg = ReplayConfig(buffer_size=200, batch_size=1, seq_len=12, window_start="episode")
    cuts = {}
    for lengths in (None, 4):
        buf = Buffer(cfg, num_envs=1, obs_dim=1, action_dim=1, window_lengths=lengths,
                     generator=torch.Generator().manual_seed(0))
        _episodes(buf, [2, 3, 5, 7, 9, 12, 1])
        seen = set()
        for _ in range(200):
            b = buf.sample(2)
            longest = int(b.mask.sum(1).max())
            seen.add((longest, b.mask.shape[1]))
            assert b.obs.shape[1] == b.mask.shape[1] + 1 == b.prev_action.shape[1]
        cuts[lengths] = seen
    assert all(t == n for n, t in cuts[None]) and len(cuts[None]) == 7
    assert {t for _, t in cuts[4]} == {3, 6, 9, 12}  # multiples of ceil(12 / 4)
    assert all(n <= t < n + 3 for n, t in cuts[4])
    model = ModelConfig(backbone="gru", compile="on")
    for compiled, want in ((model, COMPILED_WINDOW_LENGTHS), (ModelConfig(backbone="gru"), None)):
        made = make_replay(cfg, compiled, num_envs=1, obs_dim=1, action_dim=1,
                           device=torch.device("cpu"), generator=torch.Generator())
        assert made.window_lengths == want
    with pytest.raises(ValueError, match="window_lengths must be a positive integer or None, "
                                         "got 0"):
        Buffer(cfg, num_envs=1, obs_dim=1, action_dim=1, window_lengths=0)


def test_stored_states_cost_one_per_chunk_and_older_per_step_checkpoints_load():
    big = SequenceReplayBuffer(100_000, 2, 1, 1, seq_len=64, state_mode="stored", burn_in=16,
                               state_shapes=(((8,),),))
    assert big.states[0].shape == (2, -(-50_000 // 48), 8)  # not one per buffer step
    buf = _stored_buffer()
    _fill(buf, 60)  # wraps: 50 slots per env
    # the older layout: one state per step at the step's slot
    per_step = torch.zeros(2, 50, 2)
    for t in range(10, 60):
        per_step[:, t % 50] = torch.tensor([[t, -t], [t, t]], dtype=torch.float32)
    old = {k: v for k, v in buf.state_dict().items() if k != "state_every"}
    old["states"] = [[per_step]]  # and grouped per network
    other = _stored_buffer()
    other.load_state_dict(old)
    for chunk in range(-(-10 // 3), -(-60 // 3)):  # the chunks still stored
        t = chunk * 3
        assert torch.equal(other.states[0][:, chunk % other.state_slots],
                           torch.tensor([[t, -t], [t, t]], dtype=torch.float32))
    with pytest.raises(ValueError, match="--state-every 5 leaves steps no window trains on"):
        SequenceReplayBuffer(100, 1, 1, 1, seq_len=5, state_mode="stored", burn_in=2,
                             state_shapes=(((2,),),), state_every=5)


def test_sizes_are_counts_numpy_ones_included_and_rows_are_one_per_env():
    z = np.zeros
    buf = ReplayBuffer(np.int64(4), np.prod((3,)), np.int64(2))  # numpy integers are counts
    with pytest.raises(ValueError, match=r"obs must have shape \(N, 3\), one row per env, got "
                                         r"\(3,\)"):
        buf.add(z(3), z((1, 2)), z(1), z(3), z(1), z(1))  # one env's step, unbatched
    _add(buf, 0)
    assert buf.sample(np.int64(2)).obs.shape == (2, 2, 3)
    for bad in (2.5, True, -1):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got "
                                             f"{re.escape(repr(bad))}"):
            buf.sample(bad)
    with pytest.raises(ValueError, match="obs_dim must be a positive integer, got 2.5"):
        ReplayBuffer(4, 2.5, 2)
    seq = SequenceReplayBuffer(20, 2, np.int64(3), 1, seq_len=4)
    step = dict(obs=z((2, 3)), action=z((2, 1)), next_obs=z((2, 3)))
    seq.add(reward=z((2, 1)), terminated=z(2), truncated=z(2), **step)  # (N, 1) is (N,)
    with pytest.raises(ValueError, match=r"reward must have shape \(2,\), got \(1, 2\) \(one "
                                         r"row per env\)"):
        seq.add(reward=z((1, 2)), terminated=z(2), truncated=z(2), **step)
    with pytest.raises(ValueError, match="num_envs must be a positive integer, got 1.5"):
        SequenceReplayBuffer(20, 1.5, 3, 1, seq_len=4)
    # keep: one flag per row (a short one was taken as "keep all", or indexed past the rows)
    for buf, rows in ((seq, 2), (ReplayBuffer(20, 3, 1, generator=torch.Generator()), 2)):
        count = len(buf)
        for bad in ([True], np.array([True, False, True]), [[True, True]]):
            said = rf"keep must have shape \({rows},\), one flag per row added, got "
            with pytest.raises(ValueError, match=said + re.escape(str(np.shape(bad)))):
                buf.add(keep=bad, reward=z(2), terminated=z(2), truncated=z(2), **step)
        assert len(buf) == count  # nothing stored or dropped
        assert buf.add(keep=[True, False], reward=z(2), terminated=z(2), truncated=z(2),
                       **step) == (2 if buf is seq else 1)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 2.5"):
        seq.sample(2.5)


def test_stored_states_need_more_steps_per_env_than_a_chunk():
    """With one chunk of K steps per environment the ring holds no chunk start with its state
    after a wrap, at every multiple of K: a run sampled fine until then and stopped at step
    48 with "no stored step has a stored state yet". Refused when the buffer is made."""
    shapes = (((2,),),)
    with pytest.raises(ValueError, match=re.escape(
            "capacity 12 holds 6 steps per environment for 2 environments; --state-mode stored "
            "keeps a state every 6 steps (--state-every, default --seq-len minus --burn-in) and "
            "needs more steps per environment than that: a --buffer-size of at least 14")):
        SequenceReplayBuffer(12, 2, 1, 1, seq_len=6, state_mode="stored", burn_in=0,
                             state_shapes=shapes)
    with pytest.raises(ValueError, match=re.escape("a --buffer-size of at least 14")):
        SequenceReplayBuffer(13, 2, 1, 1, seq_len=6, state_mode="stored", burn_in=0,
                             state_shapes=shapes)  # 6 steps per env: 13 is above 12
    SequenceReplayBuffer(14, 2, 1, 1, seq_len=6, state_mode="stored", burn_in=0,
                         state_shapes=shapes)
    buf = SequenceReplayBuffer(7, 1, 1, 1, seq_len=6, state_mode="stored", burn_in=0,
                               state_shapes=shapes, generator=torch.Generator().manual_seed(0))
    for t in range(40):  # many wraps: every draw finds a start
        buf.add([[t]], [[0.0]], [0.0], [[t + 1]], [0.0], [0.0],
                states=((torch.tensor([[t, -t]], dtype=torch.float32),),))
        buf.sample(4)


def test_a_dropped_step_is_checked_as_a_kept_one():
    """``add`` returned at a dropped row before it checked the others: an observation of the
    wrong shape went unnoticed on that step."""
    buf = SequenceReplayBuffer(100, 2, 3, 1, seq_len=4)
    with pytest.raises(ValueError, match=re.escape("obs must have shape (2, 3), got (2, 5)")):
        buf.add(np.zeros((2, 5)), np.zeros((2, 1)), np.zeros(2), np.zeros((2, 3)), np.zeros(2),
                np.zeros(2), keep=np.array([True, False]))
    assert buf.count == 0
    assert buf.add(np.zeros((2, 3)), np.zeros((2, 1)), np.zeros(2), np.zeros((2, 3)),
                   np.zeros(2), np.zeros(2), keep=np.array([True, False])) == 2


def test_a_replay_state_whose_rows_or_position_do_not_fit_is_refused():
    """A one-row field broadcast into every slot, and any position was taken."""
    buf = ReplayBuffer(8, 3, 2)
    _add(buf, 0, n=5)
    state = buf.state_dict()
    bad = {**state, "data": state["data"][:1]}
    with pytest.raises(ValueError, match=re.escape(
            "replay data has shape (1, 11) in the checkpoint, expected (5, 11) (5 "
            "transitions)")):
        ReplayBuffer(8, 3, 2).load_state_dict(bad)
    # as wide, other fields: obs 2 + 2 and action 4 against obs 3 + 3 and action 2
    with pytest.raises(ValueError, match=re.escape(
            "replay columns in the checkpoint are {'obs': [0, 3], 'next_obs': [3, 6], "
            "'action': [6, 8], 'reward': [8, 9], 'terminated': [9, 10], 'truncated': [10, 11]}, "
            "expected {'obs': [0, 2], 'next_obs': [2, 4], 'action': [4, 8], 'reward': [8, 9], "
            "'terminated': [9, 10], 'truncated': [10, 11]} (obs_dim 2, action_dim 4)")):
        ReplayBuffer(8, 2, 4).load_state_dict(state)
    old = {**{name: getattr(buf, name)[:5].clone() for name in ReplayBuffer.FIELDS},
           "pos": 5, "size": 5, "generator": state["generator"]}
    old["obs"] = old["obs"][:1]
    with pytest.raises(ValueError, match=re.escape(
            "replay field obs has shape (1, 3) in the checkpoint, expected (5, 3) (5 "
            "transitions)")):
        ReplayBuffer(8, 3, 2).load_state_dict(old)
    with pytest.raises(ValueError, match=re.escape(
            "checkpoint's replay position is 7 with 5 transitions held; expected 5 (or, once "
            "full, 0 to 7)")):
        ReplayBuffer(8, 3, 2).load_state_dict({**state, "pos": 7})
    other = ReplayBuffer(8, 3, 2)
    other.load_state_dict(state)
    assert other.pos == 5 and other.size == 5
