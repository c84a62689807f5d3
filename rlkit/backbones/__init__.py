"""Sequence backbones behind one contract (see :mod:`rlkit.backbones.base`) and a registry.

``make_backbone(name, d_in, cfg)`` builds a family by name; ``--backbone NAME`` in ``train.py``
selects from :func:`backbone_names`: the built-in :data:`BACKBONE_NAMES` and the families
added with :func:`register_backbone`.
"""

from __future__ import annotations

import dataclasses
import importlib

from rlkit.backbones.base import Backbone, BackboneConfig, State, per_step
from rlkit.backbones.check import check_backbone
from rlkit.fields import is_count

# name -> (module, backbone class, config class, fixed config fields)
_REGISTRY: dict[str, tuple[str, str, str, dict[str, object]]] = {
    "mlp": ("rlkit.backbones.mlp", "MLPBackbone", "MLPConfig", {}),
    "rnn": ("rlkit.backbones.rnn", "RNNBackbone", "RNNConfig", {"cell": "rnn"}),
    "lstm": ("rlkit.backbones.rnn", "RNNBackbone", "RNNConfig", {"cell": "lstm"}),
    "gru": ("rlkit.backbones.rnn", "RNNBackbone", "RNNConfig", {"cell": "gru"}),
    "transformer": ("rlkit.backbones.transformer", "TransformerBackbone", "TransformerConfig", {}),
    "s4": ("rlkit.backbones.s4", "S4Backbone", "S4Config", {}),
    "mamba": ("rlkit.backbones.mamba", "MambaBackbone", "MambaConfig", {}),
    "mamba2": ("rlkit.backbones.mamba2", "Mamba2Backbone", "Mamba2Config", {}),
}

BACKBONE_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""The built-in families, in a stable order."""

_ADDED: dict[str, tuple[type[Backbone], type[BackboneConfig]]] = {}
"""Families added with :func:`register_backbone`: name -> (backbone class, config class)."""


def backbone_names() -> tuple[str, ...]:
    """Every family ``--backbone`` takes: the built-in ones, then those registered."""
    return (*BACKBONE_NAMES, *_ADDED)


def register_backbone(name: str, backbone_cls: type[Backbone],
                      config_cls: type[BackboneConfig] = BackboneConfig) -> None:
    """Add a family under ``name``, for ``make_backbone``, ``ModelConfig`` and the agent.

    The family is known to this process only: a script that registers it and then calls
    ``agents.cli.run(argv)`` trains, resumes and evaluates with it; another process (``python
    -m agents.evaluate``) must register it too before it reads such a run.

    Args:
        name: the name ``--backbone`` and ``config.json`` use (not a built-in one).
        backbone_cls: a :class:`Backbone` subclass built as ``backbone_cls(d_in, cfg)``.
        config_cls: its config, a :class:`BackboneConfig` (sub)class; fields beyond the
            common ones keep their defaults when built from a run's config.

    Raises:
        ValueError: ``name`` is taken, or a class is not of the kind expected.
    """
    if not isinstance(name, str) or not name or name in backbone_names():
        raise ValueError(f"cannot register backbone {name!r}: expected a new name, not one of "
                         f"{', '.join(backbone_names())}")
    if not (isinstance(backbone_cls, type) and issubclass(backbone_cls, Backbone)):
        raise ValueError(f"cannot register backbone {name!r}: expected a subclass of "
                         f"rlkit.backbones.Backbone, got {backbone_cls!r}")
    if not (isinstance(config_cls, type) and issubclass(config_cls, BackboneConfig)):
        raise ValueError(f"cannot register backbone {name!r}: expected a subclass of "
                         f"rlkit.backbones.BackboneConfig as its config, got {config_cls!r}")
    _ADDED[name] = (backbone_cls, config_cls)


def check_backbone_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a family this process knows (built in or
    registered), naming the known ones."""
    if not isinstance(name, str) or (name not in _REGISTRY and name not in _ADDED):
        raise ValueError(f"unknown backbone {name!r}; expected one of "
                         f"{', '.join(backbone_names())} (a family of your own is known only "
                         "to a process that registers it: rlkit.backbones.register_backbone)")


def _classes(name: str) -> tuple[type[Backbone], type[BackboneConfig], dict[str, object]]:
    """The backbone class, config class and fixed config fields of family ``name``."""
    check_backbone_name(name)
    if name in _ADDED:
        return (*_ADDED[name], {})
    module_name, cls, cfg_cls, fixed = _REGISTRY[name]
    module = importlib.import_module(module_name)
    return getattr(module, cls), getattr(module, cfg_cls), fixed


def backbone_config_class(name: str) -> type[BackboneConfig]:
    """The config dataclass of family ``name``."""
    return _classes(name)[1]


def backbone_has_memory(name: str) -> bool:
    """Whether family ``name`` carries state between steps (its class's ``has_memory``)."""
    return bool(_classes(name)[0].has_memory)


FAMILY_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "context": ("context", ("transformer",)),  # attention window
    "branch_init": ("branch_init", ("transformer",)),  # residual branches' initial scale
    "n_heads": ("n_heads", ("transformer",)),
    "chrono": ("chrono", ("lstm", "gru")),  # gate bias initialisation
    "rnn_init": ("init", ("rnn", "lstm", "gru")),  # torch or orthogonal
    "d_state": ("d_state", ("s4", "mamba", "mamba2")),
    "expand": ("expand", ("mamba", "mamba2")),
}
"""The family options ``train.py`` exposes: option -> (the family config's field, the
families that take it)."""


def backbone_config(name: str, d_model: int, n_layers: int, grad_checkpoint: bool = False,
                    **options: object) -> BackboneConfig:
    """The family's own config from the options ``train.py`` exposes
    (:data:`FAMILY_OPTIONS`, by option name); the family's defaults for the rest, for those
    left at ``None`` and for those that are other families' own."""
    _, cfg_cls, fixed = _classes(name)
    if unknown := sorted(set(options) - set(FAMILY_OPTIONS)):
        raise TypeError(f"backbone_config() got unknown option(s) {unknown}; expected some of "
                        f"{', '.join(FAMILY_OPTIONS)}")
    extra = {FAMILY_OPTIONS[k][0]: v for k, v in options.items()
             if v is not None and name in FAMILY_OPTIONS[k][1]}
    return cfg_cls(d_model=d_model, n_layers=n_layers, grad_checkpoint=grad_checkpoint,
                   **fixed, **extra)


def make_backbone(name: str, d_in: int, cfg: BackboneConfig | None = None) -> Backbone:
    """Build backbone ``name`` for inputs of width ``d_in``.

    Args:
        name: one of :func:`backbone_names`.
        d_in: input feature dimension ``D_in``.
        cfg: the family's own config, or a plain :class:`BackboneConfig` whose common fields
            (``d_model``, ``n_layers``, ``grad_checkpoint``) are copied into the family's
            defaults; ``None`` for all defaults.

    Returns:
        The backbone, an ``nn.Module`` following the contract.
    """
    cls, cfg_cls, fixed = _classes(name)
    if not is_count(d_in):
        raise ValueError(f"d_in must be a positive integer, got {d_in!r}")
    d_in = int(d_in)
    if cfg is None:
        cfg = cfg_cls(**fixed)
    elif type(cfg) is BackboneConfig:
        common = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(BackboneConfig)}
        cfg = cfg_cls(**common, **fixed)
    elif not isinstance(cfg, cfg_cls):
        raise TypeError(
            f"backbone {name!r} takes a {cfg_cls.__name__} or BackboneConfig, "
            f"got {type(cfg).__name__}"
        )
    else:
        mismatched = {k: getattr(cfg, k) for k, v in fixed.items() if getattr(cfg, k) != v}
        if mismatched:
            raise ValueError(f"backbone {name!r} needs {fixed}, got config with {mismatched}")
    return cls(d_in, cfg)


__all__ = [
    "BACKBONE_NAMES",
    "FAMILY_OPTIONS",
    "Backbone",
    "BackboneConfig",
    "State",
    "backbone_config",
    "backbone_config_class",
    "backbone_has_memory",
    "backbone_names",
    "check_backbone",
    "check_backbone_name",
    "make_backbone",
    "per_step",
    "register_backbone",
]
