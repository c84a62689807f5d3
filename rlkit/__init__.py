"""rlkit: building blocks for memory-based continuous control (sequence backbones, replay
buffers, losses, the training loop, run directories)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rlkit")
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "unknown"
