"""DDPG with a sequence encoder in front of actor and critic.

Deep Deterministic Policy Gradient (Lillicrap et al., 2015, https://arxiv.org/abs/1509.02971):
a deterministic actor mu(h), a critic Q(h, a), target copies of both updated by Polyak averaging,
and the TD target ``r + gamma * (1 - terminated) * Q'(h', mu'(h'))``. ``truncated`` steps keep
bootstrapping (the time limit is not part of the task). As in the paper, the action enters the
critic after its first layer (here: after the encoder).

The encoder ``h`` is any backbone of :mod:`rlkit.backbones`: the MLP backbone gives classic DDPG
on transitions; a memory backbone (RNN, Transformer, S4, Mamba) encodes the history and the agent
trains on windows from a sequence buffer, with per-step masked losses (Ni et al., 2022,
"Recurrent model-free RL can be a strong baseline for many POMDPs").

TD3's three changes (Fujimoto et al., 2018) are options composed into the same update, all off by
default: ``twin_critics`` (the minimum of two critics in the target), ``target_noise`` (target
policy smoothing) and ``policy_delay`` (actor and targets updated every k-th critic update).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlkit.backbones import (
    Backbone,
    BackboneConfig,
    State,
    backbone_config,
    make_backbone,
    per_step,
)
from rlkit.buffers import SequenceBatch, TransitionBatch
from rlkit.losses import grad_norm, masked_mse, polyak_update
from rlkit.precision import (
    CompiledFunction,
    MixedPrecision,
    PrecisionConfig,
    load_optimizer_state,
    mark_step_begin,
)


@dataclass(frozen=True)
class DDPGConfig:
    """Hyper-parameters of the agent."""

    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target networks."""
    actor_lr: float = 1e-3
    """Adam learning rate of the actor (encoder included)."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic(s) (encoders included)."""
    head_hidden: tuple[int, ...] = (256,)
    """Hidden widths of the actor and critic heads after the encoder."""
    twin_critics: bool = False
    """TD3: two critics, the target takes their minimum."""
    target_noise: float = 0.0
    """TD3: std of the Gaussian noise on target actions (fraction of the half-range); 0 = off."""
    target_noise_clip: float = 0.5
    """TD3: clip of the target action noise (fraction of the half-range)."""
    policy_delay: int = 1
    """TD3: update the actor and the targets every k-th critic update (1 = every update)."""
    actor_prev_action: bool = False
    """The actor's encoder also sees the previous action (memory backbones)."""
    actor_prev_reward: bool = False
    """The actor's encoder also sees the previous reward."""
    critic_prev_action: bool = False
    """The critic's encoder also sees the previous action (memory backbones)."""
    critic_prev_reward: bool = False
    """The critic's encoder also sees the previous reward."""
    shared_encoder: bool = False
    """Actor and critic(s) share one encoder, trained by the critic loss; the actor loss reaches
    it only with ``shared_encoder_actor_grad``. Actor and critic inputs must then agree."""
    shared_encoder_actor_grad: bool = False
    """With a shared encoder, let the actor loss train it too, through the actor's own path
    (never through the critic's: the critic's encoding is detached in the actor loss)."""
    max_grad_norm: float | None = None
    """Clip gradient norms to this value (None: measure only)."""

    def __post_init__(self) -> None:
        for name in ("actor_lr", "critic_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if self.policy_delay < 1:
            raise ValueError(f"policy_delay must be >= 1, got {self.policy_delay}")
        if self.target_noise < 0:
            raise ValueError(f"target_noise must be >= 0, got {self.target_noise}")


def mlp(d_in: int, hidden: tuple[int, ...], d_out: int) -> nn.Sequential:
    """``Linear -> ReLU`` for each hidden width, then a final ``Linear`` to ``d_out``."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()]
        d_in = h
    layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


def _inputs(obs: Tensor, prev_action: Tensor | None, prev_reward: Tensor | None,
            with_action: bool, with_reward: bool) -> Tensor:
    """``[obs, prev_action?, prev_reward?]`` on the last axis, for ``(..., D)`` inputs."""
    parts = [obs]
    if with_action:
        parts.append(prev_action)
    if with_reward:
        parts.append(prev_reward[..., None])
    return torch.cat(parts, dim=-1) if len(parts) > 1 else obs


def _run(net: nn.Sequential, x: Tensor, first: int = 0, frozen: bool = False) -> Tensor:
    """``net``'s layers from index ``first`` on ``x`` ``(N, D)``; ``frozen``: with their weights
    detached, so gradients reach ``x`` but never ``net``."""
    for layer in list(net)[first:]:
        if frozen and isinstance(layer, nn.Linear):
            x = F.linear(x, layer.weight.detach(), layer.bias.detach())
        else:
            x = layer(x)
    return x


class Actor(nn.Module):
    """``a = low + (tanh(head(encoder(obs))) + 1) / 2 * (high - low)``."""

    def __init__(
        self, encoder: Backbone, action_low: Tensor, action_high: Tensor, hidden: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = mlp(encoder.d_out, hidden, action_low.numel())
        self.register_buffer("scale", (action_high - action_low).float() / 2)
        self.register_buffer("center", (action_high + action_low).float() / 2)

    def _squash(self, x: Tensor) -> Tensor:
        return self.center + self.scale * torch.tanh(x.float())

    def forward(self, obs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Args: obs ``(B, T, obs_dim)``. Returns actions ``(B, T, act_dim)`` and the state."""
        h, state = self.encoder(obs, state)  # (B, T, H)
        return self._squash(per_step(self.head, h)), state

    def step(self, obs: Tensor, state: State) -> tuple[Tensor, State]:
        """Args: obs ``(B, obs_dim)``. Returns actions ``(B, act_dim)`` and the state."""
        h, state = self.encoder.step(obs, state)  # (B, H)
        return self._squash(self.head(h)), state


class Critic(nn.Module):
    """``Q(h, a) = head([encoder(obs, prev_action, prev_reward), a])``."""

    def __init__(self, encoder: Backbone, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = mlp(encoder.d_out + action_dim, hidden, 1)

    def q(self, h: Tensor, action: Tensor) -> Tensor:
        """Args: h ``(B, T, H)``, action ``(B, T, A)``. Returns Q ``(B, T)``."""
        return self.q_from_pre(self.pre(h, action))

    def pre(self, h: Tensor, action: Tensor) -> Tensor:
        """The head's first layer before its activation, ``W [h, a] + b``: ``(B, T, hidden)``."""
        x = torch.cat([h, action.to(h.dtype)], dim=-1)  # (B, T, H + A)
        return per_step(self.head[0], x)

    def q_from_pre(self, pre: Tensor, frozen: bool = False) -> Tensor:
        """The rest of the head on :meth:`pre`'s output; Q ``(B, T)``. ``frozen``: the
        layers' weights are used detached (gradients reach ``pre`` only)."""
        return per_step(lambda x: _run(self.head, x, first=1, frozen=frozen),
                        pre).squeeze(-1).float()


class CriticEncoding(NamedTuple):
    """What the actor loss reuses from critic 0's pass over the batch, both detached."""

    h: Tensor
    """The encoding ``(B, L, H)``."""
    pre: Tensor
    """The head's first layer on ``[h, batch action]`` before its activation ``(B, L, hidden)``."""


class DDPG(nn.Module):
    """The agent: actor, critic(s), their targets and optimizers, and the update rule.

    Args:
        obs_dim: observation dimension.
        action_low: lower action bounds, shape ``(act_dim,)``.
        action_high: upper action bounds, shape ``(act_dim,)``.
        backbone: registry name of the encoder family.
        backbone_cfg: encoder config (the family's own or the common one).
        cfg: agent hyper-parameters.
        precision: mixed precision of the update (:mod:`rlkit.precision`); default fp32.
        compile: run the forward passes and losses of the update (and so their backward)
            through ``torch.compile``; optimizer steps stay eager.
    """

    def __init__(
        self,
        obs_dim: int,
        action_low: Tensor,
        action_high: Tensor,
        backbone: str = "mlp",
        backbone_cfg: BackboneConfig | None = None,
        cfg: DDPGConfig | None = None,
        precision: PrecisionConfig | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        cfg = cfg or DDPGConfig()
        self.cfg, self.backbone_name = cfg, backbone
        action_low = torch.as_tensor(action_low, dtype=torch.float32).reshape(-1)
        action_high = torch.as_tensor(action_high, dtype=torch.float32).reshape(-1)
        if not torch.all(torch.isfinite(action_low) & torch.isfinite(action_high)):
            raise ValueError(f"action bounds must be finite, got low={action_low.tolist()} "
                             f"high={action_high.tolist()}")
        if not torch.all(action_high > action_low):
            raise ValueError(f"action_high must exceed action_low, got low={action_low.tolist()} "
                             f"high={action_high.tolist()}")
        self.obs_dim, self.action_dim = obs_dim, action_low.numel()
        a = self.action_dim
        self.actor_in = obs_dim + a * cfg.actor_prev_action + cfg.actor_prev_reward
        self.critic_in = obs_dim + a * cfg.critic_prev_action + cfg.critic_prev_reward
        n_critics = 2 if cfg.twin_critics else 1
        if cfg.shared_encoder:
            if (cfg.actor_prev_action, cfg.actor_prev_reward) != \
                    (cfg.critic_prev_action, cfg.critic_prev_reward):
                raise ValueError(
                    "a shared encoder needs the same inputs for actor and critic, got "
                    f"actor_prev_action={cfg.actor_prev_action}, actor_prev_reward="
                    f"{cfg.actor_prev_reward}, critic_prev_action={cfg.critic_prev_action}, "
                    f"critic_prev_reward={cfg.critic_prev_reward}")
            shared = make_backbone(backbone, self.actor_in, backbone_cfg)
            encoders = [shared] * (1 + n_critics)
        else:
            encoders = [make_backbone(backbone, self.actor_in, backbone_cfg)] + [
                make_backbone(backbone, self.critic_in, backbone_cfg) for _ in range(n_critics)]
        self.actor = Actor(encoders[0], action_low, action_high, cfg.head_hidden)
        self.critics = nn.ModuleList(
            Critic(enc, self.action_dim, cfg.head_hidden) for enc in encoders[1:]
        )
        # One deepcopy of both keeps a shared encoder shared in the targets too.
        targets = copy.deepcopy(nn.ModuleDict({"actor": self.actor, "critics": self.critics}))
        self.actor_target = targets["actor"].requires_grad_(False)
        self.critic_targets = targets["critics"].requires_grad_(False)
        self.amp = MixedPrecision(precision or PrecisionConfig())
        # Fused Adam: one kernel per parameter (faster than foreach on the CPU too), and with
        # fp16 it takes the scaler's inf flag on the device (no host sync to skip a step).
        # A shared encoder belongs to the critic's optimizer (and to the actor's only if asked).
        encoder_ids = {id(p) for p in self.actor.encoder.parameters()} \
            if cfg.shared_encoder and not cfg.shared_encoder_actor_grad else set()
        actor_params = [p for p in self.actor.parameters() if id(p) not in encoder_ids]
        self.actor_opt = torch.optim.Adam(actor_params, lr=cfg.actor_lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=cfg.critic_lr,
                                           fused=True)
        self._critic_fn = CompiledFunction(self._critic_losses, "the critic loss") \
            if compile else self._critic_losses
        self._actor_fn = CompiledFunction(self._actor_losses, "the actor loss") \
            if compile else self._actor_losses
        # A shared encoder stepped by both optimizers needs the actor's gradients apart.
        self._encoder_in_both = cfg.shared_encoder and cfg.shared_encoder_actor_grad
        # Parameter lists walked on every update, gathered once.
        self._actor_params = actor_params
        self._critic_params = list(self.critics.parameters())
        # each parameter once (a shared encoder appears in actor and critics)
        self._online_params = list(
            nn.ModuleDict({"actor": self.actor, "critics": self.critics}).parameters())
        self._target_params = list(targets.parameters())
        self.noise_gen: torch.Generator | None = None  # TD3 target smoothing draws from it
        self.num_updates = 0

    # ----------------------------------------------------------------------------- acting
    def initial_state(self, batch_size: int) -> tuple[State, tuple[State, ...]]:
        """Actor state and critic states (recorded while acting for stored-state replay)."""
        dev = self.actor.scale.device
        return (
            self.actor.encoder.initial_state(batch_size, dev),
            tuple(c.encoder.initial_state(batch_size, dev) for c in self.critics),
        )

    def reset_state(
        self, state: tuple[State, tuple[State, ...]], done: Tensor
    ) -> tuple[State, tuple[State, ...]]:
        """Reset the rows of finished episodes (``done``, shape ``(N,)``)."""
        actor_state, critic_states = state
        return (
            self.actor.encoder.reset_state(actor_state, done),
            tuple(c.encoder.reset_state(s, done) for c, s in zip(self.critics, critic_states)),
        )

    @torch.no_grad()
    def act(
        self,
        obs: Tensor,
        state: tuple[State, tuple[State, ...]],
        prev_action: Tensor | None = None,
        prev_reward: Tensor | None = None,
        track_critic: bool = False,
    ) -> tuple[Tensor, tuple[State, tuple[State, ...]]]:
        """Deterministic actions for one step of N environments.

        Args:
            obs: ``(N, obs_dim)``.
            state: from :meth:`initial_state` / the previous call.
            prev_action: ``(N, act_dim)``, the previous action (zero at episode start); needed
                with ``track_critic`` when the critic sees previous actions.
            prev_reward: ``(N,)``, likewise.
            track_critic: also advance the critic encoders' states (stored-state replay).

        Returns:
            Actions ``(N, act_dim)`` within the bounds, and the new state.
        """
        actor_state, critic_states = state
        cfg = self.cfg
        x = _inputs(obs, prev_action, prev_reward, cfg.actor_prev_action, cfg.actor_prev_reward)
        action, actor_state = self.actor.step(x, actor_state)
        if track_critic and cfg.shared_encoder:
            critic_states = (actor_state,) * len(self.critics)  # one encoder, one state
        elif track_critic:
            x = _inputs(obs, prev_action, prev_reward, cfg.critic_prev_action,
                        cfg.critic_prev_reward)
            critic_states = tuple(
                c.encoder.step(x, s)[1] for c, s in zip(self.critics, critic_states)
            )
        return action, (actor_state, critic_states)

    # ----------------------------------------------------------------------------- learning
    def _actor_inputs(self, batch: SequenceBatch) -> Tensor:
        """Actor encoder inputs over the window, ``(B, L + 1, actor_in)``."""
        return _inputs(batch.obs, batch.prev_action, batch.prev_reward,
                       self.cfg.actor_prev_action, self.cfg.actor_prev_reward)

    def _critic_inputs(self, batch: SequenceBatch) -> Tensor:
        """Critic encoder inputs over the window, ``(B, L + 1, critic_in)``."""
        return _inputs(batch.obs, batch.prev_action, batch.prev_reward,
                       self.cfg.critic_prev_action, self.cfg.critic_prev_reward)

    @staticmethod
    def transitions_as_sequences(batch: TransitionBatch) -> SequenceBatch:
        """View B transitions as B windows of one step (for the memoryless path)."""
        ones = torch.ones_like(batch.reward)[:, None]  # (B, 1)
        return SequenceBatch(
            obs=torch.stack([batch.obs, batch.next_obs], dim=1),  # (B, 2, obs_dim)
            action=batch.action[:, None],
            reward=batch.reward[:, None],
            terminated=batch.terminated[:, None],
            truncated=batch.truncated[:, None],
            prev_action=torch.zeros_like(batch.action)[:, None].expand(-1, 2, -1),
            prev_reward=torch.zeros_like(ones).expand(-1, 2),
            mask=ones,
            valid=ones,
            states=(),
        )

    def td_target(self, batch: SequenceBatch, actor_state: State | None,
                  critic_states: tuple[State | None, ...]) -> Tensor:
        """``r_t + gamma * (1 - terminated_t) * Q'(h'_{t+1}, mu'(h'_{t+1}))``, shape ``(B, L)``."""
        # A memoryless encoder needs only the next observations; a memory one the whole window.
        first = 0 if self.actor.encoder.has_memory else 1
        with torch.no_grad():
            next_action, _ = self.actor_target(self._actor_inputs(batch)[:, first:], actor_state)
            next_action = next_action[:, 1 - first:]  # (B, L, A)
            if self.cfg.target_noise > 0:
                scale = self.actor.scale
                eps = torch.randn(next_action.shape, device=next_action.device,
                                  generator=self.noise_gen) * self.cfg.target_noise
                eps = eps.clamp(-self.cfg.target_noise_clip, self.cfg.target_noise_clip) * scale
                low, high = self.actor.center - scale, self.actor.center + scale
                next_action = torch.max(torch.min(next_action + eps, high), low)
            x = self._critic_inputs(batch)
            qs = []
            for critic, s in zip(self.critic_targets, critic_states):
                first = 0 if critic.encoder.has_memory else 1
                h, _ = critic.encoder(x[:, first:], s)
                qs.append(critic.q(h[:, 1 - first:], next_action))  # (B, L)
            next_q = torch.stack(qs).min(0).values if len(qs) > 1 else qs[0]
            return batch.reward + self.cfg.gamma * (1.0 - batch.terminated) * next_q

    def critic_loss(self, batch: SequenceBatch, target: Tensor,
                    critic_states: tuple[State | None, ...]
                    ) -> tuple[Tensor, Tensor, CriticEncoding]:
        """Masked mean squared TD error summed over critics.

        Returns:
            ``(loss, q, enc)``: the loss, critic 0's Q ``(B, L)`` and its
            :class:`CriticEncoding` (detached), which the actor loss reuses instead of encoding
            the window again and of recomputing the head's first layer on ``h``.
        """
        x = self._critic_inputs(batch)[:, :-1]  # (B, L, D)
        loss, q0, enc0 = 0.0, None, None
        for critic, s in zip(self.critics, critic_states):
            h, _ = critic.encoder(x, s)  # (B, L, H)
            pre = critic.pre(h, batch.action)  # (B, L, hidden)
            q = critic.q_from_pre(pre)  # (B, L)
            loss = loss + masked_mse(q, target, batch.mask)
            if enc0 is None:
                q0, enc0 = q, CriticEncoding(h.detach(), pre.detach())
        return loss, q0, enc0

    def actor_loss(self, batch: SequenceBatch, actor_state: State | None,
                   critic_enc: CriticEncoding) -> Tensor:
        """``-Q(h, mu(.))`` averaged over masked steps, through critic 0 held fixed.

        Args:
            batch: the window.
            actor_state: the actor's state at the window start (``None``: initial).
            critic_enc: critic 0's pass over the window, from :meth:`critic_loss`.

        The head's first layer is linear in ``[h, a]``, so with ``W = [W_h, W_a]``:
        ``W [h, mu] + b = pre + W_a (mu - a)``, where ``pre = W [h, a] + b`` is the critic
        loss's own. Only the small ``W_a`` product is computed again; Q is the critic's at the
        parameters of the critic loss (before its step). Every critic weight is used detached,
        so the actor loss gives the critic no gradient.
        """
        if self.cfg.shared_encoder and not self.cfg.shared_encoder_actor_grad:
            # the shared encoding is the critic's, detached: the actor loss trains the head only
            action = self.actor._squash(per_step(self.actor.head, critic_enc.h))  # (B, L, A)
        else:
            action, _ = self.actor(self._actor_inputs(batch)[:, :-1], actor_state)  # (B, L, A)
        critic = self.critics[0]
        first = critic.head[0]
        w_a = first.weight[:, critic.encoder.d_out:].detach()  # (hidden, A): W_a
        delta = (action - batch.action).to(critic_enc.pre.dtype)  # (B, L, A)
        pre = critic_enc.pre + per_step(lambda d: F.linear(d, w_a), delta)  # (B, L, hidden)
        q = critic.q_from_pre(pre, frozen=True)  # (B, L)
        return -(q * batch.mask).sum() / batch.mask.sum().clamp_min(1.0)

    def _critic_losses(self, batch: SequenceBatch, actor_state: State | None,
                       critic_states: tuple[State | None, ...]
                       ) -> tuple[Tensor, Tensor, CriticEncoding]:
        """TD target and :meth:`critic_loss` under the precision's autocast (what compiles)."""
        with self.amp.autocast(self.actor.scale.device.type):
            target = self.td_target(batch, actor_state, critic_states)
            return self.critic_loss(batch, target, critic_states)

    def _actor_losses(self, batch: SequenceBatch, actor_state: State | None,
                      critic_enc: CriticEncoding) -> Tensor:
        """:meth:`actor_loss` under the precision's autocast (what compiles)."""
        with self.amp.autocast(self.actor.scale.device.type):
            return self.actor_loss(batch, actor_state, critic_enc)

    def update(self, batch: SequenceBatch | TransitionBatch) -> dict[str, Tensor]:
        """One gradient step of the critic(s), and of the actor and targets when due.

        Both losses are taken at the same parameters (the actor's through the critic before
        its step, as in Acme's DDPG learner), so one backward pass gives both gradients: the
        actor loss reaches no critic weight and the critic loss no actor weight. With a shared
        encoder that the actor loss also trains, the actor's gradients are taken apart
        (``torch.autograd.grad``) so that each optimizer steps on its own loss's gradient.

        Forward passes run under the precision's autocast (losses in fp32, backward outside
        it); with fp16 one GradScaler scales both losses, gradients are unscaled before their
        norms are measured or clipped, and a step with inf / NaN gradients is skipped by the
        scaler and counted.

        Returns:
            Metrics as 0-dim tensors (no host synchronisation): ``critic_loss``, ``q_mean``,
            ``critic_grad_norm``, when the actor was updated ``actor_loss``,
            ``actor_grad_norm``, and with fp16 ``skipped_steps`` (cumulative) and
            ``grad_scale``.
        """
        if isinstance(batch, TransitionBatch):
            batch = self.transitions_as_sequences(batch)
        actor_state, critic_states = self._batch_states(batch)
        amp, compiled = self.amp, isinstance(self._critic_fn, CompiledFunction)
        if compiled:
            mark_step_begin(self._critic_fn, self._actor_fn)
        self.num_updates += 1
        actor_due = self.num_updates % self.cfg.policy_delay == 0
        closs, q, enc = self._critic_fn(batch, actor_state, critic_states)
        self.critic_opt.zero_grad(set_to_none=True)
        if actor_due:
            aloss = self._actor_fn(batch, actor_state, enc)
            self.actor_opt.zero_grad(set_to_none=True)
            if self._encoder_in_both:
                actor_grads = torch.autograd.grad(amp.scale(aloss), self._actor_params)
                amp.scale(closs).backward()
            else:
                amp.scale(closs + aloss).backward()
        else:
            amp.scale(closs).backward()
        amp.unscale_(self.critic_opt)
        cnorm = grad_norm(self._critic_params, self.cfg.max_grad_norm)
        amp.step(self.critic_opt)
        m = batch.mask
        metrics = {  # compiled outputs may live in CUDA graph memory, reused by later replays
            "critic_loss": closs.detach().clone() if compiled else closs.detach(),
            "q_mean": ((q.detach() * m).sum() / m.sum().clamp_min(1.0)),
            "critic_grad_norm": cnorm.detach(),
        }
        if actor_due:
            if self._encoder_in_both:
                for p, g in zip(self._actor_params, actor_grads):
                    p.grad = g
            amp.unscale_(self.actor_opt)
            anorm = grad_norm(self._actor_params, self.cfg.max_grad_norm)
            amp.step(self.actor_opt)
            polyak_update(self._target_params, self._online_params, self.cfg.tau)
            metrics["actor_loss"] = aloss.detach().clone() if compiled else aloss.detach()
            metrics["actor_grad_norm"] = anorm.detach()
        metrics.update(amp.update())
        return metrics

    def _batch_states(self, batch: SequenceBatch) -> tuple[State | None, tuple[State | None, ...]]:
        if not batch.states:
            return None, (None,) * len(self.critics)
        actor_state, *critic_states = batch.states
        return actor_state, tuple(critic_states)

    # ----------------------------------------------------------------------------- saving
    def checkpoint_state(self) -> dict[str, dict]:
        """State dicts of every network and optimizer (a dict of state dicts)."""
        return {
            "actor": self.actor.state_dict(),
            "critics": self.critics.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_targets": self.critic_targets.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "counters": {"num_updates": self.num_updates},
            "precision": self.amp.state_dict(),
        }

    @classmethod
    def from_run_config(cls, config: dict) -> DDPG:
        """Rebuild the agent described by a run's resolved ``config.json`` (untrained)."""
        fields = {f.name for f in dataclasses.fields(DDPGConfig)}
        agent_cfg = {k: v for k, v in config["agent_resolved"].items() if k in fields}
        agent_cfg["head_hidden"] = tuple(agent_cfg["head_hidden"])
        return cls(
            obs_dim=int(config["obs_dim"]),
            action_low=torch.tensor(config["action_low"]),
            action_high=torch.tensor(config["action_high"]),
            backbone=config["backbone"],
            backbone_cfg=backbone_config(config["backbone"], config["d_model"],
                                         config["n_layers"], context=config.get("context")),
            cfg=DDPGConfig(**agent_cfg),
        )

    def load_checkpoint_state(self, state: dict[str, dict]) -> None:
        """Inverse of :meth:`checkpoint_state`."""
        self.actor.load_state_dict(state["actor"])
        self.critics.load_state_dict(state["critics"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic_targets.load_state_dict(state["critic_targets"])
        load_optimizer_state(self.actor_opt, state["actor_opt"])
        load_optimizer_state(self.critic_opt, state["critic_opt"])
        self.num_updates = int(state["counters"]["num_updates"])
        if "precision" in state:  # absent in checkpoints saved before mixed precision
            self.amp.load_state_dict(state["precision"])


__all__ = ["DDPG", "DDPGConfig", "Actor", "Critic", "mlp"]
