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
from typing import Any, Callable

from erf import distributed, models
from erf.analytic import spatial_ndim
from erf.cli.common import add_model_args, check_output_file, input_size, parse_ints
from erf.engine import MeasureOptions, measure
from erf.errors import ErfError

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


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``measure`` parser: the model flags, one flag per ``MeasureOptions`` field, the outputs."""
    p = sub.add_parser("measure", help="measure the effective receptive field (ERF) of one unit",
                       description="Average |d unit / d input| over random inputs (Luo et al. 2016) and compare "
                                   "the ERF with the theoretical receptive field.")
    add_model_args(p)  # also --in-channels and --prefix-tokens (shared with erf rf)
    for f in dataclasses.fields(MeasureOptions):
        cli = f.metadata.get("cli")
        if cli is None:
            continue
        kw = {"help": f.metadata["help"], **cli}
        if kw.get("action") != "store_true":
            kw["default"] = f.default
        p.add_argument(f.metadata["flag"], **kw)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="write a heatmap of the ERF")
    p.add_argument("--log-scale", action="store_true", help="log colour scale for --plot")
    p.add_argument("--save", metavar="FILE.npz", help="write the maps, group sums and settings (.npz)")
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    """Measure, then print the summary (or JSON) and write ``--plot`` / ``--save``.

    Returns:
        0.

    Raises:
        ErfError: a bad flag, model or output path, or a failed measurement.
    """
    if args.plot and os.path.splitext(args.plot)[1].lower() not in _PLOT_SUFFIXES:
        raise ErfError(f"--plot must name a {', '.join(_PLOT_SUFFIXES)} file; got {args.plot!r}")
    for flag, path in (("--plot", args.plot), ("--save", args.save)):
        check_output_file(flag, path)
    if args.seed < 0:
        raise ErfError(f"--seed must be >= 0; got {args.seed}")
    if args.tol is None and args.max_samples is not None:
        raise ErfError("--max-samples only applies with --tol; add --tol X or drop --max-samples")
    model_args = models.parse_model_args(args.model_arg)
    model = models.load_model(args.model, model_args, args.checkpoint, seed=args.seed)
    init = args.init
    if init == "model" and args.weight_draws:
        if args.checkpoint:
            raise ErfError("--weight-draws with --init model rebuilds the model per draw, which drops --checkpoint; "
                           "drop one of them")
        init = models.rebuild_init(args.model, model_args)
    options = options_from_args(args, init=init, progress=sys.stderr.isatty())
    res = measure(model, input_size(args.input, spatial_ndim(model)), options)
    if not distributed.is_main():
        return 0
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
    print(text)
    return 0
