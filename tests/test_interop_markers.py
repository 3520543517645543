"""The ``interop`` marker (tests/conftest.py): skip with the reason in the main venv, fail under ``--no-skip-interop``.

Runs this repository's conftest on small test files, with timm made unimportable and torchvision
replaced by an empty module, so the same assertions hold in every venv.
"""

from __future__ import annotations

from pathlib import Path

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

TESTS = '''
import pytest

@pytest.mark.interop
def test_needs_both():
    assert True

@pytest.mark.interop("torchvision")
def test_skips_itself():
    pytest.skip("some reason inside the test")

def test_plain():
    pytest.skip("an ordinary skip")
'''


def _run(pytester, *args):
    pytester.makeconftest(CONFTEST.replace('pytest_plugins = ["pytester"]', "")
                          + "\nimport sys, types\nsys.modules['timm'] = None  # never importable here\n"
                          + "sys.modules['torchvision'] = types.ModuleType('torchvision')  # always importable\n"
                          + "_REASONS.clear()\n")
    pytester.makeini("[pytest]\nmarkers =\n    interop: needs timm and/or torchvision\n")
    pytester.makepyfile(test_x=TESTS)
    return pytester.runpytest_inprocess("-rs", *args)


def test_interop_tests_skip_with_the_reason_by_default(pytester):
    res = _run(pytester)
    res.assert_outcomes(skipped=3)  # needs timm: skipped at collection; the others skip themselves
    res.stdout.fnmatch_lines(["*timm is not installed here*"])


def test_no_skip_interop_turns_every_interop_skip_into_a_failure(pytester):
    res = _run(pytester, "--no-skip-interop")
    res.assert_outcomes(errors=1, failed=1, skipped=1)  # missing library: error in setup; a skip inside: failed
    res.stdout.fnmatch_lines(["*--no-skip-interop: timm*", "*an interop test skipped (*some reason inside the test)*"])


def test_bad_library_name_is_a_usage_error(pytester):
    pytester.makeconftest(CONFTEST.replace('pytest_plugins = ["pytester"]', ""))
    pytester.makepyfile(test_y="import pytest\n@pytest.mark.interop('tensorflow')\ndef test_a():\n    pass\n")
    res = pytester.runpytest_inprocess()
    assert res.ret != 0
    res.stderr.fnmatch_lines(["*@pytest.mark.interop takes timm, torchvision; got 'tensorflow'*"])
