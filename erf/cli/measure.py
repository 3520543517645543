"""``erf measure MODEL``: the effective receptive field of one unit, measured by the gradient engine."""

from __future__ import annotations

import json
import os
import sys

from erf.cli.common import add_model_args, check_output_file, input_size, parse_ints

_PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def register(sub) -> None:
    p = sub.add_parser("measure", help="measure the effective receptive field (ERF) of one unit",
                       description="Average |d unit / d input| over random inputs (Luo et al. 2016) and compare "
                                   "the ERF with the theoretical receptive field.")
    add_model_args(p)
    p.add_argument("--layer", metavar="NAME", help="layer to measure, named as in 'erf rf' (default: the output)")
    p.add_argument("--unit", metavar="I,J", help="unit of the layer (default: the centre unit, n//2 per axis)")
    p.add_argument("--channel", type=int, metavar="C", help="one output channel (default: the sum over channels)")
    p.add_argument("--samples", type=int, default=64, metavar="N", help="input samples per weight draw (default 64)")
    p.add_argument("--batch", type=int, default=32, metavar="B", help="samples per forward/backward pass (default 32)")
    p.add_argument("--inputs", default="gaussian", metavar="KIND", help="gaussian (default), uniform or constant")
    p.add_argument("--weight-draws", type=int, default=0, metavar="K",
                   help="re-draw the weights K times with --init and average (default 0: the model's weights)")
    p.add_argument("--init", default="model", metavar="NAME",
                   help="model (default: the model's own init; with --weight-draws, the model rebuilt with a new "
                        "seed per draw), uniform, constant, kaiming_normal or xavier_normal")
    p.add_argument("--normalize-draws", action="store_true",
                   help="with --weight-draws: each draw's map to unit total before averaging (every network counts "
                        "the same)")
    p.add_argument("--signal", default="abs", metavar="NAME",
                   help="abs (default, |grad|), signed, square or positive")
    p.add_argument("--preset", metavar="NAME", help="ERF definition preset: luo, replknet or openerf")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto (default: CUDA when available), cpu or cuda")
    p.add_argument("--dtype", default="float32", metavar="T", help="float32 (default) or float64")
    p.add_argument("--autocast", default=None, metavar="MODE", help="bf16 or tf32 (default: off)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the model, inputs and weight draws (default 0)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic CUDA kernels (bit-for-bit repeatable on a GPU; CPU runs always are)")
    p.add_argument("--no-crop", action="store_true", help="never crop the input to the unit's TRF")
    p.add_argument("--tol", type=float, default=None, metavar="X",
                   help="keep sampling until the relative SE of sigma is below X")
    p.add_argument("--max-samples", type=int, default=None, metavar="N", help="with --tol: most samples per draw")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="write a heatmap of the ERF")
    p.add_argument("--log-scale", action="store_true", help="log colour scale for --plot")
    p.add_argument("--save", metavar="FILE.npz", help="write the maps, group sums and settings (.npz)")
    p.set_defaults(func=run)


def run(args) -> int:
    from erf import distributed, models
    from erf.analytic import spatial_ndim
    from erf.engine import measure
    from erf.errors import ErfError

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
    unit = None if args.unit is None else parse_ints(args.unit, "--unit", positive=False, nonneg=True)
    res = measure(model, input_size(args.input, spatial_ndim(model)), layer=args.layer, unit=unit,
                  channel=args.channel, samples=args.samples, batch_size=args.batch, inputs=args.inputs,
                  weight_draws=args.weight_draws, init=init, signal=args.signal, preset=args.preset,
                  device=args.device, dtype=args.dtype, autocast=args.autocast, seed=args.seed,
                  crop=not args.no_crop and "auto", tol=args.tol, max_samples=args.max_samples,
                  progress=sys.stderr.isatty(), in_channels=args.in_channels, deterministic=args.deterministic,
                  prefix_tokens=args.prefix_tokens, normalize_draws=args.normalize_draws)
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
