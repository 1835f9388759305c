/* The engine of one worker: one libuv loop on one thread runs the sources, the
 * steps (through exec, with the GIL taken once per batch) and the sinks.
 * Backpressure: when the bytes waiting in the sinks pass a high mark every source
 * stops reading, and reading resumes below a low mark, so memory stays bounded
 * whatever the input rate and however slow or absent the receiver is. */
#ifndef BETTONG_ENGINE_H
#define BETTONG_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "stream/app.h"
#include "stream/exec.h"
#include "util/buf.h"
#include "util/metrics.h"

/* What a cluster, a layer above the engine, asks of the engine it runs in. */
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
    /* With resilience (NULL without): the two halves of checkpoint n on this
     * worker (see stream/resil.h), its end as the coordinator decided, and
     * loading checkpoint k when the cluster (re)forms. The engine reports its
     * part through engine_cluster_ops_t.checkpoint_done. restore: k is the
     * checkpoint to load (0: none, start empty) and history the cluster's last
     * checkpoint number, after which this worker's output epochs count. */
    int (*checkpoint_sources)(void *ctx, uint64_t n);
    void (*checkpoint_state)(void *ctx);
    void (*checkpoint_end)(void *ctx, uint64_t n, int complete);
    int (*restore)(void *ctx, uint64_t k, uint64_t history, char *err, size_t errlen);
    /* Resumable streams' positions after a restore: this worker's, and those
     * the others had (a stream may reconnect to any worker). */
    void (*each_stream)(void *ctx, void (*each)(void *arg, const char *name, uint64_t pos),
                        void *arg);
    void (*stream_known)(void *ctx, const char *name, uint64_t pos);
    /* Slots' state moved in or out of this worker. */
    void (*state_moved)(void *ctx);
    /* The coordinator's answers about a resumable stream (see
     * engine_cluster_ops_t.claim_stream): granted to this worker, with the
     * position the worker that had it reached; or to be let go (returns the
     * position this worker reached). */
    void (*stream_granted)(void *ctx, uint32_t id, uint64_t pos);
    uint64_t (*stream_release)(void *ctx, const char *name);
    /* --metrics-listen: the worker's registry, for the cluster's own series
     * (rendered on the loop thread); NULL without. */
    metrics_t *metrics;
    /* Its endpoint's bound address ("H:P"), told to the other members so that
     * a dashboard or `bettong top` finds every worker from one; NULL without. */
    const char *metrics_addr;
} engine_cluster_hooks_t;

/* How the engine reaches the cluster without knowing it: the command that
 * starts the engine (cluster/runcl.c) fills engine_options_t.cluster with the
 * cluster's table (cluster/cluster.h: cluster_engine_ops) and its config, which
 * the engine only passes on. `handle` is what start made. */
typedef struct {
    /* On the engine's loop, without the GIL: listen, join, and route x's
     * messages. Returns 0, or -1 with a message in err; either way *handle
     * (NULL only when out of memory) is shut down and freed by the engine. */
    int (*start)(void **handle, uv_loop_t *loop, app_t *app, exec_t *x, const void *config,
                 const engine_cluster_hooks_t *hooks, char *err, size_t errlen);
    /* Hand what the links hold to the kernel (with the sinks, once per batch). */
    void (*flush)(void *handle);
    /* Called often during a long batch of user code, so that a busy worker is
     * not taken for a lost one; cheap when nothing is due. */
    void (*keepalive)(void *handle);
    /* Bytes waiting in the links: they pause the sources as the sinks' do. */
    size_t (*backlog)(const void *handle);
    /* Stop (1) or resume (0) reading forwarded messages (the sinks are full). */
    void (*hold_inbound)(void *handle, int hold);
    /* A signal: ask every worker to stop together. 0 if asked (the answer is
     * the finish hook), -1 if this worker must stop alone. */
    int (*request_stop)(void *handle, const char *why);
    /* Leave and close everything; the loop then ends. */
    void (*shutdown)(void *handle);
    /* The process's exit code as the cluster sees it (a lost peer: 3), or 0. */
    int (*exit_code)(const void *handle);
    /* After the loop ended. */
    void (*free)(void *handle);
    /* This worker's part of checkpoint n is durable (ok) or failed. */
    void (*checkpoint_done)(void *handle, uint64_t n, int ok);
    /* A resumable stream connected here: ask the coordinator for it (the
     * answer is the stream_granted hook, with this id). */
    void (*claim_stream)(void *handle, uint32_t id, const char *name);
    /* Append the members (this worker too) as a JSON array of {index, state,
     * name, metrics}, for /topology.json. 0, or -1 (memory). */
    int (*members_json)(const void *handle, buf_t *out);
} engine_cluster_ops_t;

typedef struct {
    on_error_t on_error;
    const char *dead_letter_path;
    double flush_timeout_s;      /* how long a stop waits for the sinks to drain */
    uint64_t backlog_high;       /* bytes waiting in sinks that pause the sources */
    uint64_t backlog_low;        /* ... and that resume them */
    const engine_cluster_ops_t *cluster; /* NULL: a worker on its own */
    const void *cluster_config;  /* the cluster's own, given to cluster->start */
    int shared_ports;            /* sources share their ports with sibling processes */
    unsigned source_idle_ms;     /* close a source connection silent this long (0: never) */
    const char *worker_name;     /* --name (NULL: "initializer") */
    /* --external H:P: Wallaroo's external channel (stream/external.h), NULL:
     * none; a peer beyond loopback must prove external_secret (the cluster's). */
    const char *external_addr;
    const char *external_secret;
    size_t external_secret_len;
    /* A member of a cluster that another worker initialized: sources that run
     * on the initializer only (Wallaroo 0.6's) do not run here. */
    int joined;
    /* --run-with-resilience: checkpoints in resilience_dir/<worker name>
     * (NULL: /tmp) every checkpoint_interval_ns. */
    int resilience;
    const char *resilience_dir;
    uint64_t checkpoint_interval_ns;
    /* --metrics-listen (or Wallaroo's --metrics) H:P: serve /metrics there
     * (stream/smetrics.h); NULL: no endpoint, and no latency sampling. */
    const char *metrics_addr;
    /* It came as Wallaroo's --metrics: Wallaroo's command lines give every
     * worker on a host the same one (Wallaroo sent metrics there), so when
     * it cannot be bound this worker serves on a port the kernel picks. */
    int metrics_wallaroo;
} engine_options_t;

/* The exit code of a worker that must start again from the last complete
 * checkpoint (a cluster with resilience lost a member): its command restarts
 * it (cluster/runcl.c, or the --workers parent). */
#define ENGINE_EXIT_RESTART 75

/* Run until SIGINT/SIGTERM (or --on-error=stop). Called without the GIL. Returns
 * the process exit code: 0 after a clean stop with everything flushed, 1 if
 * output was not delivered, 3 if a cluster peer was lost. In a cluster, a
 * signal asks the coordinator to stop every worker together. */
int engine_run(app_t *app, const engine_options_t *opt);

#endif
