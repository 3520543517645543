"""erf.limits: every limit refuses just past its bound and accepts the bound itself, without blocking or writing."""

import os
import stat

import pytest

from erf import limits
from erf.errors import ErfError


def test_seed_bounds():
    assert limits.check_seed(0) == 0
    assert limits.check_seed(2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, 2**64, 1.0, True, "3"):
        with pytest.raises(ErfError, match="2\\*\\*63"):
            limits.check_seed(bad, "experiment.seed")


def test_count_bounds_name_the_limit_and_reason():
    assert limits.check_count(limits.MAX_SAMPLES, "--samples", limits.MAX_SAMPLES) == 2**32
    with pytest.raises(ErfError, match=r"--samples must be at most 4294967296 \(keys\); got 4294967297"):
        limits.check_count(2**32 + 1, "--samples", limits.MAX_SAMPLES, why="keys")
    with pytest.raises(ErfError, match="must be >= 1"):
        limits.check_count(0, "--samples", 10)


def test_input_bytes_and_memory_refusal():
    # float32: 28 bytes of noise and 2 x 4 of input and gradient per value
    assert limits.input_bytes((10, 10), 3, 4) == 300 * 36
    assert limits.input_bytes((10, 10), 3, 8) == 300 * 44
    limits.check_input((10, 10), 3, memory=300 * 36)  # exactly fits
    with pytest.raises(ErfError, match=r"--input 10x10 with 3 channel\(s\).*10.8 kB.*10.8 kB"):
        limits.check_input((10, 10), 3, memory=300 * 36 - 1)
    limits.check_input((10, 10), 3, memory=300 * 4, trace_only=True)  # a trace holds the input only
    with pytest.raises(ErfError, match="int64"):
        limits.check_input((2**32, 2**32), 1, memory=2**62)


def test_memory_bytes_is_the_machine_ram():
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert limits.memory_bytes("cpu") == ram


def test_model_and_activation_memory():
    limits.check_model_memory(10, 4, "m", memory=40)
    with pytest.raises(ErfError, match="m has 11 parameters"):
        limits.check_model_memory(11, 4, "m", memory=40)
    limits.check_activations([(1, 2, 5), (1, 5)], 4, "m", memory=2 * 15 * 4)
    with pytest.raises(ErfError, match="activations"):
        limits.check_activations([(1, 2, 5), (1, 5)], 4, "m", memory=2 * 15 * 4 - 1)


def test_grid_counted_before_expanding():
    assert limits.check_grid({"a": 100, "b": 100}, "f") == 10_000
    with pytest.raises(ErfError, match="more than 10000 points"):
        limits.check_grid({"a": 10**4, "b": 10**4, "c": 10**9}, "f")  # 10**17: refused without a product loop


@pytest.mark.parametrize("text", [
    "a = " + "[" * 33 + "]" * 33,
    "a = " + "{b = " * 33 + "1" + "}" * 33,
    "[" + ".".join("k" * 40) + "]\n",
    ".".join("k" * 40) + " = 1\n",
])
def test_toml_depth_refused(text):
    with pytest.raises(ErfError, match="nested more than 32 levels"):
        limits.check_toml_depth(text, "f.toml")


@pytest.mark.parametrize("text", [
    "a = " + "[" * 30 + "]" * 30,
    'a = "' + "[" * 100 + '"\nb = \'' + "{" * 100 + "'\n",
    "# " + "[" * 100 + "\nc = 1\n",
    'd = """\n' + "[" * 100 + '\n"""\n',
    'e = "esc \\" ' + "[" * 100 + '"\n',
])
def test_toml_depth_ignores_strings_and_comments(text):
    limits.check_toml_depth(text, "f.toml")


def test_shipped_configs_pass_the_depth_scan():
    folder = os.path.join(os.path.dirname(__file__), "..", "configs")
    names = [n for n in os.listdir(folder) if n.endswith(".toml")]
    assert names
    for name in names:
        path = os.path.join(folder, name)
        limits.check_toml_depth(limits.read_config(path).decode(), path)


def test_read_config_refuses_special_files_without_blocking(tmp_path):
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    with pytest.raises(ErfError, match="is a FIFO"):
        limits.read_config(str(fifo))  # would block forever if it were opened
    with pytest.raises(ErfError, match="is a character device"):
        limits.read_config("/dev/zero")
    with pytest.raises(ErfError, match="is a folder"):
        limits.read_config(str(tmp_path))
    with pytest.raises(ErfError, match="config file not found"):
        limits.read_config(str(tmp_path / "none.toml"))
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (limits.MAX_CONFIG_BYTES + 1))
    with pytest.raises(ErfError, match="too large"):
        limits.read_config(str(big))
    ok = tmp_path / "ok.toml"
    ok.write_bytes(b"#" * limits.MAX_CONFIG_BYTES)
    assert len(limits.read_config(str(ok))) == limits.MAX_CONFIG_BYTES


def test_output_path_refusals(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    (tmp_path / "file").write_text("x")
    cases = [
        (fifo, "is a FIFO"),
        (tmp_path, "is a folder"),
        ("/dev/null", "under /dev"),
        ("/proc/x.npz", "under /proc"),
        (tmp_path / "file" / "x.npz", "is a file, not a folder"),
        (tmp_path / "file" / "a" / "b.npz", "is a file, not a folder"),
        (tmp_path / ("n" * 256), "more than this filesystem allows"),
        ("/" + "/".join(["d" * 200] * 25), "more than this system allows"),
        ("", "empty"),
    ]
    for path, needle in cases:
        with pytest.raises(ErfError, match=needle):
            limits.check_output_path("--save", path)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    limits.check_output_path("--save", tmp_path / "file")  # an existing regular file may be replaced
    limits.check_output_path("--save", tmp_path / "new" / "deeper" / "x.npz")  # new folders are fine
    limits.check_output_path("--out", tmp_path, folder=True)
    with pytest.raises(ErfError, match="is a file, not a folder"):
        limits.check_output_path("--out", tmp_path / "file", folder=True)
    assert sorted(os.listdir(tmp_path)) == ["f", "file"]  # nothing was created


def test_distinct_outputs_resolve_links(tmp_path):
    (tmp_path / "ck.pt").write_bytes(b"x")
    (tmp_path / "link.npz").symlink_to(tmp_path / "ck.pt")
    os.link(tmp_path / "ck.pt", tmp_path / "hard.npz")
    limits.check_distinct({"--save": str(tmp_path / "a.npz"), "--plot": str(tmp_path / "a.png")},
                          {"--checkpoint": str(tmp_path / "ck.pt")})
    for out in ("link.npz", "hard.npz", "ck.pt"):
        with pytest.raises(ErfError, match="same file as --checkpoint"):
            limits.check_distinct({"--save": str(tmp_path / out)}, {"--checkpoint": str(tmp_path / "ck.pt")})
    with pytest.raises(ErfError, match="--plot .* same file as --save"):
        limits.check_distinct({"--save": str(tmp_path / "x"), "--plot": str(tmp_path / "." / "x")})
    limits.check_distinct({"--save": None, "--plot": ""})
