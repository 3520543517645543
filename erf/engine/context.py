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
from erf.engine.inputs import sample_key
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

    def redraw(self, draw: int) -> None:
        """Draw the working model's weights for weight draw ``draw`` (a function of seed and draw only)."""
        redraw_weights(self.model, self.opts, draw)


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
    work = working_model(model, dev, fdtype, copy_needed=opts.redraws or has_train_bn(model) or ranks.active)
    ranks.broadcast_weights(work)  # every rank measures rank 0's weights
    if opts.redraws:
        redraw_weights(work, opts, 0)
    size = spatial_size(work, input_size)
    chans = opts.in_channels or infer_in_channels(work)
    zeros = torch.zeros((1, chans, *size), device=dev, dtype=fdtype)
    target = resolve_target(float32_view(model), size, opts.layer, chans,
                            probe=lambda t: tuple(TargetRunner(work, t)(zeros).shape),
                            prefix_tokens=opts.prefix_tokens)
    notes += target.notes
    unit = stats.center_unit(target.output) if opts.unit is None else check_unit(opts.unit, target.output)
    bs = opts.batch
    if has_train_bn(work):
        if opts.single_sample:
            bs = 1
            notes.append("BatchNorm in train mode: one sample per pass (single_sample)")
        else:
            warnings.warn("BatchNorm layers are in train mode: they mix the samples of a batch, so each map "
                          "depends on the others; pass single_sample=True (or keep eval_mode=True)", stacklevel=3)
            notes.append("BatchNorm in train mode mixed the samples of each batch")
    amp = amp_context(dev, opts.autocast, notes)
    return Context(opts, work, dev, fdtype, preset, size, chans, target, unit, bs, amp, notes)


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
