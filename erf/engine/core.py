"""The gradient engine: measure a network's effective receptive field (Luo et al., NIPS 2016).

One forward/backward per batch: the objective is the chosen unit summed over the batch, so
one ``torch.autograd.grad(objective, x)`` returns every sample's input gradient. Parameters
get no gradient, the forward stops at the target layer, and where the analytic TRF says it
is safe the input is cropped to the unit's TRF (checked once against a full-size pass).
Sums are kept in float64: a running map on the device and per-group sums on the host.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import torch
import torch.nn as nn

from erf import determinism, distributed, stats
from erf.engine import setup
from erf.errors import ErfError
from erf.engine.accumulate import MAX_GROUPS, Accumulator, StateFile, final_group_size
from erf.engine.diagnose import locate_nonfinite
from erf.engine.inputs import NoiseSource, sample_key
from erf.engine.result import ERFResult, input_batches, place
from erf.engine.target import TargetRunner, check_unit, plan_crop, resolve_target

__all__ = ["measure", "ERFResult"]



def measure(model: nn.Module, input_size, layer: str | None = None, unit=None, channel: int | None = None,
            samples: int = 64, batch_size: int = 32, inputs="gaussian", weight_draws: int = 0, init="model",
            signal: str = "abs", channel_reduce: str = "sum", preset=None, device: str = "auto",
            dtype: str = "float32", autocast: str | None = None, seed: int = 0, crop="auto",
            single_sample: bool = False, tol: float | None = None, max_samples: int | None = None,
            progress: bool = False, in_channels: int | None = None, eval_mode: bool = True,
            group_size: int | None = None, prefix_tokens: int | None = None, normalize_draws: bool = False,
            deterministic: bool = False, state_file=None, save_every: float = 60.0) -> ERFResult:
    """Measure the ERF of one unit of ``layer`` (default: the model output) over random inputs.

    The map is the mean over samples of ``signal(d target / d input)`` reduced over input
    channels. ``signal='abs'`` (default): with random weights or inputs the signed gradient
    is as often negative as positive, so its mean cancels towards 0 and hides the ERF; |grad|
    measures how strongly each pixel moves the unit. The target is the centre unit
    (``stats.center_unit``: n//2 per axis) or ``unit``, summed over all output channels unless
    ``channel`` picks one. ``preset`` (a name in ``stats.PRESETS``) overrides ``signal``,
    ``channel_reduce`` and the target reduction; its ``post`` goes to ``ERFResult.post_map``.

    ``inputs``: ``'gaussian'`` N(0,1), ``'uniform'`` U(0,1), ``'constant'`` ones, or an iterable of
    tensors ``(C, *input_size)`` / ``(N, C, *input_size)``. Sample i of draw d is generated from
    (seed, d, i) alone, so maps do not depend on ``batch_size``. ``weight_draws=K``: redraw the
    weights K times with ``init`` on a copy (``samples`` per draw). ``crop``: ``'auto'`` crops
    where ``receptive_field`` says it is safe and a one-sample full-size check agrees;
    ``True`` crops without that check; ``False`` never crops. ``tol``: keep sampling after
    ``samples`` until the jackknife relative SE of sigma (all samples so far) < tol or ``max_samples``
    (per draw; default 64x ``samples``). Groups of ``group_size`` consecutive sample indices carry
    the uncertainty (default: one weight draw each when ``weight_draws`` > 1, else samples/32),
    at most 64 groups (the size doubles until they fit). ``eval_mode=False`` keeps the modules'
    modes (train-mode BatchNorm mixes a batch: it warns; ``single_sample=True`` measures one
    sample per pass). The model is never modified.

    ``normalize_draws=True`` (with ``weight_draws`` >= 2): each draw's map is divided by its own
    total before the draws are averaged, so every network counts the same; the gradient
    magnitudes of deep nets differ by orders of magnitude between draws, and a plain average is
    then the map of the loudest draw. Each draw is one group, so intervals are over draws.

    ``prefix_tokens``: tokens before the image grid of a ``(N, L, C)`` layer (class, distillation
    tokens); None finds them in the trace, else from the model's ``num_prefix_tokens`` /
    ``cls_token``; a given count is checked against the model.

    ``deterministic=True`` makes CUDA runs repeat bit for bit (``erf.determinism``); CPU runs
    always do. ``state_file``: save the sums and the loop position there every ``save_every``
    seconds (atomically) and resume from a matching save; the caller removes it when done.
    Under ``torchrun`` (``erf.distributed``) each rank measures its share of the sample
    indices and the sums are added over ranks: the same map as one process.
    """
    t0 = time.perf_counter()
    opts = setup.check_options(samples, batch_size, weight_draws, init, tol, max_samples, crop, autocast, dtype,
                               single_sample, group_size)
    if normalize_draws and not (2 <= weight_draws <= MAX_GROUPS and group_size in (None, samples) and not tol):
        raise ErfError(f"normalize_draws needs 2 to {MAX_GROUPS} weight draws of a fixed sample count, one group each "
                       f"(no group_size, no tol); got weight_draws={weight_draws}")
    dist = distributed.active()
    if dist and tol:
        raise ErfError("tol (adaptive sampling) cannot be split over torchrun processes; give a fixed "
                       "sample count, or run it as one process")
    dev = distributed.device(setup.resolve_device(device))
    fdtype = torch.float64 if dtype == "float64" else torch.float32
    pre = setup.make_preset(preset, signal, channel_reduce)
    notes: list[str] = []
    with setup.frozen(model, eval_mode), determinism.deterministic_mode(deterministic, dev):
        work = setup.working_model(model, dev, fdtype,
                                   copy_needed=opts["redraw"] or setup.has_train_bn(model) or dist)
        distributed.broadcast_module(work)  # every rank measures rank 0's weights
        if opts["redraw"]:
            setup.redraw(work, init, seed, 0)
        size = setup.spatial_size(work, input_size)
        chans = in_channels or setup.default_in_channels(work)
        zeros = torch.zeros((1, chans, *size), device=dev, dtype=fdtype)
        target = resolve_target(setup.float32_view(model), size, layer, chans,
                                probe=lambda t: tuple(TargetRunner(work, t)(zeros).shape),
                                prefix_tokens=prefix_tokens)
        notes += target.notes
        unit = stats.center_unit(target.output) if unit is None else check_unit(unit, target.output)
        bs = opts["batch_size"]
        if setup.has_train_bn(work):
            if single_sample:
                bs = 1
                notes.append("BatchNorm in train mode: one sample per pass (single_sample)")
            else:
                warnings.warn("BatchNorm layers are in train mode: they mix the samples of a batch, so each map "
                              "depends on the others; pass single_sample=True (or keep eval_mode=True)", stacklevel=2)
                notes.append("BatchNorm in train mode mixed the samples of each batch")
        amp = setup.amp_context(dev, autocast, notes)
        t_trace = time.perf_counter()
        window, cunit, crop_notes = None, None, []
        if distributed.is_main():  # rank 0 decides (and checks) the crop for every rank
            window, cunit = _choose_crop(crop, work, target, unit, size, chans, seed, channel, pre, dev, fdtype,
                                         crop_notes)
        window, cunit, crop_notes = distributed.broadcast_object((window, cunit, crop_notes))
        notes += crop_notes
        index = target.index_of(unit) if window is None else _crop_index(target, cunit)
        probe = _Probe(TargetRunner(work, target), pre, channel, amp, index, work)
        shape = tuple(w.stop - w.start for w in window) if window else size
        draws = max(1, weight_draws)
        limit = opts["max_samples"] if tol else samples  # index space per draw
        gs = opts["group_size"](samples, draws)
        acc = Accumulator(shape, dev, gs if tol else final_group_size(gs, draws * limit), merge=bool(tol))
        plan = _plan(draws, limit, bs)
        settings = dict(
            layer=target.layer, unit=list(unit), channel=channel, samples=samples,
            inputs=inputs if isinstance(inputs, str) else "custom", weight_draws=weight_draws,
            init=init if isinstance(init, str) else getattr(init, "__name__", "callable"), preset=pre.to_dict(),
            device=str(dev), dtype=dtype, autocast=autocast, seed=seed, crop=crop, single_sample=single_sample,
            tol=tol, max_samples=opts["max_samples"] if tol else None, in_channels=chans,
            prefix_tokens=prefix_tokens,
            input_size=list(size), eval_mode=eval_mode, deterministic=deterministic, normalize_draws=normalize_draws)
        saver = None if state_file is None else StateFile(state_file, dict(
            settings, window=[[w.start, w.stop] for w in window or ()], group_size=acc.gs,
            world=distributed.world_size(), model=setup.checksum(work)), save_every)
        loop = _Loop(acc, probe, plan, limit, samples, tol, saver, notes, redraw=(
            (lambda d: setup.redraw(work, init, seed, d)) if opts["redraw"] else None),
            source=lambda: _source(inputs, chans, size, dev, fdtype, window), seed=seed)
        bar = setup.progress_bar(progress and distributed.is_main(),
                                 sum(hi - lo for _, lo, hi in plan) if not tol else opts["max_samples"] * draws)
        t_loop = time.perf_counter()
        with amp["tf32"], contextlib.closing(bar):
            bs = loop.run(bs, bar)
        acc.reduce(math.ceil(draws * limit / acc.gs))
        if acc.n == 0:
            raise ErfError("no samples were measured: give samples >= 1 and at least one input")
        if normalize_draws:
            acc.normalize_groups()
            notes.append(f"each of the {len(acc.sums)} weight draws normalised to unit total before averaging")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t_end = time.perf_counter()
        if channel is None and _channels_cancel(acc, probe, seed, chans, size, dev, fdtype, window):
            why = ("the map is about 0 everywhere while single channels are not: the channel sum of this layer does "
                   "not move with the input (e.g. a LayerNorm output); measure another layer or pick channel=")
            warnings.warn(why, stacklevel=2)
            notes.append(why)
    if tol:
        notes.append(f"adaptive stop: {acc.n} samples, relative SE of sigma {acc.relative_se():.3g} "
                     f"(tol {tol:g}, max {opts['max_samples']})")
    if dist:
        notes.append(f"measured by {distributed.world_size()} processes (torch.distributed)")
    settings.update(batch_size=bs, group_size=acc.gs, timing={
        "setup": t_trace - t0, "crop_check": t_loop - t_trace, "sampling": t_end - t_loop})
    return _result(acc, target, unit, window, size, dev, time.perf_counter() - t0, notes, settings)


class _Loop:
    """The sampling loop over this rank's plan: weight redraws, batches, adaptive stop, saves, resume."""

    def __init__(self, acc, probe, plan, limit, samples, tol, saver, notes, redraw, source, seed):
        self.acc, self.probe, self.plan, self.limit, self.samples, self.tol = acc, probe, plan, limit, samples, tol
        self.saver, self.notes, self.redraw, self.source, self.seed = saver, notes, redraw, source, seed

    def run(self, bs: int, bar) -> int:
        """Measure every planned sample (from the last save when one matches); return the final batch size."""
        start, done = 0, None
        saved = self.saver.load() if self.saver else None
        if saved is not None:
            self.acc.restore(*saved)
            start, done, bs = saved[1]["step"], saved[1]["done"], saved[1]["batch_size"]
            self.notes[:] = saved[1]["notes"]
        bar.update(self.acc.n)
        drawn = 0  # the weights hold draw 0 on entry
        for step in range(start, len(self.plan)):
            d, lo, hi = self.plan[step]
            if self.redraw and d != drawn:
                self.redraw(d)
                drawn = d
            bs, done = self._draw(step, d, lo if done is None else done, hi, bs, bar)
            if done < min(hi, self.samples):
                self.notes.append(f"inputs ran out after {done} samples in draw {d}")
            done = None
        return bs

    def _draw(self, step, d, done, hi, bs, bar) -> tuple[int, int]:
        source, acc = self.source(), self.acc
        while done < hi:
            x = source(self.seed, d, done, min(bs, hi - done))
            if x is None:
                break
            bs = acc.run(self.probe, x, d * self.limit + done, bs)
            done += x.shape[0]
            bar.update(x.shape[0])
            if self.tol and done >= self.samples and acc.relative_se() < self.tol:
                break
            if self.saver and self.saver.due(time.perf_counter()):
                self.saver.save(acc, dict(step=step, done=done, batch_size=bs, notes=self.notes), time.perf_counter())
        return bs, done


def _plan(draws: int, limit: int, batch: int) -> list[tuple[int, int, int]]:
    """This rank's work: ``(draw, first, stop)`` sample ranges, a contiguous share of all batches.

    Shares are whole batches of the single-process run, so every sample is measured in the same
    batch as it would be by one process (float32 kernels can round a sample differently in
    another batch); only the float64 sums over ranks add in another order.
    """
    per_draw = math.ceil(limit / batch)
    lo, hi = distributed.share(draws * per_draw)
    plan = []
    for d in range(lo // per_draw, math.ceil(hi / per_draw)):
        a, b = max(lo, d * per_draw) - d * per_draw, min(hi, (d + 1) * per_draw) - d * per_draw
        if a < b:
            plan.append((d, a * batch, min(limit, b * batch)))
    return plan


# ----------------------------------------------------------------------------- one batch


class _Probe:
    """Computes per-sample ERF maps (float64) of one batch: forward, objective, grad, signal."""

    def __init__(self, runner, preset, channel, amp, index, model=None):
        self.runner, self.preset, self.channel, self.amp, self.index = runner, preset, channel, amp, index
        self.model = model

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """Raw input gradient of the (batch-summed) target."""
        x = x.detach().requires_grad_(True)
        with self.amp["ctx"]():
            out = self.runner(x)
            act = _unit_activation(out, self.index, self.channel)
            obj = stats.reduce_target(act, self.preset).sum()
        if not obj.requires_grad:
            raise ErfError("the target does not depend on the input (no gradient path); pick another layer")
        (g,) = torch.autograd.grad(obj, x, allow_unused=True)
        if g is None:
            raise ErfError("the target does not depend on the input (no gradient path); pick another layer")
        return g

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        g = self.grad(x)
        if g.dtype not in (torch.float32, torch.float64):  # bf16/half: reduce in float32
            g = g.float()
        # per-sample signal and channel reduction in the gradient's dtype (C terms); sums over samples in float64
        m = stats.reduce_gradient(g, self.preset, channel_axis=1).to(torch.float64)
        if not bool(torch.isfinite(m).all()):
            where = locate_nonfinite(self.model, self.grad, x) if self.model is not None else "NaN/Inf"
            raise ErfError(f"the input gradient contains NaN or Inf: {where}; check that layer's weights and "
                           "inputs, or try dtype='float64'")
        return m


def _channels_cancel(acc, probe, seed, chans, size, dev, fdtype, window) -> bool:
    """True when the channel-summed map is ~1e-5 of one channel's map: the channels cancel.

    Costs one extra one-sample pass, only for maps whose peak is under 1e-4 (float32 noise
    left by cancelling channels is ~1e-8; a sigmoid net's vanishing map is tiny on every channel).
    """
    peak = float(acc.total.abs().max()) / acc.n
    if peak >= 1e-4:
        return False
    x = _source("gaussian", chans, size, dev, fdtype, window)(seed, 0, 0, 1)
    one = _Probe(probe.runner, probe.preset, 0, probe.amp, probe.index)
    try:
        single = float(one.maps(x).abs().max())
    except ErfError:
        return False
    return single > 0 and peak < 1e-5 * single


def _unit_activation(out: torch.Tensor, index: dict, channel) -> torch.Tensor:
    """(B, channels) activations of the unit: position dims indexed, the rest flattened."""
    sel = [slice(None)] * out.dim()
    for d, i in index.items():
        sel[d] = i
    a = out[tuple(sel)].reshape(out.shape[0], -1)
    if a.dtype in (torch.float16, torch.bfloat16):
        a = a.float()
    if channel is not None:
        if not 0 <= channel < a.shape[1]:
            raise ErfError(f"channel {channel} does not exist: the layer has {a.shape[1]} channels "
                           f"(use 0..{a.shape[1] - 1})")
        a = a[:, channel:channel + 1]
    return a


# ----------------------------------------------------------------------------- inputs


def _source(inputs, chans, size, dev, fdtype, window):
    """``(seed, draw, first, count) -> batch`` (None when the inputs ran out)."""
    win = window or tuple(slice(0, n) for n in size)
    if isinstance(inputs, str):
        if inputs not in ("gaussian", "uniform", "constant"):
            raise ErfError(f"inputs must be 'gaussian', 'uniform', 'constant' or an iterable of tensors; "
                           f"got {inputs!r}")
        noise = NoiseSource(inputs, (chans, *size), dev, fdtype)
        return lambda seed, d, first, b: noise.batch([sample_key(seed, d, first + i) for i in range(b)], win)
    batches = input_batches(inputs, (chans, *size))
    read = [0]  # items of this draw's iteration consumed so far

    def take(seed, d, first, b):
        while read[0] < first:  # samples of other ranks, or measured before a resume: skip them
            skipped = batches(min(first - read[0], 256))
            if skipped is None:
                return None
            read[0] += skipped.shape[0]
        x = batches(b)
        if x is None:
            return None
        read[0] += x.shape[0]
        return x[(slice(None), slice(None), *win)].to(device=dev, dtype=fdtype)
    return take


# ----------------------------------------------------------------------------- cropping


def _choose_crop(crop, work, target, unit, size, chans, seed, channel, pre, dev, fdtype, notes):
    """Window and unit-in-crop, or (None, None) to run at full size (with a note why)."""
    if crop is False:
        return None, None
    if not target.crop_safe or setup.has_train_bn(work):
        why = target.crop_note or ("BatchNorm in train mode mixes the batch" if target.crop_safe
                                   else "the receptive field is unknown")
        if crop is True:
            raise ErfError(f"cannot crop the input for this target: {why}; use crop='auto' or False")
        notes.append(f"not cropped: {why}")
        return None, None
    if None in target.spatial_dims or target.index_of(unit) != _crop_index(target, unit):
        notes.append("not cropped: the layer's positions are not one tensor dim per axis")
        return None, None
    plan = plan_crop(target, unit, size)
    if plan is None:
        return None, None
    window, cunit = plan
    if crop == "auto":
        diff = _crop_check(work, target, unit, cunit, window, size, chans, seed, channel, pre, dev, fdtype)
        if diff is not None:
            notes.append(f"not cropped: a cropped pass differs from the full-size pass ({diff}); measured at full size")
            return None, None
        notes.append("cropped to the unit's TRF: " + " x ".join(f"[{w.start}:{w.stop}]" for w in window)
                     + " (checked against a full-size pass)")
    else:
        notes.append("cropped to the unit's TRF: " + " x ".join(f"[{w.start}:{w.stop}]" for w in window)
                     + " (not checked)")
    return window, cunit


def _crop_index(target, cunit) -> dict[int, int]:
    """Tensor indices of the unit in the cropped map (one tensor dim per spatial axis)."""
    return dict(zip(target.spatial_dims, cunit))


def _crop_check(work, target, unit, cunit, window, size, chans, seed, channel, pre, dev, fdtype):
    """Compare one sample's full-size input gradient with the cropped one; None when they agree.

    Both run in the measurement dtype (no autocast) and are compared in float64: a float64
    measurement must agree to 1e-9 of the largest gradient, a float32 one to 1e-3 (its
    rounding differs between input sizes; a wrong crop differs by O(1)). A float64 check of a
    float32 model would cost 3x a float32 pass on CPU, for no better detection.
    """
    rtol = 1e-9 if fdtype == torch.float64 else 1e-3
    x = NoiseSource("gaussian", (chans, *size), dev, fdtype).batch([sample_key(seed, 0, 0)],
                                                                    tuple(slice(0, n) for n in size))
    amp = {"ctx": contextlib.nullcontext}
    full = _Probe(TargetRunner(work, target), pre, channel, amp, target.index_of(unit)).grad(x).double()
    part = _Probe(TargetRunner(work, target), pre, channel, amp, _crop_index(target, cunit))
    part = part.grad(x[(slice(None), slice(None), *window)]).double()
    placed = torch.zeros_like(full)
    placed[(slice(None), slice(None), *window)] = part
    scale = float(full.abs().max())
    err = float((placed - full).abs().max())
    if not scale > 0 or not err <= rtol * scale:
        return f"max difference {err:.3g} of max {scale:.3g}"
    return None


# ----------------------------------------------------------------------------- result


def _result(acc, target, unit, window, size, dev, seconds, notes, settings) -> ERFResult:
    sums, counts = acc.groups()
    sums = place(sums, window, size)
    mean = place((acc.total / acc.n).cpu().numpy(), window, size)
    se = stats.standard_error_map(sums, counts) if len(counts) >= 2 else None
    box = target.box(unit, clip=False)
    clipped = box is not None and any(b is None or b[0] < 0 or b[1] > n - 1 for b, n in zip(box, size))
    if clipped:
        notes.append(f"the unit's TRF {[list(b) for b in box]} reaches past the {'x'.join(map(str, size))} input: "
                     "the ERF is cut at the border")
    settings["crop_window"] = None if window is None else [[w.start, w.stop] for w in window]
    return ERFResult(map=mean, se_map=se, samples=acc.n, groups=(sums, counts), trf=target.rf,
                     trf_box=target.box(unit, clip=True), clipped=bool(clipped), cropped=window is not None,
                     unit=tuple(unit), layer=target.layer, device=str(dev), seconds=seconds, settings=settings,
                     notes=notes)
