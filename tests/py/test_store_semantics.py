"""Semantics of persistent objects that dataClay users rely on, against real
`bettong store` processes (issue 11, item 3):

- objects made (or made persistent) inside an active method are separate
  persistent objects of the store with their own ids, written with the call's
  commit, and make_persistent(alias=...) there names them in the same store;
- __getstate__ / __setstate__ define the stored state (store, make_persistent,
  dc_clone);
- deleting an object that stored objects refer to is refused (StillReferenced),
  counted in the store's LMDB;
- dataClay 2.x models (@ClassField docstrings, dclayMethod) store their fields;

each also after the store is SIGKILLed and restarted."""

import subprocess

import pytest

from conftest import BIN
from store_helpers import client_reset, dataclay_client, lmdb_edit

from bettong import objects
from bettong.objects import NotFound, StillReferenced
import semantics_models as sm


@pytest.fixture
def store(stores):
    st = stores()
    objects.connect(st.address)
    return st


def restart(st):
    """SIGKILL the store, start it again on the same directory, reconnect (this
    process forgets its proxies, so everything below comes from the store)."""
    client_reset()
    objects._proxies.clear()
    st.restart()
    objects.connect(st.address)


# ------------------------------------------------------------------ 1. objects made in calls

def test_object_made_in_a_call_is_persistent_with_its_own_id(store):
    dog = sm.Dog("Duna")
    dog.make_persistent(alias="duna")
    puppy = dog.new_puppy("Rio")
    assert objects.is_persistent(puppy) and isinstance(puppy, sm.Puppy)
    assert puppy.id and puppy.id != dog.id
    assert dog.puppies[0] is puppy               # a reference, not a copy
    assert puppy.name == "Rio" and puppy.age == 0
    assert puppy.where() != __import__("os").getpid()   # its methods run in the store
    assert puppy.birthday() == 1
    assert dog.puppy_ages() == [1]               # the parent sees the same object
    assert sm.Puppy.get_by_id(puppy.id) is puppy
    pid = puppy.id

    restart(store)
    dog = sm.Dog.get_by_alias("duna")
    puppy = dog.puppies[0]
    assert objects.is_persistent(puppy) and puppy.id == pid
    assert puppy.name == "Rio" and puppy.age == 1
    assert puppy.birthday() == 2 and dog.puppy_ages() == [2]


def test_make_persistent_with_alias_inside_a_call(store):
    dog = sm.Dog("Luna")
    dog.make_persistent()
    assert dog.adopt_with_alias("Max", "max") == ["max"]
    max_ = sm.Puppy.get_by_alias("max")
    assert max_ is dog.puppies[0] and max_.name == "Max"
    assert max_.get_aliases() == {"max"}
    # an alias the store holds already: AliasTaken inside the method
    assert dog.alias_taken_inside("max") == "AliasTaken"
    assert dog.lookup_inside("max") == "Max"
    with pytest.raises(NotFound):
        dog.lookup_inside("nobody")

    restart(store)
    max_ = sm.Puppy.get_by_alias("max")
    assert max_.name == "Max" and max_.get_aliases() == {"max"}


def test_object_made_and_dropped_in_a_call_is_stored(store):
    """dataClay's test_remote_automatic_register: persistent at creation."""
    dog = sm.Dog("Kira")
    dog.make_persistent()
    oid = dog.made_and_dropped("Marc")
    p = sm.Puppy.get_by_id(oid)
    assert p.name == "Marc" and p.age == 55
    restart(store)
    assert sm.Puppy.get_by_id(oid).age == 55


def test_failed_call_stores_none_of_its_objects(store):
    dog = sm.Dog("Nala")
    dog.make_persistent()
    dog.new_puppy("kept")
    with pytest.raises(ValueError, match="litter refused"):
        dog.litter_then_fail(3)
    assert dog.count() == 1                      # the call changed nothing
    assert [p.name for p in dog.puppies] == ["kept"]


def test_local_persistent_object_made_by_client_keeps_working(store):
    """The client's own make_persistent is unchanged: by reference, write-behind."""
    dog = sm.Dog("Rex")
    dog.puppies.append(sm.Puppy("local"))
    dog.make_persistent()
    p = dog.puppies[0]
    assert objects.is_persistent(p) and p.name == "local"


# ------------------------------------------------------------------ 2. __getstate__ / __setstate__

def test_getstate_setstate_honoured(store):
    """dataClay's test_getstate / test_getstate_v2: `file` is rebuilt by
    __setstate__ in the store."""
    reader = sm.TextReader("testfile")
    assert reader.readline() == "mock_testfile:1"    # local
    reader.make_persistent()
    assert reader.readline() == "mock_testfile:2"    # in the store
    box = sm.Box()
    box.value = sm.TextReader("other")
    box.value.readline()
    box.make_persistent()
    assert box.value.lineno == 1
    assert box.value.readline() == "mock_other:2"
    # a failed call: back to what loading the stored state gives
    with pytest.raises(RuntimeError):
        reader.fail_after_read()
    assert reader.readline() == "mock_testfile:3"
    clone = reader.dc_clone()                        # __setstate__ locally too
    assert not objects.is_persistent(clone)
    assert clone.file == "mock_testfile" and clone.lineno == 3
    pair = sm.Pair(2, 3)
    pair.make_persistent(alias="pair")
    assert pair.total() == 5
    assert pair.dc_clone().b == 3

    restart(store)
    assert sm.Pair.get_by_alias("pair").total() == 5
    r = sm.TextReader.get_by_id(reader.id)
    assert r.readline() == "mock_testfile:4"


# ------------------------------------------------------------------ 3. delete of a referenced object

def test_delete_of_referenced_object_is_refused(store):
    dog = sm.Dog("Bo")
    dog.make_persistent(alias="bo")
    a = dog.new_puppy("a")
    b = dog.new_puppy("b")
    with pytest.raises(StillReferenced) as ei:
        a.delete()
    assert a.id in str(ei.value) and "1 stored object" in str(ei.value)
    assert a.name == "a"                            # still there
    # a second referrer: counted once per referring object
    other = sm.Box(a)
    other.make_persistent()
    with pytest.raises(StillReferenced, match="2 stored object"):
        a.delete()

    restart(store)                                  # the counts are durable
    dog = sm.Dog.get_by_alias("bo")
    a, b = dog.puppies
    other = sm.Box.get_by_id(other.id)
    with pytest.raises(StillReferenced, match="2 stored object"):
        a.delete()
    other.value = None                              # drop one reference
    with pytest.raises(StillReferenced, match="1 stored object"):
        a.delete()
    dog.forget_puppies()                            # and the other
    a.delete()
    with pytest.raises(NotFound):
        sm.Puppy.get_by_id(a.id)
    b.delete()
    # deleting the referrer releases what it referred to
    c = dog.new_puppy("c")
    with pytest.raises(StillReferenced):
        c.delete()
    dog.delete()
    c.delete()
    with pytest.raises(NotFound):
        c.name


def test_reference_counts_rebuilt_for_a_version_1_store(stores, tmp_path):
    """A store written before the counts existed (format 1): counted on open."""
    st = stores()
    objects.connect(st.address)
    box = sm.Box(sm.Puppy("inside"))
    box.make_persistent(alias="old-box")
    pid = box.value.id
    client_reset()
    st.stop()
    _set_format_version(st.dir, 1, drop_refs=True)
    st.start()
    objects.connect(st.address)
    assert "upgraded to format 3: counted 1 stored reference(s)" in st.log()
    p = sm.Puppy.get_by_id(pid)
    with pytest.raises(StillReferenced):
        p.delete()


def test_format_2_store_upgraded_and_a_newer_one_refused(stores):
    """A store written before replicas and versions (format 2) keeps its counts
    and is marked 3; a store of a format newer than the binary's is refused."""
    st = stores()
    objects.connect(st.address)
    box = sm.Box(sm.Puppy("inside"))
    box.make_persistent(alias="box-v2")
    pid = box.value.id
    client_reset()
    st.stop()
    _set_format_version(st.dir, 2)
    st.start()
    objects.connect(st.address)
    assert "upgraded to format 3 (replica and version tables)" in st.log()
    with pytest.raises(StillReferenced):   # its counts were kept
        sm.Puppy.get_by_id(pid).delete()
    client_reset()
    st.stop()
    _set_format_version(st.dir, 4)
    proc = subprocess.run([BIN, "store", "--dir", str(st.dir), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "format version is not one this binary knows (1 to 3)" in proc.stderr


def _set_format_version(path, version, drop_refs=False):
    """Mark a stopped store as format `version` (and drop its counts: what a
    store of format 1 looks like)."""
    lmdb_edit(path, {"meta": {b"version": version.to_bytes(4, "big")}},
              drops=["refs"] if drop_refs else ())


# ------------------------------------------------------------------ 4. dataClay 2.x models

def test_dataclay_2_models_store_their_fields(store):
    assert objects.persistent_fields(sm.Legacy) == ("message", "counts")
    obj = sm.Legacy("hello")
    obj.make_persistent(alias="legacy")
    assert obj.add("w") == 1 and obj.add("w") == 2     # dclayMethod: active
    assert obj.get() == "hello"
    assert obj.message == "hello"                      # a remote field
    clone = obj.dc_clone()
    assert clone.counts == {"w": 2} and not hasattr(clone, "scratch")

    restart(store)
    obj = sm.Legacy.get_by_alias("legacy")
    assert obj.message == "hello" and obj.add("w") == 3


def test_dclaymethod_spellings():
    from dataclay import dclayMethod

    def f(self):
        return 1

    assert dclayMethod(f) is f and f._bettong_active
    g = dclayMethod(return_="int")(lambda self: 2)
    assert g._bettong_active
    with pytest.raises(TypeError):
        dclayMethod("positional")


# ------------------------------------------------------------------ unload (dataClay's flush_all)

def test_unload_drops_loaded_objects_and_they_reload(store):
    """unload() drops the store's loaded objects that nothing holds (a referrer
    first, then what it held); the next requests load them from disk, through
    __setstate__ for a class that has one."""
    import store_models as m
    cars = [m.Car("U%d" % i, float(i)) for i in range(4)]
    garage = m.Garage("G", cars)
    garage.make_persistent()
    reader = sm.TextReader("unload")
    reader.make_persistent()
    assert reader.readline() == "mock_unload:1"
    assert garage.total_speed() == 6.0        # loads the garage and its cars
    assert objects.unload() == 6              # the garage, its 4 cars, the reader
    assert objects.unload() == 0              # nothing left loaded
    assert [c.get_speed() for c in cars] == [0.0, 1.0, 2.0, 3.0]
    assert reader.readline() == "mock_unload:2"   # rebuilt by __setstate__
    assert objects.unload() == 5


def test_dataclay_flush_all_is_unload(stores):
    from dataclay import DataClayObject
    from dataclay.event_loop import run_dc_coroutine

    class Person(DataClayObject):
        name: str

        def __init__(self, name):
            self.name = name

    with dataclay_client(stores()) as client:
        p = Person("Marc")
        p.make_persistent()
        assert p.name == "Marc"                   # loaded in the store
        (backend,) = client.get_backends().values()
        run_dc_coroutine(backend.flush_all)
        assert objects.unload() == 0              # flush_all dropped it
        p.name = "Alice"
        assert p.name == "Alice"
