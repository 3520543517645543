"""Files every layer writes: atomic writes, ``.npz`` archives and JSON-ready values.

Everything that lands on disk goes through here, so durability and encoding rules live
in one place (the engine's state files, run folders, results, figures).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["atomic_write", "save_npz", "to_json", "json_dumps"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    Args:
        path: the final file; its folder is created when missing.
        write: writes the whole content to the temporary path it is given.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        Whatever ``write`` raises; the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
