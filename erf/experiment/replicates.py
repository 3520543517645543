"""Networks as the unit of replication: combined maps, hierarchical bootstrap, paired intervals.

A record holds the measurements of one or more independently seeded networks (``Networks``):
each network's input-sample groups (``ERFResult.groups``). ``replicate_metrics`` draws a
hierarchical bootstrap: networks with replacement, then the input groups within each drawn
network, and evaluates the metrics on each replicate's combined map. The draws depend only on
``seed`` and the numbers of networks and groups, so two records bootstrapped with the same seed
are resampled alike: the same network before and after training (same seed, same probe inputs)
gives a paired interval of a ratio (``ratio_interval``), and independently seeded arms get
independent draws. ``percentile_interval`` widens the percentiles for few top-level units
(Hesterberg's expanded percentile interval, as ``erf.stats.metric_intervals``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from erf import stats
from erf.errors import ErfError


@dataclass
class Networks:
    """The per-network measurements of one record: group sums and counts, and each network's map."""

    sums: list[np.ndarray]
    counts: list[np.ndarray]
    maps: list[np.ndarray]
    normalize: bool = False

    @property
    def count(self) -> int:
        """How many networks."""
        return len(self.maps)

    @property
    def units(self) -> int:
        """Top-level resampling units: networks, or the groups of the one network (weight draws or inputs)."""
        return self.count if self.count > 1 else len(self.counts[0])

    def combined(self, post: str | None = None) -> np.ndarray:
        """The mean of the networks' maps (each to unit total first with ``normalize``), then ``post``."""
        return combine(self.maps, self.normalize, post)

    def shares(self) -> list[float]:
        """Each network's fraction of the summed raw mass (all equal when they agree in scale)."""
        totals = np.array([float(np.abs(m).sum()) for m in self.maps])
        return (totals / totals.sum()).tolist() if totals.sum() > 0 else [1.0 / self.count] * self.count


def combine(maps: Sequence[np.ndarray], normalize: bool = False, post: str | None = None) -> np.ndarray:
    """Mean of per-network maps, each divided by its total first when ``normalize``; ``post`` applied.

    Args:
        maps: the networks' mean maps (same shape).
        normalize: give every network the same total (deep nets' scales differ by orders of magnitude).
        post: a name of ``erf.stats.POSTS`` applied to the mean, or None.

    Returns:
        The combined map.
    """
    arr = np.stack([np.asarray(m, dtype=np.float64) for m in maps])
    if normalize:
        tot = np.abs(arr).reshape(len(arr), -1).sum(1)
        arr = arr / np.where(tot > 0, tot, 1.0).reshape(-1, *[1] * (arr.ndim - 1))
    return stats.apply_post(arr.mean(0), post)


def replicate_metrics(nets: Networks, names: Sequence[str], n_boot: int, seed: int, trf=None,
                      post: str | None = None) -> np.ndarray:
    """Hierarchical bootstrap replicates of the metrics: networks, then input groups within each.

    With one network only its groups are resampled (weight draws or input groups of that network).

    Args:
        nets: the record's networks.
        names: metric names of ``erf.stats.scalar_metrics``.
        n_boot: replicates.
        seed: seed of the draws (equal seeds and shapes give equal draws: pairing).
        trf: the TRF size, for ``erf_trf_ratio_*``.
        post: a name of ``erf.stats.POSTS`` applied to each replicate's map.

    Returns:
        ``(n_boot, len(names))`` values; NaN where a replicate's metric is undefined.
    """
    rng = np.random.default_rng(seed)
    n = nets.count
    flat = [s.reshape(len(s), -1) for s in nets.sums]
    shape = nets.maps[0].shape
    out = np.full((int(n_boot), len(names)), np.nan)
    for b in range(int(n_boot)):
        picks = rng.integers(0, n, n) if n > 1 else np.zeros(1, dtype=int)
        maps = []
        for k in picks:
            g = len(nets.counts[k])
            w = np.bincount(rng.integers(0, g, g), minlength=g).astype(np.float64)
            den = float(w @ nets.counts[k])
            maps.append((w @ flat[k] / den).reshape(shape) if den > 0 else nets.maps[k])
        try:
            out[b] = list(evaluate(combine(maps, nets.normalize, post), names, trf).values())
        except ErfError:
            pass
    return out


def evaluate(m: np.ndarray, names: Sequence[str], trf=None) -> dict[str, float]:
    """``erf.stats.scalar_metrics`` of a map (``kurtosis_<axis>`` included), in the order of ``names``.

    Args:
        m: the map.
        names: metric names.
        trf: the TRF size, for ``erf_trf_ratio_*``.

    Returns:
        ``{name: value}``.

    Raises:
        ErfError: an invalid map or an unknown metric.
    """
    return stats.scalar_metrics(m, list(names), trf)


def percentile_interval(values: np.ndarray, level: float, units: int) -> tuple[float, float] | None:
    """Expanded percentile interval of bootstrap ``values`` for ``units`` top-level resampling units.

    Args:
        values: the replicates (NaN ignored).
        level: the coverage, in (0, 1).
        units: networks (or groups) resampled at the top level; fewer than 2 gives None.

    Returns:
        ``(lo, hi)``, or None with fewer than 2 units or 2 finite replicates.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if units < 2 or v.size < 2:
        return None
    alpha = (1 - level) / 2
    alpha = float(scipy_stats.norm.cdf(-math.sqrt(units / (units - 1)) * scipy_stats.t.ppf(1 - alpha, units - 1)))
    return float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))


def ratio_interval(a: np.ndarray, b: np.ndarray, level: float, units: int) -> tuple[float, float] | None:
    """Interval of a / b from the joint bootstrap (replicate by replicate: paired when drawn alike).

    Args:
        a: the numerator's replicates.
        b: the denominator's replicates (same length).
        level: the coverage.
        units: the fewer top-level units of the two.

    Returns:
        ``(lo, hi)`` or None.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b) & (b > 0)
    return percentile_interval(a[ok] / b[ok], level, units)


def exponent_replicates(xs: Sequence[float], reps: Sequence[np.ndarray]) -> np.ndarray:
    """Least-squares log-log slope of each bootstrap replicate across the points of a series.

    Args:
        xs: the x values (> 0), one per point.
        reps: each point's replicates of the metric (same length).

    Returns:
        The slope per replicate (NaN where a value is not positive).
    """
    lx = np.log(np.asarray(xs, float))
    y = np.stack([np.asarray(r, float) for r in reps], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ly = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), np.nan)
    xc = lx - lx.mean()
    slope = ((ly - ly.mean(1, keepdims=True)) * xc).sum(1) / (xc ** 2).sum()
    return slope


def uniform_reference(shape: Sequence[int], box, names: Sequence[str], trf=None) -> dict[str, float]:
    """The metrics of a uniform map over the visible part of the TRF box: the reference for a clipped TRF.

    Args:
        shape: the map's shape.
        box: the TRF box clipped to the image, ``((lo, hi), ...)`` inclusive, or None (the whole map).
        names: metric names.
        trf: the TRF size, for ``erf_trf_ratio_*``.

    Returns:
        ``{name: value}``.
    """
    m = np.zeros(tuple(shape))
    if box is None:
        m[...] = 1.0
    else:
        m[tuple(slice(int(lo), int(hi) + 1) for lo, hi in box)] = 1.0
    return evaluate(m, names, trf)
