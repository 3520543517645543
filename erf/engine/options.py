"""``MeasureOptions``: the one parameter list of a measurement, with defaults, help and checks.

Every field is a keyword of ``erf.measure``; its ``metadata`` says how the rest of the
package offers it:

- ``help``: one line, used by the ``erf measure`` flags and any help text.
- ``flag``: the ``erf measure`` flag that sets it, or None.
- ``cli``: argparse keywords (``metavar``, ``type``, ``action``, a ``help`` worded for the flag)
  for the flags ``erf/cli/measure.py`` adds; absent for the flags shared with ``erf rf``
  (``--in-channels``, ``--prefix-tokens``, added by ``erf.cli.common.add_model_args``).
- ``python_only``: why a field has no flag (None where it has one).

``MeasureOptions.field_names()`` lists the fields; ``dataclasses.fields(MeasureOptions)``
gives the metadata. Building an instance checks it (``validate``), with the one-line
``ErfError`` messages ``measure()`` has always given.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from erf import stats
from erf.engine.accumulate import MAX_GROUPS
from erf.engine.bn import BN_POLICIES
from erf.engine.images import find_images, first_readable, is_path
from erf.errors import ErfError
from erf.limits import check_seed
from erf.models import INITS

__all__ = ["MeasureOptions", "default_group_size", "parse_floats"]


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    """``'0.5,0.5,0.5'`` -> ``(0.5, 0.5, 0.5)``.

    Raises:
        ErfError: not a comma-separated list of numbers (naming ``flag``).
    """
    try:
        return tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise ErfError(f"{flag} takes numbers separated by commas, one per channel (e.g. 0.485,0.456,0.406); "
                       f"got {text!r}") from None


def _float_list(flag: str) -> Callable[[str], tuple[float, ...]]:
    """An argparse ``type``: ``parse_floats`` whose error argparse prints as one usage line (exit 2)."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            return parse_floats(text, flag)
        except ErfError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _opt(default: Any, help: str, flag: str | None = None, cli: dict | None = None,
         python_only: str | None = None) -> Any:
    """A dataclass field with its help line, CLI flag (or why there is none) and argparse keywords."""
    meta = {"help": help, "flag": flag, "python_only": python_only}
    if cli is not None:
        meta["cli"] = cli
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class MeasureOptions:
    """How to measure: the keywords of ``erf.measure`` (see each field's ``help``).

    The map is the mean over samples of ``signal(d target / d input)`` reduced over input
    channels; the target is ``unit`` (default: the centre unit, ``stats.center_unit``) of
    ``layer``, summed over output channels unless ``channel`` picks one. ``preset`` (a name
    in ``stats.PRESETS``) overrides ``signal``, ``channel_reduce`` and the target reduction.
    Sample i of draw d is generated from (seed, d, i) alone, so each sample's input does not
    depend on ``batch_size``, cropping, resuming or the number of ``torchrun`` processes; the
    maps agree across batch sizes up to float rounding (~1e-7 of the peak in float32).
    """

    layer: str | None = _opt(None, "layer to measure, named as in 'erf rf' (default: the output)", "--layer",
                             {"metavar": "NAME"})
    unit: tuple[int, ...] | None = _opt(None, "unit of the layer (default: the centre unit, n//2 per axis)",
                                        "--unit", {"metavar": "I,J"})
    channel: int | None = _opt(None, "one output channel (default: the sum over channels)", "--channel",
                               {"type": int, "metavar": "C"})
    samples: int = _opt(64, "input samples per weight draw (default 64)", "--samples",
                        {"type": int, "metavar": "N"})
    batch_size: int = _opt(32, "samples per forward/backward pass (default 32)", "--batch",
                           {"type": int, "metavar": "B"})
    inputs: str | Iterable[torch.Tensor] = _opt(
        "gaussian", "gaussian (default), uniform, constant, or a PATH of real images: a folder (class subfolders "
        "or flat), a glob or an .npy/.npz array, sampled at random with the seed; in Python also an iterable of "
        "(C, *size) or (N, C, *size) tensors", "--inputs",
        {"metavar": "KIND|PATH", "help": "gaussian (default), uniform, constant, or a PATH of real images: a folder "
                                         "(class subfolders or flat), a glob or an .npy/.npz array"})
    mean: tuple[float, ...] | None = _opt(None, "image inputs: per-channel mean to subtract (default: the model's "
                                                "own preprocessing, else ImageNet's)", "--mean",
                                          {"metavar": "M,M,M", "type": _float_list("--mean")})
    std: tuple[float, ...] | None = _opt(None, "image inputs: per-channel std to divide by (default: the model's "
                                               "own preprocessing, else ImageNet's)", "--std",
                                         {"metavar": "S,S,S", "type": _float_list("--std")})
    weight_draws: int = _opt(0, "re-draw the weights K times with init and average (default 0: the model's "
                                "weights)", "--weight-draws",
                             {"type": int, "metavar": "K", "help": "re-draw the weights K times with --init and "
                                                                   "average (default 0: the model's weights)"})
    init: str | Callable[[nn.Module, torch.Generator], None] = _opt(
        "model", "weight init of the draws: a name in erf.models.INITS or a callable (default: the model's "
                 "weights)", "--init",
        {"metavar": "NAME", "help": "model (default: the model's own init; with --weight-draws, the model rebuilt "
                                    "with a new seed per draw), uniform, constant, kaiming_normal or xavier_normal"})
    signal: str = _opt("abs", "abs (default, |grad|), signed, square or positive", "--signal", {"metavar": "NAME"})
    channel_reduce: str = _opt("sum", "how input channels are combined (sum, default); a preset sets its own",
                               python_only="rarely changed alone; the presets (--preset) set it")
    preset: str | stats.Preset | None = _opt(None, "ERF definition preset: luo, replknet or openerf", "--preset",
                                             {"metavar": "NAME"})
    device: str = _opt("auto", "auto (default: CUDA when available), cpu or cuda", "--device", {"metavar": "DEV"})
    dtype: str = _opt("float32", "float32 (default) or float64", "--dtype", {"metavar": "T"})
    autocast: str | None = _opt(None, "bf16 or tf32 (default: off)", "--autocast", {"metavar": "MODE"})
    seed: int = _opt(0, "seed of the inputs and weight draws (default 0)", "--seed",
                     {"type": int, "metavar": "S", "help": "seed of the model, inputs and weight draws (default 0)"})
    crop: str | bool = _opt("auto", "'auto' (crop to the unit's TRF where safe, checked once), True (unchecked) "
                                    "or False (never)", "--no-crop",
                            {"action": "store_true", "help": "never crop the input to the unit's TRF"})
    cone: str | bool = _opt("auto", "'auto' (run each op only where the unit depends on it, for chains of convs, "
                                    "pools and pointwise ops; checked once), True (unchecked) or False (never)",
                            python_only="exact where it runs (checked once, like the crop); False is for benchmarks")
    auto_batch: bool = _opt(True, "on CUDA (one process, noise inputs): use the largest batch that fits, found once "
                                  "by halving from min(samples, 4096) on out-of-memory; reported as batch_size",
                            python_only="on by default where it applies; False keeps batch_size (benchmarks)")
    single_sample: bool = _opt(False, "one sample per pass (train-mode BatchNorm mixes a batch)",
                               python_only="only with eval_mode=False, which the CLI never sets")
    tol: float | None = _opt(None, "keep sampling until the relative SE of sigma is below tol", "--tol",
                             {"type": float, "metavar": "X",
                              "help": "keep sampling until the relative SE of sigma is below X"})
    max_samples: int | None = _opt(None, "with tol: most samples per draw (default 64x samples)", "--max-samples",
                                   {"type": int, "metavar": "N", "help": "with --tol: most samples per draw"})
    progress: bool = _opt(False, "show a progress bar on stderr",
                          python_only="the CLI shows one when stderr is a terminal")
    in_channels: int | None = _opt(None, "input channels (default: read from the model's first conv, else 3)",
                                   "--in-channels")
    eval_mode: bool = _opt(True, "measure in eval mode (False keeps the modules' modes)",
                           python_only="the CLI measures a loaded model in eval mode")
    group_size: int | None = _opt(None, "consecutive sample indices per uncertainty group (default: one weight "
                                        "draw each when there are several, else samples/32)",
                                  python_only="a statistics detail; configs and Python set it")
    prefix_tokens: int | None = _opt(None, "(N, L, C) token layers: tokens before the image grid (default: found)",
                                     "--prefix-tokens")
    normalize_draws: bool = _opt(False, "with weight_draws: each draw's map to unit total before averaging",
                                 "--normalize-draws",
                                 {"action": "store_true",
                                  "help": "with --weight-draws: each draw's map to unit total before averaging "
                                          "(every network counts the same)"})
    bn: str = _opt("auto", "BatchNorm running statistics: auto (default: re-estimate them on the probe inputs when "
                           "every BatchNorm layer is fresh, keep trained ones), calibrate (always re-estimate) or "
                           "as_is", "--bn", {"metavar": "POLICY", "choices": list(BN_POLICIES)})
    normalize_samples: bool = _opt(False, "each input sample's map to unit total before averaging (robust to a few "
                                          "exploding inputs; needs a non-negative signal)", "--normalize-samples",
                                   {"action": "store_true",
                                    "help": "each input sample's map to unit total before averaging (robust to a "
                                            "few exploding inputs)"})
    deterministic: bool = _opt(False, "deterministic CUDA kernels (bit-for-bit repeatable on a GPU; CPU runs "
                                      "always are)", "--deterministic", {"action": "store_true"})
    state_file: str | os.PathLike | None = _opt(None, "save the sums there every save_every seconds and resume "
                                                      "from a matching save",
                                                python_only="the experiment runner's resume; the CLI measures "
                                                            "in one go")
    save_every: float = _opt(60.0, "seconds between saves to state_file",
                             python_only="goes with state_file")

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every option name, in order (the keywords ``erf.measure`` takes besides model and size)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, options: MeasureOptions | None = None, **overrides: Any) -> MeasureOptions:
        """``options`` (default: all defaults) with ``overrides`` applied, checked.

        Raises:
            TypeError: an override that is not an option.
            ErfError: an invalid value (``validate``).
        """
        for name in overrides:
            if name not in cls.field_names():
                raise TypeError(f"measure() got an unexpected keyword argument {name!r}")
        if options is None:
            return cls(**overrides)
        return dataclasses.replace(options, **overrides) if overrides else options

    def validate(self) -> None:
        """Check every value (also run on construction).

        Raises:
            ErfError: the first invalid value, in one line.
        """
        check_seed(self.seed, "seed")
        for name, v in (("samples", self.samples), ("batch_size", self.batch_size)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ErfError(f"{name} must be a positive integer; got {v!r}")
        draws, init, tol, max_samples = self.weight_draws, self.init, self.tol, self.max_samples
        if not isinstance(draws, (int, np.integer)) or draws < 0:
            raise ErfError(f"weight_draws must be 0 (use the model's weights) or a positive count; got {draws!r}")
        if draws and init == "model":
            raise ErfError("weight_draws needs an init that draws weights (e.g. init='kaiming_normal', or "
                           "erf.models.rebuild_init(spec) for the model's own scheme), not 'model'")
        if isinstance(init, str) and init not in INITS:
            raise ErfError(f"unknown init {init!r}; choose one of {', '.join(INITS)} (or pass a callable)")
        if tol is not None and not tol > 0:
            raise ErfError(f"tol must be a positive number; got {tol!r}")
        if max_samples is not None and (not isinstance(max_samples, (int, np.integer)) or max_samples < self.samples):
            raise ErfError(f"max_samples must be an integer >= samples ({self.samples}); got {max_samples!r}")
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v is not None and (isinstance(v, str) or not all(isinstance(x, (int, float, np.number))
                                                                and math.isfinite(x) for x in v) or not v):
                raise ErfError(f"{name} must be a list of numbers, one per input channel (or one); got {v!r}")
        if self.std is not None and min(self.std) <= 0:
            raise ErfError(f"std must be positive; got {list(self.std)}")
        if is_path(self.inputs):
            first_readable(find_images(self.inputs), 1 if self.in_channels == 1 else 3)
        elif isinstance(self.inputs, str) and self.inputs not in ("gaussian", "uniform", "constant"):
            raise ErfError(f"inputs must be gaussian, uniform, constant or a PATH of images; got {self.inputs!r}")
        if self.crop not in ("auto", True, False):
            raise ErfError(f"crop must be 'auto', True or False; got {self.crop!r}")
        if self.cone not in ("auto", True, False):
            raise ErfError(f"cone must be 'auto', True or False; got {self.cone!r}")
        if self.autocast not in (None, "bf16", "tf32"):
            raise ErfError(f"autocast must be None, 'bf16' or 'tf32'; got {self.autocast!r}")
        if self.dtype not in ("float32", "float64"):
            raise ErfError(f"dtype must be 'float32' or 'float64'; got {self.dtype!r}")
        if self.autocast == "bf16" and self.dtype == "float64":
            raise ErfError("autocast='bf16' with dtype='float64' makes no sense; drop one of them")
        if self.bn not in BN_POLICIES:
            raise ErfError(f"bn must be one of {', '.join(BN_POLICIES)}; got {self.bn!r}")
        if self.normalize_samples and self.make_preset().signal == "signed":
            raise ErfError("normalize_samples needs a non-negative signal (abs, square, positive), not 'signed'")
        gs = self.group_size
        if gs is not None and (not isinstance(gs, (int, np.integer)) or gs < 1):
            raise ErfError(f"group_size must be a positive integer; got {gs!r}")
        if self.normalize_draws and not (2 <= draws <= MAX_GROUPS and gs in (None, self.samples) and not tol):
            raise ErfError(f"normalize_draws needs 2 to {MAX_GROUPS} weight draws of a fixed sample count, one group "
                           f"each (no group_size, no tol); got weight_draws={draws}")

    # ------------------------------------------------------------------ derived values

    @property
    def batch(self) -> int:
        """Samples per pass: ``batch_size``, or 1 with ``single_sample``."""
        return 1 if self.single_sample else int(self.batch_size)

    @property
    def redraws(self) -> bool:
        """True when the weights are drawn (draw 0 included) rather than used as given."""
        return bool(self.weight_draws) or self.init != "model"

    @property
    def draws(self) -> int:
        """Weight draws measured: ``weight_draws``, at least one."""
        return max(1, self.weight_draws)

    @property
    def most_samples(self) -> int:
        """``max_samples``, default 64x ``samples``: the most an adaptive run takes per draw."""
        return int(self.max_samples if self.max_samples is not None else 64 * self.samples)

    @property
    def per_draw(self) -> int:
        """The sample-index space of one draw: ``most_samples`` with ``tol``, else ``samples``."""
        return self.most_samples if self.tol else self.samples

    def draw_group_size(self) -> int:
        """The group size before capping: ``group_size``, else ``default_group_size``."""
        if self.group_size:
            return int(self.group_size)
        return default_group_size(self.samples, self.draws)

    def make_preset(self) -> stats.Preset:
        """The map definition: ``preset`` (a name or a ``stats.Preset``), else a custom one from ``signal``.

        Raises:
            ErfError: an unknown preset name.
        """
        if self.preset is not None:
            return self.preset if isinstance(self.preset, stats.Preset) else stats.get_preset(self.preset)
        return stats.Preset("custom", "sum", False, self.signal, self.channel_reduce, None)


def default_group_size(samples: int, draws: int) -> int:
    """One weight draw per group when there are several (the draws are what varies most), else samples/32."""
    return samples if draws > 1 else max(1, math.ceil(samples / 32))
