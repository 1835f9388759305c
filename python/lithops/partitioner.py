"""Data from storage for functions with an `obj` parameter (Lithops' object
processing), on the localhost storage backend and local paths.

The `obj` of each item names a bucket or a prefix (`localhost://bucket/`,
`localhost://bucket/prefix/`, or without the scheme: the executor's storage
backend), an object key (`localhost://bucket/key`), a CloudObject, a local
file or directory (`/path`), or a URL (http, https: read with byte ranges when
the server serves them, else whole). It is expanded into the objects it names and each
object, with obj_chunk_size (bytes) or obj_chunk_number, into partitions: one
call each, with Lithops' `obj` (bucket, key, part, total_parts, chunk_size,
data_byte_range, newline; data_stream on the worker). With a newline (the
default '\\n') a partition holds exactly the lines that start in its byte range
(no line is cut or read twice); obj_newline=None cuts at the byte.
"""

import io
import os

from lithops.storage.storage import check_backend
from lithops.storage.utils import CloudObject, CloudObjectUrl

_STEP = 128 * 1024  # bytes read at a time while looking for a line's end


class CloudObjectLocal:
    """A local file (Lithops' CloudObjectLocal)."""

    def __init__(self, path):
        self.path = path
        self.bucket = os.path.dirname(path)
        self.key = os.path.basename(path)

    def __str__(self):
        return f"<CloudObject at {self.path}>"


def split_object_url(obj_url):
    """(backend or None, bucket, prefix, object name) of 'backend://bucket/key'."""
    if "://" in obj_url:
        sb, path = obj_url.split("://", 1)
    else:
        sb, path = None, obj_url
    sb = {"cos": "ibm_cos", "s3": "aws_s3"}.get(sb, sb)
    bucket, full_key = path.split("/", 1) if "/" in path else (path, "")
    if full_key.endswith("/"):
        prefix, obj_name = full_key[:-1], ""
    elif full_key:
        prefix, obj_name = full_key.rsplit("/", 1) if "/" in full_key else ("", full_key)
    else:
        prefix, obj_name = "", ""
    return sb, bucket, prefix, obj_name


def _chunk_size(size, chunk_size, chunk_number):
    if chunk_number:
        rest = size % chunk_number
        return size // chunk_number + round(rest / chunk_number + 0.5)
    if chunk_size:
        return chunk_size
    return size


def _split(make_obj, entry, size, chunk_size, chunk_number, newline):
    """The partitions of one object of `size` bytes."""
    cs = max(1, _chunk_size(size, chunk_size, chunk_number) or size or 1)
    starts = list(range(0, size, cs)) or [0]
    out = []
    for i, s in enumerate(starts):
        e = min(size, s + cs)
        obj = make_obj()
        obj.part = i + 1
        obj.total_parts = len(starts)
        obj.chunk_size = e - s
        obj.data_byte_range = None if len(starts) == 1 else (s, e - 1)
        obj.newline = newline
        part = dict(entry)
        part["obj"] = obj
        out.append(part)
    return out


def create_partitions(storage, envelopes, chunk_size, chunk_number, newline):
    """(partitions, parts per object) of the items' `obj`s."""
    if chunk_size is not None and chunk_size < 1:
        raise ValueError("obj_chunk_size must be a positive number of bytes")
    if chunk_number is not None and chunk_number < 1:
        raise ValueError("obj_chunk_number must be a positive number")
    partitions, parts_per_object = [], []
    for entry in envelopes:
        if "obj" not in entry:
            raise ValueError("a function with an `obj` parameter needs an obj in each item")
        ref = entry["obj"]
        if isinstance(ref, CloudObject):
            ref = f"{ref.backend}://{ref.bucket}/{ref.key}"
        if not isinstance(ref, str):
            raise TypeError(f"obj must name a bucket, prefix, key or path, not {ref!r}")
        for make_obj, size in _objects(storage, ref):
            if size < 0:  # no byte ranges: the whole object in one call
                parts = _split(make_obj, entry, -size - 1, None, None, newline)
            else:
                parts = _split(make_obj, entry, size, chunk_size, chunk_number, newline)
            partitions += parts
            parts_per_object.append(len(parts))
    if not partitions:
        raise Exception("No objects found")
    return partitions, parts_per_object


def _url_head(url):
    """(size, whether the server serves byte ranges) of a URL."""
    import urllib.request
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=60) as r:
        size = r.headers.get("content-length")
        ranges = (r.headers.get("accept-ranges") or "").lower() == "bytes"
    if size is None:
        raise ValueError(f"{url}: the server does not say its size (no content-length)")
    return int(size), ranges


def _objects(storage, ref):
    """[(a maker of the object's `obj`, its size)] of what ref names. (A URL
    whose server serves no byte ranges is one partition: size -1 below.)"""
    if ref.startswith(("http://", "https://")):
        size, ranges = _url_head(ref)
        return [((lambda: CloudObjectUrl(ref)), size if ranges else -size - 1)]
    if ref.startswith("/"):
        if os.path.isdir(ref):
            paths = sorted(os.path.join(ref, n) for n in os.listdir(ref))
            paths = [p for p in paths if os.path.isfile(p)]
        elif os.path.isfile(ref):
            paths = [ref]
        else:
            raise FileNotFoundError(ref)
        return [((lambda p=p: CloudObjectLocal(p)), os.path.getsize(p)) for p in paths]
    sb, bucket, prefix, name = split_object_url(ref)
    sb = sb or storage.backend
    check_backend(sb)
    if sb != storage.backend:
        raise NotImplementedError(f"lithops on Bettong: objects of storage backend {sb!r} while "
                                  f"the executor's storage is {storage.backend!r}")
    if name:
        key = f"{prefix}/{name}" if prefix else name
        size = int(storage.head_object(bucket, key)["content-length"])
        return [((lambda k=key: CloudObject(sb, bucket, k)), size)]
    objs = storage.list_objects(bucket, prefix + "/" if prefix else None)
    return [((lambda k=o["Key"]: CloudObject(sb, bucket, k)), o["Size"]) for o in objs
            if not o["Key"].endswith("/")]


# ------------------------------------------------------------------ on the worker

def load(obj, storage):
    """Give obj its data_stream: the bytes of its partition."""
    if hasattr(obj, "url"):
        import urllib.request

        def get(a, b):
            req = urllib.request.Request(obj.url, headers={"Range": f"bytes={a}-{b}"})
            with urllib.request.urlopen(req, timeout=300) as r:
                data = r.read()
                return data if r.status == 206 else data[a:b + 1]
        if getattr(obj, "data_byte_range", None) is None:
            with urllib.request.urlopen(obj.url, timeout=300) as r:
                obj.data_stream = io.BytesIO(r.read())
            return obj
        size = _url_head(obj.url)[0]
    elif hasattr(obj, "path"):
        size = os.path.getsize(obj.path)

        def get(a, b):
            with open(obj.path, "rb") as f:
                f.seek(a)
                return f.read(b - a + 1)
    else:
        size = int(storage.head_object(obj.bucket, obj.key)["content-length"])

        def get(a, b):
            return storage.get_object(obj.bucket, obj.key,
                                      extra_get_args={"Range": f"bytes={a}-{b}"})
    rng = getattr(obj, "data_byte_range", None)
    if rng is None:
        data = get(0, size - 1) if size else b""
    else:
        data = partition_bytes(get, size, rng[0], rng[1] + 1, getattr(obj, "newline", "\n"))
    obj.data_stream = io.BytesIO(data)
    return obj


def _find(get, size, pos, nl):
    """The index of the first newline at or after pos, or None."""
    while pos < size:
        buf = get(pos, min(size, pos + _STEP + len(nl)) - 1)
        i = buf.find(nl)
        if i >= 0:
            return pos + i
        pos += max(1, len(buf) - len(nl) + 1)
    return None


def partition_bytes(get, size, s, e, newline):
    """The bytes of nominal range [s, e): with a newline, exactly the lines
    that start in it (a line starts at 0 or after a newline)."""
    if newline is None:
        return get(s, e - 1) if e > s else b""
    nl = newline.encode() if isinstance(newline, str) else bytes(newline)
    start = 0
    if s > 0:
        i = _find(get, size, s - 1, nl)
        if i is None:
            return b""
        start = i + len(nl)
    if e >= size:
        end = size
    else:
        i = _find(get, size, e - 1, nl)
        end = size if i is None else i + len(nl)
    return get(start, end - 1) if end > start else b""
