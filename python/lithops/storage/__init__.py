from lithops.storage.storage import Storage  # noqa: F401 (the package's name for it)
