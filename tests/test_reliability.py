"""Checkpoint and resume without loss, safe loading, bad input and numerical faults.

Faults are injected through ``faulty_envs`` (Pendulum with a NaN, a huge reward, a SIGKILL or
opaque state at a chosen step), crafted and damaged files, signals to a ``train.py``
subprocess, and bad flags. Exactness needs one thread: every test here runs single-threaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import faulty_envs
import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import train
from agents.ddpg import DDPG, DDPGConfig
from envs.wrappers import FlickerObservation
from rlkit.checkpoint import (
    FOOTER_MAGIC,
    CheckpointError,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from rlkit.config import replace_fields
from rlkit.envstate import restore_env, snapshot_env
from rlkit.runlog import read_metrics, truncate_metrics
from rlkit.seeding import seed_everything
from rlkit.trainer import NonFiniteError, NonFiniteLossError

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
@pytest.mark.parametrize("base", [MLP, GRU], ids=["mlp-Pendulum-v1", "gru-Pendulum-V-2envs"])
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
                                         r"\(step 40\)"):
        _resume(run, total_steps=80)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 80
    steps = [r["step"] for r in read_metrics(run) if "critic_loss" in r]
    assert steps == [20, 40, 60, 80]  # events after step 40 were dropped, then logged again


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


def test_resume_refuses_a_different_backbone_on_the_command_line(tiny_run):
    with pytest.raises(ValueError, match=r"run backbone 'mlp' != requested backbone 'lstm'; "
                                         r"only --total-steps, .* may change"):
        _resume(tiny_run, backbone="lstm", total_steps=80)


# ----------------------------------------------------------------------------- bad input
def test_resume_of_a_missing_directory(tmp_path):
    with pytest.raises(ValueError, match=r"--resume \S+nowhere: no such run directory"):
        _resume(tmp_path / "nowhere")


def test_resume_of_a_directory_without_checkpoint(tiny_run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"not a run directory \(no config.json\)"):
        _resume(tmp_path / "empty")
    run = tmp_path / "no_ckpt"
    run.mkdir()
    shutil.copy(tiny_run / "config.json", run / "config.json")
    with pytest.raises(CheckpointError, match=r"no checkpoint at \S+checkpoint.pt"):
        _resume(run)


def test_resume_of_a_finished_run_asks_for_more_steps(tiny_run):
    with pytest.raises(ValueError, match=r"the run is at step 60 of --total-steps 60; pass a "
                                         r"larger --total-steps"):
        _resume(tiny_run)


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
    with pytest.raises(NonFiniteError, match=rf"env 1 returned a non-finite {what} at step "
                                             rf"500 .*--drop-nonfinite"):
        train.main(cfg)


@pytest.mark.parametrize(("backbone", "dropped", "stored"), [("mlp", 1, 599), ("gru", 2, 299)])
def test_drop_nonfinite_drops_counts_and_goes_on(tmp_path, backbone, dropped, stored):
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


def test_loss_check_leaves_scaler_handled_updates_alone(tmp_path, monkeypatch):
    update = DDPG.update

    def inf_loss(self, batch, scaler: bool):
        metrics = update(self, batch)
        metrics["critic_loss"] = torch.tensor(float("inf"))
        if scaler:
            metrics["grad_scale"] = torch.tensor(2.0**16)  # fp16: a skipped step, not a fault
        return metrics

    monkeypatch.setattr(DDPG, "update", lambda self, batch: inf_loss(self, batch, True))
    train.main(replace_fields(TINY, run_dir=str(tmp_path / "fp16")))
    monkeypatch.setattr(DDPG, "update", lambda self, batch: inf_loss(self, batch, False))
    with pytest.raises(NonFiniteLossError, match="at update 1 "):
        train.main(replace_fields(TINY, run_dir=str(tmp_path / "fp32")))
