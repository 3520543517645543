"""Run an experiment config: measure every sweep point, then write the results folder.

``run_experiment(cfg)`` checks every model first (``checks.check_models``), then measures each
point (``points.measure_point``, training it first when the config asks), and writes
``summary.json``, ``sweep.csv``, ``maps.npz``, the figures and ``report.md``
(``outputs.write_outputs``). Everything goes to the hidden run folder (``runfolder``), renamed
onto ``results/<name>`` (or ``out``) only at the very end, so ``resume=True`` (``erf run
--resume``) goes on from the last save with the same numbers. Under ``torchrun`` every rank runs
the sweep (the engine splits each measurement); rank 0 alone writes.
"""

from __future__ import annotations

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
from erf.experiment.records import Record
from erf.experiment.runfolder import RunFolder, check_destination, fingerprint
from erf.experiment.sweeps import Config

RESULTS_ROOT = "results"


def run_experiment(cfg: Config, out: str | os.PathLike | None = None, progress: bool | None = None,
                   resume: bool = False, restart: bool = False) -> Path:
    """Run ``cfg`` and write its results folder; return the folder's path.

    Args:
        cfg: a config from ``load_config``.
        out: the results folder (default: ``results/<experiment name>``); replaced at the end.
        progress: a tqdm bar over the sweep (default: when stderr is a terminal).
        resume: go on from the last save of an interrupted run of this config.
        restart: discard an interrupted run of this config and start anew.

    Returns:
        The results folder.

    Raises:
        ConfigError: anything that can be checked before measuring (the config, its models, the
            device, the destination), and an interrupted run found without ``resume`` or
            ``restart``; the run folder of an interrupted run is kept for ``resume``.
    """
    check_models(cfg)
    device = _device(cfg)
    dest = Path(out) if out is not None else Path(RESULTS_ROOT) / cfg.name
    check_destination(cfg, dest)
    run = RunFolder(dest, fingerprint(cfg, device))
    refused = None
    if distributed.is_main():
        try:
            run.open(cfg, resume, restart)
        except ConfigError as exc:
            refused = str(exc)
    refused = distributed.broadcast_object(refused)  # every rank stops, not only rank 0
    if refused:
        raise ConfigError(refused)
    try:
        t0 = time.perf_counter()
        records = measure_all(cfg, device, run, progress)
        if distributed.is_main():
            write_outputs(cfg, records, run.out, environment(device), time.perf_counter() - t0)
            run.finish()
    except ErfError:
        if distributed.is_main():
            run.discard()  # a bad config or model fails again on resume: nothing worth keeping
        raise
    except BaseException:
        if distributed.is_main() and run.path.is_dir():
            print(f"erf: the run so far is saved in {run.path}; 'erf run {cfg.path} --resume' goes on from there",
                  file=sys.stderr)
        raise
    distributed.barrier()
    return dest


def measure_all(cfg: Config, device: str, run: RunFolder, progress: bool | None = None) -> list[Record]:
    """Every point of the sweep (every training state of it).

    Args:
        cfg: the experiment.
        device: "cpu" or "cuda".
        run: the opened run folder.
        progress: a tqdm bar over the points (default: when stderr is a terminal; rank 0 only).

    Returns:
        The records (rank 0's; other ranks get an empty list).
    """
    from tqdm import tqdm  # lazy: tqdm is only needed once a sweep runs

    show = (sys.stderr.isatty() if progress is None else progress) and distributed.is_main()
    done = run.done()
    records: list[Record] = []
    for point in tqdm(cfg.points, desc=cfg.name, unit="point", disable=not show, file=sys.stderr):
        records += measure_point(cfg, point, device, run, done)
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
