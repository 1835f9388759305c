"""The COMPSs storage API (storage.api) over Bettong's dataClay spellings.

    import storage.api
    storage.api.init()                  # or init("storage.properties")
    obj = storage.api.getByID(some_obj.getID())
    storage.api.finish()

getID() of a persistent object gives its id text, and getByID(id) the object
(a proxy). COMPSs passes those ids around as opaque strings, so this is the
round trip it needs; dataClay's getID() gives a JSON text of its metadata
instead, and getByID takes that too (its "id" field).

init(config_file_path) / initWorker(config_file_path) read a KEY=VALUE file
(dataClay's storage.properties: blank lines, # comments and `export ` are
allowed, values may be quoted) into the environment, then start a
dataclay.Client() configured from it (DC_HOST, DC_PORT, BETTONG_STORE, ...). A
line that is not KEY=VALUE is refused. initWorkerPostFork() starts the client
in a forked worker; finish*() stop it. TaskContext is the per-task context
manager COMPSs' worker enters (it logs). Other keyword arguments are refused.
"""

import json
import logging
import os
import re

from dataclay import DataClayObject as StorageObject
from dataclay.client.api import Client

__all__ = ["StorageObject", "getByID", "init", "finish", "initWorker", "finishWorker",
           "initWorkerPostFork", "finishWorkerPostFork", "get_client", "TaskContext"]

logger = logging.getLogger("bettong.storage.api")

_client = None
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def _no_options(fn, kwargs):
    if kwargs:
        raise TypeError(f"storage.api.{fn}() on Bettong takes no option "
                        f"{sorted(kwargs)[0]!r}")


def _read_properties(path):
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = _LINE.match(line)
            if not m:
                raise ValueError(f"{path}:{n}: not a KEY=VALUE line: {line.strip()!r}")
            v = m.group(2)
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            out[m.group(1)] = v
    return out


def get_client():
    """The Client that init()/initWorker() made (None before)."""
    return _client


def getByID(object_id):
    """The persistent object with this id (a proxy). Takes getID()'s id text, or
    a dataClay metadata JSON text (its "id")."""
    text = str(object_id).strip()
    if text.startswith("{"):
        text = str(json.loads(text)["id"])
    return StorageObject.get_by_id(text)


def initWorker(config_file_path=None, **kwargs):
    """Read config_file_path (if given) into the environment and make the Client
    (started by initWorkerPostFork)."""
    global _client
    _no_options("initWorker", kwargs)
    if config_file_path:
        os.environ.update(_read_properties(config_file_path))
    _client = Client()


def initWorkerPostFork():
    """Start the Client made by initWorker (in the forked worker)."""
    if _client is None:
        raise RuntimeError("storage.api.initWorkerPostFork() before initWorker()")
    _client.start()


def finishWorkerPostFork():
    if _client is not None:
        _client.stop()


def finishWorker(**kwargs):
    _no_options("finishWorker", kwargs)


def init(config_file_path=None, **kwargs):
    """Master side: initWorker then initWorkerPostFork."""
    _no_options("init", kwargs)
    initWorker(config_file_path)
    initWorkerPostFork()


def finish(**kwargs):
    """Master side: stop the Client."""
    _no_options("finish", kwargs)
    if _client is not None:
        _client.stop()


class TaskContext:
    """The context COMPSs' worker runs each task in: logs its start and end (and an
    exception, which it does not suppress)."""

    def __init__(self, logger, values, config_file_path=None, **kwargs):
        _no_options("TaskContext", kwargs)
        self.logger = logger
        self.values = values

    def __enter__(self):
        self.logger.info("Starting task")
        return self

    def __exit__(self, etype, value, tb):
        if etype is not None:
            self.logger.warning("Exception received: %s", etype)
        self.logger.info("Ending task")
        return False
