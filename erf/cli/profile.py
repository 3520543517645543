"""``erf profile MODEL``: the ERF of several layers (``--layers``) or of many units of one (``--units``).

Both from shared passes (``erf.engine.profile``, ``erf.engine.grid``). The measurement flags are
those of ``erf measure`` (made from ``MeasureOptions``); ``--layers`` and ``--units`` choose the
targets. Building this parser imports the engine (and torch), as ``erf measure``'s does.
"""

from __future__ import annotations

import argparse
import json
import os

from erf import limits, models
from erf.analytic import spatial_ndim
from erf.cli.common import add_model_args, check_output_file, input_size, parse_ints, positive_int
from erf.cli.measure import add_measure_flags, options_from_args
from erf.engine.grid import measure_grid
from erf.engine.profile import profile
from erf.errors import ErfError

_PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``profile`` parser: the model flags, the ``erf measure`` flags, ``--layers``/``--units``, outputs."""
    p = sub.add_parser("profile", help="ERF of several layers (or of every unit of one) from shared passes",
                       description="Each input sample is measured for one target (a layer's centre unit, or a "
                                   "unit of --layer), so one forward and one backward per batch give every "
                                   "target's map. Each target gets --samples input samples.")
    add_model_args(p)
    add_measure_flags(p)
    p.add_argument("--layers", metavar="A,B,...", help="the layers of a profile (names as 'erf rf MODEL' lists)")
    p.add_argument("--units", metavar="grid|I,J;I,J", help="units of --layer: 'grid' (every unit, or --points per "
                                                            "axis) or a list separated by ';'")
    p.add_argument("--points", type=positive_int, default=9, metavar="N",
                   help="with --units grid: the most units per axis (default 9)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="write the figure (ERF size and TRF per layer, or ERF size "
                                                      "and centre offset per unit)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure the profile or the unit grid, then print the table (or JSON) and write ``--plot``.

    Returns:
        0.

    Raises:
        ErfError: a bad flag, model or output path, or a failed measurement.
    """
    if bool(args.layers) == bool(args.units):
        raise ErfError("give --layers A,B,... (a profile of layers) or --units grid (units of one --layer), "
                       "not both")
    if args.plot and os.path.splitext(args.plot)[1].lower() not in _PLOT_SUFFIXES:
        raise ErfError(f"--plot must name a {', '.join(_PLOT_SUFFIXES)} file; got {args.plot!r}")
    check_output_file("--plot", args.plot)
    limits.check_seed(args.seed)
    model_args = models.parse_model_args(args.model_arg)
    model = models.load_model(args.model, model_args, args.checkpoint, seed=args.seed, pretrained=args.pretrained)
    init = args.init
    if init == "model" and args.weight_draws:
        init = models.rebuild_init(args.model, model_args)
    options = options_from_args(args, init=init, progress=not args.quiet)
    size = input_size(args.input, spatial_ndim(model))
    if args.layers:
        if args.layer:
            raise ErfError("--layer picks the layer of --units; a profile takes --layers A,B,...")
        out = profile(model, size, [s for s in args.layers.split(",") if s], options)
    else:
        units = "grid" if args.units == "grid" else [
            parse_ints(u, "--units", positive=False, nonneg=True) for u in args.units.split(";") if u]
        out = measure_grid(model, size, units, options, points=args.points)
    if args.plot:
        out.plot(args.plot)
    print(json.dumps(out.to_dict()) if args.json else out.table())
    return 0
