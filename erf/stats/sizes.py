"""Size measures of an ERF map: mass radius, area above a peak fraction, RepLKNet's
high-contribution area ratio and the share of mass inside a box (the TRF).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from erf.errors import ErfError
from erf.stats.moments import center_unit, check_map, moments
from erf.stats.presets import apply_post

__all__ = ["mass_radius", "area_above", "high_contribution_area_ratio", "check_box", "mass_in_box"]


def _fractions(fractions: float | Sequence[float], what: str) -> tuple[float, ...]:
    fs = tuple(float(f) for f in np.atleast_1d(fractions))
    if not fs or any(not (0 < f <= 1) for f in fs):
        raise ErfError(f"{what} must be in (0, 1]; got {fractions!r}")
    return fs


def mass_radius(m: ArrayLike, fractions: float | Sequence[float] = (0.5, 0.9, 0.95),
                center: Sequence[float] | None = None) -> dict[float, float]:
    """Radius of the smallest disc (ball) around ``center`` holding each fraction of the mass.

    ``center`` defaults to the centre of mass.  Pixels are point masses at their
    centres; the cumulative mass is interpolated linearly in radius between
    successive pixel distances (starting from (0, 0)), so the radius is continuous
    in the fraction.

    Args:
        m: the map.
        fractions: mass fractions in (0, 1].
        center: the centre, one coordinate per axis (default: the centre of mass).

    Returns:
        ``{fraction: radius}`` in pixels.

    Raises:
        ErfError: an invalid map, a fraction outside (0, 1] or a centre of the wrong length.
    """
    a = check_map(m)
    fs = _fractions(fractions, "mass fractions")
    c = np.asarray(moments(a).center if center is None else center, dtype=np.float64)
    if c.shape != (a.ndim,):
        raise ErfError(f"center must have {a.ndim} coordinates; got {center!r}")
    grids = np.indices(a.shape, dtype=np.float64).reshape(a.ndim, -1)
    r = np.sqrt(((grids - c[:, None]) ** 2).sum(0))
    order = np.argsort(r, kind="stable")
    r = np.concatenate([[0.0], r[order]])
    cum = np.concatenate([[0.0], np.cumsum(a.ravel()[order])])
    out = {}
    for f in fs:
        target = f * cum[-1]
        k = min(int(np.searchsorted(cum, target, side="left")), len(cum) - 1)
        k = max(k, 1)
        c0, c1 = cum[k - 1], cum[k]
        t = 0.0 if c1 <= c0 else (target - c0) / (c1 - c0)
        out[f] = float(r[k - 1] + t * (r[k] - r[k - 1]))
    return out


def area_above(m: ArrayLike, fractions: float | Sequence[float] = (0.1, 0.5)) -> dict[float, dict]:
    """Pixels with value strictly above ``fraction * peak``.

    Args:
        m: the map.
        fractions: peak fractions in (0, 1].

    Returns:
        ``{fraction: {"fraction": share of the map's pixels, "count": n}}``.

    Raises:
        ErfError: an invalid map or a fraction outside (0, 1].
    """
    a = check_map(m)
    fs = _fractions(fractions, "peak fractions")
    peak = a.max()
    out = {}
    for f in fs:
        n = int(np.count_nonzero(a > f * peak))
        out[f] = {"fraction": n / a.size, "count": n}
    return out


def high_contribution_area_ratio(m: ArrayLike, thresholds: float | Sequence[float] = (0.2, 0.3, 0.5, 0.99),
                                 transform: str | Callable[[np.ndarray], ArrayLike] | None = None,
                                 center: Sequence[float] | None = None) -> dict[float, float]:
    """RepLKNet's high-contribution area ratio (Ding et al., CVPR 2022).

    For each threshold ``t``: the area of the smallest square (cube) centred on the
    centre unit (or on the pixel of ``center``, e.g. the unit's TRF centre) whose sum is >= ``t * total``, divided by the map's area.  Squares
    have odd sides 1, 3, 5, ... and are clipped by the map (the clipped area is
    counted).  ``transform='log1p_max'`` first applies log10(1+x)/max as RepLKNet's
    analyze_erf.py does; a callable is applied as is.  Differences from their
    script: we start at side 1 (they start at 3), use >= (they use >), and clip
    squares instead of giving up at the border.

    Args:
        m: the map.
        thresholds: mass fractions in (0, 1].
        transform: ``None``, a name of ``POSTS`` or a callable applied to the map first.
        center: the squares' centre in pixels (a half-integer goes up, as ``n // 2`` does for an even
            map's middle); default the centre unit ``n // 2``.

    Returns:
        ``{threshold: area ratio}``.

    Raises:
        ErfError: an invalid map (before or after ``transform``) or a threshold outside (0, 1].
    """
    a = check_map(m)
    ts = _fractions(thresholds, "thresholds")
    if transform is not None:
        a = check_map(transform(a) if callable(transform) else apply_post(a, transform), "transformed map")
    c = np.asarray(center_unit(a.shape) if center is None else
                   [int(math.ceil(float(v) - 1e-9)) for v in center]).reshape(-1, 1)
    if c.shape[0] != a.ndim:
        raise ErfError(f"center must have {a.ndim} coordinates (one per axis); got {list(center)}")
    grids = np.indices(a.shape).reshape(a.ndim, -1)
    d = np.abs(grids - c).max(0)                      # Chebyshev distance: half-side of the square
    mass = np.cumsum(np.bincount(d, weights=a.ravel()))
    area = np.cumsum(np.bincount(d))
    total = mass[-1]
    out = {}
    for t in ts:
        k = int(np.searchsorted(mass, t * total * (1 - 1e-12), side="left"))
        out[t] = float(area[min(k, len(area) - 1)] / a.size)
    return out


def check_box(trf_box: ArrayLike, shape: Sequence[int]) -> np.ndarray:
    """An inclusive box, ``(first, last)`` per axis, as a float64 ``(ndim, 2)`` array.

    Args:
        trf_box: the box, e.g. ``((top, bottom), (left, right))``; it may extend past the map.
        shape: the map's shape (gives the number of axes).

    Returns:
        The box as an array.

    Raises:
        ErfError: a box of the wrong shape, with non-finite bounds or with last < first.
    """
    b = np.asarray(trf_box, dtype=np.float64)
    if b.shape != (len(shape), 2) or not np.all(np.isfinite(b)) or np.any(b[:, 1] < b[:, 0]):
        raise ErfError(f"trf_box must be {len(shape)} inclusive (first, last) pairs, e.g. ((top, bottom), "
                       f"(left, right)); got {trf_box!r}")
    return b


def mass_in_box(m: ArrayLike, box: ArrayLike) -> tuple[float, bool]:
    """Fraction of the map's mass inside an inclusive box ((first, last) per axis), clipped to the map.

    Args:
        m: the map.
        box: the box (see ``check_box``).

    Returns:
        ``(fraction, clipped)`` where ``clipped`` says the box extends past the map.

    Raises:
        ErfError: an invalid map or box.
    """
    a = check_map(m)
    b = check_box(box, a.shape)
    clipped = bool(np.any(b[:, 0] < 0) or np.any(b[:, 1] > np.asarray(a.shape) - 1))
    sl = tuple(slice(int(max(math.ceil(lo), 0)), int(max(math.floor(hi) + 1, 0))) for lo, hi in b)
    return float(a[sl].sum() / a.sum()), clipped
