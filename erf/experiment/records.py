"""Records: one measured map of a sweep point in one training state, with its metrics and theory.

``make_record`` turns an ``ERFResult`` into a ``Record``: the config's metrics with bootstrap
intervals, the map's summary, and the exact linear theory where it applies (``linear_theory``).
Records are what the writers, the analyses, the figures and the report read.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from erf import stats
from erf.analytic import Layer, linear_erf
from erf.engine import ERFResult
from erf.errors import ErfError
from erf.experiment.sweeps import Config, Point
from erf.models import builders


@dataclass
class Record:
    """One measured map: a sweep point in one training state, its metrics with intervals, its theory."""

    point: Point
    state: str
    step: int | None
    map: np.ndarray
    se_map: np.ndarray | None
    trf: tuple[int, ...] | None
    trf_box: tuple | None
    clipped: bool
    samples: int
    seconds: float
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float] | None]
    summary: dict
    theory_sigma: tuple[float, ...] | None = None
    theory_exact: bool = False
    notes: list[str] = field(default_factory=list)
    train: dict | None = None

    @staticmethod
    def key(point: Point, state: str) -> str:
        """The record id of ``point`` in training ``state`` ('' untrained): file names in the run folder."""
        return point.id + (f"_{state.replace(' ', '')}" if state else "")

    @property
    def id(self) -> str:
        """The record id (see ``key``)."""
        return Record.key(self.point, self.state)

    @property
    def label(self) -> str:
        """The point's label, with the training state in brackets."""
        return self.point.label + (f" [{self.state}]" if self.state else "")

    def value(self, key: str) -> Any:
        """Value of a sweep key, 'variant' or 'state' at this record."""
        return self.state if key == "state" else self.point.value(key)

    def interval(self, name: str) -> tuple[float, float] | None:
        """The interval of metric ``name`` as two floats, or None where it has none."""
        ci = self.intervals.get(name)
        return None if ci is None else (float(ci[0]), float(ci[1]))


def same_value(a: Any, b: Any) -> bool:
    """Whether two swept values are the same (compared by ``repr``: lists and numbers alike)."""
    return repr(a) == repr(b)


def distinct_values(records: list[Record], key: str) -> list:
    """Distinct values of ``key`` over the records, in order of appearance ([None] for key "").

    Args:
        records: the records.
        key: a sweep key, 'variant' or 'state' (see ``Record.value``), or "".

    Returns:
        The values, each once.
    """
    out = []
    for r in records:
        v = r.value(key) if key else None
        if not any(same_value(v, o) for o in out):
            out.append(v)
    return out


def make_record(cfg: Config, point: Point, res: ERFResult, state: str, step: int | None) -> Record:
    """Metrics with intervals, theory and summary of one measured ``ERFResult``.

    Args:
        cfg: the experiment (its seed draws the bootstrap).
        point: the sweep point measured.
        res: its measurement.
        state: the training state ("" untrained, "init", "step N", "trained").
        step: the training step, or None.

    Returns:
        The ``Record``.
    """
    s = point.settings
    m = s["measure"]
    seed = cfg.settings["experiment"]["seed"]
    names = s["report"]["metrics"]
    notes = list(res.notes)
    if res.trf is None and any("trf" in n for n in names):
        names = [n for n in names if "trf" not in n]
        notes.append("no TRF (the model could not be traced): the ERF/TRF metrics are left out")
    mp = res.post_map
    metrics = stats.scalar_metrics(mp, names, trf=res.trf)
    intervals = stats.metric_intervals(*res.groups, metrics=names, level=m["level"], n_boot=m["n_boot"], seed=seed,
                                       trf=res.trf, post=res.post)
    theory, exact = linear_theory(s)
    summary = _summary(mp, res, notes)
    return Record(point=point, state=state, step=step, map=mp, se_map=res.se_map, trf=res.trf,
                  trf_box=res.trf_box, clipped=res.clipped, samples=res.samples, seconds=res.seconds,
                  metrics=metrics, intervals=intervals, summary=summary, theory_sigma=theory, theory_exact=exact,
                  notes=notes)


def _summary(mp: np.ndarray, res: ERFResult, notes: list[str]) -> dict:
    """``stats.summarize`` of the map; a map with a tiny peak is summarised divided by its peak.

    Gradients that vanish with depth (sigmoid) leave peaks near 1e-20, where the Gaussian fit and
    log10(1 + x) lose all precision; every metric but the hcar_log1p_max family is scale-free.
    """
    peak = float(mp.max())
    if peak >= 1e-6:
        try:
            return stats.summarize(mp, trf=res.trf, trf_box=res.trf_box)
        except ErfError as exc:
            notes.append(f"summary of the raw map failed ({exc})")
    summary = stats.summarize(mp / peak, trf=res.trf, trf_box=res.trf_box)
    summary.update(total=float(mp.sum()), peak=peak)
    notes.append(f"summary computed on the map divided by its peak ({peak:.3g}); total and peak are raw")
    return summary


def linear_theory(settings: dict) -> tuple[tuple[float, ...] | None, bool]:
    """Exact sigma of the chain of uniform kernels of a ``plain_net`` (Luo's linear theory).

    Returns ``(sigma per axis, exact)``: ``exact`` is True where the measured map must equal the
    theory (constant weights, linear activations, no bias, a non-squaring signal). ``(None, False)``
    for other models, a layer other than the output, normalisation, a checkpoint or training.

    Args:
        settings: a point's settings.

    Returns:
        ``(sigma per axis, exact)``, or ``(None, False)``.
    """
    model, meas = settings["model"], settings["measure"]
    if (model["name"] != "plain_net" or meas["layer"] or model["checkpoint"] or settings["train"]["enabled"]
            or model["args"].get("norm", "none") not in ("none", None)):
        return None, False
    defaults = {k: p.default for k, p in inspect.signature(builders.plain_net).parameters.items()}
    a = {**defaults, **model["args"]}
    depth, k = int(a["depth"]), int(a["kernel_size"])
    strides = set(a["strides"] or [])
    dil = a["dilation"] if isinstance(a["dilation"], list) else [a["dilation"]] * depth
    layers = [Layer(k, 2 if i in strides else 1, 0, int(dil[i])) for i in range(depth)]
    sigma = linear_erf(layers).sigma
    exact = (meas["init"] == "constant" and str(a["activation"]).lower() in ("linear", "none")
             and not a["bias"] and meas["signal"] in ("abs", "signed", "positive") and not meas["preset"])
    return tuple(float(v) for v in sigma), bool(exact)

