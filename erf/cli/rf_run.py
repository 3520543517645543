"""``erf rf MODEL``: trace the model and print the theoretical receptive field, per layer."""

from __future__ import annotations

import argparse
import json
import textwrap
import time

from erf import limits, models
from erf.analytic import infer_in_channels, receptive_field, spatial_ndim
from erf.analytic.rules import TREAT_AS
from erf.cli.common import input_size, json_stdout, parse_ints
from erf.cli.measure import check_registry_model
from erf.engine import check_traced, check_value
from erf.errors import ErfError


def run(args: argparse.Namespace) -> int:
    """Print the RF table (or one JSON object) for the model the arguments name.

    Args:
        args: the parsed ``erf rf`` command line.

    Returns:
        0.

    Raises:
        ErfError: no MODEL, a bad ``--treat-as``, ``--unit`` or ``--input``, or any error of
            loading or tracing the model.
    """
    if args.list:
        print(model_list())
        return 0
    if args.json:  # stdout holds the JSON alone: what the model's code prints goes to stderr
        with json_stdout() as out:
            text = _run(args)
        print(text, file=out)
        return 0
    _run(args)
    return 0


def _run(args: argparse.Namespace) -> str | None:
    """Trace and print the table; with ``--json`` return the JSON text instead."""
    if args.model is None:
        raise ErfError("give a MODEL (a registry name, path/to/file.py:factory, timm:NAME or torchvision:NAME); "
                       "'erf rf --list' lists the registry")
    treat_as = {}
    for item in args.treat_as:
        op, sep, kind = item.partition("=")
        if not sep or not op.strip() or kind not in TREAT_AS:
            raise ErfError(f"--treat-as takes OP={'|'.join(TREAT_AS)}, got {item!r}")
        treat_as[op] = kind
    model_args = models.parse_model_args(args.model_arg)
    memory = limits.memory_bytes()
    if args.in_channels:  # before anything is built; again below with the model's own axes
        limits.check_input(parse_ints(args.input, "--input"), args.in_channels, "--input", memory=memory,
                           trace_only=True)
    check_registry_model(args.model, model_args, 4, memory)
    model = models.load_model(args.model, model_args, args.checkpoint, pretrained=args.pretrained)
    size = input_size(args.input, spatial_ndim(model))
    # The trace runs on the meta device (no memory) first; a real pass, needed when that fails, is
    # bounded only where --in-channels was given (a channel count the model does not take makes
    # the meta pass fail): a huge --input alone stays an analytic question, answered on meta.
    channels = args.in_channels or infer_in_channels(model)
    limits.check_input(size, channels, "--input", memory=memory if args.in_channels else 2**62, trace_only=True)
    start = time.perf_counter()
    report = receptive_field(model, size, layer=args.layer,
                             in_channels=args.in_channels, treat_as=treat_as, allow_unaligned=args.allow_unaligned)
    notes = check_traced(report.target, check_value(args.prefix_tokens), report.target.name)
    unit = None
    if args.unit is not None:
        unit = parse_ints(args.unit, "--unit", positive=False, nonneg=True)
        report.box(unit)  # validates the unit
    if args.json:
        out = report.to_dict(unit)
        out["prefix_tokens"] = report.target.prefix_tokens
        if unit is not None and notes:
            out["token_index"] = report.target.index_of(unit)
        out["seconds"] = round(time.perf_counter() - start, 4)
        return json.dumps(out)
    print(report.table())
    if unit is not None:
        box, clipped = report.box(unit), report.box(unit, clip=True)
        print(f"unit {list(unit)} of {report.target.name}: input box {_box(box)} (clipped to the image: "
              f"{_box(clipped)})")
    if notes:
        where = "" if unit is None else f"; unit {list(unit)} is at tensor index {report.target.index_of(unit)}"
        print(f"{report.target.name} holds tokens: {report.target.prefix_tokens} prefix token(s) before the "
              f"{'x'.join(map(str, report.target.output))} grid{where}")
    return None


def _box(box: list[tuple[int, int] | None]) -> str:
    """``[a, b] x [c, d]`` (``empty`` for an axis with no pixels)."""
    return " x ".join("empty" if b is None else f"[{b[0]}, {b[1]}]" for b in box)


def model_list(width: int = 100) -> str:
    """``erf rf --list``: every registered model with its one-line description and keyword arguments.

    Args:
        width: the line width the text is wrapped to.

    Returns:
        The text, ending with the other kinds of MODEL spec.
    """
    names = models.list_models()
    pad = max(map(len, names), default=0) + 4
    lines = ["registered models (MODEL; set an argument with --model-arg KEY=VALUE):"]
    for name in names:
        info = models.model_info(name)
        lines += textwrap.wrap(info.description or "(no description)", width, initial_indent=f"  {name:<{pad - 2}}",
                               subsequent_indent=" " * pad)
        if info.arguments:
            lines += textwrap.wrap(", ".join(info.arguments), width, initial_indent=" " * pad + "args: ",
                                   subsequent_indent=" " * (pad + 6))
    lines += textwrap.wrap("other MODEL specs: timm:NAME, timm:hf-hub:ORG/REPO, torchvision:NAME[:WEIGHTS] (add "
                           "--pretrained for their trained weights), path/to/file.py:FACTORY (imports the file: its "
                           "code runs), or a saved TorchScript (.ts, .pt) / torch.export (.pt2) model", width,
                           subsequent_indent="  ")
    return "\n".join(lines)
