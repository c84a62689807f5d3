"""bench/gpu_check.py: its arguments, and the layout of what it prints (on the CPU, with the
timings replaced by fixed figures)."""

from __future__ import annotations

import pytest
import torch
from helpers import bench_script


@pytest.mark.parametrize("argv, said", [
    (["--lengths", "32", "0"], "--lengths must be positive integers, got 32 0"),
    (["--agent-updates", "0"], "--agent-updates must be a positive integer, got 0"),
    (["--memory-window", "-1"], "--memory-window must be a positive integer, got -1"),
])
@pytest.mark.parametrize("cpu", [[], ["--allow-cpu", "--families", "mlp", "--agent-families"]])
def test_bad_values_are_refused_before_the_device_is_looked_at(argv, said, cpu, capsys,
                                                               monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit:
        bench_script("gpu_check").main([*cpu, *argv])
    out = capsys.readouterr()
    assert exit.value.code == 2 and said in out.err and "skipped" not in out.out


def test_the_help_breaks_the_long_example_with_a_shell_line_continuation(capsys):
    with pytest.raises(SystemExit) as exit:
        bench_script("gpu_check").main(["--help"])
    assert exit.value.code == 0
    assert ("--agent-families mlp gru \\\n        --agent-updates 2 --memory-window 64\n"
            in capsys.readouterr().out)
