"""A huge argument and a huge result (argv[1] MB of bytes each) round trip; the
caller's peak RSS is measured from /proc/self/status. Prints one JSON line."""

import hashlib
import json
import sys
import time

import bettong


def kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def echo_with_hash(b):
    import hashlib
    return hashlib.sha256(b).hexdigest(), b


def make_big(n):
    import hashlib
    block = hashlib.sha256(b"result").digest() * 32   # 1 KiB
    return block * (n // 1024)


size = int(sys.argv[1]) * 1024 * 1024
with bettong.FunctionExecutor(workers=1) as ex:
    ex.call_async(len, b"warm up").result(timeout=30)
    base_kb = kb("VmRSS")
    big = bytes(range(256)) * (size // 256)
    want = hashlib.sha256(big).hexdigest()
    t0 = time.monotonic()
    f = ex.call_async(echo_with_hash, big)
    del big
    remote_hash, back = f.result(timeout=60)
    t1 = time.monotonic()
    ok1 = remote_hash == want and len(back) == size and hashlib.sha256(back).hexdigest() == want
    del back, f
    g = ex.call_async(make_big, size)
    res = g.result(timeout=60)
    t2 = time.monotonic()
    ok2 = len(res) == size and res[:1024] == hashlib.sha256(b"result").digest() * 32
    del res, g
    hwm_kb = kb("VmHWM")
print(json.dumps({"base_kb": base_kb, "hwm_kb": hwm_kb, "echo_ok": ok1, "result_ok": ok2,
                  "echo_s": round(t1 - t0, 3), "result_s": round(t2 - t1, 3)}))
