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

Only what Bettong implements is here: the model base class and decorator, the
client's start/stop, and the lookup error. The contract is
shared/specs/objects-api.md.
"""

import os

from bettong.objects import AliasTaken, NotFound, Persistent, StoreError, active, connect, disconnect
from bettong.objects import dclayMethod  # dataClay 2.x models (see bettong.objects)

DataClayObject = Persistent
activemethod = active
DoesNotExist = NotFound
DoesNotExistError = NotFound
AlreadyExistError = AliasTaken
DataClayException = StoreError

__all__ = ["Client", "DataClayObject", "activemethod", "dclayMethod", "DoesNotExist", "DoesNotExistError",
           "AlreadyExistError", "DataClayException"]


class Client:
    """A connection to the store: Client(host=..., port=...) or Client(address=...);
    with neither, $BETTONG_STORE. start() connects (every thread of the process
    then uses the store), stop() disconnects. Other dataClay options (username,
    password, dataset, ...) are accepted and ignored."""

    def __init__(self, host=None, port=None, address=None, secret=None, **ignored):
        if address is None and (host is not None or port is not None):
            if port is None:
                raise ValueError("Client(host=...) needs a port too")
            address = "%s:%d" % (host or "127.0.0.1", int(port))
        self.address = address
        self.secret = secret
        self.session = None

    def start(self):
        self.session = connect(self.address, self.secret)
        return self

    def stop(self):
        if self.session is not None:
            self.session = None
            disconnect()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        where = self.address or os.environ.get("BETTONG_STORE", "$BETTONG_STORE")
        return "<dataclay.Client %s%s>" % (where, "" if self.session else " (not started)")
