"""Power laws ``y = prefactor * x ** exponent`` fitted in log-log space (e.g. ERF size vs depth)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as scipy_stats

from erf.errors import ErfError
from erf.io import to_json

__all__ = ["PowerLawFit", "fit_power_law"]


@dataclass(frozen=True)
class PowerLawFit:
    """``y = prefactor * x ** exponent`` fitted in log-log space; CIs at ``level``."""

    exponent: float
    prefactor: float
    exponent_ci: tuple[float, float]
    prefactor_ci: tuple[float, float]
    r2: float
    n: int
    level: float
    weighted: bool

    def predict(self, x: ArrayLike) -> np.ndarray:
        """The fitted law at ``x``."""
        return self.prefactor * np.asarray(x, dtype=np.float64) ** self.exponent

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (NaN as ``None``)."""
        return to_json(asdict(self))


def fit_power_law(x: ArrayLike, y: ArrayLike, y_lo: ArrayLike | None = None, y_hi: ArrayLike | None = None,
                  level: float = 0.95) -> PowerLawFit:
    """Least-squares fit of ``log y = log a + b log x``.

    CIs come from the regression's standard errors (residual variance, n-2
    degrees of freedom) with Student-t quantiles; they are NaN with 2 points.
    Given ``y_lo``/``y_hi`` (an interval per point, e.g. from ``metric_intervals``) the
    fit is weighted by ``1 / w^2`` with ``w = log(y_hi / y_lo)`` (a relative width;
    the residual scale still sets the CI).  R^2 is in log space.

    Args:
        x: positive abscissae (at least two different values).
        y: positive values, one per ``x``.
        y_lo: lower interval bounds, one per point (weights the fit with ``y_hi``).
        y_hi: upper interval bounds, one per point.
        level: the confidence level of the CIs, in (0, 1).

    Returns:
        The ``PowerLawFit``.

    Raises:
        ErfError: lengths that differ or are < 2, non-positive or non-finite values, one x
            value only, a level outside (0, 1), or bad interval bounds.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size or x.size < 2:
        raise ErfError(f"fit_power_law needs x and y of the same length >= 2; got {x.size} and {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ErfError("fit_power_law needs finite, positive x and y (it fits in log-log space)")
    if np.ptp(x) == 0:
        raise ErfError("fit_power_law needs at least two different x values")
    if not 0 < level < 1:
        raise ErfError(f"level must be in (0, 1); got {level}")
    lx, ly = np.log(x), np.log(y)
    weighted = y_lo is not None and y_hi is not None
    if weighted:
        lo = np.asarray(y_lo, dtype=np.float64).ravel()
        hi = np.asarray(y_hi, dtype=np.float64).ravel()
        if lo.size != x.size or hi.size != x.size or np.any(lo <= 0) or np.any(hi < lo):
            raise ErfError("y_lo and y_hi must be positive, one per point, with y_lo <= y_hi")
        width = np.log(hi / lo)
        pos = width[width > 0]
        floor = pos.min() * 1e-3 if pos.size else 1.0
        wts = 1.0 / np.maximum(width, floor) ** 2
    else:
        wts = np.ones_like(lx)
    X = np.column_stack([np.ones_like(lx), lx])
    sw = np.sqrt(wts)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], ly * sw, rcond=None)
    resid = ly - X @ coef
    dof = x.size - 2
    ss_res = float(np.sum(wts * resid ** 2))
    mean_w = float(np.sum(wts * ly) / np.sum(wts))
    ss_tot = float(np.sum(wts * (ly - mean_w) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    if dof > 0:
        cov = ss_res / dof * np.linalg.inv((X * wts[:, None]).T @ X)
        tq = float(scipy_stats.t.ppf(0.5 + level / 2, dof))
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
        ci_a = (coef[0] - tq * se[0], coef[0] + tq * se[0])
        ci_b = (coef[1] - tq * se[1], coef[1] + tq * se[1])
    else:
        ci_a = ci_b = (math.nan, math.nan)
    return PowerLawFit(float(coef[1]), float(math.exp(coef[0])), (float(ci_b[0]), float(ci_b[1])),
                       (float(np.exp(ci_a[0])), float(np.exp(ci_a[1]))), float(r2), int(x.size),
                       float(level), bool(weighted))
