"""Registration, API conformance and observation layouts of the ``rlkit/`` ids."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.pomdp import POMDP_LAYOUTS, ObservationLayout, make_pomdp, pomdp_id

ENVS_DIR = Path(envs.__file__).resolve().parent

# Warnings that check_env raises about the base tasks or about checking a wrapped env; any
# other warning fails the test.
KNOWN_CHECK_ENV_WARNINGS = (
    "is different from the unwrapped version",  # P/V ids are MaskObservation around the task
    "space minimum value is -infinity",  # MuJoCo observation spaces
    "space maximum value is infinity",
    "we recommend using a symmetric and normalized space",  # Pendulum's action space [-2, 2]
)

# Ground truth read from gymnasium/envs/mujoco/*_v5.py `_get_obs` with default arguments:
# (base id, qpos entries skipped, nq, nv, velocity clip or None).
MUJOCO_TASKS = (
    ("HalfCheetah-v5", 1, 9, 9, None),
    ("Hopper-v5", 1, 6, 6, 10.0),
    ("Walker2d-v5", 1, 9, 9, 10.0),
    ("Ant-v5", 2, 15, 14, None),
)


@pytest.fixture(autouse=True)
def _run_in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MuJoCo appends compiler warnings (HalfCheetah's deprecated ``settotalmass``) to
    ``MUJOCO_LOG.TXT`` in the working directory; keep that file out of the checkout."""
    monkeypatch.chdir(tmp_path)


def test_env_ids_are_exactly_the_registered_rlkit_ids() -> None:
    registered = {env_id for env_id in gym.registry if env_id.startswith("rlkit/")}
    assert set(envs.ENV_IDS) == registered
    assert len(envs.ENV_IDS) == len(set(envs.ENV_IDS)) == 14
    assert "rlkit/MemoryCorridor-v0" in envs.ENV_IDS
    for n in (20, 50, 100):
        assert gym.make(f"rlkit/MemoryCorridor-L{n}-v0").unwrapped.length == n
    for name in ("Pendulum", "HalfCheetah", "Hopper", "Walker2d", "Ant"):
        for kind in ("P", "V"):
            assert f"rlkit/{name}-{kind}-v0" in envs.ENV_IDS


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_check_env_passes(env_id: str) -> None:
    env = gym.make(env_id, disable_env_checker=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    unexpected = [
        str(w.message)
        for w in caught
        if not any(known in str(w.message) for known in KNOWN_CHECK_ENV_WARNINGS)
    ]
    assert unexpected == []
    env.close()


@pytest.mark.parametrize("env_id", envs.POMDP_IDS)
def test_pomdp_ids_keep_the_base_time_limit(env_id: str) -> None:
    expected = 200 if env_id.startswith("rlkit/Pendulum") else 1000
    assert gym.spec(env_id).max_episode_steps == expected
    env = gym.make(env_id)
    assert env.spec is not None and env.spec.max_episode_steps == expected
    env.close()


@pytest.mark.parametrize(("base_id", "skipped", "nq", "nv", "clip"), MUJOCO_TASKS)
def test_mujoco_p_and_v_match_qpos_and_qvel(
    base_id: str, skipped: int, nq: int, nv: int, clip: float | None
) -> None:
    p_env, v_env = make_pomdp(base_id, "p"), make_pomdp(base_id, "v")
    p_obs, _ = p_env.reset(seed=3)
    v_obs, _ = v_env.reset(seed=3)
    rng = np.random.default_rng(0)
    for step in range(4):
        data_p, data_v = p_env.unwrapped.data, v_env.unwrapped.data  # type: ignore[attr-defined]
        assert data_p.qpos.shape == (nq,) and data_v.qvel.shape == (nv,)
        qvel = data_v.qvel if clip is None else np.clip(data_v.qvel, -clip, clip)
        np.testing.assert_array_equal(p_obs, data_p.qpos[skipped:], err_msg=f"step {step}")
        np.testing.assert_array_equal(v_obs, qvel, err_msg=f"step {step}")
        action = rng.uniform(-1.0, 1.0, size=p_env.action_space.shape)
        p_obs, *_ = p_env.step(action)
        v_obs, *_ = v_env.step(action)
    p_env.close()
    v_env.close()


def test_ant_variants_drop_the_contact_forces() -> None:
    layout = POMDP_LAYOUTS["Ant-v5"]
    base = gym.make("Ant-v5")
    assert layout.size == base.observation_space.shape[0] == 105
    base.close()
    assert set(layout.positions).isdisjoint(layout.velocities)
    assert max(layout.velocities) == 26  # 27..104 are cfrc_ext[1:]


def test_mujoco_variants_pass_the_base_tasks_info_through() -> None:
    # Documented in envs.pomdp: the info holds what the variant hides; agents must not read it.
    env = gym.make("rlkit/Hopper-P-v0")
    env.reset(seed=0)
    *_, info = env.step(env.action_space.sample())
    assert info["x_position"] == env.unwrapped.data.qpos[0]
    assert info["x_velocity"] == pytest.approx(info["reward_forward"])
    env.close()


def test_pendulum_views_match_the_state() -> None:
    p_env, v_env = gym.make("rlkit/Pendulum-P-v0"), gym.make("rlkit/Pendulum-V-v0")
    p_obs, _ = p_env.reset(seed=1)
    v_obs, _ = v_env.reset(seed=1)
    for _ in range(3):
        theta, theta_dot = v_env.unwrapped.state  # type: ignore[attr-defined]
        np.testing.assert_allclose(v_obs, [theta_dot], rtol=1e-6)
        theta_p, _ = p_env.unwrapped.state  # type: ignore[attr-defined]
        np.testing.assert_allclose(p_obs, [np.cos(theta_p), np.sin(theta_p)], rtol=1e-6)
        p_obs, *_ = p_env.step(np.array([0.5], dtype=np.float32))
        v_obs, *_ = v_env.step(np.array([0.5], dtype=np.float32))
    assert p_env.observation_space.shape == (2,) and v_env.observation_space.shape == (1,)


def test_layout_changing_kwargs_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"observation shape \(12,\).*expects.*shape \(11,\)"):
        gym.make("rlkit/Hopper-P-v0", exclude_current_positions_from_observation=False)


def test_a_render_mode_the_base_task_lacks_is_rejected_and_its_own_modes_kept() -> None:
    with pytest.raises(ValueError, match=r"render_mode 'bogus' is not one of Pendulum-v1's render "
                                         r"modes \['human', 'rgb_array'\]; expected one of them"):
        gym.make("rlkit/Pendulum-V-v0", render_mode="bogus")
    env = make_pomdp("Pendulum-v1", "p", render_mode="rgb_array")
    assert env.render_mode == "rgb_array" and env.unwrapped.render_mode == "rgb_array"
    frames = gym.make("rlkit/Pendulum-P-v0", render_mode="rgb_array_list")  # as for Pendulum-v1
    frames.reset(seed=0)
    frames.step(frames.action_space.sample())
    assert frames.render_mode == "rgb_array_list" and len(frames.render()) == 2
    assert gym.make("rlkit/Pendulum-P-v0").render_mode is None


def test_a_p_or_v_id_refuses_another_base_task_or_kind() -> None:
    with pytest.raises(ValueError, match=r"rlkit/Pendulum-P-v0 is Pendulum-v1 with positions "
                                         r"only, got kind='v'; expected kind='p' or none"):
        gym.make("rlkit/Pendulum-P-v0", kind="v")
    with pytest.raises(ValueError, match=r"rlkit/Hopper-V-v0 is Hopper-v5 with velocities only, "
                                         r"got base_id='Walker2d-v5'; expected base_id="
                                         r"'Hopper-v5' or none"):
        gym.make("rlkit/Hopper-V-v0", base_id="Walker2d-v5")
    env = gym.make("rlkit/Pendulum-P-v0", kind="p", base_id="Pendulum-v1")  # its own: accepted
    assert env.observation_space.shape == (2,)
    with pytest.raises(TypeError):  # the id's own task is no keyword at all
        gym.make("rlkit/Pendulum-P-v0", id_base="Hopper-v5")
    assert gym.spec("rlkit/Hopper-V-v0").kwargs == {}


def test_other_base_kwargs_are_forwarded() -> None:
    env = gym.make("rlkit/Hopper-V-v0", ctrl_cost_weight=0.5)
    assert env.unwrapped._ctrl_cost_weight == 0.5  # type: ignore[attr-defined]


def test_make_pomdp_and_pomdp_id_errors() -> None:
    assert pomdp_id("Walker2d-v5", "v") == "rlkit/Walker2d-V-v0"
    assert make_pomdp("Pendulum-v1", "v").spec.id == "rlkit/Pendulum-V-v0"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"kind must be 'p' or 'v', got 'x'"):
        pomdp_id("Hopper-v5", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"base_id must be one of .*'Hopper-v5'.*got 'Hopper-v4'"):
        make_pomdp("Hopper-v4", "p")
    # not a string (before: "unhashable type: 'list'")
    with pytest.raises(ValueError, match=r"base_id must be one of .*got \['Hopper-v5'\]"):
        make_pomdp(["Hopper-v5"], "p")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"base_id must be one of .*got \{'id': 'Hopper-v5'\}"):
        pomdp_id({"id": "Hopper-v5"}, "v")  # type: ignore[arg-type]
    # before: an AttributeError from inside gym.make
    with pytest.raises(TypeError, match=r"render_mode must be None or a string \(e.g. "
                                        r"'rgb_array'\), got 5 \(int\)"):
        make_pomdp("Pendulum-v1", "p", render_mode=5)  # type: ignore[arg-type]


def test_an_array_for_the_ids_own_keyword_is_refused_by_the_entry_not_by_numpy() -> None:
    """Before: numpy's 'truth value of an array ... is ambiguous'."""
    with pytest.raises(ValueError, match=r"rlkit/Pendulum-P-v0 is Pendulum-v1 with positions "
                                         r"only, got kind=array\(\['p', 'p'\]"):
        gym.make("rlkit/Pendulum-P-v0", kind=np.array(["p", "p"]))
    with pytest.raises(ValueError, match=r"got base_id=array\(\['Pendulum-v1'\]"):
        gym.make("rlkit/Pendulum-V-v0", base_id=np.array(["Pendulum-v1"]))
    with pytest.raises(ValueError, match=r"rlkit/MemoryCorridor-L20-v0 is the corridor of length "
                                         r"20, got length=array\(\[20, 20\]\)"):
        gym.make("rlkit/MemoryCorridor-L20-v0", length=np.array([20, 20]))
    env = gym.make("rlkit/MemoryCorridor-L20-v0", length=np.int64(20))  # its own, as numpy's
    assert env.unwrapped.length == 20  # type: ignore[attr-defined]


@pytest.mark.parametrize(("args", "error", "message"), [
    ((0, (0,), (1,)), ValueError, r"size must be >= 1, got 0"),
    ((3.0, (0,), (1,)), TypeError, r"size must be an integer, got 3.0"),
    ((3, (0, 7), (1,)), ValueError, r"positions must be distinct indices in \[0, 3\), at least "
                                    r"one, got \(0, 7\)"),
    ((3, (0, 0), (1,)), ValueError, r"positions must be distinct indices"),
    ((3, (0,), ()), ValueError, r"velocities must be distinct indices in \[0, 3\), at least one"),
    ((3, (0, 1), (1, 2)), ValueError, r"positions and velocities must not share an index, got "
                                      r"\[1\] in both"),
    ((3, [0], (1,)), TypeError, r"positions must be a tuple of integers, got \[0\]"),
    ((3, (0,), (1.0,)), TypeError, r"velocities must be a tuple of integers, got \(1.0,\)"),
])
def test_an_observation_layout_that_cannot_describe_an_observation_is_refused(
        args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    """Before: accepted, and refused (or for an overlap, never) only when an env was built."""
    with pytest.raises(error, match=message):
        ObservationLayout(*args)
    assert ObservationLayout(3, (0, 1), (2,)).indices("v") == (2,)


def test_spec_to_json_works_for_the_string_entry_point_and_is_documented_not_to_for_the_others(
        ) -> None:
    assert "MemoryCorridor" in gym.spec("rlkit/MemoryCorridor-v0").to_json()
    with pytest.raises(ValueError, match="Callable found"):
        gym.spec("rlkit/Hopper-P-v0").to_json()
    assert "to_json()" in (envs.__doc__ or "")


def test_memory_corridor_length_kwarg_reaches_the_env() -> None:
    env = gym.make("rlkit/MemoryCorridor-v0", length=100)
    assert env.unwrapped.length == 100  # type: ignore[attr-defined]
    assert gym.make("rlkit/MemoryCorridor-v0").unwrapped.length == 20  # type: ignore[attr-defined]
    for n in (20, 50, 100):
        assert gym.make(f"rlkit/MemoryCorridor-L{n}-v0").unwrapped.length == n  # type: ignore
    assert gym.make("rlkit/MemoryCorridor-L50-v0", length=50).unwrapped.length == 50  # type: ignore
    with pytest.raises(ValueError, match=r"rlkit/MemoryCorridor-L20-v0 is the corridor of length "
                                         r"20, got length=50; expected no length \(or 20\); "
                                         r"another length: gym.make\('rlkit/MemoryCorridor-v0', "
                                         r"length=N\)"):
        gym.make("rlkit/MemoryCorridor-L20-v0", length=50)
    for bad in ("20", True):  # the id's length, but not as an integer
        with pytest.raises(ValueError, match=f"got length={bad!r}; expected no length"):
            gym.make("rlkit/MemoryCorridor-L20-v0", length=bad)
    with pytest.raises(TypeError, match=r"length must be an integer, got 20.0 \(float\)"):
        gym.make("rlkit/MemoryCorridor-L20-v0", length=20.0)
    assert gym.spec("rlkit/MemoryCorridor-L20-v0").kwargs == {}


def test_registration_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(envs)
        importlib.reload(envs)
    assert {env_id for env_id in gym.registry if env_id.startswith("rlkit/")} == set(envs.ENV_IDS)


def test_import_is_cheap_and_pulls_in_neither_mujoco_nor_torch() -> None:
    code = (
        "import sys, envs; "
        "bad = [m for m in ('mujoco', 'torch', 'rlkit', 'agents') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_envs_sources_import_only_stdlib_numpy_and_gymnasium() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "gymnasium", "envs", "__future__"}
    for path in sorted(ENVS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
