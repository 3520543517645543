"""Experiments: TOML configs, sweeps, the runner, run folders, writers, analysis, figures, reports."""

from erf.experiment.config import Config, check_models, load_config, parse_config
from erf.experiment.runner import run_experiment

__all__ = ["Config", "check_models", "load_config", "parse_config", "run_experiment"]
