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
def calls(count, entries, func=1, timeout=0, retries=0):
    return u64(func) + u32(timeout) + u16(retries) + u32(count) + b"".join(
        u64(cid) + u32(len(a)) + a for cid, a in entries)


def pool_calls_seeds():
    yield "none", calls(0, [])
    yield "one", calls(1, [(1, b"args")], timeout=1000, retries=2)
    yield "three", calls(3, [(1, b""), (2, b"x"), (3, b"yz")])
    yield "count-lies", calls(2, [(1, b"a")])
    yield "arg-past-end", u64(1) + u32(0) + u16(0) + u32(1) + u64(1) + u32(100) + b"ab"
    yield "huge-count", calls(0xffffffff, [(1, b"")])
    yield "header-only", u64(1) + u32(0)


# ---- hello: [service][flags] then (cluster) the HELLO body or (store, pool)
# frames [sel][u16 len][body]
SECRET = b"s3cret"


def fr(sel, body): return u8(sel) + u16(len(body)) + body


def pool_hello(role, secret=SECRET, version=1):
    return u8(1) + u8(role) + u8(version) + u32(1234) + str16(b"fuzz-peer") + str16(secret)


def store_hello(secret=SECRET, version=1):
    return u8(1) + u8(version) + str16(secret) + str16(b"fuzz-client")


def hello_seeds():
    cl = lambda ch, secret=SECRET: u8(1) + str16(secret) + u8(ch) + u16(3) + str16(b"w3")
    yield "cluster-ok", b"\x00\x01" + cl(1)
    yield "cluster-no-secret-loopback", b"\x00\x02" + cl(2, b"")
    yield "cluster-bad-channel", b"\x00\x01" + cl(9)
    yield "cluster-wrong-secret", b"\x00\x01" + cl(3, b"nope")
    yield "store-session", b"\x01\x01" + fr(0, store_hello()) + fr(0, req("LOOKUP_ID", str16(OID))) + \
        fr(0, req("CALL", str16(b""), str16(b"m"))) + fr(0x80, req("UPDATE", str16(OID), b"s")) + \
        fr(0, req("PERSIST", u32(1), persist_entry(OID, 1, b"a", b"")))
    yield "store-wrong-secret", b"\x01\x01" + fr(0, store_hello(b"x"))
    yield "store-bad-version", b"\x01\x00" + fr(1, store_hello(b"", 9)) + fr(1, b"\x01")
    yield "store-not-hello", b"\x01\x00" + fr(0, req("GET_CLASS", u64(1)))
    yield "store-stopping", b"\x01\x04" + fr(0, store_hello(b""))
    client = fr(0, pool_hello(1)) + fr(0, u8(10) + u64(1) + b"fn") + \
        fr(0, u8(11) + calls(2, [(1, b"a"), (2, b"b")])) + fr(0, u8(21))
    worker = fr(1, pool_hello(2)) + fr(0x41, u8(33) + u64(1) + u8(0) + u64(1) + u64(2) + b"r")
    yield "pool-client", b"\x02\x01" + client
    yield "pool-client-worker", b"\x02\x01" + client + worker + fr(0x40, u8(12) + u64(2)) + \
        fr(0, u8(14) + u64(1))
    yield "pool-large-calls", b"\x02\x00" + fr(0, pool_hello(1, b"")) + fr(0, u8(10) + u64(1)) + \
        fr(0x80, u8(11) + calls(1, [(5, b"x" * 40)]))
    yield "pool-bad-role", b"\x02\x00" + fr(0, pool_hello(7, b""))
    yield "pool-duplicate-call", b"\x02\x00" + fr(0, pool_hello(1, b"")) + \
        fr(0, u8(11) + calls(2, [(1, b""), (1, b"")]))


TARGETS = {
    "frame": frame_seeds,
    "wire": wire_seeds,
    "msgcodec": msgcodec_seeds,
    "store_req": store_seeds,
    "pool_calls": pool_calls_seeds,
    "hello": hello_seeds,
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
