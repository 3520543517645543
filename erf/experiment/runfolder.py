"""The run folder: ``.<name>.partial/`` beside the destination, its lock, resume and restart, the final rename.

Everything a run writes goes to the hidden run folder first: each finished measurement is saved
there (``saved/``, each with its SHA-256 inside it, ``erf.io.seal``), a running one saves its sums
every ``experiment.save_every`` seconds (``engine/``), and the results are written to ``out/``,
which is renamed onto the destination only at the very end. So an interrupted run never leaves
a results folder that looks complete, and a resumed run (same ``fingerprint``) goes on from the
last save with the same numbers. A saved file that does not match its checksum is moved to
``damaged/`` (never deleted; it ends in the results' ``damaged/``) and that measurement is made again.

A run deletes only what it wrote: the results folder it replaces must hold nothing but the files
listed in its ``.erf-manifest.json`` (``erf.experiment.manifest``) and none of the run's
inputs (``check_destination``); ``run.json`` records the digests of those inputs, and a resume whose
inputs changed is refused.

``.<name>.lock`` beside it holds the process id and host of the run writing there
(``erf.experiment.runlock``): a second run into the same place is refused while that process
lives; a lock left by a dead process of this host is replaced. The end of a run is a marker (``finished``) then two renames; a run killed
between them is completed by the next start (``RunFolder.recover``), so a finished run leaves no
``.partial`` and no old copy behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from erf import distributed, limits
from erf.engine import ERFResult
from erf.errors import ConfigError, ErfError
from erf.experiment.manifest import MANIFEST, foreign_problem, manifest_owner, write_manifest
from erf.experiment.runlock import release_lock, take_lock
from erf.experiment.sweeps import Config
from erf.io import atomic_write, file_sha256, fsync_dir, fsync_tree, set_aside, to_json, verify

__all__ = ["fingerprint", "resume_command", "RunFolder", "destination", "check_destination", "foreign_problem",
           "write_manifest", "run_inputs", "input_digests", "MANIFEST"]

FINISHED = "finished"  # the marker written once out/ is complete, before the final renames


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
    # a config without [profile] keeps the fingerprint of an erf without it (its interrupted runs still resume)
    points = [{k: v for k, v in p.settings.items() if k != "profile" or v.get("layers")} for p in cfg.points]
    return to_json({"experiment": exp, "points": points, "device": device})


def resume_command(cfg: Config, dest: Path) -> str:
    """The exact ``erf run`` command line that goes on from an interrupted run of ``cfg`` into ``dest``.

    Every setting that enters the fingerprint and can come from the command line is repeated:
    ``--quick``, ``--seed``, ``--device``, ``--deterministic``, and always ``--out``.

    Args:
        cfg: the experiment, as loaded (``cfg.quick`` and ``cfg.overrides`` say what the CLI set).
        dest: the results folder.

    Returns:
        A shell-quoted command line.
    """
    words = ["erf", "run", str(cfg.path)]
    if cfg.quick:
        words.append("--quick")
    words += ["--out", str(dest)]
    if "experiment.seed" in cfg.overrides:
        words += ["--seed", str(cfg.settings["experiment"]["seed"])]
    if "experiment.device" in cfg.overrides:
        words += ["--device", str(cfg.settings["experiment"]["device"])]
    if "inputs.path" in cfg.overrides:
        words += ["--inputs", str(cfg.settings["inputs"]["path"])]
    if cfg.overrides.get("experiment.deterministic"):
        words.append("--deterministic")
    return shlex.join([*words, "--resume"])


class RunFolder:
    """``.<name>.partial/`` beside the destination: saved measurements, engine saves, the results."""

    def __init__(self, dest: Path, fingerprint: dict):
        """A run folder for results going to ``dest``, made with settings ``fingerprint`` (nothing is created yet)."""
        self.dest, self.fingerprint = Path(dest), json.dumps(fingerprint, sort_keys=True)
        self.path = self.dest.parent / f".{self.dest.name}.partial"
        self.out = self.path / "out"
        self.lock_path = self.dest.parent / f".{self.dest.name}.lock"
        self.new_parent = False  # True when this run created the results root (removed again when left empty)
        self._owner = ("", False)  # the experiment's name and --quick, for the results' manifest (set by open)
        self._lock_text: str | None = None

    # ------------------------------------------------------------------ the lock

    def lock(self) -> None:
        """Take ``.<name>.lock`` (pid, host, process start time); replace a stale one of this host.

        Raises:
            ConfigError: a live process holds it, or one on another host (naming both), or the
                folder cannot be written (read-only, full, not a folder).
        """
        self.new_parent = not self.dest.parent.exists()
        self._lock_text = take_lock(self.lock_path, self.dest)

    def unlock(self) -> None:
        """Release the lock (this process's own only); remove the results root if this run made it and it is empty."""
        if self._lock_text is not None:
            release_lock(self.lock_path, self._lock_text)
            self._lock_text = None
        if self.new_parent:
            with contextlib.suppress(OSError):  # only if still empty
                self.dest.parent.rmdir()

    # ------------------------------------------------------------------ opening

    def recover(self) -> bool:
        """Finish what a run killed during its final renames left, and remove old copies; nothing is lost.

        Returns:
            True when the last run here had finished (its ``finished`` marker, or its removed folder,
            was there) and no interrupted run is left: its results are in place now.
        """
        finished = (self.path / FINISHED).is_file()
        if finished:
            if self.out.is_dir():
                self._commit()
            self._remove_partial()
        removed = False  # a finished run's folder, renamed to .done-* but not yet deleted
        for entry in self._leftovers():
            if entry.name.startswith(f".{self.dest.name}.old-") and not self.dest.exists() \
                    and (entry / "results").is_dir():  # an older erf's rename, killed between its two steps
                os.rename(entry / "results", self.dest)
            removed |= entry.name.startswith(f".{self.dest.name}.done-")
            shutil.rmtree(entry, ignore_errors=True)
        finished = finished or (removed and not self.path.exists() and (self.dest / "summary.json").is_file())
        if finished:
            print(f"erf: note: the run writing {self.dest} had finished but was stopped during its final renames; "
                  "its results are now in place", file=sys.stderr)
        return finished

    def open(self, cfg: Config, resume: bool, restart: bool, command: str = "") -> None:
        """Create the run folder, or take over (``resume``) or discard (``restart``) an interrupted one.

        Call ``lock`` (and ``recover``) first: the folder of a live run is never touched.

        Args:
            cfg: the experiment (its path goes into ``run.json``).
            resume: go on from an interrupted run made with the same fingerprint.
            restart: discard an interrupted run.
            command: the command that resumes this run (named in the messages).

        ``run.json`` is written first (a folder holding saves always says what made them): the
        fingerprint and the digests of the run's input files (``input_digests``); a resume whose
        inputs changed since is refused.

        Raises:
            ConfigError: an interrupted run is there and neither ``resume`` nor ``restart`` was
                asked for, or it was made with other settings or other input files; ``resume`` with
                nothing to resume; the folder cannot be written.
        """
        self._owner = (cfg.name, bool(cfg.quick))
        info = self.path / "run.json"
        if self.path.exists() and not info.exists() and not self.has_saves():
            self.discard()  # a start cut short before its run.json (an older erf): nothing of it to keep
        digests = input_digests(cfg)
        if self.path.exists():
            if restart:
                shutil.rmtree(self.path)
            elif not resume:
                raise ConfigError(f"{cfg.path}: {self.path} holds an interrupted run of this experiment; go on from "
                                  f"it with: {command or 'the same command and --resume'} (or add --restart to "
                                  "discard it)")
            else:
                try:
                    same = json.loads(info.read_text()).get("fingerprint") == self.fingerprint
                except (OSError, ValueError, AttributeError):
                    same = False
                if not same:
                    raise ConfigError(f"{cfg.path}: the interrupted run in {self.path} was made with other settings "
                                      "(config, --quick, --seed or --device); use --restart to "
                                      "discard it, or resume with the same settings")
                changed = _changed_inputs(json.loads(info.read_text()).get("inputs"), digests)
                if changed:
                    raise ConfigError(f"{cfg.path}: --resume: {changed} changed since the interrupted run in "
                                      f"{self.path} began, and its measurements would mix the two versions; put "
                                      "the original back, or use --restart to measure everything anew")
        elif resume:
            done = f"; finished results are in {self.dest}" if (self.dest / "summary.json").is_file() else ""
            raise ConfigError(f"{cfg.path}: --resume: there is no interrupted run to resume for {self.dest} "
                              f"(no {self.path}){done}; run without --resume to start one")
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not info.exists():  # first, so that a folder with saves always says what made them
                text = json.dumps({"fingerprint": self.fingerprint, "config": cfg.path, "inputs": digests}) + "\n"
                atomic_write(info, lambda f: Path(f).write_text(text))
            for sub in ("saved", "engine", "out"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            fsync_dir(self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            if created:
                self.discard()  # made by this call and holding nothing: leave nothing behind
            raise ConfigError(f"cannot create the run folder {self.path}: {exc.strerror or exc}; choose another "
                              "--out (a writable folder with free space)") from None

    # ------------------------------------------------------------------ saves

    def saved(self, key: str) -> Path:
        """Where the finished measurement ``key`` is saved."""
        return self.path / "saved" / f"{key}.npz"

    def save_result(self, key: str, res: ERFResult) -> Path:
        """Save the finished measurement ``key`` (atomic, flushed) with its checksum inside the file.

        Args:
            key: the measurement's key (``Record.key``).
            res: its result.

        Returns:
            The saved file.
        """
        return atomic_write(self.saved(key), res.save, sealed=True)  # its checksum inside, before the rename

    def engine_state(self, key: str) -> Path:
        """The engine's periodic save of the running measurement ``key``."""
        return self.path / "engine" / f"{key}.state"

    def train_state(self, point_id: str) -> str:
        """The training state saved at a training point's last measured step."""
        return str(self.path / "engine" / f"{point_id}.train")

    def done(self) -> set[str]:
        """Keys of the measurements already saved and intact (rank 0's view, shared with every rank).

        A saved file that does not match the checksum recorded when it was written (truncated,
        empty, altered, junk) is moved to ``damaged/`` with a one-line note: that measurement
        is made again.

        Returns:
            The keys.
        """
        keys: set[str] = set()
        if distributed.is_main():
            for path in sorted((self.path / "saved").glob("*.npz")):
                if path.name.startswith("."):  # a temporary file of a write a kill cut short: not a save
                    continue
                problem = verify(path)
                if problem is None:
                    keys.add(path.stem)
                    continue
                moved = set_aside(path, self.path / "damaged")
                print(f"erf: note: the saved measurement {path.name} is damaged ({problem}); moved to {moved}, "
                      "that measurement is made again", file=sys.stderr)
        return distributed.broadcast_object(keys)

    def has_saves(self) -> bool:
        """True when at least one finished measurement is saved."""
        return any(not p.name.startswith(".") for p in (self.path / "saved").glob("*.npz"))

    # ------------------------------------------------------------------ the end

    def finish(self) -> None:
        """Put ``out/`` in place of the destination (replacing older results there); remove the run folder.

        Damaged saves set aside during the run go to the results' ``damaged/``. ``out/`` is flushed
        and marked ``finished`` first, so a kill at any later point is completed
        by the next start (``recover``).
        """
        problem = foreign_problem(self.dest)  # checked again: files put there while the run measured
        if problem:
            raise ConfigError(f"--out: {problem}; the new results are complete in {self.out}: move those files out, "
                              "then go on with the same command and --resume")
        for entry in sorted(self.path.glob("damaged*")):  # damaged saves set aside: kept with the results
            if entry.is_dir() and not entry.is_symlink():
                os.replace(entry, self.out / entry.name)
        write_manifest(self.out, *self._owner)
        fsync_tree(self.out)
        atomic_write(self.path / FINISHED, lambda f: Path(f).write_text("results complete in out/\n"))
        self._commit()
        self._remove_partial()

    def discard(self) -> None:
        """Remove the run folder."""
        shutil.rmtree(self.path, ignore_errors=True)

    def _commit(self) -> None:
        """``dest`` (older results) into the run folder, then ``out/`` onto ``dest``."""
        if self.dest.exists():
            old = Path(tempfile.mkdtemp(prefix="previous-", dir=self.path))
            os.rename(self.dest, old / "results")
        os.rename(self.out, self.dest)
        fsync_dir(self.dest.parent)

    def _remove_partial(self) -> None:
        """Rename the run folder to ``.<name>.done-*`` (one step), then delete it."""
        trash = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.done-", dir=self.dest.parent))
        os.rename(self.path, trash / "run")
        fsync_dir(self.dest.parent)
        shutil.rmtree(trash, ignore_errors=True)

    def _leftovers(self) -> list[Path]:
        """``.<name>.done-*`` (a removed run folder) and ``.<name>.old-*`` (older erf) beside the destination."""
        prefixes = (f".{self.dest.name}.done-", f".{self.dest.name}.old-")
        try:
            return [p for p in self.dest.parent.iterdir() if p.name.startswith(prefixes) and p.is_dir()]
        except OSError:
            return []


def destination(cfg: Config, out: str | os.PathLike | None, root: str = "results") -> Path:
    """The results folder of a run: ``out``, else ``<root>/<name>`` (``<root>/<name>-quick`` for ``--quick``).

    ``.``, ``..`` and names ending in them are made absolute, so the run folder and the lock
    (``.<name>.partial``, ``.<name>.lock``) sit beside a folder with a name.

    Args:
        cfg: the experiment.
        out: ``--out``, or None for the default.
        root: the default results root.

    Returns:
        The folder's path.

    Raises:
        ConfigError: ``out`` is empty or names the root folder.
    """
    if out is None:
        return Path(root) / (f"{cfg.name}-quick" if cfg.quick else cfg.name)
    text = os.fspath(out)
    if not text.strip():
        raise ConfigError(f"{cfg.path}: --out: empty folder name; give the results folder, e.g. --out results/NAME")
    dest = Path(os.path.normpath(text))
    if dest.name in ("", ".", ".."):
        dest = Path(os.path.abspath(text))
    if not dest.name:
        raise ConfigError(f"{cfg.path}: --out: {text} is the root folder; give a results folder below it")
    return dest


def check_destination(cfg: Config, dest: Path) -> None:
    """Refuse a destination the run may not replace, with one line, before any work.

    A run replaces its results folder whole, so it only ever replaces a folder holding nothing
    but files an erf run wrote there (listed in its ``.erf-manifest.json``; a folder of an
    older erf, without a manifest, when it holds only the files erf writes). Refused: a file;
    a folder holding anything else (another tool's ``summary.json``, notes, a thesis); a folder
    holding one of the run's own inputs (the config, a checkpoint, a model file, the images);
    the results of a full run for a ``--quick`` run.

    Args:
        cfg: the experiment (errors name its file).
        dest: the results folder the run would replace.

    Raises:
        ConfigError: naming ``--out`` and the reason.
    """
    if os.path.lexists(dest) and not os.path.isdir(dest):  # os.path: False, not an error, for a bad name
        raise ConfigError(f"{cfg.path}: --out: {dest} is a file, not a results folder")
    try:  # too long, under /proc, below a file, read-only: one line before any work
        limits.check_output_path("--out", dest, folder=True)
    except ErfError as exc:
        raise ConfigError(f"{cfg.path}: {exc}") from None
    for what, path in run_inputs(cfg):
        if _inside(path, dest):
            raise ConfigError(f"{cfg.path}: --out: {dest} holds {what} {path}, an input of this run, and the "
                              "results folder is replaced when the run ends; move the input out of it or choose "
                              "another --out")
    if os.path.islink(dest):
        raise ConfigError(f"{cfg.path}: --out: {dest} is a symbolic link; give the folder itself")
    problem = foreign_problem(dest)
    if problem:
        raise ConfigError(f"{cfg.path}: --out: {problem}")
    if cfg.quick and manifest_owner(dest).get("quick") is False:
        raise ConfigError(f"{cfg.path}: --out: {dest} holds the results of a full run, which a --quick run does "
                          f"not replace; leave out --out (quick results go to results/{cfg.name}-quick) or choose "
                          "another folder")


def run_inputs(cfg: Config) -> list[tuple[str, str]]:
    """The files and folders a run reads: the config, checkpoints, model files, images, task folders.

    Args:
        cfg: the experiment.

    Returns:
        ``(what, path)`` pairs, without repeats (a glob gives the folder before its first pattern).
    """
    found: dict[str, str] = {str(cfg.path): "the config"}
    for point in cfg.points:
        s = point.settings
        model = s["model"]
        if model.get("checkpoint"):
            found.setdefault(str(model["checkpoint"]), "model.checkpoint")
        name = str(model.get("name", ""))
        if ".py:" in name:
            found.setdefault(name.rsplit(":", 1)[0], "the model file")
        if s["inputs"].get("kind") == "images" and s["inputs"].get("path"):
            found.setdefault(_glob_base(str(s["inputs"]["path"])), "inputs.path")
        task = s.get("train", {}).get("task")
        if s.get("train", {}).get("enabled") and isinstance(task, str) and os.path.exists(task):
            found.setdefault(task, "train.task")
    return [(what, path) for path, what in found.items() if path and path != "<config>"]


_MAX_DIGEST_ENTRIES = 1_000_000  # files listed in the digest of an input folder


def input_digests(cfg: Config) -> dict[str, str]:
    """A digest of each input file and folder of the run (``run_inputs``), kept in ``run.json``.

    A file's digest is its SHA-256; a folder's is the SHA-256 of its listing (relative names,
    sizes and modification times, links not followed); a missing path is "missing".

    Args:
        cfg: the experiment.

    Returns:
        "the config" or "<what> <path>" -> digest (the config by its content alone: it may move).
    """
    out = {}
    for what, path in run_inputs(cfg):
        key = what if what == "the config" else f"{what} {path}"
        try:
            info = os.stat(path)
            if stat.S_ISREG(info.st_mode):
                out[key] = file_sha256(path)
            elif stat.S_ISDIR(info.st_mode):
                out[key] = _folder_digest(path)
            else:
                out[key] = f"special file {stat.S_IFMT(info.st_mode)}"
        except OSError as exc:
            out[key] = f"unreadable: {exc.strerror}" if exc.errno != errno.ENOENT else "missing"
    return out


def _folder_digest(path: str) -> str:
    """SHA-256 of a folder's listing: relative name, size and mtime of each entry (links not followed)."""
    h, n = hashlib.sha256(), 0
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            n += 1
            if n > _MAX_DIGEST_ENTRIES:
                return h.hexdigest() + "+"
            full = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.lstat(full)
                h.update(f"{os.path.relpath(full, path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8",
                                                                                               "surrogateescape"))
    return h.hexdigest()


def _changed_inputs(recorded: object, now: dict[str, str]) -> str:
    """The inputs whose digest differs from the one recorded in run.json (named), or ""."""
    if not isinstance(recorded, dict):
        return ""  # a run folder of an older erf: no digests recorded
    changed = [key for key in sorted(set(recorded) | set(now)) if recorded.get(key) != now.get(key)]
    return ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")


def _glob_base(path: str) -> str:
    """The path up to the first part with a glob pattern (``imgs/*.png`` -> ``imgs``)."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return str(Path(*parts[:i])) if i else "."
    return path


def _inside(path: str, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or below it (as written and with links resolved)."""
    for norm in (os.path.abspath, os.path.realpath):
        p, f = norm(path), norm(folder)
        if p == f or p.startswith(f.rstrip(os.sep) + os.sep):
            return True
    return False
