"""Evaluation: the deterministic policy in step mode, episode by episode, with its state carried.

:func:`evaluate` runs any agent with ``initial_state`` and ``act`` (the training loop's periodic
evaluations and ``python -m agents.evaluate RUN_DIR`` both use it) and returns statistics;
:func:`episode_rewards` gives the same episodes' rewards step by step; :func:`make_eval_env`
builds the env, recording MP4s through Gymnasium's ``RecordVideo`` when asked (needs
``moviepy``; MuJoCo tasks render headless with ``MUJOCO_GL=egl`` or ``osmesa``).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rlkit.faults import EnvError
from rlkit.fields import is_count


class Policy(Protocol):
    """What evaluation needs of an agent."""

    def initial_state(self, batch_size: int) -> Any: ...

    def act(self, obs: Tensor, state: Any, prev_action: Tensor | None = None,
            prev_reward: Tensor | None = None) -> tuple[Tensor, Any]: ...


class RenderError(RuntimeError):
    """The environment cannot render frames here (no renderer or missing package)."""


def episode_rewards(agent: Policy, env: gym.Env, episodes: int, device: torch.device,
                    seed: int | None = None) -> list[tuple[list[float], dict]]:
    """Run the deterministic policy (step mode, state carried) for ``episodes`` episodes.

    Episode ``k`` resets ``env`` with ``seed + k``; nothing here draws from the training loop's
    generators, so evaluating does not change what training does next. An env without a time
    limit (:func:`time_limit`) has an episode that reaches :data:`EVAL_STEP_LIMIT` steps cut
    there, with a warning, as :func:`eval_time_limited` cuts them (a policy that never ends an
    episode would otherwise never let the evaluation finish).

    Returns:
        Per episode, its rewards step by step and the ``info`` of its last step.

    Raises:
        ValueError: ``episodes`` is not an integer >= 1.
    """
    if not is_count(episodes):
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    out = []
    act_dim = env.action_space.shape[0]
    limit = EVAL_STEP_LIMIT if time_limit(env) is None else None
    for ep in range(episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + ep)
        state = agent.initial_state(1)
        prev_a = torch.zeros(1, act_dim, device=device)
        prev_r = torch.zeros(1, device=device)
        done, rewards, info = False, [], {}
        while not done:
            o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)[None]
            a, state = agent.act(o, state, prev_a, prev_r)
            action = a[0].cpu().numpy()
            obs, r, term, trunc, info = env.step(action)
            rewards.append(float(r))
            done = bool(term or trunc)
            if not done and limit is not None and len(rewards) >= limit:
                warnings.warn(f"{_env_name(env)} has no time limit (register it with "
                              f"max_episode_steps): evaluation episode {ep} was cut at {limit} "
                              f"steps", stacklevel=2)
                done = True
            prev_a, prev_r = a, torch.tensor([float(r)], device=device)
        out.append((rewards, info))
    return out


def evaluate(agent: Policy, env: gym.Env, episodes: int, device: torch.device,
             seed: int | None = None) -> dict[str, float]:
    """Return statistics of :func:`episode_rewards` (same episodes, same policy).

    Returns:
        ``eval_return_mean``, ``eval_return_std``, ``eval_length_mean`` and, where the env
        reports ``success`` / ``is_success`` in ``info``, ``eval_success_rate``.
    """
    runs = episode_rewards(agent, env, episodes, device, seed)
    returns = [sum(rewards, 0.0) for rewards, _ in runs]  # summed in step order
    successes = [float(s) for _, info in runs
                 if (s := info.get("success", info.get("is_success"))) is not None]
    out = {
        "eval_return_mean": float(np.mean(returns)),
        "eval_return_std": float(np.std(returns)),
        "eval_length_mean": float(np.mean([len(rewards) for rewards, _ in runs])),
    }
    if successes:
        out["eval_success_rate"] = float(np.mean(successes))
    return out


EVAL_STEP_LIMIT = 10_000
"""Evaluation episodes of an env without a time limit of its own end after this many steps."""


def time_limit(env: gym.Env) -> int | None:
    """The most steps an episode of ``env`` takes: its spec's ``max_episode_steps``, else a
    ``TimeLimit`` wrapper's anywhere in its chain of wrappers (also one inside an env that
    wraps ``gym.make(...)`` in its entry point), else the env's own ``max_episode_steps``;
    ``None`` when none says."""
    if env.spec is not None and env.spec.max_episode_steps:
        return env.spec.max_episode_steps
    inner, seen = env, set()
    while isinstance(inner, gym.Env) and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, gym.wrappers.TimeLimit):
            return getattr(inner, "_max_episode_steps", None)
        inner = getattr(inner, "env", None)
    return getattr(env.unwrapped, "max_episode_steps", None)


def eval_time_limited(env: gym.Env) -> gym.Env:
    """``env``, or, when no time limit is known (:func:`time_limit`), ``env`` cut at
    :data:`EVAL_STEP_LIMIT` steps (truncated), with a warning: an episode the policy never
    ends would otherwise never let the evaluation finish."""
    if time_limit(env):
        return env
    warnings.warn(f"{_env_name(env)} has no time limit (register it with max_episode_steps): "
                  f"evaluation episodes are cut at {EVAL_STEP_LIMIT} steps", stacklevel=3)
    return gym.wrappers.TimeLimit(env, EVAL_STEP_LIMIT)


def _env_name(env: gym.Env) -> str:
    """``env 'ID'`` (its registered id, else its class) in a message."""
    return f"env {env.spec.id if env.spec is not None else type(env.unwrapped).__name__!r}"


class EnvModuleError(ValueError):
    """The module of a ``module:EnvId`` task (or a registry module) is not on the import path:
    bad input, named with the id."""


def import_env_modules(modules: tuple[str, ...], env_id: str) -> None:
    """Import the modules an env id needs first (they register it; ``module`` of
    ``module:EnvId``), each once.

    Raises:
        EnvModuleError: a module that is not on the import path (bad input), named with the id.
        rlkit.faults.EnvError: the module's own code raised while it was imported (a syntax
            error, or an import of its own that failed, included), its traceback kept.
    """
    for module in dict.fromkeys(modules):
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001  (the module's own code failed, or it is missing)
            name = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
            if name is not None and (module == name or module.startswith(name + ".")):
                # the module itself (or a package above it) is missing, not one it imports
                raise EnvModuleError(f"cannot import module {module!r} for --env {env_id}: "
                                     f"{e}; expected a module on the import path (PYTHONPATH, "
                                     f"or the folder of the script run)") from e
            raise EnvError.wrap(e, env_id, f"the import of module {module!r}") from e


def make_eval_env(env_id: str, video_dir: Path | None, imports: tuple[str, ...] = ()
                  ) -> gym.Env:
    """The evaluation env, recording every episode to ``video_dir`` when given; an env
    without a time limit is cut at :data:`EVAL_STEP_LIMIT` steps (with a warning).

    Args:
        env_id: a registered id (``module:EnvId`` imports ``module`` first).
        video_dir: where the MP4s go; ``None``: no video.
        imports: modules to import first (they register ids).

    Raises:
        EnvModuleError: a module that is not on the import path (:func:`import_env_modules`).
        rlkit.faults.EnvError: a module's import, or the env's construction, raised.
        RenderError: ``video_dir`` given and the env cannot render here.
    """
    import_env_modules((*imports, *((env_id.partition(":")[0],) if ":" in env_id else ())),
                       env_id)
    gym_id = env_id.partition(":")[2] or env_id
    try:
        plain = eval_time_limited(gym.make(gym_id))
    except gym.error.Error:
        raise  # an unknown id: Gymnasium's own message
    except Exception as e:  # noqa: BLE001  (the env's own code failed)
        raise EnvError.wrap(e, env_id, "construction") from e
    if video_dir is None:
        return plain
    modes = plain.metadata.get("render_modes")
    plain.close()
    if modes is not None and len(modes) == 0:  # it renders nothing: no backend can help
        raise RenderError(f"{env_id!r} does not render frames: its render modes are [] (its "
                          "metadata); a video needs a task that renders 'rgb_array'")
    try:
        env = eval_time_limited(gym.make(gym_id, render_mode="rgb_array"))
        env.reset(seed=0)
        frame = env.render()
    except Exception as e:  # noqa: BLE001  (any backend failure means: no renderer)
        raise RenderError(
            f"cannot render {env_id!r} here ({type(e).__name__}: {e}); for MuJoCo tasks set "
            "MUJOCO_GL=egl or MUJOCO_GL=osmesa, for classic control install pygame"
        ) from e
    if not isinstance(frame, np.ndarray):
        raise RenderError(f"{env_id!r} returned no rgb_array frame (got {type(frame).__name__})")
    try:
        import moviepy  # noqa: F401
    except ImportError as e:
        raise RenderError("--video needs moviepy: pip install 'rlkit[video]'") from e
    return gym.wrappers.RecordVideo(env, str(video_dir), episode_trigger=lambda _: True,
                                    name_prefix="eval")


__all__ = ["EVAL_STEP_LIMIT", "EnvModuleError", "Policy", "RenderError", "eval_time_limited",
           "evaluate", "import_env_modules", "make_eval_env", "time_limit"]
