"""A small model registry in the style of timm: names only (``@register_model``, lookups, descriptions).

Building a model from its name is ``erf.models.factory.create_model``: the registry
imports nothing of the rest of ``erf.models``, so nothing cycles.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from typing import Callable

import torch.nn as nn

from erf.errors import ModelError

Factory = Callable[..., nn.Module]

_REGISTRY: dict[str, Factory] = {}
_DESCRIPTIONS: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What ``erf rf --list`` shows of a registered model.

    Attributes:
        name: the registry name.
        description: one line (given at registration, else the first paragraph of the factory's docstring).
        arguments: the factory's keyword arguments with their defaults (``"depth=8"``).
    """

    name: str
    description: str
    arguments: tuple[str, ...]


def register_model(name: str | Factory | None = None, *, description: str | None = None
                   ) -> Factory | Callable[[Factory], Factory]:
    """Decorator that registers a model factory under ``name`` (default: the function's name).

    Args:
        name: the registry name; or the factory itself when used bare as ``@register_model``.
        description: one line for ``erf rf --list`` (default: the docstring's first paragraph).

    Returns:
        The decorator (``@register_model("name")``), or the factory (bare ``@register_model``).
    """
    if callable(name):  # used bare as ``@register_model``
        fn = name
        _REGISTRY[fn.__name__] = fn
        _DESCRIPTIONS.pop(fn.__name__, None)
        return fn

    def decorator(fn: Factory) -> Factory:
        key = name or fn.__name__
        _REGISTRY[key] = fn
        if description:
            _DESCRIPTIONS[key] = " ".join(description.split())
        else:
            _DESCRIPTIONS.pop(key, None)
        return fn

    return decorator


def unregister_model(name: str) -> None:
    """Remove ``name`` from the registry (a no-op when it is not registered).

    Args:
        name: a registry name.
    """
    _REGISTRY.pop(name, None)
    _DESCRIPTIONS.pop(name, None)


def model_info(name: str) -> ModelInfo:
    """The one-line description and keyword arguments of a registered model.

    Args:
        name: a registry name.

    Returns:
        Its ``ModelInfo``; the description drops reST double backquotes.

    Raises:
        ModelError: ``name`` is not registered.
    """
    fn = get_model_factory(name)
    text = _DESCRIPTIONS.get(name) or " ".join((inspect.getdoc(fn) or "").strip().split("\n\n")[0].split())
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        params = []
    args = tuple(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return ModelInfo(name, text.replace("``", ""), args)


def is_model(name: str) -> bool:
    """True when ``name`` is a registered model.

    Args:
        name: a candidate registry name.

    Returns:
        Whether a factory is registered under ``name``.
    """
    return name in _REGISTRY


def get_model_factory(name: str) -> Factory:
    """The factory registered under ``name``.

    Args:
        name: a registry name.

    Returns:
        The registered factory.

    Raises:
        ModelError: ``name`` is not registered (the message suggests close names).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"unknown model {name!r}{hint} (see `erf rf --list`)") from None


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names.

    Args:
        pattern: an optional shell-style filter (``"resnet*"``).

    Returns:
        The names, sorted.
    """
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names
