"""Snapshots of Gymnasium environments, so that a resumed run continues the same episodes.

A snapshot walks an env from its outermost wrapper to the base env (the ``.env`` chain) and
keeps, for each layer:

- every random generator held as an instance attribute (``numpy.random.Generator``,
  ``numpy.random.RandomState``, ``random.Random``): the env's ``np_random`` and the generators
  of wrappers such as ``envs.wrappers.FlickerObservation``; their states are restored in place;
- every instance attribute holding plain data: numbers, strings, booleans, ``None``, NumPy
  arrays and scalars, tensors, and lists, tuples and string-keyed dicts of those. This covers
  Pendulum's ``state`` and ``last_u``, ``TimeLimit._elapsed_steps``, the order enforcer's and
  checker's flags, and the state of the ``rlkit/`` tasks;
- for a MuJoCo base env (``model`` and ``data`` attributes), the full integration state
  (``mujoco.mj_getState(..., mjSTATE_INTEGRATION)``: time, ``qpos``, ``qvel``, actuator
  activations, the solver's warm start, controls, ...) and the derived arrays of ``data`` as
  the last step left them (body positions, contact forces; not the variable-size constraint
  rows), since some envs read them before the next step.

Anything else an env holds (a Box2D world, a simulator handle, a socket) is not captured; the
snapshot lists those attributes under ``"uncaptured"`` so the caller can restart the episode
instead of continuing it from a half-restored env. Attributes that hold no episode state are
skipped: the wrapped env, spaces, the spec and renderers.

Snapshots are plain data (see :mod:`rlkit.checkpoint`).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import gymnasium as gym
import numpy as np
import torch

_SKIP_NAMES = frozenset({"env", "spec", "_cached_spec", "mujoco_renderer", "viewer",
                         "_viewers", "render_mode"})
_GENERATORS = (np.random.Generator, np.random.RandomState, random.Random)


def _is_plain(value: Any, depth: int = 0) -> bool:
    if depth > 6:
        return False
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return True
    if isinstance(value, np.ndarray | np.generic):
        return np.asarray(value).dtype.kind in "biuf"
    if type(value) in (list, tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _is_mujoco(env: Any) -> bool:
    return type(getattr(env, "model", None)).__name__ == "MjModel" and \
        type(getattr(env, "data", None)).__name__ == "MjData"


def _rng_state(gen: Any) -> dict[str, Any]:
    if isinstance(gen, np.random.Generator):
        return {"kind": "numpy", "state": copy.deepcopy(gen.bit_generator.state)}
    if isinstance(gen, np.random.RandomState):
        return {"kind": "randomstate", "state": gen.get_state(legacy=False)}
    return {"kind": "python", "state": gen.getstate()}


def _set_rng_state(layer: Any, name: str, saved: dict[str, Any]) -> None:
    gen, state = layer.__dict__.get(name), saved["state"]
    if saved["kind"] == "numpy":
        if not (isinstance(gen, np.random.Generator) and
                gen.bit_generator.state["bit_generator"] == state["bit_generator"]):
            gen = np.random.Generator(getattr(np.random, state["bit_generator"])())
        gen.bit_generator.state = state
    elif saved["kind"] == "randomstate":
        gen = gen if isinstance(gen, np.random.RandomState) else np.random.RandomState()
        gen.set_state(state)
    else:
        gen = gen if isinstance(gen, random.Random) else random.Random()
        gen.setstate(state)
    layer.__dict__[name] = gen


def _layers(env: gym.Env) -> list[Any]:
    layers, layer = [], env
    while True:
        layers.append(layer)
        inner = layer.__dict__.get("env")
        if not isinstance(inner, gym.Env):
            return layers
        layer = inner


def _mujoco_state(env: Any) -> dict[str, np.ndarray]:
    import mujoco

    kind = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(env.model, kind), dtype=np.float64)
    mujoco.mj_getState(env.model, env.data, state, kind)
    # Derived quantities as the last step left them (envs read some before the next step,
    # e.g. Ant's body position for its forward reward); constraint rows vary in size: skipped.
    derived = {}
    for name in dir(env.data):
        value = getattr(env.data, name, None) if not name.startswith(("_", "efc_")) else None
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            derived[name] = value.copy()
    return {"integration": state, "derived": derived}


def _set_mujoco_state(env: Any, saved: dict[str, Any]) -> None:
    import mujoco

    kind = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.asarray(saved["integration"], dtype=np.float64)
    size = mujoco.mj_stateSize(env.model, kind)
    if state.shape != (size,):
        raise ValueError(f"MuJoCo state has {state.shape[0]} entries in the snapshot, the "
                         f"model needs {size}")
    mujoco.mj_setState(env.model, env.data, state, kind)
    mujoco.mj_forward(env.model, env.data)
    for name, value in saved["derived"].items():
        target = getattr(env.data, name, None)
        if isinstance(target, np.ndarray) and target.shape == value.shape:
            target[...] = value
    mujoco.mj_setState(env.model, env.data, state, kind)


def snapshot_env(env: gym.Env) -> dict[str, Any]:
    """The state of ``env`` and its wrappers (see the module docstring).

    Returns:
        ``{"layers": [{"type", "attrs", "rngs"}, ...], "mujoco": array or None,
        "uncaptured": ["Type.attribute", ...]}``.
    """
    layers, uncaptured, mujoco_state = [], [], None
    for layer in _layers(env):
        attrs, rngs = {}, {}
        mujoco_layer = _is_mujoco(layer)
        for name, value in vars(layer).items():
            if name in _SKIP_NAMES or isinstance(value, gym.Space | gym.envs.registration.EnvSpec):
                continue
            if mujoco_layer and name in ("model", "data"):
                continue
            if isinstance(value, _GENERATORS):
                rngs[name] = _rng_state(value)
            elif _is_plain(value):
                attrs[name] = copy.deepcopy(value)
            elif not callable(value):
                uncaptured.append(f"{type(layer).__name__}.{name}")
        if mujoco_layer:
            mujoco_state = _mujoco_state(layer)
        layers.append({"type": type(layer).__name__, "attrs": attrs, "rngs": rngs})
    return {"layers": layers, "mujoco": mujoco_state, "uncaptured": uncaptured}


def restore_env(env: gym.Env, snapshot: dict[str, Any]) -> None:
    """Put ``env`` (built like the snapshotted one, and reset once) in the snapshot's state.

    Raises:
        ValueError: the wrapper chain differs from the snapshot's (names both).
    """
    layers = _layers(env)
    have = [type(layer).__name__ for layer in layers]
    want = [s["type"] for s in snapshot["layers"]]
    if have != want:
        raise ValueError(f"env wrapper chain {have} differs from the checkpoint's {want}")
    for layer, saved in zip(layers, snapshot["layers"]):
        for name, value in saved["attrs"].items():
            layer.__dict__[name] = copy.deepcopy(value)
        for name, state in saved["rngs"].items():
            _set_rng_state(layer, name, state)
    if snapshot["mujoco"] is not None:
        if not _is_mujoco(layers[-1]):
            raise ValueError("the checkpoint holds a MuJoCo state but the env is not MuJoCo")
        _set_mujoco_state(layers[-1], snapshot["mujoco"])


def sub_envs(envs: gym.vector.VectorEnv) -> list[gym.Env] | None:
    """The sub-envs of a vector env that keeps them in this process (``SyncVectorEnv``), else
    ``None`` (their state cannot be captured)."""
    subs = getattr(envs, "envs", None)
    return list(subs) if isinstance(subs, list | tuple) else None
