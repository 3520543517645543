"""Intervals for comparisons: paired ratios, networks as replicates (hierarchical bootstrap), power laws.

An interval over the probe inputs of one network says nothing about another network of the same
architecture: two seeds of one plain net give sigma_x 3.74 [3.71, 3.78] and 3.89 [3.86, 3.92].
Comparisons between architectures or training states are made over several networks per arm:

* ``hierarchical_replicates``: networks with replacement, then each drawn network's groups
  (its input groups) with replacement; a replicate's map is the mean of the drawn networks'
  maps (each to unit total with ``normalize``, so every network counts the same), and the
  metric is computed on it. Networks are the first level because they vary most.
* ``paired_ratio_interval``: the ratio ``metric(b) / metric(a)`` from one joint bootstrap of
  both arms. ``paired=True`` resamples the same indices in both arms (the same network before
  and after training, the same probe inputs): shared noise cancels in the ratio. ``paired=False``
  resamples the arms independently (independently seeded networks). Either way the interval
  comes from the replicate ratios, not from independent log-normal errors.
* ``power_law_interval``: a power law's exponent with a bootstrap interval over groups (or
  networks), from per-point replicates; the regression's t-interval on 2-3 degrees of freedom
  measures the curvature of the law, not sampling noise.

Every function takes ``(group_sums, group_counts)`` pairs as ``ERFResult.groups`` gives them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

from erf.errors import ErfError
from erf.stats.intervals import N_BOOT, bootstrap_weights, map_metrics, metric_replicates, percentile_interval
from erf.stats.metrics import scalar_metrics
from erf.stats.powerlaw import PowerLawFit, fit_power_law
from erf.stats.presets import apply_post

__all__ = ["Groups", "hierarchical_replicates", "hierarchical_interval", "paired_ratio_interval",
           "replicate_ratio_interval", "power_law_interval", "network_maps", "leave_one_out"]

Groups = tuple[ArrayLike, ArrayLike]  # (group_sums (G, *shape), group_counts (G,))
_CHUNK = 64  # replicate maps formed at once


def _net_maps(networks: Sequence[Groups]) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i, (s, n) in enumerate(networks):
        s, n = np.asarray(s, dtype=np.float64), np.asarray(n, dtype=np.float64).ravel()
        if s.ndim < 2 or s.shape[0] != n.size or not n.sum() > 0:
            raise ErfError(f"network {i}: groups must be (sums (G, *shape), counts (G,)) with samples")
        out.append((s.reshape(len(n), -1), n))
    if not out:
        raise ErfError("hierarchical bootstrap needs at least one network")
    shapes = {np.asarray(s).shape[1:] for s, _ in networks}
    if len(shapes) != 1:
        raise ErfError(f"every network's map must have one shape; got {sorted(shapes)}")
    return out


def hierarchical_replicates(networks: Sequence[Groups], metric: str | Sequence[str], n_boot: int = N_BOOT,
                            seed: int = 0, *,
                            normalize: bool = True, trf: Any = None, post: str | None = None,
                            center: Sequence[float] | None = None, plan: np.ndarray | None = None) -> np.ndarray:
    """Replicates of ``metric`` under the two-level bootstrap (networks, then groups within each).

    The draws depend only on ``seed``, the number of networks and their group counts, so two
    arms with the same layout bootstrapped with one seed are paired (``paired_ratio_interval``).

    Args:
        networks: one ``(group_sums, group_counts)`` per network (same map shape).
        metric: a ``scalar_metrics`` name, or a list of them (evaluated on the same replicate maps).
        n_boot: replicates; ``seed``: seed of the draws.
        normalize: each network's replicate map to unit total (of its absolute values) before averaging;
            the replicate map is the mean over the drawn networks either way.
        trf, post, center: as for ``scalar_metrics`` / ``metric_intervals``.
        plan: ``(n_boot, K)`` network multiplicities to use instead of drawing them (pairing by hand).

    Returns:
        ``(n_boot,)`` values for one name, ``(n_boot, len(metric))`` for a list (NaN where a replicate
        has no value). With one network only its groups are resampled.

    Raises:
        ErfError: invalid groups, maps of different shapes, an unknown metric.
    """
    nets = _net_maps(networks)
    shape = np.asarray(networks[0][0]).shape[1:]
    K = len(nets)
    rng = np.random.default_rng(seed)
    top = bootstrap_weights(K, n_boot, seed) if plan is None else np.asarray(plan)
    if K == 1:
        top = np.ones((int(n_boot), 1), dtype=np.int64)
    inner = [bootstrap_weights(len(n), n_boot, int(rng.integers(2 ** 31))) for _, n in nets]
    names = [metric] if isinstance(metric, str) else list(metric)
    out = np.full((int(n_boot), len(names)), np.nan)
    for lo in range(0, int(n_boot), _CHUNK):  # a chunk of replicate maps at once (vectorised)
        hi = min(lo + _CHUNK, int(n_boot))
        acc = np.zeros((hi - lo, int(np.prod(shape))))
        for k, (s, n) in enumerate(nets):
            tk = top[lo:hi, k].astype(np.float64)
            if not tk.any():
                continue
            w = inner[k][lo:hi].astype(np.float64)
            m = (w @ s) / np.maximum(w @ n, 1e-300)[:, None]
            if normalize:
                tot = np.abs(m).sum(1)
                m = m / np.where(tot > 0, tot, np.inf)[:, None]
            acc += tk[:, None] * m
        acc /= np.maximum(top[lo:hi].sum(1), 1)[:, None]
        out[lo:hi] = map_metrics(acc.reshape(-1, *shape), names, trf=trf, post=post, center=center)
    return out[:, 0] if isinstance(metric, str) else out


def _point(networks: Sequence[Groups], metric: str, normalize: bool, trf: Any, post: str | None,
           center: Sequence[float] | None) -> float:
    maps = []
    for s, n in _net_maps(networks):
        m = s.sum(0) / n.sum()
        tot = np.abs(m).sum()
        maps.append(m / tot if normalize and tot > 0 else m)
    shape = np.asarray(networks[0][0]).shape[1:]
    return float(scalar_metrics(apply_post(np.mean(maps, 0).reshape(shape), post), [metric], trf,
                                center=center)[metric])


def hierarchical_interval(networks: Sequence[Groups], metric: str, level: float = 0.95, n_boot: int = N_BOOT,
                          seed: int = 0, *, normalize: bool = True, trf: Any = None, post: str | None = None,
                          center: Sequence[float] | None = None) -> tuple[float, tuple[float, float] | None]:
    """``metric`` of the networks' mean map and its interval over networks (``hierarchical_replicates``).

    Args:
        networks: one ``(group_sums, group_counts)`` per network.
        metric: a ``scalar_metrics`` name; ``level``: the coverage.
        n_boot, seed, normalize, trf, post, center: see ``hierarchical_replicates``.

    Returns:
        ``(estimate, (lo, hi))``: the expanded percentile interval for the number of networks (or of
        groups, with one network); None with fewer than 2 finite replicates.

    Raises:
        ErfError: as ``hierarchical_replicates``.
    """
    est = _point(networks, metric, normalize, trf, post, center)
    reps = hierarchical_replicates(networks, metric, n_boot, seed, normalize=normalize, trf=trf, post=post,
                                   center=center)
    units = len(networks) if len(networks) > 1 else len(np.asarray(networks[0][1]).ravel())
    return est, percentile_interval(reps, level, units)


def paired_ratio_interval(a: Groups | Sequence[Groups], b: Groups | Sequence[Groups], metric: str,
                          level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0, *, paired: bool = True,
                          normalize: bool = True, trf_a: Any = None, trf_b: Any = None,
                          post: str | None = None) -> tuple[float, tuple[float, float] | None]:
    """``metric(b) / metric(a)`` with an interval from one joint bootstrap of both arms.

    Each arm is one ``(group_sums, group_counts)`` (the groups of one measurement) or a list of
    them (one per network: ``hierarchical_replicates``). ``paired=True`` needs the same layout in
    both arms and draws the same indices in both (the same networks and inputs, e.g. before and
    after training); ``paired=False`` draws the arms independently.

    Args:
        a, b: the two arms (the ratio is b over a).
        metric: a ``scalar_metrics`` name; ``level``: the coverage; ``n_boot``, ``seed``: the bootstrap.
        paired: resample both arms alike.
        normalize: with lists of networks, each network's map to unit total.
        trf_a, trf_b: each arm's TRF (for ``erf_trf_ratio_*``); ``post``: a name of ``POSTS``.

    Returns:
        ``(ratio, (lo, hi))``, the interval None with fewer than 2 finite replicate ratios.

    Raises:
        ErfError: invalid groups, or ``paired`` arms whose layouts differ.
    """
    arms = []
    for arm in (a, b):
        nets = [arm] if _is_groups(arm) else list(arm)
        arms.append(nets)
    layout = [[len(np.asarray(n).ravel()) for _, n in nets] for nets in arms]
    if paired and layout[0] != layout[1]:
        raise ErfError(f"paired arms need the same networks and groups; got layouts {layout[0]} and {layout[1]} "
                       "(pass paired=False for independent arms)")
    seeds = (seed, seed) if paired else (seed, seed + 1)
    reps, ests = [], []
    for nets, trf, sd in zip(arms, (trf_a, trf_b), seeds):
        if len(nets) == 1:  # one measurement: its groups are the resampled units
            s, n = nets[0]
            reps.append(metric_replicates(s, n, [metric], None, n_boot, sd, trf=trf, post=post)[:, 0])
            ests.append(float(scalar_metrics(apply_post(np.asarray(s).sum(0) / np.asarray(n).sum(), post),
                                             [metric], trf)[metric]))
        else:
            reps.append(hierarchical_replicates(nets, metric, n_boot, sd, normalize=normalize, trf=trf, post=post))
            ests.append(_point(nets, metric, normalize, trf, post, None))
    units = min(len(arms[0]) if len(arms[0]) > 1 else layout[0][0], len(arms[1]) if len(arms[1]) > 1 else layout[1][0])
    est = ests[1] / ests[0] if ests[0] else math.nan
    return est, replicate_ratio_interval(reps[1], reps[0], level, units)


def replicate_ratio_interval(a: ArrayLike, b: ArrayLike, level: float, units: int) -> tuple[float, float] | None:
    """The interval of ``a / b`` from a joint bootstrap, replicate by replicate.

    Replicates drawn with one plan (the same networks and inputs: ``hierarchical_replicates`` with one
    seed and layout) are paired and shared noise cancels in the ratio; independently drawn ones are
    not. No log-normal or independence assumption either way.

    Args:
        a: the numerator's replicates; ``b``: the denominator's (same length).
        level: the coverage, in (0, 1).
        units: the fewer top-level resampling units (networks, or groups of one network) of the two.

    Returns:
        The expanded percentile interval ``(lo, hi)``; None with fewer than 2 units or 2 finite ratios.

    Raises:
        ErfError: replicates of different lengths.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ErfError(f"ratio replicates must have one length; got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b) & (b != 0)
    if units < 2:
        return None
    return percentile_interval(a[ok] / b[ok], level, units)


def _is_groups(arm: Any) -> bool:
    return isinstance(arm, tuple) and len(arm) == 2 and np.asarray(arm[1]).ndim == 1 and np.asarray(arm[0]).ndim >= 2


def power_law_interval(x: ArrayLike, y: ArrayLike, replicates: ArrayLike, level: float = 0.95,
                       units: int | None = None) -> PowerLawFit:
    """A power law ``y = a x^b`` whose intervals come from bootstrap replicates of every point.

    Row r of ``replicates`` holds one bootstrap replicate of each point's value (e.g. column i from
    ``metric_replicates`` or ``hierarchical_replicates`` of point i; rows drawn with one plan when
    the points share networks or inputs). The law is refitted on every row; the exponent's and
    prefactor's intervals are the expanded percentiles of the refits (``units``: the resampled
    networks or groups per point).

    Args:
        x: the abscissae (e.g. depths); ``y``: the point estimates.
        replicates: ``(B, len(x))`` replicate values.
        level: the coverage; ``units``: top-level resampling units (None: plain percentiles).

    Returns:
        The ``PowerLawFit`` of ``y`` with bootstrap ``exponent_ci`` and ``prefactor_ci``.

    Raises:
        ErfError: as ``fit_power_law``, or replicates of the wrong shape.
    """
    fit = fit_power_law(x, y, level=level)
    reps = np.asarray(replicates, dtype=np.float64)
    xs = np.asarray(x, dtype=np.float64).ravel()
    if reps.ndim != 2 or reps.shape[1] != xs.size:
        raise ErfError(f"replicates must be (B, {xs.size}); got shape {reps.shape}")
    lx = np.log(xs)
    X = np.column_stack([np.ones_like(lx), lx])
    good = np.all(np.isfinite(reps) & (reps > 0), 1)
    coef = np.linalg.lstsq(X, np.log(reps[good]).T, rcond=None)[0] if good.any() else np.zeros((2, 0))
    method = "expanded" if units else "percentile"
    b_ci = percentile_interval(coef[1], level, units, method) or (math.nan, math.nan)
    a_ci = percentile_interval(np.exp(coef[0]), level, units, method) or (math.nan, math.nan)
    return PowerLawFit(fit.exponent, fit.prefactor, b_ci, a_ci, fit.r2, fit.n, fit.level, False)


def network_maps(networks: Sequence[Groups], normalize: bool = True) -> np.ndarray:
    """Each network's mean map ``(K, *shape)`` (to unit total of its absolute values with ``normalize``).

    Args:
        networks: one ``(group_sums, group_counts)`` per network.
        normalize: scale each map to unit total.

    Returns:
        The stacked maps.
    """
    nets = _net_maps(networks)
    shape = np.asarray(networks[0][0]).shape[1:]
    out = []
    for s, n in nets:
        m = s.sum(0) / n.sum()
        tot = np.abs(m).sum()
        out.append(m / tot if normalize and tot > 0 else m)
    return np.stack(out).reshape(len(out), *shape)


def leave_one_out(maps: ArrayLike, names: Sequence[str], *, counts: ArrayLike | None = None, trf: Any = None,
                  post: str | None = None, center: Sequence[float] | None = None) -> np.ndarray:
    """Metrics of the pooled map with each unit (network, or group) left out: ``(K, len(names))``.

    Without ``counts`` the pooled map is the plain mean of the K maps (networks, each already to
    unit total where they are normalised); with ``counts`` the maps are group sums and the pooled
    map is ``sum S / sum n`` (weight draws or input groups of one measurement). These are the
    jackknife values of ``erf.stats.jackknife_interval``.

    Args:
        maps: ``(K, *shape)`` network maps, or group sums with ``counts``.
        names: metric names (``scalar_metrics``).
        counts: ``(K,)`` samples per group, or None.
        trf, post, center: as for ``scalar_metrics``.

    Returns:
        The values (NaN where a pooled map has none); K >= 2 needed for any.
    """
    m = np.asarray(maps, dtype=np.float64)
    K, shape = m.shape[0], m.shape[1:]
    if K < 2:
        return np.full((K, len(list(names))), np.nan)
    flat = m.reshape(K, -1)
    w = 1.0 - np.eye(K)
    den = w @ (np.ones(K) if counts is None else np.asarray(counts, dtype=np.float64).ravel())
    pooled = (w @ flat) / np.where(den > 0, den, np.nan)[:, None]
    return map_metrics(pooled.reshape(K, *shape), list(names), trf=trf, post=post, center=center)
