"""Pipelined make_persistent (bettong.pipeline(), objects.py's write-behind queue)
against a real `bettong store`: aliased creations that do not wait for their
answers, durable at the sync point even when the store is SIGKILLed right after
it; a failing call in the middle (the store keeps the prefix before it, the
sync point raises with the call named); ordering with later requests; the
memory bound of the queue when the store does not answer; and the store's
group commit of requests that arrive during a commit."""

import os
import pickle
import re
import signal
import threading

import pytest

from conftest import wait_until

from bettong import objects
from bettong.objects import AliasTaken, NotFound, Persistent
import store_models as m


@pytest.fixture
def store(stores):
    st = stores()
    objects.connect(st.address)
    return st


def _oid(obj):
    """The id of a proxy without a sync point (obj.id would be one)."""
    return obj.__dict__.get("_bettong_id")


def _reset_peaks():
    """The queue's high-water marks are the process's: from now on."""
    with objects._wb.lock:
        objects._wb.peak_objects = objects._wb.peak_bytes = 0


def _commit_stats(store):
    """(commits, requests, largest) from the line a stopped store logs."""
    mt = re.search(r"committer: (\d+) commits for (\d+) requests \(at most (\d+) in one\)",
                   store.log())
    assert mt, store.log()
    return tuple(int(x) for x in mt.groups())


# ------------------------------------------------------------------ durability

@pytest.mark.parametrize("sync", ["block", "flush", "lookup"])
def test_pipelined_creations_durable_at_the_sync_point(stores, sync):
    """Every creation queued before a sync point is on disk when it returns: the
    store is SIGKILLed right after it, restarted, and every alias is there."""
    st = stores()
    objects.connect(st.address)
    n = 7000   # several batches
    objs = [m.Counter(i) for i in range(n)]
    with objects.pipeline():
        for i, c in enumerate(objs):
            c.make_persistent(alias="dur-%d" % i)
        if sync == "flush":
            objects.flush()
        elif sync == "lookup":
            assert m.Counter.get_by_alias("dur-%d" % (n - 1)) is objs[-1]
        if sync != "block":
            st.kill()     # inside the block: its exit has nothing left to wait for
    if sync == "block":
        st.kill()
    assert all(objects.is_persistent(c) for c in objs)
    ids = [_oid(c) for c in objs]
    objects.disconnect()
    st.start()
    objects.connect(st.address)
    for i in range(n):
        p = m.Counter.get_by_alias("dur-%d" % i)
        assert _oid(p) == ids[i]
    assert [m.Counter.get_by_alias("dur-%d" % i).get() for i in (0, n // 2, n - 1)] == \
        [0, n // 2, n - 1]


def test_pipelined_calls_do_not_wait_for_answers(store):
    """Inside a pipeline make_persistent(alias=...) returns while the store is
    stopped (SIGSTOP): it did not wait for its answer. The sync point after
    SIGCONT has them all."""
    with objects.pipeline():   # the class registered, the queue's connection open
        m.Counter(-1).make_persistent(alias="nowait-warm")
    store.kill(signal.SIGSTOP)
    try:
        objs = [m.Counter(i) for i in range(50)]
        with objects.pipeline():
            for i, c in enumerate(objs):
                c.make_persistent(alias="nowait-%d" % i)
            assert all(objects.is_persistent(c) for c in objs)
            assert objects._wb.unacked == 50
            store.kill(signal.SIGCONT)
    finally:
        store.kill(signal.SIGCONT)
    assert objects._wb.unacked == 0
    assert m.Counter.get_by_alias("nowait-49") is objs[49]


# ------------------------------------------------------------------ failures

def test_taken_alias_mid_pipeline(store):
    """A taken alias in the middle of a long pipeline (in its second batch):
    the calls before it are stored, it and every later one (aliased or not)
    are not, their objects are local again, and the sync point raises
    AliasTaken naming the call."""
    owner = m.Counter(-1)
    owner.make_persistent(alias="taken")
    before = [m.Counter(i) for i in range(2500)]
    dup = m.Counter(-2)
    after = [m.Counter(1000 + i) for i in range(2500)]
    plain = [m.Counter(5000 + i) for i in range(10)]   # no alias: queued as well
    after_ids = []   # as given at the call (None if the failure was known by then)
    with pytest.raises(AliasTaken) as ei:
        with objects.pipeline():
            for i, c in enumerate(before):
                c.make_persistent(alias="before-%d" % i)
            dup.make_persistent(alias="taken")
            for i, c in enumerate(after):
                c.make_persistent(alias="after-%d" % i)
                after_ids.append(_oid(c))
            for c in plain:
                c.make_persistent()
                after_ids.append(_oid(c))
    msg = str(ei.value)
    assert "make_persistent(alias='taken') of a Counter failed" in msg, msg
    assert "the alias 'taken' is taken" in msg, msg
    assert "the 2510 make_persistent calls made after it were not applied" in msg, msg
    assert isinstance(ei.value.__cause__, AliasTaken)
    # exactly the prefix exists
    assert all(objects.is_persistent(c) for c in before)
    for i in range(0, 2500, 7):
        assert m.Counter.get_by_alias("before-%d" % i) is before[i]
    assert before[2499].get() == 2499
    assert m.Counter.get_by_alias("taken") is owner and owner.get() == -1
    assert not objects.is_persistent(dup) and dup.value == -2
    assert not any(objects.is_persistent(c) for c in after + plain)
    assert [c.value for c in after[:3]] == [1000, 1001, 1002]
    sent_ids = [oid for oid in after_ids if oid]
    for oid in sent_ids[::50] + sent_ids[-1:]:
        with pytest.raises(NotFound):
            Persistent.get_by_id(oid)
    for i in (0, 1, 2499):
        with pytest.raises(NotFound):
            m.Counter.get_by_alias("after-%d" % i)
    # raised once: the pipeline works again, with the objects that were reverted
    with objects.pipeline():
        after[0].make_persistent(alias="after-0")
        plain[0].make_persistent()
    assert m.Counter.get_by_alias("after-0").get() == 1000
    assert plain[0].get() == 5000


def test_same_alias_twice_in_one_pipeline(store):
    """Two calls of one batch with the same new alias: the second fails; the
    first and the calls between stay stored."""
    a, b, c, d = m.Counter(1), m.Counter(2), m.Counter(3), m.Counter(4)
    with pytest.raises(AliasTaken) as ei:
        with objects.pipeline():
            a.make_persistent(alias="twice")
            b.make_persistent(alias="between")
            c.make_persistent(alias="twice")
            d.make_persistent(alias="later")
    assert "make_persistent(alias='twice')" in str(ei.value)
    assert "the 1 make_persistent call made after it was not applied" in str(ei.value)
    assert m.Counter.get_by_alias("twice") is a
    assert m.Counter.get_by_alias("between") is b
    assert not objects.is_persistent(c) and not objects.is_persistent(d)
    with pytest.raises(NotFound):
        m.Counter.get_by_alias("later")


def test_first_call_fails_and_calls_after_the_failure_are_not_applied(store):
    """The first call of the pipeline fails; a call made once the failure is
    known (after a background flush) is not applied either, and the failure
    surfaces at the sync point, not at that call."""
    m.Counter(0).make_persistent(alias="first-taken")
    x, y = m.Counter(1), m.Counter(2)
    with pytest.raises(AliasTaken):
        with objects.pipeline():
            x.make_persistent(alias="first-taken")
            wait_until(lambda: objects._wb.failure is not None, 10,
                       "the background flush to find the taken alias")
            y.make_persistent(alias="y-after")    # not raised here ...
            assert not objects.is_persistent(y)   # ... and not applied
    assert not objects.is_persistent(x)
    with pytest.raises(NotFound):
        m.Counter.get_by_alias("y-after")


def test_block_left_by_an_exception_keeps_the_failure_for_the_next_sync_point(store):
    m.Counter(0).make_persistent(alias="exc-taken")
    z = m.Counter(9)
    with pytest.raises(KeyError):
        with objects.pipeline():
            z.make_persistent(alias="exc-taken")
            raise KeyError("the block's own error")
    with pytest.raises(AliasTaken, match="exc-taken"):
        objects.flush()
    objects.flush()   # raised once
    assert not objects.is_persistent(z)


def test_outside_a_pipeline_an_alias_is_waited_for(store):
    """pipeline() is per thread: another thread's make_persistent(alias=...)
    still raises AliasTaken itself."""
    m.Counter(0).make_persistent(alias="sync-taken")
    raised = []

    def other():
        try:
            m.Counter(1).make_persistent(alias="sync-taken")
        except AliasTaken as e:
            raised.append(e)

    with objects.pipeline():
        t = threading.Thread(target=other)
        t.start()
        t.join(30)
    assert len(raised) == 1 and "sync-taken" in str(raised[0])


# ------------------------------------------------------------------ ordering

def test_later_requests_see_earlier_pipelined_creations(store):
    with objects.pipeline():
        a = m.Counter(1)
        a.make_persistent(alias="ord-a")
        assert a.incr() == 2                       # a call on it
        g = m.Garage("g", [])
        g.make_persistent(alias="ord-g")
        car = m.Car("P-1", 3.0)
        car.make_persistent(alias="ord-car")
        assert g.add(car) == 1                     # a call taking a queued object
        b = m.Counter(5)
        b.make_persistent(alias="ord-b")
        assert m.Counter.get_by_alias("ord-b") is b  # a lookup of that alias
        h = m.Garage("h", [m.Car("P-2", 4.0)])       # references a new local object
        h.make_persistent(alias="ord-h")
        assert h.car(0).plate == "P-2"
        b.value = 6                                  # a field write
        c = m.Counter(7)
        c.make_persistent(alias="ord-c")
        c.add_alias("ord-c2")                        # add_alias on a queued object
    assert m.Garage.get_by_alias("ord-g").car(0) is car
    assert m.Counter.get_by_alias("ord-b").get() == 6
    assert m.Counter.get_by_alias("ord-c2") is c
    assert c.get_aliases() == {"ord-c", "ord-c2"}


# ------------------------------------------------------------------ memory bound

def test_pipeline_memory_is_bounded_when_the_store_does_not_answer(store):
    """With the store stopped, a large pipeline blocks once two batches are
    unanswered (one in flight, one full) instead of queueing everything; after
    SIGCONT it completes, and the queue never held more than that."""
    per_batch = objects._WB_MAX_OBJECTS
    n = 5 * per_batch
    progress = [0]
    failed = []

    def run():
        try:
            with objects.pipeline():
                for i in range(n):
                    m.Counter(i).make_persistent(alias="mem-%d" % i)
                    progress[0] = i + 1
        except BaseException as e:  # reported by the test
            failed.append(e)

    with objects.pipeline():   # the queue's connection, opened while the store answers
        m.Counter(-1).make_persistent(alias="mem-warm")
    _reset_peaks()
    store.kill(signal.SIGSTOP)
    t = threading.Thread(target=run)
    try:
        t.start()
        # blocked: a batch in flight, unanswered, and the next one full
        wait_until(lambda: objects._wb.waiting and len(objects._wb.queue.items) >= per_batch,
                   30, "the pipeline to block on the stopped store")
        assert t.is_alive() and progress[0] < 2 * per_batch
        assert objects._wb.unacked <= 2 * per_batch
    finally:
        store.kill(signal.SIGCONT)
    t.join(120)
    assert not t.is_alive() and not failed, failed
    assert progress[0] == n
    assert objects._wb.peak_objects <= 2 * per_batch
    for i in list(range(0, n, 997)) + [n - 1]:
        assert m.Counter.get_by_alias("mem-%d" % i).get() == i


def test_pipeline_bytes_bound(store):
    """Objects with large states: batches close on bytes, and the queue holds at
    most two batches' worth."""
    blob = "x" * 20000
    _reset_peaks()
    with objects.pipeline():
        for i in range(1000):
            m.Counter(blob + str(i)).make_persistent(alias="big-%d" % i)
    # two batches, each closed by the object that took it past the limit
    assert 0 < objects._wb.peak_bytes <= 2 * (objects._WB_MAX_BYTES + 21000)
    assert objects._wb.peak_objects < 2 * objects._WB_MAX_OBJECTS
    assert m.Counter.get_by_alias("big-999").get() == blob + "999"


# ------------------------------------------------------------------ group commit

def test_pipelined_requests_share_commits(stores):
    """Requests that arrive while a commit is under way share the next one:
    thousands of one-object PERSISTs sent without waiting take far fewer
    commits than requests (a waiting client gets one each)."""
    st = stores()
    objects.connect(st.address)
    first = m.Counter(0)
    first.make_persistent(alias="gc-first")              # the class is registered
    cid = first.__dict__["_bettong_cid"]
    state = pickle.dumps({"value": 1}, protocol=5)
    c = objects._get_conn()
    n = 4000
    for i in range(n):
        c.send(objects._PERSIST, [(objects._new_oid(), cid, "gc-%d" % i, state)])
        if i % 200 == 199:
            c.flush()
    c.flush()
    got = []
    while len(got) < n:
        got += [a[0] for a in c.recv()]
    assert got == [objects._OK] * n
    assert m.Counter.get_by_alias("gc-%d" % (n - 1)).get() == 1
    objects.disconnect()
    assert st.stop() == 0
    commits, requests, largest = _commit_stats(st)
    assert requests >= n
    assert commits * 10 <= requests, (commits, requests)
    assert largest >= 10


# ------------------------------------------------------------------ several backends

def test_pipeline_in_a_service_of_two_backends(stores):
    """Aliases are unique service-wide (Redis): a pipeline on b1 meets an alias
    taken on b2; the prefix before it is stored on b1 and found through b2; a
    make_persistent to another backend is waited for (a sync point)."""
    redis = stores.redis()
    b1, b2 = stores.service(redis, ["b1", "b2"])
    objects.connect(b1.address)
    ids = {b.name: bid for bid, b in objects.backends().items()}
    m.Counter(-1).make_persistent(alias="svc-taken", backend_id=ids["b2"])
    first = [m.Counter(i) for i in range(300)]
    dup, last = m.Counter(-2), m.Counter(-3)
    with pytest.raises(AliasTaken, match=r"make_persistent\(alias='svc-taken'\)"):
        with objects.pipeline():
            for i, c in enumerate(first):
                c.make_persistent(alias="svc-%d" % i)
            dup.make_persistent(alias="svc-taken")
            last.make_persistent(alias="svc-last")
    assert not objects.is_persistent(dup) and not objects.is_persistent(last)
    objects.connect(b2.address)
    assert m.Counter.get_by_alias("svc-299").get() == 299
    assert objects.backend_of(m.Counter.get_by_alias("svc-0")) == ids["b1"]
    assert m.Counter.get_by_alias("svc-taken").get() == -1
    with pytest.raises(NotFound):
        m.Counter.get_by_alias("svc-last")
    # to another backend from inside a pipeline: waited for, after the queue
    with objects.pipeline():
        q = m.Counter(7)
        q.make_persistent(alias="svc-q")
        r = m.Counter(8)
        r.make_persistent(alias="svc-r", backend_id=ids["b1"])
        assert objects._attention == 0
    assert objects.backend_of(m.Counter.get_by_alias("svc-r")) == ids["b1"]
    assert m.Counter.get_by_alias("svc-q").get() == 7


def test_pipeline_for_the_whole_process_from_the_environment(stores, tmp_path):
    """BETTONG_PIPELINE=1: a program that never says pipeline() pipelines its
    aliased calls (batched: far fewer requests than calls); a
    taken alias raises at the next sync point, naming the call; without the
    variable the same program's call raises at once."""
    import subprocess
    import sys
    from store_helpers import PYDIR
    st = stores()
    prog = tmp_path / "client.py"
    prog.write_text(
        "import sys\n"
        "from bettong import objects\n"
        "from bettong.objects import AliasTaken, Persistent\n"
        "class Rec(Persistent):\n"
        "    n: int\n"
        "    def __init__(self, n): self.n = n\n"
        "objects.connect(sys.argv[1])\n"
        "tag = sys.argv[2]\n"
        "for i in range(3000):\n"
        "    Rec(i).make_persistent(alias=f'{tag}-{i}')\n"
        "try:\n"
        "    Rec(-1).make_persistent(alias=f'{tag}-7')\n"
        "    print('no error at the call')\n"
        "    objects.flush()\n"
        "    print('no error at the sync point')\n"
        "except AliasTaken as e:\n"
        "    print('AliasTaken:', e)\n")
    env = dict(os.environ, PYTHONPATH=PYDIR, BETTONG_PIPELINE="1")
    out = subprocess.run([sys.executable, str(prog), st.address, "env"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no error at the call\nAliasTaken: "
                                 "make_persistent(alias='env-7') of a Rec failed"), out.stdout
    st.stop()
    commits, requests, _ = _commit_stats(st)
    assert requests < 100, (commits, requests)   # 3001 calls, batched
    st = stores()
    env.pop("BETTONG_PIPELINE")
    out = subprocess.run([sys.executable, str(prog), st.address, "plain"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("AliasTaken: the alias 'plain-7' is taken"), out.stdout
    st.stop()
    commits, requests, _ = _commit_stats(st)
    assert requests > 3000, (commits, requests)  # each call waited for
