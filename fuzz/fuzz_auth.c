/* Fuzz target: the challenge-response handshake (net/auth.c) and what reads
 * the first frames of a connection before anyone is authenticated: the
 * server's HELLO and PROOF parsers, the client's CHALLENGE check, the blocking
 * client's frame reader and handshake (net/sock.c) and the identity decoders
 * of the pool (proto_get_identity), the store (sproto_get_identity) and the
 * cluster (cl_get_identity).
 *
 * Input: [0] op, [1] flags (bit 0: the key is the secret "s3cret", else empty;
 * bits 1-2: the service, pool / store / cluster), then the op's bytes:
 *   0 HELLO: a HELLO body for auth_server_hello. One it accepts re-encodes
 *     (auth_client_hello with the same service and identity) to the same bytes
 *     but the nonce, and runs a whole handshake: the right PROOF passes; a proof
 *     with the other key, the server's own proof sent back, and the right proof
 *     for another server nonce do not; a client with the other key rejects the
 *     CHALLENGE and writes nothing.
 *   1 PROOF: [u8 identity length][32 bytes client nonce][identity][PROOF body]:
 *     a session with those fields, its CHALLENGE and the right PROOF as a
 *     client computes it; auth_server_proof takes the fuzzed body if and only
 *     if it is that PROOF.
 *   2 CHALLENGE: a CHALLENGE body from a server that does not know the key
 *     (it has no way to prove it): auth_client_answer never takes it and
 *     writes no PROOF.
 *   3 frames: [u8 limit][u8 split][stream]: sock_read_frame over a socketpair,
 *     the first `split` bytes there at once (a frame still cut short there
 *     times out), then the rest and the end of the stream; the frames it
 *     returns, and where it stops and why, against an independent cut.
 *   4 handshake: [u8 mode][server's bytes]: sock_handshake (mode bit 0:
 *     sock_handshake_strict) against a fuzzed server. It never returns a
 *     frame of a server that proved nothing unless it is the service's REFUSED
 *     (strict), and the client sent the HELLO and nothing else.
 *   5 identity: the bytes for the three identity decoders; what one accepts
 *     re-encodes to the same bytes (the pool and the store read no further
 *     than the name, the cluster must end there).
 * Invariants are checked with __builtin_trap(). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/cproto.h"
#include "net/auth.h"
#include "net/sock.h"
#include "pool/proto.h"
#include "store/sproto.h"
#include "util/log.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)
#define SECRET "s3cret"

/* cproto.c's refusal and welcome write to a connection; only its decoders run
 * here. */
void inconn_flush(inconn_t *c) {}
void inconn_close_after_flush(inconn_t *c, const char *why) {}
/* No TLS here: the handshake runs without a channel binding. */
size_t inconn_binding(inconn_t *c, uint8_t *b) { return 0; }

static const char *const SERVICES[4] = {POOL_SERVICE, STORE_SERVICE, CL_SERVICE, "x"};

typedef struct {
    const void *p;
    size_t n;
} fkey_t;

static fkey_t key_of(int secret)
{
    return secret ? (fkey_t){SECRET, strlen(SECRET)} : (fkey_t){"", 0};
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ------------------------------------------------------------ 0: HELLO */

static void op_hello(const char *service, fkey_t key, fkey_t other, const uint8_t *p, size_t n)
{
    auth_session_t s;
    int rc = auth_server_hello(&s, p, n, service);
    CHECK(rc == AUTH_OK || rc == AUTH_EFORMAT || rc == AUTH_EVERSION || rc == AUTH_ESERVICE);
    if (rc != AUTH_OK)
        return;
    CHECK(strcmp(s.service, service) == 0 && s.identity_len <= AUTH_ID_MAX);

    /* What it read is what the client wrote: the same bytes but the nonce. */
    auth_session_t cs;
    buf_t b;
    buf_init(&b);
    CHECK(auth_client_hello(&cs, &b, s.service, s.identity, s.identity_len) == AUTH_OK);
    CHECK(buf_unread(&b) == 4 + n && be32(buf_head(&b)) == n);
    CHECK(memcmp(buf_head(&b) + 4, p, n - AUTH_NONCE_LEN) == 0);
    CHECK(memcmp(buf_head(&b) + 4 + n - AUTH_NONCE_LEN, cs.nonce_c, AUTH_NONCE_LEN) == 0);
    CHECK(memcmp(p + n - AUTH_NONCE_LEN, s.nonce_c, AUTH_NONCE_LEN) == 0);
    buf_clear(&b);

    /* The whole handshake, the client being the one that sent p. */
    auth_session_t client = s, wrong = s;
    buf_t ch, pr;
    buf_init(&ch);
    buf_init(&pr);
    CHECK(auth_server_challenge(&s, key.p, key.n, &ch) == AUTH_OK);
    CHECK(buf_unread(&ch) == 4 + 1 + AUTH_NONCE_LEN + AUTH_MAC_LEN);
    const uint8_t *chb = buf_head(&ch) + 4;
    size_t chn = buf_unread(&ch) - 4;
    /* A client with the other key finds the server's proof wrong, says nothing. */
    CHECK(auth_client_answer(&wrong, chb, chn, other.p, other.n, &pr) == AUTH_EPROOF);
    CHECK(buf_unread(&pr) == 0);
    CHECK(auth_client_answer(&client, chb, chn, key.p, key.n, &pr) == AUTH_OK);
    CHECK(buf_unread(&pr) == 4 + 1 + AUTH_MAC_LEN);
    const uint8_t *prb = buf_head(&pr) + 4;
    CHECK(auth_server_proof(&s, prb, 1 + AUTH_MAC_LEN, key.p, key.n) == AUTH_OK);
    /* The same proof under the other key. */
    CHECK(auth_server_proof(&s, prb, 1 + AUTH_MAC_LEN, other.p, other.n) == AUTH_EPROOF);
    /* The server's own proof sent back as the client's: the labels differ. */
    uint8_t echo[1 + AUTH_MAC_LEN];
    echo[0] = AUTH_PROOF;
    memcpy(echo + 1, chb + 1 + AUTH_NONCE_LEN, AUTH_MAC_LEN);
    CHECK(auth_server_proof(&s, echo, sizeof echo, key.p, key.n) == AUTH_EPROOF);
    /* A recorded proof against a session with another server nonce. */
    auth_session_t replay = s;
    replay.nonce_s[p[n - 1] % AUTH_NONCE_LEN] ^= 1;
    CHECK(auth_server_proof(&replay, prb, 1 + AUTH_MAC_LEN, key.p, key.n) == AUTH_EPROOF);
    /* A proof made with the other key on the same client: its own handshake
     * with a server holding that key. */
    auth_session_t s2 = client, c2 = client;
    buf_clear(&ch);
    buf_clear(&pr);
    CHECK(auth_server_challenge(&s2, other.p, other.n, &ch) == AUTH_OK);
    CHECK(auth_client_answer(&c2, buf_head(&ch) + 4, buf_unread(&ch) - 4, other.p, other.n,
                             &pr) == AUTH_OK);
    CHECK(auth_server_proof(&s2, buf_head(&pr) + 4, 1 + AUTH_MAC_LEN, key.p, key.n) ==
          AUTH_EPROOF);
    CHECK(auth_server_proof(&s2, buf_head(&pr) + 4, 1 + AUTH_MAC_LEN, other.p, other.n) ==
          AUTH_OK);
    buf_free(&b);
    buf_free(&ch);
    buf_free(&pr);
}

/* ------------------------------------------------------------ 1: PROOF */

static void op_proof(const char *service, fkey_t key, fkey_t other, const uint8_t *p, size_t n)
{
    auth_session_t s;
    memset(&s, 0, sizeof s);
    strcpy(s.service, service);
    size_t idlen = n ? p[0] : 0;
    p += n ? 1 : 0;
    n -= n ? 1 : 0;
    size_t k = n < AUTH_NONCE_LEN ? n : AUTH_NONCE_LEN;
    memcpy(s.nonce_c, p, k);
    p += k;
    n -= k;
    if (idlen > n)
        idlen = n;
    memcpy(s.identity, p, idlen);
    s.identity_len = idlen;
    p += idlen;
    n -= idlen;

    buf_t ch, pr;
    buf_init(&ch);
    buf_init(&pr);
    auth_session_t client = s;
    CHECK(auth_server_challenge(&s, key.p, key.n, &ch) == AUTH_OK);
    CHECK(auth_client_answer(&client, buf_head(&ch) + 4, buf_unread(&ch) - 4, key.p, key.n,
                             &pr) == AUTH_OK);
    const uint8_t *right = buf_head(&pr) + 4;
    size_t right_n = buf_unread(&pr) - 4;
    CHECK(auth_server_proof(&s, right, right_n, key.p, key.n) == AUTH_OK);
    CHECK(auth_server_proof(&s, right, right_n, other.p, other.n) == AUTH_EPROOF);

    int rc = auth_server_proof(&s, p, n, key.p, key.n);
    int is_right = n == right_n && memcmp(p, right, n) == 0;
    CHECK((rc == AUTH_OK) == is_right);
    if (n == 1 + AUTH_MAC_LEN && p[0] == AUTH_PROOF)
        CHECK(rc == AUTH_OK || rc == AUTH_EPROOF);
    else
        CHECK(rc == AUTH_EFORMAT);
    buf_free(&ch);
    buf_free(&pr);
}

/* ------------------------------------------------------------ 2: CHALLENGE */

static void op_challenge(const char *service, fkey_t key, const uint8_t *p, size_t n)
{
    auth_session_t cs;
    buf_t b;
    buf_init(&b);
    CHECK(auth_client_hello(&cs, &b, service, p, n < 16 ? n : 16) == AUTH_OK);
    size_t before = buf_unread(&b);
    int rc = auth_client_answer(&cs, p, n, key.p, key.n, &b);
    /* The fuzzer cannot make an HMAC over a nonce it never saw. */
    CHECK(rc == AUTH_EFORMAT || rc == AUTH_EPROOF);
    CHECK(buf_unread(&b) == before);
    if (n == 1 + AUTH_NONCE_LEN + AUTH_MAC_LEN && p[0] == AUTH_CHALLENGE)
        CHECK(rc == AUTH_EPROOF);
    buf_free(&b);
}

/* ------------------------------------------------------------ 3: sock_read_frame */

static void pair(int sv[2])
{
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    /* Inputs are a few KiB at most: the socket buffer takes them at once. */
    CHECK(sock_write_all(fd, p, n, sock_now() + 5) == 0);
}

/* Read frames until sock_read_frame fails; check each against the stream
 * from *pos, and the failure against what the stream's bytes up to `have`
 * say (at_end: the writer is gone, else it may still send). */
static void read_frames(int fd, buf_t *in, uint32_t max, const uint8_t *p, size_t have,
                        size_t *pos, int at_end, int *stop)
{
    for (;;) {
        const uint8_t *body;
        size_t len;
        double deadline = at_end ? sock_now() + 5 : sock_now();
        int rc = sock_read_frame(fd, in, max, deadline, &body, &len);
        size_t left = have - *pos;
        int e = errno;
        if (left >= 4) {
            uint32_t fl = be32(p + *pos);
            if (fl == 0 || fl > max) {
                CHECK(rc < 0 && e == EMSGSIZE);
                *stop = 1;
                return;
            }
            if (left >= 4 + (size_t)fl) {
                CHECK(rc == 0 && len == fl && memcmp(body, p + *pos + 4, fl) == 0);
                buf_consume(in, 4 + len);
                *pos += 4 + (size_t)fl;
                continue;
            }
        }
        CHECK(rc < 0 && e == (at_end ? ECONNRESET : ETIMEDOUT));
        if (at_end)
            *stop = 1;
        return;
    }
}

static void op_frames(const uint8_t *p, size_t n)
{
    if (n < 2)
        return;
    static const uint32_t limits[8] = {AUTH_MAX_FRAME, 1, 16, 255, 4096, 65536, UINT32_MAX, 4};
    uint32_t max = limits[p[0] & 7];
    size_t split = p[1];
    p += 2;
    n -= 2;
    if (split > n)
        split = n;
    int sv[2];
    pair(sv);
    buf_t in;
    buf_init(&in);
    size_t pos = 0;
    int stop = 0;
    write_all(sv[1], p, split);
    read_frames(sv[0], &in, max, p, split, &pos, 0, &stop);
    if (!stop) {
        write_all(sv[1], p + split, n - split);
        shutdown(sv[1], SHUT_WR);
        read_frames(sv[0], &in, max, p, n, &pos, 1, &stop);
    }
    CHECK(stop);
    buf_free(&in);
    close(sv[0]);
    close(sv[1]);
}

/* ------------------------------------------------------------ 4: sock_handshake */

static void op_handshake(const char *service, fkey_t key, const uint8_t *p, size_t n)
{
    if (n < 1)
        return;
    unsigned mode = p[0];
    p++;
    n--;
    uint8_t refused = strcmp(service, CL_SERVICE) == 0 ? CL_REFUSED : MSG_REFUSED;
    int sv[2];
    pair(sv);
    write_all(sv[1], p, n);
    shutdown(sv[1], SHUT_WR);
    buf_t in;
    buf_init(&in);
    const uint8_t *ans = NULL;
    size_t alen = 0;
    uint32_t max = AUTH_MAX_FRAME;
    static const uint8_t id[] = "fuzz client";
    int rc;
    if (mode & 1)
        rc = sock_handshake_strict(sv[0], &in, service, id, sizeof id, key.p, key.n, max,
                                   sock_now() + 5, refused, &ans, &alen);
    else
        rc = sock_handshake(sv[0], &in, service, id, sizeof id, key.p, key.n, max,
                            sock_now() + 5, &ans, &alen);
    CHECK(rc == 0 || rc == SOCK_HS_EIO || rc == SOCK_HS_EPROOF || rc == SOCK_HS_EFORMAT);
    if (rc == 0) {
        /* Never after a proof: it is the server's first frame, as it sent it. */
        CHECK(alen > 0 && n >= 4 + alen && be32(p) == alen && memcmp(ans, p + 4, alen) == 0);
        CHECK(ans[0] != AUTH_CHALLENGE || alen != 1 + AUTH_NONCE_LEN + AUTH_MAC_LEN);
        if (mode & 1)
            CHECK(ans[0] == refused);
    }
    /* What the client sent: its HELLO, and nothing after it. */
    uint8_t got[AUTH_MAX_FRAME + 64];
    ssize_t k = recv(sv[1], got, sizeof got, MSG_DONTWAIT);
    CHECK(k >= 4 && (size_t)k == 4 + (size_t)be32(got));
    auth_session_t s;
    CHECK(auth_server_hello(&s, got + 4, (size_t)k - 4, service) == AUTH_OK);
    CHECK(s.identity_len == sizeof id && memcmp(s.identity, id, sizeof id) == 0);
    buf_free(&in);
    close(sv[0]);
    close(sv[1]);
}

/* ------------------------------------------------------------ 5: identities */

static void op_identity(const uint8_t *p, size_t n)
{
    buf_t b;
    buf_init(&b);
    proto_identity_t pi;
    if (proto_get_identity(p, n, &pi) == 0) {
        /* the near is read from an identity of this version only */
        size_t used = 1 + 1 + 4 + 2 + pi.name_len;
        CHECK(used <= n && pi.name == p + 8);
        CHECK(pi.version == PROTO_VERSION ? pi.near != NULL : pi.near == NULL && !pi.near_len);
        if (pi.near) {
            CHECK(pi.near == p + used + 2);
            used += 2 + pi.near_len;
            CHECK(used <= n);
        }
        /* a sub-call client's identity (this version) ends with its parent task */
        size_t parent_at = used;
        if (pi.near && pi.role == ROLE_SUBCALL) {
            CHECK(used + 8 <= n);
            uint64_t t = 0;
            for (size_t i = 0; i < 8; i++)
                t = t << 8 | p[used + i];
            CHECK(t == pi.parent_task);
        } else {
            CHECK(pi.parent_task == 0);
        }
        /* then (this version) a u8 of flags, when the identity goes on */
        size_t flags_at = parent_at + (pi.near && pi.role == ROLE_SUBCALL ? 8 : 0);
        CHECK(pi.flags == (pi.near && n > flags_at ? p[flags_at] : 0));
        if (pi.name_len <= PROTO_NAME_MAX && pi.near_len <= PROTO_PLACE_MAX) {
            CHECK(proto_put_identity(&b, pi.role, pi.pid, (const char *)pi.name, pi.name_len,
                                     (const char *)pi.near, pi.near_len) == 0);
            if (!pi.near)
                b.len -= 2; /* (another version's identity has no near to compare) */
            CHECK(buf_unread(&b) == parent_at);
            buf_head(&b)[1] = pi.version;
            CHECK(memcmp(buf_head(&b), p, parent_at) == 0);
        }
    } else {
        /* cut short in the name, or (this version) in the near, or (a
         * sub-call client's) in its parent task */
        size_t at = n < 8 ? 0 : 8 + (size_t)(p[6] << 8 | p[7]);
        size_t near_end = n < at + 2 ? 0 : at + 2 + (size_t)(p[at] << 8 | p[at + 1]);
        CHECK(n < 8 || n < at ||
              (p[1] == PROTO_VERSION &&
               (n < at + 2 || n < near_end || (p[0] == ROLE_SUBCALL && n < near_end + 8))));
    }
    buf_clear(&b);
    sproto_identity_t si;
    if (sproto_get_identity(p, n, &si) == 0) {
        size_t used = 1 + 2 + si.name_len;
        CHECK(used <= n && si.name == p + 3);
        if (si.name_len <= SPROTO_NAME_MAX) {
            CHECK(sproto_put_identity(&b, (const char *)si.name, si.name_len) == 0);
            CHECK(buf_unread(&b) == used);
            buf_head(&b)[0] = si.version;
            CHECK(memcmp(buf_head(&b), p, used) == 0);
        }
    } else {
        CHECK(n < 3 || n < 3 + (size_t)(p[1] << 8 | p[2]));
    }
    buf_clear(&b);
    cl_hello_t h;
    if (cl_get_identity(p, n, &h) == 0) {
        CHECK(h.channel >= CL_CH_CONTROL && h.channel <= CL_CH_ADMIN);
        CHECK(strlen(h.name) > 0 && strlen(h.name) < CL_NAME_MAX);
        cl_put_identity(&b, h.channel, h.index, h.name);
        CHECK(buf_unread(&b) == n && memcmp(buf_head(&b), p, n) == 0);
    }
    buf_free(&b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(getenv("FUZZ_LOG") ? LOG_DEBUG : LOG_ERROR + 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned flags = data[1];
    const char *service = SERVICES[(flags >> 1) & 3];
    fkey_t key = key_of(flags & 1), other = key_of(!(flags & 1));
    const uint8_t *p = data + 2;
    size_t n = size - 2;
    switch (data[0] % 6) {
    case 0: op_hello(service, key, other, p, n); break;
    case 1: op_proof(service, key, other, p, n); break;
    case 2: op_challenge(service, key, p, n); break;
    case 3: op_frames(p, n); break;
    case 4: op_handshake(service, key, p, n); break;
    default: op_identity(p, n); break;
    }
    return 0;
}
