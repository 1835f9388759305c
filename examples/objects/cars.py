"""The seed's example, as the persistent-objects spec writes it: the speeds of
the cars in the store's "masa_cars" collection, read by parallel functions. Each
function gets the `cars` proxy (it pickles as a reference), asks the collection
for one car (an active method that returns a Car proxy) and reads its speed
(a remote field read). Run fill_store.py first.

    export BETTONG_STORE=127.0.0.1:7450
    PYTHONPATH=python python3 examples/objects/fill_store.py
    PYTHONPATH=python python3 examples/objects/cars.py
"""

import argparse

import bettong
from models import Cars


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=None, help="HOST:PORT of the store (default $BETTONG_STORE)")
    ap.add_argument("--workers", type=int, default=None,
                    help="local pool size (default: one worker per core)")
    args = ap.parse_args()

    bettong.connect(args.store)                # workers started after this use it too

    # --- the seed's example, as written ---
    cars = Cars.get_by_alias("masa_cars")
    iterdata = cars.get_ids().split("-")       # a user-defined active method

    def get_car_speed(x):
        car = cars.get_by_id(x)                 # a user-defined active method returning a Car proxy
        return car.speed

    speeds = bettong.FunctionExecutor(workers=args.workers).map(get_car_speed, iterdata)
    # --- end of the example ---

    speeds = [f.result() for f in speeds]
    print("cars: %d" % len(iterdata))
    print("speeds: %s" % ", ".join("%s=%g" % (x, s) for x, s in zip(iterdata, speeds)))
    print("mean speed: %.2f" % (sum(speeds) / len(speeds)))


if __name__ == "__main__":
    main()
