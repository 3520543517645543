"""``erf run CONFIG``: run one experiment config and write its results folder.

The parser imports no torch (``erf run --help`` answers at once); the experiment layer is
imported when the command runs.
"""

from __future__ import annotations

import argparse

from erf.cli.common import COMMANDS, guarded
from erf.errors import ErfError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` parser to ``sub`` and point its ``func`` at ``run``.

    Args:
        sub: the ``erf`` parser's subparsers.
    """
    p = sub.add_parser("run", help=COMMANDS["run"],
                       description="Run the experiment a TOML config describes (see configs/README.md) and "
                                   "write summary.json, sweep.csv, maps.npz, figures and report.md.")
    p.add_argument("config", metavar="CONFIG", help="a TOML experiment config, e.g. configs/luo_growth.toml")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="where to measure and train (default: the config's, normally auto = CUDA when available)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="results folder (default: results/<experiment name>); replaced when the run completes")
    p.add_argument("--quick", action="store_true",
                   help="small samples and sizes (the config's [quick] table): a couple of minutes on a CPU")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="seed (default: the config's)")
    p.add_argument("--inputs", default=None, metavar="PATH",
                   help="real images for every point: an image folder, a glob or an .npy/.npz array "
                        "(sets inputs.kind = 'images' and inputs.path)")
    p.add_argument("--check", action="store_true", help="validate the config and its models, run nothing (model files are imported: their code runs)")
    p.add_argument("--resume", action="store_true",
                   help="go on from the last save of an interrupted run of this config (same numbers as one run; "
                        "give the same --quick/--out/--seed/--device: the hint after an interruption is the command)")
    p.add_argument("--restart", action="store_true",
                   help="discard an interrupted run of this config and start anew (never a live run's)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress (by default a bar on a terminal, else a line every 30 s and at each tenth)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic CUDA kernels (experiment.deterministic); CPU runs always repeat exactly")
    p.set_defaults(func=guarded(run))


def run(args: argparse.Namespace) -> int:
    """Check (``--check``) or run the config the arguments name.

    Args:
        args: the parsed ``erf run`` command line.

    Returns:
        0.

    Raises:
        ErfError: ``--resume`` with ``--restart``; ``ConfigError`` for a bad config, model or
            destination, another live run writing there, an interrupted run found without
            ``--resume``/``--restart``, ``--resume`` with nothing to resume; a full disk or
            read-only folder while writing (the saves kept, the message gives the resume command).
    """
    # lazy: the experiment layer imports torch; `erf run --help` builds the parser above without it
    from erf import distributed
    from erf.experiment import check_models, load_config, run_experiment

    if args.resume and args.restart:
        raise ErfError("--resume and --restart exclude each other: keep the interrupted run or discard it")
    cfg = load_config(args.config, quick=args.quick, device=args.device, seed=args.seed, inputs=args.inputs)
    if args.deterministic:
        cfg.settings["experiment"]["deterministic"] = cfg.overrides["experiment.deterministic"] = True
    if args.check:
        check_models(cfg)
        print(f"{args.config}: ok ({len(cfg.points)} points)")
        return 0
    out = run_experiment(cfg, out=args.out, resume=args.resume, restart=args.restart, quiet=args.quiet)
    if distributed.is_main() and not args.quiet:
        print(f"results written to {out}")
    return 0
