"""Turn a model spec (registry name, ``file.py:factory``, ``timm:NAME``, ``torchvision:NAME[:WEIGHTS]``,
or a saved TorchScript / torch.export file) into an ``nn.Module``, with pretrained weights or a checkpoint.

A ``file.py:factory`` spec imports the file, which runs its code like any Python import.
Every failure is a one-line ``ModelError`` (or ``ErfError`` for malformed ``key=value`` args).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
from typing import Any, Callable

import torch
import torch.nn as nn

from erf.errors import ErfError, ModelError
from erf.models.factory import call_factory, describe_exception
from erf.models.files import MODEL_FILE_SUFFIXES, check_weights_file, load_checkpoint, load_model_file
from erf.models.pretrained import build_timm, build_torchvision, check_pretrained
from erf.models.registry import get_model_factory
from erf.models.safetensors_format import SAFETENSORS_SUFFIX

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


def _split_file_spec(spec: str) -> tuple[str, str] | None:
    """``path/to/file.py:factory`` -> (path, factory); None when ``spec`` is not of that form."""
    path, sep, factory = spec.rpartition(":")
    if sep and path.endswith(".py"):
        return path, factory.strip()
    return None


def load_model(spec: str, model_args: dict[str, Any] | None = None, checkpoint: str | None = None,
               seed: int | None = 0, pretrained: bool = False) -> nn.Module:
    """Build the model that ``spec`` names, with its pretrained weights or a checkpoint if asked.

    ``spec`` is a registry name (``resnet50``), ``path/to/file.py:factory`` (the file is
    imported: its code runs), ``timm:NAME`` (also ``timm:hf-hub:ORG/REPO``),
    ``torchvision:NAME[:WEIGHTS]`` (``WEIGHTS`` loads those weights, as ``pretrained``), or a
    ``.pt``/``.pth``/``.pt2``/``.ts`` file holding a TorchScript or torch.export program (no
    ``model_args`` then). The random initial weights are drawn with torch's generator seeded
    with ``seed`` (the global random state is left as it was), so the same spec and seed give
    the same model in every process; ``seed=None`` draws from the global state.

    Args:
        spec: the model spec.
        model_args: keyword arguments for the factory.
        checkpoint: a weights file to load (see ``load_checkpoint``); None: none. An empty
            name is refused, not ignored.
        seed: the seed of the initial weights (None: the global random state).
        pretrained: load the library's pretrained weights (``timm:`` and ``torchvision:``
            specs only), fetched into its own cache (see ``erf.models.pretrained``).

    Returns:
        The model.

    Raises:
        ModelError: any spec, factory, weights or checkpoint that cannot be used (one line),
            checked before the model is built where it can be.
    """
    spec = str(spec).strip()
    if checkpoint is not None:
        checkpoint = check_weights_file(checkpoint)
    if pretrained:
        check_pretrained(spec, checkpoint)
    if seed is None:
        return _load_model(spec, model_args, checkpoint, pretrained)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _load_model(spec, model_args, checkpoint, pretrained)


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


def _load_model(spec: str, model_args: dict[str, Any] | None, checkpoint: str | None,
                pretrained: bool) -> nn.Module:
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
        model = build_timm(spec[len("timm:"):], model_args, pretrained)
    elif spec.startswith("torchvision:"):
        model = build_torchvision(spec[len("torchvision:"):], model_args, pretrained)
    elif spec.lower().endswith(MODEL_FILE_SUFFIXES):
        if model_args:
            raise ModelError(f"{spec} is a saved model; it takes no model arguments (got {', '.join(model_args)})")
        model = load_model_file(spec)
    elif spec.lower().endswith(SAFETENSORS_SUFFIX):
        raise ModelError(f"{spec} holds weights only (safetensors); give the architecture as MODEL and pass this "
                         "file with --checkpoint")
    else:
        model = call_factory(get_model_factory(spec), model_args, f"model {spec!r}")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model
