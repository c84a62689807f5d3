"""Grids of runs (local processes and Ray), and evaluation of saved runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from agents import cli, train
from agents.evaluate import main as evaluate_main
from rlkit.config import replace_fields
from rlkit.evaluate import RenderError, make_eval_env
from rlkit.launch import GridRun, launch, threads_per_job
from rlkit.rundir import RunDirError, RunRecord

ROOT = Path(__file__).resolve().parents[1]
TINY = replace_fields(train.TrainConfig(), total_steps=150, learning_starts=50, batch_size=8,
                      d_model=16, seq_len=4, eval_every=0, eval_episodes=1, log_every=50,
                      progress=False, device="cpu")
GRID_ARGS = ["--total-steps", "150", "--learning-starts", "50", "--batch-size", "8",
             "--d-model", "16", "--seq-len", "4", "--eval-every", "0", "--eval-episodes", "1",
             "--log-every", "50", "--no-progress", "--device", "cpu"]


def _check_grid(grid: Path, names: list[str]) -> None:
    for name in names:
        run = grid / name
        record = RunRecord.read(run)
        backbone, seed = name.split("__s")
        assert record.model.backbone == backbone and record.run.seed == int(seed)
        assert record.run.wandb_group == grid.name
        assert (run / "checkpoint.pt").is_file()
        assert any("eval_return_mean" in line for line in (run / "metrics.jsonl").open())
    assert (grid / "report" / "report.html").is_file()
    assert (grid / "report" / "report.md").is_file()


@pytest.mark.slow
def test_cli_grid_on_local_launcher(tmp_path):
    grid = tmp_path / "g"
    out = subprocess.run(
        [sys.executable, "train.py", "--backbone", "mlp", "gru", "--seed", "0", "--jobs", "2",
         "--grid-dir", str(grid), *GRID_ARGS],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    _check_grid(grid, ["mlp__s0", "gru__s0"])


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed (pip install 'rlkit[ray]')")
@pytest.mark.slow
def test_grid_on_local_ray(tmp_path):
    grid = tmp_path / "ray-grid"
    cli.grid(replace_fields(TINY, launcher="ray", jobs=2, grid_dir=str(grid)), ["gru"], [0, 1])
    _check_grid(grid, ["gru__s0", "gru__s1"])


def _fails(config: int, run_dir: str) -> dict[str, float]:
    raise ValueError(f"run {config} broke")


def test_a_failing_run_does_not_stop_the_grid(tmp_path):
    outcomes = launch(_fails, [GridRun("a", 1), GridRun("b", 2)], tmp_path, jobs=2,
                      progress=False)
    assert [o.error for o in outcomes] == ["ValueError: run 1 broke", "ValueError: run 2 broke"]


def test_grid_bad_input(tmp_path):
    with pytest.raises(ValueError, match="launcher must be 'local' or 'ray', got 'slurm'"):
        launch(_fails, [GridRun("a", 1)], tmp_path, launcher="slurm")
    with pytest.raises(ValueError, match="run names must be unique"):
        launch(_fails, [GridRun("a", 1), GridRun("a", 2)], tmp_path)
    with pytest.raises(ValueError, match="unknown backbone 'gruu'"):
        cli.grid(replace_fields(TINY, grid_dir=str(tmp_path / "x")), ["gru", "gruu"], [0])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        cli.grid(replace_fields(TINY, grid_dir=str(tmp_path / "full")), ["gru"], [0, 1])
    with pytest.raises(ValueError, match="--seed takes non-negative integers, got"):
        cli.cli(["--seed", "0", "x", "--grid-dir", str(tmp_path / "y")])


def test_take_list_parses_several_values():
    values, rest = cli.take_list(["--backbone", "gru", "s4", "--seed", "1", "--x=2"],
                                    "--backbone")
    assert values == ["gru", "s4"] and rest == ["--seed", "1", "--x=2"]
    assert cli.take_list(["--backbone=mamba"], "--backbone") == (["mamba"], [])


def test_evaluate_saved_run(tmp_path, capsys):
    run = tmp_path / "run"
    train.main(replace_fields(TINY, backbone="gru", run_dir=str(run)))
    agent, record = train.load_agent(run)
    assert record.model.backbone == "gru" and type(agent).__name__ == "DDPG"
    stats = evaluate_main([str(run), "--episodes", "2"])
    assert stats["eval_length_mean"] == 200.0
    assert "return" in capsys.readouterr().out
    with pytest.raises(RunDirError, match="is not a run directory"):
        train.load_agent(tmp_path)


def test_video_without_renderer_is_a_clear_error():
    # MemoryCorridor has no render mode: asking for frames must fail with a message
    with pytest.raises(RenderError, match="cannot render 'rlkit/MemoryCorridor-v0' here"):
        make_eval_env("rlkit/MemoryCorridor-v0", Path("unused"), imports=("envs",))


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is None
                    or importlib.util.find_spec("pygame") is None,
                    reason="video needs moviepy and pygame (pip install 'rlkit[video]')")
def test_evaluate_writes_mp4(tmp_path):
    run = tmp_path / "run"
    train.main(replace_fields(TINY, run_dir=str(run)))
    evaluate_main([str(run), "--episodes", "1", "--video"])
    videos = list((run / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000


def test_threads_per_job_shares_cores_and_respects_omp_num_threads():
    assert threads_per_job(2, cpu_count=8, omp_num_threads="") == 4
    assert threads_per_job(16, cpu_count=8, omp_num_threads="") == 1
    assert threads_per_job(1, cpu_count=8, omp_num_threads="2") == 2  # the user's cap holds
    assert threads_per_job(4, cpu_count=8, omp_num_threads="6") == 2
    assert threads_per_job(1, cpu_count=8, omp_num_threads="3,1") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match=f"OMP_NUM_THREADS.*{bad!r}"):
            threads_per_job(1, cpu_count=8, omp_num_threads=bad)
