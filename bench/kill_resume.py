"""``kill -9`` runs at random moments, resume them, and compare with an uninterrupted run.

    python bench/kill_resume.py --kills 50 --out /tmp/kills [--checkpoint-minutes 0.02]

For each case (an MLP run on Pendulum-v1 and a GRU run on rlkit/Pendulum-V-v0, small enough to
take a minute at one thread) the script first trains an uninterrupted reference run. Then, until
``--kills`` kills are spent (cases taken in turn), it starts the same run in a fresh directory,
sends SIGKILL at a uniformly random moment of the reference's wall time, and resumes it with
``--resume`` (each resumed process may itself be killed again, with probability ``--again``)
until it ends with exit code 0. A run killed before it wrote ``config.json`` has nothing to
resume and is started again with its first command (what ``--resume`` tells the user to do);
one killed after its final checkpoint is finished (``--resume`` says so). The finished run
must log the same ``metrics.jsonl`` rows as the reference (timing fields left out) and end
with the same weights, bit for bit. Prints one row per process (when it was killed, the step
it started from) and a summary table; exits 1 if any run differs or does not resume.

``--checkpoint-minutes`` is passed to every run (by default the runs use the package default,
a checkpoint at the start, every 5 minutes and at the end); a small value makes kills land
between and during many checkpoint writes.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from rlkit.checkpoint import load_checkpoint
from rlkit.rundir import RunPaths, dir_arg
from rlkit.runlog import read_metrics

TIMING = {"wall_time", "sps", "updates_per_s", "peak_memory_mb"}

CASES = {
    "mlp": ["--env", "Pendulum-v1", "--backbone", "mlp", "--total-steps", "3000",
            "--learning-starts", "500", "--eval-every", "1000", "--eval-episodes", "2",
            "--log-every", "250"],
    "gru": ["--env", "rlkit/Pendulum-V-v0", "--backbone", "gru", "--total-steps", "2000",
            "--learning-starts", "600", "--batch-size", "8", "--d-model", "32",
            "--eval-every", "1000", "--eval-episodes", "2", "--log-every", "200",
            "--prev-reward"],
}

ROOT = Path(__file__).resolve().parents[1]
"""The repository root, where train.py is (the script runs from any directory)."""


def _cmd(args: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--no-progress", "--device", "cpu", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run)]


def _same_weights(a: Path, b: Path) -> bool:
    sa = load_checkpoint(a / "checkpoint.pt")["agent"]
    sb = load_checkpoint(b / "checkpoint.pt")["agent"]

    def flat(tree, prefix=""):
        if isinstance(tree, dict):
            for k, v in tree.items():
                yield from flat(v, f"{prefix}{k}.")
        elif isinstance(tree, torch.Tensor):
            yield prefix, tree
    fa, fb = dict(flat(sa)), dict(flat(sb))
    return fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(_cmd(args), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--out", type=dir_arg, required=True)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--checkpoint-minutes", type=float, default=None)
    p.add_argument("--again", type=float, default=0.3,
                   help="probability that a resumed process is killed again")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.kills < 1:
        p.error(f"--kills must be >= 1, got {a.kills}")
    if not 0.0 <= a.again <= 1.0:
        p.error(f"--again must be a probability in [0, 1], got {a.again}")
    if a.checkpoint_minutes is not None and not (math.isfinite(a.checkpoint_minutes)
                                                 and a.checkpoint_minutes >= 0):
        p.error(f"--checkpoint-minutes must be a finite number >= 0 (0: off, as train.py "
                f"takes it), got {a.checkpoint_minutes}")
    if a.out.is_dir() and (old := sorted(d.name for d in a.out.glob("*_t[0-9][0-9][0-9]"))):
        p.error(f"--out {a.out} holds the trials of an earlier invocation ({', '.join(old[:3])}"
                f"{', ...' if len(old) > 3 else ''}): their runs would be resumed, not killed "
                "and resumed afresh; give a new --out (a *_ref run in it is reused)")
    rng = random.Random(a.seed)
    extra = [] if a.checkpoint_minutes is None else ["--checkpoint-minutes",
                                                     str(a.checkpoint_minutes)]
    a.out.mkdir(parents=True, exist_ok=True)
    ref_time: dict[str, float] = {}
    for case in a.cases:
        ref = a.out / f"{case}_ref"
        if not (ref / "checkpoint.pt").exists():
            t0 = time.perf_counter()
            subprocess.run(_cmd([*CASES[case], *extra, "--run-dir", str(ref)]), env=_env(),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ref_time[case] = time.perf_counter() - t0
        else:
            ref_time[case] = read_metrics(ref)[-1]["wall_time"] + 3.0
        print(f"reference {case}: {ref_time[case]:.1f} s", flush=True)

    kills, trial, failures = 0, 0, 0
    summary: dict[str, list[int]] = {c: [0, 0, 0] for c in a.cases}  # kills, runs, equal
    print(f"{'case':>4} {'trial':>5} {'proc':>4} {'starts at step':>14} {'killed at s':>11} "
          f"{'exit':>5}")
    while kills < a.kills:
        case = a.cases[trial % len(a.cases)]
        run = a.out / f"{case}_t{trial:03d}"
        args = [*CASES[case], *extra, "--run-dir", str(run)]
        n = 0
        while True:
            # killed before it wrote config.json: nothing to resume, start it again (the
            # message of --resume says so); else resume
            fresh = n == 0 or not RunPaths(run).config.exists()
            proc = _start(args if fresh else ["--resume", str(run), *extra])
            at = None
            if kills < a.kills and (n == 0 or rng.random() < a.again):
                wait = rng.uniform(0.2, ref_time[case])
                try:
                    proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    at, kills = wait, kills + 1
                    summary[case][0] += 1
            _, err = proc.communicate()
            m = re.search(r"resuming \S+ at step (\d+)", err or "")
            start = "0 (new)" if fresh else (m.group(1) if m else "? (killed first)")
            print(f"{case:>4} {trial:>5} {n:>4} {start:>14} "
                  f"{'-' if at is None else f'{at:.1f}':>11} {proc.returncode:>5}", flush=True)
            n += 1
            finished = proc.returncode == 2 and "of --total-steps" in (err or "") \
                and "the run is at step" in (err or "")  # killed after its final checkpoint
            if proc.returncode == 0 or finished:
                break
            if proc.returncode != -signal.SIGKILL:
                print(f"run {run} ended with {proc.returncode}: {(err or '').strip()[-500:]}")
                break
        trial += 1
        summary[case][1] += 1
        ref = a.out / f"{case}_ref"
        same = (proc.returncode == 0 or finished) and _rows(run) == _rows(ref) \
            and _same_weights(run, ref)
        summary[case][2] += same
        if not same:
            failures += 1
            print(f"run {run}: DIFFERS from {ref} (or did not finish)", flush=True)

    print("\n| case | kills | runs | resumed to the end, equal to uninterrupted |")
    print("|---|---:|---:|---:|")
    for case, (k, n, eq) in summary.items():
        print(f"| {case} | {k} | {n} | {eq} / {n} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
