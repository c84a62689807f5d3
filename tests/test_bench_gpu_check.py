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
    (["--lengths", "32", "32"], "--lengths names 32 more than once"),
    (["--agent-families", "gru", "gru"], "--agent-families names gru more than once"),
    (["--families", "s4", "gru", "s4"], "--families names s4 more than once"),
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


@pytest.fixture
def cpu_run(monkeypatch, capsys):
    """``run(argv)``: ``main(["--allow-cpu", *argv])`` on the CPU with the agent timings replaced
    by fixed figures; returns the exit code, the lines printed and the agents timed."""
    gpu_check = bench_script("gpu_check")
    timed = []

    def agent_table(device, cfg, families):
        timed.extend(families)
        return [{"backbone": f, "fp32": 2.0, "bf16": 3.0, "compile": 4.0, "compile_s": 1.0,
                 "compiled": "yes"} for f in families]

    def bench_agent_update(backbone, mode, cfg, device):
        timed.append(backbone)
        return bench_script("throughput").AgentTiming(2.0, 1.0, False)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "agent_table", agent_table)
    monkeypatch.setattr(gpu_check, "bench_agent_update", bench_agent_update)
    monkeypatch.setattr(gpu_check, "bench_bare", lambda *args, **kwargs: 1.0)

    def run(argv):
        code = gpu_check.main(["--allow-cpu", "--lengths", "8", "--families", "mlp", *argv])
        return code, capsys.readouterr().out.splitlines(), timed

    return run


def test_each_section_prints_its_header_with_its_content_and_the_tables_after_the_checks(
        cpu_run):
    code, lines, _ = cpu_run(["--agent-families", "mlp", "gru", "--agent-updates", "1",
                              "--memory-window", "8"])
    assert code == 0
    headers = [i for i, line in enumerate(lines) if line.startswith("== ")]
    assert len(headers) == 6
    for i in headers:  # the line under a header is its content
        assert lines[i + 1].strip() and not lines[i + 1].startswith("==")
    summary = lines.index("all checks PASS")
    tables = [lines[i] for i in headers if i > summary]
    assert [t.split(" on ")[0].split(",")[0] for t in tables] == [
        "== agent updates/s", "== peak memory of an agent update",
        "== MLP agent vs the plain eager update (bench_bare)", "== benchmark: bench/backbones.py"]
    assert lines[-1].startswith("mlp ") and lines[-3].startswith("family ")


def test_the_agent_sections_take_their_agents_from_agent_families(cpu_run):
    _, lines, timed = cpu_run(["--agent-families", "gru", "--agent-updates", "1"])
    assert timed == ["gru"]  # no MLP agent timed
    text = "\n".join(lines)
    assert ("== peak memory of an agent update, window 1024, checkpointing off / on: gru (the "
            "sequence backbones in --agent-families)\n  skipped: needs CUDA") in text
    assert ("== MLP agent vs the plain eager update (bench_bare) on cpu\n  skipped: mlp is not "
            "in --agent-families") in text
    assert ("== agent update without host-device syncs (torch.cuda.set_sync_debug_mode): gru "
            "(of mlp, gru, transformer, mamba, those in --agent-families); replay sampling"
            in text)
    _, lines, _ = cpu_run(["--agent-families", "mlp", "--agent-updates", "1"])
    assert ("checkpointing off / on: none (the sequence backbones in --agent-families)\n  "
            "skipped: no sequence backbone in --agent-families") in "\n".join(lines)


def test_a_family_or_a_table_that_raises_is_a_fail_and_the_rest_still_runs(cpu_run,
                                                                             monkeypatch):
    """One family's error (a CUDA-only dtype mismatch, say) used to end the script with no
    summary and no table: it is a FAIL line now, the other families are checked, every table
    prints (the failing one as its error) and the exit code is 1."""
    from rlkit.backbones.rnn import RNNBackbone

    def broken(self, *args, **kwargs):
        raise RuntimeError("expected scalar type Float but found BFloat16\nmore")

    monkeypatch.setattr(RNNBackbone, "forward", broken)
    gpu_check = bench_script("gpu_check")
    monkeypatch.setattr(gpu_check, "agent_table",
                        lambda *a: (_ for _ in ()).throw(ValueError("no table")))
    code, lines, _ = cpu_run(["--families", "gru", "mlp", "--agent-families", "mlp",
                              "--agent-updates", "1"])
    text = "\n".join(lines)
    assert code == 1
    assert ("FAIL  gru          contract checks            RuntimeError: expected scalar type "
            "Float but found BFloat16") in lines
    assert any(line.startswith("PASS  mlp") for line in lines)  # checked after gru
    # the benchmark table times the broken gru too: its section is its error
    assert "FAILED: gru/contract checks, section/agent table, section/benchmark table" in lines
    assert "== agent table\n  FAILED: ValueError: no table" in text
    assert "| ours compile | 2 | 2.00x |" in lines  # the MLP table after the failed one
    assert lines[-2:] == ["== benchmark table", "  FAILED: RuntimeError: expected scalar type "
                          "Float but found BFloat16"]


def test_step_chunking_and_checkpointing_are_also_checked_in_fp32_to_round_off(cpu_run,
                                                                                 monkeypatch):
    """In bf16 these three had tolerances of 3e-2 and 5e-2. They run in fp32 (TF32 off) to
    1e-5 too, and checkpointing in bf16 to 2e-3, which a recomputation of checkpointed blocks
    outside autocast (8e-3 off, and equal in fp32) no longer passes."""
    import rlkit.backbones.base as base

    def outside_autocast(fn, *args, **kwargs):  # the blocks' forward runs in fp32
        with torch.autocast("cpu", enabled=False):
            return fn(*(t.float() if torch.is_tensor(t) and t.is_floating_point() else t
                        for t in args))

    code, lines, _ = cpu_run(["--families", "gru", "--agent-families"])
    names = [line.split("err=")[0].split(None, 2)[2].strip() for line in lines
             if line.startswith(("PASS", "FAIL"))]
    assert code == 0 and {"step == forward fp32 (T=48)", "step == forward fp32 (state)",
                          "chunking fp32 (k=16)", "checkpointing fp32 (y, grads)",
                          "checkpointing (y, grads)"} <= set(names)
    fp32 = [line for line in lines if "fp32 (" in line and line.startswith("PASS")]
    assert all(float(line.split("err=")[1].split()[0]) < 1e-5 for line in fp32)
    monkeypatch.setattr(base, "checkpoint", outside_autocast)
    code, lines, _ = cpu_run(["--families", "mamba", "--agent-families"])
    assert code == 1 and any(line.startswith("FAIL  mamba        checkpointing (y, grads)")
                             for line in lines)
    assert any(line.startswith("PASS  mamba        checkpointing fp32") for line in lines)
