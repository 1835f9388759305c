"""Lithops programs unchanged on Bettong (python/lithops): a Lithops program
against the local pool and a remote pool (BETTONG_POOL / BETTONG_SECRET), and
every parameter the compatibility layer accepts, each with an effect seen
from outside: chunksize, timeout, runtime_memory, include_modules,
exclude_modules, clean(), wait/get_result's throw_except, return_when and
timeout, spawn_reducer, the futures' Lithops states, the configuration."""

import logging
import os
import random
import re
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest

from executor_helpers import (EXEC_APPS, REPO, RESULT_TIMEOUT, LineReader, TcpPool, kill_group,
                              run_script, sub_env)

import lithops  # noqa: E402 (executor_helpers put python/ on sys.path)
from lithops.config import default_config, extract_storage_config  # noqa: E402
from lithops.storage.utils import CloudObject, StorageNoSuchKeyError  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT
SECRET = "bt-lithops-" + "%08x" % random.getrandbits(32)
CONFIG = {"lithops": {"backend": "localhost", "storage": "localhost"}}
PROGRAM_OUTPUT = """\
map [2, 4, 6]
chunksize [10, 11, 12, 13, 14]
map_reduce 12
call_async 5 5
raised boom 2
throw_except=False [1, None, 3]
lithops.get_result [10]
lithops.wait 2 0 [True, True]
storage localhost storage
words 5
objects 8 5
cloudobjects 5
cleaned [[], []]
no such key
retries [0, 1, 2] 0
pool [1, 2, 3] [3, 7]
"""


# ------------------------------------------------------------------ a program, unchanged

def test_lithops_program_on_the_local_pool(tmp_path):
    env = sub_env(extra={"BETTONG_STORAGE_DIR": tmp_path / "store"})
    env.pop("BETTONG_POOL", None)
    r = run_script(EXEC_APPS / "lithops_program.py", [tmp_path], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == PROGRAM_OUTPUT
    assert r.stderr == ""


def test_lithops_program_on_a_remote_pool(tmp_path, procs):
    pool = TcpPool(procs, SECRET)
    pool.add_worker(procs_n=2)
    env = sub_env(extra={"BETTONG_STORAGE_DIR": tmp_path / "store",
                         "BETTONG_POOL": pool.address, "BETTONG_SECRET": SECRET})
    r = run_script(EXEC_APPS / "lithops_program.py", [tmp_path], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == PROGRAM_OUTPUT
    assert r.stderr == ""
    # a local pool's size means nothing for a remote pool: said once
    r = run_script("import lithops\n"
                   "for _ in range(2):\n"
                   "    ex = lithops.FunctionExecutor(max_workers=3)\n"
                   "    print(ex.get_result(ex.map(abs, [-1, -2])))\n", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[1, 2]\n[1, 2]\n"
    assert r.stderr == ("lithops on Bettong: max_workers=3 ignored: calls run on the pool at "
                        "%s (BETTONG_POOL), with its workers\n" % pool.address)
    assert pool.alive()


# ------------------------------------------------------------------ parameters

@pytest.fixture(scope="module")
def storage_dir(tmp_path_factory):
    saved = os.environ.get("BETTONG_STORAGE_DIR")
    d = tmp_path_factory.mktemp("lithops-storage")
    os.environ["BETTONG_STORAGE_DIR"] = str(d)
    try:
        yield d
    finally:
        if saved is None:
            os.environ.pop("BETTONG_STORAGE_DIR", None)
        else:
            os.environ["BETTONG_STORAGE_DIR"] = saved


@pytest.fixture(scope="module")
def fexec(storage_dir):
    ex = lithops.FunctionExecutor(config=CONFIG, max_workers=2)
    try:
        yield ex
    finally:
        ex._bx.close()


def pid_of(x):
    return os.getpid()


def slow(x):
    time.sleep(x)
    return x


def alloc(mib):
    return len(bytearray(mib * 1024 * 1024))


def test_map_third_positional_is_chunksize(fexec):
    fs = fexec.map(pid_of, range(4), 2)
    pids = fexec.get_result(fs)
    # one worker invocation per chunk of two calls: each chunk's calls ran in one process
    assert pids[0] == pids[1] and pids[2] == pids[3]
    assert [f.call_id for f in fs] == ["00000", "00001", "00002", "00003"]


def length(s):
    return len(s)


def test_str_iterdata_is_one_item_and_what_is_refused(fexec):
    assert fexec.get_result(fexec.map(length, "abc")) == [3]

    def per_object(obj):
        return obj.key

    with pytest.raises(Exception, match="No objects found"):
        fexec.map(per_object, "localhost://storage/no-such-prefix/")
    with pytest.raises(NotImplementedError, match="storage backend 'aws_s3' while"):
        fexec.map(per_object, ["s3://bucket/key"])
    with pytest.raises(ValueError, match="obj_chunk_size applies to functions with an `obj`"):
        fexec.map(length, ["ab"], obj_chunk_size=1 << 20)
    with pytest.raises(ValueError, match="obj_reduce_by_key applies"):
        fexec.map_reduce(length, ["ab"], sum, obj_reduce_by_key=True)


def test_timeout_stops_the_call_with_timeout_error(fexec):
    t0 = time.monotonic()
    f = fexec.call_async(slow, 30, timeout=1)
    with pytest.raises(TimeoutError):
        f.result()
    assert time.monotonic() - t0 < 10
    assert f.error and f.done
    assert fexec.get_result(fexec.map(slow, [0, 0], timeout=5)) == [0, 0]


def test_runtime_memory_limits_each_call(fexec):
    fs = fexec.map(alloc, [256, 16], runtime_memory=64)
    with pytest.raises(MemoryError):
        fs[0].result()
    assert fs[1].result() == 16 * 1024 * 1024
    assert fexec.get_result(fexec.map(alloc, [256], runtime_memory=512)) == [256 * 1024 * 1024]
    # the limit holds for the call only: the same workers allocate freely afterwards
    assert fexec.get_result(fexec.map(alloc, [256, 256])) == [256 * 1024 * 1024] * 2


def test_include_modules_ships_a_module_the_workers_cannot_import(fexec, tmp_path):
    fexec.get_result(fexec.map(pid_of, [0, 1]))  # the pool runs (its workers' path is fixed)
    (tmp_path / "lithops_shipped_mod.py").write_text(
        "def triple(x):\n    return 3 * x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import lithops_shipped_mod as mod
        with pytest.raises(Exception, match="could not be unpickled|No module named"):
            fexec.get_result(fexec.map(mod.triple, [1]))
        fs = fexec.map(mod.triple, [1, 2], include_modules=["lithops_shipped_mod"])
        assert fexec.get_result(fs) == [3, 6]
        f = fexec.call_async(mod.triple, 5, include_modules=["lithops_shipped_mod"])
        assert f.result() == 15
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lithops_shipped_mod", None)


def test_exclude_modules_keeps_a_module_by_reference(storage_dir, tmp_path):
    (tmp_path / "lithops_ref_mod.py").write_text(textwrap.dedent("""\
        import sys

        def imported_here(x):
            return "lithops_ref_mod" in sys.modules
    """))
    sys.path.insert(0, str(tmp_path))  # before the pool starts: its workers can import it
    try:
        import lithops_ref_mod as mod
        cloudpickle.register_pickle_by_value(mod)
        ex = lithops.FunctionExecutor(config=CONFIG, max_workers=1)
        try:
            # by value: the worker never imports the module
            assert ex.get_result(ex.map(mod.imported_here, [0])) == [False]
            fs = ex.map(mod.imported_here, [0], exclude_modules=["lithops_ref_mod"])
            assert ex.get_result(fs) == [True]
        finally:
            ex._bx.close()
            cloudpickle.unregister_pickle_by_value(mod)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lithops_ref_mod", None)


def test_clean_removes_the_jobs_cloudobjects(fexec):
    def put(x, storage):
        return storage.put_cloudobject(b"%d" % x)

    fs = fexec.map(put, [1, 2, 3])
    cos = fexec.get_result(fs)
    st = fexec.storage
    assert all(isinstance(c, CloudObject) for c in cos)
    assert all(c.key.startswith("lithops.jobs/tmp/%s/" % fs[0].job_key) for c in cos)
    assert [st.get_cloudobject(c) for c in cos] == [b"1", b"2", b"3"]
    fexec.clean(cs=[cos[0]])
    assert st.list_keys(st.bucket, cos[0].key) == []
    assert st.list_keys(st.bucket, cos[1].key) == [cos[1].key]
    kept = st.put_cloudobject(b"mine", key="kept/one")
    fexec.clean(fs=fs)
    assert st.list_keys(st.bucket, "lithops.jobs/tmp/%s/" % fs[0].job_key) == []
    assert st.get_cloudobject(kept) == b"mine"


def test_wait_and_get_result_throw_except(fexec):
    def boom(x):
        if x:
            raise ValueError("boom")
        return x

    fs = fexec.map(boom, [0, 1])
    with pytest.raises(ValueError, match="boom"):
        fexec.wait(fs)
    fs = fexec.map(boom, [0, 1])
    done, not_done = fexec.wait(fs, throw_except=False)
    assert list(done) == fs and list(not_done) == []
    assert [f.error for f in fs] == [False, True]
    assert fexec.get_result(fs, False) == [0, None]  # positional: throw_except
    assert lithops.get_result(fs, throw_except=False) == [0, None]
    with pytest.raises(ValueError):
        lithops.get_result(fs)


def test_return_when_and_wait_timeout(fexec):
    fs = fexec.map(slow, [0, 0, 4, 4])
    done, not_done = fexec.wait(fs, return_when=lithops.ALWAYS)
    assert len(done) + len(not_done) == 4 and len(not_done) >= 2
    done, not_done = fexec.wait(fs, return_when=lithops.ANY_COMPLETED)
    assert 1 <= len(done) <= 2 and fs[2] in not_done
    done, not_done = fexec.wait(fs, return_when=50)
    assert list(done) == fs[:2] and list(not_done) == fs[2:]
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="Timeout of 1 seconds"):
        fexec.wait(fs, timeout=1)
    assert time.monotonic() - t0 < 3
    with pytest.raises(ValueError, match="return_when"):
        fexec.wait(fs, return_when=101)
    assert fexec.get_result(fs) == [0, 0, 4, 4]


def test_future_states_are_lithops_properties(fexec):
    f = fexec.call_async(slow, 1)
    assert f.running and not f.done and not f.ready
    if f.done:  # a property, as in Lithops: never true while the call runs
        pytest.fail("f.done is true for a running call")
    while not f.ready:  # ended, not read yet
        time.sleep(0.02)
    assert not f.done and not f.success
    fexec.wait([f])
    # Done (its result is read): `success` is Lithops' "status read, result not yet"
    assert f.done and not f.success and not f.error and not f.running
    assert f.result() == 1
    assert f.stats["worker_end_tstamp"] >= f.stats["worker_start_tstamp"] > 0
    with pytest.raises(NotImplementedError):
        f.cancel()


def test_spawn_reducer_returns_after_that_share_of_maps(fexec):
    fs = fexec.map_reduce(slow, [1, 1], sum, spawn_reducer=lithops.ALWAYS)
    assert all(f.running for f in fs[:2]), "map_reduce waited for maps with ALWAYS"
    assert fexec.get_result(fs) == 2
    fs = fexec.map_reduce(slow, [0.5, 0.5], sum, spawn_reducer=100)
    assert all(f.done for f in fs[:2]), "map_reduce returned before the maps with 100"
    assert fexec.get_result(fs) == 1.0
    assert len(fs) == 3


def test_retrying_executor_reruns_a_timed_out_call(storage_dir, tmp_path):
    def sleeps_once(i):
        mark = tmp_path / ("ran-%d" % i)
        if not mark.exists():
            mark.write_text("")
            time.sleep(30)
        return i

    ex = lithops.FunctionExecutor(config=CONFIG, max_workers=2)
    try:
        with lithops.RetryingFunctionExecutor(ex) as rexec:
            fs = rexec.map(sleeps_once, [0, 1], timeout=1, retries=1)
            done, pending = rexec.wait(fs, throw_except=False)
            assert sorted(f.result() for f in done) == [0, 1] and pending == []
            assert [f.failure_count for f in fs] == [1, 1]
    finally:
        ex._bx.close()


def test_configuration_what_applies_and_the_note(storage_dir, caplog):
    cfg = {"lithops": {"backend": "localhost", "storage": "localhost", "monitoring": "rabbitmq",
                       "execution_timeout": 1},
           "localhost": {"max_workers": 1, "runtime": "python3.11"},
           "aws_lambda": {"region": "eu-west-1"}}
    with caplog.at_level(logging.WARNING, logger="lithops"):
        ex = lithops.FunctionExecutor(config=cfg)
        ex2 = lithops.FunctionExecutor(config=cfg)
    notes = [r.getMessage() for r in caplog.records]
    assert notes == ["lithops on Bettong: config settings with no meaning here, ignored: "
                     "aws_lambda.region, lithops.monitoring, localhost.runtime"]
    try:
        # max_workers 1: one worker process; execution_timeout 1: the default timeout
        assert len(set(ex.get_result(ex.map(pid_of, range(4))))) == 1
        with pytest.raises(TimeoutError):
            ex.call_async(slow, 20).result()
    finally:
        ex._bx.close()
        ex2._bx.close()


def test_storage_from_config(storage_dir):
    st = lithops.Storage(storage_config=extract_storage_config(default_config(config_data=CONFIG)))
    assert (st.backend, st.bucket) == ("localhost", "storage")
    st.put_object(st.bucket, "cfg/x", b"123")
    assert st.head_bucket(st.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert st.head_object(st.bucket, "cfg/x")["content-length"] == "3"
    with pytest.raises(StorageNoSuchKeyError):
        st.get_object(st.bucket, "cfg/none")
    st.delete_object(st.bucket, "cfg/x")
    other = {"lithops": {"backend": "localhost", "storage": "localhost",
                         "storage_bucket": "b2"}}
    assert lithops.Storage(config=other).bucket == "b2"
    with pytest.raises(ValueError, match="'aws_s3': the config names no `storage_bucket`"):
        lithops.Storage(config={"lithops": {"backend": "aws_lambda"}})
    with pytest.raises(ValueError, match="'minio': the config names no `endpoint`"):
        lithops.Storage(config={"lithops": {"storage": "minio"}, "minio": {}})
    with pytest.raises(NotImplementedError, match="storage backend 'gcp_storage'"):
        lithops.Storage(config={"lithops": {"storage": "gcp_storage"}})


def returns_futures(n):
    def inc(x):
        return x + 1

    inner = lithops.FunctionExecutor(config=CONFIG, max_workers=1)
    return inner.map(inc, range(n))


def returns_a_future(x):
    inner = lithops.FunctionExecutor(config=CONFIG, max_workers=1)
    return inner.call_async(slow, x)


def test_a_function_can_return_futures(fexec):
    f = fexec.call_async(returns_futures, 3)
    assert fexec.get_result([f]) == [1, 2, 3]   # the results of the futures it returned
    assert f.futures and len(f.result()) == 3
    fs = [fexec.call_async(returns_a_future, 0)]
    assert fexec.get_result(fs) == 0 and len(fs) == 2  # (one value: the last call was no map)


def test_futures_pickle_as_their_outcome(fexec):
    import pickle

    def boom(x):
        raise KeyError(x)

    f, g = fexec.map(slow, [0.2]) + fexec.map(boom, [7])
    f2, g2 = pickle.loads(pickle.dumps([f, g]))  # (waits for them)
    assert f2.done and f2.result() == 0.2
    assert g2.error
    with pytest.raises(KeyError):
        g2.result()
    assert g2.result(throw_except=False) is None


# ------------------------------------------------------------------ data from storage

TEXT = "".join("line %d %s\n" % (i, "w " * (i % 7)) for i in range(3000)).encode()


def lines_and_words(obj):
    data = obj.data_stream.read()
    return [obj.key, obj.part, obj.total_parts, data.count(b"\n"), len(data.split())]


def words_in(results):
    return sum(r[4] for r in results)


@pytest.fixture(scope="module")
def dataset(fexec):
    st = fexec.storage
    st.put_object(st.bucket, "ds/a.txt", TEXT)
    st.put_object(st.bucket, "ds/b.txt", TEXT[:1001])
    st.put_object(st.bucket, "other/c.txt", b"x y z\n")
    return len(TEXT.split()) + len(TEXT[:1001].split()), TEXT.count(b"\n") + TEXT[:1001].count(b"\n")


def test_map_over_a_prefix_one_call_per_object(fexec, dataset):
    res = fexec.get_result(fexec.map(lines_and_words, "localhost://storage/ds/"))
    assert [r[:3] for r in res] == [["ds/a.txt", 1, 1], ["ds/b.txt", 1, 1]]
    assert (sum(r[4] for r in res), sum(r[3] for r in res)) == dataset
    # keys, a CloudObject, the bucket named without the backend
    co = CloudObject("localhost", "storage", "other/c.txt")
    res = fexec.get_result(fexec.map(lines_and_words, ["localhost://storage/ds/b.txt", co,
                                                       "storage/ds/b.txt"]))
    assert [r[0] for r in res] == ["ds/b.txt", "other/c.txt", "ds/b.txt"]


@pytest.mark.parametrize("opts, parts_a", [({"obj_chunk_size": 8192}, -(-len(TEXT) // 8192)),
                                           ({"obj_chunk_number": 3}, 3)])
def test_chunks_keep_whole_lines(fexec, dataset, opts, parts_a):
    fs = fexec.map(lines_and_words, "localhost://storage/ds/", **opts)
    res = fexec.get_result(fs)
    a = [r for r in res if r[0] == "ds/a.txt"]
    assert [r[1] for r in a] == list(range(1, parts_a + 1)) and {r[2] for r in a} == {parts_a}
    # every line read once: the words and lines add up exactly
    assert (sum(r[4] for r in res), sum(r[3] for r in res)) == dataset


def test_newline_none_cuts_at_the_byte(fexec, dataset):
    res = fexec.get_result(fexec.map(lines_and_words, "localhost://storage/ds/a.txt",
                                     obj_chunk_size=1000, obj_newline=None))
    assert len(res) == -(-len(TEXT) // 1000)
    assert sum(r[3] for r in res) == TEXT.count(b"\n")
    assert sum(r[4] for r in res) > len(TEXT.split())  # words cut in two are counted twice


def test_map_reduce_over_objects_and_one_reducer_per_object(fexec, dataset):
    fs = fexec.map_reduce(lines_and_words, "localhost://storage/ds/", words_in,
                          obj_chunk_number=2)
    assert len(fs) == 2 * 2 + 1
    assert fexec.get_result(fs) == dataset[0]
    fs = fexec.map_reduce(lines_and_words, "localhost://storage/ds/", words_in,
                          obj_chunk_number=2, obj_reduce_by_key=True)
    assert len(fs) == 2 * 2 + 2
    assert fexec.get_result(fs) == [len(TEXT.split()), len(TEXT[:1001].split())]


def test_local_paths(fexec, tmp_path):
    (tmp_path / "p1.txt").write_bytes(b"a b\nc\n")
    (tmp_path / "p2.txt").write_bytes(b"d\n")
    res = fexec.get_result(fexec.map(lines_and_words, str(tmp_path)))
    assert [r[0] for r in res] == ["p1.txt", "p2.txt"] and [r[4] for r in res] == [3, 1]


def plus_one_slowly(x):
    time.sleep(0.3)
    return x + 1


def test_futures_as_map_input(fexec):
    first = fexec.map(plus_one_slowly, range(4))
    t0 = time.monotonic()
    second = fexec.map(double_it, first)  # each starts when its input's result is there
    assert time.monotonic() - t0 < 0.25, "map waited for its input futures"
    assert all(f.running for f in second)
    assert fexec.get_result(second) == [2, 4, 6, 8]
    assert fexec.get_result(first + second) == [2, 4, 6, 8]  # the inputs give no output now
    chained = fexec.map(plus_one_slowly, range(3)).map(double_it).map(plus_one_slowly)
    assert chained.get_result() == [3, 5, 7]
    fs = fexec.map_reduce(double_it, fexec.map(plus_one_slowly, range(3)), sum)
    assert fexec.get_result(fs) == 12

    def boom(x):
        raise ValueError("input %d" % x)

    with pytest.raises(ValueError, match="input 5"):
        fexec.get_result(fexec.map(double_it, fexec.map(boom, [5])))
    with pytest.raises(TypeError, match="mixes futures"):
        fexec.map(double_it, [first[0], 1])


def double_it(x):
    return 2 * x


class _Files:
    """A loopback HTTP server of some bytes at /data.txt, with byte ranges or
    without."""

    def __init__(self, body, ranges):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, with_body):
                rng = self.headers.get("Range") if ranges else None
                data, status = body, 200
                if rng:
                    a, b = rng.split("=")[1].split("-")
                    data, status = body[int(a):int(b) + 1], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if not with_body else len(data)))
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._send(False)

            def do_GET(self):
                self._send(True)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/data.txt" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def url_lines_and_words(id, obj):
    data = obj.data_stream.read()
    return [obj.url, obj.part, data.count(b"\n"), len(data.split())]


@pytest.mark.parametrize("ranges, parts", [(True, 4), (False, 1)])
def test_objects_from_urls(fexec, ranges, parts):
    srv = _Files(TEXT, ranges)
    try:
        res = fexec.get_result(fexec.map(url_lines_and_words, [srv.url], obj_chunk_number=4))
    finally:
        srv.close()
    assert [r[1] for r in res] == list(range(1, parts + 1))
    assert (sum(r[2] for r in res), sum(r[3] for r in res)) == (TEXT.count(b"\n"),
                                                                len(TEXT.split()))


def test_config_file(storage_dir, tmp_path, monkeypatch):
    from lithops.config import load_yaml_config
    path = tmp_path / "lithops.yaml"
    path.write_text("lithops:\n  backend: localhost\n  storage: localhost\n"
                    "  storage_bucket: fromfile\n"
                    "localhost:\n  max_workers: 1\n")
    assert load_yaml_config(str(path))["localhost"] == {"max_workers": 1}
    assert load_yaml_config(str(tmp_path / "none.yaml")) == {}
    monkeypatch.setenv("LITHOPS_CONFIG_FILE", str(path))
    for ex in (lithops.FunctionExecutor(config_file=str(path)), lithops.FunctionExecutor()):
        try:
            assert ex.storage.bucket == "fromfile"
            assert len(set(ex.get_result(ex.map(pid_of, range(3))))) == 1
        finally:
            ex._bx.close()
    with pytest.raises(FileNotFoundError):
        lithops.FunctionExecutor(config_file=str(tmp_path / "missing.yaml"))


def test_runtime_timeout_caps_every_call(storage_dir):
    ex = lithops.FunctionExecutor(config=CONFIG, runtime_timeout=1, max_workers=1)
    try:
        t0 = time.monotonic()
        f = ex.call_async(slow, 20)
        with pytest.raises(TimeoutError):
            f.result()
        assert time.monotonic() - t0 < 10
        assert f.execution_timeout == 1
        assert ex.get_result(ex.map(slow, [0])) == [0]
    finally:
        ex._bx.close()


# ------------------------------------------------------------------ S3 (a local S3 server)

S3RVER = REPO / "build" / "npm" / "node_modules" / ".bin" / "s3rver"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """s3rver (`make deps` installs it) on a loopback port it picks, bucket "bt":
    a Lithops config whose storage is that server (as MinIO)."""
    if not S3RVER.exists():
        pytest.fail("%s is missing: run `make deps`" % S3RVER)
    d = tmp_path_factory.mktemp("s3rver")
    p = subprocess.Popen([str(S3RVER), "-d", str(d), "-a", "127.0.0.1", "-p", "0",
                          "--configure-bucket", "bt"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    out = LineReader(p.stdout)
    try:
        m = out.wait_for(re.compile(r"listening on (\S+)"), 30)
        if m is None:
            pytest.fail("s3rver did not start:\n" + out.text())
        yield {"lithops": {"backend": "localhost", "storage": "minio"},
               "minio": {"endpoint": "http://" + m.group(1), "access_key_id": "S3RVER",
                         "secret_access_key": "S3RVER", "storage_bucket": "bt"}}
    finally:
        kill_group(p)
        p.wait(10)


def test_s3_storage(s3):
    st = lithops.Storage(config=s3)
    assert (st.backend, st.bucket) == ("minio", "bt")
    st.put_object(st.bucket, "t/a", b"0123456789")
    st.put_object(st.bucket, "t/b/c", "text")
    assert st.get_object(st.bucket, "t/a", extra_get_args={"Range": "bytes=1-4"}) == b"1234"
    assert st.get_object(st.bucket, "t/a", stream=True).read() == b"0123456789"
    assert st.head_object(st.bucket, "t/a")["content-length"] == "10"
    assert st.list_keys(st.bucket, "t/") == ["t/a", "t/b/c"]
    assert [(o["Key"], o["Size"]) for o in st.list_objects(st.bucket, "t/b")] == [("t/b/c", 4)]
    assert st.head_bucket(st.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(StorageNoSuchKeyError):
        st.get_object(st.bucket, "t/none")
    with pytest.raises(StorageNoSuchKeyError):
        st.head_object(st.bucket, "t/none")
    co = st.put_cloudobject(b"cloud")
    assert st.get_cloudobject(co) == b"cloud"
    st.delete_cloudobjects([co])
    st.delete_objects(st.bucket, ["t/a", "t/b/c"])
    assert st.list_keys(st.bucket, "t/") == []


def test_s3_map_reduce_over_a_prefix(s3):
    ex = lithops.FunctionExecutor(config=s3, max_workers=2)
    try:
        st = ex.storage
        st.put_object(st.bucket, "ds/a.txt", TEXT)
        st.put_object(st.bucket, "ds/b.txt", TEXT[:1001])
        fs = ex.map_reduce(lines_and_words, "minio://bt/ds/", words_in, obj_chunk_size=8192)
        assert len(fs) == -(-len(TEXT) // 8192) + 1 + 1
        assert ex.get_result(fs) == len(TEXT.split()) + len(TEXT[:1001].split())
        fs = ex.map_reduce(lines_and_words, ["bt/ds/a.txt", "bt/ds/b.txt"], words_in,
                           obj_chunk_number=3, obj_reduce_by_key=True)
        assert ex.get_result(fs) == [len(TEXT.split()), len(TEXT[:1001].split())]

        def put(x, storage):
            return storage.put_cloudobject(b"%d" % x)

        fs = ex.map(put, [1, 2])
        cos = ex.get_result(fs)
        assert [st.get_cloudobject(c) for c in cos] == [b"1", b"2"]
        ex.clean(fs=fs)
        assert st.list_keys(st.bucket, "lithops.jobs/tmp/%s/" % fs[0].job_key) == []
    finally:
        ex._bx.close()
