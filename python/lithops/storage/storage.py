"""Lithops' Storage on Bettong's storage backends.

Backend `localhost`: Bettong's directory store (bettong.Storage; its directory
is $BETTONG_STORAGE_DIR, or ~/.local/share/bettong/storage), bucket from the
config's `storage_bucket` (Lithops' localhost default: "storage"). Backends
aws_s3, minio, ibm_cos and ceph: an S3-API service through boto3
(lithops.storage.s3). Others are refused.
"""

import itertools
import os
import uuid

import bettong.storage as _bs

from lithops.config import default_storage_config, extract_storage_config
from lithops.constants import JOBS_PREFIX, TEMP_PREFIX
from lithops.storage import utils
from lithops.storage.s3 import S3_BACKENDS, S3Storage, s3_settings

SUPPORTED_BACKENDS = ("localhost",) + S3_BACKENDS
_COBJECTS_INDEX = itertools.count()
_PROCESS_TOKEN = uuid.uuid4().hex[:8]  # cloudobject keys from many workers never collide


def check_backend(backend):
    if backend not in SUPPORTED_BACKENDS:
        raise NotImplementedError(
            f"lithops on Bettong: storage backend {backend!r} is not available (yet); "
            f"supported: {', '.join(SUPPORTED_BACKENDS)} (set `lithops: storage: localhost` "
            "in the config, or storage='localhost')")


class Storage:
    """put/get/head/delete/list objects, CloudObjects, on a storage backend."""

    def __init__(self, config=None, backend=None, storage_config=None):
        if storage_config:
            self.config = storage_config
        else:
            self.config = extract_storage_config(
                default_storage_config(config_data=config, backend=backend))
        self.backend = self.config["backend"]
        check_backend(self.backend)
        section = self.config.get(self.backend) or {}
        if self.backend == "localhost":
            self.storage_handler = _bs.Storage(section.get("storage_dir"))
            self.bucket = section.get("storage_bucket") or "storage"
        else:
            self.storage_handler = S3Storage(s3_settings(self.config, self.backend))
            self.bucket = section.get("storage_bucket")
            if not self.bucket:
                raise ValueError(f"storage backend {self.backend!r}: the config names no "
                                 "`storage_bucket`")

    def __reduce__(self):
        return (_rebuild, (self.config, self.storage_handler, self.bucket))

    def __repr__(self):
        return f"<lithops.Storage {self.backend} {self.storage_handler!r} bucket {self.bucket!r}>"

    def get_client(self):
        return self.storage_handler

    def get_storage_config(self):
        return self.config

    def create_bucket(self, bucket):
        self.storage_handler.create_bucket(bucket)

    def put_object(self, bucket, key, body):
        self.storage_handler.put_object(bucket, key, body)

    def get_object(self, bucket, key, stream=False, extra_get_args={}):
        return self.storage_handler.get_object(bucket, key, stream, extra_get_args)

    def upload_file(self, file_name, bucket, key=None, extra_args={}, config=None):
        key = key or os.path.basename(file_name)
        with open(file_name, "rb") as f:
            self.storage_handler.put_object(bucket, key, f)
        return True

    def download_file(self, bucket, key, file_name=None, extra_args={}, config=None):
        file_name = file_name or key
        os.makedirs(os.path.dirname(os.path.abspath(file_name)), exist_ok=True)
        src = self.storage_handler.get_object(bucket, key, stream=True)
        try:
            with open(file_name, "wb") as out:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
        finally:
            src.close()
        return True

    def head_object(self, bucket, key):
        return self.storage_handler.head_object(bucket, key)

    def delete_object(self, bucket, key):
        self.storage_handler.delete_object(bucket, key)

    def delete_objects(self, bucket, key_list):
        self.storage_handler.delete_objects(bucket, key_list)

    def head_bucket(self, bucket):
        self.storage_handler.head_bucket(bucket)
        return {"ResponseMetadata": {"HTTPStatusCode": 200}}

    def list_objects(self, bucket, prefix=None, match_pattern=None):
        objs = self.storage_handler.list_objects(bucket, prefix)
        if match_pattern is not None:
            import fnmatch
            objs = [o for o in objs if fnmatch.fnmatch(o["Key"], match_pattern)]
        return objs

    def list_keys(self, bucket, prefix=None):
        return self.storage_handler.list_keys(bucket, prefix)

    # ---- CloudObjects
    def put_cloudobject(self, body, bucket=None, key=None):
        """Store body and return its CloudObject. Without a key, the object goes
        under the running job's temporary prefix (removed by the executor's
        clean())."""
        if key is None:
            prefix = os.environ.get("__LITHOPS_SESSION_ID", "")
            name = f"cloudobject_{_PROCESS_TOKEN}_{next(_COBJECTS_INDEX):x}"
            key = "/".join([TEMP_PREFIX, prefix, name] if prefix else [TEMP_PREFIX, name])
        bucket = bucket or self.bucket
        self.storage_handler.put_object(bucket, key, body)
        return utils.CloudObject(self.backend, bucket, key)

    def _check(self, cloudobject):
        if cloudobject.backend != self.backend:
            raise Exception("CloudObject: Invalid Storage backend")

    def get_cloudobject(self, cloudobject, stream=False):
        self._check(cloudobject)
        return self.storage_handler.get_object(cloudobject.bucket, cloudobject.key, stream=stream)

    def delete_cloudobject(self, cloudobject):
        self._check(cloudobject)
        self.storage_handler.delete_object(cloudobject.bucket, cloudobject.key)

    def delete_cloudobjects(self, cloudobjects):
        for co in cloudobjects:
            self.delete_cloudobject(co)

    # ---- a job's temporary data (the executor's clean())
    def delete_job_data(self, job_key, cloudobjects=True):
        """Remove what the job left under the jobs prefix (and, with
        cloudobjects, the CloudObjects its calls stored without a key)."""
        prefixes = [f"{JOBS_PREFIX}/{job_key}/"]
        if cloudobjects:
            prefixes.append(f"{TEMP_PREFIX}/{job_key}/")
        n = 0
        for p in prefixes:
            try:
                keys = self.storage_handler.list_keys(self.bucket, p)
            except FileNotFoundError:
                continue
            self.storage_handler.delete_objects(self.bucket, keys)
            n += len(keys)
        return n


def _rebuild(config, handler, bucket):
    """A Storage as pickled: its handler pickles as its directory (localhost)
    or its connection settings (S3)."""
    s = Storage.__new__(Storage)
    s.config = config
    s.backend = config["backend"]
    s.storage_handler = handler
    s.bucket = bucket
    return s
