#!/usr/bin/python3
"""Write the seed corpora of the fuzz harnesses: fuzz/corpus/<target>/.

A handful of small inputs per target, valid ones and edge cases, in the
input layout each harness documents at its top (fuzz/fuzz_<target>.c). The
fuzzer starts from them instead of discovering every message format from
nothing. Run again after changing a layout: `/usr/bin/python3 fuzz/make_seeds.py`
(the directory of each target is rewritten; regression inputs in fuzz/regress/
are not touched)."""

import os
import pickle
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(v): return struct.pack(">B", v)
def u16(v): return struct.pack(">H", v)
def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)
def str16(b): return u16(len(b)) + b


# ---- frame: [format][limit | hl << 3][chunk][mode] stream
FORMATS = [">I", "<I", "!H", "<H", "B", "b", ">q", "<Q", "@L", "=l", ">i", "h", "@Q", ">x", "", "II"]
HL = [4, 1, 2, 8, 4, 8, 3, 0]
CALLBACK = len(FORMATS)


def frame_pre(fmt, hl, limit, chunk=0, mode=0):
    which = CALLBACK if fmt is None else FORMATS.index(fmt)
    return bytes([which, limit | HL.index(hl) << 3, chunk, mode])


def frame_seeds():
    two = u32(3) + b"abc" + u32(0) + u32(5) + b"hello"
    yield "be32-two-frames", frame_pre(">I", 4, 4) + two
    yield "be32-chunked-1", frame_pre(">I", 4, 4, chunk=1) + two
    yield "be32-partial", frame_pre(">I", 4, 4, chunk=3) + u32(10) + b"abc"
    yield "be32-too-large", frame_pre(">I", 4, 2) + u32(100) + b"x" * 8
    yield "le16", frame_pre("<H", 2, 4, chunk=2) + struct.pack("<H", 2) + b"hi"
    yield "u8", frame_pre("B", 1, 3) + b"\x01a\x00\x02bc"
    yield "signed-negative", frame_pre(">i", 4, 4) + b"\xff\xff\xff\xff"
    yield "q-huge", frame_pre(">q", 8, 7) + struct.pack(">q", 2**62)
    yield "native-L", frame_pre("@L", 8, 4) + struct.pack("<Q", 1) + b"z"
    yield "format-mismatch", frame_pre(">I", 2, 4) + b"\x00\x01z"
    yield "callback", frame_pre(None, 4, 4, mode=1) + struct.pack("<I", 3) + b"abc" + b"\xff\0\0\0"
    yield "callback-wrap", frame_pre(None, 8, 7, mode=2) + b"\x10" + b"\0" * 7
    yield "callback-no-header", frame_pre(None, 0, 4, mode=2)
    # Wallaroo 0.6.1's connector frames: <I length counting an 8-byte event time.
    conn = struct.pack("<Iq", 10, 7) + b"ab" + struct.pack("<Iq", 8, -1)
    yield "connector", frame_pre("<I", 4, 4, chunk=5, mode=4) + conn
    yield "connector-short", frame_pre("<I", 4, 4, mode=4) + struct.pack("<I", 7) + b"\0" * 7


# ---- wire: [k][max_frame choice][pre] k ops, body.  op = kind + 7 * n
U8, U16, U32, U64, STR16, BYTES, REST = range(7)


def wire(ops, maxf, pre, body):
    return bytes([len(ops), maxf, pre]) + bytes(ops) + body


def wire_seeds():
    body = b"\x0b" + u16(0x1234) + u32(7) + u64(2**63) + str16(b"name") + b"xyz" + b"rest"
    ops = [U8, U16, U32, U64, STR16, BYTES + 7 * 3, REST]
    yield "all-fields", wire(ops, 4, 10, body)
    yield "too-small-frame", wire(ops, 2, 0, body)
    yield "truncated", wire([U64, U64, U8], 5, 3, u64(1) + b"\0\0")
    yield "str16-past-end", wire([STR16, U8], 4, 0, u16(9) + b"abc")
    yield "rest-twice", wire([REST, REST, U8], 6, 255, b"abc")
    yield "empty", wire([], 3, 1, b"")


# ---- msgcodec: the encoded message
def mc_str(s): return b"s" + u32(len(s.encode())) + s.encode()
def mc_bytes(b): return b"b" + u32(len(b)) + b
def mc_int(i): return b"i" + struct.pack(">q", i)
def mc_float(f): return b"f" + struct.pack(">d", f)
def mc_tuple(*items): return b"t" + u32(len(items)) + b"".join(items)


def msgcodec_seeds():
    yield "none", b"N"
    yield "bools", mc_tuple(b"T", b"F")
    yield "str", mc_str("word ü")
    yield "bytes", mc_bytes(b"\x00\xff")
    yield "int-min", mc_int(-2**63)
    yield "float-nan", mc_float(float("nan"))
    yield "tuple-mixed", mc_tuple(mc_str("k"), mc_int(3), mc_tuple(mc_float(1.5), b"N"))
    deep = b"N"
    for _ in range(9):
        deep = mc_tuple(deep)
    yield "tuple-deep-9", deep
    yield "tuple-count-lies", b"t" + u32(1000) + b"N"
    yield "str-bad-utf8", b"s" + u32(2) + b"\xed\xa0"
    yield "pickle", b"p" + pickle.dumps(("a", 1), protocol=5)
    yield "trailing", b"NN"
    yield "empty", b""


# ---- store_req: a request body (u8 type, u64 req, fields)
OID = b"0b0a6f3e-9a8c-4b55-9d0d-1c2b3a4f5e6d"
S = dict(CLASS=10, PERSIST=11, LOOKUP_ALIAS=12, LOOKUP_ID=13, CALL=14, GET_FIELD=15,
         SET_FIELD=16, GET_STATE=17, UPDATE=18, ADD_ALIAS=19, DELETE_ALIAS=20, ALIASES=21,
         DELETE=22, GET_CLASS=23)


def req(t, *fields): return u8(S[t]) + u64(7) + b"".join(fields)


def persist_entry(oid, cid, alias, state):
    return str16(oid) + u64(cid) + str16(alias) + u32(len(state)) + state


def store_seeds():
    yield "class", req("CLASS", u64(99), str16(b"mod:Cls"), b"pickle")
    yield "persist-two", req("PERSIST", u32(2), persist_entry(OID, 99, b"", b"{}"),
                             persist_entry(b"id2", 99, b"my alias", b"\x80\x05}"))
    yield "persist-count-lies", req("PERSIST", u32(3), persist_entry(OID, 1, b"", b""))
    yield "persist-bad-id", req("PERSIST", u32(1), persist_entry(b"\xc0\xaf", 1, b"", b""))
    yield "persist-huge-count", req("PERSIST", u32(0xffffffff), b"\0" * 32)
    yield "lookup-alias", req("LOOKUP_ALIAS", str16(b"alias"))
    yield "lookup-id", req("LOOKUP_ID", str16(OID))
    yield "call", req("CALL", str16(OID), str16(b"method"), b"args")
    yield "get-field", req("GET_FIELD", str16(OID), str16(b"x"))
    yield "set-field-empty-name", req("SET_FIELD", str16(OID), str16(b""), b"v")
    yield "add-alias", req("ADD_ALIAS", str16(OID), str16("é".encode()))
    yield "update", req("UPDATE", str16(OID), b"state")
    yield "delete-long-id", req("DELETE", str16(b"x" * 129))
    yield "get-class", req("GET_CLASS", u64(5))
    yield "unknown-type", u8(99) + u64(1)
    yield "truncated", u8(S["CALL"]) + u64(1) + u16(5) + b"ab"


# ---- pool_calls: a CALLS body after the type byte
def calls(count, entries, func=1, timeout=0, retries=0, near=b""):
    return u64(func) + u32(timeout) + u16(retries) + str16(near) + u32(count) + b"".join(
        u64(cid) + u32(len(a)) + a for cid, a in entries)


def pool_calls_seeds():
    yield "none", calls(0, [])
    yield "one", calls(1, [(1, b"args")], timeout=1000, retries=2)
    yield "three", calls(3, [(1, b""), (2, b"x"), (3, b"yz")])
    yield "near", calls(2, [(1, b"a"), (2, b"b")], near=b"b1")
    yield "near-past-end", u64(1) + u32(0) + u16(0) + u16(50) + b"b1"
    yield "count-lies", calls(2, [(1, b"a")])
    yield "arg-past-end", u64(1) + u32(0) + u16(0) + u16(0) + u32(1) + u64(1) + u32(100) + b"ab"
    yield "huge-count", calls(0xffffffff, [(1, b"")])
    yield "header-only", u64(1) + u32(0)


# ---- hello: [service][flags] then steps [sel][u16 len][body]; sel bit 5: a
# handshake step, body [mode][aux][material] (see fuzz_hello.c)
SECRET = b"s3cret"
POOL_VERSION, STORE_VERSION = 3, 2
HS_ID, HS_FLIP, HS_FUZZ_PROOF, HS_NO_PROOF = 1, 1 << 1, 2 << 1, 3 << 1
HS_OTHER_SERVICE, HS_OTHER_AUTH_VERSION, HS_WRONG_KEY, HS_ID_VERSION = 8, 0x10, 0x20, 0x40


def fr(sel, body): return u8(sel) + u16(len(body)) + body
def hs(sel, mode, material, aux=0): return fr(sel | 0x20, u8(mode) + u8(aux) + material)


def pool_id(role, name=b"fuzz-peer", pid=1234): return u8(role) + u32(pid) + name
def cl_id(channel, index, name): return u8(channel) + u16(index) + name


def auth_hello(service, identity, version=1, nonce=b"\x11" * 32):
    """An AUTH_HELLO body, as auth_client_hello writes it."""
    return u8(0xF0) + u8(version) + str16(service) + str16(identity) + nonce


def pool_identity(role, name=b"fuzz-peer", version=POOL_VERSION, pid=1234, near=b""):
    return u8(role) + u8(version) + u32(pid) + str16(name) + str16(near)


def store_identity(name=b"fuzz-client", version=STORE_VERSION):
    return u8(version) + str16(name)


def cluster_identity(channel, index, name):
    return u8(channel) + u16(index) + str16(name)


def hello_seeds():
    # cluster: flags bit 0 secret, bit 1 loopback
    yield "cluster-ok", b"\x00\x01" + hs(0, HS_ID, cl_id(1, 0xFFFF, b"w1")) + fr(0, b"\x02")
    yield "cluster-no-secret-loopback", b"\x00\x02" + hs(0, HS_ID, cl_id(2, 3, b"w3")) + \
        fr(0, u8(5) + str16(b"why"))
    yield "cluster-no-secret-remote", b"\x00\x00" + hs(0, HS_ID, cl_id(3, 0xFFFF, b"bettong cluster"))
    yield "cluster-bad-channel", b"\x00\x01" + hs(0, HS_ID, cl_id(9, 0, b"w"))
    yield "cluster-wrong-proof", b"\x00\x03" + hs(0, HS_ID | HS_FLIP, cl_id(2, 1, b"w1"), aux=77)
    yield "cluster-client-wrong-key", b"\x00\x01" + hs(1, HS_ID | HS_WRONG_KEY, cl_id(1, 2, b"w2"))
    yield "cluster-raw-identity", b"\x00\x03" + hs(2, 0, b"\x01\x00\x01\x00\x40" + b"n" * 64)
    yield "cluster-garbage-first", b"\x00\x01" + fr(0, b"\x01\x00\x06s3cret") + \
        hs(0, HS_ID, cl_id(1, 0xFFFF, b"w1"))
    # store
    yield "store-session", b"\x01\x01" + hs(0, HS_ID, b"fuzz-client") + \
        fr(0, req("LOOKUP_ID", str16(OID))) + fr(0, req("CALL", str16(b""), str16(b"m"))) + \
        fr(0x80, req("UPDATE", str16(OID), b"s")) + \
        fr(0, req("PERSIST", u32(1), persist_entry(OID, 1, b"a", b"")))
    yield "store-wrong-proof", b"\x01\x01" + hs(0, HS_ID | HS_FUZZ_PROOF, b"c" + b"\xAA" * 32) + \
        fr(0, req("GET_CLASS", u64(1)))
    yield "store-bad-version", b"\x01\x00" + hs(1, HS_ID | HS_ID_VERSION, u8(9) + b"c") + fr(1, b"\x01")
    yield "store-other-service", b"\x01\x01" + hs(0, HS_ID | HS_OTHER_SERVICE, b"c")
    yield "store-other-auth-version", b"\x01\x00" + hs(0, HS_ID | HS_OTHER_AUTH_VERSION, b"c")
    yield "store-not-hello", b"\x01\x00" + fr(0, req("GET_CLASS", u64(1)))
    yield "store-stopping", b"\x01\x04" + hs(0, HS_ID, b"c")
    yield "store-request-for-proof", b"\x01\x01" + hs(0, HS_ID | HS_NO_PROOF, b"c") + \
        fr(0, req("GET_CLASS", u64(1)))
    yield "store-raw-hello-and-proof", b"\x01\x00" + \
        fr(0, auth_hello(b"store", store_identity())) + fr(0, u8(0xF2) + b"\x00" * 32)
    # pool
    client = hs(0, HS_ID, pool_id(1)) + fr(0, u8(10) + u64(1) + b"fn") + \
        fr(0, u8(11) + calls(2, [(1, b"a"), (2, b"b")])) + fr(0, u8(21))
    worker = hs(1, HS_ID, pool_id(2, b"w", 99)) + \
        fr(0x41, u8(33) + u64(1) + u8(0) + u64(1) + u64(2) + b"r")
    yield "pool-client", b"\x02\x01" + client
    yield "pool-client-worker", b"\x02\x01" + client + worker + fr(0x40, u8(12) + u64(2)) + \
        fr(0, u8(14) + u64(1))
    yield "pool-large-calls", b"\x02\x00" + hs(0, HS_ID, pool_id(1)) + fr(0, u8(10) + u64(1)) + \
        fr(0x80, u8(11) + calls(1, [(5, b"x" * 40)]))
    yield "pool-bad-role", b"\x02\x00" + hs(0, HS_ID, pool_id(7))
    yield "pool-bad-version", b"\x02\x01" + hs(0, HS_ID | HS_ID_VERSION, u8(1) + u8(1) + u32(1) + b"p")
    yield "pool-raw-identity", b"\x02\x00" + hs(0, 0, b"\x01\x02\x00\x00")
    yield "pool-wrong-key", b"\x02\x01" + hs(0, HS_ID | HS_WRONG_KEY, pool_id(1)) + fr(0, u8(21))
    yield "pool-flipped-proof", b"\x02\x00" + hs(2, HS_ID | HS_FLIP, pool_id(2), aux=255)
    # A version 1 client (the HELLO that carried the secret) meets the handshake.
    yield "pool-old-hello", b"\x02\x01" + \
        fr(0, u8(1) + u8(1) + u8(1) + u32(1234) + str16(b"old") + str16(SECRET))
    yield "pool-duplicate-call", b"\x02\x00" + hs(0, HS_ID, pool_id(1)) + \
        fr(0, u8(11) + calls(2, [(1, b""), (1, b"")]))


# ---- auth: [op][flags: bit 0 secret, bits 1-2 service] then the op's bytes
# (see fuzz_auth.c)
A_HELLO, A_PROOF, A_CHALLENGE, A_FRAMES, A_HANDSHAKE, A_IDENTITY = range(6)
SVC = {b"pool": 0, b"store": 2, b"cluster": 4, b"x": 6}


def auth(op, service, secret, body): return u8(op) + u8(SVC[service] | secret) + body
def frame(body): return u32(len(body)) + body


def auth_seeds():
    yield "hello-pool", auth(A_HELLO, b"pool", 1, auth_hello(b"pool", pool_identity(1)))
    yield "hello-store", auth(A_HELLO, b"store", 0, auth_hello(b"store", store_identity()))
    yield "hello-cluster", auth(A_HELLO, b"cluster", 1, auth_hello(b"cluster", cluster_identity(2, 4, b"w4")))
    yield "hello-empty-identity", auth(A_HELLO, b"pool", 0, auth_hello(b"pool", b""))
    yield "hello-max-identity", auth(A_HELLO, b"store", 1, auth_hello(b"store", b"i" * 1024))
    yield "hello-identity-too-long", auth(A_HELLO, b"store", 1, auth_hello(b"store", b"i" * 1025))
    yield "hello-other-service", auth(A_HELLO, b"cluster", 0, auth_hello(b"pool", b"id"))
    yield "hello-version-2", auth(A_HELLO, b"pool", 0, auth_hello(b"pool", b"id", version=2))
    yield "hello-short-nonce", auth(A_HELLO, b"pool", 0, auth_hello(b"pool", b"id")[:-1])
    yield "hello-trailing", auth(A_HELLO, b"pool", 0, auth_hello(b"pool", b"id") + b"\0")
    yield "proof-format", auth(A_PROOF, b"pool", 1, u8(3) + b"\x22" * 32 + b"abc" + u8(0xF2) + b"\x33" * 32)
    yield "proof-short", auth(A_PROOF, b"cluster", 0, u8(0) + b"\0" * 32 + u8(0xF2) + b"\x33" * 31)
    yield "proof-wrong-type", auth(A_PROOF, b"store", 1, u8(0) + b"\0" * 32 + u8(0xF1) + b"\x33" * 32)
    yield "challenge-format", auth(A_CHALLENGE, b"pool", 1, u8(0xF1) + b"\x44" * 64)
    yield "challenge-refused", auth(A_CHALLENGE, b"store", 0, u8(3) + str16(b"no"))
    yield "challenge-long", auth(A_CHALLENGE, b"cluster", 0, u8(0xF1) + b"\x44" * 65)
    two = frame(b"\xF1" + b"c" * 64) + frame(b"\x02")
    yield "frames-two", auth(A_FRAMES, b"pool", 0, u8(0) + u8(255) + two)
    yield "frames-split", auth(A_FRAMES, b"pool", 0, u8(0) + u8(6) + two)
    yield "frames-too-large", auth(A_FRAMES, b"pool", 0, u8(2) + u8(0) + frame(b"x" * 17))
    yield "frames-empty-frame", auth(A_FRAMES, b"pool", 0, u8(6) + u8(4) + u32(0) + b"z")
    yield "frames-cut-short", auth(A_FRAMES, b"pool", 0, u8(6) + u8(3) + u32(100) + b"abc")
    chal = frame(b"\xF1" + b"\x55" * 64)
    yield "handshake-fake-challenge", auth(A_HANDSHAKE, b"pool", 1, u8(0) + chal + frame(b"\x02"))
    yield "handshake-strict-refused", auth(A_HANDSHAKE, b"store", 0, u8(1) + frame(u8(3) + str16(b"stopping")))
    yield "handshake-strict-welcome", auth(A_HANDSHAKE, b"cluster", 0, u8(1) + frame(b"\x04"))
    yield "handshake-welcome", auth(A_HANDSHAKE, b"pool", 0, u8(0) + frame(u8(2) + u32(1) + u32(0)))
    yield "handshake-huge-frame", auth(A_HANDSHAKE, b"pool", 0, u8(1) + u32(1 << 20) + b"x")
    yield "handshake-nothing", auth(A_HANDSHAKE, b"cluster", 1, u8(0))
    yield "identity-pool", auth(A_IDENTITY, b"pool", 0, pool_identity(1))
    yield "identity-pool-trailing", auth(A_IDENTITY, b"pool", 0, pool_identity(2) + b"more")
    yield "identity-pool-near", auth(A_IDENTITY, b"pool", 0, pool_identity(2, near=b"b1"))
    yield "identity-store", auth(A_IDENTITY, b"pool", 0, store_identity())
    yield "identity-cluster", auth(A_IDENTITY, b"pool", 0, cluster_identity(1, 0xFFFF, b"w"))
    yield "identity-cluster-nul", auth(A_IDENTITY, b"pool", 0, cluster_identity(3, 0, b"a\0b"))
    yield "identity-cut", auth(A_IDENTITY, b"pool", 0, u8(1) + u8(2) + u32(1) + u16(9) + b"ab")


# ---- http: [path buffer size] then a request head
def http_seeds():
    yield "get-metrics", b"\x40GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    yield "query", b"\x40GET /metrics?a=b HTTP/1.0\r\n\r\n"
    yield "post", b"\x40POST /metrics HTTP/1.1\r\n\r\n"
    yield "http2", b"\x40GET / HTTP/2.0\r\n\r\n"
    yield "long-path", b"\x04GET /metrics HTTP/1.1\r\n\r\n"
    yield "label", b"\x10a\\b\"c\nd"
    yield "bare-lf", b"\x40GET / HTTP/1.1\n\n"


# ---- promparse: a /metrics body as a server sends it (or a whole HTTP answer)
def promparse_seeds():
    yield "stream", (b"# HELP bettong_worker_info This worker's name and application.\n"
                     b"# TYPE bettong_worker_info gauge\n"
                     b"bettong_worker_info{worker=\"worker1\",application=\"wc\"} 1\n"
                     b"# TYPE bettong_step_messages_in_total counter\n"
                     b"bettong_step_messages_in_total{pipeline=\"Split and Count\",step=\"0\","
                     b"name=\"computation 'split'\"} 150\n"
                     b"# TYPE bettong_step_latency_seconds histogram\n"
                     b"bettong_step_latency_seconds_bucket{step=\"0\",le=\"1.28e-07\"} 1\n"
                     b"bettong_step_latency_seconds_bucket{step=\"0\",le=\"2.56e-07\"} 3\n"
                     b"bettong_step_latency_seconds_bucket{step=\"0\",le=\"+Inf\"} 3\n"
                     b"bettong_step_latency_seconds_sum{step=\"0\"} 5.1e-07\n"
                     b"bettong_step_latency_seconds_count{step=\"0\"} 3\n")
    yield "escapes", b'x{a="q\\"u\\\\o\\nte",b="",} -1.5e3 1712345678000\r\n'
    yield "specials", b"a +Inf\nb -Inf\nc NaN\n# TYPE d summary\nd{quantile=\"0.5\"} 1\nd_sum 2\nd_count 3\n"
    yield "comments", b"# just a comment\n\n  \t\n# HELP x \\ help\n# TYPE x untyped\nx 0\n"
    yield "bad-label", b'x{a="1} 2\n'
    yield "bad-type", b"# TYPE x countr\nx 1\n"
    yield "html", b"<html><body>404</body></html>\n"
    yield "trailing", b"x 1 2 3\n"
    yield "http-ok", (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                      b"Connection: close\r\n\r\n# TYPE x counter\nx 1\n")
    yield "http-404", b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n"
    yield "http-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nx 1\n\r\n"


TARGETS = {
    "frame": frame_seeds,
    "wire": wire_seeds,
    "msgcodec": msgcodec_seeds,
    "store_req": store_seeds,
    "pool_calls": pool_calls_seeds,
    "hello": hello_seeds,
    "auth": auth_seeds,
    "http": http_seeds,
    "promparse": promparse_seeds,
}


def main():
    for target, gen in TARGETS.items():
        d = os.path.join(HERE, "corpus", target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        n = 0
        for name, data in gen():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            n += 1
        print(f"{target}: {n} seeds in {os.path.relpath(d)}")


if __name__ == "__main__":
    main()
