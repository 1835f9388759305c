"""Large arguments and results as shared memory (src/pool/shm.h): on a local
pool (its Unix socket) a payload of 1 MiB or more travels as a sealed memfd
passed over the socket, on a TCP pool as bytes. Results and arguments arrive
byte for byte either way; descriptors are released (the client's, the pool's
and the worker's counts come back to where they were); a worker that dies
while its large result is being made fails that call only; a peer that sends
a descriptor of the wrong size, an unsealed one, a frame without one or
descriptors without frames is closed with a log line."""

import fcntl
import gc
import hashlib
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time

import cloudpickle
import pytest

from conftest import BIN, auth_handshake, closed_by_peer, pool_identity, wait_until
from executor_helpers import (POOL_LISTEN_RE, RESULT_TIMEOUT, Chunky, LineReader, TcpPool,
                              descendants, kill_group, sub_env)

import bettong  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])
# (Chunky, for workers that cannot import it: a TCP pool's)
cloudpickle.register_pickle_by_value(sys.modules["executor_helpers"])

T = RESULT_TIMEOUT
SECRET = "bt-test-secret-" + "%08x" % random.getrandbits(32)
SIZE = 3 * 1000 * 1000  # above SHM_MIN (1 MiB)


def data_of(seed, n=SIZE):
    return random.Random(seed).randbytes(n)


def make_result(seed):
    return data_of(seed)


def make_result_of(seed, n):
    return data_of(seed, n)


def digest(b):
    return hashlib.sha256(b).hexdigest(), len(b), type(b).__name__


def echo(b):
    return b


def numbers(n):
    return list(range(n))


class DieWhilePickled:
    def __reduce__(self):
        os._exit(9)


def die_making_result(seed):
    return [data_of(seed), DieWhilePickled()]


def die_holding_argument(b):
    os._exit(9)


def payload_fd_numbers(pid="self"):
    """The numbers of the large-payload memfds pid holds."""
    out = []
    for fd in os.listdir("/proc/%s/fd" % pid):
        try:
            if os.readlink("/proc/%s/fd/%s" % (pid, fd)).startswith("/memfd:bettong-payload"):
                out.append(int(fd))
        except OSError:
            pass  # closed meanwhile (listdir's own descriptor)
    return out


def payload_fds(pid="self"):
    """How many large-payload memfds pid holds."""
    return len(payload_fd_numbers(pid))


def fd_count(pid="self"):
    """pid's descriptors other than payload memfds: a client or a worker may
    hold one of those, made ready for its next large payload (pool/shmspare.h)."""
    return len(os.listdir("/proc/%s/fd" % pid)) - payload_fds(pid)


def worker_pids(ex):
    return [r.pid for r in descendants(ex._client.local.proc.pid)]


def check_round_trip(ex):
    """Each kind of large payload arrives whole. Returns the client's
    connection (made by the first call)."""
    assert ex.call_async(make_result, 1).result(timeout=T) == data_of(1)
    big = data_of(2)
    assert ex.call_async(digest, big).result(timeout=T) == (
        hashlib.sha256(big).hexdigest(), SIZE, "bytes")
    assert ex.call_async(echo, big).result(timeout=T) == big
    assert ex.call_async(numbers, 400000).result(timeout=T) == list(range(400000))
    assert ex.call_async(echo, b"small").result(timeout=T) == b"small"
    return ex._client.conn


# ------------------------------------------------------------------ the paths

def test_local_pool_passes_large_payloads_as_shared_memory():
    with bettong.FunctionExecutor(workers=1) as ex:
        conn = check_round_trip(ex)
        # make_result, echo and numbers came as memfds; digest and echo went as one
        assert (conn.shm_results, conn.shm_calls) == (3, 2)


def test_tcp_pool_keeps_the_socket_path(procs, executors):
    pool = TcpPool(procs, SECRET, workers=1)
    ex = executors(pool.address)
    conn = check_round_trip(ex)
    assert (conn.shm_results, conn.shm_calls) == (0, 0)


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("BETTONG_NO_SHM", "1")
    with bettong.FunctionExecutor(workers=1) as ex:
        conn = check_round_trip(ex)
        assert (conn.shm_results, conn.shm_calls) == (0, 0)


def mapping_of(obj):
    """The /proc/self/maps line of the mapping that holds obj's header."""
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= id(obj) < hi:
                return line.strip()
    return None


def test_large_bytes_result_is_the_memfd_mapped_not_a_copy():
    from bettong import _bettong
    assert _bettong.mapped_enabled()
    before = _bettong.mapped_live()
    with bettong.FunctionExecutor(workers=1) as ex:
        fut = ex.call_async(make_result, 11)
        b = fut.result(timeout=T)
        assert type(b) is bytes and b == data_of(11)
        assert _bettong.mapped_live() == before + 1
        assert "memfd:" in mapping_of(b)  # the worker's memfd, not this heap
        assert hash(b) == hash(data_of(11)) and {b: 1}[data_of(11)] == 1
        assert b[5:9] == data_of(11)[5:9] and (b + b"!")[-2:] == data_of(11)[-1:] + b"!"
        # sent on as an argument (a copy into a new memfd), and back
        assert ex.call_async(digest, b).result(timeout=T) == digest(data_of(11))
        assert ex.call_async(echo, b).result(timeout=T) == data_of(11)
        small = ex.call_async(make_result_of, (12, 1000)).result(timeout=T)
        assert "memfd:" not in (mapping_of(small) or "")  # small results: copied
        for pid in worker_pids(ex):
            os.kill(pid, 9)
    # the pool, its workers and the connection are gone: the bytes stay
    assert hashlib.sha256(b).digest() == hashlib.sha256(data_of(11)).digest()
    del b, fut, ex
    wait_until(lambda: _bettong.mapped_live() == before, 10, "the mapped result was never freed")


BLOCK = 40 * 1000 * 1000  # above SHMBLOCK_MIN (32 MiB): made in a memfd of its own
_kept = []


def made_and_kept(seed):
    """A large bytes result the worker also keeps (sent twice: the same file)."""
    if not _kept:
        _kept.append(data_of(seed, BLOCK))
    return _kept[0]


def test_large_bytes_made_in_the_call_go_as_the_file_they_were_made_in():
    # py/shmblock.h: the worker made them in a memfd of their own; that file is
    # the result, mapped here, with no copy into a payload memfd.
    with bettong.FunctionExecutor(workers=1) as ex:
        b = ex.call_async(make_result_of, (21, BLOCK)).result(timeout=T)
        assert b == data_of(21, BLOCK)
        assert "memfd:bettong-block" in mapping_of(b)
        k1 = ex.call_async(made_and_kept, 22).result(timeout=T)
        k2 = ex.call_async(made_and_kept, 22).result(timeout=T)
        assert k1 == k2 == data_of(22, BLOCK)
        assert "memfd:bettong-block" in mapping_of(k1) and "memfd:bettong-block" in mapping_of(k2)
        # no payload memfd was made for them, nor one made ready after them
        assert all(payload_fds(pid) == 0 for pid in worker_pids(ex))
        assert ex._client.conn.shm_results == 3
        for pid in worker_pids(ex):
            os.kill(pid, 9)
    assert hashlib.sha256(b).digest() == hashlib.sha256(data_of(21, BLOCK)).digest()
    assert k1 == data_of(22, BLOCK)


def fork_with_a_block(_):
    """In the worker: a large bytearray (a shared block), then os.fork(). Each
    side writes after the fork; neither sees the other's write."""
    big = bytearray(BLOCK)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # the parent has written big[0]
        ok = big[0] == 0
        big[1] = 7
        os._exit(0 if ok else 1)
    os.close(r)
    big[0] = 5
    os.write(w, b"g")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), big[0], big[1], make_result_of(23, BLOCK)


def test_user_code_forking_in_a_worker_keeps_its_memory_its_own():
    with bettong.FunctionExecutor(workers=1) as ex:
        code, mine, theirs, b = ex.call_async(fork_with_a_block, None).result(timeout=T)
        assert (code, mine, theirs) == (0, 5, 0)
        assert b == data_of(23, BLOCK)
        # the worker is whole after it: a large result, then another fork
        assert ex.call_async(make_result_of, (24, BLOCK)).result(timeout=T) == data_of(24, BLOCK)
        assert ex.call_async(fork_with_a_block, None).result(timeout=T)[:3] == (0, 5, 0)


def where_is(b):
    """In the worker: the argument's length, digest and whether the mapping
    that holds it is a memfd."""
    return len(b), hashlib.sha256(b).hexdigest(), "memfd:" in (mapping_of(b) or "")


def test_large_bytes_argument_is_the_memfd_mapped_in_the_worker():
    big = data_of(13)
    want = (SIZE, hashlib.sha256(big).hexdigest())
    with bettong.FunctionExecutor(workers=1) as ex:
        # the first task of a worker goes on its socket (pool/peer.c op_task):
        # the object file's bytes, read as the argument all the same
        assert ex.call_async(where_is, big).result(timeout=T) == want + (False,)
        assert ex.call_async(where_is, big).result(timeout=T) == want + (True,)
        # anything but one bytes argument is pickled as before
        assert ex.call_async(where_is, bytearray(big)).result(timeout=T) == want + (False,)
        assert ex.call_async(where_is, {"b": big}).result(timeout=T) == want + (False,)
        # the worker sends the mapped argument back, and takes it again
        back = ex.call_async(echo, big).result(timeout=T)
        assert back == big
        assert ex.call_async(where_is, back).result(timeout=T) == want + (True,)
        assert ex._client.conn.shm_calls == 6


def chunky(seed, n=SIZE):
    return Chunky(bytearray(data_of(seed, n)))


def chunkies(seed):
    """Two buffers large enough to go out of band, one small enough not to."""
    return {"big": chunky(seed), "big2": chunky(seed + 1, 2 * 1000 * 1000),
            "small": chunky(seed + 2, 1000), "text": "ok"}


def in_memfd(buf):
    """Whether a writable buffer's memory is a memfd's mapping."""
    import ctypes
    return "memfd:" in (mapping_at(ctypes.addressof(ctypes.c_char.from_buffer(buf))) or "")


def mapping_at(addr):
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return line.strip()
    return None


def lengths_and_digests(values):
    return [(len(v.data), hashlib.sha256(v.data).hexdigest()) for v in values]


def check_chunkies(d, seed, mapped):
    assert d["text"] == "ok"
    for key, s, n in (("big", seed, SIZE), ("big2", seed + 1, 2 * 1000 * 1000),
                      ("small", seed + 2, 1000)):
        assert type(d[key]) is Chunky and bytes(d[key].data) == data_of(s, n), key
    assert type(d["small"].data) is bytearray  # in the pickle
    assert [in_memfd(d[k].data) for k in ("big", "big2")] == [mapped, mapped]


def test_results_with_large_buffers_unpickle_over_the_memfd():
    with bettong.FunctionExecutor(workers=1) as ex:
        c = ex.call_async(chunky, 21).result(timeout=T)
        assert type(c.data) is memoryview and in_memfd(c.data)
        assert bytes(c.data) == data_of(21)
        c.data[0] ^= 1  # writable: this process's own copy of that page
        assert bytes(c.data[1:]) == data_of(21)[1:] and c.data[0] == data_of(21)[0] ^ 1
        d = ex.call_async(chunkies, 22).result(timeout=T)
        check_chunkies(d, 22, mapped=True)
        # a reduce gets the map's results whole (decoded here, pickled again)
        rf = ex.map_reduce(chunky, [25, 26], lengths_and_digests)
        assert rf.result(timeout=T) == [(SIZE, hashlib.sha256(data_of(s)).hexdigest())
                                        for s in (25, 26)]
        got = ex.map(chunky, [27, 28], chunksize=2)
        assert [bytes(v.data) for v in ex.get_result(got)] == [data_of(27), data_of(28)]
        for pid in worker_pids(ex):
            os.kill(pid, 9)
    # everything it came from is gone: the values stay
    check_chunkies(d, 22, mapped=True)
    assert payload_mappings() >= 2
    del c, d, rf, got, ex
    gc.collect()
    assert payload_mappings() == 0  # unmapped with the values


def payload_mappings():
    with open("/proc/self/maps") as f:
        return sum("memfd:bettong-payload" in line for line in f)


def test_results_with_large_buffers_on_the_socket_paths(procs, executors, tmp_path):
    # a TCP worker pickles them in band
    pool = TcpPool(procs, SECRET, workers=1)
    check_chunkies(executors(pool.address).call_async(chunkies, 30).result(timeout=T), 30,
                   mapped=False)
    # a local worker's out-of-band file, sent by the pool to a TCP client as bytes
    mixed = MixedPool(procs, tmp_path, workers=1)
    ex = executors(mixed.tcp)
    ex.call_async(len, b"").result(timeout=T)
    check_chunkies(ex.call_async(chunkies, 33).result(timeout=T), 33, mapped=False)


def test_numpy_results_are_mapped():
    np = pytest.importorskip("numpy")
    with bettong.FunctionExecutor(workers=1) as ex:
        a = ex.call_async(np.arange, 2000000).result(timeout=T)
        assert a.dtype == np.arange(1).dtype and a.shape == (2000000,) and int(a[-1]) == 1999999
        assert a.flags.writeable and in_memfd(a)
        a[0] = 7
        assert int(a.sum()) == 1999999 * 2000000 // 2 + 7


def test_results_are_copied_under_python_debug_allocator():
    code = ("import bettong, sys, random\n"
            "from bettong import _bettong\n"
            "def f(n): return random.Random(n).randbytes(n)\n"
            "with bettong.FunctionExecutor(workers=1) as ex:\n"
            "    b = ex.call_async(f, 3000000).result(timeout=60)\n"
            "assert b == random.Random(3000000).randbytes(3000000)\n"
            "print(_bettong.mapped_enabled(), _bettong.mapped_live())\n")
    env = sub_env()
    env["PYTHONMALLOC"] = "debug"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "0"]


class MixedPool:
    """`bettong pool --unix PATH --listen 127.0.0.1:0`: unix and tcp addresses;
    add_worker joins a `bettong worker` over TCP."""

    def __init__(self, procs, tmp_path, workers):
        self.procs = procs
        self.proc = procs.spawn([BIN, "pool", "--unix", str(tmp_path / "p.sock"), "--listen",
                                 "127.0.0.1:0", "--workers", str(workers), "--secret", SECRET],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=sub_env())
        self.out = LineReader(self.proc.stdout)
        m = self.out.wait_for(re.compile(r"listening on (unix:\S+) and (\S+)"), 15)
        if m is None:
            kill_group(self.proc)
            pytest.fail("the pool did not start:\n" + self.out.text())
        self.unix, self.tcp = m.group(1), m.group(2)

    def add_worker(self):
        env = sub_env()
        env["BETTONG_SECRET"] = SECRET
        self.procs.spawn([BIN, "worker", "--join", self.tcp, "--procs", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def test_pool_sends_bytes_to_a_tcp_client_of_a_local_worker(procs, executors, tmp_path):
    pool = MixedPool(procs, tmp_path, workers=1)  # its worker on the Unix socket
    conn = check_round_trip(executors(pool.tcp))
    assert (conn.shm_results, conn.shm_calls) == (0, 0)


def test_pool_sends_bytes_to_a_tcp_worker_of_a_local_client(procs, executors, tmp_path):
    pool = MixedPool(procs, tmp_path, workers=0)
    pool.add_worker()
    conn = check_round_trip(executors(pool.unix))
    assert (conn.shm_results, conn.shm_calls) == (0, 2)


def lowest_free_fd():
    n = 0
    while True:
        try:
            os.fstat(n)
        except OSError:
            return n
        n += 1


def test_arguments_go_on_the_socket_when_no_memfd_can_be_made():
    import resource
    with bettong.FunctionExecutor(workers=1) as ex:
        big = data_of(10)
        want = (hashlib.sha256(big).hexdigest(), SIZE, "bytes")
        assert ex.call_async(digest, big).result(timeout=T) == want
        conn = ex._client.conn
        assert conn.shm_calls == 1
        # the memfd of the next call is made ready meanwhile (pool/shmspare.h)
        wait_until(lambda: conn.shm_spare >= SIZE, 10, "a spare memfd")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            # no descriptor left for a memfd until the (small) results are in:
            # the spare made before serves one call, the next has none. The
            # limit is at most the spare's number, so that its number, free
            # once the first call has sent it, cannot be taken again by the
            # thread making the next spare (a race that thread could win)
            spare = min(payload_fd_numbers())
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(lowest_free_fd(), spare), hard))
            got = [ex.call_async(digest, big).result(timeout=T) for _ in range(2)]
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert got == [want, want]
        assert conn.shm_calls == 2


def parts(big):
    """An argument of several large parts: what the worker reads from the
    memfd piece by piece (pool/preader.h) and must put back in order."""
    return {"b": big, "ba": bytearray(big[:1500000]), "s": "\u00e9" * 700000,
            "l": [big[:100], 7, None, big[-1200000:]], "t": (1.5, b"small")}


def describe(x):
    return {k: (type(v).__name__, hashlib.sha256(repr(v).encode()).hexdigest())
            for k, v in x.items()}


def test_arguments_of_many_parts_arrive_whole():
    with bettong.FunctionExecutor(workers=1) as ex:
        arg = parts(data_of(11))
        assert ex.call_async(describe, (arg,)).result(timeout=T) == describe(arg)
        assert ex.call_async(echo, (arg,)).result(timeout=T) == arg
        assert ex._client.conn.shm_calls == 2


def test_many_large_calls_of_changing_sizes():
    """Each memfd (a new one or the spare made ready while the previous call
    ran, larger or smaller than this payload) holds this call's bytes only."""
    sizes = [SIZE, SIZE // 2, SIZE * 2, SIZE * 2, 1100000, SIZE]
    with bettong.FunctionExecutor(workers=1) as ex:
        for i, n in enumerate(sizes):
            big = data_of(20 + i, n)
            assert ex.call_async(digest, big).result(timeout=T) == (
                hashlib.sha256(big).hexdigest(), n, "bytes")
            assert ex.call_async(make_result_of, (40 + i, n)).result(timeout=T) == data_of(40 + i, n)
        # in flight together: each call has its own memfd
        bigs = [data_of(60 + i, n) for i, n in enumerate(sizes)]
        fs = [ex.call_async(echo, b) for b in bigs]
        assert [f.result(timeout=T) for f in fs] == bigs
        conn = ex._client.conn
        assert conn.shm_calls == 2 * len(sizes)
        assert conn.shm_results == 2 * len(sizes)


def test_spare_memfd_is_freed_by_close():
    ex = bettong.FunctionExecutor(workers=1)
    try:
        assert ex.call_async(digest, data_of(12)).result(timeout=T)[1] == SIZE
        conn = ex._client.conn
        wait_until(lambda: conn.shm_spare >= SIZE, 10, "a spare memfd")
        assert payload_fds() == 1
    finally:
        ex.close()
    assert conn.shm_spare == 0
    assert payload_fds() == 0


# ------------------------------------------------------------------ no leaks

def wait_fd_counts(want, timeout=10):
    """The fd counts of want's pids come back to at most want's values (a
    closing descriptor may be a loop turn late in the pool; and want itself may
    have been read while a warm-up call's descriptor was still closing, so a
    count may end lower). Returns the last counts."""
    deadline = time.monotonic() + timeout
    while True:
        got = {pid: fd_count(pid) for pid in want}
        if all(got[p] <= want[p] for p in want) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_descriptors_are_released():
    with bettong.FunctionExecutor(workers=1) as ex:
        big = data_of(3)
        assert ex.call_async(digest, big).result(timeout=T)[1] == SIZE  # warm
        assert len(ex.call_async(make_result, 4).result(timeout=T)) == SIZE
        pids = ["self", ex._client.local.proc.pid] + worker_pids(ex)
        before = {pid: fd_count(pid) for pid in pids}
        for i in range(12):
            fs = [ex.call_async(make_result, i), ex.call_async(digest, big)]
            assert fs[0].result(timeout=T) == data_of(i)
            assert fs[1].result(timeout=T)[1] == SIZE
            del fs
        after = wait_fd_counts(before)
        assert all(after[p] <= before[p] for p in pids), (before, after)
        assert ex._client.conn.shm_results >= 13
        # memfds: the pool holds none; the client and the worker at most their spare
        assert payload_fds(pids[1]) == 0
        assert [payload_fds(pid) <= 1 for pid in pids] == [True] * len(pids)


def test_worker_dying_mid_transfer_fails_that_call_only():
    with bettong.FunctionExecutor(workers=1) as ex:
        assert ex.call_async(digest, data_of(5)).result(timeout=T)[1] == SIZE  # warm
        pids = ["self", ex._client.local.proc.pid]
        before = {pid: fd_count(pid) for pid in pids}
        f = ex.call_async(die_making_result, 6)
        with pytest.raises(bettong.errors.WorkerDied):
            f.result(timeout=T)
        # a large argument the pool passed on as a memfd, to a worker that dies
        assert ex.call_async(echo, b"warm").result(timeout=T) == b"warm"
        g = ex.call_async(die_holding_argument, data_of(9))
        with pytest.raises(bettong.errors.WorkerDied):
            g.result(timeout=T)
        del g
        # the pool starts another worker; it takes large payloads as before
        assert ex.call_async(make_result, 7).result(timeout=T) == data_of(7)
        assert ex.call_async(digest, data_of(8)).result(timeout=T)[1] == SIZE
        del f
        after = wait_fd_counts(before)
        assert all(after[p] <= before[p] for p in pids), (before, after)


# ------------------------------------------------------------------ bad peers

MSG_WELCOME, MSG_CALLS_FD = 2, 16
PROTO_TAKES_FDS = 1


@pytest.fixture
def unix_pool(procs, tmp_path):
    """`bettong pool --unix PATH --workers 0`: (address, output reader)."""
    path = str(tmp_path / "pool.sock")
    p = procs.spawn([BIN, "pool", "--unix", path, "--workers", "0", "--secret", SECRET],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=sub_env())
    out = LineReader(p.stdout)
    if out.wait_for(POOL_LISTEN_RE, 15) is None:
        kill_group(p)
        pytest.fail("the pool did not start:\n" + out.text())
    return path, out


def raw_client(path):
    """A client that announced it passes descriptors, past WELCOME."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    ident = pool_identity() + bytes([PROTO_TAKES_FDS])
    body = auth_handshake(s, "pool", ident, SECRET)
    assert body[0] == MSG_WELCOME and body[-1] == PROTO_TAKES_FDS, body
    return s


def payload_fd(n, seal=True):
    fd = os.memfd_create("test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, b"p" * n)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


def calls_fd_frame(call_id, size):
    body = (bytes([MSG_CALLS_FD]) + struct.pack(">QIH", 1, 0, 0) + struct.pack(">H", 0)
            + struct.pack(">QQ", call_id, size))
    return struct.pack(">I", len(body)) + body


def saw(out, text, timeout=10):
    return out.wait_for(re.compile(re.escape(text)), timeout) is not None


def send_frame_with_fd(s, frame, fd):
    socket.send_fds(s, [frame], [fd])
    os.close(fd)


@pytest.mark.parametrize("case,announced,seal,expect", [
    ("size", 1000, True, "CALLS_FD for call 7: the file sent holds 2000 bytes, "
                         "the frame says 1000"),
    ("unsealed", 2000, False, "CALLS_FD for call 7: the file sent is not sealed against changes"),
])
def test_bad_descriptor_closes_the_connection(unix_pool, case, announced, seal, expect):
    path, out = unix_pool
    s = raw_client(path)
    send_frame_with_fd(s, calls_fd_frame(7, announced), payload_fd(2000, seal))
    assert closed_by_peer(s)
    assert saw(out, expect), out.text()


def test_frame_without_descriptor_closes_the_connection(unix_pool):
    path, out = unix_pool
    s = raw_client(path)
    s.sendall(calls_fd_frame(8, 2000))
    assert closed_by_peer(s)
    assert saw(out, "CALLS_FD for call 8: no descriptor came with it"), out.text()


def test_descriptors_without_frames_close_the_connection(unix_pool):
    path, out = unix_pool
    s = raw_client(path)
    fds = [payload_fd(10) for _ in range(9)]
    try:
        # the start of a frame that never ends, one descriptor per byte
        for i, fd in enumerate(fds):
            socket.send_fds(s, [b"\x00" if i < 3 else b"\x10"], [fd])
    except (BrokenPipeError, ConnectionResetError):
        pass
    for fd in fds:
        os.close(fd)
    assert closed_by_peer(s)
    assert saw(out, "more than 8 file descriptors sent ahead of the frames"), out.text()
