"""The model checker: build every distinct model of a sweep on the meta device and trace it.

``check_models`` runs before any measurement (``erf run`` and ``erf run --check``), so bad model
arguments, unknown layers, units outside the layer's map, inputs too small for the network,
bad channels and checkpoints that do not fit are refused in one ``ConfigError`` line first. Inputs,
parameters and activations too large for the memory here are refused too (``erf.limits``).

Building a model runs its factory: a ``path/to/file.py:factory`` model file is imported, so its
code runs (like any Python import), also under ``erf run --check``.
"""

from __future__ import annotations

import math
import warnings

import torch

from erf import limits, stats
from erf.analytic import RFReport, infer_in_channels, receptive_field, spatial_ndim
from erf.engine import MeasureOptions, PrefixTokensError, check_traced, default_layer, require_spatial
from erf.engine.images import preprocessing_for
from erf.errors import ErfError, UnsupportedOpError
from erf.experiment.points import measure_keywords
from erf.experiment.profiles import check_profile
from erf.experiment.schema import Fail
from erf.experiment.sweeps import Config
from erf.models import check_pretrained, load_checkpoint, load_model
from erf.training import make_task


def check_models(cfg: Config) -> None:
    """Build every distinct model of the sweep on the meta device and trace its target layer.

    Catches bad model arguments (a wrong activation, an odd residual depth), unknown layers,
    units outside the layer's map and inputs too small for the network, all before any
    measurement.

    Args:
        cfg: a config from ``load_config`` / ``parse_config``.

    Raises:
        ConfigError: the first problem, naming the file and key.
    """
    fail = Fail(cfg.path)
    seen: dict[str, int] = {}
    tasks_seen: set[str] = set()
    for p in cfg.points:
        s = p.settings
        size = s["inputs"]["size"]
        key = repr((s["model"]["name"], s["model"]["args"], s["measure"]["layer"], s["measure"]["unit"], size,
                    s["measure"]["prefix_tokens"]))
        pre = f"point {p.id} ({p.label}): " if len(cfg.points) > 1 else ""
        if key in seen:
            _check_point(fail, pre, cfg, s, seen[key], tasks_seen)
            continue
        try:
            with torch.device("meta"):
                model = load_model(s["model"]["name"], s["model"]["args"])
        except ErfError as exc:
            fail("model", f"{pre}{' '.join(str(exc).split())}{_imported(s['model']['name'])}")
        model.eval()
        seen[key] = infer_in_channels(model)
        _check_point(fail, pre, cfg, s, seen[key], tasks_seen)
        itemsize = 8 if s["experiment"]["dtype"] == "float64" else 4
        _check_memory(fail, pre, model, size, itemsize)
        layer = s["measure"]["layer"] or (default_layer(model) or (None,))[0]  # as the engine picks it
        try:
            rep = receptive_field(model, tuple(size) if isinstance(size, list) else size, layer=layer)
            if s["measure"]["unit"]:
                rep.box(tuple(s["measure"]["unit"]))
            if s["measure"]["prefix_tokens"] != "auto":
                check_traced(rep.target, s["measure"]["prefix_tokens"], rep.target.name)
        except PrefixTokensError as exc:
            fail("measure.prefix_tokens", f"{pre}{' '.join(str(exc).split())}")
        except UnsupportedOpError:
            continue  # the engine measures it without a TRF (and says so), as erf measure does
        except ErfError as exc:
            k = "measure.unit" if "unit" in str(exc) else ("measure.layer" if "layer" in str(exc) else "inputs.size")
            fail(k, f"{pre}{' '.join(str(exc).split())}")
        _check_target(fail, pre, rep, s["measure"])
        try:
            limits.check_activations((row.shape for row in rep.layers), itemsize, f"{pre}model {s['model']['name']!r}")
        except ErfError as exc:
            fail("inputs.size", str(exc))
    _check_checkpoints(fail, cfg)
    check_profile(fail, cfg)  # [profile]: its layers, units and channel against each traced model


def _check_point(fail: Fail, pre: str, cfg: Config, s: dict, channels: int, tasks_seen: set[str]) -> None:
    """What the run checks when it starts a point, checked here first: the measurement options as the
    engine takes them, the images' normalisation, the generated images' count, the training task."""
    kw = measure_keywords(s["measure"])
    if kw.get("init") == "model" and kw.get("weight_draws"):
        kw["init"] = "kaiming_normal"  # stands in for the model's own scheme (rebuild_init) here
    inp = s["inputs"]
    if inp["kind"] in ("gaussian", "uniform", "constant"):
        kw["inputs"] = inp["kind"]
    elif inp["kind"] == "images" and inp["sampler"] == "random":
        kw["inputs"] = inp["path"]  # its first readable image is read, as the engine does
    try:
        MeasureOptions.build(**kw, in_channels=channels, dtype=s["experiment"]["dtype"])
        if inp["kind"] in ("images", "generated") and (kw.get("mean") is not None or kw.get("std") is not None):
            preprocessing_for(None, channels, kw.get("mean"), kw.get("std"))
    except ErfError as exc:
        msg = " ".join(str(exc).split())
        name = msg.split(" ", 1)[0]
        where = "inputs.path" if name == "inputs" or "image" in msg else f"measure.{name}" \
            if name in s["measure"] else "measure"
        fail(where, f"{pre}{msg}")
    if inp["kind"] == "generated" and inp["count"] > limits.MAX_GENERATED_IMAGES:
        fail("inputs.count", f"{pre}kind = 'generated' writes each image as a file: at most "
             f"{limits.MAX_GENERATED_IMAGES}; got {inp['count']}")
    tr = s["train"]
    key = repr((tr["task"], tr["size"] or inp["size"], channels, s["experiment"]["seed"], tr["task_args"]))
    if tr["enabled"] and key not in tasks_seen:  # a task once per sweep (an image folder is read once)
        tasks_seen.add(key)
        size = tr["size"] or inp["size"]
        try:
            task = make_task(tr["task"], size=size if isinstance(size, int) else tuple(size), channels=channels,
                             seed=s["experiment"]["seed"], **tr["task_args"])
            x, _ = task.eval_set(2)
        except ErfError as exc:
            msg = " ".join(str(exc).split())
            fail("train.task_args" if "param" in msg else "train.task", f"{pre}{msg}")
        if not bool(torch.isfinite(x).all()):
            fail("train.task_args", f"{pre}task {tr['task']!r} draws images with NaN or Inf pixels with these "
                 f"parameters ({tr['task_args']}); use smaller, finite values")


def _imported(spec: str) -> str:
    """The note added to a model file's error: checking imported it, so its code ran."""
    return " (erf imported the model file to check it: its code runs)" if ".py:" in spec else ""


def _check_memory(fail: Fail, pre: str, model: torch.nn.Module, size, itemsize: int) -> None:
    """The model's parameters and one full-size input sample fit in the memory here (``erf.limits``)."""
    values = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    try:
        limits.check_model_memory(values, itemsize, f"{pre}the model")
    except ErfError as exc:
        fail("model.args", str(exc))
    sizes = list(size) if isinstance(size, list) else [size] * spatial_ndim(model)
    try:
        limits.check_input(sizes, infer_in_channels(model), "the input", itemsize=itemsize)
    except ErfError as exc:
        fail("inputs.size", f"{pre}{exc}")


def _check_target(fail: Fail, pre: str, rep: RFReport, measure: dict) -> None:
    """The measured layer has a spatial map, and ``measure.channel`` is one of its channels."""
    try:
        require_spatial(rep)
    except ErfError as exc:
        fail("measure.layer", f"{pre}{' '.join(str(exc).split())}")
    t, channel = rep.target, measure["channel"]
    if channel == "all":
        return
    position = t.index_of(tuple(measure["unit"]) or tuple(stats.center_unit(t.output)))
    n = math.prod(size for d, size in enumerate(t.shape) if d and d not in position)
    if channel >= n:
        fail("measure.channel", f"{pre}channel {channel} does not exist: layer {t.name!r} has {n} channels "
             f"(use 0..{n - 1}, or 'all')")


def _check_checkpoints(fail: Fail, cfg: Config) -> None:
    """Every ``model.checkpoint`` is a safe weights file that fits its model (checked on the meta device), and
    every ``model.pretrained`` names a timm/torchvision model whose library imports (nothing is fetched)."""
    seen = set()
    for p in cfg.points:
        m = p.settings["model"]
        pre = f"point {p.id} ({p.label}): " if len(cfg.points) > 1 else ""
        if m.get("pretrained"):
            try:
                check_pretrained(m["name"], m["checkpoint"] or None)
            except ErfError as exc:
                fail("model.pretrained", f"{pre}{' '.join(str(exc).split())}")
        key = repr((m["name"], m["args"], m["checkpoint"]))
        if not m["checkpoint"] or key in seen:
            continue
        seen.add(key)
        with torch.device("meta"):
            model = load_model(m["name"], m["args"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # copying into meta tensors is a no-op, and says so
                load_checkpoint(model, m["checkpoint"])
        except ErfError as exc:
            fail("model.checkpoint", f"{pre}{' '.join(str(exc).split())}")
