"""Turn a model spec (registry name, ``file.py:factory``, ``timm:NAME``, ``torchvision:NAME``,
or a saved TorchScript / torch.export file) into an ``nn.Module``, and load checkpoints.

Every failure is a one-line ``ModelError`` (or ``ErfError`` for malformed ``key=value`` args).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
import zipfile
from typing import Any, Callable

import torch
import torch.nn as nn

from erf.errors import ErfError, ModelError
from erf.models.factory import call_factory, describe_exception
from erf.models.registry import get_model_factory

MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".ts")
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
_WORDS = {"true": True, "false": False, "none": None, "null": None}


# --------------------------------------------------------------------------- model args


def _parse_value(text: str) -> Any:
    """A Python literal where possible (also true/false/none in lower case), else the string."""
    stripped = text.strip()
    if stripped.lower() in _WORDS:
        return _WORDS[stripped.lower()]
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_model_args(items: list[str] | None) -> dict[str, Any]:
    """Parse ``["width=0.5", "strides=[1,3]", "activation=relu"]`` into a kwargs dict.

    Values are Python literals where possible (ints, floats, True/False/true/false, None,
    lists, tuples, dicts); anything else stays a string. A later key overrides an earlier one.

    Args:
        items: ``key=value`` strings (None: none).

    Returns:
        The keyword arguments.

    Raises:
        ErfError: an item that is not ``key=value`` with a Python name as key.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ErfError(f"model argument must look like key=value with a Python name as key; got {item!r}")
        out[key] = _parse_value(value)
    return out


# --------------------------------------------------------------------------- model specs


def _import_file(path: str):
    """Import a Python file by path under a unique module name."""
    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {path}")
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    name = f"erf_user_model_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # lets dataclasses, pickling and typing find the module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelError(f"importing {path} failed: {describe_exception(exc)}") from exc
    return module


def _from_file(path: str, factory_name: str, model_args: dict[str, Any]) -> nn.Module:
    module = _import_file(path)
    factory = getattr(module, factory_name, None)
    if factory is None or not callable(factory):
        names = sorted(n for n, v in vars(module).items()
                       if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        have = ", ".join(names) if names else "(none)"
        raise ModelError(f"{path} has no callable {factory_name!r}; callables defined there: {have}")
    return call_factory(factory, model_args, f"{path}:{factory_name}")


def _import_package(name: str):
    try:
        # lazy: timm and torchvision are optional and slow to import; only their specs need them
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == name:
            raise ModelError(f"'{name}:' models need the {name} package, which is not installed "
                             f"(pip install {name})") from None
        raise ModelError(f"{name} failed to import: {describe_exception(exc)}") from exc
    except Exception as exc:
        raise ModelError(f"{name} failed to import: {describe_exception(exc)}") from exc


def _from_timm(name: str, model_args: dict[str, Any]) -> nn.Module:
    timm = _import_package("timm")

    def build(**kw):
        return timm.create_model(name, pretrained=False, **kw)

    return call_factory(build, model_args, f"timm:{name}")


def _from_torchvision(name: str, model_args: dict[str, Any]) -> nn.Module:
    models = getattr(_import_package("torchvision"), "models", None)
    if not hasattr(models, "get_model"):
        raise ModelError("torchvision is too old for 'torchvision:NAME' (needs get_model, torchvision >= 0.14)")

    def build(**kw):
        return models.get_model(name, weights=None, **kw)

    return call_factory(build, model_args, f"torchvision:{name}")


def _split_file_spec(spec: str) -> tuple[str, str] | None:
    """``path/to/file.py:factory`` -> (path, factory); None when ``spec`` is not of that form."""
    path, sep, factory = spec.rpartition(":")
    if sep and path.endswith(".py"):
        return path, factory.strip()
    return None


def load_model(spec: str, model_args: dict[str, Any] | None = None, checkpoint: str | None = None,
               seed: int | None = 0) -> nn.Module:
    """Build the model that ``spec`` names, then load ``checkpoint`` (a state_dict file) if given.

    ``spec`` is a registry name (``resnet50``), ``path/to/file.py:factory``, ``timm:NAME``,
    ``torchvision:NAME`` (both without pretrained weights), or a ``.pt``/``.pth``/``.pt2``/``.ts``
    file holding a TorchScript or torch.export program (no ``model_args`` then). The random
    initial weights are drawn with torch's generator seeded with ``seed`` (the global random
    state is left as it was), so the same spec and seed give the same model in every process;
    ``seed=None`` draws from the global state.

    Args:
        spec: the model spec.
        model_args: keyword arguments for the factory.
        checkpoint: a state_dict file to load (see ``load_checkpoint``).
        seed: the seed of the initial weights (None: the global random state).

    Returns:
        The model.

    Raises:
        ModelError: any spec, factory or checkpoint that cannot be used (one line).
    """
    if seed is None:
        return _load_model(spec, model_args, checkpoint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _load_model(spec, model_args, checkpoint)


def rebuild_init(spec: str, model_args: dict[str, Any] | None = None
                 ) -> Callable[[nn.Module, torch.Generator], None]:
    """An ``init`` for weight draws of a model's *own* initialisation: build ``spec`` again.

    ``erf.measure(..., weight_draws=K, init=rebuild_init(spec, args))`` measures K networks drawn
    by the model's factory itself (its init scheme, zero-init tricks and all), each from the
    seed of its draw's generator, copied into the measured model.

    Args:
        spec: the model spec (as for ``load_model``).
        model_args: keyword arguments for the factory.

    Returns:
        ``init(model, generator)``: loads into ``model`` the weights of ``spec`` built with
        the generator's seed.
    """
    def model_rebuild(model: nn.Module, generator: torch.Generator) -> None:
        fresh = load_model(spec, model_args, seed=int(generator.initial_seed()))
        model.load_state_dict(fresh.state_dict())
    return model_rebuild


def _load_model(spec: str, model_args: dict[str, Any] | None, checkpoint: str | None) -> nn.Module:
    spec = str(spec).strip()
    model_args = dict(model_args or {})
    file_spec = _split_file_spec(spec)
    if file_spec is not None:
        path, factory = file_spec
        if not factory:
            raise ModelError(f"name the factory after the colon: {path}:FACTORY")
        model = _from_file(path, factory, model_args)
    elif spec.endswith(".py"):
        raise ModelError(f"name the factory function in the file: {spec}:FACTORY")
    elif spec.startswith("timm:"):
        model = _from_timm(spec[len("timm:"):], model_args)
    elif spec.startswith("torchvision:"):
        model = _from_torchvision(spec[len("torchvision:"):], model_args)
    elif spec.lower().endswith(MODEL_FILE_SUFFIXES):
        if model_args:
            raise ModelError(f"{spec} is a saved model; it takes no model arguments (got {', '.join(model_args)})")
        model = load_model_file(spec)
    else:
        model = call_factory(get_model_factory(spec), model_args, f"model {spec!r}")
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model


# --------------------------------------------------------------------------- files


def _zip_names(path: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _is_torchscript(names: list[str]) -> bool:
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _is_exported(names: list[str]) -> bool:
    return any(n.endswith("/archive_format") or n.endswith("serialized_exported_program.json") for n in names)


def load_model_file(path: str) -> nn.Module:
    """Load a whole model saved with ``torch.jit.save`` (TorchScript) or ``torch.export.save``.

    A torch.export program is returned as ``ExportedProgram.module()``. A file holding only
    weights is refused with a hint to pass it as a checkpoint instead.

    Args:
        path: the model file.

    Returns:
        The loaded module.

    Raises:
        ModelError: a missing file, weights only, or a file that fails to load.
    """
    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {path}")
    names = _zip_names(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated in 2.x
            if _is_torchscript(names):
                return torch.jit.load(path, map_location="cpu")
            if _is_exported(names):
                return torch.export.load(path).module()
    except Exception as exc:
        raise ModelError(f"cannot load model file {path}: {describe_exception(exc)}") from exc
    if any(n.endswith("/data.pkl") for n in names):
        raise ModelError(f"{path} holds weights or a pickled object, not a TorchScript or torch.export model; "
                         "give the architecture as MODEL and this file as the checkpoint")
    raise ModelError(f"{path} is not a TorchScript or torch.export model file (save one with torch.jit.save "
                     "or torch.export.save)")


def _read_checkpoint(path: str) -> Any:
    if not os.path.isfile(path):
        raise ModelError(f"checkpoint file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc)
        names = _zip_names(path)
        if _is_torchscript(names) or _is_exported(names):
            raise ModelError(f"{path} is a whole saved model (TorchScript or torch.export), not a state_dict; "
                             "pass it as MODEL instead of as a checkpoint") from None
        with open(path, "rb") as f:
            head = f.read(2)
        if "Unsupported global" in msg or (not names and head[:1] == b"\x80"):
            raise ModelError(f"refused: {path} is not a plain weights file (it would run code when loaded); "
                             "save it with torch.save(model.state_dict(), ...)") from None
        raise ModelError(f"cannot read checkpoint {path}: the file is corrupt or not a PyTorch file "
                         f"({describe_exception(exc)[:120]})") from None


def _extract_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise ModelError(f"{path} holds no state_dict (looked for a dict of tensors or the keys "
                             f"{', '.join(_STATE_DICT_KEYS)}; found keys: {keys})")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_checkpoint(model: nn.Module, path: str) -> nn.Module:
    """Load a state_dict file into ``model`` in place (strict) and return the model.

    Reads with ``weights_only=True``; accepts a bare state_dict or one stored under
    ``state_dict``/``model``/``model_state_dict``, and strips a DDP ``module.`` prefix.

    Args:
        model: the model to load into.
        path: the state_dict file.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        ModelError: a missing, unsafe or corrupt file, or keys and shapes that do not fit the model.
    """
    state = _extract_state_dict(_read_checkpoint(path), path)
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
