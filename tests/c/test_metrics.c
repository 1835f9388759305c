/* Unit tests for src/util/metrics (the Prometheus text format, exactly:
 * HELP/TYPE lines, labels and their escaping, numbers, power-of-two histogram
 * bins and their cumulative buckets, collectors, refused names) and for the
 * request parsing of src/net/httpd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/httpd.h"
#include "util/metrics.h"

/* The registry rendered, as a NUL-terminated string (to be freed). */
static char *render(const metrics_t *m)
{
    buf_t b;
    buf_init(&b);
    assert_int_equal(metrics_render(m, &b), 0);
    char *s = calloc(1, buf_unread(&b) + 1);
    if (buf_unread(&b))
        memcpy(s, buf_head(&b), buf_unread(&b));
    buf_free(&b);
    return s;
}

static double seven(void *ctx) { return *(double *)ctx; }

static void test_counters_gauges_exact(void **state)
{
    metrics_t *m = metrics_new();
    uint64_t a = 0, b = 5;
    double g = 0.25;
    const char *la[] = {"pipeline", "p1", "step", "0", NULL};
    const char *lb[] = {"pipeline", "p2", "step", "1", NULL};
    assert_int_equal(metrics_counter(m, "bettong_x_total", "Things.", la, &a), 0);
    assert_int_equal(metrics_counter(m, "bettong_x_total", "Things.", lb, &b), 0);
    assert_int_equal(metrics_gauge_fn(m, "bettong_g", "A gauge.", NULL, seven, &g), 0);
    a = 3; /* values are read when rendering */
    char *s = render(m);
    assert_string_equal(s,
                        "# HELP bettong_x_total Things.\n"
                        "# TYPE bettong_x_total counter\n"
                        "bettong_x_total{pipeline=\"p1\",step=\"0\"} 3\n"
                        "bettong_x_total{pipeline=\"p2\",step=\"1\"} 5\n"
                        "# HELP bettong_g A gauge.\n"
                        "# TYPE bettong_g gauge\n"
                        "bettong_g 0.25\n");
    free(s);
    metrics_free(m);
}

static void test_service_info(void **state)
{
    metrics_t *m = metrics_new();
    assert_int_equal(metrics_service_info(m, "pool"), 0);
    char *s = render(m);
    assert_string_equal(s,
                        "# HELP bettong_service_info 1; its label names the kind of service "
                        "this endpoint is: stream (a worker of bettong run), pool or store.\n"
                        "# TYPE bettong_service_info gauge\n"
                        "bettong_service_info{service=\"pool\"} 1\n");
    free(s);
    metrics_free(m);
}

static void test_label_and_help_escaping(void **state)
{
    metrics_t *m = metrics_new();
    uint64_t v = 1;
    const char *l[] = {"name", "a\\b\"c\nd", NULL};
    assert_int_equal(metrics_counter(m, "e_total", "back\\slash\nnewline \"quoted\"", l, &v), 0);
    char *s = render(m);
    assert_string_equal(s,
                        "# HELP e_total back\\\\slash\\nnewline \"quoted\"\n"
                        "# TYPE e_total counter\n"
                        "e_total{name=\"a\\\\b\\\"c\\nd\"} 1\n");
    free(s);
    metrics_free(m);
}

static void test_hist_bins(void **state)
{
    /* bin 0: v <= 1; bin k: 2^(k-1) < v <= 2^k */
    assert_int_equal(metrics_hist_bin(0), 0);
    assert_int_equal(metrics_hist_bin(1), 0);
    assert_int_equal(metrics_hist_bin(2), 1);
    assert_int_equal(metrics_hist_bin(3), 2);
    assert_int_equal(metrics_hist_bin(4), 2);
    assert_int_equal(metrics_hist_bin(5), 3);
    assert_int_equal(metrics_hist_bin(1024), 10);
    assert_int_equal(metrics_hist_bin(1025), 11);
    assert_int_equal(metrics_hist_bin(UINT64_MAX), 64);
}

static void test_histogram_exact(void **state)
{
    metrics_t *m = metrics_new();
    metrics_hist_t h;
    memset(&h, 0, sizeof h);
    /* 1 -> bin 0, 2 -> 1, 3 and 4 -> 2, 8 -> 3, 100 -> 7 (beyond hi) */
    uint64_t values[] = {1, 2, 3, 4, 8, 100};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        metrics_hist_record(&h, values[i]);
    const char *l[] = {"step", "s", NULL};
    assert_int_equal(metrics_histogram(m, "lat_seconds", "Latency.", l, &h, 0.5, 1, 3), 0);
    char *s = render(m);
    /* le = 2^k * 0.5; the first bucket holds the bins below lo too; +Inf all;
     * sum = 118 * 0.5 */
    assert_string_equal(s,
                        "# HELP lat_seconds Latency.\n"
                        "# TYPE lat_seconds histogram\n"
                        "lat_seconds_bucket{step=\"s\",le=\"1\"} 2\n"
                        "lat_seconds_bucket{step=\"s\",le=\"2\"} 4\n"
                        "lat_seconds_bucket{step=\"s\",le=\"4\"} 5\n"
                        "lat_seconds_bucket{step=\"s\",le=\"+Inf\"} 6\n"
                        "lat_seconds_sum{step=\"s\"} 59\n"
                        "lat_seconds_count{step=\"s\"} 6\n");
    free(s);
    metrics_free(m);
}

static void test_histogram_ns_to_seconds(void **state)
{
    metrics_t *m = metrics_new();
    metrics_hist_t h;
    memset(&h, 0, sizeof h);
    metrics_hist_record(&h, 1500); /* 1.5 us: bin 11 (1024 < v <= 2048) */
    assert_int_equal(metrics_histogram(m, "t_seconds", "T.", NULL, &h, 1e-9, 10, 11), 0);
    char *s = render(m);
    assert_string_equal(s,
                        "# HELP t_seconds T.\n"
                        "# TYPE t_seconds histogram\n"
                        "t_seconds_bucket{le=\"1.024e-06\"} 0\n"
                        "t_seconds_bucket{le=\"2.048e-06\"} 1\n"
                        "t_seconds_bucket{le=\"+Inf\"} 1\n"
                        "t_seconds_sum 1.5e-06\n"
                        "t_seconds_count 1\n");
    free(s);
    metrics_free(m);
}

static void collect_two(void *ctx, metrics_out_t *out)
{
    const char *a[] = {"peer", "w1", NULL};
    const char *b[] = {"peer", "w\"2", NULL};
    metrics_emit(out, a, 10);
    metrics_emit(out, b, 20);
}

static void test_collector(void **state)
{
    metrics_t *m = metrics_new();
    assert_int_equal(metrics_collector(m, "fwd_total", "Forwarded.", METRIC_COUNTER,
                                       collect_two, NULL), 0);
    /* a family is either a collector's or series' */
    uint64_t v = 0;
    assert_int_equal(metrics_counter(m, "fwd_total", "Forwarded.", NULL, &v), -1);
    char *s = render(m);
    assert_string_equal(s,
                        "# HELP fwd_total Forwarded.\n"
                        "# TYPE fwd_total counter\n"
                        "fwd_total{peer=\"w1\"} 10\n"
                        "fwd_total{peer=\"w\\\"2\"} 20\n");
    free(s);
    metrics_free(m);
}

static void test_refused(void **state)
{
    metrics_t *m = metrics_new();
    uint64_t v = 0;
    const char *bad_label[] = {"no-dash", "x", NULL};
    const char *colon_label[] = {"a:b", "x", NULL};
    assert_int_equal(metrics_counter(m, "9starts_with_digit", "", NULL, &v), -1);
    assert_int_equal(metrics_counter(m, "has space", "", NULL, &v), -1);
    assert_int_equal(metrics_counter(m, "ok_total", "", bad_label, &v), -1);
    assert_int_equal(metrics_counter(m, "ok_total", "", colon_label, &v), -1);
    assert_int_equal(metrics_counter(m, "ok_total", "", NULL, &v), 0);
    /* the same name with another type */
    assert_int_equal(metrics_gauge(m, "ok_total", "", NULL, &v), -1);
    metrics_free(m);
}

static void number_is(double v, const char *want)
{
    buf_t b;
    buf_init(&b);
    assert_int_equal(metrics_number(&b, v), 0);
    assert_int_equal(buf_unread(&b), strlen(want));
    assert_memory_equal(buf_head(&b), want, strlen(want));
    buf_free(&b);
}

static void test_numbers(void **state)
{
    number_is(0, "0");
    number_is(12345678901234.0, "12345678901234");
    number_is(0.1, "0.1");
    number_is(1e-9, "1e-09");
    number_is(0.1 + 0.2, "0.30000000000000004"); /* 17 digits when 15 do not read back */
    number_is(-2.5, "-2.5");
    number_is(1.0 / 0.0, "+Inf");
    number_is(-1.0 / 0.0, "-Inf");
    number_is(0.0 / 0.0, "NaN");
}

static void parse_is(const char *req, int want, const char *want_path)
{
    char path[32];
    int rc = httpd_parse_request(req, strlen(req), path, sizeof path);
    assert_int_equal(rc, want);
    if (want == 0)
        assert_string_equal(path, want_path);
}

static void test_http_requests(void **state)
{
    parse_is("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 0, "/metrics");
    parse_is("GET /metrics?x=1 HTTP/1.0\r\n\r\n", 0, "/metrics");
    parse_is("GET / HTTP/1.1\n\n", 0, "/");
    parse_is("POST /metrics HTTP/1.1\r\n\r\n", 405, NULL);
    parse_is("get /metrics HTTP/1.1\r\n\r\n", 400, NULL);
    parse_is("GET /metrics HTTP/2.0\r\n\r\n", 505, NULL);
    parse_is("GET /metrics\r\n\r\n", 400, NULL);
    parse_is("GET  HTTP/1.1\r\n\r\n", 400, NULL);
    parse_is("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, NULL);
    parse_is("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", 414, NULL);
    parse_is("GET /a\x01b HTTP/1.1\r\n\r\n", 400, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_gauges_exact),
        cmocka_unit_test(test_service_info),
        cmocka_unit_test(test_label_and_help_escaping),
        cmocka_unit_test(test_hist_bins),
        cmocka_unit_test(test_histogram_exact),
        cmocka_unit_test(test_histogram_ns_to_seconds),
        cmocka_unit_test(test_collector),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_http_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
