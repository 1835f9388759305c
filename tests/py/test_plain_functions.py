"""Plain functions sent without cloudpickle (bettong._serial.dumps_function's
standard-pickle path, rebuilt in the worker by bettong._fn): the function a
worker gets must be the one cloudpickle gives (same globals dict, names,
defaults, annotations, doc, attributes, same results), cloudpickle must not be
imported on the way, anything not certainly plain must still go with
cloudpickle, and the global-name scan that replaces dis must agree with it."""

import json
import pickle
import sys
import textwrap

import pytest

from executor_helpers import PYDIR, run_script

if str(PYDIR) not in sys.path:
    sys.path.insert(0, str(PYDIR))

from bettong import _fn, _serial  # noqa: E402

# ------------------------------------------------------------------ the scan
# of a code's global names


def _dis_global_names(co):
    """What cloudpickle (and _serial before) found with dis."""
    import dis
    ops = {dis.opmap[n] for n in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL")}
    found = [i.argval for i in dis.get_instructions(co) if i.opcode in ops]
    for c in co.co_consts:
        if isinstance(c, type(co)):
            found.extend(_dis_global_names(c))
    return tuple(dict.fromkeys(found))


def _all_code(co):
    yield co
    for c in co.co_consts:
        if isinstance(c, type(co)):
            yield from _all_code(c)


def _many_globals_source(n):
    names = ", ".join(f"g{i}" for i in range(n))
    # w comes last in co_names: STORE_GLOBAL and DELETE_GLOBAL need EXTENDED_ARG too
    return (f"def many():\n    global w\n    t = ({names})\n    w = t\n    del w\n"
            f"    return [x.real for x in t]\n")


def test_known_opcodes_match_the_opcode_module():
    import opcode
    known = _serial._KNOWN_OPS.get(sys.version_info[:2])
    if known is None:
        pytest.skip(f"no opcode table kept for Python {sys.version_info[:2]}")
    m = opcode.opmap
    assert known == (m["LOAD_GLOBAL"], m["STORE_GLOBAL"], m["DELETE_GLOBAL"], m["EXTENDED_ARG"])


def test_global_names_agree_with_dis_on_varied_code():
    import importlib
    codes = []
    for name in ("json.decoder", "json.encoder", "email.message", "asyncio.base_events",
                 "collections", "argparse", "typing", "dataclasses", "pickle", "inspect",
                 "bettong.executor", "bettong._serial", "bettong.objects"):
        mod = importlib.import_module(name)
        with open(mod.__file__, encoding="utf-8") as f:
            codes.append(compile(f.read(), mod.__file__, "exec"))
    ns = {}
    exec(_many_globals_source(400), ns)  # EXTENDED_ARG before LOAD_GLOBAL/STORE_GLOBAL
    codes.append(ns["many"].__code__)
    # Code the interpreter has specialized (run often): co_code is the plain
    # bytecode still, inline caches zeroed.
    ns.update({f"g{i}": i for i in range(400)})
    exec("import math\nK = 2\ndef hot(x):\n    return [math.floor(x) + K + len(str(y))"
         " for y in range(3)]\n", ns)
    for i in range(2000):
        ns["hot"](i)
        ns["many"]()
    codes.append(ns["hot"].__code__)
    assert _serial._global_names(ns["hot"].__code__) == ("range", "math", "K", "len", "str")
    n = 0
    for top in codes:
        for co in _all_code(top):
            assert _serial._global_names(co) == _dis_global_names(co), co
            n += 1
    assert n > 1500
    assert _serial._global_names(ns["many"].__code__)[-3:] == ("g398", "g399", "w")
    assert len(_serial._global_names(ns["many"].__code__)) == 401


def test_importing_serial_does_not_import_dis_hashlib_reprlib_or_cloudpickle():
    # (some, e.g. reprlib, may be loaded at start-up already: only new ones count)
    r = run_script("import sys; before = set(sys.modules); import bettong._serial\n"
                   "print(sorted(m for m in ('dis', 'opcode', 'hashlib', '_hashlib', 'reprlib',"
                   " 'cloudpickle', 'pickle', 'weakref', 're') if m in set(sys.modules) - before))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "[]"


def test_digest_is_blake2b_16():
    import hashlib
    assert _serial.digest(b"abc") == hashlib.blake2b(b"abc", digest_size=16).digest()


# ------------------------------------------------------------------ the same
# function as cloudpickle's, by a sender and a receiver process

SENDER = textwrap.dedent('''
    import collections, json, math, os.path, sys
    from collections import OrderedDict
    from os.path import join
    import bettong._serial as S

    K = 3
    T = (1, 2.5, "s", None, b"b")
    L = [1, 2, 3]
    D = {"a": 1, "nested": [(1, 2)]}
    COUNTER = 0

    def add(x):
        return x + K

    def uses_module(x):
        return math.sqrt(x) + math.pi

    def uses_submodule(p):
        return os.path.basename(p)

    def uses_imported_function(a):
        return join(a, "b")

    def uses_class(x):
        return list(OrderedDict(a=x).items()) + [json.dumps(T)]

    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    def with_defaults(x, y=2, *args, z=(3, "z"), **kw):
        return x + y + z[0] + len(args) + len(kw)

    def annotated(x: int, y: "str" = "a") -> float:
        """A docstring."""
        return float(x)

    def nested(x):
        def inner(y):
            return y * K
        return [inner(i) for i in range(x)] + list(map(lambda v: v + K, range(x)))

    def comprehensions(x):
        return {k: K for k in range(x)}, sum(i * K for i in range(x)), {K for _ in range(x)}

    def mutable_globals(x):
        return L + [x, D["a"], D["nested"][0][1]]

    def missing_global(x):
        return UNDEFINED_NAME + x

    def global_writer(x):
        global COUNTER
        COUNTER = COUNTER + x
        return COUNTER

    def generator(x):
        yield from range(x)

    def with_attrs(x):
        return x
    with_attrs.tag = ("t", 1)

    exec(MANY, globals())
    for i in range(400):
        globals()["g%d" % i] = i

    lam = lambda x: x * K

    def uses_main_function(x):
        return add(x) + fact(3)

    def is_even(n):
        return True if n == 0 else is_odd(n - 1)

    def is_odd(n):
        return False if n == 0 else is_even(n - 1)

    import functools
    partial_of_add = functools.partial(with_defaults, 10)

    # Not plain: cloudpickle takes them.
    class C:
        pass

    def uses_main_class():
        return C.__name__

    def make_closure():
        k = 5
        return lambda x: x + k
    closure = make_closure()

    def default_of_main_class(x, c=C):
        return x

    PLAIN = ["add", "uses_module", "uses_submodule", "uses_imported_function", "uses_class",
             "fact", "with_defaults", "annotated", "nested", "comprehensions",
             "mutable_globals", "missing_global", "global_writer", "generator", "with_attrs",
             "many", "lam", "uses_main_function", "is_even", "partial_of_add"]
    OTHER = ["uses_main_class", "closure", "default_of_main_class"]
    out = {}
    for name in PLAIN + OTHER:
        pf = S.dumps_function(globals()[name])
        out[name] = {"ours": pf.payload.hex(), "by_reference": pf.by_reference,
                     "plain": b"cloudpickle" not in pf.payload}
        if name == PLAIN[-1]:
            out["cloudpickle_after_plain"] = "cloudpickle" in sys.modules
    import cloudpickle
    for name in PLAIN + OTHER:
        out[name]["cloudpickle"] = cloudpickle.dumps(globals()[name], 5).hex()
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
''')

RECEIVER = textwrap.dedent('''
    import builtins, json, pickle, sys, types

    CALLS = {"add": [(1,)], "uses_module": [(4,)], "uses_submodule": [("/a/b.txt",)],
             "uses_imported_function": [("a",)], "uses_class": [(1,)], "fact": [(5,)],
             "with_defaults": [(1,), (1, 1, 0, 0)], "annotated": [(2,)], "nested": [(3,)],
             "comprehensions": [(3,)], "mutable_globals": [(9,)], "missing_global": [(1,)],
             "global_writer": [(2,), (3,)], "generator": [(3,)], "with_attrs": [(7,)],
             "many": [()], "lam": [(2,)], "uses_main_function": [(1,)], "is_even": [(7,), (10,)],
             "partial_of_add": [(1,)],
             "uses_main_class": [()], "closure": [(1,)], "default_of_main_class": [(1,)]}

    def value(f, v):
        if v is f:
            return "<itself>"
        if isinstance(v, types.ModuleType):
            return "<module %s>" % v.__name__
        if v is builtins.__dict__:
            return "<builtins>"
        if isinstance(v, types.FunctionType):
            return "<function %s.%s, globals %s>" % (
                v.__module__, v.__qualname__,
                "shared" if v.__globals__ is f.__globals__ else "its own")
        if isinstance(v, type):
            return "<%s %s.%s>" % (type(v).__name__, v.__module__, v.__qualname__)
        return repr(v)

    def run(f, args):
        try:
            r = f(*args)
            if isinstance(r, types.GeneratorType):
                r = list(r)
            return repr(r)
        except Exception as e:
            return "raised %s: %s" % (type(e).__name__, e)

    def describe(name, f):
        if not isinstance(f, types.FunctionType):
            return {"results": [run(f, a) for a in CALLS[name]], "type": repr(type(f))}
        d = {k: repr(getattr(f, k)) for k in ("__name__", "__qualname__", "__module__",
             "__doc__", "__defaults__", "__kwdefaults__", "__annotations__", "__dict__")}
        d["results"] = [run(f, a) for a in CALLS[name]]
        d["globals"] = [(k, value(f, v)) for k, v in f.__globals__.items()]  # after the calls
        d["code"] = f.__code__
        return d

    with open(sys.argv[1]) as fh:
        sent = json.load(fh)
    names = [n for n in sent if n != "cloudpickle_after_plain"]
    ours = {n: describe(n, pickle.loads(bytes.fromhex(sent[n]["ours"])))
            for n in names if sent[n]["plain"]}
    after_plain = "cloudpickle" in sys.modules
    theirs = {n: describe(n, pickle.loads(bytes.fromhex(sent[n]["cloudpickle"]))) for n in names}
    report = {"after_plain": after_plain, "sender_after_plain": sent["cloudpickle_after_plain"],
              "plain": sorted(ours),
              "by_reference": sorted(n for n in names if sent[n]["by_reference"]),
              "differences": [], "theirs": {}}
    for n in names:
        t = theirs[n]
        report["theirs"][n] = t["results"]
        if n in ours:
            o = ours[n]
            assert o.get("code") == t.get("code"), n
            for k in t:
                if k != "code" and o[k] != t[k]:
                    report["differences"].append([n, k, o[k], t[k]])
    print(json.dumps(report))
''')

PLAIN = ["add", "uses_module", "uses_submodule", "uses_imported_function", "uses_class", "fact",
         "with_defaults", "annotated", "nested", "comprehensions", "mutable_globals",
         "missing_global", "global_writer", "generator", "with_attrs", "many", "lam",
         "uses_main_function", "is_even", "partial_of_add"]


def test_plain_functions_are_the_functions_cloudpickle_gives(tmp_path):
    sent = tmp_path / "sent.json"
    many = "MANY = %r\n" % _many_globals_source(400)
    r = run_script(many + SENDER, args=[sent])
    assert r.returncode == 0, r.stderr
    r = run_script(RECEIVER, args=[sent])
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["plain"] == sorted(PLAIN)  # and the others went with cloudpickle
    assert report["by_reference"] == []
    assert report["sender_after_plain"] is False  # plain ones pickled without it
    assert report["after_plain"] is False  # and loaded without it
    assert report["differences"] == []
    theirs = report["theirs"]
    assert theirs["add"] == ["4"]
    assert theirs["fact"] == ["120"]
    assert theirs["uses_submodule"] == ["'b.txt'"]
    assert theirs["with_defaults"] == ["6", "7"]
    assert theirs["global_writer"] == ["2", "5"]
    assert theirs["missing_global"] == ["raised NameError: name 'UNDEFINED_NAME' is not defined"]
    assert theirs["many"] == [repr(list(range(400)))]
    assert theirs["uses_main_function"] == ["10"]
    assert theirs["is_even"] == ["False", "True"]
    assert theirs["partial_of_add"] == ["14"]
    assert theirs["closure"] == ["6"]


@pytest.fixture
def no_registry(monkeypatch):
    """cloudpickle's by-value registry seen as empty (another test module of
    this process may have registered itself: everything goes with cloudpickle
    then, see test_registered_modules_send_everything_with_cloudpickle)."""
    monkeypatch.setattr(_serial, "_registry", lambda: ())


def _main_function(src, name):
    """A function as if defined in a script's __main__."""
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(textwrap.dedent(src), ns)
    return ns[name]


def test_by_reference_functions_use_the_standard_pickler(no_registry):
    import os.path
    pf = _serial.dumps_function(os.path.join)
    assert pf.by_reference and pf.payload == pickle.dumps(os.path.join, 5)
    pf = _serial.dumps_function(len)
    assert pf.by_reference and pf.payload == pickle.dumps(len, 5)


def test_plain_payload_is_not_by_reference_and_equal_functions_pickle_alike(no_registry):
    f = _main_function("K = 2\ndef f(x):\n    return x * K\n", "f")
    pf = _serial.dumps_function(f)
    assert not pf.by_reference and b"bettong._fn" in pf.payload
    assert pickle.loads(pf.payload)(5) == 10
    assert _serial.dumps_function(f).payload == pf.payload


def test_wrapped_plain_functions_go_with_the_standard_pickler():
    # map's chunks and extra_env wrap the function in an object of
    # bettong._worker: still no cloudpickle when the function is plain.
    r = run_script(textwrap.dedent('''
        import pickle, sys
        import bettong._serial as S
        from bettong._worker import ChunkFunction, EnvFunction
        K = 5
        def f(x):
            return x + K
        pfs = [S.dumps_function(ChunkFunction(f, True)),
               S.dumps_function(EnvFunction(f, {"A": "1"}))]
        print([pf.by_reference for pf in pfs], [b"bettong._fn" in pf.payload for pf in pfs])
        print(pickle.loads(pfs[0].payload)([1, 2])[0], pickle.loads(pfs[1].payload)(1))
        print("cloudpickle" in sys.modules)
    '''))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["[False, False] [True, True]", "[6, 7] 6", "False"]


def test_registered_modules_send_everything_with_cloudpickle(tmp_path):
    # A module in cloudpickle's pickle-by-value registry: cloudpickle decides.
    (tmp_path / "plainfn_mod.py").write_text("def g(x):\n    return x + 1\n")
    r = run_script(textwrap.dedent('''
        import sys
        sys.path.insert(0, sys.argv[1])
        import cloudpickle, plainfn_mod, bettong._serial as S
        from plainfn_mod import g
        def f(x):
            return plainfn_mod.g(x)
        print(b"bettong._fn" in S.dumps_function(f).payload, S.dumps_function(g).by_reference)
        cloudpickle.register_pickle_by_value(plainfn_mod)
        p = S.dumps_function(f).payload
        q = S.dumps_function(g)
        print(b"bettong._fn" in p, p == cloudpickle.dumps(f, 5), q.by_reference,
              q.payload == cloudpickle.dumps(g, 5))
    '''), args=[tmp_path])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["True True", "False True False True"]


def test_a_worker_with_another_bytecode_refuses_the_function(monkeypatch, no_registry):
    f = _main_function("def f(x):\n    return x + 1\n", "f")
    payload = _serial.dumps_function(f).payload
    monkeypatch.setattr(_fn, "INTERPRETER", ("cpython", b"\x00\x00\r\n"))
    with pytest.raises(_fn.InterpreterMismatch, match="run the workers with the caller's Python"):
        pickle.loads(payload)


# ------------------------------------------------------------------ through an
# executor

EXECUTOR_PLAIN = textwrap.dedent('''
    import math, sys
    import bettong

    K = 1

    def f(x):
        return math.floor(x) + K, "cloudpickle" in sys.modules

    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    with bettong.FunctionExecutor() as ex:
        print(ex.call_async(f, 1).result(timeout=30))
        print("client", "cloudpickle" in sys.modules)
        K = 10
        print(ex.call_async(f, 1).result(timeout=30)[0])
        print(ex.call_async(fact, 5).result(timeout=30))
        print("client", "cloudpickle" in sys.modules)
''')


def test_executor_runs_plain_functions_and_sees_rebound_globals():
    r = run_script(EXECUTOR_PLAIN)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0].startswith("(2, ")
    assert lines[2:4] == ["11", "120"]


def test_executor_plain_functions_import_no_cloudpickle():
    r = run_script(EXECUTOR_PLAIN)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:5] == ["(2, False)", "client False", "11", "120", "client False"]


def test_executor_other_functions_still_go_with_cloudpickle():
    r = run_script(textwrap.dedent('''
        import sys
        import bettong

        def helper(x):
            return x * 2

        def f(x):
            return helper(x) + 1

        def make(k):
            return lambda x: x + k

        with bettong.FunctionExecutor() as ex:
            print(ex.call_async(f, 1).result(timeout=30),
                  ex.call_async(make(5), 1).result(timeout=30))
            print("cloudpickle" in sys.modules)
    '''))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["3 6", "True"]
