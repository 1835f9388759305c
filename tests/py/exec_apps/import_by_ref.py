"""Functions from modules found on the caller's sys.path are pickled by reference:
the workers must import them. One module sits next to this script (sys.path[0]),
another in a directory added to sys.path before the executor is made.
argv[1]: that directory (it holds bt_exec_user_mod.py)."""

import json
import sys

sys.path.insert(0, sys.argv[1])

import bettong  # noqa: E402
import bt_exec_user_mod  # noqa: E402
import sibling_mod  # noqa: E402

with bettong.FunctionExecutor(workers=2) as ex:
    out = {
        "sibling": ex.get_result(ex.map(sibling_mod.triple, [1, 2]), timeout=30),
        "user_mod": ex.get_result(ex.map(bt_exec_user_mod.negate, [1, 2]), timeout=30),
        "user_mod_file": ex.call_async(bt_exec_user_mod.where, 0).result(timeout=30),
    }
print(json.dumps(out, sort_keys=True))
