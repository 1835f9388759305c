#include "store/stmetrics.h"

#include "store/commit.h"
#include "store/sdb.h"
#include "store/sproto.h"
#include "store/spy.h"
#include "store/store.h"

#define NS 1e-9
/* Latency and commit time buckets: 2^7 ns (128 ns) to 2^35 ns (34 s). */
#define LAT_LO 7
#define LAT_HI 35
/* Batch sizes: 1 to 2^20 units. */
#define BATCH_LO 0
#define BATCH_HI 20

static const char *const kind_names[STMETRICS_KINDS] = {
    [SMSG_CLASS] = "class",
    [SMSG_PERSIST] = "persist",
    [SMSG_LOOKUP_ALIAS] = "lookup_alias",
    [SMSG_LOOKUP_ID] = "lookup_id",
    [SMSG_CALL] = "call",
    [SMSG_GET_FIELD] = "get_field",
    [SMSG_SET_FIELD] = "set_field",
    [SMSG_GET_STATE] = "get_state",
    [SMSG_UPDATE] = "update",
    [SMSG_ADD_ALIAS] = "add_alias",
    [SMSG_DELETE_ALIAS] = "delete_alias",
    [SMSG_ALIASES] = "aliases",
    [SMSG_DELETE] = "delete",
    [SMSG_GET_CLASS] = "get_class",
    [SMSG_BACKENDS] = "backends",
    [SMSG_MOVE] = "move",
    [SMSG_REPLICATE] = "replicate",
    [SMSG_REPLICA_PUT] = "replica_put",
    [SMSG_REPLICA_DROP] = "replica_drop",
    [SMSG_FORWARD] = "forward",
    [SMSG_UNLOAD] = "unload",
};

/* Counters of another thread's (relaxed atomics): collectors, so that they
 * are typed as counters. */
static void cache_hits(void *ctx, metrics_out_t *out)
{
    store_t *st = ctx;
    uint64_t hits, loads, live;
    spy_cache_stats(st->spy, &hits, &loads, &live);
    metrics_emit(out, NULL, (double)hits);
}

static void cache_loads(void *ctx, metrics_out_t *out)
{
    store_t *st = ctx;
    uint64_t hits, loads, live;
    spy_cache_stats(st->spy, &hits, &loads, &live);
    metrics_emit(out, NULL, (double)loads);
}

static double cache_live(void *ctx)
{
    store_t *st = ctx;
    uint64_t hits, loads, live;
    spy_cache_stats(st->spy, &hits, &loads, &live);
    return (double)live;
}

/* objects, used and file bytes: one LMDB read each time (a read transaction
 * and a stat; a scrape reads three gauges). */
static double usage_objects(void *ctx)
{
    sdb_usage_t u;
    sdb_usage(((store_t *)ctx)->db, &u);
    return (double)u.objects;
}

static double usage_used(void *ctx)
{
    sdb_usage_t u;
    sdb_usage(((store_t *)ctx)->db, &u);
    return (double)u.used_bytes;
}

static double usage_file(void *ctx)
{
    sdb_usage_t u;
    sdb_usage(((store_t *)ctx)->db, &u);
    return (double)u.file_bytes;
}

static int register_kinds(metrics_t *m, store_counters_t *k)
{
    for (unsigned t = 0; t < STMETRICS_KINDS; t++) {
        if (!kind_names[t])
            continue;
        const char *l[] = {"kind", kind_names[t], NULL};
        if (metrics_counter(m, "bettong_store_requests_total",
                            "Requests read, by kind (the protocol's message type).", l,
                            &k->requests[t]) ||
            metrics_histogram(m, "bettong_store_request_seconds",
                              "From a request's frame being read to its answer being made "
                              "(for a change: after its commit), by kind.",
                              l, &k->latency_ns[t], NS, LAT_LO, LAT_HI))
            return -1;
    }
    return 0;
}

static int register_commits(metrics_t *m, const committer_stats_t *c)
{
    return metrics_counter(m, "bettong_store_commits_total",
                           "LMDB commits (one per batch of units: group commit).", NULL,
                           &c->commits) ||
           metrics_counter(m, "bettong_store_committed_units_total",
                           "Units (requests that change the store, or must see every earlier "
                           "change) in those commits.", NULL, &c->units) ||
           metrics_counter(m, "bettong_store_commit_failures_total",
                           "Commits that failed (their units answered with an error).", NULL,
                           &c->failed) ||
           metrics_histogram(m, "bettong_store_commit_batch_units",
                             "Units per commit.", NULL, &c->batch_units, 1, BATCH_LO,
                             BATCH_HI) ||
           metrics_histogram(m, "bettong_store_commit_seconds",
                             "LMDB's commit of a batch, with its fsync.", NULL, &c->commit_ns,
                             NS, LAT_LO, LAT_HI);
}

int stmetrics_register(metrics_t *m, store_t *st)
{
    int rc = metrics_service_info(m, "store") || register_kinds(m, &st->counters) ||
             metrics_counter(m, "bettong_store_bad_requests_total",
                             "Well-formed requests refused (answered BAD_REQUEST).", NULL,
                             &st->counters.bad_requests) ||
             register_commits(m, committer_stats(st->cm)) ||
             metrics_collector(m, "bettong_store_cache_hits_total",
                               "Lookups of an object that found it loaded.", METRIC_COUNTER,
                               cache_hits, st) ||
             metrics_collector(m, "bettong_store_cache_loads_total",
                               "Lookups of an object that was not loaded: a read of LMDB "
                               "(found there or not).", METRIC_COUNTER, cache_loads, st) ||
             metrics_gauge_fn(m, "bettong_store_cached_objects",
                              "Objects loaded in memory (as of the last request's end).", NULL,
                              cache_live, st) ||
             metrics_gauge_fn(m, "bettong_store_objects",
                              "Objects stored here (LMDB's objects database: masters and "
                              "replicas).", NULL, usage_objects, st) ||
             metrics_gauge_fn(m, "bettong_store_lmdb_used_bytes",
                              "Bytes of LMDB's map in use (up to its last page).", NULL,
                              usage_used, st) ||
             metrics_gauge_fn(m, "bettong_store_disk_bytes",
                              "Bytes of LMDB's data file allocated on disk.", NULL, usage_file,
                              st);
    return rc ? -1 : 0;
}
