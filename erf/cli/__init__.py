"""The ``erf`` command: a thin shell over the public API.

Each subcommand lives in its own module with ``register(subparsers)``; that function
adds the parser and sets ``func`` to a callable taking the parsed arguments and
returning an exit code. Any ``ErfError`` becomes one line on stderr and exit code 2.
Under ``torchrun`` every process runs the command (``erf.distributed``); rank 0 alone
prints and writes.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from erf.errors import ErfError

SUBCOMMANDS = ("rf", "measure", "run")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, exit code 2."""

    def error(self, message):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="erf", description="Theoretical and effective receptive fields of neural networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"erf.cli.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not built yet
            if exc.name != f"erf.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from erf import distributed

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "deterministic", False):
            from erf.determinism import prepare

            prepare()
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
