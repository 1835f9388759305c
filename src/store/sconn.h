/* The store's connections: the handshake of net/auth.h, keyed with the shared
 * secret (net/authconn.h; nothing else is read, and no pickle looked at, before
 * the client's proof holds and WELCOME goes out), request frames parsed
 * into sreq_t and handed to sobj.c, and answers written back, or held until
 * the change they depend on is on disk.
 *
 * Bad input (garbage, a frame over the limit, a truncated or unknown message)
 * gets a log line naming the peer and ends that connection only: nothing more
 * it sends is read (it is drained and dropped), what is queued for it is
 * written, our side is shut down, and the socket closes when the peer closes or
 * after 5 s (a frame over the limit closes it at once). Requests it sent before
 * still run, and their answers are dropped. A request that parses
 * but names something invalid (an empty id, an alias too long) is answered
 * FAILED BAD_REQUEST.
 *
 * Memory: a connection stops being read while its requests in progress pass
 * CONN_MAX_REQS or CONN_MAX_BYTES, or its answers not yet written pass
 * CONN_MAX_BACKLOG; it is read again below half of those. */
#ifndef BETTONG_SCONN_H
#define BETTONG_SCONN_H

#include <stddef.h>
#include <stdint.h>

#include "net/authconn.h"
#include "net/inconn.h"
#include "store/store.h"
#include "util/buf.h"

#define CONN_MAX_REQS 10000
#define CONN_MAX_BYTES (256u * 1024 * 1024)
#define CONN_MAX_BACKLOG (64u * 1024 * 1024)

struct sconn {
    store_t *st;
    inconn_t *c;     /* NULL once the connection is gone */
    unsigned refs;   /* the connection itself, requests, held answers */
    int authed;
    int paused;
    authconn_t *auth; /* the handshake under way (NULL before and after it) */
    char name[64];   /* the client's name from its identity */
    uint64_t deadline_ms; /* handshake or linger deadline; 0: none */
    size_t reqs, bytes;   /* requests in progress and their bytes */
    sconn_t *prev, *next;
};

extern const inconn_handler_t sconn_handler;

/* Send an answer frame (whole frames in `frame`, which is emptied) once the
 * unit `seq` is on disk (0: now). Dropped if the connection is gone. */
void sconn_answer(sconn_t *cn, buf_t *frame, uint64_t seq);
/* Units up to `seq` are on disk and answered: release held answers. */
void sconn_release(store_t *st, uint64_t seq);
/* Answers with a seq below `seq` go first (before a unit's own answer). */
void sconn_release_below(store_t *st, uint64_t seq);
/* A request is finished: free it and its accounting. */
void sreq_free(sreq_t *r);
/* Close peers past their handshake or linger deadline (once a second). */
void sconn_sweep(store_t *st);
/* Drop held answers (at stop). */
void sconn_drop_held(store_t *st);

#endif
