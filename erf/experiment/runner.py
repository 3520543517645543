"""Run an experiment config: measure every sweep point, then write the results folder.

``run_experiment(cfg)`` checks every model first (``checks.check_models``), then measures each
point (``points.measure_point``, training it first when the config asks), and writes
``summary.json``, ``sweep.csv``, ``maps.npz``, the figures and ``report.md``
(``outputs.write_outputs``). Everything goes to the hidden run folder (``runfolder``), renamed
onto ``results/<name>`` (or ``out``) only at the very end, so ``resume=True`` (``erf run
--resume``) goes on from the last save with the same numbers. A lock keeps a second run out of
the same place; an interrupted run prints the exact command that goes on from it; a full disk
or a read-only folder is one line (the saves kept); one bar (``erf.progress``) counts every
sample and training step of the run. Under ``torchrun`` every rank runs
the sweep (the engine splits each measurement); rank 0 alone writes.
"""

from __future__ import annotations

import errno
import os
import platform
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import scipy
import torch

from erf import __version__, distributed
from erf.device import resolve_device
from erf.errors import ConfigError, ErfError
from erf.experiment.checks import check_models
from erf.experiment.outputs import write_outputs
from erf.experiment.points import measure_point
from erf.experiment.previous import load_previous
from erf.experiment.profiles import profiled
from erf.experiment.records import Record
from erf.experiment.runfolder import RunFolder, check_destination, destination, fingerprint, resume_command
from erf.experiment.sweeps import Config, Point
from erf.progress import run_progress
from erf.training import checkpoint_steps

RESULTS_ROOT = "results"

# errors of the storage, not of the run: a full disk or quota, a read-only or vanished folder
STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG, errno.EIO})


def run_experiment(cfg: Config, out: str | os.PathLike | None = None, progress: bool | None = None,
                   resume: bool = False, restart: bool = False, quiet: bool = False) -> Path:
    """Run ``cfg`` and write its results folder; return the folder's path.

    Args:
        cfg: a config from ``load_config``.
        out: the results folder (default: ``results/<experiment name>``, ``results/<name>-quick`` for a
            ``--quick`` config); replaced at the end, and only when it holds nothing but files an erf
            run wrote there (``runfolder.check_destination``).
        progress: one bar over all samples and training steps (``erf.progress``): None (default) a
            tqdm bar when stderr is a terminal, else a line every 30 s and at each tenth; False none.
        resume: go on from the last save of an interrupted run of this config.
        restart: discard an interrupted run of this config and start anew.
        quiet: no progress (same as ``progress=False``).

    Returns:
        The results folder.

    Raises:
        ConfigError: anything that can be checked before measuring (the config, its models, the
            device, the destination), another live run writing there, an interrupted run found
            without ``resume`` or ``restart``, ``resume`` with nothing to resume.
        ErfError: an error while measuring, and a full disk or read-only folder while writing;
            the measurements finished so far are kept, and the message gives the command that
            goes on from them.
    """
    dest = destination(cfg, out, RESULTS_ROOT)
    check_destination(cfg, dest)  # before any work: a run deletes nothing it did not write
    check_models(cfg)
    device = _device(cfg)
    run = RunFolder(dest, fingerprint(cfg, device))
    command = resume_command(cfg, dest)
    previous = None if cfg.quick else load_previous(dest)  # read before the run replaces it: the report's changes
    refused, finished = None, False
    if distributed.is_main():
        try:
            run.lock()
            finished = run.recover() and resume  # --resume after a kill during the final renames: done now
            if not finished:
                run.open(cfg, resume, restart, command)
        except (ConfigError, OSError) as exc:
            run.unlock()
            refused = str(exc) if isinstance(exc, ConfigError) else f"cannot write {exc.filename}: {exc.strerror}"
    refused, finished = distributed.broadcast_object((refused, finished))  # every rank stops, not only rank 0
    if refused:
        raise ConfigError(refused)
    if finished:
        if distributed.is_main():
            run.unlock()
        return dest
    try:
        t0 = time.perf_counter()
        records = measure_all(cfg, device, run, False if quiet else progress)
        if distributed.is_main():
            write_outputs(cfg, records, run.out, {**environment(device), "previous": previous},
                          time.perf_counter() - t0)
            run.finish()
    except BaseException as exc:
        if distributed.is_main():
            _stopped(exc, run, command)  # raises the one-line error of a full disk or read-only folder
        raise
    finally:
        if distributed.is_main():
            run.unlock()
    distributed.barrier()
    return dest


def _stopped(exc: BaseException, run: RunFolder, command: str) -> None:
    """What a stopped run keeps and says: its saves, and the command that goes on from them."""
    if isinstance(exc, ErfError) and not run.has_saves():
        run.discard()  # nothing measured yet: leave nothing behind
        return
    if not run.path.is_dir():
        return
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRORS:
        raise ErfError(f"cannot write {exc.filename or run.path}: {exc.strerror}; the run so far is kept in "
                       f"{run.path}; free space (or make the folder writable), then go on with: {command}") from None
    if isinstance(exc, ErfError):
        msg = f"{exc} (the measurements finished so far are kept in {run.path}; after the fix, go on with: {command})"
        try:
            kept = type(exc)(msg)
        except TypeError:  # a subclass with other arguments
            kept = ErfError(msg)
        raise kept from None
    print(f"erf: the run so far is saved in {run.path}; go on with: {command}", file=sys.stderr)


def point_work(point: Point) -> int:
    """The samples and training steps of one sweep point (what the run's progress bar counts).

    Args:
        point: a sweep point.

    Returns:
        networks x (training steps + measured states x (samples x weight draws + the profiled layers'
        samples)); with ``tol`` the samples are the least an adaptive measurement takes.
    """
    s = point.settings
    per = int(s["measure"]["samples"]) * max(1, int(s["measure"]["weight_draws"]))
    if profiled(s):  # each state also measures the profiled layers (shared passes: samples per layer)
        per += len(s["profile"]["layers"]) * int(s["profile"]["samples"] or s["measure"]["samples"])
    work = per
    if s["train"]["enabled"]:
        steps = int(s["train"]["steps"])
        work = steps + per * len(checkpoint_steps(sorted(set(s["train"]["checkpoints"])), steps))
    return int(s["model"].get("networks", 1)) * work


def measure_all(cfg: Config, device: str, run: RunFolder, progress: bool | None = None) -> list[Record]:
    """Every point of the sweep (every training state of it), under one progress bar (rank 0's).

    Args:
        cfg: the experiment.
        device: "cpu" or "cuda".
        run: the opened run folder.
        progress: see ``run_experiment``.

    Returns:
        The records (rank 0's; other ranks get an empty list).
    """
    done = run.done()
    records: list[Record] = []
    works = [point_work(p) for p in cfg.points]
    training = any(p.settings["train"]["enabled"] for p in cfg.points)
    show = progress if distributed.is_main() else False
    with run_progress(sum(works), cfg.name, "samples+steps" if training else "samples", show) as bar:
        for point, work in zip(cfg.points, works):
            with bar.part(work):
                try:
                    records += measure_point(cfg, point, device, run, done)
                except NotImplementedError as exc:  # torch's refusal to copy a meta tensor: a model without values
                    if "meta" not in str(exc):
                        raise
                    raise ConfigError(f"{cfg.path}: model: point {point.id}: the model has parameters on the meta "
                                      "device (shapes without values); build it with real tensors (or call "
                                      ".to_empty(device='cpu') and initialise them)") from None
    return records


def _device(cfg: Config) -> str:
    """'cuda' when asked or when auto finds a GPU, else 'cpu'; refuse cuda without a GPU."""
    try:
        return resolve_device(cfg.settings["experiment"]["device"]).type
    except ErfError:  # the schema allows auto, cpu and cuda: only a missing GPU is refused
        raise ConfigError(f"{cfg.path}: experiment.device: 'cuda' was asked for but no CUDA device is available; "
                          "use --device cpu or auto") from None


def environment(device: str) -> dict:
    """Versions and the device, for summary.json and the report.

    Args:
        device: "cpu" or "cuda".

    Returns:
        ``{"device", "device_name", "versions", "platform"}``.
    """
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
               f"{torch.get_num_threads()} torch threads)"
    return {"device": device, "device_name": name, "versions": {
        "erf": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "scipy": scipy.__version__, "matplotlib": matplotlib.__version__, "python": platform.python_version()},
        "platform": platform.platform()}
