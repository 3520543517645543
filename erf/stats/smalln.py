"""Intervals and tests over few networks (n = 4 to 8): studentized jackknife, t, exact sign test.

With 5 networks a bootstrap over networks cannot be wider than the spread of the five values, and
its percentile interval undercovers: networks drawn from a known distribution (sigma log-normal with
a 15% spread, centres spread by 0.5 px; ``tests/test_stats.py``) give 0.82 for the plain percentile
interval of a pooled map's sigma and 0.90 for the expanded one, against a nominal 0.95. The
studentized delete-one-network jackknife on the log scale (``jackknife_interval``: the estimate is
the metric of the pooled map, its standard error from the n leave-one-network-out pooled maps, and
Student's t with n - 1 degrees of freedom) gives 0.95 there.

Every function here is vectorised over leading axes (the last axis holds the networks), so a
coverage simulation of thousands of experiments is one call.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as scipy_stats

from erf.errors import ErfError

__all__ = ["t_interval", "jackknife_se", "jackknife_interval", "welch_interval", "sign_test", "direction_count"]


def _level(level: float) -> float:
    if not 0 < level < 1:
        raise ErfError(f"level must be in (0, 1); got {level}")
    return float(level)


def t_interval(values: ArrayLike, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student's t interval of the mean over the last axis: ``mean -+ t_{n-1} s / sqrt(n)``.

    Args:
        values: ``(..., n)`` per-network values (n >= 2, finite).
        level: the coverage.

    Returns:
        ``(lo, hi)`` arrays of the leading shape (floats for 1-D input).

    Raises:
        ErfError: fewer than 2 values or a bad level.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[-1]
    if n < 2:
        raise ErfError(f"a t interval needs at least 2 values; got {n}")
    t = scipy_stats.t.ppf(0.5 + _level(level) / 2, n - 1)
    m = v.mean(-1)
    half = t * v.std(-1, ddof=1) / math.sqrt(n)
    return m - half, m + half


def jackknife_se(loo: ArrayLike) -> np.ndarray:
    """Delete-one jackknife standard error from the n leave-one-out values (last axis).

    ``SE = sqrt((n - 1) / n * sum_k (loo_k - mean(loo))^2)``; for a mean it is ``s / sqrt(n)``.
    """
    x = np.asarray(loo, dtype=np.float64)
    n = x.shape[-1]
    return np.sqrt((n - 1) / n * ((x - x.mean(-1, keepdims=True)) ** 2).sum(-1))


def jackknife_interval(estimate: ArrayLike, loo: ArrayLike, level: float = 0.95,
                       log: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Studentized jackknife interval: ``estimate -+ t_{n-1} SE_jack`` (on the log scale with ``log``).

    ``log=True`` is for positive statistics (sizes, ratios): the interval is ``exp(log est -+ t SE)``
    with SE from the logs of the leave-one-out values, so it stays positive and is symmetric for
    ratios (a ratio r and 1/r get mirrored intervals). NaN where a value is missing or not positive
    on the log scale.

    Args:
        estimate: the statistic on all n networks, shape ``(...)``.
        loo: the statistic with each network left out, shape ``(..., n)``, n >= 2.
        level: the coverage.
        log: work on the log scale.

    Returns:
        ``(lo, hi)`` arrays of the estimate's shape.

    Raises:
        ErfError: fewer than 2 leave-one-out values or a bad level.
    """
    est = np.asarray(estimate, dtype=np.float64)
    x = np.asarray(loo, dtype=np.float64)
    n = x.shape[-1]
    if n < 2:
        raise ErfError(f"a jackknife interval needs at least 2 networks; got {n}")
    t = scipy_stats.t.ppf(0.5 + _level(level) / 2, n - 1)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            le = np.where(est > 0, np.log(np.where(est > 0, est, 1.0)), np.nan)
            lx = np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)
        half = t * jackknife_se(lx)
        return np.exp(le - half), np.exp(le + half)
    half = t * jackknife_se(x)
    return est - half, est + half


def welch_interval(estimate: float, loo_a: ArrayLike, loo_b: ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """Interval of a ratio ``b / a`` of two independent arms from each arm's jackknife (log scale).

    ``SE^2 = SE_a^2 + SE_b^2`` of the logs, degrees of freedom by Welch-Satterthwaite.

    Args:
        estimate: the ratio of the pooled estimates.
        loo_a: arm a's leave-one-network-out values; ``loo_b``: arm b's.
        level: the coverage.

    Returns:
        ``(lo, hi)``; NaN where a value is not positive.
    """
    la, lb = (np.log(np.asarray(v, dtype=np.float64)) for v in (loo_a, loo_b))
    na, nb = la.size, lb.size
    if na < 2 or nb < 2 or not estimate > 0:
        return math.nan, math.nan
    va, vb = float(jackknife_se(la)) ** 2, float(jackknife_se(lb)) ** 2
    var = va + vb
    den = (va ** 2 / (na - 1) if va else 0.0) + (vb ** 2 / (nb - 1) if vb else 0.0)
    df = var ** 2 / den if den > 0 else float(min(na, nb) - 1)
    half = scipy_stats.t.ppf(0.5 + _level(level) / 2, df) * math.sqrt(var)
    return float(math.exp(math.log(estimate) - half)), float(math.exp(math.log(estimate) + half))


def sign_test(k: int, n: int) -> float:
    """Exact two-sided sign-test p of k of n networks on one side (ties left out beforehand).

    ``p = min(1, 2 P(X <= min(k, n - k)))`` with ``X ~ Binomial(n, 1/2)``: 5 of 5 gives 0.0625 (it
    cannot reach 0.05), 6 of 6 0.031, 8 of 8 0.0078, 7 of 8 0.070.

    Args:
        k: networks on one side; ``n``: networks (without ties).

    Returns:
        The p value (1.0 for n = 0).
    """
    k, n = int(k), int(n)
    if n <= 0:
        return 1.0
    if not 0 <= k <= n:
        raise ErfError(f"k must be in 0..n; got k={k}, n={n}")
    return float(min(1.0, 2.0 * scipy_stats.binom.cdf(min(k, n - k), n, 0.5)))


def direction_count(values: ArrayLike, reference: float = 1.0) -> dict:
    """How many per-network values lie on the side of ``reference`` that most of them take, and the sign test.

    Args:
        values: per-network values (e.g. each network's ratio after / before training).
        reference: the no-effect value (1 for ratios, 0 for differences).

    Returns:
        ``{"k", "n", "direction" ("up", "down" or "none"), "ties", "p"}``: k of n networks (ties
        left out of n) are ``direction`` of the reference, and the exact two-sided sign-test p.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    up, down = int(np.sum(v > reference)), int(np.sum(v < reference))
    n = up + down
    direction = "up" if up > down else "down" if down > up else "none"
    return {"k": max(up, down), "n": n, "direction": direction, "ties": int(v.size - n), "p": sign_test(max(up, down), n)}
