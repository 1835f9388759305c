"""bettong.Storage on a local directory: put/get (whole, streamed, ranges),
head, delete, list_keys, list_objects; and the `storage` parameter of a mapped
function, reading what the caller stored and storing what the caller reads."""

import os
import sys

import cloudpickle
import pytest

from executor_helpers import RESULT_TIMEOUT

import bettong  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT


def make_storage(path):
    return bettong.Storage(str(path))


def size_of(head):
    for k in ("content-length", "Content-Length", "ContentLength", "size", "Size"):
        if k in head:
            return int(head[k])
    raise AssertionError("no size in head_object's answer %r" % (head,))


@pytest.fixture
def st(tmp_path):
    return make_storage(tmp_path / "store")


def test_put_get(st):
    st.put_object("b", "k1", b"hello world")
    assert st.get_object("b", "k1") == b"hello world"
    st.put_object("b", "k1", b"replaced")
    assert st.get_object("b", "k1") == b"replaced"
    st.put_object("b", "empty", b"")
    assert st.get_object("b", "empty") == b""


def test_put_str_body(st):
    st.put_object("b", "s", "h\u00e9llo")
    assert st.get_object("b", "s") == "h\u00e9llo".encode("utf-8")


def test_keys_with_slashes_and_two_buckets(st):
    st.put_object("b1", "dir/sub/file.txt", b"one")
    st.put_object("b2", "dir/sub/file.txt", b"two")
    assert st.get_object("b1", "dir/sub/file.txt") == b"one"
    assert st.get_object("b2", "dir/sub/file.txt") == b"two"


def test_get_stream(st):
    body = bytes(range(256)) * 1000
    st.put_object("b", "big", body)
    f = st.get_object("b", "big", stream=True)
    try:
        got = b""
        while True:
            chunk = f.read(10000)
            if not chunk:
                break
            got += chunk
    finally:
        if hasattr(f, "close"):
            f.close()
    assert got == body


def test_get_range(st):
    body = b"0123456789abcdef"
    st.put_object("b", "r", body)
    assert st.get_object("b", "r", extra_get_args={"Range": "bytes=2-5"}) == b"2345"
    assert st.get_object("b", "r", extra_get_args={"Range": "bytes=10-"}) == b"abcdef"
    assert st.get_object("b", "r", extra_get_args={"Range": "bytes=0-0"}) == b"0"
    assert st.get_object("b", "r", extra_get_args={"Range": "bytes=14-100"}) == b"ef"
    s = st.get_object("b", "r", stream=True, extra_get_args={"Range": "bytes=4-7"})
    assert s.read() == b"4567"


def test_head(st):
    st.put_object("b", "h", b"x" * 1234)
    assert size_of(st.head_object("b", "h")) == 1234


def test_delete_and_missing(st):
    st.put_object("b", "d", b"gone soon")
    st.delete_object("b", "d")
    with pytest.raises(Exception):
        st.get_object("b", "d")
    with pytest.raises(Exception):
        st.head_object("b", "d")
    assert "d" not in st.list_keys("b")
    with pytest.raises(Exception):
        st.get_object("b", "never-was")


def test_list_keys_and_objects(st):
    for k in ["a/1", "a/2", "b/1", "c"]:
        st.put_object("lb", k, k.encode() * 3)
    assert sorted(st.list_keys("lb")) == ["a/1", "a/2", "b/1", "c"]
    assert sorted(st.list_keys("lb", prefix="a/")) == ["a/1", "a/2"]
    assert sorted(st.list_keys("lb", prefix="zzz")) == []
    objs = st.list_objects("lb", prefix="a/")
    got = sorted((o["Key"], int(o["Size"])) for o in objs)
    assert got == [("a/1", 9), ("a/2", 9)]


def test_large_object(st):
    body = os.urandom(1 << 20) * 20
    st.put_object("b", "large", body)
    assert size_of(st.head_object("b", "large")) == len(body)
    assert st.get_object("b", "large") == body


# ------------------------------------------------------------------ in map functions

def read_len(key, storage):
    return len(storage.get_object("in", key))


def write_upper(key, storage):
    body = storage.get_object("in", key)
    storage.put_object("out", key, body.upper())
    return key


def storage_type(x, storage):
    return type(storage).__name__


def test_storage_parameter_in_map(tmp_path):
    st = make_storage(tmp_path / "store")
    keys = ["k%d" % i for i in range(6)]
    for i, k in enumerate(keys):
        st.put_object("in", k, b"abc" * (i + 1))
    with bettong.FunctionExecutor(workers=2, storage=st) as ex:
        assert ex.get_result(ex.map(read_len, keys), timeout=T) == [3 * (i + 1) for i in range(6)]
        assert ex.get_result(ex.map(write_upper, keys), timeout=T) == keys
        assert ex.call_async(storage_type, 0).result(timeout=T) == "Storage"
        # id + storage + dict binding together
        fs = ex.map(lambda key, id, storage: (id, len(storage.get_object("in", key))),
                    [{"key": k} for k in keys[:3]])
        assert ex.get_result(fs, timeout=T) == [(0, 3), (1, 6), (2, 9)]
    for i, k in enumerate(keys):
        assert st.get_object("out", k) == b"ABC" * (i + 1)
    assert sorted(st.list_keys("out")) == keys
