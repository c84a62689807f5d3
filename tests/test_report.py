"""Comparison reports: exact table values on synthetic runs, plots, Markdown/HTML, CLI, errors."""

import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.cli import _finished
from rlkit.config import EnvConfig, LoopConfig, ModelConfig, RunConfig
from rlkit.report import ReportError, aligned_curves, build_report, find_runs
from rlkit.rundir import SECTIONS, RunRecord

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Final returns per seed, chosen so that mean and IQM are known exactly. IQM is the mean
# after dropping floor(n / 4) values at each end:
# mlp, 4 seeds [1, 2, 3, 4]: mean 10 / 4 = 2.5; drop 1 and 4 -> IQM (2 + 3) / 2 = 2.5.
# gru, 5 seeds [0, 1, 2, 3, 10]: mean 16 / 5 = 3.2; drop 0 and 10 -> IQM (1 + 2 + 3) / 3 = 2.0.
FINALS = {"mlp": [1.0, 2.0, 3.0, 4.0], "gru": [0.0, 1.0, 2.0, 3.0, 10.0]}


def record(env: str, backbone: str, seed: int, total_steps: int = 15_000) -> RunRecord:
    """A run record of the default sections for (env, backbone, seed)."""
    sections = {name: cls() for name, cls in SECTIONS.items()}
    sections["loop"] = LoopConfig(total_steps=total_steps)
    sections["env"] = EnvConfig(id=env)
    sections["model"] = ModelConfig(backbone=backbone)
    sections["run"] = RunConfig(seed=seed)
    return RunRecord(**sections, agent={"gamma": 0.99}, obs_dim=3, action_dim=1,
                     action_low=(-2.0,), action_high=(2.0,), device="cpu")


def write_run(run_dir: Path, env: str, backbone: str, seed: int, evals: list[tuple[int, float]],
              wall_time: float, updates_per_s: float, peak_mb: float | None = None) -> Path:
    """A run directory shaped like train.py's: train rows and eval rows, the final training
    row before the final evaluation, at its --total-steps (a finished run)."""
    run_dir.mkdir(parents=True)
    record(env, backbone, seed, total_steps=evals[-1][0]).write(run_dir)
    rows = []
    for i, (step, value) in enumerate(evals):
        train = {"step": step, "wall_time": i + 0.5, "critic_loss": "nan", "actor_loss": -1.0,
                 "q_mean": 0.0, "sps": 100.0, "updates": step, "updates_per_s": -1.0}
        if peak_mb is not None:
            train["peak_memory_mb"] = peak_mb - i  # the first row holds the peak
        rows += [train, {"step": step, "wall_time": i + 0.9, "eval_return_mean": value,
                         "eval_return_std": 0.0}]
    last = evals[-1][0]
    rows.insert(-1, {"step": last, "wall_time": wall_time - 0.05, "critic_loss": 0.1,
                     "actor_loss": 0.2, "q_mean": 0.3, "sps": 50.0, "updates": last,
                     "updates_per_s": updates_per_s})
    rows[-1]["wall_time"] = wall_time  # the final evaluation ends the run
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run_dir


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """2 envs; Pendulum: mlp x 4 seeds and gru x 5 seeds (eval steps differ by seed); a
    memory env with one seed. Runs sit at different depths."""
    root = tmp_path / "grid"
    for seed, final in enumerate(FINALS["mlp"]):
        write_run(root / "pendulum" / "mlp" / f"s{seed}", "Pendulum-v1", "mlp", seed,
                  [(100, 0.0), (200, final - 1.0), (300, final)],
                  wall_time=10.0 * (seed + 1), updates_per_s=100.0 + seed)
    for seed, final in enumerate(FINALS["gru"]):
        offset = 10 * (seed % 2)  # odd seeds evaluate at 110, 210 instead of 100, 200
        write_run(root / "pendulum" / "gru" / "deep" / f"s{seed}", "Pendulum-v1", "gru", seed,
                  [(100 + offset, 5.0), (200 + offset, final + 1.0), (300, final)],
                  wall_time=20.0, updates_per_s=50.0, peak_mb=100.0 * (seed + 1))
    write_run(root / "memory" / "s0", "memory/Recall-v0", "mlp", 0, [(50, 1.0), (100, 2.0)],
              wall_time=3.0, updates_per_s=7.0)
    return root


def fails_with(message: str):
    return pytest.raises(ReportError, match=re.escape(message))


def rows_by_key(result):
    return {(r.env, r.backbone): r for r in result.rows}


def test_table_values_are_exact(grid, tmp_path):
    res = build_report(grid, tmp_path / "out")
    rows = rows_by_key(res)
    assert [(r.env, r.backbone) for r in res.rows] == [
        ("Pendulum-v1", "gru"), ("Pendulum-v1", "mlp"), ("memory/Recall-v0", "mlp")]
    mlp, gru = rows[("Pendulum-v1", "mlp")], rows[("Pendulum-v1", "gru")]
    assert (mlp.n_seeds, gru.n_seeds) == (4, 5)
    assert mlp.mean == pytest.approx(2.5) and mlp.iqm == pytest.approx(2.5)
    assert gru.mean == pytest.approx(3.2) and gru.iqm == pytest.approx(2.0)
    for r in (mlp, gru):
        assert r.mean_ci[0] <= r.mean <= r.mean_ci[1]
        assert r.iqm_ci[0] <= r.iqm <= r.iqm_ci[1]
        assert r.mean_ci[0] < r.mean_ci[1]
    # Last rows: mlp wall times 10, 20, 30, 40 -> 25; updates/s 100..103 -> 101.5.
    assert mlp.wall_time == pytest.approx(25.0) and mlp.updates_per_s == pytest.approx(101.5)
    assert mlp.peak_memory_mb is None
    assert gru.wall_time == pytest.approx(20.0) and gru.updates_per_s == pytest.approx(50.0)
    assert gru.peak_memory_mb == pytest.approx(500.0)  # max over rows and seeds
    single = rows[("memory/Recall-v0", "mlp")]
    assert single.n_seeds == 1 and single.mean == 2.0 and single.iqm == 2.0
    assert single.mean_ci is None and single.iqm_ci is None


def test_last_k_and_reproducible_bootstrap(grid, tmp_path):
    a = rows_by_key(build_report(grid, tmp_path / "a", last_k=2))
    b = rows_by_key(build_report(grid, tmp_path / "b", last_k=2))
    # mlp seed s: last two evals (s - 1, s) -> s - 0.5; mean over s = 1..4 -> 2.0.
    assert a[("Pendulum-v1", "mlp")].mean == pytest.approx(2.0)
    assert a[("memory/Recall-v0", "mlp")].mean == pytest.approx(1.5)
    assert a == b  # same seed, same intervals
    with pytest.raises(ValueError, match="last_k"):
        build_report(grid, tmp_path / "c", last_k=0)


def test_curves_align_seeds_on_common_steps(grid):
    runs = [r for r in find_runs(grid) if r.backbone == "gru"]
    steps, values = aligned_curves(runs, "eval_return_mean")
    # Union of 100, 110, 200, 210, 300 within [110, 300] (the range every seed covers).
    np.testing.assert_array_equal(steps, [110, 200, 210, 300])
    assert values.shape == (5, 4)
    seed0 = next(i for i, r in enumerate(runs) if r.seed == 0)  # evals (100, 5), (200, 1), (300, 0)
    np.testing.assert_allclose(values[seed0], [4.6, 1.0, 0.9, 0.0])


def test_outputs_png_markdown_and_self_contained_html(grid, tmp_path):
    res = build_report(grid, tmp_path / "out", title="Grid <test>")
    assert set(res.plots) == {"Pendulum-v1", "memory/Recall-v0"}
    assert res.plots["memory/Recall-v0"].name == "curves_memory_Recall-v0.png"
    for png in res.plots.values():
        data = png.read_bytes()
        assert png.parent == tmp_path / "out" and data.startswith(PNG_MAGIC) and len(data) > 1000
    md = res.markdown.read_text()
    assert "| Pendulum-v1 | mlp | 4 | 2.50 |" in md
    assert "| Pendulum-v1 | gru | 5 | 3.20 |" in md and "| 2.00 |" in md
    assert "| memory/Recall-v0 | mlp | 1 | 2.00 | n/a | 2.00 | n/a | 3.0 | 7.0 | n/a |" in md
    assert "(curves_Pendulum-v1.png)" in md and "(curves_memory_Recall-v0.png)" in md
    page = res.html.read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "Grid &lt;test&gt;" in page and "<td>3.20</td>" in page
    for bad in ("http://", "https://", 'src="http', "<link", "<script", "url("):
        assert bad not in page


def test_cli_writes_report(grid, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "rlkit.report", str(grid), "--out", str(out),
                           "--title", "CLI", "--last-k", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.split()
    assert str(out / "report.md") in printed and str(out / "report.html") in printed
    assert (out / "curves_Pendulum-v1.png").is_file() and (out / "report.html").is_file()


def test_cli_empty_dir_fails_with_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlkit.report", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert f"{tmp_path}: no run directory found" in proc.stderr


def test_an_out_folder_that_is_a_file_is_bad_input(grid, tmp_path):
    """Named in one line (exit code 2), the file untouched; not a traceback."""
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"^out_dir \(--out\) '\S+afile' is a file; expected "
                                         r"a folder \(made if missing\)$"):
        build_report(grid, tmp_path / "afile")
    proc = subprocess.run([sys.executable, "-m", "rlkit.report", str(grid), "--out",
                           str(tmp_path / "afile")], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"rlkit.report: error: out_dir (--out) '{tmp_path / 'afile'}' is a file"), proc.stderr
    assert "Traceback" not in proc.stderr and (tmp_path / "afile").read_text() == "x"


def skipped(result) -> dict[Path, str]:
    return {skip.path: skip.reason for skip in result.skipped}


PENDULUM_ROWS = [("Pendulum-v1", "gru"), ("Pendulum-v1", "mlp")]


def test_errors_name_directory_file_and_line(grid, tmp_path):
    with pytest.raises(ReportError, match="not a directory"):
        build_report(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with fails_with(f"{empty}: no run directory found"):
        build_report(empty)
    with pytest.raises(ReportError, match=r"no usable run among 10: .*no row has the metric "
                                          r"'success'; its rows have [^;]*eval_return_mean"):
        build_report(grid, tmp_path / "o4", metric="success")


def test_an_empty_path_is_refused_not_read_as_the_current_directory(grid, tmp_path):
    cwd = tmp_path / "cwd"  # a run directory there would be reported if "" were "."
    shutil.copytree(grid / "memory", cwd / "memory")
    for argv in ([""], [str(grid), "--out", " "]):
        proc = subprocess.run([sys.executable, "-m", "rlkit.report", *argv], capture_output=True,
                              text=True, cwd=cwd, timeout=120, env={**os.environ,
                                                                   "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 2 and "expected a directory, got " in proc.stderr, proc.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["memory"]
    assert not (grid / "report").exists()


def test_unusable_runs_are_skipped_and_listed_with_the_reason(grid, tmp_path):
    """A malformed or half-written run (one that failed before its first evaluation) is left
    out and listed with the reason; the report covers every other run."""
    run = grid / "memory" / "s0"
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    cases = [
        (lines[:2] + ['{"step": 3, "wall_time": '] + lines[2:], f"{metrics}:3: invalid JSON"),
        (lines[:3] + ['{"wall_time": 1.0}'], f"{metrics}:4: expected an object with 'step'"),
        (lines[:1] + ['{"step": 1, "wall_time": 1, "eval_return_mean": "high"}'],
         f"{metrics}:2: 'eval_return_mean' must be a number"),
        (lines[:1], "no row has the metric 'eval_return_mean' (the run stopped before its "
                    "first evaluation); its rows have "),
        (None, f"{metrics}: no such file (the run stopped before it logged)"),
    ]
    for i, (text, reason) in enumerate(cases):
        if text is None:
            metrics.unlink()
        else:
            metrics.write_text("\n".join(text))
        res = build_report(grid, tmp_path / f"o{i}")
        assert [(r.env, r.backbone) for r in res.rows] == PENDULUM_ROWS, reason
        assert list(skipped(res)) == [run] and reason in skipped(res)[run]
        md, page = res.markdown.read_text(), res.html.read_text()
        assert "(1 more skipped: see the end)" in md and "## Skipped runs" in md
        assert f"- `{run}`: " in md and reason in md
        assert "<h2>Skipped runs</h2>" in page and html.escape(reason) in page


def test_a_last_line_cut_short_is_dropped_as_a_resume_drops_it(grid, tmp_path):
    """A kill during a write leaves the last line of metrics.jsonl without its newline:
    ``--resume`` drops it, but the report skipped the whole run as invalid JSON. Only a last
    line without a newline is dropped; the same text before it is still refused."""
    metrics = grid / "memory" / "s0" / "metrics.jsonl"
    whole = build_report(grid, tmp_path / "whole").markdown.read_text()
    text = metrics.read_text()
    assert text.endswith("\n")
    metrics.write_text(text + '{"step": 900, "wall_time": 1.2, "sp')
    res = build_report(grid, tmp_path / "cut")
    assert skipped(res) == {} and res.markdown.read_text() == whole
    metrics.write_text(text + '{"step": 900, "wall_time": 1.2, "sp\n')  # a whole line: malformed
    assert "invalid JSON" in skipped(build_report(grid, tmp_path / "bad"))[metrics.parent]


def test_excluded_runs_are_listed_as_skipped(grid, tmp_path):
    gone = grid / "pendulum" / "mlp" / "s3"
    res = build_report(grid, tmp_path / "out", exclude={gone: "did not finish: killed"})
    assert skipped(res) == {gone: "did not finish: killed"}
    assert {(r.backbone, r.n_seeds) for r in res.rows if r.env == "Pendulum-v1"} == \
        {("mlp", 3), ("gru", 5)}


@pytest.mark.slow
def test_cli_reports_what_it_can_and_lists_skipped_runs_on_stderr(grid, tmp_path):
    bad = grid / "memory" / "s0" / "metrics.jsonl"
    bad.write_text(bad.read_text().splitlines()[0] + "\n")
    proc = subprocess.run([sys.executable, "-m", "rlkit.report", str(grid), "--out",
                           str(tmp_path / "cli")], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"rlkit.report: skipped {grid / 'memory' / 's0'}: {bad}: no row has the metric" \
        in proc.stderr
    assert (tmp_path / "cli" / "report.html").is_file()


def test_config_missing_field_is_named(grid, tmp_path):
    run = grid / "memory" / "s0"
    config = run / "config.json"
    data = json.loads(config.read_text())
    del data["model"]
    config.write_text(json.dumps(data))
    res = build_report(grid, tmp_path / "out")
    assert skipped(res) == {run: f"{config}: missing field(s) ['model']"}  # no empty list
    config.write_text(json.dumps(data | {"colour": "red"}))
    res = build_report(grid, tmp_path / "out1")
    assert skipped(res) == {run: f"{config}: unknown field(s) ['colour'], missing field(s) "
                                 f"['model']"}
    config.write_text("[1, 2]")
    res = build_report(grid, tmp_path / "out2")
    assert skipped(res) == {run: f"{config}: expected a JSON object, got list"}


def test_the_notes_name_the_evaluated_policy_and_a_mix_is_warned(grid, tmp_path):
    md = build_report(grid, tmp_path / "a").markdown.read_text()
    assert "evaluations (eval_ metrics) are of the actor." in md
    run = grid / "pendulum" / "mlp" / "s0"
    rec = RunRecord.read(run)  # rewritten with the target actor
    dataclasses.replace(rec, loop=dataclasses.replace(rec.loop, eval_policy="target")).write(run)
    with pytest.warns(UserWarning, match=r"different policies \(9 the actor, 1 the target actor\)"):
        md = build_report(grid, tmp_path / "b").markdown.read_text()
    assert "evaluations (eval_ metrics) are of the actor and the target actor." in md
    proc = subprocess.run([sys.executable, "-m", "rlkit.report", str(grid), "--out",
                           str(tmp_path / "c")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [  # one line, no source line of the warning
        "rlkit.report: warning: the runs evaluated different policies (9 the actor, 1 the "
        "target actor): their evaluation metrics are not of the same policy"]


def test_unfinished_runs_are_skipped_unless_asked_for_and_never_started_ones_listed(grid,
                                                                                     tmp_path):
    """A run short of its --total-steps (stopped, or still going) is left out by default,
    with the step it reached; --unfinished reports it as it is. A run that grid.json lists
    and that has no directory is listed as never started."""
    stopped = grid / "pendulum" / "mlp" / "s3"
    record("Pendulum-v1", "mlp", 3, total_steps=1000).write(stopped)  # reached step 300
    (grid / "grid.json").write_text(json.dumps({"schema": 1, "runs": {"mlp__s9": {}}}))
    res = build_report(grid, tmp_path / "a")
    assert skipped(res) == {
        stopped: "did not finish: last logged at step 300 of --total-steps 1000 (stopped or "
                 "still going; "
                 "--unfinished reports it as it is)",
        grid / "mlp__s9": "never started (listed in grid.json)"}
    mlp = next(r for r in res.rows if r.env == "Pendulum-v1" and r.backbone == "mlp")
    assert mlp.n_seeds == 3 and mlp.mean == pytest.approx(2.0)  # seeds 0-2: 1, 2, 3
    res = build_report(grid, tmp_path / "b", unfinished=True)
    mlp = next(r for r in res.rows if r.env == "Pendulum-v1" and r.backbone == "mlp")
    assert mlp.n_seeds == 4 and mlp.mean == pytest.approx(2.5)
    assert "10 runs (1 more skipped: see the end); 1 of them unfinished, read at the step " \
           "they reached (pendulum/mlp/s3 at 300)." in res.markdown.read_text()
    proc = subprocess.run([sys.executable, "-m", "rlkit.report", str(grid), "--out",
                           str(tmp_path / "cli")], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0 and f"rlkit.report: skipped {stopped}: did not finish: last " \
        "logged at step 300 of --total-steps 1000" in proc.stderr, proc.stderr


def test_a_report_rewritten_without_an_env_removes_that_envs_old_curves_only(grid, tmp_path):
    """A report written with --unfinished and then without it, in the same folder: the curves
    of the env that dropped out (its only run unfinished) are removed, since the new report.md
    no longer links them; an image the old report did not link stays. Before, the stale
    curves_<env>.png stayed beside the new report."""
    memory = grid / "memory" / "s0"
    record("memory/Recall-v0", "mlp", 0, total_steps=1000).write(memory)  # reached step 100
    out = tmp_path / "r"
    first = build_report(grid, out, unfinished=True)
    assert set(first.plots) == {"Pendulum-v1", "memory/Recall-v0"}
    stale, kept = first.plots["memory/Recall-v0"], first.plots["Pendulum-v1"]
    mine = out / "curves_mine.png"
    mine.write_bytes(b"not the report's")
    second = build_report(grid, out)
    assert set(second.plots) == {"Pendulum-v1"} and second.plots["Pendulum-v1"] == kept
    assert not stale.exists() and kept.is_file() and mine.read_bytes() == b"not the report's"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.md", "report.html", kept.name, mine.name])


def test_a_run_killed_between_its_last_training_row_and_its_final_evaluation_is_unfinished(
        grid, tmp_path):
    """Its last row is at --total-steps, but its final evaluation (and checkpoint) never came:
    the report leaves it out, as a grid's --resume continues it, rather than reading its
    earlier evaluation as final."""
    killed = grid / "pendulum" / "mlp" / "s4"
    killed.mkdir()
    record("Pendulum-v1", "mlp", 4, total_steps=300).write(killed)
    rows = [{"step": 200, "wall_time": 1.0, "eval_return_mean": -50.0},
            {"step": 300, "wall_time": 2.0, "critic_loss": 0.1, "updates_per_s": 9.0}]
    (killed / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = build_report(grid, tmp_path / "a")
    assert skipped(res) == {killed: "did not finish: last logged at step 300 of --total-steps 300 "
                                        "without "
                                    "its final evaluation (stopped or still going; "
                                    "--unfinished reports it as it is)"}
    mlp = next(r for r in res.rows if r.env == "Pendulum-v1" and r.backbone == "mlp")
    assert mlp.n_seeds == 4 and mlp.mean == pytest.approx(2.5)
    assert _finished(killed, None) is None  # a grid's --resume continues it too
    with (killed / "metrics.jsonl").open("a") as f:  # its final evaluation: finished for both
        f.write(json.dumps({"step": 300, "wall_time": 3.0, "eval_return_mean": -40.0}) + "\n")
    assert _finished(killed, None)["eval_return_mean"] == -40.0
    res = build_report(grid, tmp_path / "b")
    assert killed not in skipped(res)
    mlp = next(r for r in res.rows if r.env == "Pendulum-v1" and r.backbone == "mlp")
    assert mlp.n_seeds == 5 and mlp.mean == pytest.approx(-6.0)


def test_runs_of_different_settings_pooled_in_one_row_are_warned(grid, tmp_path):
    import warnings as w

    for seed, run_id in ((0, "aaa"), (1, "bbb")):  # W&B ids and devices differ by run: no word
        rec = dataclasses.replace(record("Pendulum-v1", "mlp", seed, total_steps=300),
                                  wandb_run_id=run_id, device=("cpu", "cuda")[seed])
        rec.write(grid / "pendulum" / "mlp" / f"s{seed}")
    with w.catch_warnings():
        w.simplefilter("error")
        build_report(grid, tmp_path / "quiet")
    other = record("Pendulum-v1", "mlp", 1, total_steps=300)
    other = dataclasses.replace(other, agent={"gamma": 0.9})
    other.write(grid / "pendulum" / "mlp" / "s1")
    with pytest.warns(UserWarning, match=r"^Pendulum-v1/mlp: runs of different settings are "
                                         r"pooled as seeds of one row \(agent.gamma 0.99 in "
                                         r"pendulum/mlp/s0 / 0.9 in pendulum/mlp/s1\)$"):
        build_report(grid, tmp_path / "a")


@pytest.mark.parametrize(("kw", "message"), [
    (dict(last_k=0), "last_k (--last-k) must be an integer >= 1, got 0"),
    (dict(last_k=2.5), "last_k (--last-k) must be an integer >= 1, got 2.5"),
    (dict(n_resamples=0), "n_resamples must be an integer >= 1, got 0"),
])
def test_bad_counts_are_refused_by_name(grid, tmp_path, kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_report(grid, tmp_path / "out", **kw)


def test_load_run_takes_a_string_path(grid):
    from rlkit.gridruns import load_run

    run = load_run(str(grid / "memory" / "s0"), "eval_return_mean")
    assert run.path == grid / "memory" / "s0" and run.backbone == "mlp"


def test_seeds_read_at_different_steps_are_warned(grid, tmp_path):
    """A seed stopped early and reported with --unfinished (or one extended alone) is read at
    another step than the rest of its row: the report says so, naming both ends."""
    short = grid / "pendulum" / "mlp" / "s3"
    shutil.rmtree(short)
    write_run(short, "Pendulum-v1", "mlp", 3, [(100, 0.0), (200, 4.0)], wall_time=5.0,
              updates_per_s=100.0)
    record("Pendulum-v1", "mlp", 3, total_steps=300).write(short)  # stopped at 200 of 300
    with pytest.warns(UserWarning) as caught:
        res = build_report(grid, tmp_path / "a", unfinished=True)
    mlp = next(r for r in res.rows if r.env == "Pendulum-v1" and r.backbone == "mlp")
    assert mlp.n_seeds == 4 and mlp.mean == pytest.approx(2.5)  # read at 200 for seed 3
    message = ("Pendulum-v1/mlp: the seeds' final values are read at different steps (step "
               "200 in pendulum/mlp/s3 / 300 in pendulum/mlp/s0); the row compares runs of "
               "different lengths")
    assert [str(w.message) for w in caught] == [message] == res.cautions
    # the pages say it too, above the table, not only the warning on stderr
    md = res.markdown.read_text()
    assert f"**Warnings:**\n\n- {message}\n" in md and md.index(message) < md.index("| env |")
    assert f"<li>{html.escape(message)}</li>" in res.html.read_text()


def report_warnings(grid: Path, out: Path, **kwargs) -> list[str]:
    """The warnings :func:`build_report` of ``grid`` gives (at least one), in order."""
    with pytest.warns(UserWarning) as caught:
        build_report(grid, out, **kwargs)
    return [str(c.message) for c in caught]

def test_a_setting_one_record_lacks_is_named_absent_and_longer_runs_warned_once(grid, tmp_path):
    """A run recorded before a setting existed shows it as absent (not None); seeds of another
    --total-steps (one extended alone) get the settings warning alone, not a second one for
    their ends; steps print whole (1000000, not 1e+06)."""
    newer = dataclasses.replace(record("Pendulum-v1", "mlp", 1, total_steps=300),
                                agent={"gamma": 0.99, "reward_scale": 0.1})
    newer.write(grid / "pendulum" / "mlp" / "s1")
    assert report_warnings(grid, tmp_path / "a") == [
        "Pendulum-v1/mlp: runs of different settings are pooled as seeds of one row "
        "(agent.reward_scale absent (recorded before the setting existed) in pendulum/mlp/s0 "
        "/ 0.1 in pendulum/mlp/s1)"]
    longer = grid / "pendulum" / "mlp" / "s1"
    shutil.rmtree(longer)
    write_run(longer, "Pendulum-v1", "mlp", 1, [(300, 1.0), (1_000_000, 2.0)], wall_time=5.0,
              updates_per_s=1.0)
    assert report_warnings(grid, tmp_path / "b") == [
        "Pendulum-v1/mlp: runs of different settings are pooled as seeds of one row "
        "(loop.total_steps 300 in pendulum/mlp/s0 / 1000000 in pendulum/mlp/s1)"]
    record("Pendulum-v1", "mlp", 1, total_steps=2_000_000).write(longer)
    for run in (grid / "pendulum" / "mlp").iterdir():  # every seed of 2,000,000 steps
        record("Pendulum-v1", "mlp", int(run.name[1:]), total_steps=2_000_000).write(run)
    assert report_warnings(grid, tmp_path / "c", unfinished=True) == [
        "Pendulum-v1/mlp: the seeds' final values are read at different steps (step 300 in "
        "pendulum/mlp/s0 / 1000000 in pendulum/mlp/s1); the row compares runs of different "
        "lengths"]
    # on report.md, a warning reads as written: run names are not bold, a | ends no cell
    from rlkit.report import _md_text
    assert _md_text("gru__s0 | a*b [x]") == r"gru\_\_s0 \| a\*b \[x\]"


def test_below_four_seeds_no_ci_is_claimed_and_the_band_is_the_range(grid, tmp_path):
    """With 2 or 3 seeds the percentile bootstrap of the mean returns the seeds' own lowest and
    highest values (with 3, every resample at the lowest has chance 1/27 > 2.5%), which is no
    95% interval: the table says n/a and the notes say why; 4 seeds get an interval inside the
    seeds' range."""
    for seed in (3, 4):
        shutil.rmtree(grid / "pendulum" / "gru" / "deep" / f"s{seed}")  # gru: 0, 1, 2
    res = build_report(grid, tmp_path / "a")
    gru, mlp = rows_by_key(res)[("Pendulum-v1", "gru")], rows_by_key(res)[("Pendulum-v1", "mlp")]
    assert gru.n_seeds == 3 and gru.mean_ci is None and gru.iqm_ci is None
    assert gru.mean == pytest.approx(1.0) and gru.iqm == gru.mean  # nothing trimmed at 3
    assert 1.0 < mlp.mean_ci[0] < mlp.mean_ci[1] < 4.0  # 4 seeds, finals 1 to 4
    md = res.markdown.read_text()
    assert "| Pendulum-v1 | gru | 3 | 1.00 | n/a | 1.00 | n/a |" in md
    assert "CIs n/a below 4 seeds, where the bootstrap gives the seeds' range" in md
    # the pure-CI plot path: 3 seeds give a band of the seeds' range, named in the legend
    import matplotlib.figure

    drawn = {}
    real = matplotlib.axes.Axes.fill_between

    def spy(self, x, lo, hi, **kw):
        drawn[len(drawn)] = (np.asarray(lo), np.asarray(hi))
        return real(self, x, lo, hi, **kw)

    labels = []
    real_plot = matplotlib.axes.Axes.plot

    def spy_plot(self, *a, **kw):
        labels.append(kw.get("label"))
        return real_plot(self, *a, **kw)

    from unittest import mock
    runs = {b: [r for r in find_runs(grid) if r.backbone == b and r.env == "Pendulum-v1"]
            for b in ("gru", "mlp")}
    with mock.patch.object(matplotlib.axes.Axes, "fill_between", spy), \
            mock.patch.object(matplotlib.axes.Axes, "plot", spy_plot):
        from rlkit.report import plot_env
        plot_env("Pendulum-v1", runs, "eval_return_mean", tmp_path / "c.png")
    assert labels == ["gru (n=3, band: range)", "mlp (n=4)"]
    _, values = aligned_curves(runs["gru"], "eval_return_mean")
    np.testing.assert_allclose(drawn[0][0], values.min(axis=0))
    np.testing.assert_allclose(drawn[0][1], values.max(axis=0))
    assert (drawn[1][0] > values.min()).any()  # mlp: a bootstrap band, not the range


def test_a_non_finite_value_is_kept_and_named_with_its_run_and_step(grid, tmp_path):
    """A diverged run logs nan: the row and the curve carry it, and a warning names the run
    and the step (scipy's warning about a method the report does not use is not shown)."""
    import warnings as w

    path = grid / "pendulum" / "mlp" / "s1" / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[-1]["eval_return_mean"] = "nan"  # the final evaluation, at step 300
    rows[1]["eval_return_mean"] = "nan"  # and the first, at step 100
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        res = build_report(grid, tmp_path / "a")
    message = ("Pendulum-v1/mlp: pendulum/mlp/s1 logged eval_return_mean nan at step 100, 300; "
               "the curve there and the row (a final value) are not finite")
    assert [str(c.message) for c in caught] == [message] == res.cautions
    mlp = rows_by_key(res)[("Pendulum-v1", "mlp")]
    assert np.isnan(mlp.mean) and np.isnan(mlp.mean_ci[0])
    rows[-1]["eval_return_mean"] = 2.0
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = build_report(grid, tmp_path / "c")
    assert res.cautions == ["Pendulum-v1/mlp: pendulum/mlp/s1 logged eval_return_mean nan at "
                            "step 100; the curve there is not finite"]
    assert rows_by_key(res)[("Pendulum-v1", "mlp")].mean == pytest.approx(2.5)


def test_every_setting_any_seed_differs_in_is_named_with_each_value(grid, tmp_path):
    """Seed 1 differs in gamma and seed 2 in the number of evaluation episodes: both are
    named (the first version named only the first run that differed), and a third value of a
    setting is named once with the first run that has it."""
    def seed(s: int):
        return record("Pendulum-v1", "mlp", s, total_steps=300)

    dataclasses.replace(seed(1), agent={"gamma": 0.9}).write(grid / "pendulum" / "mlp" / "s1")
    loop = dataclasses.replace(seed(2).loop, eval_episodes=1)
    dataclasses.replace(seed(2), loop=loop).write(grid / "pendulum" / "mlp" / "s2")
    dataclasses.replace(seed(3), agent={"gamma": 0.5}).write(grid / "pendulum" / "mlp" / "s3")
    assert report_warnings(grid, tmp_path / "a") == [
        "Pendulum-v1/mlp: runs of different settings are pooled as seeds of one row "
        "(agent.gamma 0.99 in pendulum/mlp/s0 / 0.9 in pendulum/mlp/s1 / 0.5 in "
        "pendulum/mlp/s3, loop.eval_episodes 5 in pendulum/mlp/s0 / 1 in pendulum/mlp/s2)"]


def test_an_unfinished_run_read_where_it_stopped_is_warned_even_beside_another_length(
        grid, tmp_path):
    """Seed 1 ran to 1,000,000 and seed 3 stopped at 200 of 300, reported with --unfinished:
    besides the settings warning (total steps), the ends are named, since seed 3 is read at
    200 whatever its own end."""
    longer = grid / "pendulum" / "mlp" / "s1"
    shutil.rmtree(longer)
    write_run(longer, "Pendulum-v1", "mlp", 1, [(300, 1.0), (1_000_000, 2.0)], wall_time=5.0,
              updates_per_s=1.0)
    short = grid / "pendulum" / "mlp" / "s3"
    shutil.rmtree(short)
    write_run(short, "Pendulum-v1", "mlp", 3, [(100, 0.0), (200, 4.0)], wall_time=5.0,
              updates_per_s=100.0)
    record("Pendulum-v1", "mlp", 3, total_steps=300).write(short)
    with pytest.warns(UserWarning) as caught:
        res = build_report(grid, tmp_path / "a", unfinished=True)
    assert [str(c.message) for c in caught][1] == (
        "Pendulum-v1/mlp: the seeds' final values are read at different steps (step 200 in "
        "pendulum/mlp/s3 / 1000000 in pendulum/mlp/s1); the row compares runs of different "
        "lengths")
    assert "1 of them unfinished, read at the step they reached (pendulum/mlp/s3 at 200)" in \
        res.markdown.read_text()
