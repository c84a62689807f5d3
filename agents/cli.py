"""The command line of ``train.py``: one run, or a grid of runs when ``--backbone`` or ``--seed``
take several values.

Exit codes of :func:`run`: 0 done; 1 non-finite value or loss (``diagnostic.pt`` for a loss);
2 bad input or unreadable checkpoint; 130 / 143 stopped by SIGINT / SIGTERM after writing a
checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import tyro

from agents import recipes
from agents.train import TrainConfig, check_device, main, make_env, resolve, run_in
from rlkit.config import replace_fields
from rlkit.faults import NonFiniteError, NonFiniteLossError, TrainingInterrupted
from rlkit.launch import GridRun, launch
from rlkit.rundir import fresh_dir, slug


def grid(cfg: TrainConfig, backbones: Sequence[str], seeds: Sequence[int]) -> Path:
    """Every (backbone, seed) combination, each in its own run directory, then a report.

    The grid directory is ``--grid-dir`` (default ``runs/grid-<env>-<time>``); runs are
    ``<grid>/<backbone>__s<seed>`` and share the W&B group ``<grid name>``. Every combination
    is validated before the first run starts.
    """
    configs = [replace_fields(cfg, backbone=b, seed=s) for b in backbones for s in seeds]
    for c in configs:
        check_device(resolve(c))
    make_env(cfg.env).close()  # a bad env id stops the grid before any run starts
    grid_dir = fresh_dir(cfg.grid.grid_dir, f"grid-{slug(cfg.env.id)}-", "grid directory",
                         "--grid-dir")
    group = cfg.run.wandb_group or grid_dir.name
    runs = [GridRun(f"{c.model.backbone}__s{c.run.seed}", replace_fields(c, wandb_group=group))
            for c in configs]
    g = cfg.grid
    outcomes = launch(run_in, runs, grid_dir, g.launcher, g.jobs, g.ray_address,
                      progress=cfg.loop.progress)
    for o in outcomes:
        status = f"error: {o.error}" if o.error else \
            f"eval return {o.result['eval_return_mean']:.1f}"
        print(f"{o.name}: {status}", file=sys.stderr)
    if any(o.error is None for o in outcomes):
        from rlkit.report import build_report

        report = build_report(grid_dir)
        print(f"report: {report.html}", file=sys.stderr)
    if any(o.error for o in outcomes):
        raise RuntimeError(f"{sum(bool(o.error) for o in outcomes)} of {len(outcomes)} runs "
                           f"failed; see above")
    return grid_dir


def take_list(argv: list[str], flag: str) -> tuple[list[str], list[str]]:
    """Remove ``flag V1 V2 ...`` (or ``flag=V``) from ``argv``; return (values, rest)."""
    values, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            continue
        if arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return values, rest


def parse_config(args: list[str]) -> TrainConfig:
    """The config of ``args``: the defaults, then the recipe (:mod:`agents.recipes`) chosen by
    ``--recipe`` and ``--env``, then the flags given (a resumed run takes its own config)."""
    description = f"{TrainConfig.__doc__}\n\n{recipes.describe()}"
    cfg = tyro.cli(TrainConfig, args=args, description=description)
    if cfg.run.resume is not None:
        return cfg
    recipe = recipes.choose(cfg.run.recipe, cfg.env.id)
    if recipe is None:
        return replace_fields(cfg, recipe="none")
    cfg = tyro.cli(TrainConfig, args=args, default=recipe.apply(TrainConfig()),
                   description=description)
    return replace_fields(cfg, recipe=recipe.name)


def parse_cli(argv: Sequence[str]) -> tuple[TrainConfig, list[str], list[int]]:
    """The config of the first run, and every backbone and seed asked for (``--backbone`` and
    ``--seed`` take several values)."""
    backbones, rest = take_list(list(argv), "--backbone")
    seeds, rest = take_list(rest, "--seed")
    extra = [f"--backbone={backbones[0]}"] if backbones else []
    extra += [f"--seed={seeds[0]}"] if seeds else []
    cfg = parse_config(rest + extra)
    try:
        seed_values = [int(s) for s in seeds] or [cfg.run.seed]
    except ValueError as e:
        raise ValueError(f"--seed takes non-negative integers, got {seeds}") from e
    return cfg, backbones or [cfg.model.backbone], seed_values


def cli(argv: Sequence[str]) -> None:
    """One run, or a grid when there is more than one (backbone, seed) combination."""
    cfg, backbone_values, seed_values = parse_cli(argv)
    if len(backbone_values) * len(seed_values) == 1:
        main(cfg)
    else:
        grid(cfg, backbone_values, seed_values)


def run(argv: Sequence[str] | None = None) -> None:
    """:func:`cli` with the documented exit codes (see the module docstring)."""
    try:
        cli(sys.argv[1:] if argv is None else argv)
    except TrainingInterrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (NonFiniteError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


__all__ = ["cli", "grid", "parse_cli", "run", "take_list"]
