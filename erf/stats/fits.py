"""Gaussian fits of ERF maps: a rotated 2-D Gaussian, 1-D profiles and marginals.

Fits start from the map's moments and use ``scipy.optimize.curve_fit``; they never raise
for a valid map: a failed fit comes back with ``ok=False`` and a ``reason``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from erf.io import to_json
from erf.stats.moments import check_map, moments

__all__ = ["GaussianFit", "Gaussian1DFit", "fit_gaussian", "fit_gaussian_1d", "fit_profiles"]


@dataclass(frozen=True)
class GaussianFit:
    """2-D Gaussian ``amplitude * exp(-(u^2/sx^2 + v^2/sy^2)/2) + offset``.

    ``u = cos(t) dx + sin(t) dy``, ``v = -sin(t) dx + cos(t) dy`` with ``dx = x - cx``,
    ``dy = y - cy``: ``sx`` is the width along direction ``(cos t, sin t)`` in (x, y)
    (rotation from the x axis towards +y, i.e. downwards in an image).  ``theta`` is
    canonical in (-pi/4, pi/4], so ``sx``/``sy`` are the widths of the principal axes
    nearest to x/y.  ``stderr`` holds the fit's standard errors.
    """

    ok: bool
    reason: str
    amplitude: float = math.nan
    center: tuple[float, float] = (math.nan, math.nan)
    sigma: tuple[float, float] = (math.nan, math.nan)
    theta: float = math.nan
    offset: float = math.nan
    r2: float = math.nan
    stderr: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (non-finite floats as ``None``)."""
        return to_json(asdict(self))

    def evaluate(self, shape: Sequence[int]) -> np.ndarray:
        """The model on a grid of ``shape`` (pixel coordinates)."""
        yy, xx = np.indices(shape, dtype=np.float64)
        return _gauss2d((yy.ravel(), xx.ravel()), self.amplitude, *self.center, *self.sigma,
                        self.theta, self.offset).reshape(shape)


@dataclass(frozen=True)
class Gaussian1DFit:
    """1-D Gaussian ``amplitude * exp(-(x - center)^2 / (2 sigma^2)) + offset``.

    ``name`` says which data were fitted (e.g. 'row', 'x_marginal'), ``axis`` the
    coordinate axis ('x' or 'y').
    """

    ok: bool
    reason: str
    name: str = ""
    axis: str = ""
    amplitude: float = math.nan
    center: float = math.nan
    sigma: float = math.nan
    offset: float = math.nan
    r2: float = math.nan

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (non-finite floats as ``None``)."""
        return to_json(asdict(self))

    def evaluate(self, x: ArrayLike) -> np.ndarray:
        """The model at coordinates ``x``."""
        return _gauss1d(np.asarray(x, dtype=np.float64), self.amplitude, self.center, self.sigma, self.offset)


def _gauss2d(yx, amp, cy, cx, sy, sx, theta, offset):
    y, x = yx
    dy, dx = y - cy, x - cx
    c, s = np.cos(theta), np.sin(theta)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return amp * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)) + offset


def _gauss1d(x, amp, c, s, offset):
    return amp * np.exp(-0.5 * ((x - c) / s) ** 2) + offset


def _canonical(sy, sx, theta):
    theta = (theta + math.pi / 2) % math.pi - math.pi / 2      # (-pi/2, pi/2]
    if theta > math.pi / 4:
        sy, sx, theta = sx, sy, theta - math.pi / 2
    elif theta <= -math.pi / 4:
        sy, sx, theta = sx, sy, theta + math.pi / 2
    return sy, sx, theta


def _r2(data, model) -> float:
    ss_tot = float(np.sum((data - data.mean()) ** 2))
    return 1.0 - float(np.sum((data - model) ** 2)) / ss_tot if ss_tot > 0 else math.nan


def fit_gaussian(m: ArrayLike, maxfev: int = 4000) -> GaussianFit:
    """Fit a rotated 2-D Gaussian with a non-negative offset by least squares, started from the moments.

    The fit's sigma is a fit parameter, not the ERF's sigma (the map's moments, ``moments``): for a
    flat-topped or heavy-tailed map the two differ (tanh at depth 4: fit 0.92 px, moments 2.01 px).

    Never raises for a valid map: a failed fit returns ``ok=False`` with ``reason``.

    Args:
        m: the 2-D map.
        maxfev: the most model evaluations of ``curve_fit``.

    Returns:
        The ``GaussianFit``.

    Raises:
        ErfError: an invalid map or one that is not 2-D (see ``check_map``).
    """
    a = check_map(m, ndims=(2,))
    base = a.min()
    if a.max() - base <= 0:
        return GaussianFit(False, "map is constant: no peak to fit")
    mo = moments(a - base)
    (cyy, cyx), (_, cxx) = mo.cov
    theta0 = 0.5 * math.atan2(2 * cyx, cxx - cyy)
    c, s = math.cos(theta0), math.sin(theta0)
    sx0 = math.sqrt(max(cxx * c * c + 2 * cyx * s * c + cyy * s * s, 0.25))
    sy0 = math.sqrt(max(cxx * s * s - 2 * cyx * s * c + cyy * c * c, 0.25))
    sy0, sx0, theta0 = _canonical(sy0, sx0, theta0)
    h, w = a.shape
    big = 10.0 * max(h, w)
    p0 = [a.max() - base, *mo.center, sy0, sx0, theta0, base]
    lo = [0.0, -h, -w, 1e-3, 1e-3, -math.pi, 0.0]  # a non-negative baseline: |grad| is never below 0
    hi = [np.inf, 2 * h, 2 * w, big, big, math.pi, np.inf]
    p0 = np.clip(p0, np.nextafter(lo, 1), np.nextafter(hi, -1))
    yy, xx = np.indices(a.shape, dtype=np.float64)
    coords = (yy.ravel(), xx.ravel())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, pcov = optimize.curve_fit(_gauss2d, coords, a.ravel(), p0=p0, bounds=(lo, hi), maxfev=maxfev)
    except (RuntimeError, ValueError, optimize.OptimizeWarning, FloatingPointError) as e:
        return GaussianFit(False, f"curve_fit failed: {e}")
    if not np.all(np.isfinite(popt)):
        return GaussianFit(False, "fit returned non-finite parameters")
    amp, cy, cx, sy, sx, theta, off = popt.tolist()
    r2 = _r2(a.ravel(), _gauss2d(coords, *popt))
    perr = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(7, np.nan)
    sy_c, sx_c, theta_c = _canonical(sy, sx, theta)
    swapped = sy_c != sy
    names = ["amplitude", "center_y", "center_x", "sigma_y", "sigma_x", "theta", "offset"]
    stderr = dict(zip(names, perr.tolist()))
    if swapped:
        stderr["sigma_y"], stderr["sigma_x"] = stderr["sigma_x"], stderr["sigma_y"]
    if amp <= 0:
        return GaussianFit(False, "fitted amplitude is zero: no peak", amp, (cy, cx), (sy_c, sx_c), theta_c, off, r2, stderr)
    return GaussianFit(True, "", amp, (cy, cx), (sy_c, sx_c), theta_c, off, r2, stderr)


def fit_gaussian_1d(y: ArrayLike, x: ArrayLike | None = None, *, name: str = "", axis: str = "x",
                    maxfev: int = 2000, baseline: bool = True) -> Gaussian1DFit:
    """Fit ``amplitude * exp(-(x-c)^2/(2 s^2)) + offset`` (``offset >= 0``) to a non-negative 1-D profile.

    Args:
        y: the profile.
        x: its coordinates (default ``0, 1, 2, ...``).
        name: what the profile is (kept in the fit and used in error messages).
        axis: its coordinate axis (kept in the fit).
        maxfev: the most model evaluations of ``curve_fit``.
        baseline: fit a non-negative offset; False fixes it at 0 (the curve then falls to 0 where the
            data do, as |grad| outside the TRF).

    Returns:
        The ``Gaussian1DFit`` (``ok=False`` for a constant profile or one of < 4 points).

    Raises:
        ErfError: an invalid profile (see ``check_map``).
    """
    a = check_map(y, what=f"profile {name or ''}".strip(), ndims=(1,))
    x = np.arange(a.size, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    base = a.min()
    if a.max() - base <= 0 or a.size < 4:
        return Gaussian1DFit(False, "profile is constant or has < 4 points", name, axis)
    w = (a - base) / (a - base).sum()
    c0 = float(w @ x)
    s0 = max(math.sqrt(float(w @ (x - c0) ** 2)), 0.5)
    span = float(x.max() - x.min()) + 1
    lo = [0.0, x.min() - span, 1e-3, 0.0]  # a non-negative baseline: a profile of |grad| is never below 0
    hi = [np.inf, x.max() + span, 10 * span, np.inf]
    p0 = [a.max() - base, c0, min(s0, 9 * span), base]
    model = _gauss1d
    if not baseline:
        lo, hi, p0 = lo[:3], hi[:3], [a.max(), c0, min(s0, 9 * span)]

        def model(xx, amp, c, s):
            return _gauss1d(xx, amp, c, s, 0.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = optimize.curve_fit(model, x, a, p0=p0, bounds=(lo, hi), maxfev=maxfev)
            if not baseline:
                popt = np.append(popt, 0.0)
    except (RuntimeError, ValueError, optimize.OptimizeWarning, FloatingPointError) as e:
        return Gaussian1DFit(False, f"curve_fit failed: {e}", name, axis)
    if not np.all(np.isfinite(popt)):
        return Gaussian1DFit(False, "fit returned non-finite parameters", name, axis)
    r2 = _r2(a, _gauss1d(x, *popt))
    ok = popt[0] > 0
    amp, c, sig, off = (float(v) for v in popt)
    return Gaussian1DFit(bool(ok), "" if ok else "fitted amplitude is zero", name, axis, amp, c, sig, off, r2)


def fit_profiles(m: ArrayLike, center: Sequence[float] | None = None) -> dict[str, Gaussian1DFit]:
    """1-D Gaussian fits of a 2-D map's centre lines and marginals.

    Keys: ``row`` -- the row through the centre, ``m[cy, :]`` (a function of x);
    ``col`` -- the column through the centre, ``m[:, cx]`` (function of y);
    ``x_marginal`` -- ``m.sum(axis=0)`` (function of x); ``y_marginal`` --
    ``m.sum(axis=1)`` (function of y).  The centre defaults to the centre of mass
    rounded to the nearest pixel.  For a Gaussian map the marginal sigmas equal the
    moment sigmas; the centre-line sigmas equal them only without rotation.

    Args:
        m: the 2-D map.
        center: the (y, x) point the centre lines go through.

    Returns:
        ``{"row", "col", "x_marginal", "y_marginal"}`` -> ``Gaussian1DFit``.

    Raises:
        ErfError: an invalid map or one that is not 2-D.
    """
    a = check_map(m, ndims=(2,))
    if center is None:
        center = moments(a).center
    cy = int(np.clip(round(center[0]), 0, a.shape[0] - 1))
    cx = int(np.clip(round(center[1]), 0, a.shape[1] - 1))
    out = {}
    for name, axis, prof in (("row", "x", a[cy, :]), ("col", "y", a[:, cx]),
                             ("x_marginal", "x", a.sum(axis=0)), ("y_marginal", "y", a.sum(axis=1))):
        if not prof.sum() > 0:
            out[name] = Gaussian1DFit(False, "profile is all zero", name, axis)
        else:
            out[name] = fit_gaussian_1d(prof, name=name, axis=axis)
    return out
