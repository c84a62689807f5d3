"""bench/backbones.py refuses bad sizes and a missing CUDA device before anything is built."""

from __future__ import annotations

import pytest
import torch
from helpers import bench_script


def _refusal(argv, capsys) -> str:
    """What ``parse_args(argv)`` of bench/backbones.py says on stderr as it exits 2."""
    with pytest.raises(SystemExit) as exit:
        bench_script("backbones").parse_args(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--batch", "--d-model", "--d-in", "--n-layers", "--context",
                                  "--repeats"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_size_that_is_not_a_positive_integer_is_refused(flag, value, capsys):
    said = _refusal([flag, value], capsys)
    assert f"{flag} must be a positive integer, got {value}" in said


@pytest.mark.parametrize("lengths", [["0"], ["16", "-8"]])
def test_a_length_that_is_not_a_positive_integer_is_refused(lengths, capsys):
    said = _refusal(["--lengths", *lengths], capsys)
    assert f"--lengths must be positive integers, got {' '.join(lengths)}" in said


def test_sizes_a_family_cannot_be_built_at_are_refused_naming_the_family(capsys):
    said = _refusal(["--families", "gru", "transformer", "--d-model", "6"], capsys)
    assert ("transformer at --d-model 6, --n-layers 2, --context 64: d_model must be divisible "
            "by n_heads, got d_model=6, n_heads=4") in said
    gru_only = bench_script("backbones").parse_args(["--families", "gru", "--d-model", "6"])
    assert gru_only.d_model == 6
    said = _refusal(["--families", "gru", "s4", "--context", "8"], capsys)
    assert "--context 8 is the Transformer's window, and --families gru s4 leaves it out" in said
    # Mamba-2 was built from a plain config: its check ran only after the others were timed
    said = _refusal(["--families", "gru", "mamba2", "--d-model", "15"], capsys)
    assert ("mamba2 at --d-model 15, --n-layers 2: d_inner = expand * d_model = 30 must be "
            "divisible by head_dim") in said


def test_cuda_without_a_cuda_device_is_refused(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    said = _refusal(["--device", "cuda"], capsys)
    assert "--device cuda was asked for but no CUDA device is available" in said


@pytest.mark.parametrize("argv, said", [
    (["--lengths", "64", "256", "64"], "--lengths names 64 more than once, got 64 256 64"),
    (["--families", "gru", "s4", "gru"], "--families names gru more than once, got gru s4 gru"),
])
def test_a_value_named_twice_is_refused(argv, said, capsys):
    assert said in _refusal(argv, capsys)


@pytest.mark.parametrize("argv, said", [
    (["--dtype", "bf16"], "--dtype bf16: applies"),
    (["--families", "gru", "--n-layers", "4"], "--n-layers 4, --families gru: apply"),
    (["--context", "64", "--d-in", "32"], "--d-in 32, --context 64: apply"),  # the defaults too
])
def test_flags_the_scan_lines_do_not_read_are_refused_with_scan_only(argv, said, capsys):
    assert (f"{said} to the family table, not to --scan-only" in
            _refusal(["--scan-only", *argv], capsys))
    args = bench_script("backbones").parse_args(["--scan-only", "--lengths", "32", "--batch",
                                                 "2", "--d-model", "16"])
    assert (args.lengths, args.batch, args.d_model, args.dtype) == ([32], 2, 16, "fp32")


def test_the_table_flags_left_out_take_their_defaults():
    backbones = bench_script("backbones")
    args = backbones.parse_args([])
    assert (args.d_in, args.n_layers, args.context, args.dtype) == (32, 2, 64, "fp32")
    assert args.families == list(backbones.BACKBONE_NAMES)


def test_cpu_peak_memory_leaves_out_the_parameters_and_the_input():
    """A view of a weight (the transpose inside ``linear``) counted the weight's whole storage
    for the rest of the call: a 1 MiB layer on a tiny input measured twice its gradient."""
    import contextlib

    import torch
    from torch import nn

    class Layer(nn.Module):  # the backbone interface peak_memory_mib calls: (y, state)
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(512, 512, bias=False)  # 1 MiB of fp32 weight

        def forward(self, x):
            return self.lin(x), ()

    peak = bench_script("backbones").peak_memory_mib(Layer(), torch.randn(1, 1, 512),
                                                      contextlib.nullcontext)
    assert 1.0 <= peak < 1.05  # the weight's gradient, and a few small activations
