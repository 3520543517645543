"""Float64 sums of per-sample ERF maps, by group of sample indices.

A group is a run of consecutive sample indices (``index // group_size``; index = draw x
samples per draw + sample). The group sums carry the uncertainty (``stats``); the running
total gives the mean. ``Accumulator.state``/``restore`` are what ``erf.engine.resume`` saves,
and ``Accumulator.sum_over`` adds the sums of ``torch.distributed`` ranks
(``erf.engine.ranks``), so the map does not depend on how many processes measured it.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import numpy as np
import torch

from erf import stats
from erf.errors import ErfError

__all__ = ["Accumulator", "MAX_GROUPS", "OutOfMemory", "final_group_size"]

MAX_GROUPS = 64  # host memory for group sums is at most 64 maps
OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # what a CUDA OOM raises


class MapSource(Protocol):
    def maps(self, x: torch.Tensor) -> torch.Tensor: ...


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

    def __init__(self, shape: tuple[int, ...], device: torch.device, group_size: int, merge: bool = False):
        self.total = torch.zeros(shape, dtype=torch.float64, device=device)
        self.gs, self.n, self.merge = group_size, 0, merge
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}

    def run(self, probe: MapSource, x: torch.Tensor, first: int, bs: int) -> int:
        """Measure ``x`` (sample indices first, first+1, ...); on CUDA OOM halve and retry.

        Args:
            probe: gives the per-sample float64 maps of a batch (``erf.engine.probe.Probe``).
            x: the batch; ``first``: its first sample index; ``bs``: the batch size so far.

        Returns:
            The batch size that fits (lower after an out-of-memory).

        Raises:
            ErfError: out of memory with a batch of one.
        """
        b = x.shape[0]
        if b > bs:  # an earlier OOM lowered the batch size
            head = bs
            bs = self.run(probe, x[:head], first, bs)
            return self.run(probe, x[head:], first + head, bs)
        try:
            m = probe.maps(x)
        except OutOfMemory:
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
        """(sums, counts) of the groups in index order."""
        keys = sorted(self.sums)
        return np.stack([self.sums[g] for g in keys]), np.array([self.counts[g] for g in keys], dtype=np.int64)

    def relative_se(self) -> float:
        """Jackknife relative SE of sigma over the groups (inf for a map without moments)."""
        try:
            return stats.relative_se_of_sigma(*self.groups())
        except ErfError:  # a signed map has no moments: never converges by this rule
            return math.inf

    def sum_over(self, n_groups: int, all_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the total, the count and groups ``0..n_groups-1`` with ``all_sum`` (in place, over ranks)."""
        dev = self.total.device
        shape = tuple(self.total.shape)
        dense = torch.zeros((n_groups, *shape), dtype=torch.float64, device=dev)
        counts = torch.zeros(n_groups + 1, dtype=torch.float64, device=dev)
        for g, s in self.sums.items():
            dense[g] = torch.from_numpy(s).to(dev)
            counts[g] = self.counts[g]
        counts[n_groups] = self.n
        for t in (self.total, dense, counts):
            all_sum(t)
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
        """The arrays a state file saves (total, group ids, counts, sums)."""
        keys = sorted(self.sums)
        return {"total": self.total.cpu().numpy(), "group_ids": np.array(keys, dtype=np.int64),
                "group_counts": np.array([self.counts[g] for g in keys], dtype=np.int64),
                "group_sums": np.stack([self.sums[g] for g in keys]) if keys
                else np.zeros((0, *self.total.shape))}

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Back to a saved ``state()`` (``meta`` holds the group size and the count)."""
        self.total = torch.from_numpy(arrays["total"]).to(self.total.device)
        self.sums = {int(g): s for g, s in zip(arrays["group_ids"], arrays["group_sums"])}
        self.counts = {int(g): int(c) for g, c in zip(arrays["group_ids"], arrays["group_counts"])}
        self.gs, self.n = int(meta["group_size"]), int(meta["n"])
