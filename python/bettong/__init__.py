"""Bettong parallel functions: PyWren/Lithops-style executors on Bettong workers.

    import bettong
    with bettong.FunctionExecutor() as ex:          # a local pool, one worker per core
        fs = ex.map(lambda x: x * x, range(100))
        print(ex.get_result(fs))

The contract is the executor API spec (shared/specs/executor-api.md):
FunctionExecutor (call_async, map, map_reduce, wait, get_result, plot), futures,
failures (RemoteError, WorkerDied, TimeoutError), PoolExecutor
(concurrent.futures), Storage, and the PyWren spellings default_executor /
local_executor / wait / get_all_results.

Workers are `bettong worker` processes (C, embedding this Python) under a
`bettong pool`; the pool's protocol is spoken by the C extension bettong._bettong.

The names below are imported on first use: a worker that only needs the small
modules its calls refer to (bettong._worker, bettong.storage) does not pay for the
client side.
"""

import importlib

_EXPORTS = {
    "FunctionExecutor": ".executor",
    "default_executor": ".executor",
    "local_executor": ".executor",
    "PoolExecutor": ".pool_executor",
    "ResponseFuture": ".futures",
    "wait": ".futures",
    "get_all_results": ".futures",
    "ALL_COMPLETED": ".futures",
    "ANY_COMPLETED": ".futures",
    "ALWAYS": ".futures",
    "FIRST_COMPLETED": ".futures",
    "CancelledError": ".futures",
    "Storage": ".storage",
    "StorageNoSuchKeyError": ".storage",
    "NoSuchKey": ".storage",
    "BettongError": ".errors",
    "RemoteError": ".errors",
    "RemoteTraceback": ".errors",
    "WorkerDied": ".errors",
    "PoolError": ".errors",
    "RefusedError": ".errors",
    "AuthenticationError": ".errors",
    "ProtocolError": ".errors",
    # Persistent objects (the data service, `bettong store`).
    "connect": ".objects",
    "disconnect": ".objects",
    "Persistent": ".objects",
    "DataClayObject": ".objects",
    "active": ".objects",
    "activemethod": ".objects",
    "NotFound": ".objects",
    "DoesNotExist": ".objects",
    "AliasTaken": ".objects",
    "pipeline": ".objects",
    "StoreError": ".objects",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bettong' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
