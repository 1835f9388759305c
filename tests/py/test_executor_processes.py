"""User programs as real processes: functions from __main__, modules imported by
reference, a caller that is killed (no orphans), Ctrl-C, the progress bar with and
without a terminal, and a 200 MB argument and result within ~3x the payload in
the caller's memory.

Each program gets a unique BETTONG_TEST_MARKER in its environment; the pool and
workers it starts inherit it, which is how they are found (and only they)."""

import json
import os
import pty
import select
import signal
import subprocess
import time

import pytest

from executor_helpers import (EXEC_APPS, PYTHON, REPO, bettong_procs, descendants,
                              kill_group, kill_refs, marked, new_marker, run_script,
                              sub_env, wait_all_gone)

LONG_CALLS = EXEC_APPS / "long_calls.py"


# ------------------------------------------------------------------ a running program

class Program:
    """A user program started in its own session, stdout read line by line."""

    def __init__(self, script, args=(), marker=None):
        self.marker = marker or new_marker()
        self.proc = subprocess.Popen([PYTHON, str(script)] + [str(a) for a in args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=sub_env(self.marker),
                                     cwd=str(REPO), start_new_session=True)
        self.lines = []
        self.seen = set()  # every process of this program ever seen

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                raw = self.proc.stdout.readline()
                if not raw:
                    return None
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                return line

    def expect(self, prefix, timeout=30):
        while True:
            line = self.readline(timeout)
            if line is None:
                self.fail("no line starting with %r" % prefix)
            if line.startswith(prefix):
                return line

    def processes(self):
        """Its pool and workers now: by the environment marker and the parent chain."""
        now = set(bettong_procs(marked(self.marker))) | set(bettong_procs(descendants(self.proc.pid)))
        self.seen |= now
        return now

    def stderr_text(self):
        try:
            err = self.proc.stderr.read() if self.proc.poll() is not None else b""
        except (OSError, ValueError):
            err = b""
        return err.decode("utf-8", "replace")

    def fail(self, why):
        kill_group(self.proc)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        pytest.fail("%s\n--- stdout:\n%s\n--- stderr:\n%s"
                    % (why, "\n".join(self.lines), self.stderr_text()[-4000:]))

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail("the program did not exit within %.0f s" % timeout)

    def cleanup(self):
        kill_group(self.proc)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        kill_refs(self.seen | set(bettong_procs(marked(self.marker))))
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def programs():
    made = []

    def start(script, args=()):
        p = Program(script, args)
        made.append(p)
        return p

    try:
        yield start
    finally:
        for p in made:
            p.cleanup()


def ready_pids(line):
    return json.loads(line.split(" ", 1)[1])


# ------------------------------------------------------------------ functions from __main__

def test_lambdas_closures_nested_in_main():
    r = run_script(EXEC_APPS / "main_lambdas.py")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"lambda": [3, 6, 9], "closure": [106, 107], "nested": [21, 41],
                   "method": 20, "main_func": 2, "remote_pid_differs": True,
                   "map_reduce": 90, "captured": 3,
                   # an exception class of the script: re-raised with the same type
                   "main_exc": ["MainError", "main error 5", True]}, out


def test_modules_on_callers_sys_path_import_by_reference(tmp_path):
    (tmp_path / "bt_exec_user_mod.py").write_text(
        "import os\n"
        "def negate(x):\n    return -x\n"
        "def where(_x):\n    return os.path.abspath(__file__)\n")
    r = run_script(EXEC_APPS / "import_by_ref.py", [tmp_path])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["sibling"] == [3, 6]
    assert out["user_mod"] == [-1, -2]
    assert out["user_mod_file"] == str(tmp_path / "bt_exec_user_mod.py")


# ------------------------------------------------------------------ no orphans

@pytest.mark.parametrize("mode,sig", [("sleep", signal.SIGKILL), ("idle", signal.SIGKILL),
                                      ("sleep", signal.SIGTERM)],
                         ids=["busy-SIGKILL", "idle-SIGKILL", "busy-SIGTERM"])
def test_caller_killed_leaves_no_orphans(programs, tmp_path, mode, sig):
    prog = programs(LONG_CALLS, [tmp_path, mode])
    pids = ready_pids(prog.expect("READY"))
    procs = prog.processes()
    assert procs, "no pool/worker process found for the program"
    assert set(pids) <= {r.pid for r in procs}, (
        "the workers running the calls (%s) were not found among %s" % (pids, procs))
    os.kill(prog.proc.pid, sig)          # the caller only, not its process group
    prog.wait(10)
    wait_all_gone(procs, 5, "pool/worker processes after the caller got signal %d" % sig)
    assert not bettong_procs(marked(prog.marker))


def test_exit_without_close_leaves_no_orphans(programs, tmp_path):
    prog = programs(LONG_CALLS, [tmp_path, "noclose"])
    prog.expect("DONE")
    procs = prog.processes()
    t0 = time.monotonic()
    rc = prog.wait(15)
    assert rc == 0, prog.stderr_text()
    assert time.monotonic() - t0 < 5, "interpreter exit took %.1f s" % (time.monotonic() - t0)
    wait_all_gone(procs, 5, "pool/worker processes after the program returned")
    assert not bettong_procs(marked(prog.marker))


# ------------------------------------------------------------------ Ctrl-C

@pytest.mark.parametrize("target", ["pid", "group"])
def test_ctrl_c_in_get_result(programs, tmp_path, target):
    prog = programs(LONG_CALLS, [tmp_path, "getresult", 6])
    prog.expect("READY")
    procs = prog.processes()
    assert procs
    time.sleep(0.3)                      # well inside get_result
    t0 = time.monotonic()
    if target == "pid":
        os.kill(prog.proc.pid, signal.SIGINT)
    else:                                # what a terminal does: the whole foreground group
        os.killpg(prog.proc.pid, signal.SIGINT)
    prog.expect("INTERRUPTED", timeout=10)
    closed = prog.expect("CLOSED", timeout=10)
    rc = prog.wait(10)
    elapsed = time.monotonic() - t0
    err = prog.stderr_text()
    assert rc == 0, err
    assert elapsed < 8, "Ctrl-C took %.1f s to stop the pool (%s)" % (elapsed, closed)
    assert "Traceback" not in err, err
    wait_all_gone(procs, 5, "pool/worker processes after Ctrl-C")
    assert not bettong_procs(marked(prog.marker))
    # what had not started was cancelled: only the two running calls ever started
    time.sleep(0.3)
    started = sorted(n for n in os.listdir(tmp_path) if n.startswith("started-"))
    assert len(started) == 2, started


def test_ctrl_c_uncaught(programs, tmp_path):
    prog = programs(LONG_CALLS, [tmp_path, "uncaught", 4])
    prog.expect("READY")
    procs = prog.processes()
    time.sleep(0.3)
    os.kill(prog.proc.pid, signal.SIGINT)
    rc = prog.wait(10)
    err = prog.stderr_text()
    assert rc != 0
    assert "KeyboardInterrupt" in err, err
    wait_all_gone(procs, 5, "pool/worker processes after an uncaught Ctrl-C")


# ------------------------------------------------------------------ progress bar

def test_no_progress_bar_when_not_a_tty():
    r = run_script(EXEC_APPS / "progress.py")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[0, 2, 4, 6, 8, 10]\n", repr(r.stdout)
    assert r.stderr == "", "output on stderr without a terminal: %r" % r.stderr[:500]


def run_in_pty(args, timeout=40):
    """Run a program with stdin/stdout/stderr on a pseudo-terminal; returns
    (exit code, everything it wrote)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([PYTHON] + [str(a) for a in args], stdin=slave, stdout=slave,
                         stderr=slave, env=sub_env(new_marker(), {"TERM": "xterm", "COLUMNS": "80"}),
                         cwd=str(REPO), start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
        else:
            kill_group(p)
            pytest.fail("program on a terminal did not finish in %d s" % timeout)
        rc = p.wait(10)
    finally:
        kill_group(p)
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_on_a_tty():
    rc, out = run_in_pty([EXEC_APPS / "progress.py"])
    assert rc == 0, out
    text = out.replace("\r\n", "\n")
    assert "[0, 2, 4, 6, 8, 10]" in text
    extra = text.replace("[0, 2, 4, 6, 8, 10]\n", "")
    assert extra.strip(), "no progress bar drawn on a terminal: %r" % out
    assert "6" in extra, "the bar does not show the number of calls: %r" % extra


def test_progress_bar_off_on_a_tty():
    rc, out = run_in_pty([EXEC_APPS / "progress.py", "off"])
    assert rc == 0, out
    assert out.replace("\r\n", "\n") == "[0, 2, 4, 6, 8, 10]\n", repr(out)


# ------------------------------------------------------------------ large payloads

def test_200mb_argument_and_result():
    mb = 200
    r = run_script(EXEC_APPS / "big_payload.py", [mb], timeout=55)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["echo_ok"], out
    assert out["result_ok"], out
    extra_mb = (out["hwm_kb"] - out["base_kb"]) / 1024
    assert extra_mb < 3 * mb, (
        "the caller's peak RSS grew by %.0f MB for a %d MB payload (limit 3x): %s"
        % (extra_mb, mb, out))


# ------------------------------------------------------------------ a forked caller

FORKED_CALLER = r'''
import json, os, sys
import bettong

def pid_of(x):
    return os.getppid()

ex = bettong.FunctionExecutor(workers=1)
# call_async twice: the second takes the prepared (hot) path, which is the one
# that must notice the fork below.
parent_pools = {ex.call_async(pid_of, 0).result(), ex.call_async(pid_of, 1).result()}
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    try:
        # the parent's pool connection is not the child's: a pool of its own
        out = {"child_pool": ex.call_async(pid_of, 2).result(),
               "child_map": ex.get_result(ex.map(pid_of, [3]))[0]}
    except BaseException as e:
        out = {"error": repr(e)}
    os.write(w, json.dumps(out).encode())
    os._exit(0)
os.close(w)
got = b""
while True:
    b = os.read(r, 4096)
    if not b:
        break
    got += b
os.waitpid(child, 0)
child_out = json.loads(got)
after = ex.call_async(pid_of, 4).result()  # the parent's own pool still serves it
ex.close()
print(json.dumps({"parent_pools": len(parent_pools), "same_after": after in parent_pools,
                  "child_other_pool": child_out.get("child_pool") not in parent_pools,
                  "child_map_same_pool": child_out.get("child_map") == child_out.get("child_pool"),
                  "child": child_out}))
'''


def test_forked_caller_gets_its_own_pool():
    """A process forked after call_async has run (so its fast path is prepared)
    does not send on its parent's connection: its calls start a pool of its own,
    and the parent's keeps working."""
    r = run_script(FORKED_CALLER)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in out["child"], out
    assert (out["parent_pools"], out["same_after"], out["child_other_pool"],
            out["child_map_same_pool"]) == (1, True, True, True), out
