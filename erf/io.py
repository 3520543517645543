"""Files every layer writes: atomic writes, checksums, ``.npz`` archives and JSON-ready values.

Everything that lands on disk goes through here, so durability and encoding rules live
in one place (the engine's state files, run folders, results, figures). An atomic write
goes to a temporary file in the same folder, is flushed to the disk (``fsync``), renamed onto
its path, and the folder is flushed too: after a crash of the host the path holds either the
old or the new content, never a part. ``sealed=True`` (zip-based files: ``.npz``, ``torch.save``)
puts the file's SHA-256 inside it, as the zip archive comment, before the rename: there is no
instant at which a complete file lacks its checksum, which ``verify`` checks when the file is
read back. ``checksum=True`` writes ``<file>.sha256`` beside it instead (after the file; files
of older erf versions are checked against it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["atomic_write", "fsync_dir", "fsync_tree", "checksum_path", "file_sha256", "write_checksum", "verify",
           "seal", "seal_problem", "SEAL_BYTES", "set_aside", "save_npz", "to_json", "json_dumps"]

CHECKSUM_SUFFIX = ".sha256"
SEAL_PREFIX = b"erf-sha256:"  # the zip comment of a sealed file: this, then the hex SHA-256 of the bytes before it
SEAL_BYTES = len(SEAL_PREFIX) + 64
_EOCD = b"PK\x05\x06"  # the zip end-of-central-directory record: 22 bytes, the comment's length in the last 2


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], checksum: bool = False,
                 sealed: bool = False) -> Path:
    """Call ``write(tmp_path)``, flush it to the disk, rename it onto ``path`` and flush the folder.

    Args:
        path: the final file; its folder is created when missing.
        write: writes the whole content to the temporary path it is given.
        checksum: also write ``<path>.sha256`` (``write_checksum``) once ``path`` is in place.
        sealed: ``write`` makes a zip file (``np.savez``, ``torch.save``): put its SHA-256 inside it
            (``seal``) before the rename.

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
        if sealed:
            seal(tmp, path.name)
        with contextlib.suppress(OSError):  # mkstemp makes 0600: give the file what the umask allows
            os.chmod(tmp, 0o666 & ~_umask())
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


def _umask() -> int:
    """The process's umask (read from /proc where it can be, else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def seal(path: str | os.PathLike, name: str | None = None) -> None:
    """Put the SHA-256 of a zip file inside it, as its archive comment (zip readers ignore it).

    The comment's length is set first, then the digest of the file's final name and every byte
    before the comment is appended: ``seal_problem`` recomputes it, so a sealed file copied over
    another name (one save over another's) does not pass either. numpy and torch read the file
    as before.

    Args:
        path: a zip file without an archive comment (what ``np.savez`` and ``torch.save`` write).
        name: the name the file will have (default: its own).

    Raises:
        ValueError: the file does not end with a zip end record without comment.
    """
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        if size < 22:
            raise ValueError(f"{path}: not a zip file")
        f.seek(size - 22)
        end = f.read(22)
        if end[:4] != _EOCD or end[20:22] != b"\0\0":
            raise ValueError(f"{path}: not a zip file without an archive comment")
        f.seek(size - 2)
        f.write(SEAL_BYTES.to_bytes(2, "little"))
    digest = _named_sha256(path, name or Path(path).name, None)
    with open(path, "ab") as f:
        f.write(SEAL_PREFIX + digest.encode())


def _named_sha256(path: str | os.PathLike, name: str, length: int | None) -> str:
    """SHA-256 of ``name``, a NUL, then the first ``length`` bytes of the file (all of it for None)."""
    h = hashlib.sha256(name.encode("utf-8", "surrogateescape") + b"\0")
    with open(path, "rb") as f:
        left = length
        while left is None or left > 0:
            block = f.read(1 << 20 if left is None else min(left, 1 << 20))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def seal_problem(path: str | os.PathLike) -> str | None:
    """Check a sealed file (``seal``) against the SHA-256 inside it.

    Args:
        path: the file.

    Returns:
        None when it is sealed and intact; "no checksum recorded" when it carries no seal; else
        why it does not match ("empty", "truncated or altered ...").

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            return "empty"
        if size < SEAL_BYTES + 22:
            return "no checksum recorded"
        f.seek(size - SEAL_BYTES - 22)
        tail = f.read()
    if not tail[22:].startswith(SEAL_PREFIX):
        return "no checksum recorded"
    if tail[:4] != _EOCD or int.from_bytes(tail[20:22], "little") != SEAL_BYTES:
        return "its checksum is damaged"
    if _named_sha256(path, Path(path).name, size - SEAL_BYTES).encode() != tail[22 + len(SEAL_PREFIX):]:
        return "checksum mismatch (truncated or altered after it was written)"
    return None


def verify(path: str | os.PathLike) -> str | None:
    """Check a file against the checksum recorded when it was written: inside it (sealed), else beside it.

    Args:
        path: a file written with ``sealed=True`` or ``checksum=True`` (or followed by ``write_checksum``).

    Returns:
        None when the file is intact, else why it is not (one phrase: "empty", "no checksum
        recorded", "truncated", "checksum mismatch", "unreadable: ...").
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        size = info.st_size
        if size == 0:
            return "empty"
        sealed = seal_problem(path)
        if sealed != "no checksum recorded" or not checksum_path(path).exists():
            return sealed
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
        folder: where it goes (created when missing; ``folder.1``, ``folder.2`` ... when a file has its name).

    Returns:
        Its new path (``name``, else ``name.1``, ``name.2`` ...).
    """
    path, folder = Path(path), Path(folder)
    base, k = folder, 0
    while folder.is_symlink() or (folder.exists() and not folder.is_dir()):  # a file of that name: another folder
        k += 1
        folder = base.with_name(f"{base.name}.{k}")
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
