"""The ``erf`` command: a thin shell over the public API.

Each subcommand lives in its own module with ``register(subparsers)``; that function
adds the parser and sets ``func`` to a callable taking the parsed arguments and
returning an exit code. Any ``ErfError`` becomes one line on stderr and exit code 2.
Under ``torchrun`` every process runs the command (``erf.distributed``); rank 0 alone
prints and writes.

``erf --help``, ``erf --version`` and ``erf COMMAND --help`` answer without importing
torch: only the named subcommand's module is imported (its parser imports no torch),
and torch loads once a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence

from erf import __version__
from erf.cli.common import COMMANDS
from erf.errors import ErfError

SUBCOMMANDS = tuple(COMMANDS)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, exit code 2."""

    def error(self, message):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``erf`` parser, with the full parsers of ``commands`` (default: every subcommand).

    Args:
        commands: the subcommands whose modules to import and register; every other one
            gets a stub parser that only carries its one-line help (``COMMANDS``).

    Returns:
        The parser; a parsed command line has ``func`` set by the chosen subcommand.
    """
    wanted = set(COMMANDS if commands is None else commands)
    parser = _Parser(prog="erf", description="Theoretical and effective receptive fields of neural networks.")
    parser.add_argument("--version", action="version", version=f"erf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, summary in COMMANDS.items():
        if name in wanted:
            # Subcommand modules are imported by name, and only the one a command line
            # names: `erf --help` then imports none of them (and no torch).
            importlib.import_module(f"erf.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The subcommand a command line names: its first word that is not an option.

    Args:
        argv: the arguments after ``erf``.

    Returns:
        The first argument not starting with ``-``, or None when there is none.
    """
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``erf`` command line.

    Args:
        argv: the arguments after ``erf`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for bad input (one line on stderr), 130 when interrupted.
        ``--help``, ``--version`` and argparse errors exit through ``SystemExit`` as usual.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser([command_in(argv)]).parse_args(argv)
    # lazy: torch (under erf.distributed and erf.determinism) loads only once a command runs,
    # so that --help and --version answer in well under a second
    from erf import determinism, distributed

    try:
        if getattr(args, "deterministic", False):
            determinism.prepare()
        distributed.init()
        return int(args.func(args) or 0)
    except ErfError as exc:
        if distributed.is_main():
            msg = " ".join(str(exc).split())
            print(f"erf: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("erf: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
