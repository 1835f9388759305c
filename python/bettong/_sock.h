/* Blocking-socket pieces shared by the client extensions bettong._bettong (task
 * pool) and bettong._store (object store): monotonic deadlines, address parsing,
 * connecting with a deadline. Plain C, no Python: errors are return codes and
 * errno; the callers raise the Python exceptions. Safe to call without the GIL. */
#ifndef BETTONG_PY_SOCK_H
#define BETTONG_PY_SOCK_H

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

#endif
