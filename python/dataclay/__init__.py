"""dataClay's spellings on Bettong's persistent objects (bettong.objects).

    from dataclay import Client, DataClayObject, activemethod

    client = Client(host="127.0.0.1", port=7450)   # or Client() for $BETTONG_STORE
    client.start()

    class Car(DataClayObject):
        speed: float

        @activemethod
        def accelerate(self, dv):
            self.speed += dv

    ...
    client.stop()

dataClay's module layout, far enough for models and tests written for it:
dataclay.client.api (Client, init, finish), dataclay.dataclay_object
(DataClayObject, activemethod), dataclay.exceptions, dataclay.event_loop,
dataclay.config (get_runtime), dataclay.contrib (a namespace for model
packages: every dataclay/contrib directory on sys.path) and dataclay.api
(dataClay 2.x's init/finish). The contract is shared/specs/objects-api.md;
docs/user-guide.md says what differs from dataClay.
"""

from bettong.objects import NotFound

from . import exceptions
from .client.api import Client
from .dataclay_object import DataClayObject, activemethod
from .exceptions import AlreadyExistError, DataClayException, DoesNotExistError

StorageObject = DataClayObject
DoesNotExist = NotFound   # Bettong's earlier spelling of the lookup error

__version__ = "4.3.1+bettong"
__all__ = ["Client", "DataClayObject", "StorageObject", "activemethod", "exceptions",
           "DataClayException", "AlreadyExistError", "DoesNotExistError", "DoesNotExist"]
