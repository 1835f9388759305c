"""dataClay's legacy module-level API: init() connects to the store named by
$BETTONG_STORE (secret: $BETTONG_STORE_SECRET, else $BETTONG_SECRET), finish()
disconnects."""

from bettong.objects import connect, disconnect

__all__ = ["init", "finish"]


def init(*ignored, **also_ignored):
    """Connect to the store at $BETTONG_STORE (arguments dataClay takes, such as
    a configuration file, are ignored)."""
    connect()


def finish():
    """Send what is queued and disconnect."""
    disconnect()
