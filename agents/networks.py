"""DDPG's networks: a deterministic actor and a critic, each behind a sequence encoder.

The encoder is any backbone of :mod:`rlkit.backbones`. As in the DDPG paper, the action enters
the critic after its first layer (here: after the encoder, at the head's first layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlkit.backbones import Backbone, State, per_step


class AgentState(NamedTuple):
    """The recurrent state of an agent: its actor's encoder and each critic's encoder."""

    actor: State
    critics: tuple[State, ...]


@dataclass(frozen=True)
class EncoderInputs:
    """What an encoder sees at step t besides the observation: the previous action and / or
    reward (zero at an episode start)."""

    prev_action: bool = False
    prev_reward: bool = False

    def width(self, obs_dim: int, action_dim: int) -> int:
        """Input width ``D_in`` of the encoder."""
        return obs_dim + action_dim * self.prev_action + self.prev_reward

    def __call__(self, obs: Tensor, prev_action: Tensor | None,
                 prev_reward: Tensor | None) -> Tensor:
        """``[obs, prev_action?, prev_reward?]`` on the last axis, for ``(..., D)`` inputs."""
        parts = [obs]
        if self.prev_action:
            parts.append(prev_action)
        if self.prev_reward:
            parts.append(prev_reward[..., None])
        return torch.cat(parts, dim=-1) if len(parts) > 1 else obs


def mlp(d_in: int, hidden: tuple[int, ...], d_out: int, norm: bool = False) -> nn.Sequential:
    """``Linear -> ReLU`` for each hidden width, then a final ``Linear`` to ``d_out``. ``norm``:
    ``Linear -> LayerNorm -> ReLU``, the LayerNorm without its own scale and shift (it holds no
    parameters, so a layer's output is normalised and the next ``Linear`` weighs it)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers.append(nn.Linear(d_in, h))
        if norm:
            layers.append(nn.LayerNorm(h, elementwise_affine=False))
        layers.append(nn.ReLU())
        d_in = h
    layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


def predictor(d_encoding: int, action_dim: int, hidden: tuple[int, ...], predict_dim: int
              ) -> nn.Sequential | None:
    """The auxiliary predictor on ``[h_t, a_t]`` (``predict_dim`` outputs: the next observation
    and the reward), or ``None`` for ``predict_dim`` 0 (``DDPGConfig.predict_weight``)."""
    return mlp(d_encoding + action_dim, hidden, predict_dim) if predict_dim else None


def _frozen(layer: nn.Linear, x: Tensor) -> Tensor:
    """``layer`` on ``x`` with its weight and bias detached: gradients reach ``x`` only."""
    return F.linear(x, layer.weight.detach(), layer.bias.detach())


def _layer(net: nn.Sequential, i: int, x: Tensor, frozen: bool = False) -> Tensor:
    """``net``'s layer ``i`` on ``x``; ``frozen``: its weights detached. The last layer (Q, or
    the actor's output before its tanh) runs in fp32 under autocast: in bf16 a Q of -300
    would keep 8 significant bits (steps of 2.0), and the TD error between two such values
    would be mostly rounding."""
    layer = net[i]
    if i < len(net) - 1:
        return _frozen(layer, x) if frozen and isinstance(layer, nn.Linear) else layer(x)
    with torch.autocast(x.device.type, enabled=False):  # an fp32 island (a no-op in fp32)
        x = x.float()
        return _frozen(layer, x) if frozen else layer(x)


def _run(net: nn.Sequential, x: Tensor, first: int = 0, frozen: bool = False) -> Tensor:
    """``net``'s layers from index ``first`` on ``x`` ``(N, D)`` (the last in fp32, see
    :func:`_layer`); ``frozen``: with their weights detached, so gradients reach ``x`` but
    never ``net``."""
    for i in range(first, len(net)):
        x = _layer(net, i, x, frozen)
    return x


class ObsShortcut(nn.Module):
    """An encoder whose encoding at step t also carries that step's observation: ``[h_t, o_t]``
    with ``h = backbone(x)`` and ``o_t = x_t[:obs_dim]`` (the encoder's input starts with the
    observation). The heads then see the current observation directly, beside the memory, as
    in pomdp-baselines' recurrent actor and critic. It owns no parameters; state, ``step`` and
    ``forward`` are the backbone's, so the backbone contract holds for it unchanged.

    Args:
        backbone: the sequence encoder.
        obs_dim: width of the observation at the start of the encoder's input.
    """

    def __init__(self, backbone: Backbone | InputEmbed, obs_dim: int) -> None:
        super().__init__()
        if not 0 < obs_dim <= backbone.d_in:
            raise ValueError(f"obs_dim must be in [1, {backbone.d_in}] (the encoder's input "
                             f"width), got {obs_dim}")
        self.backbone, self.obs_dim = backbone, obs_dim
        self.d_in, self.d_out = backbone.d_in, backbone.d_out + obs_dim
        self.has_memory = backbone.has_memory

    def _join(self, h: Tensor, x: Tensor) -> Tensor:
        return torch.cat([h, x[..., :self.obs_dim].to(h.dtype)], dim=-1)  # (..., H + obs_dim)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """``x`` ``(B, T, D_in)`` -> ``([h, o]`` ``(B, T, H + obs_dim)``, state)."""
        h, state = self.backbone(x, state)
        return self._join(h, x), state

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """``x`` ``(B, D_in)`` -> ``([h, o]`` ``(B, H + obs_dim)``, state)."""
        h, state = self.backbone.step(x, state)
        return self._join(h, x), state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return self.backbone.initial_state(batch_size, device)

    def reset_state(self, state: State, done_mask: Tensor) -> State:
        return self.backbone.reset_state(state, done_mask)


class InputEmbed(nn.Module):
    """Separate ``Linear -> ReLU`` embedders for the observation, the previous action and the
    previous reward, concatenated and fed to the backbone (pomdp-baselines' recurrent actor and
    critic). Each step is embedded on its own, so ``step`` and ``forward`` keep the backbone's
    contract; state is the backbone's.

    Args:
        backbone: the sequence encoder, built for inputs of width :meth:`width`.
        obs_dim: observation width (the input starts with it).
        action_dim: action width.
        inputs: which of the previous action and reward follow the observation.
        widths: embedding widths ``(observation, action, reward)``; those of inputs the encoder
            does not see are not used.
    """

    def __init__(self, backbone: Backbone, obs_dim: int, action_dim: int, inputs: EncoderInputs,
                 widths: tuple[int, int, int]) -> None:
        super().__init__()
        if backbone.d_in != self.width(inputs, widths):
            raise ValueError(f"the backbone takes inputs of width {backbone.d_in}, but the "
                             f"embeddings {widths} with {inputs} give "
                             f"{self.width(inputs, widths)}")
        parts = [(obs_dim, widths[0])] + [(action_dim, widths[1])] * inputs.prev_action \
            + [(1, widths[2])] * inputs.prev_reward
        self.splits = [d for d, _ in parts]
        self.embeds = nn.ModuleList(nn.Linear(d, w) for d, w in parts)
        self.backbone = backbone
        self.d_in, self.d_out = sum(self.splits), backbone.d_out
        self.has_memory = backbone.has_memory

    @staticmethod
    def width(inputs: EncoderInputs, widths: tuple[int, int, int]) -> int:
        """The backbone's input width: the sum of the used embeddings' widths."""
        return widths[0] + widths[1] * inputs.prev_action + widths[2] * inputs.prev_reward

    def embed(self, x: Tensor) -> Tensor:
        """``x`` ``(..., D_in)`` -> ``(..., sum of widths)``, each part through its embedder."""
        parts = torch.split(x, self.splits, dim=-1)
        return torch.cat([F.relu(e(p)) for e, p in zip(self.embeds, parts, strict=True)], -1)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """``x`` ``(B, T, D_in)`` -> ``(B, T, D_out)``, state."""
        return self.backbone(self.embed(x), state)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """``x`` ``(B, D_in)`` -> ``(B, D_out)``, state."""
        return self.backbone.step(self.embed(x), state)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return self.backbone.initial_state(batch_size, device)

    def reset_state(self, state: State, done_mask: Tensor) -> State:
        return self.backbone.reset_state(state, done_mask)


class HeadEmbed(nn.Module):
    """A ``Linear -> ReLU`` embedder of what a head sees of the current step: the observation
    ``o_t`` that :class:`ObsShortcut` puts at the end of the encoding (and for a critic the
    action ``a_t`` beside it), so the head takes ``[m_t, relu(E [o_t, a_t])]`` where ``m_t`` is
    the memory (pomdp-baselines' shortcut embedders: 32 wide for the actor, 48 for the critic).

    Args:
        obs_dim: width of the observation at the end of the encoding.
        extra_dim: width of what joins it (the critic's action; 0 for the actor).
        width: embedding width.
    """

    def __init__(self, obs_dim: int, extra_dim: int, width: int) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.linear = nn.Linear(obs_dim + extra_dim, width)

    def d_out(self, d_encoding: int) -> int:
        """The head's input width from the encoding's ``d_encoding`` (which ends with o_t)."""
        return d_encoding - self.obs_dim + self.linear.out_features

    def embed(self, obs: Tensor, extra: Tensor | None = None, frozen: bool = False) -> Tensor:
        """``relu(E [obs, extra])`` ``(..., width)``; ``frozen``: with ``E`` detached."""
        x = obs if extra is None else torch.cat([obs, extra.to(obs.dtype)], dim=-1)
        return F.relu(_frozen(self.linear, x) if frozen else self.linear(x))

    def forward(self, h: Tensor, extra: Tensor | None = None) -> Tensor:
        """``h`` ``(..., M + obs_dim)`` = ``[m, o]`` -> ``[m, relu(E [o, extra])]``."""
        m, o = h[..., :-self.obs_dim], h[..., -self.obs_dim:]
        return torch.cat([m, self.embed(o, extra)], dim=-1)  # (..., M + width)


class _InvertingTanh(torch.autograd.Function):
    """``tanh`` forward; backward scales the incoming gradient ``g`` by the distance to the
    bound that a descent step moves towards: ``1 - y`` if ``g < 0`` (``y`` goes up), ``1 + y``
    if ``g > 0``, i.e. ``1 + y * sign(g)`` (inverting gradients, Hausknecht & Stone 2016)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return g * (1 + y * torch.sign(g))


_TANH = {"tanh": torch.tanh, "inverting": _InvertingTanh.apply}


class Actor(nn.Module):
    """``a = low + (tanh(head(encoder(obs))) + 1) / 2 * (high - low)``; with ``embed_width``
    the head sees the current observation through a :class:`HeadEmbed` (the encoder must be an
    :class:`ObsShortcut`)."""

    def __init__(
        self, encoder: Backbone | ObsShortcut, action_low: Tensor, action_high: Tensor,
        hidden: tuple[int, ...], embed_width: int | None = None, predict_dim: int = 0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.embed = None if embed_width is None else \
            HeadEmbed(_shortcut_obs_dim(encoder), 0, embed_width)
        d_in = encoder.d_out if self.embed is None else self.embed.d_out(encoder.d_out)
        self.head = mlp(d_in, hidden, action_low.numel())
        self.predictor = predictor(encoder.d_out, action_low.numel(), hidden, predict_dim)
        self.register_buffer("scale", (action_high - action_low).float() / 2)
        self.register_buffer("center", (action_high + action_low).float() / 2)

    def squash(self, x: Tensor, grad: str = "tanh") -> Tensor:
        """Pre-activations ``(..., A)`` to actions within the bounds. ``grad``: the gradient
        through the tanh (same value either way): ``tanh`` its derivative, ``inverting``
        :class:`_InvertingTanh`'s (``DDPGConfig.squash_grad``)."""
        if grad not in _TANH:
            raise ValueError(f"squash grad must be 'tanh' or 'inverting', got {grad!r}")
        return self.center + self.scale * _TANH[grad](x.float())

    def _head(self, h: Tensor) -> Tensor:
        """The head on encodings ``(N, H)``, through the embedder if there is one."""
        return _run(self.head, h if self.embed is None else self.embed(h))

    def pre_tanh(self, h: Tensor) -> Tensor:
        """The head's output before the tanh, ``(B, T, A)``, from encodings ``(B, T, H)``."""
        return per_step(self._head, h)

    def act_on(self, h: Tensor) -> Tensor:
        """Actions ``(B, T, A)`` from encodings ``h`` ``(B, T, H)``."""
        return self.squash(self.pre_tanh(h))

    def forward(self, obs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Args: obs ``(B, T, D_in)``. Returns actions ``(B, T, act_dim)`` and the state."""
        h, state = self.encoder(obs, state)  # (B, T, H)
        return self.act_on(h), state

    def step(self, obs: Tensor, state: State) -> tuple[Tensor, State]:
        """Args: obs ``(B, D_in)``. Returns actions ``(B, act_dim)`` and the state."""
        h, state = self.encoder.step(obs, state)  # (B, H)
        return self.squash(self._head(h)), state


class Critic(nn.Module):
    """``Q(h, a) = head([encoder(obs, prev_action, prev_reward), a])``; with ``embed_width``
    ``head([m, relu(E [o, a])])``, the current observation and action through a
    :class:`HeadEmbed` (the encoder must be an :class:`ObsShortcut`); with ``norm`` each of the
    head's hidden layers is normalised before its ReLU (:func:`mlp`)."""

    def __init__(self, encoder: Backbone | ObsShortcut, action_dim: int,
                 hidden: tuple[int, ...], embed_width: int | None = None,
                 norm: bool = False, predict_dim: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.embed = None if embed_width is None else \
            HeadEmbed(_shortcut_obs_dim(encoder), action_dim, embed_width)
        d_in = encoder.d_out + action_dim if self.embed is None else \
            self.embed.d_out(encoder.d_out)
        self.head = mlp(d_in, hidden, 1, norm)
        self.predictor = predictor(encoder.d_out, action_dim, hidden, predict_dim)

    def q(self, h: Tensor, action: Tensor) -> Tensor:
        """Args: h ``(B, T, H)``, action ``(B, T, A)``. Returns Q ``(B, T)``."""
        return self.q_from_pre(self.pre(h, action))

    def pre(self, h: Tensor, action: Tensor) -> Tensor:
        """The head's first layer before its activation, ``W [h, a] + b`` (with an embedder
        ``W [m, relu(E [o, a])] + b``): ``(B, T, hidden)``."""
        if self.embed is None:
            x = torch.cat([h, action.to(h.dtype)], dim=-1)  # (B, T, H + A)
        else:
            x = self.embed(h, action)  # (B, T, M + width)
        return per_step(lambda y: _layer(self.head, 0, y), x)

    def q_from_pre(self, pre: Tensor, frozen: bool = False) -> Tensor:
        """The rest of the head on :meth:`pre`'s output; Q ``(B, T)``. ``frozen``: the
        layers' weights are used detached (gradients reach ``pre`` only)."""
        return per_step(lambda x: _run(self.head, x, first=1, frozen=frozen),
                        pre).squeeze(-1).float()

    def q_moved(self, pre: Tensor, delta: Tensor, obs: Tensor | None = None,
                action: Tensor | None = None) -> Tensor:
        """Q at ``a + delta`` from :meth:`pre` at ``(h, a)``, with every weight detached.

        The head's first layer is linear in ``[h, a]``: with ``W = [W_h, W_a]``,
        ``W [h, a + delta] + b = pre + W_a delta``. So Q at another action costs only the small
        ``W_a`` product, and the encoder and the large ``W_h`` product are not run again. With
        an embedder, ``W = [W_m, W_e]`` and the change is
        ``W_e (relu(E [o, a + delta]) - relu(E [o, a]))``, which needs ``o`` and ``a``. The
        weights are used detached, so gradients reach ``delta`` (the actor) and ``pre`` only.

        Args:
            pre: :meth:`pre` at ``(h, a)``, ``(B, T, hidden)``.
            delta: the action change ``(B, T, A)``.
            obs: the current observations ``(B, T, obs_dim)`` (needed with an embedder).
            action: the actions ``a`` that ``pre`` was taken at (needed with an embedder).

        Returns:
            Q ``(B, T)``.
        """
        if self.embed is None:
            w_a = self.head[0].weight[:, self.encoder.d_out:].detach()  # (hidden, A): W_a
            change = per_step(lambda d: F.linear(d, w_a), delta.to(pre.dtype))  # (B, T, hidden)
        else:
            if obs is None or action is None:
                raise ValueError("a critic with a head embedder needs the observations and the "
                                 "actions that pre was taken at, got None")
            width = self.embed.linear.out_features
            w_e = self.head[0].weight[:, -width:].detach()  # (hidden, width): W_e
            obs = obs.to(pre.dtype)
            moved_e = self.embed.embed(obs, action + delta, frozen=True)  # (B, T, width)
            change = per_step(lambda e: F.linear(e, w_e),
                              moved_e - self.embed.embed(obs, action, frozen=True))
        return self.q_from_pre(pre + change, frozen=True)


def _shortcut_obs_dim(encoder: nn.Module) -> int:
    """The observation width an :class:`ObsShortcut` appends; refuses any other encoder."""
    if not isinstance(encoder, ObsShortcut):
        raise ValueError(f"a head embedder embeds the current observation that ObsShortcut "
                         f"(--agent.head-obs) appends to the encoding; got a "
                         f"{type(encoder).__name__} encoder")
    return encoder.obs_dim


def action_bounds(low: object, high: object) -> tuple[Tensor, Tensor]:
    """The action bounds as flat float32 tensors, checked finite and ``high > low``."""
    low = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
    high = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
    if low.shape != high.shape:
        raise ValueError(f"action_low and action_high must have one entry per action "
                         f"dimension each, got {low.numel()} and {high.numel()}")
    if not torch.all(torch.isfinite(low) & torch.isfinite(high)):
        raise ValueError(f"action bounds must be finite, got low={low.tolist()} "
                         f"high={high.tolist()}")
    if not torch.all(high > low):
        raise ValueError(f"action_high must exceed action_low, got low={low.tolist()} "
                         f"high={high.tolist()}")
    return low, high


__all__ = ["Actor", "AgentState", "Critic", "EncoderInputs", "HeadEmbed", "InputEmbed",
           "ObsShortcut", "action_bounds", "mlp"]
