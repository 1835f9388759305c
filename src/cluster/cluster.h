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
#include "stream/engine.h"
#include "stream/exec.h"

typedef struct cluster cluster_t;

/* Listen on this worker's control and data addresses (and, on the initializer,
 * start the coordinator), then join. Routes x's messages once the first table
 * has come (exec_set_router). Without the
 * GIL. Returns 0, or -1 with a message in err; either way *out (NULL only when
 * out of memory) is to be shut down and freed by the caller. */
int cluster_start(cluster_t **out, uv_loop_t *loop, app_t *app, exec_t *x,
                  const cluster_config_t *cfg, const engine_cluster_hooks_t *hooks, char *err,
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
/* This worker's part of checkpoint n is durable (ok) or failed: tell the
 * coordinator. */
void cluster_checkpoint_done(cluster_t *c, uint64_t n, int ok);
/* A resumable stream connected to this worker: ask the coordinator for it. */
void cluster_claim_stream(cluster_t *c, uint32_t id, const char *name);
/* After the loop ended. */
void cluster_free(cluster_t *c);

/* The functions above as the engine's table (engine.h), with a
 * cluster_config_t as its config: what `bettong run` registers. */
extern const engine_cluster_ops_t cluster_engine_ops;

#endif
