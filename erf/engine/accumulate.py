"""Float64 sums of per-sample ERF maps, by group of sample indices; saved and summed over ranks.

A group is a run of consecutive sample indices (``index // group_size``; index = draw x
samples per draw + sample). The group sums carry the uncertainty (``stats``); the running
total gives the mean. ``StateFile`` saves the sums with the loop position atomically so a
killed run resumes where it stopped, and ``Accumulator.reduce`` sums them over
``torch.distributed`` ranks, so the map does not depend on how many processes measured it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from erf import distributed, stats
from erf.errors import ErfError
from erf.io import atomic_write, save_npz, to_json

MAX_GROUPS = 64  # host memory for group sums is at most 64 maps
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def final_group_size(group_size: int, total: int) -> int:
    """``group_size`` doubled until ``total`` indices make at most ``MAX_GROUPS`` groups."""
    while math.ceil(total / group_size) > MAX_GROUPS:
        group_size *= 2
    return group_size


class Accumulator:
    """The running map on the device, per-group sums and counts on the host (all float64).

    ``merge=True`` (an open-ended, adaptive run) merges adjacent groups pairwise whenever
    there are more than ``MAX_GROUPS``; a run of known length fixes ``group_size`` up front
    (``final_group_size``) so every rank and every resumed run groups alike.
    """

    def __init__(self, shape, device, group_size: int, merge: bool = False):
        self.total = torch.zeros(shape, dtype=torch.float64, device=device)
        self.gs, self.n, self.merge = group_size, 0, merge
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}

    def run(self, probe, x: torch.Tensor, first: int, bs: int) -> int:
        """Measure ``x`` (sample indices first, first+1, ...); on CUDA OOM halve and retry."""
        b = x.shape[0]
        if b > bs:  # an earlier OOM lowered the batch size
            head = bs
            bs = self.run(probe, x[:head], first, bs)
            return self.run(probe, x[head:], first + head, bs)
        try:
            m = probe.maps(x)
        except _OOM:
            if b == 1:
                raise ErfError("CUDA out of memory with a batch of one: use a smaller input, a lower "
                               "dtype/autocast, or --device cpu") from None
            m = None
        if m is None:
            torch.cuda.empty_cache()
            half = b // 2
            bs = self.run(probe, x[:half], first, half)
            return self.run(probe, x[half:], first + half, bs)
        self.add(m, first)
        return bs

    def add(self, m: torch.Tensor, first: int) -> None:
        """Add per-sample maps ``m`` of sample indices ``first..``: contiguous slices, no atomics."""
        b = m.shape[0]
        self.total += m.sum(0)
        spans, i = [], 0
        while i < b:
            g = (first + i) // self.gs
            j = min(b, (g + 1) * self.gs - first)
            spans.append((g, i, j))
            i = j
        sums = torch.stack([m[i:j].sum(0) for _, i, j in spans]).cpu().numpy()
        for (g, i, j), s in zip(spans, sums):
            self.sums[g] = self.sums[g] + s if g in self.sums else s
            self.counts[g] = self.counts.get(g, 0) + (j - i)
        self.n += b
        while self.merge and len(self.sums) > MAX_GROUPS:
            self._merge()

    def _merge(self) -> None:
        sums, counts = {}, {}
        for g in sorted(self.sums):
            h = g // 2
            sums[h] = sums[h] + self.sums[g] if h in sums else self.sums[g]
            counts[h] = counts.get(h, 0) + self.counts[g]
        self.sums, self.counts, self.gs = sums, counts, self.gs * 2

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        keys = sorted(self.sums)
        return np.stack([self.sums[g] for g in keys]), np.array([self.counts[g] for g in keys], dtype=np.int64)

    def relative_se(self) -> float:
        try:
            return stats.relative_se_of_sigma(*self.groups())
        except ErfError:  # a signed map has no moments: never converges by this rule
            return math.inf

    def reduce(self, n_groups: int) -> None:
        """Sum the total, the count and groups ``0..n_groups-1`` over ranks (every rank gets the sums)."""
        if not distributed.active():
            return
        dev = self.total.device
        shape = tuple(self.total.shape)
        dense = torch.zeros((n_groups, *shape), dtype=torch.float64, device=dev)
        counts = torch.zeros(n_groups + 1, dtype=torch.float64, device=dev)
        for g, s in self.sums.items():
            dense[g] = torch.from_numpy(s).to(dev)
            counts[g] = self.counts[g]
        counts[n_groups] = self.n
        for t in (self.total, dense, counts):
            distributed.all_sum(t)
        counts = counts.cpu().numpy()
        dense = dense.cpu().numpy()
        self.n = int(counts[n_groups])
        self.sums = {g: dense[g] for g in range(n_groups) if counts[g] > 0}
        self.counts = {g: int(counts[g]) for g in self.sums}

    def normalize_groups(self) -> None:
        """Scale each group to total mass = its sample count (a mean map of unit total), then re-add the total."""
        for g, s in self.sums.items():
            mass = float(s.sum())
            if not mass > 0:
                raise ErfError(f"group {g} (a weight draw) has a map with total {mass:g}; it cannot be normalised: "
                               "drop normalize_draws or use a non-negative signal (abs, square)")
            self.sums[g] = s * (self.counts[g] / mass)
        keys = sorted(self.sums)
        self.total = torch.from_numpy(np.sum([self.sums[g] for g in keys], axis=0)).to(self.total.device)

    # ------------------------------------------------------------------ saving

    def state(self) -> dict[str, np.ndarray]:
        keys = sorted(self.sums)
        return {"total": self.total.cpu().numpy(), "group_ids": np.array(keys, dtype=np.int64),
                "group_counts": np.array([self.counts[g] for g in keys], dtype=np.int64),
                "group_sums": np.stack([self.sums[g] for g in keys]) if keys
                else np.zeros((0, *self.total.shape))}

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        self.total = torch.from_numpy(arrays["total"]).to(self.total.device)
        self.sums = {int(g): s for g, s in zip(arrays["group_ids"], arrays["group_sums"])}
        self.counts = {int(g): int(c) for g, c in zip(arrays["group_ids"], arrays["group_counts"])}
        self.gs, self.n = int(meta["group_size"]), int(meta["n"])


class StateFile:
    """A saved accumulator with its loop position, for resuming a killed measurement.

    ``path`` gets ``.rank{r}of{w}`` under ``torchrun``: each rank saves its own share. A file
    whose fingerprint (settings, model checksum, world size) differs from this run's is ignored.
    Saves happen after a batch once ``every`` seconds have passed since the last one; each is
    written to a temporary file and renamed, so a kill leaves the previous save intact.
    """

    def __init__(self, path, fingerprint: dict, every: float):
        path = Path(path)
        if distributed.active():
            path = path.with_name(f"{path.name}.rank{distributed.rank()}of{distributed.world_size()}")
        self.path, self.every = path, float(every)
        self.fingerprint = json.dumps(to_json(fingerprint), sort_keys=True)
        self._last = None

    def load(self) -> tuple[dict, dict] | None:
        """(arrays, meta) of a matching save, else None."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except (OSError, KeyError, ValueError):
            return None
        if meta.get("fingerprint") != self.fingerprint:
            return None
        return arrays, meta

    def due(self, now: float) -> bool:
        if self._last is None:
            self._last = now
        return now - self._last >= self.every

    def save(self, acc: Accumulator, position: dict, now: float) -> None:
        meta = {"fingerprint": self.fingerprint, "group_size": acc.gs, "n": acc.n, **position}
        arrays = {**acc.state(), "meta": np.array(json.dumps(to_json(meta)))}
        atomic_write(self.path, lambda f: save_npz(f, arrays))
        self._last = now
