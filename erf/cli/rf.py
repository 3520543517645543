"""``erf rf MODEL``: the parser of the theoretical receptive field command.

The work is in ``erf.cli.rf_run``, imported when the command runs, so that
``erf rf --help`` answers without importing torch.
"""

from __future__ import annotations

import argparse

from erf.cli.common import COMMANDS, add_model_args, guarded


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``rf`` parser to ``sub`` and point its ``func`` at ``run``.

    Args:
        sub: the ``erf`` parser's subparsers.
    """
    p = sub.add_parser("rf", help=COMMANDS["rf"],
                       description="Trace a forward pass and print the theoretical receptive field of every layer.")
    add_model_args(p, optional=True)
    p.add_argument("--layer", metavar="NAME", help="target layer (default: the model output)")
    p.add_argument("--unit", metavar="I,J", help="also give the input box of this unit of the target layer")
    p.add_argument("--treat-as", action="append", default=[], metavar="OP=KIND",
                   help="rule for an op or module class erf does not know: pointwise, global or identity")
    p.add_argument("--allow-unaligned", action="store_true",
                   help="take the union where paths into a node disagree, instead of refusing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--list", action="store_true", help="list the registered model names and exit")
    p.set_defaults(func=guarded(run))


def run(args: argparse.Namespace) -> int:
    """Run ``erf rf`` on parsed arguments (see ``erf.cli.rf_run.run``).

    Args:
        args: the parsed command line.

    Returns:
        The exit code.
    """
    # lazy: the command's work imports torch; `erf rf --help` builds the parser above without it
    from erf.cli import rf_run

    return rf_run.run(args)
