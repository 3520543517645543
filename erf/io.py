"""Files every layer writes: atomic writes, checksums, ``.npz`` archives and JSON-ready values.

Everything that lands on disk goes through here, so durability and encoding rules live
in one place (the engine's state files, run folders, results, figures). An atomic write
goes to a temporary file in the same folder, is flushed to the disk (``fsync``), renamed onto
its path, and the folder is flushed too: after a crash of the host the path holds either the
old or the new content, never a part. ``checksum=True`` also writes ``<file>.sha256`` (after
the file), which ``verify`` checks when the file is read back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["atomic_write", "fsync_dir", "fsync_tree", "checksum_path", "file_sha256", "write_checksum", "verify",
           "set_aside", "save_npz", "to_json", "json_dumps"]

CHECKSUM_SUFFIX = ".sha256"


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], checksum: bool = False) -> Path:
    """Call ``write(tmp_path)``, flush it to the disk, rename it onto ``path`` and flush the folder.

    Args:
        path: the final file; its folder is created when missing.
        write: writes the whole content to the temporary path it is given.
        checksum: also write ``<path>.sha256`` (``write_checksum``) once ``path`` is in place.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        Whatever ``write``, the flush or the rename raise (``OSError`` with ``errno.ENOSPC`` on a
        full disk); the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    if checksum:
        write_checksum(path)
    return path


def _fsync_file(path: str | os.PathLike) -> None:
    """Flush one file's content to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (new names, renames) to the disk; a no-op where folders cannot be opened.

    Args:
        path: the folder.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows and some filesystems cannot open a folder
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a folder (EINVAL)
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """Flush every file and folder under ``path`` to the disk (before a folder is renamed into place).

    Args:
        path: the folder.
    """
    for root, _, files in os.walk(path):
        for name in files:
            _fsync_file(os.path.join(root, name))
        fsync_dir(root)


def checksum_path(path: str | os.PathLike) -> Path:
    """Where the checksum of ``path`` is kept: ``<path>.sha256`` beside it.

    Args:
        path: the checked file.

    Returns:
        The checksum file's path.
    """
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes.

    Args:
        path: the file.

    Returns:
        64 hex digits.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksum(path: str | os.PathLike) -> Path:
    """Record ``path``'s SHA-256 and size in ``<path>.sha256`` (atomically, flushed).

    Args:
        path: a file already written in full.

    Returns:
        The checksum file's path.
    """
    path = Path(path)
    text = f"{file_sha256(path)} {path.stat().st_size}\n"
    return atomic_write(checksum_path(path), lambda f: Path(f).write_text(text))


def verify(path: str | os.PathLike) -> str | None:
    """Check a file against the checksum recorded when it was written.

    Args:
        path: a file written with ``checksum=True`` (or followed by ``write_checksum``).

    Returns:
        None when the file is intact, else why it is not (one phrase: "empty", "no checksum
        recorded", "truncated", "checksum mismatch", "unreadable: ...").
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty"
        try:
            recorded = checksum_path(path).read_text().split()
        except FileNotFoundError:
            return "no checksum recorded"
        if len(recorded) != 2 or not recorded[1].isdigit():
            return "its checksum file is damaged"
        if int(recorded[1]) != size:
            return f"truncated or extended ({size} bytes, {recorded[1]} were written)"
        if file_sha256(path) != recorded[0]:
            return "checksum mismatch (altered after it was written)"
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable: {exc.strerror or type(exc).__name__}" if isinstance(exc, OSError) else "unreadable"
    return None


def set_aside(path: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Move a damaged file (and its checksum file) into ``folder``, never over another file; delete nothing.

    Args:
        path: the file.
        folder: where it goes (created when missing).

    Returns:
        Its new path (``name``, else ``name.1``, ``name.2`` ...).
    """
    path, folder = Path(path), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest, i = folder / path.name, 0
    while dest.exists() or checksum_path(dest).exists():
        i += 1
        dest = folder / f"{path.name}.{i}"
    os.replace(path, dest)
    if checksum_path(path).exists():
        os.replace(checksum_path(path), checksum_path(dest))
    fsync_dir(path.parent)
    fsync_dir(folder)
    return dest


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    """``np.savez`` to exactly ``path`` (through a file object: given a name, numpy appends ``.npz``).

    Args:
        path: the file to write (not made atomic here: wrap in ``atomic_write``).
        arrays: name -> array.
        compressed: use ``np.savez_compressed``.
    """
    with open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def to_json(v: Any) -> Any:
    """Plain Python types for ``json``: numpy scalars and arrays unwrapped, non-finite floats as None.

    Args:
        v: nested dicts, lists, tuples, numpy arrays and scalars.

    Returns:
        The same structure of dicts (string keys), lists, bools, ints, floats and other leaves.
    """
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [to_json(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    return v


def json_dumps(v: Any, **kwargs: Any) -> str:
    """``json.dumps(to_json(v))`` that refuses NaN (none can be left after ``to_json``)."""
    return json.dumps(to_json(v), allow_nan=False, **kwargs)
