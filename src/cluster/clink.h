/* The opener's side of the cluster handshake (cproto.h) on an outbound link:
 * a control link to the coordinator or to a worker, or a data link to a peer.
 * On every connection the link sends the HELLO with its identity, checks the
 * acceptor's proof of the cluster secret, sends its own proof and waits for the
 * WELCOME; only then does it write what the owner queued (outconn's held mode).
 * An acceptor that cannot prove the secret, or that refuses us (at the
 * handshake, or after the WELCOME: the coordinator refusing a JOIN), fails the
 * link: a line is logged, nothing else is sent, the connection is dropped and
 * the outconn reports it (its on_lost), with `failed` set so the owner can tell
 * an authentication failure or a refusal from a connection that merely broke. */
#ifndef BETTONG_CLINK_H
#define BETTONG_CLINK_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/cproto.h"
#include "net/auth.h"
#include "net/outconn.h"

typedef struct {
    outconn_t o;  /* first: the outconn callbacks find the link from it */
    const cl_secret_t *secret;
    uint8_t identity[5 + CL_NAME_MAX];
    size_t identity_len;
    auth_session_t s;
    buf_t in;     /* bytes read so far: the handshake, then a refusal */
    int state;
    int up;       /* the current connection was welcomed */
    int failed;   /* the handshake failed: why says how */
    int timed_out; /* ... because the acceptor did not finish it in time */
    uint64_t conn_seen;  /* the outconn's connection count when last looked at */
    uint64_t conn_ms;    /* loop time that connection was first seen */
    char why[300];
} cl_link_t;

/* Like outconn_init (owner and on_progress as there), with the identity this
 * link proves and the secret it proves it with (kept by reference). */
void cl_link_init(cl_link_t *l, uv_loop_t *loop, const struct sockaddr *addr, const char *name,
                  void (*on_progress)(outconn_t *o), void *owner, const cl_secret_t *secret,
                  int channel, unsigned index, const char *id_name);

/* The link of an outconn made by cl_link_init. */
static inline cl_link_t *cl_link_of(outconn_t *o) { return (cl_link_t *)o; }

/* The opener's handshake deadline: called now and then (the owner's tick).
 * A connection the acceptor took but whose handshake it has not finished
 * within limit_ms of being seen connected (it accepts TCP and says nothing:
 * not a cluster member, or hung) fails the link like a refusal, with
 * timed_out set. Returns 1 if it did so now. */
int cl_link_check_deadline(cl_link_t *l, unsigned limit_ms);

/* After the outconn closed. */
void cl_link_free(cl_link_t *l);

#endif
