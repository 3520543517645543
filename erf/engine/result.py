"""``ERFResult``: a measured ERF map with its uncertainty, metrics, saving and plotting."""

from __future__ import annotations

import json
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from erf import stats
from erf.engine.accumulate import Accumulator
from erf.engine.context import Context
from erf.engine.diagnostics import diagnose
from erf.errors import ErfError
from erf.io import atomic_write, save_npz, to_json

__all__ = ["ERFResult", "make_result", "place", "settings_of"]


@dataclass(eq=False)
class ERFResult:
    """One measured ERF (all maps float64 numpy at the full input size, axes as the input).

    ``map`` is the mean per-sample map, ``se_map`` its per-pixel standard error (None with
    fewer than 2 groups), ``groups = (group_sums (G, *size), group_counts (G,))`` the per-group
    sums behind both. ``trf``/``trf_box`` are the unit's theoretical RF size and its inclusive
    box clipped to the image (None when the model could not be traced); ``clipped`` says the
    unclipped box reached past the image. ``trf_box_unclipped`` is the whole box (it may start
    below 0) and ``trf_center`` its centre in input pixels: the reference of every position
    metric (``com_offset_*``) and of the plot's centre marker. ``metrics``, ``intervals`` and
    ``fit`` are computed on first use from ``erf.stats``; ``uniform_reference`` compares the ERF
    with a uniform map over the visible part of a clipped (or global) TRF. ``diagnostics`` holds
    the heavy-tail diagnostics of the samples (``erf.engine.diagnostics.diagnose``).
    """

    map: np.ndarray
    se_map: np.ndarray | None
    samples: int
    groups: tuple[np.ndarray, np.ndarray]
    trf: tuple[int, ...] | None
    trf_box: tuple[tuple[int, int], ...] | None
    clipped: bool
    cropped: bool
    unit: tuple[int, ...]
    layer: str | None
    device: str
    seconds: float
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)
    trf_box_unclipped: tuple[tuple[int, int], ...] | None = None
    trf_strict: tuple[int, ...] | None = None  # gated nets: the strict TRF (gates, attention); trf is rf_local
    trf_box_strict: tuple[tuple[int, int], ...] | None = None  # gated nets: the strict TRF's unclipped box

    def __post_init__(self):
        self._cache: dict = {}

    def _lazy(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def post(self) -> str | None:
        return (self.settings.get("preset") or {}).get("post")

    @property
    def post_map(self) -> np.ndarray:
        """The map after the preset's post-processing (``stats.apply_post``); a copy of ``map`` without one."""
        return self._lazy("post_map", lambda: stats.apply_post(self.map, self.post))

    @property
    def trf_center(self) -> tuple[float, ...] | None:
        """The unit's TRF centre in input pixels (unclipped; may lie off-centre or outside the image), or None."""
        box = self.trf_box_unclipped or (None if self.clipped else self.trf_box)
        if box is None or any(b is None for b in box):
            return None
        return tuple((b[0] + b[1]) / 2.0 for b in box)

    @property
    def metrics(self) -> dict:
        """``stats.summarize`` of the raw mean map with this unit's TRF (positions relative to ``trf_center``).

        Only metrics: the map's geometry (``ndim``, ``shape``, ``axes``) is not among them.
        """
        def compute():
            box = self.trf_box_unclipped or self.trf_box
            out = stats.summarize(self.map, trf=self.trf, trf_box=box, center=self.trf_center)
            for k in ("ndim", "shape", "axes"):
                out.pop(k, None)
            return out
        return self._lazy("metrics", compute)

    @property
    def intervals(self) -> dict:
        """Bootstrap intervals over groups (``stats.metric_intervals``) of every scalar metric that has one.

        Name -> (lo, hi) or None: the ``stats.interval_metrics`` names (every default scalar metric
        of ``metrics`` but the Gaussian-fit ones), positions relative to ``trf_center``.
        """
        def compute():
            start = time.perf_counter()
            out = stats.metric_intervals(*self.groups, stats.interval_metrics(self.map.ndim, self.trf), trf=self.trf,
                                         center=self.trf_center)
            self._cache["interval_seconds"] = time.perf_counter() - start  # after the measurement: said in summary()
            return out

        return self._lazy("intervals", compute)

    @property
    def reference_box(self) -> tuple[tuple[int, int], ...] | None:
        """The box of the uniform-map references: the strict TRF's (every pixel the unit can reach, gates and
        attention included), which for most nets is the TRF box itself."""
        return self.trf_box_strict or self.trf_box_unclipped or self.trf_box

    @property
    def uniform_reference(self) -> dict | None:
        """Where the TRF is clipped by the image (or covers all of it): the ERF against a uniform map over the
        visible part of the TRF (``stats.uniform_reference``: ``region``, ``uniform``, ``vs_uniform``); else None.
        """
        box = self.reference_box
        if box is None or any(b is None for b in box):
            return None
        whole = all(b[0] <= 0 and b[1] >= n - 1 for b, n in zip(box, self.map.shape))
        cut = any(b[0] < 0 or b[1] > n - 1 for b, n in zip(box, self.map.shape))
        if not (cut or whole):
            return None
        return self._lazy("uniform", lambda: stats.uniform_reference(self.map, box))

    @property
    def saturation(self) -> dict | None:
        """Every traced result: the ERF against a uniform map over its TRF box cut to the image, with the
        ``saturated`` flag (``stats.saturation``); None without a bounded box."""
        box = self.reference_box
        if box is None or any(b is None for b in box):
            return None
        return self._lazy("saturation", lambda: stats.saturation(self.map, box))

    @property
    def fit(self):
        """2-D Gaussian fit of the map (``stats.fit_gaussian``), None for other dimensions."""
        return self._lazy("fit", lambda: stats.fit_gaussian(self.map) if self.map.ndim == 2 else None)

    @property
    def axes(self) -> tuple[str, ...]:
        return stats.axis_names(self.map.ndim)

    @property
    def sigma(self) -> tuple[float, ...]:
        """Per-axis moment sigma of the map."""
        return tuple(float(s) for s in stats.moments(self.map).sigma)

    @property
    def sigma_ci(self) -> tuple:
        """Per-axis bootstrap interval of sigma, (lo, hi) or None (the same replicates as ``intervals``).

        Without ``intervals`` cached, only sigma is bootstrapped, on the crop window of a cropped
        run (zeros elsewhere do not move a moment), which is much faster on large inputs.
        """
        names = [f"sigma_{a}" for a in self.axes]
        if "intervals" in self._cache:
            return tuple(self.intervals.get(n) for n in names)
        sums, counts = self.groups
        window = self.settings.get("crop_window")
        if window:
            sums = sums[(slice(None), *(slice(a, b) for a, b in window))]
        found = self._lazy("sigma_ci", lambda: stats.metric_intervals(sums, counts, metrics=names))
        return tuple(found.get(n) for n in names)

    @property
    def ratio(self) -> tuple[float, ...] | None:
        """ERF/TRF ratio per axis (2 sigma / trf), None without a TRF."""
        return None if self.trf is None else tuple(2.0 * s / t for s, t in zip(self.sigma, self.trf))

    def to_dict(self) -> dict:
        """JSON-ready summary (no maps): sigma, sigma_ci, gaussian, trf, ratio, samples, ...

        Statistics that a map cannot have (a signed map has no moments) are None, with the
        reason in ``stats_error``.
        """
        out = {"sigma": None, "sigma_ci": None, "gaussian": None, "ratio": None, "metrics": None,
               "intervals": None, "uniform_reference": None, "saturation": None, "stats_error": None}
        try:
            fit = self.fit
            out.update(sigma=list(self.sigma), sigma_ci=[list(ci) if ci else None for ci in self.sigma_ci],
                       gaussian=None if fit is None else fit.to_dict(), ratio=_list(self.ratio),
                       metrics=self.metrics, intervals={k: _list(v) for k, v in self.intervals.items()},
                       uniform_reference=self.uniform_reference, saturation=self.saturation)
        except ErfError as exc:
            out["stats_error"] = str(exc)
        out.update({
            "ndim": self.map.ndim, "shape": list(self.map.shape), "axes": list(self.axes),
            "trf": _list(self.trf), "trf_strict": _list(self.trf_strict), "samples": self.samples,
            "seconds": self.seconds, "device": self.device,
            "clipped": self.clipped, "cropped": self.cropped, "unit": list(self.unit), "layer": self.layer,
            "trf_box": None if self.trf_box is None else [list(b) for b in self.trf_box],
            "trf_box_unclipped": None if self.trf_box_unclipped is None else [list(b) for b in self.trf_box_unclipped],
            "trf_box_strict": None if self.trf_box_strict is None else [list(b) for b in self.trf_box_strict],
            "trf_center": _list(self.trf_center), "diagnostics": self.diagnostics,
            "notes": list(self.notes), "settings": self.settings,
        })
        return to_json(out)

    def save(self, path) -> Path:
        """Write ``.npz`` (map, se_map, group sums/counts, everything else as JSON); atomic."""
        meta = {k: getattr(self, k) for k in ("samples", "trf", "trf_box", "clipped", "cropped", "unit", "layer",
                                              "device", "seconds", "settings", "notes", "diagnostics",
                                              "trf_box_unclipped", "trf_strict", "trf_box_strict")}
        arrays = {"map": self.map, "group_sums": self.groups[0], "group_counts": self.groups[1],
                  "meta": np.array(json.dumps(to_json(meta)))}
        if self.se_map is not None:
            arrays["se_map"] = self.se_map
        return atomic_write(path, lambda f: save_npz(f, arrays, compressed=True))

    @classmethod
    def load(cls, path) -> ERFResult:
        """Read a file written by ``save``."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                se = z["se_map"] if "se_map" in z.files else None
                arrays = z["map"], se, (z["group_sums"], z["group_counts"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ErfError(f"cannot read ERF result {str(path)!r}: {exc or type(exc).__name__}") from None
        box, full = meta["trf_box"], meta.get("trf_box_unclipped")
        return cls(map=arrays[0], se_map=arrays[1], groups=arrays[2], samples=meta["samples"],
                   trf=None if meta["trf"] is None else tuple(meta["trf"]),
                   trf_box=None if box is None else tuple(tuple(b) for b in box), clipped=meta["clipped"],
                   cropped=meta["cropped"], unit=tuple(meta["unit"]), layer=meta["layer"], device=meta["device"],
                   seconds=meta["seconds"], settings=meta["settings"], notes=meta["notes"],
                   diagnostics=meta.get("diagnostics") or {},
                   trf_box_unclipped=None if full is None else tuple(tuple(b) for b in full),
                   trf_strict=None if meta.get("trf_strict") is None else tuple(meta["trf_strict"]),
                   trf_box_strict=None if meta.get("trf_box_strict") is None
                   else tuple(tuple(b) for b in meta["trf_box_strict"]))

    def plot(self, path=None, scale: str = "linear", title: str | None = None):
        """Heatmap with TRF box and Gaussian fit (``erf.plots.plot_erf``); the file is written atomically."""
        from erf.plots import plot_erf  # lazy: erf.plots loads matplotlib, only needed to draw

        fit = self.fit if self.fit is not None and getattr(self.fit, "ok", False) else False
        title = title or f"{self.layer or 'output'} unit {tuple(self.unit)}, {self.samples} samples"
        kwargs = dict(trf_box=self.trf_box, trf=self.trf, fit=fit, scale=scale, title=title,
                      trf_center=self.trf_center)
        if path is None:
            return plot_erf(self.post_map, **kwargs)
        holder = {}
        atomic_write(path, lambda f: holder.setdefault("fig", plot_erf(self.post_map, path=f, **kwargs)))
        return holder["fig"]

    def __repr__(self) -> str:
        """One line: layer, unit, samples, sigma with its interval, TRF, ERF/TRF, device (``summary()`` says more)."""
        head = f"ERFResult({self.layer or 'output'} unit {tuple(self.unit)}, {self.samples} samples"
        try:
            ci = self.sigma_ci
            sig = ", ".join(f"{a} {s:.3g}" + (f" [{c[0]:.3g}, {c[1]:.3g}]" if c else "")
                            for a, s, c in zip(self.axes, self.sigma, ci))
            parts = [f"sigma {sig}"]
        except ErfError as exc:
            parts = [f"no sigma ({str(exc)[:40]})"]
        if self.trf is not None:
            parts.append(f"TRF {'x'.join(map(str, self.trf))}" + (" clipped" if self.clipped else ""))
            try:
                parts.append("ERF/TRF " + " x ".join(f"{r:.3g}" for r in self.ratio))
            except ErfError:
                pass
        return f"{head}, {', '.join(parts)}, {self.device})"

    def summary(self) -> str:
        """A few readable lines: sigma with CI, Gaussian fit, TRF, ratio, samples, time, notes."""
        d = self.to_dict()
        lines = [f"ERF of {self.layer or 'model output'} unit {tuple(self.unit)} "
                 f"({'x'.join(map(str, self.map.shape))} input)"]
        if d["sigma"] is None:
            lines.append(f"no ERF statistics: {d['stats_error']}")
        else:
            parts = [f"{a} {s:.3f}" + (f" [{c[0]:.3f}, {c[1]:.3f}]" if c else "")
                     for a, s, c in zip(self.axes, d["sigma"], d["sigma_ci"])]
            lines.append("sigma (95% CI): " + ", ".join(parts))
            g = d["gaussian"]
            if g is not None:
                lines.append(f"gaussian fit: sigma {' x '.join(_fmt(v) for v in g['sigma'])}, theta "
                             f"{_fmt(g['theta'])}, R^2 {_fmt(g['r2'], 4)}" if g.get("ok")
                             else f"gaussian fit failed: {g.get('reason')}")
        if self.trf is not None:
            ratio = "" if d["ratio"] is None else ", ERF/TRF (2 sigma / TRF) " + " x ".join(_fmt(r) for r in d["ratio"])
            lines.append(f"TRF {'x'.join(map(str, self.trf))}{ratio}")
        if self.trf_center is not None:
            lines.append("TRF centre (" + ", ".join(f"{c:g}" for c in self.trf_center) + ") px, the reference of "
                         "com_offset" + (f"; visible part of the TRF {d['uniform_reference']['region']}: ERF/uniform "
                         "sigma " + " x ".join(_fmt(d['uniform_reference']['vs_uniform'].get(f"sigma_{a}"))
                                               for a in self.axes)
                         if d.get("uniform_reference") else ""))
        sat = d.get("saturation")
        if sat:
            v = sat["vs_uniform"]
            lines.append("against a uniform map over the TRF box " + str(sat["region"]) + ": mass radius 0.5 "
                         f"{_fmt(v.get('mass_radius_0.5'))}, 0.9 {_fmt(v.get('mass_radius_0.9'))}, sigma "
                         + " x ".join(_fmt(v.get(f"sigma_{a}")) for a in self.axes) + " of it"
                         + (f" (saturated: the ERF fills its TRF, >= {sat['threshold']:g})" if sat["saturated"] else ""))
        dg = self.diagnostics or {}
        if dg.get("ess") is not None:
            lines.append(f"diagnostics: largest sample share {_fmt(dg.get('max_sample_share'))}, largest group "
                         f"share {_fmt(dg.get('max_group_share'))}, effective samples {_fmt(dg.get('ess'), 1)}"
                         + (f", zero-gradient pixels {_fmt(dg.get('zero_grad_fraction'))}"
                            if dg.get("zero_grad_fraction") is not None else ""))
        extra = self._cache.get("interval_seconds")
        lines.append(f"{self.samples} samples in {self.seconds:.2f} s on {self.device}"
                     + (f" (+ {extra:.2f} s for the bootstrap intervals)" if extra is not None else "")
                     + (", cropped to the TRF" if self.cropped else "")
                     + (", TRF clipped at the image border" if self.clipped else ""))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _list(v):
    return None if v is None else [(_list(x) if isinstance(x, (tuple, list)) else x) for x in v]


def place(crop: np.ndarray, window, size) -> np.ndarray:
    """Put a crop-sized array (trailing axes = spatial) back at ``window`` in a zero full-size array."""
    if window is None:
        return crop
    out = np.zeros(crop.shape[: crop.ndim - len(size)] + tuple(size), dtype=crop.dtype)
    out[(Ellipsis, *window)] = crop
    return out


def settings_of(ctx: Context) -> dict[str, Any]:
    """The settings a result records (and a state file's fingerprint starts from), before the loop runs."""
    o = ctx.opts
    return dict(
        layer=ctx.target.layer, unit=list(ctx.unit), channel=o.channel, samples=o.samples,
        inputs=o.inputs if isinstance(o.inputs, str) else "custom", weight_draws=o.weight_draws,
        init=o.init if isinstance(o.init, str) else getattr(o.init, "__name__", "callable"),
        preset=ctx.preset.to_dict(), device=str(ctx.device), dtype=o.dtype, autocast=o.autocast, seed=o.seed,
        crop=o.crop, single_sample=o.single_sample, tol=o.tol, max_samples=o.most_samples if o.tol else None,
        in_channels=ctx.chans, prefix_tokens=o.prefix_tokens, input_size=list(ctx.size), eval_mode=o.eval_mode,
        deterministic=o.deterministic, normalize_draws=o.normalize_draws, bn=o.bn,
        bn_calibrated=ctx.calibrate_bn, normalize_samples=o.normalize_samples)


def make_result(ctx: Context, acc: Accumulator, window: tuple[slice, ...] | None, seconds: float,
                settings: dict[str, Any]) -> ERFResult:
    """The ``ERFResult`` of a finished (and reduced) accumulator, maps placed back at full size.

    Args:
        ctx: the measurement (target, unit, size, device, notes; a border note may be added).
        acc: the summed maps; ``window``: the crop or None.
        seconds: the run's wall time; ``settings``: ``settings_of`` plus what the loop learned.

    Returns:
        The result.
    """
    target, unit, size, notes = ctx.target, ctx.unit, ctx.size, ctx.notes
    sums, counts = acc.groups()
    se = place(stats.standard_error_map(sums, counts), window, size) if len(counts) >= 2 else None  # 0 outside
    # on the crop: the diagnostics use shares and sigmas only, which placing the maps does not change
    diagnostics, flagged = diagnose(sample_masses(acc), acc.gs, sums, counts, ctx.opts.normalize_draws,
                                    ctx.sample_stats)
    sums = place(sums, window, size)
    mean = place((acc.total / acc.n).cpu().numpy(), window, size)
    # gated nets (squeeze-excitation, global norms, attention): ratios and figures use the TRF of the
    # spatial path (rf_local); the strict TRF is kept beside it
    local = target.gated
    box = target.local_box(unit, clip=False) if local else target.box(unit, clip=False)
    if local:
        notes.append(f"TRF {'x'.join(map(str, target.geometry.rf_local))} is rf_local, the spatial path without "
                     f"gates and attention; the strict TRF ({'x'.join(map(str, target.rf))}"
                     f"{', global' if target.geometry.is_global else ''}) reaches further through them")
    clipped = box is not None and any(b is None or b[0] < 0 or b[1] > n - 1 for b, n in zip(box, size))
    if clipped:
        notes.append(f"the unit's TRF {[list(b) for b in box]} reaches past the {'x'.join(map(str, size))} input: "
                     "the ERF is cut at the border")
    settings["crop_window"] = None if window is None else [[w.start, w.stop] for w in window]
    if ctx.opts.normalize_samples:
        notes.append("each input sample's map normalised to unit total before averaging (normalize_samples)")
    for line in flagged:
        warnings.warn(line, stacklevel=3)
        notes.append(line)
    full = None if box is None or any(b is None for b in box) else tuple(tuple(b) for b in box)
    sbox = target.box(unit, clip=False) if local else None
    strict = None if sbox is None or any(b is None for b in sbox) else tuple(tuple(b) for b in sbox)
    return ERFResult(map=mean, se_map=se, samples=acc.n, groups=(sums, counts),
                     trf=tuple(int(v) for v in target.geometry.rf_local) if local else target.rf,
                     trf_box=(target.local_box if local else target.box)(unit, clip=True), clipped=bool(clipped),
                     cropped=window is not None, unit=tuple(unit), layer=target.layer, device=str(ctx.device),
                     seconds=seconds, settings=settings, notes=notes, diagnostics=diagnostics,
                     trf_box_unclipped=full, trf_strict=target.rf if local else None,
                     trf_box_strict=strict if local else None)


def sample_masses(acc: Accumulator) -> np.ndarray:
    """The accumulator's per-sample masses (``Accumulator.sample_mass``); empty where it keeps none."""
    get = getattr(acc, "sample_mass", None)
    return np.zeros(0) if get is None else np.asarray(get(), dtype=np.float64)
