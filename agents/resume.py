"""Resuming a run: :func:`resume_config` reads the run directory of ``--resume``, checks its
``config.json`` against the checkpoint's own record of the run (an edited field is refused by
name) and merges the few fields a command line may change (:data:`RESUME_MAY_CHANGE`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path

from agents import recipes
from agents.config import TrainConfig
from rlkit.checkpoint import (
    CheckpointError,
    previous_path,
    remove_stale_temp_files,
)
from rlkit.config import end_step, replace_fields
from rlkit.resume import check_run_dir, load_run_checkpoint, merge_config
from rlkit.rundir import RunDirError, RunPaths, RunRecord
from rlkit.runlog import read_metrics

RESUME_MAY_CHANGE = ("total_steps", "checkpoint_every", "checkpoint_minutes", "drop_nonfinite",
                     "progress")
"""Fields a command line may change when resuming a run (others must match the run's)."""

STORED_RESOLVED = {"device": "run", "compile": "model"}
"""Fields (and their sections) whose ``auto`` ``config.json`` may hold resolved (``compile``
always, ``on`` or ``off``; ``device`` once a resume has written it, ``cpu``; a new run writes
``auto``): typed as ``auto`` on resume, they name the run's own value, not a change."""

RESUME_MAY_DIFFER = (*(f"loop.{name}" for name in RESUME_MAY_CHANGE), "run.resume",
                     "run.run_dir", "run.device")
"""Entries of ``config.json`` that may differ from a checkpoint's own record of the run: the
fields a resume may change, where the run directory is, and ``run.device`` (a resume writes it
resolved, ``auto`` -> ``cpu``; the resolved ``device`` itself must match)."""


def _with_agent_defaults(record: RunRecord) -> RunRecord:
    """``record`` with every agent field, defaults included (a record written before a field
    existed builds the same agent as one that holds its default)."""
    try:
        agent = TrainConfig.from_record(record).agent
    except (TypeError, ValueError) as e:
        raise RunDirError(f"agent: {e}") from e
    return dataclasses.replace(record, agent=dataclasses.asdict(agent))


def check_checkpoint_record(record: RunRecord, ckpt: dict, where: str) -> None:
    """Refuse a checkpoint whose own record of the run differs from ``config.json`` (read as
    ``record``) beyond :data:`RESUME_MAY_DIFFER`, naming the first field that differs.

    Raises:
        CheckpointError: ``<where>: checkpoint is of another run: model.backbone is ...``, or
            ``<where>: config.json disagrees with the checkpoint's own record ...``.
    """
    saved = RunRecord.from_json(ckpt["config"], f"{where}: the checkpoint's record")
    try:
        _with_agent_defaults(record).check_same_run(_with_agent_defaults(saved),
                                                    may_differ=RESUME_MAY_DIFFER)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from e


def _never_checkpointed(run_dir: Path) -> bool:
    """The run stopped before writing its first checkpoint (and logged nothing)."""
    paths = RunPaths(run_dir)
    if paths.checkpoint.exists() or previous_path(paths.checkpoint).exists():
        return False
    return not paths.metrics.is_file() or not read_metrics(run_dir)


def _check_recipe(run_dir: Path, requested: str, saved: TrainConfig) -> None:
    """Refuse a ``--recipe`` on resume that is not the run's own (a run keeps its recipe),
    naming what ``auto`` picks for the run's env; a run recorded with ``auto`` (made from
    Python, where no recipe is applied) was made with none.

    Raises:
        ValueError: an unknown name, or another recipe than the run's.
    """
    try:
        asked = recipes.picks(requested, saved.env.id)
    except ValueError as e:
        raise ValueError(f"--resume {run_dir}: {e}") from e
    own = recipes.made_with(saved.run.recipe)
    if asked != own:
        auto = f" (auto picks {asked} for {saved.env.id})" if requested == "auto" else ""
        raise ValueError(f"--resume {run_dir} --recipe {requested}{auto}: the run was made "
                         f"with {own!r}, and a run keeps its own recipe: give no --recipe, or "
                         f"--recipe {own}")


def resume_config(cfg: TrainConfig, given: Collection[str] = (),
                  ) -> tuple[TrainConfig, RunRecord, dict | None]:
    """The config, record and last checkpoint of the run in ``--resume`` (see there).
    ``given``: the fields the command line gave (:func:`agents.cli.given_on_resume`): one of
    :data:`RESUME_MAY_CHANGE` applies even at its default value, any other must equal the
    run's (``auto`` of :data:`STORED_RESOLVED` is the run's own, as is the device a run made
    with ``--device auto`` resolved to, and ``--recipe auto`` names the recipe made for the
    run's env).

    The checkpoint is ``None`` for a run that stopped before it wrote its first one (killed
    while starting): it then starts again from step 0, which is the same run.

    Raises:
        ValueError: not a run directory, a run that has reached ``--total-steps``, or a
            ``--recipe`` that is unknown or not the run's own.
        rlkit.rundir.RunDirError: ``config.json`` or ``metrics.jsonl`` is malformed.
        CheckpointError: no readable checkpoint, or one whose own record of the run differs
            from ``config.json`` beyond :data:`RESUME_MAY_DIFFER` (named by field).
    """
    run_dir = Path(cfg.run.resume)
    check_run_dir(run_dir)
    record = RunRecord.read(run_dir)
    if _never_checkpointed(run_dir):
        remove_stale_temp_files(RunPaths(run_dir).checkpoint)
        ckpt = None
    else:
        ckpt = load_run_checkpoint(run_dir)
        check_checkpoint_record(record, ckpt, f"--resume {run_dir}")
    saved = TrainConfig.from_record(record)
    for name, section in STORED_RESOLVED.items():  # stored resolved: "auto" is the run's own
        if getattr(getattr(cfg, section), name) == "auto":
            cfg = replace_fields(cfg, **{name: getattr(getattr(saved, section), name)})
    if cfg.run.device == record.device:  # the device "auto" resolved to is the run's own too
        cfg = replace_fields(cfg, device=saved.run.device)
    if "recipe" in given:
        _check_recipe(run_dir, cfg.run.recipe, saved)
        cfg = replace_fields(cfg, recipe=saved.run.recipe)
    merged = merge_config(cfg, saved, RESUME_MAY_CHANGE, keep=("resume",), given=given)
    merged = dataclasses.replace(
        merged, run=dataclasses.replace(merged.run, run_dir=str(run_dir), device=record.device))
    step = 0 if ckpt is None else ckpt["step"]
    total = merged.loop.total_steps
    end = end_step(total, merged.env.num_envs)  # at or past the total: the envs step together
    # A checkpoint at the run's last step that is not the final one (a stop on the last step)
    # has its final evaluation and checkpoint still to come: the resumed run makes them.
    unfinished_end = ckpt is not None and ckpt.get("kind") != "final" and step == end
    if end < step:
        raise ValueError(f"--resume {run_dir}: the run is at step {step}, past --total-steps "
                         f"{total}; pass a --total-steps larger than {step} to continue it")
    if end == step and not unfinished_end:
        raise ValueError(f"--resume {run_dir}: the run is at step {step} of "
                         f"--total-steps {total}; pass a larger --total-steps to continue it")
    return merged, record, ckpt


__all__ = ["RESUME_MAY_CHANGE", "RESUME_MAY_DIFFER", "STORED_RESOLVED", "check_checkpoint_record",
           "resume_config"]
