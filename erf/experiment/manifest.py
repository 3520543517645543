"""The results folder's ``.erf-manifest.json``: the files a run wrote there, the only ones a run deletes.

``write_manifest`` lists every file of a finished ``out/`` (size, SHA-256); ``foreign_problem``
says what a results folder holds that no erf run wrote (so it may not be replaced whole), and
``manifest_owner`` what its manifest (or an older erf's ``summary.json``) says about the run that
wrote it. Used by ``erf.experiment.runfolder``; imports nothing of it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from erf import __version__
from erf.io import atomic_write, file_sha256

__all__ = ["MANIFEST", "write_manifest", "manifest_owner", "foreign_problem"]

MANIFEST = ".erf-manifest.json"  # in every results folder: the files the run wrote there (the only ones it deletes)
_LEGACY_FILES = ("summary.json", "sweep.csv", "maps.npz", "report.md")  # what an older erf wrote (no manifest)
_LEGACY_DIRS = ("maps", "weights", "damaged")
_MAX_WALK = 100_000  # entries looked at in a destination before it is called too large to be erf's


def write_manifest(folder: Path, cfg_name: str, quick: bool) -> Path:
    """List every file under ``folder`` (size, SHA-256) in ``folder/.erf-manifest.json``: what the run owns.

    Args:
        folder: a complete results folder (``out/``).
        cfg_name: the experiment's name.
        quick: whether the run was ``--quick``.

    Returns:
        The manifest's path.
    """
    files, dirs = {}, []
    for root, subdirs, names in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        dirs += [(rel_root / d).as_posix() for d in subdirs]
        for name in names:
            rel = (rel_root / name).as_posix()
            if rel != MANIFEST:
                files[rel] = {"size": os.path.getsize(Path(root) / name), "sha256": file_sha256(Path(root) / name)}
    data = {"written_by": f"erf {__version__}", "experiment": cfg_name, "quick": quick, "dirs": sorted(dirs),
            "files": dict(sorted(files.items()))}
    text = json.dumps(data, indent=1) + "\n"
    return atomic_write(folder / MANIFEST, lambda f: Path(f).write_text(text))


def manifest_owner(dest: Path) -> dict:
    """What the manifest (or an older erf's ``summary.json``) of ``dest`` says about the run that wrote it.

    Args:
        dest: a results folder.

    Returns:
        The manifest's (or summary's) fields with ``manifest`` (True when read from the manifest); {} when
        neither is there or readable.
    """
    for name in (MANIFEST, "summary.json"):
        try:
            data = json.loads((dest / name).read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and (name == MANIFEST or isinstance(data.get("versions"), dict)
                                       and "erf" in data["versions"]):
            return {**data, "manifest": name == MANIFEST}
    return {}


def foreign_problem(dest: Path) -> str | None:
    """Why ``dest`` may not be replaced by a run (what it holds that no erf run wrote), or None.

    Args:
        dest: a results folder (or a missing or empty one).

    Returns:
        One phrase naming up to three foreign entries, or None.
    """
    if not dest.is_dir():
        return None
    try:
        if not any(dest.iterdir()):
            return None
    except OSError as exc:
        return f"{dest} cannot be read ({exc.strerror})"
    owner = manifest_owner(dest)
    if not owner:
        return (f"{dest} exists and is not an erf results folder (no {MANIFEST}, no erf summary.json); a run "
                "replaces its folder whole: choose another --out")
    files = owner.get("files") if owner["manifest"] else None
    dirs = set(owner.get("dirs") or []) if owner["manifest"] else set()
    if owner["manifest"] and not isinstance(files, dict):
        return f"{dest}/{MANIFEST} is damaged; move the folder away or choose another --out"
    foreign, seen = [], 0
    for root, subdirs, names in os.walk(dest):
        rel_root = Path(root).relative_to(dest)
        seen += len(subdirs) + len(names)
        if seen > _MAX_WALK:
            foreign.append(f"more than {_MAX_WALK} entries")
            break
        for d in list(subdirs):
            rel = (rel_root / d).as_posix()
            full = Path(root) / d
            if full.is_symlink():
                foreign.append(rel)
                subdirs.remove(d)
            elif files is None and rel not in _LEGACY_DIRS:
                foreign.append(rel + "/")
                subdirs.remove(d)
            elif files is not None and rel not in dirs:
                foreign.append(rel + "/")
                subdirs.remove(d)
        for name in names:
            rel = (rel_root / name).as_posix()
            if not _owned(Path(root) / name, rel, files):
                foreign.append(rel)
        if len(foreign) >= 3:
            break
    if not foreign:
        return None
    more = ", ..." if len(foreign) > 3 else ""
    return (f"{dest} holds files no erf run wrote there ({', '.join(foreign[:3])}{more}); a run replaces its "
            "results folder whole and deletes only files it wrote: move them out or choose another --out")


def _owned(path: Path, rel: str, files: dict | None) -> bool:
    """Whether the file ``rel`` was written by an erf run, unchanged since (``files``: the manifest's; None: older erf)."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return False
    if files is None:  # an older erf's folder: only the names it writes
        top = "/" not in rel
        return (rel in _LEGACY_FILES or (top and rel.endswith(".png"))) if top else rel.split("/")[0] in _LEGACY_DIRS
    if rel == MANIFEST:
        return True
    entry = files.get(rel)
    if not isinstance(entry, dict):
        return False
    try:
        return os.path.getsize(path) == entry.get("size") and file_sha256(path) == entry.get("sha256")
    except OSError:
        return False
