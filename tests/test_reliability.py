"""Checkpoint and resume without loss, safe loading, bad input and numerical faults.

Faults are injected through ``faulty_envs`` (Pendulum with a NaN, a huge reward, a SIGKILL or
opaque state at a chosen step), crafted and damaged files, signals to a ``train.py``
subprocess, and bad flags. Exactness needs one thread: every test here runs single-threaded.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import importlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import faulty_envs
import gymnasium as gym
import numpy as np
import pytest
import torch

import rlkit.buffers.memory
from agents import cli, recipes, train
from agents.ddpg import DDPG, DDPGConfig
from agents.evaluate import run as evaluate_run
from envs.wrappers import FlickerObservation
from rlkit import checkpoint as checkpoint_module
from rlkit.buffers import make_replay, replay_memory
from rlkit.checkpoint import (
    FOOTER_MAGIC,
    CheckpointError,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from rlkit.config import LoopConfig, ModelConfig, ReplayConfig, replace_fields
from rlkit.envstate import restore_env, snapshot_env
from rlkit.faults import EnvError
from rlkit.rundir import RunDirBusy, RunLock, RunRecord
from rlkit.runlog import RunLogger, read_metrics, truncate_metrics
from rlkit.seeding import seed_everything
from rlkit.trainer import NonFiniteError, NonFiniteLossError, Trainer, TrainingInterrupted

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1",
                  "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
SUBPROCESS_ENV.pop(faulty_envs.KILL_AT_ENV, None)
RATES = ("wall_time", "sps", "updates_per_s", "peak_memory_mb")  # differ between runs

MLP = replace_fields(train.TrainConfig(), total_steps=400, learning_starts=100, batch_size=32,
                     eval_every=0, eval_episodes=1, log_every=50, progress=False, d_model=32,
                     device="cpu", buffer_size=10_000)
GRU = replace_fields(MLP, env="rlkit/Pendulum-V-v0", backbone="gru", d_model=16, seq_len=8,
                     batch_size=8, num_envs=2, eval_every=200, agent=DDPGConfig(head_hidden=(16,)))
TINY = replace_fields(MLP, total_steps=60, learning_starts=20, batch_size=8, log_every=20,
                      d_model=16, agent=DDPGConfig(head_hidden=(16,)))
# the CLI flags of MLP (for train.py subprocesses)
MLP_ARGS = ["--learning-starts", "100", "--batch-size", "32", "--eval-every", "0",
            "--eval-episodes", "1", "--no-progress", "--d-model", "32", "--device", "cpu",
            "--buffer-size", "10000"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in RATES} for r in rows]


def _assert_same(a, b, where: str = "") -> None:
    """Exact equality of nested dicts / lists / tensors / arrays."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def _resume(run: Path, **change) -> dict[str, float]:
    return train.main(replace_fields(train.TrainConfig(), resume=str(run), **change))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished MLP run of 60 steps with checkpoints at 20, 40 and 60."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    train.main(replace_fields(TINY, checkpoint_every=20, run_dir=str(run)))
    torch.set_num_threads(threads)
    return run


# ----------------------------------------------------------------------------- exact resume
def test_a_stop_on_the_last_step_keeps_the_final_training_row_on_resume(tmp_path, monkeypatch):
    """Stopped by SIGTERM on its last step (70, not a multiple of --log-every 20), a run
    resumes to write its final evaluation and checkpoint. The resumed run judged "steps since
    the last row" from the step it resumed at and left out the training row at 70 (with its
    losses and train_return_mean) that the uninterrupted run writes."""
    base = replace_fields(TINY, total_steps=70)
    train.main(replace_fields(base, run_dir=str(tmp_path / "full")))
    evaluate = Trainer._maybe_evaluate

    def stop_at_the_end(self, bar):
        evaluate(self, bar)
        if self.step == 70:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_maybe_evaluate", stop_at_the_end)
    with pytest.raises(TrainingInterrupted):
        train.main(replace_fields(base, run_dir=str(tmp_path / "split")))
    monkeypatch.undo()
    _resume(tmp_path / "split")
    full, split = (read_metrics(tmp_path / d) for d in ("full", "split"))
    assert [r["step"] for r in full if "critic_loss" in r] == [20, 40, 60, 70]
    assert _strip(split) == _strip(full)
    # no steps ran in the resumed process: that row has no rates, rather than rates of 0 that
    # a report would average in
    last = [r for r in split if r["step"] == 70 and "critic_loss" in r][0]
    assert "sps" not in last and "updates_per_s" not in last and last["updates"] > 0


@pytest.mark.parametrize("base", [MLP, GRU, replace_fields(MLP, initial_updates=30),
                                  replace_fields(MLP, update_every=60, updates_per_step=0.5),
                                  replace_fields(MLP, target_noise=0.2),
                                  replace_fields(GRU, predict_weight=0.5)],
                         ids=["mlp-Pendulum-v1", "gru-Pendulum-V-2envs", "mlp-initial-updates",
                              "mlp-update-every", "mlp-target-noise", "gru-predictors"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, base):
    n = base.loop.total_steps
    train.main(replace_fields(base, run_dir=str(tmp_path / "full")))
    train.main(replace_fields(base, total_steps=n // 2, run_dir=str(tmp_path / "split")))
    first = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert first["kind"] == "final" and first["step"] == n // 2
    _resume(tmp_path / "split", total_steps=n)

    full, split = (_strip(read_metrics(tmp_path / d)) for d in ("full", "split"))
    extra = [r for r in split if r not in full]
    if base.loop.eval_every == 0:
        # the first part's final evaluation is the only extra event, and it left training's
        # generators alone: every later event equals the uninterrupted run's
        assert len(extra) == 1 and extra[0]["step"] == n // 2 and "eval_return_mean" in extra[0]
    else:
        assert extra == []  # n / 2 is an evaluation step of both runs
    assert [r for r in split if r not in extra] == full
    assert [r["step"] for r in split if "updates" in r] == list(range(50, n + 1, 50))
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("full", "split"))
    assert a["step"] == b["step"] == n and a["num_updates"] == b["num_updates"]
    _assert_same(a["agent"], b["agent"], "agent")  # networks, targets, optimizers: exact
    _assert_same(a["buffer"], b["buffer"], "buffer")
    _assert_same(a["loop"], b["loop"], "loop")
    assert json.loads((tmp_path / "split" / "config.json").read_text())["loop"]["total_steps"] == n


def test_checkpoint_holds_everything_to_continue(tiny_run):
    ckpt = load_checkpoint(tiny_run / "checkpoint.pt")
    assert {"config", "wandb_run_id", "step", "episodes", "num_updates", "agent", "buffer",
            "noise", "loop", "rng", "envs", "last_eval", "dropped_transitions"} <= ckpt.keys()
    assert {"actor", "critics", "actor_target", "critic_targets", "actor_opt",
            "critic_opt"} <= ckpt["agent"].keys()
    assert {"python", "numpy", "torch_cpu", "torch_cuda"} <= ckpt["rng"]["global"].keys()
    assert ckpt["rng"]["loop"]["bit_generator"] == "PCG64"
    assert ckpt["rng"]["agent_noise_gen"] is not None
    assert {"obs", "state", "prev_action", "prev_reward", "episode_return", "credit",
            "next_log", "next_eval"} <= ckpt["loop"].keys()
    (env,) = ckpt["envs"]
    pendulum = env["layers"][-1]
    assert env["uncaptured"] == [] and "state" in pendulum["attrs"] and \
        "_np_random" in pendulum["rngs"]
    assert load_checkpoint(tiny_run / "checkpoint.prev.pt")["step"] == 40


@pytest.mark.parametrize(("make", "before", "after"), [
    (lambda: FlickerObservation(gym.make("Pendulum-v1"), 0.3), 15, 25),  # wrapper with an rng
    (lambda: gym.make("rlkit/Pendulum-V-v0"), 15, 25),
    (lambda: gym.make("rlkit/MemoryCorridor-v0"), 5, 15),  # episodes of 21 steps
    (lambda: gym.make("Ant-v5"), 15, 25),  # MuJoCo: integration state and derived arrays
], ids=["flicker", "pendulum-v", "corridor", "ant"])
def test_env_snapshot_continues_the_episode_exactly(tmp_path, make, before, after):
    env = make()
    env.reset(seed=3)
    actions = [env.action_space.sample() for _ in range(before + after)]
    for a in actions[:before]:
        env.step(a)
    save_checkpoint(tmp_path / "env.pt", {"env": snapshot_env(env)})
    want = [env.step(a) for a in actions[before:]]
    other = make()
    other.reset(seed=99)
    restore_env(other, load_checkpoint(tmp_path / "env.pt")["env"])
    for w, got in zip(want, (other.step(a) for a in actions[before:])):
        np.testing.assert_array_equal(w[0], got[0])
        assert w[1:4] == got[1:4]


def test_env_state_that_cannot_be_saved_restarts_the_episode_with_a_warning(tmp_path):
    run = tmp_path / "run"
    train.main(replace_fields(TINY, env="faulty_envs:rlkit-test/Opaque-v0", run_dir=str(run)))
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["envs"][0]["uncaptured"] == ["FaultyPendulum.handle"]
    with pytest.warns(UserWarning, match=r"env 0 keeps state .*FaultyPendulum.handle.*"
                                         r"episode restarts"):
        _resume(run, total_steps=80)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 80


def test_a_non_finite_observation_from_a_reset_on_resume_names_the_env(tmp_path, monkeypatch):
    """An episode restarted on resume has its first observation checked as every reset's
    is (it went into the replay unchecked)."""
    run = tmp_path / "run"
    train.main(replace_fields(TINY, env="faulty_envs:rlkit-test/Opaque-v0", run_dir=str(run)))
    reset = faulty_envs.FaultyPendulum.reset

    def nan_unless_seeded(self, *, seed=None, options=None):
        obs, info = reset(self, seed=seed, options=options)
        return (obs if seed is not None else np.full_like(obs, np.nan)), info

    monkeypatch.setattr(faulty_envs.FaultyPendulum, "reset", nan_unless_seeded)
    with pytest.warns(UserWarning, match="episode restarts"), \
            pytest.raises(NonFiniteError, match=r"^env rlkit-test/Opaque-v0 \(vector index 0\) "
                                                r"returned a non-finite observation from reset "
                                                r"at step 60$"):
        _resume(run, total_steps=80)


# ----------------------------------------------------------------------------- kills, signals
@pytest.mark.slow
def test_sigkill_during_training_loses_at_most_one_checkpoint_interval(tmp_path):
    run, killed_at, interval = tmp_path / "run", 250, 100
    args = [sys.executable, "train.py", "--env", "faulty_envs:rlkit-test/Kill-v0",
            "--total-steps", "400", "--log-every", "10", "--checkpoint-every", str(interval),
            "--run-dir", str(run), *MLP_ARGS]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**SUBPROCESS_ENV, faulty_envs.KILL_AT_ENV: str(killed_at)})
    assert out.returncode == -signal.SIGKILL, out.stderr
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert killed_at - interval <= ckpt["step"] < killed_at and ckpt["kind"] == "periodic"
    assert max(r["step"] for r in read_metrics(run)) > ckpt["step"]  # events to drop

    _resume(run)  # --resume RUN_DIR: the run's own 400 steps
    cfg = replace_fields(MLP, env="faulty_envs:rlkit-test/Kill-v0", log_every=10,
                         checkpoint_every=interval, run_dir=str(tmp_path / "uninterrupted"))
    train.main(cfg)
    resumed, full = (_strip(read_metrics(d)) for d in (run, tmp_path / "uninterrupted"))
    assert resumed == full  # no duplicated or missing events, same values
    _assert_same(load_checkpoint(run / "checkpoint.pt")["agent"],
                 load_checkpoint(tmp_path / "uninterrupted" / "checkpoint.pt")["agent"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.slow
def test_signal_writes_a_checkpoint_of_the_latest_step_and_exits_128_plus_signal(tmp_path, sig):
    run = tmp_path / "run"
    args = [sys.executable, "train.py", "--total-steps", "1000000", "--log-every", "10",
            "--checkpoint-every", "100", "--run-dir", str(run), *MLP_ARGS]
    proc = subprocess.Popen(args, cwd=ROOT, env=SUBPROCESS_ENV, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 90
        while not (run / "checkpoint.pt").is_file():
            assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.1)
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    m = re.search(rf"interrupted by {sig.name} at step (\d+); checkpoint written to "
                  rf"\S*checkpoint\.pt; continue with --resume", err)
    assert m, err
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["kind"] == "interrupt" and ckpt["step"] == int(m.group(1))
    assert max(r["step"] for r in read_metrics(run)) == ckpt["step"] // 10 * 10
    assert ckpt["step"] > load_checkpoint(run / "checkpoint.prev.pt")["step"]


def test_two_pending_stop_signals_stop_with_the_second_ones_exit_code(monkeypatch, capsys):
    """Both signals pending before the loop's handler ran: the second raises at once, and the
    command line exits with that signal's code (it was 130 for a SIGTERM too)."""
    from rlkit.faults import stop_signals

    def twice(argv):
        with stop_signals():
            handler = signal.getsignal(signal.SIGTERM)
            handler(signal.SIGTERM, None)
            handler(signal.SIGTERM, None)

    monkeypatch.setattr(cli, "cli", twice)
    code, err = _cli(["--total-steps", 10], capsys)
    assert code == 143 and "stopped: second SIGTERM: stopping now, with no checkpoint" in err


def _assert_stopped_soon(flag, signum: int, within: float = 10.0) -> None:
    """``flag`` (a :class:`rlkit.faults.StopFlag`) holds ``signum`` within ``within`` seconds."""
    deadline = time.time() + within
    while flag.signum is None and time.time() < deadline:
        time.sleep(0.01)
    assert flag.signum == signum


def test_a_requested_stop_stops_the_loop_as_its_signal_would_from_any_thread(tmp_path):
    """``request_stop`` (what a Ray task's stop watch calls): a run still starting stops at
    its loop's first step with a checkpoint, and a loop in force at the end of its step, set
    from another thread; withdrawn, it stops nothing more."""
    import threading

    from rlkit.faults import clear_stop_request, request_stop, stop_signals

    request_stop(signal.SIGTERM)
    try:
        with pytest.raises(TrainingInterrupted, match=r"^interrupted by SIGTERM at step 1;"):
            train.main(replace_fields(TINY, run_dir=str(tmp_path / "early")))
        assert load_checkpoint(tmp_path / "early" / "checkpoint.pt")["kind"] == "interrupt"
    finally:
        clear_stop_request()
    try:
        with stop_signals() as flag:
            assert flag.signum is None
            threading.Thread(target=request_stop, args=(signal.SIGINT,)).start()
            _assert_stopped_soon(flag, signal.SIGINT)
    finally:
        clear_stop_request()
    with stop_signals() as flag:
        assert flag.signum is None
    train.main(replace_fields(TINY, run_dir=str(tmp_path / "after")))
    assert load_checkpoint(tmp_path / "after" / "checkpoint.pt")["kind"] == "final"


def test_a_stop_requested_as_a_loop_enters_its_stop_block_reaches_it(monkeypatch):
    """``request_stop`` from Ray's thread while ``stop_signals`` is being entered: the block
    read the pending requests before it listed its flag, so a request made in between set
    neither, and the run trained through the stop."""
    import threading

    import rlkit.faults
    from rlkit.faults import clear_stop_request, request_stop, stop_signals

    class Racing(list):
        def append(self, flag):  # the request comes while the flag is being listed
            thread = threading.Thread(target=request_stop, args=(signal.SIGTERM,))
            thread.start()
            thread.join(0.2)
            super().append(flag)

    monkeypatch.setattr(rlkit.faults, "_in_force", Racing())
    try:
        with stop_signals() as flag:
            _assert_stopped_soon(flag, signal.SIGTERM)
    finally:
        clear_stop_request()


def test_a_second_stop_signal_ends_the_process_at_once_even_inside_a_long_operation():
    """The first signal sets the flag and puts the signals' default action back, so that a
    second one does not wait for a Python bytecode boundary (a long tensor operation would hold
    a Python handler back); the handlers from before come back after the block."""
    from rlkit.faults import stop_signals

    before = signal.getsignal(signal.SIGTERM)
    with stop_signals() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs at the next bytecode
        assert flag.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is before

    code = ("import os, signal, sys, time\n"
            "from rlkit.faults import stop_signals\n"
            "with stop_signals() as flag:\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(0.05)\n"
            "    print('first', flag.signum, flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(30)\n"
            "print('not reached', flush=True)\n")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=SUBPROCESS_ENV,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGTERM, out.stderr
    assert out.stdout == f"first {int(signal.SIGINT)}\n"
    assert "send it again to stop at once, without one" in out.stderr
    assert time.monotonic() - t0 < 20


def test_killed_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    code = (
        "import os, signal, sys, torch\n"
        "from rlkit.checkpoint import save_checkpoint\n"
        "class Bomb:\n"
        "    def __reduce__(self):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "save_checkpoint(sys.argv[1], {'step': 1, 'w': torch.zeros(100_000)})\n"
        "save_checkpoint(sys.argv[1], {'step': 2, 'w': torch.ones(100_000), 'x': Bomb()})\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, timeout=60,
                         env=SUBPROCESS_ENV, capture_output=True)
    assert out.returncode == -signal.SIGKILL
    assert load_checkpoint(path)["step"] == 1  # the newest complete checkpoint survives
    stale = remove_stale_temp_files(path)  # the half-written one, cleaned on resume
    assert len(stale) == 1 and not stale[0].exists()


def test_failed_checkpoint_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"step": 1})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# ----------------------------------------------------------------------------- damaged files
def test_truncated_checkpoint_is_refused(tiny_run, tmp_path):
    data = (tiny_run / "checkpoint.pt").read_bytes()
    path = tmp_path / "checkpoint.pt"
    for cut in (len(data) // 2, len(data) - 10, 100):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="no rlkit integrity footer: the file is "
                                                  "truncated"):
            load_checkpoint(path)


def test_tampered_checkpoint_is_refused(tiny_run, tmp_path):
    data = bytearray((tiny_run / "checkpoint.pt").read_bytes())
    path = tmp_path / "checkpoint.pt"
    for at in (40, len(data) // 2, len(data) - 100):
        flipped = bytearray(data)
        flipped[at] ^= 0xFF
        path.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="corrupt: its SHA-256 does not match"):
            load_checkpoint(path)


class _Payload:
    """Pickles as a call to ``os.system`` that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_carrying_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps({"format_version": 2, "x": _Payload(marker)})
    buf = io.BytesIO()
    torch.save({"format_version": 2, "x": _Payload(marker)}, buf)

    def with_footer(body: bytes) -> bytes:  # a valid digest: only weights_only stands guard
        return body + FOOTER_MAGIC + hashlib.sha256(body).digest()

    cases = {"raw.pkl": (raw, "no rlkit integrity footer"),
             "raw_footer.pt": (with_footer(raw), "not a plain-data checkpoint"),
             "torch_footer.pt": (with_footer(buf.getvalue()),
                                 "not a plain-data checkpoint.*GLOBAL posix.system.*"
                                 "it was not executed")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / name)
        assert not marker.exists(), name
    pickle.loads(raw)  # the control: unpickled without guard, the payload does run
    assert marker.exists()


def test_resume_falls_back_to_the_previous_checkpoint_when_the_newest_is_damaged(
        tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"truncated.*resuming from checkpoint.prev.pt "
                                         r"\(step 40\) instead; the unreadable file is kept "
                                         r"as checkpoint.corrupt.pt"):
        _resume(run, total_steps=80)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 80
    steps = [r["step"] for r in read_metrics(run) if "critic_loss" in r]
    assert steps == [20, 40, 60, 80]  # events after step 40 were dropped, then logged again
    assert (run / "checkpoint.corrupt.pt").read_bytes() == data[: len(data) // 2]



def test_evaluation_falls_back_to_the_previous_checkpoint_as_resume_does(tiny_run, tmp_path,
                                                                         capsys):
    """``python -m agents.evaluate`` on a run whose checkpoint.pt is damaged and whose
    checkpoint.prev.pt reads: the previous policy, with a warning naming both (it stopped,
    where --resume goes on); with both damaged, both are named. Nothing is renamed."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"checkpoint.pt has no rlkit integrity footer: the "
                                         r"file is truncated.*; the policy is that of "
                                         r"checkpoint.prev.pt \(step 40\), the checkpoint kept "
                                         r"before it"):
        assert evaluate_run([str(run), "--episodes", "1"]) == 0
    assert sorted(p.name for p in run.glob("checkpoint*")) == ["checkpoint.prev.pt",
                                                               "checkpoint.pt"]
    prev = (run / "checkpoint.prev.pt").read_bytes()
    (run / "checkpoint.prev.pt").write_bytes(prev[:100])
    assert evaluate_run([str(run), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^error: \S*checkpoint.pt has no rlkit integrity footer.*; and "
                     r"\S*checkpoint.prev.pt has no rlkit integrity footer", err), err

def test_a_fallback_resume_keeps_a_readable_previous_checkpoint(tiny_run, tmp_path):
    """Resuming past a corrupt checkpoint.pt must not make the corrupt file the previous
    checkpoint: after the first save of the resumed run, checkpoint.prev.pt still loads (the
    good step-40 one), and the corrupt file is kept aside under a free name."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoint.corrupt.pt").write_bytes(b"an earlier one")
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (run / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"corrupt.*kept as checkpoint.corrupt-2.pt"):
        _resume(run, total_steps=60, checkpoint_every=0)  # one save: at the end
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 60
    assert load_checkpoint(run / "checkpoint.prev.pt")["step"] == 40
    assert (run / "checkpoint.corrupt-2.pt").read_bytes() == bytes(data)
    assert (run / "checkpoint.corrupt.pt").read_bytes() == b"an earlier one"


def test_resume_with_only_a_damaged_checkpoint_is_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoint.prev.pt").unlink()
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (run / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"--resume .*corrupt: its SHA-256 does not "
                                              r"match"):
        _resume(run, total_steps=80)


def test_metrics_after_the_checkpoint_and_a_torn_last_line_are_dropped(tmp_path):
    rows = [{"step": s, "x": 1.0} for s in (10, 20, 30, 40)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 50, "x'  # killed mid-line
    (tmp_path / "metrics.jsonl").write_text(text)
    assert truncate_metrics(tmp_path, 20) == 3
    assert read_metrics(tmp_path) == rows[:2]


# ----------------------------------------------------------------------------- other runs
def test_checkpoint_of_another_backbone_is_refused(tmp_path):
    small = replace_fields(TINY, env="rlkit/Pendulum-V-v0", seq_len=4)
    train.main(replace_fields(small, backbone="gru", run_dir=str(tmp_path / "gru")))
    train.main(replace_fields(small, backbone="lstm", run_dir=str(tmp_path / "lstm")))
    shutil.copy(tmp_path / "gru" / "checkpoint.pt", tmp_path / "lstm" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="checkpoint is of another run: model.backbone is "
                                              "'gru' there, 'lstm' in this run's config.json"):
        _resume(tmp_path / "lstm", total_steps=80)


def test_checkpoint_with_other_shapes_is_refused_naming_the_parameters(tmp_path):
    train.main(replace_fields(TINY, d_model=16, run_dir=str(tmp_path / "d16")))
    train.main(replace_fields(TINY, d_model=32, run_dir=str(tmp_path / "d32")))
    ckpt = load_checkpoint(tmp_path / "d16" / "checkpoint.pt")
    # a checkpoint whose config claims the other run's shapes: the parameters still disagree
    ckpt["config"] = load_checkpoint(tmp_path / "d32" / "checkpoint.pt")["config"]
    save_checkpoint(tmp_path / "d32" / "checkpoint.pt", ckpt)
    files = {name: (tmp_path / "d32" / name).read_text() for name in ("config.json",
                                                                      "metrics.jsonl")}
    with pytest.raises(CheckpointError, match=r"actor\.\S+ has shape \(16, 3\) in the "
                                              r"checkpoint, \(32, 3\) in this run"):
        _resume(tmp_path / "d32", total_steps=80)
    assert files == {name: (tmp_path / "d32" / name).read_text() for name in files}  # untouched


def test_resume_refuses_a_different_backbone_on_the_command_line(tiny_run, tmp_path):
    """The refusal names the flag as typed, the run's value and the value asked for."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(ValueError, match=r"^--resume: the run has --backbone mlp, not lstm; "
                                         r"only --total-steps, .* may change"):
        _resume(run, backbone="lstm", total_steps=80)
    for fields, said in [({"env": "rlkit/Pendulum-V-v0"},
                          "--env Pendulum-v1, not rlkit/Pendulum-V-v0"),
                         ({"agent.gamma": 0.5}, "--agent.gamma 0.99, not 0.5"),
                         ({"noise_sigma": 0.3}, "--noise-sigma 0.2, not 0.3"),
                         ({"agent.twin_critics": True},
                          "--agent.no-twin-critics, not --agent.twin-critics")]:
        with pytest.raises(ValueError, match=rf"^--resume: the run has {re.escape(said)}; only"):
            _resume(run, total_steps=80, **fields)
    assert RunRecord.read(run).loop.total_steps == 60  # nothing was changed


# ----------------------------------------------------------------------------- bad input
def test_resume_of_a_missing_directory(tmp_path):
    with pytest.raises(ValueError, match=r"--resume \S+nowhere: no such run directory"):
        _resume(tmp_path / "nowhere")


def test_a_run_stopped_while_starting_is_started_again_in_its_directory(tmp_path):
    """Killed after making its directory but before config.json: --resume says to start it
    again, and the same --run-dir is accepted (it holds only the lock and a temporary file)."""
    from rlkit.rundir import fresh_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text("pid 1 on host h since 2026-01-01 00:00:00\n")
    (run / ".config.json.tmp").write_text('{"run": ')
    with pytest.raises(ValueError, match="start it again with the same --run-dir"):
        _resume(run)
    assert fresh_dir(str(run), "x", "run directory", "--run-dir") == run
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(FileExistsError, match="already exists and is not empty; choose another "
                                              "--run-dir$"):
        fresh_dir(str(run), "x", "run directory", "--run-dir")
    (run / "config.json").write_text("{}")  # a run's directory: --resume goes on with it
    with pytest.raises(FileExistsError, match=re.escape(
            f"not empty; choose another --run-dir, or go on with what it holds: --resume {run}")):
        fresh_dir(str(run), "x", "run directory", "--run-dir")
    (run / "config.json").unlink()
    (run / "grid.json").write_text("{}")  # a grid's directory: likewise
    with pytest.raises(FileExistsError, match=re.escape(
            f"grid directory {run} already exists and is not empty; choose another "
            f"--grid-dir, or go on with what it holds: --resume {run}")):
        fresh_dir(str(run), "x", "grid directory", "--grid-dir")


def test_runs_started_in_the_same_second_each_get_their_own_default_directory(tmp_path,
                                                                            monkeypatch):
    """The default name holds the time to the second: a second run started in the same
    second (another --agent.gamma, say) was refused with a --resume of the first one's
    directory. Each now claims its own (an atomic mkdir, so also between processes)."""
    from rlkit import rundir
    from rlkit.rundir import fresh_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20261206-182855")
    got = [fresh_dir(None, "Pendulum-v1__mlp__s0__", "run directory", "--run-dir")
           for _ in range(3)]
    assert [str(p) for p in got] == ["runs/Pendulum-v1__mlp__s0__20261206-182855",
                                     "runs/Pendulum-v1__mlp__s0__20261206-182855-2",
                                     "runs/Pendulum-v1__mlp__s0__20261206-182855-3"]
    assert all(p.is_dir() and not any(p.iterdir()) for p in got)
    for gamma in (0.9, 0.95):  # two whole runs on the default directory, in the same second
        train.main(replace_fields(TINY, **{"agent.gamma": gamma}))
    made = sorted((tmp_path / "runs").glob("Pendulum-v1__mlp__s0__20261206-182855-[45]"))
    assert [RunRecord.read(p).agent["gamma"] for p in made] == [0.9, 0.95]


def test_resume_of_a_directory_of_other_files_does_not_say_start_it_again(tmp_path):
    """A folder with files that no run writes before config.json is not a run stopped while
    starting: --run-dir would refuse it, so --resume does not point there."""
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"not a run directory \(no config.json, and files that "
                                         r"a run does not write before it\); expected the "
                                         r"directory of a run of train.py$"):
        _resume(tmp_path / "other")


def test_resume_of_a_directory_without_checkpoint(tiny_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"not a run directory \(no config.json\)"):
        _resume(tmp_path / "empty")
    run = tmp_path / "no_ckpt"
    run.mkdir()
    shutil.copy(tiny_run / "config.json", run / "config.json")
    (run / "metrics.jsonl").write_text('{"step": 20, "wall_time": 1.0}\n')  # it had logged
    with pytest.raises(CheckpointError, match=r"no checkpoint at \S+checkpoint.pt"):
        _resume(run)


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(tiny_run, tmp_path):
    """config.json written, nothing logged, no checkpoint: the run starts again from step 0,
    which is the same run."""
    run = tmp_path / "killed_early"
    run.mkdir()
    shutil.copy(tiny_run / "config.json", run / "config.json")
    (run / "metrics.jsonl").write_text('{"step": 20, "wall')  # a torn first line
    (run / ".checkpoint.pt.x1.tmp").write_bytes(b"half")  # the first write, killed
    _resume(run)
    assert _strip(read_metrics(run)) == _strip(read_metrics(tiny_run))
    _assert_same(load_checkpoint(run / "checkpoint.pt")["agent"],
                 load_checkpoint(tiny_run / "checkpoint.pt")["agent"])
    assert not list(run.glob(".checkpoint.pt.*.tmp"))


def test_resume_of_a_finished_run_asks_for_more_steps(tiny_run):
    with pytest.raises(ValueError, match=r"the run is at step 60 of --total-steps 60; pass a "
                                         r"larger --total-steps"):
        _resume(tiny_run)


def test_resume_past_its_total_names_the_runs_step(tiny_run):
    with pytest.raises(ValueError, match=r"the run is at step 60, past --total-steps 40; pass a "
                                         r"--total-steps larger than 60 to continue it"):
        _resume(tiny_run, total_steps=40)


def test_resume_of_one_run_refuses_grid_flags_before_writing_anything(tiny_run, tmp_path,
                                                                      capsys):
    """Several --backbone or --seed values, or --grid-dir, on the resume of one run are
    refused by what they are, and nothing is made (no grid directory, no change to the run)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for flags, said in (
            (["--backbone", "mlp", "gru"], "got --backbone mlp gru"),
            (["--seed", 0, 1], "got --seed 0 1"),
            (["--backbone", "mlp", "gru", "--seed", 0, 1], "got --backbone mlp gru --seed 0 1")):
        code, err = _cli(["--resume", run, "--total-steps", 80, *flags], capsys)
        assert code == 2, err
        assert _first_error(err) == (f"error: --resume {run} continues one run, whose "
                                     "config.json holds its backbone and seed: expected no "
                                     f"--backbone or --seed beyond the run's own, {said}"), err
    code, err = _cli(["--resume", run, "--total-steps", 80, "--grid-dir", tmp_path / "g"],
                     capsys)
    assert code == 2 and _first_error(err) == (
        f"error: --grid-dir {tmp_path / 'g'} places the runs of a grid, but --resume {run} "
        "continues one run in its own directory: expected it left out (a grid's directory "
        "given to --resume continues the grid)"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_takes_recipe_auto_as_the_recipe_made_for_the_runs_env(tmp_path, capsys):
    """``--recipe auto`` (the default a run was started with) names the recipe made for the
    run's env, which train.py stores by name in config.json ("none" for Pendulum-v1); another
    is a change."""
    run = tmp_path / "run"
    code, err = _cli([*TINY_ARGS, "--run-dir", run], capsys)
    assert code == 0, err
    assert RunRecord.read(run).run.recipe == "none"
    code, err = _cli(["--resume", run, "--total-steps", 80, "--recipe", "auto"], capsys)
    assert code == 0, err
    assert RunRecord.read(run).loop.total_steps == 80
    code, err = _cli(["--resume", run, "--total-steps", 100, "--recipe", "pendulum-pomdp"],
                     capsys)
    assert code == 2 and (f"--resume {run} --recipe pendulum-pomdp: the run was made with "
                          f"'none', and a run keeps its own recipe: give no --recipe, or "
                          f"--recipe none") in err, err
    code, err = _cli(["--resume", run, "--total-steps", 100, "--recipe", "bogus"], capsys)
    assert code == 2 and f"--resume {run}: unknown --recipe 'bogus'; expected auto, none" in err


def test_resume_names_the_recipe_auto_picks_for_the_runs_env(tmp_path, capsys):
    """A run made with a recipe for another env than its own: ``--recipe auto`` on resume is
    refused, naming what auto picks there (none) and the run's own."""
    run = tmp_path / "run"
    code, err = _cli([*TINY_ARGS, "--run-dir", run, "--recipe", "memory-corridor-20"], capsys)
    assert code == 0, err
    code, err = _cli(["--resume", run, "--total-steps", 80, "--recipe", "auto"], capsys)
    assert code == 2 and ("--recipe auto (auto picks none for Pendulum-v1): the run was made "
                          "with 'memory-corridor-20'") in err, err
    code, err = _cli(["--resume", run, "--total-steps", 80, "--recipe", "memory-corridor-20"],
                     capsys)
    assert code == 0, err


def test_resume_checks_its_flags_against_the_runs_own_config(tmp_path, capsys):
    """A run made with a recipe that turns on twin critics: typing one of its flags that needs
    them again on resume is accepted (it was checked against the plain defaults, and refused)."""
    run = tmp_path / "run"
    args = [*TINY_ARGS, "--env", "rlkit/MemoryCorridor-v0", "--backbone", "gru", "--run-dir",
            run]
    code, err = _cli([*args, "--agent.actor-q", "min"], capsys)
    assert code == 0, err
    code, err = _cli(["--resume", run, "--total-steps", 80, "--agent.actor-q", "min"], capsys)
    assert code == 0, err
    assert RunRecord.read(run).agent["actor_q"] == "min"


def test_resume_of_a_run_recorded_with_recipe_auto_takes_it_as_made_with_none(tmp_path,
                                                                            capsys):
    """Runs made from Python before ``main`` recorded ``none`` say ``auto``: on resume that is
    a run made with no recipe, whatever auto picks for its env."""
    run = tmp_path / "run"
    with contextlib.ExitStack() as held:  # main's run, without its recipe check: an old run
        train._run(replace_fields(TINY, env="rlkit/Pendulum-V-v0", run_dir=str(run)), None,
                   None, None, held)
    assert RunRecord.read(run).run.recipe == "auto"
    code, err = _cli(["--resume", run, "--total-steps", 80, "--recipe", "none"], capsys)
    assert code == 0, err
    code, err = _cli(["--resume", run, "--total-steps", 100, "--recipe", "auto"], capsys)
    assert code == 2 and ("--recipe auto (auto picks pendulum-pomdp for rlkit/Pendulum-V-v0): "
                          "the run was made with 'none'") in err, err
    code, err = _cli(["--resume", run, "--total-steps", 100], capsys)
    assert code == 0, err


def test_a_run_made_from_python_records_no_recipe_and_refuses_an_unknown_one(tmp_path, capsys):
    """``main`` applies no recipe: left at ``auto`` it records ``none``, which a resume with
    ``--recipe none`` keeps; an unknown name is refused before the run starts."""
    run = tmp_path / "run"
    train.main(replace_fields(TINY, env="rlkit/Pendulum-V-v0", run_dir=str(run)))
    assert RunRecord.read(run).run.recipe == "none"
    code, err = _cli(["--resume", run, "--total-steps", TINY.loop.total_steps + 20, "--recipe",
                      "none"], capsys)
    assert code == 0, err
    with pytest.raises(ValueError, match=r"unknown --recipe 'bogus'; expected auto, none"):
        train.main(replace_fields(TINY, recipe="bogus", run_dir=str(tmp_path / "bogus")))
    assert not (tmp_path / "bogus").exists()


def test_a_recipe_named_from_python_but_not_applied_is_warned_of(tmp_path):
    """``main`` applies no recipe: a config that names one but holds none of its values runs
    as given, with a warning listing them; once applied (then changed in part) it is quiet."""
    recipe = recipes.recipes()["pendulum-pomdp"]
    cfg = replace_fields(TINY, env="rlkit/Pendulum-V-v0", backbone="gru",
                         recipe="pendulum-pomdp", run_dir=str(tmp_path / "run"))
    with pytest.warns(UserWarning, match=r"run.recipe is 'pendulum-pomdp', but none of its "
                      r"values is in this config \(total_steps=30000, max_window=64, "
                      r"batch_size=16, d_model=64.*: setting the name does not apply"):
        train.main(cfg)
    record = RunRecord.read(tmp_path / "run")
    assert (record.run.recipe, record.loop.total_steps) == ("pendulum-pomdp",
                                                            TINY.loop.total_steps)
    applied = replace_fields(recipe.apply(cfg), total_steps=60, d_model=8)
    assert recipe.missing_from(applied) == []
    assert "agent.encoder_lr=0.0003" in recipe.missing_from(replace_fields(cfg, backbone="mamba"))


def test_the_recipe_warning_reads_values_without_checking_them_and_spares_the_command_line(
        tmp_path, capsys):
    """The check read each recipe value by setting it, so a value never typed was checked
    against the flags: the corridor recipe's batch of 32 beside a buffer of 24 stopped a run
    that names it. And the command line, which applies its recipe and then the flags, is not
    warned when its flags change every one of the recipe's values."""
    corridor = replace_fields(TINY, env="rlkit/MemoryCorridor-L20-v0", buffer_size=24,
                              recipe="memory-corridor-20", run_dir=str(tmp_path / "py"))
    with pytest.warns(UserWarning, match=r"none of its values is in this config \(total_steps="
                                         r"6300, learning_starts=630, batch_size=32"):
        train.main(corridor)
    every = ["--env", "rlkit/MemoryCorridor-L20-v0", "--total-steps", 60, "--learning-starts", 20,
             "--batch-size", 8, "--buffer-size", 24, "--d-model", 16, "--updates-per-step", 0.5,
             "--eval-every", 0, "--eval-episodes", 1, "--agent.pre-tanh-penalty", 0,
             "--agent.no-twin-critics", "--no-progress", "--device", "cpu"]
    code, err = _cli([*every, "--run-dir", tmp_path / "cli"], capsys)
    assert code == 0 and "recipe" not in err, err
    assert RunRecord.read(tmp_path / "cli").run.recipe == "memory-corridor-20"


def test_resume_refuses_a_flag_typed_at_the_package_default_that_is_not_the_runs(
        tiny_run, tmp_path, capsys):
    """``--log-every 1000`` (the default) on a run that logs every 20 steps is a change,
    refused by name; typed at the run's own value, a flag is accepted."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert train.TrainConfig().loop.log_every == 1000 != 20
    for flags, said in ((["--log-every", 1000], "the run has --log-every 20, not 1000"),
                        (["--agent.head-hidden", 256],
                         "the run has --agent.head-hidden 16, not 256")):
        code, err = _cli(["--resume", run, "--total-steps", 80, *flags], capsys)
        assert code == 2 and re.search(rf"^error: --resume: {said}; only --total-steps",
                                       _first_error(err)), err
    assert RunRecord.read(run).loop.total_steps == 60  # nothing was changed
    code, err = _cli(["--resume", run, "--total-steps", 80, "--log-every", 20, "--env",
                      "Pendulum-v1"], capsys)
    assert code == 0, err
    assert RunRecord.read(run).loop.total_steps == 80
    # config.json holds --device and --compile resolved ("cpu", "off"): "auto" is the run's own
    code, err = _cli(["--resume", run, "--total-steps", 100, "--device", "auto", "--compile",
                      "auto"], capsys)
    assert code == 0, err
    assert RunRecord.read(run).loop.total_steps == 100



def test_resume_takes_a_flag_spelt_with_underscores_as_given(tiny_run, tmp_path, capsys):
    """The parser takes ``--log_every`` as ``--log-every``, but resume did not count it as
    given: a change to a field that may not change went through unapplied, without a word, and
    ``--total_steps 15000`` (the default) was dropped."""
    assert cli.given_on_resume(["--log_every", "5", "--total_steps=15000", "--agent.head_hidden",
                                "8", "--no_progress"]) == {
        "log_every", "total_steps", "head_hidden", "progress"}
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    code, err = _cli(["--resume", run, "--total_steps", 80, "--log_every", 1000], capsys)
    assert code == 2 and re.search(r"^error: --resume: the run has --log-every 20, not 1000; "
                                   r"only --total-steps", _first_error(err)), err
    assert RunRecord.read(run).loop.total_steps == 60


def test_resume_accepts_the_device_a_run_made_with_auto_resolved_to(tmp_path, capsys):
    """A run made with ``--device auto`` records ``run.device`` as typed and ``device`` as
    resolved: ``--resume --device <that device>`` names the device it ran on, not a change
    (it was refused as "the run has --device auto, not cpu"); another device still is."""
    args = [a for a in TINY_ARGS if a != "--device" and a != "cpu"]
    run = tmp_path / "run"
    code, err = _cli([*args, "--device", "auto", "--run-dir", run], capsys)
    assert code == 0, err
    record = RunRecord.read(run)
    assert record.run.device == "auto" and record.device in ("cpu", "cuda")
    code, err = _cli(["--resume", run, "--total-steps", 80, "--device", record.device], capsys)
    assert code == 0, err
    assert RunRecord.read(run).loop.total_steps == 80
    other = "cuda" if record.device == "cpu" else "cpu"
    code, err = _cli(["--resume", run, "--total-steps", 100, "--device", other], capsys)
    assert code == 2 and f"not {other}" in _first_error(err), err

def test_resume_applies_a_flag_given_at_its_default_value(tiny_run, tmp_path, capsys):
    """A flag that may change on resume counts as given when it is on the command line, even
    at its default value (``--checkpoint-every 0``, ``--total-steps 15000``); left off, the
    run keeps its own."""
    from agents.resume import resume_config

    assert cli.given_on_resume(["--resume", "r", "--total-steps=15000", "--no-progress",
                                "--seed", "1", "--checkpoint-every", "0", "--env", "x",
                                "--agent.no-twin-critics"]) == {
        "resume", "total_steps", "progress", "seed", "checkpoint_every", "id", "twin_critics"}
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    code, err = _cli(["--resume", run, "--total-steps", 80, "--no-progress"], capsys)
    assert code == 0, err
    assert RunRecord.read(run).loop.checkpoint_every == 20  # not given: the run's own
    code, err = _cli(["--resume", run, "--total-steps", 100, "--checkpoint-every", 0,
                      "--no-progress"], capsys)
    assert code == 0, err
    assert RunRecord.read(run).loop.checkpoint_every == 0  # given at the default: applied
    default = train.TrainConfig().loop.total_steps
    asked = replace_fields(train.TrainConfig(), resume=str(run), total_steps=default)
    assert resume_config(asked, {"total_steps"})[0].loop.total_steps == default
    with pytest.raises(ValueError, match=r"the run is at step 100 of --total-steps 100"):
        resume_config(asked)  # not given: the run's own, which it has reached


def test_negative_checkpoint_every_stops_before_training(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="--checkpoint-every must be an integer >= 0, got -5"):
        train.main(replace_fields(TINY, checkpoint_every=-5, run_dir=str(run)))
    assert not run.exists()


# ----------------------------------------------------------------------------- numerics
def _fault_in_env_1(kind: str) -> str:
    """The id whose fault fires in sub-env 1 of a 2-env run with seed 0."""
    parity = (seed_everything(0).env_seed + 1) % 2
    return f"faulty_envs:rlkit-test/{kind}{'Odd' if parity else 'Even'}-v0"


@pytest.mark.parametrize(("kind", "what"), [("NaNObs", "observation"), ("NaNReward", "reward")])
def test_nonfinite_env_output_names_the_env_and_the_step(tmp_path, kind, what):
    cfg = replace_fields(TINY, env=_fault_in_env_1(kind), num_envs=2, total_steps=600,
                         run_dir=str(tmp_path / "run"))
    # the fault fires at sub-env 1's 250th step: 500 steps summed over the 2 envs
    env_id = _fault_in_env_1(kind).split(":")[1]
    with pytest.raises(NonFiniteError, match=rf"^env {env_id} \(vector index 1\) returned a "
                                             rf"non-finite {what} at step 500 .*--drop-nonfinite"):
        train.main(cfg)


def test_a_non_finite_observation_from_a_restart_names_the_env(tmp_path):
    """A dropped transition restarts its env; a reset that is not finite either stops the run,
    naming the env by id and by its index in the vector env."""
    kind = _fault_in_env_1("NaNReset")
    cfg = replace_fields(TINY, env=kind, num_envs=2, total_steps=600, drop_nonfinite=True,
                         run_dir=str(tmp_path / "run"))
    with pytest.raises(NonFiniteError, match=rf"^env {kind.split(':')[1]} \(vector index 1\) "
                                             r"returned a non-finite observation from reset at "
                                             r"step 500$"):
        train.main(cfg)


@pytest.mark.parametrize("input_norm", [False, True])
def test_a_non_finite_observation_from_the_first_reset_names_the_env_at_step_0(tmp_path,
                                                                             input_norm):
    """The first reset is checked as every later one: the run stops at step 0 naming the env
    (it went unnoticed until that env's first step came back non-finite, and with
    ``--agent.input-norm`` the norms refused it without naming the env)."""
    kind = _fault_in_env_1("NaNFirstReset")
    cfg = replace_fields(TINY, env=kind, num_envs=2, total_steps=600,
                         run_dir=str(tmp_path / "run"), **{"agent.input_norm": input_norm})
    with pytest.raises(NonFiniteError, match=rf"^env {kind.split(':')[1]} \(vector index 1\) "
                                             r"returned a non-finite observation from reset at "
                                             r"step 0$"):
        train.main(cfg)


@pytest.mark.parametrize(("backbone", "dropped", "stored"), [("mlp", 1, 599), ("gru", 2, 299)])
def test_drop_nonfinite_drops_counts_and_goes_on(tmp_path, monkeypatch, backbone, dropped,
                                                stored):
    restarted = []
    restart = Trainer._restart_envs
    monkeypatch.setattr(Trainer, "_restart_envs", lambda self, mask, obs: (
        restarted.append(mask.tolist()), restart(self, mask, obs)))
    cfg = replace_fields(TINY, env=_fault_in_env_1("NaNObs"), backbone=backbone, num_envs=2,
                         total_steps=600, log_every=100, drop_nonfinite=True,
                         run_dir=str(tmp_path / "run"))
    if backbone == "gru":
        cfg = replace_fields(cfg, seq_len=4)
    assert np.isfinite(train.main(cfg)["eval_return_mean"])
    rows = [r for r in read_metrics(tmp_path / "run") if "critic_loss" in r]
    assert [r["dropped_transitions"] for r in rows] == [0, 0, 0, 0, dropped, dropped]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["dropped_transitions"] == dropped
    # mlp: every transition but the bad one; gru: one step of both streams dropped
    assert (ckpt["buffer"]["size"] if backbone == "mlp" else ckpt["buffer"]["count"]) == stored
    assert np.isfinite(ckpt["loop"]["obs"]).all()
    # mlp: the bad env restarts; gru: every stream is cut at the dropped step, so every env
    # restarts and acts from the initial state where its stored episode starts
    assert restarted == ([[False, True]] if backbone == "mlp" else [[True, True]])



@pytest.mark.parametrize("backbone", ["mlp", "gru"])
def test_drop_nonfinite_that_drops_every_transition_stops_naming_why(tmp_path, backbone):
    """An env whose every reward is NaN, with --drop-nonfinite: the replay is empty when
    learning starts. The run stopped as bad input with "cannot sample from an empty replay
    buffer" (exit 2), naming neither the drops nor the env."""
    cfg = replace_fields(TINY, env="faulty_envs:rlkit-test/NaNRewards-v0", backbone=backbone,
                         drop_nonfinite=True, run_dir=str(tmp_path / "run"))
    with pytest.raises(NonFiniteError, match=r"^nothing to train on at step 20: every step "
                                             r"so far had a non-finite observation or reward "
                                             r"\(env rlkit-test/NaNRewards-v0\) and "
                                             r"--drop-nonfinite dropped it \(20 rows\), so the "
                                             r"replay is empty$"):
        train.main(cfg)

def test_a_dropped_step_restarts_no_env_whose_episode_ended_on_it(tmp_path, monkeypatch):
    """50-step episodes: the fault comes on the last step of an episode of both envs, which
    the vector env has restarted already; only the bad env is restarted again, and the other's
    episode counts as one."""
    restarted = []
    restart = Trainer._restart_envs
    monkeypatch.setattr(Trainer, "_restart_envs", lambda self, mask, obs: (
        restarted.append(mask.tolist()), restart(self, mask, obs)))
    cfg = replace_fields(TINY, env=_fault_in_env_1("NaNObs50"), backbone="gru", seq_len=4,
                         num_envs=2, total_steps=600, log_every=100, drop_nonfinite=True,
                         run_dir=str(tmp_path / "run"))
    train.main(cfg)
    assert restarted == [[False, True]]
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["dropped_transitions"] == 2
    # 12 episode ends over the two envs, one of them the bad env's (not an episode)
    assert ckpt["episodes"] == 11


def test_nonfinite_loss_stops_with_a_diagnostic_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = replace_fields(TINY, env="faulty_envs:rlkit-test/HugeReward-v0", total_steps=600,
                         learning_starts=100, batch_size=32, log_every=50, checkpoint_every=100,
                         run_dir=str(run))
    with pytest.raises(NonFiniteLossError, match=r"a loss became non-finite at update \d+ "
                                                 r".*diagnostic checkpoint written to .*"
                                                 r"diagnostic.pt; the last good checkpoint"):
        train.main(cfg)
    diag, good = load_checkpoint(run / "diagnostic.pt"), load_checkpoint(run / "checkpoint.pt")
    assert diag["kind"] == "diagnostic" and diag["first_nonfinite_update"] >= 50
    assert good["step"] < diag["step"] and good["step"] % 100 == 0
    assert all(torch.isfinite(p).all() for p in good["agent"]["critics"].values())


def test_fp16_stops_on_a_non_finite_loss_and_on_a_loss_scale_below_its_floor(tmp_path,
                                                                           monkeypatch):
    """fp16 updates (with ``grad_scale``) were left to their scaler. The loss is computed
    before scaling, so a non-finite one is the forward's, which no scale mends: the scaler
    skipped every update, halved its scale to 0 and, 1 / 0 being inf, the actor stepped on
    NaN gradients (its weights NaN after 145 updates, no error). Both now stop the run."""
    update = DDPG.update

    def faulty(self, batch, loss: float, scale: float):
        metrics = update(self, batch)
        metrics["critic_loss"] = torch.tensor(loss)
        metrics["grad_scale"] = torch.tensor(scale)
        return metrics

    monkeypatch.setattr(DDPG, "update", lambda self, b: faulty(self, b, float("inf"), 2.0**16))
    with pytest.raises(NonFiniteLossError, match="a loss became non-finite at update 1 "):
        train.main(replace_fields(TINY, run_dir=str(tmp_path / "loss")))
    monkeypatch.setattr(DDPG, "update", lambda self, b: faulty(self, b, 1.0, 2.0**-25))
    with pytest.raises(NonFiniteLossError, match=r"the fp16 loss scale fell below 2\*\*-24 "
                                                 r"\(5.96e-08\): .* at update 1 "):
        train.main(replace_fields(TINY, run_dir=str(tmp_path / "scale")))
    diag = load_checkpoint(tmp_path / "scale" / "diagnostic.pt")
    assert diag["first_low_scale_update"] == 1 and "first_nonfinite_update" not in diag
    monkeypatch.setattr(DDPG, "update", lambda self, b: faulty(self, b, 1.0, 2.0**-24))
    train.main(replace_fields(TINY, run_dir=str(tmp_path / "floor")))  # at the floor: goes on


# ============================================================================ faults, issue 15
# Each class of fault ends with a documented exit code and a one-line message naming the
# file, field or flag (agents.cli: 2 bad input, 3 file system, 4 env exception), and keeps
# what was written before.
TINY_ARGS = ["--total-steps", "60", "--learning-starts", "20", "--batch-size", "8",
             "--log-every", "20", "--d-model", "16", "--agent.head-hidden", "16",
             "--eval-every", "0", "--eval-episodes", "1", "--no-progress", "--device", "cpu",
             "--buffer-size", "10000"]


def _cli(args: list[str], capsys) -> tuple[int, str]:
    """``train.py ARGS`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    try:
        cli.run([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _first_error(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith(("error:", "stopped:")))


# ----------------------------------------------------------------------------- file system
def test_run_dir_that_is_a_file_is_bad_input(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, err = _cli([*TINY_ARGS, "--run-dir", tmp_path / "f"], capsys)
    assert code == 2
    assert _first_error(err) == (f"error: --run-dir {tmp_path / 'f'} is a file, not a "
                                 "directory; expected a new or empty directory")
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_run_dir_that_cannot_be_created_is_a_file_system_error(capsys):
    code, err = _cli([*TINY_ARGS, "--run-dir", "/proc/rlkit-test/run"], capsys)
    assert code == 3
    assert _first_error(err).startswith(
        "error: cannot create the run directory /proc/rlkit-test/run: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_run_dir_under_a_read_only_directory_is_a_file_system_error(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = _cli([*TINY_ARGS, "--run-dir", ro / "run"], capsys)
    finally:
        ro.chmod(0o755)
    assert code == 3
    assert _first_error(err) == (f"error: cannot create the run directory {ro / 'run'}: "
                                 "Permission denied [EACCES]")


def _refuse_writes_from(monkeypatch, step: int, code: int, what: str) -> None:
    """Checkpoint writes of ``step`` and later fail as the file system would refuse them."""
    save = checkpoint_module._save

    def refusing(path, payload, keep_previous):
        if payload["step"] >= step:
            raise OSError(code, what, str(path.parent / f".{path.name}.x.tmp"))
        return save(path, payload, keep_previous)

    monkeypatch.setattr(checkpoint_module, "_save", refusing)


@pytest.mark.parametrize(("code", "what", "name"), [
    (errno.EROFS, "Read-only file system", "EROFS"),  # run directory made read-only
    (errno.ENOSPC, "No space left on device", "ENOSPC"),  # disk full
])
def test_checkpoint_that_cannot_be_written_stops_with_exit_3_keeping_what_was_written(
        tmp_path, capsys, monkeypatch, tiny_run, code, what, name):
    run = tmp_path / "run"
    _refuse_writes_from(monkeypatch, 40, code, what)
    status, err = _cli([*TINY_ARGS, "--checkpoint-every", "20", "--run-dir", run], capsys)
    assert status == 3
    assert _first_error(err) == (
        f"error: cannot write the periodic checkpoint of step 40 to {run / 'checkpoint.pt'}: "
        f"{what} [{name}]; the checkpoint of step 20 is kept; once the file system is fixed, "
        f"continue with --resume {run}")
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 20  # the previous one stays
    assert [r["step"] for r in read_metrics(run)] == [20, 40]  # and every row written
    monkeypatch.undo()  # the file system is fixed
    _resume(run)
    assert _strip(read_metrics(run)) == _strip(read_metrics(tiny_run))
    _assert_same(load_checkpoint(run / "checkpoint.pt")["agent"],
                 load_checkpoint(tiny_run / "checkpoint.pt")["agent"])


def test_metrics_that_cannot_be_written_stop_with_exit_3(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    log = RunLogger.log

    def full(self, step, metrics, wall_time=None):
        if step >= 40 and not isinstance(self._metrics, _FullFile):
            self._metrics.close()
            self._metrics = _FullFile()  # writes now fail as on a full disk
        return log(self, step, metrics, wall_time)

    monkeypatch.setattr(RunLogger, "log", full)
    status, err = _cli([*TINY_ARGS, "--run-dir", run], capsys)
    assert status == 3
    assert _first_error(err) == (f"error: cannot write {run / 'metrics.jsonl'}: No space left "
                                 "on device [ENOSPC]; the rows written before are kept")
    assert [r["step"] for r in read_metrics(run)] == [20]
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 0  # the start checkpoint


class _FullFile:
    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_stops_with_exit_3_and_the_run_resumes(tmp_path):
    """A real write failure: the file size limit (RLIMIT_FSIZE) makes the checkpoint write
    fail with EFBIG once the buffer has grown; the checkpoint before stays, and once the
    limit is gone the run resumes to the same end as an uninterrupted one."""
    import resource

    run = tmp_path / "run"
    args = [sys.executable, "train.py", "--total-steps", "1000", "--log-every", "50",
            "--checkpoint-every", "100", "--run-dir", str(run), *MLP_ARGS]
    limit = 200_000  # bytes: the first checkpoints fit, those of a fuller buffer do not

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=SUBPROCESS_ENV, preexec_fn=limited)
    assert out.returncode == 3, out.stderr
    m = re.fullmatch(rf"error: cannot write the periodic checkpoint of step (\d+) to "
                     rf"{re.escape(str(run / 'checkpoint.pt'))}: File too large \[EFBIG\]; the "
                     rf"checkpoint of step (\d+) is kept; once the file system is fixed, "
                     rf"continue with --resume {re.escape(str(run))}", _first_error(out.stderr))
    assert m, out.stderr
    failed, kept = int(m.group(1)), int(m.group(2))
    assert load_checkpoint(run / "checkpoint.pt")["step"] == kept == failed - 100
    assert max(r["step"] for r in read_metrics(run)) == failed
    _resume(run)
    train.main(replace_fields(MLP, total_steps=1000, log_every=50, checkpoint_every=100,
                              run_dir=str(tmp_path / "full")))
    assert _strip(read_metrics(run)) == _strip(read_metrics(tmp_path / "full"))


def test_checkpoint_replaced_by_a_directory(tmp_path, capsys, monkeypatch):
    """Mid-run: exit 3 naming the path; on --resume: an unreadable checkpoint (exit 2)."""
    run = tmp_path / "run"
    save = Trainer.save

    def replaced(self, kind):
        if self.step >= 40:
            (run / "checkpoint.pt").unlink()
            (run / "checkpoint.pt").mkdir()
        return save(self, kind)

    monkeypatch.setattr(Trainer, "save", replaced)
    status, err = _cli([*TINY_ARGS, "--checkpoint-every", "20", "--run-dir", run], capsys)
    assert status == 3
    assert _first_error(err).startswith(
        f"error: cannot write the periodic checkpoint of step 40 to {run / 'checkpoint.pt'}: "
        "Is a directory [EISDIR]")
    monkeypatch.undo()
    status, err = _cli(["--resume", run, "--total-steps", "80"], capsys)
    assert status == 2
    assert _first_error(err) == (f"error: --resume {run}: {run / 'checkpoint.pt'} is a "
                                 "directory, not a checkpoint file; move it away (a checkpoint "
                                 "is a file written by rlkit.checkpoint)")
    assert load_checkpoint(run / "checkpoint.prev.pt")["step"] == 0  # still there


# ----------------------------------------------------------------------------- one process
def test_a_locked_run_directory_is_refused_naming_the_holder(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.name != "run.lock"}
    with RunLock(run):
        holder = f"pid {os.getpid()} on host {socket.gethostname()} since "
        with pytest.raises(RunDirBusy, match=rf"run directory {re.escape(str(run))} is in use "
                                             rf"by another process \({holder}"):
            _resume(run, total_steps=80)
        status, err = _cli(["--resume", run, "--total-steps", "80"], capsys)
        assert status == 2 and f"is in use by another process ({holder}" in err
        empty = tmp_path / "new"
        empty.mkdir()
        with RunLock(empty):  # a new run in an empty directory that another process holds
            status, err = _cli([*TINY_ARGS, "--run-dir", empty], capsys)
        assert status == 2 and "is in use by another process" in err
    assert files == {p.name: p.read_bytes() for p in run.iterdir() if p.name != "run.lock"}
    _resume(run, total_steps=80)  # released: it resumes
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 80


@pytest.mark.slow
def test_resume_while_the_run_goes_on_is_refused_and_a_killed_holder_is_taken_over(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "train.py", "--total-steps", "1000000", "--log-every", "10",
            "--run-dir", str(run), *MLP_ARGS]
    proc = subprocess.Popen(args, cwd=ROOT, env=SUBPROCESS_ENV, stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while not (run / "checkpoint.pt").is_file() or len(read_metrics(run)) < 3:
            assert proc.poll() is None and time.time() < deadline, "the run did not start"
            time.sleep(0.1)
        rows = len(read_metrics(run))
        second = subprocess.run([sys.executable, "train.py", "--resume", str(run),
                                 "--total-steps", "3000"], cwd=ROOT, env=SUBPROCESS_ENV,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"is in use by another process (pid {proc.pid} on host " in second.stderr
        assert proc.poll() is None and len(read_metrics(run)) >= rows  # nothing rewritten
    finally:
        proc.kill()  # SIGKILL: the lock is left behind, stale
        proc.wait()
    assert f"pid {proc.pid} " in (run / "run.lock").read_text()
    ckpt = load_checkpoint(run / "checkpoint.pt")
    _resume(run, total_steps=ckpt["step"] + 200)  # the stale lock is taken over
    assert load_checkpoint(run / "checkpoint.pt")["step"] == ckpt["step"] + 200
    assert f"pid {os.getpid()} " in (run / "run.lock").read_text()


# ----------------------------------------------------------------------------- default checkpoints
def test_a_run_writes_a_checkpoint_when_it_starts(tmp_path):
    train.main(replace_fields(TINY, run_dir=str(tmp_path / "run")))  # default checkpointing
    start = load_checkpoint(tmp_path / "run" / "checkpoint.prev.pt")
    assert start["kind"] == "start" and start["step"] == 0 and start["num_updates"] == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["kind"] == "final"
    assert LoopConfig().checkpoint_minutes == 5.0 and LoopConfig().checkpoint_every == 0


@pytest.mark.parametrize("base", [TINY, GRU], ids=["mlp", "gru-2envs"])
def test_checkpoints_do_not_change_what_training_computes(tmp_path, base):
    """A checkpoint at every step (by steps and by time) against none but the start's and the
    end's: the same metrics and weights, bit for bit."""
    train.main(replace_fields(base, checkpoint_every=0, checkpoint_minutes=0.0,
                              run_dir=str(tmp_path / "few")))
    train.main(replace_fields(base, checkpoint_every=3, checkpoint_minutes=1e-9,
                              run_dir=str(tmp_path / "many")))
    few, many = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("few", "many"))
    assert load_checkpoint(tmp_path / "many" / "checkpoint.prev.pt")["kind"] == "periodic"
    assert _strip(read_metrics(tmp_path / "few")) == _strip(read_metrics(tmp_path / "many"))
    _assert_same(few["agent"], many["agent"], "agent")
    _assert_same(few["buffer"], many["buffer"], "buffer")


def test_checkpoint_minutes_is_validated_naming_the_flag():
    with pytest.raises(ValueError, match="--checkpoint-minutes must be a finite number >= 0.0, "
                                         "got -1"):
        LoopConfig(checkpoint_minutes=-1)
    with pytest.raises(ValueError, match="--checkpoint-minutes must be a finite number"):
        LoopConfig(checkpoint_minutes=float("nan"))


@pytest.mark.parametrize("minutes", [None, 0.001], ids=["default", "every-0.06s"])
@pytest.mark.slow
def test_sigkill_with_default_checkpointing_resumes_exactly(tmp_path, minutes):
    """No --checkpoint-every: the start checkpoint (and, with a short --checkpoint-minutes, a
    periodic one) is enough to resume a killed run exactly."""
    run, killed_at = tmp_path / "run", 250
    timed = [] if minutes is None else ["--checkpoint-minutes", str(minutes)]
    args = [sys.executable, "train.py", "--env", "faulty_envs:rlkit-test/Kill-v0",
            "--total-steps", "400", "--log-every", "10", "--run-dir", str(run), *timed,
            *MLP_ARGS]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**SUBPROCESS_ENV, faulty_envs.KILL_AT_ENV: str(killed_at)})
    assert out.returncode == -signal.SIGKILL, out.stderr
    ckpt = load_checkpoint(run / "checkpoint.pt")
    if minutes is None:
        assert ckpt["kind"] == "start" and ckpt["step"] == 0
    else:
        assert ckpt["kind"] == "periodic" and 0 < ckpt["step"] < killed_at
    _resume(run)
    cfg = replace_fields(MLP, env="faulty_envs:rlkit-test/Kill-v0", log_every=10,
                         run_dir=str(tmp_path / "uninterrupted"))
    train.main(cfg)
    assert _strip(read_metrics(run)) == _strip(read_metrics(tmp_path / "uninterrupted"))
    _assert_same(load_checkpoint(run / "checkpoint.pt")["agent"],
                 load_checkpoint(tmp_path / "uninterrupted" / "checkpoint.pt")["agent"])


# ----------------------------------------------------------------------------- memory
def _available(monkeypatch, n: int | None) -> None:
    monkeypatch.setattr(rlkit.buffers.memory, "available_memory",
                        lambda device: None if n is None else (n, "test"))


def test_replay_memory_estimate_is_the_buffer_size():
    def allocated(buf) -> int:
        storages = {}
        for v in vars(buf).values():
            for t in v if isinstance(v, list) else [v]:
                if isinstance(t, torch.Tensor):
                    storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(storages.values())

    example = DDPG(3, -torch.ones(1), torch.ones(1), "gru", cfg=DDPGConfig(head_hidden=(8,))
                   ).initial_state(1)
    cases = [(ReplayConfig(buffer_size=1000, batch_size=8, seq_len=1), "mlp"),
             (ReplayConfig(buffer_size=1000, batch_size=8, seq_len=10), "gru"),
             (ReplayConfig(buffer_size=1000, batch_size=8, seq_len=10, state_mode="stored",
                           burn_in=2), "gru"),
             (ReplayConfig(buffer_size=1001, batch_size=8, seq_len=10, state_mode="stored",
                           burn_in=2, state_every=3), "gru"),
             (ReplayConfig(buffer_size=1000, batch_size=8, seq_len=10, state_mode="prefix",
                           burn_in=6), "gru")]  # replays a prefix: nothing stored
    for replay, backbone in cases:
        model = ModelConfig(backbone=backbone)
        buf = make_replay(replay, model, num_envs=2, obs_dim=3, action_dim=1,
                          device=torch.device("cpu"), generator=torch.Generator(),
                          state_example=example)
        need = replay_memory(replay, model, num_envs=2, obs_dim=3, action_dim=1,
                             state_example=example)
        assert 0 <= allocated(buf) - need.buffer <= 64, (replay, backbone)  # small counters
        assert (need.states > 0) == (replay.state_mode == "stored")


@pytest.mark.parametrize(("change", "available", "message"), [
    ({}, 16 * 2**20, r"it needs about 38\.1 MiB \(--buffer-size 1,000,000 steps x 40 bytes\) "
                     r"and a sampled batch about 22\.0 KiB \(--batch-size 256 windows of "
                     r"--seq-len 1 steps\), 38\.2 MiB in all, but 16\.0 MiB is available "
                     r"\(test\); lower --buffer-size \(about 418,867 steps would fit\)$"),
    ({"env": "faulty_envs:rlkit-test/Image-v0"}, 64 * 2**30,  # 64 x 64 x 3 floats a step
     r"it needs about 91\.6 GiB \(--buffer-size 1,000,000 steps x 98,320 bytes\) and a sampled "
     r"batch about 48\.0 MiB .* but 64\.0 GiB is available \(test\); lower --buffer-size "
     r"\(about 698,424 steps would fit\)$"),
    ({"env": "rlkit/Pendulum-V-v0", "backbone": "gru", "seq_len": 200, "batch_size": 50_000},
     2**30,  # whole episodes, so many of them that one batch does not fit
     r"it needs about 30\.5 MiB \(--buffer-size 1,000,000 steps x 32 bytes\) and a sampled "
     r"batch about 1\.2 GiB \(--batch-size 50000 windows of --seq-len 200 steps\), 1\.3 GiB "
     r"in all, but 1\.0 GiB is available \(test\); lower --batch-size \(50000\) or --seq-len "
     r"\(200\)$"),
    ({"env": "rlkit/Pendulum-V-v0", "backbone": "gru", "seq_len": 8, "burn_in": 4,
      "state_mode": "stored", "state_every": 1}, 2**30,  # 2 x 256 floats every step
     r"it needs about 1\.9 GiB \(--buffer-size 1,000,000 steps x 32 bytes \+ 1\.9 GiB of "
     r"stored states\) .* but 1\.0 GiB is available \(test\); lower --buffer-size \(about "
     r"516,203 steps would fit\), or store fewer states \(a larger --state-every, or "
     r"--state-mode zero\)$"),
], ids=["buffer", "image-obs", "seq-len", "stored-states"])
def test_replay_that_does_not_fit_in_memory_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, change, available, message):
    _available(monkeypatch, available)
    cfg = replace_fields(train.TrainConfig(), device="cpu", progress=False, d_model=256,
                         run_dir=str(tmp_path / "run"), **change)
    with pytest.raises(ValueError, match=r"not enough memory for the replay buffer: " + message):
        train.main(cfg)
    assert not (tmp_path / "run").exists()


def test_memory_check_is_skipped_where_memory_is_unknown(tmp_path, monkeypatch, capsys):
    _available(monkeypatch, 1)
    code, err = _cli([*TINY_ARGS, "--run-dir", tmp_path / "a"], capsys)
    assert code == 2 and _first_error(err).startswith("error: not enough memory for the replay")
    _available(monkeypatch, None)
    assert _cli([*TINY_ARGS, "--run-dir", tmp_path / "b"], capsys)[0] == 0


def test_grid_backbone_that_does_not_fit_stops_the_grid_before_any_run(tmp_path, monkeypatch,
                                                                        capsys):
    """A state stored every step: mlp (no state) fits in 100 MiB, gru (2 x 16 floats a step
    more) does not; nothing starts, and the message names gru."""
    _available(monkeypatch, 100 * 2**20)
    grid = tmp_path / "g"
    code, err = _cli([*TINY_ARGS, "--env", "Pendulum-v1", "--backbone", "mlp", "gru",
                      "--buffer-size", "1000000", "--state-mode", "stored", "--burn-in", "4",
                      "--seq-len", "8", "--state-every", "1", "--grid-dir", grid], capsys)
    assert code == 2
    assert _first_error(err).startswith("error: --backbone gru: not enough memory for the replay")
    assert not grid.exists()


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="needs Linux's /proc/meminfo")
def test_available_memory_is_memavailable_on_linux():
    free, source = rlkit.buffers.memory.available_memory(torch.device("cpu"))
    assert 0 < free <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert source == "MemAvailable in /proc/meminfo"


# ----------------------------------------------------------------------------- edited files
@pytest.mark.parametrize(("key", "value", "shown"), [
    ("agent.gamma", 0.5, "agent.gamma is 0.5 in config.json, 0.99 in the checkpoint"),
    ("loop.eval_every", 7, "loop.eval_every is 7 in config.json, 0 in the checkpoint"),
    ("noise.sigma", 0.3, "noise.sigma is 0.3 in config.json, 0.2 in the checkpoint"),
])
def test_resume_refuses_an_edited_config_naming_the_field(tiny_run, tmp_path, key, value,
                                                          shown):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = json.loads((run / "config.json").read_text())
    section, name = key.split(".")
    data[section][name] = value
    (run / "config.json").write_text(json.dumps(data))
    metrics = (run / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match=re.escape(
            f"--resume {run}: config.json disagrees with the checkpoint's own record of the "
            f"run: {shown}; config.json must not be edited")):
        _resume(run, total_steps=80)
    assert (run / "metrics.jsonl").read_text() == metrics


def test_resume_accepts_a_config_edited_in_fields_that_may_change(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = json.loads((run / "config.json").read_text())
    data["loop"]["total_steps"] = 80
    (run / "config.json").write_text(json.dumps(data))
    _resume(run)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 80


def test_resume_accepts_a_checkpoint_written_before_an_agent_field_existed(tiny_run, tmp_path):
    """A checkpoint of an older version has no entry for a newer agent field; the rewritten
    config.json has its default: the same agent, so resume goes on."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    del ckpt["config"]["agent"]["pre_tanh_penalty"]
    save_checkpoint(run / "checkpoint.pt", ckpt)
    _resume(run, total_steps=80)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 80


@pytest.mark.parametrize(("name", "content", "message"), [
    ("config.json", b"[1, 2]", "{config}: expected a JSON object, got list"),
    ("config.json", b"\xff\xfe{", "{config}: not valid JSON ('utf-8' codec can't decode"),
    ("metrics.jsonl", b'{"step": 20, "wall_time": 1}\n[1]\n{"step": 40, "wall_time": 2}\n',
     "{metrics}:2: expected a JSON object with an integer 'step', got '[1]'"),
    ("metrics.jsonl", b'{"step": 20, "wall_time": 1}\n{"step": 40\n{"step": 60}\n',
     "{metrics}:2: not valid JSON"),
    ("metrics.jsonl", b'{"step": 20, "wall_time": 1}\n\xff\n', "{metrics}:2: not UTF-8 text"),
], ids=["config-list", "config-not-utf8", "metrics-not-a-row", "metrics-bad-json",
        "metrics-not-utf8"])
def test_resume_of_a_damaged_run_file_is_one_line_with_exit_2(tiny_run, tmp_path, capsys, name,
                                                              content, message):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / name).write_bytes(content)
    code, err = _cli(["--resume", run, "--total-steps", "80"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    expected = message.format(config=run / "config.json", metrics=run / "metrics.jsonl")
    assert err.startswith("error: ") and expected in err, err
    assert (run / name).read_bytes() == content  # left as it was
    if name == "config.json":
        assert evaluate_run([str(run), "--episodes", "1"]) == 2
        assert expected in capsys.readouterr().err


# ----------------------------------------------------------------------------- env exceptions
@pytest.mark.parametrize(("source", "code", "said"), [
    ("raise RuntimeError('boom at import')\n", 4,
     "raised RuntimeError in the import of module '{name}': boom at import"),
    ("def broken(:\n", 4, "raised SyntaxError in the import of module '{name}'"),
    ("import a_dependency_not_installed\n", 4,
     "raised ModuleNotFoundError in the import of module '{name}': No module named "
     "'a_dependency_not_installed'"),
    (None, 2, "cannot import module '{name}' for --env {name}:X-v0: No module named"),
])
def test_a_task_module_that_fails_to_import_is_named_with_its_exit_code(
        tmp_path, monkeypatch, capsys, source, code, said):
    """train.py names the --env and its module: one missing from the import path is bad input
    (exit 2), one whose own code raises (a syntax error, or an import of its own that fails,
    too) is the env's exception (exit 4, its traceback printed)."""
    name = f"badmod_{tmp_path.name.replace('-', '_')}"
    monkeypatch.syspath_prepend(str(tmp_path))
    if source is not None:
        (tmp_path / f"{name}.py").write_text(source)
    got, err = _cli(["--env", f"{name}:X-v0", *TINY_ARGS, "--run-dir", tmp_path / "r"], capsys)
    assert got == code and said.format(name=name) in err, err
    assert ("the env's traceback" in err) == (code == 4)
    assert not (tmp_path / "r").exists()


def test_evaluate_names_a_task_module_gone_from_the_import_path_or_an_env_that_raises(
        tmp_path, monkeypatch, capsys):
    """agents.evaluate, as train.py: the run's task module gone from the path is bad input
    (exit 2, one line naming the run's --env); the env's constructor raising is the env's
    exception (exit 4, its traceback printed)."""
    name = f"taskmod_{tmp_path.name.replace('-', '_')}"
    module = tmp_path / f"{name}.py"
    module.write_text(
        "import os\nimport gymnasium as gym\n"
        "from gymnasium.envs.classic_control import PendulumEnv\n"
        "class Env(PendulumEnv):\n"
        "    def __init__(self, **kw):\n"
        "        if os.environ.get('RLKIT_TEST_BREAK'):\n"
        "            raise ValueError('bad physics in the constructor')\n"
        "        super().__init__(**kw)\n"
        f"gym.register('{name}/P-v0', entry_point=Env, max_episode_steps=50)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    code, err = _cli([*TINY_ARGS, "--env", f"{name}:{name}/P-v0", "--run-dir", run], capsys)
    assert code == 0, err
    monkeypatch.setenv("RLKIT_TEST_BREAK", "1")
    assert evaluate_run([str(run), "--episodes", "1"]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"error: env {name}:{name}/P-v0 raised ValueError in construction: "
                          f"bad physics in the constructor"), err
    assert "the env's traceback" in err
    monkeypatch.delenv("RLKIT_TEST_BREAK")
    module.unlink()
    monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    assert evaluate_run([str(run), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot import module '{name}' for --env {name}:{name}/P-v0"), err
    assert len(err.strip().splitlines()) == 1


def test_env_exception_keeps_the_envs_traceback(tmp_path, capsys):
    with pytest.raises(EnvError, match=r"env rlkit-test/Raise-v0 raised RuntimeError in step at "
                                       r"env step 30: simulator diverged at state") as e:
        train.main(replace_fields(TINY, env="faulty_envs:rlkit-test/Raise-v0",
                                  run_dir=str(tmp_path / "run")))
    assert "faulty_envs.py" in e.value.env_traceback and "in _integrate" in \
        e.value.env_traceback
    assert e.value.env_traceback.rstrip().endswith("RuntimeError: simulator diverged at state "
                                                   + str(e.value).split("at state ")[1])
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["kind"] == "start"
    code, err = _cli([*TINY_ARGS, "--env", "faulty_envs:rlkit-test/Raise-v0", "--run-dir",
                      tmp_path / "cli"], capsys)
    assert code == 4
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: env rlkit-test/Raise-v0 raised RuntimeError in step")
    assert lines[1] == "the env's traceback:" and lines[2] == "Traceback (most recent call last):"
    assert any("faulty_envs.py" in line for line in lines) and \
        lines[-1].startswith("RuntimeError: simulator diverged")
    code, err = _cli([*TINY_ARGS, "--env", "faulty_envs:rlkit-test/BrokenInit-v0", "--run-dir",
                      tmp_path / "init"], capsys)
    assert code == 4 and err.startswith("error: env faulty_envs:rlkit-test/BrokenInit-v0 raised "
                                        "KeyError in construction: \"missing asset")
    assert "in __init__" in err and not (tmp_path / "init").exists()




def _raised_in_opengl() -> AttributeError:
    """An error raised where PyOpenGL raises it (its traceback ends in an OpenGL file)."""
    try:
        faulty_envs.NoRenderer()
    except AttributeError as e:
        return e
    raise AssertionError("NoRenderer did not raise")

def test_a_renderer_that_mujoco_gl_names_and_cannot_load_is_named(tmp_path, monkeypatch, capsys):
    """Importing MuJoCo loads the renderer ``MUJOCO_GL`` names; without its library every
    MuJoCo task failed to build with PyOpenGL's "'NoneType' object has no attribute
    'glGetError'" alone. The error now names the setting (the README's "clear error")."""
    args = [*TINY_ARGS, "--env", "faulty_envs:rlkit-test/NoRenderer-v0"]
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    code, err = _cli([*args, "--run-dir", tmp_path / "a"], capsys)
    assert code == 4 and "glGetError'\nthe env's traceback" in err and "MUJOCO_GL" not in err
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    code, err = _cli([*args, "--run-dir", tmp_path / "b"], capsys)
    assert code == 4 and err.startswith(
        "error: env faulty_envs:rlkit-test/NoRenderer-v0 raised AttributeError in construction: "
        "'NoneType' object has no attribute 'glGetError' (MUJOCO_GL=osmesa is set and that "
        "renderer failed to load here; set MUJOCO_GL to one this machine has, such as egl, or "
        "leave it unset where no video is made)\n"), err
    monkeypatch.setenv("MUJOCO_GL", "egl")  # the one that failed is not the one suggested
    code, err = _cli([*args, "--run-dir", tmp_path / "c"], capsys)
    assert code == 4 and "MUJOCO_GL=egl is set" in err and "such as osmesa" in err, err
    # an env error raised by a step, not by building the env, gets no hint
    error = EnvError.wrap(_raised_in_opengl(), "x", "step", 3)
    assert "MUJOCO_GL" not in str(error) and "construction" not in str(error)
    assert pickle.loads(pickle.dumps(error)).env_traceback == error.env_traceback

def test_a_non_finite_evaluation_return_stops_the_run(tmp_path):
    """The evaluation env's NaN reward (at its 250th step: in the second 200-step evaluation
    episode) stops the run naming the evaluation, --drop-nonfinite or not, instead of logging
    the string "nan" as the return."""
    from rlkit.seeding import eval_env_seed

    parity = "Odd" if eval_env_seed(0) % 2 else "Even"
    cfg = replace_fields(TINY, env=f"faulty_envs:rlkit-test/NaNReward{parity}-v0", seed=0,
                         eval_every=0, eval_episodes=2, drop_nonfinite=True,
                         run_dir=str(tmp_path / "run"))
    with pytest.raises(NonFiniteError, match=r"^the evaluation env returned a non-finite reward "
                                             r"in the evaluation at step 60 \(return nan\); "
                                             r"expected finite values \(--drop-nonfinite drops "
                                             r"training transitions only\)$"):
        train.main(cfg)
    assert not [r for r in read_metrics(tmp_path / "run") if "eval_return_mean" in r]


def test_checkpoints_get_the_mode_of_the_runs_other_files(tmp_path):
    """Written through a temporary file (``mkstemp``: 0600), a checkpoint still gets the mode
    the umask gives ``config.json`` and ``metrics.jsonl``, so whoever reads those can evaluate
    the run too."""
    from rlkit.checkpoint import save_checkpoint

    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "checkpoint.pt", {"step": 1}, keep_previous=True)
        save_checkpoint(tmp_path / "checkpoint.pt", {"step": 2}, keep_previous=True)
        (tmp_path / "metrics.jsonl").write_text("")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"checkpoint.pt": 0o644, "checkpoint.prev.pt": 0o644, "metrics.jsonl": 0o644}


def test_resume_without_metrics_says_the_earlier_rows_are_lost(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "metrics.jsonl").unlink()
    with pytest.warns(UserWarning, match=r"metrics.jsonl is missing: the rows logged up to step "
                                         r"60 are lost; the run goes on logging from there"):
        _resume(run, total_steps=80)
    assert [r["step"] for r in read_metrics(run)][0] > 60
    # a directory in its place is not missing: the run stops on it, without that warning
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(OSError, match=r"metrics.jsonl.*[Ii]s a directory"):
            _resume(run, total_steps=100)


def test_sigint_outside_the_loop_is_one_line_and_exit_130(monkeypatch, capsys):
    """Ctrl-C outside the loop's own handler (building the env and the buffer, or after the
    run) raises KeyboardInterrupt in ``cli``: one ``stopped:`` line and 130, not a
    traceback. (``train.py``'s imports have the same guard, not tested here.)"""
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cli", interrupted)
    code, err = _cli(["--total-steps", 10], capsys)
    assert code == 130 and err == "stopped: SIGINT outside the training loop, with no " \
        "checkpoint written on it: a run directory that holds config.json continues with " \
        "--resume RUN_DIR (from step 0 if it holds no checkpoint), a grid directory with " \
        "--resume GRID_DIR; a run that made neither starts again with the same command\n"


def test_sigterm_outside_the_loop_is_one_line_and_exit_143(monkeypatch, capsys):
    """A SIGTERM outside the loop's own handler (while the run starts) was the default action:
    exit 143 with nothing said. It now stops ``cli`` as a SIGINT does, says so, and the
    previous handler is back afterwards."""
    def terminated(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not stop the command")

    def unhandled(signum, frame):  # what runs if ``run`` has no handler of its own
        raise AssertionError("SIGTERM reached the handler from before cli.run")

    before = signal.signal(signal.SIGTERM, unhandled)
    monkeypatch.setattr(cli, "cli", terminated)
    try:
        code, err = _cli(["--total-steps", 10], capsys)
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 143 and err == "stopped: SIGTERM outside the training loop, with no " \
        "checkpoint written on it: a run directory that holds config.json continues with " \
        "--resume RUN_DIR (from step 0 if it holds no checkpoint), a grid directory with " \
        "--resume GRID_DIR; a run that made neither starts again with the same command\n"


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler (Linux: ``SigCgt`` of /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_train_py_says_it_was_stopped_by_a_sigterm_while_it_starts(tmp_path):
    """``python train.py`` sent SIGTERM once it has a handler for it (while it loads its
    modules, on any machine but a very fast one), and again while it imports the env's module
    (which sleeps): each time one ``stopped:`` line and exit 143, where before the process
    ended silently."""
    (tmp_path / "slow_env_module.py").write_text(
        "import pathlib, time\n"
        f"pathlib.Path({str(tmp_path / 'importing')!r}).touch()\n"
        "time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    said = {}
    for case, ready, extra in (
            ("loading", None, []),
            ("in cli", tmp_path / "importing", ["--env", "slow_env_module:Pendulum-v1"])):
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--total-steps", "5000",
                                 "--run-dir", str(tmp_path / case), "--no-progress", *extra],
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
        try:
            _wait_for(ready.exists if ready else functools.partial(_catches_sigterm, proc.pid),
                      proc)
            proc.send_signal(signal.SIGTERM)
            err = proc.communicate(timeout=120)[1]
        finally:
            proc.kill()
        assert proc.returncode == 143, err
        said[case] = err
    assert re.fullmatch(r"stopped: SIGTERM (while the modules loaded, before anything was "
                        r"written|outside the training loop, with no checkpoint .*)\n",
                        said["loading"]), said["loading"]
    assert said["in cli"].startswith("stopped: SIGTERM outside the training loop, with no "
                                      "checkpoint written on it"), said["in cli"]
    assert not (tmp_path / "in cli").exists()


def _wait_for(ready: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.parametrize(("num_envs", "total", "end"), [(1, 60, 60), (3, 50, 51)])
def test_a_run_stopped_on_its_last_step_resumes_to_its_final_evaluation(tmp_path, num_envs,
                                                                        total, end):
    """A stop on the last step leaves an interrupt checkpoint at --total-steps and no final
    evaluation: --resume with the same --total-steps makes them (it was refused, 'pass a
    larger --total-steps', and a grid's --resume failed on it every time). A finished run at
    its --total-steps is still refused. With --num-envs 3 the last step is the first multiple
    of 3 at or past --total-steps 50: 51."""
    run = tmp_path / "run"
    train.main(replace_fields(TINY, num_envs=num_envs, total_steps=total, run_dir=str(run)))
    done = load_checkpoint(run / "checkpoint.pt")
    rows = read_metrics(run)
    assert done["kind"] == "final" and rows[-1]["step"] == end and "eval_return_mean" in rows[-1]
    assert sum("eval_return_mean" in r for r in rows) == 1  # no evaluation but the final one
    with pytest.raises(ValueError, match=f"the run is at step {end} of --total-steps {total}; "
                                         "pass a larger --total-steps"):
        _resume(run)
    # what a stop on the last step leaves: an interrupt checkpoint, no evaluation yet
    save_checkpoint(run / "checkpoint.pt", {**done, "kind": "interrupt", "last_eval": {}})
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    result = _resume(run)
    assert result["step"] == end and result["eval_return_mean"] == rows[-1]["eval_return_mean"]
    assert load_checkpoint(run / "checkpoint.pt")["kind"] == "final"
    assert read_metrics(run)[-1] == rows[-1] | {"wall_time": read_metrics(run)[-1]["wall_time"]}


def test_each_row_of_a_vector_env_is_named_by_its_own_id_or_by_its_index():
    import gymnasium as gym

    from rlkit.faults import env_row, row_names

    mixed = gym.vector.SyncVectorEnv([lambda: gym.make("rlkit-test/NaNObsEven-v0"),
                                      lambda: gym.make("rlkit-test/NaNObsOdd-v0")])
    assert row_names(mixed) == ["rlkit-test/NaNObsEven-v0", "rlkit-test/NaNObsOdd-v0"]
    assert env_row(1, row_names(mixed)) == "env rlkit-test/NaNObsOdd-v0 (vector index 1)"
    from gymnasium.envs.classic_control import PendulumEnv

    unnamed = gym.vector.SyncVectorEnv([PendulumEnv] * 2)  # built without gym.make: no spec
    assert row_names(unnamed) is None and env_row(1, None) == "env 1"  # no id: the index
    hidden = gym.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="async")
    try:  # sub-envs in other processes: the vector env's own id for every row
        assert row_names(hidden) == ["Pendulum-v1", "Pendulum-v1"]
    finally:
        hidden.close()
    mixed.close(), unnamed.close()


def test_a_resumed_run_frees_the_checkpoint_it_loaded(tmp_path, monkeypatch):
    """The loaded checkpoint (the replay's filled steps among it) stayed referenced for the
    whole resumed run: one more replay in memory than a fresh run holds."""
    import gc
    import weakref

    import rlkit.resume

    run = tmp_path / "run"
    train.main(replace_fields(TINY, total_steps=40, run_dir=str(run)))
    loaded, load = [], rlkit.resume.load_checkpoint

    def remember(path, *args, **kwargs):
        ckpt = load(path, *args, **kwargs)
        loaded.append(weakref.ref(ckpt["buffer"]["data"]))  # the replay's packed rows
        return ckpt

    alive = []
    run_loop = Trainer.run

    def check_then_run(self):
        gc.collect()
        alive.append(sum(r() is not None for r in loaded))
        return run_loop(self)

    monkeypatch.setattr(rlkit.resume, "load_checkpoint", remember)
    monkeypatch.setattr(Trainer, "run", check_then_run)
    _resume(run, total_steps=60)
    assert len(loaded) == 1 and alive == [0]


def test_loading_a_checkpoint_reads_its_body_without_another_copy(tmp_path):
    """The body was sliced off the file's bytes (a copy) before unpickling: with the tensors,
    three times the file in memory at once, +1,146 MB for a 381 MB checkpoint. Python's own
    allocations while loading (the file's bytes, not the tensors) now stay near one file."""
    import tracemalloc

    from rlkit.checkpoint import save_checkpoint

    path = tmp_path / "big.pt"
    save_checkpoint(path, {"replay": torch.zeros(4_000_000)})  # 16 MB
    size = path.stat().st_size
    tracemalloc.start()
    try:
        data = load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert torch.equal(data["replay"], torch.zeros(4_000_000))
    assert size < peak < 1.5 * size
