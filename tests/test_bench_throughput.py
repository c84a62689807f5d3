"""bench/throughput.py refuses bad sizes at once, before anything is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_throughput",
                                                  ROOT / "bench" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


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
    same = subprocess.run([sys.executable, str(ROOT / "bench" / "same_metrics.py"), str(run),
                           str(run)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert same.returncode == 0 and "1 rows identical" in same.stdout


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
