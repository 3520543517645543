"""``profile()``: the ERF of several targets (layers, or units of one layer) from shared passes.

A wrapper around the engine's steps, not a flag of ``measure``: every target is a
``(layer, unit)`` pair. Each batch assigns its samples to the targets in turn (input sample
``g`` of a draw goes to target ``g % K``; it is that target's sample ``g // K``), and the
objective is the sum over samples of each sample's own target unit. So one forward (stopped
once the last target's tensor exists) and one backward give every target's maps: a profile of
``K`` layers with ``n`` samples each costs about one measurement of its deepest layer with
``K * n`` samples, and its setup (trace, working copy, BatchNorm calibration) is paid once.

Exact: target ``k``'s map is ``erf.measure`` of that layer and unit alone on the same input
samples (input samples ``K*j + k``, ``j = 0..n-1``), up to float rounding (the batches differ);
``tests/test_profile.py`` checks it in float64. Samples do not interact: eval-mode BatchNorm
is per sample (train-mode BatchNorm needs ``single_sample``, as for ``measure``). Every target
runs on the full input (no crop or cone: the targets share the pass); each result says so.

``measure_targets`` is the step; ``profile`` (layers, centre units) and
``erf.engine.grid.measure_grid`` (units of one layer) are its two wrappers.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from erf import determinism, distributed, stats
from erf.analytic import capture, infer_in_channels, receptive_field, spatial_size
from erf.device import resolve_device
from erf.engine.accumulate import Accumulator, OutOfMemory, final_group_size
from erf.engine.context import Context, float32_view, frozen, prepare, trf_mask
from erf.engine.diagnostics import SampleStats
from erf.engine.inputs import make_source
from erf.engine.loop import progress_bar
from erf.engine.options import MeasureOptions
from erf.engine.probe import unit_activation
from erf.engine.ranks import Ranks
from erf.engine.result import ERFResult, make_result, settings_of
from erf.engine.target import Target, TargetRunner, call_note, check_unit, require_spatial, resolve_target
from erf.engine.tokens import check_traced, check_value
from erf.errors import ErfError, ModelError, TraceError

__all__ = ["profile", "measure_targets", "Profile", "SharedRunner", "SharedProbe", "depth_order", "erf_sizes",
           "target_from_report"]

TargetSpec = tuple  # (layer name or None, unit tuple or None[, output channel or None])


class _Done(Exception):
    """Raised by a forward hook once every target's tensor exists."""


class SharedRunner:
    """Callable ``x -> [tensor of each target]``: one forward that stops once the last target's tensor exists.

    Module targets are caught by forward hooks (several calls of one module are counted, as
    ``TargetRunner`` does); functional targets (``erf.analytic.capture``) and the model output
    need the whole forward, which then runs to its end.
    """

    def __init__(self, model: nn.Module, targets: Sequence[Target]):
        """
        Args:
            model: the working model.
            targets: the targets (``erf.engine.target.Target``), several may share one layer.

        Raises:
            ModelError: a target names a module the model lacks.
        """
        self.model, self.targets = model, list(targets)
        modules = dict(model.named_modules())
        self.functional = sorted({t.functional for t in self.targets if t.functional is not None})
        self.hooked: dict[str, dict[int, list[int]]] = {}  # module name -> call index -> target indices
        self.whole: list[int] = []
        for i, t in enumerate(self.targets):
            if t.functional is not None:
                continue
            if t.module is None or modules.get(t.module) is model:
                self.whole.append(i)
                continue
            if t.module not in modules:
                raise ModelError(f"layer {t.layer!r} names module {t.module!r}, which the model lacks")
            self.hooked.setdefault(t.module, {}).setdefault(t.call_index, []).append(i)
        self.modules = {name: modules[name] for name in self.hooked}
        self.stops = not self.functional and not self.whole

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The targets' tensors for the batch ``x`` (one forward).

        Args:
            x: the input batch.

        Returns:
            One tensor per target, in the targets' order (targets of one layer share it).

        Raises:
            ModelError: a target not reached by the forward, or one that is not a tensor.
        """
        outs: list[Any] = [None] * len(self.targets)
        wanted = sum(len(c) for c in self.hooked.values())
        state = {"got": 0}
        handles = []
        for name, calls in self.hooked.items():
            count = {"n": 0}

            def hook(_mod, _inp, output, calls=calls, count=count):
                ids = calls.get(count["n"])
                count["n"] += 1
                if ids is None:
                    return
                for i in ids:
                    outs[i] = output
                state["got"] += 1
                if self.stops and state["got"] == wanted:
                    raise _Done

            handles.append(self.modules[name].register_forward_hook(hook))
        try:
            if self.functional:
                got = capture(self.model, x, self.functional)
                for i, t in enumerate(self.targets):
                    if t.functional is not None:
                        outs[i] = got[t.functional]
                out = None if not self.whole else self.model(x)
            else:
                out = self.model(x)
            for i in self.whole:
                outs[i] = out
        except _Done:
            pass
        finally:
            for h in handles:
                h.remove()
        for t, o in zip(self.targets, outs):
            if o is None:
                raise ModelError(f"layer {t.layer or t.module!r} was not reached by the forward pass "
                                 f"(call {t.call_index} of module {t.module!r})")
            if not isinstance(o, torch.Tensor):
                raise ModelError(f"layer {t.layer or 'output'!r} returns {type(o).__name__}, not a tensor; "
                                 "pick a layer that returns one tensor")
        return outs


class SharedProbe:
    """Per-sample float64 maps of a batch whose sample ``g`` belongs to target ``g % K`` (one forward/backward)."""

    def __init__(self, runner: SharedRunner, indices: Sequence[dict[int, int]], preset: stats.Preset,
                 channels: Sequence[int | None], amp: dict[str, Any]):
        """
        Args:
            runner: the shared forward.
            indices: per target, tensor dim -> index of its unit (``Target.index_of``).
            preset: the map definition.
            channels: per target, one output channel (a class of a dense output), or None for the sum over all.
            amp: ``{"ctx": autocast context factory}``.
        """
        self.runner, self.indices, self.preset, self.amp = runner, list(indices), preset, amp
        self.channels = list(channels)

    def maps(self, x: torch.Tensor, first: int) -> torch.Tensor:
        """Maps ``(B, *spatial)`` of the batch ``x`` whose first row is input sample ``first`` of its draw.

        Args:
            x: the batch; row ``r`` is input sample ``first + r``, measured for target ``(first + r) % K``.
            first: the input sample index of the first row.

        Returns:
            The per-sample float64 maps (signal and channel reduction of ``preset``), rows as in ``x``.

        Raises:
            ErfError: no gradient path from a target to the input.
        """
        k_all = len(self.indices)
        x = x.detach().requires_grad_(True)
        with self.amp["ctx"]():
            outs = self.runner(x)
            obj = None
            for k in range(k_all):
                r0 = (k - first) % k_all
                if r0 >= x.shape[0]:
                    continue
                act = unit_activation(outs[k][r0::k_all], self.indices[k], self.channels[k])
                term = stats.reduce_target(act, self.preset).sum()
                obj = term if obj is None else obj + term
        if obj is None or not obj.requires_grad:
            raise ErfError("a target does not depend on the input (no gradient path); pick another layer")
        (g,) = torch.autograd.grad(obj, x, allow_unused=True)
        if g is None:
            raise ErfError("a target does not depend on the input (no gradient path); pick another layer")
        if g.dtype not in (torch.float32, torch.float64):
            g = g.float()
        return stats.reduce_gradient(g, self.preset, channel_axis=1).to(torch.float64)


class _Given:
    """A map source that returns the maps it is given (``SampleStats`` over maps already computed)."""

    def maps(self, m: torch.Tensor) -> torch.Tensor:
        return m


@dataclass(eq=False)
class Profile:
    """The ERF of several layers of one network from shared passes, in depth order.

    Attributes:
        results: one ``ERFResult`` per layer, shallowest first.
        jumps: each layer's input stride between neighbouring units (None without a trace).
        outputs: each layer's spatial map size.
        seconds: the whole profile's wall time (every result's ``seconds`` is this shared time).
        asked: the layer names as given (``"layer1"``), in the same order as ``results``.
    """

    results: list[ERFResult]
    jumps: list[tuple[float, ...] | None] = field(default_factory=list)
    outputs: list[tuple[int, ...] | None] = field(default_factory=list)
    seconds: float = 0.0
    asked: list[str | None] = field(default_factory=list)

    @property
    def layers(self) -> list[str | None]:
        """The layers' names as the trace names them, shallowest first."""
        return [r.layer for r in self.results]

    def __getitem__(self, layer: str | int) -> ERFResult:
        """The result of ``layer`` (its name as given, its traced name, or an index)."""
        if isinstance(layer, int):
            return self.results[layer]
        for i, r in enumerate(self.results):
            if r.layer == layer or (i < len(self.asked) and self.asked[i] == layer):
                return r
        raise KeyError(layer)

    def __len__(self) -> int:
        return len(self.results)

    def rows(self) -> list[dict[str, Any]]:
        """The table's content.

        Returns:
            One dict per layer: layer, output, trf, jump, samples, sigma, sigma_ci, erf_size (2 sigma),
            erf_size_ci, ratio (ERF/TRF), clipped, trf_center.
        """
        out = []
        for r, jump, shape in zip(self.results, self.jumps or [None] * len(self), self.outputs or [None] * len(self)):
            sigma = r.sigma
            ci = r.sigma_ci
            out.append({"layer": r.layer, "output": None if shape is None else list(shape),
                        "trf": None if r.trf is None else list(r.trf),
                        "jump": None if jump is None else [float(j) for j in jump], "samples": r.samples,
                        "sigma": list(sigma), "sigma_ci": [None if c is None else list(c) for c in ci],
                        "erf_size": [2 * s for s in sigma],
                        "erf_size_ci": [None if c is None else [2 * c[0], 2 * c[1]] for c in ci],
                        "ratio": None if r.ratio is None else list(r.ratio), "clipped": r.clipped,
                        "trf_center": None if r.trf_center is None else list(r.trf_center)})
        return out

    def table(self) -> str:
        """A text table: per layer its map, TRF, jump, samples, ERF size 2 sigma with 95% CI, ERF/TRF."""
        head = ["layer", "output", "TRF", "jump", "samples", "ERF size 2σ (95% CI)", "ERF/TRF"]
        lines = []
        for row in self.rows():
            size = ", ".join(f"{s:.1f}" + (f" [{c[0]:.1f}, {c[1]:.1f}]" if c else "")
                             for s, c in zip(row["erf_size"], row["erf_size_ci"]))
            lines.append([str(row["layer"]), _x(row["output"]),
                          _x(row["trf"]) + (" clipped" if row["clipped"] else ""),
                          _x(None if row["jump"] is None else [f"{j:g}" for j in row["jump"]]),
                          str(row["samples"]), size,
                          "n/a" if row["ratio"] is None else " x ".join(f"{v:.3f}" for v in row["ratio"])])
        widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        text = [fmt.format(*head)] + [fmt.format(*r) for r in lines]
        return "\n".join(text) + f"\n{len(self)} layers from shared passes in {self.seconds:.2f} s"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the rows, each layer's ``ERFResult.to_dict()`` and the time."""
        return {"layers": self.rows(), "results": [r.to_dict() for r in self.results], "seconds": self.seconds}

    def plot(self, path: Any = None):
        """ERF size (2 sigma, 95% CI) and TRF per layer, ERF/TRF per layer, and each layer's map
        (``erf.profile_plots.plot_profile``); written to ``path`` when given.

        Returns:
            The matplotlib figure.
        """
        from erf.profile_plots import plot_profile  # lazy: matplotlib only to draw

        return plot_profile(self, path)


def _x(v) -> str:
    return "n/a" if v is None else "x".join(str(int(x)) if isinstance(x, (int, float)) else str(x) for x in v)


def depth_order(model: nn.Module, size: tuple[int, ...], layers: Sequence[str | None],
                in_channels: int | None = None) -> tuple[list[int], str | None]:
    """The order of ``layers`` in the traced forward pass (shallowest first), and a note when it is a guess.

    Args:
        model: the network (float32, as the tracer feeds it).
        size: the input's spatial size; ``in_channels``: its channels.
        layers: layer names as ``erf rf`` lists them (None: the model output).

    Returns:
        ``(order, note)``: indices into ``layers``; the note (else None) says the model could not be traced and
        the layers are taken in the order given (the last one the deepest).

    Raises:
        ModelError: a layer the trace does not know (with the closest names).
    """
    return _order(_full_report(model, size, in_channels), layers)


def _full_report(model: nn.Module, size: tuple[int, ...], in_channels: int | None) -> Any:
    """Every layer's TRF from one trace (its ``target`` the output), or None when the model cannot be traced."""
    try:
        return receptive_field(model, size, in_channels=in_channels)
    except TraceError:
        return None


def _order(rep: Any, layers: Sequence[str | None]) -> tuple[list[int], str | None]:
    if rep is None:
        return list(range(len(layers))), ("the model could not be traced: the layers are taken in the order given, "
                                          "the last one as the deepest")
    pos = {id(row): i for i, row in enumerate(rep.layers)}
    depth = [pos[id(rep.target)] if name is None else pos[id(rep.layer(name))] for name in layers]
    return sorted(range(len(layers)), key=lambda i: (depth[i], i)), None


def target_from_report(rep: Any, output: Any, layer: str | None, prefix_tokens: int | None) -> Target:
    """The ``Target`` of ``layer`` from a report traced once for every layer (what ``resolve_target`` builds from
    its own trace; a profile of K layers then traces twice, not K + 1 times).

    Args:
        rep: ``erf.analytic.receptive_field``'s report of the whole model (its ``target`` is set here).
        output: the report's output row (its ``target`` as traced).
        layer: the layer's name (None: the output).
        prefix_tokens: the user's prefix-token count, or None.

    Returns:
        The target.

    Raises:
        ErfError: an unknown layer, a layer without a spatial map, a prefix count that does not fit.
    """
    prefix_tokens = check_value(prefix_tokens)
    rep.target = output if layer is None else rep.layer(layer)
    require_spatial(rep)
    t = rep.target
    return Target(layer=t.name, module=t.module, call_index=int(t.call_index or 0),
                  functional=t.name if t.module is None else None,
                  output=tuple(int(v) for v in t.output), spatial_dims=tuple(t.spatial_dims),
                  geometry=t, crop_safe=bool(rep.crop_safe), crop_note=str(rep.crop_note or ""),
                  notes=check_traced(t, prefix_tokens, t.name) + call_note(rep, layer))


def _check(opts: MeasureOptions, what: str) -> None:
    if opts.tol is not None:
        raise ErfError(f"{what} takes a fixed sample count per target: drop tol (and max_samples)")
    if opts.state_file is not None:
        raise ErfError(f"{what} is not resumable: drop state_file")
    if distributed.active():
        raise ErfError(f"{what} runs in one process: run it without torchrun")


def measure_targets(model: nn.Module, input_size: Any, targets: Sequence[TargetSpec],
                    options: MeasureOptions | None = None, **kwargs: Any) -> list[ERFResult]:
    """The ERF of several ``(layer, unit)`` targets from shared passes (see the module docstring).

    Input sample ``g`` of each weight draw is measured for target ``g % K`` (``K`` targets) as that
    target's sample ``g // K``; every target gets ``samples`` samples per draw.

    Args:
        model: the network (never modified).
        input_size: the input's spatial size (an int for every axis, or one per axis).
        targets: ``(layer, unit)`` pairs: a layer name as ``erf rf`` lists it (None: the model output) and a
            unit (None: the layer's centre unit); or ``(layer, unit, channel)``: one output channel of that unit
            (a class of a dense output; None or no third item: ``options.channel``). At least one; none twice.
        options: a ``MeasureOptions`` (default: all defaults); its ``layer`` and ``unit`` must be unset.
        **kwargs: any ``MeasureOptions`` field, overriding ``options``.

    Returns:
        One ``ERFResult`` per target, in the order given.

    Raises:
        ErfError: no targets, a repeated target, ``layer``/``unit``/``tol``/``state_file`` set, torchrun, a bad
            option, layer or unit, no gradient path, NaN gradients.
    """
    return _shared(model, input_size, targets, MeasureOptions.build(options, **kwargs))[0]


def _shared(model: nn.Module, input_size: Any, targets: Sequence[TargetSpec],
            opts: MeasureOptions) -> tuple[list[ERFResult], list[int]]:
    """``measure_targets``, and the targets' depth order (indices, shallowest first)."""
    t0 = time.perf_counter()
    _check(opts, "a shared-pass measurement")
    specs, channels = [], []
    for spec in targets:
        if isinstance(spec, str) or not 2 <= len(spec) <= 3:
            raise ErfError(f"a target is (layer, unit) or (layer, unit, channel); got {spec!r}")
        layer, unit = spec[0], spec[1]
        channel = spec[2] if len(spec) == 3 and spec[2] is not None else opts.channel
        if channel is not None and (not isinstance(channel, (int, np.integer)) or isinstance(channel, bool)):
            raise ErfError(f"a target's channel must be an integer (a class of the output); got {channel!r}")
        specs.append((layer, None if unit is None else tuple(int(u) for u in unit)))
        channels.append(None if channel is None else int(channel))
    if not specs:
        raise ErfError("give at least one target: a layer name (profile) or a unit (grid)")
    if len(set(zip(specs, channels))) != len(specs):
        raise ErfError("a target is listed twice: give each (layer, unit, channel) once")
    if opts.layer is not None or opts.unit is not None:
        raise ErfError("the targets name the layers and units: drop layer= and unit= (use layers= or units=)")
    dev = resolve_device(opts.device)
    preset = opts.make_preset()
    notes: list[str] = []
    ranks = Ranks(None)
    with frozen(model, opts.eval_mode), determinism.deterministic_mode(opts.deterministic, dev):
        f32 = float32_view(model)
        size = spatial_size(model, input_size)
        rep = _full_report(f32, size, opts.in_channels or infer_in_channels(model))  # the one trace of every layer
        final = None if rep is None else rep.target
        order, order_note = _order(rep, [s[0] for s in specs])
        deep = order[-1]
        ctx = prepare(model, input_size, MeasureOptions.build(opts, layer=specs[deep][0], unit=specs[deep][1]),
                      dev, preset, ranks, notes)  # BatchNorm calibrated up to the deepest layer
        own = set(ctx.target.notes)
        base = [n for n in notes if n not in own] + ([order_note] if order_note else [])
        zeros = torch.zeros((1, ctx.chans, *ctx.size), device=dev, dtype=ctx.dtype)
        found: dict[str | None, Target] = {specs[deep][0]: ctx.target}
        resolved: list[tuple[Target, tuple[int, ...]]] = []
        for layer, unit in specs:
            if layer not in found:
                found[layer] = target_from_report(rep, final, layer, opts.prefix_tokens) if rep is not None else \
                    resolve_target(f32, ctx.size, layer, ctx.chans,
                                   probe=lambda t: tuple(TargetRunner(ctx.model, t)(zeros).shape),
                                   prefix_tokens=opts.prefix_tokens)
            t = found[layer]
            u = preset.center(t.output, t.tokens) if unit is None else check_unit(unit, t.output)
            resolved.append((t, u))
        if len({(t.layer, u, c) for (t, u), c in zip(resolved, channels)}) != len(resolved):
            raise ErfError("two targets name the same layer and unit (an alias and its name?): give each once")
        k_all, n = len(resolved), opts.samples
        probe = SharedProbe(SharedRunner(ctx.model, [t for t, _ in resolved]),
                            [t.index_of(u) for t, u in resolved], preset, channels, ctx.amp)
        gs = final_group_size(opts.draw_group_size(), opts.draws * n)
        accs = [Accumulator(ctx.size, dev, gs) for _ in resolved]
        kept = [SampleStats(_Given(), trf_mask(t.box(u, clip=True), None, ctx.size, dev), opts.normalize_samples)
                for t, u in resolved]
        bs, t_loop = ctx.batch, time.perf_counter()
        bar = progress_bar(opts.progress, opts.draws * k_all * n)
        with ctx.amp["tf32"], bar:
            for d in range(opts.draws):
                if opts.redraws and d:
                    ctx.redraw(d)
                _draw(ctx, probe, accs, kept, d, k_all, n, bs, notes, bar)
        for acc, (t, u) in zip(accs, resolved):
            if acc.first_nonfinite() is not None:
                raise ErfError(f"the input gradient of layer {t.layer or 'output'!r} unit {u} contains NaN or Inf; "
                               "check the model's weights and inputs, or try dtype='float64'")
            if acc.n == 0:
                raise ErfError("no samples were measured: give samples >= 1 and at least one input")
            if opts.normalize_draws:
                acc.normalize_groups()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t_end = time.perf_counter()
    results = []
    for k, ((t, u), acc, st) in enumerate(zip(resolved, accs, kept)):
        mine = list(base) + (list(t.notes) if t is not ctx.target else list(own))
        mine.append(f"measured in shared passes with {k_all - 1} other target(s), on the full input (no crop or "
                    f"cone): this target's sample j is input sample {k_all}*j+{k} of each draw" if k_all > 1 else
                    "measured by the shared-pass engine on the full input (no crop or cone)")
        if opts.normalize_draws:
            mine.append(f"each of the {opts.draws} weight draws normalised to unit total before averaging")
        c = dataclasses.replace(ctx, opts=MeasureOptions.build(ctx.opts, channel=channels[k]), target=t, unit=u,
                                notes=mine, sample_stats=st)
        settings = dict(settings_of(c), cone=False, auto_batch=False, batch_size=bs, group_size=acc.gs,
                        shared={"targets": k_all, "index": k, "input_samples_per_draw": k_all * n},
                        layer_output=list(t.output or ()), jump=None if t.jump is None else [float(j) for j in t.jump],
                        timing={"setup": t_loop - t0, "sampling": t_end - t_loop, "shared": True})
        results.append(make_result(c, acc, None, time.perf_counter() - t0, settings))
    return results, order


def _draw(ctx: Context, probe: SharedProbe, accs: list[Accumulator], kept: list[SampleStats], d: int, k_all: int,
          n: int, bs: int, notes: list[str], bar: Any) -> None:
    """Measure draw ``d``: input samples ``0 .. K*n - 1`` in batches, each row into its target's sums."""
    opts = ctx.opts
    source = make_source(opts.inputs, (ctx.chans, *ctx.size), ctx.device, ctx.dtype, None, model=ctx.model,
                         mean=opts.mean, std=opts.std, notes=notes)
    lo, total = 0, k_all * n
    while lo < total:
        x = source(opts.seed, d, lo, min(bs, total - lo))
        if x is None:
            notes.append(f"inputs ran out after {lo} input samples in draw {d}")
            return
        try:
            m = probe.maps(x, lo)
        except OutOfMemory:
            raise ErfError(f"out of memory with a batch of {x.shape[0]}: give a smaller batch_size") from None
        for k in range(k_all):
            r0 = (k - lo) % k_all
            if r0 < x.shape[0]:
                accs[k].add(kept[k].maps(m[r0::k_all]), d * opts.per_draw + (lo + r0 - k) // k_all)
        lo += x.shape[0]
        bar.update(x.shape[0])


def profile(model: nn.Module, input_size: Any, layers: Sequence[str | None], options: MeasureOptions | None = None,
            **kwargs: Any) -> Profile:
    """The ERF of the centre unit of each of ``layers`` from shared passes: the growth of the ERF through depth.

    Each layer gets ``samples`` input samples per draw; the profile costs about one measurement of
    the deepest layer with ``len(layers) * samples`` samples (module docstring). Each layer's map
    equals ``erf.measure`` of that layer alone on the same input samples.

    Args:
        model: the network (never modified).
        input_size: the input's spatial size (an int for every axis, or one per axis).
        layers: layer names as ``erf rf`` lists them (``"layer1"``, ``"features.30"``; None: the output), in
            any order; the profile sorts them by depth.
        options: a ``MeasureOptions``; its ``layer`` and ``unit`` must be unset.
        **kwargs: any ``MeasureOptions`` field (samples, batch_size, dtype, weight_draws, init, bn, ...).

    Returns:
        The ``Profile`` (``table()``, ``plot()``, ``results``: one ``ERFResult`` per layer).

    Raises:
        ErfError: no layers, a layer named twice, an unknown layer, a bad option (see ``measure_targets``).
    """
    if isinstance(layers, str) or layers is None:
        raise ErfError("layers must be a list of layer names, e.g. ['layer1', 'layer2']")
    layers = list(layers)
    if not layers:
        raise ErfError("give at least one layer: layers=['layer1', ...] (see 'erf rf MODEL')")
    if len(set(layers)) != len(layers):
        raise ErfError("a layer is named twice in layers: give each once")
    t0 = time.perf_counter()
    res, order = _shared(model, input_size, [(layer, None) for layer in layers],
                         MeasureOptions.build(options, **kwargs))
    res = [res[i] for i in order]
    return Profile(res, [None if r.settings["jump"] is None else tuple(r.settings["jump"]) for r in res],
                   [tuple(r.settings["layer_output"]) or None for r in res], time.perf_counter() - t0,
                   [layers[i] for i in order])


def erf_sizes(results: Sequence[ERFResult]) -> np.ndarray:
    """``(len(results), ndim)`` ERF sizes 2 sigma (px) per axis.

    Args:
        results: measured results (non-negative maps).

    Returns:
        The sizes.
    """
    return np.array([[2 * s for s in r.sigma] for r in results], dtype=np.float64)
