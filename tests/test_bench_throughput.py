"""bench/throughput.py refuses bad sizes at once, before anything is timed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import bench_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("flags, said", [
    (["--warmup", "300"], "--warmup must be a positive multiple of 500, got 300"),
    (["--steps", "0"], "--steps must be a positive multiple of 500, got 0"),
])
def test_sizes_that_our_loop_cannot_time_are_refused_at_once(flags, said):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--skip-sb3",
                          *flags], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and said in out.stderr and out.stdout == ""


def _throughput_module():
    return bench_script("throughput")


@pytest.mark.parametrize("env, said", [
    ("Pendulum-v9", "--envs Pendulum-v9: Environment version `v9` for environment `Pendulum` "
                    "doesn't exist"),
    ("NoSuchTask-v0", "--envs NoSuchTask-v0: Environment `NoSuchTask` doesn't exist"),
    ("CartPole-v1", "--envs CartPole-v1 has actions Discrete(2); expected a Box (continuous)"),
])
def test_a_task_the_loop_cannot_time_is_refused_at_once(env, said, capsys):
    with pytest.raises(SystemExit) as stop:
        _throughput_module().parse_args(["--envs", env, "--skip-sb3", "--warmup", "500"])
    assert stop.value.code == 2 and said in capsys.readouterr().err


def test_the_loop_table_leaves_the_sb3_cells_empty_when_sb3_was_skipped():
    throughput = _throughput_module()
    table = throughput.format_loop_table([("Pendulum-v1", "fp32", 400.0, 380.0, None, 500.0,
                                           450.0),
                                          ("Pendulum-v1", "fp32", 400.0, 380.0, 190.0, 500.0,
                                           450.0)])
    skipped, timed = table.splitlines()[2:]
    assert skipped == "| Pendulum-v1 | fp32 | 400 | 380 | - | 500 | 450 | - | 76% | 84% |"
    assert timed == "| Pendulum-v1 | fp32 | 400 | 380 | 190 | 500 | 450 | 2.00x | 76% | 84% |"
    assert "nan" not in table


def test_our_loop_is_timed_on_a_package_task_and_leaves_no_run_behind(tmp_path, monkeypatch,
                                                                      capsys):
    """Each loop-table run left ``/tmp/rlkit-tp-*/run`` (two checkpoints) behind and printed
    the run's ``run dir:`` line; ``rlkit/`` ids were refused ("Namespace rlkit not found")."""
    throughput = _throughput_module()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sps, ups = throughput.bench_ours("rlkit/Pendulum-V-v0", 500, 500, "cpu")
    assert sps > 0 and ups > 0
    assert list(tmp_path.glob("rlkit-tp-*")) == [] and capsys.readouterr().out == ""


@pytest.mark.parametrize(("flags", "said"), [
    (["--total-steps", "0"], "--total-steps must be a positive integer, got 0"),
    (["--jobs", "0"], "--jobs must be a positive integer, got 0"),
    (["--env", "CartPole-v1"], "env 'CartPole-v1' has action space Discrete(2); expected a "
                               "continuous Box action space"),
    (["--seeds", "0", "0"], "--seeds names 0 more than once, got 0 0; expected each value once"),
])
def test_learn_refuses_bad_values_by_name_before_a_run_starts(flags, said, tmp_path):
    """They ended in tracebacks, the env's from inside the process pool."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "learn.py"), *flags, "--out",
                          str(tmp_path / "runs")], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 2 and f"learn.py: error: {said}" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()


def test_learn_refuses_an_out_that_holds_files(tmp_path):
    """Runs of a seed already there made its pool fail with a traceback."""
    (tmp_path / "seed0").mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "learn.py"), "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and f"--out {tmp_path} is not an empty directory" in out.stderr


def test_kill_resume_runs_train_py_wherever_it_is_started():
    """It ran ``train.py`` relative to the current directory: only from the repository root."""
    cmd = bench_script("kill_resume")._cmd(["--seed", "0"])
    assert Path(cmd[1]) == ROOT / "train.py" and Path(cmd[1]).is_absolute()


def test_same_metrics_refuses_what_is_not_a_run_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    stray = tmp_path / "metrics.jsonl"
    stray.write_text('{"step": 0}\n')
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "same_metrics.py"), str(run),
                          str(stray)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{stray} is not a run directory (no metrics.jsonl in it): expected two run " \
           "directories" in out.stderr
    gone = subprocess.run([sys.executable, str(ROOT / "bench" / "same_metrics.py"), str(run),
                           str(tmp_path / "gone")], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert gone.returncode == 2 and f"{tmp_path / 'gone'}: no such directory: expected two " \
        "run directories" in gone.stderr
    same = subprocess.run([sys.executable, str(ROOT / "bench" / "same_metrics.py"), str(run),
                           str(run)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert same.returncode == 0 and "1 rows identical" in same.stdout
    none = subprocess.run([sys.executable, str(ROOT / "bench" / "same_metrics.py"), str(run),
                           str(run), "--min-step", "5"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert none.returncode == 1 and "Traceback" not in none.stderr  # an IndexError before
    assert "no rows to compare: neither run logged a step in 5.." in none.stdout


@pytest.mark.parametrize("args, named", [
    (["--ignore", "step"], "--ignore step: the rows are matched by their step"),
    (["--min-step", "500", "--max-step", "100"], "--max-step 100 is below --min-step 500"),
    ([], "metrics.jsonl:2"),  # a malformed row: named by file and line, not a traceback
])
def test_same_metrics_refuses_what_it_cannot_compare_by_name(tmp_path, args, named):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0, "wall_time": 1}\n' + (
        "" if args else 'not json\n{"step": 1, "wall_time": 2}\n'))
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "same_metrics.py"), str(run),
                          str(run), *args], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr and named in out.stderr, \
        out.stderr


@pytest.mark.parametrize("args, named", [
    (["--kills", "0"], "--kills must be >= 1, got 0"),
    (["--again", "1.5"], "--again must be a probability in [0, 1], got 1.5"),
    (["--checkpoint-minutes", "-1"], "--checkpoint-minutes must be a finite number >= 0 (0: "
                                     "off, as train.py takes it), got -1.0"),
    (["--checkpoint-minutes", "inf"], "--checkpoint-minutes must be a finite number >= 0"),
    (["--kills", "1"], "holds the trials of an earlier invocation (mlp_t000)"),
])
def test_kill_resume_refuses_bad_values_and_an_out_with_earlier_trials(tmp_path, args, named):
    """An --out holding an earlier invocation's trial directories gave false 'equal' counts:
    its runs were resumed (or refused as not empty), never killed afresh."""
    (tmp_path / "mlp_t000").mkdir()
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "kill_resume.py"), "--out",
                          str(tmp_path), "--cases", "mlp", *args], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and named in out.stderr, out.stderr


def test_fault_table_refuses_an_out_that_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "fault_table.py"), "--out",
                          str(afile)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"--out {afile} is a file; expected a directory" in out.stderr


def test_the_sb3_column_without_sb3_installed_names_the_extra_and_the_flag():
    import importlib.util
    if importlib.util.find_spec("stable_baselines3") is not None:
        pytest.skip("stable-baselines3 is installed here")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--warmup",
                          "500", "--steps", "500"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert "needs stable-baselines3, which is not installed: pip install -e '.[bench]', or " \
           "leave SB3 out with --skip-sb3" in out.stderr


def _agent_rows(modes, backbones=("mlp", "gru"), compiled="yes"):
    """Rows as ``agent_table`` makes them: gru at 100 upd/s in fp32, mlp at 200; bf16 at 1.5x
    and compile at 2x of fp32; the compile warm-up 7 s."""
    rows = []
    for name in backbones:
        fp32 = 100.0 if name == "gru" else 200.0
        row = {"backbone": name}
        row |= {m: {"fp32": fp32, "bf16": 1.5 * fp32, "compile": 2 * fp32}[m] for m in modes}
        if "compile" in modes:
            row |= {"compile_s": 7.0, "compiled": compiled}
        rows.append(row)
    return rows


@pytest.mark.parametrize("modes, heads, gru_cells", [
    (["compile"], "compile upd/s | compile warm-up s", "200.0 | 7"),
    (["bf16", "compile"], "bf16 upd/s | compile upd/s | compile warm-up s", "150.0 | 200.0 | 7"),
    (["fp32", "bf16"], "fp32 upd/s | bf16 upd/s | bf16 / fp32 | fp32 / gru fp32",
     "100.0 | 150.0 | 1.50x | 1.00x"),
    (["fp32", "compile"], "fp32 upd/s | compile upd/s | compile / fp32 | compile warm-up s | "
     "fp32 / gru fp32", "100.0 | 200.0 | 2.00x | 7 | 1.00x"),
    (["fp32", "bf16", "compile"], "fp32 upd/s | bf16 upd/s | compile upd/s | bf16 / fp32 | "
     "compile / fp32 | compile warm-up s | fp32 / gru fp32",
     "100.0 | 150.0 | 200.0 | 1.50x | 2.00x | 7 | 1.00x"),
])
def test_the_agent_table_has_the_ratio_columns_of_the_modes_that_ran(modes, heads, gru_cells):
    throughput = _throughput_module()
    cfg = throughput.AgentBenchConfig()
    table = throughput.format_agent_table(_agent_rows(modes), cfg, torch.device("cpu"), 1)
    lines = table.splitlines()
    assert lines[1] == f"| agent | {heads} |"
    assert lines[2] == "|---|" + "---:|" * (heads.count("|") + 1)
    assert lines[4] == f"| gru | {gru_cells} |"
    assert "-" not in lines[3].replace("| mlp |", "")


@pytest.mark.parametrize("modes, gru_cells", [
    (["fp32", "compile"], "100.0 | 200.0 | 2.00x (eager fallback) | 7 | 1.00x"),
    (["compile"], "200.0 (eager fallback) | 7"),
])
def test_a_compile_that_fell_back_to_eager_is_noted_in_the_agent_table(modes, gru_cells):
    throughput = _throughput_module()
    rows = _agent_rows(modes, compiled="eager")
    table = throughput.format_agent_table(rows, throughput.AgentBenchConfig(),
                                          torch.device("cpu"), 1)
    assert table.splitlines()[4] == f"| gru | {gru_cells} |"


def test_the_agent_table_reads_a_fallback_from_the_agent_not_from_a_once_shown_warning(
        monkeypatch):
    # the fallback warning is shown once a process: a second table (another window) must
    # still say "eager" for every row whose compiled losses run eagerly
    throughput = _throughput_module()

    def fails(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fails)
    cfg = throughput.AgentBenchConfig(mlp_batch=4, mlp_width=8, batch=2, window=3, d_model=8,
                                      head=8, warmup=1, updates=1)
    for _ in range(2):
        rows = throughput.agent_table(torch.device("cpu"), cfg, ["mlp", "gru"], ["compile"])
        assert [r["compiled"] for r in rows] == ["eager", "eager"]
    assert not throughput.bench_agent_update("gru", "fp32", cfg, torch.device("cpu")).fell_back


@pytest.mark.parametrize("backbones, sizes", [
    (["mlp", "gru"], "; MLP: batch 256, width 256; sequence: batch 32 x window 64, d_model 128, "
     "head 256"),
    (["gru"], "; sequence: batch 32 x window 64, d_model 128, head 256"),
    (["mlp"], "; MLP: batch 256, width 256"),
])
def test_the_agent_table_header_gives_the_sizes_of_the_agents_in_it(backbones, sizes):
    throughput = _throughput_module()
    table = throughput.format_agent_table(_agent_rows(["fp32"], backbones),
                                          throughput.AgentBenchConfig(), torch.device("cpu"), 1)
    assert table.splitlines()[0] == ("Agent updates/s, device cpu, 1 torch thread(s), 10 timed "
                                     f"updates after 3 warm-up{sizes}")


def _refusal(parse_args, argv, capsys) -> str:
    """What ``parse_args(argv)`` says on stderr as it exits 2."""
    with pytest.raises(SystemExit) as exit:
        parse_args(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [
    (["--sequence", "--updates", "0"], "--updates must be a positive integer, got 0"),
    (["--sequence", "--updates", "-3"], "--updates must be a positive integer, got -3"),
    (["--sequence", "--windows", "0"], "--windows must be positive integers, got 0"),
    (["--sequence", "--windows", "64", "-4"], "--windows must be positive integers, got 64 -4"),
    (["--sequence", "--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--skip-sb3", "--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--sequence", "--device", "bogus"], "--device must be cpu, cuda or cuda:N, got 'bogus'"),
    (["--skip-sb3", "--device", "meta"], "--device must be cpu, cuda or cuda:N, got 'meta'"),
])
def test_values_the_benchmark_cannot_run_are_refused_naming_the_flag(argv, said, capsys):
    assert said in _refusal(_throughput_module().parse_args, argv, capsys)


@pytest.mark.parametrize("argv", [["--sequence"], ["--skip-sb3"]])
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_a_cuda_device_is_refused_where_there_is_none(argv, device, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    said = _refusal(_throughput_module().parse_args, [*argv, "--device", device], capsys)
    assert f"--device {device} was asked for but no CUDA device is available" in said


@pytest.mark.parametrize("argv, said", [
    (["--sequence", "--precision", "bf16", "--envs", "Pendulum-v1"],
     "--envs, --precision apply to the loop table, not to --sequence"),
    (["--sequence", "--skip-sb3"], "--skip-sb3 applies to the loop table, not to --sequence"),
    (["--sequence", "--warmup", "1000", "--steps", "3000", "--rounds", "1"],
     "--warmup, --steps, --rounds apply to the loop table, not to --sequence"),
    (["--skip-sb3", "--backbones", "gru", "--modes", "fp32"],
     "--backbones, --modes apply to --sequence (the agent table), not to the loop table"),
    (["--skip-sb3", "--updates", "10", "--windows", "64"],
     "--updates, --windows apply to --sequence (the agent table), not to the loop table"),
    (["--sequence", "--backbones", "mlp", "--windows", "64", "256"],
     "--windows sets the window of the sequence agents, and --backbones mlp has none"),
])
def test_flags_of_the_table_not_printed_are_refused_even_at_their_defaults(argv, said, capsys):
    assert said in _refusal(_throughput_module().parse_args, argv, capsys)


@pytest.mark.parametrize("argv, said", [
    (["--sequence", "--backbones", "gru", "s4", "gru"],
     "--backbones names gru more than once, got gru s4 gru"),
    (["--sequence", "--modes", "fp32", "fp32"], "--modes names fp32 more than once"),
    (["--sequence", "--windows", "64", "256", "64"], "--windows names 64 more than once"),
    (["--skip-sb3", "--envs", "Pendulum-v1", "Pendulum-v1"],
     "--envs names Pendulum-v1 more than once"),
    (["--skip-sb3", "--precision", "bf16", "fp32", "bf16"],
     "--precision names bf16 more than once"),
])
def test_a_value_named_twice_is_refused(argv, said, capsys):
    assert said in _refusal(_throughput_module().parse_args, argv, capsys)


def test_the_flags_left_out_take_their_defaults():
    throughput = _throughput_module()
    sequence, loop = throughput.parse_args(["--sequence"]), throughput.parse_args(["--skip-sb3"])
    for a in (sequence, loop):
        assert (a.envs, a.warmup, a.steps, a.rounds) == (["Pendulum-v1", "HalfCheetah-v5"], 1000,
                                                         3000, 1)
        assert (a.backbones, a.modes, a.updates, a.windows) == (
            list(throughput.BACKBONE_NAMES), ["fp32", "bf16", "compile"], 10, [64])
        assert a.precision == ["fp32"]
    assert sequence.skip_sb3 is False and loop.skip_sb3 is True


def test_every_example_of_the_docstring_is_accepted():
    throughput = _throughput_module()
    examples = [line.split("#")[0].split()[2:] for line in throughput.__doc__.splitlines()
                if line.strip().startswith("python bench/throughput.py")]
    assert len(examples) == 6
    for argv in examples:
        throughput.parse_args(argv if "--sequence" in argv else [*argv, "--skip-sb3"])


def test_fault_table_refuses_an_only_that_matches_no_scenario(tmp_path, monkeypatch, capsys):
    """It ran the base scenario alone and exited 0, as if the faults asked for had passed."""
    monkeypatch.setattr(sys, "argv", ["fault_table.py", "--only", "NOMATCH", "--out",
                                      str(tmp_path / "ft")])
    with pytest.raises(SystemExit) as stop:
        bench_script("fault_table").main()
    out = capsys.readouterr()
    assert stop.value.code == 2 and out.out == "" and not (tmp_path / "ft").exists()
    assert "--only 'NOMATCH' matches no scenario; expected part of a scenario's fault" \
        in out.err and "base" in out.err


def test_learn_keeps_the_other_seeds_table_when_one_seed_fails(tmp_path):
    """One failing seed raised out of the pool's map: no table, not even the others' rows."""
    from rlkit.seeding import seed_everything

    parity = seed_everything(0).env_seed % 2  # the env that raises is seed 0's training env
    assert {seed_everything(3).env_seed % 2, seed_everything(0).eval_env_seed % 2,
            seed_everything(3).eval_env_seed % 2} == {1 - parity}
    env = f"faulty_envs:rlkit-test/Raise{'Odd' if parity else 'Even'}-v0"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "learn.py"), "--env", env,
                          "--seeds", "0", "3", "--total-steps", "400", "--eval-every", "200",
                          "--eval-episodes", "1", "--jobs", "2", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}",
                              "WANDB_MODE": "disabled"})
    assert out.returncode == 2, out.stderr
    lines = out.stdout.splitlines()
    assert "| step | seed 3 | mean |" in lines and any(ln.startswith("| 400 | ") for ln in lines)
    assert "FAIL (every seed >= -200.0)" in out.stdout
    assert "seed 0: error: EnvError" in out.stderr and "simulator diverged" in out.stderr
    assert "error: 1 of 2 seeds failed: 0" in out.stderr


def test_each_compiled_agent_compiles_afresh(monkeypatch):
    """Compiled agents of one process shared dynamo's cache: a later one reused an earlier
    one's graphs (its warm-up read 0 s) or passed the recompile limit and ran eagerly, still
    labelled compiled."""
    throughput = _throughput_module()
    calls = []

    class Agent:
        compile_fallbacks = 0

        def update(self, batch):
            calls.append("update")

    monkeypatch.setattr(torch.compiler, "reset", lambda: calls.append("reset"))
    monkeypatch.setattr(throughput, "make_bench_agent",
                        lambda *a, **k: calls.append(f"agent compile={k['compile']}") or Agent())
    monkeypatch.setattr(throughput, "bench_batch", lambda *a: None)
    cfg = throughput.AgentBenchConfig(warmup=1, updates=1)
    for mode in ("fp32", "compile"):
        throughput.bench_agent_update("mlp", mode, cfg, torch.device("cpu"))
    assert calls == ["agent compile=False", "update", "update",
                     "reset", "agent compile=True", "update", "update"]
