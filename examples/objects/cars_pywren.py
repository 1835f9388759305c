"""The seed's example in its PyWren-IBM-Cloud spelling, run unchanged on Bettong:
dataClay's init() (the store's address from $BETTONG_STORE), the cars of the
"masa_cars" collection, and `pywren.ibm_cf_executor()` mapping get_car_speed
over their ids (a Bettong pool: local, or $BETTONG_POOL). Run fill_store.py
first.

    export BETTONG_STORE=127.0.0.1:7450
    PYTHONPATH=python python3 examples/objects/fill_store.py
    PYTHONPATH=python python3 examples/objects/cars_pywren.py
"""

from dataclay.api import finish, init

init()

import pywren_ibm_cloud as pywren  # noqa: E402
from models import Cars  # noqa: E402

# --- the seed's example, PyWren spelling ---
cars = Cars.get_by_alias("masa_cars")
iterdata = cars.get_ids().split("-")


def get_car_speed(x):
    car = cars.get_by_id(x)
    return car.speed


pw = pywren.ibm_cf_executor()
pw.map(get_car_speed, iterdata)
speeds = pw.get_result()
# --- end of the example ---

print("cars: %d" % len(iterdata))
print("speeds: %s" % ", ".join("%s=%g" % (x, s) for x, s in zip(iterdata, speeds)))
print("mean speed: %.2f" % (sum(speeds) / len(speeds)))
finish()
