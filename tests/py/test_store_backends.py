"""A store service of several backends (`bettong store --metadata`, issue 11):
three backends and a redis-server of the test's own. Placement by backend id,
aliases unique across the service and found through any backend, references
and calls across backends (an active method on one backend calling objects on
the others), a backend killed and restarted (its objects fail clearly, the
others' do not; then everything is back), Redis killed and restarted empty
(the backends publish themselves again and clients recover), a store alone as
a service of one, and a name that is taken."""

import pickle
import subprocess
import uuid

import pytest

from conftest import BIN, wait_until

from bettong import objects
import store_models as m
from store_helpers import SERVICE_NAMES as NAMES, ids_by_name, lmdb_edit





def test_backends_and_placement(service):
    redis, backends = service
    listed = objects.backends()
    assert sorted(b.name for b in listed.values()) == NAMES
    assert sorted(b.address for b in listed.values()) == sorted(s.address for s in backends)
    ids = ids_by_name()
    cars = {}
    for name, bid in ids.items():
        car = m.Car("P-" + name, 1.0)
        # uuid.UUID as dataClay passes it, or the text
        car.make_persistent(backend_id=uuid.UUID(bid) if name == "b2" else bid)
        cars[name] = car
    for name, car in cars.items():
        assert objects.backend_of(car) == ids[name]
        assert car.accelerate(1.0) == 2.0
    # Written where it was placed: that backend alone answers for it.
    with pytest.raises(KeyError, match="no backend with id"):
        m.Car("X", 0.0).make_persistent(backend_id=str(uuid.uuid4()))
    # Without a backend id: the backend connect() named.
    home = m.Counter(5)
    home.make_persistent()
    assert objects.backend_of(home) == ids["b1"] and home.incr(1) == 6


def test_aliases_are_unique_and_found_everywhere(service):
    redis, backends = service
    ids = ids_by_name()
    car = m.Car("ALIASED", 3.0)
    car.make_persistent(alias="shared-name", backend_id=ids["b2"])
    with pytest.raises(objects.AliasTaken):
        m.Car("OTHER", 0.0).make_persistent(alias="shared-name", backend_id=ids["b3"])
    with pytest.raises(objects.AliasTaken):
        m.Car("THIRD", 0.0).make_persistent(alias="shared-name")   # on b1
    # From a client of another backend: found, and it routes to b2.
    objects.connect(backends[2].address)
    found = m.Car.get_by_alias("shared-name")
    assert found.plate == "ALIASED" and objects.backend_of(found) == ids["b2"]
    assert found.get_aliases() == {"shared-name"}
    found.add_alias("second-name")
    m.Car.delete_alias("shared-name")
    with pytest.raises(objects.NotFound):
        m.Car.get_by_alias("shared-name")
    # The name is free again, on any backend.
    again = m.Car("AGAIN", 0.0)
    again.make_persistent(alias="shared-name", backend_id=ids["b1"])
    objects.connect(backends[1].address)
    assert objects.backend_of(m.Car.get_by_alias("shared-name")) == ids["b1"]
    assert m.Car.get_by_alias("second-name").plate == "ALIASED"
    # Deleting an object releases its aliases service-wide.
    m.Car.get_by_alias("second-name").delete()
    with pytest.raises(objects.NotFound):
        m.Car.get_by_alias("second-name")
    m.Car("REUSE", 0.0).make_persistent(alias="second-name", backend_id=ids["b3"])


def test_references_and_calls_across_backends(service):
    redis, backends = service
    ids = ids_by_name()
    cars = []
    for i, name in enumerate(NAMES):
        c = m.Car("C%d" % i, float(i))
        c.make_persistent(backend_id=ids[name])
        cars.append(c)
    garage = m.Garage("spread")
    garage.make_persistent(alias="spread", backend_id=ids["b2"])
    for c in cars:
        garage.add(c)
    # Active methods on b2 read the cars on b1, b2 and b3.
    assert garage.plates() == ["C0", "C1", "C2"]
    assert garage.total_speed() == 3.0
    # A car returned by b2's method is the proxy of the object on b3.
    third = garage.car(2)
    assert third is cars[2] and objects.backend_of(third) == ids["b3"]
    # Another client, through b3, follows the same references.
    objects.connect(backends[2].address)
    g = m.Garage.get_by_alias("spread")
    assert [objects.backend_of(c) for c in g.cars] == [ids[n] for n in NAMES]
    g.car(0).accelerate(10.0)
    assert g.total_speed() == 13.0


def test_a_backend_killed_and_restarted(service):
    redis, backends = service
    ids = ids_by_name()
    mine = {}
    for name in NAMES:
        c = m.Counter(0)
        c.make_persistent(alias="counter-" + name, backend_id=ids[name])
        c.incr(7)
        mine[name] = c
    backends[2].kill()
    # b3's objects fail with a clear error; the others' go on.
    with pytest.raises(ConnectionError, match="'b3'"):
        mine["b3"].incr(1)
    assert mine["b1"].incr(1) == 8 and mine["b2"].incr(1) == 8
    backends[2].start()
    assert mine["b3"].incr(1) == 8
    assert m.Counter.get_by_alias("counter-b3").get() == 8


def test_redis_restarted_empty(service):
    redis, backends = service
    ids = ids_by_name()
    c = m.Counter(1)
    c.make_persistent(alias="survivor", backend_id=ids["b3"])
    redis.kill()
    redis.start()
    # Every backend publishes itself again (each one checks about once a
    # second), aliases and locations included; the client's connections
    # survive.
    wait_until(lambda: len(objects.backends()) == 3, 15, "three backends listed again")
    objects.connect(backends[1].address)
    wait_until(lambda: _lookup("survivor"), 15, "the alias on b3 found through b2")
    assert m.Counter.get_by_alias("survivor").incr(2) == 3
    # New aliases are unique again at once.
    with pytest.raises(objects.AliasTaken):
        m.Counter(0).make_persistent(alias="survivor", backend_id=ids["b1"])


def _lookup(alias):
    try:
        return m.Counter.get_by_alias(alias)
    except objects.NotFound:
        return None


def test_a_store_alone_is_a_service_of_one(stores):
    st = stores()
    objects.connect(st.address)
    listed = objects.backends()
    assert len(listed) == 1
    (bid, b), = listed.items()
    assert b.address == st.address and b.name.startswith("backend-")
    c = m.Counter(0)
    c.make_persistent(backend_id=bid)
    assert objects.backend_of(c) == bid and c.incr(1) == 1
    with pytest.raises(KeyError):
        m.Counter(0).make_persistent(backend_id=str(uuid.uuid4()))
    # The id is the store's own, kept across restarts.
    st.restart()
    objects.connect(st.address)
    assert list(objects.backends()) == [bid]


def test_a_taken_name_is_refused(stores, tmp_path):
    redis = stores.redis()
    stores.service(redis, ["b1"])
    p = subprocess.run([BIN, "store", "--dir", str(tmp_path / "other"), "--listen",
                        "127.0.0.1:0", "--name", "b1", "--metadata", redis.url],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 2, p.stderr
    assert "a backend named 'b1' is already registered" in p.stderr
    bad = subprocess.run([BIN, "store", "--dir", str(tmp_path / "x"), "--metadata",
                          "redis://nohost"], capture_output=True, text=True, timeout=20)
    assert bad.returncode == 2 and "not redis://HOST:PORT" in bad.stderr, bad.stderr


def test_move_keeps_state_aliases_and_references(service):
    redis, backends = service
    ids = ids_by_name()
    car = m.Car("MOVER", 4.0)
    car.make_persistent(alias="mover", backend_id=ids["b1"])
    car.add_alias("mover-2")
    garage = m.Garage("holder")
    garage.make_persistent(backend_id=ids["b2"])
    garage.add(car)
    car.move(ids["b3"])
    assert objects.backend_of(car) == ids["b3"]
    assert car.accelerate(1.0) == 5.0
    assert car.get_aliases() == {"mover", "mover-2"}
    # The reference held on b2 reaches it on b3; so does a fresh client.
    assert garage.total_speed() == 5.0
    objects.connect(backends[1].address)
    moved = m.Car.get_by_alias("mover-2")
    assert objects.backend_of(moved) == ids["b3"] and moved.speed == 5.0
    # Aliases stayed taken across the service; make_persistent(backend_id=)
    # on a persistent object moves it too (dataClay's spelling).
    with pytest.raises(objects.AliasTaken):
        m.Car("X", 0.0).make_persistent(alias="mover", backend_id=ids["b1"])
    moved.make_persistent(backend_id=ids["b1"])
    assert objects.backend_of(moved) == ids["b1"] and moved.get_speed() == 5.0
    # It is gone from where it was: b3 restarted does not bring it back there.
    backends[2].restart()
    assert objects.backend_of(m.Car.get_by_alias("mover")) == ids["b1"]


def chain(ids, names):
    """Nodes n0 -> n1 -> ... (Node.next), node i on backend names[i]; the last
    one points back at the first (a cycle)."""
    nodes = [m.Node("n%d" % i) for i in range(len(names))]
    for i, name in enumerate(names):
        nodes[i].make_persistent(backend_id=ids[name])
    for i in range(len(nodes)):
        nodes[i].next = nodes[(i + 1) % len(nodes)]
    return nodes


def test_recursive_move(service):
    redis, backends = service
    ids = ids_by_name()
    # remotes=False: the references on the root's own backend follow it; the
    # one on b3 stays, and what it refers to is not followed.
    nodes = chain(ids, ["b1", "b1", "b3", "b1"])
    nodes[0].move(ids["b2"], recursive=True, remotes=False)
    where = [objects.backend_of(n) for n in nodes]
    assert where == [ids["b2"], ids["b2"], ids["b3"], ids["b1"]]
    # remotes=True: the whole cycle, wherever its nodes are.
    nodes[0].move(ids["b3"], recursive=True)
    assert [objects.backend_of(n) for n in nodes] == [ids["b3"]] * 4
    # References still resolve after the moves.
    assert nodes[0].walk(4) == ["n0", "n1", "n2", "n3"]


def test_dataclay_spellings_across_backends(service):
    """dataClay's names over a service: Client.get_backends() (uuid keys),
    make_persistent(backend_id=uuid), _dc_meta.master_backend_id, move, and
    get_runtime().backend_id inside the backend that runs a method."""
    from dataclay import Client, DataClayObject, activemethod
    from dataclay.config import get_runtime

    class Place(DataClayObject):
        label: str

        def __init__(self, label):
            self.label = label

        @activemethod
        def runtime_backend(self):
            rt = get_runtime()
            return str(rt.backend_id), rt.is_backend, sorted(
                b.name for b in rt.backend_clients.values())

    redis, backends = service
    objects.disconnect()
    client = Client(address=backends[0].address)
    client.start()
    try:
        found = client.get_backends()
        assert sorted(b.name for b in found.values()) == NAMES
        by_name = {b.name: bid for bid, b in found.items()}
        assert all(isinstance(k, uuid.UUID) for k in found)
        p = Place("here")
        p.make_persistent(alias="place", backend_id=by_name["b3"])
        assert p._dc_meta.master_backend_id == by_name["b3"]
        assert p._dc_meta.replica_backend_ids == set()
        # A wrong belief about the master is corrected by the next request.
        p._dc_meta.master_backend_id = by_name["b1"]
        assert p._dc_meta.master_backend_id == by_name["b1"]
        assert p.label == "here"
        assert p._dc_meta.master_backend_id == by_name["b3"]
        assert p.runtime_backend() == (str(by_name["b3"]), True, NAMES)
        p.move(by_name["b2"])
        p.sync()
        assert Place.get_by_alias("place")._dc_meta.master_backend_id == by_name["b2"]
        assert p.runtime_backend()[0] == str(by_name["b2"])
        with pytest.raises(KeyError):
            Place("x").make_persistent(backend_id=uuid.uuid4())
        p.new_replica(by_name["b1"])   # replicas: see test_store_replicas.py
        assert p._dc_meta.replica_backend_ids == {by_name["b1"]}
    finally:
        client.stop()
    with pytest.raises(RuntimeError, match="not active"):
        client.get_backends()


def test_a_live_referrer_follows_a_moved_object(service):
    """n0 stays on b1 while n1, which it refers to (and holds in memory, live,
    on b1), moves to b2: n0's methods reach n1 there, with its new state; a
    method on b2 finds an object of b1 by alias."""
    redis, backends = service
    ids = ids_by_name()
    n0, n1 = m.Node("n0"), m.Node("n1")
    n0.make_persistent(alias="first", backend_id=ids["b1"])
    n1.make_persistent(alias="second", backend_id=ids["b1"])
    n0.next = n1
    n1.next = n0
    assert n0.walk(3) == ["n0", "n1", "n0"]      # both live on b1 now
    n1.move(ids["b2"])
    n1.label = "n1-on-b2"
    assert n0.walk(3) == ["n0", "n1-on-b2", "n0"]
    assert n1.walk(2) == ["n1-on-b2", "n0"]
    assert objects.backend_of(n0) == ids["b1"] and objects.backend_of(n1) == ids["b2"]


def test_a_delete_counts_referrers_on_every_backend(service):
    """An object another backend's object refers to cannot be deleted (the
    counts of every backend add up, in Redis); nor after it moved; once the
    reference is gone, it can. The counts survive Redis losing them (each
    backend counts its states again when it publishes)."""
    redis, backends = service
    ids = ids_by_name()
    target = m.Car("TARGET", 1.0)
    target.make_persistent(backend_id=ids["b2"])
    holder = m.Garage("holder")
    holder.make_persistent(alias="holder", backend_id=ids["b1"])
    holder.add(target)
    with pytest.raises(objects.StillReferenced):
        target.delete()
    target.move(ids["b3"])
    with pytest.raises(objects.StillReferenced):
        target.delete()
    redis.kill()
    redis.start()
    # b1 publishes its counts before its aliases: once its alias is found
    # through b3, its counts are back.
    objects.connect(backends[2].address)
    wait_until(lambda: _found("holder"), 15, "b1 published again")
    with pytest.raises(objects.StillReferenced):
        target.delete()
    holder.cars = []
    target.delete()
    with pytest.raises(objects.NotFound):
        target.get_speed()


def _found(alias):
    try:
        return m.Garage.get_by_alias(alias)
    except (objects.NotFound, objects.StoreError):
        return None


def test_object_made_in_a_call_placed_on_another_backend(service):
    """make_persistent(backend_id=...) inside an active method, of an object
    that call made: it is stored there (with the alias the call gave it), and
    the caller's state refers to it there."""
    redis, backends = service
    ids = ids_by_name()
    maker = m.Maker()
    maker.make_persistent(backend_id=ids["b1"])
    car = maker.make_on(ids["b3"], alias="made-in-call")
    assert objects.backend_of(car) == ids["b3"]
    assert car.accelerate(1.0) == 2.0
    assert objects.backend_of(m.Car.get_by_alias("made-in-call")) == ids["b3"]
    assert maker.made[0].get_speed() == 2.0
    # Still referenced from b1: b3 refuses to delete it.
    with pytest.raises(objects.StillReferenced):
        car.delete()
    # The store's copy of the class (made from this process's, inside Maker's
    # pickle) came back as this process's own class, left as it was.
    assert type(car).__mro__[1] is m.Car and m.Car.__module__ == "store_models"
    assert pickle.loads(pickle.dumps(car)) is car


def test_deletions_while_redis_is_away_reach_it_when_it_is_back(service):
    """An alias deleted while Redis is down (it comes back with its data, as a
    Redis with persistence would): the deletion is owed and sent when it
    answers again, so the alias can be taken again -- not refused for ever by
    the stale entry."""
    redis, backends = service
    ids = ids_by_name()
    c = m.Counter(1)
    c.make_persistent(alias="owed-alias", backend_id=ids["b2"])
    objects.connect(backends[1].address)            # b2 holds the alias itself
    objects.backends()
    redis.shutdown_saving()
    m.Counter.delete_alias("owed-alias")
    redis.start()                                    # with the stale entry
    objects.connect(backends[0].address)

    def taken_again():
        try:
            m.Counter(2).make_persistent(alias="owed-alias", backend_id=ids["b1"])
            return True
        except objects.AliasTaken:
            return False
    wait_until(taken_again, 15, "the alias free again once Redis is back")
    assert "deletion(s) made while it was away sent" in backends[1].log()
    assert m.Counter.get_by_alias("owed-alias").incr(0) == 2


def test_a_move_interrupted_by_a_crash(service):
    """A backend killed in the middle of MOVE, after the target took the
    object and before its own copy was deleted (its move mark still there):
    on restart it asks the target, finds the move went through, serves its
    stale copy to no one and finishes the move (deletes it). A mark for a
    move that never reached the target is dropped and the object stays."""
    redis, backends = service
    ids = ids_by_name()
    gone = m.Counter(5)
    gone.make_persistent(alias="moved-in-a-crash", backend_id=ids["b1"])
    stays = m.Counter(7)
    stays.make_persistent(backend_id=ids["b1"])
    # What the move had done before the crash: b2 holds the object, with its
    # alias, and says so in the directory.
    state = objects._send_to(ids["b1"], (objects._GET_STATE, gone.id))[2]
    cid, qual, data = objects._class_record(m.Counter)
    objects._adopt(ids["b2"], gone.id, cid, qual, data, state, ["moved-in-a-crash"])
    backends[0].kill()
    lmdb_edit(backends[0].dir, {"moving": {gone.id.encode(): ids["b2"].encode(),
                                         stays.id.encode(): ids["b3"].encode()}})
    backends[0].start()
    wait_until(lambda: "the interrupted move of %s is finished" % gone.id in backends[0].log(),
               15, "b1 finishing the interrupted move")
    # The two marks are resolved each on its own answer, in either order.
    wait_until(lambda: "did not reach it: the object stays here" in backends[0].log(),
               15, "b1 dropping the mark of the move that never happened")
    assert failed_not_found(objects._send_to(ids["b1"], (objects._GET_STATE, gone.id)))
    objects.disconnect()
    objects.connect(backends[0].address)
    again = m.Counter.get_by_alias("moved-in-a-crash")
    assert objects.backend_of(again) == ids["b2"] and again.incr(1) == 6
    kept = m.Counter.get_by_id(stays.id)
    assert objects.backend_of(kept) == ids["b1"] and kept.incr(1) == 8


def failed_not_found(a):
    return a[0] == objects._FAILED and a[2] == objects._ERR_NOT_FOUND
