"""``.<name>.lock`` beside a results folder: the process id, host and start time of the run writing there.

A second run into the same place is refused while that process lives; a lock left by a dead
process of this host is replaced (``take_lock``). The lock is made in one step (a hard link of a
written temporary file), so two runs starting together cannot both hold it. Used by
``erf.experiment.runfolder``; imports nothing of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

from erf.errors import ConfigError
from erf.io import fsync_dir

__all__ = ["take_lock", "release_lock"]


def take_lock(lock_path: Path, dest: Path) -> str:
    """Take ``lock_path`` (pid, host, process start time) for a run writing ``dest``; replace a stale one of this host.

    Args:
        lock_path: the lock file (``.<name>.lock`` beside ``dest``; its folder is created).
        dest: the results folder (named in the messages).

    Returns:
        The text written into the lock (``release_lock`` removes the lock only while it still holds it).

    Raises:
        ConfigError: a live process holds it, or one on another host (naming both), or the
            folder cannot be written (read-only, full, not a folder).
    """
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid()),
          "command": " ".join(sys.argv)}
    text = json.dumps(me) + "\n"
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if _create_exclusive(lock_path, text):
                # a run killed while making its lock leaves the temporary file of it; holding the lock now,
                # remove such leftovers (another process's try at it then fails to link and is refused)
                for tmp in lock_path.parent.glob(f"{lock_path.name}.*"):
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                return text
            holder = _read_lock(lock_path)
            if holder is not None and _alive(holder):
                raise ConfigError(f"{dest} is being written by another erf run (process {holder.get('pid')} "
                                  f"on {holder.get('host')}: {holder.get('command', '?')}); wait for it to end or "
                                  f"stop it, or choose another --out (if no such run is going on, remove "
                                  f"{lock_path})")
            _remove_stale(lock_path, holder)
    except OSError as exc:
        raise ConfigError(f"cannot write in {dest.parent}: {exc.strerror or exc}; choose another --out "
                          "(a writable folder with free space)") from None
    raise ConfigError(f"cannot take the lock {lock_path}: other processes keep replacing it; retry")


def release_lock(lock_path: Path, text: str) -> None:
    """Remove ``lock_path`` if it still holds ``text`` (this process's own lock only); errors are ignored.

    Args:
        lock_path: the lock file.
        text: what ``take_lock`` wrote into it.
    """
    with contextlib.suppress(OSError):
        if lock_path.read_text() == text:
            lock_path.unlink()


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` in one step (a hard link of a written file); False when it exists."""
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create, then write
            try:
                fd2 = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd2, "w") as f:
                f.write(text)
        fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _read_lock(path: Path) -> dict | None:
    """The lock's holder, or None when it is gone or unreadable."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(holder: dict) -> bool:
    """Whether the lock's holder may still run: another host always may; here, its pid lives (same start time)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    except OSError:
        return False
    started = holder.get("started")
    return started is None or _start_time(pid) in (None, started)  # a reused pid has another start time


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _remove_stale(path: Path, holder: dict | None) -> None:
    """Remove a lock left by a dead process (only if it is still the one that was read)."""
    with contextlib.suppress(FileNotFoundError):
        if _read_lock(path) == holder:
            path.unlink()
            print(f"erf: note: removed the stale lock {path} of process {(holder or {}).get('pid', '?')}, "
                  "which is no longer running", file=sys.stderr)
