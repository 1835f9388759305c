/* The metrics of an object store (`bettong store --metrics-listen`): the
 * store's request counters (store_counters_t, a field of store_t), counted in
 * place by sconn.c on the loop thread, and the registration of every store
 * series into the store's registry (util/metrics.h), served by net/httpd.h on
 * that loop. What other threads produce reaches the loop safely:
 * - the committer's batches and commit times: handed to the loop thread with
 *   each batch, under the committer's own lock (commit.h committer_stats);
 * - the Python side's cache lookups and loaded objects: relaxed atomics
 *   (spy.h spy_cache_stats);
 * - objects and disk size: read from LMDB when rendering (sdb.h sdb_usage).
 *
 * A request's latency: from its frame being read (parsed) to its answer being
 * made and the request freed: answered at once, or after its commit for a
 * request that changes the store (an answer held behind an earlier change not
 * yet on disk waits a little longer, not counted). */
#ifndef BETTONG_STMETRICS_H
#define BETTONG_STMETRICS_H

#include <stdint.h>

#include "util/metrics.h"

/* Request types (sproto.h SMSG_*) are below this. */
#define STMETRICS_KINDS 32

typedef struct {
    uint64_t requests[STMETRICS_KINDS]; /* parsed, by type */
    uint64_t bad_requests;              /* well-formed but refused (BAD_REQUEST) */
    metrics_hist_t latency_ns[STMETRICS_KINDS];
} store_counters_t;

static inline void stmetrics_request(store_counters_t *k, uint8_t type)
{
    if (type < STMETRICS_KINDS)
        k->requests[type]++;
}

static inline void stmetrics_answered(store_counters_t *k, uint8_t type, uint64_t ns)
{
    if (type < STMETRICS_KINDS)
        metrics_hist_record(&k->latency_ns[type], ns);
}

struct store;
/* Register the store's series into m. Returns 0 or -1 (out of memory). */
int stmetrics_register(metrics_t *m, struct store *st);

#endif
