"""The S3 storage backends (aws_s3, minio, ibm_cos, ceph) through boto3.

A backend's section of the Lithops config gives `storage_bucket` and, as it
applies, `endpoint` (MinIO, IBM COS, a local S3 server; AWS: from `region`),
`region`, `access_key_id`, `secret_access_key`, `session_token` (for aws_s3
also read from the `aws` section, as Lithops does). The methods are those of
bettong.Storage (the localhost backend), so lithops.Storage, the partitioner
and the workers use either alike.
"""

import io

from bettong.storage import StorageNoSuchKeyError

S3_BACKENDS = ("aws_s3", "minio", "ibm_cos", "ceph")
_KEYS = ("endpoint", "region", "access_key_id", "secret_access_key", "session_token")


def s3_settings(config, backend):
    """The connection settings of an S3 backend, from its section (and, for
    aws_s3, the `aws` section)."""
    section = dict(config.get(backend) or {})
    out = {}
    for k in _KEYS:
        v = section.get(k)
        if v is None and backend == "aws_s3":
            v = (config.get("aws") or {}).get(k)
        if v is not None:
            out[k] = v
    if backend != "aws_s3" and "endpoint" not in out:
        raise ValueError(f"storage backend {backend!r}: the config names no `endpoint`")
    if "access_key_id" not in out or "secret_access_key" not in out:
        if section.get("api_key") or section.get("iam_api_key"):
            raise NotImplementedError(
                f"lithops on Bettong: {backend} with an IAM API key is not available; give "
                "access_key_id and secret_access_key (HMAC credentials)")
    return out


class S3Storage:
    """Objects in an S3-API service."""

    def __init__(self, settings):
        import boto3
        import botocore.config
        self.settings = dict(settings)
        endpoint = settings.get("endpoint")
        if endpoint and "://" not in endpoint:
            endpoint = "https://" + endpoint
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=settings.get("region") or "us-east-1",
            aws_access_key_id=settings.get("access_key_id"),
            aws_secret_access_key=settings.get("secret_access_key"),
            aws_session_token=settings.get("session_token"),
            config=botocore.config.Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 5}))

    def __reduce__(self):
        return (S3Storage, (self.settings,))

    def __repr__(self):
        return f"<S3Storage {self.settings.get('endpoint') or self.settings.get('region')}>"

    @staticmethod
    def _missing(e):
        code = str(e.response.get("Error", {}).get("Code", ""))
        return code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")

    def put_object(self, bucket, key, body):
        if isinstance(body, str):
            body = body.encode("utf-8")
        if hasattr(body, "read") and not isinstance(body, (bytes, bytearray)):
            self.client.upload_fileobj(body, bucket, key)
            return {}
        r = self.client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
        return {"ETag": r.get("ETag")}

    def get_object(self, bucket, key, stream=False, extra_get_args=None):
        import botocore.exceptions
        args = {"Bucket": bucket, "Key": key}
        if extra_get_args and "Range" in extra_get_args:
            args["Range"] = extra_get_args["Range"]
        try:
            body = self.client.get_object(**args)["Body"]
        except botocore.exceptions.ClientError as e:
            if self._missing(e):
                raise StorageNoSuchKeyError(bucket, key) from None
            raise
        if stream:
            return io.BytesIO(body.read()) if args.get("Range") else body
        return body.read()

    def head_object(self, bucket, key):
        import botocore.exceptions
        try:
            r = self.client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as e:
            if self._missing(e):
                raise StorageNoSuchKeyError(bucket, key) from None
            raise
        out = {k.lower(): v for k, v in r["ResponseMetadata"].get("HTTPHeaders", {}).items()}
        out["content-length"] = str(r["ContentLength"])
        out["ContentLength"] = r["ContentLength"]
        out["LastModified"] = r.get("LastModified")
        out["ETag"] = r.get("ETag")
        return out

    def delete_object(self, bucket, key):
        self.client.delete_object(Bucket=bucket, Key=key)

    def delete_objects(self, bucket, keys):
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                       "Quiet": True})

    def list_objects(self, bucket, prefix=None):
        import botocore.exceptions
        out = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, **({"Prefix": prefix} if prefix else {}))
        try:
            for page in pages:
                for o in page.get("Contents", ()):
                    out.append({"Key": o["Key"], "Size": o["Size"],
                                "LastModified": o.get("LastModified"), "ETag": o.get("ETag")})
        except botocore.exceptions.ClientError as e:
            if self._missing(e):
                raise StorageNoSuchKeyError(bucket, "") from None
            raise
        out.sort(key=lambda o: o["Key"])
        return out

    def list_keys(self, bucket, prefix=None):
        return [o["Key"] for o in self.list_objects(bucket, prefix)]

    def head_bucket(self, bucket):
        import botocore.exceptions
        try:
            self.client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as e:
            if self._missing(e):
                raise StorageNoSuchKeyError(bucket, "") from None
            raise
        return {"bucket": bucket}

    def create_bucket(self, bucket):
        self.client.create_bucket(Bucket=bucket)
