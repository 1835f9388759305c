/* A blocking client over TLS (net/tls.h) on a connected socket, for the
 * command-line clients (`bettong cluster --tls`): the TLS handshake, then
 * writes and frame reads like sock_write_all / sock_read_frame, with
 * deadlines. Not in the Python client extensions (they link libcrypto only). */
#ifndef BETTONG_TLSSOCK_H
#define BETTONG_TLSSOCK_H

#include <stddef.h>
#include <stdint.h>

#include "net/sock.h"
#include "net/tls.h"
#include "util/buf.h"

typedef struct {
    int fd;
    tls_conn_t *t;
    uint8_t binding[TLS_BINDING_LEN];
} tlssock_t;

/* Run the TLS handshake on fd (kept open; the caller closes it). Returns 0, or
 * -1 with why (the peer does not speak TLS, timed out, ...). */
int tlssock_start(tlssock_t *s, int fd, tls_ctx_t *ctx, double deadline, char *why,
                  size_t whylen);
int tlssock_write_all(tlssock_t *s, const void *p, size_t n, double deadline);
/* As sock_read_frame, over TLS (errno EPROTO for a broken TLS stream). */
int tlssock_read_frame(tlssock_t *s, buf_t *in, uint32_t max, double deadline,
                       const uint8_t **body, size_t *len);
/* The I/O of sock_handshake_io, bound to this session. */
void tlssock_io(tlssock_t *s, sock_io_t *io);
void tlssock_free(tlssock_t *s);

#endif
