"""pytest plugin used by bench/dataclay_functional.py (not a test module of ours).

dataClay's functional tests run with pytest from their own checkout, with
--noconftest (their conftest starts docker services and needs grpc) and
`-p dataclay_functional_plugin`. This plugin stands in for their conftest:

  - the fixtures their tests use (`client`, and `mds_connection`,
    `wait_dataclay` that it depends on) on the Bettong service that the
    harness started: `dataclay.Client(host=..., port=...)`, `start()` before the
    first test, `stop()` after the last, as their conftest does;
  - their model packages (src/dataclay/contrib/modeltest/...) are imported from
    their checkout, unchanged, as `dataclay.contrib.*`: the harness's models
    directory (symlinks to their contrib's packages) is on sys.path after ours,
    and its dataclay/contrib is added to the __path__ of Bettong's
    `dataclay.contrib` if it does not find them by itself, or, when Bettong has
    no such package, to a bare stand-in package (recorded as a layout gap, or
    refused with --strict-layout); the stores find them only through Bettong's
    own `dataclay.contrib`;
  - every collection and test report is appended as one JSON line to
    $BETTONG_DCF_RESULTS, for the harness to classify;
  - a test running longer than $BETTONG_DCF_TEST_TIMEOUT seconds is interrupted
    (SIGALRM) so that one hung call does not stop the run.

Environment (set by the harness): BETTONG_DCF_MODELS, BETTONG_DCF_BACKENDS
("host:port,..."; the client connects to the first), BETTONG_DCF_RESULTS,
BETTONG_DCF_PYTHON_DIR, BETTONG_DCF_STRICT_LAYOUT, BETTONG_DCF_TEST_TIMEOUT.
"""

import json
import os
import re
import signal
import sys
import types

import pytest

_MODELS = os.environ["BETTONG_DCF_MODELS"]
_RESULTS = os.environ["BETTONG_DCF_RESULTS"]
_BACKENDS = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1]))
             for a in os.environ["BETTONG_DCF_BACKENDS"].split(",") if a]
_TEST_TIMEOUT = int(os.environ.get("BETTONG_DCF_TEST_TIMEOUT", "0"))


def _record(**fields):
    with open(_RESULTS, "a") as f:
        f.write(json.dumps(fields) + "\n")


def _message(report):
    """The exception line of a failed report ('Type: message'), else its text."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        if crash.message in ("AssertionError", "assert False"):
            # A bare assert: where it failed, in the store's traceback if there is one.
            text = str(report.longrepr)
            remote = re.findall(r'File "([^"]+)", line (\d+).*\n\s*(.+)', text)
            if remote:
                path, line, src = remote[-1]
                return f"{crash.message} at {os.path.basename(path)}:{line}: {src.strip()}"
            return f"{crash.message} at {_source_line(crash.path, crash.lineno)}"
        return crash.message
    text = str(report.longrepr)
    errs = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    return " | ".join(errs) if errs else text.strip().splitlines()[-1] if text.strip() else ""


def _source_line(path, lineno):
    """'file:line: source' of a failing assert (lineno is 1-based)."""
    try:
        with open(path) as f:
            text = f.read().splitlines()[lineno - 1].strip()
    except (OSError, IndexError, TypeError):
        text = "?"
    return f"{os.path.basename(str(path))}:{lineno}: {text}"


def _mount_models():
    """Make `dataclay` Bettong's package and `dataclay.contrib.*` their models."""
    import dataclay

    ours = os.path.realpath(os.environ["BETTONG_DCF_PYTHON_DIR"])
    where = os.path.realpath(dataclay.__file__)
    if not where.startswith(ours + os.sep):
        raise pytest.UsageError(f"`import dataclay` resolves to {where}, not to Bettong's "
                                f"package under {ours}")
    try:
        import dataclay.contrib as contrib
        standin = False
    except ImportError as e:
        if os.environ.get("BETTONG_DCF_STRICT_LAYOUT") == "1":
            _record(kind="layout", name="dataclay.contrib", standin=False, error=str(e))
            return
        contrib = types.ModuleType("dataclay.contrib",
                                   "stand-in made by dataclay_functional_plugin")
        contrib.__path__ = []
        sys.modules["dataclay.contrib"] = contrib
        dataclay.contrib = contrib
        standin = True
    paths = [os.path.realpath(p) for p in contrib.__path__]
    if os.path.realpath(_MODELS) not in paths:
        contrib.__path__.append(_MODELS)
    _record(kind="layout", name="dataclay.contrib", standin=standin,
            dataclay_file=where)


def pytest_configure(config):
    _mount_models()


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def mds_connection():
    """(host, port) the client connects to: the first backend."""
    return _BACKENDS[0]


@pytest.fixture(scope="session")
def wait_dataclay(mds_connection):
    """The harness waited for every store to listen before starting pytest."""
    return None


@pytest.fixture(scope="session")
def client(wait_dataclay, mds_connection):
    import dataclay

    host, port = mds_connection
    c = dataclay.Client(host=host, port=port)
    c.start()
    yield c
    c.stop()


# ---------------------------------------------------------------- reports

def pytest_collectreport(report):
    if report.failed:
        _record(kind="collect", nodeid=report.nodeid, outcome="error",
                message=_message(report))


def pytest_runtest_logreport(report):
    if report.when == "call":
        outcome = report.outcome            # passed, failed, skipped
    elif report.failed:
        outcome = "error"                   # a fixture failed (setup or teardown)
    elif report.skipped:
        outcome = "skipped"
    else:
        return
    _record(kind="test", nodeid=report.nodeid, when=report.when, outcome=outcome,
            message=_message(report) if report.failed else "",
            duration=round(report.duration, 3))


class _TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise _TestTimeout(f"the test ran longer than {_TEST_TIMEOUT} s (harness timeout)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if _TEST_TIMEOUT <= 0:
        yield
        return
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(_TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
