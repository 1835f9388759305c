"""The mutual challenge-response handshake of src/net/auth.h in pure Python (the
standard library's hmac, hashlib and os.urandom), for tests and benchmarks that
speak the pool's, the store's or the cluster's protocol by hand: a client that
lies, a server that cannot prove the secret, a replay. tests/py/conftest.py
re-exports it."""

import hashlib
import hmac
import os
import struct


def frame(body):
    """A frame: u32 big-endian length, then the body."""
    return struct.pack(">I", len(body)) + body


AUTH_VERSION = 1
AUTH_HELLO, AUTH_CHALLENGE, AUTH_PROOF = 0xF0, 0xF1, 0xF2
AUTH_NONCE_LEN = 32
_LABEL_SERVER = b"bettong-auth-1 server"
_LABEL_CLIENT = b"bettong-auth-1 client"
POOL_PROTO_VERSION = 3      # src/pool/proto.h PROTO_VERSION
STORE_PROTO_VERSION = 2     # src/store/sproto.h SPROTO_VERSION
ROLE_CLIENT, ROLE_WORKER = 1, 2


class AuthFailed(Exception):
    """The server's CHALLENGE did not prove the secret."""


def _b(x):
    return x.encode() if isinstance(x, str) else bytes(x)


def _str16(b):
    return struct.pack(">H", len(b)) + b


def pool_identity(role=ROLE_CLIENT, name="test", pid=None, version=POOL_PROTO_VERSION,
                  near=""):
    """The identity a pool peer proves: u8 role, u8 version, u32 pid, str16 name,
    str16 near (from version 3)."""
    pid = os.getpid() if pid is None else pid
    out = struct.pack(">BBI", role, version, pid) + _str16(_b(name))
    return out + _str16(_b(near)) if version >= 3 else out


def store_identity(name="test", version=STORE_PROTO_VERSION):
    """The identity a store client proves: u8 version, str16 name."""
    return struct.pack(">B", version) + _str16(_b(name))


def auth_proof(label, service, identity, nonce_c, nonce_s, secret):
    """HMAC-SHA256 over the transcript of net/auth.c, keyed with the secret
    (empty: none). The transcript is laid out as a wire frame of type 0 (u32
    length, u8 0) holding each variable field with its length first."""
    t = _str16(label) + _str16(_b(service)) + _str16(bytes(identity)) + nonce_c + nonce_s
    t = struct.pack(">IB", len(t) + 1, 0) + t
    return hmac.new(_b(secret or b""), t, hashlib.sha256).digest()


def auth_hello(service, identity, nonce_c=None, version=AUTH_VERSION):
    """(HELLO frame, the client nonce in it)."""
    nonce_c = os.urandom(AUTH_NONCE_LEN) if nonce_c is None else nonce_c
    body = (bytes([AUTH_HELLO, version]) + _str16(_b(service)) + _str16(bytes(identity))
            + nonce_c)
    return frame(body), nonce_c


def recv_exact(sock, n):
    """n bytes from sock, or None if it closed first."""
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except (ConnectionResetError, BrokenPipeError):
            return None
        if not chunk:
            return None
        data += chunk
    return data


def recv_frame(sock):
    """The body of the next frame (after its length), or None at end of stream."""
    head = recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    return recv_exact(sock, n) if n else b""


def auth_handshake(sock, service, identity, secret=b"", nonce=None, check_server=True):
    """Run the client side of the handshake on a connected socket: HELLO (with
    the client nonce `nonce`, random by default: tests of replays fix it), check
    the server's CHALLENGE (AuthFailed if its proof is wrong, and nothing more is
    sent, unless check_server is false), send our PROOF. Returns the body of the
    service's answer (WELCOME or REFUSED: type byte first), which may also come
    instead of the CHALLENGE; None if the server closed the connection."""
    hello, nonce_c = auth_hello(service, identity, nonce)
    sock.sendall(hello)
    body = recv_frame(sock)
    if body is None or not body or body[0] != AUTH_CHALLENGE:
        return body
    assert len(body) == 1 + AUTH_NONCE_LEN + 32, "malformed CHALLENGE"
    nonce_s, mac = body[1:1 + AUTH_NONCE_LEN], body[1 + AUTH_NONCE_LEN:]
    want = auth_proof(_LABEL_SERVER, service, identity, nonce_c, nonce_s, secret)
    if check_server and not hmac.compare_digest(want, mac):
        raise AuthFailed("the server's proof does not match the secret")
    proof = auth_proof(_LABEL_CLIENT, service, identity, nonce_c, nonce_s, secret)
    sock.sendall(frame(bytes([AUTH_PROOF]) + proof))
    return recv_frame(sock)


def auth_server_challenge(secret, service, hello_body, nonce_s=None):
    """The server's side, for fake servers: from a HELLO body, the CHALLENGE
    frame proving `secret`; returns (frame, identity, nonce_c, nonce_s)."""
    assert hello_body[0] == AUTH_HELLO and hello_body[1] == AUTH_VERSION, hello_body[:2]
    (slen,) = struct.unpack(">H", hello_body[2:4])
    assert hello_body[4:4 + slen] == _b(service)
    pos = 4 + slen
    (ilen,) = struct.unpack(">H", hello_body[pos:pos + 2])
    identity = hello_body[pos + 2:pos + 2 + ilen]
    nonce_c = hello_body[pos + 2 + ilen:]
    assert len(nonce_c) == AUTH_NONCE_LEN
    nonce_s = nonce_s or os.urandom(AUTH_NONCE_LEN)
    mac = auth_proof(_LABEL_SERVER, service, identity, nonce_c, nonce_s, secret)
    return frame(bytes([AUTH_CHALLENGE]) + nonce_s + mac), identity, nonce_c, nonce_s


def fake_challenge(nonce_s=None, proof=None):
    """A CHALLENGE frame from a server that does not know the secret."""
    nonce_s = os.urandom(AUTH_NONCE_LEN) if nonce_s is None else nonce_s
    return frame(bytes([AUTH_CHALLENGE]) + nonce_s + (proof or os.urandom(32)))
