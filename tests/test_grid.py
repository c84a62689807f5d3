"""Grids of runs (local processes and Ray), and evaluation of saved runs."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from agents import cli, train
from agents.evaluate import evaluate_run as evaluate_api
from agents.evaluate import main as evaluate_main
from agents.evaluate import run as evaluate_run
from agents.evaluate import run_rewards
from rlkit.checkpoint import CheckpointError, load_checkpoint
from rlkit.config import GridConfig, parse_device, replace_fields
from rlkit.evaluate import RenderError, make_eval_env
from rlkit.faults import EnvError, TrainingInterrupted
from rlkit.launch import (
    GridInterrupted,
    GridRun,
    RunOutcome,
    _connect_ray,
    _ray_host_port,
    _run_message,
    launch,
    threads_per_job,
)
from rlkit.rundir import RunDirError, RunLock, RunRecord
from rlkit.runlog import read_metrics
from rlkit.seeding import eval_env_seed, seed_everything

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
    assert [o.details for o in outcomes] == [None, None]  # bad input: one line, as a single run


def _breaks(config: str, run_dir: str) -> dict[str, float]:
    if config == "env":
        try:
            {}["missing"]  # noqa: B018  (the env's own failure)
        except KeyError as e:
            raise EnvError.wrap(e, "Toy-v0", "step") from e
    return {"x": 1.0}["y"]  # a bug of the run's own


@pytest.mark.parametrize("launcher", ["local", pytest.param("ray", marks=[pytest.mark.slow,
                                     pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                                        reason="needs ray")])])
def test_a_failed_runs_traceback_comes_back_with_its_one_line(tmp_path, launcher):
    """A run failing in a grid reported its one line only: the env's traceback (or a bug's),
    which a single run prints, was lost (and Ray's one line held its own traceback, in
    colour)."""
    if launcher == "ray":  # Ray's workers cannot import this module: ship it by value
        from ray import cloudpickle
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    env, bug = launch(_breaks, [GridRun("env", "env"), GridRun("bug", "bug")], tmp_path,
                      launcher, jobs=2, progress=False)
    assert env.error.startswith("EnvError: env Toy-v0 raised KeyError in step")
    assert env.details.startswith("Traceback (most recent call last):")
    assert env.details.endswith("KeyError: 'missing'") and "_breaks" in env.details
    assert bug.error == "KeyError: 'y'" and bug.details.endswith("KeyError: 'y'")
    assert "_breaks" in bug.details and "\x1b[" not in bug.details


@pytest.mark.parametrize(("jobs", "omp", "said"), [(2, "1", "2 at a time, 1 thread each"),
                                                    (1, "2", "1 at a time, 2 threads each")])
def test_the_progress_bar_says_how_the_cores_are_shared(tmp_path, capsys, monkeypatch, jobs,
                                                        omp, said):
    """Two grids side by side each take every core unless OMP_NUM_THREADS caps them: the bar
    names the threads each run gets, so that this shows before the runs crawl."""
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    launch(_fails, [GridRun("a", 1)], tmp_path, jobs=jobs)
    assert f"grid {tmp_path.name} ({said})" in capsys.readouterr().err


def _warns(config: int, run_dir: str) -> dict[str, float]:
    warnings.warn(f"run {config} warns", UserWarning, stacklevel=1)
    return {}


def test_a_runs_warnings_start_with_its_name(tmp_path, capfd):
    outcomes = launch(_warns, [GridRun("gru__s0", 0), GridRun("s4__s1", 1)], tmp_path, jobs=2,
                      progress=False)
    assert [o.error for o in outcomes] == [None, None]
    err = capfd.readouterr().err
    assert "[gru__s0] " in err and "[s4__s1] " in err
    lines = {line.partition("] ")[0] + "]": line for line in err.splitlines() if "warns" in line}
    assert "UserWarning: run 0 warns" in lines["[gru__s0]"]
    assert "UserWarning: run 1 warns" in lines["[s4__s1]"]


def _warns_as_the_command_line(config: int, run_dir: str) -> dict[str, float]:
    with train.one_line_warnings():  # as agents.train.run_in, a grid run of the command line
        warnings.warn(f"run {config} warns", UserWarning, stacklevel=1)
    return {}


def test_a_runs_one_line_warnings_keep_its_name(tmp_path, capfd):
    """A grid run of ``train.py`` shows its warnings on one line (``warning: ...``); that
    formatter replaced the one that put the run's name first, so they came without it."""
    outcomes = launch(_warns_as_the_command_line, [GridRun("gru__s0", 0)], tmp_path, jobs=1,
                      progress=False)
    assert [o.error for o in outcomes] == [None]
    warned = [ln for ln in capfd.readouterr().err.splitlines() if "warns" in ln]
    assert warned == ["[gru__s0] warning: run 0 warns"]


def test_a_ray_worker_that_runs_several_shows_each_runs_warnings_under_its_name():
    # a Ray worker is one process for many tasks; run two task bodies in one fresh interpreter
    script = textwrap.dedent("""
        import warnings
        from rlkit.compile import _warn_once
        from rlkit.launch import _run_remote

        def warns(config, run_dir):
            warnings.warn("the same warning", UserWarning, stacklevel=1)
            _warn_once("cpu/the loss", "rlkit's own once-a-process warning")
            return {}

        plain = warnings.formatwarning
        for name in ("gru__s0", "gru__s1"):
            _run_remote(warns, 0, name, {})
        assert warnings.formatwarning is plain
        warnings.warn("after the runs", UserWarning, stacklevel=1)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    own = [line for line in done.stderr.splitlines() if "once-a-process" in line]
    assert [line[:10] for line in own] == ["[gru__s0] ", "[gru__s1] "], done.stderr
    shown = [line for line in done.stderr.splitlines() if "UserWarning" in line]
    assert len(shown) == 3, done.stderr
    assert shown[0].startswith("[gru__s0] ") and "the same warning" in shown[0]
    assert shown[1].startswith("[gru__s1] ") and "the same warning" in shown[1]
    assert not shown[2].startswith("[") and "after the runs" in shown[2]


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
    one = str(tmp_path / "one")  # one run's directory given to a grid: refused, not ignored
    with pytest.raises(ValueError, match=f"--run-dir {one} names the directory of one run; a "
                                         f"grid of 4 runs \\(--backbone gru mlp, --seed 0 1\\) "
                                         f"goes to a grid directory: expected --grid-dir {one}"):
        cli.cli(["--backbone", "gru", "mlp", "--seed", "0", "1", "--run-dir", one])
    long = str(tmp_path / "long")  # windows past the task's episodes stop the grid at once
    with pytest.raises(ValueError, match="--seq-len 500 trains 500 steps a window, more than the "
                                         "task's episodes hold \\(at most 200 steps\\)"):
        cli.cli(["--backbone", "gru", "s4", "--seq-len", "500", "--grid-dir", long])
    assert not (tmp_path / "one").exists() and not (tmp_path / "long").exists()


def test_ray_address_where_nothing_answers_is_refused_before_the_grid_dir(tmp_path):
    t0 = time.monotonic()
    g = str(tmp_path / "g")
    with pytest.raises(RuntimeError, match=r"--ray-address 127.0.0.1:1: nothing answers at "
                                           r"127.0.0.1:1 \(.*\); expected the address of a "
                                           r"running Ray cluster's head"):
        cli.cli(["--backbone", "mlp", "--seed", "0", "1", "--launcher", "ray", "--ray-address",
                 "127.0.0.1:1", "--grid-dir", g])
    assert time.monotonic() - t0 < 60 and not Path(g).exists()


def test_a_repeated_backbone_or_seed_is_refused_before_the_grid_dir(tmp_path):
    g = tmp_path / "g"
    for flags, said in ((["--backbone", "gru", "gru", "--seed", "0"], "--backbone gru gru"),
                        (["--seed", "0", "1", "0"], "--seed 0 1 0")):
        with pytest.raises(ValueError, match=rf"^{said}: a value is repeated; expected each "
                                             r"once \(every combination is one run\)$"):
            cli.cli([*flags, "--grid-dir", str(g), *GRID_ARGS])
    assert not g.exists()


def test_a_launcher_that_fails_before_any_run_leaves_the_grid_dir_as_it_was(tmp_path,
                                                                            monkeypatch):
    """Ray that cannot connect (``--ray-address auto`` and no cluster) fails after grid.json
    was written: it is removed again (and the directory, if the grid made it), so that the
    same command can be given again; an existing empty directory stays."""
    def no_cluster(*args, **kwargs):
        raise RuntimeError("--ray-address auto: Ray cannot connect (no cluster)")

    def bad_threads(*args, **kwargs):
        raise ValueError("OMP_NUM_THREADS must be a positive integer, got 'x'")

    g = tmp_path / "threads"
    monkeypatch.setattr(cli, "launch", bad_threads)
    with pytest.raises(ValueError, match=rf"got 'x'; no run started, and {g} is as it was"):
        cli.cli(["--seed", "0", "1", "--grid-dir", str(g), *GRID_ARGS])
    assert not g.exists()
    monkeypatch.setattr(cli, "launch", no_cluster)
    for g, made in ((tmp_path / "new", False), (tmp_path / "empty", True)):
        if made:
            g.mkdir()
        with pytest.raises(RuntimeError, match=rf"^--ray-address auto: Ray cannot connect \(no "
                                               rf"cluster\); no run started, and {g} is as it "
                                               r"was before$"):
            cli.cli(["--seed", "0", "1", "--launcher", "ray", "--ray-address", "auto",
                     "--grid-dir", str(g), *GRID_ARGS])
        assert g.exists() == made and (not made or not any(g.iterdir()))


def test_ray_that_cannot_connect_is_one_runtime_error_not_a_file_system_error():
    class FakeRay:
        def init(self, **kwargs):
            raise ConnectionError("Could not find any running Ray instance. Please specify "
                                  "the one to connect to.\nmore")

    with pytest.raises(RuntimeError, match=r"--ray-address auto: Ray cannot connect \(Could "
                                           r"not find any running Ray instance\. Please specify "
                                           r"the one to connect to\.\); expected") as e:
        _connect_ray(FakeRay(), "auto", 2)
    assert not isinstance(e.value, OSError)  # exit code 2 (bad input), not 3 (file system)
    assert [_ray_host_port(a) for a in ("auto", "10.0.0.5:6379", "ray://head:10001",
                                        "[::1]:6379", "host")] == [
        None, ("10.0.0.5", 6379), ("head", 10001), ("::1", 6379), None]


@pytest.mark.parametrize("flags, said", [
    (["--grid-dir", "G"], "--grid-dir G places"),
    (["--launcher", "ray"], "--launcher ray places"),
    (["--launcher", "ray", "--ray-address", "auto"], "--launcher ray, --ray-address auto place"),
])
def test_grid_flags_for_one_run_are_refused_not_ignored(tmp_path, monkeypatch, flags, said):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"{said} the runs of a grid, but this is one run "
                                         "\\(--backbone mlp, --seed 0\\), which runs here in "
                                         "its own directory: expected (it|them) left out for one "
                                         "run \\(--run-dir names its directory\\), or several "
                                         "--backbone or --seed values for a grid"):
        cli.cli(["--backbone", "mlp", *flags])
    assert list(tmp_path.iterdir()) == []


def test_a_grid_a_new_run_may_not_be_is_refused_before_its_directory_is_written(tmp_path,
                                                                               monkeypatch):
    """``--initial-updates`` with ``--learning-starts 0`` wrote grid.json, then every run
    failed, and so did the ``--resume`` the message gave, for ever."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^--initial-updates 5 are made on the random-action "
                                         r"steps gathered before learning starts; got "
                                         r"--learning-starts 0"):
        cli.cli(["--seed", "0", "1", "--initial-updates", "5", "--learning-starts", "0",
                 "--grid-dir", "g", *GRID_ARGS[:2]])
    assert list(tmp_path.iterdir()) == []


def test_a_ray_address_on_the_local_launcher_is_refused_not_ignored(tmp_path, monkeypatch):
    """``--ray-address`` without ``--launcher ray`` ran the grid here, never checked the
    address, and recorded it in every config.json; a grid's resume likewise."""
    monkeypatch.chdir(tmp_path)
    said = (r"^--ray-address 127.0.0.1:1 places the runs on a Ray cluster, but the launcher "
            r"is local \(the default\): expected --launcher ray with it, or no --ray-address$")
    with pytest.raises(ValueError, match=said):
        cli.cli(["--seed", "0", "1", "--ray-address", "127.0.0.1:1", "--grid-dir", "g"])
    assert list(tmp_path.iterdir()) == []
    cli.write_manifest(tmp_path / "g", [GridRun("mlp__s0", TINY)])
    with pytest.raises(ValueError, match=said):
        cli.cli(["--resume", "g", "--ray-address", "127.0.0.1:1"])


def test_take_list_parses_several_values():
    values, rest = cli.take_list(["--backbone", "gru", "s4", "--seed", "1", "--x=2"],
                                    "--backbone")
    assert values == ["gru", "s4"] and rest == ["--seed", "1", "--x=2"]
    assert cli.take_list(["--backbone=mamba"], "--backbone") == (["mamba"], [])


@pytest.mark.parametrize("argv, message", [
    (["--backbone"], "--backbone has no value after it; expected one, or several for a grid "
                     "(--backbone A B)"),
    (["--backbone", "--env", "Pendulum-v1"], "--backbone has no value after it"),
    (["--seed"], "--seed has no value after it"),
    (["--backbone", "gru", "--total-steps", "9", "--backbone", "mlp"],
     "--backbone is given 2 times (gru; mlp); expected it once, with every value after it "
     "(--backbone A B for a grid)"),
    (["--seed=1", "--seed", "2", "3"], "--seed is given 2 times (1; 2 3)"),
])
def test_a_grid_flag_without_a_value_or_given_twice_is_refused(argv, message, tmp_path):
    """``--backbone`` with nothing after it trained the default MLP (``--seed``: seed 0), and a
    second ``--backbone`` (an override appended to a script's command) made a grid of both."""
    with pytest.raises(ValueError, match=re.escape(message)):
        cli.cli([*argv, "--run-dir", str(tmp_path / "run")])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit) as e:  # the help, whatever the other flags say
        cli.cli([*argv, "--help"])
    assert e.value.code == 0


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


def test_evaluating_a_run_that_has_not_finished_says_so(tmp_path):
    """A checkpoint that is not the run's final one (a stopped run's): the policy is
    evaluated, with a one-line warning naming the step it is of."""
    from rlkit.checkpoint import save_checkpoint

    run = tmp_path / "run"
    train.main(replace_fields(TINY, run_dir=str(run)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.load_agent(run)  # the final checkpoint: no word
    ckpt = load_checkpoint(run / "checkpoint.pt")
    save_checkpoint(run / "checkpoint.pt", {**ckpt, "kind": "interrupt"})
    out = subprocess.run([sys.executable, "-m", "agents.evaluate", str(run), "--episodes", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stderr == (
        f"warning: {run}: the run's checkpoint is at step {ckpt['step']} of --total-steps "
        f"{TINY.loop.total_steps}, not its final one (the run stopped, or is still going): the "
        "policy is the one of that step\n"), out.stderr
    assert "return" in out.stdout
    # resumed with a larger --total-steps (config.json rewritten) and killed before its next
    # checkpoint: the final checkpoint of the earlier total is not the run's final one
    import json
    save_checkpoint(run / "checkpoint.pt", ckpt)
    config = json.loads((run / "config.json").read_text())
    config["loop"]["total_steps"] = 2_000_000
    (run / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=rf"checkpoint is at step {ckpt['step']} of "
                                         r"--total-steps 2000000, not its final one"):
        train.load_agent(run)


def test_evaluate_refuses_a_checkpoint_of_another_run_naming_the_difference(tmp_path, capsys):
    """An edited config.json, or another run's checkpoint put in its place: ``agents.evaluate``
    exits 2 naming the field, as ``--resume`` does, not with a traceback from the weights."""
    import json
    import shutil
    gru, mlp = tmp_path / "gru", tmp_path / "mlp"
    train.main(replace_fields(TINY, backbone="gru", d_model=16, run_dir=str(gru)))
    train.main(replace_fields(TINY, backbone="mlp", d_model=16, run_dir=str(mlp)))
    capsys.readouterr()
    edited = tmp_path / "edited"
    shutil.copytree(gru, edited)
    config = json.loads((edited / "config.json").read_text())
    config["model"]["d_model"] = 32
    (edited / "config.json").write_text(json.dumps(config))
    assert evaluate_run([str(edited), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt: checkpoint is of another run: model.d_model is 16 there, 32 in " \
           "this run's config.json" in err and "Traceback" not in err
    config["model"]["d_model"], config["agent"]["gamma"] = 16, 0.5
    (edited / "config.json").write_text(json.dumps(config))
    assert evaluate_run([str(edited), "--episodes", "1"]) == 2
    assert "config.json disagrees with the checkpoint's own record of the run: agent.gamma is " \
           "0.5 in config.json, 0.99 in the checkpoint" in capsys.readouterr().err
    swapped = tmp_path / "swapped"
    shutil.copytree(gru, swapped)
    shutil.copy(mlp / "checkpoint.pt", swapped / "checkpoint.pt")
    assert evaluate_run([str(swapped), "--episodes", "1"]) == 2
    assert "checkpoint is of another run: model.backbone is 'mlp' there, 'gru' in this run's " \
           "config.json" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluate_on_a_missing_cuda_device_says_so_before_reading_the_run(tmp_path, capsys):
    for device, said in [("cuda", "--device cuda was asked for but no CUDA device is available: "
                                  "expected --device cpu"),
                         ("gpu0", "--device must be cpu, cuda or cuda:N, got 'gpu0'"),
                         ("mps", "--device must be cpu, cuda or cuda:N, got 'mps'"),
                         ("meta", "--device must be cpu, cuda or cuda:N, got 'meta'")]:
        with pytest.raises(SystemExit) as e:
            evaluate_main([str(tmp_path / "never-read"), "--device", device])
        assert e.value.code == 2 and said in capsys.readouterr().err
    for flags, said in [(["--seed", "-1"], "--seed must be a non-negative integer (Gymnasium's "
                                           "reset seeds), got -1"),
                        (["--episodes", "0"], "--episodes must be a positive integer, got 0")]:
        with pytest.raises(SystemExit) as e:
            evaluate_main([str(tmp_path / "never-read"), *flags])
        assert e.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_python_api_says_cuda_is_missing_not_that_the_checkpoint_is_corrupt(tmp_path,
                                                                                capsys):
    run = tmp_path / "run"
    train.main(replace_fields(TINY, backbone="gru", run_dir=str(run), eval_episodes=1))
    for call in (lambda: train.load_agent(run, device="cuda"),
                 lambda: evaluate_api(run, episodes=1, seed=0, device="cuda"),
                 lambda: run_rewards(run, episodes=1, seed=0, device="cuda")):
        with pytest.raises(ValueError, match="^device cuda was asked for but no CUDA device is "
                                             "available: expected device cpu$"):
            call()
    for device in ("gpu0", "mps", "meta"):
        with pytest.raises(ValueError, match=rf"^device must be cpu, cuda or cuda:N, got "
                                             rf"'{device}'$"):
            train.load_agent(run, device=device)
    for kwargs, said in [({"seed": -4}, "seed must be a non-negative integer (Gymnasium's reset "
                                        "seeds), got -4"),
                         ({"episodes": 0}, "episodes must be a positive integer, got 0"),
                         ({"episodes": 2.5}, "episodes must be a positive integer, got 2.5")]:
        for fn in (evaluate_api, run_rewards):
            with pytest.raises(ValueError) as e:
                fn(run, **{"episodes": 1, "seed": 0, **kwargs})
            assert str(e.value) == said
    assert train.load_agent(run, device="cpu")[1].model.backbone == "gru"  # the file is fine
    with pytest.raises(CheckpointError, match=r"cannot load checkpoint \S+ \(its digest matches: "
                                              r"the file is as written\) with "
                                              r"map_location='mps': "):
        load_checkpoint(run / "checkpoint.pt", map_location="mps")  # rlkit's own loader
    for path, said in [(run / "config.json", f"{run / 'config.json'} is not a run directory (a "
                                             "file, not a directory)"),
                       (run / "gone", f"{run / 'gone'} is not a run directory (no such "
                                      "directory)")]:
        assert evaluate_run([str(path)]) == 2
        assert said in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # not the current directory
        evaluate_main([""])
    assert e.value.code == 2 and "expected a directory, got ''" in capsys.readouterr().err


def test_eval_policy_target_logs_and_evaluates_the_target_actor(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = replace_fields(TINY, backbone="gru", run_dir=str(run), eval_episodes=2,
                         eval_policy="target")
    result = train.main(cfg)
    record = RunRecord.read(run)
    assert record.loop.eval_policy == "target"
    logged = [r for r in read_metrics(run) if "eval_return_mean" in r][-1]
    assert logged["eval_return_mean"] == result["eval_return_mean"]
    seed = str(eval_env_seed(record.run.seed))
    # the run's own evaluation episodes, with its policy (the target actor) by default
    own = evaluate_main([str(run), "--episodes", "2", "--seed", seed])
    assert own["eval_return_mean"] == pytest.approx(logged["eval_return_mean"], rel=1e-6)
    assert "(target)" in capsys.readouterr().out
    assert evaluate_main([str(run), "--own-episodes"]) == own  # the same two episodes
    target = evaluate_main([str(run), "--own-episodes", "--policy", "target"])
    actor = evaluate_main([str(run), "--own-episodes", "--policy", "actor"])
    assert target == own and actor["eval_return_mean"] != own["eval_return_mean"]
    with pytest.raises(SystemExit):
        evaluate_main([str(run), "--own-episodes", "--seed", "1"])
    assert "give neither --episodes nor --seed with it" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--eval-policy must be actor, target or average, got "
                                         "'best'"):
        replace_fields(TINY, eval_policy="best")
    # this run kept no average of its actor
    assert evaluate_run([str(run), "--own-episodes", "--policy", "average"]) == 2
    said = capsys.readouterr().err
    assert "the policy 'average' evaluates the actor's average, which only --agent.average-tau " \
           "keeps" in said and "--eval-policy" not in said


def test_eval_policy_average_logs_and_evaluates_the_actors_average(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="--eval-policy average evaluates the actor's average, "
                                         "which only --agent.average-tau keeps"):
        replace_fields(TINY, eval_policy="average")
    cfg = replace_fields(TINY, backbone="gru", run_dir=str(run), eval_episodes=2,
                         eval_policy="average", **{"agent.average_tau": 0.05})
    result = train.main(cfg)
    assert RunRecord.read(run).agent["average_tau"] == 0.05
    logged = [r for r in read_metrics(run) if "eval_return_mean" in r][-1]
    assert logged["eval_return_mean"] == result["eval_return_mean"]
    own = evaluate_main([str(run), "--own-episodes"])
    assert own["eval_return_mean"] == pytest.approx(logged["eval_return_mean"], rel=1e-6)
    assert "(average)" in capsys.readouterr().out
    assert evaluate_main([str(run), "--own-episodes", "--policy", "average"]) == own
    for other in ("actor", "target"):
        got = evaluate_main([str(run), "--own-episodes", "--policy", other])
        assert got["eval_return_mean"] != own["eval_return_mean"]


def test_video_without_renderer_is_a_clear_error():
    """MemoryCorridor has no render mode: asking for frames fails with a message that says so
    (it advised MUJOCO_GL and pygame, which cannot help, after a Gymnasium warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RenderError, match=re.escape(
                "'rlkit/MemoryCorridor-v0' does not render frames: its render modes are [] "
                "(its metadata); a video needs a task that renders 'rgb_array'")) as e:
            make_eval_env("rlkit/MemoryCorridor-v0", Path("unused"), imports=("envs",))
    assert "MUJOCO_GL" not in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is None
                    or importlib.util.find_spec("pygame") is None,
                    reason="video needs moviepy and pygame (pip install 'rlkit[video]')")
def test_evaluate_writes_mp4(tmp_path, monkeypatch, capfd):
    run = tmp_path / "run"
    train.main(replace_fields(TINY, run_dir=str(run)))
    monkeypatch.setenv("SDL_VIDEODRIVER", "unset")
    monkeypatch.delenv("SDL_VIDEODRIVER")  # as on a headless machine (put back after the test)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    capfd.readouterr()
    evaluate_main([str(run), "--episodes", "2", "--video"])
    videos = list((run / "videos" / "actor-seed0-2ep").glob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
    assert "XDG_RUNTIME_DIR" not in capfd.readouterr().err  # no display looked for
    evaluate_main([str(run), "--episodes", "1", "--seed", "5", "--video"])  # its own folder
    assert f"videos: ['{run / 'videos' / 'actor-seed5-1ep' / 'eval-episode-0.mp4'}']" in \
        capfd.readouterr().out
    assert len(list((run / "videos" / "actor-seed0-2ep").glob("*.mp4"))) == 2  # kept


def test_threads_per_job_shares_cores_and_respects_omp_num_threads():
    assert threads_per_job(2, cpu_count=8, omp_num_threads="") == 4
    assert threads_per_job(16, cpu_count=8, omp_num_threads="") == 1
    assert threads_per_job(1, cpu_count=8, omp_num_threads="2") == 2  # the user's cap holds
    assert threads_per_job(4, cpu_count=8, omp_num_threads="6") == 2
    assert threads_per_job(1, cpu_count=8, omp_num_threads="3,1") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match=f"OMP_NUM_THREADS.*{bad!r}"):
            threads_per_job(1, cpu_count=8, omp_num_threads=bad)


# ----------------------------------------------------------------------------- faults
TESTS = Path(__file__).resolve().parent
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1",
                  "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}


def _dies(config: int, run_dir: str) -> dict[str, float]:
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def test_a_run_whose_process_dies_is_reported(tmp_path):
    outcomes = launch(_dies, [GridRun("a", 1)], tmp_path, progress=False)
    assert outcomes[0].error == "the run's process died (signal SIGKILL) before it reported"


def _sigterm(config: int, run_dir: str) -> dict[str, float]:
    os.kill(os.getpid(), signal.SIGTERM)  # as a signal passed on before the loop takes it over
    time.sleep(30)
    return {}


def _exits_2(config: int, run_dir: str) -> dict[str, float]:
    os._exit(2)  # an exit code that is not a signal's


def _exits_130(config: int, run_dir: str) -> dict[str, float]:
    os._exit(130)  # as train.py's process does on a SIGINT while its modules load


def test_a_run_stopped_by_a_signal_outside_its_loop_says_so_and_whether_it_has_a_checkpoint(
        tmp_path, request):
    outcomes = launch(_sigterm, [GridRun("a", 1)], tmp_path, progress=False)
    assert outcomes[0].error == ("killed by SIGTERM, a second signal or one outside its "
                                 "training loop; no checkpoint yet: --resume starts it from "
                                 "the beginning")
    assert outcomes[0].stopped
    outcomes = launch(_exits_130, [GridRun("a", 1)], tmp_path / "x", progress=False)
    assert outcomes[0].error.startswith("stopped by SIGINT while it started; no checkpoint")
    assert outcomes[0].stopped
    assert not launch(_dies, [GridRun("a", 1)], tmp_path / "y", progress=False)[0].stopped
    died = launch(_exits_2, [GridRun("a", 1)], tmp_path / "z", progress=False)[0]
    assert not died.stopped and died.error == ("the run's process died (exit code 2) before it "
                                               "reported")

    def interrupted(config, run_dir):
        raise KeyboardInterrupt

    run = tmp_path / "b"
    run.mkdir()
    threads = torch.get_num_threads()  # _run_message sets them, as in a run's own process
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    assert _run_message(interrupted, None, str(run), 1) == ("stopped", (
        "SIGINT outside its training loop; no checkpoint yet: --resume starts it "
        "from the beginning"))
    (run / "checkpoint.pt").write_bytes(b"")
    assert _run_message(interrupted, None, str(run), 1) == (
        "stopped", "SIGINT outside its training loop; its last checkpoint is kept")

    def second(config, run_dir):
        raise KeyboardInterrupt("second SIGTERM: stopping now")

    assert _run_message(second, None, str(run), 1) == (
        "stopped", "second SIGTERM: stopping now; its last checkpoint is kept")

    def in_loop(config, run_dir):
        raise TrainingInterrupted(signal.SIGINT, 7, Path(run_dir) / "checkpoint.pt")

    kind, text = _run_message(in_loop, None, str(run), 1)
    assert kind == "stopped" and text.startswith("interrupted by SIGINT at step 7")
    assert _run_message(lambda c, d: {"r": 1.0}, None, str(run), 1) == ("ok", {"r": 1.0})
    kind, line, details = _run_message(lambda c, d: 1 / 0, None, str(run), 1)
    assert (kind, line) == ("error", "ZeroDivisionError: division by zero")
    assert details.startswith("Traceback") and details.endswith(line)  # a bug: its traceback
    # the grid's last line counts the runs left with a checkpoint to go on from
    outcomes = [RunOutcome("a", tmp_path / "a", error="stopped"), RunOutcome("b", run,
                error="stopped"), RunOutcome("c", tmp_path / "c", result={"r": 1.0})]
    assert str(GridInterrupted(signal.SIGINT, outcomes, tmp_path)) == (
        f"grid interrupted by SIGINT; 2 of 3 runs did not finish (1 of them with a checkpoint "
        f"to go on from, the others start from the beginning); continue with --resume "
        f"{tmp_path}")
    assert "(each with a checkpoint to go on from)" in str(
        GridInterrupted(signal.SIGINT, outcomes[1:], tmp_path))
    assert "(none with a checkpoint: they start from the beginning)" in str(
        GridInterrupted(signal.SIGINT, outcomes[:1], tmp_path))
    assert str(GridInterrupted(signal.SIGINT, outcomes[2:], tmp_path)) == (
        f"grid interrupted by SIGINT; 0 of 1 runs did not finish; continue with --resume "
        f"{tmp_path}")


def test_a_resumed_grid_stopped_again_counts_every_run_of_the_grid(tmp_path, monkeypatch):
    """It counted the runs that invocation launched only: "1 of 1 runs did not finish" for a
    grid of three, two of which had finished before."""
    done = [RunOutcome(n, tmp_path / n, result={"eval_return_mean": 1.0}) for n in ("a", "b")]

    def stopped(fn, runs, grid_dir, *args, **kwargs):
        raise GridInterrupted(signal.SIGINT, [RunOutcome("c", grid_dir / "c", error="stopped")],
                              grid_dir)

    monkeypatch.setattr(cli, "launch", stopped)
    monkeypatch.setattr(cli, "summarize", lambda grid_dir, outcomes: None)
    with pytest.raises(GridInterrupted, match=r"^grid interrupted by SIGINT; 1 of 3 runs did "
                                              r"not finish \(none with a checkpoint"):
        cli._launch_grid(GridConfig(), False, [GridRun("c", TINY)], tmp_path, done)


def _pair() -> tuple[str, int, int]:
    """A faulty env id whose fault fires in the training env of seed 0 only (not in seed 3's,
    nor in either's evaluation env)."""
    a, b = seed_everything(0), seed_everything(3)
    parity = a.env_seed % 2
    assert {b.env_seed % 2, a.eval_env_seed % 2, b.eval_env_seed % 2} == {1 - parity}
    return ("Odd" if parity else "Even"), 0, 3


@pytest.mark.slow
def test_grid_with_a_run_that_fails_before_its_first_evaluation_reports_the_others(tmp_path,
                                                                                   capsys):
    kind, bad, good = _pair()
    grid = tmp_path / "g"
    cfg = replace_fields(TINY, env=f"faulty_envs:rlkit-test/Raise{kind}-v0", grid_dir=str(grid),
                         jobs=2)
    with pytest.raises(RuntimeError, match="1 of 2 runs failed; see above"):
        cli.grid(cfg, ["mlp"], [bad, good])
    err = capsys.readouterr().err
    assert f"mlp__s{bad}: error: EnvError: env rlkit-test/Raise{kind}-v0 raised RuntimeError " \
           "in step at env step 30" in err
    assert f"report: skipped {grid / f'mlp__s{bad}'}: did not finish: EnvError:" in err
    # the env's own traceback follows, as a single run prints it (it was lost in a grid)
    assert f"mlp__s{bad}: the env's traceback:\nTraceback (most recent call last):" in err
    assert "faulty_envs.py" in err and f"mlp__s{good}: the env's traceback" not in err
    md = (grid / "report" / "report.md").read_text()
    assert "| mlp | 1 |" in md and "## Skipped runs" in md and f"mlp__s{bad}" in md


def _wait(what: str, ok, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not ok():
        assert proc.poll() is None, f"the launcher ended before {what}: {proc.returncode}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _kind(run: Path) -> str | None:
    try:
        return load_checkpoint(run / "checkpoint.pt")["kind"]
    except CheckpointError:
        return None


def _holder(run: Path) -> int | None:
    text = (run / "run.lock").read_text() if (run / "run.lock").is_file() else ""
    return int(text.split()[1]) if text.startswith("pid ") else None


@pytest.mark.slow
def test_sigterm_to_the_launcher_checkpoints_the_running_runs_then_reports(tmp_path):
    """Seed 0's env is slow, seed 3's is not: SIGTERM once seed 3 has finished; seed 0 writes
    its interrupt checkpoint, the report covers seed 3 and lists seed 0, exit 143, and the
    stopped run continues with --resume."""
    kind, slow, fast = _pair()
    grid = tmp_path / "g"
    args = [sys.executable, "train.py", "--env", f"faulty_envs:rlkit-test/Slow{kind}-v0",
            "--seed", str(slow), str(fast), "--jobs", "2", "--grid-dir", str(grid),
            *GRID_ARGS, "--total-steps", "1500"]
    proc = subprocess.Popen(args, cwd=ROOT, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait(f"mlp__s{fast} to finish", lambda: _kind(grid / f"mlp__s{fast}") == "final", proc)
        assert _kind(grid / f"mlp__s{slow}") is not None  # going, with its start checkpoint
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    ckpt = load_checkpoint(grid / f"mlp__s{slow}" / "checkpoint.pt")
    assert ckpt["kind"] == "interrupt" and 0 < ckpt["step"] < 1500
    assert f"mlp__s{slow}: stopped: interrupted by SIGTERM" in err
    assert f"report: skipped {grid / f'mlp__s{slow}'}: did not finish:" in err
    assert err.strip().splitlines()[-1].startswith("stopped: grid interrupted by SIGTERM; 1 of 2 "
                                                   "runs did not finish (each with a "
                                                   "checkpoint")
    md = (grid / "report" / "report.md").read_text()
    assert "| mlp | 1 |" in md and f"mlp__s{slow}" in md
    resumed = subprocess.run([sys.executable, "train.py", "--resume", str(grid / f"mlp__s{slow}")],
                             cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _kind(grid / f"mlp__s{slow}") == "final"


@pytest.mark.slow
def test_runs_of_a_launcher_killed_by_sigkill_checkpoint_and_end(tmp_path):
    grid = tmp_path / "g"
    args = [sys.executable, "train.py", "--env", "faulty_envs:rlkit-test/Slow-v0", "--seed",
            "0", "1", "--jobs", "2", "--grid-dir", str(grid), *GRID_ARGS, "--total-steps",
            "100000"]
    proc = subprocess.Popen(args, cwd=ROOT, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    runs = [grid / "mlp__s0", grid / "mlp__s1"]
    try:
        _wait("both runs to start", lambda: all(_kind(r) and _holder(r) for r in runs), proc)
        pids = [_holder(r) for r in runs]
        proc.kill()  # SIGKILL: nothing is passed on
        proc.wait()
        deadline = time.time() + 120
        for pid in pids:
            while _alive(pid):
                assert time.time() < deadline, f"run process {pid} outlived its launcher"
                time.sleep(0.2)
    finally:
        proc.kill()
    for run in runs:
        assert _kind(run) == "interrupt"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_stopped_grid_continues_with_resume_grid_dir(tmp_path):
    """One run at a time: SIGTERM during the first run; --resume GRID continues it from its
    checkpoint (to the same end as an uninterrupted run) and starts the one never started."""
    grid = tmp_path / "g"
    args = [sys.executable, "train.py", "--env", "faulty_envs:rlkit-test/Slow-v0", "--seed", "0",
            "1", "--jobs", "1", "--grid-dir", str(grid), *GRID_ARGS, "--total-steps", "300"]
    proc = subprocess.Popen(args, cwd=ROOT, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait("the first run to log", lambda: (grid / "mlp__s0" / "metrics.jsonl").is_file()
              and (grid / "mlp__s0" / "metrics.jsonl").stat().st_size > 0, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "mlp__s1: stopped: not started: the grid was stopped by SIGTERM; no checkpoint yet: " \
           "--resume starts it from the beginning" in err
    assert "report: none written (no run finished)" in err
    assert _kind(grid / "mlp__s0") == "interrupt" and not (grid / "mlp__s1").exists()
    out = subprocess.run([sys.executable, "train.py", "--resume", str(grid), "--jobs", "2"],
                         cwd=ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resuming grid" in out.stderr and "0 runs finished, 2 to go" in out.stderr
    assert _kind(grid / "mlp__s0") == _kind(grid / "mlp__s1") == "final"
    assert "| mlp | 2 |" in (grid / "report" / "report.md").read_text()
    again = subprocess.run([sys.executable, "train.py", "--resume", str(grid)], cwd=ROOT,
                           env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "2 runs finished, 0 to go" in again.stderr, again.stderr
    cfg = cli.read_manifest(grid)["mlp__s0"]
    train.main(replace_fields(cfg, run_dir=str(tmp_path / "whole"), progress=False))
    timing = ("wall_time", "sps", "updates_per_s", "peak_memory_mb")
    assert [{k: v for k, v in r.items() if k not in timing} for r in read_metrics(grid / "mlp__s0")
            ] == [{k: v for k, v in r.items() if k not in timing}
                  for r in read_metrics(tmp_path / "whole")]


def test_resume_of_a_grid_run_that_never_started_names_the_grids_resume(tmp_path):
    """A grid stopped before one of its runs started leaves no directory for it (or one with
    only its lock): ``--resume GRID/NAME`` said "no such run directory" (or "start it again
    with the same --run-dir"); it now names ``--resume GRID``. A name the grid does not list is
    still no such directory."""
    grid = tmp_path / "g"
    cli.write_manifest(grid, [GridRun("mlp__s0", TINY), GridRun("mlp__s1", TINY)])
    (grid / "mlp__s0").mkdir()
    (grid / "mlp__s0" / "run.lock").touch()  # what a run stopped before its config.json leaves
    for name in ("mlp__s0", "mlp__s1"):
        with pytest.raises(ValueError, match=rf"--resume {re.escape(str(grid))}/{name}: run "
                                             rf"{name} of the grid {re.escape(str(grid))} has "
                                             rf"no config.json: it never started, .*; once the "
                                             rf"grid has stopped, --resume "
                                             rf"{re.escape(str(grid))} starts it and continues"):
            cli.cli(["--resume", str(grid / name)])
    with pytest.raises(ValueError, match=r"/mlp__s7: no such run directory"):
        cli.cli(["--resume", str(grid / "mlp__s7")])
    assert sorted(p.name for p in grid.iterdir()) == ["grid.json", "mlp__s0"]


def test_resume_of_a_grid_refuses_flags_that_would_change_its_runs(tmp_path):
    grid = tmp_path / "g"
    cli.write_manifest(grid, [GridRun("mlp__s0", TINY)])
    for flags in (["--batch-size", "64"], ["--eval-every", "7"], ["--backbone", "gru"]):
        with pytest.raises(ValueError, match=r"--resume \S+ \(a grid\) takes only the grid "
                                             r"flags \(--jobs, --launcher, ...\) and "
                                             r"--total-steps, --checkpoint-every"):
            cli.cli(["--resume", str(grid), *flags])
    # typed at the package default, a flag is still given (and refused), not ignored
    for flags, named in ((["--backbone", "mlp"], "--backbone"), (["--env=Pendulum-v1"], "--env"),
                         (["--agent.gamma", "0.99", "--batch-size", "256"],
                          "--batch-size, --agent.gamma")):
        with pytest.raises(ValueError, match=rf"--checkpoint-minutes, --drop-nonfinite, "
                                             rf"--progress \(got {named}\); every run keeps"):
            cli.cli(["--resume", str(grid), *flags])
    assert cli.read_manifest(grid) == {"mlp__s0": TINY}


def test_resume_of_a_grid_takes_the_recipe_its_runs_were_made_with(tmp_path, monkeypatch):
    grid = tmp_path / "g"
    made = cli.parse_config(["--env", "rlkit/Pendulum-V-v0", "--backbone", "gru"])
    plain = cli.parse_config(["--env", "rlkit/Pendulum-V-v0", "--backbone", "mlp",
                              "--recipe", "none"])
    assert (made.run.recipe, plain.run.recipe) == ("pendulum-pomdp", "none")
    cli.write_manifest(grid, [GridRun("gru__s0", made), GridRun("mlp__s0", plain)])
    launched = []
    monkeypatch.setattr(cli, "_launch_grid", lambda g, progress, runs, grid_dir, done: (
        launched.append([r.name for r in runs]), grid_dir)[1])
    with pytest.raises(ValueError, match=r"--recipe auto: runs of the grid were made with "
                                         r"another recipe \(mlp__s0 with 'none'\); every run "
                                         r"keeps its own: give no --recipe, or the runs' own"):
        cli.cli(["--resume", str(grid), "--recipe", "auto"])
    with pytest.raises(ValueError, match=r"unknown --recipe 'bogus'; expected auto, none or one "
                                         r"of memory-corridor-100, memory-corridor-20, "
                                         r"pendulum-pomdp"):
        cli.cli(["--resume", str(grid), "--recipe", "bogus"])
    cli.write_manifest(grid, [GridRun("gru__s0", made)])
    cli.cli(["--resume", str(grid), "--recipe", "auto"])  # as the runs were started
    cli.cli(["--resume", str(grid), "--recipe", "pendulum-pomdp", "--total-steps", "40000"])
    assert launched == [["gru__s0"], ["gru__s0"]]
    with pytest.raises(ValueError, match=r"--recipe none: runs of the grid were made with "
                                         r"another recipe \(gru__s0 with 'pendulum-pomdp'\)"):
        cli.cli(["--resume", str(grid), "--recipe", "none"])
    assert cli.read_manifest(grid) == {"gru__s0": made}
    # a grid configured from Python records 'auto' and applied no recipe: --recipe none is its own
    cli.write_manifest(tmp_path / "py", [GridRun("mlp__s0", TINY)])
    cli.cli(["--resume", str(tmp_path / "py"), "--recipe", "none"])
    cli.cli(["--resume", str(tmp_path / "py"), "--recipe", "auto"])  # none made for Pendulum-v1
    assert launched[2:] == [["mlp__s0"], ["mlp__s0"]]


def test_a_grid_extension_stopped_early_goes_on_to_its_new_end(tmp_path, monkeypatch, capsys):
    """``--resume GRID --total-steps N`` stopped before some runs started their extension: the
    plain ``--resume GRID`` that the stop message names kept those at the old end (their
    ``config.json`` still had it) while the others went on to N. The grid now keeps N in
    ``grid.json``, and a later ``--resume GRID`` without it takes every run at least to N; a
    run resumed on its own to a further end keeps its own."""
    grid = tmp_path / "g"
    cli.cli(["--env", "Pendulum-v1", "--seed", "0", "1", "--jobs", "1", "--grid-dir", str(grid),
             *GRID_ARGS])
    launched = []

    def ends(runs):  # the --total-steps each resumed run is given ("own": its config's)
        return {r.name: r.config.cfg.loop.total_steps if "total_steps" in r.config.given
                else "own" for r in runs}
    monkeypatch.setattr(cli, "_launch_grid", lambda g, progress, runs, grid_dir, done: (
        launched.append(ends(runs)), grid_dir)[1])
    cli.cli(["--resume", str(grid), "--total-steps", "200", "--checkpoint-every", "50"])
    assert json.loads((grid / "grid.json").read_text())["resume"] == {"total_steps": 200}
    capsys.readouterr()
    cli.cli(["--resume", str(grid)])  # as if the first had stopped before either run started
    assert launched == [{"mlp__s0": 200, "mlp__s1": 200}] * 2
    assert f"resuming grid {grid}: every run to --total-steps 200 at least, as its last resume " \
           "gave" in capsys.readouterr().err
    # a run resumed on its own to a further end (and stopped on the way) keeps its own end
    config = json.loads((grid / "mlp__s1" / "config.json").read_text())
    config["loop"]["total_steps"] = 300  # as its own --resume writes it
    (grid / "mlp__s1" / "config.json").write_text(json.dumps(config))
    cli.cli(["--resume", str(grid)])
    assert launched[-1] == {"mlp__s0": 200, "mlp__s1": "own"}
    cli.cli(["--resume", str(grid), "--total-steps", "250"])  # a new end replaces the kept one
    assert cli.recorded_total_steps(grid) == 250 and launched[-1] == {"mlp__s0": 250,
                                                                      "mlp__s1": 250}
    with pytest.raises(ValueError, match=r"--total-steps 100: runs of the grid are past it"):
        cli.cli(["--resume", str(grid), "--total-steps", "100"])
    data = json.loads((grid / "grid.json").read_text())
    for bad in ({"total_steps": "400"}, {"total_steps": None}, {"total_steps": 300, "x": 1}, 7):
        data["resume"] = bad
        (grid / "grid.json").write_text(json.dumps(data))
        with pytest.raises(RunDirError, match=re.escape(
                f"grid.json: expected resume to be {{\"total_steps\": N}} with N an integer >= "
                f"1 (what a --resume of the grid with --total-steps writes), got {bad!r}")):
            cli.cli(["--resume", str(grid)])


def test_resume_of_a_grid_refuses_a_total_steps_below_its_runs(tmp_path):
    """As a single run's resume does: a run does not go back (a run kept as finished at a
    smaller --total-steps would otherwise pass silently)."""
    grid = tmp_path / "g"
    cli.write_manifest(grid, [GridRun("mlp__s0", TINY), GridRun("mlp__s1", TINY),
                              GridRun("mlp__s2", TINY)])
    for name, step in (("mlp__s0", 3500), ("mlp__s1", 2000)):  # mlp__s2 never started
        (grid / name).mkdir()
        (grid / name / "metrics.jsonl").write_text(
            "".join(f'{{"step": {s}, "wall_time": 1.0}}\n' for s in range(500, step + 1, 500)))
    with pytest.raises(ValueError, match=r"--total-steps 1000: runs of the grid are past it "
                                         r"\(mlp__s0 at step 3500, mlp__s1 at step 2000\); a run "
                                         r"does not go back: expected --total-steps at least "
                                         r"3500"):
        cli.cli(["--resume", str(grid), "--total-steps", "1000"])
    cli._refuse_going_back(grid, ["mlp__s0", "mlp__s1", "mlp__s2"], 3500)  # at it: kept


def _grid_of_two(grid: Path, launcher: str = "local") -> None:
    """Two tiny MLP runs (seeds 0, 1) in ``grid``, to their 150 steps."""
    cli.grid(replace_fields(TINY, grid_dir=str(grid), launcher=launcher, jobs=2), ["mlp"], [0, 1])
    assert all(read_metrics(grid / n)[-1]["step"] == 150 for n in ("mlp__s0", "mlp__s1"))


def test_a_moved_grid_resumes_from_wherever_it_is_and_however_its_path_is_written(
        tmp_path, monkeypatch):
    """``--resume GRID`` failed for every started run unless GRID was written as the grid's
    ``--grid-dir`` had been (moved, copied, relative against absolute, another working
    directory): each run was refused for a --run-dir other than its recorded one."""
    _grid_of_two(tmp_path / "g")
    (tmp_path / "g").rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    cli.cli(["--resume", "moved", "--total-steps", "200", "--jobs", "2"])
    for name in ("mlp__s0", "mlp__s1"):
        assert read_metrics(tmp_path / "moved" / name)[-1]["step"] == 200
        assert load_checkpoint(tmp_path / "moved" / name / "checkpoint.pt")["kind"] == "final"
        assert RunRecord.read(tmp_path / "moved" / name).run.run_dir == f"moved/{name}"
    cli.cli(["--resume", str(tmp_path / "moved"), "--total-steps", "250"])  # absolute
    assert read_metrics(tmp_path / "moved" / "mlp__s1")[-1]["step"] == 250


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed (pip install 'rlkit[ray]')")
@pytest.mark.slow
def test_a_ray_grid_records_where_its_runs_are_and_resumes_on_ray(tmp_path):
    """A Ray run's config.json named the worker's scratch directory, and ``--resume GRID``
    refused every run of a Ray grid (the worker had no copy of the run to continue)."""
    grid = tmp_path / "g"
    _grid_of_two(grid, "ray")
    assert RunRecord.read(grid / "mlp__s0").run.run_dir == str(grid / "mlp__s0")
    busy = RunLock(grid / "mlp__s1").acquire()  # another process resumes this one meanwhile
    before = (grid / "mlp__s1" / "checkpoint.pt").read_bytes()
    with pytest.raises(RuntimeError, match="1 of 2 runs failed"):
        cli.cli(["--resume", str(grid), "--total-steps", "200", "--launcher", "ray"])
    busy.release()
    assert (grid / "mlp__s1" / "checkpoint.pt").read_bytes() == before  # left to its holder
    cli.cli(["--resume", str(grid), "--total-steps", "200", "--launcher", "ray", "--jobs", "2"])
    for name in ("mlp__s0", "mlp__s1"):
        rows = read_metrics(grid / name)
        assert [r["step"] for r in rows if "critic_loss" in r] == [50, 100, 150, 200]
        run = RunRecord.read(grid / name).run
        assert run.run_dir == run.resume == str(grid / name)  # not the worker's scratch
        assert load_checkpoint(grid / name / "checkpoint.pt")["step"] == 200


def _appends(config: int, run_dir: str) -> dict[str, float]:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with (Path(run_dir) / "log.txt").open("a") as f:
        f.write(f"run {config}\n")
    return {"x": 1.0}


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
@pytest.mark.slow
def test_a_ray_grid_ships_run_files_within_its_budget(tmp_path, monkeypatch):
    """A Ray grid read every run's files (a resumed run's checkpoints, replay included) into
    the driver before any task started; now tasks wait while those in flight hold
    ``SHIP_BYTES``, and runs without files are all submitted at once."""
    from ray import cloudpickle

    import rlkit.launch as launch_module
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    runs = [GridRun(n, i) for i, n in enumerate("abc")]
    events = []
    read, write = launch_module._run_files, launch_module._write_files
    monkeypatch.setattr(launch_module, "_run_files", lambda d: (
        events.append(f"read {d.name}"), read(d))[1])
    monkeypatch.setattr(launch_module, "_write_files", lambda d, f: (
        events.append(f"write {d.name}"), write(d, f))[1])
    launch(_appends, runs, tmp_path, "ray", jobs=3, progress=False)  # new: no files to hold
    assert events[:3] == ["read a", "read b", "read c"]
    events.clear()
    monkeypatch.setattr(launch_module, "SHIP_BYTES", 1)  # each run's files are over it
    outcomes = launch(_appends, runs, tmp_path, "ray", jobs=3, progress=False)
    assert [o.error for o in outcomes] == [None, None, None]
    assert events == ["read a", "write a", "read b", "write b", "read c", "write c"]
    assert [(tmp_path / n / "log.txt").read_text() for n in "abc"] == [
        f"run {i}\nrun {i}\n" for i in range(3)]  # shipped out and back


def _logs_then_fails(config: int, run_dir: str) -> dict[str, float]:
    Path(run_dir).mkdir(parents=True)
    (Path(run_dir) / "metrics.jsonl").write_text('{"step": 10, "wall_time": 1.0}\n')
    raise ValueError(f"run {config} diverged")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
@pytest.mark.slow
def test_a_failed_ray_run_brings_back_what_it_wrote(tmp_path):
    """A run failing on a Ray worker lost its directory (its checkpoints, its log) with the
    worker's scratch space; it comes back as a local run's stays."""
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    (tmp_path / "b" / "metrics.jsonl").mkdir(parents=True)  # where its file cannot go
    a, b = launch(_logs_then_fails, [GridRun("a", 1), GridRun("b", 2)], tmp_path, "ray",
                  jobs=2, progress=False)
    assert a.error == "ValueError: run 1 diverged"
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == '{"step": 10, "wall_time": 1.0}\n'
    assert b.error.startswith("ValueError: run 2 diverged (and what it wrote did not come "
                              "back: IsADirectoryError: ")  # said, not lost silently


def _steps_until_stopped(started: str, run_dir: str) -> dict[str, float]:
    """A run that marks its start at ``started``, then steps as a training loop does (in
    ``stop_signals``) and, once stopped, writes its checkpoint and raises as the loop does."""
    from rlkit.faults import stop_signals

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with stop_signals() as stop:
        Path(started).touch()
        for step in range(1, 1200):
            time.sleep(0.1)
            if stop.signum is not None:
                path = Path(run_dir) / "checkpoint.pt"
                path.write_bytes(b"step %d" % step)
                raise TrainingInterrupted(stop.signum, step, path)
    return {"steps": 1200.0}


def _ignores_a_stop(started: str, run_dir: str) -> dict[str, float]:
    """A run that marks its start at ``started`` and ignores SIGINT (a run stuck where no
    stop reaches it)."""
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    Path(started).touch()
    time.sleep(120)
    return {"steps": 1.0}


@contextlib.contextmanager
def _interrupt_once_started(started: list[Path], times: int = 1,
                            signum: int = signal.SIGINT) -> Iterator[None]:
    """``signum`` to this process ``times`` times, a second apart, once a run has marked its
    start (the launcher's handler is in place then), within the block only: a signal not yet
    sent when the block ends is not sent (it would stop a later test)."""
    import threading

    end = threading.Event()

    def interrupt() -> None:
        deadline = time.time() + 120
        while not any(p.exists() for p in started) and time.time() < deadline:
            if end.wait(0.1):
                return
        for _ in range(times):
            if end.is_set():
                return
            os.kill(os.getpid(), signum)
            end.wait(1.0)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    try:
        yield
    finally:
        end.set()
        thread.join()


def _records_its_time(log: str, run_dir: str) -> dict[str, float]:
    """A run that writes when it started and ended (clock seconds) to ``log``."""
    start = time.time()
    time.sleep(3.0)
    Path(log).write_text(f"{start} {time.time()}")
    return {"steps": 1.0}


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
@pytest.mark.slow
def test_a_ray_grid_runs_no_more_tasks_than_its_cpus_while_its_stop_is_watched(tmp_path):
    """Each task waits for its grid's stop without blocking in Ray: a task blocked in
    ``ray.get`` or ``ray.wait`` has its CPU lent to another task, so a 1-CPU grid whose tasks
    polled the stop that way ran two runs at once. Here the two runs follow each other."""
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    outcomes = launch(_records_its_time, [GridRun("a", str(logs[0])), GridRun("b", str(logs[1]))],
                      tmp_path / "g", "ray", jobs=1, progress=False)
    assert [o.error for o in outcomes] == [None, None]
    (s0, e0), (s1, e1) = sorted(tuple(map(float, p.read_text().split())) for p in logs)
    assert e0 - s0 >= 3.0 and s1 >= e0, (s0, e0, s1, e1)


def _returns_at_once(config: str, run_dir: str) -> dict[str, float]:
    return {"steps": 1.0}


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
@pytest.mark.slow
def test_a_ray_grid_longer_than_its_stop_box_serves_at_once_still_stops(tmp_path, monkeypatch):
    """Each task's call that awaits the stop is withdrawn when the task ends: kept, the calls
    of finished tasks filled the stop box (it serves ``BOX_CALLS`` at once), and a later run
    waited for it at its start and then trained on through the stop."""
    from ray import cloudpickle

    import rlkit.launch
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(rlkit.launch, "BOX_CALLS", 2)
    started = tmp_path / "e.started"
    runs = [GridRun(n, "") for n in "abcd"] + [GridRun("e", str(started))]

    def fn(config: str, run_dir: str) -> dict[str, float]:  # "": a run that ends at once
        return (_steps_until_stopped if config else _returns_at_once)(config, run_dir)

    with _interrupt_once_started([started]), pytest.raises(GridInterrupted) as e:
        launch(fn, runs, tmp_path / "g", "ray", jobs=1, progress=False)
    errors = {o.name: o.error for o in e.value.outcomes}
    assert [errors[n] for n in "abcd"] == [None] * 4  # all four ran before "e" started
    assert re.fullmatch(r"stopped by SIGINT at step \d+; its last checkpoint is kept",
                        errors["e"]), errors["e"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
@pytest.mark.slow
def test_a_second_signal_to_a_ray_grid_cancels_its_running_tasks(tmp_path):
    """A run that does not stop on the first signal is cancelled by the second, and says so;
    a run still waiting for the grid's one CPU is cancelled too, and said not to have
    started (it was said to have left what it wrote in its worker)."""
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = [tmp_path / "a.started", tmp_path / "b.started"]
    with _interrupt_once_started(started, times=2), pytest.raises(GridInterrupted) as e:
        launch(_ignores_a_stop, [GridRun(p.stem, str(p)) for p in started], tmp_path / "g",
               "ray", jobs=1, progress=False)
    ran = "a" if started[0].exists() else "b"
    assert [p.exists() for p in started].count(True) == 1
    errors = {o.name: o.error for o in e.value.outcomes}
    assert errors.pop(ran) == ("cancelled by a second SIGINT (what it wrote since it started "
                               "stays in its worker's temporary directory); no checkpoint "
                               "yet: --resume starts it from the beginning")
    assert list(errors.values()) == ["not started: cancelled by a second SIGINT; no "
                                     "checkpoint yet: --resume starts it from the beginning"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_a_ray_grid_stops_its_runs_and_brings_back_their_checkpoints(tmp_path,
                                                                                  signum):
    """SIGINT to a Ray grid's driver ended the driver and every task with it: a running run's
    progress was lost with its worker's scratch directory. The signal now reaches the running
    run, which checkpoints and stops as a local one does; its files come back; a run that had
    not started does not start; ``launch`` raises GridInterrupted, as for a local grid. (Ray's
    workers block SIGINT and exit on SIGTERM: the stop reaches the loop's flag, not a
    handler.)"""
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = [tmp_path / "a.started", tmp_path / "b.started"]
    grid, name = tmp_path / "g", signal.Signals(signum).name
    sigterm = signal.getsignal(signal.SIGTERM)
    with _interrupt_once_started(started, signum=signum), pytest.raises(
            GridInterrupted, match=rf"^grid interrupted by {name}; 2 of 2 runs did not "
                                   r"finish") as e:
        launch(_steps_until_stopped, [GridRun("a", str(started[0])),
                                      GridRun("b", str(started[1]))], grid, "ray", jobs=1,
               progress=False)
    assert signal.getsignal(signal.SIGTERM) is sigterm  # not the one ray.init put in place
    errors = {o.name: o.error for o in e.value.outcomes}
    stopped = rf"stopped by {name} at step \d+; its last checkpoint is kept"
    first = "a" if re.fullmatch(stopped, errors["a"]) else "b"
    second = "b" if first == "a" else "a"
    assert re.fullmatch(stopped, errors[first])
    assert (grid / first / "checkpoint.pt").read_bytes().startswith(b"step ")
    # one CPU: the other waited, and did not start; one that starts while the stop is passed
    # on stops at its first steps, with a checkpoint, as a run still starting does
    if errors[second].startswith("not started"):
        assert errors[second] == (f"not started: the grid was stopped by {name}; no "
                                  f"checkpoint yet: --resume starts it from the beginning")
        assert not (grid / second / "checkpoint.pt").exists()
    else:
        assert re.fullmatch(stopped, errors[second])
        assert int(errors[second].split(" at step ")[1].split(";")[0]) <= 20


@pytest.mark.parametrize("episodes", [0, -1, 2.0, True])
def test_evaluating_no_episode_is_refused_by_name(episodes):
    import gymnasium as gym

    from rlkit.evaluate import evaluate

    env = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match=f"episodes must be an integer >= 1, got {episodes!r}"):
        evaluate(None, env, episodes, torch.device("cpu"), seed=0)  # before the policy is used
    env.close()


def test_a_cuda_index_this_machine_does_not_have_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert parse_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"^--device cuda:1 was asked for but this machine has 1 "
                                         r"CUDA device\(s\): expected an index below 1$"):
        parse_device("cuda:1")


def test_the_progress_bar_counts_a_stopped_run_neither_done_nor_failed():
    """A run stopped by SIGINT goes on when the grid is resumed: the bar showed it as done and
    failed (``2/2, failed=1``)."""
    import io

    from tqdm import tqdm

    from rlkit.launch import RunOutcome, _finish

    # as launch keeps them: every run of the grid, filled in as each one ends
    bar, outcomes = tqdm(total=4, file=io.StringIO()), {n: RunOutcome(n, Path(n)) for n in "abcd"}
    outcomes["a"].result = {}
    _finish(bar, outcomes)
    assert bar.n == 1 and bar.postfix == "failed=0"
    outcomes["b"].error = "ValueError: bad"
    _finish(bar, outcomes)
    assert bar.n == 2 and bar.postfix == "failed=1"
    outcomes["c"].error, outcomes["c"].stopped = "stopped: interrupted by SIGINT", True
    _finish(bar, outcomes)
    assert bar.n == 2 and bar.postfix == "failed=1, stopped=1"
