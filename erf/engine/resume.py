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
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from erf.engine.accumulate import Accumulator
from erf.io import atomic_write, save_npz, set_aside, to_json, verify

__all__ = ["StateFile", "NoSaves", "checksum", "state_problem", "sample_stats_state", "restore_sample_stats"]


class NoSaves:
    """The loop's saves when there is no state file: nothing to resume, never due."""

    def load(self, plan: Sequence[tuple[int, int, int]] | None = None,
             shape: tuple[int, ...] | None = None) -> tuple[dict, dict] | None:
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

    def load(self, plan: Sequence[tuple[int, int, int]] | None = None,
             shape: tuple[int, ...] | None = None) -> tuple[dict, dict] | None:
        """(arrays, meta) of a matching save, else None; a damaged save is set aside (``damaged/``).

        Args:
            plan: the loop's ``(draw, first, stop)`` ranges: the saved position must lie inside them.
            shape: the map's shape: the saved sums must have it.
        """
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
        if problem is None and meta.get("fingerprint") == self.fingerprint:
            problem = state_problem(arrays, meta, plan, shape)
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


def _count(v: object, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def state_problem(arrays: dict[str, np.ndarray], meta: dict, plan: Sequence[tuple[int, int, int]] | None = None,
                  shape: tuple[int, ...] | None = None) -> str | None:
    """Why a save read back cannot be resumed (arrays of the wrong kind, a position outside the plan), or None.

    Args:
        arrays: the saved arrays (``Accumulator.state``).
        meta: the saved loop position and counts.
        plan: the loop's ranges, when known.
        shape: the map's shape, when known.

    Returns:
        One phrase, or None.
    """
    need = ("total", "group_ids", "group_counts", "group_sums", "sample_mass")
    if any(k not in arrays for k in need):
        return "arrays missing"
    total, ids, counts, sums, mass = (arrays[k] for k in need)
    floats = all(np.issubdtype(a.dtype, np.floating) for a in (total, sums, mass))
    ints = all(np.issubdtype(a.dtype, np.integer) for a in (ids, counts))
    if not (floats and ints and ids.ndim == 1 and counts.shape == ids.shape and mass.ndim == 1):
        return "arrays of the wrong kind or shape"
    if (shape is not None and tuple(total.shape) != tuple(shape)) \
            or tuple(sums.shape) != (len(ids), *total.shape) or not np.isfinite(total).all():
        return "sums of the wrong shape or not finite"
    if not all(_count(meta.get(k), lo) for k, lo in (("n", 0), ("group_size", 1), ("step", 0), ("done", 0),
                                                      ("batch_size", 1))) \
            or not isinstance(meta.get("notes"), list) or not all(isinstance(n, str) for n in meta["notes"]):
        return "loop position of the wrong kind"
    if int(counts.sum()) != meta["n"] or (counts < 0).any():
        return "sample counts that do not add up"
    if plan is not None:
        step, done = meta["step"], meta["done"]
        if step >= len(plan) or not plan[step][1] <= done <= plan[step][2]:
            return f"loop position past the end (step {step}, sample {done})"
    if "zero_count" in meta and not (_count(meta["zero_count"]) and isinstance(meta.get("zero_sum"), (int, float))
                                     and isinstance(meta.get("raw_mass"), list)):
        return "sample statistics of the wrong kind"
    return None


def sample_stats_state(probe: object) -> dict[str, Any]:
    """What a save keeps of the loop's probe wrapper (``erf.engine.diagnostics.SampleStats``): the zero-gradient
    share summed so far, its sample count, and the raw per-sample masses; {} for a plain probe.

    Args:
        probe: the loop's probe.

    Returns:
        JSON-ready entries for the save's loop position.
    """
    if not hasattr(probe, "zero_sum") or not hasattr(probe, "count"):
        return {}
    raw = [float(v) for t in getattr(probe, "raw", []) for v in t.detach().cpu().reshape(-1).tolist()]
    return {"zero_sum": float(probe.zero_sum), "zero_count": int(probe.count), "raw_mass": raw}


def restore_sample_stats(probe: object, meta: dict) -> None:
    """Put the saved statistics (``sample_stats_state``) back into the probe wrapper, so the diagnostics of a
    resumed measurement count every sample, as one run does.

    Args:
        probe: the loop's probe.
        meta: the save's loop position.
    """
    if "zero_count" not in meta or not hasattr(probe, "zero_sum"):
        return
    probe.zero_sum = float(meta["zero_sum"])
    probe.count = int(meta["zero_count"])
    if meta["raw_mass"]:
        probe.raw = [torch.tensor(meta["raw_mass"], dtype=torch.float64)]


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
