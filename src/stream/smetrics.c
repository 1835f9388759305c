#include "stream/smetrics.h"

#include <stdio.h>

#define NS 1e-9

static double worker_info(void *ctx) { return 1; }

static double slots_here(void *ctx) { return exec_slots_here(ctx); }

static int owned(const void *ctx, unsigned slot) { return exec_slot_here(ctx, slot); }

/* Keys in the state of the slots this worker owns (read between batches, on
 * the loop thread: dict sizes, no Python call). */
static double keys_here(void *ctx)
{
    exec_t *x = ctx;
    return (double)state_count_keys(&x->app->states, owned, x);
}

static void collect_errors(void *ctx, metrics_out_t *out)
{
    exec_t *x = ctx;
    for (size_t i = 0; i < EXEC_ERROR_KINDS && x->errors[i].where; i++) {
        const char *l[] = {"where", x->errors[i].where, NULL};
        metrics_emit(out, l, (double)x->errors[i].n);
    }
    if (x->errors_other) {
        const char *l[] = {"where", "(other)", NULL};
        metrics_emit(out, l, (double)x->errors_other);
    }
}

static int register_step(metrics_t *m, pipeline_t *p, size_t i)
{
    step_t *s = &p->steps[i];
    char idx[24];
    snprintf(idx, sizeof idx, "%zu", i);
    const char *l[] = {"pipeline", p->name, "step", idx, "name", s->label, NULL};
    return metrics_counter(m, "bettong_step_messages_in_total",
                           "Messages a step ran on this worker.", l, &s->stats.in) ||
           metrics_counter(m, "bettong_step_messages_out_total",
                           "Messages a step passed on (to the next step or the sinks); a "
                           "key_by's are counted where its key was computed.",
                           l, &s->stats.out) ||
           metrics_histogram(m, "bettong_step_latency_seconds",
                             "Time of a step's user code, sampled: one input in 64 is timed.",
                             l, &s->stats.latency, NS, SMETRICS_LAT_LO, SMETRICS_LAT_HI);
}

static int register_pipeline(metrics_t *m, app_t *app, pipeline_t *p)
{
    const char *l[] = {"pipeline", p->name, NULL};
    if (metrics_counter(m, "bettong_source_messages_total",
                        "Messages this worker's source of a pipeline gave (frames read, or "
                        "generator values).", l, &p->messages_in) ||
        metrics_counter(m, "bettong_source_decode_errors_total",
                        "Frames whose decoder raised (their connection is closed).", l,
                        &p->decode_errors))
        return -1;
    for (size_t i = 0; i < p->nsteps; i++)
        if (register_step(m, p, i))
            return -1;
    for (size_t k = 0; k < p->nouts; k++) {
        const sink_addr_t *a = &app->sinks[p->outs[k].sink];
        char sink[300];
        snprintf(sink, sizeof sink, "%s:%d", a->host, a->port);
        const char *ls[] = {"pipeline", p->name, "sink", sink, NULL};
        if (metrics_counter(m, "bettong_sink_messages_total",
                            "Outputs encoded into a sink's buffer on this worker.", ls,
                            &p->outs[k].messages))
            return -1;
    }
    return 0;
}

int smetrics_register(metrics_t *m, app_t *app, exec_t *x, const char *worker)
{
    const char *lw[] = {"worker", worker, "application", app->name ? app->name : "", NULL};
    if (metrics_service_info(m, "stream") ||
        metrics_gauge_fn(m, "bettong_worker_info", "This worker's name and application.", lw,
                         worker_info, NULL))
        return -1;
    for (size_t i = 0; i < app->npipes; i++)
        if (register_pipeline(m, app, &app->pipes[i]))
            return -1;
    x->sample_latency = 1;
    return metrics_histogram(m, "bettong_end_to_end_latency_seconds",
                             "From this worker taking an input (a frame cut from a source's "
                             "read, a generator value, a message forwarded by a peer) to each "
                             "of its outputs encoded into a sink's buffer on this worker; "
                             "sampled: one input in 64.",
                             NULL, &x->end_to_end, NS, SMETRICS_LAT_LO, SMETRICS_LAT_HI) ||
           metrics_counter(m, "bettong_messages_failed_total",
                           "Inputs dropped because user code raised on them (or they could "
                           "not be forwarded); handled per --on-error.", NULL, &x->failed) ||
           metrics_collector(m, "bettong_user_errors_total",
                             "User code exceptions, by where they were raised.", METRIC_COUNTER,
                             collect_errors, x) ||
           metrics_gauge_fn(m, "bettong_slots", "Routing slots (of 4096) this worker owns.",
                            NULL, slots_here, x) ||
           metrics_gauge_fn(m, "bettong_state_keys",
                            "Keys held in the state of the slots this worker owns.", NULL,
                            keys_here, x);
}
