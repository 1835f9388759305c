"""dataclay.Client on Bettong (dataclay.client.api).

    from dataclay import Client
    client = Client(host="127.0.0.1", port=7450)      # a `bettong store`
    client.start()
    ...
    client.stop()

    with Client() as client: ...                      # also `async with`

Where it connects (the first that applies):
  1. host / port arguments (a port alone: host 127.0.0.1; a host alone: $DC_PORT,
     else 7450, the default port of `bettong store --listen`);
  2. $DC_HOST / $DC_PORT (or $DATACLAY_HOST / $DATACLAY_METADATA_HOST,
     $DATACLAY_PORT / $DATACLAY_METADATA_PORT), with the same defaults;
  3. $BETTONG_STORE ("host:port" or "tls:host:port");
  4. 127.0.0.1:7450, where `bettong store` listens by default (dataClay's client
     defaults to its own service's port, 16587; Bettong's store is not there).
Client(address="host:port") and Client(secret=...) are Bettong's own options; the
secret defaults to $BETTONG_STORE_SECRET, else $BETTONG_SECRET.

dataset (default $DC_DATASET, else "admin") is the dataset aliases live in (see
dataclay.dataclay_object). The other options of dataClay's Client are refused,
never ignored:
  - username / password ($DC_USERNAME / $DC_PASSWORD) other than dataClay's
    defaults ("admin"): Bettong has no user accounts; clients prove the store's
    shared secret (BETTONG_STORE_SECRET, or Client(secret=...));
  - local_backend ($DC_LOCAL_BACKEND): not supported;
  - proxy_host / proxy_port ($DC_PROXY_HOST, $DC_PROXY_PORT,
    $DC_PROXY_ENABLED): Bettong has no proxy service; clients connect to the
    store (TLS: `bettong store --tls-cert`, address tls:HOST:PORT).

start() connects this process (every thread of it) to the store, starts the dc
event loop (dataclay.event_loop) if there is none and makes
dataclay.config.get_runtime() a ClientRuntime; stop() flushes what
make_persistent queued, disconnects and restores the runtime the client
replaced. start() on an active client and stop() on an inactive one do nothing.
"""

import logging
import os

import uuid

from bettong import objects as _bo
from bettong.objects import connect, disconnect

from .. import config
from ..event_loop import _ensure_dc_event_loop, dc_to_thread_io

__all__ = ["Client", "init", "finish"]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 7450   # `bettong store` listens on 127.0.0.1:7450 by default
DEFAULT_HOST = "127.0.0.1"
_DEFAULT_CREDENTIAL = "admin"


def _env(*names):
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return None


def _secret_message(what):
    return (f"dataclay.Client: {what}: Bettong has no user accounts; a client proves it "
            "knows the store's shared secret instead (set BETTONG_STORE_SECRET, or pass "
            "Client(secret=...))")


class Client:
    """A session with a Bettong store under dataClay's Client API (see the module
    documentation for the options and where it connects)."""

    is_active = False

    def __init__(self, host=None, port=None, username=None, password=None, dataset=None,
                 local_backend=None, proxy_host=None, proxy_port=None, *, address=None,
                 secret=None):
        username = username if username is not None else _env("DC_USERNAME")
        password = password if password is not None else _env("DC_PASSWORD")
        if username not in (None, _DEFAULT_CREDENTIAL):
            raise ValueError(_secret_message(f"username {username!r} cannot be used"))
        if password not in (None, _DEFAULT_CREDENTIAL):
            raise ValueError(_secret_message("a password cannot be used"))
        local_backend = local_backend if local_backend is not None else _env("DC_LOCAL_BACKEND")
        if local_backend:
            raise ValueError("dataclay.Client: local_backend is not supported by Bettong: the "
                             "client sends each call to the store that holds the object")
        proxy = [(n, v) for n, v in (("proxy_host", proxy_host), ("proxy_port", proxy_port))
                 if v is not None]
        proxy += [(n, os.environ[n]) for n in ("DC_PROXY_HOST", "DC_PROXY_PORT")
                  if os.environ.get(n)]
        if (os.environ.get("DC_PROXY_ENABLED") or "").lower() in ("1", "true", "yes"):
            proxy.append(("DC_PROXY_ENABLED", os.environ["DC_PROXY_ENABLED"]))
        if proxy:
            raise ValueError(f"dataclay.Client: {proxy[0][0]} is not supported: Bettong has no "
                             "proxy service; connect to the store itself (host=, port=; TLS: "
                             "`bettong store --tls-cert`, address tls:HOST:PORT)")
        if dataset is not None and (not isinstance(dataset, str) or not dataset
                                    or "/" in dataset):
            raise ValueError(f"dataclay.Client: dataset must be a non-empty name without '/', "
                             f"not {dataset!r}")
        self.dataset = dataset or _env("DC_DATASET") or config.DEFAULT_DATASET
        self.username = username or _DEFAULT_CREDENTIAL
        self.secret = secret
        self.host = self.port = None
        if address is not None:
            if host is not None or port is not None:
                raise ValueError("dataclay.Client: give address= or host=/port=, not both")
            self.address = address
        else:
            if host is None and port is None:
                host = _env("DC_HOST", "DATACLAY_METADATA_HOST", "DATACLAY_HOST")
                port = _env("DC_PORT", "DATACLAY_METADATA_PORT", "DATACLAY_PORT")
            if host is None and port is None:
                self.address = os.environ.get("BETTONG_STORE") or \
                    f"{DEFAULT_HOST}:{DEFAULT_PORT}"
            else:
                if port is None:
                    port = _env("DC_PORT", "DATACLAY_METADATA_PORT", "DATACLAY_PORT") or \
                        DEFAULT_PORT
                try:
                    port = int(port)
                except (TypeError, ValueError):
                    raise ValueError(f"dataclay.Client: port must be a number, not {port!r}")
                self.host, self.port = host or DEFAULT_HOST, port
                self.address = f"{self.host}:{self.port}"
        if self.host is None:
            h, _, p = self.address.rpartition(":")
            self.host = h[4:] if h.startswith("tls:") else h
            self.port = int(p) if p.isdigit() else None
        self.session = None
        self.runtime = None
        self._previous_runtime = None

    def start(self):
        """Connect (see the module documentation). Returns the client."""
        if self.is_active:
            logger.warning("Client already active. Ignoring")
            return self
        _ensure_dc_event_loop()
        self.session = connect(self.address, self.secret)
        self.runtime = config.ClientRuntime(self.address, self.host, self.port, self.dataset,
                                            self.username)
        self._previous_runtime = config.get_runtime()
        config.set_runtime(self.runtime)
        config.session_var.set({"dataset_name": self.dataset, "username": self.username,
                                "token": b""})
        self.is_active = True
        return self

    def stop(self):
        """Send what make_persistent queued, disconnect, restore the previous runtime."""
        if not self.is_active:
            logger.warning("Client is not active. Ignoring")
            return
        try:
            disconnect()
        finally:
            self.session = None
            if config.get_runtime() is self.runtime:
                config.set_runtime(self._previous_runtime)
            self.is_active = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    async def __aenter__(self):
        return self.start()

    async def __aexit__(self, *exc):
        self.stop()

    def get_backends(self):
        """The service's backends, {uuid.UUID: BackendClient}, asked of the store
        again (one for a store that runs alone). RuntimeError before start()."""
        if not self.is_active:
            raise RuntimeError("Client is not active: start() it first")
        return {uuid.UUID(bid): BackendClient(b) for bid, b in _bo.backends().items()}

    async def a_get_backends(self):
        """Async version of get_backends()."""
        from ..dataclay_object import _await_in_thread
        return await _await_in_thread(lambda: self.get_backends())

    def __repr__(self):
        state = "active" if self.is_active else "not started"
        return f"<dataclay.Client {self.address} dataset={self.dataset!r} ({state})>"


class BackendClient:
    """One backend of the service, as get_backends() gives it: its id (a
    uuid.UUID), name, address, host and port, and the backend calls of
    dataClay's that applications and COMPSs use: flush_all, new_object_version,
    consolidate_object_version."""

    def __init__(self, backend):
        self.id = uuid.UUID(backend.id)
        self.name = backend.name
        self.address = backend.address
        host, _, port = backend.address.rpartition(":")
        self.host = host[4:] if host.startswith("tls:") else host
        self.port = int(port) if port.isdigit() else None

    async def flush_all(self):
        """dataClay's flush_all (unload every object from the backend's memory):
        bettong.objects.unload on this backend. Every acknowledged change is on
        disk already; this drops the loaded objects that nothing holds, so the
        next request about one loads it from disk."""
        await dc_to_thread_io(_bo.unload, self.id)

    async def new_object_version(self, object_id):
        """A version of object object_id on this backend (dataClay's COMPSs entry
        point); returns its id (str)."""
        from ..dataclay_object import DataClayObject

        def run():
            obj = DataClayObject.get_by_id(object_id)
            return str(obj.new_version(backend_id=self.id)._dc_meta.id)
        return await dc_to_thread_io(run)

    async def consolidate_object_version(self, object_id):
        """consolidate_version() of the version object_id."""
        from ..dataclay_object import DataClayObject
        await dc_to_thread_io(lambda: DataClayObject.get_by_id(object_id).consolidate_version())

    def __repr__(self):
        return f"<dataclay BackendClient {self.name!r} {self.id} at {self.address}>"


_init_client = None


def init():
    """Start a Client() configured from the environment and return it."""
    global _init_client
    c = Client()
    c.start()
    _init_client = c
    return c


def finish():
    """Stop the client init() started, if any."""
    global _init_client
    c, _init_client = _init_client, None
    if c is not None:
        c.stop()
