"""Lithops' storage names: CloudObject and the errors."""

from bettong.storage import StorageNoSuchKeyError  # noqa: F401 (raised by the storage itself)


class StorageConfigMismatchError(Exception):
    def __init__(self, current_path, prev_path):
        super().__init__(f"The data is stored at {prev_path}, but current storage is "
                         f"configured at {current_path}")


class CloudObject:
    """A reference to an object in storage (what put_cloudobject returns)."""

    def __init__(self, backend, bucket, key):
        self.backend = backend
        self.bucket = bucket
        self.key = key

    def __str__(self):
        return f"<CloudObject at {self.backend}://{self.bucket}/{self.key}>"

    __repr__ = __str__

    def __eq__(self, other):
        return (isinstance(other, CloudObject)
                and (self.backend, self.bucket, self.key) == (other.backend, other.bucket, other.key))

    def __hash__(self):
        return hash((self.backend, self.bucket, self.key))


class CloudObjectUrl:
    def __init__(self, url):
        self.url = url

    def __str__(self):
        return f"<CloudObject at {self.url}>"


def create_job_key(executor_id, job_id):
    return "-".join([executor_id, job_id])
