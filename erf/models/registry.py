"""A small model registry in the style of timm: ``@register_model`` and ``create_model``."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

import torch.nn as nn

from erf.errors import ModelError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model factory under ``name`` (default: the function's name)."""
    if callable(name):  # used bare as ``@register_model``
        fn = name
        _REGISTRY[fn.__name__] = fn
        return fn

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name or fn.__name__] = fn
        return fn

    return decorator


def is_model(name: str) -> bool:
    """True when ``name`` is a registered model."""
    return name in _REGISTRY


def get_model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered under ``name``; unknown names raise ``ModelError`` with suggestions."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"unknown model {name!r}{hint} (see `erf rf --list`)") from None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with the factory's keyword arguments."""
    from erf.models.loading import call_factory  # avoid an import cycle

    return call_factory(get_model_factory(name), kwargs, what=f"model {name!r}")


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a shell-style ``pattern``."""
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names
