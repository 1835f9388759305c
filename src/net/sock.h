/* Blocking sockets for Bettong's clients: the Python client extensions
 * bettong._bettong (task pool) and bettong._store (object store), pool workers and
 * `bettong cluster`. Monotonic deadlines, address parsing, connecting with a
 * deadline, reading whole frames, and the client side of the handshake
 * (net/auth.h). Plain C, no Python, no event loop: errors are return codes and
 * errno; the callers raise their own errors. Safe to call without the GIL. */
#ifndef BETTONG_SOCK_H
#define BETTONG_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "util/buf.h"

/* Seconds on the monotonic clock. */
double sock_now(void);

/* Milliseconds left until deadline, for poll() (deadline < 0: forever -> -1). */
int sock_ms_left(double deadline);

/* A big-endian 32-bit number (a frame's length prefix). */
static inline uint32_t sock_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* How much room to reserve in `in` before the next read: `chunk`, or more if the
 * frame whose length prefix is there needs more to be whole. */
size_t sock_read_need(const buf_t *in, size_t chunk);

/* "unix:/path" or "/path": fills *un and returns 1; a bad path (empty or too
 * long) returns -1; anything else (not a unix address) returns 0. */
int sock_parse_unix(const char *s, struct sockaddr_un *un);

/* sock_parse_hostport's errors. */
enum { SOCK_EFORMAT = -1, SOCK_ETOOLONG = -2 };

/* "[tcp:]host:port" ("[v6addr]:port"; an empty host is 127.0.0.1) into host and
 * port. Returns 0, SOCK_EFORMAT (no ":port") or SOCK_ETOOLONG (does not fit). */
int sock_parse_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen);

/* Connect with a deadline (< 0: none). Returns a blocking, close-on-exec fd
 * (TCP_NODELAY unless AF_UNIX), or -1 with errno (ETIMEDOUT at the deadline). */
int sock_connect_deadline(const struct sockaddr *sa, socklen_t len, double deadline);

/* Resolve host:port and connect to the first address that takes it, IPv4 first,
 * like the rest of Bettong. Returns the fd, or -1: *gai is the getaddrinfo()
 * error when resolving failed (else 0), errno the last connect's error. */
int sock_connect_host(const char *host, const char *port, double deadline, int *gai);

/* sock_connect_addr's failures (*what). */
enum {
    SOCK_CA_ADDRESS = 1, /* the text is not an address (why says how) */
    SOCK_CA_RESOLVE = 2, /* the host name did not resolve (why: getaddrinfo's text) */
    SOCK_CA_CONNECT = 3, /* no connection (errno; ETIMEDOUT at the deadline) */
};

/* Connect to an address as Bettong's clients write it: "[tcp:]host:port"
 * ("[v6addr]:port", ":port" for 127.0.0.1), and with unix_ok also "unix:/path"
 * or "/path". What sock_parse_unix, sock_parse_hostport, sock_connect_deadline
 * and sock_connect_host do, in one call for every client. Returns the fd, or -1
 * with *what, errno (SOCK_CA_CONNECT) and a short text in why that does not
 * repeat the address (the caller names it and the service). */
int sock_connect_addr(const char *addr, int unix_ok, double deadline, int *what, char *why,
                      size_t whylen);

/* Write all of p[n] before the deadline (< 0: none). Returns 0, or -1 with errno
 * (ETIMEDOUT at the deadline). */
int sock_write_all(int fd, const void *p, size_t n, double deadline);

/* Whether `in` starts with one whole frame: 1 with *body / *len its body (as
 * sock_read_frame), 0 when more bytes are needed, -1 with errno EMSGSIZE for a
 * frame longer than max or an empty one. */
int sock_frame_ready(const buf_t *in, uint32_t max, const uint8_t **body, size_t *len);

/* Read until `in` holds one whole frame (u32 length + body), before the
 * deadline. Returns 0 with *body / *len the frame's body (its type and fields,
 * inside `in`; the caller consumes 4 + *len bytes once done with it), or -1 with
 * errno: ETIMEDOUT at the deadline, ECONNRESET when the peer closed, EMSGSIZE for
 * a frame longer than max or an empty one, ENOMEM. */
int sock_read_frame(int fd, buf_t *in, uint32_t max, double deadline, const uint8_t **body,
                    size_t *len);
/* sock_read_frame from another byte stream (net/bconn.h): recv_fn reads as
 * recv(2) does (flags MSG_DONTWAIT), fd is what to poll when it has nothing. */
typedef ssize_t sock_recv_fn(void *ctx, void *p, size_t n, int flags);
int sock_read_frame_from(sock_recv_fn *recv_fn, void *ctx, int fd, buf_t *in, uint32_t max,
                         double deadline, const uint8_t **body, size_t *len);

/* sock_handshake's results besides 0. */
enum {
    SOCK_HS_EIO = -1,     /* errno: the connection failed or timed out */
    SOCK_HS_EPROOF = -2,  /* the server could not prove the secret: nothing was sent */
    SOCK_HS_EFORMAT = -3, /* the answer was not a handshake message */
    SOCK_HS_ESYSTEM = -4, /* no random bytes, out of memory, identity too long */
};

/* The client side of the handshake of net/auth.h on a connected socket: send
 * the HELLO claiming `identity` to `service`, check the server's proof against
 * `secret`, send ours, and read the service's answer. Returns 0 with *answer /
 * *answer_len the answer frame's body in `in` (the service's WELCOME or REFUSED;
 * a REFUSED may also come instead of the challenge), consumed as with
 * sock_read_frame; or a SOCK_HS_ error. No answer frame may exceed max. */
int sock_handshake(int fd, buf_t *in, const char *service, const void *identity,
                   size_t identity_len, const void *secret, size_t secret_len, uint32_t max,
                   double deadline, const uint8_t **answer, size_t *answer_len);

/* sock_handshake over another transport (net/bconn.h): its blocking write and
 * frame read (as sock_write_all, sock_read_frame), and the channel binding the
 * proofs cover (net/auth.h; NULL, 0: none). */
typedef struct {
    int (*write_all)(void *io, const void *p, size_t n, double deadline);
    int (*read_frame)(void *io, buf_t *in, uint32_t max, double deadline, const uint8_t **body,
                      size_t *len);
    void *io;
    const uint8_t *binding;
    size_t binding_len;
} sock_io_t;
int sock_handshake_io(const sock_io_t *io, buf_t *in, const char *service, const void *identity,
                      size_t identity_len, const void *secret, size_t secret_len, uint32_t max,
                      double deadline, const uint8_t **answer, size_t *answer_len);

/* sock_handshake for a service whose refusal is the message type refused_type:
 * an answer that comes instead of the server's challenge is believed only if it
 * is that REFUSED. Anything else there (a WELCOME, a task, a pickle) comes from
 * a server that proved nothing, and is SOCK_HS_EPROOF like a wrong proof: the
 * caller must not read it. sock_handshake returns such an answer as it is. A
 * frame over `max` is SOCK_HS_EFORMAT here (not this protocol), not SOCK_HS_EIO. */
int sock_handshake_strict(int fd, buf_t *in, const char *service, const void *identity,
                          size_t identity_len, const void *secret, size_t secret_len,
                          uint32_t max, double deadline, uint8_t refused_type,
                          const uint8_t **answer, size_t *answer_len);
/* sock_handshake_strict over io. */
int sock_handshake_strict_io(const sock_io_t *io, buf_t *in, const char *service,
                             const void *identity, size_t identity_len, const void *secret,
                             size_t secret_len, uint32_t max, double deadline,
                             uint8_t refused_type, const uint8_t **answer, size_t *answer_len);

#endif
