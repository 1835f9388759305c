/* bettong receive --exactly-once: the receiver side of the exactly-once sink
 * protocol of docs/resilience.md. Engine connections send epochs of output;
 * an epoch is made durable in a per-writer spool file when it ends ('E' ->
 * 'P') and appended to the output file only when its checkpoint commits
 * ('C'). FILE.eostate records, after each commit, FILE's length and every
 * writer's committed epoch, so a restarted receiver cuts what a crash left
 * half-committed and answers the engine's 'W' with what it really holds. The
 * receiver's poll loop (receive.c) owns the sockets; this module owns the
 * protocol and the files. */
#ifndef BETTONG_TOOLS_EOSINK_H
#define BETTONG_TOOLS_EOSINK_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

typedef struct eosink eosink_t;
typedef struct eoconn eoconn_t;

/* Open `path` for exactly-once output: load `path`.eostate, cut the file to
 * the length it records, reload the spools. Records are lines, or 4-byte
 * big-endian frames of at most max_record bytes when `framed`. NULL with a
 * message in err on failure. */
eosink_t *eosink_open(const char *path, int framed, uint64_t max_record, char *err,
                      size_t errlen);
void eosink_close(eosink_t *s);

/* A new engine connection on fd (non-blocking): sends the greeting. NULL
 * (logged) when that failed; the caller closes fd. */
eoconn_t *eosink_accept(eosink_t *s, int fd, const char *peer);
/* Handle every whole frame at the head of `in` (consumed). What commits adds
 * its records and bytes to *records and *bytes. Returns 0 to keep the
 * connection, -1 to close it (the reason logged). */
int eosink_input(eosink_t *s, eoconn_t *c, buf_t *in, uint64_t *records, uint64_t *bytes);
/* The connection is gone: forget its epochs that did not end; frees c. */
void eosink_conn_closed(eosink_t *s, eoconn_t *c);
/* Writing the output, the state or a spool failed (logged): the receiver
 * cannot promise anything any more and must stop. */
int eosink_failed(const eosink_t *s);

#endif
