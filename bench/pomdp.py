"""Memory benchmark: every backbone on a partially observed task, over seeds, in parallel.

    # Pendulum seeing only its angular velocity, 30k env steps, GRU and MLP, 3 seeds, with
    # TD3's options and 0.5 updates per env step (every GRU seed must end above -200)
    python bench/pomdp.py --backbones gru mlp --td3 --updates-per-step 0.5 \
        --eval-episodes 20 --jobs 2
    # every backbone, the same 30k env steps (0.25 updates per step keeps Mamba affordable)
    python bench/pomdp.py --jobs 2
    # the memory corridor (cue shown once, decision after L steps): success rate per backbone
    python bench/pomdp.py --env rlkit/MemoryCorridor-L20-v0 --total-steps 6300 \
        --learning-starts 630 --updates-per-step 1 --window-start episode --seq-len 21 \
        --eval-every 1050 --eval-episodes 20 --last-k 2 --jobs 2

Prints one table: final evaluation return (mean and spread over seeds), success rate where the
task reports one, wall time and updates/s, with the settings used. The MLP backbone is the
memoryless control: it trains on the same windows but cannot remember.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from agents import train
from agents.ddpg import DDPGConfig
from rlkit.backbones import BACKBONE_NAMES
from rlkit.config import replace_fields
from rlkit.launch import GridRun, launch
from rlkit.runlog import read_metrics


def summarize(run_dir: Path, last_k: int) -> dict[str, float]:
    """Final return and success (mean of the last ``last_k`` evaluations), best evaluation,
    wall time and mean updates/s of one run."""
    rows = read_metrics(run_dir)
    evals = [r for r in rows if "eval_return_mean" in r]
    last = evals[-last_k:]
    train_rows = [r for r in rows if r.get("updates_per_s", 0) > 0]
    out = {
        "final": statistics.mean(r["eval_return_mean"] for r in last),
        "best": max(r["eval_return_mean"] for r in evals),
        "wall": max(r["wall_time"] for r in rows),
        "ups": statistics.mean(r["updates_per_s"] for r in train_rows) if train_rows else 0.0,
    }
    if "eval_success_rate" in last[-1]:
        out["success"] = statistics.mean(r["eval_success_rate"] for r in last)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="rlkit/Pendulum-V-v0")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONE_NAMES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--total-steps", type=int, default=30_000)
    p.add_argument("--learning-starts", type=int, default=1_000)
    p.add_argument("--updates-per-step", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--window-start", choices=["any", "episode"], default="any")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--head", type=int, default=256)
    p.add_argument("--prev-reward", action=argparse.BooleanOptionalAction, default=True,
                   help="memory backbones also see the previous reward (the MLP control never "
                        "sees previous actions or rewards, which would give it a memory)")
    p.add_argument("--eval-every", type=int, default=3_000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--last-k", type=int, default=1,
                   help="final = mean of the last k evaluations of a run")
    p.add_argument("--context", type=int, default=64, help="transformer attention window")
    p.add_argument("--n-layers", type=int, default=1)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--actor-lr", type=float, default=1e-3)
    p.add_argument("--critic-lr", type=float, default=1e-3)
    p.add_argument("--td3", action="store_true",
                   help="TD3's three changes: twin critics, target smoothing 0.2 (clip 0.5), "
                        "actor and targets updated every 2nd critic update")
    p.add_argument("--threshold", type=float, default=-200.0,
                   help="return every GRU seed must reach (Pendulum-V)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=None, help="grid directory (default: a temp dir)")
    a = p.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="rlkit-pomdp-"))
    base = replace_fields(
        train.TrainConfig(), env=a.env, total_steps=a.total_steps,
        learning_starts=a.learning_starts,
        updates_per_step=a.updates_per_step, batch_size=a.batch_size, seq_len=a.seq_len,
        window_start=a.window_start, d_model=a.d_model, prev_reward=a.prev_reward,
        context=a.context, n_layers=a.n_layers,
        eval_every=a.eval_every, eval_episodes=a.eval_episodes, progress=False, device="cpu",
        log_every=1_000,
        agent=DDPGConfig(head_hidden=(a.head,), gamma=a.gamma, actor_lr=a.actor_lr,
                         critic_lr=a.critic_lr, twin_critics=a.td3,
                         target_noise=0.2 if a.td3 else 0.0, policy_delay=2 if a.td3 else 1))
    runs = [GridRun(f"{b}__s{s}", replace_fields(base, backbone=b, seed=s,
                                                 prev_reward=a.prev_reward and b != "mlp"))
            for b in a.backbones for s in a.seeds]
    t0 = time.time()
    outcomes = launch(train.run_in, runs, out, jobs=a.jobs)
    print(f"\n{a.env}: {a.total_steps} env steps, {a.updates_per_step} updates/step, batch "
          f"{a.batch_size} windows of {a.seq_len} ({a.window_start} start), d_model {a.d_model}, "
          f"head {a.head}, gamma {a.gamma}, lr actor {a.actor_lr} critic {a.critic_lr}"
          f"{', TD3 options' if a.td3 else ''}, memory backbones see prev action"
          f"{' + reward' if a.prev_reward else ''}"
          f" (mlp: neither), "
          f"{len(a.seeds)} seeds, eval {a.eval_episodes} episodes, final = mean of the last "
          f"{a.last_k} eval(s); {a.n_layers} layer(s), transformer context {a.context}; grid "
          f"{time.time() - t0:.0f} s with {a.jobs} jobs; runs in {out}")
    memory = None
    print("| backbone | final return mean | min | max | best eval (mean) | success rate "
          "| wall s | updates/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for b in a.backbones:
        mine = [o for o in outcomes if o.name.startswith(f"{b}__")]
        failed = [o for o in mine if o.error]
        if failed:
            print(f"| {b} | failed: {failed[0].error} | | | | | | |")
            continue
        s = [summarize(o.run_dir, a.last_k) for o in mine]
        finals = [x["final"] for x in s]
        succ = [x["success"] for x in s if "success" in x]
        succ_cell = f"{statistics.mean(succ):.2f} ({', '.join(f'{v:.2f}' for v in succ)})" \
            if succ else "n/a"
        print(f"| {b} | {statistics.mean(finals):.1f} | {min(finals):.1f} | {max(finals):.1f} | "
              f"{statistics.mean(x['best'] for x in s):.1f} | "
              f"{succ_cell} | {statistics.mean(x['wall'] for x in s):.0f} | "
              f"{statistics.mean(x['ups'] for x in s):.1f} |")
        if b == "gru":
            memory = finals
    if memory is not None and "Pendulum" in a.env:
        ok = all(v >= a.threshold for v in memory)
        print(f"\nGRU final returns {[round(v, 1) for v in memory]}: "
              f"{'PASS' if ok else 'FAIL'} (every seed >= {a.threshold})")


if __name__ == "__main__":
    main()
