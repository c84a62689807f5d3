"""One script for a CUDA machine: the backbone contract in bf16, the SDPA backend, the benchmark.

1. For every registered family, under bf16 autocast (fp32 parameters) on the GPU: precision
   (vs fp32), step == forward, chunking, causality (also in fp32) and gradient checkpointing,
   each printed as PASS / FAIL with the measured error and its tolerance.
2. For the transformer: which ``SDPBackend`` runs the fresh-state forward (each forced in turn
   with ``sdpa_kernel``) and which attention kernels a profiled forward and step launch
   (FlashAttention shows up as a kernel name containing ``flash``).
3. The table of ``bench/backbones.py`` on cuda in bf16, printed last.

Exits 0 with "no CUDA device; skipped" where there is no GPU, 1 if a check failed.
``--allow-cpu`` runs everything on the CPU instead, to test this script without a GPU.

Example::

    python bench/gpu_check.py                 # on a CUDA machine, a few minutes
    python bench/gpu_check.py --allow-cpu --lengths 32 --families mlp gru transformer
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.backbones import (  # noqa: E402
    format_table,
    make_config,
    mamba_scan_lines,
    parse_args,
    run_benchmark,
)
from rlkit.backbones import BACKBONE_NAMES, Backbone, State, make_backbone  # noqa: E402

B, T, D_IN, D_MODEL, N_LAYERS, K = 8, 48, 16, 64, 2, 16
TOL_PRECISION = 5e-2  # relative L2 error, bf16 autocast vs fp32
TOL_PARITY = 3e-2  # relative L2 error between two bf16 computations of the same quantity
# max |change of y[:, :t]| / max |y| when x[:, t:] changes. In bf16 a change of fp32 round-off
# (FFT convolutions spread it over all times) can flip a rounding: one bf16 ulp is up to ~4e-3
# of max |y|. The fp32 check (no autocast) bounds any real leak much tighter.
TOL_CAUSAL_BF16 = 1e-2
TOL_CAUSAL_FP32 = 1e-5
TOL_GRAD = 5e-2  # relative L2 error of outputs and of each parameter's gradient, ckpt on vs off


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

    def check(self, family: str, what: str, err: float, tol: float) -> None:
        ok = err < tol  # NaN fails
        if not ok:
            self.failed.append(f"{family}/{what}")
        print(f"{'PASS' if ok else 'FAIL'}  {family:<12} {what:<26} err={err:.2e}  tol={tol:.0e}")


def contract_checks(name: str, device: torch.device, report: Report) -> None:
    """The contract invariants for one family in bf16 autocast."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = make_backbone(name, D_IN, make_config(name, D_MODEL, N_LAYERS, K, False)).to(device)
    x = torch.randn(B, T, D_IN, generator=gen).to(device)

    def amp() -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16)

    with torch.no_grad():
        y32, _ = model(x)
        with amp():
            y, state = model(x)
        finite = bool(torch.isfinite(y).all()) and all(s.dtype == torch.float32 for s in state)
        report.check(
            name, "precision (bf16 vs fp32)", rel(y, y32) if finite else float("nan"), TOL_PRECISION
        )

        with amp():
            s, ys = model.initial_state(B, device), []
            for t in range(T):
                yt, s = model.step(x[:, t], s)
                ys.append(yt)
        report.check(name, f"step == forward (T={T})", rel(torch.stack(ys, 1), y), TOL_PARITY)
        report.check(name, "step == forward (state)", rel_state(s, state), TOL_PARITY)

        for k in (7, K, T - 5):
            with amp():
                y1, s1 = model(x[:, :k])
                y2, s2 = model(x[:, k:], s1)
            err = max(rel(torch.cat((y1, y2), 1), y), rel_state(s2, state))
            report.check(name, f"chunking (k={k})", err, TOL_PARITY)

        t = 20
        x2 = x.clone()
        x2[:, t:] += torch.randn(B, T - t, D_IN, generator=gen).to(device)
        with amp():
            y2, _ = model(x2)
        err = ((y2[:, :t] - y[:, :t]).abs().max() / y.abs().max()).item()
        report.check(name, f"causality (t={t})", err, TOL_CAUSAL_BF16)
        y2_32, _ = model(x2)
        err = ((y2_32[:, :t] - y32[:, :t]).abs().max() / y32.abs().max()).item()
        report.check(name, f"causality fp32 (t={t})", err, TOL_CAUSAL_FP32)

    ckpt = make_backbone(name, D_IN, make_config(name, D_MODEL, N_LAYERS, K, True)).to(device)
    ckpt.load_state_dict(model.state_dict())
    w = torch.randn(B, T, D_MODEL, generator=gen).to(device)
    outs = []
    for m in (model, ckpt):
        torch.manual_seed(1)
        with amp():
            out, _ = m(x)
        (out.float() * w).sum().backward()
        outs.append(out.detach())
    ref = {n: p.grad for n, p in model.named_parameters()}
    errs = [rel(outs[1], outs[0])]
    errs += [rel(p.grad, ref[n]) for n, p in ckpt.named_parameters() if p.grad is not None]
    missing = [n for n, p in ckpt.named_parameters() if p.grad is None or ref[n] is None]
    err = float("nan") if missing else max(errs)
    report.check(name, "checkpointing (y, grads)", err, TOL_GRAD)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checks and the benchmark; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU (tests this script)")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--families", nargs="+", default=list(BACKBONE_NAMES), choices=BACKBONE_NAMES)
    args = p.parse_args(argv)
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
    print(f"== contract checks, bf16 autocast: B={B} T={T} d_model={D_MODEL} K={K}")
    for name in args.families:
        try:
            contract_checks(name, device, report)
        except ModuleNotFoundError as err:
            print(f"SKIP  {name:<12} module {err.name} is not importable yet")
    if "transformer" in args.families:
        sdpa_report(device)

    print("\n== benchmark")
    bench = parse_args(
        [
            "--device",
            device.type,
            "--dtype",
            "bf16",
            "--lengths",
            *map(str, args.lengths),
            "--families",
            *args.families,
        ]
    )
    rows, _ = run_benchmark(bench)
    if "mamba" in args.families:
        print("\n".join(mamba_scan_lines(bench)))
    summary = f"FAILED: {', '.join(report.failed)}" if report.failed else "all checks PASS"
    print(f"\n{summary}\n")
    print(format_table(rows, bench))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
