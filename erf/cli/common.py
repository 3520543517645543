"""Argument parsing shared by the subcommands: the command table, sizes, units, model specs.

Nothing here imports torch: the parsers are built from this module alone.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from erf import limits
from erf.errors import ErfError

# subcommand -> its one-line help; each is the module erf.cli.<name> with register(subparsers)
COMMANDS: dict[str, str] = {
    "rf": "theoretical receptive field of every layer",
    "measure": "measure the effective receptive field (ERF) of one unit",
    "run": "run an experiment config (TOML) and write its results",
    "profile": "ERF of several layers (or of every unit of one) from shared passes",
}


def parse_ints(text: str, what: str, *, positive: bool = True, nonneg: bool = False) -> tuple[int, ...]:
    """Parse ``"224"`` or ``"224,160"`` (or ``"224x160"``) into a tuple of ints.

    Args:
        text: the flag's value.
        what: how the message names the flag (``"--input"``).
        positive: refuse values <= 0.
        nonneg: refuse values < 0.

    Returns:
        The integers.

    Raises:
        ErfError: not integers, or out of range (one line naming ``what``).
    """
    try:
        values = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise ErfError(f"{what} must be integers separated by commas, e.g. 224 or 224,160; got {text!r}") from None
    if positive and any(v <= 0 for v in values):
        raise ErfError(f"{what} must be positive; got {text!r}")
    if nonneg and any(v < 0 for v in values):
        raise ErfError(f"{what} must not be negative; got {text!r}")
    return values


def positive_int(text: str) -> int:
    """argparse type for counts: an integer >= 1 (argparse prints the one-line error).

    Args:
        text: the flag's value.

    Returns:
        The integer.

    Raises:
        argparse.ArgumentTypeError: not an integer, or below 1.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}")
    return value


def input_size(text: str, ndim: int = 2) -> tuple[int, ...]:
    """``--input H[,W]``: one number is used for every spatial axis.

    Args:
        text: the flag's value.
        ndim: the model's number of spatial axes.

    Returns:
        The size per axis.

    Raises:
        ErfError: see ``parse_ints``.
    """
    values = parse_ints(text, "--input")
    if len(values) == 1:
        values = values * ndim
    return values


def add_model_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    """MODEL, --model-arg, --pretrained, --checkpoint, --input, --in-channels: how every subcommand names a model.

    Args:
        p: the subcommand's parser.
        optional: MODEL may be left out (``erf rf --list``).
    """
    p.add_argument("model", metavar="MODEL", nargs="?" if optional else None,
                   help="registry name (see 'erf rf --list'), path/to/file.py:factory (imports the file: its code "
                        "runs), timm:NAME or torchvision:NAME[:WEIGHTS]")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="argument passed to the model factory (repeatable), e.g. --model-arg width=0.25")
    p.add_argument("--pretrained", action="store_true",
                   help="timm:NAME / torchvision:NAME: load the library's trained weights, fetched into its own cache "
                        "(~/.cache/huggingface/hub, ~/.cache/torch/hub/checkpoints); offline, pass them with "
                        "--checkpoint instead")
    p.add_argument("--checkpoint", metavar="FILE", default=None,
                   help="weights to load: a state_dict saved with torch.save (.pt/.pth; a pickle that would run code "
                        "is refused) or a .safetensors file")
    p.add_argument("--input", default="224", metavar="H[,W]", help="input size in pixels (default 224)")
    p.add_argument("--in-channels", type=positive_int, default=None, metavar="C",
                   help="input channels (default: read from the model's first conv, else 3)")
    p.add_argument("--prefix-tokens", type=int, default=None, metavar="N",
                   help="(N, L, C) token layers: non-image tokens before the grid (class, distillation token); "
                        "default: from the traced graph, else the model's num_prefix_tokens / cls_token")


def check_output_file(flag: str, path: str | None) -> None:
    """Refuse, before any work, an output file erf must not or cannot write (``erf.limits.check_output_path``).

    Args:
        flag: how the message names the flag (``"--save"``).
        path: the file asked for (None: nothing to check).

    Raises:
        ErfError: ``path`` is empty, a folder, a device, FIFO or socket, under /proc, too long, below
            a file, or in a folder that is not writable.
    """
    if path is None:
        return
    if path.endswith(("/", os.sep)) and path.strip("/" + os.sep):  # DIR/newdir/: a folder, not a file name
        raise ErfError(f"{flag} {path}: ends with '/', a folder; give a file name in it, e.g. {path}erf"
                       f"{'.npz' if flag == '--save' else '.png'}")
    limits.check_output_path(flag, path)


@contextlib.contextmanager
def json_stdout() -> Iterator[TextIO]:
    """Send everything printed to stdout to stderr meanwhile; yield the real stdout (for the JSON alone).

    Model code (a factory, a forward) may print: with ``--json`` that text must not end up in the
    JSON a program reads from stdout.
    """
    real = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        yield real


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_WORD = 200  # characters of one word (a layer name, a path) shown in a message


def clean_message(text: str) -> str:
    """One printable line: control characters (NUL included) escaped, over-long words cut with their length.

    Args:
        text: an error message, which may quote the user's input.

    Returns:
        The line.
    """
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    words = []
    for word in text.split():
        if len(word) > MAX_WORD:
            word = f"{word[:MAX_WORD // 2]}...({len(word)} characters)"
        words.append(word)
    return " ".join(words)


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` with its errors as one clean line each: ``ErfError`` messages through ``clean_message``, and a
    ``BaseException`` that is no ``Exception`` (``GeneratorExit``, a custom class) raised by model code as an
    ``ErfError`` (a real Ctrl-C and ``sys.exit`` stay what they are).

    Args:
        run: a command's ``run(args)``.

    Returns:
        The wrapped command.
    """
    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ErfError as exc:
            clean = clean_message(str(exc))
            if clean == " ".join(str(exc).split()):
                raise
            try:
                again = type(exc)(clean)
            except TypeError:  # a subclass with other arguments
                again = ErfError(clean)
            raise again from None
        except (Exception, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - e.g. GeneratorExit from a model's forward
            detail = clean_message(str(exc))
            raise ErfError(f"model code raised {type(exc).__name__}{': ' + detail if detail else ''}; erf stops "
                           "(a model must return or raise an exception)") from None
    return wrapper
