"""The ``interop`` marker: tests that need timm and/or torchvision.

``@pytest.mark.interop`` (both libraries) or ``@pytest.mark.interop("timm")`` /
``@pytest.mark.interop("torchvision")`` (that one). Where a library the test needs does not
import (the main venv: torch 2.13 CPU, no timm), the test skips with the reason. CI's interop
stage (``.ci/interop``: torch 2.14.1, torchvision 0.29.1, timm) runs
``pytest -m interop --no-skip-interop``: there a missing library, an ``importorskip`` or any
other skip of an interop test is a failure, so nothing in that stage passes by skipping.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading

import pytest

pytest_plugins = ["pytester"]  # tests/test_interop_markers.py runs this file on small test files

LIBRARIES = ("timm", "torchvision")
_REASONS: dict[str, str | None] = {}


def import_reason(name: str) -> str | None:
    """Why ``name`` cannot be used here (None: it imports). Imported once per session."""
    if name not in _REASONS:
        try:
            importlib.import_module(name)
            _REASONS[name] = None
        except ModuleNotFoundError:
            _REASONS[name] = f"{name} is not installed here (CI's interop stage runs it: .ci/interop)"
        except Exception as exc:  # e.g. a torchvision built for another torch
            first = " ".join(str(exc).split())[:100]
            _REASONS[name] = f"{name} does not import here ({type(exc).__name__}: {first}); CI's interop stage runs it"
    return _REASONS[name]


def pytest_addoption(parser):
    parser.addoption("--no-skip-interop", action="store_true", default=False,
                     help="interop tests (timm/torchvision) fail instead of skipping where a library is missing "
                          "or a test skips (CI's interop stage)")


def _needs(item) -> tuple[str, ...]:
    marker = item.get_closest_marker("interop")
    if marker is None:
        return ()
    names = tuple(marker.args) or LIBRARIES
    bad = [n for n in names if n not in LIBRARIES]
    if bad:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.interop takes {', '.join(LIBRARIES)}; got {bad[0]!r}")
    return names


def _missing(item) -> str | None:
    """The reason a library the interop test ``item`` needs does not import here (None: all import)."""
    return next((r for r in map(import_reason, _needs(item)) if r is not None), None)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--no-skip-interop"):
        return  # pytest_runtest_setup fails them instead
    for item in items:
        reason = _missing(item)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_runtest_setup(item):
    if item.config.getoption("--no-skip-interop"):
        reason = _missing(item)
        if reason is not None:
            pytest.fail(f"--no-skip-interop: {reason}", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("interop")
            and item.config.getoption("--no-skip-interop")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"--no-skip-interop: an interop test skipped ({reason})"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty caches under tmp_path, and every HTTP(S) request sent to a closed local port."""
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:  # read at import time: set the module's own values too
        monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True, raising=False)
        monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)
    return tmp_path


@contextlib.contextmanager
def default_sigint():
    """Python's own Ctrl-C handler while inside: a shell starts background jobs with SIGINT ignored, and the
    CLI tells a real Ctrl-C from code raising KeyboardInterrupt only over the default handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True, scope="session")
def _default_sigint_session():
    """For module- and session-scoped fixtures (they run before function-scoped ones)."""
    with default_sigint():
        yield


@pytest.fixture(autouse=True)
def _default_sigint():
    """In every test (a test may have changed the handler)."""
    with default_sigint():
        yield
