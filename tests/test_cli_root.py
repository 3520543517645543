"""The ``erf`` command itself: --version, ``python -m erf``, and help without torch."""

import importlib.metadata
import subprocess
import sys
import time

import pytest

import erf
from erf.analytic.rules import TREAT_AS
from erf.cli import build_parser, main
from erf.cli.common import COMMANDS


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"erf {erf.__version__}\n" == "erf 0.1.0\n"
    assert erf.__version__ == importlib.metadata.version("erf")


@pytest.mark.slow
def test_python_dash_m_erf_is_the_erf_command():
    p = subprocess.run([sys.executable, "-m", "erf", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("usage: erf ")
    for name in COMMANDS:
        assert name in p.stdout
    bad = subprocess.run([sys.executable, "-m", "erf", "rf", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("erf: error: unknown model 'nope'")


@pytest.mark.parametrize("argv", [["--help"], ["rf", "--help"], ["--version"]])
def test_help_and_version_answer_without_torch(argv):
    code = ("import sys, time\nt = time.perf_counter()\nimport erf.cli\n"
            f"try:\n    erf.cli.main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(time.perf_counter() - t, 'torch' in sys.modules, file=sys.stderr)")
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - start
    assert p.returncode == 0, p.stderr
    seconds, torch_loaded = p.stderr.split()
    assert torch_loaded == "False"
    assert float(seconds) < 1.0 and wall < 5.0  # the import and parse; the interpreter start is extra


def test_command_table_is_the_help_of_every_subcommand():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0]._choices_actions
    assert {a.dest: a.help for a in choices} == COMMANDS


def test_treat_as_kinds_in_the_help_are_the_rule_table():
    rf = build_parser(["rf"])._subparsers._group_actions[0].choices["rf"]
    line = next(a.help for a in rf._actions if "--treat-as" in a.option_strings)
    assert line.endswith("pointwise, global or identity") and list(TREAT_AS) == ["pointwise", "global", "identity"]


def test_every_public_name_of_erf_resolves():
    for name in erf.__all__:
        assert getattr(erf, name) is not None, name
    assert set(erf.__all__) <= set(dir(erf))
    assert erf.stats.__name__ == "erf.stats"  # submodules resolve as attributes too
    with pytest.raises(AttributeError):
        erf.no_such_name
