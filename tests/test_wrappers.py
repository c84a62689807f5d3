"""MaskObservation, FlickerObservation and GaussianObservationNoise: behaviour and errors."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from envs.wrappers import FlickerObservation, GaussianObservationNoise, MaskObservation


class CountingEnv(gym.Env[np.ndarray, np.ndarray]):
    """Observation ``[t + 1, 10 * (t + 1), 100 * (t + 1), ...]``: nonzero, known, no randomness."""

    def __init__(
        self,
        size: int = 4,
        low: float = -1e6,
        high: float = 1e6,
        dtype: type[np.floating[Any]] = np.float32,
    ) -> None:
        self.observation_space = spaces.Box(low=low, high=high, shape=(size,), dtype=dtype)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._scale = (10.0 ** np.arange(size)).astype(dtype)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return (self._t + 1) * self._scale

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        return self._obs(), 0.0, False, self._t >= 50, {}


# check_env's remarks on Pendulum's action space, unbounded spaces and checking a wrapper.
quiet_check_env = [
    pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version"),
    pytest.mark.filterwarnings("ignore:.*symmetric and normalized space"),
    pytest.mark.filterwarnings("ignore:.*space m(in|ax)imum value is -?infinity"),
]


def _quiet(test: Any) -> Any:
    for mark in quiet_check_env:
        test = mark(test)
    return test


def _rollout(env: gym.Env[np.ndarray, np.ndarray], seed: int, steps: int) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps - 1):
        obs, _, terminated, truncated, _ = env.step(np.zeros(1, dtype=np.float32))
        if terminated or truncated:
            obs, _ = env.reset()
        out.append(obs)
    return np.stack(out)


# ---------------------------------------------------------------- errors shared by all three
ALL_THREE = [  # each wrapper, built on an env, and its name in messages
    (lambda env: MaskObservation(env, [0]), "MaskObservation"),
    (lambda env: FlickerObservation(env, 0.5), "FlickerObservation"),
    (lambda env: GaussianObservationNoise(env, 0.1), "GaussianObservationNoise"),
]


@pytest.mark.parametrize(("wrap", "name"), ALL_THREE)
def test_non_box_observation_space_is_rejected(wrap: Any, name: str) -> None:
    env = gym.make("FrozenLake-v1")
    with pytest.raises(TypeError, match=rf"{name} expects a Box observation space, got Discrete"):
        wrap(env)


@pytest.mark.parametrize(("wrap", "name"), ALL_THREE)
def test_a_vector_env_is_rejected_with_the_way_to_wrap_its_sub_envs(wrap: Any, name: str) -> None:
    vec = gym.make_vec("Pendulum-v1", 3, vectorization_mode="sync")
    message = (
        rf"{name} expects a gymnasium.Env, not a vector env, got SyncVectorEnv; to wrap each "
        rf"sub-env, pass the wrapper to gym.make_vec\(env_id, num_envs, "
        rf"wrappers=\[lambda env: {name}\(env, ...\)\]\)"
    )
    with pytest.raises(TypeError, match=message):
        wrap(vec)
    with pytest.raises(TypeError, match=rf"{name} expects a gymnasium.Env, got 'Pendulum-v1'"):
        wrap("Pendulum-v1")
    vec.close()


def test_make_vec_wraps_each_sub_env() -> None:
    vec = gym.make_vec(
        "Pendulum-v1",
        3,
        vectorization_mode="sync",
        wrappers=[
            lambda env: MaskObservation(env, [2]),
            lambda env: GaussianObservationNoise(env, 0.1),
            lambda env: FlickerObservation(env, 0.5),
        ],
    )
    assert vec.single_observation_space.shape == (1,)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, 1)
    vec.close()


# ---------------------------------------------------------------------------- MaskObservation
def test_mask_keeps_the_given_entries_in_order() -> None:
    env = MaskObservation(CountingEnv(size=4, dtype=np.float64), indices=[3, 1])
    assert env.observation_space == spaces.Box(-1e6, 1e6, shape=(2,), dtype=np.float64)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [1000.0, 10.0])
    obs, *_ = env.step(np.zeros(1, dtype=np.float32))
    np.testing.assert_array_equal(obs, [2000.0, 20.0])
    assert obs.dtype == np.float64
    assert env.indices == (3, 1)


@pytest.mark.parametrize(
    "indices",
    [[2, 0], (2, 0), range(2, -1, -2), np.array([2, 0]), np.array([2, 0], dtype=np.uint8),
     [np.int64(2), np.int32(0)]],
    ids=["list", "tuple", "range", "array", "uint8-array", "numpy-ints"],
)
def test_mask_takes_ordered_sequences_of_integers(indices: Any) -> None:
    env = MaskObservation(CountingEnv(size=4, dtype=np.float64), indices)
    assert env.indices == (2, 0) and all(type(i) is int for i in env.indices)
    np.testing.assert_array_equal(env.reset(seed=0)[0], [100.0, 1.0])


def test_mask_takes_per_entry_bounds() -> None:
    low = np.array([-1.0, -2.0, -3.0], dtype=np.float32)
    base = CountingEnv(size=3)
    base.observation_space = spaces.Box(low=low, high=-low, dtype=np.float32)
    env = MaskObservation(base, indices=np.array([2, 0]))
    np.testing.assert_array_equal(env.observation_space.low, [-3.0, -1.0])
    np.testing.assert_array_equal(env.observation_space.high, [3.0, 1.0])
    assert env.observation_space.dtype == np.float32


@_quiet
def test_mask_passes_check_env() -> None:
    check_env(MaskObservation(gym.make("Pendulum-v1").unwrapped, (2,)), skip_render_check=True)


@pytest.mark.parametrize(
    ("indices", "error", "message"),
    [
        ([], ValueError, r"indices must hold at least one index, got 0 indices"),
        ([0, 4], ValueError, r"indices must lie in \[0, 4\), got 4"),
        ([-1], ValueError, r"indices must lie in \[0, 4\), got -1"),
        ([1, 2, 1], ValueError, r"indices must be distinct, got \[1\] more than once"),
        ([0, 1.5], TypeError, r"indices must be integers, got 1.5 \(float\) at position 1"),
        ([True], TypeError, r"indices must be integers, got True \(bool\) at position 0"),
        (1, TypeError, r"indices must be a list, tuple, range or 1-D integer array, got 1 \(int\)"),
        (None, TypeError, r"indices must be a list, .*, got None \(NoneType\)"),
        ({0: 1}, TypeError, r"indices must be a list, .*, got \{0: 1\} \(dict\)"),
        ({0, 1}, TypeError, r"indices must be a list, .*, got \{0, 1\} \(set\)"),
        ("01", TypeError, r"indices must be a list, .*, got '01' \(str\)"),
        (iter([0]), TypeError, r"indices must be a list, .*\(list_iterator\)"),
        (
            np.array([[0, 1]]),
            TypeError,
            r"indices as an array must be 1-D of an integer dtype, got shape \(1, 2\) of dtype",
        ),
        (
            np.array([0.0, 1.0]),
            TypeError,
            r"indices as an array must be 1-D of an integer dtype, got shape \(2,\) of dtype "
            r"float64",
        ),
        (
            np.array([True, False, True, False]),
            TypeError,
            r"indices as an array must be 1-D of an integer dtype, got shape \(4,\) of dtype bool",
        ),
        (np.array([], dtype=np.int64), ValueError, r"indices must hold at least one index"),
    ],
)
def test_mask_index_errors(indices: list[Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        MaskObservation(CountingEnv(size=4), indices)


def test_mask_rejects_non_flat_box() -> None:
    base = CountingEnv()
    base.observation_space = spaces.Box(-1.0, 1.0, shape=(2, 3), dtype=np.float32)
    with pytest.raises(
        ValueError, match=r"expects a 1-D Box observation space, got shape \(2, 3\)"
    ):
        MaskObservation(base, [0])


# ------------------------------------------------------------------------- FlickerObservation
def test_flicker_rate_matches_p() -> None:
    env = FlickerObservation(CountingEnv(), p=0.3)
    obs = _rollout(env, seed=7, steps=5000)
    zeroed = np.all(obs == 0, axis=1)
    kept = ~zeroed
    assert abs(zeroed.mean() - 0.3) < 0.03
    # Flicker is all or nothing, and kept observations are untouched.
    assert np.all(np.all(obs[kept] != 0, axis=1))
    assert obs.dtype == np.float32


def test_flicker_is_reproducible_with_a_seed_and_varies_across_seeds() -> None:
    first = _rollout(FlickerObservation(CountingEnv(), p=0.5), seed=11, steps=200)
    again = _rollout(FlickerObservation(CountingEnv(), p=0.5), seed=11, steps=200)
    other = _rollout(FlickerObservation(CountingEnv(), p=0.5), seed=12, steps=200)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_flicker_does_not_touch_the_global_rng() -> None:
    np.random.seed(0)
    expected = np.random.random()
    np.random.seed(0)
    _rollout(FlickerObservation(CountingEnv(), p=0.5), seed=1, steps=100)
    assert np.random.random() == expected


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_flicker_extremes(p: float) -> None:
    obs = _rollout(FlickerObservation(CountingEnv(), p=p), seed=0, steps=50)
    assert np.all(obs == 0) if p == 1.0 else np.all(obs != 0)


@_quiet
def test_flicker_passes_check_env() -> None:
    check_env(FlickerObservation(gym.make("Pendulum-v1").unwrapped, 0.5), skip_render_check=True)


@pytest.mark.parametrize(
    ("p", "error", "message"),
    [
        (-0.1, ValueError, r"p must lie in \[0, 1\], got -0.1"),
        (1.5, ValueError, r"p must lie in \[0, 1\], got 1.5"),
        (float("nan"), ValueError, r"p must lie in \[0, 1\], got nan"),
        ("0.5", TypeError, r"p must be a real number, got '0.5' \(str\)"),
        (True, TypeError, r"p must be a real number, got True \(bool\)"),
    ],
)
def test_flicker_p_errors(p: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        FlickerObservation(CountingEnv(), p)


def test_flicker_rejects_bounds_without_zero() -> None:
    with pytest.raises(ValueError, match=r"bounds that contain 0, got low=.*1\..*high="):
        FlickerObservation(CountingEnv(low=1.0, high=2.0), 0.5)


@pytest.mark.parametrize(
    ("seed", "error", "message"),
    [
        (-1, ValueError, r"seed must be None or a Python integer >= 0, got -1$"),
        (1.5, TypeError, r"seed must be None or a Python integer >= 0, got 1.5 \(float\)"),
        (True, TypeError, r"seed must be None or a Python integer >= 0, got True \(bool\)"),
        (np.int64(3), TypeError, r"Python integer >= 0, got np.int64\(3\) \(int64\)"),
        ("3", TypeError, r"seed must be None or a Python integer >= 0, got '3' \(str\)"),
    ],
)
@pytest.mark.parametrize(
    "wrap",
    [lambda env: FlickerObservation(env, 0.5), lambda env: GaussianObservationNoise(env, 0.1)],
    ids=["flicker", "noise"],
)
def test_random_wrappers_seed_errors(
    wrap: Any, seed: Any, error: type[Exception], message: str
) -> None:
    env = wrap(gym.make("Pendulum-v1"))
    with pytest.raises(error, match=message):
        env.reset(seed=seed)


def test_random_wrappers_take_large_seeds() -> None:
    env = FlickerObservation(CountingEnv(), 0.5)
    env.reset(seed=2**70)
    env.reset(seed=0)


# ------------------------------------------------------------------- GaussianObservationNoise
def test_noise_has_the_requested_std_and_zero_mean() -> None:
    base = CountingEnv(size=3, dtype=np.float64)
    env = GaussianObservationNoise(base, std=0.5)
    noisy = _rollout(env, seed=3, steps=4000)
    clean = _rollout(CountingEnv(size=3, dtype=np.float64), seed=3, steps=4000)
    noise = noisy - clean
    assert noisy.dtype == np.float64
    assert np.all(np.abs(noise.mean(axis=0)) < 0.05)
    assert np.all(np.abs(noise.std(axis=0) - 0.5) < 0.03)
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.1


def test_noise_keeps_dtype_and_shape_and_unbounds_the_space() -> None:
    env = GaussianObservationNoise(gym.make("Pendulum-v1"), std=0.1)
    assert env.observation_space.shape == (3,)
    assert env.observation_space.dtype == np.float32
    assert np.all(np.isinf(env.observation_space.low)) and np.all(env.observation_space.high > 0)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (3,)


def test_noise_zero_std_is_the_identity() -> None:
    noisy = _rollout(GaussianObservationNoise(CountingEnv(), std=0.0), seed=0, steps=20)
    np.testing.assert_array_equal(noisy, _rollout(CountingEnv(), seed=0, steps=20))


def test_noise_is_reproducible_with_a_seed_and_varies_across_seeds() -> None:
    first = _rollout(GaussianObservationNoise(CountingEnv(), 1.0), seed=5, steps=50)
    again = _rollout(GaussianObservationNoise(CountingEnv(), 1.0), seed=5, steps=50)
    other = _rollout(GaussianObservationNoise(CountingEnv(), 1.0), seed=6, steps=50)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_noise_stream_is_independent_of_the_flicker_stream() -> None:
    env = GaussianObservationNoise(FlickerObservation(CountingEnv(), 0.5), 1.0)
    flicker_only = _rollout(FlickerObservation(CountingEnv(), 0.5), seed=9, steps=100)
    noisy = _rollout(env, seed=9, steps=100)
    # Same flicker pattern with or without noise on top: the two generators do not interact.
    # Entry 3 is >= 1000 when kept and pure N(0, 1) noise when zeroed.
    np.testing.assert_array_equal(np.abs(noisy[:, 3]) < 100, np.all(flicker_only == 0, axis=1))


def test_a_single_wrapper_keeps_its_stream() -> None:
    # The draws a single flicker or noise wrapper has always made: registered tasks and runs
    # depend on them.
    obs = _rollout(FlickerObservation(CountingEnv(), 0.5), seed=11, steps=24)
    kept = "".join("0" if np.all(o == 0) else "1" for o in obs)
    assert kept == "111101000001000111011100"
    clean = _rollout(CountingEnv(size=2, dtype=np.float64), seed=5, steps=2)
    noisy = _rollout(GaussianObservationNoise(CountingEnv(size=2, dtype=np.float64), 1.0), 5, 2)
    np.testing.assert_allclose(
        noisy - clean, [[0.24855063, 0.0457273], [0.09670064, -0.41797809]], atol=1e-8
    )


def test_stacked_noise_wrappers_draw_independently() -> None:
    base = CountingEnv(size=3, dtype=np.float64)
    env = GaussianObservationNoise(GaussianObservationNoise(base, std=1.0), std=1.0)
    noise = _rollout(env, seed=3, steps=4000) - _rollout(CountingEnv(size=3, dtype=np.float64),
                                                         seed=3, steps=4000)
    # Independent draws add variances: std sqrt(2) = 1.414 (identical draws would give 2).
    assert np.all(np.abs(noise.std(axis=0) - np.sqrt(2.0)) < 0.05)


def test_stacked_flickers_draw_independently() -> None:
    env = FlickerObservation(FlickerObservation(CountingEnv(), p=0.5), p=0.5)
    zeroed = np.all(_rollout(env, seed=7, steps=5000) == 0, axis=1)
    # Independent draws zero 1 - 0.5**2 = 75% (identical draws would zero 50%).
    assert abs(zeroed.mean() - 0.75) < 0.02
    # The lower copy still draws the single wrapper's stream.
    inner = np.all(_rollout(FlickerObservation(CountingEnv(), p=0.5), seed=7, steps=5000) == 0,
                   axis=1)
    assert np.all(zeroed[inner])


def test_copies_separated_by_another_wrapper_draw_independently() -> None:
    env = FlickerObservation(
        GaussianObservationNoise(FlickerObservation(CountingEnv(), p=0.5), 0.1), p=0.5
    )
    zeroed = np.all(np.abs(_rollout(env, seed=7, steps=5000)) < 1.0, axis=1)
    assert abs(zeroed.mean() - 0.75) < 0.02


@_quiet
def test_noise_passes_check_env() -> None:
    check_env(
        GaussianObservationNoise(gym.make("Pendulum-v1").unwrapped, 0.1), skip_render_check=True
    )


@pytest.mark.parametrize(
    ("std", "error", "message"),
    [
        (-1.0, ValueError, r"std must be finite and >= 0, got -1.0"),
        (float("inf"), ValueError, r"std must be finite and >= 0, got inf"),
        (None, TypeError, r"std must be a real number, got None \(NoneType\)"),
        # finite, but noisy float32 observations would be infinite (before: accepted, inf out)
        (1e39, ValueError, r"std must be at most 3.4e\+36 for float32 observations \(a "
                           r"hundredth of the dtype's largest value.*got 1e\+39"),
    ],
)
def test_noise_std_errors(std: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        GaussianObservationNoise(CountingEnv(), std)


def test_noise_std_at_the_float32_limit_keeps_observations_finite() -> None:
    env = GaussianObservationNoise(CountingEnv(), 3.4e36)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and np.isfinite(obs).all()
    assert GaussianObservationNoise(CountingEnv(dtype=np.float64), 1e39).std == 1e39


def test_noise_rejects_integer_observations() -> None:
    base = CountingEnv()
    base.observation_space = spaces.Box(0, 255, shape=(4,), dtype=np.uint8)
    with pytest.raises(TypeError, match=r"expects a floating observation dtype, got uint8"):
        GaussianObservationNoise(base, 1.0)
