"""wait + get_result with the default progress bar setting (or argv[1] == "off":
show_progressbar=False). Prints the results as one JSON line."""

import json
import sys
import time

import bettong


def slowish(x):
    time.sleep(0.25)
    return x * 2


kw = {"show_progressbar": False} if sys.argv[1:] == ["off"] else {}
with bettong.FunctionExecutor(workers=2) as ex:
    fs = ex.map(slowish, range(6))
    ex.wait(fs, timeout=30, **kw)
    res = ex.get_result(fs, timeout=30, **kw)
print(json.dumps(res))
