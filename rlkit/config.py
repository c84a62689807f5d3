"""Typed config sections of a training run, each frozen and validating itself.

A run's config is one object of sections (see ``agents.config.TrainConfig``): :class:`RunConfig`,
:class:`EnvConfig`, :class:`ReplayConfig`, :class:`ModelConfig`, :class:`NoiseConfig`,
:class:`LoopConfig`, :class:`GridConfig` and the agent's own. Builders take a section whole;
nothing is passed positionally across modules.

On the command line the sections are flat (``--total-steps``, ``--seq-len``; only the agent's
fields keep their ``--agent.`` prefix), so every field name is unique across sections and a
bad value names its flag: ``--total-steps must be a positive integer, got 0``.
:func:`replace_fields` changes fields by those same names.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import tyro

from rlkit.backbones import (
    FAMILY_OPTIONS,
    BackboneConfig,
    backbone_config,
    backbone_has_memory,
    check_backbone_name,
)
from rlkit.backbones.rnn import check_chrono
from rlkit.compile import CompileSetting
from rlkit.fields import FLAG_NAMES, check_finite, replace_fields
from rlkit.precision import Precision, check_precision

StateMode = Literal["zero", "stored", "prefix"]
EVAL_POLICIES = ("actor", "target", "average")
"""The policies an evaluation can run (``LoopConfig.eval_policy``)."""
WindowStart = Literal["any", "episode"]
STORED_BURN_IN = 16  # default burn-in of stored-state windows (episodes over --max-window)
TRAINED_STEPS = 64  # trained steps of a default window that is not a whole episode


_FAMILY_FIELD = re.compile(r"\b(d_model|n_layers|n_heads|d_state|expand|context)\b")
"""The fields of a family's config that are flags of :class:`ModelConfig` by the same name."""


def flag(name: str) -> str:
    """The command-line flag of a field: ``total_steps`` -> ``--total-steps``."""
    return "--" + name.replace("_", "-")


def _positive(section: Any, *names: str) -> None:
    for name in names:
        v = getattr(section, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{flag(name)} must be a positive integer, got {v!r}")


def _non_negative(section: Any, *names: str) -> None:
    for name in names:
        v = getattr(section, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{flag(name)} must be an integer >= 0, got {v!r}")


def _path(section: Any, *names: str) -> None:
    """Refuse an empty path: ``Path("")`` is the current directory, which an empty string
    does not mean. A path object is taken as it is."""
    for name in names:
        v = getattr(section, name)
        text = os.fspath(v) if isinstance(v, os.PathLike) else v
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ValueError(f"{flag(name)} must name a directory, got {v!r}")


def parse_device(name: str | torch.device, option: str = "--device") -> torch.device:
    """The torch device ``name`` (``cpu``, ``cuda`` or ``cuda:N``), refused (``ValueError``
    naming ``option``) where it is another string or a CUDA device this machine does not have:
    a checkpoint mapped onto it would fail to load with an error about the file."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"{option} must be cpu, cuda or cuda:N, got {str(name)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} {name} was asked for but no CUDA device is available: "
                         f"expected {option} cpu")
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        raise ValueError(f"{option} {name} was asked for but this machine has {count} CUDA "
                         f"device(s): expected an index below {count}")
    return device


@dataclass(frozen=True)
class RunConfig:
    """Identity and bookkeeping of a run."""

    seed: int = 0
    """Run seed; every random component derives its own generator from it. Several make a
    grid (``--seed 0 1 2``)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` picks CUDA when available."""
    run_dir: str | None = None
    """Run directory; default ``runs/<env>__<backbone>__s<seed>__<time>``. Never overwritten."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint, with its ``config.json``;
    only --total-steps, --checkpoint-every, --checkpoint-minutes, --drop-nonfinite and
    --progress may change."""
    wandb: Literal["disabled", "offline", "online"] = "disabled"
    """W&B logging; ``online`` falls back to ``offline`` without a key or network."""
    wandb_project: str = "rlkit"
    """W&B project."""
    wandb_group: str | None = None
    """W&B group; default ``<env>/<backbone>``, or the grid's name for a grid."""
    recipe: str = "auto"
    """Named settings for the task (listed above); auto: the recipe made for --env, if any;
    none: the plain defaults. Flags given here win over a recipe's values."""

    def __post_init__(self) -> None:
        _non_negative(self, "seed")
        _path(self, "run_dir", "resume")
        if self.seed >= 2**63:
            raise ValueError(f"--seed must be below 2**63, got {self.seed}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")


@dataclass(frozen=True)
class EnvConfig:
    """The task."""

    id: Annotated[str, tyro.conf.arg(name="env")] = "Pendulum-v1"
    """Gymnasium id with a Box action space; ``module:EnvId`` imports ``module`` first."""
    num_envs: int = 1
    """Parallel training environments (Gymnasium SyncVectorEnv)."""

    def __post_init__(self) -> None:
        _positive(self, "num_envs")
        if not isinstance(self.id, str) or not self.gym_id.strip():
            raise ValueError(f"--env must name a Gymnasium id (or module:EnvId), got "
                             f"{self.id!r}")
        if self.imports and not all(part.isidentifier() for part in self.imports[0].split(".")):
            raise ValueError(f"--env {self.id}: {self.imports[0]!r} before the ':' is not a "
                             f"module name; expected module:EnvId with a dotted module name "
                             f"such as mypackage.envs")

    @property
    def imports(self) -> tuple[str, ...]:
        """Modules to import before ``gym.make`` (the ``module`` of ``module:EnvId``)."""
        return (self.id.partition(":")[0],) if ":" in self.id else ()

    @property
    def gym_id(self) -> str:
        """The id ``gym.make`` takes (without a ``module:`` prefix)."""
        return self.id.partition(":")[2] if ":" in self.id else self.id


def _default_burn_in(episode_steps: int | None, reach: int | None) -> int:
    """The burn-in of windows that start mid-episode when none is given: the encoder's reach
    (replayed), else :data:`STORED_BURN_IN` steps refreshing a stored state, at most
    ``episode_steps - 1`` (no step has more before it in its episode; ``None``: uncapped)."""
    if reach is not None:
        return reach
    if episode_steps is None:
        return STORED_BURN_IN
    return min(STORED_BURN_IN, episode_steps - 1)


@dataclass(frozen=True)
class ReplayConfig:
    """What is stored and what an update samples.

    Memory backbones train on whole episodes by default (pomdp-baselines, RESeL) when the
    task's episodes fit in ``max_window`` steps: windows start at episode starts, span the
    longest episode and start from the initial state, so training computes what acting
    computes. Longer episodes get windows from any step: by default the Transformer replays its
    reach R = n_layers x (context - 1) before 64 trained steps from the initial state (prefix;
    exact, nothing stored), and the other memory families start from the state stored while
    acting, refreshed over a burn-in of 16 (stored; R2D2). ``--state-mode zero`` starts them
    from the initial state (the agent then acts on histories it never trained on).
    """

    buffer_size: int = 1_000_000
    """Replay capacity in steps."""
    batch_size: int | None = None
    """Transitions (MLP) or windows (sequence backbones) per update; default 256 transitions,
    32 windows."""
    seq_len: int | None = None
    """Window length L of sequence training, --burn-in included; default 1 for mlp
    (transitions); for memory backbones the task's episode length when it is at most
    --max-window (whole episodes), else --burn-in + 64 (64 trained steps a window)."""
    max_window: int = 256
    """Longest episode that memory backbones train on whole by default."""
    burn_in: int = 0
    """Steps at a window start that get no loss: they refresh a stored state (stored), or
    replay the steps before the trained ones from the initial state (prefix). Default 0;
    beyond --max-window, when no --state-mode is given, 16 (stored) or the Transformer's
    reach (prefix), and a --burn-in given there takes that mode too."""
    state_mode: Annotated[StateMode | None,  # None: the task's default, not a choice
                          tyro.conf.arg(metavar="{zero,stored,prefix}")] = None
    """Window start state: zero (pomdp-baselines), the state stored while acting (R2D2), or
    the initial state --burn-in steps before the trained ones (prefix; clipped at the episode
    start).
    Default zero; beyond --max-window, prefix (Transformer) or stored (other memory)."""
    state_every: int | None = None
    """--state-mode stored: keep the state of every K-th step of a stream (default
    seq_len - burn_in); windows start there or at an episode start, so that the stored states
    cost 1/K of the buffer and consecutive windows cover every step. After the buffer wraps,
    the steps of an env before its oldest kept chunk start (fewer than K) are not drawn; the
    buffer must hold more than K steps per env."""
    window_start: Annotated[WindowStart | None,
                            tyro.conf.arg(metavar="{any,episode}")] = None
    """Windows start at any stored step, or at episode starts only (whole episodes); default
    episode for memory backbones whose episodes fit in --max-window, else any."""
    episode_sampling: Literal["episodes", "steps"] = "episodes"
    """With --window-start episode: every stored episode equally likely (episodes), or in
    proportion to its length, so that every stored step is equally likely (steps)."""

    def __post_init__(self) -> None:
        _positive(self, "buffer_size", "max_window")
        _non_negative(self, "burn_in")
        for name in ("seq_len", "batch_size", "state_every"):
            if getattr(self, name) is not None:
                _positive(self, name)
        if self.batch_size is not None and self.batch_size > self.buffer_size:
            raise ValueError(f"--batch-size {self.batch_size} is larger than --buffer-size "
                             f"{self.buffer_size}; expected batch_size <= buffer_size")
        if self.state_mode not in ("zero", "stored", "prefix", None):
            raise ValueError(f"--state-mode must be zero, stored or prefix, got "
                             f"{self.state_mode!r}")
        if self.state_mode == "prefix" and self.burn_in == 0:
            raise ValueError("--state-mode prefix needs --burn-in B > 0 (the steps replayed "
                             "before the trained ones); got --burn-in 0")
        if self.window_start not in ("any", "episode", None):
            raise ValueError(f"--window-start must be any or episode, got "
                             f"{self.window_start!r}")
        if self.episode_sampling not in ("episodes", "steps"):
            raise ValueError(f"--episode-sampling must be episodes or steps, got "
                             f"{self.episode_sampling!r}")

    def resolved(self, memory: bool, episode_steps: int | None,
                 reach: int | None = None) -> ReplayConfig:
        """Every default filled in (see the class docstring).

        Args:
            memory: the encoder carries state.
            episode_steps: the task's longest episode (its time limit), if known.
            reach: how many past steps the encoder sees, when finite (:meth:`act_gap`).
        """
        mode = self.state_mode or "zero"
        if not memory and self.seq_len in (None, 1) and self.window_start != "episode":
            return dataclasses.replace(self, seq_len=1, window_start="any", state_mode=mode,
                                       batch_size=self.batch_size or 256)  # transitions
        whole = self.window_start == "episode" or (
            self.window_start is None and memory and mode == "zero"
            and episode_steps is not None and episode_steps <= self.max_window
            and (self.seq_len is None or self.seq_len >= episode_steps))
        if whole:
            seq_len = self.seq_len or episode_steps or 64
            return dataclasses.replace(self, seq_len=seq_len, window_start="episode",
                                       state_mode=mode, batch_size=self.batch_size or 32)
        # A default window trains 64 steps (fewer on shorter episodes) after its burn-in,
        # whether the burn-in is the default or given.
        trained = min(TRAINED_STEPS, episode_steps or TRAINED_STEPS)
        asked = self.burn_in or _default_burn_in(None, reach)  # uncapped: decides the mode
        if (self.state_mode is None and self.window_start is None and memory and asked
                and (self.seq_len is None or self.seq_len > asked)):
            burn = self.burn_in or _default_burn_in(episode_steps, reach)  # fits the episodes
            return dataclasses.replace(  # replay what it sees, or refresh a stored state
                self, seq_len=self.seq_len or trained + burn, burn_in=burn, window_start="any",
                state_mode="prefix" if reach is not None else "stored",
                batch_size=self.batch_size or 32)
        return dataclasses.replace(self, seq_len=self.seq_len or trained + self.burn_in,
                                   window_start="any", state_mode=mode,
                                   batch_size=self.batch_size or 32)

    def check_resolved(self, episode_steps: int | None = None) -> None:
        """Refuse a resolved window that the replay cannot sample, or one that reaches past
        every episode of the task (padding only), naming the value and what was expected.

        Args:
            episode_steps: the task's longest episode, if known.
        """
        seq_len, burn_in = self.seq_len, self.burn_in
        if seq_len is None:
            raise ValueError("seq_len must be resolved (a positive integer), got None")
        if burn_in >= seq_len:
            raise ValueError(f"--burn-in must be in [0, seq_len={seq_len}), got {burn_in}")
        if self.state_mode in ("zero", None) and burn_in:
            raise ValueError(f"--burn-in {burn_in} needs --state-mode stored or prefix")
        if self.state_every is not None and self.state_every > seq_len - burn_in:
            raise ValueError(f"--state-every {self.state_every} leaves steps no window trains "
                             f"on; expected at most seq_len - burn_in = {seq_len - burn_in}")
        if episode_steps is None or seq_len == 1:
            return
        trained = seq_len - burn_in
        if trained > episode_steps:
            after = f" after a burn-in of {burn_in}" if burn_in else ""
            raise ValueError(f"--seq-len {seq_len} trains {trained} steps a window{after}, more "
                             f"than the task's episodes hold (at most {episode_steps} steps): "
                             f"the rest of every window would be padding; expected --seq-len "
                             f"at most {burn_in + episode_steps}")
        if burn_in >= episode_steps:
            raise ValueError(f"--burn-in {burn_in} is as long as the task's episodes (at most "
                             f"{episode_steps} steps): no step has that many steps before it "
                             f"in its episode; expected --burn-in at most {episode_steps - 1}")

    def unused_flags(self, memory: bool) -> str | None:
        """The replay flags of a resolved config that it does not use (``None`` when there are
        none): ``--state-every 10 is for --state-mode stored; this run's is zero``.

        Args:
            memory: the encoder carries state.
        """
        unused = []
        if self.state_every is not None and self.state_mode != "stored":
            unused.append(f"--state-every {self.state_every} is for --state-mode stored; this "
                          f"run's is {self.state_mode}")
        if self.state_mode == "stored" and not memory:
            unused.append("--state-mode stored starts windows from the state carried while "
                          "acting; this encoder carries none")
        if self.episode_sampling != "episodes" and self.window_start != "episode":
            unused.append(f"--episode-sampling {self.episode_sampling} is for --window-start "
                          f"episode; this run's windows start at any step")
        return "; ".join(unused) or None

    def transitions(self, memory: bool) -> bool:
        """Whether a resolved config trains on single transitions, not on windows."""
        return not memory and self.seq_len == 1

    def dropped_start(self, memory: bool, episode_steps: int | None,
                      reach: int | None = None) -> str | None:
        """Why an unresolved config whose ``--seq-len`` leaves no step after the default
        burn-in trains windows from the initial state (the default start, stored states or a
        replayed reach, needs a trained step after it); ``None`` where that is not so.

        Args:
            reach: past steps the encoder sees, when finite (the Transformer's); else ``None``.
        """
        burn = _default_burn_in(None, reach)  # uncapped, as resolved() decides the mode
        if (not memory or not burn or self.state_mode is not None or self.burn_in
                or self.window_start is not None or self.seq_len is None or self.seq_len > burn
                or self.resolved(memory, episode_steps, reach).window_start == "episode"):
            return None
        mode = "prefix" if reach is not None else "stored"
        return (f"--seq-len {self.seq_len} leaves no step to train after the default burn-in "
                f"of {burn} (--state-mode {mode}), so its windows start from the initial state "
                f"instead; a --seq-len above {burn}, or a --burn-in below {self.seq_len}, "
                f"keeps the {mode} start")

    def act_gap(self, memory: bool, episode_steps: int | None,
                reach: int | None = None) -> str | None:
        """Why a resolved config trains a memory encoder on other histories than it acts on
        (``None`` when training computes what acting computes).

        Args:
            reach: past steps the encoder sees, when finite (the Transformer's); else ``None``.
        """
        if not memory or self.state_mode == "stored" or reach == 0:
            return None  # (a reach of 0 sees no history: nothing to carry or replay)
        longest = f"up to {episode_steps} steps" if episode_steps else "of unknown length"
        fix = ("Train on whole episodes (--window-start episode with --seq-len at least the "
               "episode length, the default when episodes fit in --max-window) or start "
               "windows from the states stored while acting (--state-mode stored --burn-in B)")
        if reach is not None:  # a finite reach: replaying it is exact and stores nothing
            fix = (f"Train on whole episodes, or replay the {reach} steps the encoder sees "
                   f"before each window (--state-mode prefix --burn-in {reach})")
        sees = (f"the encoder sees {reach} step{'' if reach == 1 else 's'} back"
                if reach is not None else
                f"the agent acts with its state carried over whole episodes ({longest})")
        if self.state_mode == "prefix" and self.window_start != "episode":
            if reach is not None and self.burn_in >= reach:
                return None
            return (f"windows replay {self.burn_in} steps (--burn-in) from the initial state "
                    f"before the trained steps, but {sees}: it acts on histories it never "
                    f"trained on. {fix}")
        if self.window_start == "episode":
            if episode_steps is not None and self.seq_len >= episode_steps:
                return None
            return (f"windows cover the first {self.seq_len} steps of each episode ({longest}): "
                    f"the agent acts on the later steps but never trains on them. {fix}")
        return (f"windows of {self.seq_len} steps start at any step from the initial state, "
                f"but {sees}: it acts on histories it never trained on. {fix}")


@dataclass(frozen=True)
class ModelConfig:
    """The encoder family, its size, and how the update computes."""

    backbone: str = "mlp"
    """Encoder family: mlp, rnn, lstm, gru, transformer, s4, mamba or mamba2. Several make a
    grid."""
    d_model: int = 256
    """Backbone width."""
    n_layers: int = 1
    """Backbone layers."""
    context: int = 64
    """Transformer only: attention window K (each step sees itself and the K - 1 before)."""
    branch_init: float = 1.0
    """Transformer only: its residual branches' last layers start at this times the default
    (0: every block starts as the identity)."""
    chrono: int = 0
    """LSTM and GRU only: chrono initialisation of their gate biases for memories of up to this
    many steps (Tallec & Ollivier, 2018; ``rlkit.backbones.rnn``); 0 keeps torch's default."""
    rnn_init: Literal["torch", "orthogonal"] = "torch"
    """RNN, LSTM and GRU only: their recurrent weights at torch's default, or orthogonal with
    zero biases (pomdp-baselines' recurrent agents; ``rlkit.backbones.rnn``)."""
    n_heads: int | None = None
    """Transformer only: attention heads (default 4; --d-model must be a multiple)."""
    d_state: int | None = None
    """S4, Mamba and Mamba-2 only: state size N per channel (default 64 for S4, 16 for the
    Mambas)."""
    expand: int | None = None
    """Mamba and Mamba-2 only: inner width d_inner = expand x --d-model (default 2)."""
    grad_checkpoint: bool = False
    """Gradient checkpointing in the backbones."""
    prev_action: bool | None = None
    """Sequence training: actor and critic encoders also see the previous action. Default: on
    for memory backbones, off for ``mlp`` (an MLP fed its own previous action can carry
    information from step to step through its actions: it would not be memoryless)."""
    prev_reward: bool = False
    """Sequence training: actor and critic encoders also see the previous reward
    (``--prev-reward``; ``mlp`` on single transitions, ``--seq-len 1``, does not use it, and
    ``train.py`` says so when it is typed; on windows ``mlp`` stays memoryless only with it
    off)."""
    precision: Precision = "fp32"
    """Update arithmetic: fp32; bf16 autocast; fp16 autocast with loss scaling (skipped steps
    are logged as ``skipped_steps``). Weights stay fp32."""
    compile: CompileSetting = "off"
    """Compile the update's forward passes and losses with ``torch.compile`` (CUDA graphs on a
    GPU); falls back to eager with one warning where compiling fails. auto: only for the
    families where it was measured to pay on the device (``rlkit.compile.COMPILE_PAYS``);
    config.json records the choice (on or off)."""

    def __post_init__(self) -> None:
        check_backbone_name(self.backbone)
        _positive(self, "d_model", "n_layers", "context")
        for name in ("n_heads", "d_state", "expand"):
            if getattr(self, name) is not None:
                _positive(self, name)
        check_chrono(self.chrono, "--chrono")
        if self.rnn_init not in ("torch", "orthogonal"):
            raise ValueError(f"--rnn-init must be torch or orthogonal, got {self.rnn_init!r}")
        check_finite(self.branch_init, "--branch-init", 0.0)
        check_precision(self.precision, "--precision")
        if isinstance(self.compile, bool):  # config.json before auto recorded a bool
            object.__setattr__(self, "compile", "on" if self.compile else "off")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"--compile must be auto, on or off, got {self.compile!r}")
        try:  # the family's own checks (--d-model a multiple of --n-heads, an even S4 state)
            self.backbone_config()
        except ValueError as e:
            raise ValueError(f"--backbone {self.backbone}: " + _FAMILY_FIELD.sub(
                lambda m: flag(m.group(0)), str(e))) from e

    def backbone_config(self) -> BackboneConfig:
        """The family's own config (:func:`rlkit.backbones.backbone_config`) from these
        options; the family's defaults for those left out or not its own."""
        return backbone_config(self.backbone, self.d_model, self.n_layers, self.grad_checkpoint,
                               **{name: getattr(self, name) for name in FAMILY_OPTIONS})

    @property
    def memory(self) -> bool:
        """Whether the encoder family carries state (its class's ``has_memory``: every built-in
        family but ``mlp``)."""
        return backbone_has_memory(self.backbone)

    @property
    def feeds_prev_action(self) -> bool:
        """Whether sequence training feeds both networks the previous action: ``prev_action``,
        or by default whether the family carries state."""
        return self.prev_action if self.prev_action is not None else self.memory

    @property
    def reach(self) -> int | None:
        """How many past steps the encoder's output can depend on: ``n_layers x (context - 1)``
        for the Transformer (each layer attends ``context - 1`` steps back), 0 for a family
        without memory (``mlp``), ``None`` (the whole episode) for the recurrent and
        state-space families."""
        if self.backbone == "transformer":
            return self.n_layers * (self.context - 1)
        return None if self.memory else 0

    def reach_in(self, episode_steps: int | None) -> int | None:
        """:attr:`reach` on a task whose episodes last at most ``episode_steps``: no step sees
        further back than its episode's first, ``episode_steps - 1`` steps (so a context longer
        than the episodes replays no padding before each window)."""
        reach = self.reach
        if reach is None or episode_steps is None:
            return reach
        return min(reach, episode_steps - 1)

    def empty_cache(self, episode_steps: int | None) -> str | None:
        """Why a Transformer's key/value cache is longer than any episode of the task (``None``
        when it is not): every step attends over all ``context - 1`` slots, empty or not, so
        a context above ``episode_steps + 1`` costs time and memory and sees nothing more."""
        if self.backbone != "transformer" or episode_steps is None \
                or self.context <= episode_steps + 1:
            return None
        return (f"--context {self.context} keeps a cache of {self.context - 1} steps, but the "
                f"task's episodes last at most {episode_steps} steps: every step attends over "
                f"the empty slots too. --context {episode_steps + 1} sees as much, for less "
                f"(its {episode_steps} cached steps reach an episode's first from the "
                f"observation after its last, which the critic's target reads; "
                f"--context {-(-(episode_steps - 1) // self.n_layers) + 1} lets every step "
                f"acted on see its whole episode)")

    def unused_flags(self) -> str | None:
        """The family-specific flags given values that this backbone does not use (``None``
        when there are none): ``--chrono 100 is for lstm and gru only; mlp does not use
        it``."""
        default = ModelConfig()
        unused = [f"--{name.replace('_', '-')} {getattr(self, name)} is for "
                  f"{' and '.join((', '.join(users[:-1]), users[-1]) if users[1:] else users)} "
                  "only"
                  for name, (_, users) in FAMILY_OPTIONS.items()
                  if self.backbone not in users and getattr(self, name) != getattr(default, name)]
        if not unused:
            return None
        them = "them" if len(unused) > 1 else "it"
        return f"{'; '.join(unused)}; {self.backbone} does not use {them}"

    def reach_gap(self, episode_steps: int | None, seq_len: int) -> str | None:
        """Why a Transformer trained on windows that span its episodes (whole episodes, or
        prefix windows as long) cannot see all of them (``None`` when its reach covers the
        episode, or when its windows are shorter than the episodes), or why one
        at ``--context 1`` (reach 0) has no memory at all, on windows too.

        Training on whole episodes asks the encoder to use the whole episode; with a reach
        ``R`` shorter than ``episode_steps - 1`` the last steps of an episode cannot depend on
        its first ones, in training and in acting alike (no train/act gap, but a task that
        needs them cannot be learned).

        Args:
            episode_steps: the task's longest episode, if known.
            seq_len: the resolved replay window (``>= episode_steps`` for whole episodes).
        """
        reach = self.reach
        if self.backbone == "transformer" and reach == 0 and (
                episode_steps is None or seq_len < episode_steps):
            return ("the Transformer at --context 1 attends to no earlier step, in training and in "
                    "acting: only each step's own inputs reach it (the previous action, where it "
                    "is one). --context 2 or more lets it attend to earlier steps")
        if self.backbone != "transformer" or episode_steps is None \
                or seq_len < episode_steps or reach >= episode_steps - 1:
            return None
        context = -(-(episode_steps - 1) // self.n_layers) + 1  # n_layers x (K - 1) >= T - 1
        steps = "step" if reach == 1 else "steps"
        return (f"the Transformer sees {reach} {steps} back (--n-layers {self.n_layers} x "
                f"(--context {self.context} - 1)) but trains on windows that span its "
                f"episodes of up to {episode_steps} steps: the last step of an episode cannot see "
                f"its first "
                f"{episode_steps - 1 - reach}. --context {context} or more lets every step see "
                f"its whole episode")


@dataclass(frozen=True)
class NoiseConfig:
    """Exploration noise added to the deterministic policy's actions."""

    kind: Annotated[Literal["ou", "gaussian"], tyro.conf.arg(name="noise")] = "ou"
    """Exploration noise process."""
    sigma: Annotated[float, tyro.conf.arg(name="noise_sigma")] = 0.2
    """Noise scale, as a fraction of the action half-range."""
    ou_theta: float = 0.15
    """OU mean-reversion rate."""
    ou_dt: float = 1e-2
    """OU time step."""

    def __post_init__(self) -> None:
        if self.kind not in ("ou", "gaussian"):
            raise ValueError(f"--noise must be ou or gaussian, got {self.kind!r}")
        check_finite(self.sigma, "--noise-sigma", 0.0)
        check_finite(self.ou_theta, "--ou-theta", 0.0, low_open=True)
        check_finite(self.ou_dt, "--ou-dt", 0.0, low_open=True)
        if self.ou_theta * self.ou_dt >= 2.0:  # x += theta * (mu - x) * dt overshoots and grows
            raise ValueError(f"--ou-theta x --ou-dt must be below 2 for the OU process to stay "
                             f"bounded, got {self.ou_theta} x {self.ou_dt}")

    def unused_flags(self) -> str | None:
        """The OU flags given values that Gaussian noise does not use (``None`` when there are
        none, or when the noise is OU)."""
        plain = NoiseConfig()
        given = [f"--{name.replace('_', '-')} {getattr(self, name)}"
                 for name in ("ou_theta", "ou_dt") if getattr(self, name) != getattr(plain, name)]
        if self.kind == "ou" or not given:
            return None
        return (f"{' and '.join(given)} {'are' if given[1:] else 'is'} for --noise ou; this "
                "run's is gaussian")


@dataclass(frozen=True)
class LoopConfig:
    """Schedule of the training loop (counts are env steps summed over the envs)."""

    total_steps: int = 15_000
    """Environment steps in total (summed over the vector envs, which step together: with
    ``--num-envs N`` the run ends at the first multiple of N at or past it)."""
    learning_starts: int = 1_000
    """Random actions (and no updates) before this many env steps."""
    updates_per_step: float = 1.0
    """Gradient updates per env step; fractions allowed (0.25: one update every 4 steps)."""
    initial_updates: int = 0
    """Updates made once, when learning starts, on the random steps gathered before it, ahead
    of the ``updates_per_step`` schedule (pomdp-baselines makes as many as it gathered, so its
    updates keep pace with its env steps from the start: ``--initial-updates`` equal to
    ``--learning-starts``). 0: none."""
    update_every: int = 1
    """Make the updates owed in rounds, when the env step count reaches a multiple of this
    (pomdp-baselines collects an episode with one policy, then makes its updates: 200 on
    Pendulum, with ``--learning-starts`` a multiple of it). The count of updates does not
    change, only when they come; updates owed after the last multiple before
    ``--total-steps`` are not made. 1: after every env step."""
    eval_every: int = 5_000
    """Evaluate the deterministic policy every this many env steps (0: only at the end)."""
    eval_episodes: int = 5
    """Episodes per evaluation."""
    eval_policy: Literal["actor", "target", "average"] = "actor"
    """The policy evaluations run and log: ``actor``, the one trained and acting, ``target``,
    the target actor (the Polyak average of the actor's recent weights, over about 1/tau
    updates), or ``average``, a second such average kept for evaluation at its own rate
    (``--agent.average-tau``, which it needs). Exploration always acts with the actor;
    evaluating draws from no training generator, so the choice changes what is logged, not
    what is trained."""
    log_every: int = 1_000
    """Write training metrics every this many env steps, and once more at the end when steps
    are left since the last row."""
    checkpoint_every: int = 0
    """Also write ``RUN_DIR/checkpoint.pt`` every this many env steps (0: off). A checkpoint is
    always written at the start, at the end and on SIGINT / SIGTERM."""
    checkpoint_minutes: float = 5.0
    """Also write ``RUN_DIR/checkpoint.pt`` when this many minutes of wall-clock time have
    passed since the last one (0: off), so that a killed run loses at most that much."""
    drop_nonfinite: bool = False
    """Drop transitions with a NaN / inf observation or reward (logged as
    ``dropped_transitions``) and restart that env's episode, instead of stopping."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        _positive(self, "total_steps", "eval_episodes", "log_every", "update_every")
        _non_negative(self, "learning_starts", "initial_updates", "eval_every",
                      "checkpoint_every")
        check_finite(self.updates_per_step, "--updates-per-step", 0.0, low_open=True)
        check_finite(self.checkpoint_minutes, "--checkpoint-minutes", 0.0)
        if self.eval_policy not in EVAL_POLICIES:
            raise ValueError(f"--eval-policy must be actor, target or average, got "
                             f"{self.eval_policy!r}")
        if self.updates_per_step > 1000:
            raise ValueError(f"--updates-per-step must be at most 1000, got "
                             f"{self.updates_per_step}")


def end_step(total_steps: int, num_envs: int) -> int:
    """The step a run of ``--total-steps`` ends at: the first multiple of ``--num-envs`` at or
    past it (the vector envs step together)."""
    return -(-total_steps // num_envs) * num_envs


def updates_made(loop: LoopConfig, num_envs: int, stop_at: int | None = None) -> int:
    """How many updates a new run of ``loop`` makes, counted as the trainer schedules them: the
    envs step ``num_envs`` at a time to :func:`end_step`; from the first step at or past
    ``--learning-starts`` each step owes ``--updates-per-step`` per env (and the first one
    ``--initial-updates`` more), and what is owed is made, whole updates only, at the first step
    at or past each multiple of ``--update-every``. The owed sum is added step by step in the
    trainer's order, so that it rounds as the trainer's does (taking whole updates off a float
    below 2**53 is exact). ``stop_at``: return once this many are counted."""
    n, every, made, credit = num_envs, loop.update_every, 0, 0.0
    first = max(n, -(-loop.learning_starts // n) * n)  # the first step that learns
    for step in range(first, end_step(loop.total_steps, n) + 1, n):
        credit += loop.updates_per_step * n
        if step == first:
            credit += loop.initial_updates
        if step // every != (step - n) // every:  # a multiple of --update-every reached
            whole = math.floor(credit)
            made, credit = made + whole, credit - whole
            if stop_at is not None and made >= stop_at:
                break
    return made


@dataclass(frozen=True)
class GridConfig:
    """Where the runs of a grid (several ``--backbone`` or ``--seed`` values) go."""

    grid_dir: str | None = None
    """Grid directory when ``--backbone`` or ``--seed`` take several values (a grid); None:
    ``runs/grid-<env>-<date>-<time>``."""
    launcher: Literal["local", "ray"] = "local"
    """Where a grid's runs go: local processes or tasks on a Ray cluster."""
    jobs: int = 1
    """Runs of a grid at a time (local), or CPUs of a local Ray instance."""
    ray_address: str | None = None
    """Address of an existing Ray cluster; default: start a local Ray instance."""

    def __post_init__(self) -> None:
        _positive(self, "jobs")
        _path(self, "grid_dir")
        if self.launcher not in ("local", "ray"):
            raise ValueError(f"--launcher must be local or ray, got {self.launcher!r}")


__all__ = [
    "FLAG_NAMES",
    "EnvConfig",
    "GridConfig",
    "LoopConfig",
    "ModelConfig",
    "NoiseConfig",
    "ReplayConfig",
    "RunConfig",
    "parse_device",
    "end_step",
    "flag",
    "replace_fields",
]
