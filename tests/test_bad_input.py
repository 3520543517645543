"""A corpus of bad inputs: each must exit with code 2, print one line that names the problem,
show no traceback, and leave no partial result behind."""

import pickle

import pytest
import torch

from erf.cli import main
from erf.models import create_model

NET = ["--model-arg", "depth=3", "--model-arg", "width=4", "--input", "16"]

FACTORIES = {
    "good.py": "import torch.nn as nn\ndef make(k=3):\n    return nn.Conv2d(1, 1, k)\n",
    "notmodule.py": "def make():\n    return 42\n",
    "raises.py": "def make():\n    raise ValueError('boom')\n",
    "syntax.py": "def make(:\n",
    "leaky.py": ("import torch, torch.nn as nn\nclass M(nn.Module):\n    def forward(self, x):\n"
                 "        return torch.as_tensor(x.numpy() * 2)\ndef make():\n    return M()\n"),
    "fft.py": ("import torch, torch.nn as nn\nclass M(nn.Module):\n    def forward(self, x):\n"
               "        return torch.fft.fft2(x).abs()\ndef make():\n    return M()\n"),
    "unaligned.py": ("import torch.nn as nn, torch.nn.functional as F\nclass M(nn.Module):\n"
                     "    def __init__(self):\n        super().__init__()\n"
                     "        self.a, self.b, self.c = nn.Conv2d(1, 1, 5, 2), nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)\n"
                     "    def forward(self, x):\n        return self.a(F.pad(x, (2, 1, 2, 1))) + self.c(self.b(x))\n"
                     "def make():\n    return M()\n"),
}


class Evil:
    def __reduce__(self):
        return (print, ("this would run",))


def _files(tmp_path):
    for name, text in FACTORIES.items():
        (tmp_path / name).write_text(text)
    torch.save(create_model("plain_net", depth=3, width=4).state_dict(), tmp_path / "ok.pt")
    torch.save(create_model("plain_net", depth=3, width=8).state_dict(), tmp_path / "wide.pt")
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with open(tmp_path / "rawpickle.pt", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    (tmp_path / "corrupt.pt").write_bytes(b"\x00not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")


def _no_timm():
    try:
        import timm  # noqa: F401
    except Exception:
        return True
    return False


# (argv with {d} for the temp folder, a word the message must contain)
RF_CASES = [
    (["rf", "resnet51"], "unknown model"),
    (["rf", "no_such_model_at_all"], "unknown model"),
    (["rf", "resnet18", "--input", "0"], "positive"),
    (["rf", "resnet18", "--input", "-5"], "positive"),
    (["rf", "resnet18", "--input", "2.5"], "integers"),
    (["rf", "resnet18", "--input", "abc"], "integers"),
    (["rf", "resnet18", "--input", "64,64,64,64"], "input"),
    (["rf", "plain_net", *NET, "--layer", "layers.9"], "no layer named"),
    (["rf", "plain_net", *NET, "--layer", ""], "no layer named"),
    (["rf", "plain_net", *NET, "--unit", "16,0"], "outside"),
    (["rf", "plain_net", *NET, "--unit", "-1,0"], "--unit"),
    (["rf", "plain_net", *NET, "--unit", "1,2,3"], "indices"),
    (["rf", "plain_net", *NET, "--unit", "a,b"], "integers"),
    (["rf", "alexnet_caffe", "--model-arg", "width=0.0625", "--input", "32"], "large enough"),
    (["rf", "plain_net", "--model-arg", "depth=3", "--model-arg", "nope=1"], "nope"),
    (["rf", "plain_net", "--model-arg", "depth"], "key=value"),
    (["rf", "plain_net", "--model-arg", "width=0.5"], "width"),
    (["rf", "plain_net", "--model-arg", "depth=-3"], "depth"),
    (["rf", "plain_net", "--model-arg", "activation=swishy"], "swishy"),
    (["rf", "{d}/missing.py:make"], "missing.py"),
    (["rf", "{d}/good.py:nothere"], "nothere"),
    (["rf", "{d}/notmodule.py:make"], "Module"),
    (["rf", "{d}/raises.py:make"], "boom"),
    (["rf", "{d}/syntax.py:make"], "syntax.py"),
    (["rf", "{d}/good.py:make", "--model-arg", "q=1"], "q"),
    (["rf", "{d}/good.py:make", "--input", "8", "--in-channels", "3"], "channels"),
    (["rf", "{d}/leaky.py:make", "--input", "8"], "numpy"),
    (["rf", "{d}/fft.py:make", "--input", "8"], "fft_fft2"),
    (["rf", "{d}/unaligned.py:make", "--input", "8"], "not aligned"),
    (["rf", "resnet18", "--treat-as", "fft"], "--treat-as"),
    (["rf", "resnet18", "--treat-as", "fft=sometimes"], "--treat-as"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/nothere.pt"], "not found"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/corrupt.pt"], "corrupt"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/empty.pt"], "empty.pt"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/evil.pt"], "refused"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/rawpickle.pt"], "refused"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/wide.pt"], "shape"),
    (["rf", "timm:resnet18"] if _no_timm() else ["rf", "timm:not_a_model_name_xyz"], "timm"),
    (["rf"], "give a MODEL"),
    (["nosuchcommand"], "invalid choice"),
]


def _check(capsys, tmp_path, argv, needle):
    _files(tmp_path)
    before = set(p.name for p in tmp_path.iterdir())
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle.lower() in err.lower(), (needle, err)
    assert set(p.name for p in tmp_path.iterdir()) == before  # nothing half-written


@pytest.mark.parametrize("argv,needle", RF_CASES, ids=[" ".join(c[0])[:60] for c in RF_CASES])
def test_rf_bad_input(capsys, tmp_path, argv, needle):
    _check(capsys, tmp_path, argv, needle)
