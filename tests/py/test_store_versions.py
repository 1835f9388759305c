"""Object versions (issue 11, dataClay's new_version / consolidate_version):
a version is a persistent copy to change without touching the original;
consolidating it makes its state the original's, durably, and from then on
every version of its chain names the original -- for requests from any
client, for references stored in other objects (loaded in the store as the
original), and for live objects in the store that held the version. On one
store and across the backends of a service."""

import pytest

from bettong import objects
import store_models as m
from store_helpers import dataclay_client, ids_by_name


def _chain(car):
    v1 = car.new_version()
    v1.plate = "V1"
    v2 = v1.new_version()
    v2.plate = "V2"
    return v1, v2


def test_version_is_a_copy_until_consolidated(stores):
    store = stores()
    objects.connect(store.address)
    car = m.Car("ORIG", 1.0)
    car.make_persistent(alias="versioned")
    v1 = car.new_version()
    assert v1.id != car.id and objects.is_persistent(v1)
    v1.plate = "NEW"
    assert v1.accelerate(2.0) == 3.0
    assert (car.plate, car.get_speed()) == ("ORIG", 1.0)
    v1.consolidate_version()
    assert (car.plate, car.get_speed()) == ("NEW", 3.0)
    # The version's proxy names the original now: it is one object.
    assert v1.id == car.id
    v1.accelerate(1.0)
    assert car.get_speed() == 4.0
    # The version mark is no field a user sees.
    assert "_bt_version" not in car.dc_clone().__dict__
    with pytest.raises(objects.NotAVersion, match="is not a version"):
        car.consolidate_version()


def test_versions_chain_and_references(stores):
    store = stores()
    objects.connect(store.address)
    car = m.Car("ORIG", 1.0)
    car.make_persistent()
    v1, v2 = _chain(car)
    # A stored object that refers to the middle version.
    garage = m.Garage("G", [v1])
    garage.make_persistent()
    assert garage.plates() == ["V1"]
    old_id = v1.id
    v2.consolidate_version()
    assert car.plate == "V2"
    # In the store, the garage's live object held v1's: it sees the original.
    assert garage.plates() == ["V2"]
    # A new client (fresh proxies) reaching v1 by its old id gets the original.
    objects.disconnect()
    objects.connect(store.address)
    again = m.Car.get_by_id(old_id)
    assert again.plate == "V2" and again.id == car.id
    # The store restarted: the stored reference loads as the original.
    store.restart()
    objects.connect(store.address)
    g = m.Garage.get_by_id(garage.id)
    assert g.plates() == ["V2"]
    g.car(0).accelerate(5.0)
    assert m.Car.get_by_id(car.id).get_speed() == 6.0


def test_consolidate_across_backends(service):
    redis, backends = service
    ids = ids_by_name()
    car = m.Car("ORIG", 1.0)
    car.make_persistent(backend_id=ids["b1"])
    v1 = car.new_version(backend_id=ids["b2"])
    v1.plate = "ON-B2"
    assert objects.backend_of(v1) == ids["b2"]
    v2 = v1.new_version(backend_id=ids["b3"])
    v2.plate = "ON-B3"
    garage = m.Garage("G", [v1])
    garage.make_persistent(backend_id=ids["b3"])
    old = v1.id
    v2.consolidate_version()
    assert car.plate == "ON-B3"
    assert garage.plates() == ["ON-B3"]
    # A client of another backend, with nothing cached, follows the forward
    # from b2 to b1.
    objects.connect(backends[2].address)
    p = m.Car.get_by_id(old)
    assert p.plate == "ON-B3"
    assert objects.backend_of(p) == ids["b1"]


def test_dataclay_versions(stores):
    from dataclay import DataClayObject
    from dataclay.exceptions import ObjectIsNotVersionError

    class Person(DataClayObject):
        name: str

        def __init__(self, name):
            self.name = name

    with dataclay_client(stores()):
        p = Person("Marc")
        p.make_persistent()
        with pytest.raises(ObjectIsNotVersionError, match="is not a version!"):
            p.consolidate_version()
        v1 = p.new_version()
        assert v1._dc_meta.original_object_id == p._dc_meta.id
        v2 = v1.new_version()
        assert v2._dc_meta.versions_object_ids == [v1._dc_meta.id]
        v2.name = "Carol"
        assert v1.name == "Marc"
        v2.consolidate_version()
        assert p.name == "Carol" and v1.name == "Carol"
        with pytest.raises(NotImplementedError, match="recursive"):
            p.new_version(recursive=True)


def test_consolidate_twice_and_version_of_consolidated(stores):
    store = stores()
    objects.connect(store.address)
    car = m.Car("ORIG", 1.0)
    car.make_persistent()
    v1 = car.new_version()
    v2 = v1.new_version()
    v1.plate = "FIRST"
    v1.consolidate_version()
    assert car.plate == "FIRST"
    # v2's chain names v1, consolidated already: its forward is kept.
    v2.plate = "SECOND"
    v2.consolidate_version()
    assert car.plate == "SECOND"
    assert m.Car.get_by_id(v1.id).plate == "SECOND"
