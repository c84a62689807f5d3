"""How ``train.py`` handles faults and hostile input: one Markdown row per scenario.

    OMP_NUM_THREADS=1 python bench/fault_table.py [--out DIR] [--only TEXT] [--keep]

Each scenario runs ``python train.py ...`` (or ``python -m agents.evaluate``) as a subprocess
in the repository root, with ``OMP_NUM_THREADS=1``, ``WANDB_MODE=disabled`` and ``tests/`` on
``PYTHONPATH`` (for the fault-injecting envs of ``tests/faulty_envs.py``), in its own directory
``$D`` under ``--out`` (default: a fresh temporary directory, removed at the end unless
``--keep``). Scenarios of one group share ``$D`` and run in order (a fault, then ``--resume``).

Each row shows the fault, the command (``$FAST`` stands for the tiny settings in :data:`FAST`),
the expected and the actual exit code (``-9`` is a process killed by SIGKILL), the first line of
stderr that starts with ``error`` / ``stopped`` (else the first line of a flag-parsing box, else
the first line that is not a warning) and, where it applies, whether nothing was lost
(``kept``: files unchanged, checkpoints loadable, metrics rows intact). ``--only TEXT`` runs the
scenarios whose fault or group contains TEXT (plus the base run when they copy it).

Exits 1 if any scenario ended with another exit code than expected, or failed its ``kept``
check; skipped scenarios are listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkit.checkpoint import CheckpointError, load_checkpoint
from rlkit.rundir import RunPaths, dir_arg
from rlkit.runlog import read_metrics
from rlkit.seeding import seed_everything

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--learning-starts", "100", "--eval-every", "0", "--eval-episodes", "1", "--no-progress",
        "--device", "cpu"]
"""Tiny, fast settings (shown as ``$FAST``); every command adds its own ``--total-steps``. The
env and backbone are the defaults, Pendulum-v1 and mlp, unless a command names others (a second
``--backbone`` would add a backbone: a grid)."""
SMALL = ["--batch-size", "32", "--d-model", "32", "--buffer-size", "10000"]
"""Small networks and buffer: checkpoints of about 100 KB (the file-size-limit scenario)."""
TIMEOUT_S = 300.0
FSIZE_LIMIT = 200_000
"""RLIMIT_FSIZE of the disk-full stand-in: the first checkpoints fit, later ones do not."""
TMPFS_KB = 700
"""A tmpfs that holds the first two checkpoints of a :data:`SMALL` run, not the third."""
TMPFS_SCRIPT = (f"mount -t tmpfs -o size={TMPFS_KB}k tmpfs $D/mnt || exit 125; "
                "$PY train.py $FAST --total-steps 1000 --log-every 50 --checkpoint-every 100 "
                f"{' '.join(SMALL)} --run-dir $D/mnt/run; c=$?; cp -a $D/mnt/run $D/run; exit $c")
"""Runs in a mount namespace of its own; the run is copied out before the tmpfs goes."""

Kept = tuple[bool, str]
"""(nothing lost, what was checked)."""


@dataclass
class Ctx:
    """One group's directory and what its steps pass on to each other."""

    d: Path
    out: Path
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    code: int | None
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Scenario:
    fault: str
    argv: list[str]
    """After ``python``; ``$D``: the group's directory, ``$FAST``: :data:`FAST`."""
    expect: int
    group: str = ""
    """Scenarios of one group share ``$D`` and run in order; default: a directory of its own."""
    setup: Callable[[Ctx], None] | None = None
    check: Callable[[Ctx, Result], Kept] | None = None
    signal_when: tuple[signal.Signals, Callable[[Ctx], bool]] | None = None
    """Send this signal once the predicate holds (the process runs in the background)."""
    limit_file_size: int | None = None
    raw: bool = False
    """``argv`` is the whole command (``$PY``: this Python), not arguments of ``python``."""
    skip: str | None = None


# ----------------------------------------------------------------------------- file helpers
def snapshot(run: Path) -> dict[str, bytes]:
    """Bytes of every regular file of a run directory but its lock."""
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "run.lock"}


def ckpt(path: Path) -> dict[str, Any] | None:
    try:
        return load_checkpoint(path)
    except (CheckpointError, OSError):
        return None


def steps(run: Path, evals: bool = True) -> list[int]:
    """The steps of a run's metrics rows (without the evaluation rows unless ``evals``)."""
    try:
        rows = read_metrics(run)
    except Exception:  # a malformed or missing file: no rows to compare
        return []
    return [r["step"] for r in rows if evals or "eval_return_mean" not in r]


def ascending(xs: list[int]) -> bool:
    """Non-decreasing (an evaluation row shares the step of the training row before it)."""
    return all(a <= b for a, b in zip(xs, xs[1:]))


def copy_base(ctx: Ctx) -> Path:
    """A copy of the finished base run as ``$D/run``."""
    run = ctx.d / "run"
    shutil.copytree(ctx.out / "base" / "run", run)
    ctx.state["files"] = snapshot(run)
    return run


def unchanged(ctx: Ctx) -> Kept:
    same = snapshot(ctx.d / "run") == ctx.state["files"]
    return same, "run files byte-identical" if same else "run files CHANGED"


def both(*checks: Kept) -> Kept:
    return all(ok for ok, _ in checks), "; ".join(text for _, text in checks)


def names(text: str) -> Callable[[Ctx, Result], Kept]:
    """The first line names ``text``, and no run directory was made."""
    def check(ctx: Ctx, r: Result) -> Kept:
        named = text in first_line(r)
        made = [p.name for p in ctx.d.iterdir()]
        return both((named, f"names {text}" if named else f"does NOT name {text}"),
                    (not made, "no dir made" if not made else f"made {made}"))
    return check


# ----------------------------------------------------------------------------- scenario checks
def file_untouched(ctx: Ctx, r: Result) -> Kept:
    ok = (ctx.d / "f").read_text() == "x"
    return ok, "the file untouched" if ok else "the file CHANGED"


def ckpt_dir_kept(ctx: Ctx, r: Result) -> Kept:
    run = ctx.d / "run"
    prev = ckpt(run / "checkpoint.prev.pt")
    return both(unchanged(ctx), ((run / "checkpoint.pt").is_dir(), "the directory left"),
                (prev is not None, f"checkpoint.prev.pt loads (step {prev and prev['step']})"))


def full_kept(ctx: Ctx, r: Result) -> Kept:
    m = re.search(r"checkpoint of step (\d+) to .* checkpoint of step (\d+) is kept", r.stderr)
    if not m:
        return False, "no 'checkpoint of step N is kept' in stderr"
    failed, kept = int(m.group(1)), int(m.group(2))
    c = ckpt(ctx.d / "run" / "checkpoint.pt")
    rows = steps(ctx.d / "run")
    ok = c is not None and c["step"] == kept and rows and max(rows) == failed
    return bool(ok), (f"checkpoint loads at step {c and c['step']} (kept {kept}); "
                      f"rows to step {max(rows, default=None)} (failed at {failed})")


def finished(total: int, every: int) -> Callable[[Ctx, Result], Kept]:
    """The run ended at ``total`` with one training row per ``every`` steps, none twice, and
    its final evaluation row."""
    def check(ctx: Ctx, r: Result) -> Kept:
        c = ckpt(ctx.d / "run" / "checkpoint.pt")
        rows = steps(ctx.d / "run", evals=False)
        expected = list(range(every, total + 1, every))
        ok = c is not None and c["step"] == total and rows == expected and \
            steps(ctx.d / "run")[-1:] == [total]
        how = f"one per {every} steps, none twice" if rows == expected else "NOT as expected"
        return ok, f"final checkpoint at step {c and c['step']}; {len(rows)} rows, {how}"
    return check


def logged(ctx: Ctx, rows: int) -> bool:
    run = ctx.d / "run"
    return (run / "checkpoint.pt").is_file() and (run / "run.lock").is_file() and \
        len(steps(run)) >= rows


def start_holder(ctx: Ctx) -> None:
    """A long run in ``$D/run``, left running in the background once it has logged."""
    run = ctx.d / "run"
    log = open(ctx.out / "logs" / "holder.err", "w")  # closed by holder_kept
    proc = subprocess.Popen([sys.executable, "train.py", *FAST, "--total-steps", "20000",
                             "--log-every", "100", "--run-dir", str(run)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=log)
    ctx.state.update(holder=proc, log=log)
    deadline = time.time() + TIMEOUT_S
    while not logged(ctx, 3) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    metrics = run / "metrics.jsonl"
    ctx.state["before"] = metrics.read_bytes() if metrics.is_file() else b""


def holder_kept(ctx: Ctx, r: Result) -> Kept:
    proc: subprocess.Popen[bytes] = ctx.state["holder"]
    named = f"pid {proc.pid} on host" in r.stderr
    alive = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
        ctx.state["log"].close()
    run = ctx.d / "run"
    after = (run / "metrics.jsonl").read_bytes()
    prefix = after.startswith(ctx.state["before"])
    rows = steps(run)
    return both((named, f"holder pid {proc.pid} named" if named else "holder NOT named"),
                (alive, "holder kept running" if alive else "holder DIED"),
                (code == 143, f"holder exit {code} on SIGTERM"),
                (prefix and ascending(rows),
                 f"metrics {'kept' if prefix else 'REWRITTEN'}, {len(rows)} rows "
                 f"{'ascending' if ascending(rows) else 'NOT ascending'}"))


def killed_kept(ctx: Ctx, r: Result) -> Kept:
    c = ckpt(ctx.d / "run" / "checkpoint.pt")
    rows = steps(ctx.d / "run")
    ok = c is not None and bool(rows)
    return ok, (f"checkpoint {c and c['kind']} at step {c and c['step']} loads; "
                f"rows to step {max(rows, default=None)}")


def interrupted(total: int) -> Callable[[Ctx, Result], Kept]:
    def check(ctx: Ctx, r: Result) -> Kept:
        c = ckpt(ctx.d / "run" / "checkpoint.pt")
        ok = c is not None and c["kind"] == "interrupt" and 0 < c["step"] < total
        return ok, f"checkpoint {c and c['kind']} at step {c and c['step']}"
    return check


def edit_config(change: Callable[[dict[str, Any]], Any] | bytes) -> Callable[[Ctx], None]:
    """Copy the base run, then rewrite its config.json (a function of the JSON, or bytes)."""
    def setup(ctx: Ctx) -> None:
        run = copy_base(ctx)
        path = RunPaths(run).config
        if isinstance(change, bytes):
            path.write_bytes(change)
        else:
            data = json.loads(path.read_text())
            change(data)
            path.write_text(json.dumps(data, indent=2))
        ctx.state["files"] = snapshot(run)
    return setup


def set_gamma(data: dict[str, Any]) -> None:
    data["agent"]["gamma"] = 0.5


def append_metrics(text: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        run = copy_base(ctx)
        with open(run / "metrics.jsonl", "a") as f:
            f.write(text)
        ctx.state["files"] = snapshot(run)
        ctx.state["rows"] = steps(run)
    return setup


def refused_kept(field_name: str) -> Callable[[Ctx, Result], Kept]:
    def check(ctx: Ctx, r: Result) -> Kept:
        named = field_name in first_line(r)
        return both((named, f"names {field_name}" if named else f"does NOT name {field_name}"),
                    unchanged(ctx))
    return check


def cut_line_dropped(ctx: Ctx, r: Result) -> Kept:
    rows = steps(ctx.d / "run")
    before = ctx.state["rows"]
    ok = rows[: len(before)] == before and rows[-1] == 400 and ascending(rows)
    return ok, f"{len(before)} rows kept, cut line dropped, rows to step {rows[-1:]}"


def traceback_follows(ctx: Ctx, r: Result) -> Kept:
    lines = r.stderr.strip().splitlines()
    i = next((k for k, ln in enumerate(lines) if ln.startswith("error:")), len(lines))
    tb = lines[i + 1: i + 2] == ["the env's traceback:"] and "faulty_envs.py" in r.stderr
    c = ckpt(ctx.d / "run" / "checkpoint.pt")
    return both((tb, "env traceback follows" if tb else "NO env traceback"),
                (c is not None and c["kind"] == "start", f"start checkpoint {c and c['kind']}"))


def grid_pair() -> tuple[str, int, int]:
    """A faulty env kind that fires in seed 0's training env only, and the two seeds."""
    a, b = seed_everything(0), seed_everything(3)
    parity = a.env_seed % 2
    if {b.env_seed % 2, a.eval_env_seed % 2, b.eval_env_seed % 2} != {1 - parity}:
        raise RuntimeError("seeds 0 and 3 no longer split the faulty env's parity")
    return ("Odd" if parity else "Even"), 0, 3


def grid_reported(ctx: Ctx, r: Result) -> Kept:
    md = ctx.d / "g" / "report" / "report.md"
    text = md.read_text() if md.is_file() else ""
    ok = "| mlp | 1 |" in text and "mlp__s0" in text
    return ok, ("report.md covers mlp__s3, lists mlp__s0 as skipped" if ok
                else "report.md missing or incomplete")


def no_dir(path: str) -> Callable[[Ctx, Result], Kept]:
    def check(ctx: Ctx, r: Result) -> Kept:
        exists = (ctx.d / path).exists()
        return not exists, f"$D/{path} {'MADE' if exists else 'not made'}"
    return check


def estimate_shown(ctx: Ctx, r: Result) -> Kept:
    return both(("it needs about" in first_line(r), "estimate shown"), no_dir("run")(ctx, r))


def prefix_named(ctx: Ctx, r: Result) -> Kept:
    named = "Use --state-mode prefix --burn-in 63" in first_line(r)
    return both((named, "names prefix mode and R = 63"), no_dir("run")(ctx, r))


# ----------------------------------------------------------------------------- scenarios
def read_only_dir(ctx: Ctx) -> None:
    (ctx.d / "ro").mkdir()
    (ctx.d / "ro").chmod(0o555)


def read_only_kept(ctx: Ctx, r: Result) -> Kept:
    (ctx.d / "ro").chmod(0o755)  # so that the directory can be removed
    return no_dir("ro/run")(ctx, r)


def make_file(ctx: Ctx) -> None:
    (ctx.d / "f").write_text("x")


def ckpt_to_dir(ctx: Ctx) -> None:
    run = copy_base(ctx)
    (run / "checkpoint.pt").unlink()
    (run / "checkpoint.pt").mkdir()
    ctx.state["files"] = snapshot(run)


def flag_scenarios() -> list[Scenario]:
    bad = [("--updates-per-step", "inf"), ("--updates-per-step", "1e300"),
           ("--noise-sigma", "inf"), ("--ou-theta", "1e300"), ("--ou-dt", "inf"),
           ("--agent.actor-lr", "inf"), ("--agent.critic-lr", "1e300"),
           ("--agent.max-grad-norm", "nan"), ("--agent.max-grad-norm", "-1"),
           ("--agent.max-grad-norm", "0"), ("--agent.target-noise", "nan"),
           ("--seed", "18446744073709551616"), ("--agent.head-hidden", "0"), ("--env", ":")]
    out = [Scenario(f"bad flag {flag} {value}",
                    ["train.py", "$FAST", "--total-steps", "300", flag, value,
                     "--run-dir", "$D/run"], 2, check=names(flag)) for flag, value in bad]
    out.append(Scenario("grid whose 2nd seed is bad (checked before launch)",
                        ["train.py", "$FAST", "--total-steps", "300", "--seed", "0",
                         "18446744073709551616", "--grid-dir", "$D/g"], 2, check=names("--seed")))
    return out


def scenarios() -> list[Scenario]:
    kind, bad, good = grid_pair()
    root = os.geteuid() == 0
    t300 = ["--total-steps", "300"]
    return [
        Scenario("base: a finished run (copied by the edited-file scenarios)",
                 ["train.py", "$FAST", *t300, "--checkpoint-every", "100", "--log-every", "50",
                  "--run-dir", "$D/run"], 0, group="base", check=finished(300, 50)),
        # --- file system
        Scenario("--run-dir under /proc (cannot be created)",
                 ["train.py", "$FAST", *t300, "--run-dir", "/proc/rlkit-x/run"], 3),
        Scenario("--run-dir under a chmod 555 directory",
                 ["train.py", "$FAST", *t300, "--run-dir", "$D/ro/run"], 3, setup=read_only_dir,
                 check=read_only_kept,
                 skip="running as root: chmod does not stop root (see the /proc row)" if root
                 else None),
        Scenario("--run-dir is an existing regular file",
                 ["train.py", "$FAST", *t300, "--run-dir", "$D/f"], 2, setup=make_file,
                 check=file_untouched),
        Scenario("checkpoint.pt replaced by a directory, --resume",
                 ["train.py", "--resume", "$D/run", "--total-steps", "400"], 2,
                 setup=ckpt_to_dir, check=ckpt_dir_kept),
        Scenario(f"file size limit {FSIZE_LIMIT:,} B (RLIMIT_FSIZE: EFBIG as a full disk)",
                 ["train.py", "$FAST", "--total-steps", "1000", "--log-every", "50",
                  "--checkpoint-every", "100", *SMALL, "--run-dir", "$D/run"], 3,
                 group="fsize", limit_file_size=FSIZE_LIMIT, check=full_kept),
        Scenario("... limit lifted, --resume", ["train.py", "--resume", "$D/run"], 0,
                 group="fsize", check=finished(1000, 50)),
        Scenario(f"disk full: a {TMPFS_KB} KiB tmpfs (private mount namespace)",
                 ["unshare", "-m", "sh", "-c", TMPFS_SCRIPT], 3, group="tmpfs", raw=True,
                 setup=lambda ctx: (ctx.d / "mnt").mkdir(), check=full_kept,
                 skip=None if root and shutil.which("unshare") else
                 "needs root and unshare(1) to mount a tmpfs; see the RLIMIT_FSIZE row"),
        Scenario("... run moved off the full disk, --resume", ["train.py", "--resume", "$D/run"],
                 0, group="tmpfs", check=finished(1000, 50)),
        # --- one process per run directory
        Scenario("second process: --resume while a --total-steps 20000 run holds $D/run",
                 ["train.py", "--resume", "$D/run", "--total-steps", "3000"], 2,
                 setup=start_holder, check=holder_kept),
        # --- kills and signals
        Scenario("SIGKILL after the first (start) checkpoint, default checkpointing",
                 ["train.py", "$FAST", "--total-steps", "1000", "--log-every", "100",
                  "--run-dir", "$D/run"], -9, group="kill",
                 signal_when=(signal.SIGKILL, lambda ctx: logged(ctx, 2)), check=killed_kept),
        Scenario("... then --resume", ["train.py", "--resume", "$D/run"], 0, group="kill",
                 check=finished(1000, 100)),
        Scenario("SIGTERM mid-run",
                 ["train.py", "$FAST", "--total-steps", "1500", "--log-every", "100",
                  "--run-dir", "$D/run"], 143, group="term",
                 signal_when=(signal.SIGTERM, lambda ctx: logged(ctx, 3)),
                 check=interrupted(1500)),
        Scenario("... then --resume", ["train.py", "--resume", "$D/run"], 0, group="term",
                 check=finished(1500, 100)),
        # --- flags
        *flag_scenarios(),
        # --- memory
        Scenario("stored transformer states, one per step, default buffer size",
                 ["train.py", "$FAST", *t300, "--backbone", "transformer", "--state-mode",
                  "stored", "--burn-in", "63", "--seq-len", "80", "--state-every", "1",
                  "--run-dir", "$D/run"], 2, check=estimate_shown),
        Scenario("stored transformer states with a burn-in shorter than its reach",
                 ["train.py", "$FAST", *t300, "--backbone", "transformer", "--state-mode",
                  "stored", "--burn-in", "8", "--run-dir", "$D/run"], 2,
                 check=prefix_named),
        Scenario("--seq-len 100000000 with a GRU (its sampled batch)",
                 ["train.py", "$FAST", *t300, "--env", "rlkit/Pendulum-V-v0", "--backbone",
                  "gru", "--seq-len", "100000000", "--run-dir", "$D/run"], 2,
                 check=estimate_shown),
        # --- edited files
        Scenario("config.json: agent.gamma edited, --resume",
                 ["train.py", "--resume", "$D/run", "--total-steps", "400"], 2,
                 setup=edit_config(set_gamma), check=refused_kept("agent.gamma")),
        Scenario("config.json is a JSON list, --resume",
                 ["train.py", "--resume", "$D/run", "--total-steps", "400"], 2,
                 setup=edit_config(b"[1, 2]"), check=refused_kept("expected a JSON object"),
                 group="list"),
        Scenario("... and python -m agents.evaluate",
                 ["-m", "agents.evaluate", "$D/run", "--episodes", "1"], 2, group="list",
                 check=refused_kept("expected a JSON object")),
        Scenario("config.json with non-UTF-8 bytes, --resume",
                 ["train.py", "--resume", "$D/run", "--total-steps", "400"], 2,
                 setup=edit_config(b'\xff\xfe{"run": 1}'), check=refused_kept("utf-8"),
                 group="utf8"),
        Scenario("... and python -m agents.evaluate",
                 ["-m", "agents.evaluate", "$D/run", "--episodes", "1"], 2, group="utf8",
                 check=refused_kept("utf-8")),
        Scenario("metrics.jsonl: garbage line appended (with its newline), --resume",
                 ["train.py", "--resume", "$D/run", "--total-steps", "400"], 2,
                 setup=append_metrics("garbage\n"), check=refused_kept("metrics.jsonl:")),
        Scenario("metrics.jsonl: last line cut short (no newline), --resume",
                 ["train.py", "--resume", "$D/run", "--total-steps", "400"], 0,
                 setup=append_metrics('{"step": 3'), check=cut_line_dropped),
        # --- env exceptions
        Scenario("env raises RuntimeError at step 30",
                 ["train.py", "$FAST", *t300, "--env", "faulty_envs:rlkit-test/Raise-v0",
                  "--run-dir", "$D/run"], 4, check=traceback_follows),
        Scenario(f"grid: seed {bad}'s env raises before its first evaluation",
                 ["train.py", "$FAST", *t300, "--env", f"faulty_envs:rlkit-test/Raise{kind}-v0",
                  "--seed", str(bad), str(good), "--jobs", "1", "--grid-dir", "$D/g"], 2,
                 check=grid_reported),
    ]


# ----------------------------------------------------------------------------- runner
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "COLUMNS": "300",
       "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
ENV.pop("RLKIT_TEST_KILL_AT", None)


def expand(s: Scenario, d: Path) -> list[str]:
    out = [] if s.raw else [sys.executable]
    for a in s.argv:
        a = a.replace("$D", str(d)).replace("$PY", sys.executable)
        out.extend(FAST if a == "$FAST" else [a.replace("$FAST", " ".join(FAST))])
    return out


def execute(s: Scenario, ctx: Ctx, log: Path) -> Result:
    limit = s.limit_file_size

    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    start = time.time()
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen(expand(s, ctx.d), cwd=ROOT, env=ENV,
                                stdout=out, stderr=err, preexec_fn=limited)
        try:
            if s.signal_when is not None:
                sig, when = s.signal_when
                while proc.poll() is None and not when(ctx) and time.time() - start < TIMEOUT_S:
                    time.sleep(0.1)
                if proc.poll() is None:
                    proc.send_signal(sig)
            code: int | None = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
    return Result(code, log.with_suffix(".out").read_text(errors="replace"),
                  log.with_suffix(".err").read_text(errors="replace"), time.time() - start)


BOX = "│╭╮╰╯─ "


def first_line(r: Result) -> str:
    """The first stderr line starting with error / stopped, else the first line of a tyro
    error box, else the first line that is not part of a warning, else stdout's last line."""
    lines = [(ln[:1].isspace(), ln.strip().strip(BOX).strip()) for ln in r.stderr.splitlines()]
    plain = [text for indented, text in lines if text and not indented]
    for text in plain:
        if re.match(r"(error|stopped)\b", text):
            return text
    for text in plain:
        if "Error parsing" in text:
            return text
    for text in plain:
        if not re.search(r"Warning\b|warn\(", text):
            return text
    out = r.stdout.strip().splitlines()
    return out[-1] if out else ""


def shown(s: Scenario) -> str:
    text = " ".join(repr(a) if " " in a else a for a in s.argv).replace("$PY", "python")
    return "python " + text if s.argv and s.argv[0] == "-m" else text


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def run_one(s: Scenario, ctx: Ctx, log: Path) -> tuple[list[str], bool]:
    """One scenario's table row, and whether it went as expected."""
    try:
        if s.setup is not None:
            s.setup(ctx)
        r = execute(s, ctx, log)
        ok, kept = s.check(ctx, r) if s.check is not None else (True, "—")
    except Exception as e:  # a broken setup or check: shown in the row, counted as a failure
        r, ok, kept = Result(None, "", "", 0.0), False, f"script error: {e!r}"
    match = r.code == s.expect
    print(f"{s.fault}: exit {r.code} (expected {s.expect}), {r.seconds:.1f} s"
          f"{'' if ok else ', kept check FAILED'}", file=sys.stderr)
    line = first_line(r) or "(nothing on stderr)"
    row = [s.fault, shown(s), str(s.expect), f"{r.code}" + ("" if match else " ✗"), line,
           ("" if ok else "✗ ") + kept]
    return [c.replace(str(ctx.d), "$D") for c in row], match and ok


def run_all(todo: list[Scenario], out: Path) -> tuple[list[list[str]], list[str], bool]:
    """Every scenario in order: the rows, the skipped ones with their reason, all as
    expected."""
    rows: list[list[str]] = []
    skipped: list[str] = []
    good = True
    ctxs: dict[str, Ctx] = {}
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(todo):
        if s.skip:
            skipped.append(f"{s.fault}: {s.skip}")
            rows.append([s.fault, shown(s), str(s.expect), "skipped", s.skip, "—"])
            continue
        group = s.group or f"s{i:02d}"
        if group not in ctxs:
            ctxs[group] = Ctx(out / group, out)
            ctxs[group].d.mkdir()
        print(f"[{i + 1}/{len(todo)}] ", end="", file=sys.stderr)
        row, ok = run_one(s, ctxs[group], out / "logs" / f"{i:02d}")
        rows.append(row)
        good = good and ok
    return rows, skipped, good


def wanted(all_: list[Scenario], only: str | None) -> list[Scenario]:
    """Every scenario, or those whose fault or group contains ``only``, with their groups and
    the base run (which several of them copy)."""
    if only is None:
        return all_
    if not any(only in s.fault + s.group for s in all_):
        groups = ", ".join(sorted({s.group for s in all_ if s.group}))
        raise ValueError(f"--only {only!r} matches no scenario; expected part of a scenario's "
                         f"fault (the table's first column) or of a group: {groups}")
    groups = {s.group for s in all_ if s.group and only in s.fault + s.group}
    return [s for s in all_ if s.group in groups | {"base"} or only in s.fault]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=dir_arg, default=None,
                   help="directory for the scenarios' runs")
    p.add_argument("--only", default=None,
                   help="run the scenarios whose fault or group contains this")
    p.add_argument("--keep", action="store_true", help="keep the default temporary directory")
    a = p.parse_args()
    try:
        todo = wanted(scenarios(), a.only)
    except ValueError as e:
        p.error(str(e))
    out = a.out or Path(tempfile.mkdtemp(prefix="fault_table."))
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} is a file; expected a directory (made if missing)")
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        p.error(f"--out {out} is not empty")
    start = time.time()
    rows, skipped, good = run_all(todo, out)
    print(f"`$FAST` = `{' '.join(FAST)}` (env Pendulum-v1, backbone mlp unless named); "
          f"`$D` = the scenario's directory under {out}; "
          "every command runs as `python ...` with OMP_NUM_THREADS=1, WANDB_MODE=disabled, "
          "PYTHONPATH=tests:.\n")
    print("| fault | command | expected | exit | first line | kept |")
    print("|---|---|---:|---:|---|---|")
    for row in rows:
        print("| " + " | ".join(cell(c) for c in row) + " |")
    bad = sum(1 for r in rows if "✗" in r[3] or r[5].startswith("✗"))
    print(f"\n{len(rows)} scenarios, {len(skipped)} skipped, {bad} not as expected; "
          f"wall time {time.time() - start:.0f} s")
    for s in skipped:
        print(f"skipped: {s}")
    if a.out is None and not a.keep:
        shutil.rmtree(out, ignore_errors=True)
    else:
        print(f"runs and logs kept in {out}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
