"""dataClay's dataclay.config on Bettong: the runtime of this process and the
current dataset.

    from dataclay.config import get_runtime
    rt = get_runtime()     # None before a Client starts; then a ClientRuntime

A ClientRuntime describes the session a started dataclay.Client opened: address,
host, port, dataset, username; is_backend is False and backend_id None (a client
is no backend). What only a backend's runtime has in dataClay (backend_clients,
the heap manager's data_manager, ...) raises AttributeError saying so: Bettong's
store process sets its own runtime with set_runtime() once it provides those.

Environment, as dataClay's client reads it: DC_DATASET (the default dataset,
"admin" without it); DC_HOST / DC_PORT (also DATACLAY_HOST, DATACLAY_METADATA_HOST,
DATACLAY_PORT, DATACLAY_METADATA_PORT) are read by dataclay.Client.
"""

import contextvars
import os

__all__ = ["get_runtime", "set_runtime", "session_var", "ClientRuntime", "DEFAULT_DATASET"]

DEFAULT_DATASET = "admin"

# dataClay keeps the session (dataset, username) here; set by Client.start().
session_var = contextvars.ContextVar("session")

current_runtime = None


def get_runtime():
    """This process's runtime: in a store, a BackendRuntime (the backend it is);
    elsewhere None before a dataclay.Client starts, else the runtime set by
    set_runtime()."""
    global current_runtime
    if current_runtime is None and os.environ.get("BETTONG_STORE_BACKEND_ID"):
        current_runtime = BackendRuntime(os.environ["BETTONG_STORE_BACKEND_ID"],
                                         os.environ.get("BETTONG_STORE_BACKEND_NAME", ""))
    return current_runtime


def set_runtime(new_runtime):
    global current_runtime
    current_runtime = new_runtime


_NOT_YET = {
    "backend_clients": "a backend's runtime (inside a store)",
    "metadata_service": "dataClay's metadata service; Bettong's backends share a "
                        "directory in Redis (`bettong store --metadata`)",
    "data_manager": "dataClay's heap manager; Bettong's store keeps objects in LMDB and "
                    "bounds the live ones with `bettong store --cache N`",
}


def _missing(runtime, name, who):
    """The AttributeError for what a runtime lacks: saying why for dataClay's
    names that Bettong does not provide."""
    why = _NOT_YET.get(name)
    if why is not None:
        raise AttributeError(f"get_runtime().{name} is not provided by {who}: it needs {why}")
    raise AttributeError(f"{type(runtime).__name__!r} object has no attribute {name!r}")


class ClientRuntime:
    """What get_runtime() gives in a client after dataclay.Client.start()."""

    is_backend = False
    backend_id = None

    def __init__(self, address, host, port, dataset, username):
        self.address = address
        self.host = host
        self.port = port
        self.dataset = dataset
        self.username = username

    def __getattr__(self, name):
        _missing(self, name, "Bettong's dataClay client runtime")

    def __repr__(self):
        return f"<dataclay ClientRuntime {self.address} dataset={self.dataset!r}>"


class BackendClients(dict):
    """{backend id (uuid.UUID): dataclay BackendClient} of the service; update()
    asks the store again (dataClay's code calls it without arguments)."""

    def update(self, *args, **kwargs):
        if args or kwargs:
            return super().update(*args, **kwargs)
        from bettong import objects
        from .client.api import BackendClient
        import uuid
        self.clear()
        for bid, b in objects.backends().items():
            self[uuid.UUID(bid)] = BackendClient(b)
        return None


class BackendRuntime:
    """get_runtime() inside a store: the backend this process is."""

    is_backend = True

    def __init__(self, backend_id, name):
        import uuid
        self.backend_id = uuid.UUID(backend_id)
        self.name = name
        self._clients = None

    @property
    def backend_clients(self):
        if self._clients is None:
            self._clients = BackendClients()
            self._clients.update()
        return self._clients

    @property
    def dataset(self):
        return os.environ.get("DC_DATASET") or DEFAULT_DATASET

    def __getattr__(self, name):
        _missing(self, name, "Bettong")

    def __repr__(self):
        return f"<dataclay BackendRuntime {self.name!r} {self.backend_id}>"


def current_dataset():
    """The dataset aliases are qualified with: the started Client's, else
    $DC_DATASET, else "admin"."""
    rt = current_runtime
    ds = getattr(rt, "dataset", None) if rt is not None else None
    if ds:
        return ds
    return os.environ.get("DC_DATASET") or DEFAULT_DATASET
