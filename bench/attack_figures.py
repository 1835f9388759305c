#!/usr/bin/env python3
"""Attack figures for the connection limits (run by hand; prints a table).

(1) Memory amplification: N connections each send a header declaring the
    largest frame the service takes, then one byte, and stay open; the
    service's RSS (VmRSS, and VmHWM) is read once it stops growing, then a
    legitimate client does its work (within a time limit).
      - stream: a source of `bettong run examples/reverse/reverse.py`
        (>I header, --max-frame default 16 MiB)
      - pool / store: after a HELLO (loopback, no secret), the frame limits
        after authentication (pool 2047 MiB, store 1 GiB)
(2) Flood: F idle connections held on a service's port, then a legitimate
    client of it (stream source, pool, store, and a `--workers 2` cluster's
    worker control port with the client on the source port).

A guard stops opening attack connections once the service's RSS passes
--rss-guard-mb (the machine has no swap), and says so in the table.

    /usr/bin/python3 bench/attack_figures.py --bin build/bettong \
        [--n 100,1000] [--hello-n 3] [--flood 2000] [--only amp,flood]
"""

import argparse
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "py"))
from authwire import auth_handshake, pool_identity, store_identity  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PYTHON = "/usr/bin/python3"
REVERSE = REPO / "examples" / "reverse" / "reverse.py"
CLIENT_TIMEOUT = 20.0


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def settled_rss(pid, timeout=10.0):
    """VmRSS in MB once two readings 0.3 s apart differ by under 1 %."""
    last = status_kb(pid, "VmRSS")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = status_kb(pid, "VmRSS")
        if now is None or last is None:
            return None
        if abs(now - last) <= last * 0.01:
            return now / 1024
        last = now
    return last / 1024


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def children(parent):
    kids = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open("/proc/%s/stat" % e) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                        kids.append(int(e))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def authenticated(port, service):
    """A connection to a loopback pool or store (no secret) that passed the
    handshake (tests/py/authwire.py) and was welcomed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    identity = pool_identity(name="attack") if service == "pool" else store_identity("attack")
    answer = auth_handshake(s, service, identity)
    if not answer or answer[0] != 2:
        raise OSError("the %s did not welcome us: %r" % (service, answer))
    return s


# ------------------------------------------------------------------ services

# The soft open-file limit the services start with (--service-nofile): 1024,
# the usual default, so the figures do not depend on the shell's ulimit.
SERVICE_NOFILE = 1024


def service_limits():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(SERVICE_NOFILE, hard), hard))


class Service:
    def __init__(self, args, log, env=None, cwd=None):
        self.log_path = log
        self.logf = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=env, cwd=cwd or str(REPO), start_new_session=True,
                                     preexec_fn=service_limits)

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_log(self, rx, timeout=20):
        return wait_for(lambda: re.search(rx, self.log()), timeout, rx)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(10)
        self.logf.close()


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "python")
    for k in ("BETTONG_SECRET", "BETTONG_STORE_SECRET", "BETTONG_CLUSTER_SECRET"):
        e.pop(k, None)
    return e


def start_receiver(binary, tmp):
    out = Path(tmp) / ("recv-%d.out" % time.monotonic_ns())
    r = Service([binary, "receive", "--listen", "127.0.0.1:0", "--out", str(out)],
                str(out) + ".log", env=env())
    m = r.wait_log(r"listening on \S+:(\d+)")
    return r, int(m.group(1)), out


def start_stream(binary, tmp, extra=()):
    recv, rport, out = start_receiver(binary, tmp)
    port = free_port()
    eng = Service([binary, "run", str(REVERSE), "--in", "127.0.0.1:%d" % port,
                   "--out", "127.0.0.1:%d" % rport] + list(extra),
                  str(Path(tmp) / ("run-%d.log" % port)), env=env())
    eng.wait_log(r"listening on 127\.0\.0\.1:%d" % port)
    eng.port, eng.recv, eng.out, eng.pid = port, recv, out, eng.proc.pid
    return eng


def start_pool(binary, tmp, extra=()):
    port = free_port()
    p = Service([binary, "pool", "--listen", "127.0.0.1:%d" % port, "--workers", "1"]
                + list(extra), str(Path(tmp) / ("pool-%d.log" % port)), env=env())
    p.wait_log(r"listening on")
    p.port, p.pid = port, p.proc.pid
    return p


def start_store(binary, tmp, extra=()):
    port = free_port()
    d = Path(tmp) / ("store-%d" % port)
    p = Service([binary, "store", "--listen", "127.0.0.1:%d" % port, "--dir", str(d)]
                + list(extra), str(Path(tmp) / ("store-%d.log" % port)), env=env(), cwd=tmp)
    p.wait_log(r"listening on")
    p.port, p.pid = port, p.proc.pid
    return p


def start_cluster(binary, tmp, extra=()):
    recv, rport, out = start_receiver(binary, tmp)
    port = free_port()
    eng = Service([binary, "run", str(REVERSE), "--in", "127.0.0.1:%d" % port,
                   "--out", "127.0.0.1:%d" % rport, "--workers", "2", "--log-level", "info"]
                  + list(extra), str(Path(tmp) / ("cluster-%d.log" % port)), env=env())
    eng.wait_log(r"cluster formed|formed with 2 workers", 30)
    m = eng.wait_log(r"worker '(\S+)' \(control (127\.0\.0\.1:\d+), data")
    eng.port, eng.recv, eng.out = port, recv, out
    eng.control = m.group(2)
    return eng


# ------------------------------------------------------------------ legitimate clients

def stream_client(svc, tag, timeout=CLIENT_TIMEOUT):
    """Frames to the source (retrying a refused connection), then their output
    at the receiver. Returns seconds, or None on failure."""
    t0 = time.monotonic()
    words = ["%s-%d" % (tag, i) for i in range(20)]
    data = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words)
    want = [w[::-1] for w in words]
    while time.monotonic() - t0 < timeout:
        try:
            with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(5)
                try:
                    closed_early = s.recv(1) == b""  # the source never answers
                except socket.timeout:
                    closed_early = False
        except OSError:
            time.sleep(0.1)
            continue
        deadline = min(t0 + timeout, time.monotonic() + 5)
        while time.monotonic() < deadline:
            text = svc.out.read_text(errors="replace") if svc.out.exists() else ""
            if all(w in text for w in want):
                return time.monotonic() - t0
            time.sleep(0.05)
        del closed_early
    return None


def script_client(code, timeout=CLIENT_TIMEOUT):
    t0 = time.monotonic()
    try:
        p = subprocess.run([PYTHON, "-c", code], env=env(), capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if p.returncode != 0 or "OK" not in p.stdout:
        sys.stderr.write("client failed: %s%s\n" % (p.stdout[-500:], p.stderr[-500:]))
        return None
    return time.monotonic() - t0


def pool_client(svc, timeout=CLIENT_TIMEOUT):
    return script_client(
        "import bettong\n"
        "e = bettong.FunctionExecutor(address='127.0.0.1:%d', secret=None)\n"
        "assert e.call_async(abs, -7).result(timeout=%d) == 7\n"
        "e.close()\nprint('OK')\n" % (svc.port, timeout), timeout)


def store_client(svc, timeout=CLIENT_TIMEOUT):
    return script_client(
        "from bettong.objects import Persistent, connect, active\n"
        "class Box(Persistent):\n"
        "    n: int\n"
        "    @active\n"
        "    def bump(self):\n"
        "        self.n += 1\n"
        "        return self.n\n"
        "connect('127.0.0.1:%d')\n"
        "b = Box(); b.n = 1; b.make_persistent()\n"
        "assert b.bump() == 2\nprint('OK')\n" % svc.port, timeout)


# ------------------------------------------------------------------ attacks

def amplify(svc, n, header, service=None, guard_mb=8000):
    """n connections: [the handshake of `service`], the header; a moment later one byte (a
    read of its own, so the service knows the declared size when it reads it).
    Returns (sockets, RSS MB, HWM MB, note)."""
    socks, note = [], ""
    for i in range(n):
        try:
            if service:
                s = authenticated(svc.port, service)
            else:
                s = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
            s.sendall(header)
            socks.append(s)
        except OSError as e:
            note = "connection %d failed: %s" % (i + 1, e)
            break
    time.sleep(0.3)
    for i, s in enumerate(socks):
        try:
            s.sendall(b"x")
        except OSError as e:
            note = "byte %d failed: %s" % (i + 1, e)
            break
        if i % 10 == 9:
            time.sleep(0.01)
            rss = status_kb(svc.pid, "VmRSS")
            if rss is None:
                note = "service died"
                break
            if rss / 1024 > guard_mb:
                note = "guard: RSS passed %d MB after %d bytes sent" % (guard_mb, i + 1)
                break
    rss = settled_rss(svc.pid) if svc.proc.poll() is None else None
    hwm = status_kb(svc.pid, "VmHWM")
    return socks, rss, (hwm or 0) / 1024, note


def flood(port, n):
    """n idle connections (non-blocking connects); returns the sockets."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    time.sleep(0.5)  # a benchmark, not a test: give the service time to accept them
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def fmt(v, unit=""):
    if v is None:
        return "FAILED"
    return "%.1f%s" % (v, unit)


def run_amp(args, tmp, rows):
    ns = [int(x) for x in args.n.split(",")]
    for n in ns:
        svc = start_stream(args.bin, tmp)
        try:
            base = settled_rss(svc.pid)
            socks, rss, hwm, note = amplify(svc, n, struct.pack(">I", 16 << 20),
                                            guard_mb=args.rss_guard_mb)
            t = stream_client(svc, "amp%d" % n)
            rows.append(("amplification: stream source, %d x (16 MiB header + 1 byte)" % n,
                         "%d opened; RSS %s MB -> %s MB (HWM %.0f MB) %s"
                         % (len(socks), fmt(base), fmt(rss), hwm, note),
                         "served in %s" % fmt(t, " s")))
            close_all(socks)
        finally:
            svc.stop()
            svc.recv.stop()
    for name, start, service, header, client in (
            ("pool", start_pool, "pool", struct.pack(">I", 2047 << 20), pool_client),
            ("store", start_store, "store", struct.pack(">I", 1 << 30), store_client)):
        n = args.hello_n
        svc = start(args.bin, tmp)
        try:
            base = settled_rss(svc.pid)
            socks, rss, hwm, note = amplify(svc, n, header, service=service,
                                            guard_mb=args.rss_guard_mb)
            t = client(svc)
            rows.append(("amplification: %s after the handshake, %d x (max-frame header + 1 byte)"
                         % (name, n),
                         "%d opened; RSS %s MB -> %s MB (HWM %.0f MB) %s"
                         % (len(socks), fmt(base), fmt(rss), hwm, note),
                         "served in %s" % fmt(t, " s")))
            close_all(socks)
        finally:
            svc.stop()


def run_flood(args, tmp, rows):
    f = args.flood
    cases = (("stream source", start_stream, lambda s: s.port, lambda s: stream_client(s, "fl")),
             ("pool", start_pool, lambda s: s.port, pool_client),
             ("store", start_store, lambda s: s.port, store_client),
             ("cluster worker control port (client on the source)", start_cluster,
              lambda s: int(s.control.rsplit(":", 1)[1]), lambda s: stream_client(s, "cl")))
    for name, start, port_of, client in cases:
        svc = start(args.bin, tmp)
        socks = []
        try:
            socks = flood(port_of(svc), f)
            pids = [svc.proc.pid] + children(svc.proc.pid)
            fds = max(fd_count(p) or 0 for p in pids)
            t = client(svc)
            rows.append(("flood: %d idle connections on the %s" % (f, name),
                         "service fds %d (the busiest process)" % fds,
                         "served in %s" % fmt(t, " s")))
        finally:
            close_all(socks)
            svc.stop()
            if hasattr(svc, "recv"):
                svc.recv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(REPO / "build" / "bettong"))
    ap.add_argument("--n", default="100,1000", help="stream amplification connection counts")
    ap.add_argument("--hello-n", type=int, default=3,
                    help="pool/store amplification connections (after HELLO)")
    ap.add_argument("--flood", type=int, default=2000)
    ap.add_argument("--only", default="amp,flood")
    ap.add_argument("--rss-guard-mb", type=int, default=8000)
    ap.add_argument("--service-nofile", type=int, default=1024,
                    help="soft open-file limit the services start with (default 1024)")
    args = ap.parse_args()
    global SERVICE_NOFILE
    SERVICE_NOFILE = args.service_nofile
    args.bin = os.path.abspath(args.bin)
    nofile = raise_nofile()
    rows = []
    with tempfile.TemporaryDirectory(prefix="attack-") as tmp:
        if "amp" in args.only:
            run_amp(args, tmp, rows)
        if "flood" in args.only:
            run_flood(args, tmp, rows)
    print("binary: %s; this process's fd limit %d; services started with a soft limit of %d"
          % (args.bin, nofile, SERVICE_NOFILE))
    print()
    print("| attack | service | legitimate client |")
    print("|---|---|---|")
    for r in rows:
        print("| %s | %s | %s |" % r)


if __name__ == "__main__":
    main()
