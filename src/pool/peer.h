/* The pool's connections: every peer starts unauthenticated and may send only
 * the handshake of net/auth.h (frames of at most AUTH_MAX_FRAME bytes, done
 * within HELLO_TIMEOUT_MS), run by net/authconn.h; once its proof holds and its
 * identity is accepted (WELCOME) it is a client or a worker and its messages go to the
 * scheduler. The scheduler's decisions come back through peer_sched_ops and
 * are written as frames; everything written during one event is flushed once
 * at its end (peer_after_event), which is also where backpressure is decided:
 *
 * - queued calls hold more than QUEUE_HIGH bytes: stop reading clients (their
 *   CALLS wait in their sockets) until below QUEUE_LOW;
 * - results not yet taken by clients pass RESULTS_HIGH bytes: stop reading
 *   workers (their DONE frames wait) until below RESULTS_LOW. Timeouts are not
 *   checked meanwhile: a DONE may be waiting unread.
 *
 * Call timeouts use p->timeouts (its data must be the pool), armed for the
 * earliest deadline after every event.
 *
 * Bad input from a peer (garbage, a frame over the limit, a message its role
 * may not send, truncated fields) gets a log line naming the peer and closes
 * that connection only. */
#ifndef BETTONG_PEER_H
#define BETTONG_PEER_H

#include <stdint.h>

#include "net/inconn.h"
#include "pool/pool.h"
#include "pool/sched.h"

extern const inconn_handler_t peer_handler;
extern const sched_ops_t peer_sched_ops;

/* After any event that may have written or changed the queue: flush, apply
 * backpressure, re-arm the timeout timer. */
void peer_after_event(pool_t *p);
/* Once a second: close peers that did not finish the handshake in time, or that do not
 * take their last bytes (REFUSED) in time. */
void peer_sweep(pool_t *p);

/* Close the connection of the worker process `pid` named `name` if it has no
 * task at all (a temporary worker let go, pool/lend.h). Returns 1 if it did. */
int peer_close_idle_worker(pool_t *p, uint32_t pid, const char *name);

#endif
