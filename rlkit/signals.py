"""Stop signals, for the loop (:func:`rlkit.faults.stop_signals`) and the grid launcher
(:mod:`rlkit.launch`): one place that installs a SIGINT / SIGTERM handler and puts the previous
ones back. Standard library only, so that the launcher's run processes can import it before
torch (they set their thread count first).
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


__all__ = ["on_stop_signals"]
