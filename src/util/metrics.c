#include "util/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { SRC_U64, SRC_FN, SRC_HIST } source_kind_t;

typedef struct {
    char *labels; /* rendered: name="value",... (escaped); "" for none */
    source_kind_t kind;
    const uint64_t *value;
    double (*fn)(void *ctx);
    void *ctx;
    const metrics_hist_t *hist;
    double scale;
    unsigned lo, hi;
    char (*le)[48]; /* the buckets' le="..." labels, made once at registration */
} series_t;

typedef struct {
    char *name, *help;
    metric_type_t type;
    series_t *series;
    size_t nseries, cap;
    void (*collect)(void *ctx, metrics_out_t *out);
    void *collect_ctx;
} family_t;

struct metrics {
    family_t *fams;
    size_t nfams, cap;
};

struct metrics_out {
    const family_t *fam;
    buf_t *b;
    int err;
};

metrics_t *metrics_new(void) { return calloc(1, sizeof(metrics_t)); }

void metrics_free(metrics_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfams; i++) {
        family_t *f = &m->fams[i];
        for (size_t j = 0; j < f->nseries; j++) {
            free(f->series[j].labels);
            free(f->series[j].le);
        }
        free(f->series);
        free(f->name);
        free(f->help);
    }
    free(m->fams);
    free(m);
}

int metrics_valid_name(const char *name)
{
    if (!name || !*name || (*name >= '0' && *name <= '9'))
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_' || *p == ':'))
            return 0;
    return 1;
}

static int put(buf_t *b, const char *s) { return buf_append(b, s, strlen(s)); }

int metrics_escape(buf_t *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        const char *esc = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
        if (esc ? put(out, esc) : buf_append(out, p, 1))
            return -1;
    }
    return 0;
}

/* HELP text escapes only backslash and newline. */
static int escape_help(buf_t *out, const char *help)
{
    for (const char *p = help; *p; p++) {
        const char *esc = *p == '\\' ? "\\\\" : *p == '\n' ? "\\n" : NULL;
        if (esc ? put(out, esc) : buf_append(out, p, 1))
            return -1;
    }
    return 0;
}

/* A count as decimal digits, without snprintf (most of what a scrape is). */
static int put_u64(buf_t *out, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_append(out, tmp + i, sizeof tmp - i);
}

int metrics_number(buf_t *out, double v)
{
    char tmp[40];
    if (v >= 0 && v < 9007199254740992.0 && v == (double)(uint64_t)v)
        return put_u64(out, (uint64_t)v);
    if (isnan(v))
        return put(out, "NaN");
    if (isinf(v))
        return put(out, v > 0 ? "+Inf" : "-Inf");
    /* Integers (counts, bytes) exactly as integers; others to 17 digits. */
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(tmp, sizeof tmp, "%.0f", v);
        return put(out, tmp);
    }
    /* The shortest of 15, 16, 17 digits that reads back as the same double. */
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(tmp, sizeof tmp, "%.*g", digits, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    return put(out, tmp);
}

/* The labels rendered once, at registration: name="value",... */
static char *render_labels(metrics_labels_t labels)
{
    buf_t b;
    buf_init(&b);
    int bad = 0;
    for (size_t i = 0; labels && labels[i]; i += 2) {
        if (!labels[i + 1] || !metrics_valid_name(labels[i]) || strchr(labels[i], ':')) {
            bad = 1;
            break;
        }
        bad = (i && put(&b, ",")) || put(&b, labels[i]) || put(&b, "=\"") ||
              metrics_escape(&b, labels[i + 1]) || put(&b, "\"");
        if (bad)
            break;
    }
    char *s = bad ? NULL : malloc(buf_unread(&b) + 1);
    if (s) {
        if (buf_unread(&b))
            memcpy(s, buf_head(&b), buf_unread(&b));
        s[buf_unread(&b)] = '\0';
    }
    buf_free(&b);
    return s;
}

static family_t *family(metrics_t *m, const char *name, const char *help, metric_type_t type)
{
    if (!m || !metrics_valid_name(name))
        return NULL;
    for (size_t i = 0; i < m->nfams; i++)
        if (strcmp(m->fams[i].name, name) == 0)
            return m->fams[i].type == type && !m->fams[i].collect ? &m->fams[i] : NULL;
    if (m->nfams == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 16;
        family_t *f = realloc(m->fams, cap * sizeof *f);
        if (!f)
            return NULL;
        m->fams = f;
        m->cap = cap;
    }
    family_t *f = &m->fams[m->nfams];
    memset(f, 0, sizeof *f);
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->type = type;
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        return NULL;
    }
    m->nfams++;
    return f;
}

static series_t *add_series(metrics_t *m, const char *name, const char *help, metric_type_t type,
                            metrics_labels_t labels)
{
    family_t *f = family(m, name, help, type);
    if (!f)
        return NULL;
    if (f->nseries == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 4;
        series_t *s = realloc(f->series, cap * sizeof *s);
        if (!s)
            return NULL;
        f->series = s;
        f->cap = cap;
    }
    series_t *s = &f->series[f->nseries];
    memset(s, 0, sizeof *s);
    if (!(s->labels = render_labels(labels)))
        return NULL;
    f->nseries++;
    return s;
}

int metrics_counter(metrics_t *m, const char *name, const char *help, metrics_labels_t labels,
                    const uint64_t *value)
{
    series_t *s = add_series(m, name, help, METRIC_COUNTER, labels);
    if (!s)
        return -1;
    s->kind = SRC_U64;
    s->value = value;
    return 0;
}

int metrics_gauge(metrics_t *m, const char *name, const char *help, metrics_labels_t labels,
                  const uint64_t *value)
{
    series_t *s = add_series(m, name, help, METRIC_GAUGE, labels);
    if (!s)
        return -1;
    s->kind = SRC_U64;
    s->value = value;
    return 0;
}

int metrics_gauge_fn(metrics_t *m, const char *name, const char *help, metrics_labels_t labels,
                     double (*fn)(void *ctx), void *ctx)
{
    series_t *s = add_series(m, name, help, METRIC_GAUGE, labels);
    if (!s)
        return -1;
    s->kind = SRC_FN;
    s->fn = fn;
    s->ctx = ctx;
    return 0;
}

int metrics_service_info(metrics_t *m, const char *service)
{
    static const uint64_t one = 1;
    const char *l[] = {"service", service, NULL};
    return metrics_gauge(m, "bettong_service_info",
                         "1; its label names the kind of service this endpoint is: stream (a "
                         "worker of bettong run), pool or store.", l, &one);
}

/* The buckets' le="..." labels of a histogram, made once. NULL: no memory. */
static char (*bucket_labels(double scale, unsigned lo, unsigned hi))[48]
{
    char (*le)[48] = calloc(hi - lo + 1, sizeof *le);
    for (unsigned k = lo; le && k <= hi; k++) {
        buf_t num;
        buf_init(&num);
        if (metrics_number(&num, ldexp(1.0, (int)k) * scale) < 0) {
            buf_free(&num);
            free(le);
            return NULL;
        }
        snprintf(le[k - lo], sizeof le[0], "le=\"%.*s\"", (int)buf_unread(&num),
                 (const char *)buf_head(&num));
        buf_free(&num);
    }
    return le;
}

int metrics_histogram(metrics_t *m, const char *name, const char *help, metrics_labels_t labels,
                      const metrics_hist_t *h, double scale, unsigned lo, unsigned hi)
{
    if (lo > hi || hi >= METRICS_HIST_BINS)
        return -1;
    char (*le)[48] = bucket_labels(scale, lo, hi);
    series_t *s = le ? add_series(m, name, help, METRIC_HISTOGRAM, labels) : NULL;
    if (!s) {
        free(le);
        return -1;
    }
    s->kind = SRC_HIST;
    s->hist = h;
    s->scale = scale;
    s->lo = lo;
    s->hi = hi;
    s->le = le;
    return 0;
}

int metrics_collector(metrics_t *m, const char *name, const char *help, metric_type_t type,
                      void (*collect)(void *ctx, metrics_out_t *out), void *ctx)
{
    if (type == METRIC_HISTOGRAM)
        return -1;
    for (size_t i = 0; m && i < m->nfams; i++)
        if (strcmp(m->fams[i].name, name) == 0)
            return -1;
    family_t *f = family(m, name, help, type);
    if (!f)
        return -1;
    f->collect = collect;
    f->collect_ctx = ctx;
    return 0;
}

/* name{labels[,extra]} value\n */
static int sample(buf_t *b, const char *name, const char *suffix, const char *labels,
                  const char *extra, double v)
{
    int has = labels && *labels, more = extra && *extra;
    return put(b, name) || put(b, suffix) || ((has || more) && put(b, "{")) ||
           (has && put(b, labels)) || (has && more && put(b, ",")) || (more && put(b, extra)) ||
           ((has || more) && put(b, "}")) || put(b, " ") || metrics_number(b, v) ||
           put(b, "\n");
}

void metrics_emit(metrics_out_t *out, metrics_labels_t labels, double value)
{
    char *l = render_labels(labels);
    if (!l || sample(out->b, out->fam->name, "", l, NULL, value))
        out->err = 1;
    free(l);
}

static int render_hist(buf_t *b, const char *name, const series_t *s)
{
    const metrics_hist_t *h = s->hist;
    uint64_t cum = 0;
    for (unsigned k = 0; k < s->lo; k++)
        cum += h->bins[k];
    for (unsigned k = s->lo; k <= s->hi; k++) {
        cum += h->bins[k];
        if (sample(b, name, "_bucket", s->labels, s->le[k - s->lo], (double)cum))
            return -1;
    }
    return sample(b, name, "_bucket", s->labels, "le=\"+Inf\"", (double)h->count) ||
           sample(b, name, "_sum", s->labels, NULL, (double)h->sum * s->scale) ||
           sample(b, name, "_count", s->labels, NULL, (double)h->count);
}

static const char *type_name(metric_type_t t)
{
    return t == METRIC_COUNTER ? "counter" : t == METRIC_GAUGE ? "gauge" : "histogram";
}

static int render_family(const family_t *f, buf_t *b)
{
    if (put(b, "# HELP ") || put(b, f->name) || put(b, " ") || escape_help(b, f->help) ||
        put(b, "\n# TYPE ") || put(b, f->name) || put(b, " ") || put(b, type_name(f->type)) ||
        put(b, "\n"))
        return -1;
    if (f->collect) {
        metrics_out_t out = {.fam = f, .b = b};
        f->collect(f->collect_ctx, &out);
        return out.err ? -1 : 0;
    }
    for (size_t j = 0; j < f->nseries; j++) {
        const series_t *s = &f->series[j];
        int rc = s->kind == SRC_HIST ? render_hist(b, f->name, s)
                 : sample(b, f->name, "", s->labels, NULL,
                          s->kind == SRC_U64 ? (double)*s->value : s->fn(s->ctx));
        if (rc)
            return -1;
    }
    return 0;
}

int metrics_render(const metrics_t *m, buf_t *out)
{
    for (size_t i = 0; m && i < m->nfams; i++)
        if (render_family(&m->fams[i], out))
            return -1;
    return 0;
}
