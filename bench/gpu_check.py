"""One script for a CUDA machine: the backbone contract in bf16, the SDPA backend, the benchmark.

1. For every registered family, under bf16 autocast (fp32 parameters) on the GPU: precision
   (vs fp32), step == forward, chunking, causality (also in fp32) and gradient checkpointing,
   each printed as PASS / FAIL with the measured error and its tolerance.
2. For the transformer: which ``SDPBackend`` runs the fresh-state forward (each forced in turn
   with ``sdpa_kernel``) and which attention kernels a profiled forward and step launch
   (FlashAttention shows up as a kernel name containing ``flash``).
3. The agent (``agents.ddpg.DDPG``): that an update makes no host-device sync
   (``torch.cuda.set_sync_debug_mode("error")``, fp32 / bf16 / fp16 / compiled; for those of
   mlp, gru, transformer and mamba in ``--agent-families``); the agent table of
   ``bench/throughput.py --sequence`` (updates/s in fp32, bf16 and compiled); the peak memory
   of one update with and without gradient checkpointing at window ``--memory-window`` (the
   sequence backbones in ``--agent-families``); and updates/s of the MLP agent against the
   plain eager update ``bench_bare`` (where mlp is in ``--agent-families``).
4. The table of ``bench/backbones.py`` on cuda in bf16.

The checks (1, 2 and the no-sync check of 3) print as they run, then one summary line (all
checks PASS, or the checks that failed); the tables of 3 and 4 follow it, each under its
header, the table of ``bench/backbones.py`` last.

Exits 0 with "no CUDA device; skipped" where there is no GPU, 1 if a check failed.
``--allow-cpu`` runs everything on the CPU instead, to test this script without a GPU.

Example::

    python bench/gpu_check.py                 # on a CUDA machine, a few minutes
    python bench/gpu_check.py --allow-cpu --lengths 32 --families mlp gru transformer
    python bench/gpu_check.py --allow-cpu --lengths 32 --families mlp --agent-families mlp gru \\
        --agent-updates 2 --memory-window 64
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence

import torch
from argchecks import (  # bench/argchecks.py (this script's folder is on the path)
    require_distinct,
    require_positive,
)
from backbones import (  # bench/backbones.py
    format_table,
    make_config,
    mamba_scan_lines,
    run_benchmark,
)
from backbones import parse_args as benchmark_args
from throughput import (  # bench/throughput.py
    ACT_DIM,
    OBS_DIM,
    AgentBenchConfig,
    agent_table,
    bench_agent_update,
    bench_bare,
    bench_batch,
    format_agent_table,
    make_bench_agent,
)
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from rlkit.backbones import BACKBONE_NAMES, Backbone, State, make_backbone
from rlkit.buffers import ReplayBuffer, SequenceReplayBuffer
from rlkit.config import ReplayConfig
from rlkit.faults import first_line
from rlkit.precision import PRECISIONS

B, T, D_IN, D_MODEL, N_LAYERS, K = 8, 48, 16, 64, 2, 16
TOL_PRECISION = 5e-2  # relative L2 error, bf16 autocast vs fp32
TOL_PARITY = 3e-2  # relative L2 error between two bf16 computations of the same quantity
# max |change of y[:, :t]| / max |y| when x[:, t:] changes. In bf16 a change of fp32 round-off
# (FFT convolutions spread it over all times) can flip a rounding: one bf16 ulp is up to ~4e-3
# of max |y|. The fp32 check (no autocast) bounds any real leak much tighter.
TOL_CAUSAL_BF16 = 1e-2
TOL_CAUSAL_FP32 = 1e-5
# relative L2 error of outputs and of each parameter's gradient, checkpointing on vs off, in
# bf16: the recomputation runs the same operations under the same autocast, so only
# nondeterministic kernels (atomic adds) differ; a recomputation outside autocast is 8e-3 off
TOL_GRAD = 2e-3
# the same checks in fp32 (TF32 off), where step == forward, chunking and checkpointing agree
# to round-off: a real mismatch that hides under bf16's rounding shows here (a recomputation
# outside autocast is the bf16 check's: TOL_GRAD)
TOL_FP32 = 1e-5


def rel(a: Tensor, b: Tensor) -> float:
    """Relative L2 error of ``a`` against ``b`` (absolute where ``b`` is zero)."""
    diff, ref = (a.float() - b.float()).norm().item(), b.float().norm().item()
    return diff / ref if ref > 0 else diff


def rel_state(a: State, b: State) -> float:
    return max((rel(x, y) for x, y in zip(a, b)), default=0.0)


class Report:
    """Collects PASS / FAIL lines."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def fail(self, family: str, what: str, err: BaseException) -> None:
        """A check that raised: a FAIL line with the error's first line."""
        self.failed.append(f"{family}/{what}")
        print(f"FAIL  {family:<12} {what:<26} {first_line(err, limit=160)}")

    def check(self, family: str, what: str, err: float, tol: float) -> None:
        ok = err < tol  # NaN fails
        if not ok:
            self.failed.append(f"{family}/{what}")
        print(f"{'PASS' if ok else 'FAIL'}  {family:<12} {what:<26} err={err:.2e}  tol={tol:.0e}")


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """fp32 without TF32 (cuDNN's convolutions use it by default on Ampere and later, about
    1e-3 off fp32: a false failure of the fp32 checks)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def contract_checks(name: str, device: torch.device, report: Report) -> None:
    """The contract invariants for one family in bf16 autocast."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = make_backbone(name, D_IN, make_config(name, D_MODEL, N_LAYERS, K, False)).to(device)
    x = torch.randn(B, T, D_IN, generator=gen).to(device)

    def amp() -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16)

    with torch.no_grad():
        with no_tf32():
            y32, state32 = model(x)
        with amp():
            y, state = model(x)
        finite = bool(torch.isfinite(y).all()) and all(s.dtype == torch.float32 for s in state)
        report.check(
            name, "precision (bf16 vs fp32)", rel(y, y32) if finite else float("nan"), TOL_PRECISION
        )
        for label, ctx, y_ref, s_ref, tol in (("", amp, y, state, TOL_PARITY),
                                               (" fp32", no_tf32, y32, state32, TOL_FP32)):
            with ctx():
                s, ys = model.initial_state(B, device), []
                for t in range(T):
                    yt, s = model.step(x[:, t], s)
                    ys.append(yt)
            report.check(name, f"step == forward{label} (T={T})", rel(torch.stack(ys, 1), y_ref),
                         tol)
            report.check(name, f"step == forward{label} (state)", rel_state(s, s_ref), tol)
            for k in (7, K, T - 5):
                with ctx():
                    y1, s1 = model(x[:, :k])
                    y2, s2 = model(x[:, k:], s1)
                err = max(rel(torch.cat((y1, y2), 1), y_ref), rel_state(s2, s_ref))
                report.check(name, f"chunking{label} (k={k})", err, tol)

        t = 20
        x2 = x.clone()
        x2[:, t:] += torch.randn(B, T - t, D_IN, generator=gen).to(device)
        with amp():
            y2, _ = model(x2)
        err = ((y2[:, :t] - y[:, :t]).abs().max() / y.abs().max()).item()
        report.check(name, f"causality (t={t})", err, TOL_CAUSAL_BF16)
        with no_tf32():
            y2_32, _ = model(x2)
        err = ((y2_32[:, :t] - y32[:, :t]).abs().max() / y32.abs().max()).item()
        report.check(name, f"causality fp32 (t={t})", err, TOL_CAUSAL_FP32)

    ckpt = make_backbone(name, D_IN, make_config(name, D_MODEL, N_LAYERS, K, True)).to(device)
    ckpt.load_state_dict(model.state_dict())
    w = torch.randn(B, T, D_MODEL, generator=gen).to(device)
    for label, ctx, tol in (("", amp, TOL_GRAD), (" fp32", no_tf32, TOL_FP32)):
        outs = []
        for m in (model, ckpt):
            m.zero_grad(set_to_none=True)
            torch.manual_seed(1)
            with ctx():
                out, _ = m(x)
            (out.float() * w).sum().backward()
            outs.append(out.detach())
        ref = {n: p.grad for n, p in model.named_parameters()}
        errs = [rel(outs[1], outs[0])]
        errs += [rel(p.grad, ref[n]) for n, p in ckpt.named_parameters() if p.grad is not None]
        missing = [n for n, p in ckpt.named_parameters() if p.grad is None or ref[n] is None]
        err = float("nan") if missing else max(errs)
        report.check(name, f"checkpointing{label} (y, grads)", err, tol)


def guarded(report: Report, what: str, fn: Callable[[], object]) -> None:
    """``fn()``; an exception is a FAIL line, and the script goes on."""
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        report.fail("section", what, err)


def table_section(report: Report, what: str, fn: Callable[[], str]) -> str:
    """A table section from ``fn()``; one that raises is its error under its name (a FAIL),
    so that the other tables still print."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001
        report.fail("section", what, err)
        return f"== {what}\n  FAILED: {first_line(err)}"


def _kernel_names(fn: Callable[[], object], device: torch.device) -> list[str]:
    """Names of the attention-looking ops and kernels that ``fn`` runs."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    keys = ("flash", "fmha", "attention", "attn", "sdpa")
    names = {e.key for e in prof.key_averages() if any(k in e.key.lower() for k in keys)}
    return sorted(names)


@torch.no_grad()
def sdpa_report(device: torch.device) -> None:
    """Which SDPA backends run the transformer's fast path, and which kernels it launches."""
    print("\n== transformer SDPA backend (fresh state, T <= K, bf16 autocast)")
    torch.manual_seed(0)
    cfg = make_config("transformer", D_MODEL, N_LAYERS, K, False)
    model: Backbone = make_backbone("transformer", D_IN, cfg).to(device)
    x = torch.randn(B, K, D_IN, device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16)
    with amp:
        y_ref, state = model(x)
    for backend in (
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.MATH,
    ):
        try:
            with sdpa_kernel(backend), amp:
                y, _ = model(x)
            print(f"  {backend.name:<20} runs, rel. diff to default {rel(y, y_ref):.1e}")
        except RuntimeError as err:
            print(f"  {backend.name:<20} refused: {str(err).splitlines()[0][:100]}")

    def fwd() -> None:
        with amp:
            model(x)

    def step() -> None:
        with amp:
            model.step(x[:, 0], state)

    fwd_kernels = _kernel_names(fwd, device)
    print(f"  forward kernels: {', '.join(fwd_kernels) or 'none found'}")
    print(f"  FlashAttention in forward: {any('flash' in k.lower() for k in fwd_kernels)}")
    print(f"  step (masked) kernels: {', '.join(_kernel_names(step, device)) or 'none found'}")


def _without_sync(fn: Callable[[], object]) -> tuple[bool, str]:
    """Run ``fn`` with CUDA's sync debug mode set to error: (True, "") if it never syncs the
    host, else (False, the first line of the error)."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        return True, ""
    except Exception as err:  # noqa: BLE001  (a sync is a RuntimeError; any error fails too)
        return False, first_line(err, with_type=False, limit=120)
    finally:
        torch.cuda.set_sync_debug_mode("default")


SYNC_FAMILIES = ("mlp", "gru", "transformer", "mamba")
"""Agents of the no-sync check (those of them in ``--agent-families``): one of each kind."""


def sync_check(device: torch.device, families: Sequence[str], report: Report) -> None:
    """An agent update (after a warm-up) runs with CUDA's sync debug mode set to ``error``:
    no ``.item()``, no host copy, no ``if tensor:``; in every precision and compiled. Replay
    sampling (transitions, and windows starting anywhere) is checked the same way."""
    print(f"\n== agent update without host-device syncs (torch.cuda.set_sync_debug_mode): "
          f"{', '.join(families) or 'no agent'} (of {', '.join(SYNC_FAMILIES)}, those in "
          f"--agent-families); replay sampling")
    if device.type != "cuda":
        print("  skipped: needs CUDA")
        return
    cfg = AgentBenchConfig(batch=8, window=16, d_model=32, head=32, mlp_batch=32, mlp_width=32)
    cases = [(p, False) for p in PRECISIONS] + [("fp32", True)]
    for name in families:
        for precision, compiled in cases:
            what = f"no sync ({precision}{', compiled' if compiled else ''})"
            try:
                if compiled:  # each compiled agent compiles afresh, within dynamo's limits
                    torch.compiler.reset()
                agent = make_bench_agent(name, cfg, device, precision, compile=compiled)
                batch = bench_batch(name, cfg, device)
                for _ in range(3):
                    agent.update(batch)
                torch.cuda.synchronize(device)
            except Exception as err:  # noqa: BLE001  (the other agents are still checked)
                report.fail(name, what, err)
                continue
            ok, why = _without_sync(lambda: agent.update(batch))  # noqa: B023
            if not ok:
                report.failed.append(f"{name}/{what}")
            print(f"{'PASS' if ok else 'FAIL'}  {name:<12} {what:<26} {why}")
    try:
        buffers = _filled_buffers(device)
    except Exception as err:  # noqa: BLE001
        report.fail("buffer", "filling", err)
        buffers = []
    for kind, buffer in buffers:
        ok, why = _without_sync(lambda: buffer.sample(32))  # noqa: B023
        if not ok:
            report.failed.append(f"buffer/{kind}")
        print(f"{'PASS' if ok else 'FAIL'}  {'buffer':<12} {kind + ' sample':<26} {why}")


def _filled_buffers(device: torch.device) -> list[tuple[str, ReplayBuffer | SequenceReplayBuffer]]:
    """A transition buffer and a sequence buffer holding 200 random steps of 2 envs."""
    gen = torch.Generator(device=device).manual_seed(0)
    flat = ReplayBuffer(1000, OBS_DIM, ACT_DIM, device, gen)
    seq = SequenceReplayBuffer(ReplayConfig(buffer_size=1000, batch_size=32, seq_len=16),
                               num_envs=2, obs_dim=OBS_DIM, action_dim=ACT_DIM, device=device,
                               generator=gen)
    rng = torch.Generator().manual_seed(0)
    for t in range(200):
        obs, nxt = torch.randn(2, OBS_DIM, generator=rng), torch.randn(2, OBS_DIM, generator=rng)
        act, rew = torch.rand(2, ACT_DIM, generator=rng), torch.randn(2, generator=rng)
        term, trunc = torch.zeros(2), torch.full((2,), float(t % 50 == 49))
        flat.add(obs, act, rew, nxt, term, trunc)
        seq.add(obs, act, rew, nxt, term, trunc)
    return [("transition", flat), ("sequence", seq)]


def agent_speed_report(device: torch.device, families: Sequence[str], updates: int) -> str:
    """The agent table of ``bench/throughput.py --sequence`` on ``device``, under its header."""
    cfg = AgentBenchConfig(updates=updates, warmup=5)
    rows = agent_table(device, cfg, families)
    return (f"== agent updates/s on {device} (fp32, bf16, compiled)\n"
            + format_agent_table(rows, cfg, device, torch.get_num_threads()))


def checkpoint_memory_report(device: torch.device, window: int, families: Sequence[str]) -> str:
    """Peak memory of one bf16 agent update with gradient checkpointing off and on, for the
    sequence backbones among ``families`` (the MLP has no window to checkpoint).

    Returns:
        The section: its header, then a Markdown table or why it was skipped.
    """
    families = [name for name in families if name != "mlp"]
    header = (f"== peak memory of an agent update, window {window}, checkpointing off / on: "
              f"{', '.join(families) or 'none'} (the sequence backbones in --agent-families)")
    if not families:
        return f"{header}\n  skipped: no sequence backbone in --agent-families"
    if device.type != "cuda":
        return f"{header}\n  skipped: needs CUDA"
    cfg = AgentBenchConfig(window=window, n_layers=2)
    lines = [header,
             f"Peak memory of one agent update (bf16, batch {cfg.batch} x window {window}, "
             f"d_model {cfg.d_model}, {cfg.n_layers} layers, head {cfg.head})",
             "| backbone | off MiB | on MiB | on / off |", "|---|---:|---:|---:|"]
    for name in families:
        peaks = []
        for ckpt in (False, True):
            agent = make_bench_agent(name, cfg, device, "bf16", grad_checkpoint=ckpt)
            batch = bench_batch(name, cfg, device, window)
            agent.update(batch)  # optimizer states exist from here on
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            agent.update(batch)
            torch.cuda.synchronize(device)
            peaks.append((torch.cuda.max_memory_allocated(device) - base) / 2**20)
            del agent, batch
            torch.cuda.empty_cache()
        lines.append(f"| {name} | {peaks[0]:.0f} | {peaks[1]:.0f} | {peaks[1] / peaks[0]:.2f} |")
        print(f"  {name}: {peaks[0]:.0f} MiB off, {peaks[1]:.0f} MiB on", file=sys.stderr)
    return "\n".join(lines)


def mlp_vs_bare_report(device: torch.device, updates: int, families: Sequence[str]) -> str:
    """Updates/s of the MLP agent (eager fp32, bf16, compiled) and of ``bench_bare``, batch 256
    and two 256-wide layers in both, on the same device, where mlp is among ``families``.

    Returns:
        The section: its header, then a Markdown table or why it was skipped.
    """
    header = f"== MLP agent vs the plain eager update (bench_bare) on {device}"
    if "mlp" not in families:
        return f"{header}\n  skipped: mlp is not in --agent-families"
    cfg = AgentBenchConfig(updates=updates, warmup=20)
    bare = bench_bare(OBS_DIM, ACT_DIM, updates, device.type)
    lines = [header,
             f"MLP DDPG updates/s on {device}, batch {cfg.mlp_batch}, {updates} timed updates",
             "| update | updates/s | / bare |", "|---|---:|---:|",
             f"| bench_bare (plain eager) | {bare:.0f} | 1.00x |"]
    for mode in ("fp32", "bf16", "compile"):
        ups = bench_agent_update("mlp", mode, cfg, device).updates_per_s
        lines.append(f"| ours {mode} | {ups:.0f} | {ups / bare:.2f}x |")
    return "\n".join(lines)


def benchmark_report(device: torch.device, lengths: Sequence[int],
                     families: Sequence[str]) -> str:
    """The table of ``bench/backbones.py`` in bf16 on ``device`` under its header, after the
    Mamba scan lines where mamba is among ``families``."""
    bench = benchmark_args(["--device", device.type, "--dtype", "bf16",
                            "--lengths", *map(str, lengths), "--families", *families])
    rows, _ = run_benchmark(bench)
    lines = [f"== benchmark: bench/backbones.py on {device.type} in bf16"]
    if "mamba" in families:
        lines += mamba_scan_lines(bench)
    return "\n".join([*lines, format_table(rows, bench)])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options, each bad value refused with a parser error (exit 2), with or
    without a CUDA device."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU (tests this script)")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024],
                   help="sequence lengths of the benchmark table, positive integers")
    p.add_argument("--families", nargs="+", default=list(BACKBONE_NAMES), choices=BACKBONE_NAMES)
    p.add_argument("--agent-families", nargs="*", default=list(BACKBONE_NAMES),
                   choices=BACKBONE_NAMES,
                   help="agents of the agent table, of the no-sync check (those of mlp, gru,\n"
                   "transformer, mamba), of the peak-memory table (the sequence ones) and of\n"
                   "the MLP vs bench_bare table (mlp); none: skip all four")
    p.add_argument("--agent-updates", type=int, default=50,
                   help="timed updates per cell, a positive integer")
    p.add_argument("--memory-window", type=int, default=1024,
                   help="window of the peak-memory table, a positive integer")
    args = p.parse_args(argv)
    require_positive(p, args, "--lengths", "--agent-updates", "--memory-window")
    require_distinct(p, args, "--lengths", "--families", "--agent-families")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks and the benchmark; returns the exit code."""
    args = parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    elif args.allow_cpu:
        device = torch.device("cpu")
        print(f"device: cpu (--allow-cpu), torch {torch.__version__}")
    else:
        print("no CUDA device; skipped")
        return 0

    report = Report()
    print(f"== contract checks, bf16 autocast and fp32: B={B} T={T} d_model={D_MODEL} K={K}")
    for name in args.families:
        try:
            contract_checks(name, device, report)
        except ModuleNotFoundError as err:
            print(f"SKIP  {name:<12} module {err.name} is not importable yet")
        except Exception as err:  # noqa: BLE001  (one family's failure leaves the others)
            report.fail(name, "contract checks", err)
    if "transformer" in args.families:
        guarded(report, "sdpa report", lambda: sdpa_report(device))

    sections = []
    if args.agent_families:
        sync_check(device, [f for f in SYNC_FAMILIES if f in args.agent_families], report)
        sections += [
            table_section(report, "agent table", lambda: agent_speed_report(
                device, args.agent_families, args.agent_updates)),
            table_section(report, "peak memory table", lambda: checkpoint_memory_report(
                device, args.memory_window, args.agent_families)),
            table_section(report, "MLP vs bench_bare table", lambda: mlp_vs_bare_report(
                device, 10 * args.agent_updates, args.agent_families)),
        ]
    sections.append(table_section(report, "benchmark table", lambda: benchmark_report(
        device, args.lengths, args.families)))
    summary = f"FAILED: {', '.join(report.failed)}" if report.failed else "all checks PASS"
    print(f"\n{summary}")
    for section in sections:
        print(f"\n{section}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
