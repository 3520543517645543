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
import os
import signal
import sys
import threading
import traceback
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
        The exit code: 0 on success, 2 for bad input (one line on stderr), 130 when interrupted
        (Ctrl-C). ``--help``, ``--version`` and argparse errors exit through ``SystemExit`` as usual.
        Model code (a model file's import, its factory or its forward) that calls ``sys.exit`` or
        raises ``KeyboardInterrupt`` itself gets one line and exit code 2: a real Ctrl-C is told
        apart by the SIGINT handler ``main`` installs while the command runs.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser([command_in(argv)]).parse_args(argv)
    # lazy: torch (under erf.distributed and erf.determinism) loads only once a command runs,
    # so that --help and --version answer in well under a second
    from erf import determinism, distributed

    ctrl_c = _CtrlC()
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
    except KeyboardInterrupt as exc:
        if ctrl_c.pressed:
            print("erf: interrupted", file=sys.stderr)
            return 130
        if distributed.is_main():
            print(f"erf: error: {code_exit(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse exits before the try; nothing in erf calls sys.exit
        if distributed.is_main():
            print(f"erf: error: {code_exit(exc)}", file=sys.stderr)
        return 2
    finally:
        ctrl_c.restore()
        distributed.shutdown()


class _CtrlC:
    """Tells a real Ctrl-C from a ``KeyboardInterrupt`` that code raised: SIGINT sets ``pressed`` first.

    Installed only in the main thread over Python's default handler (which it then calls), and
    removed again by ``restore``; elsewhere every ``KeyboardInterrupt`` counts as a Ctrl-C.
    """

    def __init__(self) -> None:
        self.pressed = False
        self.previous = None
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        else:
            self.pressed = True

    def _handle(self, signum, frame) -> None:
        self.pressed = True
        signal.default_int_handler(signum, frame)

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def code_exit(exc: BaseException) -> str:
    """The one line for a ``SystemExit`` or ``KeyboardInterrupt`` raised by code erf ran (a model file).

    Says what the code did, while doing what (importing the model file, building the model, or
    running it) and where, from the traceback.

    Args:
        exc: the exception, with its traceback.

    Returns:
        E.g. ``model code called sys.exit(0) while building the model (net.py:7, in make); erf stops``.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    names = {f.name for f in frames}
    if "_import_file" in names or "exec_module" in names:
        phase = "importing the model file"
    elif "call_factory" in names:
        phase = "building the model"
    else:
        phase = "running the model"
    what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else "raised KeyboardInterrupt"
    where = f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno}, in {frames[-1].name})" if frames else ""
    return f"model code {what} while {phase}{where}; erf stops (a model must return or raise an exception)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
