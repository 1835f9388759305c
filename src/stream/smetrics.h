/* The metrics of one stream worker (`bettong run`), registered into the
 * worker's registry (util/metrics.h) and served by its --metrics-listen
 * endpoint (net/httpd.h) on the engine's loop thread. The counters are the
 * app's and exec's own fields (app.h step_stats_t, pipeline_t, pipe_out_t;
 * exec_t), incremented in place by exec.c; this module only names them. */
#ifndef BETTONG_SMETRICS_H
#define BETTONG_SMETRICS_H

#include "stream/app.h"
#include "stream/exec.h"
#include "util/metrics.h"

/* Latency histograms' buckets: 2^7 ns (128 ns) to 2^35 ns (34 s). */
#define SMETRICS_LAT_LO 7
#define SMETRICS_LAT_HI 35

/* Register the worker's stream metrics (worker: its name). Returns 0 or -1. */
int smetrics_register(metrics_t *m, app_t *app, exec_t *x, const char *worker);

#endif
