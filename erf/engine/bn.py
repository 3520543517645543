"""BatchNorm at initialisation: the ``bn`` policy of a measurement (``auto``, ``calibrate``, ``as_is``).

A freshly initialised BatchNorm layer in eval mode has running mean 0 and variance 1, so it is
the identity whatever its input's scale. With PyTorch's default conv init a residual branch's
output is then far smaller than the skip path, and the measured ERF is mostly the skip path's:
an artefact of never having seen data, not a property of the architecture. ``calibrate``
re-estimates every BatchNorm's running statistics on the probe inputs before measuring, the way
training (or SWA's ``update_bn``) would: the running statistics are reset, the momentum set to
None (a cumulative average over the batches), probe inputs are passed forward in ``no_grad``
(stopping at the measured layer) with only the BatchNorm layers in train mode (dropout stays
off), then every layer is back in eval mode. The inputs come in batches of ``CALIBRATION_BATCH``
until every BatchNorm layer reached has averaged ``CALIBRATION_POSITIONS`` values per channel
(64 inputs of a 7x7 map), at most ``CALIBRATION_SAMPLES``: one pass of 16 where the maps are
large (ConvMixer's 32x32 at 224 px), the full 64 where a layer's map is 7x7 or smaller. It runs on the engine's working copy, never on the caller's
model. ``auto`` (the default) calibrates only a fresh init (every tracking BatchNorm layer has
``num_batches_tracked == 0``) and keeps trained statistics; ``as_is`` never calibrates.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn

from erf.errors import ErfError

__all__ = ["BN_POLICIES", "CALIBRATION_SAMPLES", "CALIBRATION_BATCH", "CALIBRATION_POSITIONS", "bn_layers", "is_fresh",
           "wants_calibration", "calibrate_bn"]

#: The values of ``MeasureOptions.bn``.
BN_POLICIES = ("auto", "calibrate", "as_is")

#: The most probe inputs (sample indices 0.. of each weight draw) that calibrate the running statistics.
#: 64 full-size inputs: a deep layer with a 7x7 map still averages over 64 x 49 positions per channel.
CALIBRATION_SAMPLES = 64

#: Values per channel (inputs x map positions) that every BatchNorm layer reached averages over before
#: the calibration stops (after whole batches of CALIBRATION_BATCH, at most CALIBRATION_SAMPLES inputs).
#: ConvMixer-768/32 at 224 px (32x32 maps): one batch of 16 instead of 64 inputs, 4x less time.
CALIBRATION_POSITIONS = 64 * 49

#: Inputs per calibration pass, whatever the measurement's batch size: the cumulative average of
#: per-batch statistics depends on how the inputs are batched, so a batch size that followed
#: ``batch_size`` made the map depend on it (about 0.1 relative, ResNet-18 layer3, batch 1 vs 4).
CALIBRATION_BATCH = 16


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics (``track_running_stats``).

    Args:
        model: any module.

    Returns:
        The layers, in module order (layers without running statistics use batch statistics always).
    """
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None]


def is_fresh(model: nn.Module) -> bool:
    """True when ``model`` has BatchNorm layers and none was ever updated (``num_batches_tracked == 0``).

    Args:
        model: any module.

    Returns:
        Whether its running statistics are those of a fresh init.
    """
    layers = bn_layers(model)
    return bool(layers) and all(m.num_batches_tracked is not None and int(m.num_batches_tracked) == 0
                                for m in layers)


def wants_calibration(model: nn.Module, policy: str) -> tuple[bool, str | None]:
    """Whether the ``bn`` policy calibrates ``model``, and the note that says what was done.

    Args:
        model: the model as the caller gave it (before any weight redraw).
        policy: a value of ``BN_POLICIES``.

    Returns:
        ``(calibrate, note)``; the note is None for a model without BatchNorm.

    Raises:
        ErfError: an unknown policy.
    """
    if policy not in BN_POLICIES:
        raise ErfError(f"bn must be one of {', '.join(BN_POLICIES)}; got {policy!r}")
    layers = bn_layers(model)
    if not layers:
        return False, None
    n = len(layers)
    if policy == "as_is":
        return False, f"bn=as_is: the {n} BatchNorm layers' running statistics used as they are"
    if policy == "calibrate":
        return True, (f"bn=calibrate: the {n} BatchNorm layers' running statistics re-estimated on up to "
                      f"{CALIBRATION_SAMPLES} probe inputs ({CALIBRATION_POSITIONS} values per channel, cumulative "
                      "average) before measuring")
    if is_fresh(model):
        return True, (f"bn=auto: the {n} BatchNorm layers were never updated (a fresh init), so their running "
                      f"statistics were re-estimated on up to {CALIBRATION_SAMPLES} probe inputs "
                      f"({CALIBRATION_POSITIONS} values per channel) before measuring (bn='as_is' keeps mean 0, "
                      "variance 1)")
    return False, f"bn=auto: trained BatchNorm statistics kept ({n} layers; bn='calibrate' re-estimates them)"


def calibrate_bn(model: nn.Module, batches: Callable[[int, int], Optional[torch.Tensor]], batch_size: int,
                 run: Callable[[torch.Tensor], object] | None = None, samples: int = CALIBRATION_SAMPLES,
                 positions: int | None = CALIBRATION_POSITIONS) -> int:
    """Re-estimate every BatchNorm's running statistics of ``model`` in place (see the module docstring).

    Args:
        model: the working copy (modified: its running statistics and ``num_batches_tracked``).
        batches: ``(first, count) -> inputs`` (full-size probe inputs), None when they run out.
        batch_size: inputs per forward pass.
        run: the forward to use (default ``model``; the engine passes one that stops at the target).
        samples: the most inputs in all.
        positions: stop after the first batch at which every layer ``run`` reached has averaged this
            many values per channel (inputs x map positions); None: always ``samples`` inputs.

    Returns:
        The number of inputs used (inputs with a non-finite value are skipped).

    Raises:
        ErfError: no input to calibrate on.
    """
    layers = bn_layers(model)
    if not layers:
        return 0
    saved = [(m, m.momentum, m.training) for m in layers]
    run = run or model
    used = seen = 0
    values = {m: 0 for m in layers}  # values per channel each layer has averaged (0: not reached)

    def count(m, inputs):
        values[m] += inputs[0].numel() // max(1, inputs[0].shape[1])

    hooks = [m.register_forward_pre_hook(count) for m in layers] if positions else []
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the calibration batches
            m.train()
        with torch.no_grad():
            for _ in range(math.ceil(samples / batch_size)):
                x = batches(seen, min(batch_size, samples - seen))
                if x is None or x.shape[0] == 0:
                    break
                seen += int(x.shape[0])
                x = x[torch.isfinite(x).reshape(x.shape[0], -1).all(1)]  # a non-finite input would poison the mean
                if x.shape[0] > 1:
                    run(x)
                    used += int(x.shape[0])
                if positions and used and min((v for v in values.values() if v), default=positions) >= positions:
                    break
    finally:
        for h in hooks:
            h.remove()
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
    if not used:
        raise ErfError("bn calibration got no input: give probe inputs, or pass bn='as_is'")
    return used
