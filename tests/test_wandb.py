"""W&B never stops a run: online falls back to offline, a W&B that fails leaves metrics.jsonl."""

from __future__ import annotations

import json
import sys
import types
import warnings

import pytest

from rlkit import runlog
from rlkit.runlog import RunLogger


class FakeRun:
    def __init__(self, mode: str, fail_log: bool = False) -> None:
        self.mode, self.fail_log, self.rows, self.finished = mode, fail_log, [], False
        self.id = "abc"

    def log(self, row: dict, step: int) -> None:
        if self.fail_log:
            raise RuntimeError("the W&B service process died")
        self.rows.append((step, row))

    def finish(self) -> None:
        self.finished = True


def fake_wandb(fail_modes: set[str], fail_log: bool = False) -> types.ModuleType:
    """A stand-in ``wandb`` whose ``init`` raises in ``fail_modes``; records its runs."""
    mod = types.ModuleType("wandb")
    mod.runs = []

    def init(mode: str, settings: object, **kwargs: object) -> FakeRun:
        if mode in fail_modes:
            raise RuntimeError(f"Failed to get resume status ({mode}): 404\nmore lines")
        run = FakeRun(mode, fail_log)
        mod.runs.append(run)
        return run

    def teardown() -> None:
        mod.torn_down = True

    mod.init, mod.teardown, mod.torn_down = init, teardown, False
    mod.Settings = lambda **kw: kw
    return mod


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def logger(tmp_path, mode: str) -> RunLogger:
    return RunLogger(tmp_path, {"a": 1}, wandb_mode=mode, resume_id="abc")


@pytest.fixture
def online(monkeypatch):
    """``online`` passes its checks (a key, a host that answers)."""
    monkeypatch.setattr(runlog, "_wandb_has_key", lambda: True)
    monkeypatch.setattr(runlog, "_wandb_reachable", lambda timeout=1.0: True)


def test_online_start_that_fails_falls_back_to_offline(tmp_path, monkeypatch, online):
    wb = fake_wandb({"online"})
    monkeypatch.setitem(sys.modules, "wandb", wb)
    with pytest.warns(UserWarning, match=r"online start failed \(RuntimeError: Failed to get "
                                         r"resume status \(online\): 404\); logging offline"):
        log = logger(tmp_path, "online")
    assert log.wandb_mode == "offline" and [r.mode for r in wb.runs] == ["offline"]
    assert wb.torn_down  # the failed online start let go of the run's id before offline
    log.log(1, {"x": 2.0})
    log.close()
    assert wb.runs[0].rows == [(1, {"wall_time": rows(tmp_path)[0]["wall_time"], "x": 2.0})]
    assert wb.runs[0].finished


def test_wandb_that_cannot_start_leaves_metrics_jsonl(tmp_path, monkeypatch, online):
    wb = fake_wandb({"online", "offline"})
    monkeypatch.setitem(sys.modules, "wandb", wb)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = logger(tmp_path, "online")
    assert [str(w.message).split(" (")[0] for w in caught] == [
        "W&B: the online start failed", "W&B: cannot start"]
    assert log.wandb_mode == "disabled" and log.wandb_run_id is None
    log.log(1, {"x": 2.0})
    log.close()
    assert rows(tmp_path)[0]["x"] == 2.0


def test_a_start_that_fails_names_the_wandb_environment_it_read(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb({"offline"}))
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.warns(UserWarning, match=r"W&B: cannot start \(RuntimeError: .*; the "
                                         r"environment sets \{'WANDB_MODE': 'bogus'\}, which "
                                         r"W&B reads too\); this run logs to metrics.jsonl only"):
        log = logger(tmp_path, "offline")
    assert log.wandb_mode == "disabled"
    log.close()


def test_wandb_that_cannot_be_imported_leaves_metrics_jsonl(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.warns(UserWarning, match=r"cannot import wandb \(.*\); this run logs to "
                                         r"metrics.jsonl only"):
        log = logger(tmp_path, "offline")
    assert log.wandb_mode == "disabled"
    log.log(3, {"x": 1.0})
    log.close()
    assert [r["step"] for r in rows(tmp_path)] == [3]


def test_offline_is_not_tried_online(tmp_path, monkeypatch):
    wb = fake_wandb({"online"})
    monkeypatch.setitem(sys.modules, "wandb", wb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log = logger(tmp_path, "offline")
    log.close()
    assert [r.mode for r in wb.runs] == ["offline"]


def test_logging_that_fails_stops_mirroring_not_the_run(tmp_path, monkeypatch):
    wb = fake_wandb(set(), fail_log=True)
    monkeypatch.setitem(sys.modules, "wandb", wb)
    log = logger(tmp_path, "offline")
    with pytest.warns(UserWarning, match="logging failed .*the rest of this run logs to "
                                         "metrics.jsonl only"):
        log.log(1, {"x": 1.0})
    log.log(2, {"x": 2.0})  # no second warning, no W&B call
    log.close()
    assert [r["step"] for r in rows(tmp_path)] == [1, 2]
    assert wb.runs[0].finished


def test_a_host_that_takes_the_connection_and_never_answers_is_not_reachable(monkeypatch):
    """``wandb.init`` waits about a minute on such a host; the check asks for an HTTP reply
    within its timeout, so the run goes offline at once instead."""
    import socket
    import threading
    import time

    def serve(reply: bytes) -> tuple[socket.socket, int]:
        srv = socket.create_server(("127.0.0.1", 0))
        held = []

        def loop():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                held.append(conn)
                if reply:
                    conn.recv(1024)
                    conn.sendall(reply)

        threading.Thread(target=loop, daemon=True).start()
        return srv, srv.getsockname()[1]

    silent, port = serve(b"")
    answering, port2 = serve(b"HTTP/1.0 404 Not Found\r\n\r\n")
    try:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        t0 = time.monotonic()
        assert not runlog._wandb_reachable(timeout=0.5)
        assert time.monotonic() - t0 < 5
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port2}")
        assert runlog._wandb_reachable(timeout=2.0)
        for scheme, answers in (("https", False), ("https", True)):  # the TLS branch: no
            monkeypatch.setenv("WANDB_BASE_URL",  # handshake; an answer that is not TLS
                               f"{scheme}://127.0.0.1:{port2 if answers else port}")
            assert runlog._wandb_reachable(timeout=0.5) == answers
        silent.close()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")  # nothing listens
        assert not runlog._wandb_reachable(timeout=0.5)
    finally:
        silent.close()
        answering.close()


def test_a_slow_name_lookup_counts_inside_the_timeout(monkeypatch):
    """``socket`` cannot time out a lookup; a resolver that hangs for 8 s would hold the run
    for 8 s where the check promises its timeout."""
    import socket
    import time

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(8) or [])
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.example:8080")
    t0 = time.monotonic()
    assert not runlog._wandb_reachable(timeout=0.5)
    assert time.monotonic() - t0 < 2


def test_non_finite_values_reach_wandb_as_numbers(tmp_path, monkeypatch):
    """metrics.jsonl holds ``"nan"`` (JSON has no number for it); W&B gets the float, not
    the text, in its numeric series (the row a diverging run logs before it stops)."""
    import math

    import torch

    wb = fake_wandb(set())
    monkeypatch.setitem(sys.modules, "wandb", wb)
    log = logger(tmp_path, "offline")
    log.log(1, {"critic_loss": float("nan"), "q": torch.tensor(float("inf")), "x": 2.0})
    log.close()
    (step, sent), = wb.runs[0].rows
    assert step == 1 and math.isnan(sent["critic_loss"]) and sent["q"] == float("inf")
    assert sent["x"] == 2.0 and isinstance(sent["critic_loss"], float)
    (row,) = rows(tmp_path)
    assert (row["critic_loss"], row["q"], row["x"]) == ("nan", "inf", 2.0)


def test_every_address_of_the_name_is_tried(monkeypatch):
    """A name whose first address takes no connection (a dual-stack host's IPv6 address
    without a route, one host of several down) was found unreachable: only the first address
    was tried after the lookup moved into its own thread."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\n")
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    closed = socket.create_server(("127.0.0.2", 0))
    dead = closed.getsockname()[1]
    closed.close()  # nothing listens there: refused
    entry = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
    lookup = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: [
        (*entry, ("127.0.0.2", dead)), (*entry, ("127.0.0.1", port))]
        if host == "wandb.example" else lookup(host, *a, **k))
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.example")
    try:
        assert runlog._wandb_reachable(timeout=2.0)
    finally:
        srv.close()
