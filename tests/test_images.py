"""Real images as probe inputs (erf.engine.images): folders, globs, arrays, sampling, preprocessing.

Every image is generated here with Pillow; no file is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from erf import measure
from erf.cli import main
from erf.engine import MeasureOptions
from erf.engine.images import (IMAGENET_MEAN, IMAGENET_STD, SKIP_NOTE, ImageSource, Preprocessing, find_images,
                               fit_image, generate_images, preprocessing_for)
from erf.engine.inputs import make_source
from erf.errors import ErfError
from erf.experiment import load_config
from erf.experiment.runfolder import resume_command

CPU = torch.device("cpu")
PLAIN = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _save(path, value, size=(12, 16)):
    """An RGB image of one colour ``value`` (0..255 per channel), ``size`` = (H, W)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)
    return path


def _classes(root, counts):
    """An ImageFolder: class k's images have red = 10 * k + 1 and green = their index in the class."""
    for k, n in enumerate(counts):
        for i in range(n):
            _save(root / f"class{k}" / f"img{i:02d}.png", (10 * k + 1, i, 0))
    return root


def _ids(x):
    """(class, index) of each image of a batch made by ``_classes`` with PLAIN preprocessing."""
    red, green = (x[:, 0].mean((1, 2)) * 255).round().long(), (x[:, 1].mean((1, 2)) * 255).round().long()
    return [((int(r) - 1) // 10, int(g)) for r, g in zip(red, green)]


def _source(path, size=8, pre=PLAIN, channels=3):
    return ImageSource(find_images(path), (channels, size, size), pre, CPU, torch.float32)


def test_flat_folder_and_class_subfolders_are_found(tmp_path):
    flat = tmp_path / "flat"
    for i in range(5):
        _save(flat / f"{i}.png", (i, 0, 0))
    (flat / "notes.txt").write_text("not an image")
    s = find_images(flat)
    assert len(s) == 5 and s.classes == ["."]
    tree = _classes(tmp_path / "tree", [3, 4, 2])
    _save(tree / "class1" / "deeper" / "x.png", (11, 9, 0))  # recursive: counted in its first-level class
    s = find_images(tree)
    assert s.classes == ["class0", "class1", "class2"] and len(s) == 10
    assert sorted(s.labels) == [0] * 3 + [1] * 5 + [2] * 2


def test_glob_takes_the_parent_folder_as_the_class(tmp_path):
    _classes(tmp_path / "val", [2, 3])
    s = find_images(str(tmp_path / "val" / "*" / "*.png"))
    assert len(s) == 5 and len(s.classes) == 2
    assert len(find_images(str(tmp_path / "val" / "class1" / "img0[01].png"))) == 2


def test_npy_and_npz_arrays_in_both_layouts(tmp_path):
    nhwc = np.zeros((4, 10, 10, 3), dtype=np.uint8)
    nhwc[..., 0] = np.arange(4)[:, None, None] * 50
    np.save(tmp_path / "a.npy", nhwc)
    nchw = nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    np.savez(tmp_path / "b.npz", x=nchw)
    xs = []
    for name in ("a.npy", "b.npz"):
        src = _source(tmp_path / name, size=10)
        x = src(0, 0, 0, 4)
        assert x.shape == (4, 3, 10, 10)
        xs.append(x)
        assert sorted((x[:, 0, 0, 0] * 255).round().tolist()) == [0, 50, 100, 150]
    torch.testing.assert_close(xs[0], xs[1])  # uint8 / 255 == the same floats
    np.save(tmp_path / "bad.npy", np.zeros((4, 10)))
    with pytest.raises(ErfError, match="N, C, H, W"):
        find_images(tmp_path / "bad.npy")


def test_seeded_class_balanced_sampling_not_file_order(tmp_path):
    root = _classes(tmp_path / "tree", [8, 8, 8])
    first = _ids(_source(root)(7, 0, 0, 24))
    again = _ids(_source(root)(7, 0, 0, 24))  # a new source (another process) with the same seed
    assert first == again
    assert sorted(first) == sorted((k, i) for k in range(3) for i in range(8))  # every image once
    for r in range(8):  # every round of 3 samples holds one image of each class
        assert sorted(k for k, _ in first[3 * r:3 * r + 3]) == [0, 1, 2]
    files = [(k, i) for k in range(3) for i in range(8)]
    assert first != files and [i for k, i in first if k == 0] != list(range(8))  # not file order
    assert _ids(_source(root)(8, 0, 0, 24)) != first  # another seed, other images
    # every weight draw sees the same images
    assert _ids(_source(root)(7, 3, 0, 24)) == first


def test_ranks_and_resumes_see_the_same_samples_with_corrupt_files(tmp_path):
    root = _classes(tmp_path / "tree", [6, 6])
    for k in (0, 1):
        (root / f"class{k}" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    whole = _source(root)(3, 0, 0, 12)
    parts = [_source(root)(3, 0, lo, 4) for lo in (0, 4, 8)]  # three ranks / a resume from sample 4 or 8
    torch.testing.assert_close(torch.cat(parts), whole)
    assert _source(root)(3, 0, 12, 4) is None  # 12 readable images: sample 12 does not exist
    short = _source(root)(3, 0, 10, 4)
    assert short.shape[0] == 2  # the images ran out inside the batch


def test_corrupt_files_are_skipped_and_counted_in_the_notes(tmp_path):
    root = tmp_path / "imgs"
    for i in range(4):
        _save(root / f"{i}.png", (i, 0, 0))
    (root / "x.jpg").write_bytes(b"garbage")
    (root / "y.png").write_bytes(b"")
    notes: list[str] = []
    src = make_source(str(root), (3, 8, 8), CPU, torch.float32, None, notes=notes)
    assert src(0, 0, 0, 10).shape[0] == 4
    skip = [n for n in notes if n.startswith(SKIP_NOTE)]
    assert len(skip) == 1 and skip[0].startswith(f"{SKIP_NOTE} 2 of 6 read")
    src(0, 0, 0, 10)  # reading again keeps one note with the same count
    assert [n for n in notes if n.startswith(SKIP_NOTE)] == skip
    assert any("6 image files from" in n for n in notes)


def test_a_folder_without_readable_images_is_refused_before_any_work(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ErfError, match="no image files"):
        MeasureOptions(inputs=str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"nope")
    with pytest.raises(ErfError, match="no readable image"):
        MeasureOptions(inputs=str(broken))
    with pytest.raises(ErfError, match="no such file or folder"):
        MeasureOptions(inputs=str(tmp_path / "missing"))
    assert main(["measure", "small_cnn", "--input", "32", "--inputs", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no readable image" in err


def test_resize_shorter_side_then_centre_crop():
    img = torch.arange(80, dtype=torch.float32).repeat(3, 40, 1) / 80  # 40 x 80, value = column / 80
    out = fit_image(img, (20, 20))
    assert out.shape == (3, 20, 20)
    # shorter side 40 -> 20 (width 80 -> 40); the middle 20 of the 40 columns: original columns 20..59
    assert abs(float(out[0, 0, 0]) - 20.5 / 80) < 0.02 and abs(float(out[0, 0, -1]) - 59.5 / 80) < 0.02
    assert torch.allclose(out[0, 0], out[0, -1])  # rows untouched
    big = fit_image(img, (20, 20), crop_pct=0.5)  # resize to 40 then crop the central half
    assert abs(float(big[0, 0, 0]) - 30.5 / 80) < 0.02


def test_normalisation_model_then_given_then_imagenet(tmp_path):
    root = tmp_path / "one"
    _save(root / "a.png", (255, 0, 51))
    pixel = torch.tensor([1.0, 0.0, 0.2])

    class Timmish(nn.Module):
        pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.5, 1.0), "crop_pct": 0.875}

    for model, mean, std, want_mean, want_std, word in (
            (Timmish(), None, None, (0.5,) * 3, (0.25, 0.5, 1.0), "pretrained_cfg"),
            (Timmish(), (0.1, 0.2, 0.3), (2.0,), (0.1, 0.2, 0.3), (2.0,) * 3, "given"),
            (nn.Identity(), None, None, IMAGENET_MEAN, IMAGENET_STD, "ImageNet")):
        notes: list[str] = []
        x = make_source(str(root), (3, 6, 6), CPU, torch.float64, None, model=model, mean=mean, std=std,
                        notes=notes)(0, 0, 0, 1)
        want = (pixel - torch.tensor(want_mean)) / torch.tensor(want_std)
        torch.testing.assert_close(x[0, :, 3, 3], want.double(), atol=2e-3, rtol=0)
        assert any(word in n for n in notes)
    pre, _ = preprocessing_for(Timmish(), 1)  # a grey model: the luma of the RGB statistics
    assert len(pre.mean) == 1 and pre.crop_pct == 0.875
    with pytest.raises(ErfError, match="2 values"):
        preprocessing_for(None, 3, mean=(0.1, 0.2))
    with pytest.raises(ErfError, match="std must be positive"):
        MeasureOptions(std=(0.0,))


def test_measure_on_an_image_folder_end_to_end(tmp_path):
    root = _classes(tmp_path / "tree", [3, 3])
    (root / "class0" / "bad.png").write_bytes(b"bad")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    res = measure(model, 16, inputs=str(root), samples=8, batch_size=4, dtype="float64")
    assert res.samples == 6  # 6 readable images: the run stops there and says so
    assert any("ran out after 6" in n for n in res.notes)
    again = measure(model, 16, inputs=str(root), samples=8, batch_size=3, dtype="float64")
    np.testing.assert_allclose(res.map, again.map, rtol=1e-12)  # the batch size does not change the images


def test_mean_and_std_flags(tmp_path, capsys):
    from erf.cli import build_parser
    from erf.cli.measure import options_from_args

    args = build_parser(["measure"]).parse_args(["measure", "small_cnn", "--mean", "0.5,0.4,0.3", "--std", "0.2"])
    opts = options_from_args(args)
    assert opts.mean == (0.5, 0.4, 0.3) and opts.std == (0.2,)
    with pytest.raises(SystemExit) as exc:
        main(["measure", "small_cnn", "--mean", "0.5,x"])
    assert exc.value.code == 2 and "--mean takes numbers separated by commas" in capsys.readouterr().err


@pytest.mark.interop  # the config's --quick networks come from timm and torchvision
def test_erf_run_inputs_points_every_point_at_the_images(tmp_path, capsys):
    folder = generate_images(6, 32, seed=1, folder=tmp_path / "imgs")
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "pretrained_cnn_vs_vit.toml", quick=True, inputs=str(folder))
    assert all(p.settings["inputs"]["kind"] == "images" and p.settings["inputs"]["path"] == str(folder)
               for p in cfg.points)  # after [quick]: the user's images win over the generated stand-ins
    assert f"--inputs {folder}" in resume_command(cfg, tmp_path / "out")
    assert main(["run", str(root / "configs" / "pretrained_cnn_vs_vit.toml"), "--quick", "--check",
                 "--inputs", str(folder)]) == 0
    assert main(["run", str(root / "configs" / "pretrained_cnn_vs_vit.toml"), "--quick", "--check",
                 "--inputs", str(tmp_path / "nothing_here")]) == 2
    assert "not found" in capsys.readouterr().err


# ---------------------------------------------------------------- hostile inputs (issue 19)


def _png_header(path, w, h):
    """A PNG whose header claims ``w`` x ``h`` grey pixels (a decompression bomb for large sizes)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * (w + 1))) + chunk(b"IEND", b""))
    return path


def test_walks_skip_links_out_loops_and_special_files(tmp_path):
    import os

    root = tmp_path / "imgs"
    _save(root / "a" / "good.png", (1, 2, 3))
    os.symlink("..", root / "a" / "up")  # a loop
    os.symlink(tmp_path, root / "out")  # a link out of the folder
    outside = _save(tmp_path / "elsewhere" / "x.png", (4, 5, 6))
    os.mkfifo(root / "a.png")  # a FIFO named like an image: never opened
    s = find_images(root)
    assert [Path(f).name for f in s.files] == ["good.png"], s.files
    assert outside.is_file()
    g = find_images(str(root / "**" / "*.png"))
    assert [Path(f).name for f in g.files] == ["good.png"]


def test_system_trees_are_refused_at_once():
    with pytest.raises(ErfError, match="under /proc, a system folder"):
        find_images("/proc/**/*.png")
    with pytest.raises(ErfError, match="under /proc"):
        find_images("/proc/self")


def test_non_finite_and_empty_arrays_are_refused_before_measuring(tmp_path, capsys):
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((4, 3, 8, 8), np.nan, dtype=np.float32))
    inf = tmp_path / "inf.npz"
    x = np.zeros((4, 3, 8, 8), dtype=np.float64)
    x[2, 1, 3, 3] = np.inf
    np.savez(inf, x=x)
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((4, 3, 0, 16), dtype=np.float32))
    for path, needle in ((nan, "768 values are NaN or infinite"), (inf, "1 values are NaN or infinite"),
                         (empty, "the images are empty")):
        assert main(["measure", "plain_net", "--model-arg", "depth=2", "--input", "8", "--samples", "2",
                     "--inputs", str(path)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_huge_images_and_bombs_are_one_line_without_pillow_warnings(tmp_path, capsys):
    import warnings

    _png_header(tmp_path / "bomb" / "bomb.png", 40000, 40000)
    _png_header(tmp_path / "big" / "big.png", 10000, 10000)
    for folder, needle in (("bomb", "decompression bomb"), ("big", "10000x10000 pixels")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a Pillow warning would fail here
            assert main(["measure", "plain_net", "--model-arg", "depth=2", "--input", "8", "--samples", "2",
                         "--inputs", str(tmp_path / folder)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err and "Warning" not in err, err
    # beside a good image they are skipped and counted
    _save(tmp_path / "big" / "good.png", (9, 9, 9))
    src = _source(tmp_path / "big")
    assert src(0, 0, 0, 2).shape[0] == 1 and "1 of 2" in src.skip_note()


def test_generated_images_are_limited_and_their_folder_removed_at_exit(tmp_path):
    import subprocess
    import sys

    from erf.engine.images import generate_images

    with pytest.raises(ErfError, match="count must be an integer from 1 to"):
        generate_images(10**9, 8)
    code = ("from erf.engine.images import generate_images; import os; d = generate_images(3, 8, seed=1); "
            "print(d); assert len([f for _, _, fs in os.walk(d) for f in fs]) == 3")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not Path(done.stdout.strip()).exists()


def test_training_image_folders_skip_special_files_and_refuse_bombs(tmp_path):
    import os
    import warnings

    from erf.training import load_images

    root = tmp_path / "train"
    _save(root / "a" / "x.png", (1, 2, 3))
    os.mkfifo(root / "a" / "f.png")  # never opened
    os.symlink("..", root / "a" / "loop")  # not followed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuple(load_images(str(root), 8, channels=3).shape) == (1, 3, 8, 8)
        _png_header(root / "a" / "bomb.png", 40000, 40000)
        with pytest.raises(ErfError, match="bomb"):
            load_images(str(root), 8, channels=3)
