"""A map's geometry and moments: centre unit, axis names, map checks, centre of mass, sigma.

An ERF map is treated as a mass distribution over pixel coordinates (pixel ``i`` at
coordinate ``i``; axes in array order). ERF size = ``2 * sigma`` and ERF/TRF =
``2 * sigma / trf`` per axis (see ``erf.stats``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from erf.errors import ErfError
from erf.io import to_json

__all__ = ["center_unit", "axis_names", "check_map", "trf_sizes", "Moments", "moments", "erf_size", "erf_trf_ratio"]


def center_unit(shape: Sequence[int]) -> tuple[int, ...]:
    """Index of the centre unit of a map of ``shape``: ``n // 2`` per axis.

    For odd ``n`` this is the exact centre; for even ``n`` it is the lower/right
    one of the two central pixels (the lower-right of the central 2x2 in 2-D).

    Args:
        shape: the map's shape.

    Returns:
        The centre index, one int per axis.
    """
    return tuple(int(n) // 2 for n in shape)


def axis_names(ndim: int) -> tuple[str, ...]:
    """Axis suffixes used in metric names: ('x',), ('y', 'x') or ('z', 'y', 'x').

    Args:
        ndim: the map's number of axes.

    Returns:
        One name per axis, in array order (``a0``, ``a1``, ... beyond 3 axes).
    """
    return {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}.get(ndim) or tuple(f"a{i}" for i in range(ndim))


def check_map(m: ArrayLike, what: str = "ERF map", ndims: Sequence[int] = (1, 2, 3)) -> np.ndarray:
    """A valid ERF map as a float64 array: numeric, finite, non-negative, not all zero.

    Args:
        m: the map.
        what: how error messages name it.
        ndims: the accepted numbers of axes.

    Returns:
        The map as a float64 array (``m`` itself when it already is one).

    Raises:
        ErfError: a non-numeric map, another number of axes, an empty map, NaN or inf
            values, negative values, or an all-zero map.
    """
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise ErfError(f"{what} must be a numeric array; got {type(m).__name__}") from None
    if a.ndim not in ndims:
        raise ErfError(f"{what} must have {' or '.join(map(str, ndims))} dimensions; got shape {a.shape}")
    if a.size == 0:
        raise ErfError(f"{what} is empty (shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ErfError(f"{what} contains NaN or inf values ({int(np.sum(~np.isfinite(a)))} pixels)")
    if np.any(a < 0):
        raise ErfError(f"{what} has negative values (min {a.min():.3g}); ERF statistics need a "
                       "non-negative map (use |grad| or clip at 0)")
    if not a.sum() > 0:
        raise ErfError(f"{what} is all zero: no input pixel influences the unit")
    return a


def trf_sizes(trf: float | Sequence[float], ndim: int) -> tuple[float, ...]:
    """The TRF size per axis: one number for all axes or one per axis.

    Args:
        trf: one size or ``ndim`` sizes, in pixels.
        ndim: the map's number of axes.

    Returns:
        ``ndim`` positive floats.

    Raises:
        ErfError: a count other than 1 or ``ndim``, or a size that is not positive.
    """
    t = np.atleast_1d(np.asarray(trf, dtype=np.float64))
    if t.size == 1:
        t = np.repeat(t, ndim)
    if t.size != ndim or not np.all(t > 0):
        raise ErfError(f"trf must be {ndim} positive sizes (one per axis); got {trf!r}")
    return tuple(t.tolist())


@dataclass(frozen=True)
class Moments:
    """Centre of mass, per-axis sigma and covariance (array axis order)."""

    center: tuple[float, ...]
    sigma: tuple[float, ...]
    cov: tuple[tuple[float, ...], ...]
    total: float

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return to_json(asdict(self))


def moments(m: ArrayLike) -> Moments:
    """Moments of a non-negative map seen as a mass distribution over pixel coordinates.

    Args:
        m: the map (1-D, 2-D or 3-D).

    Returns:
        Its ``Moments``.

    Raises:
        ErfError: an invalid map (see ``check_map``).
    """
    a = check_map(m)
    total = a.sum()
    grids = np.indices(a.shape, dtype=np.float64).reshape(a.ndim, -1)
    w = a.ravel() / total
    center = grids @ w
    d = grids - center[:, None]
    cov = (d * w) @ d.T
    sigma = np.sqrt(np.clip(np.diag(cov), 0, None))
    return Moments(tuple(center.tolist()), tuple(sigma.tolist()),
                   tuple(tuple(r) for r in cov.tolist()), float(total))


def erf_size(m: ArrayLike) -> tuple[float, ...]:
    """ERF size per axis = 2 * moment sigma (see ``erf.stats``).

    Args:
        m: the map.

    Returns:
        One size per axis, in pixels.

    Raises:
        ErfError: an invalid map.
    """
    return tuple(2.0 * s for s in moments(m).sigma)


def erf_trf_ratio(m: ArrayLike, trf: float | Sequence[float]) -> tuple[float, ...]:
    """ERF/TRF per axis = 2 * sigma / trf.

    Args:
        m: the map.
        trf: the TRF size, one for all axes or one per axis.

    Returns:
        One ratio per axis.

    Raises:
        ErfError: an invalid map or TRF size.
    """
    mo = moments(m)
    t = trf_sizes(trf, len(mo.sigma))
    return tuple(2.0 * s / ti for s, ti in zip(mo.sigma, t))
