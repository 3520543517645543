"""The safetensors file format, read and written without the ``safetensors`` package.

A safetensors file is an 8-byte little-endian header length N, N bytes of a JSON object
``{name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}``,
then the raw little-endian tensor bytes, the offsets counted from the end of the header. Loading
runs no code. The header is checked before any tensor is read (every dtype known, every shape a
list of non-negative ints, every tensor's bytes matching its shape, the tensors contiguous and
covering the data exactly, the file exactly that long), so a truncated or corrupt file is refused
in one line. The format carries no checksum of the tensor bytes: a flipped data byte inside a
well-formed file cannot be detected.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys

import torch

from erf.errors import ModelError

SAFETENSORS_SUFFIX = ".safetensors"

_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
    "F64": torch.float64,
}
for _name, _attr in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"), ("F8_E4M3", "float8_e4m3fn"),
                     ("F8_E5M2", "float8_e5m2"), ("C64", "complex64")):
    if hasattr(torch, _attr):
        _DTYPES[_name] = getattr(torch, _attr)
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit
_MAX_DIMS = 64


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """Whether a file's first bytes look like a safetensors header (length, then ``{``).

    Args:
        head: at least the first 9 bytes of the file (fewer: False).
        size: the file's size in bytes.

    Returns:
        True when the 8-byte length fits in the file and the JSON header starts with ``{``.
    """
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _bad(path: str, why: str) -> ModelError:
    return ModelError(f"cannot read checkpoint {path}: not a valid safetensors file ({why})")


def _entries(header: object, path: str, data_size: int) -> list[tuple[str, torch.dtype, list[int], int, int]]:
    """Validate the header; return (name, dtype, shape, begin, end) sorted by offset."""
    if not isinstance(header, dict):
        raise _bad(path, "the header is not a JSON object")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise _bad(path, "__metadata__ must map names to strings")
            continue
        if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"} or len(info) != 3:
            raise _bad(path, f"tensor {name!r} needs exactly dtype, shape and data_offsets")
        dtype = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise _bad(path, f"tensor {name!r} has an unknown dtype {info['dtype']!r}")
        shape, offsets = info["shape"], info["data_offsets"]
        if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise _bad(path, f"tensor {name!r} has a bad shape {shape!r}")
        if math.prod(d for d in shape if d) >= 2**62:  # an empty tensor too: torch computes its strides
            raise _bad(path, f"tensor {name!r} has a shape too large for any tensor: {shape}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise _bad(path, f"tensor {name!r} has data_offsets {offsets!r} outside the {data_size} data bytes")
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if offsets[1] - offsets[0] != nbytes:
            raise _bad(path, f"tensor {name!r} of shape {shape} and dtype {info['dtype']} needs {nbytes} bytes, "
                             f"its offsets span {offsets[1] - offsets[0]}")
        entries.append((name, dtype, shape, offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e[3], e[4]))
    position = 0
    for name, _, _, begin, end in entries:
        if begin != position:
            raise _bad(path, f"tensor {name!r} starts at byte {begin}, expected {position} (gap or overlap)")
        position = end
    if position != data_size:
        raise _bad(path, f"the tensors cover {position} of the {data_size} data bytes")
    return entries


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file (on the CPU), after checking the whole header.

    Args:
        path: the file (a regular file; see ``erf.models.files.check_weights_file``).

    Returns:
        ``{name: tensor}`` in the file's order of offsets.

    Raises:
        ModelError: a file that is not well-formed safetensors (one line, naming what is wrong).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"{size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise _bad(path, f"the header claims {n} bytes, the file has {size - 8} after the length")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _bad(path, f"the header is not JSON: {type(exc).__name__}") from None
        entries = _entries(header, path, size - 8 - n)
        out: dict[str, torch.Tensor] = {}
        for name, dtype, shape, begin, end in entries:
            if end == begin:
                out[name] = torch.empty(shape, dtype=dtype)
                continue
            buf = bytearray(end - begin)
            if f.readinto(buf) != len(buf):
                raise _bad(path, f"the file ends inside tensor {name!r}")
            tensor = torch.frombuffer(buf, dtype=dtype).reshape(shape)
            if sys.byteorder != "little" and tensor.element_size() > 1:
                raise ModelError(f"cannot read checkpoint {path}: safetensors is little-endian and this machine "
                                 "is not; convert the file on a little-endian machine")
            out[name] = tensor
    return out


def save_safetensors(state: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """Write ``state`` (e.g. ``model.state_dict()``) as a safetensors file that ``load_checkpoint`` reads.

    Tensors are copied to the CPU and made contiguous; shared or overlapping tensors are written
    as separate copies.

    Args:
        state: tensor names to tensors.
        path: the file to write (replaced if it exists).
        metadata: optional string-to-string ``__metadata__``.

    Raises:
        ModelError: a key that is not a string, a value that is not a tensor, or a dtype the
            format has no name for.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ModelError(f"safetensors holds string names of tensors; got {name!r}: {type(tensor).__name__}")
        if tensor.dtype not in _NAMES:
            raise ModelError(f"safetensors has no name for dtype {tensor.dtype} (tensor {name!r})")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # align the data to 8 bytes, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
