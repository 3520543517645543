"""Checkpoint files: safetensors beside torch.save files, and every refusal in one line.

Refusals: pickles that would run code (naming the global, never advising ``weights_only=False``),
FIFOs, devices, folders, empty names, non-string keys, zip members that fail their CRC, corrupt
safetensors headers, and a garbage ``.pt2`` (one line, none of torch's log).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pickle
import struct
import zipfile

import pytest
import torch
import torch.nn as nn

from erf.cli import main
from erf.errors import ModelError
from erf.models import create_model, load_checkpoint, load_model, read_state_dict, save_safetensors
from erf.models.files import pickle_globals
from erf.models.safetensors_format import read_safetensors


def _net(seed: int, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet18", width=0.125, num_classes=3, **kw)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _one_line_error(fn, *needles: str) -> str:
    with pytest.raises(ModelError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and "weights_only" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# --------------------------------------------------------------------------- safetensors


@pytest.mark.parametrize("name", ["w.safetensors", "w.pth"])  # recognised by content, whatever the name
def test_safetensors_round_trip(tmp_path, name):
    src, dst = _net(0), _net(1)
    assert not _same(src, dst)
    path = tmp_path / name
    save_safetensors(src.state_dict(), str(path), metadata={"format": "pt"})
    assert load_checkpoint(dst, str(path)) is dst
    assert _same(src, dst)
    model = load_model("resnet18", {"width": 0.125, "num_classes": 3}, checkpoint=str(path), seed=5)
    assert _same(src, model)


def _write_raw(path, header: dict, data: bytes, pad: int = 0) -> None:
    """A safetensors file laid out by hand, byte by byte, as the format's specification says."""
    text = json.dumps(header).encode() + b" " * pad
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_safetensors_read_by_the_specification(tmp_path):
    """A file built from the spec (not by our writer): every dtype comes back bit for bit."""
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
    b = torch.tensor([1.5, -2.25], dtype=torch.bfloat16)
    c = torch.tensor([True, False, True])
    d = torch.tensor([-3, 2**40], dtype=torch.int64)
    blobs = [t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() for t in (a, b, c, d)]
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t, blob in zip("abcd", (a, b, c, d), blobs):
        dtype = {torch.float32: "F32", torch.bfloat16: "BF16", torch.bool: "BOOL", torch.int64: "I64"}[t.dtype]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
    header["empty"] = {"dtype": "F16", "shape": [0, 4], "data_offsets": [offset, offset]}
    path = tmp_path / "spec.safetensors"
    _write_raw(path, header, b"".join(blobs), pad=5)
    out = read_safetensors(str(path))
    assert list(out) == ["a", "b", "c", "d", "empty"]
    for name, t in zip("abcd", (a, b, c, d)):
        assert out[name].dtype == t.dtype and torch.equal(out[name], t)
    assert out["empty"].shape == (0, 4) and out["empty"].dtype == torch.float16
    assert read_state_dict(str(path))["d"][1] == 2**40


def test_safetensors_checks_as_torch_files(tmp_path):
    """Shape mismatches, missing and unexpected keys and the DDP prefix are handled as for .pt files."""
    path = tmp_path / "w.safetensors"
    save_safetensors(create_model("plain_net", depth=2, width=4).state_dict(), str(path))
    _one_line_error(lambda: load_checkpoint(create_model("plain_net", depth=2, width=3), str(path)),
                    "shape mismatch for 'layers.0.conv.weight'", "(4, 1, 3, 3)", "(3, 1, 3, 3)")
    _one_line_error(lambda: load_checkpoint(create_model("plain_net", depth=3, width=4), str(path)),
                    "missing key 'layers.2.conv.weight'")
    _one_line_error(lambda: load_checkpoint(create_model("plain_net", depth=1, width=4), str(path)),
                    "unexpected key 'layers.1.conv.weight'")
    src, dst = create_model("plain_net", depth=2, width=4), create_model("plain_net", depth=2, width=4)
    save_safetensors({f"module.{k}": v for k, v in src.state_dict().items()}, str(path))
    load_checkpoint(dst, str(path))
    assert _same(src, dst)


def _valid(tmp_path):
    path = tmp_path / "ok.safetensors"
    save_safetensors({"a": torch.ones(2, 3), "b": torch.zeros(4)}, str(path))
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, json.loads(raw[8:8 + n]), raw[8 + n:]


def _corrupt_cases(tmp_path):
    raw, header, data = _valid(tmp_path)

    def edit(**changes):
        h = json.loads(json.dumps(header))
        for key, value in changes.items():
            name, field = key.split("__")
            h[name][field] = value
        return h

    return {
        "truncated": ("bytes", raw[:-5], "outside"),
        "header_too_long": ("bytes", struct.pack("<Q", 10**9) + raw[8:], "header claims"),
        "not_json": ("bytes", struct.pack("<Q", 4) + b"{ab}" + data, "not JSON"),
        "not_object": ("raw", ([1, 2], data), "not a JSON object"),
        "unknown_dtype": ("raw", (edit(a__dtype="F31"), data), "unknown dtype"),
        "bad_shape": ("raw", (edit(a__shape=[2, -3]), data), "bad shape"),
        "out_of_range": ("raw", (edit(b__data_offsets=[24, 4000]), data), "outside"),
        "size_mismatch": ("raw", (edit(a__shape=[2, 2]), data), "needs 16 bytes"),
        "overlap": ("raw", (edit(b__data_offsets=[16, 32]), data), "expected 24"),
        "trailing_bytes": ("raw", (header, data + b"\0" * 8), "cover 40 of the 48"),
        "extra_field": ("raw", (edit(a__crc=1), data), "exactly dtype, shape and data_offsets"),
        "short": ("bytes", b"\x01\x00", "shorter than"),
    }


@pytest.mark.parametrize("case", ["truncated", "header_too_long", "not_json", "not_object", "unknown_dtype",
                                  "bad_shape", "out_of_range", "size_mismatch", "overlap", "trailing_bytes",
                                  "extra_field", "short"])
def test_corrupt_safetensors_refused_in_one_line(tmp_path, case):
    kind, content, needle = _corrupt_cases(tmp_path)[case]
    path = tmp_path / "bad.safetensors"
    if kind == "bytes":
        path.write_bytes(content)
    else:
        _write_raw(path, *content)
    model = nn.Sequential()
    model.register_buffer("a", torch.zeros(2, 3))
    model.register_buffer("b", torch.zeros(4))
    _one_line_error(lambda: load_checkpoint(model, str(path)), f"cannot read checkpoint {path}",
                    "not a valid safetensors file", needle)
    assert torch.equal(model.a, torch.zeros(2, 3))  # nothing half-loaded


def test_save_safetensors_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ModelError, match="string names"):
        save_safetensors({1: torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ModelError, match="string names"):
        save_safetensors({"a": [1, 2]}, str(tmp_path / "x.safetensors"))


def test_safetensors_as_model_spec_says_how_to_use_it(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors({"a": torch.zeros(1)}, str(path))
    _one_line_error(lambda: load_model(str(path)), "weights only", "--checkpoint")


# --------------------------------------------------------------------------- pickles that would run code


class _Opens:
    """Unpickling this would call open(marker, 'w') (the global io.open): a visible side effect if code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["zip", "legacy", "pickle_protocol_5", "pickle_protocol_0"])
def test_code_running_pickles_refused_naming_the_global(tmp_path, how):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    obj = {"weight": torch.zeros(2), "x": _Opens(marker)}
    if how == "zip":
        torch.save(obj, path)
    elif how == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as f:
            pickle.dump({"x": _Opens(marker)}, f, protocol=5 if how.endswith("5") else 0)
    _one_line_error(lambda: load_checkpoint(nn.Linear(1, 2), str(path)),
                    f"refused: {path} would run code when loaded", "io.open")
    assert not marker.exists()


def test_pickle_of_tensors_with_numpy_refused(tmp_path):
    path = tmp_path / "np.pt"
    torch.save({"w": torch.zeros(1).numpy()}, path)
    _one_line_error(lambda: load_checkpoint(nn.Linear(1, 1), str(path)), "refused", "numpy")


def test_pickle_globals_reads_without_running():
    # the module name of the second global comes back through the memo (BINGET)
    data = pickle.dumps([collections.OrderedDict, collections.Counter, _Opens("/nonexistent/x")], protocol=4)
    assert pickle_globals(data) == ["collections.OrderedDict", "collections.Counter", "io.open"]
    assert pickle_globals(pickle.dumps(_Opens("/x"), protocol=0)) == ["io.open"]
    assert pickle_globals(pickle.dumps({"a": 1, "b": [2.0]})) == []
    assert pickle_globals(b"\x00garbage") == []


# --------------------------------------------------------------------------- not a regular file, empty names


def test_fifo_device_folder_and_empty_names(tmp_path):
    model = nn.Linear(1, 1)
    fifo = tmp_path / "w.pt"
    os.mkfifo(fifo)  # opening it would block: it must be refused before any open
    _one_line_error(lambda: load_checkpoint(model, str(fifo)), f"checkpoint {fifo} is a FIFO", "regular file")
    _one_line_error(lambda: load_checkpoint(model, os.devnull), "character device")
    _one_line_error(lambda: load_checkpoint(model, str(tmp_path)), "is a folder")
    _one_line_error(lambda: load_checkpoint(model, str(tmp_path / "nope.pt")), "checkpoint file not found")
    for empty in ("", "   "):
        _one_line_error(lambda: load_checkpoint(model, empty), "name is empty")
        _one_line_error(lambda: load_model("plain_net", checkpoint=empty), "name is empty")
    _one_line_error(lambda: load_model(str(fifo)), f"model {fifo} is a FIFO")


def test_empty_checkpoint_flag_is_refused_not_ignored(capsys):
    code = main(["rf", "plain_net", "--model-arg", "depth=2", "--input", "16", "--checkpoint", ""])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "name is empty" in err, err


@pytest.mark.parametrize("key", [1, ("a", 1), None])
def test_non_string_keys_refused(tmp_path, key):
    path = tmp_path / "keys.pt"
    torch.save({key: torch.zeros(1), "b": torch.zeros(1)}, path)
    _one_line_error(lambda: load_checkpoint(nn.Linear(1, 1), str(path)), "is not a state_dict",
                    f"key {key!r} ({type(key).__name__})")


def test_empty_file(tmp_path):
    path = tmp_path / "e.pt"
    path.write_bytes(b"")
    _one_line_error(lambda: load_checkpoint(nn.Linear(1, 1), str(path)), "empty (0 bytes)")


# --------------------------------------------------------------------------- damaged zip files


def _flip(path, out, member_part: str, count: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if member_part in i.filename)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the local header's extra field pads torch's data
    for k in range(min(count, info.file_size)):
        raw[start + k] ^= 0xFF
    out.write_bytes(bytes(raw))


def test_flipped_bytes_fail_the_crc_check(tmp_path):
    src = _net(0)
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save(src.state_dict(), good)
    _flip(good, bad, "/data/0")
    loaded = torch.load(bad, weights_only=True)  # torch's own reader takes the damaged weights silently
    assert not all(torch.equal(loaded[k], v) for k, v in src.state_dict().items())
    dst = _net(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    _one_line_error(lambda: load_checkpoint(dst, str(bad)), f"cannot read checkpoint {bad}", "CRC")
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())
    load_checkpoint(dst, str(good))
    assert _same(src, dst)


def test_truncated_zip_refused(tmp_path):
    good, cut = tmp_path / "good.pt", tmp_path / "cut.pt"
    torch.save(_net(0).state_dict(), good)
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _one_line_error(lambda: load_checkpoint(_net(1), str(cut)), "corrupt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_damaged_torchscript_model_file(tmp_path):
    model = create_model("plain_net", depth=2, width=2)
    good, bad = tmp_path / "m.ts", tmp_path / "bad.ts"
    torch.jit.save(torch.jit.script(model), str(good))
    _flip(good, bad, "/data.pkl", count=8)
    _one_line_error(lambda: load_model(str(bad)), "CRC")


def test_garbage_pt2_is_one_line_without_torch_log(tmp_path, capfd):
    path = tmp_path / "garbage.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/archive_format", "pt2")
        z.writestr("archive/serialized_exported_program.json", "{not json")
    logger = logging.getLogger("torch.export")
    handlers, propagate = logger.handlers[:], logger.propagate
    _one_line_error(lambda: load_model(str(path)), f"cannot load model file {path}", "torch.export archive")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # torch.export's 13 lines of log are captured, not printed
    assert logger.handlers == handlers and logger.propagate == propagate
    code = main(["rf", str(path)])
    err = capfd.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
