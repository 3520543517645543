"""A corpus of bad inputs for ``erf rf``, ``erf measure`` and ``erf run``: each must exit with code 2,
print one line that names the problem, show no traceback, and leave nothing behind (no results folder,
no output file, no partial file). Every case runs in its own temporary folder, which is also the
working directory, so ``results/<name>`` of ``erf run`` would land there too."""

import json
import os
import pickle
import signal
import stat
import struct

import numpy as np
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
    "head.py": ("import torch.nn as nn\ndef make():\n    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), "
                "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))\n"),
    # model code that ends the process itself: at import, in the factory, in forward (issue 12)
    "exit_import.py": "import sys\nsys.exit(0)\n",
    "exit_factory.py": "import sys\ndef make():\n    sys.exit(0)\n",
    "kbi_factory.py": "def make():\n    raise KeyboardInterrupt\n",
    "exit_forward.py": ("import sys, torch.nn as nn\nclass M(nn.Conv2d):\n    def forward(self, x):\n"
                        "        sys.exit(3)\ndef make():\n    return M(1, 1, 3)\n"),
    "kbi_forward.py": ("import torch.nn as nn\nclass M(nn.Conv2d):\n    def forward(self, x):\n"
                       "        raise KeyboardInterrupt\ndef make():\n    return M(1, 1, 3)\n"),
    # model code raising what is no Exception, and parameters without values (issue 19)
    "baseexc.py": ("import torch.nn as nn\nclass Stop(BaseException):\n    pass\nclass M(nn.Conv2d):\n"
                   "    def forward(self, x):\n        raise Stop('halt')\ndef make():\n    return M(1, 1, 3)\n"),
    "genexit.py": ("import torch.nn as nn\nclass M(nn.Conv2d):\n    def forward(self, x):\n"
                   "        raise GeneratorExit\ndef make():\n    return M(1, 1, 3)\n"),
    "meta.py": ("import torch, torch.nn as nn\ndef make():\n    with torch.device('meta'):\n"
                "        return nn.Conv2d(1, 2, 3, padding=1)\n"),
    # float32 overflows to inf in 'blowup'; the next conv turns inf - inf into NaN
    "blowup.py": ("import torch.nn as nn\nclass Scale(nn.Module):\n    def forward(self, x):\n"
                  "        return x * 1e39\ndef make():\n    m = nn.Sequential()\n"
                  "    m.add_module('conv', nn.Conv2d(1, 4, 3, padding=1))\n    m.add_module('blowup', Scale())\n"
                  "    m.add_module('head', nn.Conv2d(4, 4, 3, padding=1))\n    return m\n"),
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
    torch.save({"foo": torch.zeros(3)}, tmp_path / "otherkeys.pt")
    (tmp_path / "afolder").mkdir(exist_ok=True)
    (tmp_path / "afile").write_text("not a folder\n")
    for i, shape in enumerate(([0, 2**70], [0, 2**62, 2**62])):  # zero elements, shapes no tensor can have
        header = json.dumps({"layers.0.conv.weight": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}).encode()
        (tmp_path / f"huge{i}.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    for link, target in (("oklink.png", tmp_path / "ok.pt"), ("nulllink", "/dev/null")):
        if not (tmp_path / link).is_symlink():
            (tmp_path / link).symlink_to(target)


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
    (["rf", "plain_net", *NET, "--in-channels", "0"], "--in-channels: must be an integer >= 1"),
    (["rf", "{d}/leaky.py:make", "--input", "8"], "numpy"),
    (["rf", "{d}/fft.py:make", "--input", "8"], "fft_fft2"),
    (["rf", "{d}/unaligned.py:make", "--input", "8"], "not aligned"),
    (["rf", "resnet18", "--treat-as", "fft"], "--treat-as"),
    (["rf", "resnet18", "--treat-as", "fft=sometimes"], "--treat-as"),
    (["rf", "resnet18", "--treat-as", "=pointwise"], "--treat-as takes OP="),
    (["rf", "plain_net", *NET, "--layer", "x" * 100_000], "...(100003 characters)"),
    (["rf", "{d}/baseexc.py:make", "--input", "8"], "model code raised Stop: halt"),
    (["rf", "plain_net", *NET, "--model-arg", "depth=1000000"], "depth must be <= 10000"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/nothere.pt"], "not found"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/corrupt.pt"], "corrupt"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/empty.pt"], "empty.pt"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/evil.pt"], "refused"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/rawpickle.pt"], "refused"),
    (["rf", "plain_net", *NET, "--checkpoint", "{d}/wide.pt"], "shape"),
    (["rf", "timm:resnet18"] if _no_timm() else ["rf", "timm:not_a_model_name_xyz"], "timm"),
    (["rf"], "give a MODEL"),
    # sizes and memory (erf.limits), before anything is built or traced
    (["rf", "plain_net", *NET, "--in-channels", "1000000000"], "1000000000 channel(s)"),
    (["rf", "plain_net", "--model-arg", "width=100000", "--input", "16"], "parameters"),
    (["rf", "plain_net", *NET[:4], "--input", "9999999999,9999999999"], "int64"),
    # model code that calls sys.exit or raises KeyboardInterrupt
    (["rf", "{d}/exit_import.py:make", "--input", "8"], "sys.exit(0) while importing the model file"),
    (["rf", "{d}/exit_factory.py:make", "--input", "8"], "sys.exit(0) while building the model"),
    (["rf", "{d}/kbi_factory.py:make", "--input", "8"], "raised KeyboardInterrupt while building the model"),
    (["rf", "{d}/exit_forward.py:make", "--input", "8"], "sys.exit(3) while running the model"),
    (["nosuchcommand"], "invalid choice"),
]


# erf measure: the tiny net, 2 samples, and both output files asked for (neither may appear)
OUT = ["--save", "{d}/erf.npz", "--plot", "{d}/erf.png"]
M = ["measure", "plain_net", *NET, "--samples", "2", "--batch", "2", *OUT]

MEASURE_CASES = [
    # issue 19: model code, system files, impossible shapes, unlimited sizes, folder-like outputs
    (["measure", "{d}/baseexc.py:make", "--input", "8", "--samples", "2", *OUT], "model code raised Stop: halt"),
    (["measure", "{d}/genexit.py:make", "--input", "8", "--samples", "2", *OUT], "model code raised GeneratorExit"),
    (["measure", "{d}/meta.py:make", "--input", "8", "--samples", "2", *OUT], "on the meta device"),
    ([*M, "--checkpoint", "/proc/self/mem"], "is under /proc, a system folder"),
    ([*M, "--checkpoint", "{d}/huge0.safetensors"], "shape too large for any tensor"),
    ([*M, "--checkpoint", "{d}/huge1.safetensors"], "shape too large for any tensor"),
    (["measure", "plain_net", "--model-arg", "depth=1000000000", "--input", "8", *OUT], "depth must be <= 10000"),
    (["measure", "plain_net", *NET, "--samples", "2", "--save", "{d}/newdir/"], "ends with '/', a folder"),
    (["measure", "plain_net", *NET, "--samples", "2", "--inputs", "/proc/**/*.png"], "under /proc, a system folder"),
    # unknown model, bad model arguments
    (["measure", "resnet51", *OUT], "unknown model"),
    (["measure", "plain_net", "--model-arg", "depth=-3", *OUT], "depth must be a positive integer"),
    (["measure", "plain_net", "--model-arg", "nope=1", *OUT], "does not accept argument 'nope'"),
    ([*M, "--model-arg", "depth"], "key=value"),
    # file.py:factory that does not exist or does not return a module
    (["measure", "{d}/missing.py:make", *OUT], "model file not found"),
    (["measure", "{d}/good.py:nothere", *OUT], "no callable 'nothere'"),
    (["measure", "{d}/notmodule.py:make", *OUT], "not a torch.nn.Module"),
    (["measure", "{d}/raises.py:make", *OUT], "boom"),
    (["measure", "{d}/good.py", *OUT], "good.py:FACTORY"),
    (["measure", "{d}/good.py:", *OUT], "after the colon"),
    # input size: bad values, too many axes, smaller than the model accepts, wrong channels
    ([*M, "--input", "0"], "--input must be positive"),
    ([*M, "--input", "abc"], "--input must be integers"),
    ([*M, "--input", "16,16,16"], "forward pass failed"),
    (["measure", "alexnet_caffe", "--model-arg", "width=0.0625", "--input", "32", *OUT], "input large enough"),
    ([*M, "--in-channels", "3"], "in_channels"),
    ([*M, "--in-channels", "0"], "argument --in-channels: must be an integer >= 1"),
    # layers and units
    ([*M, "--layer", "layers.9"], "no layer named 'layers.9'"),
    ([*M, "--layer", ""], "no layer named ''"),
    (["measure", "{d}/head.py:make", "--input", "8", *OUT], "no spatial output"),
    (["measure", "{d}/head.py:make", "--input", "8", "--layer", "2", *OUT], "no spatial output"),
    (["measure", "small_cnn", "--model-arg", "width=0.125", "--input", "16", "--layer", "fc", *OUT], "features"),
    ([*M, "--unit", "16,0"], "outside the layer's 16x16 map"),
    ([*M, "--unit=-1,0"], "--unit must not be negative"),
    ([*M, "--unit", "1,2,3"], "one index per axis"),
    ([*M, "--unit", "a,b"], "--unit must be integers"),
    ([*M, "--channel", "4"], "channel 4 does not exist"),
    ([*M, "--channel", "-1"], "channel -1 does not exist"),
    ([*M, "--channel", "abc"], "argument --channel: invalid int value"),
    # counts and sizes
    ([*M, "--samples", "0"], "samples must be a positive integer"),
    ([*M, "--samples", "abc"], "argument --samples: invalid int value"),
    ([*M, "--samples", "2.5"], "argument --samples: invalid int value"),
    ([*M, "--batch", "0"], "batch_size must be a positive integer"),
    ([*M, "--weight-draws", "-1"], "weight_draws must be 0"),
    ([*M, "--weight-draws", "2", "--checkpoint", "{d}/ok.pt"], "drops --checkpoint"),
    ([*M, "--normalize-draws"], "normalize_draws needs 2 to 64 weight draws"),
    ([*M, "--tol", "0"], "tol must be a positive number"),
    ([*M, "--tol", "nan"], "tol must be a positive number"),
    ([*M, "--tol", "0.1", "--max-samples", "1"], "max_samples must be an integer >= samples"),
    ([*M, "--max-samples", "10"], "only applies with --tol"),
    # names of options
    ([*M, "--init", "bogus"], "unknown init 'bogus'"),
    ([*M, "--signal", "loud"], "signal must be one of"),
    ([*M, "--preset", "nope"], "unknown ERF preset 'nope'"),
    ([*M, "--inputs", "noise"], "noise"),
    ([*M, "--dtype", "float16"], "dtype must be"),
    ([*M, "--autocast", "fp8"], "autocast must be"),
    ([*M, "--seed", "abc"], "argument --seed: invalid int value"),
    ([*M, "--seed", "-1"], "--seed must be >= 0"),
    # a device that is not there (this CPU machine), or no device at all
    ([*M, "--device", "tpu"], "unknown device 'tpu'"),
    ([*M, "--device", ""], "unknown device"),
    # checkpoints: missing, a folder, corrupt, empty, unsafe, shape-mismatched, other keys
    ([*M, "--checkpoint", "{d}/nothere.pt"], "checkpoint file not found"),
    ([*M, "--checkpoint", "{d}/afolder"], "checkpoint file not found"),
    ([*M, "--checkpoint", "{d}/corrupt.pt"], "corrupt"),
    ([*M, "--checkpoint", "{d}/empty.pt"], "empty.pt"),
    ([*M, "--checkpoint", "{d}/evil.pt"], "refused"),
    ([*M, "--checkpoint", "{d}/wide.pt"], "shape mismatch for 'layers.0.conv.weight'"),
    ([*M, "--checkpoint", "{d}/otherkeys.pt"], "unexpected key 'foo'"),
    # output files
    ([*M, "--plot", "{d}/erf.txt"], "--plot must name a .png"),
    ([*M, "--save", "{d}/afolder"], "--save {d}/afolder: is a folder"),
    ([*M, "--plot", "{d}/afile/erf.png"], "is a file, not a folder"),
    ([*M, "--save", "{d}/afile/sub/erf.npz"], "is a file, not a folder"),
    # outputs never replace an input, each other, a device or a file under /proc; names fit the filesystem
    ([*M, "--save", "{d}/erf.png"], "is the same file as --plot (another output)"),
    ([*M, "--checkpoint", "{d}/ok.pt", "--save", "{d}/ok.pt"], "is the same file as --checkpoint (an input)"),
    ([*M, "--checkpoint", "{d}/ok.pt", "--plot", "{d}/oklink.png"], "is the same file as --checkpoint"),
    (["measure", "{d}/good.py:make", "--input", "8", "--samples", "2", "--save", "{d}/good.py"], "same file as MODEL"),
    ([*M, "--save", "/dev/null"], "is under /dev"),
    ([*M, "--save", "{d}/nulllink"], "is under /dev"),
    ([*M, "--plot", "/proc/erf.png"], "is under /proc"),
    ([*M, "--save", "{d}/" + "n" * 300 + ".npz"], "more than this filesystem allows"),
    ([*M, "--save", ""], "--save: the path is empty"),
    # seeds, counts and sizes beyond what int64, the 32-bit sample keys or the memory allow
    ([*M, "--seed", str(2**64)], "--seed must be >= 0 and below 2**63"),
    ([*M, "--seed", str(2**63)], "--seed must be >= 0 and below 2**63"),
    ([*M, "--samples", str(2**70)], "--samples must be at most 4294967296"),
    ([*M, "--batch", str(2**40)], "--batch must be at most 4294967296"),
    ([*M, "--weight-draws", str(10**14), "--init", "uniform"], "--weight-draws must be at most 1048576"),
    ([*M, "--tol", "0.1", "--samples", str(2**30)], "give --max-samples"),
    ([*M, "--input", "100000"], ("--input 100000x100000", "more than the")),
    ([*M, "--in-channels", "100000000"], "100000000 channel(s)"),
    ([*M, "--input", "9999999999,9999999999"], "more than int64 can index"),
    (["measure", "plain_net", "--model-arg", "width=100000", "--input", "16", *OUT], "parameters"),
    # model code that calls sys.exit or raises KeyboardInterrupt: one line, exit 2 (not 0, not 130)
    (["measure", "{d}/exit_import.py:make", "--input", "8", *OUT], "sys.exit(0) while importing the model file"),
    (["measure", "{d}/exit_factory.py:make", "--input", "8", *OUT], "sys.exit(0) while building the model"),
    (["measure", "{d}/kbi_factory.py:make", "--input", "8", *OUT], "KeyboardInterrupt while building the model"),
    (["measure", "{d}/exit_forward.py:make", "--input", "8", "--samples", "2", *OUT],
     ("sys.exit(3) while running the model", "exit_forward.py:4, in forward")),
    (["measure", "{d}/kbi_forward.py:make", "--input", "8", "--samples", "2", *OUT],
     "raised KeyboardInterrupt while running the model"),
    # NaN / Inf in the gradients: the message names the layer where they start
    (["measure", "{d}/blowup.py:make", "--input", "8", "--samples", "2", *OUT], ("nan", "'blowup'")),
]
if not torch.cuda.is_available():
    MEASURE_CASES += [([*M, "--device", "cuda"], "no CUDA device"), ([*M, "--device", "cuda:7"], "no CUDA device")]


# erf run: a tiny config, changed per case ({section: {key: TOML value or None to drop it}}) ---------------
BASE = {"experiment": {"name": '"bad"'}, "model": {"name": '"plain_net"', "args": "{depth = 3, width = 4}"},
        "inputs": {"size": "16"}, "measure": {"samples": "2", "batch_size": "2", "n_boot": "20"}}


def cfg(extra: str = "", **changes) -> str:
    text = ""
    for section, keys in BASE.items():
        keys = {**keys, **changes.pop(section, {})}
        text += f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None)
    assert not changes, changes
    return text + extra


GOOD = cfg()
C = ["bad.toml"]

# (config text, bytes or None for no file; the arguments after 'run'; a part of the message)
RUN_CASES = [
    # the file itself: missing, a folder, malformed TOML, not UTF-8, empty
    (None, C, "config file not found"),
    (GOOD, ["afolder"], "is a folder"),
    ("[experiment\nname = 'bad'\n", C, "malformed TOML"),
    (GOOD + "samples = 3\n", C, "malformed TOML"),
    (GOOD.replace("size = 16", "size = "), C, "malformed TOML"),
    (b"[experiment]\nname = '\xff'\n", C, "not UTF-8"),
    ("", C, "the [experiment] section is required"),
    # unknown keys and sections
    (GOOD + "[measur]\n", C, "measur: unknown section (did you mean 'measure'?)"),
    (cfg(experiment={"nmae": '"x"'}), C, "experiment.nmae: unknown key (did you mean 'name'?)"),
    (GOOD + '[[figures]]\nkind = "grid"\ncolour = "red"\n', C, "figures[0].colour: unknown key"),
    (GOOD + '[sweep.gird]\n"model.args.depth" = [2, 3]\n', C, "sweep.gird: unknown key"),
    (GOOD + "[train]\nstpes = 3\n", C, "train.stpes: unknown key (did you mean 'steps'?)"),
    # wrong types
    (cfg(measure={"samples": '"many"'}), C, "measure.samples: must be an integer"),
    (cfg(inputs={"size": '"big"'}), C, "inputs.size: must be a positive integer"),
    (cfg(model={"args": "3"}), C, "model.args: must be a table"),
    (cfg(measure={"unit": '"centre"'}), C, "measure.unit: must be a list of integers"),
    (cfg(experiment={"seed": "1.5"}), C, "experiment.seed: must be an integer"),
    (cfg(measure={"layer": "3"}), C, "measure.layer: must be a string"),
    (cfg(measure={"channel": '"red"'}), C, "measure.channel: must be 'all' or a channel index"),
    (cfg(measure={"crop": '"maybe"'}), C, "measure.crop: must be 'auto', true or false"),
    (GOOD + "[train]\nenabled = \"yes\"\n", C, "train.enabled: must be true or false"),
    ("inputs = 3\n" + GOOD.replace("[inputs]\nsize = 16\n", ""), C, "inputs: must be a table"),
    # zero or negative sizes and counts
    (cfg(measure={"samples": "0"}), C, "measure.samples: must be >= 1; got 0"),
    (cfg(measure={"batch_size": "-2"}), C, "measure.batch_size: must be >= 1; got -2"),
    (cfg(measure={"weight_draws": "-1", "init": '"uniform"'}), C, "measure.weight_draws: must be >= 0"),
    (cfg(measure={"n_boot": "0"}), C, "measure.n_boot: must be >= 20"),
    (cfg(measure={"max_samples": "1", "tol": "0.1"}), C, "measure.max_samples: must be 0 or >= measure.samples"),
    (cfg(measure={"tol": "-0.5"}), C, "measure.tol: must be >= 0"),
    (cfg(measure={"level": "1.5"}), C, "measure.level: must be < 1"),
    (cfg(inputs={"size": "0"}), C, "inputs.size: must be a positive integer"),
    (cfg(inputs={"size": "[16, -1]"}), C, "inputs.size: must be a positive integer"),
    (cfg(inputs={"count": "0"}), C, "inputs.count: must be >= 1"),
    (cfg(experiment={"seed": "-1"}), C, "experiment.seed: must be >= 0"),
    (GOOD + "[train]\nenabled = true\nsteps = 0\n", C, "train.steps: must be >= 1"),
    (GOOD + "[train]\nenabled = true\nlr = 0.0\n", C, "train.lr: must be > 0"),
    (GOOD + '[sweep.grid]\n"measure.samples" = [2, 0]\n', C, "sweep.grid.measure.samples: must be >= 1"),
    # unknown model, model argument or layer; a layer with no spatial output; a unit outside the map
    (cfg(model={"name": '"plainnet"'}), C, "model.name: unknown model 'plainnet'"),
    (cfg(model={"args": "{depth = 3, width = 4, dpth = 2}"}), C, "takes no argument 'dpth'"),
    (cfg(model={"args": '{depth = 3, width = 4, activation = "swishy"}'}), C, "unknown activation 'swishy'"),
    (cfg(model={"args": "{depth = -3, width = 4}"}), C, "depth must be a positive integer"),
    (cfg(measure={"layer": '"layers.9"'}), C, "measure.layer: no layer named 'layers.9'"),
    (cfg(model={"name": '"head.py:make"', "args": None}), C, "measure.layer: layer '3' has no spatial output"),
    (cfg(model={"name": '"small_cnn"', "args": "{width = 0.125}"}, measure={"layer": '"fc"'}), C,
     "no spatial output"),
    (cfg(measure={"unit": "[16, 0]"}), C, ("measure.unit: ", "outside")),
    (cfg(measure={"unit": "[1, 2, 3]"}), C, ("measure.unit: ", "3 indices")),
    (cfg(measure={"channel": "4"}), C, "measure.channel: channel 4 does not exist"),
    # an input smaller than the model accepts, or with more axes than it has
    (cfg(model={"name": '"alexnet_caffe"', "args": "{width = 0.0625}"}, inputs={"size": "32"}), C,
     "inputs.size"),
    (cfg(inputs={"size": "[16, 16, 16]"}), C, "inputs.size"),
    # file.py:factory
    (cfg(model={"name": '"missing.py:make"', "args": None}), C, "model file not found: missing.py"),
    (cfg(model={"name": '"good.py:nothere"', "args": None}), C, "no callable 'nothere'"),
    (cfg(model={"name": '"notmodule.py:make"', "args": None}), C, "not a torch.nn.Module"),
    (cfg(model={"name": '"syntax.py:make"', "args": None}), C, "importing syntax.py failed"),
    # checkpoints
    (cfg(model={"checkpoint": '"nothere.pt"'}), C, "model.checkpoint: file not found: nothere.pt"),
    (cfg(model={"checkpoint": '"corrupt.pt"'}), C, "model.checkpoint: cannot read checkpoint corrupt.pt"),
    (cfg(model={"checkpoint": '"evil.pt"'}), C, "model.checkpoint: refused"),
    (cfg(model={"checkpoint": '"wide.pt"'}), C, "model.checkpoint: checkpoint wide.pt does not fit the model"),
    # devices
    (cfg(experiment={"device": '"cuda:7"'}), C, "experiment.device: must be one of"),
    (cfg(experiment={"device": '"gpu"'}), C, "experiment.device: must be one of"),
    (GOOD, [*C, "--device", "cuda:7"], "argument --device: invalid choice"),
    # other command-line values
    (GOOD, [*C, "--seed", "-1"], "--seed: must be >= 0"),
    (GOOD, [*C, "--seed", "abc"], "argument --seed: invalid int value"),
    (GOOD, [*C, "--out", "afile"], "is a file, not a results folder"),
    (GOOD, [*C, "--out", "afolder2"], "not an erf results folder"),
    (GOOD + '[quick]\n"measure.sampels" = 2\n', [*C, "--quick"], "quick.measure.sampels: unknown key"),
    (GOOD, [], "the following arguments are required: CONFIG"),
    # NaN / Inf in the gradients
    (cfg(model={"name": '"blowup.py:make"', "args": None}, inputs={"size": "8"}), C, ("nan", "'blowup'")),
    # the config file itself: a device, too large, nested too deeply (erf.limits)
    (None, ["/dev/zero"], "/dev/zero: is a character device, not a TOML config file"),
    ("# " + "x" * (5 * 2**20) + "\n" + GOOD, C, "too large for a config file"),
    (GOOD + "[report]\nx = " + "[" * 5000 + "]" * 5000 + "\n", C, "nested more than 32 levels"),
    (GOOD + "[" + ".".join(["a"] * 5000) + "]\n", C, "nested more than 32 levels"),
    # seeds, counts, names, sweeps and sizes beyond the limits: refused by --check too, nothing left behind
    (cfg(experiment={"seed": str(2**64)}), C, "experiment.seed: must be <= 9223372036854775807"),
    (GOOD, [*C, "--seed", str(2**64)], "--seed: must be <= 9223372036854775807"),
    (cfg(experiment={"seed": str(2**63)}), [*C, "--check"], "experiment.seed: must be <="),
    (cfg(experiment={"name": '"' + "a" * 300 + '"'}), C, "at most 200 characters"),
    (cfg(experiment={"name": '"../up"'}), C, "experiment.name: must be a folder name"),
    (cfg(measure={"samples": str(2**70)}), [*C, "--check"], "measure.samples: must be <= 4294967296"),
    (cfg(measure={"weight_draws": str(10**14), "init": '"uniform"'}), C, "measure.weight_draws: must be <= 1048576"),
    (cfg(measure={"n_boot": str(2**40)}), C, "measure.n_boot: must be <= 100000"),
    (GOOD + '[sweep.grid]\n"measure.samples" = [' + ", ".join(map(str, range(1, 10001))) + ']\n'
     '"measure.batch_size" = [' + ", ".join(map(str, range(1, 10001))) + "]\n", [*C, "--check"],
     "make more than 10000 points"),
    (cfg(inputs={"size": "100000"}), [*C, "--check"], ("inputs.size", "100000x100000", "more than the")),
    (cfg(inputs={"size": str(2**40)}), C, "inputs.size: must be below 2**31"),
    (cfg(model={"args": "{depth = 3, width = 100000}"}), [*C, "--check"], ("model.args", "parameters")),
    (cfg(model={"args": "{depth = 3, width = 512}"}, inputs={"size": "4000"}), [*C, "--check"], "activations"),
    # model code that calls sys.exit or raises KeyboardInterrupt, found by --check (which imports model files)
    (cfg(model={"name": '"exit_import.py:make"', "args": None}), [*C, "--check"],
     "sys.exit(0) while importing the model file"),
    (cfg(model={"name": '"syntax.py:make"', "args": None}), [*C, "--check"],
     ("importing syntax.py failed", "erf imported the model file to check it: its code runs")),
    (cfg(model={"name": '"kbi_factory.py:make"', "args": None}), C, "KeyboardInterrupt while building the model"),
    (cfg(model={"name": '"exit_forward.py:make"', "args": None}, inputs={"size": "8"}), C,
     "sys.exit(3) while running the model"),
    # --out that cannot hold a results folder: under /proc, a name too long, below a file
    (GOOD, [*C, "--out", "/proc/erf_results"], "is under /proc"),
    (GOOD, [*C, "--out", "r" * 300], "more than this filesystem allows"),
    (GOOD, [*C, "--out", "bad.toml/sub"], "is a file, not a folder"),
    (GOOD, [*C, "--out", ""], "--out: empty folder name"),
    (cfg(measure={"layer": '"a\\u0000b"'}), C, "no layer named 'a\\x00b'"),  # a NUL escaped, never printed raw
    (cfg(model={"name": '"genexit.py:make"', "args": None}, inputs={"size": "8"}), C, "model code raised GeneratorExit"),
    (cfg(model={"name": '"meta.py:make"', "args": None}, inputs={"size": "8"}), C, "on the meta device"),
    # --check runs every check the run runs before measuring (issue 19)
    (cfg(measure={"mean": "[nan]"}), [*C, "--check"], "measure.mean: mean must be a list of numbers"),
    (cfg(measure={"std": "[0.0]"}), [*C, "--check"], "measure.std: std must be positive"),
    (cfg(measure={"std": "[inf]"}), [*C, "--check"], "measure.std: std must be a list of numbers"),
    (cfg(measure={"std": "[-0.0]"}), [*C, "--check"], "measure.std: std must be positive; got [-0.0]"),
    (cfg(inputs={"kind": '"generated"', "count": "4"}, measure={"mean": "[0.1, 0.2, 0.3, 0.4]"}), [*C, "--check"],
     "mean has 4 values but the model takes 1 channels"),
    (GOOD + '[train]\nenabled = true\ntask = "afolder2"\n', [*C, "--check"], "train.task: no images"),
    (GOOD + '[train]\nenabled = true\ntask = "quadrant"\ntask_args = { bogus = 1 }\n', [*C, "--check"],
     "train.task_args: task 'quadrant' does not accept parameter 'bogus'"),
    (GOOD + '[train]\nenabled = true\ntask = "context"\ntask_args = { spacing = nan }\n', [*C, "--check"],
     "train.task_args: task parameter spacing must be a number > 0"),
    (GOOD + '[train]\nenabled = true\ntask = "context"\ntask_args = { spacing = 1e308 }\n', [*C, "--check"],
     ("train.task_args", "nan or inf")),
    (cfg(inputs={"kind": '"generated"', "count": "1000000000"}), [*C, "--check"], "inputs.count: kind = 'generated'"),
    (cfg(inputs={"kind": '"generated"', "count": "1000000000"}), C, "inputs.count: kind = 'generated'"),
    # booleans are not numbers; depths are limited (CLI, config, sweep values)
    (cfg(measure={"crop": "1"}), [*C, "--check"], "measure.crop: must be 'auto', true or false; got 1"),
    (cfg(model={"args": "{depth = true, width = 4}"}), [*C, "--check"], "depth must be a positive integer; got True"),
    (cfg(model={"args": "{depth = 1000000000, width = 4}"}), C, "depth must be <= 10000"),
    (GOOD + '[sweep.grid]\n"model.args.depth" = [2, 1000000]\n', [*C, "--check"], ("point p001", "depth must be <=")),
]
if not torch.cuda.is_available():
    RUN_CASES += [(cfg(experiment={"device": '"cuda"'}), C, "experiment.device: 'cuda' was asked for"),
                  (GOOD, [*C, "--device", "cuda"], "no CUDA device")]


def _tree(folder):
    """Every file and folder below ``folder`` (bytecode caches left out)."""
    files = [p for p in folder.rglob("*") if "__pycache__" not in p.parts]
    return sorted(str(p.relative_to(folder)) for p in files)


def _check(capsys, monkeypatch, tmp_path, argv, needle):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)  # erf run's results/<name> would appear here
    (tmp_path / "afolder2").mkdir(exist_ok=True)
    (tmp_path / "afolder2" / "keep.txt").write_text("not results\n")
    before = _tree(tmp_path)
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for part in [needle] if isinstance(needle, str) else needle:
        assert part.replace("{d}", str(tmp_path)).lower() in err.lower(), (part, err)
    assert _tree(tmp_path) == before  # nothing written, not even half


def _ids(cases):
    """Test ids: the arguments that differ from the shared prefix (M or OUT)."""
    def short(argv):
        if argv[:len(M)] == M:
            argv = ["M", *argv[len(M):]]
        return " ".join(a for a in argv if a not in OUT)[:70]
    return [short(c[0]) for c in cases]


@pytest.mark.parametrize("argv,needle", RF_CASES, ids=_ids(RF_CASES))
def test_rf_bad_input(capsys, monkeypatch, tmp_path, argv, needle):
    _check(capsys, monkeypatch, tmp_path, argv, needle)


@pytest.mark.parametrize("argv,needle", MEASURE_CASES, ids=_ids(MEASURE_CASES))
def test_measure_bad_input(capsys, monkeypatch, tmp_path, argv, needle):
    _check(capsys, monkeypatch, tmp_path, argv, needle)


@pytest.mark.parametrize("text,args,needle", RUN_CASES, ids=[f"{i:02d} {c[2]}"[:70] for i, c in enumerate(RUN_CASES)])
def test_run_bad_input(capsys, monkeypatch, tmp_path, text, args, needle):
    if isinstance(text, bytes):
        (tmp_path / "bad.toml").write_bytes(text)
    elif text is not None:
        (tmp_path / "bad.toml").write_text(text)
    _check(capsys, monkeypatch, tmp_path, ["run", *args], needle)
    assert not (tmp_path / "results" / "bad").exists()


def test_corpus_size():
    assert len(RF_CASES) + len(MEASURE_CASES) + len(RUN_CASES) >= 100


def test_measure_missing_gpu_index(capsys, monkeypatch, tmp_path):
    """cuda:7 on a machine with one GPU (pretended here) is refused before anything touches CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _check(capsys, monkeypatch, tmp_path, [*M, "--device", "cuda:7"], ("'cuda:7' is not there", "cuda:0 to cuda:0"))


def test_fifo_outputs_and_config_stay_fifos(capsys, monkeypatch, tmp_path):
    """A FIFO at --save / --plot, or as the config, is refused at once (nothing blocks) and is still a FIFO."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    _check(capsys, monkeypatch, tmp_path, [*M, "--save", str(fifo)], "--save {d}/out.fifo: is a FIFO")
    _check(capsys, monkeypatch, tmp_path, [*M, "--plot", str(fifo) + ".png", "--save", str(fifo)], "is a FIFO")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    os.mkfifo(tmp_path / "bad.toml")
    _check(capsys, monkeypatch, tmp_path, ["run", "bad.toml", "--check"], "bad.toml: is a FIFO, not a TOML config")
    assert stat.S_ISFIFO(os.stat(tmp_path / "bad.toml").st_mode)


def test_checkpoint_not_clobbered(capsys, monkeypatch, tmp_path):
    """--save at the checkpoint being measured (or a link to it) leaves its bytes as they were."""
    torch.save(create_model("plain_net", depth=3, width=4).state_dict(), tmp_path / "keep.pt")
    before = (tmp_path / "keep.pt").read_bytes()
    (tmp_path / "link.npz").symlink_to(tmp_path / "keep.pt")
    _check(capsys, monkeypatch, tmp_path, [*M, "--checkpoint", "{d}/keep.pt", "--save", "{d}/link.npz"],
           "same file as --checkpoint")
    assert (tmp_path / "keep.pt").read_bytes() == before


def test_real_ctrl_c_still_interrupts(capsys, tmp_path):
    """A SIGINT that really arrives (here sent by the model's forward to its own process) exits 130 'interrupted',
    unlike a KeyboardInterrupt the model code raises itself (exit 2, above); the handler is put back after."""
    (tmp_path / "sigint.py").write_text(
        "import os, signal, torch.nn as nn\nclass M(nn.Conv2d):\n    def forward(self, x):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n        return super().forward(x)\n"
        "def make():\n    return M(1, 1, 3)\n")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = main(["rf", f"{tmp_path}/sigint.py:make", "--input", "8"])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    assert capsys.readouterr().err.strip() == "erf: interrupted"


PRINTS = ("import torch.nn as nn\nprint('importing')\nclass M(nn.Conv2d):\n    def forward(self, x):\n"
          "        print('forward')\n        return super().forward(x)\ndef make():\n    print('building')\n"
          "    return M(1, 2, 3, padding=1)\n")


@pytest.mark.parametrize("cmd", [["rf"], ["measure", "--samples", "2", "-q"]])
def test_json_stdout_holds_the_json_alone_when_model_code_prints(capsys, tmp_path, cmd):
    (tmp_path / "prints.py").write_text(PRINTS)
    argv = [cmd[0], str(tmp_path / "prints.py:make"), "--input", "8", "--json", *cmd[1:]]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert isinstance(json.loads(out), dict)  # the whole stdout parses
    assert "building" in err and "forward" in err  # the model's prints are kept, on stderr


INPLACE = ("import torch.nn as nn\nclass Double(nn.Module):\n    def forward(self, x):\n        return x.mul_(2)\n"
           "def relu(inplace=True):\n    return nn.Sequential(nn.ReLU(inplace=inplace), nn.Conv2d(1, 2, 3, padding=1))\n"
           "def double():\n    return nn.Sequential(Double(), nn.Conv2d(1, 2, 3, padding=1))\n")


def test_models_working_in_place_on_their_input_are_measured(tmp_path):
    import sys

    from erf import measure
    from erf.models import load_model

    (tmp_path / "inplace_net.py").write_text(INPLACE)
    sys.path.insert(0, str(tmp_path))
    try:
        torch.manual_seed(0)
        a = load_model(f"{tmp_path}/inplace_net.py:relu")
        b = load_model(f"{tmp_path}/inplace_net.py:relu", {"inplace": False})
        b.load_state_dict(a.state_dict())
        ra, rb = (measure(m, 8, samples=8, batch_size=2, group_size=8) for m in (a, b))
        assert np.array_equal(ra.map, rb.map) and ra.map.sum() > 0
        d = load_model(f"{tmp_path}/inplace_net.py:double")
        rd = measure(d, 8, samples=2, batch_size=2, crop=False, cone=False, signal="signed")
        w = d[1].weight.detach().sum(0)[0].double().numpy()  # d out / d in of a 3x3 conv (a correlation)
        assert np.allclose(rd.map[3:6, 3:6], 2 * w, atol=1e-6)  # x.mul_(2) doubles the gradient
    finally:
        sys.path.remove(str(tmp_path))


def test_saved_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["measure", "plain_net", *NET, "--samples", "2", "-q", "--save", str(tmp_path / "e.npz"),
                     "--plot", str(tmp_path / "e.png")]) == 0
    finally:
        os.umask(old)
    for name in ("e.npz", "e.png"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name


def test_a_utf8_bom_in_a_config_is_read(tmp_path, capsys):
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert main(["run", str(tmp_path / "bom.toml"), "--check"]) == 0
    assert "ok" in capsys.readouterr().out
