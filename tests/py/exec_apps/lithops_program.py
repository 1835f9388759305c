"""A Lithops program, written for Lithops (nothing Bettong-specific): map,
map with chunksize, map_reduce, call_async, wait/get_result variants,
Storage on localhost storage, CloudObjects, clean(), RetryingFunctionExecutor,
and lithops.multiprocessing. Run with the pool from the environment (local, or
BETTONG_POOL/BETTONG_SECRET) and a scratch directory as first argument."""

import os
import pickle
import sys

import lithops
from lithops import FunctionExecutor, RetryingFunctionExecutor, Storage
from lithops.config import default_config, extract_storage_config
from lithops.multiprocessing import Pool
from lithops.storage.utils import StorageNoSuchKeyError

SCRATCH = sys.argv[1]


def add(x, y):
    return x + y


def total(results):
    return sum(results)


def count_words(key, bucket, storage):
    return len(storage.get_object(bucket, key).split())


def count_obj(obj):
    return len(obj.data_stream.read().split())


def put_count(key, bucket, storage):
    return storage.put_cloudobject(pickle.dumps(count_words(key, bucket, storage)))


def sum_cloudobjects(cos, storage):
    return sum(pickle.loads(storage.get_cloudobject(c)) for c in cos)


def fails_first(i, path):
    mark = os.path.join(path, "ran-%d" % i)
    if not os.path.exists(mark):
        open(mark, "w").close()
        raise RuntimeError("first invocation of %d fails" % i)
    return i


def boom(x):
    if x == 2:
        raise ValueError("boom %d" % x)
    return x


config = {"lithops": {"backend": "localhost", "storage": "localhost"}}
fexec = FunctionExecutor(config=config)

fexec.map(add, [(1, 1), (2, 2), (3, 3)])
print("map", fexec.get_result())
fs = fexec.map(add, [(i, 10) for i in range(5)], 2)          # chunksize 2
print("chunksize", fexec.get_result())
fexec.map_reduce(add, [(1, 1), (2, 2), (3, 3)], total)
print("map_reduce", fexec.get_result())
f = fexec.call_async(add, {"x": 2, "y": 3})
print("call_async", f.result(), fexec.get_result())
fs = fexec.map(boom, [1, 2, 3])
try:
    fexec.get_result(fs)
except ValueError as e:
    print("raised", e)
print("throw_except=False", fexec.get_result(fs, False))
print("lithops.get_result", lithops.get_result(fexec.map(add, [(5, 5)])))
done, not_done = lithops.wait(fexec.map(add, [(0, 1), (0, 2)]), throw_except=False)
print("lithops.wait", len(done), len(not_done), [f.done for f in done])
fexec = FunctionExecutor(config=config)   # (the futures above were never all read)

storage = Storage(storage_config=extract_storage_config(default_config(config_data=config)))
print("storage", storage.backend, storage.bucket)
storage.put_object(storage.bucket, "texts/a", b"one two three")
storage.put_object(storage.bucket, "texts/b", b"four five")
keys = storage.list_keys(storage.bucket, "texts/")
fexec.map_reduce(count_words, [(k, storage.bucket) for k in keys], total)
print("words", fexec.get_result())
fs = fexec.map_reduce(count_obj, "localhost://%s/texts/" % storage.bucket, total,
                      obj_chunk_size=4)
print("objects", len(fs), fexec.get_result(fs))
cos = fexec.get_result(fexec.map(put_count, [(k, storage.bucket) for k in keys]))
print("cloudobjects", fexec.get_result(fexec.call_async(sum_cloudobjects, cos)))
fexec.clean(cs=cos)
print("cleaned", [storage.list_keys(c.bucket, c.key) for c in cos])
try:
    storage.head_object(storage.bucket, "texts/none")
except StorageNoSuchKeyError:
    print("no such key")
storage.delete_objects(storage.bucket, keys)

with RetryingFunctionExecutor(fexec) as rexec:
    fs = rexec.map(fails_first, [(i, SCRATCH) for i in range(3)], retries=1)
    done, pending = rexec.wait(fs, throw_except=False)
    print("retries", sorted(f.result() for f in done), len(pending))

with Pool() as pool:
    print("pool", pool.map(abs, [-1, -2, 3]), pool.starmap(add, [(1, 2), (3, 4)]))
