"""Records: one measured map of a sweep point in one training state, with its metrics and theory.

``make_record`` turns an ``ERFResult`` into a ``Record``: the config's metrics with bootstrap
intervals, the map's summary, and the exact linear theory where it applies (``linear_theory``).
Records are what the writers, the analyses, the figures and the report read.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from erf import stats
from erf.analytic import Layer, linear_erf
from erf.engine import ERFResult
from erf.errors import ErfError
from erf.experiment.sweeps import Config, Point
from erf.models import builders


@dataclass
class Networks:
    """The per-network measurements of one record: group sums and counts, and each network's map."""

    sums: list[np.ndarray]
    counts: list[np.ndarray]
    maps: list[np.ndarray]
    normalize: bool = False

    @property
    def count(self) -> int:
        """How many networks."""
        return len(self.maps)

    @property
    def units(self) -> int:
        """Top-level resampling units: networks, or the groups of the one network (weight draws or inputs)."""
        return self.count if self.count > 1 else len(self.counts[0])

    def combined(self, post: str | None = None) -> np.ndarray:
        """The mean of the networks' maps (each to unit total of its absolute values with ``normalize``), then ``post``."""
        arr = np.stack([np.asarray(m, dtype=np.float64) for m in self.maps])
        if self.normalize:
            tot = np.abs(arr).reshape(len(arr), -1).sum(1)
            arr = arr / np.where(tot > 0, tot, 1.0).reshape(-1, *[1] * (arr.ndim - 1))
        return stats.apply_post(arr.mean(0), post)

    def shares(self) -> list[float]:
        """Each network's fraction of the summed raw mass (all equal when they agree in scale)."""
        totals = np.array([float(np.abs(m).sum()) for m in self.maps])
        return (totals / totals.sum()).tolist() if totals.sum() > 0 else [1.0 / self.count] * self.count


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
    networks: Networks | None = None
    boot: dict[str, np.ndarray] = field(default_factory=dict)
    network_metrics: list[dict[str, float]] = field(default_factory=list)
    reference: dict[str, float] | None = None
    diagnostics: dict = field(default_factory=dict)
    theory_abs_sigma: tuple[float, ...] | None = None
    trf_center: tuple[float, ...] | None = None
    jackknife: dict[str, np.ndarray] = field(default_factory=dict)
    unit_metrics: list[dict[str, float]] = field(default_factory=list)
    bootstrap_intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    saturation: dict[str, float] | None = None
    probe: str = "config"
    alt: "Record | None" = None
    profile: list = field(default_factory=list)  # [profile]: one erf.experiment.profiles.ProfileLayer per layer

    @staticmethod
    def key(point: Point, state: str, network: int = 0) -> str:
        """The id of ``point`` in training ``state`` ('' untrained), network k > 0 with ``_n<k>``: run-folder names."""
        return point.id + (f"_{state.replace(' ', '')}" if state else "") + (f"_n{network}" if network else "")

    @property
    def units(self) -> int:
        """Top-level units of the intervals: networks, or the one network's groups (1: no interval)."""
        return 1 if self.networks is None else self.networks.units

    @property
    def network_count(self) -> int:
        """Independently seeded networks behind this record (weight draws of one measurement count)."""
        if self.networks is not None and self.networks.count > 1:
            return self.networks.count
        return max(1, int(self.point.settings["measure"]["weight_draws"]))

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


def make_record(cfg: Config, point: Point, results: ERFResult | list[ERFResult], state: str,
                step: int | None) -> Record:
    """Metrics with hierarchical intervals, theory, references and summary of a point's networks.

    The map is the mean of the networks' maps (each to unit total with ``model.normalize_networks``);
    the intervals come from ``stats.hierarchical_replicates`` (networks, then input groups within
    them) with a seed shared by the states of a point (paired through training) and, with
    ``experiment.common_seeds``, by every point.

    Args:
        cfg: the experiment (its seed draws the bootstrap).
        point: the sweep point measured.
        results: its measurement, one per network.
        state: the training state ("" untrained, "init", "step N", "trained").
        step: the training step, or None.

    Returns:
        The ``Record``.
    """
    results = [strict_trf(r) for r in (results if isinstance(results, list) else [results])]
    res = results[0]
    s = point.settings
    m = s["measure"]
    exp = cfg.settings["experiment"]
    names = s["report"]["metrics"]
    notes = list(res.notes)
    if res.trf is None and any("trf" in n for n in names):
        names = [n for n in names if "trf" not in n]
        notes.append("no TRF (the model could not be traced): the ERF/TRF metrics are left out")
    nets = Networks([r.groups[0] for r in results], [r.groups[1] for r in results], [r.map for r in results],
                    bool(s["model"]["normalize_networks"]))
    mp = nets.combined(res.post) if len(results) > 1 else res.post_map
    names = list(names) + [f"kurtosis_{a}" for a in stats.axis_names(mp.ndim)] + \
        [n for n in ROBUST if n not in names]
    center = getattr(res, "trf_center", None)
    metrics = stats.scalar_metrics(mp, names, res.trf, center=center)
    boot_seed = exp["seed"] + (0 if exp["common_seeds"] else 7919 * (point.index + 1))
    reps = stats.hierarchical_replicates(list(zip(nets.sums, nets.counts)), names, m["n_boot"], boot_seed,
                                         normalize=nets.normalize, trf=res.trf, post=res.post, center=center)
    boot = {n: reps[:, j] for j, n in enumerate(names)}
    bootstrap_intervals = {n: interval(boot[n], m["level"], nets.units) for n in names}
    network_metrics = _network_metrics(results, names, res.trf, center, notes) if len(results) > 1 else []
    jack, unit_metrics = _jackknife(nets, res, names, center, int(m["weight_draws"]) > 1)
    unit_metrics = network_metrics or unit_metrics
    intervals = {n: small_n_interval(metrics.get(n), jack.get(n), m["level"], n) for n in names}
    theory, exact = linear_theory(s)
    summary = _summary(mp, res, notes)
    reference = None
    if res.clipped or _global(res.trf_box, mp.shape):
        reference = stats.scalar_metrics(stats.uniform_map(mp.shape, _box(res.trf_box, mp.shape)), names, res.trf,
                                         center=center)
    saturation = None
    if res.trf_box is not None and all(b is not None for b in res.trf_box):
        try:
            saturation = stats.saturation(mp, _box(res.trf_box, mp.shape))
        except ErfError as exc:
            notes.append(f"no uniform-map reference over the TRF box ({exc})")
    diagnostics = _diagnostics(results, nets)
    if len(results) > 1 and diagnostics["max_network_share"] > max(0.5, 2.0 / len(results)):
        notes.append(f"one network holds {diagnostics['max_network_share']:.0%} of the summed gradient mass of "
                     f"{len(results)}: the mean map is mostly that network's")
    return Record(point=point, state=state, step=step, map=mp, se_map=res.se_map, trf=res.trf,
                  trf_box=res.trf_box, clipped=res.clipped, samples=sum(r.samples for r in results),
                  seconds=sum(r.seconds for r in results), metrics=metrics, intervals=intervals, summary=summary,
                  theory_sigma=theory, theory_exact=exact, notes=notes, networks=nets, boot=boot,
                  network_metrics=network_metrics, reference=reference, diagnostics=diagnostics,
                  theory_abs_sigma=abs_theory(s), trf_center=None if center is None else tuple(map(float, center)),
                  jackknife=jack, unit_metrics=unit_metrics, bootstrap_intervals=bootstrap_intervals,
                  saturation=saturation)


def _network_metrics(results: list[ERFResult], names: list[str], trf, center, notes: list[str]) -> list[dict]:
    """Each network's metrics; a network whose map has none (all zero: its unit does not depend on the input,
    a dead network) gets None for each, and a note, instead of stopping the run at its outputs."""
    out = []
    for k, r in enumerate(results):
        try:
            out.append(stats.scalar_metrics(r.post_map, names, trf, center=center))
        except ErfError as exc:
            out.append({n: None for n in names})
            notes.append(f"network {k} of {len(results)} has no ERF metrics ({' '.join(str(exc).split())}): its "
                         "unit does not depend on the input here (a dead network); the pooled map holds nothing of "
                         "it, and the counts of networks leave it out")
    return out


def strict_trf(res: ERFResult) -> ERFResult:
    """The result with its strict TRF as ``trf`` (what experiments report, compare and draw).

    For gated nets and attention the engine reports ``rf_local``, the spatial path alone, with
    the strict TRF beside it; an experiment's TRF is every pixel the unit can reach (a ViT token's
    is the whole image from the first attention on), and the references and saturation are taken
    over that box. The unit's centre is unchanged; a note gives the spatial path.

    Args:
        res: one measurement.

    Returns:
        ``res`` itself where the two agree, else a copy with ``trf``, ``trf_box`` (cut to the map)
        and ``clipped`` of the strict TRF.
    """
    if res.trf_strict is None or res.trf_box_strict is None or tuple(res.trf_strict) == tuple(res.trf or ()):
        return res
    shape = res.map.shape
    box = tuple((max(0, lo), min(n - 1, hi)) for (lo, hi), n in zip(res.trf_box_strict, shape))
    cut = any(lo < 0 or hi > n - 1 for (lo, hi), n in zip(res.trf_box_strict, shape))
    local = "x".join(map(str, res.trf)) if res.trf else "?"
    notes = [n for n in res.notes if " is rf_local, " not in n] + [
        f"TRF {'x'.join(map(str, res.trf_strict))} (strict: every pixel the unit reaches through attention or "
        f"gates); the spatial path alone (rf_local) is {local}"]
    return replace(res, trf=tuple(res.trf_strict), trf_box=box, clipped=cut, notes=notes)


#: The sizes the reports lead with: robust to a diffuse floor or heavy tails, unlike 2 sigma.
ROBUST = ("mass_radius_0.5", "mass_radius_0.9")

#: Metric families that may be zero or negative: their intervals are on the linear scale, the others' on the log.
SIGNED_FAMILIES = ("com_offset", "center", "kurtosis")


def on_log_scale(name: str) -> bool:
    """Whether the small-n interval of metric ``name`` is formed on the log scale (positive sizes and ratios)."""
    return not name.startswith(SIGNED_FAMILIES)


def small_n_interval(estimate: float | None, loo: np.ndarray | None, level: float,
                     name: str) -> tuple[float, float] | None:
    """The studentized leave-one-network-out interval of a pooled metric (``stats.jackknife_interval``).

    Args:
        estimate: the metric of the pooled map; ``loo``: its values with each network (or weight draw,
            or input group of one network) left out; ``level``: the coverage; ``name``: the metric.

    Returns:
        ``(lo, hi)``, or None with fewer than 2 units or a missing value.
    """
    if estimate is None or loo is None or len(loo) < 2 or not np.isfinite(estimate) \
            or not np.all(np.isfinite(loo)):
        return None
    log = on_log_scale(name) and estimate > 0 and bool(np.all(loo > 0))
    lo, hi = stats.jackknife_interval(estimate, loo, level, log=log)
    return None if not (np.isfinite(lo) and np.isfinite(hi)) else (float(lo), float(hi))


def _jackknife(nets: Networks, res: ERFResult, names: list[str], center, draws: bool):
    """Leave-one-out values of every metric, and the per-unit metrics (networks, or weight draws of one network).

    Units are the networks when there are several; with one network its groups (weight draws, or input
    groups of one set of weights: an interval over the inputs only).
    """
    if nets.count > 1:
        maps = np.stack([np.asarray(m, dtype=np.float64) for m in nets.maps])
        if nets.normalize:
            tot = np.abs(maps).reshape(len(maps), -1).sum(1)
            maps = maps / np.where(tot > 0, tot, 1.0).reshape(-1, *[1] * (maps.ndim - 1))
        loo = stats.leave_one_out(maps, names, trf=res.trf, post=res.post, center=center)
        units = []
    else:
        sums, counts = np.asarray(nets.sums[0], dtype=np.float64), np.asarray(nets.counts[0], dtype=np.float64)
        keep = counts > 0
        sums, counts = sums[keep], counts[keep]
        if len(counts) < 2:
            return {}, []
        loo = stats.leave_one_out(sums, names, counts=counts, trf=res.trf, post=res.post, center=center)
        units = []
        if draws:  # each group one weight draw: an independent network
            per = stats.map_metrics(sums / counts.reshape(-1, *[1] * (sums.ndim - 1)), names, trf=res.trf,
                                    post=res.post, center=center)
            units = [dict(zip(names, map(float, row))) for row in per]
    return {n: loo[:, j] for j, n in enumerate(names)}, units


def interval(values: np.ndarray, level: float, units: int) -> tuple[float, float] | None:
    """The expanded percentile interval of bootstrap ``values`` over ``units`` networks (or groups).

    Args:
        values: the replicates (NaN ignored).
        level: the coverage, in (0, 1).
        units: top-level resampling units; fewer than 2 gives None (one network, one group: no interval).

    Returns:
        ``(lo, hi)`` or None.
    """
    return stats.percentile_interval(values, level, units, "expanded") if units >= 2 else None


def _box(box, shape):
    """The TRF box with an axis the trace could not bound (None) spanning the whole map."""
    if box is None:
        return None
    return [(0, n - 1) if b is None else b for b, n in zip(box, shape)]


def _global(box, shape) -> bool:
    """Whether the TRF box covers the whole map (a global TRF: attention, pooling)."""
    return box is not None and len(box) == len(shape) and all(
        b is not None and b[0] <= 0 and b[1] >= n - 1 for b, n in zip(box, shape))


def _diagnostics(results: list[ERFResult], nets: Networks) -> dict:
    """Heavy-tail diagnostics: the engine's per network (where it gives them) and the networks' shares."""
    per = [dict(getattr(r, "diagnostics", None) or {}) for r in results]
    shares = nets.shares()
    out: dict = {"network_shares": shares, "max_network_share": max(shares)}
    for key in ("max_sample_share", "max_group_share", "ess", "zero_grad_fraction", "samples_weighed"):
        vals = [d[key] for d in per if d.get(key) is not None]
        if vals:
            out[key] = float(min(vals) if key in ("ess", "samples_weighed") else max(vals))
    return out


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


def _plain_layers(settings: dict) -> tuple[list[Layer], dict] | None:
    """The layer chain of a ``plain_net`` point measured at its output, untrained, without norm; else None."""
    model, meas = settings["model"], settings["measure"]
    if (model["name"] != "plain_net" or meas["layer"] or model["checkpoint"] or settings["train"]["enabled"]
            or model["args"].get("norm", "none") not in ("none", None)):
        return None
    defaults = {k: p.default for k, p in inspect.signature(builders.plain_net).parameters.items()}
    a = {**defaults, **model["args"]}
    depth, k = int(a["depth"]), int(a["kernel_size"])
    strides = set(a["strides"] or [])
    dil = a["dilation"] if isinstance(a["dilation"], list) else [a["dilation"]] * depth
    return [Layer(k, 2 if i in strides else 1, 0, int(dil[i])) for i in range(depth)], a


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
    chain = _plain_layers(settings)
    if chain is None:
        return None, False
    layers, a = chain
    meas = settings["measure"]
    sigma = linear_erf(layers).sigma
    exact = (meas["init"] == "constant" and str(a["activation"]).lower() in ("linear", "none")
             and not a["bias"] and meas["signal"] in ("abs", "signed", "positive") and not meas["preset"])
    return tuple(float(v) for v in sigma), bool(exact)


def abs_theory(settings: dict) -> tuple[float, ...] | None:
    """Exact sigma of the expected |grad| map of a random zero-mean linear ``plain_net`` (no bias).

    With iid zero-mean weights the gradient at each pixel is a sum over paths whose variance map
    is the uniform-kernel map; the sum over many channels and paths is close to Gaussian, so E|g|
    is proportional to the square root of that map: sqrt(uniform map), normalised. None unless the point is a linear random-weight plain net measured
    with signal abs.

    Args:
        settings: a point's settings.

    Returns:
        Sigma per axis, or None.
    """
    chain = _plain_layers(settings)
    if chain is None:
        return None
    layers, a = chain
    meas = settings["measure"]
    if (meas["init"] in ("constant", "model") or str(a["activation"]).lower() not in ("linear", "none")
            or a["bias"] or meas["signal"] != "abs" or meas["preset"]):
        return None
    return tuple(float(v) for v in linear_erf(layers, signal="abs").sigma)
