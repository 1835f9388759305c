#include "tools/top.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net/sock.h"
#include "tools/cli.h"
#include "tools/scrape.h"
#include "tools/topcalc.h"
#include "util/buf.h"
#include "util/promparse.h"

#define TOP_MAX_ENDPOINTS 256
#define TOP_MAX_BUCKETS 256

/* ------------------------------------------------------------ one endpoint */

typedef struct {
    const char *addr;
    int up;
    char err[600];
    prom_doc_t doc;
} endpoint_t;

static void scrape(endpoint_t *ep, double timeout)
{
    prom_doc_free(&ep->doc);
    ep->up = scrape_metrics(ep->addr, timeout, &ep->doc, ep->err, sizeof ep->err) == 0;
}

/* ------------------------------------------------------------ series tables */

/* A series summed over endpoints. key: name \1 labels sorted by name without
 * le \2 le (histogram buckets of one series are neighbours when sorted). */
typedef struct {
    char *key;
    const prom_sample_t *s; /* the first sample seen, for names and labels */
    double value;
    int shown;
} ent_t;

typedef struct {
    ent_t *e;
    size_t n;
} table_t;

static int by_label_name(const void *a, const void *b)
{
    return strcmp((*(const prom_label_t *const *)a)->name,
                  (*(const prom_label_t *const *)b)->name);
}

/* The labels of s other than le (and `skip`), as k="v",... sorted. */
static int labels_text(buf_t *out, const prom_sample_t *s, const char *skip, char sep)
{
    const prom_label_t *l[PROM_MAX_LABELS];
    size_t n = 0;
    for (size_t i = 0; i < s->nlabels; i++)
        if (strcmp(s->labels[i].name, "le") != 0 && (!skip || strcmp(s->labels[i].name, skip)))
            l[n++] = &s->labels[i];
    qsort(l, n, sizeof *l, by_label_name);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            rc |= buf_append(out, &sep, 1);
        rc |= buf_append(out, l[i]->name, strlen(l[i]->name));
        rc |= buf_append(out, "=", 1);
        rc |= buf_append(out, l[i]->value, strlen(l[i]->value));
    }
    return rc;
}

static char *series_key(const char *name, const prom_sample_t *s)
{
    buf_t b;
    buf_init(&b);
    int rc = buf_append(&b, name, strlen(name)) | buf_append(&b, "\1", 1) |
             labels_text(&b, s, NULL, '\1');
    const char *le = prom_label(s, "le");
    if (le)
        rc |= buf_append(&b, "\2", 1) | buf_append(&b, le, strlen(le));
    rc |= buf_append(&b, "", 1);
    if (rc) {
        buf_free(&b);
        return NULL;
    }
    return (char *)b.data; /* buf's data from offset 0: nothing was consumed */
}

static int by_key(const void *a, const void *b)
{
    return strcmp(((const ent_t *)a)->key, ((const ent_t *)b)->key);
}

static void table_free(table_t *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->e[i].key);
    free(t->e);
    t->e = NULL;
    t->n = 0;
}

/* Every sample of the endpoints that are up (or only of `only`), summed by key. */
static int table_build(table_t *t, endpoint_t *eps, size_t neps, const endpoint_t *only)
{
    size_t total = 0;
    for (size_t i = 0; i < neps; i++)
        if (eps[i].up && (!only || only == &eps[i]))
            total += eps[i].doc.n;
    t->n = 0;
    t->e = calloc(total ? total : 1, sizeof *t->e);
    if (!t->e)
        return -1;
    for (size_t i = 0; i < neps; i++) {
        if (!eps[i].up || (only && only != &eps[i]))
            continue;
        for (size_t k = 0; k < eps[i].doc.n; k++) {
            const prom_sample_t *s = &eps[i].doc.samples[k];
            char *key = series_key(s->name, s);
            if (!key)
                return -1;
            t->e[t->n++] = (ent_t){key, s, s->value, 0};
        }
    }
    qsort(t->e, t->n, sizeof *t->e, by_key);
    size_t w = 0;
    for (size_t r = 0; r < t->n; r++) {
        if (w > 0 && strcmp(t->e[w - 1].key, t->e[r].key) == 0) {
            t->e[w - 1].value += t->e[r].value;
            free(t->e[r].key);
        } else {
            t->e[w++] = t->e[r];
        }
    }
    t->n = w;
    return 0;
}

/* The first entry whose key is >= key. */
static size_t lower_bound(const table_t *t, const char *key)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(t->e[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static ent_t *table_find(const table_t *t, const char *key)
{
    size_t i = lower_bound(t, key);
    return i < t->n && strcmp(t->e[i].key, key) == 0 ? &t->e[i] : NULL;
}

/* Entries [*from, *to) whose key starts with prefix. */
static void table_range(const table_t *t, const char *prefix, size_t *from, size_t *to)
{
    size_t n = strlen(prefix), i = lower_bound(t, prefix);
    *from = i;
    while (i < t->n && strncmp(t->e[i].key, prefix, n) == 0)
        i++;
    *to = i;
}

/* Sum of every series of metric `name`, optionally only those whose label
 * `lname` is `lvalue`. NAN when there is none. */
static double table_sum(const table_t *t, const char *name, const char *lname,
                        const char *lvalue)
{
    char prefix[PROM_MAX_NAME + 2];
    snprintf(prefix, sizeof prefix, "%s\1", name);
    size_t from, to;
    table_range(t, prefix, &from, &to);
    double sum = 0;
    int any = 0;
    for (size_t i = from; i < to; i++) {
        const char *v = lname ? prom_label(t->e[i].s, lname) : NULL;
        if (lname && (!v || strcmp(v, lvalue) != 0))
            continue;
        sum += t->e[i].value;
        any = 1;
    }
    return any ? sum : NAN;
}

/* ------------------------------------------------------------ one view */

typedef struct {
    table_t now, before;
    double seconds; /* between the two scrapes; 0: one scrape, no rates */
    int all;        /* --all: every family in the generic sections */
} view_t;

static double rate_of(const view_t *v, const char *name, const char *lname, const char *lvalue)
{
    if (!(v->seconds > 0))
        return NAN;
    return topcalc_rate(table_sum(&v->before, name, lname, lvalue),
                        table_sum(&v->now, name, lname, lvalue), v->seconds);
}

static double rate_key(const view_t *v, const ent_t *e)
{
    if (!(v->seconds > 0))
        return NAN;
    const ent_t *b = table_find(&v->before, e->key);
    return topcalc_rate(b ? b->value : 0, e->value, v->seconds);
}

/* The buckets of histogram series `prefix` (name_bucket \1 labels \2). */
static size_t buckets_of(const table_t *t, const char *prefix, topcalc_bucket_t *out)
{
    size_t from, to, n = 0;
    table_range(t, prefix, &from, &to);
    for (size_t i = from; i < to && n < TOP_MAX_BUCKETS; i++) {
        const char *le = prom_label(t->e[i].s, "le");
        double x;
        char *end;
        if (!le)
            continue;
        x = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, &end);
        if (!isinf(x) && (*end || end == le))
            continue;
        out[n++] = (topcalc_bucket_t){x, t->e[i].value};
    }
    topcalc_sort(out, n);
    return n;
}

/* p50 and p99 of a histogram series over the interval (or since the start,
 * with one scrape or nothing observed in the interval); *count: how many
 * observations they describe. */
static void percentiles(const view_t *v, const char *prefix, double *p50, double *p99,
                        double *count, int *interval)
{
    /* top is one thread drawing one line at a time: scratch space, not stack. */
    static topcalc_bucket_t now[TOP_MAX_BUCKETS], before[TOP_MAX_BUCKETS],
        delta[TOP_MAX_BUCKETS];
    size_t n = buckets_of(&v->now, prefix, now), m = 0;
    const topcalc_bucket_t *use = now;
    *interval = 0;
    if (v->seconds > 0) {
        m = buckets_of(&v->before, prefix, before);
        topcalc_delta(before, m, now, n, delta);
        if (n && delta[n - 1].count > 0) {
            use = delta;
            *interval = 1;
        }
    }
    *count = n ? use[n - 1].count : 0;
    *p50 = topcalc_quantile(use, n, 0.5);
    *p99 = topcalc_quantile(use, n, 0.99);
}

/* The key prefix of a histogram series' buckets. A label set too long for
 * out is cut: such a series shows no percentiles (nothing worse). */
static void hist_prefix(char *out, size_t len, const char *family, const prom_sample_t *s)
{
    buf_t b;
    buf_init(&b);
    labels_text(&b, s, NULL, '\1');
    snprintf(out, len, "%s_bucket\1%.*s\2", family, (int)buf_unread(&b),
             (const char *)buf_head(&b));
    buf_free(&b);
}

/* ------------------------------------------------------------ formatting */

static const char *fmt_num(char *b, size_t n, double v)
{
    if (isnan(v))
        snprintf(b, n, "-");
    else if (fabs(v) >= 1e15 || (v != floor(v) && fabs(v) >= 1e6))
        snprintf(b, n, "%.4g", v);
    else if (v == floor(v))
        snprintf(b, n, "%.0f", v);
    else
        snprintf(b, n, "%.3g", v);
    return b;
}

static const char *fmt_rate(char *b, size_t n, double v)
{
    if (isnan(v))
        snprintf(b, n, "-");
    else if (v >= 100)
        snprintf(b, n, "%.0f", v);
    else
        snprintf(b, n, "%.1f", v);
    return b;
}

static const char *fmt_secs(char *b, size_t n, double s)
{
    if (isnan(s))
        snprintf(b, n, "-");
    else if (s < 1e-6)
        snprintf(b, n, "%.0fns", s * 1e9);
    else if (s < 1e-3)
        snprintf(b, n, "%.1fus", s * 1e6);
    else if (s < 1)
        snprintf(b, n, "%.1fms", s * 1e3);
    else
        snprintf(b, n, "%.2fs", s);
    return b;
}

static const char *fmt_bytes(char *b, size_t n, double v)
{
    if (isnan(v))
        snprintf(b, n, "-");
    else if (v < 1024)
        snprintf(b, n, "%.0fB", v);
    else if (v < 1024 * 1024)
        snprintf(b, n, "%.1fKiB", v / 1024);
    else
        snprintf(b, n, "%.1fMiB", v / (1024 * 1024));
    return b;
}

/* Formatted numbers for one printf: a ring of buffers (at most 12 a call). */
static char scratch[12][48];
static unsigned si;
static char *slot(void) { return scratch[si++ % 12]; }
#define F(fn, v) fn(slot(), sizeof scratch[0], (v))

/* ------------------------------------------------------------ stream summary */

/* The families a summary shows (left out of the generic sections unless
 * --all): the stream's, and the store's requests by kind. */
static int summarized_family(const char *f)
{
    if (strcmp(f, "bettong_store_requests_total") == 0 ||
        strcmp(f, "bettong_store_request_seconds") == 0)
        return 1;
    static const char *prefixes[] = {"bettong_worker_info", "bettong_source_", "bettong_step_",
                                     "bettong_sink_", "bettong_end_to_end_",
                                     "bettong_messages_failed", "bettong_user_errors",
                                     "bettong_slots", "bettong_state_keys",
                                     "bettong_forward", "bettong_link_backlog",
                                     "bettong_pool_worker_", "bettong_service_info", NULL};
    for (size_t i = 0; prefixes[i]; i++)
        if (strncmp(f, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

static void show_sources(const view_t *v)
{
    size_t from, to;
    table_range(&v->now, "bettong_source_messages_total\1", &from, &to);
    if (from == to)
        return;
    printf("  %-34s %12s %10s %10s %7s\n", "source (pipeline)", "messages", "msg/s",
           "decode err", "paused");
    for (size_t i = from; i < to; i++) {
        const char *p = prom_label(v->now.e[i].s, "pipeline");
        p = p ? p : "";
        printf("  %-34s %12s %10s %10s %7s\n", p, F(fmt_num, v->now.e[i].value),
               F(fmt_rate, rate_key(v, &v->now.e[i])),
               F(fmt_num, table_sum(&v->now, "bettong_source_decode_errors_total", "pipeline", p)),
               F(fmt_num, table_sum(&v->now, "bettong_source_paused", "pipeline", p)));
    }
}

/* Steps in order: by pipeline, then by index (not by name). qsort has no
 * context argument; the table being sorted is set just before the call. */
static const table_t *sort_table;

static int by_pipeline_step(const void *a, const void *b)
{
    const prom_sample_t *x = sort_table->e[*(const size_t *)a].s,
                        *y = sort_table->e[*(const size_t *)b].s;
    const char *px = prom_label(x, "pipeline"), *py = prom_label(y, "pipeline");
    int c = strcmp(px ? px : "", py ? py : "");
    if (c)
        return c;
    const char *sx = prom_label(x, "step"), *sy = prom_label(y, "step");
    long ix = sx ? strtol(sx, NULL, 10) : 0, iy = sy ? strtol(sy, NULL, 10) : 0;
    return ix < iy ? -1 : ix > iy;
}

static void show_step(const view_t *v, const ent_t *e)
{
    const prom_sample_t *s = e->s;
    const char *idx = prom_label(s, "step"), *name = prom_label(s, "name");
    char label[200], key[PROM_MAX_NAME * 4 + 1024];
    snprintf(label, sizeof label, "%s %s", idx ? idx : "?", name ? name : "?");
    /* The out counter and latency histogram have the same labels. */
    snprintf(key, sizeof key, "bettong_step_messages_out_total%s", strchr(e->key, '\1'));
    const ent_t *out = table_find(&v->now, key);
    double p50, p99, count;
    int interval;
    hist_prefix(key, sizeof key, "bettong_step_latency_seconds", s);
    percentiles(v, key, &p50, &p99, &count, &interval);
    printf("    %-40.40s %12s %12s %10s %9s %9s\n", label, F(fmt_num, e->value),
           F(fmt_num, out ? out->value : NAN), F(fmt_rate, rate_key(v, e)), F(fmt_secs, p50),
           F(fmt_secs, p99));
}

static void show_steps(const view_t *v)
{
    size_t from, to;
    table_range(&v->now, "bettong_step_messages_in_total\1", &from, &to);
    size_t *order = from < to ? malloc((to - from) * sizeof *order) : NULL;
    if (!order)
        return;
    for (size_t i = from; i < to; i++)
        order[i - from] = i;
    sort_table = &v->now;
    qsort(order, to - from, sizeof *order, by_pipeline_step);
    const char *last = NULL;
    for (size_t k = 0; k < to - from; k++) {
        const ent_t *e = &v->now.e[order[k]];
        const char *p = prom_label(e->s, "pipeline");
        p = p ? p : "";
        if (!last || strcmp(last, p) != 0) {
            printf("  steps of %-33.33s %12s %12s %10s %9s %9s\n", p, "in", "out", "in/s",
                   "p50", "p99");
            last = p;
        }
        show_step(v, e);
    }
    free(order);
}

static void show_sinks(const view_t *v)
{
    size_t from, to;
    table_range(&v->now, "bettong_sink_messages_total\1", &from, &to);
    if (from == to)
        return;
    printf("  %-34s %12s %10s %10s\n", "sink (pipeline)", "messages", "msg/s", "backlog");
    for (size_t i = from; i < to; i++) {
        const prom_sample_t *s = v->now.e[i].s;
        const char *p = prom_label(s, "pipeline"), *sink = prom_label(s, "sink");
        char label[300];
        snprintf(label, sizeof label, "%s (%s)", sink ? sink : "?", p ? p : "");
        printf("  %-34.34s %12s %10s %10s\n", label, F(fmt_num, v->now.e[i].value),
               F(fmt_rate, rate_key(v, &v->now.e[i])),
               F(fmt_bytes, table_sum(&v->now, "bettong_sink_backlog_bytes", "sink",
                                      sink ? sink : "")));
    }
}

static void show_latency_and_errors(const view_t *v)
{
    char prefix[300];
    snprintf(prefix, sizeof prefix, "bettong_end_to_end_latency_seconds_bucket\1\2");
    double p50, p99, count;
    int interval;
    percentiles(v, prefix, &p50, &p99, &count, &interval);
    if (count > 0)
        printf("  end-to-end latency p50 %s p99 %s (%s timed inputs %s)\n", F(fmt_secs, p50),
               F(fmt_secs, p99), F(fmt_num, count), interval ? "in the interval" : "in all");
    double failed = table_sum(&v->now, "bettong_messages_failed_total", NULL, NULL);
    if (isnan(failed))
        return;
    printf("  failed messages %s (%s/s)", F(fmt_num, failed),
           F(fmt_rate, rate_of(v, "bettong_messages_failed_total", NULL, NULL)));
    size_t from, to;
    table_range(&v->now, "bettong_user_errors_total\1", &from, &to);
    printf(from == to ? "; no user errors\n" : "; user errors:\n");
    for (size_t i = from; i < to; i++) {
        const char *w = prom_label(v->now.e[i].s, "where");
        printf("    %-40.40s %12s %10s/s\n", w ? w : "?", F(fmt_num, v->now.e[i].value),
               F(fmt_rate, rate_key(v, &v->now.e[i])));
    }
}

/* The value of label `label` of the endpoint's series `info` ("?" if it has
 * none), or NULL when there is no such series. */
static const char *info_label(const endpoint_t *ep, const char *info, const char *label)
{
    for (size_t i = 0; i < ep->doc.n; i++)
        if (strcmp(ep->doc.samples[i].name, info) == 0) {
            const char *w = prom_label(&ep->doc.samples[i], label);
            return w ? w : "?";
        }
    return NULL;
}

static const char *worker_name(const endpoint_t *ep)
{
    return info_label(ep, "bettong_worker_info", "worker");
}

static void show_workers(endpoint_t *eps, size_t neps, endpoint_t *before, double seconds)
{
    printf("  %-22s %10s %10s %10s %10s %6s %6s %7s %10s\n", "worker", "src msg/s", "steps in/s",
           "sink msg/s", "fwd msg/s", "slots", "keys", "failed", "backlog");
    for (size_t i = 0; i < neps; i++) {
        const char *name = eps[i].up ? worker_name(&eps[i]) : NULL;
        if (!name)
            continue;
        view_t v = {.seconds = seconds};
        if (table_build(&v.now, eps, neps, &eps[i]) < 0 ||
            table_build(&v.before, before, neps, &before[i]) < 0) {
            table_free(&v.now);
            table_free(&v.before);
            continue;
        }
        if (!before[i].up)
            v.seconds = 0;
        double backlog = table_sum(&v.now, "bettong_sink_backlog_bytes", NULL, NULL);
        double link = table_sum(&v.now, "bettong_link_backlog_bytes", NULL, NULL);
        backlog = (isnan(backlog) ? 0 : backlog) + (isnan(link) ? 0 : link);
        printf("  %-22.22s %10s %10s %10s %10s %6s %6s %7s %10s\n", name,
               F(fmt_rate, rate_of(&v, "bettong_source_messages_total", NULL, NULL)),
               F(fmt_rate, rate_of(&v, "bettong_step_messages_in_total", NULL, NULL)),
               F(fmt_rate, rate_of(&v, "bettong_sink_messages_total", NULL, NULL)),
               F(fmt_rate, rate_of(&v, "bettong_forwarded_messages_total", NULL, NULL)),
               F(fmt_num, table_sum(&v.now, "bettong_slots", NULL, NULL)),
               F(fmt_num, table_sum(&v.now, "bettong_state_keys", NULL, NULL)),
               F(fmt_num, table_sum(&v.now, "bettong_messages_failed_total", NULL, NULL)),
               F(fmt_bytes, backlog));
        table_free(&v.now);
        table_free(&v.before);
    }
}

static void show_stream(const view_t *v, endpoint_t *eps, endpoint_t *before, size_t neps)
{
    size_t from, to;
    table_range(&v->now, "bettong_worker_info\1", &from, &to);
    if (from == to)
        return;
    printf("\nSTREAM (summed over the workers)\n");
    show_sources(v);
    show_steps(v);
    show_sinks(v);
    show_latency_and_errors(v);
    show_workers(eps, neps, before, v->seconds);
}

/* ------------------------------------------------------------ pool, store */

/* p50 and p99 of an unlabelled histogram, as text ("p50 X p99 Y"), or "". */
static const char *latency_text(char *out, size_t len, const view_t *v, const char *family)
{
    char prefix[PROM_MAX_NAME + 16];
    snprintf(prefix, sizeof prefix, "%s_bucket\1\2", family);
    double p50, p99, count;
    int interval;
    percentiles(v, prefix, &p50, &p99, &count, &interval);
    if (count > 0)
        snprintf(out, len, "p50 %s p99 %s", F(fmt_secs, p50), F(fmt_secs, p99));
    else
        snprintf(out, len, "-");
    return out;
}

/* A pool's calls (bettong pool --metrics-listen): one line of counts. */
static void show_pool(const view_t *v)
{
    double queued = table_sum(&v->now, "bettong_pool_calls_queued", NULL, NULL);
    double done = table_sum(&v->now, "bettong_pool_calls_done_total", NULL, NULL);
    if (isnan(queued) && isnan(done))
        return;
    printf("\nPOOL (summed over the pools)\n");
    printf("  calls queued %s running %s done %s (%s/s) failed %s (%s/s) workers %s\n",
           F(fmt_num, queued),
           F(fmt_num, table_sum(&v->now, "bettong_pool_calls_running", NULL, NULL)),
           F(fmt_num, done), F(fmt_rate, rate_of(v, "bettong_pool_calls_done_total", NULL, NULL)),
           F(fmt_num, table_sum(&v->now, "bettong_pool_calls_failed_total", NULL, NULL)),
           F(fmt_rate, rate_of(v, "bettong_pool_calls_failed_total", NULL, NULL)),
           F(fmt_num, table_sum(&v->now, "bettong_pool_workers", NULL, NULL)));
    char run[64], over[64];
    printf("  call run %s; overhead %s\n",
           latency_text(run, sizeof run, v, "bettong_pool_call_run_seconds"),
           latency_text(over, sizeof over, v, "bettong_pool_call_overhead_seconds"));
}

/* A runs series of the same worker (labels worker and pid) as in-flight
 * sample s, with the given outcome: its entry in t, or NULL. */
static const ent_t *runs_of(const table_t *t, const prom_sample_t *s, const char *outcome)
{
    size_t from, to;
    table_range(t, "bettong_pool_worker_runs_total\1", &from, &to);
    const char *w = prom_label(s, "worker"), *pid = prom_label(s, "pid");
    for (size_t i = from; i < to; i++) {
        const prom_sample_t *r = t->e[i].s;
        const char *rw = prom_label(r, "worker"), *rp = prom_label(r, "pid");
        const char *ro = prom_label(r, "outcome");
        if (w && rw && strcmp(w, rw) == 0 && (!pid || (rp && strcmp(pid, rp) == 0)) && ro &&
            strcmp(ro, outcome) == 0)
            return &t->e[i];
    }
    return NULL;
}

/* A pool's workers, one line each: calls in flight, runs by outcome. */
static void show_pool_workers(const view_t *v)
{
    size_t from, to;
    table_range(&v->now, "bettong_pool_worker_calls_in_flight\1", &from, &to);
    if (from == to)
        return;
    printf("  %-8s %8s %10s %10s %8s %8s %10s\n", "worker", "pid", "in flight", "runs ok",
           "raised", "error", "runs/s");
    for (size_t i = from; i < to; i++) {
        const prom_sample_t *s = v->now.e[i].s;
        const char *w = prom_label(s, "worker"), *pid = prom_label(s, "pid");
        const ent_t *r[3] = {runs_of(&v->now, s, "ok"), runs_of(&v->now, s, "raised"),
                             runs_of(&v->now, s, "error")};
        double per_s = 0; /* NAN with no rates (one scrape) */
        for (unsigned k = 0; k < 3; k++)
            per_s += r[k] ? rate_key(v, r[k]) : 0;
        printf("  %-8.8s %8.8s %10s %10s %8s %8s %10s\n", w ? w : "?", pid ? pid : "?",
               F(fmt_num, v->now.e[i].value), F(fmt_num, r[0] ? r[0]->value : NAN),
               F(fmt_num, r[1] ? r[1]->value : NAN), F(fmt_num, r[2] ? r[2]->value : NAN),
               F(fmt_rate, r[0] ? per_s : NAN));
    }
}

/* A store's requests by kind: count, rate, latency. */
static void show_store(const view_t *v)
{
    size_t from, to;
    table_range(&v->now, "bettong_store_requests_total\1", &from, &to);
    if (from == to)
        return;
    printf("\nSTORE (summed over the stores)\n");
    printf("  %-34s %12s %10s %9s %9s\n", "requests by kind", "total", "/s", "p50", "p99");
    for (size_t i = from; i < to; i++) {
        const prom_sample_t *s = v->now.e[i].s;
        const char *kind = prom_label(s, "kind");
        char prefix[PROM_MAX_NAME * 4 + 1024];
        hist_prefix(prefix, sizeof prefix, "bettong_store_request_seconds", s);
        double p50, p99, count;
        int interval;
        percentiles(v, prefix, &p50, &p99, &count, &interval);
        printf("  %-34.34s %12s %10s %9s %9s\n", kind ? kind : "?", F(fmt_num, v->now.e[i].value),
               F(fmt_rate, rate_key(v, &v->now.e[i])), F(fmt_secs, p50), F(fmt_secs, p99));
    }
}

/* ------------------------------------------------------------ generic families */

/* "bettong_pool_calls_total" -> "pool"; other names: their first word. */
static void group_of(const char *family, char *out, size_t len)
{
    const char *p = strncmp(family, "bettong_", 8) == 0 ? family + 8 : family;
    size_t n = strcspn(p, "_");
    snprintf(out, len, "%.*s", (int)(n ? n : strlen(p)), p);
}

static void show_series(const view_t *v, ent_t *e)
{
    const prom_sample_t *s = e->s;
    buf_t lb;
    buf_init(&lb);
    labels_text(&lb, s, NULL, ',');
    char label[400];
    snprintf(label, sizeof label, "%s%s%.*s%s", s->family, buf_unread(&lb) ? "{" : "",
             (int)buf_unread(&lb), (const char *)buf_head(&lb), buf_unread(&lb) ? "}" : "");
    buf_free(&lb);
    if (s->type == PROM_HISTOGRAM) {
        char prefix[PROM_MAX_NAME * 4 + 1024];
        hist_prefix(prefix, sizeof prefix, s->family, s);
        double p50, p99, count;
        int interval;
        percentiles(v, prefix, &p50, &p99, &count, &interval);
        /* Every sample of this series (buckets, sum, count) is shown by this line. */
        size_t from, to;
        table_range(&v->now, prefix, &from, &to);
        for (size_t i = from; i < to; i++)
            v->now.e[i].shown = 1;
        char ck[PROM_MAX_NAME * 4 + 1024];
        snprintf(ck, sizeof ck, "%s_count%s", s->family, strchr(prefix, '\1'));
        ck[strlen(ck) - 1] = '\0'; /* no \2 */
        ent_t *c = table_find(&v->now, ck);
        snprintf(ck, sizeof ck, "%s_sum%s", s->family, strchr(prefix, '\1'));
        ck[strlen(ck) - 1] = '\0';
        ent_t *sum = table_find(&v->now, ck);
        if (c)
            c->shown = 1;
        if (sum)
            sum->shown = 1;
        int secs = strstr(s->family, "_seconds") != NULL;
        printf("    %-50.50s count %s (%s/s) p50 %s p99 %s\n", label,
               F(fmt_num, c ? c->value : count), F(fmt_rate, c ? rate_key(v, c) : NAN),
               secs ? F(fmt_secs, p50) : F(fmt_num, p50), secs ? F(fmt_secs, p99) : F(fmt_num, p99));
        return;
    }
    e->shown = 1;
    if (s->type == PROM_COUNTER || (s->type == PROM_UNTYPED && strstr(s->name, "_total")))
        printf("    %-50.50s %14s %10s/s\n", label, F(fmt_num, e->value),
               F(fmt_rate, rate_key(v, e)));
    else
        printf("    %-50.50s %14s\n", label, F(fmt_num, e->value));
}

#define TOP_MAX_GROUPS 256

/* Whether s is listed in the generic sections: not in a summary (unless
 * --all), and not yet shown (a histogram's line shows all its samples). */
static ent_t *unshown(const view_t *v, const prom_sample_t *s)
{
    if (!v->all && summarized_family(s->family))
        return NULL;
    char *key = series_key(s->name, s);
    ent_t *e = key ? table_find(&v->now, key) : NULL;
    free(key);
    return e && !e->shown ? e : NULL;
}

/* The groups of the families listed, in the order the endpoints serve them. */
static size_t list_groups(const view_t *v, endpoint_t *eps, size_t neps,
                          char groups[][64])
{
    size_t n = 0;
    for (size_t i = 0; i < neps; i++)
        for (size_t k = 0; eps[i].up && k < eps[i].doc.n; k++) {
            const prom_sample_t *s = &eps[i].doc.samples[k];
            if (!v->all && summarized_family(s->family))
                continue;
            char g[64];
            group_of(s->family, g, sizeof g);
            size_t j = 0;
            while (j < n && strcmp(groups[j], g) != 0)
                j++;
            if (j == n && n < TOP_MAX_GROUPS)
                memcpy(groups[n++], g, sizeof g);
        }
    return n;
}

/* Every family present (not shown by a summary, unless --all), grouped by
 * the word after bettong_, groups and series in the order served. */
static void show_generic(const view_t *v, endpoint_t *eps, size_t neps)
{
    static char groups[TOP_MAX_GROUPS][64];
    size_t ngroups = list_groups(v, eps, neps, groups);
    for (size_t g = 0; g < ngroups; g++) {
        printf("\n%s\n", groups[g]);
        for (size_t i = 0; i < neps; i++)
            for (size_t k = 0; eps[i].up && k < eps[i].doc.n; k++) {
                const prom_sample_t *s = &eps[i].doc.samples[k];
                char mine[64];
                group_of(s->family, mine, sizeof mine);
                ent_t *e = strcmp(mine, groups[g]) == 0 ? unshown(v, s) : NULL;
                if (e)
                    show_series(v, e);
            }
    }
}

/* ------------------------------------------------------------ a screen */

static void show_header(endpoint_t *eps, size_t neps, double seconds)
{
    time_t now = time(NULL);
    struct tm tm;
    char when[32];
    strftime(when, sizeof when, "%H:%M:%S", localtime_r(&now, &tm));
    size_t up = 0;
    for (size_t i = 0; i < neps; i++)
        up += eps[i].up;
    char rate[64];
    if (seconds > 0)
        snprintf(rate, sizeof rate, "rates over %.2f s", seconds);
    else
        snprintf(rate, sizeof rate, "one scrape, no rates");
    printf("bettong top  %s  %zu of %zu endpoints up  %s\n", when, up, neps, rate);
    for (size_t i = 0; i < neps; i++) {
        if (!eps[i].up) {
            printf("  %-24s DOWN: %s\n", eps[i].addr, eps[i].err);
            continue;
        }
        const char *w = worker_name(&eps[i]);
        const char *kind = info_label(&eps[i], "bettong_service_info", "service");
        printf("  %-24s %s%s (%zu samples)\n", eps[i].addr, w ? "worker " : "",
               w ? w : kind ? kind : "up", eps[i].doc.n);
    }
}

static int show(endpoint_t *now, endpoint_t *before, size_t neps, double seconds, int all)
{
    view_t v = {.seconds = seconds, .all = all};
    if (table_build(&v.now, now, neps, NULL) < 0 || table_build(&v.before, before, neps, NULL) < 0) {
        table_free(&v.now);
        table_free(&v.before);
        fprintf(stderr, "bettong top: out of memory\n");
        return -1;
    }
    show_header(now, neps, seconds);
    show_stream(&v, now, before, neps);
    show_pool(&v);
    show_pool_workers(&v);
    show_store(&v);
    show_generic(&v, now, neps);
    table_free(&v.now);
    table_free(&v.before);
    return 0;
}

/* ------------------------------------------------------------ command line */

enum { OPT_INTERVAL, OPT_ONCE, OPT_TIMEOUT, OPT_ALL, OPT_CONTROL, OPT_HELP };

static const cli_option_t top_options[] = {
    {OPT_INTERVAL, CLI_VALUE, {"--interval", "-i"}},
    {OPT_ONCE, CLI_FLAG, {"--once", "-1"}},
    {OPT_TIMEOUT, CLI_VALUE, {"--timeout"}},
    {OPT_ALL, CLI_FLAG, {"--all", "-a"}},
    {OPT_CONTROL, CLI_VALUE, {"--control", "-c"}},
    {OPT_HELP, CLI_FLAG, {"--help"}},
};

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong top [options] H:P [H:P...]\n"
"\n"
"A terminal view of the metrics of running services: each H:P is the\n"
"metrics address of a worker (`bettong run --metrics-listen`; every worker logs\n"
"'metrics listening on H:P'), a pool or a store. Every --interval the\n"
"addresses' /metrics are read and shown: for a stream, the messages per\n"
"source, step and sink (totals over the workers and per second), the steps'\n"
"and the end-to-end latency percentiles (p50, p99, estimated from the\n"
"histograms' buckets of the last interval), errors, backlogs, and a line per\n"
"worker; then every other family present (pools, stores, checkpoints),\n"
"grouped by the word after bettong_, with rates for counters and percentiles\n"
"for histograms. On a terminal the screen is redrawn until interrupted;\n"
"otherwise (or with --once) one snapshot is printed and top exits.\n"
"\n"
"  --interval, -i SECONDS  time between two scrapes (default 1); with --once,\n"
"                          two scrapes this far apart give the rates, and 0\n"
"                          takes one scrape (totals only)\n"
"  --once, -1              print one snapshot and exit: 0 if every address\n"
"                          answered, 1 if one did not (the reason is shown)\n"
"  --timeout SECONDS       give up on an address after this long (default 2)\n"
"  --all, -a               also list the families the stream summary shows\n"
"  --help                  this text\n"
"\n"
"A cluster's workers tell each other their metrics addresses: given one\n"
"worker, top finds the others (from its /topology.json) and shows them all.\n"
"--control is refused: give a worker's metrics address instead.\n");
}

typedef struct {
    double interval, timeout;
    int once, all;
    const char *addrs[TOP_MAX_ENDPOINTS];
    size_t naddrs;
} top_args_t;

static int parse_args(int argc, char **argv, top_args_t *a)
{
    *a = (top_args_t){.interval = 1, .timeout = 2};
    cli_t c;
    cli_init(&c, argc, argv);
    int id;
    const char *val;
    char err[300];
    cli_status st;
    while ((st = cli_next(&c, top_options, sizeof top_options / sizeof *top_options, &id, &val,
                          err, sizeof err)) != CLI_END) {
        if (st == CLI_ERROR) {
            fprintf(stderr, "bettong top: %s\n", err);
            return 2;
        }
        if (st == CLI_POSITIONAL) {
            if (a->naddrs == TOP_MAX_ENDPOINTS) {
                fprintf(stderr, "bettong top: at most %d addresses\n", TOP_MAX_ENDPOINTS);
                return 2;
            }
            a->addrs[a->naddrs++] = val;
            continue;
        }
        switch (id) {
        case OPT_INTERVAL:
            if (cli_parse_nonneg(val, &a->interval) < 0 || a->interval > 3600) {
                fprintf(stderr, "bettong top: --interval wants seconds (0 to 3600), not '%s'\n",
                        val);
                return 2;
            }
            break;
        case OPT_TIMEOUT:
            if (cli_parse_nonneg(val, &a->timeout) < 0 || a->timeout <= 0 || a->timeout > 600) {
                fprintf(stderr, "bettong top: --timeout wants seconds (> 0, up to 600), not "
                        "'%s'\n", val);
                return 2;
            }
            break;
        case OPT_ONCE: a->once = 1; break;
        case OPT_ALL: a->all = 1; break;
        case OPT_CONTROL:
            fprintf(stderr, "bettong top: --control: give the metrics address of any worker "
                    "instead (each logs 'metrics listening on H:P'; `bettong cluster status` "
                    "lists them): top finds the other workers from it\n");
            return 2;
        case OPT_HELP: usage(stdout); return 0;
        }
    }
    if (a->interval == 0 && !a->once && isatty(STDOUT_FILENO)) {
        fprintf(stderr, "bettong top: --interval 0 takes one scrape: only with --once\n");
        return 2;
    }
    if (a->naddrs == 0) {
        fprintf(stderr, "bettong top: no metrics address given\n\n");
        usage(stderr);
        return 2;
    }
    return -1;
}

static void sleep_seconds(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static double scrape_all(endpoint_t *eps, size_t n, double timeout)
{
    double t = sock_now();
    for (size_t i = 0; i < n; i++)
        scrape(&eps[i], timeout);
    return t;
}

/* The other workers of a cluster, from the topology page of each stream
 * worker given: one address is enough to watch the whole cluster. */
static void add_members(top_args_t *a, double timeout)
{
    static char found[TOP_MAX_ENDPOINTS][SCRAPE_ADDR_MAX];
    size_t nfound = 0, given = a->naddrs;
    for (size_t i = 0; i < given && nfound < TOP_MAX_ENDPOINTS; i++) {
        size_t n = 0;
        if (scrape_members(a->addrs[i], timeout, found + nfound, TOP_MAX_ENDPOINTS - nfound,
                           &n) < 0)
            continue; /* (the scrape says why) */
        for (size_t k = nfound; k < nfound + n; k++) {
            int known = 0;
            for (size_t j = 0; j < a->naddrs && !known; j++)
                known = strcmp(a->addrs[j], found[k]) == 0;
            if (!known && a->naddrs < TOP_MAX_ENDPOINTS)
                a->addrs[a->naddrs++] = found[k];
        }
        nfound += n;
    }
}

int cmd_top(int argc, char **argv)
{
    top_args_t a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    add_members(&a, a.timeout);
    int once = a.once || !isatty(STDOUT_FILENO);
    /* A screen goes out in one write, not line by line (no flicker). */
    static char screen[1 << 16];
    if (!once)
        setvbuf(stdout, screen, _IOFBF, sizeof screen);
    endpoint_t *now = calloc(a.naddrs, sizeof *now), *before = calloc(a.naddrs, sizeof *before);
    if (!now || !before) {
        fprintf(stderr, "bettong top: out of memory\n");
        free(now);
        free(before);
        return 1;
    }
    for (size_t i = 0; i < a.naddrs; i++) {
        now[i].addr = before[i].addr = a.addrs[i];
        prom_doc_init(&now[i].doc);
        prom_doc_init(&before[i].doc);
    }
    double t_before = scrape_all(before, a.naddrs, a.timeout), t_now = t_before;
    rc = 0;
    for (;;) {
        double seconds = 0;
        if (a.interval > 0) {
            sleep_seconds(a.interval);
            t_now = scrape_all(now, a.naddrs, a.timeout);
            seconds = t_now - t_before;
        } else {
            for (size_t i = 0; i < a.naddrs; i++) { /* one scrape: show it as it is */
                endpoint_t tmp = now[i];
                now[i] = before[i];
                before[i] = tmp;
            }
        }
        if (!once)
            fputs("\033[H\033[2J", stdout);
        if (show(now, before, a.naddrs, seconds, a.all) < 0)
            rc = 1;
        fflush(stdout);
        if (once)
            break;
        for (size_t i = 0; i < a.naddrs; i++) {
            endpoint_t tmp = before[i];
            before[i] = now[i];
            now[i] = tmp;
        }
        t_before = t_now;
    }
    for (size_t i = 0; i < a.naddrs; i++) {
        if (!now[i].up) {
            fprintf(stderr, "bettong top: %s: %s\n", now[i].addr, now[i].err);
            rc = 1;
        }
        prom_doc_free(&now[i].doc);
        prom_doc_free(&before[i].doc);
    }
    free(now);
    free(before);
    return rc;
}
