"""The seed's example on a store service of several backends, each call run
next to its car: the same lines as cars.py, on a pool whose workers were
started next to the backends (`bettong worker --join POOL --near-store NAME`),
with one argument more to map: near=cars.get_by_id, which tells the executor
which car (hence which backend) each item is about. Each call then runs on a
worker next to its car's backend when one is free, and its future's
stats["worker_near"] says where it ran. Run fill_spread.py first.

    export BETTONG_STORE=127.0.0.1:7451 BETTONG_POOL=127.0.0.1:7460
    export BETTONG_SECRET=...                    # the pool's secret
    export BETTONG_STORE_SECRET=                 # the store's (else BETTONG_SECRET is used)
    PYTHONPATH=python python3 examples/objects/cars_near.py

The workers must import models.py: start them with this directory in
$BETTONG_WORKER_PATH.
"""

import argparse
import os

import bettong
from bettong import objects
from models import Cars


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=None, help="HOST:PORT of a backend (default $BETTONG_STORE)")
    ap.add_argument("--pool", default=os.environ.get("BETTONG_POOL"),
                    help="HOST:PORT of the pool (default $BETTONG_POOL)")
    args = ap.parse_args()

    bettong.connect(args.store)                # workers use their own $BETTONG_STORE

    # --- the seed's example, with near= ---
    cars = Cars.get_by_alias("masa_cars")
    iterdata = cars.get_ids().split("-")       # a user-defined active method

    def get_car_speed(x):
        car = cars.get_by_id(x)                 # a user-defined active method returning a Car proxy
        return car.speed

    with bettong.FunctionExecutor(address=args.pool) as ex:
        fs = ex.map(get_car_speed, iterdata, near=cars.get_by_id)
        speeds = ex.get_result(fs)
    # --- end of the example ---

    names = {bid: b.name for bid, b in objects.backends().items()}
    near = 0
    for x, f, speed in zip(iterdata, fs, speeds):
        home = names[objects.backend_of(cars.get_by_id(x))]
        ran = f.stats["worker_near"]
        near += ran == home
        print("%s: speed %g, stored on %s, ran on worker %d near %s"
              % (x, speed, home, f.stats["worker"], ran or "no backend"))
    print("cars: %d" % len(iterdata))
    print("mean speed: %.2f" % (sum(speeds) / len(speeds)))
    print("near: %d of %d calls ran next to their car's backend" % (near, len(iterdata)))


if __name__ == "__main__":
    main()
