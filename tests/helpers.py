"""Test helpers: the agent's losses called the way ``DDPG.update`` calls them, a sequence
buffer built from plain sizes, and the bench scripts imported as modules."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from agents import losses
from agents.ddpg import DDPG
from agents.networks import AgentState
from rlkit.buffers import SequenceBatch, SequenceReplayBuffer
from rlkit.config import ReplayConfig


def critic_states(agent: DDPG, batch: SequenceBatch) -> tuple:
    return (None,) * len(agent.critics) if batch.states is None else batch.states.critics


def td_target(agent: DDPG, batch: SequenceBatch) -> torch.Tensor:
    cfg = agent.cfg
    noise = losses.TargetNoise(cfg.target_noise, cfg.target_noise_clip, agent.noise_gen)
    return losses.td_target(agent.actor_target, agent.critic_targets, batch, batch.states,
                            cfg.actor_inputs, cfg.critic_inputs, cfg.gamma, noise,
                            cfg.n_step, cfg.reward_scale)


def critic_loss(agent: DDPG, batch: SequenceBatch, target: torch.Tensor):
    return losses.critic_loss(agent.critics, batch, target, critic_states(agent, batch),
                              agent.cfg.critic_inputs)


def actor_loss(agent: DDPG, batch: SequenceBatch, enc: losses.CriticEncoding) -> torch.Tensor:
    cfg = agent.cfg
    state = None if batch.states is None else batch.states.actor
    encode = not cfg.shared_encoder or cfg.shared_encoder_actor_grad
    return losses.actor_loss(agent.actor, agent.critics[0], batch, state, enc, cfg.actor_inputs,
                             encode=encode, pre_tanh_penalty=cfg.pre_tanh_penalty,
                             pre_tanh_margin=cfg.pre_tanh_margin,
                             min_with=agent._actor_min_with).loss


def seq_buffer(capacity, num_envs, obs_dim, action_dim, seq_len, generator=None,
               state_mode="zero", burn_in=0, state_shapes=(), window_start="any",
               state_every=None) -> SequenceReplayBuffer:
    """A sequence buffer; stored states are given by their per-row shapes, one tuple of
    shapes per group: the actor's, then each critic's (an agent's state)."""
    cfg = ReplayConfig(buffer_size=capacity, batch_size=1, seq_len=seq_len, burn_in=burn_in,
                       state_mode=state_mode, window_start=window_start,
                       state_every=state_every)
    groups = [tuple(torch.zeros(1, *s) for s in g) for g in state_shapes]
    example = AgentState(groups[0], tuple(groups[1:])) if groups else None
    return SequenceReplayBuffer(cfg, num_envs=num_envs, obs_dim=obs_dim, action_dim=action_dim,
                                generator=generator, state_example=example)


def losses_of(agent: DDPG, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic loss, actor loss) of ``batch`` at the agent's current parameters, as the
    agent's update takes them (its own ``_critic_fn`` and ``_actor_fn``)."""
    closs, _, enc = agent._critic_fn(batch)
    return closs, agent._actor_fn(batch, enc).loss


BENCH_MODULES = ("argchecks", "backbones", "throughput", "gpu_check")
"""The bench modules that import one another, each after those it imports."""


@functools.cache
def bench_script(name: str) -> ModuleType:
    """``bench/NAME.py`` imported under its own name, as ``python bench/NAME.py`` sees it and
    the bench modules beside it: those before it in :data:`BENCH_MODULES` are imported the same
    way first, so its ``from argchecks import ...`` finds them (no ``sys.path`` edit)."""
    if name in BENCH_MODULES:
        for sibling in BENCH_MODULES[:BENCH_MODULES.index(name)]:
            bench_script(sibling)
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
