"""Versioned checkpoints: dicts of state dicts, written atomically, loaded with weights_only.

File layout (format 2): the bytes of ``torch.save(payload)`` followed by a 40-byte footer,
``b"RLKITSHA"`` and the SHA-256 of those bytes. ``torch.load`` ignores the footer, so a
checkpoint still opens with plain ``torch.load(path, weights_only=True)``;
:func:`load_checkpoint` checks the digest first, so a truncated or altered file is refused
before anything is unpickled, and then unpickles with ``weights_only=True``, so a file that
carries code (a pickle whose ``__reduce__`` names a function) is refused even when its digest
matches.

Payloads are plain data: dicts, lists, tuples, numbers, strings, ``None`` and tensors. NumPy
arrays and scalars (noise states, generator keys, environment states) are stored as tensors
tagged with their dtype and come back as NumPy values.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlkit.faults import FileSystemError

FORMAT_VERSION = 2
"""Bumped whenever the layout of a checkpoint changes (2: integrity footer, trainer state)."""

FOOTER_MAGIC = b"RLKITSHA"
_FOOTER_LEN = len(FOOTER_MAGIC) + 32
_NDARRAY, _NPSCALAR = "__ndarray__", "__npscalar__"


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded: unreadable, unsafe, corrupt, not of this format, or
    not of this run (another backbone, other shapes)."""


# ----------------------------------------------------------------------------- plain data
def to_plain(obj: Any) -> Any:
    """``obj`` with NumPy arrays and scalars replaced by tagged tensors (for weights_only)."""
    if isinstance(obj, np.ndarray | np.generic):
        arr = np.asarray(obj)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"cannot checkpoint a NumPy array of dtype {arr.dtype}")
        # unsigned types beyond uint8 have no full torch support: widen to int64
        wide = arr.astype(np.int64) if arr.dtype.kind == "u" and arr.itemsize > 1 else arr
        tag = _NDARRAY if isinstance(obj, np.ndarray) else _NPSCALAR
        return {tag: torch.from_numpy(np.array(wide, copy=True)), "dtype": arr.dtype.str}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain`."""
    if isinstance(obj, dict):
        if len(obj) == 2 and "dtype" in obj and (_NDARRAY in obj or _NPSCALAR in obj):
            tensor = obj.get(_NDARRAY, obj.get(_NPSCALAR))
            arr = tensor.numpy().astype(np.dtype(obj["dtype"]))
            return arr if _NDARRAY in obj else arr[()]
        return {k: from_plain(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(from_plain(v) for v in obj)
    return obj


# ----------------------------------------------------------------------------- writing
def save_checkpoint(path: str | Path, payload: dict[str, Any], keep_previous: bool = False
                    ) -> Path:
    """Write ``payload`` (plus ``format_version``) to ``path`` atomically.

    The data goes to a temporary file in the same directory, gets its integrity footer, is
    flushed to disk, and is then renamed over ``path``: a crash mid-write leaves the previous
    file intact (and a stray ``.NAME.*.tmp`` file, see :func:`remove_stale_temp_files`).

    Args:
        path: the checkpoint file.
        payload: plain data (see the module docstring); NumPy values are converted.
        keep_previous: first hard-link the current ``path`` (if any) to ``NAME.prev.EXT``, so
            the checkpoint before the newest survives too.

    Raises:
        rlkit.faults.FileSystemError: the file system refused (read-only, full, ``path`` is a
            directory, ...); the file at ``path`` before the call is left as it was.
    """
    path = Path(path)
    try:
        return _save(path, payload, keep_previous)
    except FileSystemError:
        raise
    except OSError as e:
        note = "the checkpoint written before is kept" if path.is_file() else ""
        raise FileSystemError("write the checkpoint", path, e, note) from e


def _save(path: Path, payload: dict[str, Any], keep_previous: bool) -> Path:
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with contextlib.suppress(OSError):  # as open() would: the run's other files' mode
            os.fchmod(fd, _file_mode())  # (a file system that refuses chmod keeps 0600)
        with os.fdopen(fd, "w+b") as f:
            writer = _Writer(f)
            try:
                torch.save(to_plain({"format_version": FORMAT_VERSION, **payload}), writer)
            except RuntimeError as e:  # torch reports a failed write as a RuntimeError
                if writer.error is not None:
                    raise writer.error from e
                raise
            f.flush()
            f.seek(0)
            digest = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
            f.write(FOOTER_MAGIC + digest.digest())
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file():
            _link_previous(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class _Writer:
    """A file for ``torch.save`` that keeps the ``OSError`` of a failed write (torch raises a
    ``RuntimeError`` in its place)."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def previous_path(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint before the newest one."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (``mkstemp``'s own is
    0600, which would make checkpoints unreadable to those who can read the run's metrics)."""
    try:  # Linux names it without setting it (setting it, even briefly, is process-wide)
        line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                    if x.startswith("Umask:"))
        umask = int(line.split()[1], 8)
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0)
        os.umask(umask)
    return 0o666 & ~umask


def _link_previous(path: Path) -> None:
    prev = previous_path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{prev.name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(path, tmp)
    except OSError:
        return  # no hard links on this file system: keep only the newest
    os.replace(tmp, prev)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(path: str | Path) -> list[Path]:
    """Delete the temporary files that writes of ``path`` killed mid-way left behind.

    Only call this when no other process writes ``path``. Returns the deleted files.
    """
    path = Path(path)
    stale = [p for name in (path.name, previous_path(path).name)
             for p in path.parent.glob(f".{name}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# ----------------------------------------------------------------------------- reading
class _ReadOnlyView(io.RawIOBase):
    """A seekable binary file over a memoryview, without copying it (``io.BytesIO`` of a
    slice would copy the file's body: loading would then hold it three times, the file, its
    body and the tensors, where it now holds it twice)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view, self._pos = view, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = max(min(len(b), len(self._view) - self._pos), 0)
        b[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n


def _check_footer(path: Path, footer: bytes, size: int) -> None:
    """Raise :class:`CheckpointError` unless ``footer``, the last bytes of the ``size``-byte
    file at ``path``, is an rlkit integrity footer."""
    if size < _FOOTER_LEN or not footer.startswith(FOOTER_MAGIC):
        raise CheckpointError(
            f"{path} has no rlkit integrity footer: the file is truncated, or it is not an "
            f"rlkit checkpoint of format {FORMAT_VERSION} ({size} bytes)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint: check its digest, ``torch.load(weights_only=True)``, check its format
    version.

    Raises:
        CheckpointError: if the file is missing, is a directory, cannot be read, is truncated
            or altered (digest mismatch), carries code (a pickle that is not plain data), or
            has another format version.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file; move it away "
                              "(a checkpoint is a file written by rlkit.checkpoint)")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    body, footer = memoryview(raw)[:-_FOOTER_LEN], raw[-_FOOTER_LEN:]  # body: not a copy
    _check_footer(path, footer, len(raw))
    if hashlib.sha256(body).digest() != footer[len(FOOTER_MAGIC):]:
        raise CheckpointError(
            f"{path} is corrupt: its SHA-256 does not match the one written with it (the file "
            "was altered or partly overwritten)")
    try:
        data = torch.load(_ReadOnlyView(body), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-data checkpoint, it names code to run "
            f"or types outside the allowed ones ({_why(e)}); it was not executed"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot load checkpoint {path} (its digest matches: the file is "
                              f"as written) with map_location={str(map_location)!r}: {e}") from e
    if not isinstance(data, dict) or "format_version" not in data:
        raise CheckpointError(f"{path} is not an rlkit checkpoint (no format_version)")
    if data["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {data['format_version']}, expected {FORMAT_VERSION}"
        )
    return from_plain(data)


def checkpoint_progress(path: str | Path) -> tuple[str, int]:
    """The ``kind`` and ``step`` of the checkpoint at ``path``, read without reading its
    tensors (``torch.load`` memory-maps them, and only the small pickle is read) and without
    checking its digest, which reads the whole file: for telling whether a run is finished
    without reading its replay buffer. Resuming it loads it with :func:`load_checkpoint`,
    which checks everything.

    Raises:
        CheckpointError: if the file is missing, is a directory, has no integrity footer
            (truncated, or not an rlkit checkpoint), cannot be loaded as plain data, has
            another format version, or names no kind and step.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(size - _FOOTER_LEN, 0))
            _check_footer(path, f.read(), size)
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, ValueError, TypeError,
            pickle.UnpicklingError) as e:
        raise CheckpointError(f"cannot read the progress of checkpoint {path}: {e}") from e
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an rlkit checkpoint of format {FORMAT_VERSION}")
    kind, step = data.get("kind"), data.get("step")
    if not isinstance(kind, str) or not isinstance(step, int):
        raise CheckpointError(f"{path} names no kind and step")
    return kind, step


def _why(error: Exception) -> str:
    """The line of torch's weights_only message that names what was refused."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    named = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln]
    return (named or lines or [type(error).__name__])[0]


# ----------------------------------------------------------------------------- compatibility
def check_config(checkpoint: Mapping[str, Any], run: Mapping[str, Any], keys: Iterable[str]
                 ) -> None:
    """Refuse a checkpoint whose config differs from the run's in one of ``keys``.

    Raises:
        CheckpointError: naming every differing key, e.g.
            ``checkpoint backbone 'gru' != run backbone 'lstm'``.
    """
    diffs = [f"checkpoint {k} {checkpoint.get(k)!r} != run {k} {run.get(k)!r}"
             for k in keys if checkpoint.get(k) != run.get(k)]
    if diffs:
        raise CheckpointError("checkpoint does not belong to this run: " + "; ".join(diffs))


def check_state_dict(checkpoint: Mapping[str, Any], expected: Mapping[str, Any], where: str
                     ) -> None:
    """Refuse a state dict whose keys or tensor shapes differ from ``expected``'s.

    Args:
        checkpoint: the state dict read from the checkpoint.
        expected: the state dict of the module it is meant for.
        where: the module's name, prefixed to each key in the message.

    Raises:
        CheckpointError: naming the missing and unexpected keys and every shape mismatch.
    """
    problems = []
    missing = [k for k in expected if k not in checkpoint]
    extra = [k for k in checkpoint if k not in expected]
    if missing:
        problems.append("missing " + ", ".join(f"{where}.{k}" for k in missing[:5]) +
                        (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    if extra:
        problems.append("unexpected " + ", ".join(f"{where}.{k}" for k in extra[:5]) +
                        (f" (+{len(extra) - 5} more)" if len(extra) > 5 else ""))
    for k, want in expected.items():
        got = checkpoint.get(k)
        if isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor) and \
                got.shape != want.shape:
            problems.append(f"{where}.{k} has shape {tuple(got.shape)} in the checkpoint, "
                            f"{tuple(want.shape)} in this run")
    if problems:
        raise CheckpointError("checkpoint does not fit this run: " + "; ".join(problems))


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)`` keeping this optimizer's kind.

    ``load_state_dict`` takes the ``foreach`` / ``fused`` / ``capturable`` flags from the saved
    groups; a state saved by an older version (foreach Adam) would switch the kind.
    The flags are restored and step counters moved where the kind keeps them (the parameter's
    device for fused / capturable, else the CPU).

    Args:
        optimizer: the optimizer to load into.
        state: a state dict from ``optimizer.state_dict()`` of the same parameter layout.
    """
    flags = ("foreach", "fused", "capturable")
    kinds = [{f: g.get(f) for f in flags} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kind in zip(optimizer.param_groups, kinds):
        group.update({f: v for f, v in kind.items() if f in group})
        on_device = bool(kind.get("fused") or kind.get("capturable"))
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                device = p.device if on_device else torch.device("cpu")
                optimizer.state[p]["step"] = step.to(device, torch.float32)
