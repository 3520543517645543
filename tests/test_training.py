"""Tests for erf.training: generated tasks, local images, the training loop."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from erf.errors import ErfError  # noqa: E402
from erf.models import create_model, load_checkpoint  # noqa: E402
from erf.training import (DenseHead, checkpoint_steps, evaluate, list_tasks, load_dataset,  # noqa: E402
                          load_images, make_generator, make_task, train)

GENERATED = ["context", "quadrant", "segmentation", "shift"]


@pytest.fixture(autouse=True)
def one_thread():
    """Train on one CPU thread: these tiny nets gain little from two, and on a busy machine
    OpenMP threads waiting on each other made a 10 s test take minutes (measured 84 s vs 23 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small_rf_net(width: int = 8, classes: int = 4) -> nn.Module:
    """Receptive field 3x3: one 3x3 conv, one 1x1 conv, global average pooling, linear."""
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- generated tasks


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("channels", [1, 3])
def test_batch_shapes_and_dtypes(name, channels):
    task = make_task(name, size=(32, 24), channels=channels, seed=0)
    x, y = task.batch(10, make_generator(0))
    assert x.shape == (10, channels, 32, 24) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    if task.dense:
        assert task.num_classes is None and task.kind == "dense"
        assert y.shape == (10, 1, 32, 24) and y.dtype == torch.float32
    else:
        assert task.kind == "classification" and task.num_classes == 4
        assert y.shape == (10,) and y.dtype == torch.int64
        assert 0 <= int(y.min()) and int(y.max()) < task.num_classes
    assert task.description.startswith(name + ":") and "\n" not in task.description


@pytest.mark.parametrize("name", GENERATED)
def test_batches_are_deterministic_per_seed(name):
    task = make_task(name, size=32, seed=0)
    x1, y1 = task.batch(8, make_generator(3))
    x2, y2 = task.batch(8, make_generator(3))
    x3, _ = task.batch(8, make_generator(4))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    g = make_generator(3)
    first, second = task.batch(8, g)[0], task.batch(8, g)[0]
    assert not torch.equal(first, second)  # the stream moves on
    torch.manual_seed(5)
    a = task.batch(4, None)[0]
    torch.manual_seed(5)
    assert torch.equal(a, task.batch(4, None)[0])  # None: seeded from torch's global RNG


def test_eval_set_is_fixed_by_task_seed_and_differs_from_training_batches():
    a = make_task("context", 32, seed=1).eval_set(40)
    b = make_task("context", 32, seed=1).eval_set(40)
    c = make_task("context", 32, seed=2).eval_set(40)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    for seed in (0, 1, 2):
        assert not torch.equal(a[0], make_task("context", 32, seed=1).batch(40, make_generator(seed))[0])


@pytest.mark.parametrize("name", ["context", "quadrant"])
def test_labels_are_balanced(name):
    task = make_task(name, 32, seed=0)
    _, y = task.batch(402, make_generator(0))
    counts = torch.bincount(y, minlength=4)
    assert int(counts.min()) >= 100 and int(counts.max()) <= 101
    _, y2 = task.batch(402, make_generator(1))
    assert not torch.equal(y, y2)  # shuffled, not a fixed pattern


def test_context_bar_dots_are_spacing_apart():
    task = make_task("context", 64, seed=0, noise=0.0, distractors=0, dots=2, spacing=20, orientations=2)
    x, y = task.batch(64, make_generator(0))
    for img, label in zip(x[:, 0], y):
        flat = img.flatten()
        first = int(flat.argmax())
        # suppress the first dot (it may wrap around the edge) and find the second
        yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
        dy = (yy - first // 64 + 32) % 64 - 32
        dx = (xx - first % 64 + 32) % 64 - 32
        second = int(torch.where(dy ** 2 + dx ** 2 > 36, img, torch.zeros_like(img)).flatten().argmax())
        ddy = abs((second // 64 - first // 64 + 32) % 64 - 32)
        ddx = abs((second % 64 - first % 64 + 32) % 64 - 32)
        if label == 0:  # horizontal
            assert ddy <= 2 and 17 <= ddx <= 23
        else:  # vertical
            assert ddx <= 2 and 17 <= ddy <= 23


def test_quadrant_label_is_where_the_bright_blob_is():
    task = make_task("quadrant", 32, seed=0, noise=0.0, distractors=2)
    x, y = task.batch(64, make_generator(0))
    flat = x[:, 0].flatten(1).argmax(1)
    row, col = flat // 32, flat % 32
    assert torch.equal((row >= 16).long() * 2 + (col >= 16).long(), y)


def test_segmentation_target_is_the_radius_disk_around_dots():
    task = make_task("segmentation", 32, seed=0, noise=0.0, blobs=1, radius=5)
    x, y = task.batch(16, make_generator(0))
    for img, target in zip(x[:, 0], y[:, 0]):
        peak = int(img.flatten().argmax())
        r, c = peak // 32, peak % 32
        yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
        d2 = (yy - r) ** 2 + (xx - c) ** 2
        assert bool((target[d2 <= 9] == 1).all())  # well inside the disk (centre within a pixel)
        assert bool((target[d2 >= 49] == 0).all())  # well outside it
    assert 0.05 < float(make_task("segmentation", 32).batch(64, make_generator(1))[1].mean()) < 0.4


def test_shift_target_is_the_shifted_input():
    task = make_task("shift", 32, channels=3, offset=(2, -3))
    x, y = task.batch(4, make_generator(0))
    assert torch.equal(y[:, 0, :30, 3:], x[:, 0, 2:, :29])
    assert float(y[:, :, 30:].abs().max()) == 0 and float(y[:, :, :, :3].abs().max()) == 0


def test_make_task_errors():
    with pytest.raises(ErfError) as info:
        make_task("cifar", 32)
    msg = str(info.value)
    assert "'cifar'" in msg and all(n in msg for n in list_tasks()) and "\n" not in msg
    with pytest.raises(ErfError, match="does not accept parameter 'radius'.*accepted: orientations"):
        make_task("context", 32, radius=3)
    with pytest.raises(ErfError, match="channels must be 1"):
        make_task("context", 32, channels=2)
    with pytest.raises(ErfError, match="image size"):
        make_task("context", 4)
    with pytest.raises(ErfError, match="spacing must be a number > 0"):
        make_task("context", 32, spacing=0)
    with pytest.raises(ErfError, match="needs path="):
        make_task("images", 32)


# --------------------------------------------------------------------------- the context task needs context


@pytest.mark.slow
def test_context_task_needs_a_large_receptive_field():
    """A 3x3-RF net with global pooling stays at chance; small_cnn (RF 17) learns the task."""
    task = make_task("context", 32, channels=1, seed=0)
    accuracy = {}
    for name, build in [("rf3", _small_rf_net),
                        ("small_cnn", lambda: create_model("small_cnn", num_classes=4, width=0.5, in_channels=1))]:
        torch.manual_seed(0)
        result = train(build(), task, steps=300, batch_size=64, lr=2e-3, device="cpu", seed=0, eval_size=1024)
        accuracy[name] = result.final_eval["accuracy"]
    assert accuracy["rf3"] < 0.33, accuracy  # chance is 0.25 (std 0.014 over 1024 images)
    assert accuracy["small_cnn"] > 0.75, accuracy
    assert accuracy["small_cnn"] - accuracy["rf3"] > 0.4, accuracy


# --------------------------------------------------------------------------- the training loop


def test_checkpoint_steps():
    assert checkpoint_steps(None, 10) == [0, 10]
    assert checkpoint_steps(4, 10) == [0, 4, 8, 10]
    assert checkpoint_steps([3, 1, 3], 10) == [0, 1, 3, 10]
    for bad in (0, [11], "x", True):
        with pytest.raises(ErfError):
            checkpoint_steps(bad, 10)


def test_training_is_deterministic_and_writes_loadable_checkpoints(tmp_path):
    task = make_task("quadrant", 16, channels=3, seed=0)
    seen = []

    def on_checkpoint(step, model):
        seen.append((step, model.training, torch.is_grad_enabled()))
        return step * 10

    runs = []
    for run in range(2):
        torch.manual_seed(0)
        model = create_model("small_cnn", num_classes=4, width=0.25, in_channels=3)
        folder = tmp_path / f"run{run}"
        result = train(model, task, steps=10, batch_size=8, lr=1e-3, device="cpu", seed=7, checkpoint_every=4,
                       checkpoint_dir=str(folder), on_checkpoint=on_checkpoint if run == 0 else None,
                       eval_size=16)
        runs.append((model, result, folder))
    (m0, r0, f0), (m1, r1, f1) = runs
    assert _same_weights(m0, m1)
    assert r0.train_loss == r1.train_loss and r0.eval == r1.eval
    assert not m0.training  # eval mode after training

    assert seen == [(0, False, True), (4, False, True), (8, False, True), (10, False, True)]
    assert r0.measurements == {0: 0, 4: 40, 8: 80, 10: 100}
    assert [e["step"] for e in r0.eval] == [0, 4, 8, 10]
    assert len(r0.train_loss) == 10 and all(0 <= a <= 1 for a in r0.train_accuracy)

    names = sorted(os.listdir(f0))
    assert names == ["final.pt", "step_00000.pt", "step_00004.pt", "step_00008.pt", "step_00010.pt"]
    assert r0.checkpoints == {s: str(f0 / f"step_{s:05d}.pt") for s in (0, 4, 8, 10)}
    assert r0.final_checkpoint == str(f0 / "final.pt")
    fresh = create_model("small_cnn", num_classes=4, width=0.25, in_channels=3)
    assert _same_weights(load_checkpoint(fresh, str(f0 / "final.pt")), m0)
    start = load_checkpoint(create_model("small_cnn", num_classes=4, width=0.25, in_channels=3),
                            str(f0 / "step_00000.pt"))
    assert not _same_weights(start, m0)  # step 0 holds the initial weights
    assert r0.to_dict()["checkpoints"]["4"].endswith("step_00004.pt")


def test_train_mode_while_training_and_eval_mode_for_scoring():
    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.modes = _small_rf_net(), []

        def forward(self, x):
            self.modes.append((self.training, torch.is_grad_enabled()))
            return self.net(x)

    model = Recorder()
    train(model, make_task("context", 16), steps=3, batch_size=4, device="cpu", eval_size=4)
    # eval at step 0, three training steps, eval at step 3
    assert model.modes == [(False, False), (True, True), (True, True), (True, True), (False, False)]
    assert not model.training


def test_different_seed_gives_different_weights():
    task = make_task("context", 16, seed=0)
    weights = []
    for seed in (0, 1):
        torch.manual_seed(0)
        model = _small_rf_net()
        train(model, task, steps=3, batch_size=8, device="cpu", seed=seed, eval_size=8)
        weights.append(model)
    assert not _same_weights(*weights)


def test_training_reduces_the_dense_loss_with_plain_net(tmp_path):
    task = make_task("segmentation", 24, channels=1, seed=0, radius=2)
    torch.manual_seed(0)
    model = create_model("plain_net", depth=4, width=8, activation="relu", last_activation=False)
    result = train(model, task, steps=80, batch_size=16, lr=3e-3, device="cpu", seed=0, eval_size=64,
                   checkpoint_dir=str(tmp_path))
    first, last = result.eval[0], result.final_eval
    assert last["loss"] < 0.6 * first["loss"], result.eval
    assert last["accuracy"] > 0.85
    # channel 0 is the prediction: the checkpoint loads straight into the same builder
    loaded = load_checkpoint(create_model("plain_net", depth=4, width=8, activation="relu", last_activation=False),
                             result.final_checkpoint)
    assert _same_weights(loaded, model)
    x, y = task.eval_set(64)
    assert evaluate(loaded, task, x, y)["loss"] == pytest.approx(last["loss"], rel=1e-5)


def test_dense_head_wrapper_keeps_body_names(tmp_path):
    task = make_task("shift", 16, offset=(0, 1))
    torch.manual_seed(0)
    model = DenseHead(create_model("plain_net", depth=2, width=4))
    assert "body.layers.1.conv" in dict(model.named_modules()) and isinstance(model.head, nn.Conv2d)
    result = train(model, task, steps=30, batch_size=8, lr=1e-2, device="cpu", eval_size=32,
                   checkpoint_dir=str(tmp_path))
    assert result.final_eval["accuracy"] is None and result.train_accuracy[0] is None
    assert result.final_eval["loss"] < 0.7 * result.eval[0]["loss"]
    state = torch.load(result.final_checkpoint, weights_only=True)
    assert {k.split(".")[0] for k in state} == {"body", "head"}
    load_checkpoint(DenseHead(create_model("plain_net", depth=2, width=4)), result.final_checkpoint)


def test_classification_task_on_a_spatial_output_uses_pooled_channels():
    task = make_task("quadrant", 16, seed=0)
    model = create_model("plain_net", depth=2, width=6, activation="relu")
    result = train(model, task, steps=2, batch_size=4, device="cpu", eval_size=8)
    assert result.final_eval["accuracy"] is not None


def test_train_errors(tmp_path):
    task = make_task("context", 16)
    with pytest.raises(ErfError, match="in_channels"):
        train(create_model("small_cnn", num_classes=4, in_channels=3), task, steps=1, device="cpu")
    with pytest.raises(ErfError, match="4 classes.*num_classes=4"):
        train(create_model("small_cnn", num_classes=2, width=0.25, in_channels=1), task, steps=1, device="cpu")
    with pytest.raises(ErfError, match="dense"):
        train(_small_rf_net(), make_task("segmentation", 16), steps=1, device="cpu")
    with pytest.raises(ErfError, match="steps must be"):
        train(_small_rf_net(), task, steps=-1)
    with pytest.raises(ErfError, match="unknown optimizer"):
        train(_small_rf_net(), task, steps=1, device="cpu", optimizer="lbfgs")
    with pytest.raises(ErfError, match="make_task"):
        train(_small_rf_net(), "context", steps=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ErfError, match="is a file"):
        train(_small_rf_net(), task, steps=1, device="cpu", checkpoint_dir=str(tmp_path / "file"))
    if not torch.cuda.is_available():
        with pytest.raises(ErfError, match="no CUDA device is available"):
            train(_small_rf_net(), task, steps=1, device="cuda")


def test_sgd_and_diverging_runs():
    task = make_task("context", 16)
    torch.manual_seed(0)
    result = train(_small_rf_net(), task, steps=3, batch_size=4, lr=1e-2, device="cpu", optimizer="sgd",
                   eval_size=8)
    assert len(result.train_loss) == 3 and result.config["optimizer"] == "sgd"
    with pytest.raises(ErfError, match="diverged.*lower lr"):
        train(create_model("plain_net", depth=6, width=16), make_task("shift", 16), steps=50, batch_size=4,
              lr=1e6, device="cpu", optimizer="sgd", eval_size=4)


# --------------------------------------------------------------------------- local images


def _write_folder(root, sizes=((20, 30), (40, 16), (24, 24))):
    rng = np.random.default_rng(0)
    for cls, offset in (("cats", 0.0), ("dogs", 0.5)):
        (root / cls).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            mpimg.imsave(root / cls / f"{i}.png", rng.random((h, w, 3)) * 0.5 + offset)
    return root


def test_load_folder(tmp_path):
    root = _write_folder(tmp_path / "data")
    (root / "notes.txt").write_text("ignored")
    data = load_dataset(root, size=16, seed=0)
    assert data.x.shape == (6, 3, 16, 16) and data.x.dtype == torch.float32
    assert data.classes == ["cats", "dogs"] and sorted(data.y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(data.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(data.x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    for src, label in zip(data.sources, data.y.tolist()):  # the labels follow the subfolders
        assert os.path.basename(os.path.dirname(src)) == data.classes[label]
    # dogs are brighter than cats before normalisation, and stay so after
    assert float(data.x[data.y == 1].mean()) > float(data.x[data.y == 0].mean()) + 1

    grey = load_images(root, size=(8, 12), count=4, seed=1, channels=1)
    assert grey.shape == (4, 1, 8, 12)
    same = load_images(root, size=(8, 12), count=4, seed=1, channels=1)
    other = load_images(root, size=(8, 12), count=4, seed=2, channels=1)
    assert torch.equal(grey, same) and not torch.equal(grey, other)


def test_load_folder_of_unlabelled_jpeg_and_grey_images(tmp_path):
    rng = np.random.default_rng(1)
    mpimg.imsave(tmp_path / "a.jpg", (rng.random((20, 20, 3)) * 255).astype(np.uint8))
    mpimg.imsave(tmp_path / "b.png", rng.random((20, 20)), cmap="gray")
    data = load_dataset(tmp_path, size=10, channels=3)
    assert data.x.shape == (2, 3, 10, 10) and data.y is None


def test_folder_errors(tmp_path):
    with pytest.raises(ErfError, match="image path not found"):
        load_images(tmp_path / "missing", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ErfError, match="no images"):
        load_images(tmp_path / "empty", 16)
    root = _write_folder(tmp_path / "data")
    with pytest.raises(ErfError, match="asked for 7 images.*holds only 6"):
        load_images(root, 16, count=7)
    with pytest.raises(ErfError, match="positive integer"):
        load_images(root, 16, count=0)
    (root / "cats" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ErfError, match="cannot read image .*broken.png"):
        load_images(root, 16)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ErfError, match="neither a folder"):
        load_images(tmp_path / "x.txt", 16)


def test_load_npz_layouts_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    nchw = (rng.random((5, 3, 12, 10)) * 255).astype(np.uint8)
    np.savez(tmp_path / "nchw.npz", x=nchw, y=np.array([3, 7, 3, 7, 7]))
    np.savez(tmp_path / "nhwc.npz", x=nchw.transpose(0, 2, 3, 1))
    np.savez(tmp_path / "grey.npz", x=rng.random((5, 12, 10)).astype(np.float32))
    a = load_dataset(tmp_path / "nchw.npz", size=(12, 10), seed=0)
    b = load_dataset(tmp_path / "nhwc.npz", size=(12, 10), seed=0)
    assert torch.equal(a.x, b.x) and a.x.shape == (5, 3, 12, 10)
    assert a.classes == ["3", "7"] and a.y.tolist() == [0, 1, 0, 1, 1] and b.y is None
    raw = torch.from_numpy(nchw.astype(np.float32) / 255)
    expected = (raw - raw.mean(dim=(0, 2, 3), keepdim=True)) / raw.std(dim=(0, 2, 3), unbiased=False, keepdim=True)
    assert torch.allclose(a.x, expected, atol=1e-5)
    picked = load_dataset(tmp_path / "nchw.npz", size=6, count=3, seed=4)
    assert picked.x.shape == (3, 3, 6, 6) and len(picked.sources) == 3
    assert load_images(tmp_path / "grey.npz", size=8, channels=3).shape == (5, 3, 8, 8)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "keys.npz", images=np.zeros((2, 8, 8)))
    with pytest.raises(ErfError, match="no 'x' array \\(keys: images\\).*numpy.savez"):
        load_images(tmp_path / "keys.npz", 8)
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 8)))
    with pytest.raises(ErfError, match="got shape \\(2, 8\\)"):
        load_images(tmp_path / "shape.npz", 8)
    np.savez(tmp_path / "chan.npz", x=np.zeros((2, 5, 8, 7)))
    with pytest.raises(ErfError, match="1, 3 or 4 channels"):
        load_images(tmp_path / "chan.npz", 8)
    np.savez(tmp_path / "y.npz", x=np.zeros((3, 8, 8)), y=np.array([0, 1]))
    with pytest.raises(ErfError, match="one label per image \\(3\\)"):
        load_images(tmp_path / "y.npz", 8)
    np.savez(tmp_path / "yf.npz", x=np.zeros((2, 8, 8)), y=np.array([0.5, 1.0]))
    with pytest.raises(ErfError, match="integer"):
        load_images(tmp_path / "yf.npz", 8)
    np.savez(tmp_path / "nan.npz", x=np.full((2, 8, 8), np.nan))
    with pytest.raises(ErfError, match="NaN"):
        load_images(tmp_path / "nan.npz", 8)
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ErfError, match="cannot read .*bad.npz"):
        load_images(tmp_path / "bad.npz", 8)


def test_images_task_trains_on_a_folder(tmp_path):
    root = _write_folder(tmp_path / "data", sizes=[(16, 16)] * 5)
    task = make_task(str(root), size=16, channels=3, seed=0)
    assert task.name == "images" and task.num_classes == 2 and len(task.eval_idx) == 2
    assert set(task.train_idx.tolist()).isdisjoint(task.eval_idx.tolist())
    x, y = task.batch(6, make_generator(0))
    assert x.shape == (6, 3, 16, 16) and set(y.tolist()) <= {0, 1}
    torch.manual_seed(0)
    result = train(create_model("small_cnn", num_classes=2, width=0.25, in_channels=3), task, steps=2,
                   batch_size=4, device="cpu")
    assert len(result.final_eval) == 3 and result.final_eval["step"] == 2
    single = tmp_path / "single"
    (single / "only").mkdir(parents=True)
    mpimg.imsave(single / "only" / "a.png", np.zeros((8, 8, 3)))
    mpimg.imsave(single / "only" / "b.png", np.ones((8, 8, 3)))
    with pytest.raises(ErfError, match="no labels"):
        make_task("images", 8, channels=3, path=str(single))


@pytest.mark.parametrize("optimizer,model_name", [("adamw", "small_cnn"), ("sgd", "vit")])
def test_killed_training_resumes_from_its_state_file_exactly(tmp_path, optimizer, model_name):
    """Weights, optimizer moments, data stream, dropout-free RNG and histories all carry over."""
    task = make_task("quadrant", 16, channels=3, seed=0)
    args = dict(num_classes=4, width=0.25, in_channels=3) if model_name == "small_cnn" else \
        dict(num_classes=4, img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    kw = dict(steps=12, batch_size=8, lr=1e-3, device="cpu", seed=7, checkpoint_every=4, eval_size=16,
              optimizer=optimizer)

    def fresh():
        torch.manual_seed(0)
        return create_model(model_name, **args)

    whole = fresh()
    ref = train(whole, task, **kw)
    state = tmp_path / "train.state"

    def killed_at_8(step, model):
        if step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(fresh(), task, state_file=str(state), on_checkpoint=killed_at_8, **kw)
    assert state.is_file()  # saved after step 4
    called = []
    resumed = fresh()
    res = train(resumed, task, state_file=str(state), on_checkpoint=lambda s, m: called.append(s), **kw)
    assert called == [8, 12]  # steps 0 and 4 were done before the kill
    assert _same_weights(resumed, whole)
    assert res.train_loss == ref.train_loss and res.eval == ref.eval
    # another configuration ignores the save
    other = train(fresh(), task, state_file=str(state), **{**kw, "lr": 2e-3})
    assert other.train_loss[:4] != ref.train_loss[:4]
