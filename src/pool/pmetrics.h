/* The metrics of a task pool (`bettong pool --metrics-listen`): the pool's
 * counters (pool_counters_t, a field of pool_t), counted in place by peer.c on
 * the pool's loop thread, and their registration into the pool's registry
 * (util/metrics.h), served by net/httpd.h on that same loop. The gauges
 * (queued, running, workers) are read from the scheduler when rendering.
 *
 * Times are the pool's and the workers' microseconds:
 * - run time: finished_us - started_us as the worker reported them in DONE
 *   (the user's function, unpickling the arguments and pickling the result);
 * - overhead: from the pool receiving the call (its CALLS frame read) to the
 *   pool queueing its RESULT to the client, minus the run time: queueing in
 *   the pool, sending the task, the worker's dispatch, the DONE's way back.
 *   Both differences are taken on one clock each, so the workers' clocks
 *   need not agree with the pool's. Only calls a worker ran and reported
 *   (outcome ok or raised) are timed; for a retried call, its last run. */
#ifndef BETTONG_PMETRICS_H
#define BETTONG_PMETRICS_H

#include <stddef.h>
#include <stdint.h>

#include "pool/proto.h"
#include "util/metrics.h"

/* Outcomes, in the order of the CALL_* statuses of pool/proto.h. */
#define PMETRICS_OUTCOMES 6

typedef struct {
    uint64_t submitted;                  /* calls received in CALLS */
    uint64_t outcome[PMETRICS_OUTCOMES]; /* RESULTs sent, by status */
    uint64_t failed;                     /* RESULTs other than ok and cancelled */
    uint64_t args_bytes;                 /* argument bytes received in CALLS */
    uint64_t result_bytes;               /* result payload bytes sent in RESULTs */
    metrics_hist_t run_us, overhead_us;
} pool_counters_t;

static inline void pmetrics_submitted(pool_counters_t *k, size_t args_len)
{
    k->submitted++;
    k->args_bytes += args_len;
}

/* A RESULT sent: status (CALL_*), its times, now on the pool's clock. */
static inline void pmetrics_result(pool_counters_t *k, uint8_t status, uint64_t submitted_us,
                                   uint64_t started_us, uint64_t finished_us, uint64_t now_us,
                                   size_t payload_len)
{
    if (status < PMETRICS_OUTCOMES)
        k->outcome[status]++;
    if (status != CALL_OK && status != CALL_CANCELLED)
        k->failed++;
    k->result_bytes += payload_len;
    if (status != CALL_OK && status != CALL_RAISED) /* no run a worker reported */
        return;
    uint64_t run = finished_us > started_us ? finished_us - started_us : 0;
    uint64_t total = now_us > submitted_us ? now_us - submitted_us : 0;
    metrics_hist_record(&k->run_us, run);
    metrics_hist_record(&k->overhead_us, total > run ? total - run : 0);
}

struct pool;
/* Register the pool's series into m. Returns 0 or -1 (out of memory). */
int pmetrics_register(metrics_t *m, struct pool *p);

#endif
