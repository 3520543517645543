"""Limits checked before any work: seeds, counts, sizes, memory, config files, TOML depth, output paths.

Every check raises one ``ErfError`` line naming the value and the limit, before anything is
built, measured or written, so an absurd value never turns into a traceback, an
out-of-memory kill, a hang or a half-written file. The CLI, the config checker and the
model checker all call these functions; nothing here imports torch (the memory of a CUDA
device is read only when asked for, with torch already loaded by then).

The limits and why:

- seeds in ``[0, 2**63)``: torch's generators take a signed 64-bit seed;
- sample indices per weight draw (``samples``, ``max_samples``, ``batch_size``) at most
  ``MAX_SAMPLES`` = 2**32: a sample's random input is keyed by its index modulo 2**32
  (``erf.engine.inputs.sample_key``), so more would repeat inputs;
- ``weight_draws`` at most ``MAX_WEIGHT_DRAWS``: the sampling plan keeps one entry per draw;
- a sweep of at most ``MAX_POINTS`` points, counted before it is expanded;
- one full-size input sample (the crop check's pass, and the trace's) must fit in memory:
  ``input_bytes`` estimates it from the element count and the dtype;
- config files: regular files of at most ``MAX_CONFIG_BYTES``, TOML nested at most
  ``MAX_TOML_DEPTH`` deep (brackets and dotted keys, scanned before ``tomllib`` recurses);
- output paths: a regular file or a new path (never a device, FIFO, socket or folder, never
  an input of the same command, never two outputs at one path), on a writable folder that
  is not below a file or under ``/proc``, ``/sys`` or ``/dev``, each name at most NAME_MAX
  bytes and the whole path at most PATH_MAX.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence

from erf.errors import ErfError

__all__ = [
    "SEED_LIMIT", "INDEX_LIMIT", "MAX_SAMPLES", "MAX_WEIGHT_DRAWS", "MAX_POINTS", "MAX_CONFIG_BYTES",
    "MAX_TOML_DEPTH", "MAX_NAME", "MAX_GENERATED_IMAGES", "MAX_DEPTH", "MAX_BOOT", "check_seed",
    "check_count", "check_input", "check_model_memory",
    "check_activations", "input_bytes", "memory_bytes", "check_grid", "read_config", "check_toml_depth",
    "check_output_path", "check_distinct", "show_bytes",
]

SEED_LIMIT = 2**63  # torch's generators take a signed 64-bit seed
INDEX_LIMIT = 2**63  # int64: what torch can index
MAX_SAMPLES = 2**32  # sample keys are 32-bit (erf.engine.inputs.sample_key)
MAX_WEIGHT_DRAWS = 2**20  # the sampling plan keeps one entry per draw
MAX_BOOT = 100_000  # bootstrap replicates of one interval
MAX_POINTS = 10_000  # points of one sweep
MAX_DEPTH = 10_000  # layers of a built-in conv stack (plain_net, residual_net): deeper builds for hours
MAX_GENERATED_IMAGES = 100_000  # inputs.kind = 'generated': each image is a PNG file in a temporary folder
MAX_CONFIG_BYTES = 4 * 2**20  # a config is a short text file
MAX_TOML_DEPTH = 32  # nested arrays, inline tables and dotted keys
MAX_NAME = 200  # an experiment name (schema): .<name>.partial and .<name>.old-XXXXXXXX fit in NAME_MAX (255)
_SYSTEM_TREES = ("/proc", "/sys", "/dev")

# bytes per input value of one full-size sample: the int64 pixel positions and two int64 hash
# temporaries of the noise (erf.engine.inputs), its float32 uniforms, then the input and its
# gradient in the measurement dtype (added per itemsize)
_NOISE_BYTES_PER_VALUE = 3 * 8 + 4


def show_bytes(n: float) -> str:
    """``n`` bytes as text: ``1.5 GB``, ``320 MB``, ``12 kB`` (powers of 1000).

    Args:
        n: a byte count.

    Returns:
        The count with a unit.
    """
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


# --------------------------------------------------------------------------- numbers


def check_seed(seed: object, what: str = "--seed") -> int:
    """A seed in ``[0, 2**63)``.

    Args:
        seed: the value given.
        what: how the message names it (``"--seed"``, ``"experiment.seed"``).

    Returns:
        The seed.

    Raises:
        ErfError: not an integer, negative, or ``2**63`` or more.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ErfError(f"{what} must be an integer in [0, 2**63); got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ErfError(f"{what} must be >= 0 and below 2**63 = {SEED_LIMIT}; got {seed}")
    return seed


def check_count(value: object, what: str, limit: int, *, low: int = 1, why: str = "") -> int:
    """An integer count in ``[low, limit]``.

    Args:
        value: the value given.
        what: how the message names it (``"--samples"``).
        limit: the largest value allowed.
        low: the smallest value allowed.
        why: the reason for ``limit``, for the message.

    Returns:
        The count.

    Raises:
        ErfError: not an integer, or outside ``[low, limit]``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ErfError(f"{what} must be an integer; got {value!r}")
    if value < low:
        raise ErfError(f"{what} must be >= {low}; got {value}")
    if value > limit:
        reason = f" ({why})" if why else ""
        raise ErfError(f"{what} must be at most {limit}{reason}; got {value}")
    return value


# --------------------------------------------------------------------------- memory


def memory_bytes(device: str = "cpu") -> int:
    """The memory a measurement can use at most: the machine's RAM, or the CUDA device's memory.

    Args:
        device: ``"cpu"``, or a CUDA device (``"cuda"``, ``"cuda:1"``).

    Returns:
        Bytes (physical RAM for the CPU; 2**62 when it cannot be read, so that nothing is refused).
    """
    if str(device).startswith("cuda"):
        import torch  # lazy: only asked for once a CUDA measurement is set up, with torch loaded

        if torch.cuda.is_available():
            index = torch.device(device).index
            return int(torch.cuda.get_device_properties(index or 0).total_memory)
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**62


def input_bytes(size: Sequence[int], channels: int, itemsize: int = 4) -> int:
    """Bytes one full-size input sample takes while it is made and measured, without the model.

    Args:
        size: the spatial size per axis.
        channels: input channels.
        itemsize: bytes per value of the measurement dtype (4 for float32, 8 for float64).

    Returns:
        ``channels * prod(size) * (28 + 2 * itemsize)``: the noise's int64 positions and hash
        temporaries and float32 uniforms, the input and its gradient.
    """
    return channels * math.prod(size) * (_NOISE_BYTES_PER_VALUE + 2 * itemsize)


def check_input(size: Sequence[int], channels: int, what: str = "--input", *, itemsize: int = 4,
                memory: int | None = None, trace_only: bool = False) -> None:
    """Refuse an input whose one full-size sample cannot be indexed or cannot fit in memory.

    Args:
        size: the spatial size per axis.
        channels: input channels.
        what: how the message names the size (``"--input"``, ``"inputs.size"``).
        itemsize: bytes per value of the measurement dtype.
        memory: the bytes available (default: ``memory_bytes()``).
        trace_only: only a trace runs (``erf rf``): the input of its real pass, ``itemsize`` per value,
            without noise or gradient (the trace runs on the meta device first, which needs none).

    Raises:
        ErfError: more than 2**63 values, or an estimate above ``memory``.
    """
    shown = "x".join(map(str, size))
    values = channels * math.prod(size)
    if values >= INDEX_LIMIT:
        raise ErfError(f"{what} {shown} with {channels} channel(s) is {values} values per sample, more than int64 "
                       f"can index (2**63); use a smaller size")
    need = values * itemsize if trace_only else input_bytes(size, channels, itemsize)
    memory = memory_bytes() if memory is None else memory
    if need > memory:
        parts = "the input of a real pass" if trace_only else "its noise, the input and its gradient"
        raise ErfError(f"{what} {shown} with {channels} channel(s): one full-size sample needs about "
                       f"{show_bytes(need)} ({parts}, before the model's activations), "
                       f"more than the {show_bytes(memory)} of memory here; use a smaller size or fewer channels")


def check_model_memory(values: int, itemsize: int, what: str, memory: int | None = None) -> None:
    """Refuse a model whose parameters and buffers alone cannot fit in memory.

    Args:
        values: parameter and buffer elements (counted on the meta device).
        itemsize: bytes per element.
        what: how the message names the model (``"model 'plain_net' (width=100000)"``).
        memory: the bytes available (default: ``memory_bytes()``).

    Raises:
        ErfError: more than 2**63 elements, or more bytes than ``memory``.
    """
    memory = memory_bytes() if memory is None else memory
    need = values * itemsize
    if values >= INDEX_LIMIT or need > memory:
        raise ErfError(f"{what} has {values} parameters ({show_bytes(need)}), more than the {show_bytes(memory)} "
                       f"of memory here; use smaller model arguments")


def check_activations(shapes: Iterable[Sequence[int]], itemsize: int, what: str, memory: int | None = None) -> None:
    """Refuse a model whose activations for one full-size sample cannot fit in memory.

    Args:
        shapes: the output shape of every traced layer for a batch of one.
        itemsize: bytes per value of the measurement dtype.
        what: how the message names the model and input.
        memory: the bytes available (default: ``memory_bytes()``).

    Raises:
        ErfError: the activations (kept for the backward pass, and their gradients) exceed ``memory``.
    """
    values = sum(math.prod(s) for s in shapes)
    need = 2 * values * itemsize
    memory = memory_bytes() if memory is None else memory
    if need > memory:
        raise ErfError(f"{what}: the activations of one full-size sample and their gradients need about "
                       f"{show_bytes(need)}, more than the {show_bytes(memory)} of memory here; use a smaller input "
                       f"or a smaller model")


# --------------------------------------------------------------------------- sweeps and config files


def check_grid(lengths: Mapping[str, int], where: str) -> int:
    """The number of points of a sweep, from the length of each axis, refused above ``MAX_POINTS``.

    Counted before the points are made, so a grid of 10**8 points is refused at once.

    Args:
        lengths: axis name -> its number of values.
        where: the file the message names.

    Returns:
        The number of points.

    Raises:
        ErfError: more than ``MAX_POINTS`` points.
    """
    total = 1
    for n in lengths.values():
        total *= max(1, n)
        if total > MAX_POINTS:
            axes = " x ".join(f"{k} ({n})" for k, n in lengths.items())
            raise ErfError(f"{where}: sweep: {axes} make more than {MAX_POINTS} points; split the experiment or "
                           f"shrink the sweep")
    return total


def read_config(path: str) -> bytes:
    """The bytes of a config file: a regular file of at most ``MAX_CONFIG_BYTES``.

    A FIFO, a device (``/dev/zero``), a socket or a folder is refused before it is opened,
    so nothing blocks or reads forever.

    Args:
        path: the file.

    Returns:
        Its content.

    Raises:
        ErfError: missing, not a regular file, too large, or unreadable.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ErfError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ErfError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ErfError(f"{path}: is a folder, not a TOML config file")
    if not stat.S_ISREG(st.st_mode):
        raise ErfError(f"{path}: is a {_kind(st.st_mode)}, not a TOML config file; give a regular file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ErfError(f"{path}: {show_bytes(st.st_size)} is too large for a config file "
                       f"(at most {show_bytes(MAX_CONFIG_BYTES)})")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ErfError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ErfError(f"{path}: too large for a config file (at most {show_bytes(MAX_CONFIG_BYTES)})")
    return data


_TOML_TOKEN = re.compile(r'"""|\'\'\'|"|\'|#|\n|[\[\]{}]|=')


def check_toml_depth(text: str, path: str) -> None:
    """Refuse TOML nested more than ``MAX_TOML_DEPTH`` deep, before ``tomllib`` recurses into it.

    Counts open brackets and braces outside strings and comments (arrays, inline tables,
    table headers) plus the dots of each key (``a.b.c``), a cheap upper bound of the depth.

    Args:
        text: the file's text.
        path: the file the message names.

    Raises:
        ErfError: a nesting deeper than ``MAX_TOML_DEPTH``.
    """
    depth, deepest, pos, n = 0, 0, 0, len(text)
    line_start, dots = 0, 0
    while pos < n:
        m = _TOML_TOKEN.search(text, pos)
        if m is None:
            break
        tok, pos = m.group(), m.end()
        if tok in ('"""', "'''"):
            end = text.find(tok, pos)
            pos = n if end < 0 else end + 3
        elif tok in ('"', "'"):
            pos = _end_of_string(text, pos, tok)
        elif tok == "#":
            end = text.find("\n", pos)
            pos = n if end < 0 else end
        elif tok == "\n":
            line_start = pos
        elif tok in "[{":
            depth += 1
        elif tok in "]}":
            depth = max(0, depth - 1)
            if text[line_start:m.start()].lstrip().startswith("["):  # a table header: [a.b.c]
                dots = _key_dots(text[line_start:m.start()])
        elif tok == "=":
            dots = _key_dots(text[line_start:m.start()])
        deepest = max(deepest, depth + dots)
        if deepest > MAX_TOML_DEPTH:
            line = text.count("\n", 0, pos) + 1
            raise ErfError(f"{path}: line {line}: TOML nested more than {MAX_TOML_DEPTH} levels deep; "
                           "a config needs a few")
        if tok in ("\n", "=", "]"):
            dots = 0


def _end_of_string(text: str, pos: int, quote: str) -> int:
    """The index after the closing quote of a one-line string that starts at ``pos``."""
    while pos < len(text):
        c = text[pos]
        if c == "\\" and quote == '"':
            pos += 2
            continue
        if c == quote or c == "\n":
            return pos + 1
        pos += 1
    return pos


def _key_dots(key_text: str) -> int:
    """Dots of a bare dotted key (an upper bound: quoted dots count too)."""
    return key_text.count(".")


# --------------------------------------------------------------------------- output paths


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def check_output_path(what: str, path: str | os.PathLike, *, folder: bool = False) -> None:
    """Refuse, before any work, an output path erf must not or cannot write.

    Args:
        what: how the message names the output (``"--save"``).
        path: the file (or, with ``folder``, the folder) to be written.
        folder: the output is a folder (it may exist as one).

    Raises:
        ErfError: an existing path that is not a regular file (or folder, with ``folder``); a path
            under /proc, /sys or /dev; a name longer than NAME_MAX or a path longer than PATH_MAX;
            a parent that is a file; a parent folder that is not writable or on a read-only mount.
    """
    path = os.fspath(path)
    if not path:
        raise ErfError(f"{what}: the path is empty; give a file name")
    full = os.path.realpath(path)
    tree = next((t for t in _SYSTEM_TREES if full == t or full.startswith(t + "/")), None)
    if tree is not None:
        raise ErfError(f"{what} {path}: is under {tree}, which holds no files of yours; choose another path")
    name_max, path_max = _fs_limits(full)
    if len(os.fsencode(full)) >= path_max:
        raise ErfError(f"{what}: the path is {len(os.fsencode(full))} bytes long, more than this system allows "
                       f"({path_max - 1}); choose a shorter one")
    for part in full.split("/"):
        if len(os.fsencode(part)) > name_max:
            raise ErfError(f"{what}: the name {part[:40]}... is {len(os.fsencode(part))} bytes long, more than this "
                           f"filesystem allows ({name_max}); choose a shorter one")
    try:
        st = os.stat(full)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None
    except OSError as exc:
        raise ErfError(f"{what} {path}: cannot use: {exc.strerror or exc}; choose another path") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode) and not folder:
            raise ErfError(f"{what} {path}: is a folder; give a file name inside it")
        if not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode):
            raise ErfError(f"{what} {path}: is a {_kind(st.st_mode)}; erf writes only regular files or new paths")
        if folder and not stat.S_ISDIR(st.st_mode):
            raise ErfError(f"{what} {path}: is a file, not a folder; choose another path")
    parent = os.path.dirname(full)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ErfError(f"{what} {path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "on a read-only filesystem" if _read_only(parent) else "not writable"
        raise ErfError(f"{what} {path}: the folder {parent} is {why}; choose another path")


def _fs_limits(full: str) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the filesystem holding ``full`` (255 and 4096 when unknown)."""
    probe = full
    while probe and not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    try:
        return int(os.pathconf(probe or "/", "PC_NAME_MAX")), int(os.pathconf(probe or "/", "PC_PATH_MAX"))
    except (OSError, ValueError):
        return 255, 4096


def _read_only(folder: str) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_distinct(outputs: Mapping[str, str | None], inputs: Mapping[str, str | None] | None = None) -> None:
    """Refuse two outputs at one path, or an output at the path of an input (symlinks resolved).

    Args:
        outputs: flag -> output path (None or "" for an output not asked for).
        inputs: flag -> input path read by the same command (a checkpoint, a model file).

    Raises:
        ErfError: naming both flags.
    """
    inputs = inputs or {}
    seen: dict[tuple, str] = {}
    for flag, path in list(inputs.items()) + list(outputs.items()):
        if not path:
            continue
        key = _identity(path)
        if key in seen:
            role = "an input" if seen[key] in inputs else "another output"
            raise ErfError(f"{flag} {path}: is the same file as {seen[key]} ({role}); give {flag} its own path")
        seen[key] = flag


def _identity(path: str) -> tuple:
    """(device, inode) of an existing file (hard links match), else its resolved path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))
