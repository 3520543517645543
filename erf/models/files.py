"""Weights and saved-model files: checked, read without running code, loaded into a model.

A checkpoint is a state_dict saved with ``torch.save`` (``.pt``/``.pth``, the zip format or the
legacy one) or a ``.safetensors`` file (recognised by its content, whatever its name). Before
anything is read, the path must name a regular file (not a folder, FIFO or device). Zip files are
read member by member with their CRC-32 checked, so a flipped byte is refused, not loaded.
Pickles are read with ``weights_only=True``; one that asks for any other Python global would run
code when loaded and is refused, naming the global. Every failure is a one-line ``ModelError``.
"""

from __future__ import annotations

import io
import logging
import os
import pickletools
import re
import stat
import warnings
import zipfile
import zlib
from typing import Any

import torch
import torch.nn as nn

from erf.errors import ModelError
from erf.models.factory import describe_exception
from erf.models.safetensors_format import SAFETENSORS_SUFFIX, looks_like_safetensors, read_safetensors

MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".ts")
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
# globals a plain ``torch.save(state_dict)`` pickle asks for (all allowed by weights_only=True)
_PLAIN_GLOBALS = re.compile(r"^(torch\._utils\._rebuild_(tensor|tensor_v2|parameter|parameter_with_state|qtensor)|"
                            r"torch\.\w+Storage)$")
_PLAIN_NAMES = {"collections.OrderedDict", "torch.serialization._get_layout", "torch.device", "torch.Size",
                *(str(v) for v in vars(torch).values() if isinstance(v, torch.dtype))}
_NO_KEY = object()
_STRING_OPS = {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}


def check_weights_file(path: str | os.PathLike, what: str = "checkpoint") -> str:
    """Refuse, before anything is opened, a path that is not a readable regular file.

    Args:
        path: the file asked for.
        what: how the message names it (``"checkpoint"``, ``"model file"``).

    Returns:
        The path as a string.

    Raises:
        ModelError: an empty name, a missing path, a folder, FIFO, device or socket, or a file
            that cannot be read (one line).
    """
    path = os.fspath(path)
    if not str(path).strip():
        raise ModelError(f"the {what} name is empty: give a weights file (.pt, .pth or .safetensors), or leave it out")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ModelError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ModelError(f"cannot read {what} {path}: {exc.strerror or describe_exception(exc)}") from None
    for test, kind in _KINDS:
        if test(info.st_mode) and kind == "a folder":
            raise ModelError(f"{what} file not found: {path} is a folder; name a file inside it")
        if test(info.st_mode):
            raise ModelError(f"{what} {path} is {kind}, not a regular file; give a "
                             f"{'weights file (.pt, .pth or .safetensors)' if what == 'checkpoint' else 'file'}")
    real = os.path.realpath(path)
    for tree in ("/proc", "/sys", "/dev"):  # regular-looking pseudo-files: endless, blocking, or EIO when read
        if real == tree or real.startswith(tree + "/"):
            raise ModelError(f"{what} {path} is under {tree}, a system folder, not a {what} file; give a "
                             f"{'weights file (.pt, .pth or .safetensors)' if what == 'checkpoint' else 'file'}")
    if not os.access(path, os.R_OK):
        raise ModelError(f"cannot read {what} {path}: permission denied")
    return path


def _head(path: str, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _zip_names(path: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return []


def verify_zip(path: str, what: str = "checkpoint") -> list[str]:
    """Read every member of a zip file and check its CRC-32 (torch's own reader does not).

    Args:
        path: a file that starts with the zip signature.
        what: how the message names it.

    Returns:
        The member names.

    Raises:
        ModelError: a damaged archive or a member whose bytes do not match its CRC.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            names = zf.namelist()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise ModelError(f"cannot read {what} {path}: the file is corrupt (a damaged zip archive: "
                         f"{describe_exception(exc)[:120]})") from None
    if bad is not None:
        raise ModelError(f"cannot read {what} {path}: the file is corrupt (member {bad} fails its CRC check; "
                         "the file was damaged after it was saved)")
    return names


def _is_torchscript(names: list[str]) -> bool:
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _is_exported(names: list[str]) -> bool:
    return any(n.endswith("/archive_format") or n.endswith("serialized_exported_program.json") for n in names)


def pickle_globals(data: bytes, limit: int = 64) -> list[str]:
    """The Python globals a pickle stream asks for (``module.name``), read without running it.

    Follows ``GLOBAL``/``INST`` and ``STACK_GLOBAL`` (its two strings, also through the memo);
    reads consecutive pickles (the legacy torch format is several) until the data ends or is not
    a pickle.

    Args:
        data: the bytes of one or more pickles.
        limit: stop after this many pickles.

    Returns:
        The globals in order of appearance (``?`` for a part that is not a plain string).
    """
    out: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(limit):
        if stream.tell() >= len(data):
            break
        pushed: list[str | None] = []
        memo: dict[int, str | None] = {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = op.name
                if name in ("GLOBAL", "INST"):
                    out.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL":
                    mod, attr = (pushed[-2:] if len(pushed) >= 2 else [None, None])
                    out.append(f"{mod or '?'}.{attr or '?'}")
                elif name in _STRING_OPS:
                    pushed.append(arg if isinstance(arg, str) else None)
                elif name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = pushed[-1] if pushed else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(int(arg)))
                elif name not in ("PROTO", "FRAME", "STOP"):
                    pushed.append(None)
        except Exception:  # the rest is not a pickle (tensor bytes of the legacy format, garbage)
            break
    return out


def _code_global(path: str, names: list[str], message: str) -> str | None:
    """The global that makes a refused pickle unsafe: torch's message names it, else a scan finds it."""
    found = re.search(r"GLOBAL ([A-Za-z_][\w.]*\w)", message)
    if found:
        return found.group(1)
    try:
        if names:
            with zipfile.ZipFile(path) as zf:
                pkl = next((n for n in names if n.endswith("data.pkl") and n.count("/") <= 1), None)
                data = zf.read(pkl) if pkl else b""
        else:
            with open(path, "rb") as f:
                data = f.read(64 * 1024 * 1024)
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    unsafe = [g for g in pickle_globals(data) if g not in _PLAIN_NAMES and not _PLAIN_GLOBALS.match(g)]
    return unsafe[0] if unsafe else None


def _read_torch(path: str, names: list[str]) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if _is_torchscript(names) or _is_exported(names):
            raise ModelError(f"{path} is a whole saved model (TorchScript or torch.export), not a state_dict; "
                             "pass it as MODEL instead of as a checkpoint") from None
        name = _code_global(path, names, str(exc))
        if name is not None:
            raise ModelError(f"refused: {path} would run code when loaded (its pickle asks for the Python global "
                             f"{name}); save only the weights: torch.save(model.state_dict(), ...) or "
                             "a .safetensors file") from None
        if os.path.getsize(path) == 0:
            raise ModelError(f"cannot read checkpoint {path}: the file is empty (0 bytes)") from None
        raise ModelError(f"cannot read checkpoint {path}: the file is corrupt or not a PyTorch or safetensors "
                         f"file ({_cause(exc)})") from None


def _cause(exc: BaseException) -> str:
    """The exception in a few words, without torch's advice on ``weights_only``."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n|$)", str(exc))
    text = found.group(1) if found else " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read the state_dict a weights file holds, without running any code from it.

    Accepts safetensors, and ``torch.save`` files holding a bare state_dict or one stored under
    ``state_dict``/``model``/``model_state_dict``; strips a DDP ``module.`` prefix.

    Args:
        path: the weights file.

    Returns:
        Parameter and buffer names to CPU tensors.

    Raises:
        ModelError: not a regular file, a corrupt file (zip CRC, safetensors header), a pickle
            that would run code, or contents that are not a state_dict with string keys.
    """
    path = check_weights_file(path)
    try:
        head = _head(path)
    except OSError as exc:
        raise ModelError(f"cannot read checkpoint {path}: {exc.strerror or describe_exception(exc)}") from None
    if path.lower().endswith(SAFETENSORS_SUFFIX) or looks_like_safetensors(head, os.path.getsize(path)):
        return _state_dict(read_safetensors(path), path)
    names = verify_zip(path) if head[:4] == b"PK\x03\x04" else []
    return _state_dict(_read_torch(path, names), path)


def _state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            keys = ", ".join(map(repr, list(obj)[:8]))
            raise ModelError(f"{path} holds no state_dict (looked for a dict of tensors or the keys "
                             f"{', '.join(_STATE_DICT_KEYS)}; found keys: {keys})")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors")
    bad = next((k for k in obj if not isinstance(k, str)), _NO_KEY)
    if bad is not _NO_KEY:
        raise ModelError(f"{path} is not a state_dict: key {bad!r} ({type(bad).__name__}) is not a parameter name "
                         "(a state_dict maps string names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_checkpoint(model: nn.Module, path: str) -> nn.Module:
    """Load a weights file into ``model`` in place (strict) and return the model.

    See ``read_state_dict`` for the formats and refusals; every key must match the model's
    and every shape fit.

    Args:
        model: the model to load into.
        path: the weights file (``.pt``/``.pth`` state_dict or ``.safetensors``).

    Returns:
        ``model``, with the weights loaded.

    Raises:
        ModelError: a missing, unsafe or corrupt file, or keys and shapes that do not fit the model.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key {missing[0]!r}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"unexpected key {unexpected[0]!r}"
                         + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
        raise ModelError(f"checkpoint {path} does not fit the model: {'; '.join(parts)}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelError(f"checkpoint {path} does not fit the model: shape mismatch for {key!r}: "
                             f"checkpoint {tuple(state[key].shape)} vs model {tuple(tensor.shape)}")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"loading checkpoint {path} failed: {describe_exception(exc)}") from exc
    return model


class _Capture(logging.Handler):
    """Holds the records torch.export logs while loading, instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _export_load(path: str) -> nn.Module:
    """``torch.export.load(path).module()`` with torch.export's log captured into the one-line error."""
    logger = logging.getLogger("torch.export")
    capture, propagate, handlers = _Capture(), logger.propagate, logger.handlers[:]
    logger.handlers = [capture]  # torch's own stderr handler sits on this logger
    logger.propagate = False
    try:
        return torch.export.load(path).module()
    except Exception as exc:
        cause = next((r.exc_info[1] for r in capture.records if r.exc_info and r.exc_info[1] is not None), None)
        raise ModelError(f"cannot load model file {path}: it looks like a torch.export archive but does not "
                         f"load ({describe_exception(cause or exc)[:160]})") from None
    finally:
        logger.handlers = handlers
        logger.propagate = propagate


def load_model_file(path: str) -> nn.Module:
    """Load a whole model saved with ``torch.jit.save`` (TorchScript) or ``torch.export.save``.

    A torch.export program is returned as ``ExportedProgram.module()``. A file holding only
    weights is refused with a hint to pass it as a checkpoint instead.

    Args:
        path: the model file.

    Returns:
        The loaded module.

    Raises:
        ModelError: not a regular file, a corrupt archive, weights only, or a file that fails to load.
    """
    path = check_weights_file(path, "model")
    head = _head(path)
    if path.lower().endswith(SAFETENSORS_SUFFIX) or looks_like_safetensors(head, os.path.getsize(path)):
        raise ModelError(f"{path} holds weights only (safetensors); give the architecture as MODEL and this "
                         "file as the checkpoint")
    names = verify_zip(path, "model file") if head[:4] == b"PK\x03\x04" else []
    if _is_exported(names):
        return _export_load(path)
    if _is_torchscript(names):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated in 2.x
                return torch.jit.load(path, map_location="cpu")
        except Exception as exc:
            raise ModelError(f"cannot load model file {path}: {describe_exception(exc)}") from exc
    if any(n.endswith("/data.pkl") for n in names):
        raise ModelError(f"{path} holds weights or a pickled object, not a TorchScript or torch.export model; "
                         "give the architecture as MODEL and this file as the checkpoint")
    raise ModelError(f"{path} is not a TorchScript or torch.export model file (save one with torch.jit.save "
                     "or torch.export.save)")
