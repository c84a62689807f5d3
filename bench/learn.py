"""Learning benchmark: MLP-DDPG on Pendulum-v1 over seeds; prints return by step and seed.

    python bench/learn.py                       # 3 seeds, 20k steps, seeds in parallel
    python bench/learn.py --seeds 0 1 2 3 --total-steps 30000 --jobs 2
    python bench/learn.py --precision bf16      # the same with bf16 autocast in the update

Goal: the mean evaluation return reaches at least -200 by 20,000 env steps on every seed.
A seed that fails does not cost the others' table: it is named after it, with its traceback,
and the script exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from argchecks import require_distinct, require_positive  # bench/argchecks.py (same folder)

from agents import train
from rlkit.config import replace_fields
from rlkit.faults import EnvError
from rlkit.rundir import dir_arg
from rlkit.runlog import read_metrics


def run_one(args: tuple[train.TrainConfig, str]) -> list[dict]:
    cfg, run_dir = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with train.one_line_warnings():  # as train.py prints them: "warning: ..."
        train.main(replace_fields(cfg, run_dir=run_dir))
    return [r for r in read_metrics(run_dir) if "eval_return_mean" in r]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="Pendulum-v1", help="the task (default Pendulum-v1)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="one run per seed (default 0 1 2)")
    p.add_argument("--total-steps", type=int, default=20_000,
                   help="env steps per run (default 20000)")
    p.add_argument("--eval-every", type=int, default=2_000,
                   help="env steps between evaluations (default 2000)")
    p.add_argument("--eval-episodes", type=int, default=5,
                   help="episodes per evaluation (default 5)")
    p.add_argument("--jobs", type=int, default=min(3, os.cpu_count() or 1),
                   help="runs at a time, one thread each (default: up to 3)")
    p.add_argument("--threshold", type=float, default=-200.0,
                   help="the final return every seed must reach for PASS (default -200)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="the update's arithmetic (default fp32)")
    p.add_argument("--out", type=dir_arg, default=None,
                   help="directory for the runs (default: a temp dir)")
    a = p.parse_args()
    require_positive(p, a, "--jobs")
    require_distinct(p, a, "--seeds")
    if a.out is not None and Path(a.out).exists() and \
            (not Path(a.out).is_dir() or any(Path(a.out).iterdir())):
        p.error(f"--out {a.out} is not an empty directory: expected a new or empty one")
    try:  # every flag checked, and the env made, before a run starts
        base = replace_fields(train.TrainConfig(), env=a.env, total_steps=a.total_steps,
                              eval_every=a.eval_every, eval_episodes=a.eval_episodes,
                              progress=False, device="cpu", precision=a.precision)
        jobs = [replace_fields(base, seed=s) for s in a.seeds]
        train.make_env(a.env).close()
    except (ValueError, EnvError) as e:
        p.error(str(e))
    out = Path(a.out or tempfile.mkdtemp(prefix="rlkit-learn-"))
    jobs = [(cfg, str(out / f"seed{cfg.run.seed}")) for cfg in jobs]
    with ProcessPoolExecutor(a.jobs) as pool:  # a seed that fails leaves the others' table
        futures = [pool.submit(run_one, job) for job in jobs]
        done: list[tuple[int, list[dict]]] = []
        failed: list[tuple[int, BaseException]] = []
        for seed, fut in zip(a.seeds, futures):
            try:
                done.append((seed, fut.result()))
            except Exception as e:  # noqa: BLE001 - every failure is printed below
                failed.append((seed, e))
    seeds = [s for s, rows in done if rows]
    by = [{r["step"]: r["eval_return_mean"] for r in rows} for _, rows in done if rows]
    steps = sorted({st for b in by for st in b})
    print(f"\n{a.env}, MLP-DDPG ({a.precision}), eval return (mean of {a.eval_episodes} "
          "episodes) by env step")
    print("| step | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---:|" + "---:|" * (len(seeds) + 1))
    for st in steps:
        vals = [b.get(st) for b in by]
        ok = [v for v in vals if v is not None]
        cells = " | ".join("" if v is None else f"{v:.1f}" for v in vals)
        print(f"| {st} | {cells} | {sum(ok) / len(ok):.1f} |")
    final = [b[max(b)] for b in by]
    passed = bool(final) and not failed and all(v >= a.threshold for v in final)
    print(f"\nfinal returns {[round(v, 1) for v in final]}: "
          f"{'PASS' if passed else 'FAIL'} (every seed >= {a.threshold}); runs in {out}")
    for s, e in failed:  # the pool's exception carries the run's own traceback as its cause
        print(f"seed {s}: error: {type(e).__name__}: {e}", file=sys.stderr)
        if e.__cause__ is not None:
            print(f"seed {s}: its traceback:\n{str(e.__cause__).strip()}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} of {len(a.seeds)} seeds failed: "
              f"{', '.join(str(s) for s, _ in failed)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
