/* A blocking client connection, plain or over TLS, for every client that is
 * not on an event loop: the Python extensions bettong._bettong (pool) and
 * bettong._store (store), pool workers (`bettong worker`) and `bettong
 * cluster`. Its calls look like the socket calls they replace (recv, sendmsg,
 * poll), so the callers keep one code path for both transports.
 *
 * An address "tls:host:port" connects over TLS 1.3 (net/tls.h): the client
 * verifies no certificate, and the handshake of net/auth.h that follows binds
 * its proofs to the TLS session (bconn_handshake), so a relay that ends TLS on
 * both sides cannot pass it (docs/security.md).
 *
 * Threads: one reader at a time (bconn_recv, bconn_read_frame) and one sender
 * at a time (bconn_send; its own lock makes concurrent senders wait) may run
 * at once; the TLS engine between them is locked inside. Over TLS, what a
 * send accepted may still wait as ciphertext: a sender is done when
 * bconn_unsent() is 0 (bconn_flush). */
#ifndef BETTONG_BCONN_H
#define BETTONG_BCONN_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "net/sock.h"
#include "net/tls.h"
#include "util/buf.h"

typedef struct {
    int fd;                  /* the socket (the caller closes it) */
    tls_conn_t *tls;         /* NULL: plain */
    pthread_mutex_t tls_mu;  /* tls */
    pthread_mutex_t send_mu; /* wout, and writing to fd */
    buf_t wout;              /* ciphertext taken from tls, not yet written (send_mu) */
    buf_t plain;             /* decrypted, not yet handed out (the reader's) */
    buf_t cin;               /* the reader's ciphertext buffer */
    buf_t stage;             /* plaintext gathered for one encryption (send_mu) */
    uint8_t binding[TLS_BINDING_LEN];
} bconn_t;

/* sock_connect_addr's *what, plus: */
enum { BCONN_CA_TLS = 4 }; /* the TLS handshake failed (why says how) */

/* "tls:" at the start of addr: returns the address after it, else NULL. */
const char *bconn_tls_address(const char *addr);

/* Connect to addr as sock_connect_addr does (unix_ok: also "unix:/path"), or
 * over TLS for "tls:host:port" (its TLS handshake done by the deadline).
 * Returns 0 with c ready, or -1 with *what, errno and why as
 * sock_connect_addr's (BCONN_CA_TLS: the TLS handshake failed); nothing to
 * free then. */
int bconn_open(bconn_t *c, const char *addr, int unix_ok, double deadline, int *what, char *why,
               size_t whylen);
/* Free what c holds besides its fd (closed by the caller, before or after). */
void bconn_free(bconn_t *c);
static inline int bconn_is_tls(const bconn_t *c) { return c->tls != NULL; }

/* recv(2) on the byte stream: up to n bytes into p. flags 0 or MSG_DONTWAIT.
 * Returns the count, 0 at the end of the stream, -1 with errno (EAGAIN; EPROTO
 * for a broken TLS stream). Over TLS a readable socket may still give EAGAIN
 * (part of a record), and bytes may be waiting with nothing to read on the
 * socket: check bconn_buffered() before polling the fd. */
ssize_t bconn_recv(bconn_t *c, void *p, size_t n, int flags);
/* Bytes already decrypted and waiting for bconn_recv (0 for a plain one). */
static inline size_t bconn_buffered(const bconn_t *c) { return buf_unread(&c->plain); }

/* sendmsg(2) on the byte stream: writes from iov[0..cnt). flags 0 (waits for
 * room) or MSG_DONTWAIT. Returns the bytes taken (plain: written; TLS:
 * encrypted, some maybe still in bconn_unsent), or -1 with errno (EAGAIN when
 * the socket is full and nothing was taken). */
ssize_t bconn_send(bconn_t *c, const struct iovec *iov, int cnt, int flags);
/* Ciphertext taken but not written yet (0 for a plain one). */
size_t bconn_unsent(bconn_t *c);
/* Write what bconn_unsent holds: 0 when nothing is left, -1 with errno (EAGAIN
 * with MSG_DONTWAIT when the socket is full). */
int bconn_flush(bconn_t *c, int flags);

/* Like sock_write_all / sock_read_frame, on c. */
int bconn_write_all(bconn_t *c, const void *p, size_t n, double deadline);
int bconn_read_frame(bconn_t *c, buf_t *in, uint32_t max, double deadline, const uint8_t **body,
                     size_t *len);

/* sock_handshake_strict on c, its proofs bound to the TLS session if any. */
int bconn_handshake(bconn_t *c, buf_t *in, const char *service, const void *identity,
                    size_t identity_len, const void *secret, size_t secret_len, uint32_t max,
                    double deadline, uint8_t refused_type, const uint8_t **answer,
                    size_t *answer_len);
/* The sock_io_t of c (for sock_handshake_io). */
void bconn_io(bconn_t *c, sock_io_t *io);

#endif
