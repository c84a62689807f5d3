"""Backbones on a partially observed task over seeds: returns by step and at the end.

    python bench/pomdp.py --jobs 2                       # every family on Pendulum-V, 3 seeds
    python bench/pomdp.py --env rlkit/Pendulum-P-v0 --backbones gru s4 --seeds 0 1
    python bench/pomdp.py --backbones gru -- --updates-per-step 0.5 --agent.gamma 0.9
    python bench/pomdp.py --anchor pomdp-baselines --jobs 2   # their Pendulum-V settings

Every run is configured exactly as ``python train.py`` would configure it from the same flags
(the recipe made for the env, then the flags after ``--``), so the table is what a user gets.
It prints, per backbone, the final return (mean of the last ``--last-k`` evaluations) per
seed, its mean / min / max, the return at the steps of ``--at``, the actor's saturation at the
last log (fraction of actions at the bounds), wall time and updates/s.

``--anchor pomdp-baselines`` runs our agent with the published Pendulum-V settings of
pomdp-baselines (Ni et al. 2022, ``configs/pomdp/pendulum/v/rnn.yml``: LSTM 128, heads
[128, 128], whole 200-step episodes, batch 32 episodes, one update per env step, lr 3e-4,
gamma 0.9, tau 0.005, 5 random episodes first, TD3's twin critics and target smoothing 0.2
(clip 0.5), Gaussian exploration 0.1, 1,000 updates on the random episodes before the first
learned one, and their networks: observation, action and reward embedded apart (``Linear ->
ReLU``, 32, 8 and 8 wide), orthogonal recurrent weights with zero biases, the current step
beside the encoding in both heads through ReLU embedders (the actor's ``o_t``, 32 wide; the
critics' ``[o_t, a_t]``, 48 wide), the heads' hidden biases at 0.1 and last layers uniform in
[-3e-3, 3e-3], both critics' heads on one RNN; not theirs: our actor climbs critic 0's Q where
theirs climbs ``min(Q1, Q2)`` (add ``--agent.actor-q min`` for that), and we update after
every env step where they collect an episode and then make 200 updates (``--update-every
200``)) and prints our return at 6k, 12k and 18k env steps beside their reported figure (read
off their published curves: about -139 by 12k steps; their file's default algorithm is SAC,
the TD3 variant is what we run).

On Pendulum tasks a last row gives the full-state optimum (:mod:`envs.reference`, dynamic
programming) on each seed's own evaluation episodes: where an episode starts matters as much as
the policy, and even the optimum's return differs by tens of points from one seed's ten starts
to another's (-170, -161 and -141 for seeds 0, 1 and 2). Where the runs discount (gamma < 1), one
more row gives the best an agent with that discount aims for: the full-state policy that
maximises the discounted return, its undiscounted return on the same episodes (at the anchor's
gamma 0.9: -210.5, -181.7, -166.5, a short-sighted swing-up; at 0.99: -170.3, -161.4, -143.8).
``--no-reference`` leaves both out.
``--common-episodes N`` also evaluates every run's final checkpoint on the same N episodes
(from ``--common-seed``), with the optimum on those, so that seeds and families are compared
on equal starts. ``--gap STEPS`` prints where each final policy loses against that optimum on
its own evaluation episodes: optimum minus policy, by STEPS-step stretch of the episode (mean
over the episodes), and its worst episode (on Pendulum-V a slow swing-up shows in the first
stretches, a pendulum held off upright in every later one, a fall in one episode's row).
``--final-policy actor|target`` takes each run's final return from its final
checkpoint instead of its log: that policy (the actor, or the target actor of ``--eval-policy
target``) on the run's own evaluation episodes, so that runs logged with either can be read
both ways (the common episodes then use it too). ``--summarize DIR`` prints the tables of a grid
already run into DIR, without training: its backbones and seeds are the run directories there
(``BACKBONE__sSEED``) unless ``--backbones`` / ``--seeds`` name them, each run as its
``config.json`` records it; a run without its final evaluation at its ``--total-steps`` is
listed below the table with the step it reached. ``--resume`` continues an interrupted grid in
``--out`` (the same env and flags, checked against the grid's ``bench.json``): finished runs
are kept, the others go on from their last checkpoint. An ``--out`` that is not empty is
refused without ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from agents import cli, train
from agents.evaluate import evaluate_run, own_episodes, run_rewards
from agents.recipes import registered_id
from envs.reference import PendulumOptimum, optimum_returns, optimum_rewards
from rlkit.backbones import BACKBONE_NAMES
from rlkit.config import EVAL_POLICIES
from rlkit.faults import EnvError
from rlkit.launch import GridInterrupted, GridRun, RunOutcome, launch
from rlkit.rundir import RunPaths, RunRecord, dir_arg
from rlkit.runlog import read_metrics
from rlkit.seeding import eval_env_seed

ANCHORS = {
    "pomdp-baselines": {
        "env": "rlkit/Pendulum-V-v0",
        "backbones": ["lstm"],
        "at": [6000, 12000, 18000],
        "published": {12000: -139.0},
        "flags": ["--recipe", "none", "--total-steps", "18000", "--learning-starts", "1000",
                  "--batch-size", "32", "--window-start", "episode", "--seq-len", "200",
                  "--updates-per-step", "1", "--d-model", "128",
                  "--agent.head-hidden", "128", "128", "--agent.actor-lr", "3e-4",
                  "--agent.critic-lr", "3e-4", "--agent.gamma", "0.9", "--agent.tau", "0.005",
                  "--agent.twin-critics", "--agent.target-noise", "0.2",
                  "--agent.target-noise-clip", "0.5", "--agent.final-init", "3e-3",
                  "--noise", "gaussian", "--noise-sigma", "0.1", "--prev-reward",
                  "--agent.head-obs", "--agent.input-embed", "32", "8", "8",
                  "--rnn-init", "orthogonal", "--agent.critics-share-encoder",
                  "--agent.head-embed", "32", "48", "--agent.head-bias", "0.1",
                  "--initial-updates", "1000", "--eval-every", "3000", "--eval-episodes", "10"],
    },
}


def summarize(run_dir: Path, last_k: int, at: list[int]) -> dict[str, object]:
    """Final return (mean of the last ``last_k`` evaluations; None before the first), the step
    reached and that of the last evaluation, returns at the steps ``at`` (the last evaluation at
    or before each; None for a step the run never reached), success, saturation, wall time,
    updates/s."""
    rows = read_metrics(run_dir)
    evals = [r for r in rows if "eval_return_mean" in r]
    train_rows = [r for r in rows if r.get("updates_per_s", 0) > 0]
    reached = max((r["step"] for r in rows), default=0)
    out: dict[str, object] = {
        "final": statistics.mean(r["eval_return_mean"] for r in evals[-last_k:])
        if evals else None,  # none: no evaluation logged yet
        "reached": reached,
        "evaluated": evals[-1]["step"] if evals else 0,
        "at": {s: next((r["eval_return_mean"] for r in reversed(evals) if r["step"] <= s),
                       None) if s <= reached else None for s in at},
        "wall": max((r["wall_time"] for r in rows), default=0.0),
        "ups": statistics.mean(r["updates_per_s"] for r in train_rows) if train_rows else None,
        "saturation": train_rows[-1].get("actor_saturation") if train_rows else None,
    }
    if evals and "eval_success_rate" in evals[-1]:
        out["success"] = statistics.mean(r["eval_success_rate"] for r in evals[-last_k:])
    return out


def final_of(run_dir: Path, policy: str) -> float:
    """The return of ``policy`` (``actor`` / ``target``) of a run's final checkpoint on the
    run's own evaluation episodes: what its last evaluation logs when it evaluates ``policy``."""
    stats, _ = evaluate_run(run_dir, *own_episodes(run_dir), policy=policy)
    return stats["eval_return_mean"]


def _recorded(runs: list[GridRun], out: Path, first: train.TrainConfig, flags: list[str]
              ) -> tuple[list[GridRun], train.TrainConfig, list[str]]:
    """``--summarize``: each run's config as its ``config.json`` records it (what it ran), in
    place of what the command line's flags resolve to, and the settings line's flags (none
    when read from the runs: a grid run with other flags is then described as it ran)."""
    recorded = [GridRun(r.name, train.TrainConfig.from_record(RunRecord.read(out / r.name)))
                if RunPaths(out / r.name).config.is_file() else r for r in runs]
    dirs = [r for r in runs if RunPaths(out / r.name).config.is_file()]
    if not dirs:
        return runs, first, flags
    first = next(r.config for r in recorded if r.name == dirs[0].name)
    return recorded, first, [f"read from {out / dirs[0].name / 'config.json'}"]


def _recorded_env(p: argparse.ArgumentParser, out: Path, runs: list[GridRun], own: list[str],
                  env: str) -> str:
    """``--summarize``: the env the grid's runs ran on (``env``, the ``--env`` flag's, where
    none ran), which a given ``--env`` must name.

    Raises:
        SystemExit: runs on several envs, or not on the ``--env`` given.
    """
    ids = {r.config.env.id: registered_id(r.config.env.id) for r in runs
           if RunPaths(out / r.name).config.is_file()}
    ran = sorted({min(i for i in ids if ids[i] == task) for task in set(ids.values())})
    if len(ran) > 1:  # one task named two ways is one
        p.error(f"--summarize {out}: its runs are on several envs ({', '.join(ran)}); name "
                "the runs of one with --backbones and --seeds")
    given = _given(own, "--env")
    if ran and given and registered_id(ran[0]) != registered_id(env):
        p.error(f"--summarize {out}: its runs are on {ran[0]}, not --env {env}")
    return ran[0] if ran else env


_SHOWN = {"loop.total_steps": "{} env steps", "loop.updates_per_step": "{} updates/step",
          "replay.batch_size": "batch {}", "model.d_model": "d_model {}",
          "agent.head_hidden": "head {}", "agent.gamma": "gamma {}"}
"""The settings line's values: config field, and how the line says it."""


def _field(cfg: train.TrainConfig, dotted: str) -> object:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def _by_run(dotted: str, said: str, first: train.TrainConfig,
            ran: dict[str, train.TrainConfig]) -> str:
    """``first``'s value of ``dotted`` as ``said`` puts it (``12000 env steps``), followed by
    the runs that have another: ``0.25 updates/step (0.5: rnn__s0, rnn__s1)``."""
    mine = _field(first, dotted)
    other: dict[str, list[str]] = {}
    for name, cfg in ran.items():
        value = _field(cfg, dotted)
        if value != mine:
            other.setdefault(str(value), []).append(name)
    text = said.format(mine)
    if other:
        text += " (" + "; ".join(f"{v}: {', '.join(names)}" for v, names in other.items()) + ")"
    return text


def _ran(outcomes: list[RunOutcome]) -> dict[str, train.TrainConfig]:
    """Each run's config as its ``config.json`` records it (resolved, as it ran), for the runs
    that have one."""
    return {o.name: train.TrainConfig.from_record(RunRecord.read(o.run_dir))
            for o in outcomes if RunPaths(o.run_dir).config.is_file()}


def _settings(first: train.TrainConfig, flags: list[str], ran: dict[str, train.TrainConfig],
              final_policy: str | None, last_k: int) -> str:
    """The settings line above the table: the runs' configuration as ``ran`` holds it (the
    first's values, with the runs whose values differ named after each; ``first``'s where no
    run has one), the policy their evaluations logged and what "final" means."""
    logged = sorted({c.loop.eval_policy for c in ran.values()}) or [first.loop.eval_policy]
    final = (f"the final checkpoint's {final_policy} on each run's own "
             f"{first.loop.eval_episodes} evaluation episodes" if final_policy else
             f"mean of the last {last_k} evaluation(s) of {first.loop.eval_episodes} episodes")
    mine = next(iter(ran.values()), first)
    shown = ", ".join(_by_run(d, said, mine, ran) for d, said in _SHOWN.items())
    return (f"settings (recipe {first.run.recipe!r}{', ' + ' '.join(flags) if flags else ''}): "
            f"{shown}, evaluations logged of the {' and the '.join(logged)}, final = {final}")


def _warn_pooled_lengths(ran: dict[str, train.TrainConfig], backbones: list[str]) -> None:
    """Warn on stderr of the rows that pool seeds of different ``--total-steps`` (one run
    extended alone), as ``rlkit.report`` does: ``gru (700: gru__s0; 600: gru__s1)``."""
    out = []
    for b in backbones:
        ends: dict[int, list[str]] = {}
        for name, cfg in ran.items():
            if name.startswith(f"{b}__"):
                ends.setdefault(cfg.loop.total_steps, []).append(name)
        if len(ends) > 1:
            out.append(f"{b} (" + "; ".join(f"{t}: {', '.join(n)}" for t, n in ends.items())
                       + ")")
    if out:
        print(f"warning: rows pool seeds of different --total-steps: {', '.join(out)}",
              file=sys.stderr)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _cell(values: list[float | None]) -> str:
    ok = [v for v in values if v is not None]
    return f"{statistics.mean(ok):.1f}" if ok else "n/a"


# Seconds per agent update at the recipe on Pendulum-V, one thread on the 2-core CPU (wall s
# per run / updates, README grid). Only their order matters: it sets which runs start first.
SECONDS_PER_UPDATE = {"mlp": 0.0021, "rnn": 0.018, "lstm": 0.0185, "gru": 0.031,
                      "transformer": 0.060, "s4": 0.051, "mamba": 0.051, "mamba2": 0.036}


def expected_seconds(run: GridRun, from_step: int = 0) -> float:
    """A run's expected training time from env step ``from_step`` on: its updates left times
    its family's cost per update."""
    c = run.config
    return (max(c.loop.total_steps - from_step, 0) * c.loop.updates_per_step
            * SECONDS_PER_UPDATE.get(c.model.backbone, max(SECONDS_PER_UPDATE.values())))


def longest_first(todo: list[GridRun], runs: list[GridRun],
                  reached: dict[str, int] | None = None) -> list[GridRun]:
    """``todo`` in launch order: the longest expected first (as ``runs``, the grid's configs
    by name, describe them; a run to continue is costed from the step it has ``reached``), so
    that the grid does not end on one long run beside idle jobs. Runs of equal cost (the seeds
    of one family) keep their order."""
    reached = reached or {}
    cost = {r.name: expected_seconds(r, reached.get(r.name, 0)) for r in runs}
    return sorted(todo, key=lambda r: cost[r.name], reverse=True)


def _run_grid(runs: list[GridRun], out: Path, jobs: int, resume: bool, own: list[str],
              extra: list[str]) -> list[RunOutcome]:
    """Train the runs into ``out``, the longest expected first; with ``resume``, keep the
    finished ones and continue the interrupted ones from their checkpoints. An interrupted
    grid exits with the command that continues it. The outcomes come in the order of
    ``runs``."""
    done, todo = cli.resume_runs(out, runs) if resume else ([], runs)
    reached = cli.reached_steps(out, [r.name for r in todo]) if resume else {}
    try:
        ran = {o.name: o for o in [*done, *launch(
            train.run_in, longest_first(todo, runs, reached), out, jobs=jobs)]}
        return [ran[r.name] for r in runs]
    except GridInterrupted as e:
        again = [*own, *([] if resume else ["--resume"]), *(["--", *extra] if extra else [])]
        what = str(e).rsplit("; continue with", 1)[0]  # which runs stopped, which have a checkpoint
        print(f"{what}; continue with: python bench/pomdp.py {shlex.join(again)}",
              file=sys.stderr)
        sys.exit(e.exit_code)


def _common_table(outcomes: list[RunOutcome], backbones: list[str], env: str, n: int, s0: int,
                  solver: PendulumOptimum | None, policy: str | None) -> None:
    """Every final checkpoint on the same ``n`` episodes (from seed ``s0``), with the optimum."""
    print(f"\nfinal policies on the same {n} episodes (seeds {s0}..{s0 + n - 1}):")
    print("| backbone | per seed | mean | min | max |\n|---|---|---:|---:|---:|")
    for b in backbones:
        mine = [o for o in outcomes if o.name.startswith(f"{b}__") and not o.error]
        if not mine:
            continue
        rets = [evaluate_run(o.run_dir, n, s0, policy=policy)[0]["eval_return_mean"]
                for o in mine]
        print(f"| {b} | {', '.join(f'{v:.1f}' for v in rets)} | {statistics.mean(rets):.1f} "
              f"| {min(rets):.1f} | {max(rets):.1f} |")
    if solver is not None:
        print(f"| optimum, full state | | {optimum_returns(env, s0, n, solver).mean():.1f} |")


def _gap_table(outcomes: list[RunOutcome], backbones: list[str], env: str, window: int,
               solver: PendulumOptimum, policy: str | None) -> None:
    """Where each final policy loses against the full-state optimum on its own evaluation
    episodes: the gap (optimum minus policy) by ``window``-step stretch of the episode, mean
    over the episodes, and the worst episode's gap."""
    rows, edges = [], None
    for b in backbones:
        for o in (o for o in outcomes if o.name.startswith(f"{b}__") and not o.error):
            n, s0 = own_episodes(o.run_dir)
            mine = run_rewards(o.run_dir, n, s0, policy=policy)
            best = optimum_rewards(env, s0, n, solver)  # (n, horizon)
            got = np.zeros_like(best)
            for k, r in enumerate(mine):
                got[k, : len(r)] = r[: best.shape[1]]
            gap = best - got  # (n, horizon)
            edges = list(range(0, gap.shape[1], window))
            parts = [gap[:, e:e + window].sum(axis=1).mean() for e in edges]
            worst = int(gap.sum(axis=1).argmax())
            rows.append(f"| {o.name} | {got.sum(axis=1).mean():.1f} | {best.sum(axis=1).mean():.1f}"
                        f" | {gap.sum(axis=1).mean():.1f} | "
                        + " | ".join(f"{v:.1f}" for v in parts)
                        + f" | {gap[worst].sum():.1f} (episode {worst}) |")
    if not rows:
        return
    print(f"\nthe gap to the full-state optimum on each run's own evaluation episodes (optimum "
          f"minus policy, mean over the episodes), by {window}-step stretch:")
    print("| run | return | optimum | gap | "
          + " | ".join(f"steps {e}-{e + window - 1}" for e in edges) + " | worst episode |")
    print("|---|---:|---:|---:|" + "---:|" * len(edges) + "---:|")
    print("\n".join(rows))


GRID_SETS = {"--backbone": "--backbones", "--seed": "--seeds", "--env": "--env",
             "--run-dir": "--out", "--grid-dir": "--out", "--resume": "--out DIR --resume",
             "--jobs": "--jobs", "--launcher": None, "--ray-address": None}
"""train.py flags that the grid sets for each run (its name, seed, task and directory, run
here one at a time): refused after ``--``, with this script's own flag where it has one."""


def _check_pass_through(p: argparse.ArgumentParser, extra: list[str]) -> None:
    """Refuse a flag after ``--`` that would set what the grid sets for each run: it would win
    over the grid's value, and the runs would be filed and tabulated under names they are not
    (``-- --backbone gru`` trained a GRU as ``mlp__s0``, ``rnn__s0``, ...)."""
    for arg in extra:
        flag = arg.split("=", 1)[0].replace("_", "-")
        if flag in GRID_SETS:
            ours = GRID_SETS[flag]
            use = (f"give this script's {ours} before --" if ours else
                   "a grid on a Ray cluster is train.py's (--backbone A B --launcher ray)")
            p.error(f"{arg} after --: the grid sets each run's {flag.lstrip('-')} itself "
                    f"(its runs are named by backbone and seed); {use}")


def _check_flags(p: argparse.ArgumentParser, a: argparse.Namespace, env: str) -> None:
    """Refuse flags that cannot go together on ``env`` (exit 2, the value named)."""
    if a.last_k < 1:
        p.error(f"--last-k must be >= 1 (the final return is the mean of the last k "
                f"evaluations), got {a.last_k}")
    if a.jobs < 1:
        p.error(f"--jobs must be >= 1, got {a.jobs}")
    if a.common_episodes < 0:
        p.error(f"--common-episodes must be >= 0, got {a.common_episodes}")
    if a.final_policy and a.last_k != 1:
        p.error(f"--final-policy evaluates the final checkpoint only: it needs --last-k 1, got "
                f"{a.last_k}")
    if a.gap < 0:
        p.error(f"--gap must be a positive number of steps (0: no gap table), got {a.gap}")
    if a.gap and (a.no_reference or "Pendulum" not in env):
        p.error(f"--gap {a.gap} needs the full-state optimum: a Pendulum task without "
                f"--no-reference, got --env {env}{' --no-reference' if a.no_reference else ''}")
    if a.resume and (a.out is None or a.summarize):
        p.error("--resume continues the grid in --out DIR: give --out, not --summarize")
    if a.summarize and a.out is not None:
        p.error(f"--out {a.out} with --summarize {a.summarize}: --summarize reads the grid in "
                "its DIR and trains nothing; --out is where a grid trains")
    if a.common_seed < 0:
        p.error(f"--common-seed must be >= 0 (Gymnasium's reset seeds), got {a.common_seed}")
    if bad := [s for s in a.at if s <= 0]:
        p.error(f"--at must be env steps >= 1, got {' '.join(map(str, bad))}")
    if bad := [s for s in a.seeds if s < 0]:
        p.error(f"--seeds must be integers >= 0, got {' '.join(map(str, bad))}")
    for flag, values in (("--backbones", a.backbones), ("--seeds", a.seeds), ("--at", a.at)):
        if twice := sorted({str(v) for v in values if values.count(v) > 1}):
            p.error(f"{flag} names {', '.join(twice)} more than once, got "
                    f"{' '.join(map(str, values))}; expected each value once")


def _anchor_env(p: argparse.ArgumentParser, a: argparse.Namespace, own: list[str],
                anchor: dict | None) -> str:
    """The grid's env: the anchor's own, or ``--env``; an ``--env`` given beside an anchor of
    another task is refused (it was dropped without a word)."""
    if anchor is None:
        return a.env
    if _given(own, "--env") and registered_id(a.env) != registered_id(anchor["env"]):
        p.error(f"--anchor {a.anchor} runs on {anchor['env']} (their published task), got "
                f"--env {a.env}; leave --env out")
    return anchor["env"]


def _check_average(p: argparse.ArgumentParser, policy: str | None, runs: list[GridRun],
                   out: Path | None) -> None:
    """``--final-policy average`` reads each run's average of the actor: refused, before the
    grid trains, for runs that keep none (of a grid in ``out``: those that have started)."""
    if policy != "average":
        return
    none = [r.name for r in runs if r.config.agent.average_tau is None
            and (out is None or RunPaths(out / r.name).config.is_file())]
    if none:
        p.error(f"--final-policy average reads each run's average of the actor; "
                f"{', '.join(none)} keep none: give --agent.average-tau after -- (a grid read "
                "by --summarize: its runs ran without it)")


def _backbone_row(b: str, mine: list[RunOutcome], a: argparse.Namespace, at: list[int],
                  total: dict[str, int]) -> tuple[bool, list[str], list[str]]:
    """Print the table's row of backbone ``b`` over those of its runs ``mine`` that have a
    final return; returns whether they all end at or above ``--threshold`` with none left out
    (always true for ``mlp`` or without a threshold), the runs short of their
    ``--total-steps`` (``total`` by run name) with the step each reached, and the runs left out
    of the row with the reason (failed, absent, no evaluation yet)."""
    left_out = [f"{o.name} ({o.error})" for o in mine if o.error]
    mine = [o for o in mine if not o.error]
    s, readable = [], []
    for o in mine:  # a run stopped while it started has no metrics yet: left out, named
        try:
            s.append(summarize(o.run_dir, a.last_k, at))
            readable.append(o)
        except (ValueError, OSError) as e:
            left_out.append(f"{o.name} (cannot be read: {e})")
    mine = readable
    short = [f"{o.name} at step {x['reached']:.0f} of {total[o.name]}"
             + (" without its final evaluation" if x["reached"] >= total[o.name] else "")
             for x, o in zip(s, mine) if x["evaluated"] < total[o.name]]  # as rlkit.report
    left_out += [f"{o.name} (no evaluation yet)" for x, o in zip(s, mine) if x["final"] is None]
    s, mine = [x for x in s if x["final"] is not None], \
        [o for x, o in zip(s, mine) if x["final"] is not None]
    exempt = b == "mlp" or a.threshold is None
    if not mine:
        print(f"| {b} | no final return: {', '.join(left_out)} |")
        return exempt, short, left_out
    if a.final_policy:
        for x, o in zip(s, mine):
            x["final"] = final_of(o.run_dir, a.final_policy)
    finals = [x["final"] for x in s]
    ok = exempt or (not left_out and min(finals) >= a.threshold)
    # with a seed left out, each value says whose it is
    cells = [f"s{_run_pair(o.name)[1]}: {v:.1f}" if left_out and _run_pair(o.name) else f"{v:.1f}"
             for v, o in zip(finals, mine)]
    at_cells = " | ".join(_cell([x["at"][st] for x in s]) for st in at)
    succ = [x["success"] for x in s if "success" in x]
    sat = [x["saturation"] for x in s if x["saturation"] is not None]
    sat_cell = f"{statistics.mean(sat):.2f}" if sat else "n/a"
    succ_cell = f"{statistics.mean(succ):.2f}" if succ else "n/a"
    ups = [x["ups"] for x in s if x["ups"] is not None]  # none: no training row logged yet
    ups_cell = f"{statistics.mean(ups):.1f}" if ups else "n/a"
    print(f"| {b} | {', '.join(cells)} | {statistics.mean(finals):.1f} "
          f"| {min(finals):.1f} | {max(finals):.1f} | {at_cells + ' | ' if at else ''}"
          f"{sat_cell} | {succ_cell} | {statistics.mean(x['wall'] for x in s):.0f} | "
          f"{ups_cell} |")
    return ok, short, left_out


def _reference_rows(env: str, runs: list[GridRun], seeds: list[int], episodes: int
                    ) -> PendulumOptimum:
    """Print the full-state optimum's rows on each seed's own evaluation episodes (and, for
    runs that discount, the best their discount aims for); returns the optimum's solver."""
    ref_env = gym.make(env)
    solver = PendulumOptimum.for_env(ref_env)
    rows = [("optimum", solver)] + [  # and what an agent that discounts by g aims for
        (f"optimum of the discounted return (gamma {g:g})",
         PendulumOptimum.for_env(ref_env, gamma=g))
        for g in sorted({r.config.agent.gamma for r in runs} - {1.0})]
    ref_env.close()
    for label, opt in rows:
        best = [float(optimum_returns(env, eval_env_seed(s), episodes, opt).mean())
                for s in seeds]
        print(f"| {label}, full state, same episodes | {', '.join(f'{v:.1f}' for v in best)}"
              f" | {statistics.mean(best):.1f} | {min(best):.1f} | {max(best):.1f} |")
    return solver


BENCH_RECORD = "bench.json"
"""The file of a grid directory that records the env and flags it was run with."""


def _run_pair(name: str) -> tuple[str, int] | None:
    """``(backbone, seed)`` of a grid run's name ``BACKBONE__sSEED``; None for another name."""
    b, sep, s = name.rpartition("__s")
    return (b, int(s)) if sep and b in BACKBONE_NAMES and s.isdigit() else None


def _given(own: list[str], flag: str) -> bool:
    """Whether this script's own arguments ``own`` give ``flag`` (``--flag V`` or
    ``--flag=V``; abbreviations are refused by the parser)."""
    return any(arg == flag or arg.startswith(f"{flag}=") for arg in own)


def _named_or_all(own: list[str], backbones: list[str], seeds: list[int],
                  pairs: list[tuple[str, int]]) -> tuple[list[str], list[int]]:
    """``--backbones`` / ``--seeds`` where given (``own``), else every one of ``pairs``."""
    if not _given(own, "--backbones"):
        backbones = [b for b in BACKBONE_NAMES if any(b == f for f, _ in pairs)]
    if not _given(own, "--seeds"):
        seeds = sorted({s for _, s in pairs})
    return backbones, seeds


def _grid_members(p: argparse.ArgumentParser, out: Path, own: list[str], backbones: list[str],
                  seeds: list[int]) -> tuple[list[str], list[int]]:
    """``--summarize``: the backbones and seeds of the runs in ``out`` (directories named
    ``BACKBONE__sSEED``), unless ``--backbones`` / ``--seeds`` name them."""
    if not out.is_dir():
        p.error(f"--summarize {out}: " + ("a file, not a grid directory" if out.exists() else
                                          "no such directory"))
    found = [pair for d in sorted(out.iterdir()) if d.is_dir() and (pair := _run_pair(d.name))]
    if not found and not (_given(own, "--backbones") and _given(own, "--seeds")):
        p.error(f"--summarize {out}: no run directory named BACKBONE__sSEED there (or name "
                "them with --backbones and --seeds)")
    return _named_or_all(own, backbones, seeds, found)


def _check_env(p: argparse.ArgumentParser, env: str) -> None:
    """Refuse an ``--env`` that cannot be made (exit 2, named), before a grid writes."""
    try:
        train.make_env(env).close()
    except (ValueError, EnvError) as e:
        p.error(f"--env {env}: {e}")


def _check_out(p: argparse.ArgumentParser, out: Path, resume: bool, env: str,
               flags: list[str]) -> list[str] | None:
    """Refuse an ``--out`` that is not empty without ``--resume``, and a ``--resume`` with
    another env or other flags than the grid was run with (its runs keep theirs).

    Returns:
        With ``--resume``, the grid's runs as its record lists them (``None``: not recorded).
    """
    if not resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            p.error(f"--out {out} is not an empty directory: give --resume to continue the "
                    "grid there, or a new --out")
        return None
    if not out.is_dir() or not any(out.iterdir()):
        p.error(f"--resume --out {out}: no grid there to continue (the directory is "
                f"{'empty' if out.is_dir() else 'missing'}); leave out --resume to start one")
    try:
        ran = json.loads((out / BENCH_RECORD).read_text())
    except (OSError, ValueError):
        return None  # a grid run before the record was kept: its runs' config.json describe it
    if [ran.get("env"), ran.get("flags")] != [env, flags]:
        p.error(f"--resume {out}: the grid was run with --env {ran.get('env')} and the flags "
                f"{ran.get('flags')}, not --env {env} and {flags}: expected the same (a "
                "continued run keeps its own config)")
    return ran.get("runs")  # None: a grid recorded before its runs were


def _resumed_members(p: argparse.ArgumentParser, out: Path, own: list[str], backbones: list[str],
                     seeds: list[int], members: list[str]) -> tuple[list[str], list[int]]:
    """``--resume``: the grid's own backbones and seeds (its record's ``members``), unless
    ``--backbones`` / ``--seeds`` name some of them; a run the grid does not have is refused
    (a mistyped backbone would start a new run)."""
    pairs = [pair for m in members if (pair := _run_pair(m))]
    backbones, seeds = _named_or_all(own, backbones, seeds, pairs)
    new = [f"{b}__s{s}" for b in backbones for s in seeds if (b, s) not in pairs]
    if new:
        p.error(f"--resume {out}: the grid has no run {', '.join(new)}; its runs are "
                f"{', '.join(members)} (--backbones and --seeds name some of them; a new run "
                "goes in a grid of its own)")
    return backbones, seeds


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--env", default="rlkit/Pendulum-V-v0",
                   help="the task (default rlkit/Pendulum-V-v0; an --anchor sets its own)")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONE_NAMES),
                   choices=BACKBONE_NAMES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--at", type=int, nargs="*", default=[], help="also report these steps")
    p.add_argument("--last-k", type=int, default=1,
                   help="final = mean of the last k evaluations of a run")
    p.add_argument("--threshold", type=float, default=None,
                   help="report whether every seed of every memory family ends at or above it")
    p.add_argument("--anchor", choices=sorted(ANCHORS), default=None,
                   help="run with a published agent's settings and print its figures beside")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help=f"runs at a time, each with the CPU count / jobs threads, at most "
                        f"OMP_NUM_THREADS (default: the CPU count, {os.cpu_count() or 1} here)")
    p.add_argument("--out", type=dir_arg, default=None,
                   help="grid directory (default: a temp dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue the grid in --out (same flags): finished runs are kept, "
                        "interrupted ones go on from their last checkpoint; without "
                        "--backbones / --seeds, the grid's own runs")
    p.add_argument("--summarize", metavar="DIR", type=dir_arg, default=None,
                   help="print the tables of the grid in DIR, each run as its config.json "
                        "records it; no training")
    p.add_argument("--common-episodes", type=int, default=0,
                   help="also evaluate each final policy on these many common episodes")
    p.add_argument("--common-seed", type=int, default=1_000_000,
                   help="seed of the first common episode")
    p.add_argument("--final-policy", choices=EVAL_POLICIES, default=None,
                   help="final = this policy of each final checkpoint on the run's own "
                        "evaluation episodes (default: the run's logged last evaluations)")
    p.add_argument("--no-reference", action="store_true",
                   help="leave out the full-state optimum row (Pendulum tasks)")
    p.add_argument("--gap", type=int, default=0, metavar="STEPS",
                   help="also print where each final policy loses against the optimum on its "
                        "own evaluation episodes, by STEPS-step stretch (Pendulum tasks)")
    a = p.parse_args(own)
    anchor = ANCHORS[a.anchor] if a.anchor else None
    env = _anchor_env(p, a, own, anchor)
    backbones = anchor["backbones"] if anchor and not _given(own, "--backbones") else a.backbones
    at = a.at or (anchor["at"] if anchor else [])
    flags = (anchor["flags"] if anchor else []) + extra
    _check_pass_through(p, extra)
    _check_flags(p, a, env)
    out = Path(a.summarize or a.out or "")  # a temp dir for none, once the flags are checked
    if a.summarize:
        backbones, a.seeds = _grid_members(p, out, own, backbones, a.seeds)
    else:
        _check_env(p, env)  # before anything is written into --out
        members = _check_out(p, out, a.resume, env, flags) if a.out else None
        if members is not None:
            backbones, a.seeds = _resumed_members(p, out, own, backbones, a.seeds, members)
    runs = []
    for b in backbones:
        for s in a.seeds:
            cfg = cli.parse_config(["--env", env, "--backbone", b, "--seed", str(s),
                                    "--device", "cpu", "--no-progress", *flags],
                                   prog="train.py")  # whose --help lists the flags after --
            runs.append(GridRun(f"{b}__s{s}", cfg))
    first = train.resolve(runs[0].config, 200 if "Pendulum" in env else None)
    if not a.summarize:
        _check_average(p, a.final_policy, runs, None)
    t0 = time.time()
    if a.summarize:
        outcomes = [RunOutcome(r.name, out / r.name, error=None if (out / r.name).is_dir()
                               else "not in the grid directory") for r in runs]
        runs, first, flags = _recorded(runs, out, first, flags)
        _check_average(p, a.final_policy, runs, out)
        env = _recorded_env(p, out, runs, own, env)
        if a.gap and "Pendulum" not in env:
            p.error(f"--gap {a.gap} needs the full-state optimum: a Pendulum task, got the "
                    f"grid's {env}")
        print(f"\n{env}, {_count(len(a.seeds), 'seed')}, runs in {out}")
    else:
        out = out if a.out else Path(tempfile.mkdtemp(prefix="rlkit-pomdp-"))
        if not a.resume:  # a temp grid too: its --resume is checked against the record
            out.mkdir(parents=True, exist_ok=True)
            (out / BENCH_RECORD).write_text(json.dumps(
                {"env": env, "flags": flags, "runs": [r.name for r in runs]}, indent=1))
        outcomes = _run_grid(runs, out, a.jobs, a.resume,
                             own if a.out else [*own, "--out", str(out)], extra)
        if a.resume:  # the kept runs as they ran
            runs, first, flags = _recorded(runs, out, first, flags)
        print(f"\n{env}, {_count(len(a.seeds), 'seed')}, grid {time.time() - t0:.0f} s with "
              f"{_count(a.jobs, 'job')}, runs in {out}")
    ran = _ran(outcomes)
    print(_settings(first, flags, ran, a.final_policy, a.last_k))
    _warn_pooled_lengths(ran, backbones)
    head = " | ".join(f"at {s / 1000:g}k" for s in at)
    print(f"| backbone | final per seed | mean | min | max | {head + ' | ' if at else ''}"
          "saturation | success | wall s | updates/s |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(at) + "---:|---:|---:|---:|")
    memory_ok, short, left_out = True, [], []
    total = {r.name: r.config.loop.total_steps for r in runs}
    for b in backbones:
        ok, late, out_of_row = _backbone_row(
            b, [o for o in outcomes if o.name.startswith(f"{b}__")], a, at, total)
        memory_ok &= ok
        short += late
        left_out += out_of_row
    reference = "Pendulum" in env and not a.no_reference
    solver = _reference_rows(env, runs, a.seeds, first.loop.eval_episodes) if reference else None
    if left_out:
        print(f"\nruns left out of their row: {', '.join(left_out)}")
    if short:
        print(f"\nruns short of their --total-steps (final: their last evaluation so far): "
              f"{', '.join(short)}")
    _more_tables(a, outcomes, backbones, env, solver, anchor, at)
    if a.threshold is not None:
        print(f"\nevery memory family >= {a.threshold} on every seed: "
              f"{'PASS' if memory_ok else 'FAIL'}")
    if not a.summarize:
        _exit_on_failures(outcomes)


def _exit_on_failures(outcomes: list[RunOutcome]) -> None:
    """As train.py's grid: each failed run's traceback (the env's for an env error), then exit
    2 naming them; the tables printed before cover the others."""
    failed = [o for o in outcomes if o.error]
    for o in failed:
        cli.print_traceback(o)
    if failed:
        print(f"error: {len(failed)} of {len(outcomes)} runs failed: "
              f"{', '.join(o.name for o in failed)}", file=sys.stderr)
        sys.exit(2)


def _more_tables(a: argparse.Namespace, outcomes: list[RunOutcome], backbones: list[str],
                 env: str, solver: PendulumOptimum | None, anchor: dict | None,
                 at: list[int]) -> None:
    """The tables the flags ask for beyond the main one: common episodes, gaps, the anchor."""
    if a.common_episodes:
        _common_table(outcomes, backbones, env, a.common_episodes, a.common_seed, solver,
                      a.final_policy)
    if a.gap:
        _gap_table(outcomes, backbones, env, a.gap, solver, a.final_policy)
    if anchor:
        pub = anchor["published"]
        print(f"\n{a.anchor} (published, read off their curves): " + ", ".join(
            f"{st // 1000}k: {pub[st]:.0f}" if st in pub else f"{st // 1000}k: n/a" for st in at))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as e:  # a run directory that cannot be read as asked
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
