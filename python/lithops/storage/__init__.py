from lithops.storage.storage import Storage  # noqa: F401
