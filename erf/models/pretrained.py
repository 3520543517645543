"""``timm:NAME`` and ``torchvision:NAME[:WEIGHTS]`` models, with or without their pretrained weights.

Pretrained weights are fetched by the library itself into its own cache: timm's from the Hugging
Face hub (``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``) or a URL (torch hub's
``checkpoints`` folder), torchvision's into torch hub's ``checkpoints`` folder
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``). Where the machine
cannot reach them, or the library is missing or does not import, the error is one line naming
what is missing, where the library looks for the file, and the way round: download the weights
elsewhere and pass them with ``--checkpoint FILE`` (``.pth`` or ``.safetensors``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
from types import TracebackType
from typing import Any

import torch
import torch.nn as nn

from erf.errors import ModelError
from erf.models.factory import call_factory, describe_exception
from erf.models.registry import is_model

PRETRAINED_PREFIXES = ("timm:", "torchvision:")
_WAY_ROUND = "or download the weights elsewhere and pass --checkpoint FILE (.pth or .safetensors) instead"


def import_optional(name: str, pretrained: bool = False) -> Any:
    """Import timm or torchvision, or say in one line why it cannot be used here.

    Args:
        name: ``"timm"`` or ``"torchvision"``.
        pretrained: the import is for pretrained weights (the message then says how to pass a
            weights file instead).

    Returns:
        The imported package.

    Raises:
        ModelError: the package is not installed, or fails to import (e.g. a torchvision built
            for another torch).
    """
    way_round = f"; {_registry_hint(name)}" if pretrained else ""
    try:
        # lazy: timm and torchvision are optional and slow to import; only their specs need them
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing == name:
            raise ModelError(f"'{name}:' models need the {name} package, which is not installed "
                             f"(pip install {name}){way_round}") from None
        if missing == "torchvision":  # timm imports torchvision
            raise ModelError(f"{name} failed to import: it needs torchvision, which is not installed; install the "
                             f"torchvision release for this torch {torch.__version__} (pip install "
                             f"{torchvision_pair()}){way_round}") from None
        raise ModelError(f"{name} failed to import: {describe_exception(exc)}{way_round}") from None
    except Exception as exc:  # ImportError, or e.g. "operator torchvision::nms does not exist"
        cause = describe_exception(exc)[:160]
        if name == "torchvision" or _through_torchvision(exc):
            via = "" if name == "torchvision" else ", raised inside torchvision, which timm imports"
            raise ModelError(f"{name} failed to import ({cause}{via}); {torchvision_mismatch()}{way_round}") from None
        raise ModelError(f"{name} failed to import ({cause}); install the {name} built "
                         f"for torch {torch.__version__}{way_round}") from None


def _base_version(version: str) -> str:
    """``"2.14.1+cu130"`` -> ``"2.14.1"``."""
    return version.split("+")[0]


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def torchvision_pair(torch_version: str | None = None) -> str:
    """The pip requirement of torch with its own torchvision release: ``"torch==2.14.1 torchvision==0.29.*"``.

    torchvision 0.(N+15) is the release of torch 2.N (0.29 for 2.14, 0.24 for 2.9).

    Args:
        torch_version: a torch version (None: the torch imported here).

    Returns:
        The pip arguments.
    """
    version = _base_version(torch_version or torch.__version__)
    minor = _minor(version)
    if minor is None or minor[0] != 2:
        return f"torch=={version} torchvision (the release built for it)"
    return f"torch=={version} torchvision==0.{minor[1] + 15}.*"


def _torchvision_torch(tv_version: str) -> str | None:
    """The torch that an installed torchvision is built for: its pinned requirement, else 2.(minor-15)."""
    try:
        requires = importlib.metadata.requires("torchvision") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    for req in requires:
        m = re.match(r"torch\s*\(?\s*==\s*([\w.+]+)", req)
        if m:
            return _base_version(m.group(1))
    minor = _minor(tv_version)
    return f"2.{minor[1] - 15}" if minor and minor[0] == 0 and minor[1] >= 15 else None


def torchvision_mismatch() -> str:
    """What to do when torchvision does not import: names a torchvision built for another torch.

    Returns:
        ``"torchvision 0.28.0 is built for torch 2.13.0, not this torch 2.14.1: install the pair
        (pip install torch==2.14.1 torchvision==0.29.*)"``, or, where the versions match (or
        torchvision is missing), the pair to install.
    """
    here = _base_version(torch.__version__)
    try:
        tv = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return f"install the torchvision release for this torch {torch.__version__} (pip install {torchvision_pair()})"
    built = _torchvision_torch(tv)
    if built is not None and _minor(built) != _minor(here):
        return (f"torchvision {tv} is built for torch {built}, not this torch {torch.__version__}: install the pair "
                f"(pip install {torchvision_pair()})")
    return f"reinstall the torchvision built for this torch {torch.__version__} (pip install {torchvision_pair()})"


def _through_torchvision(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause) was raised inside torchvision's code or names it."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if "torchvision" in str(e) or (isinstance(e, ImportError) and (e.name or "").startswith("torchvision")):
            return True
        tb: TracebackType | None = e.__traceback__
        while tb is not None:
            if f"{os.sep}torchvision{os.sep}" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        e = e.__cause__ or e.__context__
    return False


def check_pretrained(spec: str, checkpoint: str | None = None) -> None:
    """Check, without fetching anything, that ``spec`` can take pretrained weights here.

    The spec is ``timm:NAME`` or ``torchvision:NAME[:WEIGHTS]``, no checkpoint is given too, the
    library imports, and (torchvision) the weights name exists.

    Args:
        spec: the model spec.
        checkpoint: the checkpoint asked for as well (None: none).

    Raises:
        ModelError: any of those fails (one line).
    """
    if checkpoint is not None:
        raise ModelError(f"give pretrained weights or the checkpoint {checkpoint}, not both (the checkpoint would "
                         "replace every pretrained weight)")
    if not spec.startswith(PRETRAINED_PREFIXES):
        raise ModelError(f"--pretrained (model.pretrained) applies to timm:NAME and torchvision:NAME specs; for "
                         f"{spec!r} pass its weights with --checkpoint FILE (.pth or .safetensors)")
    library, _, name = spec.partition(":")
    module = import_optional(library, pretrained=True)
    if library == "torchvision":
        arch, _, weights = name.partition(":")
        models = getattr(module, "models", None)
        if hasattr(models, "get_model_weights"):
            _torchvision_weights(models, arch, weights or "DEFAULT")


def _registry_hint(library: str) -> str:
    if library == "torchvision":
        return ("the registry's resnet18-152, vgg11-19 and alexnet have torchvision's layout and take its weights "
                "files: e.g. erf rf resnet50 --checkpoint resnet50-11ad3fa6.pth")
    return "build the architecture another way (path/to/file.py:factory) and pass its weights with --checkpoint FILE"


def _hub_cache() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _torch_cache() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _weights_error(what: str, exc: BaseException, where: str, failed: str = "pretrained weights could not be "
                   "loaded") -> ModelError:
    cause = describe_exception(exc.__cause__ or exc)[:200]
    return ModelError(f"{what}: the {failed} ({cause}); {where}")


def build_timm(name: str, model_args: dict[str, Any], pretrained: bool = False) -> nn.Module:
    """``timm.create_model(name, pretrained=pretrained, **model_args)``.

    ``name`` may carry a pretrained tag (``resnet50.a1_in1k``) or be ``hf-hub:ORG/REPO``.

    Args:
        name: the timm model name.
        model_args: keyword arguments for ``create_model``.
        pretrained: load timm's pretrained weights (fetched into the hub cache).

    Returns:
        The model.

    Raises:
        ModelError: timm missing or broken, a bad name or argument, or weights that cannot be
            fetched (naming where timm looks for them and how to pass a file instead).
    """
    timm = import_optional("timm", pretrained)
    what = f"timm:{name}"
    hub_name = name.startswith("hf-hub:")
    try:
        return timm_preprocessing(call_factory(lambda **kw: timm.create_model(name, pretrained=pretrained, **kw),
                                               model_args, what))
    except ModelError as exc:
        if not (pretrained or hub_name):
            raise
        error = exc
    if hub_name and not isinstance(error.__cause__, TypeError):  # the architecture comes from the hub too
        hub_id = name[len("hf-hub:"):].split("@")[0]
        raise _weights_error(what, error, f"timm fetches the repository's config and weights from "
                             f"https://huggingface.co/{hub_id} into {_hub_cache()} where this machine reaches the "
                             "hub; offline, build the architecture its config.json names as timm:ARCH and pass its "
                             "model.safetensors with --checkpoint FILE", "model could not be fetched")
    model = call_factory(lambda **kw: timm.create_model(name, pretrained=False, **kw), model_args, what)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    hub_id, url = (_cfg_value(cfg, "hf_hub_id"), _cfg_value(cfg, "url"))
    if hub_id:
        where = (f"where this machine reaches the hub, timm fetches them from https://huggingface.co/{hub_id} into "
                 f"{_hub_cache()}; {_WAY_ROUND} (that repository's model.safetensors)")
    elif url:
        where = (f"timm fetches {url} into {_torch_cache()} (place {os.path.basename(url)} there by hand on an "
                 f"offline machine); {_WAY_ROUND}")
    else:
        where = ("timm names no weights for it (pick a tagged name, NAME.TAG, from timm.list_pretrained()); "
                 f"{_WAY_ROUND}")
    raise _weights_error(what, error, where)


def _cfg_value(cfg: Any, key: str) -> str:
    """A field of timm's pretrained_cfg (a dict, or a PretrainedCfg dataclass in some versions)."""
    value = cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)
    return value if isinstance(value, str) else ""


def _torchvision_weights(models: Any, name: str, weights: str) -> Any:
    """The weights enum member ``weights`` (``IMAGENET1K_V2``, ``DEFAULT`` or ``ResNet50_Weights.X``)."""
    try:
        enum = models.get_model_weights(name)
    except Exception as exc:
        raise ModelError(f"torchvision:{name}: no such model or no weights for it ({describe_exception(exc)[:120]}); "
                         "see torchvision.models.list_models()") from None
    member = weights.rpartition(".")[2] if weights.startswith(enum.__name__ + ".") else weights
    try:
        return enum[member]
    except KeyError:
        have = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ModelError(f"torchvision:{name}: unknown weights {weights!r}; choose one of {have}") from None


def build_torchvision(name: str, model_args: dict[str, Any], pretrained: bool = False) -> nn.Module:
    """``torchvision.models.get_model(NAME, weights=..., **model_args)`` for ``NAME[:WEIGHTS]``.

    ``WEIGHTS`` (a member of the model's weights enum: ``IMAGENET1K_V2``, ``DEFAULT``) names
    the pretrained weights and loads them; ``pretrained=True`` without it loads ``DEFAULT``.

    Args:
        name: ``NAME`` or ``NAME:WEIGHTS``.
        model_args: keyword arguments for ``get_model``.
        pretrained: load the pretrained weights (fetched into torch hub's cache).

    Returns:
        The model.

    Raises:
        ModelError: torchvision missing or broken, a bad name, weights or argument, or weights
            that cannot be fetched (naming the file, where torchvision looks for it, and how to
            pass it instead).
    """
    arch, _, weights_name = name.partition(":")
    pretrained = pretrained or bool(weights_name)
    models = getattr(import_optional("torchvision", pretrained), "models", None)
    if not hasattr(models, "get_model"):
        raise ModelError("torchvision is too old for 'torchvision:NAME' (needs get_model, torchvision >= 0.14)")
    what = f"torchvision:{name}"
    weights = _torchvision_weights(models, arch, weights_name or "DEFAULT") if pretrained else None
    try:
        model = call_factory(lambda **kw: models.get_model(arch, weights=weights, **kw), model_args, what)
        return model if weights is None else torchvision_preprocessing(model, weights)
    except ModelError as exc:
        if weights is None:
            raise
        error = exc
    call_factory(lambda **kw: models.get_model(arch, weights=None, **kw), model_args, what)  # a bad argument?
    url = getattr(weights, "url", "")
    file = os.path.basename(url)
    registry = f" (the registry's {arch} takes it too)" if is_model(arch) else ""
    where = (f"torchvision fetches {url} into {_torch_cache()}: place {file} there by hand on an offline machine, "
             f"or pass it with --checkpoint {file} instead{registry}")
    raise _weights_error(f"{what} ({weights})", error, where)


def _cfg_get(cfg: Any, key: str) -> Any:
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)


def timm_preprocessing(model: nn.Module) -> nn.Module:
    """Name where a timm model's preprocessing comes from (``pretrained_cfg["origin"]``, read by the image inputs).

    timm's ``pretrained_cfg`` holds the mean, std and ``crop_pct`` of the weights' training; the
    image inputs (``erf.engine.images``) normalise with them and the run's notes say so.

    Args:
        model: a model timm built (the config is that of its tag's weights, also where the
            weights are random or come from a checkpoint).

    Returns:
        The model (its ``pretrained_cfg`` a copy with ``origin`` added).
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None or _cfg_get(cfg, "mean") is None:
        return model
    cfg = dict(cfg) if isinstance(cfg, dict) else {k: getattr(cfg, k) for k in vars(cfg)}
    tag = ".".join(str(v) for v in (cfg.get("architecture"), cfg.get("tag")) if v)
    cfg["origin"] = f"timm's pretrained_cfg of {tag or 'the model'}"
    model.pretrained_cfg = cfg
    return model


def torchvision_preprocessing(model: nn.Module, weights: Any) -> nn.Module:
    """Give a torchvision model loaded with ``weights`` their transforms' mean, std and crop as ``pretrained_cfg``.

    ``weights.transforms()`` (``ImageClassification``: resize to ``resize_size``, centre crop
    ``crop_size``, normalise) becomes ``{"mean", "std", "crop_pct" = crop / resize, "origin"}``,
    which the image inputs use (``erf.engine.images.model_preprocessing``) and the notes print.

    Args:
        model: the model.
        weights: the torchvision weights enum member it was loaded with.

    Returns:
        The model (unchanged where the weights' transforms name no mean and std).
    """
    try:
        transforms = weights.transforms()
    except Exception:  # noqa: BLE001 - weights without classification transforms keep no preprocessing
        return model
    mean, std = getattr(transforms, "mean", None), getattr(transforms, "std", None)
    if mean is None or std is None:
        return model
    crop, resize = getattr(transforms, "crop_size", None), getattr(transforms, "resize_size", None)
    crop_pct = 1.0
    if crop and resize:
        crop_pct = float(list(crop)[0]) / float(list(resize)[0])
    model.pretrained_cfg = {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std),
                            "crop_pct": crop_pct, "origin": f"torchvision's {weights} transforms"}
    return model

