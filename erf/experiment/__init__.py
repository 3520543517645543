"""Experiments: a TOML config in, a results folder out (``erf run``).

One file per job: ``schema`` (the keys, their checks and help), ``sweeps`` (``Config``, its
points), ``config`` (reading and checking a file), ``checks`` (building and tracing every model
before any work), ``runner`` (``run_experiment``), ``runfolder`` (the ``.partial`` folder,
resume and the final rename; its lock in ``runlock``, the ``.erf-manifest.json`` in ``manifest``),
``points`` (measuring and training one point), ``records`` (a
measured map with its metrics), ``writers`` (sweep.csv, maps.npz, summary.json), ``analysis``
(analyses and findings), ``figures``, ``profiles`` (``[profile]``: several layers per point), ``previous`` (the
replaced run's numbers for the report's "Changes"), ``report`` (report.md) and ``outputs`` (all
of them).
"""

from erf.experiment.checks import check_models
from erf.experiment.config import load_config, parse_config
from erf.experiment.runner import run_experiment
from erf.experiment.sweeps import Config

__all__ = ["Config", "check_models", "load_config", "parse_config", "run_experiment"]
