/* Unit tests for src/util/promparse (the Prometheus text format parser of
 * `bettong top`) and src/tools/topcalc (rates, bucket deltas, quantiles):
 * what a Bettong endpoint renders parses back exactly, every malformed line
 * is refused with its number, and the arithmetic gives exact values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tools/topcalc.h"
#include "util/metrics.h"
#include "util/promparse.h"

static void parse_ok(prom_doc_t *d, const char *text)
{
    char err[200] = "";
    prom_doc_init(d);
    if (prom_parse(d, text, strlen(text), err, sizeof err) != 0)
        fail_msg("refused: %s", err);
}

static void test_samples_labels_types(void **state)
{
    prom_doc_t d;
    parse_ok(&d, "# HELP a_total Some help, with \\ and \"quotes\".\n"
                 "# TYPE a_total counter\n"
                 "a_total{pipeline=\"p \\\"q\\\"\",step=\"0\" , name=\"x\\\\y\\nz\",} 12\n"
                 "\n"
                 "# a comment\n"
                 "b -2.5e3 1712345678000\r\n"
                 "  # TYPE h histogram\n"
                 "h_bucket{le=\"0.5\"} 1\n"
                 "h_bucket{le=\"+Inf\"} 3\n"
                 "h_sum 2.25\n"
                 "h_count 3\n"
                 "c_count NaN\n"
                 "i{} +Inf\n"
                 "j -Inf");
    assert_int_equal(d.n, 9);
    prom_sample_t *a = &d.samples[0];
    assert_string_equal(a->name, "a_total");
    assert_string_equal(a->family, "a_total");
    assert_int_equal(a->type, PROM_COUNTER);
    assert_true(a->value == 12);
    assert_int_equal(a->nlabels, 3);
    assert_string_equal(prom_label(a, "pipeline"), "p \"q\"");
    assert_string_equal(prom_label(a, "step"), "0");
    assert_string_equal(prom_label(a, "name"), "x\\y\nz");
    assert_null(prom_label(a, "nope"));
    assert_string_equal(d.samples[1].name, "b");
    assert_int_equal(d.samples[1].type, PROM_UNTYPED);
    assert_true(d.samples[1].value == -2500);
    for (size_t i = 2; i < 6; i++) {
        assert_string_equal(d.samples[i].family, "h");
        assert_int_equal(d.samples[i].type, PROM_HISTOGRAM);
    }
    assert_string_equal(prom_label(&d.samples[2], "le"), "0.5");
    assert_true(d.samples[4].value == 2.25);
    /* c_count has no histogram c: its own family, untyped. */
    assert_string_equal(d.samples[6].family, "c_count");
    assert_true(isnan(d.samples[6].value));
    assert_true(isinf(d.samples[7].value) && d.samples[7].value > 0);
    assert_int_equal(d.samples[7].nlabels, 0);
    assert_true(isinf(d.samples[8].value) && d.samples[8].value < 0);
    prom_doc_free(&d);
}

/* What util/metrics renders (escapes, histograms, gauges) parses back. */
static uint64_t counter = 7;
static double half(void *ctx) { return 0.5; }

static void test_round_trip_of_metrics_render(void **state)
{
    metrics_t *m = metrics_new();
    static metrics_hist_t h;
    memset(&h, 0, sizeof h);
    metrics_hist_record(&h, 3);   /* bin 2: le 4 */
    metrics_hist_record(&h, 100); /* bin 7: le 128 */
    const char *l[] = {"where", "a \"b\"\\c\nd", NULL};
    assert_int_equal(metrics_counter(m, "t_total", "help \\ \n", l, &counter), 0);
    assert_int_equal(metrics_gauge_fn(m, "g", "a gauge", NULL, half, NULL), 0);
    assert_int_equal(metrics_histogram(m, "h_seconds", "h", NULL, &h, 1e-9, 1, 8), 0);
    buf_t b;
    buf_init(&b);
    assert_int_equal(metrics_render(m, &b), 0);
    prom_doc_t d;
    char *text = strndup((const char *)buf_head(&b), buf_unread(&b));
    parse_ok(&d, text);
    assert_string_equal(prom_label(&d.samples[0], "where"), "a \"b\"\\c\nd");
    assert_true(d.samples[0].value == 7);
    assert_true(d.samples[1].value == 0.5);
    assert_int_equal(d.samples[1].type, PROM_GAUGE);
    /* 8 buckets (2^1..2^8 ns) + Inf, sum, count. */
    assert_int_equal(d.n, 2 + 9 + 2);
    topcalc_bucket_t bk[9];
    for (size_t i = 0; i < 9; i++) {
        const prom_sample_t *s = &d.samples[2 + i];
        assert_string_equal(s->family, "h_seconds");
        const char *le = prom_label(s, "le");
        bk[i] = (topcalc_bucket_t){strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL),
                                   s->value};
    }
    assert_true(bk[1].le == 4e-9 && bk[1].count == 1);
    assert_true(bk[6].le == 128e-9 && bk[6].count == 2);
    assert_true(bk[8].count == 2);
    assert_true(d.samples[12].value == 2);
    prom_doc_free(&d);
    free(text);
    buf_free(&b);
    metrics_free(m);
}

static void refused(const char *text, const char *want)
{
    prom_doc_t d;
    char err[200] = "";
    prom_doc_init(&d);
    if (prom_parse(&d, text, strlen(text), err, sizeof err) == 0)
        fail_msg("accepted: %s", text);
    if (strcmp(err, want) != 0)
        fail_msg("for %s: got '%s', want '%s'", text, err, want);
    assert_int_equal(d.n, 0);
    assert_null(d.samples);
}

static void test_malformed_lines_are_refused(void **state)
{
    refused("<html>", "line 1: not a sample line (a metric name expected)");
    refused("ok 1\n9x 2", "line 2: not a sample line (a metric name expected)");
    refused("x", "line 1: a blank or '{' expected after the metric name");
    refused("x{a=\"1\"}", "line 1: x: no value");
    refused("x 1x", "line 1: x: '1x' is not a number");
    refused("x 0x10", "line 1: x: '0x10' is not a number");
    refused("x inf", "line 1: x: 'inf' is not a number");
    refused("x 1 2.5", "line 1: x: '2.5' is not a timestamp");
    refused("x 1 2 3", "line 1: x: text after the value and timestamp");
    refused("x{a} 1", "line 1: '=' expected after label a");
    refused("x{a=1} 1", "line 1: label a: a quoted value (escapes \\\\ \\\" \\n) expected");
    refused("x{a=\"1} 1", "line 1: label a: a quoted value (escapes \\\\ \\\" \\n) expected");
    refused("x{a=\"\\t\"} 1", "line 1: label a: a quoted value (escapes \\\\ \\\" \\n) expected");
    refused("x{a=\"1\" b=\"2\"} 1", "line 1: ',' or '}' expected after a label");
    refused("x{a=\"1\",a=\"2\"} 1", "line 1: label a given twice");
    refused("x{1=\"1\"} 1", "line 1: a label name expected");
    refused("x{a:b=\"1\"} 1", "line 1: '=' expected after label a");
    refused("# TYPE x\n", "line 1: # TYPE wants a metric name and a type");
    refused("# TYPE x countr\n", "line 1: # TYPE x: unknown type 'countr'");
    refused("# TYPE x counter y\n", "line 1: # TYPE x: text after the type");
    refused("# TYPE 1x counter\n", "line 1: # TYPE wants a metric name and a type");
    const char nul[] = "x 1\n\0y 2\n";
    prom_doc_t d;
    char err[100];
    prom_doc_init(&d);
    assert_int_equal(prom_parse(&d, nul, sizeof nul - 1, err, sizeof err), -1);
    assert_string_equal(err, "a NUL byte in the text");
}

static void test_limits(void **state)
{
    /* 33 labels: one more than PROM_MAX_LABELS. */
    char text[2048] = "x{";
    for (int i = 0; i <= PROM_MAX_LABELS; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "l%d=\"v\",", i);
    strcat(text, "} 1");
    refused(text, "line 1: more than 32 labels");
    char name[PROM_MAX_NAME + 10];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    char line[PROM_MAX_NAME + 20];
    snprintf(line, sizeof line, "%s 1", name);
    refused(line, "line 1: not a sample line (a metric name expected)");
}

/* ------------------------------------------------------------ topcalc */

static void test_rates(void **state)
{
    assert_true(topcalc_rate(100, 350, 2.5) == 100);
    assert_true(topcalc_rate(100, 100, 1) == 0);
    assert_true(topcalc_rate(500, 30, 2) == 15); /* reset: the new value is the increase */
    assert_true(isnan(topcalc_rate(1, 2, 0)));
    assert_true(isnan(topcalc_rate(NAN, 2, 1)));
    assert_true(isnan(topcalc_rate(1, INFINITY, 1)));
}

static void test_quantiles(void **state)
{
    /* 100 observations: 10 <= 1, 50 in (1, 2], 40 in (2, 4]. */
    topcalc_bucket_t b[] = {{4, 100}, {INFINITY, 100}, {1, 10}, {2, 60}};
    topcalc_sort(b, 4);
    assert_true(b[0].le == 1 && b[3].le == INFINITY);
    assert_true(topcalc_quantile(b, 4, 0.05) == 0.5);  /* rank 5 of 10 in [0, 1] */
    assert_true(topcalc_quantile(b, 4, 0.5) == 1.8);   /* rank 50: 1 + 1 * 40/50 */
    assert_true(topcalc_quantile(b, 4, 0.99) == 3.95); /* rank 99: 2 + 2 * 39/40 */
    assert_true(topcalc_quantile(b, 4, 1) == 4);
    assert_true(topcalc_quantile(b, 4, 0) == 0);
    /* The rank in +Inf: the highest finite bound. */
    topcalc_bucket_t c[] = {{1, 1}, {INFINITY, 4}};
    assert_true(topcalc_quantile(c, 2, 0.5) == 1);
    /* Nothing observed, no +Inf bucket, q out of range. */
    topcalc_bucket_t e[] = {{1, 0}, {INFINITY, 0}};
    assert_true(isnan(topcalc_quantile(e, 2, 0.5)));
    assert_true(isnan(topcalc_quantile(b, 3, 0.5)));
    assert_true(isnan(topcalc_quantile(b, 4, 1.5)));
    assert_true(isnan(topcalc_quantile(b, 0, 0.5)));
    /* Bettong's power-of-two buckets: 64 observations at 100 ns (le 128 ns). */
    topcalc_bucket_t p[] = {{64e-9, 0}, {128e-9, 64}, {256e-9, 64}, {INFINITY, 64}};
    assert_true(fabs(topcalc_quantile(p, 4, 0.5) - 96e-9) < 1e-18);
}

static void test_delta(void **state)
{
    topcalc_bucket_t before[] = {{1, 5}, {2, 8}, {INFINITY, 8}};
    topcalc_bucket_t after[] = {{1, 7}, {2, 18}, {4, 19}, {INFINITY, 20}};
    topcalc_bucket_t d[4];
    /* The 4 bucket is new: it held at least the 2 bucket's 8 before. */
    assert_int_equal(topcalc_delta(before, 3, after, 4, d), 4);
    assert_true(d[0].le == 1 && d[0].count == 2);
    assert_true(d[1].le == 2 && d[1].count == 10);
    assert_true(d[2].le == 4 && d[2].count == 11);
    assert_true(isinf(d[3].le) && d[3].count == 12);
    assert_true(topcalc_quantile(d, 4, 0.5) == 1.5); /* rank 6: 1 + 1 * (6-2)/(10-2) */
    /* A reset: the new counts as they are. */
    topcalc_bucket_t small[] = {{1, 1}, {2, 2}, {INFINITY, 2}};
    assert_int_equal(topcalc_delta(before, 3, small, 3, d), 3);
    assert_true(d[0].count == 1 && d[1].count == 2 && d[2].count == 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_samples_labels_types),
        cmocka_unit_test(test_round_trip_of_metrics_render),
        cmocka_unit_test(test_malformed_lines_are_refused),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_rates),
        cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_delta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
