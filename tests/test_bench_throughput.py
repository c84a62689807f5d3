"""bench/throughput.py refuses bad sizes at once, before anything is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("flags, said", [
    (["--warmup", "300"], "--warmup must be a positive multiple of 500, got 300"),
    (["--steps", "0"], "--steps must be a positive multiple of 500, got 0"),
])
def test_sizes_that_our_loop_cannot_time_are_refused_at_once(flags, said):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--skip-sb3",
                          *flags], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and said in out.stderr and out.stdout == ""
