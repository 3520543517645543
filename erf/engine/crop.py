"""Cropping the input to the unit's TRF: the window, whether it is safe, and the one-sample check.

Where ``erf.analytic`` says the target's receptive field is known and crop-safe, the input is
cut to the smallest window holding the unit's TRF (snapped to the target's jump), which makes
every pass cheaper. With ``crop='auto'`` one sample's full-size input gradient must agree with
the cropped one first.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable

import torch

from erf.engine.context import Context, has_train_bn
from erf.engine.inputs import NoiseSource, sample_key
from erf.engine.probe import Probe
from erf.engine.target import Target, TargetRunner
from erf.errors import ErfError

__all__ = ["check_input", "checked_once", "choose_crop", "compare", "crop_check", "crop_index", "forget_checks",
           "full_gradient", "plan_crop"]

Window = tuple[slice, ...]

# Verdicts of the crop and cone checks in this process, by what they depend on: the model's
# structure (modules, their settings, parameter shapes, forward functions, modes), the input
# size, dtype, device type, target, unit, channel, map definition and the plan. Not the weights:
# whether a crop or a cone gives the uncropped gradient is a property of the geometry, so the
# second network of an architecture (another seed, draw or checkpoint) reuses the first's check.
_VERIFIED: dict[str, str | None] = {}


def _structure(model: torch.nn.Module) -> tuple:
    return (repr(model), tuple((type(m).__qualname__, id(type(m).forward), m.training) for m in model.modules()),
            tuple((k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()))


def checked_once(ctx: Context, kind: str, plan: Any, run: Callable[[], str | None]) -> tuple[str | None, bool]:
    """The verdict of a check (``run``: None when it agrees), run once per structure and plan in a process.

    Args:
        ctx: the measurement.
        kind: 'crop' or 'cone'.
        plan: what the check validates (the window and unit, the cone's boxes), part of the key.
        run: the check.

    Returns:
        ``(difference or None, whether it was reused from an earlier call)``.
    """
    key = hashlib.sha256(repr((kind, _structure(ctx.model), tuple(ctx.size), ctx.chans, str(ctx.dtype),
                               ctx.device.type, ctx.target.layer, tuple(ctx.unit), ctx.opts.channel,
                               ctx.preset.to_dict(), plan)).encode()).hexdigest()  # a few bytes per verdict
    if key in _VERIFIED:
        return _VERIFIED[key], True
    _VERIFIED[key] = out = run()
    return out, False


def forget_checks() -> None:
    """Forget every check verdict of this process (the next measurement checks again)."""
    _VERIFIED.clear()


def choose_crop(ctx: Context, reference: Callable[[], torch.Tensor] | None = None
                ) -> tuple[Window | None, tuple[int, ...] | None, list[str]]:
    """Window, unit-in-crop and notes; ``(None, None, notes)`` to run at full size (a note says why).

    Args:
        ctx: the measurement (``ctx.opts.crop``: 'auto', True or False).
        reference: returns the check's full-size gradient (``full_gradient``; shared with the cone's check).

    Returns:
        ``(window, unit in the crop, notes)``.

    Raises:
        ErfError: ``crop=True`` for a target that cannot be cropped.
    """
    notes: list[str] = []
    crop, target, unit = ctx.opts.crop, ctx.target, ctx.unit
    if crop is False:
        return None, None, notes
    if not target.crop_safe or has_train_bn(ctx.model):
        why = target.crop_note or ("BatchNorm in train mode mixes the batch" if target.crop_safe
                                   else "the receptive field is unknown")
        if crop is True:
            raise ErfError(f"cannot crop the input for this target: {why}; use crop='auto' or False")
        notes.append(f"not cropped: {why}")
        return None, None, notes
    if None in target.spatial_dims or target.index_of(unit) != crop_index(target, unit):
        notes.append("not cropped: the layer's positions are not one tensor dim per axis")
        return None, None, notes
    plan = plan_crop(target, unit, ctx.size)
    if plan is None:
        return None, None, notes
    window, cunit = plan
    text = "cropped to the unit's TRF: " + " x ".join(f"[{w.start}:{w.stop}]" for w in window)
    if crop == "auto":
        diff, again = checked_once(ctx, "crop", (window, cunit), lambda: crop_check(ctx, window, cunit, reference))
        if diff is not None:
            notes.append(f"not cropped: a cropped pass differs from the full-size pass ({diff}); measured at full size")
            return None, None, notes
        notes.append(text + (" (checked against a full-size pass earlier in this process: same architecture, size, "
                             "layer and unit)" if again else " (checked against a full-size pass)"))
    else:
        notes.append(text + " (not checked)")
    return window, cunit, notes


def crop_index(target: Target, cunit: tuple[int, ...]) -> dict[int, int]:
    """Tensor indices of the unit in the cropped map (one tensor dim per spatial axis)."""
    return dict(zip(target.spatial_dims, cunit))


#: Check samples tried before a check gives up on finding a gradient (a ReLU net can be dead for one input).
CHECK_TRIES = 8


def check_input(ctx: Context) -> torch.Tensor:
    """The one full-size sample the crop and cone checks run on (sample ``ctx.check_sample`` of draw 0), in the
    measurement dtype."""
    return NoiseSource("gaussian", (ctx.chans, *ctx.size), ctx.device, ctx.dtype).batch(
        [sample_key(ctx.opts.seed, 0, ctx.check_sample)], tuple(slice(0, n) for n in ctx.size))


def full_gradient(ctx: Context) -> torch.Tensor:
    """The uncropped pass's input gradient of ``check_input`` (float64), the reference of both checks.

    A sample whose gradient is all zero (a unit that one input leaves dead) checks nothing: the next
    sample is tried, up to ``CHECK_TRIES``, and ``ctx.check_sample`` keeps the one used, so the cropped
    passes run on the same input.

    Args:
        ctx: the measurement.

    Returns:
        ``(1, C, *size)`` float64 (all zero only when every sample tried gave no gradient).
    """
    amp = {"ctx": contextlib.nullcontext}
    probe = Probe(TargetRunner(ctx.model, ctx.target), ctx.preset, ctx.opts.channel, amp, ctx.target.index_of(ctx.unit))
    for k in range(CHECK_TRIES):
        ctx.check_sample = k
        grad = probe.grad(check_input(ctx)).double()
        if bool(grad.abs().max() > 0):
            break
    return grad


def crop_check(ctx: Context, window: Window, cunit: tuple[int, ...],
               reference: Callable[[], torch.Tensor] | None = None) -> str | None:
    """Compare one sample's full-size input gradient with the cropped one; None when they agree.

    Both run in the measurement dtype (no autocast) and are compared in float64: a float64
    measurement must agree to 1e-9 of the largest gradient, a float32 one to 1e-3 (its
    rounding differs between input sizes; a wrong crop differs by O(1)). A float64 check of a
    float32 model would cost 3x a float32 pass on CPU, for no better detection.

    Args:
        ctx: the measurement; ``window``, ``cunit``: the crop and the unit in it.
        reference: returns ``full_gradient(ctx)`` (computed here when None).

    Returns:
        None, or the difference found (for the note).
    """
    target = ctx.target
    full = (reference or (lambda: full_gradient(ctx)))()
    amp = {"ctx": contextlib.nullcontext}
    part = Probe(TargetRunner(ctx.model, target), ctx.preset, ctx.opts.channel, amp, crop_index(target, cunit))
    part = part.grad(check_input(ctx)[(slice(None), slice(None), *window)]).double()
    return compare(ctx, full, part, window)


def compare(ctx: Context, full: torch.Tensor, part: torch.Tensor, window: Window) -> str | None:
    """None when ``part`` (the gradient on ``window``) placed in the input equals ``full`` to the check's tolerance.

    A float64 measurement must agree to 1e-9 of the largest gradient, a float32 one to 1e-3.

    Returns:
        None, or the difference found (for the note).
    """
    rtol = 1e-9 if ctx.dtype == torch.float64 else 1e-3
    placed = torch.zeros_like(full)
    placed[(slice(None), slice(None), *window)] = part
    scale = float(full.abs().max())
    err = float((placed - full).abs().max())
    if not scale > 0 or not err <= rtol * scale:
        return f"max difference {err:.3g} of max {scale:.3g}"
    return None


def plan_crop(target: Target, unit: tuple[int, ...],
              input_size: tuple[int, ...]) -> tuple[Window, tuple[int, ...]] | None:
    """Smallest window holding ``unit``'s TRF, snapped to the target's jump.

    Returns ``(window, unit_in_crop)`` with one ``slice`` per spatial axis, or None when the
    window would be the whole input. The start is snapped down to a multiple of the jump so
    every strided layer samples the same phase; the far side gets a margin of one jump; an
    axis whose TRF reaches the image border keeps that border (and its padding).
    """
    box, jump = target.box(unit, clip=False), target.jump
    if any(b is None for b in box) or any(not float(j).is_integer() for j in jump):
        return None
    window, new_unit = [], []
    for (lo, hi), j, u, n in zip(box, jump, unit, input_size):
        j = max(1, int(j))
        start = 0 if lo <= 0 else (lo // j) * j
        stop = n if hi >= n - 1 else min(n, hi + 1 + j)
        window.append(slice(start, stop))
        new_unit.append(u - start // j)
    if all(w.start == 0 and w.stop == n for w, n in zip(window, input_size)):
        return None
    return tuple(window), tuple(new_unit)
