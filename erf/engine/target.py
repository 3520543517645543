"""Which tensor the engine differentiates and how to compute it cheaply (the crop is ``erf.engine.crop``).

``resolve_target`` asks ``erf.analytic.receptive_field`` for the layer's geometry (TRF, jump,
crop safety). ``TargetRunner`` computes that layer's output: a forward hook on the module that
produces it, which raises to stop the forward once the tensor exists (later layers cost
nothing); functional targets go through ``erf.analytic.capture``. ``check_unit`` checks a
unit against the layer's map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from erf.analytic import capture, receptive_field
from erf.engine import tokens as measure_tokens
from erf.engine.tokens import untraced_layout
from erf.errors import ErfError, ModelError, TraceError


@dataclass
class Target:
    """The measured layer: its name, how to reach it, and its RF geometry (None if unknown)."""

    layer: str | None
    module: str | None  # qualified module name; None with ``functional`` set, or the whole model
    call_index: int = 0
    functional: str | None = None  # node name for ``erf.analytic.capture``
    output: tuple[int, ...] | None = None  # spatial size of the layer's map
    spatial_dims: tuple[int, ...] | None = None
    geometry: object = None  # analytic LayerRF, or None when the RF could not be traced
    crop_safe: bool = False
    crop_note: str = ""
    notes: list[str] = field(default_factory=list)
    prefix: int | None = None  # untraced (N, L, C) tokens: prefix tokens before the grid; None otherwise

    def box(self, unit: Sequence[int], clip: bool = False) -> tuple[tuple[int, int] | None, ...] | None:
        """Inclusive input box per axis of ``unit``'s TRF (``clip``: cut to the image), or None without geometry."""
        if self.geometry is None:
            return None
        return tuple(None if ax is None else tuple(int(v) for v in ax) for ax in self.geometry.box(unit, clip=clip))

    @property
    def rf(self) -> tuple[int, ...] | None:
        """The TRF size per axis, or None without geometry."""
        return None if self.geometry is None else tuple(int(v) for v in self.geometry.rf)

    @property
    def gated(self) -> bool:
        """True when gates or attention widen the strict TRF beyond the spatial path (``rf_local``)."""
        return self.geometry is not None and tuple(self.geometry.rf_local) != tuple(self.geometry.rf)

    def local_box(self, unit: Sequence[int], clip: bool = False) -> tuple[tuple[int, int] | None, ...] | None:
        """Like ``box`` for the spatial path without gates and attention (``LayerRF.rf_local``)."""
        if self.geometry is None:
            return None
        return tuple(None if ax is None else tuple(int(v) for v in ax)
                     for ax in self.geometry.local_box(unit, clip=clip))

    @property
    def jump(self) -> tuple[float, ...] | None:
        """The input stride between neighbouring units per axis, or None without geometry."""
        return None if self.geometry is None else tuple(self.geometry.jump)

    @property
    def tokens(self) -> bool:
        """True when the layer's positions are tokens (``(N, L, C)``, traced or found), not conv-map axes."""
        if self.prefix is not None:
            return True
        return self.geometry is not None and measure_tokens.is_token_layout(getattr(self.geometry, "dims", ()))

    def index_of(self, unit: Sequence[int]) -> dict[int, int]:
        """Tensor dim -> index holding ``unit`` (conv maps, channels-last, tokens)."""
        if self.geometry is not None:
            return self.geometry.index_of(unit)
        if self.prefix is not None:  # untraced tokens: row-major grid after the prefix tokens
            return {1: self.prefix + int(unit[0]) * self.output[1] + int(unit[1])}
        return dict(zip(self.spatial_dims, unit))


def resolve_target(model: nn.Module, input_size: Sequence[int], layer: str | None = None,
                   in_channels: int | None = None, probe: Callable[[Target], tuple[int, ...]] | None = None,
                   prefix_tokens: int | None = None) -> Target:
    """Find ``layer`` (None: the model output) with its analytic RF; degrade without a TRF.

    If the model cannot be traced (``TraceError``), module names and the model output can
    still be measured: no TRF, no crop, and a note says why. ``probe`` runs a forward on
    a real input to learn the output shape in that case. ``prefix_tokens`` (tokens before
    the image grid of a ``(N, L, C)`` layer; None: found from the trace or the model) is
    checked against the model (``erf.engine.tokens``).

    Args:
        model: the network (float32, as the tracer feeds it).
        input_size: the input's spatial size; ``in_channels``: its channels.
        layer: the layer's name as ``erf rf`` lists it, or None for the output.
        probe: ``target -> output shape`` from a real forward (used when tracing fails).
        prefix_tokens: the user's prefix-token count, or None.

    Returns:
        The ``Target``.

    Raises:
        ErfError: an unknown layer, a layer without a spatial map, a prefix count that does not fit.
    """
    prefix_tokens = measure_tokens.check_value(prefix_tokens)
    chosen: list[str] = []
    if layer is None:
        found = default_layer(model)
        if found is not None:
            layer = found[0]
            chosen.append(f"no layer given: measured {layer!r}, the last spatial stage ({found[1]}), since the "
                          "output of a classifier has no map; name another with --layer (layer=)")
    try:
        rep = receptive_field(model, tuple(input_size), layer=layer, in_channels=in_channels)
    except TraceError as exc:
        t = _untraced(model, layer, probe, f"receptive field unavailable ({' '.join(str(exc).split())})",
                      input_size, prefix_tokens)
        t.notes[:0] = chosen
        return t
    require_spatial(rep)
    t = rep.target
    module = t.module
    return Target(layer=t.name, module=module, call_index=int(t.call_index or 0),
                  functional=t.name if module is None else None,
                  output=tuple(int(v) for v in t.output), spatial_dims=tuple(t.spatial_dims),
                  geometry=t, crop_safe=bool(rep.crop_safe), crop_note=str(rep.crop_note or ""),
                  notes=chosen + measure_tokens.check_traced(t, prefix_tokens, t.name) + call_note(rep, layer))


#: torchvision classifiers (class name -> the module of the last spatial stage). A ModuleList
#: stands for its last block.
TORCHVISION_STAGES = {
    "AlexNet": "features", "VGG": "features", "SqueezeNet": "features", "DenseNet": "features",
    "MobileNetV2": "features", "MobileNetV3": "features", "EfficientNet": "features", "ConvNeXt": "features",
    "SwinTransformer": "features", "MNASNet": "layers", "ResNet": "layer4", "RegNet": "trunk_output",
    "ShuffleNetV2": "conv5", "GoogLeNet": "inception5b", "Inception3": "Mixed_7c", "MaxVit": "blocks",
    "VisionTransformer": "encoder.layers",
}


def default_layer(model: nn.Module) -> tuple[str, str] | None:
    """The last spatial stage of a timm or torchvision classifier, the layer measured when none is named.

    timm: the last entry of the model's ``feature_info`` (its feature-extraction stages);
    torchvision: ``TORCHVISION_STAGES`` by class (``layer4`` of a ResNet, ``features`` of VGG,
    DenseNet, EfficientNet, MobileNet, ConvNeXt, ...). A ``ModuleList`` stage is its last block.

    Args:
        model: any network.

    Returns:
        ``(layer name, where the choice comes from)``, or None for other models (their output is
        the default).
    """
    modules = dict(model.named_modules())
    origin = type(model).__module__ or ""
    name, why = None, ""
    info = getattr(model, "feature_info", None)
    if origin.startswith("timm.") and info is not None:
        entries = list(getattr(info, "info", info) or [])
        last = entries[-1] if entries else None
        name = last.get("module") if isinstance(last, dict) else None
        if name is not None and name not in modules and name.replace("_", ".") in modules:
            name = name.replace("_", ".")
        reduction = last.get("reduction") if isinstance(last, dict) else None
        why = "timm's feature_info" + (f", stride {reduction}" if reduction else "")
    elif origin.startswith("torchvision.models"):
        name = TORCHVISION_STAGES.get(type(model).__name__)
        why = f"torchvision {type(model).__name__}'s last stage"
    if name is None or name not in modules:
        return None
    stage = modules[name]
    if isinstance(stage, nn.ModuleList) and len(stage):
        name = f"{name}.{len(stage) - 1}"
    return name, why


def call_note(report: Any, layer: str | None) -> list[str]:
    """A note when ``layer`` names a module called several times: which call was taken, how to name the others.

    Args:
        report: ``erf.analytic.receptive_field``'s report for ``layer``.
        layer: the name the user gave (None: the output).

    Returns:
        ``[note]`` when the module has later calls (``NAME#2``...) and ``layer`` named none of them, else ``[]``.
    """
    if not layer or "#" in layer:
        return []
    calls = [r for r in report.layers if r.name == layer or r.name.startswith(layer + "#")]
    if len(calls) < 2:
        return []
    rf = report.target.rf
    others = ", ".join(repr(r.name) for r in calls[1:])
    return [f"module {layer!r} runs {len(calls)} times in the forward pass; measured its first call "
            f"({layer!r}{', TRF ' + 'x'.join(str(int(v)) for v in rf) if rf is not None else ''}); "
            f"name another call as {others}"]


def _untraced(model, layer, probe, note, input_size, prefix_tokens=None) -> Target:
    if layer is not None and layer not in dict(model.named_modules()):
        raise ModelError(f"unknown layer {layer!r}: the model could not be traced, so name a module "
                         "from model.named_modules()")
    t = Target(layer=layer, module=layer or None, notes=[note + "; measured without TRF or cropping"])
    with torch.no_grad():
        try:
            shape = probe(t)
        except ErfError:
            raise
        except Exception as exc:  # the forward itself fails (input too small, wrong axes or channels)
            raise ErfError(f"the model's forward pass failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
                           "(is the input large enough for this model, with the right number of axes and "
                           "in_channels?)") from None
    t.spatial_dims, t.output, t.prefix, notes = untraced_layout(model, shape, input_size, prefix_tokens, layer)
    t.notes += notes
    return t


def require_spatial(report: Any) -> None:
    """Refuse a target whose output has no spatial axes (a vector after global pooling, flatten or linear).

    Args:
        report: ``erf.analytic.receptive_field``'s report (its ``target`` and ``layers``).

    Raises:
        ErfError: the target is global (naming the last spatial layer before it).
    """
    t = report.target
    if not (t.is_global and len(t.shape) <= 2):
        return
    before = report.layers[:next(i for i, r in enumerate(report.layers) if r is t)]
    maps = [r.name for r in before if len(r.shape) > 2 and not r.is_global and r.name != "input"]
    hint = f"e.g. {maps[-1]!r}" if maps else "one before the global op"
    raise ErfError(f"layer {t.name!r} has no spatial output (shape {list(t.shape)} after global pooling, flatten or "
                   f"linear), so there is no position to measure; pick a layer with a spatial map, {hint} "
                   "(see 'erf rf MODEL')")


class _Stop(Exception):
    """Raised by the forward hook once the target tensor exists."""


class TargetRunner:
    """Callable ``x -> target tensor`` that stops the forward as early as it can."""

    def __init__(self, model: nn.Module, target: Target):
        self.model, self.target = model, target
        self.module = None
        if target.module is not None:
            modules = dict(model.named_modules())
            if target.module not in modules:
                raise ModelError(f"layer {target.layer!r} names module {target.module!r}, which the model lacks")
            self.module = modules[target.module]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t = self.target
        if t.functional is not None:
            out = capture(self.model, x, [t.functional])[t.functional]
        elif self.module is None or self.module is self.model:
            out = self.model(x)
        else:
            state = {"calls": 0, "out": None}

            def hook(_mod, _inp, output):
                if state["calls"] == t.call_index:
                    state["out"] = output
                    raise _Stop
                state["calls"] += 1

            handle = self.module.register_forward_hook(hook)
            try:
                self.model(x)
            except _Stop:
                pass
            finally:
                handle.remove()
            out = state["out"]
            if out is None:
                raise ModelError(f"layer {t.layer or t.module!r} was not reached by the forward pass "
                                 f"(call {t.call_index} of module {t.module!r})")
        if isinstance(out, (tuple, list)) and t.geometry is not None:
            # a module returning several tensors (CrossViT's branches, PiT's tokens and class token): its
            # traced row is the first one with the row's shape
            shape = tuple(getattr(t.geometry, "shape", ()) or ())
            out = next((o for o in out if isinstance(o, torch.Tensor) and tuple(o.shape[1:]) == shape[1:]), out)
        if not isinstance(out, torch.Tensor):
            raise ModelError(f"layer {t.layer or 'output'!r} returns {type(out).__name__}, not a tensor; "
                             "pick a layer that returns one tensor with --layer")
        return out


def check_unit(unit: Sequence[int], output: Sequence[int]) -> tuple[int, ...]:
    """Validate an explicit unit against the layer's spatial map size.

    Returns:
        The unit as a tuple of ints.

    Raises:
        ErfError: a wrong number of indices, or an index outside the map.
    """
    unit = tuple(int(u) for u in unit)
    if len(unit) != len(output):
        raise ErfError(f"unit {','.join(map(str, unit))} has {len(unit)} indices but the layer's map has "
                       f"{len(output)} axes ({'x'.join(str(n) for n in output)}); give one index per axis")
    if len(unit) != len(output) or any(not 0 <= u < n for u, n in zip(unit, output)):
        shape = "x".join(str(n) for n in output)
        raise ErfError(f"unit {','.join(map(str, unit))} is outside the layer's {shape} map; "
                       f"pick indices from 0 to size-1 on each of the {len(output)} axes")
    return unit
