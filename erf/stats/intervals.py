"""Uncertainty from per-group statistics: bootstrap intervals of metrics, the standard-error
map and the jackknife relative error of sigma.

``group_sums`` (G, *spatial) is the sum of the per-sample maps of each group and
``group_counts`` (G,) the number of samples in it; the mean map is
``group_sums.sum(0) / group_counts.sum()``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as scipy_stats

from erf.errors import ErfError
from erf.stats.metrics import default_metrics, scalar_metrics
from erf.stats.moments import axis_names, center_unit, moments, trf_sizes
from erf.stats.presets import apply_post

__all__ = ["N_BOOT", "default_interval_metrics", "interval_metrics", "bootstrap_weights", "metric_replicates",
           "map_metrics",
           "percentile_interval", "metric_intervals", "standard_error_map", "relative_se_of_sigma"]

#: Bootstrap replicates by default (enough that a 95 % interval's ends are not the extreme replicates).
N_BOOT = 2000
_CHUNK = 64  # replicate maps formed at once (64 x a 224 x 224 map = 26 MB)
_METHODS = ("expanded", "percentile", "bca")


def _check_groups(group_sums: ArrayLike, group_counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The groups that have samples: (sums, counts) as float64, after checking them."""
    s = np.asarray(group_sums, dtype=np.float64)
    n = np.asarray(group_counts, dtype=np.float64).ravel()
    if s.ndim < 2 or s.shape[0] != n.size:
        raise ErfError(f"group_sums must be (G, *map_shape) with G = len(group_counts); got shapes "
                       f"{s.shape} and {n.shape}")
    if not np.all(np.isfinite(s)) or not np.all(np.isfinite(n)):
        raise ErfError("group_sums / group_counts contain NaN or inf")
    if np.any(n < 0) or not n.sum() > 0:
        raise ErfError(f"group_counts must be non-negative with a positive total; got {n.tolist()}")
    empty = n == 0
    if np.any(s[empty] != 0):
        raise ErfError("a group with count 0 has non-zero sums")
    return s[~empty], n[~empty]


def default_interval_metrics(ndim: int = 2, trf: Any = None) -> tuple[str, ...]:
    """Metrics bootstrapped by ``metric_intervals`` without ``metrics``: sigma, ERF size, (ERF/TRF), mass radii.

    Args:
        ndim: the map's number of axes.
        trf: the TRF size, or None; with one the ERF/TRF ratios are included.

    Returns:
        The metric names.
    """
    ax = axis_names(ndim)
    names = [f"sigma_{s}" for s in ax] + [f"erf_size_{s}" for s in ax]
    if trf is not None:
        names += [f"erf_trf_ratio_{s}" for s in ax]
    return tuple(names + ["mass_radius_0.5", "mass_radius_0.9"])


def interval_metrics(ndim: int = 2, trf: Any = None) -> tuple[str, ...]:
    """The metrics ``ERFResult.intervals`` bootstraps: the default scalar metrics but the threshold areas.

    Of ``default_metrics``: total, peak, centre, com_offset, sigma, ERF size, kurtosis, ERF/TRF
    (batched, fast) and the mass radii (one sort per replicate). Left out: the threshold areas
    (``area_above*``, ``hcar*``: pixel counts above a level, whose replicates take few values;
    bootstrap them by name with ``metric_intervals`` when needed) and the Gaussian-fit metrics
    (a fit per replicate; R^2 is a fit diagnostic, not an ERF property).

    Args:
        ndim: the map's number of axes.
        trf: the TRF size, or None.

    Returns:
        The metric names.
    """
    return tuple(k for k in default_metrics(ndim, trf) if not k.startswith(("area_above", "hcar")))


def bootstrap_weights(n_groups: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """The resampling plan of a bootstrap over groups: ``(n_boot, n_groups)`` multiplicities.

    Each row draws ``n_groups`` groups with replacement. The plan depends on (``n_groups``,
    ``n_boot``, ``seed``) only, so two measurements resampled with one plan are paired: the same
    networks, or the same input groups, in every replicate (``erf.stats.paired_ratio_interval``).

    Args:
        n_groups: groups to resample; ``n_boot``: replicates; ``seed``: seed of the draws.

    Returns:
        Integer multiplicities, each row summing to ``n_groups``.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_groups, (int(n_boot), int(n_groups)))
    out = np.zeros((int(n_boot), int(n_groups)), dtype=np.int64)
    np.add.at(out, (np.repeat(np.arange(int(n_boot)), int(n_groups)), idx.ravel()), 1)
    return out


def metric_replicates(group_sums: ArrayLike, group_counts: ArrayLike, names: Sequence[str],
                      weights: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = 0, *, trf: Any = None,
                      post: str | None = None, center: Sequence[float] | None = None,
                      funcs: Mapping[str, Callable[[np.ndarray], float]] | None = None) -> np.ndarray:
    """Bootstrap replicates of metrics: ``(B, len(names))`` values, NaN where a replicate has none.

    Replicate b's map is ``sum_g w_bg S_g / sum_g w_bg n_g`` (then ``post``). The moment metrics
    (total, peak, centre, com_offset, sigma, ERF size, ERF/TRF, kurtosis) of all replicates are
    computed at once, the others map by map.

    Args:
        group_sums: (G, *shape) group sums; ``group_counts``: (G,) samples per group.
        names: metric names (``scalar_metrics``) or the keys of ``funcs``.
        weights: a ``bootstrap_weights`` plan (default: drawn from ``n_boot`` and ``seed``).
        trf: the TRF size; ``post``: a name of ``POSTS``; ``center``: reference of ``com_offset_*``.
        funcs: ``{name: callable(map) -> float}`` instead of named metrics.

    Returns:
        The replicate values.

    Raises:
        ErfError: invalid groups or a plan of the wrong width.
    """
    s, n = _check_groups(group_sums, group_counts)
    G, shape = len(n), s.shape[1:]
    w = bootstrap_weights(G, n_boot, seed) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != G:
        raise ErfError(f"the bootstrap plan must be (B, {G}) for {G} groups; got shape {w.shape}")
    names = list(names)
    flat = s.reshape(G, -1)
    vals = np.full((len(w), len(names)), np.nan)
    for lo in range(0, len(w), _CHUNK):
        wb = np.asarray(w[lo:lo + _CHUNK], dtype=np.float64)
        den = wb @ n
        maps = (wb @ flat) / np.where(den > 0, den, 1)[:, None]
        maps[den <= 0] = np.nan
        vals[lo:lo + len(wb)] = map_metrics(maps.reshape(-1, *shape), names, trf=trf, post=post, center=center,
                                            funcs=funcs)
    return vals


def map_metrics(maps: ArrayLike, names: Sequence[str], *, trf: Any = None, post: str | None = None,
                center: Sequence[float] | None = None,
                funcs: Mapping[str, Callable[[np.ndarray], float]] | None = None) -> np.ndarray:
    """Metrics of a stack of maps ``(B, *shape)``: ``(B, len(names))``, NaN where a map has none.

    The moment metrics (total, peak, centre, com_offset, sigma, ERF size, ERF/TRF, kurtosis) and the
    mass radii of all maps are computed at once (vectorised); the others map by map with
    ``scalar_metrics`` (or ``funcs``). ``post`` is applied to each map first.

    Args:
        maps: the maps, the first axis stacking them.
        names: metric names (``scalar_metrics``) or the keys of ``funcs``.
        trf, post, center: as for ``scalar_metrics`` / ``metric_intervals``.
        funcs: ``{name: callable(map) -> float}`` instead of named metrics.

    Returns:
        The values.
    """
    maps = np.asarray(maps, dtype=np.float64)
    shape = maps.shape[1:]
    names = list(names)
    vals = np.full((len(maps), len(names)), np.nan)
    fast = {} if funcs is not None or post is not None else _moment_columns(names, len(shape))
    slow = [j for j in range(len(names)) if j not in fast]
    if fast and len(maps):
        _moment_values(maps, fast, vals, trf, center)
    for b in range(len(maps)) if slow else ():
        try:
            mm = apply_post(maps[b], post)
            if funcs is not None:
                got = [float(funcs[names[j]](mm)) for j in slow]
            else:
                got = list(scalar_metrics(mm, [names[j] for j in slow], trf, center=center).values())
            vals[b, slow] = got
        except ErfError:
            pass
    return vals


def percentile_interval(values: ArrayLike, level: float = 0.95, n_groups: int | None = None,
                        method: str = "expanded", estimate: float | None = None,
                        jackknife: ArrayLike | None = None) -> tuple[float, float] | None:
    """A bootstrap interval from replicate values (NaN ignored); None with fewer than 2 finite ones.

    ``percentile``: the plain percentiles. ``expanded`` (Hesterberg): the percentiles at
    ``Phi(+-sqrt(G/(G-1)) t_{G-1})`` instead of ``Phi(+-z)``, widened for few groups ``G``
    (``n_groups``). ``bca``: bias-corrected and accelerated (Efron): the bias from the share of
    replicates below ``estimate``, the acceleration from the delete-one-group ``jackknife`` values;
    it moves an interval that a skewed statistic (one heavy group) puts at the estimate's edge.

    Args:
        values: the replicates of one statistic.
        level: the coverage, in (0, 1).
        n_groups: top-level resampling units (``expanded``).
        method: ``expanded``, ``percentile`` or ``bca``.
        estimate: the statistic on the full data (``bca``).
        jackknife: the statistic with each group left out (``bca``).

    Returns:
        ``(lo, hi)`` or None.

    Raises:
        ErfError: a bad level or method, or ``bca`` without ``estimate`` and ``jackknife``.
    """
    if not 0 < level < 1:
        raise ErfError(f"level must be in (0, 1); got {level}")
    if method not in _METHODS:
        raise ErfError(f"method must be one of {', '.join(_METHODS)}; got {method!r}")
    col = np.asarray(values, dtype=np.float64).ravel()
    col = col[np.isfinite(col)]
    if col.size < 2:
        return None
    alpha = (1 - level) / 2
    lo_q, hi_q = alpha, 1 - alpha
    if method == "expanded" and n_groups is not None and n_groups >= 2:
        lo_q = float(scipy_stats.norm.cdf(-math.sqrt(n_groups / (n_groups - 1))
                                          * scipy_stats.t.ppf(1 - alpha, n_groups - 1)))
        hi_q = 1 - lo_q
    elif method == "bca":
        if estimate is None or jackknife is None:
            raise ErfError("method='bca' needs the full-data estimate and the jackknife values")
        jk = np.asarray(jackknife, dtype=np.float64)
        jk = jk[np.isfinite(jk)]
        below = (np.sum(col < estimate) + 0.5 * np.sum(col == estimate)) / col.size
        z0 = float(scipy_stats.norm.ppf(min(max(below, 1.0 / (2 * col.size)), 1 - 1.0 / (2 * col.size))))
        d = jk.mean() - jk if jk.size else np.zeros(1)
        den = 6.0 * float((d ** 2).sum()) ** 1.5
        acc = float((d ** 3).sum()) / den if den > 0 else 0.0
        qs = []
        for z in (scipy_stats.norm.ppf(alpha), scipy_stats.norm.ppf(1 - alpha)):
            qs.append(float(scipy_stats.norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))))
        lo_q, hi_q = qs
    return float(np.quantile(col, lo_q)), float(np.quantile(col, hi_q))


def metric_intervals(group_sums: ArrayLike, group_counts: ArrayLike,
                     metrics: Sequence[str] | Mapping[str, Callable[[np.ndarray], float]] | None = None,
                     level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0, *, trf: Any = None,
                     post: str | None = None, method: str = "expanded",
                     center: Sequence[float] | None = None) -> dict[str, tuple[float, float] | None]:
    """Bootstrap intervals over groups (``N_BOOT`` = 2000 replicates by default).

    Each replicate resamples G groups with replacement, forms the mean map
    (sum of their sums / sum of their counts), applies ``post`` and recomputes the
    metrics (``metric_replicates``).  ``metrics``: names understood by ``scalar_metrics`` or a
    dict ``{name: callable(map) -> float}``; default ``default_interval_metrics``.
    ``method`` (``percentile_interval``): ``'expanded'`` (default, Hesterberg's expanded
    percentile interval, widened for small G; plain percentiles undercover there, ~85 % instead
    of 95 % with G = 8), ``'percentile'`` or ``'bca'`` (bias-corrected and accelerated, with a
    delete-one-group jackknife). With few groups (6 networks) any bootstrap interval is rough:
    it cannot be wider than the spread of the groups.

    Args:
        group_sums: (G, *map_shape) sums of the per-sample maps of each group.
        group_counts: (G,) samples per group.
        metrics: metric names or ``{name: callable}`` (see above).
        level: the interval's coverage, in (0, 1).
        n_boot: bootstrap replicates.
        seed: seed of the resampling.
        trf: the TRF size, for ``erf_trf_ratio_*``.
        post: a name of ``POSTS`` applied to each replicate's mean map.
        method: ``'expanded'``, ``'percentile'`` or ``'bca'``.
        center: the reference point of ``com_offset_*`` (the unit's TRF centre).

    Returns:
        ``{name: (lo, hi)}``; ``None`` for a metric with fewer than 2 finite replicates, and
        for every metric when fewer than 2 groups have samples.

    Raises:
        ErfError: invalid groups, level or method, or an unknown metric name.
    """
    s, n = _check_groups(group_sums, group_counts)
    if not 0 < level < 1:
        raise ErfError(f"level must be in (0, 1); got {level}")
    if method not in _METHODS:
        raise ErfError(f"method must be one of {', '.join(_METHODS)}; got {method!r}")
    shape = s.shape[1:]
    if metrics is None:
        metrics = default_interval_metrics(len(shape), trf)
    funcs = dict(metrics) if isinstance(metrics, dict) else None
    names = list(metrics)
    if funcs is None:  # an unknown name fails here, before any replicate
        scalar_metrics(np.ones(shape), [k for k in names if not k.startswith("erf_trf_ratio")], None)
    G = len(n)
    if G < 2:
        return {k: None for k in names}
    vals = metric_replicates(s, n, names, None, n_boot, seed, trf=trf, post=post, center=center, funcs=funcs)
    est = jack = [None] * len(names)
    if method == "bca":
        est = metric_replicates(s, n, names, np.ones((1, G)), trf=trf, post=post, center=center, funcs=funcs)[0]
        jack = metric_replicates(s, n, names, 1.0 - np.eye(G), trf=trf, post=post, center=center, funcs=funcs).T
    return {k: percentile_interval(vals[:, j], level, G, method, est[j], jack[j]) for j, k in enumerate(names)}


_MOMENTS = ("total", "peak", "center", "com_offset", "sigma", "erf_size", "erf_trf_ratio", "kurtosis")


def _moment_columns(names: list[str], ndim: int) -> dict[int, tuple[str, int | None]]:
    """Column -> (family, axis) of the names the batched moment path computes."""
    ax = axis_names(ndim)
    out: dict[int, tuple[str, int | None]] = {}
    for j, name in enumerate(names):
        if name in ("total", "peak"):
            out[j] = (name, None)
            continue
        if name.startswith("mass_radius_"):
            try:
                f = float(name[len("mass_radius_"):])
            except ValueError:
                continue
            if 0 < f <= 1:
                out[j] = ("mass_radius", f)
            continue
        for fam in _MOMENTS[2:]:
            if name.startswith(fam + "_") and name[len(fam) + 1:] in ax:
                out[j] = (fam, ax.index(name[len(fam) + 1:]))
    return out


_RADIUS_BIN = 0.5  # px: the distance bins in which mass_radius locates the crossing before sorting


def _radii(r: np.ndarray, flat: np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    """``stats.mass_radius`` at each fraction for each row (pixel distances ``r``, masses ``flat``), exactly.

    Instead of sorting every pixel of every map, the mass is binned by distance (0.5 px bins), the
    bin where the cumulative mass reaches each fraction of the total is found, and only that bin's
    pixels are sorted: the same interpolation between successive pixel distances as ``mass_radius``
    (the predecessor of a bin's first pixel is the farthest pixel of the nearest non-empty bin
    below), without a full sort of every replicate map.
    """
    B, P = r.shape
    bins = np.floor(r / _RADIUS_BIN).astype(np.int64)
    nb = int(bins.max()) + 1 if bins.size else 1
    rows = np.arange(B)
    flat_bins = (bins + rows[:, None] * nb).ravel()
    cum = np.cumsum(np.bincount(flat_bins, weights=flat.ravel(), minlength=B * nb).reshape(B, nb), 1)
    count = np.bincount(flat_bins, minlength=B * nb).reshape(B, nb)
    last = np.maximum.accumulate(np.where(count > 0, np.arange(nb)[None, :], -1), axis=1)  # last non-empty bin <= i
    out = []
    for f in fractions:
        target = f * cum[:, -1]
        k = np.minimum((cum < target[:, None]).sum(1), nb - 1)  # the bin where the cumulative mass reaches f
        base = np.where(k > 0, cum[rows, np.maximum(k - 1, 0)], 0.0)  # mass of the bins below
        kp = np.where(k > 0, last[rows, np.maximum(k - 1, 0)], -1)  # the nearest non-empty bin below
        pr, pc = np.nonzero(bins == kp[:, None])
        r_prev = np.zeros(B)
        np.maximum.at(r_prev, pr, r[pr, pc])
        sr, sc = np.nonzero(bins == k[:, None])
        rs, ms = r[sr, sc], flat[sr, sc]
        order = np.lexsort((rs, sr))
        sr, rs, ms = sr[order], rs[order], ms[order]
        start = np.searchsorted(sr, rows)  # each row's first pixel of its bin
        end = np.searchsorted(sr, rows, side="right")
        cm = np.cumsum(ms)
        before = np.where(start > 0, cm[np.maximum(start - 1, 0)] if cm.size else 0.0, 0.0)
        cum_in = base[sr] + cm - before[sr]
        reached = cum_in >= target[sr]
        first = np.full(B, -1)
        hit_rows, hit_at = np.unique(sr[reached], return_index=True)
        first[hit_rows] = np.flatnonzero(reached)[hit_at]
        first = np.where((first < 0) & (end > start), end - 1, first)  # rounding: the bin's last pixel
        has = first >= 0
        j = np.where(has, first, 0)
        prev_in = has & (j > start)
        pick = (lambda a, i: a[i] if a.size else np.zeros(B))
        c1, r1 = pick(cum_in, j), pick(rs, j)
        c0 = np.where(prev_in, pick(cum_in, np.maximum(j - 1, 0)), base)
        r0 = np.where(prev_in, pick(rs, np.maximum(j - 1, 0)), r_prev)
        frac = np.where(c1 <= c0, 0.0, (target - c0) / np.where(c1 > c0, c1 - c0, 1.0))
        out.append(np.where(has, r0 + frac * (r1 - r0), np.nan))
    return out


def _moment_values(maps: np.ndarray, cols: dict[int, tuple[str, int | None]], out: np.ndarray, trf: Any,
                   center: Sequence[float] | None) -> None:
    """Fill ``out[:, j]`` for the moment metrics of a batch of maps (NaN where ``check_map`` would refuse)."""
    B, ndim = maps.shape[0], maps.ndim - 1
    flat = maps.reshape(B, -1)
    ok = np.all(np.isfinite(flat), 1) & ~np.any(flat < 0, 1) & (flat.sum(1) > 0)
    total = flat.sum(1)
    ref = center_unit(maps.shape[1:]) if center is None else tuple(float(c) for c in center)
    t = None
    per_axis: dict = {}
    radii = [j for j, (fam, _) in cols.items() if fam == "mass_radius"]
    if radii:
        grids = np.indices(maps.shape[1:], dtype=np.float64).reshape(ndim, -1)
        wn = flat / np.where(total > 0, total, 1)[:, None]
        com = wn @ grids.T
        r = np.sqrt(sum((grids[a][None, :] - com[:, a:a + 1]) ** 2 for a in range(ndim)))
        values = _radii(r, np.where(ok[:, None], flat, 0.0), [cols[j][1] for j in radii])
        for j, v in zip(radii, values):
            out[:, j] = np.where(ok, v, np.nan)
    for j, (fam, i) in cols.items():
        if fam == "mass_radius":
            continue
        if i is not None and i not in per_axis:
            marg = maps.sum(axis=tuple(a + 1 for a in range(ndim) if a != i))
            x = np.arange(marg.shape[1], dtype=np.float64)
            c0 = (marg.shape[1] - 1) / 2.0  # shifted coordinates keep the raw moments small
            wn = marg / np.where(total > 0, total, 1)[:, None]
            m1 = wn @ (x - c0)
            d = (x - c0)[None, :] - m1[:, None]
            var = np.einsum("bk,bk->b", wn, d ** 2)
            m4 = np.einsum("bk,bk->b", wn, d ** 4)
            per_axis[i] = (m1 + c0, np.sqrt(np.clip(var, 0, None)), m4 / np.where(var > 0, var, np.nan) ** 2 - 3.0)
        if fam == "total":
            v = total
        elif fam == "peak":
            v = flat.max(1)
        else:
            mean, sigma, kurt = per_axis[i]
            if fam == "center":
                v = mean
            elif fam == "com_offset":
                v = mean - ref[i]
            elif fam == "sigma":
                v = sigma
            elif fam == "erf_size":
                v = 2.0 * sigma
            elif fam == "kurtosis":
                v = kurt
            else:
                if trf is None:
                    raise ErfError(f"metric {'erf_trf_ratio'!r} needs the TRF size (trf=...)")
                t = t or trf_sizes(trf, ndim)
                v = 2.0 * sigma / t[i]
        out[:, j] = np.where(ok, v, np.nan)


def standard_error_map(group_sums: ArrayLike, group_counts: ArrayLike) -> np.ndarray:
    """Per-pixel standard error of the mean map, from the scatter between groups.

    With group means ``x_g = S_g / n_g``, overall mean ``mu = sum S_g / N`` and
    ``N = sum n_g``, the per-sample variance is estimated by the weighted
    between-group estimator ``s^2 = sum_g n_g (x_g - mu)^2 / (G - 1)`` (unbiased when
    samples are i.i.d., since Var x_g = sigma^2 / n_g), and ``SE = sqrt(s^2 / N)``.
    With all ``n_g = 1`` this is the usual ``std(ddof=1) / sqrt(G)``.

    Args:
        group_sums: (G, *map_shape) sums of the per-sample maps of each group.
        group_counts: (G,) samples per group.

    Returns:
        The standard error per pixel, shape ``map_shape``.

    Raises:
        ErfError: invalid groups, or fewer than 2 groups with samples.
    """
    s, n = _check_groups(group_sums, group_counts)
    G = len(n)
    if G < 2:
        raise ErfError(f"the standard error needs at least 2 groups with samples; got {G}")
    N = n.sum()
    mu = s.sum(0) / N
    x = s / n.reshape((-1,) + (1,) * (s.ndim - 1))
    var = np.tensordot(n, (x - mu) ** 2, axes=1) / (G - 1)
    return np.sqrt(var / N)


def relative_se_of_sigma(group_sums: ArrayLike, group_counts: ArrayLike,
                         per_axis: bool = False) -> float | tuple[float, ...]:
    """Delete-one-group jackknife relative standard error of the moment sigma.

    ``SE_jack = sqrt((G-1)/G * sum_i (sigma_(-i) - mean)^2)``, divided by the sigma of
    the full mean map.  Returns the largest over axes (a float, for adaptive
    stopping) or the per-axis tuple; ``inf`` when G < 2.

    Args:
        group_sums: (G, *map_shape) sums of the per-sample maps of each group.
        group_counts: (G,) samples per group.
        per_axis: return one value per axis instead of the largest.

    Returns:
        The relative standard error (largest over axes, or per axis).

    Raises:
        ErfError: invalid groups.
    """
    s, n = _check_groups(group_sums, group_counts)
    ndim = s.ndim - 1
    G = len(n)
    if G < 2:
        return (math.inf,) * ndim if per_axis else math.inf
    total_s, total_n = s.sum(0), n.sum()
    full = np.asarray(moments(total_s / total_n).sigma)
    loo = []
    for g in range(G):
        if total_n - n[g] <= 0:
            continue
        try:
            loo.append(moments((total_s - s[g]) / (total_n - n[g])).sigma)
        except ErfError:
            continue
    loo = np.asarray(loo)
    k = len(loo)
    if k < 2:
        rel = np.full(ndim, math.inf)
    else:
        se = np.sqrt((k - 1) / k * ((loo - loo.mean(0)) ** 2).sum(0))
        rel = np.where(full > 0, se / np.where(full > 0, full, 1), math.inf)
    return tuple(rel.tolist()) if per_axis else float(rel.max())
