"""DDPG's losses as plain functions: they return losses and leave every optimizer step, loss
scaling and target update to the caller (:meth:`agents.ddpg.DDPG.update`).

Every function works on a :class:`rlkit.buffers.SequenceBatch` of B windows of L steps
(L = 1 for transitions) and returns per-step quantities masked by ``batch.mask``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from agents.networks import Actor, AgentState, Critic, EncoderInputs
from rlkit.backbones import Backbone, State, per_step
from rlkit.buffers import SequenceBatch
from rlkit.losses import masked_mse


class CriticEncoding(NamedTuple):
    """What the actor loss reuses from critic 0's pass over the batch (and the update logs),
    all detached."""

    h: Tensor
    """The encoding ``(B, L, H)``."""
    pre: Tensor
    """The head's first layer on ``[h, batch action]`` before its activation ``(B, L, hidden)``."""
    others: tuple[Tensor, ...] = ()
    """The same first-layer products of the other critics, in order (for a Q taken as the
    minimum over critics)."""
    predict_loss: Tensor | None = None
    """Critic 0's encoder's :func:`prediction_loss`, unweighted (``None``: no predictor)."""


class TargetNoise(NamedTuple):
    """TD3's target policy smoothing: clipped Gaussian noise on the target actions."""

    std: float
    """Noise std as a fraction of the action half-range (0: off)."""
    clip: float
    """Clip of the noise, same unit."""
    generator: torch.Generator | None


def first_needed(encoder: Backbone) -> int:
    """The first step of a window ``(B, L + 1, D)`` that the target pass must encode: 0 for a
    memory encoder (it reads the window from its start state), 1 for a memoryless one (it needs
    only the next observations)."""
    return 0 if encoder.has_memory else 1


def n_step_returns(reward: Tensor, terminated: Tensor, truncated: Tensor, mask: Tensor,
                   next_q: Tensor, gamma: float | Tensor, n: int) -> Tensor:
    """n-step TD targets along each window, ``(B, L)``: for step t,
    ``r_t + gamma r_{t+1} + ... + gamma^{m-1} r_{t+m-1} + gamma^m Q'_{t+m-1}`` where
    ``Q'_s`` (``next_q[:, s]``) is the target critic at the observation after step s and
    ``m <= n`` stops early at the episode's end (a terminal step adds no ``Q'``, a truncated
    one bootstraps), at the last loss-carrying step before padding and at the window's end.
    ``n = 1`` is the one-step target. The rewards in between come from the behaviour policy
    (uncorrected n-step returns, as in D4PG and Rainbow)."""
    discount = gamma * (1.0 - terminated)  # (B, L): 0 after a terminal step
    target = reward + discount * next_q  # (B, L): m = 1
    if n == 1:
        return target
    # stop_t: no step t + 1 to continue with (episode end, padding after t, or window end)
    after = torch.cat([mask[:, 1:], mask.new_zeros(mask.shape[0], 1)], dim=1)  # (B, L)
    stop = (terminated > 0) | (truncated > 0) | (after == 0)
    for _ in range(n - 1):  # target of m + 1 steps from targets of m steps, one shift each
        later = torch.cat([target[:, 1:], target[:, -1:]], dim=1)  # (B, L): step t + 1's
        target = reward + discount * torch.where(stop, next_q, later)
    return target


def td_target(actor_target: Actor, critic_targets: nn.ModuleList, batch: SequenceBatch,
              states: AgentState | None, actor_inputs: EncoderInputs,
              critic_inputs: EncoderInputs, gamma: float | Tensor, noise: TargetNoise,
              n_step: int = 1, reward_scale: float = 1.0) -> Tensor:
    """``s r_t + gamma * (1 - terminated_t) * min_i Q'_i(h'_{t+1}, mu'(h'_{t+1}))``, ``(B, L)``
    with ``s = reward_scale`` (``n_step > 1``: the n-step form of :func:`n_step_returns`).

    Target networks encode the same window as the online ones, from the same start states.
    ``truncated`` steps bootstrap (the time limit is not part of the task).
    """
    a_state = None if states is None else states.actor
    c_states = (None,) * len(critic_targets) if states is None else states.critics
    encoded: dict[int, Tensor] = {}

    def encode(encoder: Backbone, x: Tensor, state: State | None) -> Tensor:
        """Encodings of steps 1 .. L, ``(B, L, H)``; a target encoder shared by actor and
        critics (``shared_encoder``) or by the critics (``critics_share_encoder``) encodes the
        window once (its users carry one state: equal values, recorded apart)."""
        if id(encoder) not in encoded:
            first = first_needed(encoder)
            encoded[id(encoder)] = encoder(x[:, first:], state)[0][:, 1 - first:]
        return encoded[id(encoder)]

    with torch.no_grad():
        x = actor_inputs(batch.obs, batch.prev_action, batch.prev_reward)  # (B, L + 1, D)
        next_action = actor_target.act_on(encode(actor_target.encoder, x, a_state))  # (B, L, A)
        if noise.std > 0:
            scale = actor_target.scale
            eps = torch.randn(next_action.shape, device=next_action.device,
                              generator=noise.generator) * noise.std
            eps = eps.clamp(-noise.clip, noise.clip) * scale
            low, high = actor_target.center - scale, actor_target.center + scale
            next_action = torch.max(torch.min(next_action + eps, high), low)  # (B, L, A)
        x = critic_inputs(batch.obs, batch.prev_action, batch.prev_reward)
        qs = [critic.q(encode(critic.encoder, x, s), next_action)  # (B, L)
              for critic, s in zip(critic_targets, c_states)]
        next_q = torch.stack(qs).min(0).values if len(qs) > 1 else qs[0]
        reward = batch.reward if reward_scale == 1.0 else batch.reward * reward_scale
        return n_step_returns(reward, batch.terminated, batch.truncated, batch.mask, next_q,
                              gamma, n_step)


def prediction_loss(predictor: nn.Module, h: Tensor, batch: SequenceBatch) -> Tensor:
    """Masked mean squared error of ``predictor([h_t, a_t])`` against ``[o_{t+1}, r_t]``, the
    next observation (as the encoder sees it: normalised with ``input_norm``) and the reward,
    averaged over their ``obs_dim + 1`` entries and the loss-carrying steps.

    An auxiliary loss on an encoding ``h`` ``(B, L, H)`` (``DDPGConfig.predict_weight``): what
    the next step depends on must be in ``h``. A terminal or truncated step's next
    observation is the one the env returned with it (``batch.obs[:, t + 1]``).
    """
    x = torch.cat([h, batch.action.to(h.dtype)], dim=-1)  # (B, L, H + A)
    pred = per_step(predictor, x).float()  # (B, L, obs_dim + 1)
    want = torch.cat([batch.obs[:, 1:], batch.reward[..., None]], dim=-1)  # (B, L, obs_dim + 1)
    err = (pred - want.float()).pow(2).mean(-1)  # (B, L)
    return (err * batch.mask).sum() / batch.mask.sum().clamp_min(1.0)


def critic_loss(critics: nn.ModuleList, batch: SequenceBatch, target: Tensor,
                critic_states: tuple[State | None, ...], critic_inputs: EncoderInputs,
                predict_weight: float = 0.0) -> tuple[Tensor, Tensor, CriticEncoding]:
    """Masked mean squared TD error, summed over critics. Critics on one encoder
    (``critics_share_encoder``) share its state and encode the window once; both losses train
    it. With ``predict_weight`` each encoder's :func:`prediction_loss` (through the predictor
    of the first critic on it) is added, times the weight.

    Returns:
        ``(loss, q, enc)``: the loss, critic 0's Q ``(B, L)`` and its :class:`CriticEncoding`
        (detached), which the actor loss reuses instead of encoding the window again.
    """
    x = critic_inputs(batch.obs, batch.prev_action, batch.prev_reward)[:, :-1]  # (B, L, D)
    loss, q0, h0, pres = 0.0, None, None, []
    encoded: dict[int, Tensor] = {}  # critics on one encoder (one state) encode once
    predicted = None
    for critic, s in zip(critics, critic_states):
        if id(critic.encoder) not in encoded:
            encoded[id(critic.encoder)] = h = critic.encoder(x, s)[0]
            if predict_weight > 0 and critic.predictor is not None:
                aux = prediction_loss(critic.predictor, h, batch)
                loss = loss + predict_weight * aux
                predicted = aux.detach() if predicted is None else predicted
        h = encoded[id(critic.encoder)]  # (B, L, H)
        pre = critic.pre(h, batch.action)  # (B, L, hidden)
        q = critic.q_from_pre(pre)  # (B, L)
        loss = loss + masked_mse(q, target, batch.mask)
        pres.append(pre.detach())
        if q0 is None:
            q0, h0 = q, h.detach()
    return loss, q0, CriticEncoding(h0, pres[0], tuple(pres[1:]), predicted)


class ActorLoss(NamedTuple):
    """The actor loss and the actor's pre-tanh outputs it was taken at."""

    loss: Tensor
    """``-Q(h, mu)`` (plus the pre-tanh penalty) averaged over masked steps."""
    pre_tanh: Tensor
    """The actor head's outputs before the tanh ``(B, L, A)`` (for saturation metrics)."""
    predict_loss: Tensor | None = None
    """The actor's encoder's :func:`prediction_loss`, unweighted and detached (``None``: not
    taken)."""


def actor_loss(actor: Actor, critic: Critic, batch: SequenceBatch, actor_state: State | None,
               critic_enc: CriticEncoding, actor_inputs: EncoderInputs,
               encode: bool = True, pre_tanh_penalty: float = 0.0,
               pre_tanh_margin: float = 0.0, squash_grad: str = "tanh",
               min_with: tuple[Critic, ...] = (), predict_weight: float = 0.0) -> ActorLoss:
    """``-Q(h, mu(.))`` averaged over masked steps, through ``critic`` held fixed (with
    ``min_with``: ``Q`` is the minimum over ``critic`` and those critics).

    Q is the critic's at the parameters of the critic loss (``critic_enc`` comes from it), at
    the actor's action, through :meth:`Critic.q_moved`: every critic weight is used detached,
    so the actor loss gives the critic no gradient. ``pre_tanh_penalty`` adds
    ``w * mean(max(|pre_tanh| - margin, 0) ** 2)`` over masked steps, which keeps the tanh out of
    deep saturation (where its gradient vanishes and the policy stops learning).

    Args:
        actor: the actor.
        critic: critic 0.
        batch: the window.
        actor_state: the actor's state at the window start (``None``: initial).
        critic_enc: critic 0's pass over the window, from :func:`critic_loss`.
        actor_inputs: what the actor's encoder sees.
        encode: run the actor's own encoder; ``False`` (a shared encoder the actor loss does
            not train): act on the critic's detached encoding.
        pre_tanh_penalty: weight ``w`` of the penalty (0: off).
        pre_tanh_margin: the magnitude the penalty leaves free.
        squash_grad: the gradient through the tanh, ``tanh`` or ``inverting``
            (:meth:`Actor.squash`).
        min_with: the other critics, in the order of ``critic_enc.others`` (pomdp-baselines'
            TD3 climbs ``min(Q1, Q2)``); empty: critic 0's Q alone (TD3's paper, DDPG).
        predict_weight: weight of the actor's encoder's :func:`prediction_loss`, through the
            actor's predictor (0, or no predictor, or ``encode`` false: not taken).
    """
    if encode:
        x = actor_inputs(batch.obs, batch.prev_action, batch.prev_reward)[:, :-1]
        h, _ = actor.encoder(x, actor_state)  # (B, L, H)
    else:
        h = critic_enc.h  # (B, L, H)
    pre = actor.pre_tanh(h)  # (B, L, A)
    delta = actor.squash(pre, squash_grad) - batch.action  # (B, L, A)
    obs = batch.obs[:, :-1]  # (B, L, obs_dim): what a critic's head embedder sees
    q = critic.q_moved(critic_enc.pre, delta, obs, batch.action)  # (B, L)
    if min_with:
        for c, c_pre in zip(min_with, critic_enc.others, strict=True):
            q = torch.minimum(q, c.q_moved(c_pre, delta, obs, batch.action))
    n = batch.mask.sum().clamp_min(1.0)
    loss = -(q * batch.mask).sum() / n
    if pre_tanh_penalty > 0:
        sq = (pre.float().abs() - pre_tanh_margin).clamp_min(0).pow(2).mean(-1)  # (B, L)
        loss = loss + pre_tanh_penalty * (sq * batch.mask).sum() / n
    predicted = None
    if encode and predict_weight > 0 and actor.predictor is not None:
        aux = prediction_loss(actor.predictor, h, batch)
        loss, predicted = loss + predict_weight * aux, aux.detach()
    return ActorLoss(loss, pre, predicted)


def saturation(pre_tanh: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """How saturated the actor's tanh is over the masked steps (0-dim tensors, no sync):
    ``actor_saturation``, the fraction of action entries within 1% of a bound
    (``|tanh| > 0.99``, where the tanh's gradient is below 0.02), and ``actor_pre_tanh``,
    the mean ``|pre_tanh|``."""
    with torch.no_grad():
        pre = pre_tanh.float()  # (B, L, A)
        m = mask[..., None].expand_as(pre)  # (B, L, A)
        n = m.sum().clamp_min(1.0)
        at_bound = (pre.tanh().abs() > 0.99).float()
        return {"actor_saturation": (at_bound * m).sum() / n,
                "actor_pre_tanh": (pre.abs() * m).sum() / n}


__all__ = ["ActorLoss", "CriticEncoding", "TargetNoise", "actor_loss", "critic_loss", "saturation",
           "first_needed", "n_step_returns", "prediction_loss", "td_target"]
