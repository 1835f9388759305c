/* Mutual challenge-response authentication, the first three frames of every
 * connection to a Bettong service (task pool, object store, cluster ports),
 * shared by the services and every client (pool workers, the Python client
 * extensions, cluster workers and `bettong cluster`).
 *
 *   client -> server  AUTH_HELLO      u8 version, str16 service, str16 identity,
 *                                     32 bytes client nonce
 *   server -> client  AUTH_CHALLENGE  32 bytes server nonce, 32 bytes server proof
 *   client -> server  AUTH_PROOF      32 bytes client proof
 *   server -> client  the service's own WELCOME or REFUSED
 *
 * A proof is HMAC-SHA256 keyed with the shared secret over a transcript of the
 * service name, the identity the client claims (role, worker index, name... as
 * the service encodes it) and both nonces, with a different label for each
 * side. The secret never crosses the wire; a recorded handshake does not replay
 * (the server's nonce is fresh every time); a server that does not know the
 * secret cannot produce its proof, and the client stops before it sends or
 * reads anything else. With no secret configured on either side the key is
 * empty: the proofs then show only that both sides speak the protocol, which
 * is what a loopback-only service without a secret accepts.
 *
 * The frames use the framing of net/wire.h; their types are the same in every
 * protocol and above every service's own types. This module does no I/O: the
 * caller reads and writes frames (see net/bsock.h for a blocking client). The
 * primitives (HMAC, SHA-256, random bytes, constant-time compare) are OpenSSL's
 * libcrypto. */
#ifndef BETTONG_AUTH_H
#define BETTONG_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define AUTH_VERSION 1
#define AUTH_NONCE_LEN 32
#define AUTH_MAC_LEN 32
#define AUTH_SERVICE_MAX 32
#define AUTH_ID_MAX 1024
#define AUTH_BINDING_MAX 32
/* Largest handshake frame (the length field's value): a HELLO with the longest
 * service and identity. A service reads nothing larger before authentication. */
#define AUTH_MAX_FRAME (1 + 1 + 2 + AUTH_SERVICE_MAX + 2 + AUTH_ID_MAX + AUTH_NONCE_LEN)

enum { AUTH_HELLO = 0xf0, AUTH_CHALLENGE = 0xf1, AUTH_PROOF = 0xf2 };

/* Results. */
enum {
    AUTH_OK = 0,
    AUTH_EFORMAT = -1,  /* not the expected frame, or malformed */
    AUTH_EVERSION = -2, /* another version of this handshake */
    AUTH_ESERVICE = -3, /* a HELLO for another service */
    AUTH_EPROOF = -4,   /* the peer's proof is wrong: it does not know our secret */
    AUTH_ESYSTEM = -5,  /* no random bytes, out of memory */
};

/* One handshake, on either side. Plain data: zero it to start. */
typedef struct {
    char service[AUTH_SERVICE_MAX + 1];
    uint8_t identity[AUTH_ID_MAX];
    size_t identity_len;
    uint8_t nonce_c[AUTH_NONCE_LEN];
    uint8_t nonce_s[AUTH_NONCE_LEN];
    /* A channel binding (net/tls.h, tls_binding): when binding_len > 0 the
     * proofs also cover it, so they only pass on the one TLS session both ends
     * took it from. 0 (no TLS): the transcript is exactly as without it. */
    uint8_t binding[AUTH_BINDING_MAX];
    size_t binding_len;
} auth_session_t;

/* Bind the handshake to a transport session: on the client after
 * auth_client_hello and before auth_client_answer, on the server after
 * auth_server_hello and before auth_server_challenge (the hello calls clear
 * the session). Returns AUTH_OK or AUTH_EFORMAT (longer than AUTH_BINDING_MAX). */
int auth_set_binding(auth_session_t *s, const void *binding, size_t len);

/* A short text for a result (for log lines and errors). */
const char *auth_strerror(int rc);

/* ---- client ---- */

/* Start a handshake: pick the client nonce and append a HELLO claiming
 * `identity` to `service` to out. Returns AUTH_OK, AUTH_EFORMAT (a service or
 * identity too long) or AUTH_ESYSTEM. */
int auth_client_hello(auth_session_t *s, buf_t *out, const char *service,
                      const void *identity, size_t identity_len);
/* The server's answer to the HELLO (body = the frame after its length). A
 * CHALLENGE whose proof holds appends our PROOF to out and returns AUTH_OK;
 * AUTH_EPROOF: the server cannot prove the secret (send nothing more, close);
 * AUTH_EFORMAT: not a CHALLENGE (the service's own REFUSED, say: the caller
 * reads it as such). */
int auth_client_answer(auth_session_t *s, const uint8_t *body, size_t len, const void *secret,
                       size_t secret_len, buf_t *out);

/* ---- server ---- */

/* Whether a frame body is the start of a handshake (its type is AUTH_HELLO). */
static inline int auth_is_hello(const uint8_t *body, size_t len)
{
    return len > 0 && body[0] == AUTH_HELLO;
}
/* Read a client's HELLO into s (its identity is then s->identity, for the
 * service to decode and judge). Returns AUTH_OK, AUTH_EFORMAT, AUTH_EVERSION or
 * AUTH_ESERVICE (a HELLO meant for another service). */
int auth_server_hello(auth_session_t *s, const uint8_t *body, size_t len, const char *service);
/* Pick the server nonce and append the CHALLENGE with our proof. Returns AUTH_OK
 * or AUTH_ESYSTEM. */
int auth_server_challenge(auth_session_t *s, const void *secret, size_t secret_len, buf_t *out);
/* Check the client's PROOF. Returns AUTH_OK, AUTH_EFORMAT or AUTH_EPROOF. */
int auth_server_proof(const auth_session_t *s, const uint8_t *body, size_t len,
                      const void *secret, size_t secret_len);

/* Forget a session's nonces and identity. */
void auth_session_clear(auth_session_t *s);
/* Do once what every handshake needs of OpenSSL (its configuration file, the
 * random generator, HMAC-SHA256), so that a service's first handshake does not
 * (the pool after it listens; the worker template before it forks: OpenSSL
 * reseeds its generator in a child after fork). Returns 0 or -1. */
int auth_warm(void);

#endif
