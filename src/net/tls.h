/* TLS as a transport engine: OpenSSL (libssl) over memory BIOs, with no I/O of
 * its own. The caller reads ciphertext from its socket and feeds it in, gets
 * plaintext out; it hands plaintext in to send and writes the ciphertext that
 * comes out, in the order it comes out. The same engine serves libuv streams
 * (net/inconn, net/writer, net/outconn) and blocking sockets (net/bconn).
 *
 * TLS 1.3 only. A server context has a certificate and key (PEM files); a
 * client context verifies no certificate: the peer is authenticated by the
 * handshake of net/auth.h, whose proofs cover a channel binding taken from
 * this TLS session (tls_binding), so a man in the middle that terminates TLS
 * on both sides cannot relay a handshake that passes (docs/security.md). */
#ifndef BETTONG_TLS_H
#define BETTONG_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define TLS_BINDING_LEN 32

typedef struct tls_ctx tls_ctx_t;
typedef struct tls_conn tls_conn_t;

/* A server context from a PEM certificate (chain) file and its PEM key file.
 * NULL with err set (unreadable file, key does not match the certificate). */
tls_ctx_t *tls_ctx_server(const char *cert_file, const char *key_file, char *err,
                          size_t errlen);
/* A client context (no certificate verification, see above). */
tls_ctx_t *tls_ctx_client(char *err, size_t errlen);
void tls_ctx_free(tls_ctx_t *ctx);
/* Whether a context is a server's. */
int tls_ctx_is_server(const tls_ctx_t *ctx);

/* A connection of ctx (kept by reference). NULL when out of memory. A client
 * connection has its first handshake bytes ready at once (tls_take_out). */
tls_conn_t *tls_conn_new(tls_ctx_t *ctx);
void tls_conn_free(tls_conn_t *t);

/* Ciphertext received: advance the handshake, append any plaintext to `plain`.
 * Returns 0, or -1 (a failed handshake, a broken record, the peer's alert, a
 * close by the peer, out of memory) with tls_error(t) saying why. Either way
 * the caller writes what tls_take_out gives (an alert may be there). */
int tls_feed(tls_conn_t *t, const uint8_t *p, size_t n, buf_t *plain);
/* The handshake is complete: plaintext can be sent, the binding taken. */
int tls_ready(const tls_conn_t *t);
/* Encrypt p[0..n) (only once ready). Returns 0 or -1 (tls_error). */
int tls_encrypt(tls_conn_t *t, const void *p, size_t n);
/* Ciphertext waiting to be written, and taking all of it (appended to out;
 * returns -1 out of memory). */
size_t tls_out_pending(const tls_conn_t *t);
int tls_take_out(tls_conn_t *t, buf_t *out);
/* The session's channel binding: TLS_BINDING_LEN bytes of keying material
 * exported with the label "EXPORTER-bettong-auth" (RFC 8446 section 7.5),
 * the same on both ends of one TLS session and unrelated across sessions.
 * Returns 0, or -1 when not ready. */
int tls_binding(tls_conn_t *t, uint8_t out[TLS_BINDING_LEN]);
/* Why the last call failed. */
const char *tls_error(const tls_conn_t *t);

#endif
