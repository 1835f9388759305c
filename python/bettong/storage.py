"""Storage: an object store (buckets of keyed byte objects) on a local directory.

A bucket is a directory under the store's directory; a key's '/'-separated parts
are subdirectories. Keys cannot leave their bucket: empty parts, '.', '..' and
NUL bytes are refused. Writes are atomic (a temporary file renamed into place), so a
reader never sees half an object. A Storage pickles as its directory, so it can be
passed to functions running on the workers (of the same machine, or of machines
that share the directory).
"""

import io
import os
import re

_TMP_PREFIX = ".bettong-tmp-"
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


class StorageNoSuchKeyError(KeyError):
    """The bucket holds no object of that key."""

    def __init__(self, bucket, key):
        super().__init__(f"{bucket}/{key}")
        self.bucket = bucket
        self.key = key

    def __str__(self):
        return f"no such key in bucket {self.bucket!r}: {self.key!r}"


NoSuchKey = StorageNoSuchKeyError


def default_directory():
    env = os.environ.get("BETTONG_STORAGE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "bettong", "storage")


def _check_bucket(bucket):
    if not isinstance(bucket, str) or not bucket or bucket in (".", "..") or "/" in bucket \
            or "\\" in bucket or "\0" in bucket or bucket.startswith(_TMP_PREFIX):
        raise ValueError(f"invalid bucket name: {bucket!r}")


def _key_parts(key):
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid key: {key!r}")
    parts = key.split("/")
    for p in parts:
        if p in ("", ".", "..") or "\0" in p or p.startswith(_TMP_PREFIX):
            raise ValueError(f"invalid key {key!r}: no empty, '.' or '..' parts")
    return parts


def _iso(ts):
    import datetime
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)


class Storage:
    """put_object / get_object / head_object / delete_object / list_keys /
    list_objects on a directory (default: $BETTONG_STORAGE_DIR, or
    ~/.local/share/bettong/storage)."""

    def __init__(self, directory=None):
        self.directory = os.path.abspath(os.path.expanduser(directory or default_directory()))

    def __reduce__(self):
        return (Storage, (self.directory,))

    def __repr__(self):
        return f"bettong.Storage({self.directory!r})"

    def __eq__(self, other):
        return isinstance(other, Storage) and other.directory == self.directory

    def __hash__(self):
        return hash(self.directory)

    # ---- paths
    def _bucket_dir(self, bucket):
        _check_bucket(bucket)
        return os.path.join(self.directory, bucket)

    def _path(self, bucket, key):
        return os.path.join(self._bucket_dir(bucket), *_key_parts(key))

    # ---- objects
    def put_object(self, bucket, key, body):
        """Store body (bytes-like, str (utf-8) or a binary file object) at key."""
        path = self._path(bucket, key)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        import tempfile
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=parent)
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(body, str):
                    out.write(body.encode("utf-8"))
                elif isinstance(body, (bytes, bytearray, memoryview)):
                    out.write(body)
                elif hasattr(body, "read"):
                    import shutil
                    shutil.copyfileobj(body, out, 1 << 20)
                else:
                    raise TypeError(f"body must be bytes, str or a file object, not {type(body).__name__}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return {"ETag": self._etag(os.stat(path))}

    def _open(self, bucket, key):
        path = self._path(bucket, key)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise StorageNoSuchKeyError(bucket, key) from None
        return f

    def get_object(self, bucket, key, stream=False, extra_get_args=None):
        """The object's bytes (or a readable binary file object with stream=True).
        extra_get_args={"Range": "bytes=a-b"} reads bytes a..b inclusive ("a-" to
        the end, "-n" the last n)."""
        f = self._open(bucket, key)
        rng = (extra_get_args or {}).get("Range")
        try:
            if rng is None:
                if stream:
                    return f
                with f:
                    return f.read()
            size = os.fstat(f.fileno()).st_size
            start, end = self._range(rng, size)
            f.seek(start)
            data = f.read(max(0, end - start + 1))
            f.close()
            return io.BytesIO(data) if stream else data
        except BaseException:
            f.close()
            raise

    @staticmethod
    def _range(rng, size):
        m = _RANGE.match(str(rng))
        if not m or (not m.group(1) and not m.group(2)):
            raise ValueError(f"invalid Range {rng!r}: expected 'bytes=a-b'")
        a, b = m.group(1), m.group(2)
        if not a:  # the last b bytes
            n = int(b)
            return max(0, size - n), size - 1
        start = int(a)
        end = size - 1 if not b else min(int(b), size - 1)
        if b and int(b) < start:
            raise ValueError(f"invalid Range {rng!r}: end before start")
        return start, end

    @staticmethod
    def _etag(st):
        return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'

    def head_object(self, bucket, key):
        """Metadata: content-length, last-modified, ETag (and boto-style names)."""
        path = self._path(bucket, key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise StorageNoSuchKeyError(bucket, key) from None
        if not os.path.isfile(path):
            raise StorageNoSuchKeyError(bucket, key)
        import email.utils
        return {
            "content-length": str(st.st_size),
            "last-modified": email.utils.formatdate(st.st_mtime, usegmt=True),
            "ETag": self._etag(st),
            "ContentLength": st.st_size,
            "LastModified": _iso(st.st_mtime),
        }

    def delete_object(self, bucket, key):
        """Remove the object (no error if it is absent); empty directories left by
        its key are removed."""
        path = self._path(bucket, key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        top = self._bucket_dir(bucket)
        d = os.path.dirname(path)
        while d != top and d.startswith(top + os.sep):
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)

    def delete_objects(self, bucket, keys):
        for k in keys:
            self.delete_object(bucket, k)

    # ---- listing
    def _walk(self, bucket, prefix):
        top = self._bucket_dir(bucket)
        if prefix and not isinstance(prefix, str):
            raise ValueError(f"invalid prefix: {prefix!r}")
        start = top
        if prefix and "/" in prefix:  # start below the prefix's directory part
            head = prefix.rsplit("/", 1)[0]
            parts = head.split("/")
            if all(p not in ("", ".", "..") for p in parts):
                start = os.path.join(top, *parts)
        out = []
        for root, dirs, files in os.walk(start):
            dirs[:] = [d for d in dirs if not d.startswith(_TMP_PREFIX)]
            rel = os.path.relpath(root, top)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = rel + name
                if prefix and not key.startswith(prefix):
                    continue
                out.append((key, os.path.join(root, name)))
        out.sort()
        return out

    def list_keys(self, bucket, prefix=None):
        """Sorted keys of the bucket (those starting with prefix)."""
        return [k for k, _ in self._walk(bucket, prefix)]

    def list_objects(self, bucket, prefix=None):
        """[{'Key', 'Size', 'LastModified'}] of the bucket, sorted by key."""
        out = []
        for key, path in self._walk(bucket, prefix):
            try:
                st = os.stat(path)
            except OSError:
                continue
            out.append({"Key": key, "Size": st.st_size, "LastModified": _iso(st.st_mtime),
                        "ETag": self._etag(st)})
        return out

    def list_buckets(self):
        try:
            return sorted(d for d in os.listdir(self.directory)
                          if os.path.isdir(os.path.join(self.directory, d))
                          and not d.startswith(_TMP_PREFIX))
        except FileNotFoundError:
            return []

    def head_bucket(self, bucket):
        d = self._bucket_dir(bucket)
        if not os.path.isdir(d):
            raise StorageNoSuchKeyError(bucket, "")
        return {"bucket": bucket, "path": d}

    def create_bucket(self, bucket):
        os.makedirs(self._bucket_dir(bucket), exist_ok=True)
