"""Stop signals, for the loop (:func:`rlkit.faults.stop_signals`) and the grid launcher
(:mod:`rlkit.launch`): one place that installs a SIGINT / SIGTERM handler and puts the previous
ones back; and :func:`sigterm_raises`, which makes a SIGTERM outside them stop the program the
way Python stops it on a SIGINT (an exception where it arrives), so that it can say so.
Standard library only, so that the launcher's run processes can import it before torch (they
set their thread count first).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def on_stop_signals(handler: Any) -> Iterator[bool]:
    """Inside the block SIGINT and SIGTERM call ``handler(signum, frame)``; the previous
    handlers come back after it. Main thread only: elsewhere signals keep their handlers and
    the block gets ``False``."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield True
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


class SigtermInterrupt(KeyboardInterrupt):
    """A SIGTERM that arrived outside the training loop and the grid launcher (while a run
    starts, or after its loop): raised where it arrived, as Python raises
    :class:`KeyboardInterrupt` for a SIGINT. ``exit_code``: 143 (128 + SIGTERM)."""

    def __init__(self) -> None:
        super().__init__("SIGTERM outside the training loop")
        self.exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside the block a SIGTERM raises :class:`SigtermInterrupt`; the previous handler comes
    back after it. Main thread only. Blocks that handle stop signals themselves (the training
    loop's, the local grid launcher's) install their own handlers and put this one back; Ray,
    once started, keeps its own."""
    def handler(signum: int, frame: Any) -> None:
        raise SigtermInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


__all__ = ["SigtermInterrupt", "on_stop_signals", "sigterm_raises"]
