"""Compare two runs' ``metrics.jsonl`` row by row, ignoring timing and memory fields.

    python bench/same_metrics.py RUN_A RUN_B [--max-step 2000] [--min-step 0] [--ignore KEY ...]

Prints the rows compared and the first difference; exits 1 when a row differs. Used to show
that a change keeps training bit for bit the same (same seed, same thread count). ``--ignore``
leaves out fields one side does not log (a metric added later).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlkit.rundir import dir_arg
from rlkit.runlog import read_metrics

TIMING = {"wall_time", "sps", "updates_per_s", "peak_memory_mb"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", type=dir_arg)
    p.add_argument("b", type=dir_arg)
    p.add_argument("--min-step", type=int, default=0)
    p.add_argument("--max-step", type=int, default=None)
    p.add_argument("--ignore", nargs="*", default=[], help="fields to leave out as well")
    args = p.parse_args()
    if "step" in args.ignore:
        p.error("--ignore step: the rows are matched by their step; it cannot be left out")
    if args.max_step is not None and args.max_step < args.min_step:
        p.error(f"--max-step {args.max_step} is below --min-step {args.min_step}: no row "
                "could be compared")
    for run in (args.a, args.b):
        if not Path(run).exists():
            p.error(f"{run}: no such directory: expected two run directories")
        if not (Path(run) / "metrics.jsonl").is_file():
            p.error(f"{run} is not a run directory (no metrics.jsonl in it): expected two run "
                    "directories")

    def rows(run: Path) -> list[dict]:
        skip = TIMING | set(args.ignore)
        keep = [{k: v for k, v in r.items() if k not in skip} for r in read_metrics(run)]
        return [r for r in keep if r["step"] >= args.min_step
                and (args.max_step is None or r["step"] <= args.max_step)]

    try:
        a, b = rows(args.a), rows(args.b)
    except ValueError as e:  # a line of metrics.jsonl that is not a row (RunDirError)
        p.error(str(e))
    if not a and not b:
        print(f"no rows to compare: neither run logged a step in {args.min_step}.."
              f"{'' if args.max_step is None else args.max_step}")
        return 1
    for i, (ra, rb) in enumerate(zip(a, b)):
        if ra != rb:
            diff = {k: (ra.get(k), rb.get(k)) for k in ra.keys() | rb.keys()
                    if ra.get(k) != rb.get(k)}
            print(f"row {i} (step {ra['step']}) differs: {diff}")
            return 1
    if len(a) != len(b):
        print(f"{len(a)} rows against {len(b)}")
        return 1
    print(f"{len(a)} rows identical (steps {a[0]['step']}..{a[-1]['step']}, "
          f"{sum(len(r) - 1 for r in a)} values; {sorted(TIMING | set(args.ignore))} ignored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
