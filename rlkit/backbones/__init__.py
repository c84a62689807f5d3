"""Sequence backbones behind one contract (see :mod:`rlkit.backbones.base`) and a registry.

``make_backbone(name, d_in, cfg)`` builds a family by name; ``--backbone NAME`` in ``train.py``
selects from :data:`BACKBONE_NAMES`.
"""

from __future__ import annotations

import dataclasses
import importlib

from rlkit.backbones.base import Backbone, BackboneConfig, State, per_step

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
"""Every registered family, in a stable order."""


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONE_NAMES)}")


def backbone_config_class(name: str) -> type[BackboneConfig]:
    """The config dataclass of family ``name``."""
    _check_name(name)
    module, _, cfg_cls, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module), cfg_cls)


def backbone_has_memory(name: str) -> bool:
    """Whether family ``name`` carries state between steps (its class's ``has_memory``)."""
    _check_name(name)
    module, cls, _, _ = _REGISTRY[name]
    return bool(getattr(importlib.import_module(module), cls).has_memory)


def backbone_config(name: str, d_model: int, n_layers: int, grad_checkpoint: bool = False,
                    context: int | None = None, branch_init: float | None = None,
                    chrono: int | None = None, rnn_init: str | None = None) -> BackboneConfig:
    """The family's own config from the options ``train.py`` exposes (family defaults for the
    rest). ``context`` (attention window) and ``branch_init`` (residual branches' initial
    scale) are the transformer's, ``chrono`` (gate bias initialisation) the LSTM's and the
    GRU's, ``rnn_init`` (``torch`` or ``orthogonal``) the RNN's, LSTM's and GRU's; other
    families ignore them."""
    cfg_cls = backbone_config_class(name)
    _, _, _, fixed = _REGISTRY[name]
    given = {"transformer": {"context": context, "branch_init": branch_init},
             "rnn": {"init": rnn_init}, "lstm": {"chrono": chrono, "init": rnn_init},
             "gru": {"chrono": chrono, "init": rnn_init}}.get(name, {})
    extra = {k: v for k, v in given.items() if v is not None}
    return cfg_cls(d_model=d_model, n_layers=n_layers, grad_checkpoint=grad_checkpoint,
                   **fixed, **extra)


def make_backbone(name: str, d_in: int, cfg: BackboneConfig | None = None) -> Backbone:
    """Build backbone ``name`` for inputs of width ``d_in``.

    Args:
        name: one of :data:`BACKBONE_NAMES`.
        d_in: input feature dimension ``D_in``.
        cfg: the family's own config, or a plain :class:`BackboneConfig` whose common fields
            (``d_model``, ``n_layers``, ``grad_checkpoint``) are copied into the family's
            defaults; ``None`` for all defaults.

    Returns:
        The backbone, an ``nn.Module`` following the contract.
    """
    _check_name(name)
    if d_in <= 0:
        raise ValueError(f"d_in must be a positive integer, got {d_in}")
    module, cls_name, _, fixed = _REGISTRY[name]
    cfg_cls = backbone_config_class(name)
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
        mismatched = {k: v for k, v in fixed.items() if getattr(cfg, k) != v}
        if mismatched:
            raise ValueError(f"backbone {name!r} needs {fixed}, got config with {mismatched}")
    cls = getattr(importlib.import_module(module), cls_name)
    return cls(d_in, cfg)


__all__ = [
    "BACKBONE_NAMES",
    "Backbone",
    "BackboneConfig",
    "State",
    "backbone_config",
    "backbone_config_class",
    "backbone_has_memory",
    "make_backbone",
    "per_step",
]
