"""``measure()``: the gradient engine's orchestrator (Luo et al., NIPS 2016).

One forward/backward per batch: the objective is the chosen unit summed over the batch, so
one ``torch.autograd.grad(objective, x)`` returns every sample's input gradient. Parameters
get no gradient, the forward stops at the target layer, and where the analytic TRF says it
is safe the input is cropped to the unit's TRF (checked once against a full-size pass).
Sums are kept in float64: a running map on the device and per-group sums on the host.

The steps, each in its own module: ``options`` -> ``context`` (working model, target, unit)
-> ``crop`` -> ``probe`` -> ``loop`` (given ``ranks`` and ``resume``) -> ``result``.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from typing import Any

import torch
import torch.nn as nn

from erf import determinism
from erf.device import resolve_device
from erf.engine.accumulate import Accumulator, final_group_size
from erf.engine.cone import choose_cone
from erf.engine.context import frozen, prepare
from erf.engine.crop import choose_crop, crop_index, full_gradient
from erf.engine.inputs import make_source
from erf.engine.loop import MAX_AUTO_BATCH, Loop, channels_last_model, fit_batch, plan_shares, progress_bar
from erf.engine.options import MeasureOptions
from erf.engine.probe import Probe, channels_cancel
from erf.engine.ranks import Ranks
from erf.engine.result import ERFResult, make_result, settings_of
from erf.engine.resume import NoSaves, StateFile, checksum
from erf.engine.target import TargetRunner
from erf.errors import ErfError

__all__ = ["measure"]

_CANCEL = ("the map is about 0 everywhere while single channels are not: the channel sum of this layer does "
           "not move with the input (e.g. a LayerNorm output); measure another layer or pick channel=")


def measure(model: nn.Module, input_size: Any, options: MeasureOptions | None = None, **kwargs: Any) -> ERFResult:
    """Measure the ERF of one unit of a layer (default: the model output) over random inputs.

    The map is the mean over samples of ``signal(d target / d input)`` reduced over input
    channels (``signal='abs'`` by default: a signed gradient's mean cancels towards 0). The
    model is never modified. Under ``torchrun`` (``erf.distributed``) each rank measures its
    share of the sample indices and the sums are added over ranks: the same map as one process.

    Args:
        model: the network (any ``nn.Module``; its weights, modes and flags are left as they are).
        input_size: the input's spatial size (an int for every axis, or one per axis).
        options: a ``MeasureOptions`` (default: all defaults).
        **kwargs: any ``MeasureOptions`` field (layer, unit, samples, batch_size, inputs, weight_draws,
            init, signal, preset, device, dtype, tol, state_file, ...), overriding ``options``.

    Returns:
        The ``ERFResult``.

    Raises:
        ErfError: a bad option, layer, unit or device; no gradient path; NaN gradients; no samples.
        TypeError: a keyword that is not an option.
    """
    t0 = time.perf_counter()
    opts = MeasureOptions.build(options, **kwargs)
    ranks = Ranks(opts.tol)
    dev = ranks.device(resolve_device(opts.device))
    preset = opts.make_preset()
    notes: list[str] = []
    with frozen(model, opts.eval_mode), determinism.deterministic_mode(opts.deterministic, dev):
        ctx = prepare(model, input_size, opts, dev, preset, ranks, notes)
        if dev.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in ctx.model.modules()):
            ctx.model = channels_last_model(ctx.model, model)  # cuDNN's NHWC kernels
        t_trace = time.perf_counter()
        reference = functools.cache(lambda: full_gradient(ctx))  # one uncropped pass for both checks
        window, cunit, crop_notes = ranks.from_main(lambda: choose_crop(ctx, reference), (None, None, []))
        notes += crop_notes
        index = ctx.target.index_of(ctx.unit) if window is None else crop_index(ctx.target, cunit)
        probe = Probe(TargetRunner(ctx.model, ctx.target), preset, opts.channel, ctx.amp, index, ctx.model,
                      check=not isinstance(opts.inputs, str))  # noise can be made again: its NaN check waits
        runner, cone_index, cone_notes = choose_cone(ctx, window, probe, reference)  # every rank: the same plan
        notes += cone_notes
        fast = probe if runner is None else Probe(runner, preset, opts.channel, ctx.amp, cone_index, ctx.model,
                                                  check=probe.check)
        shape = tuple(w.stop - w.start for w in window) if window else ctx.size
        auto = opts.auto_batch and dev.type == "cuda" and not ranks.active and ctx.batch > 1 and isinstance(
            opts.inputs, str)
        if auto:
            source = make_source(opts.inputs, (ctx.chans, *ctx.size), dev, ctx.dtype, window)
            ctx.batch = fit_batch(fast.maps, lambda b: source(opts.seed, 0, 0, b),
                                  min(opts.per_draw, MAX_AUTO_BATCH))
        gs = opts.draw_group_size()
        acc = Accumulator(shape, dev, gs if opts.tol else final_group_size(gs, opts.draws * opts.per_draw),
                          merge=bool(opts.tol))
        plan = plan_shares(opts.draws, opts.per_draw, ctx.batch, ranks.share)
        settings = dict(settings_of(ctx), cone=runner is not None, auto_batch=auto)
        saves = NoSaves() if opts.state_file is None else StateFile(ranks.state_path(opts.state_file), dict(
            settings, window=[[w.start, w.stop] for w in window or ()], group_size=acc.gs, world=ranks.world,
            model=checksum(ctx.model)), opts.save_every)
        loop = Loop(ctx, acc, ctx.record(fast, window), plan,
                    lambda: make_source(opts.inputs, (ctx.chans, *ctx.size), dev, ctx.dtype, window,
                                        model=ctx.model, mean=opts.mean, std=opts.std, notes=notes), saves,
                    locate=probe.locate)
        bar = progress_bar(opts.progress and ranks.is_main,
                           sum(hi - lo for _, lo, hi in plan) if not opts.tol else opts.most_samples * opts.draws)
        t_loop = time.perf_counter()
        with ctx.amp["tf32"], bar:  # on an error the bar closes without its "done" line
            bs = loop.run(ctx.batch, bar)
        ranks.reduce(acc, math.ceil(opts.draws * opts.per_draw / acc.gs))
        if acc.n == 0:
            raise ErfError("no samples were measured: give samples >= 1 and at least one input")
        if opts.normalize_draws:
            acc.normalize_groups()
            notes.append(f"each of the {len(acc.sums)} weight draws normalised to unit total before averaging")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t_end = time.perf_counter()
        if opts.channel is None and channels_cancel(float(acc.total.abs().max()) / acc.n, probe, opts.seed,
                                                    (ctx.chans, *ctx.size), dev, ctx.dtype, window):
            warnings.warn(_CANCEL, stacklevel=2)
            notes.append(_CANCEL)
    if opts.tol:
        notes.append(f"adaptive stop: {acc.n} samples, relative SE of sigma {acc.relative_se():.3g} "
                     f"(tol {opts.tol:g}, max {opts.most_samples})")
    if ranks.note():
        notes.append(ranks.note())
    settings.update(batch_size=bs, group_size=acc.gs, timing={
        "setup": t_trace - t0, "crop_check": t_loop - t_trace, "sampling": t_end - t_loop})
    return make_result(ctx, acc, window, time.perf_counter() - t0, settings)
