"""Functions defined in __main__ of a script: lambdas, closures, nested functions,
a bound method of a __main__ class, a plain __main__ function. Prints one JSON line."""

import json
import os
import sys

import bettong

OFFSET = 100


def make_adder(n):
    def adder(x):
        return x + n + OFFSET
    return adder


def outer():
    def inner(x):
        def innermost(y):
            return y * 2
        return innermost(x) + 1
    return inner


class Scaler:
    def __init__(self, k):
        self.k = k

    def mul(self, x):
        return x * self.k


class MainError(Exception):
    """An exception class of the script itself."""


def raise_main(x):
    raise MainError("main error %d" % x)


def main_func(x):
    return {"x": x, "pid": os.getpid()}


def main():
    out = {}
    with bettong.FunctionExecutor(workers=2) as ex:
        out["lambda"] = ex.get_result(ex.map(lambda x: x * 3, [1, 2, 3]), timeout=30)
        out["closure"] = ex.get_result(ex.map(make_adder(5), [1, 2]), timeout=30)
        out["nested"] = ex.get_result(ex.map(outer(), [10, 20]), timeout=30)
        out["method"] = ex.call_async(Scaler(4).mul, 5).result(timeout=30)
        r = ex.call_async(main_func, 2).result(timeout=30)
        out["main_func"] = r["x"]
        out["remote_pid_differs"] = r["pid"] != os.getpid()
        out["map_reduce"] = ex.map_reduce(lambda x: x + 1, [1, 2, 3],
                                          lambda rs: sum(rs) * 10).result(timeout=30)
        captured = {"k": [1, 2, 3]}
        out["captured"] = ex.call_async(lambda i: captured["k"][i], 2).result(timeout=30)
        try:
            ex.call_async(raise_main, 5).result(timeout=30)
        except Exception as e:  # the same class, or a RemoteError naming it
            out["main_exc"] = [type(e).__name__, str(e), type(e) is MainError]
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
