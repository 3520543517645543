"""The context one measurement runs in: the working model, device, dtype, target, unit and autocast.

``prepare`` builds a ``Context`` once; every later step (crop, probe, loop, result) reads it
instead of taking a dozen arguments. ``frozen`` keeps the caller's model untouched.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from erf import stats
from erf.analytic import infer_in_channels, spatial_size
from erf.engine import init_scales
from erf.engine.bn import CALIBRATION_BATCH, calibrate_bn, wants_calibration
from erf.engine.diagnostics import MapSource, SampleStats
from erf.engine.inputs import make_source, sample_key
from erf.engine.options import MeasureOptions
from erf.engine.ranks import Ranks
from erf.engine.target import Target, TargetRunner, check_unit, resolve_target
from erf.models import apply_init

__all__ = ["Context", "prepare", "frozen", "has_train_bn"]


@dataclass
class Context:
    """What every step of one measurement reads.

    Attributes:
        opts: the checked options.
        model: the working model (the caller's, or a converted / redrawn copy).
        device, dtype: where and in which floating dtype the measurement runs.
        preset: the map definition (``MeasureOptions.make_preset``).
        size: the input's spatial size; ``chans`` its channels.
        target: the measured layer; ``unit`` the measured position of its map.
        batch: samples per pass as planned (train-mode BatchNorm may force 1).
        amp: ``{"ctx": callable returning the autocast context, "tf32": a context}``.
        notes: lines for ``ERFResult.notes``, appended to as the run goes.
        calibrate_bn: re-estimate the BatchNorm statistics after every weight draw (``opts.bn``).
        sample_stats: the probe wrapper of ``record`` (per-sample masses, zero-gradient shares), once made.
        check_sample: the sample the crop and cone checks run on (``erf.engine.crop.full_gradient`` moves
            it past samples whose gradient is all zero).
    """

    opts: MeasureOptions
    model: nn.Module
    device: torch.device
    dtype: torch.dtype
    preset: stats.Preset
    size: tuple[int, ...]
    chans: int
    target: Target
    unit: tuple[int, ...]
    batch: int
    amp: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    calibrate_bn: bool = False
    sample_stats: SampleStats | None = None
    check_sample: int = 0

    def record(self, probe: MapSource, window: tuple[slice, ...] | None) -> SampleStats:
        """Wrap ``probe`` for the loop: ``normalize_samples`` and the per-sample diagnostics (kept here).

        Args:
            probe: the batch's maps (``erf.engine.probe.Probe``).
            window: the crop (the maps' extent in the full input), or None.

        Returns:
            The wrapper (also ``self.sample_stats``).
        """
        self.sample_stats = SampleStats(probe, trf_mask(self.target.box(self.unit, clip=True), window, self.size,
                                                        self.device), self.opts.normalize_samples)
        return self.sample_stats

    def redraw(self, draw: int) -> None:
        """Draw the working model's weights for weight draw ``draw`` (a function of seed and draw only)."""
        redraw_weights(self.model, self.opts, draw)
        self.calibrate(draw)

    def calibrate(self, draw: int) -> None:
        """With ``calibrate_bn``: BatchNorm statistics from draw ``draw``'s first probe inputs (full size)."""
        if self.calibrate_bn:
            calibrate_bn(self.model, calibration_source(self, draw), CALIBRATION_BATCH,
                         TargetRunner(self.model, self.target))


def prepare(model: nn.Module, input_size: Any, opts: MeasureOptions, dev: torch.device, preset: stats.Preset,
            ranks: Ranks, notes: list[str]) -> Context:
    """The working model (weights of rank 0, draw 0), the target layer and unit, the batch and autocast.

    Call inside ``frozen(model, opts.eval_mode)``. Warns (at ``measure``'s caller) when train-mode
    BatchNorm mixes the samples of a batch.

    Args:
        model: the caller's model (never modified).
        input_size: spatial size, as ``erf.analytic.spatial_size`` reads it.
        opts: the options; ``dev``: the device; ``preset``: the map definition.
        ranks: the torchrun processes (their weights are rank 0's).
        notes: the run's notes list (kept as ``Context.notes``).

    Returns:
        The ``Context``.

    Raises:
        ErfError: an unknown layer, a unit outside the layer's map, an untraceable size.
    """
    fdtype = torch.float64 if opts.dtype == "float64" else torch.float32
    calib, _ = wants_calibration(model, opts.bn)
    work = working_model(model, dev, fdtype,
                         copy_needed=opts.redraws or has_train_bn(model) or ranks.active or calib)
    ranks.broadcast_weights(work)  # every rank measures rank 0's weights
    if opts.redraws:
        redraw_weights(work, opts, 0)
    calib, bn_note = wants_calibration(work, opts.bn)  # after draw 0: a redraw gives fresh statistics
    size = spatial_size(work, input_size)
    chans = opts.in_channels or infer_in_channels(work)
    zeros = torch.zeros((1, chans, *size), device=dev, dtype=fdtype)
    target = resolve_target(float32_view(model), size, opts.layer, chans,
                            probe=lambda t: tuple(TargetRunner(work, t)(zeros).shape),
                            prefix_tokens=opts.prefix_tokens)
    notes += target.notes
    unit = preset.center(target.output, target.tokens) if opts.unit is None else check_unit(opts.unit, target.output)
    bs = opts.batch
    if has_train_bn(work):
        if opts.single_sample:
            bs = 1
            notes.append("BatchNorm in train mode: one sample per pass (single_sample)")
        else:
            warnings.warn("BatchNorm layers are in train mode: they mix the samples of a batch, so each map "
                          "depends on the others; pass single_sample=True (or keep eval_mode=True)", stacklevel=3)
            notes.append("BatchNorm in train mode mixed the samples of each batch")
    if calib and has_train_bn(work):
        calib, bn_note = False, "BatchNorm in train mode uses batch statistics: no bn calibration"
    if bn_note:
        notes.append(bn_note)
    amp = amp_context(dev, opts.autocast, notes)
    ctx = Context(opts, work, dev, fdtype, preset, size, chans, target, unit, bs, amp, notes, calib)
    ctx.calibrate(0)
    closed = init_scales.zero_scales(work)
    if closed and not any(m.training for m in work.modules()):  # a train-mode forward would move statistics
        closed = init_scales.reached(closed, work, TargetRunner(work, target), zeros)
    if init_scales.note(closed):
        notes.append(init_scales.note(closed))
    return ctx


def trf_mask(box: tuple | None, window: tuple[slice, ...] | None, size: tuple[int, ...],
             dev: torch.device) -> torch.Tensor | None:
    """Boolean map (over ``window``, else the full input) of the pixels inside the clipped TRF ``box``.

    None without a box (every pixel counts); an axis without a box is taken whole.
    """
    if box is None:
        return None
    win = window or tuple(slice(0, n) for n in size)
    axes = []
    for b, w in zip(box, win):
        coords = torch.arange(w.start, w.stop, device=dev)
        axes.append(torch.ones_like(coords, dtype=torch.bool) if b is None else (coords >= b[0]) & (coords <= b[1]))
    mask = axes[0]
    for ax in axes[1:]:
        mask = mask[..., None] & ax
    return mask


def calibration_source(ctx: Context, draw: int) -> Callable[[int, int], torch.Tensor | None]:
    """``(first, count) -> full-size probe inputs`` of ``draw`` for the BatchNorm calibration.

    The probe inputs themselves (sample indices 0.. of the draw); a one-shot iterator of tensors
    cannot be read twice, so it is replaced by Gaussian noise, with a note.
    """
    inputs = ctx.opts.inputs
    if not isinstance(inputs, str) and iter(inputs) is inputs:
        inputs = "gaussian"
        if draw == 0:
            ctx.notes.append("bn calibration used Gaussian noise: the inputs are a one-shot iterator")
    source = make_source(inputs, (ctx.chans, *ctx.size), ctx.device, ctx.dtype, None)
    return lambda first, count: source(ctx.opts.seed, draw, first, count)


def redraw_weights(model: nn.Module, opts: MeasureOptions, draw: int) -> None:
    """Draw ``model``'s weights in place with ``opts.init``, from (seed, draw) alone."""
    g = torch.Generator().manual_seed(sample_key(opts.seed, draw, 0x7FFFFFFF))
    apply_init(model, opts.init, g)


def has_train_bn(model: nn.Module) -> bool:
    """True when a BatchNorm layer of ``model`` is in train mode (it mixes the samples of a batch)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


@contextlib.contextmanager
def frozen(model: nn.Module, eval_mode: bool) -> Iterator[None]:
    """No parameter gradients (and eval mode) for the block; every flag restored after, even on error."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        if eval_mode:
            model.eval()
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        for m, t in modes:
            m.training = t


def working_model(model: nn.Module, dev: torch.device, fdtype: torch.dtype, copy_needed: bool) -> nn.Module:
    """The model itself when it already lives on ``dev`` in ``fdtype``, else a converted copy."""
    tensors = list(model.parameters()) + list(model.buffers())
    moves = any(t.device != dev or (t.is_floating_point() and t.dtype != fdtype) for t in tensors)
    if not (copy_needed or moves):
        return model
    work = copy.deepcopy(model)
    for p in work.parameters():
        p.grad = None
    return work.to(device=dev, dtype=fdtype)


def float32_view(model: nn.Module) -> nn.Module:
    """The model itself if its floating tensors are float32 (what the tracer feeds), else a float32 copy."""
    tensors = list(model.parameters()) + list(model.buffers())
    if all(t.dtype == torch.float32 for t in tensors if t.is_floating_point()):
        return model
    return copy.deepcopy(model).float()


def amp_context(dev: torch.device, autocast: str | None, notes: list[str]) -> dict[str, Any]:
    """``{"ctx": autocast context factory, "tf32": context}`` for ``autocast`` (None, bf16, tf32)."""
    ctx: Callable[[], Any] = contextlib.nullcontext
    if autocast == "bf16":
        def ctx():
            return torch.autocast(dev.type, dtype=torch.bfloat16)
    tf32: Any = contextlib.nullcontext()
    if autocast == "tf32":
        if dev.type == "cuda":
            tf32 = tf32_context()
        else:
            notes.append("autocast tf32 has no effect on CPU")
    return {"ctx": ctx, "tf32": tf32}


@contextlib.contextmanager
def tf32_context() -> Iterator[None]:
    """TF32 matmuls and convolutions on CUDA for the block; the previous flags restored after."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
