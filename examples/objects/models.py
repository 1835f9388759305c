"""The model classes of the seed's example: a Car with a speed, and Cars, a
collection of cars found by a short id of its own ("car0", "car1", ...).

The store does not need this module: the classes reach it by value with the
first objects stored. Executor workers import it (they get the caller's path)."""

import bettong


class Car(bettong.Persistent):
    speed: float
    plate: str

    def __init__(self, plate, speed=0.0):
        self.plate = plate
        self.speed = speed

    @bettong.active
    def accelerate(self, dv):
        self.speed += dv
        return self.speed


class Cars(bettong.Persistent):
    cars: dict   # car id -> Car (stored as references)

    def __init__(self):
        self.cars = {}

    @bettong.active
    def add(self, car_id, car):
        self.cars[car_id] = car
        return len(self.cars)

    @bettong.active
    def get_ids(self):
        """The car ids, as "id1-id2-..." (the seed's format)."""
        return "-".join(self.cars)

    @bettong.active
    def get_by_id(self, car_id):
        """The car with this id (a proxy to it, for the caller)."""
        return self.cars[car_id]
