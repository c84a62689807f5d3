"""Benchmark every registered backbone: training cost per sequence length and acting latency.

Prints one table with, for every family and length T:
- forward+backward time (ms, median over ``--repeats`` after warm-up) of a batch ``(B, T, D_in)``;
- peak memory of that forward+backward, without and with gradient checkpointing. On CUDA:
  ``torch.cuda.max_memory_allocated`` above the memory allocated before the call. On CPU (where
  torch's allocator keeps no statistics): the peak total size of the tensor storages created
  during the call, tracked with a ``TorchDispatchMode`` (activations, workspace and gradients;
  parameters and inputs excluded);
- ``step`` latency (ms per call, batch B) from a state that has already taken t = 10 and
  t = 1000 steps (warmed with one ``forward``), measured once per family.

Example::

    python bench/backbones.py --lengths 64 256 1024 --device cuda --dtype bf16
    python bench/backbones.py --scan-only --repeats 3     # Mamba scan lines and exp floor only
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from argchecks import (  # bench/argchecks.py (same folder)
    fill_defaults,
    require_device,
    require_distinct,
    require_positive,
)
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from rlkit.backbones import (
    BACKBONE_NAMES,
    Backbone,
    BackboneConfig,
    backbone_config,
    make_backbone,
)

STEP_TS = (10, 1000)
"""Steps already taken when the ``step`` latency is measured."""


@dataclass
class Row:
    """One line of the table (times in ms, memory in MiB)."""

    family: str
    length: int
    fwd_bwd_ms: float
    peak_mib: float
    peak_ckpt_mib: float
    step_ms: tuple[float, ...] | None  # one per STEP_TS, on the family's first row only


class _StoragePeak(TorchDispatchMode):
    """Peak total bytes of the tensor storages created while active (CPU memory measure).
    ``kept``: tensors whose storages are not counted when an op returns a view of them (the
    parameters, buffers and input, which live before and after the call)."""

    def __init__(self, kept: Iterable[Tensor] = ()) -> None:
        super().__init__()
        self.kept = {t.untyped_storage().data_ptr() for t in kept}
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if storage.nbytes() and key not in self.live and key not in self.kept:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._release, key)
        return out


def make_config(
    name: str, d_model: int, n_layers: int, context: int, grad_checkpoint: bool
) -> BackboneConfig:
    """The benchmark's config for family ``name`` (family defaults besides these sizes; the
    context is the Transformer's), checked as the family checks it (Mamba-2's inner width a
    multiple of its head size).

    Raises:
        ValueError: sizes the family cannot take.
    """
    return backbone_config(name, d_model, n_layers, grad_checkpoint, context=context)


def autocast_ctx(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for ``dtype == "bf16"`` (fp32 parameters, as in training), else nothing."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _fwd_bwd(model: Backbone, x: Tensor, amp: Callable[[], Any]) -> None:
    model.zero_grad(set_to_none=True)
    with amp():
        y, _ = model(x)  # (B, T, D)
    y.float().square().mean().backward()


def peak_memory_mib(model: Backbone, x: Tensor, amp: Callable[[], Any]) -> float:
    """Peak memory of one forward+backward in MiB (see the module docstring for the method)."""
    model.zero_grad(set_to_none=True)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        base = torch.cuda.memory_allocated(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        _fwd_bwd(model, x, amp)
        torch.cuda.synchronize(x.device)
        return (torch.cuda.max_memory_allocated(x.device) - base) / 2**20
    with _StoragePeak([*model.parameters(), *model.buffers(), x]) as tracker:
        _fwd_bwd(model, x, amp)
    return tracker.peak / 2**20


@torch.inference_mode()
def step_latency_ms(
    model: Backbone, batch: int, t: int, amp: Callable[[], Any], repeats: int, generator: Any
) -> float:
    """Median ms of one ``step`` from a state that has already taken ``t`` steps."""
    device = next(model.parameters()).device
    x_warm = torch.randn(batch, t, model.d_in, generator=generator).to(device)
    x = torch.randn(batch, model.d_in, generator=generator).to(device)
    with amp():
        _, state = model(x_warm)

    def one_step() -> None:
        with amp():
            model.step(x, state)

    return median_ms(one_step, device, repeats=max(repeats, 10), warmup=3)


def bench_family(
    name: str, args: argparse.Namespace, device: torch.device, generator: torch.Generator
) -> list[Row]:
    """Rows of the table for one family (one per length)."""
    amp = functools.partial(autocast_ctx, device, args.dtype)
    cfgs = [make_config(name, args.d_model, args.n_layers, args.context, c) for c in (False, True)]
    plain = make_backbone(name, args.d_in, cfgs[0]).to(device)
    ckpt = make_backbone(name, args.d_in, cfgs[1]).to(device)
    ckpt.load_state_dict(plain.state_dict())
    rows = []
    for length in args.lengths:
        x = torch.randn(args.batch, length, args.d_in, generator=generator).to(device)
        ms = median_ms(lambda x=x: _fwd_bwd(plain, x, amp), device, args.repeats, warmup=2)
        peaks = peak_memory_mib(plain, x, amp), peak_memory_mib(ckpt, x, amp)
        rows.append(Row(name, length, ms, *peaks, step_ms=None))
    rows[0].step_ms = tuple(
        step_latency_ms(plain, args.batch, t, amp, args.repeats, generator) for t in STEP_TS
    )
    return rows


def run_benchmark(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    """Benchmark ``args.families``; returns the rows and notes on skipped families."""
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    rows: list[Row] = []
    notes: list[str] = []
    for name in args.families:
        try:
            rows += bench_family(name, args, device, generator)
        except ModuleNotFoundError as err:
            notes.append(f"{name}: skipped, module {err.name} is not importable yet")
            print(f"note: {notes[-1]}")
    return rows, notes


def format_table(rows: Sequence[Row], args: argparse.Namespace) -> str:
    """The table as text, with a header that states the settings and the memory method."""
    mem = (
        "torch.cuda.max_memory_allocated above baseline"
        if args.device == "cuda"
        else "peak size of storages created in fwd+bwd (TorchDispatchMode)"
    )
    lines = [
        f"device={args.device} dtype={args.dtype} batch={args.batch} d_in={args.d_in} "
        f"d_model={args.d_model} n_layers={args.n_layers} transformer context={args.context}",
        f"fwd+bwd: median of {args.repeats} after 2 warm-up; peak MiB: {mem}; "
        f"step: ms per call at t = {', '.join(map(str, STEP_TS))} steps taken (per family)",
    ]
    head = f"{'family':<12} {'T':>6} {'fwd+bwd ms':>11} {'peak MiB':>9} {'ckpt MiB':>9}"
    head += "".join(f" {f'step@{t} ms':>13}" for t in STEP_TS)
    lines += [head, "-" * len(head)]
    for r in rows:
        line = f"{r.family:<12} {r.length:>6} {r.fwd_bwd_ms:>11.2f} {r.peak_mib:>9.1f} "
        line += f"{r.peak_ckpt_mib:>9.1f}"
        line += "".join(f" {s:>13.3f}" for s in r.step_ms) if r.step_ms else ""
        lines.append(line)
    return "\n".join(lines)


def mamba_scan_lines(args: argparse.Namespace) -> list[str]:
    """Sequential vs parallel selective scan at the model's sizes: forward, and forward +
    backward, in fp32 (``scan(dA_log, dBx, C, h0)`` with ``dA_log, dBx: (B, T, d_inner, N)``,
    ``C: (B, T, N)``, ``h0: (B, d_inner, N)``)."""
    from rlkit.backbones.mamba import (
        MambaConfig,
        selective_scan_parallel,
        selective_scan_sequential,
    )

    cfg = MambaConfig(d_model=args.d_model)
    device, gen = torch.device(args.device), torch.Generator().manual_seed(0)
    d, n, b = cfg.expand * cfg.d_model, cfg.d_state, args.batch
    lines = [f"mamba scan, sequential vs parallel (chunk={cfg.chunk}), ms, fp32, B={b}, "
             f"d_inner={d}, N={n}:"]
    for length in args.lengths:
        dA_log = (-torch.rand(b, length, d, n, generator=gen) * 0.1).to(device)  # <= 0
        dBx = torch.randn(b, length, d, n, generator=gen).to(device)
        c = torch.randn(b, length, n, generator=gen).to(device)
        h0 = torch.zeros(b, d, n, device=device)
        inputs = [t.requires_grad_() for t in (dA_log, dBx, c)]

        def fwd(scan, *extra, inputs=inputs, h0=h0):
            with torch.no_grad():
                return scan(*inputs, h0, *extra)

        def fwd_bwd(scan, *extra, inputs=inputs, h0=h0):
            y, h = scan(*inputs, h0, *extra)
            (y.sum() + h.sum()).backward()

        diff = (fwd(selective_scan_sequential)[0] - fwd(selective_scan_parallel, cfg.chunk)[0])
        # every exact scan needs exp(Δ·A) for each (b, t, d, n); in PyTorch ops that is at
        # least one elementwise pass over a (B, T, D, N) tensor, a floor for any scan here
        floor = median_ms(functools.partial(torch.exp, dA_log.detach()), device, args.repeats,
                          warmup=1)
        times = [median_ms(functools.partial(f, scan, *extra), device, args.repeats, warmup=1)
                 for f in (fwd, fwd_bwd)
                 for scan, extra in ((selective_scan_sequential, ()),
                                     (selective_scan_parallel, (cfg.chunk,)))]
        lines.append(
            f"  T={length:<6} fwd: seq {times[0]:8.1f} par {times[1]:8.1f} "
            f"({times[0] / times[1]:4.2f}x)   fwd+bwd: seq {times[2]:8.1f} par {times[3]:8.1f} "
            f"({times[2] / times[3]:4.2f}x)   max|diff| {diff.abs().max().item():.1e}   "
            f"exp floor {floor:.1f} (fwd speed-up bound {times[0] / floor:.1f}x)"
        )
    return lines


TABLE_DEFAULTS = {"d_in": 32, "n_layers": 2, "context": 64, "families": list(BACKBONE_NAMES),
                  "dtype": "fp32"}
"""Flags of the family table that ``--scan-only`` does not read (the scan lines run Mamba-1's
scan alone, in fp32), and their defaults: they default to ``None`` so that one given is told
from one left out, and get these after that check."""

SIZE_FLAGS = ("--lengths", "--batch", "--d-model", "--d-in", "--n-layers", "--context",
              "--repeats")
"""Flags that take positive integers."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the benchmark, each bad value refused with a parser error (exit 2):
    a size that is not a positive integer, sizes the config of a family to run refuses, CUDA
    without a CUDA device."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024],
                   help="sequence lengths T, positive integers (default: 64 256 1024)")
    p.add_argument("--batch", type=int, default=32,
                   help="batch size B, a positive integer (default: 32)")
    p.add_argument("--d-model", type=int, default=128,
                   help="model width, a positive integer (default: 128)")
    p.add_argument("--d-in", type=int,
                   help=f"input width, a positive integer (default: {TABLE_DEFAULTS['d_in']})")
    p.add_argument("--n-layers", type=int,
                   help=f"layers, a positive integer (default: {TABLE_DEFAULTS['n_layers']})")
    p.add_argument("--context", type=int,
                   help=f"transformer window K, a positive integer (default: "
                   f"{TABLE_DEFAULTS['context']})")
    p.add_argument("--families", nargs="+", choices=BACKBONE_NAMES,
                   help="the families of the table (default: all)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the table runs (default: cpu)")
    p.add_argument("--dtype", choices=("fp32", "bf16"),
                   help=f"the table's precision (default: {TABLE_DEFAULTS['dtype']})")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per median, a positive integer (default: 5)")
    p.add_argument("--scan-only", action="store_true",
                   help="print only the Mamba scan lines (sequential vs parallel, exp floor), in "
                   "fp32 at --lengths, --batch, --d-model, --device, --repeats")
    args = p.parse_args(argv)
    if args.scan_only and (given := [(name, getattr(args, name)) for name in TABLE_DEFAULTS
                                     if getattr(args, name) is not None]):
        said = ", ".join(f"--{name.replace('_', '-')} "
                         f"{' '.join(map(str, v)) if isinstance(v, list) else v}"
                         for name, v in given)
        p.error(f"{said}: appl{'ies' if len(given) == 1 else 'y'} to the family table, not to "
                f"--scan-only (Mamba-1's scan alone, in fp32, at --lengths, --batch, --d-model, "
                f"--device, --repeats)")
    if args.context is not None and args.families and "transformer" not in args.families:
        p.error(f"--context {args.context} is the Transformer's window, and --families "
                f"{' '.join(args.families)} leaves it out")
    fill_defaults(args, TABLE_DEFAULTS)
    require_positive(p, args, *SIZE_FLAGS)
    require_distinct(p, args, "--lengths", "--families")
    for name in [] if args.scan_only else args.families:
        try:
            make_config(name, args.d_model, args.n_layers, args.context, False)
        except ValueError as err:
            context = f", --context {args.context}" if name == "transformer" else ""
            p.error(f"{name} at --d-model {args.d_model}, --n-layers {args.n_layers}{context}: "
                    f"{err}")
    require_device(p, args.device)
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the benchmark and print (and return) the table."""
    args = parse_args(argv)
    if args.scan_only:
        lines = "\n".join(mamba_scan_lines(args))
        print(lines)
        return lines
    rows, _ = run_benchmark(args)
    if "mamba" in args.families:
        print("\n".join(mamba_scan_lines(args)))
    table = format_table(rows, args)
    print(table)
    return table


if __name__ == "__main__":
    main()
