"""Read-only replicas in a store service of several backends (new_replica,
issue 11): placement on a chosen and on a default backend, reads served by the
replica next to the client (shown with the master stopped by SIGSTOP),
write-through (a write acknowledged by the master is seen on every replica),
requests other than reads on a replica's backend going to the master, a
replica backend killed (writes go on, the replica is dropped), the master
restarted (its replicas still listed and kept up to date), DELETE and MOVE
dropping the replicas, and dataClay's spellings."""

import signal
import threading
import uuid
import warnings

import pytest

from conftest import wait_until

from bettong import objects
import store_models as m
from store_helpers import SERVICE_NAMES as NAMES, ids_by_name

READ_TIMEOUT = 20   # seconds a read may take before the test calls it stuck




def raw(bid, *args):
    """One request to backend bid as it is (no routing, no retry elsewhere)."""
    return objects._send_to(bid, args)


def failed_not_found(a):
    return a[0] == objects._FAILED and a[2] == objects._ERR_NOT_FOUND


def within(fn, timeout=READ_TIMEOUT):
    """fn() in a thread: its result, or a test failure if it does not return
    in time (a read that went to a stopped backend would never return)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # reported below
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail("the read did not return within %d s" % timeout)
    if "error" in out:
        raise out["error"]
    return out["value"]


class Stopped:
    """SIGSTOP a backend for the block, SIGCONT after (whatever happens)."""

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        self.store.kill(signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        self.store.kill(signal.SIGCONT)


def test_new_replica_chosen_and_default(service):
    redis, backends = service
    ids = ids_by_name()
    c = m.Counter(5)
    c.make_persistent(alias="rep-counter")   # on b1, the backend connected to
    assert objects.replicas_of(c) == set()
    c.new_replica(ids["b2"])
    assert objects.replicas_of(c) == {ids["b2"]}
    # Without a backend: one without a copy (not the master b1, not b2).
    c.new_replica()
    assert objects.replicas_of(c) == {ids["b2"], ids["b3"]}
    # Every backend has one now: a warning and nothing else; same for a
    # backend that already holds one. On the master's own backend: nothing.
    with pytest.warns(UserWarning, match="All available backends have a replica"):
        c.new_replica()
    with pytest.warns(UserWarning, match="already has a replica"):
        c.new_replica(ids["b3"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.new_replica(ids["b1"])
    assert objects.replicas_of(c) == {ids["b2"], ids["b3"]}
    with pytest.raises(KeyError):
        c.new_replica(str(uuid.uuid4()))
    with pytest.raises(objects.StoreError, match="not persistent"):
        m.Counter(0).new_replica()
    # Another client, through b3, learns the replicas from its lookup.
    objects.connect(backends[2].address)
    found = m.Counter.get_by_alias("rep-counter")
    assert objects.replicas_of(found) == {ids["b2"], ids["b3"]}
    assert objects.backend_of(found) == ids["b1"] and found.value == 5


def test_reads_on_the_replica_and_write_through(service):
    redis, backends = service
    ids = ids_by_name()
    car = m.Car("NEAR", 1.0)
    car.make_persistent(alias="near-car")        # master on b1
    car.new_replica(ids["b2"])
    objects.connect(backends[1].address)           # a client next to the replica
    near = m.Car.get_by_alias("near-car")
    assert near.accelerate(2.0) == 3.0             # a CALL: to the master b1
    near.plate = "NEAR-2"                          # SET_FIELD: to b1
    near.dc_update(m.Car("NEAR-3", 10.0))          # UPDATE: to b1
    near.accelerate(1.0)                           # 11.0
    # With the master stopped, reads still answer, with every acknowledged
    # write: b2 serves them.
    with Stopped(backends[0]):
        assert within(lambda: near.speed) == 11.0
        assert within(lambda: near.plate) == "NEAR-3"
        clone = within(near.dc_clone)
        assert (clone.speed, clone.plate, objects.is_persistent(clone)) == (11.0, "NEAR-3", False)
    # A client connected to the master reads the master (b3 has no replica).
    objects.connect(backends[2].address)
    far = m.Car.get_by_alias("near-car")
    with Stopped(backends[0]):
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("v", far.speed), daemon=True)
        t.start()
        t.join(0.5)
        assert t.is_alive() and "v" not in box     # waits for the stopped master
    t.join(READ_TIMEOUT)
    assert box["v"] == 11.0


def test_requests_on_the_replica_backend_go_to_the_master(service):
    redis, backends = service
    ids = ids_by_name()
    c = m.Counter(1)
    c.make_persistent(alias="only-reads")
    c.new_replica(ids["b2"])
    oid = c.id
    # b2 answers reads of its replica, and NOT_FOUND for everything else
    # about it; its lookups name the master, with the replicas.
    assert raw(ids["b2"], objects._GET_FIELD, oid, "value")[0] == objects._OK
    assert raw(ids["b2"], objects._GET_STATE, oid)[0] == objects._OK
    for req in ((objects._CALL, oid, "incr", objects._NOARGS),
                (objects._SET_FIELD, oid, "value", objects._dumps_refs(7)),
                (objects._UPDATE, oid, objects._dumps_refs({"value": 7})),
                (objects._ADD_ALIAS, oid, "not-here"),
                (objects._ALIASES, oid),
                (objects._DELETE, oid),
                (objects._MOVE, oid, ids["b3"]),
                (objects._REPLICATE, oid, ids["b3"])):
        assert failed_not_found(raw(ids["b2"], *req)), req
    ref = raw(ids["b2"], objects._LOOKUP_ID, oid)
    assert ref[0] == objects._REF and ref[4] == ids["b1"] and ref[5] == (ids["b2"],)
    ref = raw(ids["b2"], objects._LOOKUP_ALIAS, "only-reads")
    assert ref[4] == ids["b1"] and ref[5] == (ids["b2"],)
    # A client connected to b2 calls, writes and names through the master.
    objects.connect(backends[1].address)
    here = m.Counter.get_by_alias("only-reads")
    assert here.incr(2) == 3
    here.add_alias("only-reads-2")
    assert here.get_aliases() == {"only-reads", "only-reads-2"}
    assert here.value == 3
    # An active method on b2 that uses the object reaches the master too.
    holder = m.Garage("holder")
    holder.make_persistent(backend_id=ids["b2"])
    holder.add(m.Counter.get_by_alias("only-reads-2"))
    assert objects.backend_of(holder.car(0)) == ids["b1"]
    # The replica was not published as the object's location.
    assert raw(ids["b3"], objects._LOOKUP_ID, oid)[4] == ids["b1"]


def test_a_replica_backend_killed(service):
    redis, backends = service
    ids = ids_by_name()
    c = m.Counter(10)
    c.make_persistent(alias="survives")
    c.new_replica(ids["b2"])
    c.new_replica(ids["b3"])
    backends[2].kill()
    # Writes on the master go on; b3 missed one and is dropped (logged).
    assert c.incr(1) == 11
    assert objects.replicas_of(c) == {ids["b2"]}
    assert "missed a write and is dropped" in backends[0].log()
    assert c.incr(1) == 12
    # Back, b3 is sent the drop the master owes it: the stale copy goes.
    backends[2].start()
    wait_until(lambda: failed_not_found(raw(ids["b3"], objects._GET_STATE, c.id)), 15,
               "b3's stale replica dropped")
    assert "the stale replica of %s on backend 'b3' is dropped" % c.id in backends[0].log()
    objects.connect(backends[2].address)
    again = m.Counter.get_by_alias("survives")
    assert objects.replicas_of(again) == {ids["b2"]}
    assert again.value == 12 and again.dc_clone().value == 12
    # A new replica there is up to date.
    again.new_replica(ids["b3"])
    with Stopped(backends[0]):
        assert within(lambda: again.value) == 12


def test_the_master_restarted(service):
    redis, backends = service
    ids = ids_by_name()
    c = m.Counter(0)
    c.make_persistent(alias="restarted-master")
    c.new_replica(ids["b3"])
    backends[0].restart()
    objects.connect(backends[2].address)
    c = m.Counter.get_by_alias("restarted-master")
    assert objects.replicas_of(c) == {ids["b3"]}
    # Still written through after the restart.
    assert c.incr(5) == 5
    with Stopped(backends[0]):
        assert within(lambda: c.value) == 5
    # Redis restarted empty: the master lists its replicas there again.
    redis.kill()
    redis.start()
    wait_until(lambda: _replicas_or_none(c) == {ids["b3"]}, 15, "the replicas published again")


def _replicas_or_none(obj):
    try:
        return objects.replicas_of(obj)
    except (objects.NotFound, objects.StoreError):
        return None


def test_delete_and_move_drop_the_replicas(service):
    redis, backends = service
    ids = ids_by_name()
    moving = m.Counter(3)
    moving.make_persistent(alias="moving")
    moving.new_replica(ids["b2"])
    moving.move(ids["b3"])
    assert objects.replicas_of(moving) == set()
    assert failed_not_found(raw(ids["b2"], objects._GET_STATE, moving.id))
    assert moving.incr(1) == 4 and objects.backend_of(moving) == ids["b3"]
    # A replica on the backend it then moves to is replaced by the master.
    moving.new_replica(ids["b1"])
    moving.move(ids["b1"])
    assert objects.backend_of(moving) == ids["b1"] and moving.incr(1) == 5
    assert objects.replicas_of(moving) == set()
    gone = m.Counter(1)
    gone.make_persistent()
    gone.new_replica(ids["b2"])
    oid = gone.id
    gone.delete()
    assert failed_not_found(raw(ids["b2"], objects._GET_STATE, oid))
    assert failed_not_found(raw(ids["b2"], objects._GET_FIELD, oid, "value"))


def test_recursive_replica(service):
    redis, backends = service
    ids = ids_by_name()
    nodes = [m.Node("n%d" % i) for i in range(3)]
    for n, where in zip(nodes, ["b1", "b1", "b3"]):
        n.make_persistent(backend_id=ids[where])
    nodes[0].next = nodes[1]
    nodes[1].next = nodes[2]
    # remotes=False: only what is on the root's backend.
    nodes[0].new_replica(ids["b2"], recursive=True, remotes=False)
    assert [objects.replicas_of(n) for n in nodes] == [{ids["b2"]}, {ids["b2"]}, set()]
    with pytest.warns(UserWarning, match="already has a replica"):   # the root, then on
        nodes[0].new_replica(ids["b2"], recursive=True)
    assert [objects.replicas_of(n) for n in nodes] == [{ids["b2"]}] * 3


def test_dataclay_new_replica(service):
    from dataclay import Client

    redis, backends = service
    objects.disconnect()
    client = Client(address=backends[0].address)
    client.start()
    try:
        found = client.get_backends()
        by_name = {b.name: bid for bid, b in found.items()}
        p = m.Counter(1)
        p.make_persistent()
        from dataclay import DataClayObject

        class Person(DataClayObject):
            name: str

            def __init__(self, name):
                self.name = name

        person = Person("Marc")
        person.make_persistent()
        assert person._dc_meta.replica_backend_ids == set()
        person.new_replica()
        assert len(person._dc_meta.replica_backend_ids) == 1
        person.new_replica(backend_id=by_name["b3"])
        with pytest.warns(UserWarning):
            person.new_replica()
        meta = person._dc_meta
        assert meta.master_backend_id == by_name["b1"]
        assert meta.replica_backend_ids == {by_name["b2"], by_name["b3"]}
        assert meta.master_backend_id not in meta.replica_backend_ids
    finally:
        client.stop()
