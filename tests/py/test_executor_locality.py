"""Computation next to the data (issue 11, item 4): a store service of three
backends (b1, b2, b3, on a Redis of the test's own), a pool over TCP whose
workers were started next to them (`bettong worker --join POOL --near-store
NAME`, each with its backend as $BETTONG_STORE), and FunctionExecutor.map
over persistent objects spread on the three. Every call runs next to its
object's backend and says so in its stats; with near=False the same map goes
anywhere; a call whose near worker is absent, or busy with a long call, runs
on another worker without waiting; the seed's cars example across backends.
Everything waits on observable events (a worker's answer, a marker file)."""

import os
import random
import re
import sys
import time

import cloudpickle
import pytest

from conftest import REPO, wait_until
from executor_helpers import RESULT_TIMEOUT, TcpPool, run_script, sub_env
from store_helpers import PYDIR

from bettong import objects
import store_models as m

cloudpickle.register_pickle_by_value(sys.modules[__name__])

T = RESULT_TIMEOUT
SECRET = "bt-near-secret-" + "%08x" % random.getrandbits(32)
NAMES = ["b1", "b2", "b3"]
TESTS = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = REPO / "examples" / "objects"
WORKER_PATH = os.pathsep.join([str(PYDIR), TESTS, str(EXAMPLE)])


def plate_and_place(car):
    """What the worker sees: the car's plate (read from its backend) and the
    backend the worker was started next to."""
    return car.plate, os.environ.get("BETTONG_NEAR_STORE")


def plate_of_id(oid):
    return objects.Persistent.get_by_id(oid).plate


def wait_and_release(started, release):
    """Say it started, then hold the worker until `release` exists."""
    open(started, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.environ.get("BETTONG_NEAR_STORE")


@pytest.fixture
def service(stores):
    """Three backends; the in-process client connected to b1. Returns
    ({name: Store}, {name: backend id})."""
    redis = stores.redis()
    backends = stores.service(redis, NAMES)
    objects.connect(backends[0].address)
    ids = {b.name: bid for bid, b in objects.backends().items()}
    assert sorted(ids) == NAMES
    return dict(zip(NAMES, backends)), ids


def near_pool(procs, stores_by_name, near=NAMES, procs_n=1):
    """A pool with `procs_n` workers next to each backend of `near`. Calls wait
    up to 2 s (--near-wait) for their near worker before going elsewhere, far
    more than any of these tests' calls take: slow machines (a sanitizer
    build, a loaded CI) do not turn "ran near" into a race."""
    pool = TcpPool(procs, SECRET, workers=0, port=0, extra=["--near-wait", "2000"])
    for name in near:
        pool.add_worker(procs_n=procs_n, extra=["--near-store", name, "--name", "near-" + name],
                        env={"BETTONG_STORE": stores_by_name[name].address,
                             "BETTONG_WORKER_PATH": WORKER_PATH})
    return pool


def joined(ex, n):
    wait_until(lambda: ex.status()["workers"] >= n, 30, "%d workers joined" % n)


def spread_cars(ids, per_backend):
    """Cars on each backend, grouped by backend: [(car, backend name)]."""
    out = []
    for name in NAMES:
        for i in range(per_backend):
            car = m.Car("%s-%d" % (name, i), float(i))
            car.make_persistent(backend_id=ids[name])
            out.append((car, name))
    return out


def test_map_runs_next_to_each_objects_backend(procs, executors, service):
    stores_by_name, ids = service
    pool = near_pool(procs, stores_by_name)
    for name in NAMES:
        assert pool.out.wait_for(re.compile(r"worker \d+ 'near-%s-1' \(pid \d+\) near store "
                                            r"'%s' from .* joined" % (name, name)), 30), \
            pool.out.text()
    ex = executors(pool.address)
    joined(ex, 3)
    placed = spread_cars(ids, 8)
    cars = [c for c, _ in placed]
    # The first map starts the workers' interpreters and store connections.
    assert [r[0] for r in ex.get_result(ex.map(plate_and_place, cars), timeout=T)] == \
        [c.plate for c in cars]
    fs = ex.map(plate_and_place, cars)
    results = ex.get_result(fs, timeout=T)
    wrong = [(car.plate, home, f.stats["worker_near"], r[1])
             for (car, home), f, r in zip(placed, fs, results)
             if f.stats["worker_near"] != home or r[1] != home]
    assert not wrong, "calls that did not run next to their object's backend: %s" % wrong
    workers = {name: {f.stats["worker"] for (_c, home), f in zip(placed, fs) if home == name}
               for name in NAMES}
    assert all(len(w) == 1 for w in workers.values()) and \
        len(set.union(*workers.values())) == 3, workers

    # Object ids marked with near=True go next to their objects too.
    fs = ex.map(plate_of_id, [c.id for c in cars], near=True)
    assert ex.get_result(fs, timeout=T) == [c.plate for c in cars]
    assert [f.stats["worker_near"] for f in fs] == [home for _c, home in placed]

    # near=False: the same map, in rounds over the three workers: the b1 cars
    # (first in the list) go to all three.
    fs = ex.map(plate_and_place, cars, near=False)
    results = ex.get_result(fs, timeout=T)
    assert [r[0] for r in results] == [c.plate for c in cars]
    elsewhere = sum(f.stats["worker_near"] != home for (_c, home), f in zip(placed, fs))
    assert elsewhere > 0, "without locality every call still ran next to its backend"


def test_calls_run_anywhere_when_no_worker_is_near(procs, executors, service):
    stores_by_name, ids = service
    pool = near_pool(procs, stores_by_name, near=["b1"])
    ex = executors(pool.address)
    joined(ex, 1)
    placed = spread_cars(ids, 3)
    fs = ex.map(plate_and_place, [c for c, _ in placed])
    results = ex.get_result(fs, timeout=T)
    assert [r[0] for r in results] == [c.plate for c, _ in placed]
    # b2's and b3's calls had nobody near them: they ran on b1's worker.
    assert {f.stats["worker_near"] for f in fs} == {"b1"}


def test_busy_near_worker_does_not_hold_calls_back(procs, executors, service, tmp_path):
    stores_by_name, ids = service
    pool = near_pool(procs, stores_by_name)
    ex = executors(pool.address)
    joined(ex, 3)
    started, release = tmp_path / "started", tmp_path / "release"
    blocker = ex.call_async(wait_and_release, (str(started), str(release)), near="b1")
    wait_until(started.exists, T, "the long call started on b1's worker")
    b1_cars = [c for c, home in spread_cars(ids, 6) if home == "b1"]
    t0 = time.monotonic()
    fs = ex.map(plate_and_place, b1_cars)
    results = ex.get_result(fs, timeout=T)
    took = time.monotonic() - t0
    # All done while b1's only worker is still held: they ran elsewhere.
    assert not blocker.done()
    assert [r[0] for r in results] == [c.plate for c in b1_cars]
    assert {f.stats["worker_near"] for f in fs} <= {"b2", "b3"}, [f.stats for f in fs]
    release.touch()
    assert blocker.result(timeout=T) == "b1" and blocker.stats["worker_near"] == "b1"
    print("6 calls near a busy worker: %.3f s on the others" % took)


def test_cars_example_across_backends(procs, executors, service):
    stores_by_name, ids = service
    pool = near_pool(procs, stores_by_name)
    ex = executors(pool.address)
    joined(ex, 3)
    # Every worker's interpreter up and connected before the example runs (a
    # worker still starting would see its calls go elsewhere after the wait).
    warm = spread_cars(ids, 2)
    ex.get_result(ex.map(plate_and_place, [c for c, _ in warm]), timeout=T)
    env = sub_env(extra={"BETTONG_STORE": stores_by_name["b1"].address,
                         "BETTONG_POOL": pool.address, "BETTONG_SECRET": SECRET,
                         "BETTONG_STORE_SECRET": ""})  # the store has none
    r = run_script(EXAMPLE / "fill_spread.py", args=["--cars", 12], env=env, cwd=EXAMPLE)
    assert r.returncode == 0, r.stderr
    assert "stored 12 cars on 3 backends (b1, b2, b3)" in r.stdout
    r = run_script(EXAMPLE / "cars_near.py", env=env, cwd=EXAMPLE)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = re.findall(r"^car(\d+): speed (\S+), stored on (b\d), ran on worker \d+ near (\S+)$",
                       r.stdout, re.M)
    assert len(lines) == 12, r.stdout
    for i, speed, home, ran in lines:
        assert float(speed) == 50.0 + int(i)
        assert home == NAMES[int(i) % 3]
        assert ran == home, r.stdout
    assert "mean speed: 55.50" in r.stdout
    assert "near: 12 of 12 calls ran next to their car's backend" in r.stdout
    # The seed's cars.py, unchanged, reads the same cars (no locality asked).
    r = run_script(EXAMPLE / "cars.py", args=["--workers", 2], env=env, cwd=EXAMPLE)
    assert r.returncode == 0 and "mean speed: 55.50" in r.stdout, r.stdout + r.stderr
