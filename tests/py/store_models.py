"""Model classes for the in-process store tests. The store cannot import this
module (it is not on the store's path), so its classes reach the store by value."""

import threading

from bettong.objects import Persistent, active


class CarError(Exception):
    pass


class Unpicklable(Exception):
    """An exception that does not pickle (it holds a lock)."""

    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


class Vehicle(Persistent):
    wheels: int

    @active
    def wheel_count(self):
        return self.wheels


class Car(Vehicle):
    speed: float
    plate: str
    note = "a class attribute, not persistent"

    def __init__(self, plate="", speed=0.0, wheels=4):
        self.plate = plate
        self.speed = speed
        self.wheels = wheels

    @active
    def accelerate(self, dv=1.0):
        self.speed += dv
        return self.speed

    @active
    def get_speed(self):
        return self.speed

    @active
    def fail_after_change(self, msg):
        self.speed = -1.0
        self.plate = "broken"
        raise ValueError(msg)

    @active
    def fail_unpicklable(self, msg):
        self.speed = -2.0
        raise Unpicklable(msg)

    @active
    def me(self):
        return self

    @active
    def where(self):
        import os
        return os.getpid()

    def describe(self):
        """Not active: runs where it is called (on a proxy: remote field reads)."""
        return f"{self.plate}@{self.speed:g}"


class Garage(Persistent):
    name: str
    cars: list

    def __init__(self, name, cars=()):
        self.name = name
        self.cars = list(cars)

    @active
    def add(self, car):
        self.cars.append(car)
        return len(self.cars)

    @active
    def car(self, i):
        return self.cars[i]

    @active
    def total_speed(self):
        return sum(c.speed for c in self.cars)

    @active
    def plates(self):
        return [c.plate for c in self.cars]


class Counter(Persistent):
    value: int

    def __init__(self, value=0):
        self.value = value

    @active
    def incr(self, n=1):
        self.value += n
        return self.value

    @active
    def get(self):
        return self.value


class Node(Persistent):
    """For cycles: a node referencing another node."""
    label: str
    next: object

    def __init__(self, label, next=None):
        self.label = label
        self.next = next

    @active
    def walk(self, n):
        out, node = [], self
        for _ in range(n):
            out.append(node.label)
            node = node.next
        return out


class Napper(Persistent):
    """A method whose run time the caller chooses (inline runs, tests)."""
    naps: int

    def __init__(self):
        self.naps = 0

    @active
    def nap(self, s):
        import time
        if s:
            time.sleep(s)
        self.naps += 1
        return self.naps

    @active
    def doze(self, s):
        import time
        time.sleep(s)

    @active
    def count(self):
        return self.naps

    @active
    def boom(self):
        self.naps += 100
        raise ValueError("boom")


class Maker(Persistent):
    """Makes objects inside its active methods."""
    made: list

    def __init__(self):
        self.made = []

    @active
    def make_on(self, backend_id, alias=None):
        """A car made persistent here, then placed on backend_id, before the
        call's unit is on disk."""
        car = Car("MADE", 1.0)
        car.make_persistent(alias=alias)
        car.make_persistent(backend_id=backend_id)
        self.made.append(car)
        return car
