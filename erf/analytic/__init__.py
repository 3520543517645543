"""The theoretical receptive field (TRF) of any network, exactly.

``receptive_field(model, input_size)`` traces a forward pass and returns an
``RFReport`` with one ``LayerRF`` row per traced op: output size, RF size (largest
and smallest over positions), jump, effective padding, centre of unit 0, and each
unit's input box. It also takes the classic layer-list form. ``linear_erf`` gives
the exact ERF of a linear chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from erf.analytic.layers import Layer, layer_rows
from erf.analytic.linear import LinearERF, linear_erf
from erf.analytic.report import LayerRF, RFReport, center_unit
from erf.analytic.tracer import infer_in_channels, run_traced, trace
from erf.errors import ErfError

__all__ = ["receptive_field", "RFReport", "LayerRF", "Layer", "linear_erf", "LinearERF", "center_unit",
           "capture", "infer_in_channels", "spatial_ndim", "spatial_size"]


def spatial_ndim(model: nn.Module) -> int:
    """Number of spatial axes the model's convs slide over (2 when it has none).

    Args:
        model: any module.

    Returns:
        1, 2 or 3, from the first ``Conv*d`` / ``ConvTranspose*d`` in ``model.modules()``.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            return 1
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            return 3
        if isinstance(m, nn.modules.conv._ConvNd):
            return 2
    return 2


def spatial_size(model_or_ndim: nn.Module | int, input_size: int | Sequence[int]) -> tuple[int, ...]:
    """``input_size`` as a tuple of positive ints; an int is used on every spatial axis
    of the model (or of ``model_or_ndim`` axes).

    Args:
        model_or_ndim: the model (its ``spatial_ndim``) or a number of axes.
        input_size: one int for every axis, or one per axis.

    Returns:
        The size per spatial axis.

    Raises:
        ErfError: not ints, or not positive.
    """
    ndim = model_or_ndim if isinstance(model_or_ndim, int) else spatial_ndim(model_or_ndim)
    if isinstance(input_size, (int, np.integer)):
        input_size = (int(input_size),) * ndim
    try:
        size = tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        raise ErfError(f"input size must be an int or a tuple of ints, got {input_size!r}") from None
    if not size or any(s < 1 for s in size):
        raise ErfError(f"input size must be positive, got {list(size)}")
    return size


def receptive_field(model_or_layers: nn.Module | Sequence[Any], input_size: int | Sequence[int],
                    layer: str | None = None, in_channels: int | None = None,
                    treat_as: dict[str, str] | None = None, allow_unaligned: bool | None = None) -> RFReport:
    """Theoretical receptive field of every layer of a network on an input of ``input_size``.

    ``model_or_layers`` is an ``nn.Module`` (its forward pass is traced) or a list of
    layers (``Layer``, dicts or ``(kernel, stride, padding[, dilation])`` tuples).
    ``layer`` picks the target row (default: the model output). ``treat_as`` maps an
    op name (or a module class name) to ``"pointwise"``, ``"global"`` or ``"identity"``
    for ops erf has no rule for. Where paths into a node (an add, a concat) have one
    jump but different centres (ResNet-D's average-pool shortcut, DLA, HRNet), the
    union is taken and the row records the offset (``row.offset``) with a note;
    paths with different jumps raise ``AlignmentError``.

    Each row gives the strict TRF (``rf``: every pixel any path can reach, gates and
    attention included) and ``rf_local``: the TRF of the spatial path without the
    global statistics that gates (squeeze-excitation, global normalisations) and
    attention add. They differ only where such an op exists.

    Args:
        model_or_layers: the network, or its layer list.
        input_size: the input's spatial size (one int for every axis, or one per axis).
        layer: the target row's name (default: the model output).
        in_channels: input channels (default: the first conv's, else 3).
        treat_as: op or module class name -> ``"pointwise"``, ``"global"`` or ``"identity"``.
        allow_unaligned: None (default): union with a note for centre offsets, refuse different
            jumps; True: union for both; False: refuse both (strict).

    Returns:
        The report: one row per traced op (or per layer), and the target row.

    Raises:
        ErfError: a bad size, layer list or layer name; ``UnsupportedOpError`` for an op erf
            cannot follow; ``AlignmentError``; ``TraceError`` when the forward pass fails.
    """
    if isinstance(model_or_layers, nn.Module):
        size = spatial_size(model_or_layers, input_size)
        nodes, final = trace(model_or_layers, size, in_channels, treat_as=treat_as,
                             allow_unaligned=allow_unaligned)
        rows = [_row(n, size) for n in nodes]
        target = rows[nodes.index(final)]
        bounds = list(dict.fromkeys(line for n in nodes for line in n.notes))
    elif isinstance(model_or_layers, Sequence) and not isinstance(model_or_layers, str):
        size = spatial_size(2, input_size)
        rows = layer_rows(model_or_layers, size)
        target = rows[-1]
    else:
        raise ErfError(f"receptive_field takes an nn.Module or a list of layers, got {type(model_or_layers).__name__}")
    notes = []
    if isinstance(model_or_layers, nn.Module):
        notes = _notes(rows) + [f"note: {b}" for b in bounds[:3]]
        if len(bounds) > 3:
            notes.append(f"note: {len(bounds) - 3} more such upper bounds")
    report = RFReport(size, rows, target, notes=notes)
    if layer is not None:
        report.target = report.layer(layer)
    return report


def _row(node, input_size) -> LayerRF:
    info = node.info
    sizes = info.axis_sizes()
    axis_dims = info.axis_dims()
    return LayerRF(node.name, node.op, sizes, info.axes, input_size, aliases=list(node.aliases),
                   module=node.module, call_index=node.call_index,
                   spatial_dims=tuple(axis_dims.get(a) for a in range(len(info.axes))),
                   shape=node.shape, crop_note=info.crop_note, dims=info.dims, offset=node.offset,
                   reach=info.reach)


def _notes(rows: list[LayerRF]) -> list[str]:
    """One note for rows where paths meet off-centre, one where gates or attention widen the strict TRF."""
    notes = []
    off = [r for r in rows if r.offset]
    if off:
        shown = ", ".join(f"'{r.name}' {_offset_text(r.offset)}" for r in off[:3])
        more = f" and {len(off) - 3} more" if len(off) > 3 else ""
        notes.append(f"note: paths meet off-centre at {len(off)} node(s) ({shown}{more}): their boxes are united "
                     "(the RF of such a unit is the union; allow_unaligned=False refuses instead)")
    gated = [r for r in rows if r.rf_local != r.rf and not r.is_global_local]
    if gated:
        notes.append(f"note: rf is the strict TRF, widened by gates or attention from '{gated[0].name}' on "
                     "(every pixel any path reaches); rf_local is the TRF of the spatial path without them, "
                     "used for ERF/TRF ratios")
    return notes


def _offset_text(offset) -> str:
    return "by " + "x".join("0" if o is None else f"{float(o):g}" for o in offset) + " px"


def capture(model: nn.Module, x: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` for real and return the tensors of the named nodes (graph intact).

    Args:
        model: the network.
        x: its input batch.
        names: primary node names of ``receptive_field`` rows (``layer.name``).

    Returns:
        Node name -> the tensor it computed in this pass.

    Raises:
        ErfError: a name that was not computed in this pass.
    """
    names = set(names)
    rec, _ = run_traced(model, x, keep=names, meta=False)
    # nodes are renamed after their module once it returns: match the final names (and aliases)
    found = {}
    for t, _info, node in rec.infos.values():
        for n in (node.name, *node.aliases):
            if n in names:
                found[n] = t
    found.update({k: v for k, v in rec.kept.items() if k in names and k not in found})
    missing = names - set(found)
    if missing:
        raise ErfError(f"layer(s) {sorted(missing)} were not computed in this forward pass")
    return found
