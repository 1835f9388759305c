"""Where a pool's workers run (src/pool/wproc.h): in the python3 executable the
build was configured with (bettong._wproc), so CPU-bound Python runs as fast as
in a plain python3 process; or, with BETTONG_WORKER_HOST=embedded, in the
bettong binary's embedded interpreter. User code sees the same process either
way: sys.argv, sys.path[0], SIGINT's handler once `signal` is imported
(KeyboardInterrupt, as in any python3 process), no secret in the environment."""

import os
import random
import re
import signal
import sys

import cloudpickle
import pytest

from conftest import BIN, bin_sanitized
from executor_helpers import RESULT_TIMEOUT, TcpPool, sub_env

import bettong  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT
SECRET = "bt-host-secret-" + "%08x" % random.getrandbits(32)
REPO_PYTHON = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", "python"))


def sigint_caught():
    """Whether SIGINT has a handler in this process (the kernel's view)."""
    with open("/proc/self/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signal.SIGINT - 1)))


def describe_process(_):
    import posix
    return {
        "exe": os.path.realpath("/proc/self/exe"),
        "argv": list(sys.argv),
        "path0": os.path.realpath(sys.path[0]),
        "sigint_caught": sigint_caught(),
        "secret_vars": [k for k in os.environ if k == "BETTONG_SECRET"]
        + [k for k in posix.environ if k == b"BETTONG_SECRET"],
        "secret_values": [k for k, v in os.environ.items() if SECRET in v],
        "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
    }


def python_host():
    """The executable of a worker hosted by python3: the binary itself in a
    sanitizer build (`make asan`), whose workers stay embedded so that the
    sanitizers cover the worker's C code."""
    return os.path.realpath(BIN if bin_sanitized() else sys.executable)


def expected(exe):
    return {"exe": exe, "argv": [""], "path0": REPO_PYTHON, "sigint_caught": True,
            "secret_vars": [], "secret_values": [], "unbuffered": "1"}


@pytest.mark.parametrize("host", ["python", "embedded"])
def test_local_pool_workers_host(host, monkeypatch):
    monkeypatch.setenv("BETTONG_WORKER_HOST", host)
    monkeypatch.setenv("BETTONG_WORKER_START", "exec")  # forked: test_pool_forked.py
    want = python_host() if host == "python" else os.path.realpath(BIN)
    with bettong.FunctionExecutor(workers=1) as ex:
        got = ex.call_async(describe_process, 0).result(timeout=T)
    assert got == expected(want)


def test_joined_workers_run_in_python3_without_the_secret(procs, executors):
    """`bettong worker --join` passes the secret to its workers through the
    environment; the python3-hosted worker takes it out of os.environ (and
    posix.environ) before any user code runs."""
    pool = TcpPool(procs, SECRET)
    pool.add_worker(env={"BETTONG_WORKER_HOST": "python"})
    got = executors(pool.address).call_async(describe_process, 0).result(timeout=T)
    assert got == expected(python_host())


def test_unknown_worker_host_is_refused(procs):
    """A value that is neither 'python' nor 'embedded' starts no worker and
    says why (never silently one or the other)."""
    pool = TcpPool(procs, SECRET)
    w = pool.add_worker(env={"BETTONG_WORKER_HOST": "pypy"})
    said = re.compile(re.escape("BETTONG_WORKER_HOST is 'pypy': it takes 'python' or 'embedded'"))
    assert w.reader.wait_for(said, 15), w.reader.text()


def test_bettong_worker_connect_by_hand_is_embedded(procs, executors):
    """`bettong worker --connect` run by hand keeps the embedded interpreter."""
    pool = TcpPool(procs, SECRET)
    env = sub_env(extra={"BETTONG_SECRET": SECRET})
    procs.spawn([BIN, "worker", "--connect", pool.address], env=env)
    got = executors(pool.address).call_async(describe_process, 0).result(timeout=T)
    assert got == expected(os.path.realpath(BIN))


def worker_sys_path(_):
    return list(sys.path)


def test_python_host_under_safe_path_keeps_the_standard_path(monkeypatch):
    """With PYTHONSAFEPATH, `python3 -c` puts no current directory first: the
    library directory is then put before the standard entries, none replaced."""
    import ast
    import subprocess
    monkeypatch.setenv("PYTHONSAFEPATH", "1")
    monkeypatch.setenv("BETTONG_WORKER_HOST", "python")
    monkeypatch.setenv("BETTONG_WORKER_START", "exec")  # (a forked one has our sys.path)
    standard = subprocess.run([sys.executable, "-c", "import sys; print(repr(sys.path))"],
                              capture_output=True, text=True, check=True).stdout
    with bettong.FunctionExecutor(workers=1) as ex:
        path = ex.call_async(worker_sys_path, 0).result(timeout=T)
    assert os.path.realpath(path[0]) == REPO_PYTHON
    missing = [p for p in ast.literal_eval(standard) if p not in path]
    assert missing == [], (missing, path)
