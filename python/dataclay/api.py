"""dataClay 2.x's module-level API: init() connects to the store (as
dataclay.Client() would: $DC_HOST/$DC_PORT, else $BETTONG_STORE, ...; secret
$BETTONG_STORE_SECRET, else $BETTONG_SECRET), finish() disconnects."""

from .client import api as _client_api

__all__ = ["init", "finish"]


def init(*args, **kwargs):
    """Connect (see dataclay.Client). dataClay 2.x's configuration file
    (session.properties) is refused: Bettong takes its settings from the
    environment."""
    if args or kwargs:
        raise TypeError("dataclay.api.init() takes no arguments in Bettong: it does not read "
                        "dataClay's configuration files; set BETTONG_STORE (or DC_HOST/DC_PORT) "
                        "and BETTONG_STORE_SECRET instead")
    return _client_api.init()


def finish():
    """Send what make_persistent queued and disconnect."""
    _client_api.finish()
