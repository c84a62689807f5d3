"""DDPG with a sequence encoder in front of actor and critic.

Deep Deterministic Policy Gradient (Lillicrap et al., 2015, https://arxiv.org/abs/1509.02971):
a deterministic actor mu(h), a critic Q(h, a), target copies of both updated by Polyak averaging,
and the TD target ``r + gamma * (1 - terminated) * Q'(h', mu'(h'))``. ``truncated`` steps keep
bootstrapping (the time limit is not part of the task).

The encoder ``h`` is any backbone of :mod:`rlkit.backbones`: the MLP backbone gives classic DDPG
on transitions (windows of one step); a memory backbone (RNN, Transformer, S4, Mamba) encodes
the history and the agent trains on windows from a sequence buffer, with per-step masked losses
(Ni et al., 2022, "Recurrent model-free RL can be a strong baseline for many POMDPs").

TD3's three changes (Fujimoto et al., 2018) are options composed into the same update, all off by
default: ``twin_critics`` (the minimum of two critics in the target), ``target_noise`` (target
policy smoothing) and ``policy_delay`` (actor and targets updated every k-th critic update).

The pieces: networks in :mod:`agents.networks`, losses as plain functions in
:mod:`agents.losses`; this module builds them, acts, and steps the optimizers.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import Tensor, nn

from agents.losses import (
    ActorLoss,
    CriticEncoding,
    TargetNoise,
    actor_loss,
    critic_loss,
    saturation,
    td_target,
)
from agents.networks import (
    Actor,
    AgentState,
    Critic,
    EncoderInputs,
    InputEmbed,
    ObsShortcut,
    action_bounds,
)
from rlkit.backbones import Backbone, BackboneConfig, State, make_backbone
from rlkit.buffers import SequenceBatch
from rlkit.checkpoint import load_optimizer_state
from rlkit.compile import CompiledFunction, mark_step_begin
from rlkit.losses import grad_norm, polyak_update
from rlkit.normalize import RunningNorm
from rlkit.precision import MixedPrecision, PrecisionConfig
from rlkit.rundir import RunRecord

NO_AVERAGE = ("evaluates the actor's average, which only --agent.average-tau keeps: got "
              "--agent.average-tau None")
"""Why ``average`` cannot be the evaluated policy of an agent that keeps no average; the caller
names what asked for it in front (``--eval-policy average``, ``the policy 'average'``)."""


@dataclass(frozen=True)
class DDPGConfig:
    """Hyper-parameters of the agent."""

    gamma: float = 0.99
    """Discount factor (with ``gamma_from``: the one it rises to)."""
    gamma_from: float | None = None
    """The discount starts here and rises to ``gamma`` over ``gamma_rise`` updates, linearly in
    the horizon ``1 / (1 - gamma)``: update ``k`` (1-based) discounts by ``1 - 1 / H_k`` with
    ``H_k = H_from + (H - H_from) * min(1, k / gamma_rise)`` (a discount curriculum, as in
    Francois-Lavet et al. 2015: a short horizon learns fast, a long one aims higher). A
    function of the update count alone, so a resumed run continues it. None: ``gamma`` from
    the first update."""
    gamma_rise: int = 0
    """Updates over which the discount rises from ``gamma_from`` to ``gamma``."""
    n_step: int = 1
    """Rewards summed before the target critic bootstraps (n-step TD targets along each window,
    :func:`agents.losses.n_step_returns`; 1: the one-step target). Needs windows (a memory
    backbone, or ``--seq-len`` > 1)."""
    reward_scale: float = 1.0
    """The critics learn ``reward_scale`` times the return: the TD target takes
    ``reward_scale * r_t`` (Henderson et al. 2018: DDPG is sensitive to it). Only the target:
    the encoders' previous-reward input and the evaluated returns are the env's; the logged
    Q values and critic losses are in the scaled units."""
    tau: float = 0.005
    """Polyak averaging rate of the target networks."""
    average_tau: float | None = None
    """Polyak rate of a second average of the actor, kept for evaluation only
    (``--eval-policy average``): ``average <- average_tau * actor + (1 - average_tau) *
    average`` after every actor update, an average over about ``1 / average_tau`` updates.
    It trains nothing and draws from no generator. None: not kept."""
    actor_lr: float = 1e-3
    """Adam learning rate of the actor (encoder included unless ``encoder_lr`` is set)."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic(s) (encoders included unless ``encoder_lr`` is set)."""
    encoder_lr: float | None = None
    """Adam learning rate of the actor's and critics' encoders (RESeL: far below the heads');
    None: the encoders learn at ``actor_lr`` / ``critic_lr`` like their heads."""
    lr_warmup: int = 0
    """Updates over which every learning rate rises linearly to its value: update ``k``
    (1-based) steps at ``lr * min(1, k / lr_warmup)`` (0 = off). A function of the update
    count alone, so a resumed run continues the same schedule."""
    lr_decay: int = 0
    """Updates over which every learning rate falls linearly from its value to ``lr_decay_to`` times
    it: update ``k`` steps at ``lr * (1 - (1 - lr_decay_to) * min(1, d / lr_decay))`` with ``d =
    max(0, k - lr_decay_start)``, and at ``lr * lr_decay_to`` after them (0 = off). Multiplies
    ``lr_warmup``'s factor. A run of S env steps makes about ``(S - learning_starts) *
    updates_per_step`` updates."""
    lr_decay_to: float = 0.1
    """Fraction of each learning rate left at the end of ``lr_decay``."""
    lr_decay_start: int = 0
    """Updates at the full rate before ``lr_decay`` begins (a warm-up, stable, decay schedule):
    update ``k`` decays by ``k - lr_decay_start`` in ``lr_decay``'s formula, and not before.
    Needs ``lr_decay``."""
    pre_tanh_penalty: float = 0.0
    """Weight of ``mean(max(|pre_tanh| - pre_tanh_margin, 0) ** 2)`` added to the actor loss:
    keeps the actor's tanh out of deep saturation, where its gradient vanishes (0 = off)."""
    pre_tanh_margin: float = 0.0
    """Pre-tanh magnitude the penalty leaves free (3: tanh 0.995, so actions up to 99.5% of a
    bound cost nothing; 0: a plain L2 penalty)."""
    predict_weight: float = 0.0
    """Weight of an auxiliary loss on each encoder that a loss trains (the critics', and the
    actor's unless it acts on a shared encoder it does not train): a predictor, an MLP of
    ``head_hidden`` on ``[h_t, a_t]``, predicts the next observation and the reward, and its
    masked mean squared error (:func:`agents.losses.prediction_loss`), times this weight, is
    added to the critic loss and to the actor loss. It asks the encoding for what the next
    step depends on (on a velocity-only pendulum, the angle), a target that does not move as
    the critics do. 0: off, and the networks hold no predictor."""
    squash_grad: Literal["tanh", "inverting"] = "tanh"
    """Gradient of the actor loss through the tanh squash. ``tanh``: its derivative
    ``(1 - y)(1 + y)``, which vanishes at both bounds. ``inverting`` (Hausknecht & Stone 2016's
    inverting gradients): ``1 - y`` when the loss pushes ``y`` up, ``1 + y`` when down, so a
    saturated actor still moves away from its bound at full rate when the critic asks."""
    head_hidden: tuple[int, ...] = (256,)
    """Hidden widths of the actor and critic heads after the encoder."""
    final_init: float | None = None
    """The last layers of the actor's and the critics' heads start with weights and biases
    drawn uniformly from ``[-final_init, final_init]`` (the DDPG paper's 3e-3): the untrained
    actor then acts near the middle of its range and Q starts near 0. None: PyTorch's default
    for every layer."""
    head_obs: bool = False
    """The heads also see the current observation beside the encoder's output, ``[h_t, o_t]``
    (pomdp-baselines' shortcut; :class:`agents.networks.ObsShortcut`)."""
    head_embed: tuple[int, ...] = ()
    """Widths ``(actor, critic)`` of ``Linear -> ReLU`` embedders through which the heads see
    the current step: the actor ``o_t``, the critics ``[o_t, a_t]``, beside the memory
    (pomdp-baselines' shortcut embedders, 32 and 48; :class:`agents.networks.HeadEmbed`).
    Needs ``head_obs``, which puts ``o_t`` beside the encoding. Empty: the heads see ``o_t``
    (and ``a_t``) as they are."""
    head_bias: float | None = None
    """The heads' hidden layers start with every bias at this value (pomdp-baselines' 0.1); the
    last layers keep theirs (``final_init``). None: PyTorch's default."""
    input_embed: tuple[int, ...] = ()
    """Widths ``(observation, action, reward)`` of separate ``Linear -> ReLU`` embedders of the
    encoders' inputs before the backbone (pomdp-baselines' 32, 8, 8;
    :class:`agents.networks.InputEmbed`); empty: the backbone takes the inputs as they are."""
    input_norm: bool = False
    """The encoders see the observation and the previous reward normalised per feature, by
    the mean and standard deviation of the steps before learning starts (random actions;
    :class:`rlkit.normalize.RunningNorm`, clipped to [-10, 10]; a feature constant over them is
    centred only), fixed from the first update on, so that an episode started after that is
    normalised alike when acted and when trained on (earlier steps are replayed with the fixed
    statistics, as with the current weights). The previous action, within its bounds, and the
    rewards of the TD target stay as they are. Needs ``learning_starts`` > 0."""
    critic_norm: bool = False
    """Each hidden layer of the critics' heads is normalised (LayerNorm, no scale or shift)
    before its ReLU, as RLPD's critics (Ball et al. 2023): Q's features keep one scale however
    the encoding and the action grow, which keeps the TD targets steady at many updates per
    step. The actor's head is left as it is."""
    twin_critics: bool = False
    """TD3: two critics, the target takes their minimum."""
    actor_q: Literal["first", "min"] = "first"
    """The Q the actor loss climbs: ``first``, critic 0's (TD3's paper); ``min``, the minimum
    over the twin critics (pomdp-baselines' TD3). ``min`` needs ``twin_critics``."""
    critics_share_encoder: bool = False
    """The twin critics' heads sit on one encoder, which both critic losses train and which
    encodes each window once (pomdp-baselines' recurrent critic: one RNN, two Q heads).
    Needs ``twin_critics``; False: each critic has its own encoder."""
    target_noise: float = 0.0
    """TD3: std of the Gaussian noise on target actions (fraction of the half-range); 0 = off."""
    target_noise_clip: float = 0.5
    """TD3: clip of the target action noise (fraction of the half-range)."""
    policy_delay: int = 1
    """TD3: update the actor and the targets every k-th critic update (1 = every update)."""
    actor_prev_action: bool = False
    """The actor's encoder also sees the previous action. ``train.py`` turns it on for
    memory backbones unless ``--prev-action False`` is given (``--agent.no-actor-prev-action``
    alone is refused there); config.json records the value the run used."""
    actor_prev_reward: bool = False
    """The actor's encoder also sees the previous reward. ``train.py`` turns it on with
    ``--prev-reward`` (``--agent.no-actor-prev-reward`` is then refused)."""
    critic_prev_action: bool = False
    """The critic's encoder also sees the previous action. ``train.py`` turns it on for
    memory backbones unless ``--prev-action False`` is given (``--agent.no-critic-prev-action``
    alone is refused there); config.json records the value the run used."""
    critic_prev_reward: bool = False
    """The critic's encoder also sees the previous reward. ``train.py`` turns it on with
    ``--prev-reward`` (``--agent.no-critic-prev-reward`` is then refused)."""
    shared_encoder: bool = False
    """Actor and critic(s) share one encoder, trained by the critic loss; the actor loss reaches
    it only with ``shared_encoder_actor_grad``. Actor and critic inputs must then agree."""
    shared_encoder_actor_grad: bool = False
    """With a shared encoder, let the actor loss train it too, through the actor's own path
    (never through the critic's: the critic's encoding is detached in the actor loss)."""
    max_grad_norm: float | None = None
    """Clip gradient norms to this value (None: measure only)."""
    spike_clip: float | None = None
    """Clip each gradient norm (the critics', the actor's) at this multiple of its running mean,
    an exponential average over about 100 updates of the norms after clipping: only spikes
    are cut, at any scale of the usual norms (None: off). Applied after ``max_grad_norm``."""

    def _check_kinds(self) -> None:
        """Sizes are tuples and switches booleans (from Python a list or a truthy string would
        otherwise pass, or fail later inside the networks)."""
        for f in dataclasses.fields(self):
            value, expected = getattr(self, f.name), None
            if f.name in ("head_hidden", "input_embed", "head_embed") and \
                    not isinstance(value, tuple):
                expected = "a tuple of positive integers"
            elif f.type in ("bool", bool) and not isinstance(value, bool):
                expected = "True or False"
            if expected:
                raise ValueError(f"--agent.{f.name.replace('_', '-')} must be {expected}, got "
                                 f"{value!r}")

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ValueError(f"--agent.{name.replace('_', '-')} must be {expected}, got "
                                 f"{getattr(self, name)!r}")

        def finite(v: object) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("actor_lr", "critic_lr", "encoder_lr"):
            v = getattr(self, name)
            check(name, v is None or finite(v) and 0 < v <= 1, "a number in (0, 1]")
        for name in ("lr_warmup", "lr_decay", "lr_decay_start"):
            v = getattr(self, name)
            check(name, isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                  "an integer >= 0")
        check("lr_decay_to", finite(self.lr_decay_to) and 0 <= self.lr_decay_to <= 1,
              "a number in [0, 1]")
        if self.lr_decay_start and not self.lr_decay:
            raise ValueError(f"--agent.lr-decay-start {self.lr_decay_start} needs "
                             "--agent.lr-decay N (the updates the decay takes), got 0")
        check("pre_tanh_penalty", finite(self.pre_tanh_penalty) and self.pre_tanh_penalty >= 0,
              "a finite number >= 0")
        check("pre_tanh_margin", finite(self.pre_tanh_margin) and self.pre_tanh_margin >= 0,
              "a finite number >= 0")
        check("predict_weight", finite(self.predict_weight) and self.predict_weight >= 0,
              "a finite number >= 0")
        check("squash_grad", self.squash_grad in ("tanh", "inverting"), "'tanh' or 'inverting'")
        check("gamma", finite(self.gamma) and 0 <= self.gamma <= 1, "in [0, 1]")
        check("reward_scale", finite(self.reward_scale) and self.reward_scale > 0,
              "a finite number > 0")
        check("gamma_rise", isinstance(self.gamma_rise, int) and not isinstance(
            self.gamma_rise, bool) and self.gamma_rise >= 0, "an integer >= 0")
        if self.gamma_from is not None:
            check("gamma_from", finite(self.gamma_from) and 0 <= self.gamma_from < self.gamma
                  < 1, f"a number in [0, --agent.gamma) with --agent.gamma below 1 (the "
                  f"horizon 1 / (1 - gamma) rises to a finite one; --agent.gamma is "
                  f"{self.gamma!r})")
            check("gamma_rise", self.gamma_rise > 0,
                  "an integer >= 1 with --agent.gamma-from (the updates the rise takes)")
        elif self.gamma_rise:
            raise ValueError(f"--agent.gamma-rise {self.gamma_rise} sets how many updates the "
                             f"discount takes to rise from --agent.gamma-from: expected "
                             f"--agent.gamma-from, got none")
        check("n_step", isinstance(self.n_step, int) and not isinstance(self.n_step, bool)
              and self.n_step >= 1, "an integer >= 1")
        check("tau", finite(self.tau) and 0 < self.tau <= 1, "in (0, 1]")
        check("average_tau", self.average_tau is None or finite(self.average_tau)
              and 0 < self.average_tau <= 1, "None (not kept) or a number in (0, 1]")
        check("final_init", self.final_init is None or finite(self.final_init)
              and self.final_init > 0, "None (PyTorch's default) or a finite number > 0")
        check("policy_delay", isinstance(self.policy_delay, int) and self.policy_delay >= 1,
              "an integer >= 1")
        check("target_noise", finite(self.target_noise) and self.target_noise >= 0,
              "a finite number >= 0")
        check("target_noise_clip", finite(self.target_noise_clip) and self.target_noise_clip > 0,
              "a finite number > 0")
        check("max_grad_norm", self.max_grad_norm is None or finite(self.max_grad_norm)
              and self.max_grad_norm > 0, "None (no clipping) or a finite number > 0")
        check("spike_clip", self.spike_clip is None or finite(self.spike_clip)
              and self.spike_clip >= 1, "None (off) or a finite number >= 1")
        self._check_kinds()
        check("head_hidden", len(self.head_hidden) > 0 and all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.head_hidden),
              "one or more positive integers")
        check("input_embed", self.input_embed == () or len(self.input_embed) == 3 and all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in self.input_embed),
              "empty (off) or three positive integers (observation, action, reward)")
        check("head_embed", self.head_embed == () or len(self.head_embed) == 2 and all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in self.head_embed),
              "empty (off) or two positive integers (actor, critic)")
        if self.head_embed and not self.head_obs:
            raise ValueError(f"--agent.head-embed {' '.join(map(str, self.head_embed))} embeds "
                             f"the current observation that --agent.head-obs puts beside the "
                             f"encoding: expected --agent.head-obs, got none")
        check("head_bias", self.head_bias is None or finite(self.head_bias),
              "None (PyTorch's default) or a finite number")
        check("actor_q", self.actor_q in ("first", "min"), "'first' or 'min'")
        if self.actor_q == "min" and not self.twin_critics:
            raise ValueError("--agent.actor-q min climbs the minimum over the twin critics: "
                             "expected --agent.twin-critics, got one critic")
        if self.critics_share_encoder and not self.twin_critics:
            raise ValueError("--agent.critics-share-encoder shares one encoder between the twin "
                             "critics: expected --agent.twin-critics, got one critic")
        if self.critics_share_encoder and self.shared_encoder:
            raise ValueError("--agent.critics-share-encoder with --agent.shared-encoder: the "
                             "shared encoder already serves the actor and every critic; "
                             "expected one of the two")
        if self.shared_encoder and (self.actor_prev_action, self.actor_prev_reward) != \
                (self.critic_prev_action, self.critic_prev_reward):
            raise ValueError(
                "a shared encoder needs the same inputs for actor and critic, got "
                f"actor_prev_action={self.actor_prev_action}, actor_prev_reward="
                f"{self.actor_prev_reward}, critic_prev_action={self.critic_prev_action}, "
                f"critic_prev_reward={self.critic_prev_reward}")

    def unused_flags(self) -> str | None:
        """The agent flags given values that this config's other choices leave unused (``None``
        when there are none): ``--agent.lr-decay-to 0.5 is for --agent.lr-decay; this run's is
        0``."""
        plain = DDPGConfig()
        unused = []
        if self.lr_decay_to != plain.lr_decay_to and not self.lr_decay:
            unused.append(f"--agent.lr-decay-to {self.lr_decay_to} is for --agent.lr-decay N; "
                          "this run's is 0 (no decay)")
        if self.shared_encoder_actor_grad and not self.shared_encoder:
            unused.append("--agent.shared-encoder-actor-grad is for --agent.shared-encoder; "
                          "this run's actor has its own encoder, which it trains anyway")
        if self.target_noise_clip != plain.target_noise_clip and not self.target_noise:
            unused.append(f"--agent.target-noise-clip {self.target_noise_clip} is for "
                          "--agent.target-noise above 0; this run's is 0 (no target noise)")
        return "; ".join(unused) or None

    @classmethod
    def from_json(cls, data: dict) -> DDPGConfig:
        """The config from its JSON form (``dataclasses.asdict``, tuples as lists)."""
        return cls(**{**data, "head_hidden": tuple(data["head_hidden"]),
                      "input_embed": tuple(data.get("input_embed", ())),
                      "head_embed": tuple(data.get("head_embed", ()))})

    def check_embed_inputs(self) -> None:
        """Refuse :attr:`input_embed` widths for an input that no encoder sees (they would not
        be used). Checked once the encoders' inputs are resolved (``agents.train.resolve``).

        Raises:
            ValueError: naming the widths and the unseen input(s).
        """
        if not self.input_embed:
            return
        seen = {"action": self.actor_prev_action or self.critic_prev_action,
                "reward": self.actor_prev_reward or self.critic_prev_reward}
        if unused := [k for k, v in seen.items() if not v]:
            raise ValueError(f"--agent.input-embed {' '.join(map(str, self.input_embed))}: no "
                             f"encoder sees the previous {' or '.join(unused)}, so its width "
                             f"would not be used; expected encoders that see them (memory "
                             f"backbones see the previous action; --prev-reward adds the "
                             f"reward)")

    @property
    def actor_inputs(self) -> EncoderInputs:
        return EncoderInputs(self.actor_prev_action, self.actor_prev_reward)

    @property
    def critic_inputs(self) -> EncoderInputs:
        return EncoderInputs(self.critic_prev_action, self.critic_prev_reward)


def build_networks(obs_dim: int, action_low: Tensor, action_high: Tensor, backbone: str,
                   backbone_cfg: BackboneConfig | None, cfg: DDPGConfig
                   ) -> tuple[Actor, nn.ModuleList]:
    """The actor and the critic(s), each with its own encoder (or one shared encoder)."""
    a = action_low.numel()
    n_critics = 2 if cfg.twin_critics else 1
    cfg.check_embed_inputs()

    def encoder(inputs: EncoderInputs) -> Backbone | InputEmbed | ObsShortcut:
        if cfg.input_embed:
            widths = cast(tuple[int, int, int], cfg.input_embed)
            net = InputEmbed(make_backbone(backbone, InputEmbed.width(inputs, widths),
                                           backbone_cfg), obs_dim, a, inputs, widths)
        else:
            net = make_backbone(backbone, inputs.width(obs_dim, a), backbone_cfg)
        return ObsShortcut(net, obs_dim) if cfg.head_obs else net

    if cfg.shared_encoder:
        encoders = [encoder(cfg.actor_inputs)] * (1 + n_critics)
    elif cfg.critics_share_encoder:
        encoders = [encoder(cfg.actor_inputs)] + [encoder(cfg.critic_inputs)] * n_critics
    else:
        encoders = [encoder(cfg.actor_inputs)] + [encoder(cfg.critic_inputs)
                                                  for _ in range(n_critics)]
    actor_embed, critic_embed = cfg.head_embed or (None, None)
    # predictors of the next observation and reward, on each encoder that a loss trains
    predicts = obs_dim + 1 if cfg.predict_weight > 0 else 0
    actor_predicts = predicts if not cfg.shared_encoder or cfg.shared_encoder_actor_grad else 0
    actor = Actor(encoders[0], action_low, action_high, cfg.head_hidden, actor_embed,
                  actor_predicts)
    critics = nn.ModuleList(Critic(enc, a, cfg.head_hidden, critic_embed, cfg.critic_norm,
                                   predicts) for enc in encoders[1:])
    with torch.no_grad():  # after every default init, so None changes nothing
        for head in (actor.head, *(c.head for c in critics)):
            if cfg.head_bias is not None:
                for layer in list(head)[:-1]:
                    if isinstance(layer, nn.Linear):
                        layer.bias.fill_(cfg.head_bias)
            if cfg.final_init is not None:
                for p in head[-1].parameters():
                    p.uniform_(-cfg.final_init, cfg.final_init)
    return actor, critics


def _adam(params: list[nn.Parameter], lr: float, encoder_lr: float | None,
          *encoders: nn.Module) -> torch.optim.Adam:
    """Fused Adam over ``params``: one group at ``lr``, or with ``encoder_lr`` two groups (the
    heads at ``lr``, the parameters of ``encoders`` at ``encoder_lr``)."""
    if encoder_lr is None:
        return torch.optim.Adam(params, lr=lr, fused=True)
    enc = {id(p) for e in encoders for p in e.parameters()}
    groups = [{"params": [p for p in params if id(p) not in enc], "lr": lr},
              {"params": [p for p in params if id(p) in enc], "lr": encoder_lr}]
    return torch.optim.Adam([g for g in groups if g["params"]], fused=True)


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
        compile: run the losses (forward passes, and so their backward) through
            ``torch.compile``; optimizer steps stay eager.
    """

    def __init__(self, obs_dim: int, action_low: Tensor, action_high: Tensor,
                 backbone: str = "mlp", backbone_cfg: BackboneConfig | None = None,
                 cfg: DDPGConfig | None = None, precision: PrecisionConfig | None = None,
                 compile: bool = False) -> None:
        super().__init__()
        self.cfg, self.backbone_name = cfg or DDPGConfig(), backbone
        cfg = self.cfg
        low, high = action_bounds(action_low, action_high)
        self.obs_dim, self.action_dim = obs_dim, low.numel()
        self.actor, self.critics = build_networks(obs_dim, low, high, backbone, backbone_cfg, cfg)
        # One deepcopy of both keeps a shared encoder shared in the targets too.
        targets = copy.deepcopy(nn.ModuleDict({"actor": self.actor, "critics": self.critics}))
        self.actor_target = targets["actor"].requires_grad_(False)
        self.critic_targets = targets["critics"].requires_grad_(False)
        # the evaluation-only average of the actor (its own copy of a shared encoder)
        self.actor_average = None if cfg.average_tau is None else \
            copy.deepcopy(self.actor).requires_grad_(False)
        self.amp = MixedPrecision(precision or PrecisionConfig())
        # Fused Adam: one kernel per parameter (faster than foreach on the CPU too), and with
        # fp16 it takes the scaler's inf flag on the device (no host sync to skip a step).
        # A shared encoder belongs to the critic's optimizer (and to the actor's only if asked).
        self._actor_encodes = not cfg.shared_encoder or cfg.shared_encoder_actor_grad
        skip = set() if self._actor_encodes else {id(p) for p in self.actor.encoder.parameters()}
        self._actor_params = [p for p in self.actor.parameters() if id(p) not in skip]
        self._critic_params = list(self.critics.parameters())
        self.actor_opt = _adam(self._actor_params, cfg.actor_lr, cfg.encoder_lr,
                               self.actor.encoder)
        self.critic_opt = _adam(self._critic_params, cfg.critic_lr, cfg.encoder_lr,
                                *(c.encoder for c in self.critics))
        # each group's own rate, which lr_warmup and lr_decay scale (a loaded optimizer keeps a
        # scaled one)
        self._base_lrs = {opt: [g["lr"] for g in opt.param_groups]
                          for opt in (self.actor_opt, self.critic_opt)}
        self._critic_fn = CompiledFunction(self._critic_losses, "the critic loss") \
            if compile else self._critic_losses
        self._actor_fn = CompiledFunction(self._actor_losses, "the actor loss") \
            if compile else self._actor_losses
        # A shared encoder stepped by both optimizers needs the actor's gradients apart.
        self._encoder_in_both = cfg.shared_encoder and cfg.shared_encoder_actor_grad
        # the critics besides critic 0 whose Q the actor loss also takes the minimum over
        self._actor_min_with = tuple(self.critics[1:]) if cfg.actor_q == "min" else ()
        # each parameter once (a shared encoder appears in actor and critics)
        self._online_params = list(
            nn.ModuleDict({"actor": self.actor, "critics": self.critics}).parameters())
        self._target_params = list(targets.parameters())
        self._average_pairs = None if self.actor_average is None else (
            list(self.actor_average.parameters()), list(self.actor.parameters()))
        # the encoders' inputs on one scale (input_norm): shown the steps before learning starts
        self.obs_norm = RunningNorm(obs_dim) if cfg.input_norm else None
        self.reward_norm = RunningNorm(1) if cfg.input_norm else None
        self.noise_gen: torch.Generator | None = None  # TD3 target smoothing draws from it
        self.num_updates = 0
        # running means of the critics' and the actor's clipped gradient norms (spike_clip);
        # 0 until the first update sets them
        self.register_buffer("grad_norm_mean", torch.zeros(2), persistent=False)
        # the discount of the current update while it rises (gamma_from); None: cfg.gamma
        self.register_buffer("_gamma", None if cfg.gamma_from is None else
                             torch.tensor(cfg.gamma_from), persistent=False)

    # ----------------------------------------------------------------------------- acting
    def initial_state(self, batch_size: int) -> AgentState:
        """Actor state and critic states (recorded while acting for stored-state replay)."""
        dev = self.actor.scale.device
        return AgentState(self.actor.encoder.initial_state(batch_size, dev),
                          tuple(c.encoder.initial_state(batch_size, dev) for c in self.critics))

    def reset_state(self, state: AgentState, done: Tensor) -> AgentState:
        """Reset the rows of finished episodes (``done``, shape ``(N,)``)."""
        return AgentState(
            self.actor.encoder.reset_state(state.actor, done),
            tuple(c.encoder.reset_state(s, done) for c, s in zip(self.critics, state.critics)))

    @torch.no_grad()
    def act(self, obs: Tensor, state: AgentState | None, prev_action: Tensor | None = None,
            prev_reward: Tensor | None = None, track_critic: bool = False
            ) -> tuple[Tensor, AgentState]:
        """Deterministic actions for one step of N environments.

        Args:
            obs: ``(N, obs_dim)``.
            state: from :meth:`initial_state` / the previous call; ``None`` for
                :meth:`initial_state`.
            prev_action: ``(N, act_dim)``, the previous action (zero at episode start).
            prev_reward: ``(N,)``, likewise.
            track_critic: also advance the critic encoders' states (stored-state replay).

        Returns:
            Actions ``(N, act_dim)`` within the bounds, and the new state.

        Raises:
            ValueError: an input that is not a tensor of its shape, or ``prev_action`` /
                ``prev_reward`` left out where an encoder takes it (named, with the shape).
        """
        self._check_act_inputs(obs, prev_action, prev_reward, track_critic)
        obs, prev_reward = self.normed_inputs(obs, prev_reward)
        if state is None:
            state = self.initial_state(obs.shape[0])
        elif not isinstance(state, AgentState):
            raise ValueError(f"state must be an AgentState (from initial_state or the previous "
                             f"call) or None, got {type(state).__name__}")
        x = self.cfg.actor_inputs(obs, prev_action, prev_reward)
        action, actor_state = self.actor.step(x, state.actor)
        critic_states = state.critics
        if track_critic and self.cfg.shared_encoder:
            critic_states = (actor_state,) * len(self.critics)  # one encoder, one state
        elif track_critic:
            x = self.cfg.critic_inputs(obs, prev_action, prev_reward)
            stepped: dict[int, State] = {}  # critics on one encoder step it once
            for c, s in zip(self.critics, state.critics):
                if id(c.encoder) not in stepped:
                    stepped[id(c.encoder)] = c.encoder.step(x, s)[1]
            critic_states = tuple(stepped[id(c.encoder)] for c in self.critics)
        return action, AgentState(actor_state, critic_states)

    @torch.no_grad()
    def observe_inputs(self, obs: Tensor, reward: Tensor) -> None:
        """Show the input norms (``input_norm``) a step of N envs: ``obs`` ``(N, obs_dim)``,
        ``reward`` ``(N,)``; nothing without them. The training loop shows them the steps
        before learning starts."""
        if self.obs_norm is not None and self.reward_norm is not None:
            self.obs_norm.update(obs)
            self.reward_norm.update(reward.reshape(-1, 1))

    def normed_inputs(self, obs: Tensor, prev_reward: Tensor | None
                      ) -> tuple[Tensor, Tensor | None]:
        """The observation ``(..., obs_dim)`` and previous reward ``(...)`` as the encoders
        see them: normalised with ``input_norm``, else as they are."""
        if self.obs_norm is None or self.reward_norm is None:
            return obs, prev_reward
        if prev_reward is not None:
            prev_reward = self.reward_norm(prev_reward[..., None])[..., 0]
        return self.obs_norm(obs), prev_reward

    def _check_act_inputs(self, obs: Tensor, prev_action: Tensor | None,
                          prev_reward: Tensor | None, track_critic: bool) -> None:
        """:meth:`act`'s inputs against the shapes the encoders take (their own errors would
        describe the concatenated input instead)."""
        if not isinstance(obs, Tensor) or obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            got = tuple(obs.shape) if isinstance(obs, Tensor) else type(obs).__name__
            raise ValueError(f"obs must be a tensor of shape (N, {self.obs_dim}), got {got}")
        n = obs.shape[0]
        used = [self.cfg.actor_inputs] + ([self.cfg.critic_inputs] if track_critic else [])
        for name, value, shape, needed in (
                ("prev_action", prev_action, (n, self.action_dim),
                 any(u.prev_action for u in used)),
                ("prev_reward", prev_reward, (n,), any(u.prev_reward for u in used))):
            if not needed:
                continue
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else \
                    type(value).__name__
                raise ValueError(f"{name} must be a tensor of shape {shape} (this agent's "
                                 f"encoders take it; zeros at an episode start), got {got}")

    def policy(self, which: str = "actor") -> DDPG | ActorCopyPolicy:
        """The deterministic policy named by ``LoopConfig.eval_policy``: ``"actor"`` (this
        agent), ``"target"`` (the target actor) or ``"average"`` (the evaluation average of
        ``DDPGConfig.average_tau``), the last two as an :class:`ActorCopyPolicy`.

        Raises:
            ValueError: ``which`` is none of them, or ``"average"`` without an average kept.
        """
        if which == "actor":
            return self
        if which == "target":
            return ActorCopyPolicy(self, self.actor_target)
        if which == "average":
            if self.actor_average is None:
                raise ValueError(f"the policy 'average' {NO_AVERAGE}")
            return ActorCopyPolicy(self, self.actor_average)
        raise ValueError(f"the evaluated policy must be 'actor', 'target' or 'average', got "
                         f"{which!r}")

    # ----------------------------------------------------------------------------- learning
    def _critic_losses(self, batch: SequenceBatch) -> tuple[Tensor, Tensor, CriticEncoding]:
        """TD target and critic loss under the precision's autocast (what compiles)."""
        cfg, states = self.cfg, batch.states
        c_states = (None,) * len(self.critics) if states is None else states.critics
        noise = TargetNoise(cfg.target_noise, cfg.target_noise_clip, self.noise_gen)
        with self.amp.autocast(self.actor.scale.device.type):
            gamma = cfg.gamma if self._gamma is None else self._gamma
            target = td_target(self.actor_target, self.critic_targets, batch, states,
                               cfg.actor_inputs, cfg.critic_inputs, gamma, noise, cfg.n_step,
                               cfg.reward_scale)
            return critic_loss(self.critics, batch, target, c_states, cfg.critic_inputs,
                               cfg.predict_weight)

    def _actor_losses(self, batch: SequenceBatch, enc: CriticEncoding) -> ActorLoss:
        """The actor loss under the precision's autocast (what compiles)."""
        a_state = None if batch.states is None else batch.states.actor
        with self.amp.autocast(self.actor.scale.device.type):
            return actor_loss(self.actor, self.critics[0], batch, a_state, enc,
                              self.cfg.actor_inputs, encode=self._actor_encodes,
                              pre_tanh_penalty=self.cfg.pre_tanh_penalty,
                              pre_tanh_margin=self.cfg.pre_tanh_margin,
                              squash_grad=self.cfg.squash_grad, min_with=self._actor_min_with,
                              predict_weight=self.cfg.predict_weight)

    @property
    def compile_fallbacks(self) -> int:
        """The compiled losses that run eagerly (every compile failed); 0 when not compiled."""
        return sum(isinstance(f, CompiledFunction) and f.fell_back
                   for f in (self._critic_fn, self._actor_fn))

    def update(self, batch: SequenceBatch) -> dict[str, Tensor]:
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

        The batch's shapes are checked (:meth:`SequenceBatch.check`); its values are not, as
        that would wait on the device every update: a non-finite value makes the losses
        non-finite and, through the steps, the weights, which ``train.py``'s loop checks for
        (:class:`rlkit.faults.LossWatch` keeps the first non-finite update). A script of its
        own should check ``critic_loss``.

        Returns:
            Metrics as 0-dim tensors (no host synchronisation): ``critic_loss``, ``q_mean``,
            ``critic_grad_norm``, when the actor was updated ``actor_loss``,
            ``actor_grad_norm``, ``actor_saturation`` and ``actor_pre_tanh`` (see
            :func:`saturation`), with ``predict_weight`` the prediction losses
            ``predict_loss`` (critic 0's encoder) and ``actor_predict_loss`` (unweighted), and
            with fp16 ``skipped_steps`` (cumulative) and ``grad_scale``.

        Raises:
            ValueError: a field of ``batch`` has the wrong shape (named).
        """
        batch.check(self.obs_dim, self.action_dim)
        if self.obs_norm is not None:  # the inputs only: the TD target's rewards stay
            obs, prev_reward = self.normed_inputs(batch.obs, batch.prev_reward)
            batch = batch._replace(obs=obs, prev_reward=prev_reward)
        amp, compiled = self.amp, isinstance(self._critic_fn, CompiledFunction)
        if compiled:
            mark_step_begin(self._critic_fn, self._actor_fn)
        self.num_updates += 1
        if self.num_updates <= max(self.cfg.lr_warmup,
                                   self.cfg.lr_decay_start + self.cfg.lr_decay):
            self._schedule()  # the last call sets the rates that stay
        if self._gamma is not None:  # in place: a compiled update reads the new value
            self._gamma.fill_(self.gamma_at(self.num_updates))
        actor_due = self.num_updates % self.cfg.policy_delay == 0
        closs, q, enc = self._critic_fn(batch)
        self.critic_opt.zero_grad(set_to_none=True)
        if actor_due:
            aloss, pre, apredict = self._actor_fn(batch, enc)
            self.actor_opt.zero_grad(set_to_none=True)
            if self._encoder_in_both:
                actor_grads = torch.autograd.grad(amp.scale(aloss), self._actor_params)
                amp.scale(closs).backward()
            else:
                amp.scale(closs + aloss).backward()
        else:
            amp.scale(closs).backward()
        amp.unscale_(self.critic_opt)
        cnorm = self._clip(self._critic_params, 0)
        amp.step(self.critic_opt)
        m = batch.mask
        metrics = {  # compiled outputs may live in CUDA graph memory, reused by later replays
            "critic_loss": closs.detach().clone() if compiled else closs.detach(),
            "q_mean": ((q.detach() * m).sum() / m.sum().clamp_min(1.0)),
            "critic_grad_norm": cnorm.detach(),
        }
        if enc.predict_loss is not None:
            metrics["predict_loss"] = enc.predict_loss.clone() if compiled else enc.predict_loss
        if self._gamma is not None:
            metrics["gamma"] = self._gamma.clone()
        if compiled:  # losses that failed to compile and run eagerly (config.json says "on")
            metrics["compile_fallbacks"] = self.compile_fallbacks
        if actor_due:
            if self._encoder_in_both:
                for p, g in zip(self._actor_params, actor_grads):
                    p.grad = g
            amp.unscale_(self.actor_opt)
            anorm = self._clip(self._actor_params, 1)
            amp.step(self.actor_opt)
            polyak_update(self._target_params, self._online_params, self.cfg.tau)
            if self._average_pairs is not None:
                polyak_update(*self._average_pairs, self.cfg.average_tau)
            metrics["actor_loss"] = aloss.detach().clone() if compiled else aloss.detach()
            metrics["actor_grad_norm"] = anorm.detach()
            metrics.update(saturation(pre.detach(), m))
            if apredict is not None:
                metrics["actor_predict_loss"] = apredict.clone() if compiled else apredict
        metrics.update(amp.update())
        return metrics

    def _clip(self, params: list[nn.Parameter], i: int) -> Tensor:
        """The gradient norm of ``params`` (before clipping), clipped to ``max_grad_norm`` and
        then to ``spike_clip`` times running mean ``i`` of :attr:`grad_norm_mean`, which it
        updates (no host synchronisation; a non-finite norm leaves the mean as it was)."""
        norm = grad_norm(params, self.cfg.max_grad_norm)
        if self.cfg.spike_clip is None:
            return norm
        clipped = norm if self.cfg.max_grad_norm is None else norm.clamp(
            max=self.cfg.max_grad_norm)
        mean = self.grad_norm_mean[i]
        limit = torch.where(mean > 0, self.cfg.spike_clip * mean, clipped)
        coef = (limit / (clipped + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_([p.grad for p in params if p.grad is not None], coef)
        new = torch.where(mean > 0, mean + 0.01 * (clipped.clamp(max=limit) - mean), clipped)
        self.grad_norm_mean[i] = torch.where(torch.isfinite(clipped), new, mean)
        return norm

    def gamma_at(self, k: int) -> float:
        """The discount of update ``k`` (1-based): ``gamma``, or with ``gamma_from`` the
        horizon-linear rise to it (:attr:`DDPGConfig.gamma_from`)."""
        cfg = self.cfg
        if cfg.gamma_from is None:
            return cfg.gamma
        h_from, h_to = 1.0 / (1.0 - cfg.gamma_from), 1.0 / (1.0 - cfg.gamma)
        return 1.0 - 1.0 / (h_from + (h_to - h_from) * min(1.0, k / cfg.gamma_rise))

    def _schedule(self) -> None:
        """Set every group's rate for update ``num_updates``: its base rate times the linear
        warm-up's factor and the linear decay's (which begins after ``lr_decay_start``)."""
        k, cfg = self.num_updates, self.cfg
        f = min(1.0, k / cfg.lr_warmup) if cfg.lr_warmup else 1.0
        if cfg.lr_decay:
            d = max(0, k - cfg.lr_decay_start)
            f *= 1.0 - (1.0 - cfg.lr_decay_to) * min(1.0, d / cfg.lr_decay)
        for opt, lrs in self._base_lrs.items():
            for g, lr in zip(opt.param_groups, lrs):
                g["lr"] = lr * f

    # ----------------------------------------------------------------------------- saving
    def checkpoint_state(self) -> dict[str, dict]:
        """State dicts of every network and optimizer (a dict of state dicts)."""
        average = {} if self.actor_average is None else {
            "actor_average": self.actor_average.state_dict()}
        return {**average,
            "actor": self.actor.state_dict(),
            "critics": self.critics.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_targets": self.critic_targets.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "counters": {"num_updates": self.num_updates},
            "grad_norm_mean": {"critic": self.grad_norm_mean[0].item(),
                               "actor": self.grad_norm_mean[1].item()},
            "precision": self.amp.state_dict(),
            **({} if self.obs_norm is None or self.reward_norm is None else {"input_norm": {
                "obs": self.obs_norm.state_dict(), "reward": self.reward_norm.state_dict()}}),
        }

    def load_checkpoint_state(self, state: dict[str, dict]) -> None:
        """Inverse of :meth:`checkpoint_state`."""
        self.actor.load_state_dict(state["actor"])
        self.critics.load_state_dict(state["critics"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic_targets.load_state_dict(state["critic_targets"])
        if self.actor_average is not None:
            if "actor_average" not in state:
                raise ValueError("this agent keeps an average of the actor (--agent.average-tau "
                                 f"{self.cfg.average_tau}) but the checkpoint has none")
            self.actor_average.load_state_dict(state["actor_average"])
        if self.obs_norm is not None and self.reward_norm is not None:
            if "input_norm" not in state:
                raise ValueError("this agent normalises its encoders' inputs "
                                 "(--agent.input-norm) but the checkpoint has no input norms")
            self.obs_norm.load_state_dict(state["input_norm"]["obs"])
            self.reward_norm.load_state_dict(state["input_norm"]["reward"])
        elif "input_norm" in state:  # its weights expect normalised inputs
            raise ValueError("the checkpoint's agent normalises its encoders' inputs "
                             "(--agent.input-norm) but this agent does not")
        load_optimizer_state(self.actor_opt, state["actor_opt"])
        load_optimizer_state(self.critic_opt, state["critic_opt"])
        self.num_updates = int(state["counters"]["num_updates"])
        if "grad_norm_mean" in state:  # absent in checkpoints saved before spike_clip
            m = state["grad_norm_mean"]
            self.grad_norm_mean.copy_(torch.tensor([m["critic"], m["actor"]]))
        if "precision" in state:  # absent in checkpoints saved before mixed precision
            self.amp.load_state_dict(state["precision"])

    @classmethod
    def from_record(cls, record: RunRecord, precision: PrecisionConfig | None = None,
                    compile: bool = False) -> DDPG:
        """The (untrained) agent a run directory's record describes."""
        m = record.model
        return cls(record.obs_dim, torch.tensor(record.action_low),
                   torch.tensor(record.action_high), m.backbone,
                   m.backbone_config(),
                   DDPGConfig.from_json(record.agent), precision, compile)


class ActorCopyPolicy:
    """An average of a DDPG agent's actor as a policy to evaluate: the target actor or the
    evaluation average (``DDPGConfig.average_tau``).

    Both are Polyak averages of the actor's recent weights (``copy <- tau * actor + (1 - tau)
    * copy`` after every actor update, an average over about 1/tau updates). Evaluated instead
    of the actor, such a copy reads the same policy with the noise of its last updates averaged
    out. It acts as :meth:`DDPG.act` does, with the copy's encoder and its own recurrent state,
    and follows the copy's weights as they are updated.

    Args:
        agent: the agent (its input settings).
        actor: the copy that acts (``agent.actor_target`` or ``agent.actor_average``).
    """

    def __init__(self, agent: DDPG, actor: Actor) -> None:
        self.agent, self.actor = agent, actor

    def initial_state(self, batch_size: int) -> State:
        return self.actor.encoder.initial_state(batch_size, self.actor.scale.device)

    @torch.no_grad()
    def act(self, obs: Tensor, state: State, prev_action: Tensor | None = None,
            prev_reward: Tensor | None = None) -> tuple[Tensor, State]:
        """Actions ``(N, act_dim)`` for one step of N environments, and the new state."""
        self.agent._check_act_inputs(obs, prev_action, prev_reward, track_critic=False)
        obs, prev_reward = self.agent.normed_inputs(obs, prev_reward)
        x = self.agent.cfg.actor_inputs(obs, prev_action, prev_reward)
        return self.actor.step(x, state)


__all__ = ["DDPG", "NO_AVERAGE", "ActorCopyPolicy", "AgentState", "DDPGConfig",
           "build_networks"]
