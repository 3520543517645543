"""Float64 sums of per-sample ERF maps, by group of sample indices.

A group is a run of consecutive sample indices (``index // group_size``; index = draw x
samples per draw + sample). The group sums carry the uncertainty (``stats``); the running
total gives the mean. ``Accumulator.state``/``restore`` are what ``erf.engine.resume`` saves,
and ``Accumulator.sum_over`` adds the sums of ``torch.distributed`` ranks
(``erf.engine.ranks``), so the map does not depend on how many processes measured it.

Nothing in ``add`` reads a value back to the host: the group sums, each sample's total mass
and the finite check stay on the device (a CUDA loop never waits for a batch); they are read
at a save or at the end (``groups``, ``sample_mass``, ``first_nonfinite``).
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
    """The running map, per-group sums and per-sample masses on the device (float64), counts on the host.

    ``merge=True`` (an open-ended, adaptive run) merges adjacent groups pairwise whenever
    there are more than ``MAX_GROUPS``; a run of known length fixes ``group_size`` up front
    (``final_group_size``) so every rank and every resumed run groups alike.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, group_size: int, merge: bool = False):
        """
        Args:
            shape: one map's shape; ``device``: where the sums live.
            group_size: sample indices per group.
            merge: merge adjacent groups pairwise beyond ``MAX_GROUPS`` (an open-ended run).
        """
        self.total = torch.zeros(shape, dtype=torch.float64, device=device)
        self.gs, self.n, self.merge = group_size, 0, merge
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}
        self._mass: list[tuple[int, torch.Tensor]] = []  # (first sample index, per-sample totals)
        self._bad_first = torch.full((), -1, dtype=torch.int64, device=device)  # the first non-finite batch
        self._bad_count = torch.zeros((), dtype=torch.int64, device=device)

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
        """Add per-sample maps ``m`` of sample indices ``first..``: contiguous slices, no atomics, no host read."""
        b = m.shape[0]
        self.total += m.sum(0)
        i = 0
        while i < b:
            g = (first + i) // self.gs
            j = min(b, (g + 1) * self.gs - first)
            s = m[i:j].sum(0)
            self.sums[g] = self.sums[g] + s if g in self.sums else s
            self.counts[g] = self.counts.get(g, 0) + (j - i)
            i = j
        mass = m.reshape(b, -1).sum(1)
        self._mass.append((first, mass))
        bad = ~torch.isfinite(mass).all() & (self._bad_first < 0)  # NaN/Inf anywhere reaches the sample's total
        self._bad_first = torch.where(bad, first, self._bad_first)  # python scalars: no host-to-device copy
        self._bad_count = torch.where(bad, b, self._bad_count)
        self.n += b
        while self.merge and len(self.sums) > MAX_GROUPS:
            self._merge()

    def first_nonfinite(self) -> tuple[int, int] | None:
        """``(first sample index, count)`` of the first batch whose maps held NaN/Inf, else None (a host read)."""
        first = int(self._bad_first)
        return None if first < 0 else (first, int(self._bad_count))

    def sample_mass(self) -> np.ndarray:
        """Each sample's total map mass (float64, the signal summed over the map), by global sample index.

        Index = draw x samples per draw + sample, as for the groups; NaN where no sample was measured
        (another rank's share before the reduction, or past an adaptive stop). Raw masses: not
        rescaled by ``normalize_groups``. One host read.
        """
        if not self._mass:
            return np.zeros(0)
        size = max(first + t.shape[0] for first, t in self._mass)
        out = np.full(size, np.nan)
        for first, t in self._mass:
            out[first:first + t.shape[0]] = t.cpu().numpy()
        return out

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
        sums = torch.stack([self.sums[g] for g in keys]).cpu().numpy()
        return sums, np.array([self.counts[g] for g in keys], dtype=np.int64)

    def relative_se(self) -> float:
        """Jackknife relative SE of sigma over the groups (inf for a map without moments)."""
        try:
            return stats.relative_se_of_sigma(*self.groups())
        except ErfError:  # a signed map has no moments: never converges by this rule
            return math.inf

    def sum_over(self, n_groups: int, all_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the total, the count, groups ``0..n_groups-1`` and the sample masses with ``all_sum`` (over ranks)."""
        dev = self.total.device
        shape = tuple(self.total.shape)
        dense = torch.zeros((n_groups, *shape), dtype=torch.float64, device=dev)
        counts = torch.zeros(n_groups + 1, dtype=torch.float64, device=dev)
        for g, s in self.sums.items():
            dense[g] = s
            counts[g] = self.counts[g]
        counts[n_groups] = self.n
        mass = torch.zeros((2, n_groups * self.gs), dtype=torch.float64, device=dev)  # masses, measured
        for first, t in self._mass:
            ok = ~torch.isnan(t)  # a restored save holds NaN where nothing was measured
            mass[0, first:first + t.shape[0]] = torch.where(ok, t, 0.0)
            mass[1, first:first + t.shape[0]] = ok.double()
        for t in (self.total, dense, counts, mass):
            all_sum(t)
        counts = counts.cpu().numpy()
        self.n = int(counts[n_groups])
        self.sums = {g: dense[g] for g in range(n_groups) if counts[g] > 0}
        self.counts = {g: int(counts[g]) for g in self.sums}
        self._mass = [(0, torch.where(mass[1] > 0, mass[0], torch.nan))]

    def normalize_groups(self) -> None:
        """Scale each group to total mass = its sample count (a mean map of unit total), then re-add the total."""
        sums = {g: s.cpu().numpy() for g, s in self.sums.items()}
        for g, s in sums.items():
            mass = float(s.sum())
            if not mass > 0:
                raise ErfError(f"group {g} (a weight draw) has a map with total {mass:g}; it cannot be normalised: "
                               "drop normalize_draws or use a non-negative signal (abs, square)")
            sums[g] = s * (self.counts[g] / mass)
        keys = sorted(sums)
        dev = self.total.device
        self.total = torch.from_numpy(np.sum([sums[g] for g in keys], axis=0)).to(dev)
        self.sums = {g: torch.from_numpy(s).to(dev) for g, s in sums.items()}

    # ------------------------------------------------------------------ saving

    def state(self) -> dict[str, np.ndarray]:
        """The arrays a state file saves (total, group ids, counts, sums, sample masses)."""
        keys = sorted(self.sums)
        return {"total": self.total.cpu().numpy(), "group_ids": np.array(keys, dtype=np.int64),
                "group_counts": np.array([self.counts[g] for g in keys], dtype=np.int64),
                "group_sums": self.groups()[0] if keys else np.zeros((0, *self.total.shape)),
                "sample_mass": self.sample_mass()}

    def restore(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Back to a saved ``state()`` (``meta`` holds the group size and the count)."""
        dev = self.total.device
        self.total = torch.from_numpy(arrays["total"]).to(dev)
        self.sums = {int(g): torch.from_numpy(s).to(dev) for g, s in zip(arrays["group_ids"], arrays["group_sums"])}
        mass = arrays.get("sample_mass", np.zeros(0))
        self._mass = [(0, torch.from_numpy(mass).to(dev))] if mass.size else []
        self.counts = {int(g): int(c) for g, c in zip(arrays["group_ids"], arrays["group_counts"])}
        self.gs, self.n = int(meta["group_size"]), int(meta["n"])
