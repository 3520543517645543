"""``erf measure MODEL``: the effective receptive field of one unit, measured by the gradient engine.

The measurement flags are made from ``MeasureOptions`` (each field's ``flag``, ``help`` and
``cli`` metadata), so a new option is added once. Building this parser imports the engine
(and torch): only ``erf measure`` itself does that, never ``erf --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable

import torch

from erf import distributed, limits, models, stats
from erf.analytic import infer_in_channels, spatial_ndim
from erf.cli.common import add_model_args, check_output_file, guarded, input_size, json_stdout, parse_ints
from erf.device import resolve_device
from erf.engine import MeasureOptions, measure
from erf.errors import ErfError
from erf.models.registry import is_model

_PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")

# options whose flag value needs converting (others are taken as parsed)
_FROM_FLAG: dict[str, Callable[[Any], Any]] = {
    "unit": lambda v: None if v is None else parse_ints(v, "--unit", positive=False, nonneg=True),
    "crop": lambda no_crop: not no_crop and "auto",
}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def option_flags() -> dict[str, str]:
    """``MeasureOptions`` field -> its ``erf measure`` flag, for every field that has one."""
    return {f.name: f.metadata["flag"] for f in dataclasses.fields(MeasureOptions) if f.metadata["flag"]}


def add_measure_flags(p: argparse.ArgumentParser) -> None:
    """Add one flag per ``MeasureOptions`` field that has CLI metadata (``erf measure``, ``erf profile``).

    Args:
        p: the subcommand's parser.
    """
    for f in dataclasses.fields(MeasureOptions):
        cli = f.metadata.get("cli")
        if cli is None:
            continue
        kw = {"help": f.metadata["help"], **cli}
        if kw.get("action") != "store_true":
            kw["default"] = f.default
        p.add_argument(f.metadata["flag"], **kw)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``measure`` parser: the model flags, one flag per ``MeasureOptions`` field, the outputs."""
    p = sub.add_parser("measure", help="measure the effective receptive field (ERF) of one unit",
                       description="Average |d unit / d input| over random inputs (Luo et al. 2016) and compare "
                                   "the ERF with the theoretical receptive field.")
    add_model_args(p)  # also --in-channels and --prefix-tokens (shared with erf rf)
    add_measure_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="write a heatmap of the ERF")
    p.add_argument("--log-scale", action="store_true", help="log colour scale for --plot")
    p.add_argument("--save", metavar="FILE.npz", help="write the maps, group sums and settings (.npz)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress (default: a bar on a terminal, a line every 30 s in logs)")
    p.set_defaults(func=guarded(run))


def options_from_args(args: argparse.Namespace, **overrides: Any) -> MeasureOptions:
    """The ``MeasureOptions`` of a parsed ``erf measure`` command line.

    Args:
        args: the parsed flags.
        **overrides: fields set by the command itself (``init``, ``progress``).

    Returns:
        The checked options.

    Raises:
        ErfError: a bad value (``MeasureOptions.validate``) or a malformed ``--unit``.
    """
    values = {}
    for name, flag in option_flags().items():
        v = getattr(args, _dest(flag))
        values[name] = _FROM_FLAG[name](v) if name in _FROM_FLAG else v
    return MeasureOptions(**{**values, **overrides})


def input_files(args: argparse.Namespace) -> dict[str, str]:
    """The files a model command reads (flag -> path): ``--checkpoint``, the model file, ``--inputs`` images.

    Args:
        args: the parsed ``erf measure`` or ``erf rf`` command line.

    Returns:
        Each input path named on the command line (no output may be written there).
    """
    files = {}
    if getattr(args, "checkpoint", None):
        files["--checkpoint"] = args.checkpoint
    spec = str(args.model or "")
    path = spec.rpartition(":")[0] if ".py:" in spec else spec
    if path and os.path.isfile(path):  # a model file (.py, TorchScript, torch.export)
        files["MODEL"] = path
    inputs = getattr(args, "inputs", None)
    if isinstance(inputs, str) and inputs not in ("gaussian", "uniform", "constant"):
        files["--inputs"] = inputs
    return files


def check_registry_model(spec: str, model_args: dict[str, Any], itemsize: int, memory: int) -> None:
    """A registry model's parameters fit in ``memory`` (built on the meta device: no memory, no weights drawn).

    Only for registry names, whose factories are cheap and known; a model file is imported once, later.

    Args:
        spec: the MODEL spec.
        model_args: its ``--model-arg`` values.
        itemsize: bytes per parameter.
        memory: the bytes available.

    Raises:
        ErfError: a refused model (``erf.limits.check_model_memory``) or a factory error.
    """
    if not is_model(spec):
        return
    with torch.device("meta"):
        model = models.load_model(spec, model_args)
    values = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    shown = " ".join(f"{k}={v}" for k, v in model_args.items())
    limits.check_model_memory(values, itemsize, f"model {spec!r}" + (f" ({shown})" if shown else ""), memory)


def _check_counts(args: argparse.Namespace) -> None:
    """Upper limits of the counts (``erf.limits``); their lower limits are ``MeasureOptions``'s."""
    why = "a sample's input is keyed by its index modulo 2**32"
    for flag, value in (("--samples", args.samples), ("--batch", args.batch), ("--max-samples", args.max_samples)):
        if value is not None and value > limits.MAX_SAMPLES:
            limits.check_count(value, flag, limits.MAX_SAMPLES, why=why)
    if args.tol is not None and args.max_samples is None and 64 * args.samples > limits.MAX_SAMPLES:
        raise ErfError(f"--tol samples up to 64 x --samples per draw, more than 2**32 ({why}); give --max-samples")
    if args.weight_draws > limits.MAX_WEIGHT_DRAWS:
        limits.check_count(args.weight_draws, "--weight-draws", limits.MAX_WEIGHT_DRAWS,
                           why="each draw re-initialises the model and has its own plan entry")


def run(args: argparse.Namespace) -> int:
    """Measure, then print the summary (or JSON) and write ``--plot`` / ``--save``.

    Returns:
        0.

    Raises:
        ErfError: a bad flag, model or output path, or a failed measurement.
    """
    if args.json:  # stdout holds the JSON alone: what the model's code prints goes to stderr
        with json_stdout() as out:
            text = _run(args)
        if text is not None:
            print(text, file=out)
        return 0
    text = _run(args)
    if text is not None:
        print(text)
    return 0


def _run(args: argparse.Namespace) -> str | None:
    """Measure and write the files; return the text to print (None on ranks other than 0)."""
    start = time.perf_counter()  # the time printed at the end is the call's, not the samples' alone
    if args.plot and os.path.splitext(args.plot)[1].lower() not in _PLOT_SUFFIXES:
        raise ErfError(f"--plot must name a {', '.join(_PLOT_SUFFIXES)} file; got {args.plot!r}")
    for flag, path in (("--plot", args.plot), ("--save", args.save)):
        check_output_file(flag, path)
    limits.check_distinct({"--plot": args.plot, "--save": args.save}, input_files(args))
    limits.check_seed(args.seed)
    if args.tol is None and args.max_samples is not None:
        raise ErfError("--max-samples only applies with --tol; add --tol X or drop --max-samples")
    _check_counts(args)
    model_args = models.parse_model_args(args.model_arg)
    memory = limits.memory_bytes(resolve_device(args.device).type)
    itemsize = 8 if args.dtype == "float64" else 4
    if args.in_channels:
        limits.check_input(parse_ints(args.input, "--input"), args.in_channels, "--input", itemsize=itemsize,
                           memory=memory)
    check_registry_model(args.model, model_args, itemsize, memory)
    model = models.load_model(args.model, model_args, args.checkpoint, seed=args.seed, pretrained=args.pretrained)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise ErfError(f"model {args.model!r} has parameters on the meta device (shapes without values): build it "
                       "with real tensors (or call .to_empty(device='cpu') and initialise them) before measuring")
    init = args.init
    if init == "model" and args.weight_draws:
        if args.checkpoint or args.pretrained:
            what = "--checkpoint" if args.checkpoint else "--pretrained"
            raise ErfError(f"--weight-draws with --init model rebuilds the model per draw, which drops {what}; "
                           "drop one of them")
        init = models.rebuild_init(args.model, model_args)
    options = options_from_args(args, init=init, progress=not args.quiet)
    size = input_size(args.input, spatial_ndim(model))
    limits.check_input(size, args.in_channels or infer_in_channels(model), "--input", itemsize=itemsize, memory=memory)
    res = measure(model, size, options)
    if not distributed.is_main():
        return None
    if not args.quiet and len(res.groups[1]) >= 2:  # after the bar's "done": say what the wait is
        print(f"erf: measure: bootstrap intervals over {len(res.groups[1])} groups ({stats.N_BOOT} replicates)...",
              file=sys.stderr, flush=True)
    text = json.dumps(res.to_dict()) if args.json else res.summary()
    written = []
    try:
        if args.plot:
            res.plot(args.plot, scale="log" if args.log_scale else "linear")
            written.append(args.plot)
        if args.save:
            written.append(res.save(args.save))
    except BaseException as exc:
        for path in written:
            if path and os.path.exists(path):
                os.unlink(path)
        if isinstance(exc, OSError):
            raise ErfError(f"cannot write {exc.filename or 'the output file'}: {exc.strerror or exc}; "
                           "choose another path") from None
        raise
    if not args.quiet:
        print(f"erf: measure: the whole call took {time.perf_counter() - start:.1f} s (model, trace, BatchNorm "
              f"calibration, {res.samples} samples, intervals{', files' if written else ''})", file=sys.stderr)
    return text
