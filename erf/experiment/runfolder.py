"""The run folder: ``.<name>.partial/`` beside the destination, resume and restart, the final rename.

Everything a run writes goes to the hidden run folder first: each finished measurement is saved
there (``saved/``), a running one saves its sums every ``experiment.save_every`` seconds
(``engine/``), and the results are written to ``out/``, which is renamed onto the destination
only at the very end. So an interrupted run never leaves a results folder that looks complete,
and a resumed run (same ``fingerprint``) goes on from the last save with the same numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from erf import distributed
from erf.errors import ConfigError
from erf.experiment.sweeps import Config
from erf.io import atomic_write, to_json


def fingerprint(cfg: Config, device: str) -> dict:
    """What must not change between a run and its resumption: the resolved points and the device.

    The process count may change: saved measurements are reused, and the engine's per-rank saves
    of the interrupted point are ignored when the count differs (that point starts again).

    Args:
        cfg: the experiment.
        device: the device it runs on ("cpu" or "cuda").

    Returns:
        A JSON-ready dict, stored in the run folder's ``run.json``.
    """
    exp = {k: v for k, v in cfg.settings["experiment"].items() if k not in ("save_every", "description", "title")}
    return to_json({"experiment": exp, "points": [p.settings for p in cfg.points], "device": device})



class RunFolder:
    """``.<name>.partial/`` beside the destination: saved measurements, engine saves, the results."""

    def __init__(self, dest: Path, fingerprint: dict):
        """A run folder for results going to ``dest``, made with settings ``fingerprint`` (nothing is created yet)."""
        self.dest, self.fingerprint = dest, json.dumps(fingerprint, sort_keys=True)
        self.path = dest.parent / f".{dest.name}.partial"
        self.out = self.path / "out"
        self.new_parent = False  # True when opening created the results root (removed again on discard)

    def open(self, cfg: Config, resume: bool, restart: bool) -> None:
        """Create the run folder, or take over (``resume``) or discard (``restart``) an interrupted one.

        Args:
            cfg: the experiment (its path goes into ``run.json``).
            resume: go on from an interrupted run made with the same fingerprint.
            restart: discard an interrupted run.

        Raises:
            ConfigError: an interrupted run is there and neither ``resume`` nor ``restart`` was
                asked for, or it was made with other settings.
        """
        self.new_parent = not self.dest.parent.exists()
        info = self.path / "run.json"
        if self.path.exists():
            if restart:
                shutil.rmtree(self.path)
            elif not resume:
                raise ConfigError(f"{cfg.path}: {self.path} holds an interrupted run of this experiment; add --resume "
                                  "to go on from it, or --restart to discard it")
            else:
                try:
                    same = json.loads(info.read_text()).get("fingerprint") == self.fingerprint
                except (OSError, ValueError):
                    same = False
                if not same:
                    raise ConfigError(f"{cfg.path}: the interrupted run in {self.path} was made with other settings "
                                      "(config, --quick, --seed or --device); use --restart to "
                                      "discard it, or resume with the same settings")
        for sub in ("saved", "engine", "out"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        if not info.exists():
            text = json.dumps({"fingerprint": self.fingerprint, "config": cfg.path}) + "\n"
            atomic_write(info, lambda f: Path(f).write_text(text))

    def saved(self, key: str) -> Path:
        """Where the finished measurement ``key`` is saved."""
        return self.path / "saved" / f"{key}.npz"

    def engine_state(self, key: str) -> Path:
        """The engine's periodic save of the running measurement ``key``."""
        return self.path / "engine" / f"{key}.state"

    def train_state(self, point_id: str) -> str:
        """The training state saved at a training point's last measured step."""
        return str(self.path / "engine" / f"{point_id}.train")

    def done(self) -> set[str]:
        """Keys of the measurements already saved (rank 0's view, shared with every rank)."""
        keys = {p.stem for p in (self.path / "saved").glob("*.npz")} if distributed.is_main() else set()
        return distributed.broadcast_object(keys)

    def finish(self) -> None:
        """Move ``out/`` onto the destination (replacing older results there) and remove the run folder."""
        _replace(self.out, self.dest)
        shutil.rmtree(self.path, ignore_errors=True)

    def discard(self) -> None:
        """Remove the run folder (and the results root, when opening created it and it is empty)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self.new_parent:
            with contextlib.suppress(OSError):  # only if still empty
                self.dest.parent.rmdir()



def check_destination(cfg: Config, dest: Path) -> None:
    """Refuse a destination that is a file, or a non-empty folder that is not an erf results folder.

    Args:
        cfg: the experiment (errors name its file).
        dest: the results folder the run would replace.

    Raises:
        ConfigError: naming ``--out`` and the reason.
    """
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{cfg.path}: --out: {dest} is a file, not a results folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "summary.json").is_file():
        raise ConfigError(f"{cfg.path}: --out: {dest} exists and is not an erf results folder (no summary.json); "
                          "choose another folder, it would be replaced")


def _replace(tmp: Path, dest: Path) -> None:
    """Move the finished folder onto ``dest``; an older results folder there is removed after."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rename(dest, old / "results")
    os.rename(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

