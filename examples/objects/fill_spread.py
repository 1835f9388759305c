"""Fill a store service of several backends with the cars of the seed's
example, spread over its backends (run it before cars_near.py): `--cars` cars
with speeds 50, 51, ..., car i on backend i mod the number of backends, and a
Cars collection of them under the alias "masa_cars" (replaced if it exists) on
the backend connect() names.

    export BETTONG_STORE=127.0.0.1:7451          # any backend of the service
    PYTHONPATH=python python3 examples/objects/fill_spread.py --cars 12
"""

import argparse

import bettong
from bettong import objects
from models import Car, Cars


def remove_old():
    """Delete an older collection, then its cars (a car is referenced by the
    collection until the collection is gone)."""
    try:
        old = Cars.get_by_alias("masa_cars")
    except bettong.NotFound:
        return
    cars = [old.get_by_id(car_id) for car_id in old.get_ids().split("-") if car_id]
    old.delete()
    for car in cars:
        car.delete()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cars", type=int, default=12, help="how many cars (default 12)")
    ap.add_argument("--store", default=None, help="HOST:PORT of a backend (default $BETTONG_STORE)")
    args = ap.parse_args()

    bettong.connect(args.store)
    remove_old()
    backends = sorted(objects.backends().values(), key=lambda b: b.name)
    cars = Cars()
    cars.make_persistent(alias="masa_cars")
    for i in range(args.cars):
        car = Car("plate-%d" % i, speed=50.0 + i)
        car.make_persistent(backend_id=backends[i % len(backends)].id)
        cars.add("car%d" % i, car)
    print("stored %d cars on %d backends (%s) under the alias masa_cars"
          % (args.cars, len(backends), ", ".join(b.name for b in backends)))


if __name__ == "__main__":
    main()
