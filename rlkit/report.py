"""Comparison reports from run directories: learning curves and a final-performance table.

``python -m rlkit.report GRID_DIR [--out DIR] [--metric M] [--last-k K] [--title T]
[--unfinished]`` finds
every run directory below ``GRID_DIR`` (a folder holding ``config.json``), groups the runs by
``(env, backbone)`` and writes, to ``--out`` (default ``GRID_DIR/report``): one
``curves_<env>.png`` per env, ``report.md`` and one self-contained ``report.html`` (plots as
base64 data URIs, inline CSS, no external link). Written again to the same folder, it removes
the curve images the previous ``report.md`` there linked and it does not write (an env that
dropped out); other files in the folder are left alone.

A run it cannot use (a malformed or missing ``config.json`` or ``metrics.jsonl``, no value of
the metric: a run that failed before its first evaluation; a run without its final evaluation
at its ``--total-steps``, unless ``--unfinished``; a run that the grid's ``grid.json`` lists
and that never started) is skipped: the report covers the others and lists the skipped ones
with the reason, as does the command line on stderr. Only when no run is usable is it an error
(exit code 2, as is bad input; 3 when the report's folder cannot be made or written). The
runs of one ``(env, backbone)`` row are its seeds; settings in which they differ beyond the
seed and where they ran are warned about.

Reading the run directories is :mod:`rlkit.gridruns`.

Statistics, all over seeds (one run = one seed):
- final value of a run: mean of its last ``k`` evaluations of the metric (fewer if it has
  fewer); when a step was logged twice (a resumed run) the later row wins;
- IQM: ``scipy.stats.trim_mean(x, 0.25)``, the mean after dropping ``floor(n / 4)`` values
  at each end (the convention of rliable);
- 95% CIs: percentile bootstrap (``scipy.stats.bootstrap``) with a generator seeded from
  ``seed`` and the group name, so a report is reproducible and adding a group leaves the
  others' intervals unchanged; below ``MIN_CI_SEEDS`` (4) seeds a CI is ``n/a``: with 2 or 3
  seeds the percentile bootstrap returns the seeds' own lowest and highest values, which is
  no 95% interval (and the IQM, which trims nothing there, is the mean);
- curves: seeds are aligned on the union of their evaluation steps inside the range every
  seed covers (from the latest first step to the earliest last step), each seed linearly
  interpolated there; no seed is extrapolated past its own data. The band is the 95% CI of
  the mean, or below 4 seeds the seeds' range (the legend says which);
- a value that is not finite (a run that diverged logs ``nan``) is kept: the row's
  statistics and the curve there are not finite either, with a warning that names the run
  and step.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import re
import sys
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rlkit.fields import is_count
from rlkit.gridruns import (
    ReportError,
    Run,
    Skipped,
    find_runs,
    load_run,
    none_usable,
    scan_runs,
    series,
)
from rlkit.rundir import dir_arg

try:
    from scipy import stats
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("rlkit.report needs scipy: pip install 'rlkit[report]'") from e

CONFIDENCE = 0.95
MIN_CI_SEEDS = 4
"""Fewest seeds for a bootstrap CI: below it the percentile bootstrap gives the seeds' range."""


@dataclass(frozen=True)
class TableRow:
    """Final performance of one (env, backbone) group; ``None`` means not available."""

    env: str
    backbone: str
    n_seeds: int
    mean: float
    mean_ci: tuple[float, float] | None
    iqm: float
    iqm_ci: tuple[float, float] | None
    wall_time: float
    """Last ``wall_time`` of each run (s), mean over seeds."""
    updates_per_s: float | None
    """Last ``updates_per_s`` of each run, mean over the seeds that logged it."""
    peak_memory_mb: float | None
    """Largest ``peak_memory_mb`` of any row of any seed."""


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote."""

    out_dir: Path
    markdown: Path
    html: Path
    plots: dict[str, Path]
    """env id -> its learning-curve PNG."""
    rows: list[TableRow]
    skipped: list[Skipped]
    """Runs left out (malformed, failed before their first evaluation, or excluded by the
    caller), sorted by path."""
    cautions: list[str]
    """The warnings the report gave (runs of different settings or lengths pooled in one row,
    repeated seeds, curves not drawn, different evaluated policies), also on its pages."""



def _ci(x: np.ndarray, statistic: Any, rng: np.random.Generator, n_resamples: int) -> Any:
    """Percentile-bootstrap CI of ``statistic`` over axis 0 of ``x``, ``None`` below
    ``MIN_CI_SEEDS`` seeds."""
    if x.shape[0] < MIN_CI_SEEDS:
        return None
    with warnings.catch_warnings():  # a nan value: scipy warns of a method not used here
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((x,), statistic, axis=0, n_resamples=n_resamples,
                              method="percentile", confidence_level=CONFIDENCE, rng=rng)
    return res.confidence_interval


def _iqm(x: np.ndarray, axis: int = 0) -> Any:
    return stats.trim_mean(x, 0.25, axis=axis)


def _rng(seed: int, *names: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("/".join(names).encode())])


def _table_row(env: str, backbone: str, runs: list[Run], metric: str, last_k: int, seed: int,
               n_resamples: int) -> TableRow:
    finals = np.array([series(r, metric)[1][-last_k:].mean() for r in runs])
    rng = _rng(seed, "table", env, backbone)
    mean_ci, iqm_ci = (_ci(finals, f, rng, n_resamples) for f in (np.mean, _iqm))
    ups = [rows[-1]["updates_per_s"] for r in runs
           if (rows := [x for x in r.rows if "updates_per_s" in x])]
    mems = [x["peak_memory_mb"] for r in runs for x in r.rows if "peak_memory_mb" in x]
    return TableRow(
        env=env, backbone=backbone, n_seeds=len(runs),
        mean=float(np.mean(finals)),
        mean_ci=None if mean_ci is None else (float(mean_ci.low), float(mean_ci.high)),
        iqm=float(_iqm(finals)),
        iqm_ci=None if iqm_ci is None else (float(iqm_ci.low), float(iqm_ci.high)),
        wall_time=float(np.mean([r.rows[-1]["wall_time"] for r in runs])),
        updates_per_s=float(np.mean(ups)) if ups else None,
        peak_memory_mb=float(max(mems)) if mems else None,
    )


def aligned_curves(runs: list[Run], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeds of one group on a common step grid (see the module docstring).

    Returns:
        ``steps`` ``[S]`` and ``values`` ``[n_seeds, S]``; ``S`` is 0 when the seeds' step
        ranges do not overlap.
    """
    curves = [series(r, metric) for r in runs]
    lo, hi = max(s[0] for s, _ in curves), min(s[-1] for s, _ in curves)
    grid = np.unique(np.concatenate([s for s, _ in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    return grid, np.stack([np.interp(grid, s, v) for s, v in curves])


def _safe_name(env: str, taken: set[str]) -> str:
    name = base = re.sub(r"[^A-Za-z0-9._-]+", "_", env).strip("._") or "env"
    while name in taken:  # two env ids that sanitise alike
        name = f"{base}_{len(taken)}"
    taken.add(name)
    return name


def plot_env(env: str, groups: dict[str, list[Run]], metric: str, path: Path, seed: int = 0,
             n_resamples: int = 2000, cautions: list[str] | None = None) -> Path:
    """Write the learning curves of every backbone on ``env`` to the PNG ``path``; a warning
    (a curve not drawn) is also appended to ``cautions`` when given."""
    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for backbone, runs in sorted(groups.items()):
        steps, values = aligned_curves(runs, metric)
        if steps.size == 0:
            message = (f"{env}/{backbone}: the seeds' evaluation steps do not overlap; no curve "
                       "drawn")
            warnings.warn(message, stacklevel=2)
            if cautions is not None:
                cautions.append(message)
            continue
        mean = values.mean(axis=0)
        ranged = 1 < len(runs) < MIN_CI_SEEDS
        (line,) = ax.plot(steps, mean, marker="o" if steps.size < 30 else None, markersize=3,
                          label=f"{backbone} (n={len(runs)}{', band: range' if ranged else ''})")
        if ranged:
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0),
                            color=line.get_color(), alpha=0.2, lw=0)
        elif (ci := _ci(values, np.mean, _rng(seed, "curve", env, backbone), n_resamples)
              ) is not None:
            ax.fill_between(steps, ci.low, ci.high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("environment step")
    ax.set_ylabel(metric)
    ax.set_title(f"{env}: {metric}\nmean over seeds, band: {CONFIDENCE:.0%} bootstrap CI "
                 f"(below {MIN_CI_SEEDS} seeds: the seeds' range)")
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
    if ax.lines:
        ax.legend(title="backbone", loc="best")
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" if x == 0 or abs(x) >= 0.1 or not math.isfinite(x) else f"{x:.3g}"


HEADER = ["env", "backbone", "seeds", "mean", "95% CI (mean)", "IQM", "95% CI (IQM)",
          "wall time (s)", "updates/s", "peak memory (MB)"]


def table_cells(row: TableRow) -> list[str]:
    """The formatted cells of one table row, in the order of ``HEADER``."""
    def ci(c: tuple[float, float] | None) -> str:
        return "n/a" if c is None else f"[{_fmt(c[0])}, {_fmt(c[1])}]"

    return [row.env, row.backbone, str(row.n_seeds), _fmt(row.mean), ci(row.mean_ci),
            _fmt(row.iqm), ci(row.iqm_ci), _fmt(row.wall_time, 1),
            _fmt(row.updates_per_s, 1), _fmt(row.peak_memory_mb, 0)]


def _md_text(text: str) -> str:
    """``text`` as Markdown shows it (``gru__s0`` is not bold, ``*`` not a list)."""
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text)


def _markdown(title: str, notes: str, rows: list[TableRow], plots: dict[str, Path],
              skipped: list[Skipped], cautions: list[str]) -> str:
    lines = [f"# {title}", "", notes, ""]
    if cautions:
        lines += ["**Warnings:**", ""] + [f"- {_md_text(c)}" for c in cautions] + [""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in table_cells(r)) + " |"
              for r in rows]
    for env, png in plots.items():
        lines += ["", f"## {env}", "", f"![learning curves on {env}]({png.name})"]
    if skipped:
        lines += ["", "## Skipped runs", ""] + [f"- `{s.path}`: {s.reason}" for s in skipped]
    return "\n".join(lines) + "\n"


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px}
th{background:#f0f0f0}td{text-align:right}td:nth-child(-n+2){text-align:left}
img{max-width:100%;border:1px solid #eee}p.notes{color:#555}ul.warn{color:#a40}"""


def _html(title: str, notes: str, rows: list[TableRow], plots: dict[str, Path],
          skipped: list[Skipped], cautions: list[str]) -> str:
    esc = html.escape
    warned = "" if not cautions else "<p><b>Warnings:</b></p><ul class=\"warn\">" + "".join(
        f"<li>{esc(c)}</li>" for c in cautions) + "</ul>"
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in table_cells(r)) + "</tr>"
                   for r in rows)
    imgs = "".join(
        f"<h2>{esc(env)}</h2><img alt=\"learning curves on {esc(env)}\" "
        f"src=\"data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}\">"
        for env, png in plots.items())
    skips = "" if not skipped else "<h2>Skipped runs</h2><ul>" + "".join(
        f"<li><code>{esc(str(s.path))}</code>: {esc(s.reason)}</li>" for s in skipped) + "</ul>"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"notes\">{esc(notes)}</p>{warned}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"{imgs}{skips}</body></html>\n")


def build_report(grid_dir: str | Path, out_dir: str | Path | None = None,
                 metric: str = "eval_return_mean", *, last_k: int = 1, title: str | None = None,
                 seed: int = 0, n_resamples: int = 2000,
                 exclude: Mapping[Path, str] | None = None,
                 unfinished: bool = False) -> ReportResult:
    """Compare every (env, backbone) group of runs below ``grid_dir``.

    Args:
        grid_dir: folder searched at any depth for run directories.
        out_dir: where the report goes; default ``grid_dir/report``.
        metric: the metric plotted and tabulated (a key of the rows of ``metrics.jsonl``).
        last_k: a run's final value is the mean of its last ``last_k`` values of ``metric``.
        title: report title; default "Backbone comparison: <metric>".
        seed: seed of the bootstrap generators.
        n_resamples: bootstrap resamples per confidence interval.
        exclude: run directories to leave out, with the reason (listed with the skipped runs).
        unfinished: report runs without their final evaluation at their ``--total-steps``
            too, at the step they reached (by default they are skipped, with the step).

    Returns:
        The paths written, the table rows (sorted by env then backbone) and the runs skipped
        (see the module docstring).

    Raises:
        ReportError: no usable run (the message gives each skipped run's reason).
        ValueError: ``last_k`` or ``n_resamples`` is not a positive integer, or ``out_dir`` is
            a file.
    """
    for name, v in (("last_k (--last-k)", last_k), ("n_resamples", n_resamples)):
        if not is_count(v):
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    runs, skipped = scan_runs(grid_dir, metric, exclude, unfinished)
    if not runs:
        raise ReportError(none_usable(Path(grid_dir), skipped))
    groups: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        groups.setdefault(run.env, {}).setdefault(run.backbone, []).append(run)
    out = Path(out_dir) if out_dir is not None else Path(grid_dir) / "report"
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir (--out) {str(out)!r} is a file; expected a folder (made if "
                         "missing)")
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"Backbone comparison: {metric}"
    rows, plots, taken, cautions = [], {}, set(), []

    def caution(message: str) -> None:
        """Warn, and keep the warning for the report's pages."""
        warnings.warn(message, stacklevel=3)
        cautions.append(message)

    for env in sorted(groups):
        for backbone in sorted(groups[env]):
            group = groups[env][backbone]
            if len({str(r.seed) for r in group}) < len(group):
                caution(f"{env}/{backbone}: repeated seeds; each run counts as one seed")
            differ, keys = _settings_differ(group, Path(grid_dir))
            if differ:
                caution(f"{env}/{backbone}: runs of different settings are pooled as seeds of "
                        f"one row ({differ})")
            # runs of different --total-steps are named above; this is for the rest and for
            # runs reported with --unfinished (read where they stopped, whatever their end)
            unfinished_here = any(not r.finished for r in group)
            if ("loop.total_steps" not in keys or unfinished_here) and (
                    ends := _ends_differ(group, metric, Path(grid_dir))):
                caution(f"{env}/{backbone}: the seeds' final values are read at different "
                        f"steps ({ends}); the row compares runs of different lengths")
            for run in group:
                if message := _not_finite(run, metric, last_k, Path(grid_dir)):
                    caution(f"{env}/{backbone}: {message}")
            rows.append(_table_row(env, backbone, group, metric, last_k, seed, n_resamples))
        png = out / f"curves_{_safe_name(env, taken)}.png"
        plots[env] = plot_env(env, groups[env], metric, png, seed, n_resamples, cautions)
    final = "last value" if last_k == 1 else f"mean of the last {last_k} values"
    policies = sorted({r.eval_policy for r in runs})
    names = {"actor": "actor", "target": "target actor", "average": "actor's average"}
    if len(policies) > 1:
        counts = ", ".join(f"{sum(r.eval_policy == p for r in runs)} the {names[p]}"
                           for p in policies)
        caution(f"the runs evaluated different policies ({counts}): their evaluation metrics "
                f"are not of the same policy")
    left_out = f" ({len(skipped)} more skipped: see the end)" if skipped else ""
    going = [f"{_run_name(r, Path(grid_dir))} at {r.last_step:.0f}" for r in runs
             if not r.finished]
    left_out += (f"; {len(going)} of them unfinished, read at the step they reached "
                 f"({', '.join(going)})") if going else ""
    notes = (f"{len(runs)} runs{left_out}. Metric: {metric}; final value of a run: {final}; "
             f"the runs' evaluations (eval_ metrics) are of the "
             f"{' and the '.join(names[p] for p in policies)}. "
             "Mean, IQM "
             f"(interquartile mean) and {CONFIDENCE:.0%} percentile-bootstrap CIs over seeds "
             f"(CIs n/a below {MIN_CI_SEEDS} seeds, where the bootstrap gives the seeds' range; "
             f"the IQM is the mean there). "
             "Wall time and updates/s: last logged value, mean over seeds; peak memory: max.")
    md, page = out / "report.md", out / "report.html"
    _remove_stale_plots(md, plots)
    md.write_text(_markdown(title, notes, rows, plots, skipped, cautions))
    page.write_text(_html(title, notes, rows, plots, skipped, cautions))
    return ReportResult(out, md, page, plots, rows, skipped, cautions)


SEED_FIELDS = ("run.", "loop.progress", "loop.checkpoint_every", "loop.checkpoint_minutes",
               "grid.", "loop.eval_policy", "wandb_run_id", "device")
"""Entries of ``config.json`` (prefixes of dotted paths) that the seeds of one row may differ
in without the per-row warning: the seed, where and how a run ran and was saved (and the
evaluated policy, warned about across all runs); any other difference is warned about."""


def _remove_stale_plots(md: Path, plots: dict[str, Path]) -> None:
    """Remove the curve images that the previous ``report.md`` in this folder linked and this
    report does not write (an env that dropped out of the grid), so that the folder holds
    only this report's images. Files the previous report did not link are left alone."""
    if not md.is_file():
        return
    written = {p.name for p in plots.values()}
    for name in re.findall(r"\]\((curves_[^)/\\]+\.png)\)", md.read_text(errors="replace")):
        if name not in written:
            (md.parent / name).unlink(missing_ok=True)


def _run_name(run: Run, root: Path) -> str:
    """``run``'s path under ``root`` (as it is when it lies elsewhere)."""
    return run.path.relative_to(root).as_posix() if run.path.is_relative_to(root) \
        else str(run.path)


def _ends_differ(group: list[Run], metric: str, root: Path) -> str:
    """The first and last steps at which the runs of ``group`` last logged ``metric``, with a
    run at each (``step 300 in a/gru__s0 / 900 in b/gru__s1``), or ``""`` when all agree."""
    ends = [(float(series(r, metric)[0][-1]), i) for i, r in enumerate(group)]
    (lo, i), (hi, j) = min(ends), min(ends, key=lambda e: (-e[0], e[1]))  # first runs at each
    if lo == hi:
        return ""
    return (f"step {lo:.0f} in {_run_name(group[i], root)} / {hi:.0f} in "
            f"{_run_name(group[j], root)}")


def _settings_differ(group: list[Run], root: Path) -> tuple[str, list[str]]:
    """The settings in which any run of ``group`` differs from the first run, each with every
    value seen and the first run having it, by its path under ``root`` (``loop.total_steps
    400 in a/gru__s0 / 900 in b/gru__s1``; three settings named, the count of the rest), and
    their dotted paths; ``("", [])`` where none differs. A setting that one record lacks
    (written before the setting existed) is named as absent."""
    first = group[0].record
    if first is None:
        return "", []

    def value(flat: dict[str, Any], key: str) -> str:
        return repr(flat[key]) if key in flat else "absent (recorded before the setting existed)"

    a = first.flat()
    seen: dict[str, list[tuple[str, Run]]] = {}  # setting -> (value, first run with it)
    for run in group[1:]:
        if run.record is None:
            continue
        b = run.record.flat()
        for k in first.differences(run.record):
            if k.startswith(SEED_FIELDS):
                continue
            values = seen.setdefault(k, [(value(a, k), group[0])])
            if (v := value(b, k)) not in {x for x, _ in values}:
                values.append((v, run))
    keys = list(seen)
    more = f", and {len(keys) - 3} more" if len(keys) > 3 else ""
    return ", ".join(f"{k} " + " / ".join(f"{v} in {_run_name(r, root)}" for v, r in seen[k])
                     for k in keys[:3]) + more, keys


def _not_finite(run: Run, metric: str, last_k: int, root: Path) -> str:
    """Where ``run`` logged a value of ``metric`` that is not finite (``nan`` from a run that
    diverged), or ``""``."""
    steps, values = series(run, metric)
    bad = ~np.isfinite(np.asarray(values, dtype=float))
    if not bad.any():
        return ""
    at = ", ".join(f"{s:.0f}" for s in steps[bad][:3]) + (" ..." if bad.sum() > 3 else "")
    where = "the curve there and the row (a final value) are not finite" \
        if bad[-last_k:].any() else "the curve there is not finite"
    return f"{_run_name(run, root)} logged {metric} {values[bad][0]} at step {at}; {where}"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the paths written, one per line."""
    p = argparse.ArgumentParser(prog="python -m rlkit.report", description=__doc__.split("\n")[0])
    p.add_argument("grid_dir", type=dir_arg, help="folder searched for run directories")
    p.add_argument("--out", type=dir_arg, default=None, help="output folder (default GRID/report)")
    p.add_argument("--metric", default="eval_return_mean", help="metric to compare")
    p.add_argument("--last-k", type=int, default=1, help="final = mean of the last k values")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--unfinished", action="store_true",
                   help="report runs without their final evaluation at their --total-steps "
                        "too (stopped, or still going), at the step they reached; by default "
                        "they are skipped")
    args = p.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:  # printed as one line each
            warnings.simplefilter("always")
            res = build_report(args.grid_dir, args.out, args.metric, last_k=args.last_k,
                               title=args.title, seed=args.seed, unfinished=args.unfinished)
    except (ReportError, ValueError) as e:
        print(f"rlkit.report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the folder could not be made or written
        print(f"rlkit.report: error: file system: {e}", file=sys.stderr)
        return 3
    for w in caught:
        print(f"rlkit.report: warning: {w.message}", file=sys.stderr)
    for skip in res.skipped:
        print(f"rlkit.report: skipped {skip.path}: {skip.reason}", file=sys.stderr)
    for path in (*res.plots.values(), res.markdown, res.html):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CONFIDENCE", "ReportError", "ReportResult", "Run", "Skipped", "TableRow",
           "aligned_curves", "build_report", "find_runs", "load_run", "main", "plot_env",
           "scan_runs", "table_cells"]
