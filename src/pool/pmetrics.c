#include "pool/pmetrics.h"

#include <stdio.h>

#include "pool/pool.h"

#define US 1e-6
/* Run time and overhead buckets: 2^0 us (1 us) to 2^35 us (9.5 hours). */
#define LAT_LO 0
#define LAT_HI 35

static const char *const outcome_names[PMETRICS_OUTCOMES] = {
    "ok", "raised", "worker_died", "timeout", "cancelled", "error"};

static double queued(void *ctx)
{
    sched_stats_t st;
    sched_stats(((pool_t *)ctx)->sched, &st);
    return st.queued;
}

static double running(void *ctx)
{
    sched_stats_t st;
    sched_stats(((pool_t *)ctx)->sched, &st);
    return st.running;
}

static double workers(void *ctx)
{
    sched_stats_t st;
    sched_stats(((pool_t *)ctx)->sched, &st);
    return st.workers;
}

static double local_workers(void *ctx)
{
    pool_t *p = ctx;
    unsigned n = 0;
    for (unsigned i = 0; i < p->nlocals; i++)
        n += p->locals[i].pid > 0;
    return n;
}

/* Per connected worker (they come and go): labelled by the pool's number for
 * it (as its log lines name it, "worker 3") and its process id. */
typedef struct {
    metrics_out_t *out;
    int runs; /* 0: calls in flight; 1: runs by outcome */
} worker_emit_t;

static void emit_worker(void *ctx, const sched_worker_stats_t *ws)
{
    worker_emit_t *e = ctx;
    char id[16], pid[16];
    snprintf(id, sizeof id, "%u", (unsigned)ws->id);
    snprintf(pid, sizeof pid, "%u", (unsigned)ws->pid);
    if (!e->runs) {
        const char *l[] = {"worker", id, "pid", pid, NULL};
        metrics_emit(e->out, l, ws->inflight);
        return;
    }
    const uint64_t n[3] = {ws->runs_ok, ws->runs_raised, ws->runs_error};
    const char *outcome[3] = {"ok", "raised", "error"};
    for (unsigned i = 0; i < 3; i++) {
        const char *l[] = {"worker", id, "pid", pid, "outcome", outcome[i], NULL};
        metrics_emit(e->out, l, (double)n[i]);
    }
}

static void worker_inflight(void *ctx, metrics_out_t *out)
{
    worker_emit_t e = {out, 0};
    sched_each_worker(((pool_t *)ctx)->sched, emit_worker, &e);
}

static void worker_runs(void *ctx, metrics_out_t *out)
{
    worker_emit_t e = {out, 1};
    sched_each_worker(((pool_t *)ctx)->sched, emit_worker, &e);
}

static int register_workers(metrics_t *m, pool_t *p)
{
    return metrics_collector(m, "bettong_pool_worker_calls_in_flight",
                             "Calls sent to this worker and not yet done: the one running and "
                             "those sent ahead, waiting at the worker.",
                             METRIC_GAUGE, worker_inflight, p) ||
           metrics_collector(m, "bettong_pool_worker_runs_total",
                             "Runs this worker reported done, by outcome (every run of a "
                             "retried call; not calls it was asked to skip).",
                             METRIC_COUNTER, worker_runs, p);
}

static int register_outcomes(metrics_t *m, pool_counters_t *k)
{
    for (unsigned i = 0; i < PMETRICS_OUTCOMES; i++) {
        const char *l[] = {"outcome", outcome_names[i], NULL};
        if (metrics_counter(m, "bettong_pool_calls_done_total",
                            "Calls whose outcome was sent to their client, by outcome (a "
                            "retried call counts once, with its last outcome).",
                            l, &k->outcome[i]))
            return -1;
    }
    return 0;
}

int pmetrics_register(metrics_t *m, pool_t *p)
{
    pool_counters_t *k = &p->counters;
    int rc = metrics_service_info(m, "pool") ||
           metrics_counter(m, "bettong_pool_calls_submitted_total",
                           "Calls received from clients.", NULL, &k->submitted) ||
           metrics_gauge_fn(m, "bettong_pool_calls_queued",
                            "Calls waiting in the pool for a worker.", NULL, queued, p) ||
           metrics_gauge_fn(m, "bettong_pool_calls_running",
                            "Calls sent to workers and not yet done (includes those sent "
                            "ahead, waiting at their worker).", NULL, running, p) ||
           register_outcomes(m, k) ||
           metrics_counter(m, "bettong_pool_calls_failed_total",
                           "Calls whose outcome was a failure: raised (after its retries), "
                           "worker died, timeout, or error.", NULL, &k->failed) ||
           metrics_histogram(m, "bettong_pool_call_run_seconds",
                             "A call's run on its worker, as the worker timed it (calls that "
                             "ran: outcome ok or raised; a retried call's last run).",
                             NULL, &k->run_us, US, LAT_LO, LAT_HI) ||
           metrics_histogram(m, "bettong_pool_call_overhead_seconds",
                             "From the pool reading a call to the pool sending its result, "
                             "minus its run time: queueing, transfers and dispatch (calls that "
                             "ran: outcome ok or raised).",
                             NULL, &k->overhead_us, US, LAT_LO, LAT_HI) ||
           metrics_gauge_fn(m, "bettong_pool_workers",
                            "Workers connected to the pool (local and joined).", NULL, workers,
                            p) ||
           metrics_gauge_fn(m, "bettong_pool_local_workers_running",
                            "Local worker processes (--workers) running.", NULL,
                            local_workers, p) ||
           register_workers(m, p) ||
           metrics_counter(m, "bettong_pool_call_args_bytes_total",
                           "Bytes of call arguments received from clients (pickled).", NULL,
                           &k->args_bytes) ||
           metrics_counter(m, "bettong_pool_call_results_bytes_total",
                           "Bytes of results sent to clients (pickled results, exceptions, "
                           "error texts).", NULL, &k->result_bytes);
    return rc ? -1 : 0;
}
