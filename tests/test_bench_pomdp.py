"""bench/pomdp.py: its flags, and ``--resume`` of an interrupted grid (cli.resume_runs)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import faulty_envs
import pytest
import torch

from agents import cli, train
from agents.ddpg import DDPGConfig
from envs.reference import PendulumOptimum, optimum_rewards
from rlkit.checkpoint import load_checkpoint, save_checkpoint
from rlkit.config import replace_fields
from rlkit.launch import GridInterrupted, GridRun, RunOutcome
from rlkit.runlog import read_metrics
from rlkit.seeding import eval_env_seed

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("bench_pomdp", ROOT / "bench" / "pomdp.py")
pomdp = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(pomdp)

TINY = replace_fields(train.TrainConfig(), total_steps=60, learning_starts=20, batch_size=8,
                      eval_every=0, eval_episodes=1, log_every=20, progress=False, d_model=16,
                      device="cpu", buffer_size=1000, agent=DDPGConfig(head_hidden=(16,)))


@pytest.mark.parametrize("argv, named", [
    (["--common-episodes", "-1"], "--common-episodes must be >= 0, got -1"),
    (["--resume"], "--resume continues the grid in --out DIR"),
    (["--resume", "--out", "x", "--summarize", "x"], "give --out, not --summarize"),
    (["--final-policy", "target", "--last-k", "2"], "it needs --last-k 1, got 2"),
    (["--gap", "-5"], "--gap must be a positive number of steps (0: no gap table), got -5"),
    (["--env", "rlkit/HalfCheetah-V-v0", "--gap", "25"],
     "--gap 25 needs the full-state optimum: a Pendulum task without --no-reference, got --env "
     "rlkit/HalfCheetah-V-v0"),
    (["--gap", "25", "--no-reference"], "got --env rlkit/Pendulum-V-v0 --no-reference"),
    (["--summarize", ""], "argument --summarize: expected a directory, got ''"),
    (["--out", " "], "argument --out: expected a directory, got ' '"),
    (["--summarize", "no/such/grid"], "--summarize no/such/grid: no such directory"),
    (["--summarize", str(ROOT / "pyproject.toml")],
     f"--summarize {ROOT / 'pyproject.toml'}: a file, not a grid directory"),
    # train.py flags that would win over what the grid sets for each run (a GRU filed as mlp)
    (["--backbones", "mlp", "rnn", "--", "--backbone", "gru"],
     "--backbone after --: the grid sets each run's backbone itself (its runs are named by "
     "backbone and seed); give this script's --backbones before --"),
    (["--seeds", "0", "1", "--", "--seed=7"], "--seed=7 after --: the grid sets each run's "
     "seed itself"),
    (["--", "--total-steps", "10", "--env", "Pendulum-v1"], "give this script's --env before --"),
    (["--", "--run_dir", "x"], "give this script's --out before --"),
    (["--", "--resume", "x"], "give this script's --out DIR --resume before --"),
    (["--", "--launcher", "ray"], "a grid on a Ray cluster is train.py's"),
    # checked before the grid trains (they failed after it, or never)
    (["--common-seed", "-1"], "--common-seed must be >= 0 (Gymnasium's reset seeds), got -1"),
    (["--at", "100", "0"], "--at must be env steps >= 1, got 0"),
    (["--seeds", "0", "-1"], "--seeds must be integers >= 0, got -1"),
    (["--seeds", "0", "0"], "--seeds names 0 more than once, got 0 0; expected each value once"),
    (["--backbones", "gru", "gru"], "--backbones names gru more than once"),
    (["--at", "100", "100"], "--at names 100 more than once"),
    (["--anchor", "pomdp-baselines", "--env", "rlkit/Pendulum-P-v0"],
     "--anchor pomdp-baselines runs on rlkit/Pendulum-V-v0 (their published task), got --env "
     "rlkit/Pendulum-P-v0; leave --env out"),
    (["--summarize", str(ROOT), "--out", "x"], "--summarize reads the grid in its DIR and "
     "trains nothing"),
    (["--final-policy", "average", "--seeds", "0"], "--final-policy average reads each run's "
     "average of the actor; mlp__s0"),
    # an abbreviation of a flag was taken for it (--seed 1 for --seeds 1), and then ignored
    (["--seed", "1"], "unrecognized arguments: --seed 1"),
])
def test_bad_flags_are_refused_with_the_value_named(monkeypatch, capsys, argv, named):
    monkeypatch.setattr(sys, "argv", ["pomdp.py", *argv])
    monkeypatch.setattr(pomdp, "_run_grid", lambda *a, **k: pytest.fail("a grid was started"))
    with pytest.raises(SystemExit) as e:
        pomdp.main()
    assert e.value.code == 2 and named in capsys.readouterr().err


def test_a_bad_training_flag_points_to_the_help_that_lists_it(monkeypatch, capsys, tmp_path):
    """A flag after ``--`` is train.py's: its refusal pointed to ``pomdp.py --help``, which
    lists only the script's own flags; and it left an empty temporary grid directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--seeds", "0", "--", "--bogus", "1"])
    monkeypatch.setattr(pomdp, "_run_grid", lambda *a, **k: pytest.fail("a grid was started"))
    with pytest.raises(SystemExit) as e:
        pomdp.main()
    said = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert e.value.code == 2 and "Unrecognized options: --bogus" in said
    assert "run train.py --help" in said, said
    assert list(tmp_path.glob("rlkit-pomdp-*")) == []


def test_a_grid_in_a_temp_dir_prints_a_resume_command_that_names_it(tmp_path, monkeypatch,
                                                                    capsys):
    """Without --out, the command printed on a stop left out the temp dir, and --resume without
    --out is refused; the temp grid also had no record, so its --resume was not checked."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def stopped(fn, todo, out, jobs):
        raise GridInterrupted(signal.SIGINT, [RunOutcome(r.name, out / r.name, error="stopped")
                                              for r in todo], out)
    monkeypatch.setattr(pomdp, "launch", stopped)
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--backbones", "mlp", "--seeds", "0", "--",
                                      "--total-steps", "300"])
    with pytest.raises(SystemExit) as e:
        pomdp.main()
    (grid,) = tmp_path.glob("rlkit-pomdp-*")
    err = capsys.readouterr().err
    assert e.value.code == 130 and "1 of 1 runs did not finish" in err
    assert f"continue with: python bench/pomdp.py --backbones mlp --seeds 0 --out {grid} " \
           "--resume -- --total-steps 300" in err
    assert json.loads((grid / "bench.json").read_text())["flags"] == ["--total-steps", "300"]
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--out", str(tmp_path / "none"), "--resume"])
    with pytest.raises(SystemExit) as e:  # --resume of a grid that is not there
        pomdp.main()
    assert e.value.code == 2 and "no grid there to continue (the directory is missing)" in \
        capsys.readouterr().err


def test_a_grid_with_a_failed_run_prints_its_traceback_and_exits_2(tmp_path, monkeypatch,
                                                                   capsys):
    """It exited 0, with the failure only in 'runs left out of their row' and no traceback."""
    monkeypatch.setattr(pomdp, "_run_grid", lambda runs, out, *a: [
        RunOutcome(r.name, out / r.name, error="EnvError: the simulator diverged",
                   details="Traceback: in step") for r in runs])
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--backbones", "mlp", "--seeds", "3",
                                      "--no-reference", "--out", str(tmp_path / "g")])
    with pytest.raises(SystemExit) as e:
        pomdp.main()
    out, err = capsys.readouterr()
    assert e.value.code == 2 and "runs left out of their row: mlp__s3 (EnvError" in out
    assert "mlp__s3: the env's traceback:\nTraceback: in step" in err
    assert "error: 1 of 1 runs failed: mlp__s3" in err


def test_an_unknown_env_is_refused_before_out_is_written(tmp_path, monkeypatch, capsys):
    """It wrote ``--out``'s record, then failed with a traceback; the record then refused the
    corrected command, with or without ``--resume``."""
    out = tmp_path / "grid"
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--env", "rlkit/Pendulum-X-v0", "--out",
                                      str(out)])
    monkeypatch.setattr(pomdp, "_run_grid", lambda *a, **k: pytest.fail("a grid was started"))
    with pytest.raises(SystemExit) as e:
        pomdp.main()
    assert e.value.code == 2 and "--env rlkit/Pendulum-X-v0: unknown env id " \
        "'rlkit/Pendulum-X-v0'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_resume_keeps_finished_runs_continues_interrupted_ones_and_starts_missing_ones(
        tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.main(replace_fields(TINY, run_dir=str(tmp_path / "finished")))
    finally:
        torch.set_num_threads(threads)
    # a run killed (SIGKILL) at step 250 of 400, after a checkpoint at 200
    env = {**os.environ, "OMP_NUM_THREADS": "1", faulty_envs.KILL_AT_ENV: "250",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "train.py", "--env", "faulty_envs:rlkit-test/Kill-v0", "--total-steps",
         "400", "--learning-starts", "100", "--batch-size", "8", "--eval-every", "0",
         "--checkpoint-every", "100", "--no-progress", "--d-model", "16", "--device", "cpu",
         "--run-dir", str(tmp_path / "killed")], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env=env)
    assert out.returncode == -signal.SIGKILL, out.stderr

    runs = [GridRun(n, replace_fields(TINY, seed=i))
            for i, n in enumerate(["finished", "killed", "missing"])]
    done, todo = cli.resume_runs(tmp_path, runs)
    assert [o.name for o in done] == ["finished"]
    assert done[0].result == [r for r in read_metrics(tmp_path / "finished")
                              if "eval_return_mean" in r][-1]
    assert [r.name for r in todo] == ["killed", "missing"]
    assert todo[0].config == train.Resumed(
        replace_fields(train.TrainConfig(), resume=str(tmp_path / "killed")), ())
    assert todo[1].config is runs[2].config  # never started: starts as given
    default = train.TrainConfig().loop.total_steps  # given at its default, it still applies
    done, todo = cli.resume_runs(tmp_path, runs, {"total_steps": default})
    assert not done and [r.name for r in todo] == ["finished", "killed", "missing"]
    assert todo[1].config == train.Resumed(replace_fields(
        train.TrainConfig(), resume=str(tmp_path / "killed"), total_steps=default),
        ("total_steps",))


def test_final_policy_reads_the_final_checkpoint_on_the_runs_own_episodes(tmp_path, monkeypatch,
                                                                            capsys):
    run = tmp_path / "grid" / "gru__s3"
    cfg = replace_fields(TINY, env="rlkit/Pendulum-V-v0", backbone="gru", seed=3,
                         run_dir=str(run), total_steps=120, eval_episodes=2)
    logged = train.main(cfg)["eval_return_mean"]  # the actor's, at the end
    actor, target = pomdp.final_of(run, "actor"), pomdp.final_of(run, "target")
    assert actor == pytest.approx(logged, rel=1e-6) and target != pytest.approx(actor)
    monkeypatch.setattr(sys, "argv", [
        "pomdp.py", "--env", "rlkit/Pendulum-V-v0", "--backbones", "gru", "--seeds", "3",
        "--summarize", str(tmp_path / "grid"), "--no-reference", "--final-policy", "target"])
    pomdp.main()
    out = capsys.readouterr().out
    assert "evaluations logged of the actor" in out and f"| gru | {target:.1f} |" in out


def test_returns_at_steps_are_the_last_evaluation_before_and_none_past_the_runs_end(tmp_path):
    rows = [{"step": 3000, "wall_time": 1.0, "eval_return_mean": -900.0},
            {"step": 6000, "wall_time": 2.0, "updates_per_s": 4.0, "actor_saturation": 0.5},
            {"step": 6000, "wall_time": 2.5, "eval_return_mean": -400.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = pomdp.summarize(tmp_path, 1, [2000, 4500, 6000, 9000])
    assert out["at"] == {2000: None, 4500: -900.0, 6000: -400.0, 9000: None}
    assert out["final"] == -400.0 and out["saturation"] == 0.5 and out["ups"] == 4.0


def test_a_run_without_a_training_row_has_no_updates_per_second(tmp_path):
    """A run shorter than ``--log-every`` logs evaluations only: its rate is unknown, not 0."""
    rows = [{"step": 200, "wall_time": 1.0, "eval_return_mean": -900.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = pomdp.summarize(tmp_path, 1, [])
    assert out["ups"] is None and out["saturation"] is None and out["final"] == -900.0


def test_the_anchor_flags_resolve_to_pomdp_baselines_settings():
    """``--anchor pomdp-baselines``: its flags parse as ``train.py``'s and resolve to their
    Pendulum-V agent (whole episodes, TD3, separate input embedders, orthogonal recurrent
    weights, the current step beside the encoding through ReLU embedders, hidden biases at
    0.1, one critic RNN under both Q heads, 1,000 updates when learning starts)."""
    anchor = pomdp.ANCHORS["pomdp-baselines"]
    cfg = cli.parse_config(["--env", anchor["env"], "--backbone", "lstm", *anchor["flags"]])
    cfg = train.resolve(cfg, 200)
    a, m, r = cfg.agent, cfg.model, cfg.replay
    assert (r.window_start, r.seq_len, r.batch_size) == ("episode", 200, 32)
    assert (a.gamma, a.tau, a.actor_lr, a.critic_lr, a.head_hidden) == (0.9, 0.005, 3e-4, 3e-4,
                                                                        (128, 128))
    assert a.twin_critics and a.target_noise == 0.2 and a.head_obs and a.critics_share_encoder
    assert a.actor_q == "first"  # theirs is min(Q1, Q2): an option, not in the anchor
    assert a.input_embed == (32, 8, 8) and a.actor_prev_reward and a.critic_prev_action
    assert (m.d_model, m.rnn_init, cfg.run.recipe) == (128, "orthogonal", "none")
    assert (a.head_embed, a.head_bias, a.final_init) == ((32, 48), 0.1, 3e-3)
    assert (cfg.loop.learning_starts, cfg.loop.initial_updates) == (1000, 1000)


def test_the_gap_table_splits_each_runs_loss_against_the_optimum_along_its_episodes(
        tmp_path, capsys):
    run = tmp_path / "gru__s3"
    cfg = replace_fields(TINY, env="rlkit/Pendulum-V-v0", backbone="gru", seed=3,
                         run_dir=str(run), total_steps=40, eval_episodes=2)
    logged = train.main(cfg)["eval_return_mean"]
    n, s0 = pomdp.own_episodes(run)
    rewards = pomdp.run_rewards(run, n, s0)
    assert [len(r) for r in rewards] == [200, 200]
    assert sum(sum(r) for r in rewards) / n == pytest.approx(logged, rel=1e-9)
    solver = PendulumOptimum(200, n_theta=32, n_omega=33, n_actions=9)
    best = optimum_rewards("rlkit/Pendulum-V-v0", s0, n, solver)  # (2, 200)
    gaps = best.sum(axis=1) - [sum(r) for r in rewards]
    pomdp._gap_table([RunOutcome("gru__s3", run)], ["gru"], "rlkit/Pendulum-V-v0", 50, solver,
                     None)
    out = capsys.readouterr().out
    assert "| steps 0-49 | steps 50-99 | steps 100-149 | steps 150-199 | worst episode |" in out
    row = next(line for line in out.splitlines() if line.startswith("| gru__s3 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) == pytest.approx(logged, abs=0.05)
    assert float(cells[2]) == pytest.approx(best.sum(axis=1).mean(), abs=0.05)
    assert float(cells[3]) == pytest.approx(gaps.mean(), abs=0.05)
    parts = [float(c) for c in cells[4:8]]
    assert sum(parts) == pytest.approx(gaps.mean(), abs=0.2)  # the stretches add up to the gap
    first = (best[:, :50] - [r[:50] for r in rewards]).sum(axis=1).mean()
    assert parts[0] == pytest.approx(first, abs=0.05)
    worst = int(gaps.argmax())
    assert cells[8] == f"{gaps[worst]:.1f} (episode {worst})"


def test_runs_that_discount_get_the_ceiling_of_their_discount_beside_the_optimum(
        tmp_path, monkeypatch, capsys):
    """With ``--agent.gamma 0.9`` a Pendulum grid's table has, under the full-state optimum,
    the undiscounted return of the policy that maximises the gamma-discounted return, on each
    seed's own evaluation episodes (summarised from an empty directory: the rows need no run)."""
    grid = {"n_theta": 32, "n_omega": 33, "n_actions": 9}
    monkeypatch.setattr(pomdp.PendulumOptimum, "for_env", classmethod(
        lambda cls, env, **kw: cls(200, **grid, **kw)))
    monkeypatch.setattr(sys, "argv", [
        "pomdp.py", "--env", "rlkit/Pendulum-V-v0", "--backbones", "gru", "--seeds", "0", "1",
        "--summarize", str(tmp_path), "--", "--agent.gamma", "0.9", "--eval-episodes", "2"])
    pomdp.main()
    out = capsys.readouterr().out
    for label, solver in [("optimum, full state, same episodes", PendulumOptimum(200, **grid)),
                          ("optimum of the discounted return (gamma 0.9), full state, same "
                           "episodes", PendulumOptimum(200, **grid, gamma=0.9))]:
        want = [optimum_rewards("rlkit/Pendulum-V-v0", eval_env_seed(s), 2, solver).sum(1).mean()
                for s in (0, 1)]
        assert f"| {label} | {want[0]:.1f}, {want[1]:.1f} |" in out
    assert "(gamma 0.99)" not in out  # only the runs' own discount


def test_summarize_describes_the_runs_as_they_ran_not_as_the_flags_say(tmp_path, monkeypatch,
                                                                        capsys):
    """``--summarize DIR`` without the grid's ``--`` flags reads each run's ``config.json``:
    the settings line, the evaluation episodes of the optimum rows and the discount of the
    ceiling row are the runs' (here 2 episodes and gamma 0.9, where the flags would say 10 and
    0.99)."""
    grid = {"n_theta": 32, "n_omega": 33, "n_actions": 9}
    monkeypatch.setattr(pomdp.PendulumOptimum, "for_env", classmethod(
        lambda cls, env, **kw: cls(200, **grid, **kw)))
    run = tmp_path / "grid" / "gru__s0"
    train.main(replace_fields(TINY, env="rlkit/Pendulum-V-v0", backbone="gru", d_model=8,
                              run_dir=str(run), eval_episodes=2, eval_every=60, gamma=0.9))
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", [
        "pomdp.py", "--env", "rlkit/Pendulum-V-v0", "--backbones", "gru", "--seeds", "0",
        "--summarize", str(tmp_path / "grid")])
    pomdp.main()
    out = capsys.readouterr().out
    assert f"read from {run / 'config.json'}" in out and "gamma 0.9," in out
    assert "evaluation(s) of 2 episodes" in out
    want = optimum_rewards("rlkit/Pendulum-V-v0", eval_env_seed(0), 2,
                           PendulumOptimum(200, **grid, gamma=0.9)).sum(1).mean()
    assert f"| optimum of the discounted return (gamma 0.9), full state, same episodes | " \
           f"{want:.1f} |" in out


@pytest.mark.parametrize("argv, named", [
    (["--last-k", "0"], "--last-k must be >= 1 (the final return is the mean of the last k "
                        "evaluations), got 0"),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
])
def test_counts_below_one_are_refused(monkeypatch, capsys, argv, named):
    monkeypatch.setattr(sys, "argv", ["pomdp.py", *argv])
    with pytest.raises(SystemExit) as e:
        pomdp.main()
    assert e.value.code == 2 and named in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory) -> Path:
    """A grid directory of two GRU runs on Pendulum-V (seeds 0 and 2), 60 steps, evaluated
    at the end only."""
    grid = tmp_path_factory.mktemp("bench") / "grid"
    for seed in (0, 2):
        train.main(replace_fields(TINY, env="rlkit/Pendulum-V-v0", backbone="gru", d_model=8,
                                  seed=seed, run_dir=str(grid / f"gru__s{seed}")))
    return grid


def _summarize(monkeypatch, capsys, *argv) -> str:
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--no-reference", *map(str, argv)])
    pomdp.main()
    return capsys.readouterr().out


def test_summarize_reads_the_backbones_and_seeds_of_the_grid(tiny_grid, monkeypatch, capsys):
    out = _summarize(monkeypatch, capsys, "--summarize", tiny_grid)
    finals = [pomdp.summarize(tiny_grid / f"gru__s{s}", 1, [])["final"] for s in (0, 2)]
    assert "rlkit/Pendulum-V-v0, 2 seeds" in out
    assert f"| gru | {finals[0]:.1f}, {finals[1]:.1f} |" in out
    assert "| mlp |" not in out and "failed" not in out and "short of" not in out
    out = _summarize(monkeypatch, capsys, "--summarize", tiny_grid, "--seeds", "2")
    assert f"| gru | {finals[1]:.1f} |" in out  # named: only those
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--summarize", str(tiny_grid / "gru__s0")])
    with pytest.raises(SystemExit) as e:
        pomdp.main()
    assert e.value.code == 2 and "no run directory named BACKBONE__sSEED there" in \
        capsys.readouterr().err


def test_summarize_names_the_env_its_runs_ran_on(tiny_grid, tmp_path, monkeypatch, capsys):
    """Without ``--env`` the header named the flag's default (Pendulum-V) for a grid of
    Pendulum-P runs, and chose the optimum rows by it; it is now the runs' env, and an
    ``--env`` that is not theirs is refused."""
    grid = tmp_path / "grid"
    shutil.copytree(tiny_grid, grid)
    for seed in (0, 2):
        config = grid / f"gru__s{seed}" / "config.json"
        data = json.loads(config.read_text())
        data["env"]["id"] = "rlkit/Pendulum-P-v0"
        config.write_text(json.dumps(data))
    out = _summarize(monkeypatch, capsys, "--summarize", grid)
    assert "rlkit/Pendulum-P-v0, 2 seeds" in out and "Pendulum-V" not in out
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--summarize", str(grid), "--env",
                                      "rlkit/Pendulum-V-v0"])
    with pytest.raises(SystemExit) as e:
        pomdp.main()
    assert e.value.code == 2 and f"--summarize {grid}: its runs are on rlkit/Pendulum-P-v0, " \
        "not --env rlkit/Pendulum-V-v0" in capsys.readouterr().err
    # the same task named without its version, or with its module, is the runs' own
    for same in ("rlkit/Pendulum-P", "envs.pomdp:rlkit/Pendulum-P-v0"):
        out = _summarize(monkeypatch, capsys, "--summarize", grid, "--env", same)
        assert "rlkit/Pendulum-P-v0, 2 seeds" in out
    # and runs of one task named two ways are runs of one task
    config = grid / "gru__s2" / "config.json"
    data = json.loads(config.read_text())
    data["env"]["id"] = "rlkit/Pendulum-P"
    config.write_text(json.dumps(data))
    out = _summarize(monkeypatch, capsys, "--summarize", grid)
    assert "rlkit/Pendulum-P, 2 seeds" in out


def test_summarize_takes_backbones_and_seeds_given_with_an_equals_sign(tiny_grid, monkeypatch,
                                                                      capsys):
    """``--seeds=2`` was not seen as naming the seeds: every run of the grid was tabulated (and
    with --resume, continued)."""
    final = pomdp.summarize(tiny_grid / "gru__s2", 1, [])["final"]
    out = _summarize(monkeypatch, capsys, "--summarize", tiny_grid, "--seeds=2",
                     "--backbones=gru")
    assert f"| gru | {final:.1f} | {final:.1f} |" in out and "2 seeds" not in out


def test_summarize_lists_a_run_it_cannot_read_and_tabulates_the_others(tiny_grid, tmp_path,
                                                                       monkeypatch, capsys):
    """A run directory without metrics (a run stopped while it started) ended the summary
    with 'error: cannot read ...metrics.jsonl', exit 2, half a table printed. Each value of a
    row with a seed left out now says whose it is."""
    grid = tmp_path / "grid"
    shutil.copytree(tiny_grid, grid)
    (grid / "gru__s2" / "metrics.jsonl").unlink()
    final = pomdp.summarize(grid / "gru__s0", 1, [])["final"]
    out = _summarize(monkeypatch, capsys, "--summarize", grid)
    assert f"| gru | s0: {final:.1f} | {final:.1f} |" in out
    assert "runs left out of their row: gru__s2 (cannot be read: " in out and \
        "metrics.jsonl" in out


def test_a_run_whose_final_checkpoint_was_not_written_is_not_finished(tiny_grid, tmp_path):
    """Its final evaluation logged, then stopped while it saved: a grid's --resume kept it as
    finished, and the tables read the older checkpoint as final; a single run's --resume
    continues it, and so now does the grid's. A run without a readable checkpoint is judged by
    its metrics, as before (nothing to go on from)."""
    grid = tmp_path / "grid"
    shutil.copytree(tiny_grid, grid)
    run = grid / "gru__s0"
    final = cli._finished(run, None)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert final is not None and ckpt["kind"] == "final"
    save_checkpoint(run / "checkpoint.pt", {**ckpt, "step": 40, "kind": "periodic"})
    assert cli._finished(run, None) is None  # behind: continued from step 40
    save_checkpoint(run / "checkpoint.pt", {**ckpt, "kind": "interrupt"})
    assert cli._finished(run, None) is None  # a stop on the last step: its final save to come
    (run / "checkpoint.pt").write_bytes(b"damaged")
    assert cli._finished(run, None) == final
    (run / "checkpoint.pt").unlink()
    assert cli._finished(run, None) == final


def test_telling_a_run_finished_reads_its_checkpoints_kind_and_step_only(tiny_grid, tmp_path,
                                                                        monkeypatch):
    """A grid's --resume loaded every finished run's checkpoint whole (its replay buffer too)
    to read two fields; it now reads them from the pickle alone, tensors memory-mapped, and
    judges the run as before."""
    import rlkit.checkpoint
    from rlkit.checkpoint import CheckpointError, checkpoint_progress

    grid = tmp_path / "grid"
    shutil.copytree(tiny_grid, grid)
    run = grid / "gru__s0"
    path = run / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    assert checkpoint_progress(path) == ("final", ckpt["step"])

    def whole(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded whole")

    monkeypatch.setattr(rlkit.checkpoint, "load_checkpoint", whole)
    monkeypatch.setattr(torch, "load", lambda *a, mmap=False, **k: (
        real_load(*a, mmap=mmap, **k) if mmap else whole()))
    assert cli._finished(run, None) == read_metrics(run)[-1]
    monkeypatch.undo()
    save_checkpoint(path, {**ckpt, "kind": "interrupt"})
    assert checkpoint_progress(path) == ("interrupt", ckpt["step"])
    assert cli._finished(run, None) is None
    path.write_bytes(path.read_bytes()[:-10])  # truncated: no footer
    with pytest.raises(CheckpointError, match="no rlkit integrity footer"):
        checkpoint_progress(path)
    save_checkpoint(path, {**ckpt, "format_version": -1})
    with pytest.raises(CheckpointError, match="not an rlkit checkpoint of format"):
        checkpoint_progress(path)
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        checkpoint_progress(run / "missing.pt")


real_load = torch.load


def test_summarize_of_a_grid_still_going(tiny_grid, tmp_path, monkeypatch, capsys):
    """A run with no evaluation yet gets its own row instead of a traceback; a run short of
    its --total-steps is listed with the step it reached."""
    grid = tmp_path / "grid"
    shutil.copytree(tiny_grid, grid)
    config = grid / "gru__s2" / "config.json"
    data = json.loads(config.read_text())
    data["loop"]["total_steps"] = 600  # as if stopped at step 60 of 600
    config.write_text(json.dumps(data))
    out = _summarize(monkeypatch, capsys, "--summarize", grid)
    assert "runs short of their --total-steps (final: their last evaluation so far): gru__s2 at " \
           "step 60 of 600" in out
    metrics = grid / "gru__s0" / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()
                               if "eval_return_mean" not in line))
    out = _summarize(monkeypatch, capsys, "--summarize", grid, "--threshold=-1e9")
    final = pomdp.summarize(grid / "gru__s2", 1, [])["final"]
    assert f"| gru | s2: {final:.1f} | {final:.1f} |" in out  # the run that has a final
    assert "runs left out of their row: gru__s0 (no evaluation yet)" in out
    assert "every memory family >= -1000000000.0 on every seed: FAIL" in out  # one is missing
    out = _summarize(monkeypatch, capsys, "--summarize", grid, "--seeds", "0")
    assert "| gru | no final return: gru__s0 (no evaluation yet) |" in out
    # a run killed between its last training row and its final evaluation: short, as for
    # rlkit.report and a grid's --resume (its last evaluation here made earlier, at step 40)
    killed = tmp_path / "killed"
    shutil.copytree(tiny_grid, killed)
    metrics = killed / "gru__s0" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows = [r | {"step": 40} if "eval_return_mean" in r else r for r in rows]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _summarize(monkeypatch, capsys, "--summarize", killed)
    assert "runs short of their --total-steps (final: their last evaluation so far): gru__s0 at " \
           "step 60 of 60 without its final evaluation" in out


def test_summarize_names_the_runs_whose_settings_differ_and_warns_of_pooled_lengths(
        tiny_grid, tmp_path, monkeypatch, capsys):
    """The settings line gave the first run's values for every run (one extended alone to
    another --total-steps, the RNN's own updates per step), and a row pooled seeds of
    different lengths without a word, where ``rlkit.report`` warns."""
    grid = tmp_path / "grid"
    shutil.copytree(tiny_grid, grid)
    config = grid / "gru__s2" / "config.json"
    data = json.loads(config.read_text())
    data["loop"]["total_steps"], data["loop"]["updates_per_step"] = 600, 0.5
    config.write_text(json.dumps(data))
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--no-reference", "--summarize", str(grid)])
    pomdp.main()
    got = capsys.readouterr()
    assert ": 60 env steps (600: gru__s2), 1.0 updates/step (0.5: gru__s2), batch 8," in got.out
    assert "warning: rows pool seeds of different --total-steps: gru (60: gru__s0; 600: " \
           "gru__s2)" in got.err
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--no-reference", "--summarize",
                                      str(tiny_grid)])
    pomdp.main()
    got = capsys.readouterr()
    assert ": 60 env steps, 1.0 updates/step, batch 8," in got.out and "warning" not in got.err
    monkeypatch.setattr(sys, "argv", ["pomdp.py", "--no-reference", "--summarize",
                                      str(tiny_grid), "--seeds", "0", "1", "2"])
    pomdp.main()  # gru__s1 is not in the grid: left out, not described by the flags' defaults
    got = capsys.readouterr()
    assert ": 60 env steps, 1.0 updates/step, batch 8, d_model 8," in got.out
    assert "warning" not in got.err


def test_out_holding_runs_needs_resume_and_resume_needs_the_same_flags(tiny_grid, tmp_path,
                                                                       monkeypatch, capsys):
    def refused(*argv) -> str:
        monkeypatch.setattr(sys, "argv", ["pomdp.py", *map(str, argv)])
        with pytest.raises(SystemExit) as e:
            pomdp.main()
        assert e.value.code == 2
        return capsys.readouterr().err

    assert f"--out {tiny_grid} is not an empty directory: give --resume to continue the grid " \
           "there, or a new --out" in refused("--backbones", "gru", "--out", tiny_grid)
    grid = tmp_path / "grid"
    shutil.copytree(tiny_grid, grid)
    (grid / pomdp.BENCH_RECORD).write_text(json.dumps({"env": "rlkit/Pendulum-V-v0",
                                                       "flags": ["--batch-size", "16"]}))
    err = refused("--backbones", "gru", "--seeds", "0", "2", "--out", grid, "--resume", "--",
                  "--batch-size", "8")
    assert f"--resume {grid}: the grid was run with --env rlkit/Pendulum-V-v0 and the flags " \
           "['--batch-size', '16'], not --env rlkit/Pendulum-V-v0 and ['--batch-size', '8']" \
           in err
    # the runs a --resume takes: the grid's own by default, some of them when named; a run
    # the grid does not have (a mistyped backbone) is refused, not started
    class Started(Exception):
        """Raised where the grid would start (its record is written by then)."""

    def start(runs, *args, **kwargs):
        raise Started([r.name for r in runs])

    def started(*argv) -> list[str]:
        monkeypatch.setattr(sys, "argv", ["pomdp.py", *map(str, argv)])
        with pytest.raises(Started) as e:
            pomdp.main()
        return e.value.args[0]

    monkeypatch.setattr(pomdp, "_run_grid", start)
    (grid / pomdp.BENCH_RECORD).write_text(json.dumps({
        "env": "rlkit/Pendulum-V-v0", "flags": ["--batch-size", "16"],
        "runs": ["gru__s0", "gru__s2"]}))
    resume = ["--out", grid, "--resume", "--", "--batch-size", "16"]
    assert started(*resume) == ["gru__s0", "gru__s2"]
    assert started("--seeds", "2", *resume) == ["gru__s2"]
    err = refused("--backbones", "gru", "lstm", "--seeds", "0", *resume)
    assert f"--resume {grid}: the grid has no run lstm__s0; its runs are gru__s0, gru__s2 " \
           "(--backbones and --seeds name some of them; a new run goes in a grid of its own)" \
           in " ".join(err.split())
    assert "no run gru__s1;" in " ".join(refused("--seeds", "1", *resume).split())
    # a grid recorded before its runs were: what is named is run
    (grid / pomdp.BENCH_RECORD).write_text(json.dumps({
        "env": "rlkit/Pendulum-V-v0", "flags": ["--batch-size", "16"]}))
    assert started("--backbones", "lstm", "--seeds", "0", *resume) == ["lstm__s0"]
    # a new grid records its runs
    new = tmp_path / "new"
    assert started("--backbones", "gru", "mlp", "--seeds", "0", "1", "--out", new) == \
        ["gru__s0", "gru__s1", "mlp__s0", "mlp__s1"]
    assert json.loads((new / pomdp.BENCH_RECORD).read_text())["runs"] == \
        ["gru__s0", "gru__s1", "mlp__s0", "mlp__s1"]


def test_the_grid_launches_the_longest_expected_runs_first_and_keeps_seed_order():
    def run(b, s, *flags):
        return GridRun(f"{b}__s{s}", cli.parse_config(
            ["--env", "rlkit/Pendulum-V-v0", "--backbone", b, "--seed", str(s), *flags]))
    runs = [run(b, s) for b in ("mlp", "gru", "transformer", "mamba2") for s in (0, 1)]
    # mamba2's recipe on Pendulum-V makes twice the updates of the others
    assert runs[-1].config.loop.updates_per_step == 2 * runs[0].config.loop.updates_per_step
    order = [r.name for r in pomdp.longest_first(runs, runs)]
    assert order == ["mamba2__s0", "mamba2__s1", "transformer__s0", "transformer__s1",
                     "gru__s0", "gru__s1", "mlp__s0", "mlp__s1"]
    # runs are ordered by the grid's configs: a transformer of 2,000 steps comes after the GRU
    short = run("transformer", 0, "--total-steps", "2000")
    todo = [runs[0], runs[2], runs[4]]  # mlp__s0, gru__s0, transformer__s0
    grid = [*runs[:4], short, *runs[5:]]
    assert [r.name for r in pomdp.longest_first(todo, grid)] == \
        ["gru__s0", "transformer__s0", "mlp__s0"]
    # a run to continue is costed from the step it reached: the transformer at 25k of 30k
    # has 5k steps left, less than the GRU's whole 30k
    todo = [runs[2], runs[4]]  # gru__s0, transformer__s0
    assert [r.name for r in pomdp.longest_first(todo, runs, {"transformer__s0": 25_000})] == \
        ["gru__s0", "transformer__s0"]
    assert pomdp.expected_seconds(runs[4], 25_000) == pytest.approx(
        pomdp.expected_seconds(runs[4]) / 6)


def test_run_grid_launches_longest_first_and_returns_the_outcomes_in_the_grids_order(
        tmp_path, monkeypatch):
    runs = [GridRun(f"{b}__s0", cli.parse_config(["--env", "rlkit/Pendulum-V-v0", "--backbone",
                                                   b])) for b in ("mlp", "gru", "mamba2")]
    kept = RunOutcome("gru__s0", tmp_path / "gru__s0", result={"eval_return_mean": -1.0})
    monkeypatch.setattr(pomdp.cli, "resume_runs", lambda out, rs: (
        [kept], [r for r in rs if r.name != "gru__s0"]))
    launched = []

    def fake_launch(fn, todo, out, jobs):
        launched.append([r.name for r in todo])
        return [RunOutcome(r.name, out / r.name) for r in todo]
    monkeypatch.setattr(pomdp, "launch", fake_launch)
    outcomes = pomdp._run_grid(runs, tmp_path, 2, True, [], [])
    assert launched == [["mamba2__s0", "mlp__s0"]]
    assert [o.name for o in outcomes] == ["mlp__s0", "gru__s0", "mamba2__s0"]
    assert outcomes[1] is kept
    # a Mamba-2 run near its end, resumed, goes after the MLP's whole run
    (tmp_path / "mamba2__s0").mkdir()
    (tmp_path / "mamba2__s0" / "metrics.jsonl").write_text('{"step": 29900}\n')
    launched.clear()
    pomdp._run_grid(runs, tmp_path, 2, True, [], [])
    assert launched == [["mlp__s0", "mamba2__s0"]]
