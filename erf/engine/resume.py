"""Resuming a killed measurement: the sums and the loop position saved in a state file.

The loop is given a ``StateFile`` (or ``NoSaves``, which never saves nor finds a save). A
file whose fingerprint (settings, model ``checksum``, world size) differs from this run's
is ignored. Saves happen after a batch once ``every`` seconds have passed since the last
one; each is written to a temporary file with its SHA-256 inside it (``erf.io.seal``), flushed and
renamed, so a kill at any instant leaves the previous save or the new one, each with its checksum.
A save that does not match its checksum, or cannot be read for any reason, is moved to ``damaged/`` beside it with a one-line note
on stderr and the measurement starts from the beginning (nothing is deleted). Under ``torchrun``
each rank saves its own share (``Ranks.state_path``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from erf.engine.accumulate import Accumulator
from erf.io import atomic_write, save_npz, set_aside, to_json, verify

__all__ = ["StateFile", "NoSaves", "checksum"]


class NoSaves:
    """The loop's saves when there is no state file: nothing to resume, never due."""

    def load(self) -> tuple[dict, dict] | None:
        """Never a save."""
        return None

    def due(self, now: float) -> bool:
        """Never due."""
        return False

    def save(self, acc: Accumulator, position: dict, now: float) -> None:
        """Nothing to write."""


class StateFile(NoSaves):
    """A saved accumulator with its loop position, for resuming a killed measurement."""

    def __init__(self, path: str | Path, fingerprint: dict[str, Any], every: float):
        """
        Args:
            path: the file (this rank's own, see ``Ranks.state_path``).
            fingerprint: what must match for a save to be resumed (JSON-able).
            every: seconds between saves.
        """
        self.path, self.every = Path(path), float(every)
        self.fingerprint = json.dumps(to_json(fingerprint), sort_keys=True)
        self._last: float | None = None

    def load(self) -> tuple[dict, dict] | None:
        """(arrays, meta) of a matching save, else None; a damaged save is set aside (``damaged/``)."""
        if not self.path.is_file():
            return None
        problem = verify(self.path)
        if problem is None:
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    meta = json.loads(str(z["meta"]))
                    arrays = {k: z[k] for k in z.files if k != "meta"}
                if not isinstance(meta, dict):
                    raise ValueError("meta is not a table")
            except Exception as exc:  # any damage: BadZipFile, EOFError, zlib.error, ValueError, KeyError, OSError
                problem = f"unreadable ({type(exc).__name__})"
        if problem is not None:
            self._set_aside(problem)
            return None
        if meta.get("fingerprint") != self.fingerprint:
            return None
        return arrays, meta

    def _set_aside(self, problem: str) -> None:
        """Move a damaged save out of the way (a one-line note); the measurement starts again."""
        try:
            moved = set_aside(self.path, self.path.parent / "damaged")
        except OSError as exc:
            print(f"erf: note: the engine save {self.path} is damaged ({problem}) and could not be moved aside "
                  f"({exc.strerror}); measuring from the start", file=sys.stderr)
            return
        print(f"erf: note: the engine save {self.path.name} is damaged ({problem}); moved to {moved}, "
              "measuring that point from the start", file=sys.stderr)

    def due(self, now: float) -> bool:
        """True once ``every`` seconds have passed since the last save (the first call starts the clock)."""
        if self._last is None:
            self._last = now
        return now - self._last >= self.every

    def save(self, acc: Accumulator, position: dict, now: float) -> None:
        """Write ``acc`` and the loop ``position`` atomically."""
        meta = {"fingerprint": self.fingerprint, "group_size": acc.gs, "n": acc.n, **position}
        arrays = {**acc.state(), "meta": np.array(json.dumps(to_json(meta)))}
        atomic_write(self.path, lambda f: save_npz(f, arrays), sealed=True)
        self._last = now


def checksum(model: nn.Module) -> list[float]:
    """Sum and sum of squares of every floating parameter and buffer: a fingerprint of the weights.

    Args:
        model: any module.

    Returns:
        ``[sum, sum of squares]`` in float64 (``[0.0, 0.0]`` without floating tensors).
    """
    tensors = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    if not tensors:
        return [0.0, 0.0]
    with torch.no_grad():
        total = sum(t.double().sum() for t in tensors)
        squares = sum(t.double().square().sum() for t in tensors)
    return [float(total), float(squares)]
