"""Argument parsing shared by the subcommands: sizes, units, model specs."""

from __future__ import annotations

import argparse
import os

from erf.errors import ErfError


def parse_ints(text: str, what: str, *, positive: bool = True, nonneg: bool = False) -> tuple[int, ...]:
    """Parse ``"224"`` or ``"224,160"`` into a tuple of ints, with a one-line error."""
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
    """argparse type for counts: an integer >= 1 (argparse prints the one-line error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}")
    return value


def input_size(text: str, ndim: int = 2) -> tuple[int, ...]:
    """``--input H[,W]``: one number is used for every spatial axis."""
    values = parse_ints(text, "--input")
    if len(values) == 1:
        values = values * ndim
    return values


def add_model_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    """MODEL, --model-arg, --checkpoint, --input, --in-channels: how every subcommand names a model."""
    p.add_argument("model", metavar="MODEL", nargs="?" if optional else None,
                   help="registry name (see 'erf rf --list'), path/to/file.py:factory, timm:NAME or torchvision:NAME")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="argument passed to the model factory (repeatable), e.g. --model-arg width=0.25")
    p.add_argument("--checkpoint", metavar="FILE", default=None,
                   help="weights to load (a state_dict saved with torch.save; loaded with weights_only=True)")
    p.add_argument("--input", default="224", metavar="H[,W]", help="input size in pixels (default 224)")
    p.add_argument("--in-channels", type=positive_int, default=None, metavar="C",
                   help="input channels (default: read from the model's first conv, else 3)")
    p.add_argument("--prefix-tokens", type=int, default=None, metavar="N",
                   help="(N, L, C) token layers: non-image tokens before the grid (class, distillation token); "
                        "default: from the traced graph, else the model's num_prefix_tokens / cls_token")


def check_output_file(flag: str, path: str | None) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, or a parent that is a file."""
    if not path:
        return
    if os.path.isdir(path):
        raise ErfError(f"{flag} {path}: is a folder; give a file name inside it")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ErfError(f"{flag} {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK):
        raise ErfError(f"{flag} {path}: the folder {parent} is not writable; choose another path")
