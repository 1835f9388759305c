/* One worker's part in a cluster: its links to the other workers and to the
 * coordinator, on the engine's loop and thread.
 *
 * Data path: when exec meets a stateful step whose slot another worker owns, it
 * calls the forward hook set here; the message is serialized once (the
 * application's serialize, pickle by default) and appended to the data link to
 * that worker, which the engine flushes with its sinks once per batch. Links are
 * FIFO, so messages of one key from one source connection keep their order.
 *
 * Control path: the coordinator (coord.c, in the initializer's process) tells
 * each worker the members, the routing table, and when to pause, count, move
 * slots, resume, stop or leave; see coord.h for how a change runs. */
#ifndef BETTONG_CLUSTER_H
#define BETTONG_CLUSTER_H

#include <stddef.h>
#include <uv.h>

#include "cluster/config.h"
#include "stream/app.h"
#include "stream/exec.h"

/* What the cluster asks of the engine it runs in. */
typedef struct {
    void *ctx;
    /* Stop (1) or run (0) the sources: until the cluster forms, and while the
     * slots move. Sources start held. */
    void (*hold_sources)(void *ctx, int hold);
    /* Around a read batch of forwarded messages: take the GIL / release it,
     * flush the sinks and links, apply backpressure. */
    void (*batch_begin)(void *ctx);
    void (*batch_end)(void *ctx);
    /* Stop this worker: close the sources, flush the sinks, exit with code. */
    void (*finish)(void *ctx, int code, const char *why);
    /* Bytes left a data link: sources paused on its backlog may resume. */
    void (*progress)(void *ctx);
    /* After each forwarded message run (in a batch): flush and keep alive as
     * a source batch does. */
    void (*ran)(void *ctx);
} cluster_hooks_t;

typedef struct cluster cluster_t;

/* Listen on this worker's control and data addresses (and, on the initializer,
 * start the coordinator), then join. Installs the forward hook in x. Without the
 * GIL. Returns 0, or -1 with a message in err; either way *out (NULL only when
 * out of memory) is to be shut down and freed by the caller. */
int cluster_start(cluster_t **out, uv_loop_t *loop, app_t *app, exec_t *x,
                  const cluster_config_t *cfg, const cluster_hooks_t *hooks, char *err,
                  size_t errlen);
/* Hand what the links hold to the kernel. */
void cluster_flush(cluster_t *c);
/* Called often during a long batch of user code: sends the heartbeats that are
 * due (this worker's and, on the initializer, the coordinator's), so that a
 * busy worker is not taken for a lost one. Cheap when nothing is due. */
void cluster_keepalive(cluster_t *c);
/* Bytes waiting in the data links. */
size_t cluster_backlog(const cluster_t *c);
/* Stop (1) or resume (0) reading forwarded messages (backpressure from the sinks). */
void cluster_hold_inbound(cluster_t *c, int hold);
/* Ask the coordinator to stop the whole cluster. Returns 0 if asked (the
 * answer is a finish hook), -1 if there is no coordinator to ask. */
int cluster_request_stop(cluster_t *c, const char *why);
/* Say goodbye to every peer, flush, close every handle (and the coordinator's),
 * then call done(ctx). */
void cluster_shutdown(cluster_t *c, void (*done)(void *ctx), void *ctx);
/* 3 if a worker (or the coordinator) was lost while this one ran, else 0. */
int cluster_exit_code(const cluster_t *c);
/* After the loop ended. */
void cluster_free(cluster_t *c);

#endif
