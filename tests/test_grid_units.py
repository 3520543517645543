"""erf.measure_grid (erf.engine.grid): the ERF at every position, exact on a uniform linear net at the border."""

from __future__ import annotations

import json

import numpy as np
import pytest

import erf
from erf import stats
from erf.engine.grid import grid_positions, measure_grid
from erf.errors import ErfError

N, DEPTH = 24, 6  # input size, number of uniform 3x3 'same' convs (TRF 13)


def exact_axis(unit: int, n: int = N, depth: int = DEPTH) -> np.ndarray:
    """d out[unit] / d x along one axis of `depth` all-ones 3-tap convs with zero padding, as exact path counts.

    Backward through each conv: position p of the layer below collects its neighbours p-1, p, p+1 of the
    layer above, only those inside the map (padded positions are constants, not inputs: paths through them end).
    """
    v = np.zeros(n)
    v[unit] = 1.0
    for _ in range(depth):
        w = v.copy()
        w[1:] += v[:-1]
        w[:-1] += v[1:]
        v = w
    return v


def uniform_linear_net():
    return erf.create_model("plain_net", depth=DEPTH, width=1, kernel_size=3, activation="linear", in_channels=1)


def test_grid_on_a_uniform_linear_net_is_exact_at_borders_and_corners():
    gm = measure_grid(uniform_linear_net(), N, "grid", points=5, samples=2, init="constant", dtype="float64")
    assert gm.positions == ([0, 6, 12, 17, 23], [0, 6, 12, 17, 23]) and len(gm.results) == 25
    scale = float(np.float32(1.0 / 9)) ** DEPTH  # "constant" init: every weight 1 / fan_in (drawn in float32)
    for unit, res, size, off in zip(gm.units, gm.results, gm.sizes, gm.offsets):
        exact = np.outer(exact_axis(unit[0]), exact_axis(unit[1])) * scale
        np.testing.assert_allclose(res.map, exact, rtol=1e-12, atol=1e-14 * exact.max())
        mom = stats.moments(exact)
        np.testing.assert_allclose(size, 2 * np.asarray(mom.sigma), rtol=1e-10)
        np.testing.assert_allclose(off, np.asarray(mom.center) - np.asarray(unit, dtype=float), atol=1e-10)
        assert res.trf == (13, 13) and res.trf_center == (float(unit[0]), float(unit[1]))
    sizes, offs = gm.on_grid(gm.sizes), gm.on_grid(gm.offsets)
    # inside (TRF within the image): the free linear chain, sigma = sqrt(2n/3) = 2 exactly, centred
    np.testing.assert_allclose(sizes[2, 2], [4.0, 4.0], rtol=1e-12)
    np.testing.assert_allclose(offs[2, 2], [0.0, 0.0], atol=1e-12)
    # corners: smaller and pushed inwards, symmetric between opposite corners
    assert np.all(sizes[0, 0] < sizes[2, 2] - 0.5)
    assert np.all(offs[0, 0] > 0.5) and np.all(offs[4, 4] < -0.5)
    np.testing.assert_allclose(offs[0, 0], -offs[4, 4], rtol=1e-10)
    # an edge unit moves only across its edge
    assert offs[0, 2][0] > 0.5 and abs(offs[0, 2][1]) < 1e-12
    assert sizes[0, 2][0] < 4.0 - 0.5 and abs(sizes[0, 2][1] - 4.0) < 1e-12


def test_a_list_of_units_a_table_and_a_figure(tmp_path):
    gm = measure_grid(uniform_linear_net(), N, [(0, 0), (12, 12), (23, 5)], samples=1, init="constant")
    assert gm.positions is None and gm.units == [(0, 0), (12, 12), (23, 5)]
    text = gm.table()
    assert text.splitlines()[0].startswith("unit") and "23,5" in text and "3 units of" in text
    json.dumps(gm.to_dict())
    with pytest.raises(ErfError, match="not a grid"):
        gm.on_grid(gm.sizes)
    path = tmp_path / "grid.png"
    gm.plot(path)
    assert path.stat().st_size > 10_000


def test_grid_positions_keep_both_ends():
    assert grid_positions(5, 9) == [0, 1, 2, 3, 4]
    assert grid_positions(28, 4) == [0, 9, 18, 27]
    assert grid_positions(7, 1) == [3]


@pytest.mark.parametrize("kwargs,match", [
    (dict(units="all"), "'grid' or a list"),
    (dict(units=[(0, 0), (0, 0)]), "listed twice"),
    (dict(units=[(0, 99)]), "outside the layer"),
    (dict(units=[("a", 1)]), "one index per axis"),
    (dict(units="grid", points=0), "points must be"),
    (dict(units="grid", unit=(1, 1)), "drop unit="),
])
def test_bad_units_are_one_line_errors(kwargs, match):
    with pytest.raises(ErfError, match=match) as info:
        measure_grid(uniform_linear_net(), 12, samples=1, **kwargs)
    assert "\n" not in str(info.value)
