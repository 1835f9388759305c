"""Fill a Bettong store with the cars of the seed's example (run it before
cars.py): `--cars` cars with speeds 50, 51, ... and a Cars collection of them
under the alias "masa_cars" (replaced if it exists).

    build/bettong store --listen 127.0.0.1:7450 --dir /tmp/cars-store &
    export BETTONG_STORE=127.0.0.1:7450
    PYTHONPATH=python python3 examples/objects/fill_store.py --cars 20
"""

import argparse

import bettong
from models import Car, Cars


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cars", type=int, default=20, help="how many cars (default 20)")
    ap.add_argument("--store", default=None, help="HOST:PORT of the store (default $BETTONG_STORE)")
    args = ap.parse_args()

    bettong.connect(args.store)
    try:
        old = Cars.get_by_alias("masa_cars")
    except bettong.NotFound:
        pass
    else:
        # the collection first: the store refuses to delete a car it still holds
        old_cars = [old.get_by_id(i) for i in old.get_ids().split("-") if i]
        old.delete()
        for car in old_cars:
            car.delete()

    cars = Cars()
    for i in range(args.cars):
        cars.cars["car%d" % i] = Car("plate-%d" % i, speed=50.0 + i)
    cars.make_persistent(alias="masa_cars")    # the cars are stored with it
    print("stored %d cars under the alias masa_cars (id %s)" % (args.cars, cars.id))


if __name__ == "__main__":
    main()
