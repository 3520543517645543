"""``measure_grid()``: the ERF of many units of one layer, across its output map, from shared passes.

A wrapper over ``erf.engine.profile.measure_targets`` (one target per unit of the same layer:
one forward to the layer and one backward per batch, whatever the number of units). It shows
what a single centre unit hides: near the borders and corners zero padding cuts the paths
through the padded positions, so the ERF shrinks and its centre of mass moves inwards from
the TRF centre. ``GridMap`` holds one ``ERFResult`` per unit, the ERF size (2 sigma per axis)
and the centre offset (ERF centre of mass minus the unit's unclipped TRF centre, in input
pixels; ``com_offset_*``) per unit, a table and a figure.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch.nn as nn

from erf.analytic import infer_in_channels, receptive_field, spatial_size
from erf.engine.context import float32_view
from erf.engine.options import MeasureOptions
from erf.engine.profile import measure_targets
from erf.engine.result import ERFResult
from erf.engine.target import require_spatial
from erf.errors import ErfError, TraceError

__all__ = ["measure_grid", "GridMap", "grid_positions"]


@dataclass(eq=False)
class GridMap:
    """The ERF of many units of one layer.

    Attributes:
        layer: the layer's traced name (None: the model output).
        units: the measured units, in order (row-major over ``positions`` for a grid).
        results: one ``ERFResult`` per unit.
        positions: per axis, the unit indices of a regular grid (``units='grid'``); None for a list.
        output: the layer's spatial map size.
        seconds: the wall time of the whole measurement.
    """

    layer: str | None
    units: list[tuple[int, ...]]
    results: list[ERFResult]
    positions: tuple[list[int], ...] | None
    output: tuple[int, ...] | None
    seconds: float

    @property
    def sizes(self) -> np.ndarray:
        """``(units, ndim)`` ERF size 2 sigma per axis (input pixels)."""
        return np.array([[2 * s for s in r.sigma] for r in self.results], dtype=np.float64)

    @property
    def offsets(self) -> np.ndarray:
        """``(units, ndim)`` ERF centre of mass minus the unit's TRF centre per axis (input pixels; NaN without TRF)."""
        return np.array([[r.metrics.get(f"com_offset_{a}", np.nan) if r.trf_center is not None else np.nan
                          for a in r.axes] for r in self.results], dtype=np.float64)

    @property
    def centers(self) -> np.ndarray:
        """``(units, ndim)`` each unit's TRF centre in input pixels (unclipped; NaN without TRF)."""
        return np.array([list(r.trf_center) if r.trf_center is not None else [np.nan] * r.map.ndim
                         for r in self.results], dtype=np.float64)

    def on_grid(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one row per unit) reshaped to the grid.

        Args:
            values: one row per unit, in ``units`` order (``sizes``, ``offsets``, ...).

        Returns:
            The array of shape ``(len(positions[0]), len(positions[1]), ..., *row shape)``.

        Raises:
            ErfError: the units were a list, not a grid.
        """
        if self.positions is None:
            raise ErfError("the units were given as a list, not a grid: index the values by unit instead")
        return np.asarray(values).reshape(*(len(p) for p in self.positions), *np.shape(values)[1:])

    def rows(self) -> list[dict[str, Any]]:
        """One dict per unit: unit, trf_center, erf_size, com_offset, clipped, samples."""
        return [{"unit": list(u), "trf_center": list(c), "erf_size": list(s), "com_offset": list(o),
                 "clipped": r.clipped, "samples": r.samples}
                for u, r, c, s, o in zip(self.units, self.results, self.centers, self.sizes, self.offsets)]

    def table(self) -> str:
        """A text table: per unit its TRF centre, ERF size 2 sigma and centre offset per axis."""
        head = ["unit", "TRF centre", "ERF size 2σ", "centre offset", "TRF clipped"]
        body = [[",".join(map(str, row["unit"])), ", ".join(f"{v:g}" for v in row["trf_center"]),
                 " x ".join(f"{v:.2f}" for v in row["erf_size"]),
                 ", ".join(f"{v:+.2f}" for v in row["com_offset"]), "yes" if row["clipped"] else "no"]
                for row in self.rows()]
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join([fmt.format(*head)] + [fmt.format(*r) for r in body]) + (
            f"\n{len(self.units)} units of {self.layer or 'output'} "
            f"({'x'.join(map(str, self.output or ()))} map) from shared passes in {self.seconds:.2f} s")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: layer, output, positions, the rows and the time (no maps)."""
        return {"layer": self.layer, "output": None if self.output is None else list(self.output),
                "positions": None if self.positions is None else [list(p) for p in self.positions],
                "units": self.rows(), "seconds": self.seconds}

    def plot(self, path: Any = None):
        """ERF size and centre offset per unit over the output grid (``erf.profile_plots.plot_grid``).

        Returns:
            The matplotlib figure (also written to ``path`` when given).
        """
        from erf.profile_plots import plot_grid  # lazy: matplotlib only to draw

        return plot_grid(self, path)


def grid_positions(n: int, points: int) -> list[int]:
    """Up to ``points`` unit indices along an axis of ``n`` units: all of them, or evenly spaced with both ends
    (one point: the centre unit ``n // 2``).

    Args:
        n: the axis length; ``points``: the most positions.

    Returns:
        Sorted distinct indices.
    """
    if n <= points:
        return list(range(n))
    if points == 1:
        return [n // 2]
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, points)})


def measure_grid(model: nn.Module, input_size: Any, units: str | Sequence[Sequence[int]] = "grid",
                 options: MeasureOptions | None = None, points: int = 9, **kwargs: Any) -> GridMap:
    """The ERF of many units of one layer (``layer=``, default the output) from shared passes.

    Args:
        model: the network (never modified).
        input_size: the input's spatial size (an int for every axis, or one per axis).
        units: ``"grid"`` (every unit of the layer's map, or ``points`` evenly spaced ones per axis, both
            ends included) or a list of units (one index per axis each).
        options: a ``MeasureOptions``; its ``layer`` picks the layer, ``unit`` must be unset.
        points: with ``"grid"``, the most units per axis (default 9).
        **kwargs: any ``MeasureOptions`` field (layer, samples, batch_size, dtype, init, ...); each unit gets
            ``samples`` input samples per draw.

    Returns:
        The ``GridMap``.

    Raises:
        ErfError: a bad ``units`` or ``points``, ``unit=`` set, a layer without a spatial map, an untraceable
            model with ``units='grid'``, or any error of ``measure_targets``.
    """
    opts = MeasureOptions.build(options, **kwargs)
    if opts.unit is not None:
        raise ErfError("measure_grid takes its units from units=: drop unit=")
    if not isinstance(points, int) or isinstance(points, bool) or points < 1:
        raise ErfError(f"points must be a positive integer (units per axis); got {points!r}")
    layer = opts.layer
    positions = None
    output = None
    f32 = float32_view(model)
    size = spatial_size(model, input_size)
    try:
        rep = receptive_field(f32, size, layer=layer, in_channels=opts.in_channels or infer_in_channels(model))
        require_spatial(rep)
        output = tuple(int(v) for v in rep.target.output)
    except TraceError:
        if isinstance(units, str):
            raise ErfError("units='grid' needs the layer's map size from a trace, and the model could not be "
                           "traced: give units as a list of positions") from None
    if isinstance(units, str):
        if units != "grid":
            raise ErfError(f"units must be 'grid' or a list of units such as [(0, 0), (3, 5)]; got {units!r}")
        positions = tuple(grid_positions(n, points) for n in output)
        chosen = [tuple(u) for u in itertools.product(*positions)]
    else:
        try:
            chosen = [tuple(int(i) for i in u) for u in units]
        except (TypeError, ValueError):
            raise ErfError("units must be 'grid' or a list of units, each one index per axis, e.g. "
                           "[(0, 0), (3, 5)]") from None
    results = measure_targets(model, input_size, [(layer, u) for u in chosen],
                              MeasureOptions.build(opts, layer=None))
    seconds = max((r.seconds for r in results), default=0.0)
    return GridMap(results[0].layer if results else layer, chosen, results, positions, output, seconds)
