"""Train a network on a generated task (or local images) so its ERF can be measured before,
during and after training (Luo et al. 2016 show that training enlarges the ERF).

``train`` runs AdamW (default; betas 0.9/0.999, no weight decay unless asked) or SGD with
momentum 0.9, at a constant learning rate, on batches that ``task.batch`` draws on the
training device. The data stream is fixed by ``seed`` (stream ``train``); the held-out eval set
by the task's own seed, so runs with different training seeds are scored on the same images.
On CPU two runs with the same seed and initial weights end with bit-identical weights.

Checkpoint steps are step 0 (the initial weights), every ``checkpoint_every`` steps (or the
listed steps) and the last step. At each one the model is scored on the eval set, saved to
``checkpoint_dir/step_XXXXX.pt`` (a plain ``state_dict``, written to a temp file then renamed)
and handed to ``on_checkpoint(step, model)`` in eval mode; ``final.pt`` holds the final weights.

Dense tasks train channel 0 of a spatial output (``plain_net``, ``residual_net``), so their
checkpoints load straight into the same builder (``erf measure plain_net --checkpoint ...``).
``DenseHead`` adds a 1x1 read-out instead: its modules are ``body`` (the wrapped net, names
unchanged under ``body.``; e.g. the last layer of an 8-conv ``plain_net`` is ``body.layers.7``)
and ``head``; its checkpoints load into ``DenseHead(<same body>)`` (see ``dense_head``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from erf.device import resolve_device
from erf.engine import checksum
from erf.errors import ErfError, ModelError
from erf.io import atomic_write, set_aside, verify
from erf.models import create_model
from erf.progress import progress_bar
from erf.training.seeds import make_generator, mix_seed
from erf.training.tasks import Task

OPTIMIZERS = ("adamw", "sgd")


# --------------------------------------------------------------------------- dense read-out


def _last_conv_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ModelError("DenseHead cannot find a Conv2d in the body to size its head; pass body_channels=")
    return convs[-1].out_channels


class DenseHead(nn.Module):
    """``head(body(x))``: a 1x1 conv read-out (``out_channels`` maps) on a net with a spatial output."""

    def __init__(self, body: nn.Module, out_channels: int = 1, body_channels: int | None = None):
        super().__init__()
        self.body = body
        self.head = nn.Conv2d(body_channels or _last_conv_channels(body), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``head(body(x))``."""
        return self.head(self.body(x))


def dense_head(body: str = "plain_net", out_channels: int = 1, **body_kwargs: Any) -> DenseHead:
    """``DenseHead`` around the registered model ``body`` built with ``body_kwargs``.

    Usable as a model spec for the CLI through a file, e.g. ``my.py:net`` with
    ``net = functools.partial(dense_head, "plain_net", depth=8)``.

    Args:
        body: a registered model name.
        out_channels: maps the 1x1 head outputs.
        **body_kwargs: the body's build arguments.

    Returns:
        The ``DenseHead``.

    Raises:
        ModelError: an unknown model, bad build arguments, or a body without a Conv2d.
    """
    return DenseHead(create_model(body, **body_kwargs), out_channels)


# --------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """What ``train`` returns: histories, checkpoint paths and the trained model (in eval mode).

    ``train_loss[i]`` / ``train_accuracy[i]`` belong to step ``i + 1`` (accuracy is None for a
    regression task); ``eval`` lists ``{"step", "loss", "accuracy"}`` on the held-out set;
    ``checkpoints`` maps step -> file; ``measurements`` maps step -> what ``on_checkpoint`` returned.
    """

    model: nn.Module
    task: str
    steps: int
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float | None] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)
    checkpoints: dict[int, str] = field(default_factory=dict)
    final_checkpoint: str | None = None
    measurements: dict[int, Any] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def final_eval(self) -> dict:
        """The last eval record (at the final step)."""
        return self.eval[-1] if self.eval else {}

    def to_dict(self) -> dict:
        """JSON-friendly summary (no model, no measurements)."""
        return {"task": self.task, "steps": self.steps, "train_loss": self.train_loss,
                "train_accuracy": self.train_accuracy, "eval": self.eval,
                "checkpoints": {str(k): v for k, v in self.checkpoints.items()},
                "final_checkpoint": self.final_checkpoint, "config": self.config, "seconds": self.seconds}


# --------------------------------------------------------------------------- helpers


def checkpoint_steps(checkpoint_every: int | Sequence[int] | None, steps: int) -> list[int]:
    """Step 0, every ``checkpoint_every`` steps (an int) or the listed steps, and ``steps``.

    Args:
        checkpoint_every: an interval, a list of steps, or None (first and last step only).
        steps: the number of training steps.

    Returns:
        The sorted checkpoint steps.

    Raises:
        ErfError: an interval < 1, a bool, something else than an int or a list, or a listed
            step outside 0..steps.
    """
    points = {0, steps}
    if checkpoint_every is None:
        return sorted(points)
    if isinstance(checkpoint_every, bool):
        raise ErfError(f"checkpoint_every must be a positive integer or a list of steps; got {checkpoint_every!r}")
    if isinstance(checkpoint_every, int):
        if checkpoint_every < 1:
            raise ErfError(f"checkpoint_every must be >= 1; got {checkpoint_every}")
        return sorted(points | set(range(checkpoint_every, steps + 1, checkpoint_every)))
    try:
        listed = [int(s) for s in checkpoint_every]
    except (TypeError, ValueError):
        raise ErfError(f"checkpoint_every must be a positive integer or a list of steps; "
                       f"got {checkpoint_every!r}") from None
    bad = [s for s in listed if not 0 <= s <= steps]
    if bad:
        raise ErfError(f"checkpoint steps must lie in 0..{steps}; got {bad}")
    return sorted(points | set(listed))


def save_state_dict(model: nn.Module, path: str) -> str:
    """Save ``model.state_dict()`` (as CPU tensors) to ``path`` atomically: temp file, then rename.

    Args:
        model: the model.
        path: the file (its folder must exist).

    Returns:
        ``path``.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float):
    key = str(name).lower()
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ErfError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _check_args(model, task, steps, batch_size, lr, eval_size):
    if not isinstance(model, nn.Module):
        raise ErfError(f"train needs a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(task, Task) and not all(hasattr(task, a) for a in ("batch", "loss", "correct", "eval_set")):
        raise ErfError(f"train needs a task from erf.training.make_task; got {type(task).__name__} "
                       f"(e.g. make_task('context', size=32))")
    for name, value, low in (("steps", steps, 0), ("batch_size", batch_size, 1), ("eval_size", eval_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ErfError(f"{name} must be an integer >= {low}; got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
        raise ErfError(f"lr must be a positive number; got {lr!r}")


def _forward(model: nn.Module, x: torch.Tensor, task) -> torch.Tensor:
    """``model(x)``; a shape/channel mismatch becomes a one-line ``ErfError``."""
    try:
        return model(x)
    except (ErfError, torch.OutOfMemoryError):
        raise
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())[:160]
        raise ErfError(f"the model failed on a {tuple(x.shape)} batch of task {task.name!r} ({msg}); "
                       f"check its in_channels / num_classes against the task") from None


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict:
    """Mean loss and accuracy (None for regression) of ``model`` on (x, y), in eval mode.

    Args:
        model: the model (its training mode is restored afterwards).
        task: gives the loss and the accuracy.
        x: inputs.
        y: labels or targets.
        batch_size: examples per forward pass.

    Returns:
        ``{"loss": float, "accuracy": float or None}``.

    Raises:
        ErfError: the model fails on the inputs or its output does not fit the task.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, total = 0.0, 0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out = _forward(model, xb, task)
            loss_sum += float(task.loss(out, yb)) * len(xb)
            c = task.correct(out, yb)
            if c is not None:
                correct, total = correct + int(c[0]), total + c[1]
    finally:
        model.train(was_training)
    return {"loss": loss_sum / len(x), "accuracy": correct / total if total else None}


# --------------------------------------------------------------------------- the loop


class _TrainState:
    """The whole training state in one file (``torch.save`` with its SHA-256 inside, read back with
    ``weights_only=True``); a damaged one is moved to ``damaged/`` with a note, never dropped silently."""

    def __init__(self, path: str, config: dict):
        self.path = os.fspath(path)
        self.fingerprint = json.dumps(config, sort_keys=True, default=str)

    def load(self) -> dict | None:
        """The saved state when it was written by a run of the same configuration, else None."""
        if not os.path.isfile(self.path):
            return None
        problem = verify(self.path)
        if problem is None:
            try:
                state = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as exc:  # any damage the checksum did not catch
                problem = f"unreadable ({type(exc).__name__})"
        if problem is not None:
            self._set_aside(problem)
            return None
        return state if isinstance(state, dict) and state.get("fingerprint") == self.fingerprint else None

    def _set_aside(self, problem: str) -> None:
        """Move a damaged save to ``damaged/`` beside it (one note; nothing deleted): training starts again."""
        try:
            moved = set_aside(self.path, os.path.join(os.path.dirname(self.path), "damaged"))
        except OSError as exc:
            print(f"erf: note: the training save {self.path} is damaged ({problem}) and could not be moved aside "
                  f"({exc.strerror}); training from the start", file=sys.stderr)
            return
        print(f"erf: note: the training save {os.path.basename(self.path)} is damaged ({problem}); moved to "
              f"{moved}, training from the start", file=sys.stderr)

    def save(self, step: int, model, opt, gen, history, has_accuracy: bool, result: TrainResult) -> None:
        dev = history.device
        state = {"fingerprint": self.fingerprint, "step": step,
                 "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "optimizer": opt.state_dict(), "generator": gen.get_state().cpu(),
                 "torch_rng": torch.get_rng_state(), "history": history.cpu(), "has_accuracy": has_accuracy,
                 "eval": json.dumps(result.eval), "checkpoints": json.dumps(result.checkpoints)}
        if dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(dev)
        atomic_write(self.path, lambda f: torch.save(state, f), sealed=True)  # its SHA-256 inside


def train(model: nn.Module, task: Task, steps: int, batch_size: int = 64, lr: float = 1e-3,
          device: str | torch.device | None = None,
          seed: int = 0, checkpoint_every: int | Sequence[int] | None = None, checkpoint_dir: str | None = None,
          on_checkpoint: Callable[[int, nn.Module], Any] | None = None, progress: bool = False, *,
          optimizer: str = "adamw", weight_decay: float = 0.0, momentum: float = 0.9,
          eval_size: int = 512, eval_every: int | None = None, grad_clip: float | None = None,
          state_file: str | None = None) -> TrainResult:
    """Train ``model`` in place on ``task`` for ``steps`` steps and return a ``TrainResult``.

    See the module docstring for the schedule of checkpoints, the files written and the
    optimizers. ``eval_every`` adds eval points between checkpoints; ``grad_clip`` clips the
    global gradient norm. The model ends in eval mode on ``device``.

    ``state_file``: after each checkpoint step (and its ``on_checkpoint``) the whole training
    state (weights, optimizer, random generators, histories) is saved there atomically; a run
    given a matching file goes on after its step, with the numbers of an uninterrupted run on
    CPU (``on_checkpoint`` is not called again for the steps before).

    Args:
        model: the network, trained in place.
        task: a ``Task`` (``make_task``).
        steps: optimizer steps.
        batch_size: examples per step.
        lr: the constant learning rate.
        device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"`` ... (``erf.device.resolve_device``).
        seed: the training data stream and in-model randomness.
        checkpoint_every: an interval or a list of steps (see ``checkpoint_steps``).
        checkpoint_dir: where ``step_XXXXX.pt`` and ``final.pt`` go (none written when None).
        on_checkpoint: called as ``on_checkpoint(step, model)``; what it returns is kept.
        progress: show a progress bar.
        optimizer: a name of ``OPTIMIZERS``.
        weight_decay: the optimizer's weight decay.
        momentum: SGD's momentum.
        eval_size: held-out examples scored at each eval point.
        eval_every: extra eval points every so many steps.
        grad_clip: the largest global gradient norm, or None.
        state_file: the resume file, or None.

    Returns:
        The ``TrainResult``.

    Raises:
        ErfError: bad arguments, a model that does not fit the task, a device that is not
            there, or a loss that is not finite (divergence).
    """
    _check_args(model, task, steps, batch_size, lr, eval_size)
    if str(optimizer).lower() not in OPTIMIZERS:
        raise ErfError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    dev = resolve_device(device)
    ckpt_steps = checkpoint_steps(checkpoint_every, steps)
    if eval_every is not None and (isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1):
        raise ErfError(f"eval_every must be a positive integer; got {eval_every!r}")
    eval_steps = set(ckpt_steps) | (set(range(eval_every, steps + 1, eval_every)) if eval_every else set())
    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
            raise ErfError(f"checkpoint_dir {checkpoint_dir} is a file; give a folder path")
        os.makedirs(checkpoint_dir, exist_ok=True)

    config = dict(task=task.description, steps=steps, batch_size=batch_size, lr=lr, device=str(dev), seed=seed,
                  optimizer=str(optimizer).lower(), weight_decay=weight_decay, momentum=momentum,
                  eval_size=eval_size, checkpoint_steps=ckpt_steps, grad_clip=grad_clip)
    result = TrainResult(model=model, task=task.description, steps=steps, config=config)
    model.to(dev)
    opt = _make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, weight_decay, momentum)
    eval_x, eval_y = task.eval_set(eval_size, dev)
    gen = make_generator(mix_seed(seed, "train"), dev)
    history = torch.zeros(steps, 2, device=dev)
    has_accuracy = True
    fork = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    start = time.perf_counter()
    saver = None
    if state_file is not None:
        saver = _TrainState(state_file, {**config, "initial_weights": checksum(model)})
    restored = saver.load() if saver else None
    first = 1
    if restored is not None:
        model.load_state_dict(restored["model"])
        opt.load_state_dict(restored["optimizer"])
        gen.set_state(restored["generator"].to(gen.get_state().device))
        history = restored["history"].to(dev)
        has_accuracy = bool(restored["has_accuracy"])
        result.eval = json.loads(restored["eval"])
        result.checkpoints = {int(k): v for k, v in json.loads(restored["checkpoints"]).items()}
        first = int(restored["step"]) + 1

    def checkpoint(step: int) -> None:
        if step in eval_steps:
            result.eval.append({"step": step, **evaluate(model, task, eval_x, eval_y, batch_size)})
        if step not in ckpt_steps:
            return
        if checkpoint_dir is not None:
            path = save_state_dict(model, os.path.join(checkpoint_dir, f"step_{step:05d}.pt"))
            result.checkpoints[step] = path
        if on_checkpoint is not None:
            model.eval()
            with torch.random.fork_rng(devices=fork), torch.enable_grad():
                value = on_checkpoint(step, model)
            if value is not None:
                result.measurements[step] = value
        model.train()
        if saver is not None:
            saver.save(step, model, opt, gen, history, has_accuracy, result)

    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(mix_seed(seed, "torch"))  # dropout and other in-model randomness
        if restored is not None:
            torch.set_rng_state(restored["torch_rng"])
            if dev.type == "cuda":
                torch.cuda.set_rng_state(restored["cuda_rng"], dev)
        model.train()
        bar = progress_bar(steps - first + 1, desc=f"train {task.name}", unit="step", enabled=progress)
        try:
            if restored is None:
                checkpoint(0)
            for step in range(first, steps + 1):
                x, y = task.batch(batch_size, gen, dev)
                out = _forward(model, x, task) if step == 1 else model(x)
                loss = task.loss(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                with torch.no_grad():
                    history[step - 1, 0] = loss.detach()
                    c = task.correct(out.detach(), y)
                    if c is None:
                        has_accuracy = False
                    else:
                        history[step - 1, 1] = c[0].float() / c[1]
                if step in eval_steps or step % 50 == 0:
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise ErfError(f"training diverged at step {step} (loss {value}); lower lr (now {lr}) "
                                       "or set grad_clip")
                    if progress:
                        bar.set_postfix(loss=f"{value:.4f}")
                bar.update(1)
                checkpoint(step)
        finally:
            bar.close()
            model.eval()

    hist = history.cpu()
    result.train_loss = hist[:, 0].tolist()
    result.train_accuracy = hist[:, 1].tolist() if has_accuracy else [None] * steps
    if checkpoint_dir is not None:
        result.final_checkpoint = save_state_dict(model, os.path.join(checkpoint_dir, "final.pt"))
    result.seconds = time.perf_counter() - start
    return result
