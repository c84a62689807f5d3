"""Train a DDPG agent with a sequence backbone on a Gymnasium task.

    python train.py                                    # Pendulum-v1, MLP, a few minutes on a CPU
    python train.py --env rlkit/Pendulum-V-v0 --backbone gru --total-steps 30000
    python train.py --env mymodule:MyEnv-v0            # import mymodule first (it registers ids)
    python train.py --backbone mlp gru --seed 0 1 2    # a grid of runs, then a report
    python train.py --help                             # every flag, with its documentation

Every run writes ``RUN_DIR/config.json``, ``metrics.jsonl`` and ``checkpoint.pt`` (at the
start, every 5 minutes by default, at the end, and on SIGINT / SIGTERM), so that a stopped or
killed run continues with ``--resume``:

    python train.py --checkpoint-every 10000 --run-dir runs/a   # also every 10k steps
    python train.py --resume runs/a --total-steps 50000          # continue it (and extend)

Exit codes: 0 done; 1 non-finite value or loss; 2 bad input (a bad flag, a run directory
that is a file or in use, an edited or malformed run file, an unreadable checkpoint, not
enough memory for the replay buffer, a failed grid run); 3 file-system error (read-only or
full, named with the path); 4 the environment raised an exception (its traceback is printed);
130 / 143 stopped by SIGINT / SIGTERM after writing a checkpoint (none for a second signal, or a
SIGINT or SIGTERM outside the training loop). The program itself is
``agents.train`` (one run) and ``agents.cli`` (the command line and grids).
"""

import signal
import sys


def _stopped_while_loading(signum: int, frame: object = None) -> None:
    print(f"stopped: {signal.Signals(signum).name} while the modules loaded, before anything "
          "was written", file=sys.stderr)
    sys.exit(128 + signum)


if __name__ == "__main__":  # not in a grid's run processes, which import this file again
    signal.signal(signal.SIGTERM, _stopped_while_loading)
try:
    import envs  # noqa: F401  (registers the rlkit/ task ids)
    from agents.cli import run
except KeyboardInterrupt:  # Ctrl-C while the modules load: nothing was started
    _stopped_while_loading(signal.SIGINT)

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # agents.cli.run puts its own in place
    run()
