#!/usr/bin/python3
"""dataClay's own functional tests against a Bettong service (by hand; not CI).

    python3 bench/dataclay_functional.py --dataclay /tmp/dataclay [--backends 3]
    python3 bench/dataclay_functional.py --dataclay /tmp/dataclay -- -k alias

PATH is a checkout of bsc-dom/dataclay (nothing of it is copied here). The script

  1. starts the Bettong service: when `bettong store --help` mentions
     --metadata, a redis-server on a free port (checked in its log) and N stores
     joined to it (`--name backend_i --metadata redis://127.0.0.1:PORT`); else
     one embedded store, and it says so;
  2. runs their tests/functional with pytest from their checkout, their test
     files and model classes (src/dataclay/contrib/modeltest) unchanged, with
     our python/ first on sys.path so that `import dataclay` is Bettong's
     compatibility package, --noconftest (their conftest starts docker
     services) and -p dataclay_functional_plugin (bench/), which provides their
     `client` fixture on our service and records every report. Their model
     packages are reachable as dataclay/contrib/<pkg> in a directory of
     symlinks put on sys.path after ours, in pytest and in the stores: the
     stores import them if Bettong's dataclay.contrib takes in every
     dataclay/contrib directory on sys.path (in pytest the plugin also adds it);
  3. prints passed / failed / errors / not collected, and each test that did
     not pass, grouped by what is missing or wrong: several backends, the
     async a_* API, dataClay's module layout or a missing name, wrong
     semantics; tests about dataClay's internals (heap manager, alien and stub
     objects, COMPSs' storage API) are marked, as issue 11 leaves them out.

Needs pytest and pytest-asyncio for /usr/bin/python3 (Debian: python3-pytest,
python3-pytest-asyncio) and, with --metadata, redis-server. Logs go to
bench/out/dataclay-<time>/ (git-ignored); --json FILE writes every test's outcome
and category.
"""

import argparse
import ast
import collections
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PYTHON_DIR = os.path.join(REPO, "python")
PLUGIN = "dataclay_functional_plugin"

# Test files about dataClay's internals, outside issue 11's target.
INTERNAL_FILES = {
    "test_heapmanager.py": "heap manager (flush_all, data_manager)",
    "test_alien.py": "alien objects (AlienDataClayObject, pydantic)",
    "test_stub_object.py": "stub objects (StubDataClayObject)",
}
# Tests that assert a limit of dataClay that Bettong does not have: reported
# as a group of their own when they fail for that reason.
DIFFERENCES = {
    "test_make_persistent.py::test_persistent_error_unknown_module":
        ("DID NOT RAISE", "expects dataClay's refusal of a class its backends cannot import; "
                          "Bettong sends such a class by value, and it is stored"),
}
# dataClay API names (besides a_* and _dc_*): their absence is a missing name;
# any other missing attribute is state the store lost (wrong semantics).
API_NAMES = {"is_persistent", "new_version", "consolidate_version", "get_properties",
             "dc_put", "dc_update_properties", "dc_clone", "getID", "data_manager",
             "new_proxy_object", "get_by_id", "get_by_alias", "add_alias",
             "delete_alias", "get_aliases", "make_persistent"}
# Names whose absence means the test needs several backends.
MULTI_NAMES = {"get_backends", "a_get_backends", "move", "new_replica", "_dc_meta",
               "backend_id", "recursive", "remotes", "sync", "backend_clients",
               "master_backend_id", "replica_backend_ids"}
NEEDS = [
    ("backends", re.compile(r"get_backends|backend_id|\.a?_?move\(|new_replica|_dc_meta|"
                            r"backend_clients")),
    ("async", re.compile(r"\bawait\b")),
    ("internals", re.compile(r"flush_all|storage\.api|StubDataClayObject|"
                             r"AlienDataClayObject|new_object_version")),
    ("raises", re.compile(r"pytest\.raises")),         # used to classify, not shown
]
GROUPS = [
    ("backends", "(a) several backends: get_backends, backend_id, move, new_replica, _dc_meta"),
    ("async", "(b) async a_* API"),
    ("layout", "(c) dataClay's module layout or a missing name"),
    ("semantics", "(d) wrong semantics on the backend(s) there are"),
    ("hung", "(e) hung (interrupted by the harness)"),
    ("difference", "(f) a limit of dataClay's that Bettong does not have"),
]


# ---------------------------------------------------------------- services

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(path, pattern, proc, seconds, what):
    """The first match of pattern in the file at path, waiting for it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with open(path, errors="replace") as f:
                m = re.search(pattern, f.read())
            if m:
                return m
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return None
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start within {seconds} s (see {path})")
        time.sleep(0.02)


def start_redis(workdir, logdir):
    """A redis-server on a free loopback port, the port read back from its log
    (another process may take a free port first: then try another)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is missing (Debian: apt-get install redis-server)")
    for attempt in range(5):
        port = free_port()
        log = os.path.join(logdir, f"redis-{attempt}.log")
        argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", workdir, "--logfile", log]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        if wait_for(log, r"Ready to accept connections", p, 10, "redis-server"):
            m = wait_for(log, r"port=(\d+)", p, 1, "redis-server")
            if m and int(m.group(1)) == port:
                return p, port
        stop(p)
    raise SystemExit(f"redis-server did not start on a free port (see {logdir}/redis-*.log)")


def models_dir(checkout, workdir):
    """A directory to put on sys.path (after ours) holding dataclay/contrib/<pkg>
    for each model package of their contrib (modeltest, ...), as symlinks into
    their checkout: their models, and nothing else of dataClay, importable as
    dataclay.contrib.* wherever Bettong's dataclay.contrib extends its __path__
    along sys.path (a namespace for model packages), in the stores too."""
    src = os.path.join(checkout, "src", "dataclay", "contrib")
    top = os.path.join(workdir, "models")
    dst = os.path.join(top, "dataclay", "contrib")
    os.makedirs(dst)
    for name in sorted(os.listdir(src)):
        if os.path.isfile(os.path.join(src, name, "__init__.py")):
            os.symlink(os.path.join(src, name), os.path.join(dst, name))
    return top


def start_store(bettong, name, workdir, logdir, metadata, models):
    """One `bettong store` on a loopback port it picks; its address from its
    'listening on' line."""
    out = os.path.join(logdir, f"{name}.out")
    argv = [bettong, "store", "--dir", os.path.join(workdir, name),
            "--listen", "127.0.0.1:0"]
    if metadata:
        argv += ["--name", name, "--metadata", metadata]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PYTHON_DIR, models]))
    with open(out, "wb") as o, open(os.path.join(logdir, f"{name}.log"), "wb") as e:
        p = subprocess.Popen(argv, stdout=o, stderr=e, env=env, start_new_session=True)
    m = wait_for(out, r"listening on (\S+):(\d+)", p, 20, f"bettong store {name}")
    if m is None:
        raise SystemExit(f"bettong store {name} exited with {p.returncode} "
                         f"(see {logdir}/{name}.log): {' '.join(argv)}")
    return p, f"{m.group(1)}:{m.group(2)}", argv


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def store_has_metadata(bettong):
    r = subprocess.run([bettong, "store", "--help"], capture_output=True, text=True)
    return "--metadata" in r.stdout + r.stderr


# ---------------------------------------------------------------- their tests

def test_inventory(functional_dir):
    """{file::name: needs} for every test function of their functional tests."""
    tests = {}
    for fn in sorted(os.listdir(functional_dir)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        src = open(os.path.join(functional_dir, fn)).read()
        for node in ast.parse(src).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and node.name.startswith("test"):
                body = ast.get_source_segment(src, node) or ""
                needs = [n for n, rx in NEEDS if rx.search(body)]
                if isinstance(node, ast.AsyncFunctionDef) and "async" not in needs:
                    needs.append("async")
                if fn in INTERNAL_FILES and "internals" not in needs:
                    needs.append("internals")
                tests[f"{fn}::{node.name}"] = needs
    return tests


def classify(message, needs):
    """(group, detail) of a failure from its exception line."""
    where = " (in the store)" if message.startswith("bettong.") else ""
    m = re.search(r"No module named '([\w.]+)'|import of module '([\w.]+)' failed", message)
    if m:
        return "layout", f"module {m.group(1) or m.group(2)} missing{where}"
    m = re.search(r"cannot import name '(\w+)' from '([\w.]+)'", message)
    if m:
        return "layout", f"{m.group(2)}.{m.group(1)} missing"
    m = re.search(r"has no attribute '(\w+)'|unexpected keyword argument '(\w+)'", message)
    if m:
        name = m.group(1) or m.group(2)
        what = f"{name} missing" if m.group(1) else f"argument {name}= not accepted"
        if name.startswith("a_"):
            return "async", what
        if name in MULTI_NAMES:
            return "backends", what
        if name.startswith("_dc_") or name in API_NAMES:
            return "layout", what
        return "semantics", f"attribute {name} lost (not stored, or __setstate__ not run)"
    if "async def functions are not natively supported" in message:
        return "async", "pytest-asyncio missing"
    if "harness timeout" in message:
        return "hung", message
    if message.startswith("IndexError") and "backends" in needs:
        return "backends", "fewer backends than the test uses"
    if "raises" in needs and re.match(r"assert '.*' in ", message):
        return "layout", "exception message differs from dataClay's"
    if "raises" in needs and message.startswith("bettong."):
        return "layout", "exception type differs from dataClay's"
    short = message.splitlines()[0] if message else "(no message)"
    return "semantics", short[:160]


def run_pytest(args, logdir, backends, results, models):
    functional = os.path.join(args.dataclay, "tests", "functional")
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([PYTHON_DIR, HERE, models]),
        BETTONG_DCF_MODELS=os.path.join(models, "dataclay", "contrib"),
        BETTONG_DCF_BACKENDS=",".join(backends),
        BETTONG_DCF_RESULTS=results,
        BETTONG_DCF_PYTHON_DIR=PYTHON_DIR,
        BETTONG_DCF_STRICT_LAYOUT="1" if args.strict_layout else "0",
        BETTONG_DCF_TEST_TIMEOUT=str(args.test_timeout),
        BETTONG_STORE=backends[0],
        DC_HOST=backends[0].rsplit(":", 1)[0],
        DC_PORT=backends[0].rsplit(":", 1)[1],
    )
    argv = [args.python, "-m", "pytest", "--noconftest", "-p", PLUGIN,
            "-p", "no:cacheprovider", "--continue-on-collection-errors",
            "--rootdir", args.dataclay, "-q", "-rN",
            functional] + args.pytest_args
    log = os.path.join(logdir, "pytest.log")
    print("pytest:", " ".join(argv), flush=True)
    with open(log, "wb") as out:
        p = subprocess.Popen(argv, cwd=args.dataclay, env=env, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(args.timeout)
        except subprocess.TimeoutExpired:
            stop(p)
            rc = None
    return rc, log


def check_prerequisites(args):
    if not os.path.isdir(os.path.join(args.dataclay, "tests", "functional")):
        raise SystemExit(f"{args.dataclay}: no tests/functional (not a dataClay checkout?)")
    if not os.access(args.bettong, os.X_OK):
        raise SystemExit(f"{args.bettong}: not built (make)")
    probe = subprocess.run([args.python, "-c", "import pytest, pytest_asyncio"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit("pytest and pytest-asyncio are needed for " + args.python +
                         " (Debian: apt-get install python3-pytest python3-pytest-asyncio)\n"
                         + probe.stderr.strip().splitlines()[-1])


# ---------------------------------------------------------------- report

def summarize(inventory, records, rc):
    """One row per test: (test, outcome, group, detail, needs)."""
    rows = {}
    layout = [r for r in records if r["kind"] == "layout"]
    for r in records:
        if r["kind"] == "collect":
            fn = os.path.basename(r["nodeid"].split("::")[0])
            for test, needs in inventory.items():
                if test.startswith(fn + "::"):
                    rows[test] = ["not collected", *classify(r["message"], needs), needs]
    for r in records:
        if r["kind"] != "test":
            continue
        path, _, name = r["nodeid"].partition("::")
        test = os.path.basename(path) + "::" + name
        needs = inventory.get(test.split("[")[0], [])
        if r["outcome"] in ("passed", "skipped"):
            if test not in rows or rows[test][0] == "passed":
                rows[test] = [r["outcome"], "", "", needs]
        else:
            if test in rows and rows[test][0] in ("failed", "error"):
                continue        # a teardown error after a failure: keep the failure
            diff = DIFFERENCES.get(test)
            if diff and diff[0] in r["message"]:
                rows[test] = [r["outcome"], "difference", diff[1], needs]
                continue
            rows[test] = [r["outcome"], *classify(r["message"], needs), needs]
    for test, needs in inventory.items():
        if test not in rows:
            rows[test] = ["not run", "hung" if rc is None else "semantics",
                          "no report (pytest stopped before it)", needs]
    return rows, layout


def print_report(args, rows, layout, rc, n_backends, metadata, log):
    counts = collections.Counter(r[0] for r in rows.values())
    print()
    print(f"dataClay functional tests ({args.dataclay}) against {n_backends} Bettong "
          f"store(s){' (--metadata, Redis)' if metadata else ' (no --metadata: one store)'}:")
    print(f"  {len(rows)} tests: {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['error']} errors, {counts['not collected']} not collected "
          f"(their module failed to import), {counts['skipped']} skipped"
          + (f", {counts['not run']} not run" if counts["not run"] else ""))
    print(f"  pytest exit status: {'killed after --timeout' if rc is None else rc}; "
          f"log: {log}")
    for r in layout:
        if r.get("standin"):
            print("  layout: Bettong has no dataclay.contrib; the harness stood in a bare "
                  "package for their models")
        elif r.get("error"):
            print(f"  layout: dataclay.contrib: {r['error']} (--strict-layout)")
    internal = {t for t, r in rows.items() if "internals" in r[3]}
    bad = {t: r for t, r in rows.items() if r[0] not in ("passed", "skipped")}
    for key, title in GROUPS:
        mine = {t: r for t, r in bad.items() if r[1] == key}
        if not mine:
            continue
        n_int = len(set(mine) & internal)
        print(f"\n{title}: {len(mine)} tests"
              + (f" ({n_int} about dataClay's internals)" if n_int else ""))
        by_detail = collections.defaultdict(list)
        for t, r in sorted(mine.items()):
            by_detail[r[2]].append((t, r))
        for detail, items in sorted(by_detail.items(), key=lambda kv: -len(kv[1])):
            print(f"  {detail} [{len(items)}]")
            for t, r in items:
                tags = [n for n in r[3] if n not in (key, "raises")]
                note = f"  ({r[0]}; needs also: {', '.join(tags)})" if tags else f"  ({r[0]})"
                print(f"    {t}{note}")
    need = collections.Counter(n for r in bad.values() for n in r[3])
    print(f"\nof the {len(bad)} that did not pass, by what their own code uses: "
          f"{need['backends']} several backends, {need['async']} async, "
          f"{need['internals']} dataClay's internals")
    passed = sorted(t for t, r in rows.items() if r[0] == "passed")
    if passed:
        print(f"passed: {', '.join(passed)}")


def main():
    ap = argparse.ArgumentParser(
        description="Run dataClay's functional tests against a Bettong service.",
        epilog="Arguments after -- go to pytest (e.g. -- -k alias -x).")
    ap.add_argument("--dataclay", required=True, metavar="PATH",
                    help="a checkout of bsc-dom/dataclay")
    ap.add_argument("--backends", type=int, default=3, metavar="N",
                    help="stores to start when `bettong store` has --metadata (default 3)")
    ap.add_argument("--bettong", default=os.path.join(REPO, "build", "bettong"),
                    help="the bettong binary (default build/bettong)")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter for pytest (default /usr/bin/python3)")
    ap.add_argument("--timeout", type=int, default=1800,
                    help="seconds for the whole pytest run (default 1800)")
    ap.add_argument("--test-timeout", type=int, default=60,
                    help="seconds for one test before it is interrupted (default 60; 0: none)")
    ap.add_argument("--strict-layout", action="store_true",
                    help="do not stand in for a missing dataclay.contrib package")
    ap.add_argument("--json", metavar="FILE", help="write every test's outcome and category")
    ap.add_argument("--keep", action="store_true", help="keep the stores' data directories")
    args, rest = ap.parse_known_args()
    if rest and rest[0] == "--":
        rest = rest[1:]
    args.pytest_args = rest
    args.dataclay = os.path.abspath(args.dataclay)
    args.bettong = os.path.abspath(args.bettong)
    check_prerequisites(args)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(HERE, "out", f"dataclay-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="bettong-dcf-")
    results = os.path.join(logdir, "reports.jsonl")
    procs = []
    metadata = store_has_metadata(args.bettong)
    try:
        if metadata:
            redis, port = start_redis(workdir, logdir)
            procs.append(("redis-server", redis))
            url = f"redis://127.0.0.1:{port}"
            print(f"redis-server on 127.0.0.1:{port}")
            n = args.backends
        else:
            url = None
            n = 1
            print(f"`bettong store --help` has no --metadata: starting one store "
                  f"(--backends {args.backends} asked for)")
        models = models_dir(args.dataclay, workdir)
        backends = []
        for i in range(n):
            p, addr, argv = start_store(args.bettong, f"backend_{i + 1}", workdir, logdir, url,
                                        models)
            procs.append((f"backend_{i + 1}", p))
            backends.append(addr)
            print(f"store backend_{i + 1} on {addr}: {' '.join(argv)}", flush=True)
        rc, log = run_pytest(args, logdir, backends, results, models)
        for name, p in procs:
            if p.poll() is not None:
                print(f"warning: {name} exited with {p.returncode} during the run "
                      f"(see {logdir})")
    finally:
        for _, p in reversed(procs):
            stop(p)
        if args.keep:
            print(f"data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    records = []
    if os.path.exists(results):
        with open(results) as f:
            records = [json.loads(line) for line in f if line.strip()]
    functional = os.path.join(args.dataclay, "tests", "functional")
    inventory = test_inventory(functional)
    if args.pytest_args:       # a selection (-k ...): only the tests pytest reported on
        seen = {os.path.basename(r["nodeid"].split("::")[0]) + "::" +
                r["nodeid"].split("::", 1)[1].split("[")[0]
                for r in records if r["kind"] == "test"}
        bad_files = {os.path.basename(r["nodeid"]) for r in records if r["kind"] == "collect"}
        inventory = {t: v for t, v in inventory.items()
                     if t in seen or t.split("::")[0] in bad_files}
    rows, layout = summarize(inventory, records, rc)
    print_report(args, rows, layout, rc, len(backends), metadata, log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backends": backends, "metadata": metadata, "pytest_rc": rc,
                       "tests": {t: {"outcome": r[0], "group": r[1], "detail": r[2],
                                     "needs": r[3]} for t, r in sorted(rows.items())}},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
