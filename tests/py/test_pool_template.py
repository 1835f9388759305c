"""A local pool's workers are forked from its worker template (src/pool/tmpl.h),
exec'd by the pool or forked from the caller (bettong._wproc.start_pool):
they are still the pool's own children (it reaps, restarts and kills them), a
worker that dies is forked again, and a pool whose template is gone goes on
exec'ing its workers."""

import os
import re
import signal
import time

import pytest

import executor_helpers  # noqa: F401  (puts python/ on sys.path)
from conftest import wait_until
import bettong

TIMEOUT = 30


@pytest.fixture(autouse=True, params=["fork", "exec"])
def pool_debug_log(request, monkeypatch):
    """The pools started here log which workers they fork (read with capfd).
    Each test runs with the template forked from this process (the default,
    test_pool_forked.py) and with an exec'd one (BETTONG_WORKER_START=exec)."""
    monkeypatch.setenv("BETTONG_POOL_LOG_LEVEL", "debug")
    monkeypatch.setenv("BETTONG_WORKER_START", request.param)


def _status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return line.split()[1]
    except OSError:
        return None
    return None


def _children(pid):
    """{child pid: its command line} of a process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _status(entry, "PPid") == str(pid):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out[int(entry)] = f.read().rstrip(b"\0").replace(b"\0", b" ").decode()
            except OSError:
                pass
    return out


def _where(_):
    return os.getpid(), os.getppid()


def _forked(err, index):
    """pids of local-<index> the pool's debug log says were forked / exec'd."""
    forked = re.findall(r"started local worker local-%d \(pid (\d+), forked\)" % index, err)
    execd = re.findall(r"started local worker local-%d \(pid (\d+)\)" % index, err)
    return [int(p) for p in forked], [int(p) for p in execd]


def _template(pool_pid):
    found = [p for p, cmd in _children(pool_pid).items() if "--template" in cmd]
    assert len(found) == 1, _children(pool_pid)
    return found[0]


def _worker_pids(ex, n):
    """The pids of the n workers, each seen answering a call."""
    seen = {}
    deadline = time.monotonic() + TIMEOUT
    while len(seen) < n:
        assert time.monotonic() < deadline, seen
        for pid, ppid in ex.get_result(ex.map(_where, range(8))):
            seen[pid] = ppid
    return seen


def _call_after_kill(ex):
    """(pid, ppid) of a worker answering, once the pool has seen the death (a
    call it sent before that fails with WorkerDied)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return ex.call_async(_where, 0).result(timeout=TIMEOUT)
        except bettong.WorkerDied:
            assert time.monotonic() < deadline


def _wait_gone(pid):
    wait_until(lambda: _status(pid, "State") in (None, "Z"), TIMEOUT, f"{pid} to be gone",
               interval=0.01)


def test_workers_are_the_pools_children_forked_from_the_template(capfd):
    with bettong.FunctionExecutor(workers=2) as ex:
        assert ex.call_async(_where, 0).result(timeout=TIMEOUT)
        pool_pid = ex._client.local.proc.pid
        workers = _worker_pids(ex, 2)  # (each has shown its own command line)
        template = _template(pool_pid)
        # forked (the template's command line), yet the pool is their parent
        assert set(workers.values()) == {pool_pid}
        err = capfd.readouterr().err
        for i, pid in enumerate(sorted(workers, key=lambda p: _children(pool_pid)[p])):
            assert pid != template
            assert _status(pid, "PPid") == str(pool_pid)
            # shown as an exec'd worker would be
            assert _children(pool_pid)[pid].endswith(f"--name local-{i + 1} --log-level debug")
            assert _forked(err, i + 1) == ([pid], [])


def test_a_killed_worker_is_forked_again(capfd):
    with bettong.FunctionExecutor(workers=1) as ex:
        (old,) = _worker_pids(ex, 1)
        pool_pid = ex._client.local.proc.pid
        template = _template(pool_pid)
        os.kill(old, signal.SIGKILL)
        _wait_gone(old)
        pid, ppid = _call_after_kill(ex)
        assert pid != old and ppid == pool_pid
        assert _forked(capfd.readouterr().err, 1) == ([old, pid], [])
        assert _template(pool_pid) == template


def test_without_its_template_the_pool_execs_workers(capfd):
    with bettong.FunctionExecutor(workers=1) as ex:
        (old,) = _worker_pids(ex, 1)
        pool_pid = ex._client.local.proc.pid
        template = _template(pool_pid)
        os.kill(template, signal.SIGKILL)
        _wait_gone(template)
        assert ex.call_async(_where, 0).result(timeout=TIMEOUT)[0] == old  # unharmed
        os.kill(old, signal.SIGKILL)
        _wait_gone(old)
        pid, ppid = _call_after_kill(ex)
        assert pid != old and ppid == pool_pid
        err = capfd.readouterr().err
        assert _forked(err, 1) == ([old], [pid])
        assert "the worker template (pid %d) killed by signal 9" % template in err


def test_an_executor_closed_unused_stops_its_pool():
    ex = bettong.FunctionExecutor(workers=1)
    local = ex._starting  # started when the executor was made
    assert local.proc.poll() is None
    ex.close()
    assert local.proc.wait(timeout=TIMEOUT) is not None
    assert not os.path.exists(local.dir)


def test_a_pool_that_stopped_waiting_is_started_again():
    """A pool started with its executor gives up after 120 s without a client
    (--exit-with-client); the first call then starts another."""
    with bettong.FunctionExecutor(workers=1) as ex:
        gone = ex._starting
        gone.proc.terminate()  # as when it gives up
        gone.proc.wait(timeout=TIMEOUT)
        pid, ppid = ex.call_async(_where, 0).result(timeout=TIMEOUT)
        assert ppid == ex._client.local.proc.pid != gone.proc.pid
        assert not os.path.exists(gone.dir)


def test_the_executor_module_starts_light():
    """What `bettong.FunctionExecutor` imports before an executor starts its
    pool: nothing heavy (the rest comes once the pool is starting)."""
    import subprocess
    import sys
    code = ("import sys; import bettong; bettong.FunctionExecutor; "
            "heavy = ['cloudpickle', 'bettong._bettong', 'concurrent.futures', 'bettong.futures', "
            "'inspect', 'email.utils', 'tempfile', 'shutil']; "
            "print([m for m in heavy if m in sys.modules])")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(bettong.__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
