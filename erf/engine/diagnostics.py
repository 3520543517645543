"""Heavy-tail diagnostics of a measurement, the robust ``normalize_samples`` option and ReLU sparsity.

A mean map is an average of per-sample maps whose total masses can differ by orders of
magnitude (deep nets at init: one input in a few hundred can give gradients 1000x the median).
Then the "average" is the map of one or two samples. ``diagnose`` says how much of the mass
the largest sample and the largest group (a weight draw, i.e. one network, when groups are
draws) carry and the effective sample size of the per-sample weights, and flags domination:

* a sample dominates when its share exceeds ``sample_limit(n) = max(min(0.5, 10/n), 5/n)``:
  ``SAMPLE_FACTOR`` (10) times its fair share ``1/n`` with 20 samples or more, half the map
  with 10 to 19, 5x its fair share below 10 (never with 5 or fewer: too few to tell). Light-
  tailed masses (a coefficient of variation below 1) put the largest of 1000 samples at about
  4x its fair share, so 10x means a heavy tail.
* a sample dominates its group (a network, when groups are draws) by the same rule within the
  group: with ``normalize_draws`` a network's exploding input is diluted by the other networks
  in the overall share, yet it is still that network's whole map.
* a group dominates when its share exceeds ``max(0.5, GROUP_FACTOR / G)``: a majority of the
  map, or 3x its fair share with fewer than 6 groups. Groups pool many samples, so sampling
  noise alone keeps their shares near ``1/G``.
* one group moves sigma when leaving it out changes sigma by more than ``INFLUENCE_LIMIT``
  (5 %) on an axis and by more than ``INFLUENCE_FACTOR`` (3) times the median group's change
  (with at least 4 groups): a network whose map has another shape (an off-centre hot spot),
  which mass shares cannot see once ``normalize_draws`` gives every network the same mass.

``SampleStats`` wraps the probe: it normalises each sample's map to unit total when asked
(``normalize_samples``: every input counts the same, so a few exploding inputs cannot paint the
map; the masses the accumulator records are then 1, and the raw ones are kept here) and
averages, per sample, the share of pixels inside the unit's clipped TRF whose map value is
exactly 0 (``zero_grad_fraction``: ReLU sparsity; zero for linear nets). All on the device,
no host read per batch.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
import torch

from erf import stats
from erf.errors import ErfError

__all__ = ["SampleStats", "diagnose", "sample_limit", "SAMPLE_FACTOR", "GROUP_FACTOR", "INFLUENCE_LIMIT", "INFLUENCE_FACTOR"]

SAMPLE_FACTOR = 10.0
GROUP_FACTOR = 3.0
INFLUENCE_LIMIT = 0.05
INFLUENCE_FACTOR = 3.0


class MapSource(Protocol):
    def maps(self, x: torch.Tensor) -> torch.Tensor: ...


class SampleStats:
    """A probe wrapper: per-sample normalisation (optional), raw masses and zero-gradient shares."""

    def __init__(self, probe: MapSource, mask: torch.Tensor | None, normalize: bool):
        """
        Args:
            probe: gives per-sample float64 maps ``(B, *shape)`` (``erf.engine.probe.Probe``).
            mask: boolean ``shape`` array of the pixels inside the unit's clipped TRF, or None (all).
            normalize: divide each sample's map by its total (samples of total 0 stay 0).
        """
        self.probe, self.mask, self.normalize = probe, mask, normalize
        # read once here, not per batch: the batch path must not wait for the device
        self.inside = None if mask is None else max(1, int(mask.sum()))
        self.raw: list[torch.Tensor] = []
        self.zero_sum: torch.Tensor | float = 0.0
        self.count = 0

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """The probe's maps of ``x``, each scaled to unit total with ``normalize``."""
        m = self.probe.maps(x)
        b = m.shape[0]
        flat = m.reshape(b, -1)
        zero = flat == 0
        if self.mask is not None:
            zero = zero & self.mask.reshape(1, -1)
            inside = self.inside
        else:
            inside = flat.shape[1]
        self.zero_sum = self.zero_sum + zero.sum(1).to(torch.float64).sum() / inside
        self.count += b
        if self.normalize:
            mass = flat.sum(1)
            self.raw.append(mass.detach())
            m = m / torch.where(mass > 0, mass, torch.ones_like(mass)).reshape((b,) + (1,) * (m.dim() - 1))
        return m

    def zero_fraction(self) -> float | None:
        """Mean over this process's samples of the share of zero pixels in the TRF (None before any)."""
        return None if not self.count else float(self.zero_sum) / self.count

    def raw_mass(self) -> np.ndarray:
        """The raw per-sample masses seen by this process (``normalize`` only; else empty)."""
        return torch.cat(self.raw).cpu().numpy() if self.raw else np.zeros(0)


def sample_limit(n: int) -> float:
    """The share above which one of ``n`` samples dominates: ``max(min(0.5, 10/n), 5/n)`` (never for n <= 5)."""
    return max(min(0.5, SAMPLE_FACTOR / n), SAMPLE_FACTOR / 2 / n)


def _shares(w: np.ndarray) -> tuple[float, float]:
    """(largest share, effective sample size) of non-negative weights."""
    total = float(w.sum())
    if not total > 0:
        return math.nan, math.nan
    return float(w.max() / total), float(total ** 2 / float((w ** 2).sum()))


def diagnose(sample_mass: np.ndarray, group_size: int, group_sums: np.ndarray, group_counts: np.ndarray,
             normalize_draws: bool, stats_of: SampleStats | None = None) -> tuple[dict[str, Any], list[str]]:
    """The heavy-tail diagnostics of one measurement, and the lines to warn with (see the module docstring).

    Args:
        sample_mass: per-sample total mass by global sample index (NaN where none was measured), as the
            accumulator recorded it (after ``normalize_samples``, before ``normalize_draws``).
        group_size: sample indices per group.
        group_sums, group_counts: the result's groups (after ``normalize_draws``), for the sigma influence.
        normalize_draws: each group was scaled to the same mass per sample before averaging.
        stats_of: the probe wrapper (raw masses under ``normalize_samples``, zero-gradient shares).

    Returns:
        ``(diagnostics, flagged)``: the dict of ``ERFResult.diagnostics`` and one line per flag.
    """
    mass = np.asarray(sample_mass, dtype=np.float64)
    idx = np.flatnonzero(np.isfinite(mass))
    w = np.clip(mass[idx], 0, None)
    groups = idx // max(1, int(group_size))
    if normalize_draws and w.size:
        ids, inv = np.unique(groups, return_inverse=True)
        gm = np.bincount(inv, weights=w)
        gc = np.bincount(inv).astype(np.float64)
        w = w * np.where(gm > 0, gc / np.where(gm > 0, gm, 1), 0.0)[inv]
    n = int(w.size)
    share, ess = _shares(w) if n else (math.nan, math.nan)
    gshare, n_groups, inner, inner_n, biggest = math.nan, 0, math.nan, 0, 0
    if n:
        ids, inv = np.unique(groups, return_inverse=True)
        gw = np.bincount(inv, weights=w)
        n_groups = len(ids)
        gshare = float(gw.max() / gw.sum()) if gw.sum() > 0 else math.nan
        within = w / np.where(gw > 0, gw, 1)[inv]  # each sample's share of its own group
        top = int(within.argmax())
        inner, inner_n = float(within[top]), int(np.sum(inv == inv[top]))
        biggest = int(np.bincount(inv).max())
    out: dict[str, Any] = {"samples_weighed": n, "max_sample_share": share, "ess": ess,
                           "ess_fraction": ess / n if n else math.nan, "groups": n_groups,
                           "max_group_share": gshare, "max_sample_share_in_group": inner, "max_group_influence": group_influence(group_sums, group_counts),
                           "zero_grad_fraction": None if stats_of is None else stats_of.zero_fraction()}
    flagged = []
    if n >= 2 and share > sample_limit(n):
        flagged.append(f"one input sample holds {share:.0%} of the map's mass (fair share {1 / n:.1%}; effective "
                       f"sample size {ess:.1f} of {n}): the mean map leans on few samples; measure more samples "
                       "or pass normalize_samples=True (each sample's map to unit total)")
    if n_groups >= 2 and inner_n >= 2 and inner > sample_limit(inner_n) and not (n >= 2 and share > sample_limit(n)):
        flagged.append(f"one input sample holds {inner:.0%} of its group's mass ({inner_n} samples in the group; a "
                       "weight draw when groups are draws): that network's map is mostly one input; pass "
                       "normalize_samples=True (each sample's map to unit total)")
    if n_groups >= 2 and biggest >= 2 and gshare > max(0.5, GROUP_FACTOR / n_groups):
        flagged.append(f"one group (a weight draw when groups are draws) holds {gshare:.0%} of the map's mass "
                       f"({n_groups} groups): with weight draws pass normalize_draws=True so every network counts "
                       "the same, else normalize_samples=True")
    infl = out["max_group_influence"]
    if infl is not None and infl["flagged"] and not flagged:  # not when a share flag already says why
        flagged.append(f"leaving out group {infl['group']} changes sigma by {infl['change']:.1%} "
                       f"({infl['ratio_to_median']:.1f}x the median group's change): one network (or group of "
                       "inputs) has a map of another shape; look at the per-group maps")
    if stats_of is not None and stats_of.normalize:
        raw = stats_of.raw_mass()
        rshare, ress = _shares(np.clip(raw, 0, None)) if raw.size else (math.nan, math.nan)
        out.update(raw_max_sample_share=rshare, raw_ess=ress)
    out["flags"] = list(flagged)
    return out, flagged


def group_influence(group_sums: np.ndarray, group_counts: np.ndarray) -> dict[str, Any] | None:
    """The group whose removal moves sigma most (delete-one-group), or None (fewer than 3 groups, no moments).

    Args:
        group_sums: (G, *shape) group sums; ``group_counts``: (G,) samples per group.

    Returns:
        ``{"group", "change" (largest relative change of sigma over axes), "ratio_to_median", "flagged"}``.
    """
    s = np.asarray(group_sums, dtype=np.float64)
    n = np.asarray(group_counts, dtype=np.float64)
    keep = n > 0
    s, n = s[keep], n[keep]
    if len(n) < 3:
        return None
    total, count = s.sum(0), n.sum()
    try:
        full = np.asarray(stats.moments(total / count).sigma)
        changes = []
        for g in range(len(n)):
            loo = np.asarray(stats.moments((total - s[g]) / (count - n[g])).sigma)
            changes.append(float(np.max(np.abs(loo - full) / np.where(full > 0, full, 1))))
    except ErfError:
        return None
    changes_a = np.asarray(changes)
    g = int(changes_a.argmax())
    med = float(np.median(changes_a))
    ratio = changes_a[g] / med if med > 0 else math.inf
    flagged = len(n) >= 4 and changes_a[g] > INFLUENCE_LIMIT and ratio > INFLUENCE_FACTOR
    return {"group": g, "change": float(changes_a[g]), "ratio_to_median": float(ratio), "flagged": bool(flagged)}
