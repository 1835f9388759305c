/* Fuzz target: the Prometheus text format parser of `bettong top`
 * (util/promparse.c) and the quantile arithmetic it feeds (tools/topcalc.c).
 *
 * Input: the body of a /metrics answer, as any server may send it. Checks:
 * prom_parse returns 0 or -1; on -1 the message names a line (or the NUL,
 * the memory, a limit) and the document is empty; on 0 every sample has a
 * valid metric name, valid and distinct label names and a family, and the
 * document written back in the format (names, labels escaped by
 * util/metrics.c, values by metrics_number) parses again to the same
 * samples. The buckets of the samples that have an le label, when they form
 * a valid cumulative histogram, give quantiles within its bounds. The same
 * bytes as a whole HTTP answer (tools/scrape.c's scrape_http_body): a body
 * found lies within them, after the head's blank line, for a 200 status. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/scrape.h"
#include "tools/topcalc.h"
#include "util/buf.h"
#include "util/metrics.h"
#include "util/promparse.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static int valid_name(const char *s, int colon_ok)
{
    if (!*s)
        return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                    (colon_ok && *p == ':');
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return 0;
    }
    return 1;
}

static void check_sample(const prom_sample_t *s)
{
    CHECK(valid_name(s->name, 1));
    CHECK(s->family && valid_name(s->family, 1));
    CHECK(strncmp(s->name, s->family, strlen(s->family)) == 0);
    CHECK(s->type >= PROM_UNTYPED && s->type <= PROM_SUMMARY);
    CHECK(s->nlabels <= PROM_MAX_LABELS);
    for (size_t i = 0; i < s->nlabels; i++) {
        CHECK(valid_name(s->labels[i].name, 0));
        CHECK(s->labels[i].value);
        CHECK(prom_label(s, s->labels[i].name) == s->labels[i].value);
    }
}

static void write_sample(buf_t *b, const prom_sample_t *s)
{
    CHECK(buf_append(b, s->name, strlen(s->name)) == 0);
    CHECK(buf_append(b, "{", 1) == 0);
    for (size_t i = 0; i < s->nlabels; i++) {
        CHECK(buf_append(b, s->labels[i].name, strlen(s->labels[i].name)) == 0);
        CHECK(buf_append(b, "=\"", 2) == 0);
        CHECK(metrics_escape(b, s->labels[i].value) == 0);
        CHECK(buf_append(b, "\",", 2) == 0);
    }
    CHECK(buf_append(b, "} ", 2) == 0);
    CHECK(metrics_number(b, s->value) == 0);
    CHECK(buf_append(b, "\n", 1) == 0);
}

static int same_value(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

static void check_round_trip(const prom_doc_t *d)
{
    buf_t b;
    buf_init(&b);
    for (size_t i = 0; i < d->n; i++)
        write_sample(&b, &d->samples[i]);
    prom_doc_t again;
    prom_doc_init(&again);
    char err[300];
    CHECK(prom_parse(&again, (const char *)buf_head(&b), buf_unread(&b), err, sizeof err) == 0);
    CHECK(again.n == d->n);
    for (size_t i = 0; i < d->n; i++) {
        const prom_sample_t *x = &d->samples[i], *y = &again.samples[i];
        CHECK(strcmp(x->name, y->name) == 0);
        CHECK(same_value(x->value, y->value));
        CHECK(x->nlabels == y->nlabels);
        for (size_t k = 0; k < x->nlabels; k++) {
            CHECK(strcmp(x->labels[k].name, y->labels[k].name) == 0);
            CHECK(strcmp(x->labels[k].value, y->labels[k].value) == 0);
        }
    }
    prom_doc_free(&again);
    buf_free(&b);
}

static void check_quantiles(const prom_doc_t *d)
{
    topcalc_bucket_t b[64];
    size_t n = 0;
    for (size_t i = 0; i < d->n && n < 64; i++) {
        const char *le = prom_label(&d->samples[i], "le");
        if (!le)
            continue;
        char *end;
        double x = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, &end);
        if (!isinf(x) && (end == le || *end))
            continue;
        b[n++] = (topcalc_bucket_t){x, d->samples[i].value};
    }
    topcalc_sort(b, n);
    double q50 = topcalc_quantile(b, n, 0.5), q99 = topcalc_quantile(b, n, 0.99);
    topcalc_bucket_t delta[64];
    CHECK(topcalc_delta(b, n, b, n, delta) == n);
    for (size_t i = 0; i < n; i++)
        CHECK(delta[i].le == b[i].le || (isnan(delta[i].le) && isnan(b[i].le)));
    /* Bounds hold for a valid histogram: le >= 0, strictly rising, counts
     * finite, >= 0 and not falling, +Inf last. */
    int valid = n > 0 && isinf(b[n - 1].le) && b[n - 1].le > 0;
    for (size_t i = 0; valid && i < n; i++)
        valid = b[i].le >= 0 && isfinite(b[i].count) && b[i].count >= 0 &&
                (i == 0 || (b[i].le > b[i - 1].le && b[i].count >= b[i - 1].count));
    if (!valid)
        return;
    double top = n > 1 ? b[n - 2].le : 0;
    CHECK(isnan(q50) || (q50 >= 0 && q50 <= top));
    CHECK(isnan(q99) || (q99 >= 0 && q99 <= top));
    CHECK(isnan(q50) == isnan(q99));
    if (!isnan(q50) && n > 1)
        CHECK(q50 <= q99);
}

static void check_http_answer(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *body = NULL;
    size_t len = 0;
    char err[200] = "";
    if (scrape_http_body(p, size, &body, &len, err, sizeof err) < 0) {
        CHECK(err[0]);
        return;
    }
    CHECK(body >= p + 16 && body + len == p + size);
    CHECK(memcmp(p, "HTTP/1.", 7) == 0 && memcmp(p + 8, " 200", 4) == 0);
    CHECK(p[12] == ' ' || p[12] == '\r');
    CHECK(memcmp(body - 4, "\r\n\r\n", 4) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_http_answer(data, size);
    prom_doc_t d;
    prom_doc_init(&d);
    char err[300] = "";
    int rc = prom_parse(&d, (const char *)data, size, err, sizeof err);
    CHECK(rc == 0 || rc == -1);
    if (rc < 0) {
        CHECK(strncmp(err, "line ", 5) == 0 || strcmp(err, "a NUL byte in the text") == 0 ||
              strcmp(err, "out of memory") == 0);
        CHECK(d.n == 0 && d.samples == NULL && d.arena == NULL);
        return 0;
    }
    for (size_t i = 0; i < d.n; i++)
        check_sample(&d.samples[i]);
    check_round_trip(&d);
    check_quantiles(&d);
    prom_doc_free(&d);
    return 0;
}
