"""The command line of ``train.py``: one run, or a grid of runs when ``--backbone`` or ``--seed``
take several values.

Exit codes of :func:`run`:

- 0 done;
- 1 non-finite value or loss (``diagnostic.pt`` for a loss);
- 2 bad input: a bad flag or value, a run directory that is a file, not empty, or in use by
  another process, an edited or malformed ``config.json`` / ``metrics.jsonl``, an unreadable
  checkpoint, not enough memory for the replay buffer; a grid with a failed run;
- 3 file-system error: a run file that cannot be written or read (read-only or full file
  system, a directory where a file should be), named with the cause; what was written before
  stays, and the run continues with ``--resume`` once the file system is fixed;
- 4 the environment raised an exception (its own traceback is printed after the message);
- 130 / 143 stopped by SIGINT / SIGTERM after writing a checkpoint (for a grid: every run in
  its training loop wrote one, and the report of the finished runs was written); a second
  signal, or a SIGINT or SIGTERM outside the training loop, stops it without one.

Errors are one line on stderr, starting with ``error:`` (``stopped:`` for a signal), except
for the flag parser's own, which come in a panel.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import sys
import typing
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import tyro

from agents import recipes
from agents.train import (
    RESUME_MAY_CHANGE,
    Resumed,
    TrainConfig,
    check_device,
    check_fits,
    check_new_run,
    main,
    make_env,
    one_line_warnings,
    resolve,
    run_in,
)
from rlkit.checkpoint import CheckpointError, checkpoint_progress
from rlkit.config import GridConfig, LoopConfig, flag, replace_fields
from rlkit.evaluate import time_limit
from rlkit.faults import (
    EnvError,
    FileSystemError,
    NonFiniteError,
    NonFiniteLossError,
    TrainingInterrupted,
    file_errors,
    write_atomic,
)
from rlkit.fields import flag_names, is_count, switch
from rlkit.launch import GridInterrupted, GridRun, RunOutcome, check_ray_address, launch
from rlkit.rundir import GRID_MANIFEST, RunDirError, RunPaths, RunRecord, fresh_dir, make_dir, slug
from rlkit.runlog import read_metrics
from rlkit.signals import sigterm_raises


def refuse_address_without_ray(g: GridConfig) -> None:
    """Refuse ``--ray-address`` on the local launcher: the grid would run here, the address
    never used (or checked), and config.json would record it.

    Raises:
        ValueError: ``--ray-address ADDR`` without ``--launcher ray``.
    """
    if g.launcher == "local" and g.ray_address is not None:
        raise ValueError(f"--ray-address {g.ray_address} places the runs on a Ray cluster, but "
                         "the launcher is local (the default): expected --launcher ray with it, "
                         "or no --ray-address")


def grid(cfg: TrainConfig, backbones: Sequence[str], seeds: Sequence[int],
         per_backbone: Mapping[str, TrainConfig] | None = None) -> Path:
    """Every (backbone, seed) combination, each in its own run directory, then a report.

    Each backbone's runs take ``per_backbone[b]`` (from :func:`backbone_config`, so that a
    recipe's values for that backbone apply) or else ``cfg`` with ``--backbone b``.

    The grid directory is ``--grid-dir`` (default ``runs/grid-<env>-<time>``); runs are
    ``<grid>/<backbone>__s<seed>`` and share the W&B group ``<grid name>``. Every combination
    is validated before the first run starts (on the local launcher, with its replay's
    memory estimate). ``<grid>/grid.json`` lists the runs and their
    configs, so that ``--resume <grid>`` continues the grid (:func:`resume_grid`). The report
    covers the runs that finished and lists the others with their error.

    Raises:
        GridInterrupted: SIGINT / SIGTERM stopped the grid (after the report was written).
        RuntimeError: a run failed (after the report was written).
    """
    refuse_address_without_ray(cfg.grid)
    if cfg.run.run_dir is not None:
        raise ValueError(f"--run-dir {cfg.run.run_dir} names the directory of one run; a grid "
                         f"of {len(backbones) * len(seeds)} runs (--backbone "
                         f"{' '.join(backbones)}, --seed {' '.join(map(str, seeds))}) goes to a "
                         f"grid directory: expected --grid-dir {cfg.run.run_dir}")
    for flag_name, values in (("--backbone", list(backbones)), ("--seed", list(seeds))):
        if len(set(values)) < len(values):
            raise ValueError(f"{flag_name} {' '.join(map(str, values))}: a value is repeated; "
                             "expected each once (every combination is one run)")
    per_backbone = per_backbone or {}
    configs = [replace_fields(per_backbone.get(b, cfg), backbone=b, seed=s)
               for b in backbones for s in seeds]
    env = make_env(cfg.env)  # a bad env id stops the grid before any run starts
    steps = time_limit(env)
    env.close()
    for c in configs:  # so do windows that reach past the task's episodes, and what a new
        check_new_run(c)  # run may not be given (a grid made of them could never finish)
        check_device(resolve(c, steps))
    if cfg.grid.launcher == "local":  # so does a backbone whose replay would not fit here
        for b, c in {c.model.backbone: c for c in configs}.items():
            try:
                check_fits(c)
            except ValueError as e:
                raise ValueError(f"--backbone {b}: {e}") from e
    if cfg.grid.launcher == "ray" and cfg.grid.ray_address is not None:
        check_ray_address(cfg.grid.ray_address)  # before the grid directory is written
    given = cfg.grid.grid_dir
    created = given is None or not Path(given).exists()  # a default one is created here
    grid_dir = fresh_dir(given, f"grid-{slug(cfg.env.id)}-", "grid directory", "--grid-dir")
    group = cfg.run.wandb_group or grid_dir.name
    runs = [GridRun(f"{c.model.backbone}__s{c.run.seed}", replace_fields(c, wandb_group=group))
            for c in configs]
    write_manifest(grid_dir, runs)
    return _launch_grid(cfg.grid, cfg.loop.progress, runs, grid_dir, new=True, created=created)


def write_manifest(grid_dir: Path, runs: Sequence[GridRun]) -> None:
    """Write ``GRID_DIR/grid.json``: every run's name and config."""
    path = grid_dir / GRID_MANIFEST
    data = {"schema": 1, "runs": {r.name: r.config.to_json() for r in runs}}
    with file_errors("write", path):
        make_dir(grid_dir, "grid directory")
        path.write_text(json.dumps(data, indent=2, sort_keys=True))


def record_total_steps(grid_dir: Path, total_steps: int) -> None:
    """Keep in ``GRID_DIR/grid.json`` the ``--total-steps`` that a ``--resume GRID`` gave, so
    that a later ``--resume GRID`` without one takes every run at least that far: a grid
    stopped while it was extended brings every run to the new end, not only those that started
    (:func:`recorded_total_steps`). Written atomically."""
    path = grid_dir / GRID_MANIFEST
    with file_errors("read", path):
        data = json.loads(path.read_text())
    data["resume"] = {"total_steps": total_steps}
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def recorded_total_steps(grid_dir: Path) -> int | None:
    """The ``--total-steps`` kept by :func:`record_total_steps` (``None`` for a grid never
    resumed with one).

    Raises:
        RunDirError: a ``resume`` entry that is not ``{"total_steps": N}`` with N >= 1.
    """
    path = grid_dir / GRID_MANIFEST
    with file_errors("read", path):
        kept = json.loads(path.read_text()).get("resume")
    if kept is None:
        return None
    steps = kept.get("total_steps") if isinstance(kept, dict) else None
    if not isinstance(kept, dict) or set(kept) != {"total_steps"} or not is_count(steps):
        raise RunDirError(f"{path}: expected resume to be {{\"total_steps\": N}} with N an "
                          f"integer >= 1 (what a --resume of the grid with --total-steps "
                          f"writes), got {kept!r}")
    return steps


def read_manifest(grid_dir: Path) -> dict[str, TrainConfig]:
    """The runs of a grid directory by name (see :func:`write_manifest`).

    Raises:
        RunDirError: a missing or malformed ``grid.json`` (named).
    """
    path = grid_dir / GRID_MANIFEST
    try:
        with file_errors("read", path):
            data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("schema") != 1 or \
            not isinstance(data.get("runs"), dict):
        raise RunDirError(f"{path}: expected an object with schema 1 and runs")
    return {name: TrainConfig.from_json(c, f"{path}: run {name}")
            for name, c in data["runs"].items()}


def is_grid_dir(path: str | Path) -> bool:
    """A grid directory (holding ``grid.json``), not a run directory."""
    path = Path(path)
    return (path / GRID_MANIFEST).is_file() and not RunPaths(path).config.exists()


def _refuse_unstarted_grid_run(run_dir: Path) -> None:
    """``--resume GRID/NAME`` for a run of a grid that has no ``config.json`` (it never started,
    or stopped or failed before writing it): the grid's resume starts it.

    Raises:
        ValueError: naming ``--resume GRID``.
    """
    grid_dir = run_dir.parent
    if run_dir.is_file() or RunPaths(run_dir).config.exists() or not is_grid_dir(grid_dir):
        return
    with contextlib.suppress(RunDirError):
        if run_dir.name in read_manifest(grid_dir):
            raise ValueError(f"--resume {run_dir}: run {run_dir.name} of the grid {grid_dir} "
                             f"has no config.json: it never started, or stopped or failed "
                             f"before it wrote one (or the grid is still running); once the "
                             f"grid has stopped, --resume {grid_dir} starts it and continues "
                             f"the grid's other runs")


def _finished(run_dir: Path, total_steps: int | None) -> dict | None:
    """The final evaluation of a run that reached its ``--total-steps`` (``total_steps`` when
    given, else its config's), else ``None``.

    Reached means logged, and where ``checkpoint.pt`` can be read, also saved: a checkpoint
    behind the total, or one on the last step that is not the final one (a stop between the
    final evaluation and the final save), leaves the run to be continued, as a single run's
    ``--resume`` continues it. A run without a readable ``checkpoint.pt`` (deleted to save disk,
    or damaged) is judged by its metrics alone: there is nothing better to go on from.
    Only the checkpoint's kind and step are read (:func:`rlkit.checkpoint.checkpoint_progress`),
    not its tensors: a grid of large replay buffers is not read whole to be resumed."""
    try:
        total = total_steps or RunRecord.read(run_dir).loop.total_steps
        evals = [r for r in read_metrics(run_dir) if "eval_return_mean" in r]
    except (ValueError, OSError):
        return None  # resuming it says what is wrong
    if not evals or evals[-1]["step"] < total:
        return None
    path = RunPaths(run_dir).checkpoint
    if path.is_file():
        try:
            kind, step = checkpoint_progress(path)
        except CheckpointError:
            return evals[-1]
        if kind != "final" or step < total:
            return None
    return evals[-1]


def resume_runs(grid_dir: Path, runs: Sequence[GridRun], given: dict | None = None,
                floor: int | None = None) -> tuple[list[RunOutcome], list[GridRun]]:
    """What resuming the grid in ``grid_dir`` does with each of its ``runs``: one that never
    started starts from its config, one that reached its ``--total-steps`` is kept (an outcome
    with its last evaluation), any other continues from its last checkpoint (``--resume`` of
    its run directory, its own config). ``given``: fields that change on resume, for every run.
    ``floor``: a ``--total-steps`` that every run reaches at least (an earlier resume's; a run
    whose own end is further keeps it). Returns the kept outcomes and the runs to launch."""
    done, todo = [], []
    for r in runs:
        run_dir = grid_dir / r.name
        started = RunPaths(run_dir).config.is_file()
        own = dict(given or {})
        if floor is not None and "total_steps" not in own:
            with contextlib.suppress(ValueError, OSError):  # resuming it says what is wrong
                end = (RunRecord.read(run_dir).loop if started else r.config.loop).total_steps
                if end < floor:
                    own["total_steps"] = floor
        if not started:
            todo.append(GridRun(r.name, replace_fields(r.config, **own)) if own else r)
        elif (final := _finished(run_dir, own.get("total_steps"))) is not None:
            done.append(RunOutcome(r.name, run_dir, result=final))
        else:
            todo.append(GridRun(r.name, Resumed(replace_fields(
                TrainConfig(), resume=str(run_dir), **own), tuple(own))))
    return done, todo


def reached_steps(grid_dir: Path, names: Collection[str]) -> dict[str, int]:
    """The last step each of the runs ``names`` in ``grid_dir`` logged, for those that logged
    one (a run never started, or one whose log cannot be read, is left out: resuming it says
    what is wrong)."""
    reached = {}
    for name in names:
        try:
            rows = read_metrics(grid_dir / name)
        except (ValueError, OSError):
            continue
        if rows:
            reached[name] = int(rows[-1]["step"])
    return reached


def _refuse_going_back(grid_dir: Path, names: Collection[str], total_steps: int) -> None:
    """Refuse a ``--total-steps`` below the step that a run of the grid has logged, as a
    single run's resume does: a run does not go back."""
    reached = reached_steps(grid_dir, names)
    ahead = {n: s for n, s in reached.items() if s > total_steps}
    if ahead:
        listed = ", ".join(f"{n} at step {s}" for n, s in sorted(ahead.items()))
        raise ValueError(f"--resume {grid_dir} --total-steps {total_steps}: runs of the grid are "
                         f"past it ({listed}); a run does not go back: expected --total-steps at "
                         f"least {max(ahead.values())}")


def _check_recipe(grid_dir: Path, requested: str) -> None:
    """``--resume GRID --recipe NAME``: every run of the grid was made with ``NAME`` (``auto``:
    the recipe that ``auto`` picks for the run's env, ``none`` where there is none). A run
    recorded with ``auto`` was configured from Python, where no recipe is applied: ``none``.

    Raises:
        ValueError: an unknown ``NAME``, or runs made with another recipe (named, with theirs).
    """
    try:
        recipes.check_name(requested)
    except ValueError as e:
        raise ValueError(f"--resume {grid_dir}: {e}") from e
    made_with = {n: (recipes.made_with(c.run.recipe), c.env.id)
                 for n, c in read_manifest(grid_dir).items()}
    other = {n: r for n, (r, env_id) in made_with.items()
             if r != recipes.picks(requested, env_id)}
    if other:
        listed = ", ".join(f"{n} with {r!r}" for n, r in sorted(other.items()))
        raise ValueError(f"--resume {grid_dir} --recipe {requested}: runs of the grid were made "
                         f"with another recipe ({listed}); every run keeps its own: give no "
                         f"--recipe, or the runs' own")


def resume_grid(cfg: TrainConfig, explicit: Collection[str] = ()) -> Path:
    """``--resume GRID_DIR``: every run of the grid that has not reached its ``--total-steps``
    continues (``--resume`` of its run directory, from its last checkpoint), one that never
    started starts, then the report is written as for :func:`grid`. The grid section
    (``--jobs``, ``--launcher``, ...) and the fields that may change on resume
    (``--total-steps``, ...) may be given; they apply to every run (``explicit``: those the
    command line gave, which apply even at their default value). ``--recipe`` may name the
    runs' own recipe (``auto`` where each run was made with the one ``auto`` picks for its env;
    see :func:`_check_recipe`).

    Raises:
        ValueError: other flags given, or a ``--recipe`` other than the runs' own.
        GridInterrupted, RuntimeError: as :func:`grid`.
    """
    grid_dir = Path(cfg.run.resume)
    refuse_address_without_ray(cfg.grid)
    if "recipe" in explicit:  # the runs' own recipe (auto: each made for its env) is no change
        _check_recipe(grid_dir, cfg.run.recipe)
        explicit = set(explicit) - {"recipe"}
        cfg = replace_fields(cfg, recipe=TrainConfig().run.recipe)
    given = {name: getattr(cfg.loop, name) for name in RESUME_MAY_CHANGE
             if name in explicit or getattr(cfg.loop, name) != getattr(LoopConfig(), name)}
    rest = dataclasses.replace(cfg.loop, **{n: getattr(LoopConfig(), n) for n in given})
    allowed = {*RESUME_MAY_CHANGE, "resume", *(f.name for f in dataclasses.fields(GridConfig))}
    others = sorted(set(explicit) - allowed)
    if others or \
            replace_fields(cfg, resume=None, grid=GridConfig(), loop=rest) != TrainConfig():
        flags = {}
        for f, name in flag_fields().items():
            flags.setdefault(name, f)  # the plain form of a switch comes first
        named = f" (got {', '.join(flags[n] for n in others)})" if others else ""
        raise ValueError(f"--resume {grid_dir} (a grid) takes only the grid flags (--jobs, "
                         f"--launcher, ...) and {', '.join(flag(n) for n in RESUME_MAY_CHANGE)}"
                         f"{named}; every run keeps the rest of its config")
    manifest = read_manifest(grid_dir)
    floor = recorded_total_steps(grid_dir)
    if "total_steps" in given:
        _refuse_going_back(grid_dir, manifest, given["total_steps"])
        if given["total_steps"] != floor:
            record_total_steps(grid_dir, given["total_steps"])
        floor = None
    elif floor is not None:
        print(f"resuming grid {grid_dir}: every run to --total-steps {floor} at least, as its "
              f"last resume gave", file=sys.stderr)
    done, runs = resume_runs(grid_dir, [GridRun(name, c) for name, c in manifest.items()],
                             given, floor)
    print(f"resuming grid {grid_dir}: {len(done)} runs finished, {len(runs)} to go",
          file=sys.stderr)
    return _launch_grid(cfg.grid, cfg.loop.progress, runs, grid_dir, done)


def _launch_grid(g: GridConfig, progress: bool, runs: Sequence[GridRun], grid_dir: Path,
                 done: Sequence[RunOutcome] = (), new: bool = False, created: bool = False,
                 ) -> Path:
    """Launch ``runs`` into ``grid_dir``, then summarize. ``new``: a grid just written (its
    ``grid.json`` is removed again, and the directory if ``created``, when the launcher fails
    before any run started, so that the same command can be given again)."""
    stopped = None
    try:
        outcomes = launch(run_in, runs, grid_dir, g.launcher, g.jobs, g.ray_address,
                          progress=progress)
    except GridInterrupted as e:
        outcomes, stopped = e.outcomes, e
    except (RuntimeError, ValueError) as e:  # the launcher failed (a run's failure is its
        if new and not any(p.is_dir() for p in grid_dir.iterdir()):  # outcome)
            (grid_dir / GRID_MANIFEST).unlink()
            if created:
                grid_dir.rmdir()
            raise type(e)(f"{e}; no run started, and {grid_dir} is as it was before") from e
        if isinstance(e, ValueError):
            raise
        raise RuntimeError(f"{e}; continue with --resume {grid_dir}") from e
    outcomes = [*done, *outcomes]
    summarize(grid_dir, outcomes)
    if stopped is not None:  # counted over the grid's runs, those finished before included
        raise GridInterrupted(stopped.signum, outcomes, grid_dir) if done else stopped
    if any(o.error for o in outcomes):
        raise RuntimeError(f"{sum(bool(o.error) for o in outcomes)} of {len(outcomes)} runs "
                           f"failed; see above; continue with --resume {grid_dir}")
    return grid_dir


def print_traceback(o: RunOutcome) -> None:
    """A failed run's traceback on stderr, as a single run prints it: the env's own for an env
    error, the whole one for a bug; nothing for a run without one."""
    if o.details:
        whose = "the env's" if o.error and o.error.startswith("EnvError") else "its"
        print(f"{o.name}: {whose} traceback:\n{o.details}", file=sys.stderr)


def summarize(grid_dir: Path, outcomes: Sequence[RunOutcome]) -> None:
    """Print each run's outcome to stderr, then write the report of the runs that finished
    (the others are listed in it with their error)."""
    for o in outcomes:
        status = (f"{'stopped' if o.stopped else 'error'}: {o.error}" if o.error else
                  f"eval return {o.result['eval_return_mean']:.1f}")
        print(f"{o.name}: {status}", file=sys.stderr)
        print_traceback(o)
    if not any(o.error is None for o in outcomes):
        print("report: none written (no run finished)", file=sys.stderr)
        return
    from rlkit.report import ReportError, build_report

    try:
        report = build_report(grid_dir, exclude={o.run_dir: f"did not finish: {o.error}"
                                                 for o in outcomes if o.error})
    except ReportError as e:
        print(f"report: none written ({e})", file=sys.stderr)
        return
    for skip in report.skipped:
        print(f"report: skipped {skip.path}: {skip.reason}", file=sys.stderr)
    print(f"report: {report.html}", file=sys.stderr)


def take_list(argv: list[str], flag: str) -> tuple[list[str], list[str]]:
    """Remove ``flag V1 V2 ...`` (or ``flag=V``) from ``argv``; return (values, rest).

    Raises:
        ValueError: ``flag`` with no value after it, or given twice (its values make a grid:
            a second one would be read as more of them, not as a change of the first).
    """
    groups, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            i += 1
            groups.append([])
            while i < len(argv) and not argv[i].startswith("--"):
                groups[-1].append(argv[i])
                i += 1
            if not groups[-1]:
                raise ValueError(f"{flag} has no value after it; expected one, or several for "
                                 f"a grid ({flag} A B)")
            continue
        if arg.startswith(flag + "="):
            groups.append([arg.split("=", 1)[1]])
        else:
            rest.append(arg)
        i += 1
    if len(groups) > 1:
        raise ValueError(f"{flag} is given {len(groups)} times "
                         f"({'; '.join(' '.join(g) for g in groups)}); expected it once, with "
                         f"every value after it ({flag} A B for a grid)")
    return (groups[0] if groups else []), rest


def parse_config(args: list[str], prog: str | None = None) -> TrainConfig:
    """The config of ``args``: the defaults, then the recipe (:mod:`agents.recipes`) chosen by
    ``--recipe`` and ``--env``, then the flags given, each checked against what comes before
    it (``--agent.actor-q min`` needs twin critics, which a recipe may give). A resumed run
    takes its own config: its flags are checked against the run's. ``prog``: the program
    whose ``--help`` lists these flags, named in a refusal (default: this one)."""
    parse = functools.partial(tyro.cli, TrainConfig, args=args, prog=prog,
                              description=f"{TrainConfig.__doc__}\n\n{recipes.describe()}")
    if {"-h", "--help"} & set(args):  # the help, whatever the other flags say
        return parse()
    first = _first_flags(args)
    if first is None:  # flags the pre-pass cannot read: tyro names what is wrong, or reads them
        plain = parse()
        first = FirstFlags(plain.run.resume, plain.run.recipe, plain.env.id,
                           plain.model.backbone)
    if first.resume is not None:
        return parse(default=_run_config(first.resume))
    recipe = recipes.choose(first.recipe, first.env)
    if recipe is None:
        return replace_fields(parse(), recipe="none")
    default = recipe.apply(replace_fields(TrainConfig(), backbone=first.backbone,
                                          env=first.env))
    cfg = parse(default=default)
    return replace_fields(cfg, recipe=recipe.name)


class FirstFlags(typing.NamedTuple):
    """The flags read before the config is parsed: they choose the defaults the other flags
    are parsed and checked against (the run's config, or the recipe's values)."""

    resume: str | None
    recipe: str
    env: str
    backbone: str


def _first_flags(args: Sequence[str]) -> FirstFlags | None:
    """``--resume``, ``--recipe``, ``--env`` and ``--backbone`` of ``args`` (the defaults where
    left out); ``None`` where they do not parse."""
    defaults = TrainConfig()
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    p.add_argument("--resume")
    p.add_argument("--recipe", default=defaults.run.recipe)
    p.add_argument("--env", default=defaults.env.id)
    p.add_argument("--backbone", default=defaults.model.backbone)
    try:
        known, _ = p.parse_known_args(list(args))
    except argparse.ArgumentError:
        return None
    resume = None if known.resume in (None, "None") else known.resume
    return FirstFlags(resume, known.recipe, known.env, known.backbone)


def _run_config(resume: str) -> TrainConfig:
    """The defaults of a resume's flags: the training settings that ``config.json`` of the run
    in ``resume`` records (every section but ``run`` and ``grid``, which say where and how this
    process runs it); the package defaults where there is none to read (a grid directory, or a
    damaged file, which :func:`agents.resume.resume_config` then names)."""
    try:
        saved = TrainConfig.from_record(RunRecord.read(Path(resume)))
    except Exception:  # noqa: BLE001  (reported with its cause where the run is resumed)
        return TrainConfig()
    plain = TrainConfig()
    return dataclasses.replace(saved, run=plain.run, grid=plain.grid)


def parse_cli(argv: Sequence[str]) -> tuple[TrainConfig, list[str], list[int]]:
    """The config of the first run, and every backbone and seed asked for (``--backbone`` and
    ``--seed`` take several values)."""
    if {"-h", "--help"} & set(argv):  # the help, whatever the other flags say
        parse_config([a for a in argv if a in ("-h", "--help")])
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


def backbone_config(argv: Sequence[str], backbone: str) -> TrainConfig:
    """The config of a grid's runs of ``backbone``: ``argv`` parsed as if ``--backbone backbone``
    were its only backbone, so that the recipe's values for that backbone apply."""
    _, rest = take_list(list(argv), "--backbone")
    return parse_cli([*rest, f"--backbone={backbone}"])[0]


def flag_fields() -> dict[str, str]:
    """Every flag of ``train.py`` and the name of the field it sets: ``--total-steps`` ->
    ``total_steps``, ``--env`` -> ``id``, ``--agent.gamma`` -> ``gamma``, and a switch's
    ``--no-`` form (field names are unique across the sections)."""
    out = {}
    plain = TrainConfig()
    for section, prefix in flag_names(TrainConfig).items():
        cls = type(getattr(plain, section))
        for name, typed in flag_names(cls, f"{prefix}." if prefix else "").items():
            out[switch(typed, True)] = out[switch(typed, False)] = name
    return out


def given_on_resume(argv: Sequence[str]) -> set[str]:
    """The fields whose flag is in ``argv`` (``--total-steps N``, ``--total-steps=N``,
    ``--no-progress``, ``--backbone gru``, ...; ``--total_steps`` too, which the parser takes as
    the same flag), whatever their value: on resume, one that
    may change applies even at its default value, any other must equal the run's."""
    fields = flag_fields()
    typed = (arg.split("=", 1)[0] for arg in argv if arg.startswith("--"))
    return {fields[a] for a in ("--" + t[2:].replace("_", "-") for t in typed) if a in fields}


def refuse_grid_flags(cfg: TrainConfig) -> None:
    """Refuse ``--grid-dir``, ``--launcher ray`` and ``--ray-address`` for one run: they place a
    grid's runs, and one run goes to its own directory here (a resumed one to the directory
    of ``--resume``, which the message then names).

    Raises:
        ValueError: one of them is given.
    """
    g = cfg.grid
    given = [f"--grid-dir {g.grid_dir}"] if g.grid_dir is not None else []
    given += ["--launcher ray"] if g.launcher != "local" else []
    given += [f"--ray-address {g.ray_address}"] if g.ray_address is not None else []
    if given and cfg.run.resume is not None:
        raise ValueError(f"{', '.join(given)} {'place' if len(given) > 1 else 'places'} the "
                         f"runs of a grid, but --resume {cfg.run.resume} continues one run in "
                         f"its own directory: expected {'them' if len(given) > 1 else 'it'} "
                         "left out (a grid's directory given to --resume continues the grid)")
    if given:
        verb = "place" if len(given) > 1 else "places"
        raise ValueError(f"{', '.join(given)} {verb} the runs of a grid, but this is one run "
                         f"(--backbone {cfg.model.backbone}, --seed {cfg.run.seed}), which runs "
                         f"here in its own directory: expected {'them' if len(given) > 1 else 'it'}"
                         " left out for one run (--run-dir names its directory), or several "
                         "--backbone or --seed values for a grid")


def on_transitions(cfg: TrainConfig) -> bool:
    """Whether the run trains on single transitions (``mlp`` at ``--seq-len 1``), where the
    encoders see one step and :func:`agents.train.resolve` turns no previous input on: the
    replay's own rule, which needs no episode length for it."""
    memory = cfg.model.memory
    return cfg.replay.resolved(memory, None).transitions(memory)


def warn_unused_inputs(cfg: TrainConfig, typed: Collection[str]) -> None:
    """Warn when ``--prev-action`` / ``--prev-reward`` are typed (``typed``: field names, see
    :func:`given_on_resume`) for a run that trains on single transitions (``mlp`` at
    ``--seq-len 1``), whose encoders see one step and so do not use them. A recipe may set
    them for every family; only a typed flag is worth a word."""
    unused = [flag(name) for name in ("prev_action", "prev_reward")
              if name in typed and getattr(cfg.model, name)]
    if unused and on_transitions(cfg):
        them = "them" if len(unused) > 1 else "it"
        warnings.warn(f"unused flags: {' '.join(unused)} feed{'' if unused[1:] else 's'} "
                      f"sequence training; --backbone {cfg.model.backbone} on single transitions "
                      f"(--seq-len 1) does not use {them}", UserWarning, stacklevel=2)


def refuse_overridden_switches(cfg: TrainConfig, argv: Sequence[str]) -> None:
    """Refuse ``--agent.no-{actor,critic}-prev-{action,reward}`` where :func:`agents.train.resolve`
    turns that input on for both networks of a run that trains on sequences (``--prev-action``,
    on by default for memory backbones; ``--prev-reward``, which a recipe may give): the typed
    switch was overridden without a word, and config.json recorded it on.

    Raises:
        ValueError: naming the switch, what turns the input on and how to feed one network.
    """
    if on_transitions(cfg):  # nothing is turned on there
        return
    m, typed = cfg.model, {arg.split("=", 1)[0].replace("_", "-") for arg in argv}
    on = {"action": m.feeds_prev_action, "reward": m.prev_reward}
    why = {"action": ("--prev-action (on by default for memory backbones)", "--prev-action False"),
           "reward": ("--prev-reward (given, or by the recipe)", "--no-prev-reward")}
    for net, other in (("actor", "critic"), ("critic", "actor")):
        for what in ("action", "reward"):
            switch = f"--agent.no-{net}-prev-{what}"
            if switch in typed and on[what] and not getattr(cfg.agent, f"{net}_prev_{what}"):
                raise ValueError(
                    f"{switch}: {why[what][0]} gives the previous {what} to the actor and the "
                    f"critic alike, so the {net} would see it anyway; to feed it to the {other} "
                    f"alone give {why[what][1]} --agent.{other}-prev-{what}")


def cli(argv: Sequence[str]) -> None:
    """One run, or a grid when there is more than one (backbone, seed) combination."""
    cfg, backbone_values, seed_values = parse_cli(argv)
    typed = given_on_resume(argv)
    if cfg.run.resume is not None and is_grid_dir(cfg.run.resume):
        if len(backbone_values) * len(seed_values) > 1:
            raise ValueError(f"--resume {cfg.run.resume} continues the grid's own runs; "
                             "it takes no --backbone or --seed")
        resume_grid(cfg, typed)
    elif cfg.run.resume is not None and len(backbone_values) * len(seed_values) > 1:
        given = " ".join([f"--{flag} {' '.join(map(str, values))}" for flag, values in
                          (("backbone", backbone_values), ("seed", seed_values))
                          if len(values) > 1])
        raise ValueError(f"--resume {cfg.run.resume} continues one run, whose config.json holds "
                         f"its backbone and seed: expected no --backbone or --seed beyond the "
                         f"run's own, got {given}")
    elif len(backbone_values) * len(seed_values) == 1:
        refuse_grid_flags(cfg)
        if cfg.run.resume is None:
            refuse_overridden_switches(cfg, argv)
            warn_unused_inputs(cfg, typed)
            if cfg.grid.jobs != 1:
                warnings.warn(f"unused flags: --jobs {cfg.grid.jobs} is for a grid (several "
                              f"--backbone or --seed values), whose runs it starts that many at "
                              f"a time; this is one run", UserWarning, stacklevel=2)
        else:
            _refuse_unstarted_grid_run(Path(cfg.run.resume))
        main(cfg, typed if cfg.run.resume is not None else (), recipe_applied=True)
    else:
        per_backbone = {b: backbone_config(argv, b) for b in backbone_values}
        for c in per_backbone.values():
            refuse_overridden_switches(c, argv)
            warn_unused_inputs(c, typed)
        grid(cfg, backbone_values, seed_values, per_backbone)


def run(argv: Sequence[str] | None = None) -> None:
    """:func:`cli` with the documented exit codes (see the module docstring) and warnings
    shown as ``warning: <message>``."""
    try:
        with one_line_warnings(), sigterm_raises():
            cli(sys.argv[1:] if argv is None else argv)
    except (TrainingInterrupted, GridInterrupted) as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:  # SIGINT / SIGTERM outside the loop, which handles its own
        why = str(e) or "SIGINT outside the training loop"
        print(f"stopped: {why}, with no checkpoint written on it: a run directory that holds "
              "config.json continues with --resume RUN_DIR (from step 0 if it holds no "
              "checkpoint), a grid directory with --resume GRID_DIR; a run that made neither "
              "starts again with the same command", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 130))
    except (NonFiniteError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except EnvError as e:
        print(f"error: {e}\nthe env's traceback:\n{e.env_traceback.rstrip()}", file=sys.stderr)
        sys.exit(4)
    except FileExistsError as e:  # a run or grid directory that is not empty: bad input
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"error: {e}" if isinstance(e, FileSystemError) else
              f"error: file system: {e}", file=sys.stderr)
        sys.exit(3)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


__all__ = ["GRID_MANIFEST", "backbone_config", "cli", "flag_fields", "given_on_resume", "grid",
           "is_grid_dir", "parse_cli", "read_manifest", "refuse_grid_flags", "resume_grid",
           "resume_runs", "run", "summarize", "take_list", "warn_unused_inputs",
           "write_manifest"]
