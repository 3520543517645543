"""``erf rf``: the table, the JSON keys, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from erf.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_json_keys_and_values(capsys):
    code, out, _ = run(capsys, "rf", "resnet50", "--model-arg", "width=0.0625", "--layer", "layer4", "--json",
                       "--unit", "0,0")
    assert code == 0
    d = json.loads(out)
    for key in ("rf", "rf_min", "jump", "padding", "center", "shift_invariant", "output", "layers", "box"):
        assert key in d
    # ResNet-50 layer4: r=427, j=32, P=213 (tests/REFERENCE.md, classic architectures)
    assert d["rf"] == [427, 427] and d["jump"] == [32, 32] and d["padding"] == [213, 213]
    assert d["output"] == [7, 7] and d["shift_invariant"] is True
    assert d["box"] == [[-213, 213], [-213, 213]]
    row = d["layers"][1]
    assert set(row) >= {"name", "op", "output", "rf", "jump", "padding", "center"}


def test_table_names_layers_and_aliases(capsys):
    code, out, _ = run(capsys, "rf", "resnet18", "--model-arg", "width=0.0625", "--input", "64")
    assert code == 0
    assert "layer4" in out and "conv1" in out and "(global)" in out


def test_file_factory_and_rectangular_input(tmp_path, capsys):
    f = tmp_path / "net.py"
    f.write_text("import torch.nn as nn\n"
                 "def make(k=3):\n    return nn.Sequential(nn.Conv2d(1, 1, k), nn.Conv2d(1, 1, k, stride=2))\n")
    code, out, _ = run(capsys, "rf", f"{f}:make", "--model-arg", "k=5", "--input", "40,30", "--json")
    d = json.loads(out)
    assert code == 0 and d["rf"] == [9, 9] and d["output"] == [16, 11]


@pytest.mark.parametrize("argv,needle", [
    (["rf", "resnet51"], "unknown model"),
    (["rf", "resnet18", "--model-arg", "width=0.0625", "--layer", "layer9"], "no layer named 'layer9'"),
    (["rf", "resnet18", "--input", "0"], "positive"),
    (["rf", "resnet18", "--input", "abc"], "integers"),
    (["rf", "resnet18", "--model-arg", "width=0.0625", "--layer", "layer4", "--unit", "7,0"], "outside"),
    (["rf", "alexnet_caffe", "--model-arg", "width=0.0625", "--input", "32"], "forward pass failed"),
    (["rf", "resnet18", "--model-arg", "nope=1"], "nope"),
    (["rf", "missing_file.py:make"], "missing_file.py"),
    (["rf"], "give a MODEL"),
    (["rf", "resnet18", "--treat-as", "fft"], "--treat-as"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_unaligned_graph_is_exit_2(tmp_path, capsys):
    f = tmp_path / "bad.py"
    f.write_text("import torch.nn as nn, torch.nn.functional as F\n"
                 "class Bad(nn.Module):\n"
                 "    def __init__(self):\n"
                 "        super().__init__(); self.a = nn.Conv2d(1, 1, 5, 2); self.b = nn.Conv2d(1, 1, 3)\n"
                 "        self.c = nn.Conv2d(1, 1, 3)\n"
                 "    def forward(self, x):\n"
                 "        return self.a(F.pad(x, (2, 1, 2, 1))) + self.c(self.b(x))\n"
                 "def make():\n    return Bad()\n")
    code, _, err = run(capsys, "rf", f"{f}:make", "--input", "8")
    assert code == 2 and "not aligned" in err and "'a'" in err and "'c'" in err


@pytest.mark.slow
def test_console_script_runs_without_traceback():
    p = subprocess.run([sys.executable, "-m", "erf.cli", "rf", "nope"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("erf: error:") and "Traceback" not in p.stderr
