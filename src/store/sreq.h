/* The object store's request parser, kept apart from the connection code
 * (sconn.c) and the PERSIST batch builder (sobj.c) so that it has no side
 * effects: it reads a frame body and says what it holds or why it is refused,
 * and nothing else. That is what lets the fuzz harnesses (fuzz/) run it on
 * arbitrary bytes without a store, a loop or Python. */
#ifndef BETTONG_SREQ_H
#define BETTONG_SREQ_H

#include <stddef.h>
#include <stdint.h>

#include "net/wire.h"
#include "store/store.h"

/* Parse a request frame's body (type, request id, the type's fields) into q,
 * whose pointers then point into body. Returns 0 (parsed), 1 (well-formed but
 * invalid: answer BAD_REQUEST with *why), -1 (malformed: close, *why says
 * why). q->type and q->id are set whenever the body holds them. */
int sreq_parse(sreq_t *q, const uint8_t *body, size_t len, const char **why);

/* One PERSIST entry; pointers into the request's payload. */
typedef struct {
    const char *id;
    size_t idlen;
    uint64_t class_id;
    const char *alias;
    size_t alen;
    const uint8_t *state;
    size_t slen;
} sreq_pentry_t;

/* Read the next PERSIST entry. Returns 0, or -1 if the payload ends early. */
int sreq_persist_next(wire_rd_t *r, sreq_pentry_t *e);

/* Check every entry of a parsed PERSIST (its count and payload); *naliases is
 * the number of entries with an alias. NULL, or why the batch is refused. A
 * batch that passes can be walked with sreq_persist_next count times without
 * an error. */
const char *sreq_persist_check(const sreq_t *r, size_t *naliases);

#endif
