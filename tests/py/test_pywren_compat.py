"""PyWren-IBM-Cloud programs unchanged on Bettong (python/pywren_ibm_cloud):
the seed's cars example in its PyWren spelling against a store, and PyWren's
own signatures (map's third positional argument is extra_args, its
return_when constants, map_reduce's futures, clean(cloudobjects=...))."""

import os
import re
import sys
import time

import cloudpickle
import pytest

from conftest import REPO
from executor_helpers import RESULT_TIMEOUT

import pywren_ibm_cloud as pywren  # noqa: E402 (executor_helpers put python/ on sys.path)
from bettong import objects  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT
IBM_CF_NOTE = ("lithops on Bettong: config settings with no meaning here, ignored: "
               "compute backend 'ibm_cf' (calls run on Bettong's pool)")


def ok(r):
    assert r.returncode == 0, "exit %d\n--- stdout:\n%s\n--- stderr:\n%s" % (
        r.returncode, r.stdout, r.stderr)
    return r.stdout


def test_cars_example_pywren_spelling(stores):
    from store_helpers import run_client
    store = stores()
    objects.connect(store.address)
    ex = REPO / "examples" / "objects"
    objects.disconnect()
    assert "stored 7 cars" in ok(run_client(store, ex / "fill_store.py", args=["--cars", 7], cwd=ex))
    r = run_client(store, ex / "cars_pywren.py", cwd=ex)
    out = ok(r)
    assert "cars: 7" in out
    speeds = dict(re.findall(r"(car\d+)=([0-9.]+)", out))
    assert speeds == {"car%d" % i: "%g" % (50.0 + i) for i in range(7)}
    assert "mean speed: 53.00" in out
    # the only thing on stderr: the note that IBM Cloud Functions is a Bettong pool here
    assert r.stderr.strip().splitlines() == [IBM_CF_NOTE], r.stderr


def double(x):
    return 2 * x


def add(a, b):
    return a + b


def slow(x):
    time.sleep(x)
    return x


@pytest.fixture(scope="module")
def pw(tmp_path_factory):
    saved = os.environ.get("BETTONG_STORAGE_DIR")
    os.environ["BETTONG_STORAGE_DIR"] = str(tmp_path_factory.mktemp("pywren-storage"))
    ex = pywren.local_executor(workers=2)
    try:
        yield ex
    finally:
        ex._bx.close()
        if saved is None:
            os.environ.pop("BETTONG_STORAGE_DIR", None)
        else:
            os.environ["BETTONG_STORAGE_DIR"] = saved


def test_map_third_positional_is_extra_args(pw):
    pw.map(add, [1, 2, 3], (10,))
    assert pw.get_result() == [11, 12, 13]


def test_list_items_spread_over_parameters(pw):
    pw.map(add, [[1, 2], (3, 4)])
    assert pw.get_result() == [3, 7]


def test_map_reduce_returns_map_and_reduce_futures(pw):
    fs = pw.map_reduce(double, range(5), sum, reducer_wait_local=True)
    assert isinstance(fs, list) and len(fs) == 6
    assert all(f.done for f in fs[:5]), "reducer_wait_local returned before the maps ended"
    assert pw.get_result() == 20
    assert pw.get_result(fs) == 20


def test_call_async_and_get_result(pw):
    f = pw.call_async(double, 21)
    assert pw.get_result() == 42
    assert f.result() == 42 and f.done and not f.error


def test_return_when_constants(pw):
    assert (pywren.ALL_COMPLETED, pywren.ANY_COMPLETED, pywren.ALWAYS) == (1, 2, 3)
    fs = pw.map(slow, [0, 3])
    done, not_done = pw.wait(fs, return_when=pywren.ANY_COMPLETED)
    assert done == [fs[0]] and not_done == [fs[1]]
    done, not_done = pw.wait(fs, return_when=pywren.ALWAYS)
    assert not_done == [fs[1]]
    done, not_done = pw.wait(fs, return_when=pywren.ALL_COMPLETED)
    assert done == fs and not_done == []
    with pytest.raises(ValueError, match="return_when"):
        pw.wait(fs, return_when=100)


def words(obj):
    return len(obj.data_stream.read().split())


def test_object_chunking_and_what_is_refused(pw):
    st = pw.storage
    st.put_object(st.bucket, "pw/a.txt", b"".join(b"w%d x y\n" % i for i in range(1000)))
    fs = pw.map_reduce(words, "localhost://%s/pw/" % st.bucket, sum, chunk_n=4,
                       reducer_one_per_object=True)
    assert len(fs) == 4 + 1
    assert pw.get_result(fs) == 3000
    with pytest.raises(ValueError, match="obj_chunk_size applies"):
        pw.map(double, [1], chunk_size=1 << 20)
    with pytest.raises(ValueError, match="'ibm_cos': the config names no `endpoint`"):
        pywren.ibm_cf_executor(storage_backend="ibm_cos")
    with pytest.raises(NotImplementedError, match="storage backend 'swift'"):
        pywren.ibm_cf_executor(storage_backend="swift")


def test_clean_cloudobjects(pw):
    def put(x, storage):
        return storage.put_cloudobject(b"v%d" % x)

    cos = pw.get_result(pw.map(put, [1, 2]))
    st = pw.storage
    assert [st.get_cloudobject(c) for c in cos] == [b"v1", b"v2"]
    pw.clean(cs=cos[:1])
    assert st.list_keys(st.bucket, cos[0].key) == []
    assert st.list_keys(st.bucket, cos[1].key) == [cos[1].key]
    pw.clean(cloudobjects=True)
    assert st.list_keys(st.bucket, cos[1].key) == []

