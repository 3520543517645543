"""Calling a model factory: checked keyword arguments, and every failure a one-line ``ModelError``.

``create_model(name, **kwargs)`` builds a registered model; ``call_factory`` is the same
call for any factory (a registry entry, a ``file.py:factory``, timm or torchvision).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch.nn as nn

from erf.errors import ErfError, ModelError
from erf.models.registry import get_model_factory


def _one_line(text: object, limit: int = 300) -> str:
    """Collapse whitespace so a message fits on one line, and cut it at ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line (at most 300 characters of message).

    Args:
        exc: any exception.

    Returns:
        The exception's type name, and its message collapsed to one line when it has one.
    """
    return f"{type(exc).__name__}: {_one_line(exc)}" if str(exc) else type(exc).__name__


def call_factory(factory: Callable[..., Any], kwargs: dict[str, Any] | None, what: str) -> nn.Module:
    """Call ``factory(**kwargs)`` and check that it returned a module.

    Args:
        factory: any callable that builds a model.
        kwargs: keyword arguments for it (None: none).
        what: how messages name the factory (``"model 'resnet50'"``).

    Returns:
        The module the factory built.

    Raises:
        ModelError: a keyword the factory does not accept, an exception while building,
            or a result that is not an ``nn.Module``.
    """
    kwargs = dict(kwargs or {})
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        params = None
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        bad = [k for k in kwargs if k not in accepted]
        if bad:
            raise ModelError(f"{what} does not accept argument {bad[0]!r}; "
                             f"accepted: {', '.join(accepted) if accepted else '(none)'}")
    try:
        model = factory(**kwargs)
    except ErfError:
        raise
    except Exception as exc:
        raise ModelError(f"{what} failed to build: {describe_exception(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{what} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a registry name (see ``list_models``).
        **kwargs: the factory's keyword arguments.

    Returns:
        The model, with the factory's own random initialisation (global random state).

    Raises:
        ModelError: an unknown name, or a factory call that fails (see ``call_factory``).
    """
    return call_factory(get_model_factory(name), kwargs, what=f"model {name!r}")
