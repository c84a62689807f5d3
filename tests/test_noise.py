import numpy as np
import pytest

from rlkit.noise import GaussianNoise, OrnsteinUhlenbeckNoise, make_noise


def test_ou_mean_reverts_toward_mu():
    ou = OrnsteinUhlenbeckNoise(1, 1, sigma=0.0, rng=np.random.default_rng(0), theta=0.5, mu=1.0,
                                dt=0.1, x0=5.0)
    xs = [ou.sample()[0, 0] for _ in range(200)]
    # deterministic part: x_k - mu = (x0 - mu) * (1 - theta dt)^k
    assert xs[0] == pytest.approx(1.0 + 4.0 * 0.95)
    assert xs[-1] == pytest.approx(1.0 + 4.0 * 0.95**200)
    ou = OrnsteinUhlenbeckNoise(1, 3, sigma=0.3, rng=np.random.default_rng(0), theta=0.15, mu=0.0,
                                dt=1e-2)
    samples = np.stack([ou.sample() for _ in range(20000)])
    # stationary std of OU = sigma / sqrt(2 theta)
    assert samples[5000:].mean() == pytest.approx(0.0, abs=0.1)
    assert samples[5000:].std() == pytest.approx(0.3 / np.sqrt(0.3), rel=0.25)


def test_ou_per_env_reset():
    ou = OrnsteinUhlenbeckNoise(3, 2, sigma=1.0, rng=np.random.default_rng(0))
    for _ in range(10):
        ou.sample()
    before = ou.x.copy()
    ou.reset(np.array([False, True, False]))
    assert np.all(ou.x[1] == 0.0)
    assert np.array_equal(ou.x[[0, 2]], before[[0, 2]])
    with pytest.raises(ValueError, match=r"done_mask must have shape \(3,\), got \(2,\)"):
        ou.reset(np.array([True, False]))


def test_noise_reproducible_with_seed_and_not_global():
    a = OrnsteinUhlenbeckNoise(2, 2, 0.2, np.random.default_rng(7))
    np.random.seed(0)
    xa = [a.sample() for _ in range(5)]
    b = OrnsteinUhlenbeckNoise(2, 2, 0.2, np.random.default_rng(7))
    np.random.seed(123)  # the global generator plays no part
    xb = [b.sample() for _ in range(5)]
    assert np.array_equal(np.stack(xa), np.stack(xb))
    g1 = GaussianNoise(2, 2, 0.1, np.random.default_rng(1)).sample()
    g2 = GaussianNoise(2, 2, 0.1, np.random.default_rng(1)).sample()
    assert np.array_equal(g1, g2)


def test_noise_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"sigma must be a finite number >= 0.0, got -1.0"):
        GaussianNoise(1, 1, -1.0, rng)
    with pytest.raises(ValueError, match="num_envs must be a positive integer, got 0"):
        OrnsteinUhlenbeckNoise(0, 1, 0.1, rng)
    with pytest.raises(ValueError, match="unknown noise 'pink'"):
        make_noise("pink", 1, 1, 0.1, rng)
    # each refused by name where it failed later in numpy (or sampled NaN) before
    for args, kwargs, said in (
            ((1.5, 1, 0.1, rng), {}, "num_envs must be a positive integer, got 1.5"),
            (("2", 1, 0.1, rng), {}, "num_envs must be a positive integer, got '2'"),
            ((1, 1, 0.1, None), {}, r"rng must be a numpy.random.Generator of the process's "
                                    r"own \(never the global one\), got NoneType"),
            ((1, 1, 0.1, 0), {}, "rng must be a numpy.random.Generator .*got int"),
            ((1, 1, float("nan"), rng), {}, "sigma must be a finite number >= 0.0, got nan"),
            ((1, 1, 0.1, rng), {"x0": float("nan")}, "x0 must be a finite number, got nan"),
            ((1, 1, 0.1, rng), {"mu": float("inf")}, "mu must be a finite number, got inf"),
            ((1, 1, 0.1, rng), {"theta": 0.0}, "theta must be a finite number > 0.0, got 0.0"),
            ((1, 1, 0.1, rng), {"dt": float("inf")}, "dt must be a finite number > 0.0")):
        with pytest.raises(ValueError, match=said):
            OrnsteinUhlenbeckNoise(*args, **kwargs)
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        GaussianNoise(1, 1, 0.1, 0)
    for noise in (GaussianNoise(2, 1, 0.1, rng), OrnsteinUhlenbeckNoise(2, 1, 0.1, rng)):
        with pytest.raises(ValueError, match=r"done_mask must have shape \(2,\), got \(1,\)"):
            noise.reset(np.array([True]))
        noise.reset(np.array([True, False]))


def test_noise_state_round_trip():
    a = OrnsteinUhlenbeckNoise(2, 2, 0.2, np.random.default_rng(3))
    a.sample()
    st = a.state_dict()
    b = OrnsteinUhlenbeckNoise(2, 2, 0.2, np.random.default_rng(99))
    b.load_state_dict(st)
    assert np.array_equal(a.sample(), b.sample())
