/* A registry of metrics any service registers into (counters, gauges,
 * histograms, with labels), rendered in the Prometheus text exposition format
 * 0.0.4. The values belong to their owners: a counter is the owner's own
 * uint64_t, incremented in place on the owner's thread (no call, no atomic);
 * the registry only reads it when rendering, which must happen on that same
 * thread (the service's event loop, see net/httpd.h). Names follow
 * Prometheus's conventions: bettong_..._total for counters, base units
 * (_seconds, _bytes). */
#ifndef BETTONG_METRICS_H
#define BETTONG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

typedef enum { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM } metric_type_t;

/* Power-of-two bins, as Wallaroo's: bin 0 holds values <= 1, bin k (1..64)
 * values in (2^(k-1), 2^k]. So "le" = 2^k is exact, as Prometheus's
 * cumulative buckets mean it (<=). Values are integers in the owner's unit
 * (ns for times, bytes for sizes); metrics_histogram scales them on output. */
#define METRICS_HIST_BINS 65

typedef struct {
    uint64_t bins[METRICS_HIST_BINS];
    uint64_t count;
    uint64_t sum;
} metrics_hist_t;

static inline unsigned metrics_hist_bin(uint64_t v)
{
    return v <= 1 ? 0 : 64 - (unsigned)__builtin_clzll(v - 1);
}

static inline void metrics_hist_record(metrics_hist_t *h, uint64_t v)
{
    h->bins[metrics_hist_bin(v)]++;
    h->count++;
    h->sum += v;
}

typedef struct metrics metrics_t;
/* What a collector writes its series into while rendering. */
typedef struct metrics_out metrics_out_t;

/* Labels are given as a NULL-terminated list of name, value pairs
 * ({"step", "split", NULL}); NULL for none. Values are escaped here. */
typedef const char *const *metrics_labels_t;

metrics_t *metrics_new(void);
void metrics_free(metrics_t *m);

/* Each adds one series to the family `name` (made on first use, in order of
 * registration). Returns 0, or -1 if the name or a label name is not a valid
 * Prometheus name, the family exists with another type, or out of memory.
 * The pointers must stay valid until metrics_free. */
int metrics_counter(metrics_t *m, const char *name, const char *help, metrics_labels_t labels,
                    const uint64_t *value);
int metrics_gauge(metrics_t *m, const char *name, const char *help, metrics_labels_t labels,
                  const uint64_t *value);
/* A gauge read by calling fn(ctx) when rendering (a backlog, a count). */
int metrics_gauge_fn(metrics_t *m, const char *name, const char *help, metrics_labels_t labels,
                     double (*fn)(void *ctx), void *ctx);
/* Buckets le = 2^k * scale for k in [lo, hi], then +Inf (values below 2^lo
 * are counted in the first, above 2^hi in +Inf only); sum * scale. */
int metrics_histogram(metrics_t *m, const char *name, const char *help, metrics_labels_t labels,
                      const metrics_hist_t *h, double scale, unsigned lo, unsigned hi);
/* A family whose series are known only when rendering (peers that come and
 * go, error kinds): collect calls metrics_emit once per series. */
int metrics_collector(metrics_t *m, const char *name, const char *help, metric_type_t type,
                      void (*collect)(void *ctx, metrics_out_t *out), void *ctx);
void metrics_emit(metrics_out_t *out, metrics_labels_t labels, double value);

/* bettong_service_info{service="..."} 1: which kind of service serves this
 * registry ("stream", "pool", "store"), so that a reader (the dashboard,
 * `bettong top`) need not guess from the other families. Returns 0 or -1. */
int metrics_service_info(metrics_t *m, const char *service);

/* The whole registry as text/plain; version=0.0.4. Returns 0 or -1 (memory). */
int metrics_render(const metrics_t *m, buf_t *out);

/* Helpers, public for the tests. A label value escaped as the format wants
 * (\\, \", \n) appended to out; a number as the format writes it. */
int metrics_escape(buf_t *out, const char *value);
int metrics_number(buf_t *out, double v);
int metrics_valid_name(const char *name);

/* The content type of metrics_render's output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
