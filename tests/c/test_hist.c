/* Unit tests for src/util/hist: quantile accuracy, exact small values, max,
 * merge, the empty histogram, and now_ns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "util/hist.h"

static hist_t *new_hist(void)
{
    hist_t *h = malloc(sizeof *h); /* 32 KiB: keep it off the stack */
    assert_non_null(h);
    hist_init(h);
    return h;
}

/* The exact value at quantile q of the sorted values 1..n, using the same rank
 * convention as hist_quantile (rank = floor(q * n), 0-based, clamped). */
static uint64_t exact_uniform(uint64_t n, double q)
{
    uint64_t rank = (uint64_t)(q * (double)n);
    if (rank >= n)
        rank = n - 1;
    return rank + 1;
}

static void assert_within(uint64_t got, uint64_t want, double rel, double q)
{
    double err = ((double)got - (double)want) / (double)want;
    if (err < -rel || err > rel)
        fail_msg("q=%.4f: got %llu, exact %llu (error %.3f%%)", q, (unsigned long long)got,
                 (unsigned long long)want, err * 100);
}

static void test_empty(void **state)
{
    hist_t *h = new_hist();
    assert_int_equal(h->total, 0);
    assert_int_equal(h->max, 0);
    assert_int_equal(hist_quantile(h, 0.0), 0);
    assert_int_equal(hist_quantile(h, 0.5), 0);
    assert_int_equal(hist_quantile(h, 0.99), 0);
    assert_int_equal(hist_quantile(h, 1.0), 0);

    /* Merging two empty histograms stays empty. */
    hist_t *g = new_hist();
    hist_merge(h, g);
    assert_int_equal(h->total, 0);
    assert_int_equal(hist_quantile(h, 0.5), 0);
    free(g);
    free(h);
}

static void test_uniform_quantiles(void **state)
{
    const uint64_t n = 1000000;
    hist_t *h = new_hist();
    /* Record in a scrambled order: the result must not depend on order. */
    for (uint64_t i = 0; i < n; i++)
        hist_record(h, (i * 7919) % n + 1);
    assert_int_equal(h->total, n);
    assert_int_equal(h->max, n);

    const double qs[] = {0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        uint64_t want = exact_uniform(n, qs[i]);
        uint64_t got = hist_quantile(h, qs[i]);
        assert_within(got, want, 0.02, qs[i]);
        /* The reported value is the upper bound of the bucket, never below the exact value. */
        assert_true(got >= want);
    }
    /* Quantiles are monotonic in q. */
    uint64_t prev = 0;
    for (int i = 0; i <= 1000; i++) {
        uint64_t v = hist_quantile(h, i / 1000.0);
        assert_true(v >= prev);
        prev = v;
    }
    assert_int_equal(hist_quantile(h, 1.0), n);
    free(h);
}

/* Relative precision holds across the whole range, not only up to 1e6. */
static void test_precision_wide_range(void **state)
{
    hist_t *h = new_hist();
    uint64_t vals[] = {1,          63,         64,         65,         127,
                       128,        129,        1000,       4095,       4097,
                       123456789,  1ULL << 32, 3ULL << 40, 999999999999ULL,
                       1ULL << 62, UINT64_MAX / 3};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        hist_init(h);
        hist_record(h, vals[i]);
        hist_record(h, UINT64_MAX); /* raises max so the answer is the bucket bound */
        uint64_t got = hist_quantile(h, 0.0);
        assert_true(got >= vals[i]);
        /* Bucket width is at most 1/64 of its lower bound. */
        assert_true(got - vals[i] <= vals[i] / 64);
    }
    free(h);
}

static void test_small_values_exact(void **state)
{
    hist_t *h = new_hist();
    /* Values below 128 each have their own bucket: quantiles are exact. */
    for (uint64_t v = 0; v < 128; v++)
        hist_record(h, v);
    for (uint64_t k = 0; k < 128; k++) {
        double q = (k + 0.5) / 128.0;
        assert_int_equal(hist_quantile(h, q), k);
    }
    assert_int_equal(hist_quantile(h, 0.0), 0);
    assert_int_equal(hist_quantile(h, 1.0), 127);

    /* One repeated small value. */
    for (uint64_t v = 0; v < 128; v++) {
        hist_init(h);
        for (int i = 0; i < 10; i++)
            hist_record(h, v);
        assert_int_equal(hist_quantile(h, 0.0), v);
        assert_int_equal(hist_quantile(h, 0.5), v);
        assert_int_equal(hist_quantile(h, 1.0), v);
    }

    /* Skewed: 90 ones and 10 sevens. */
    hist_init(h);
    for (int i = 0; i < 90; i++)
        hist_record(h, 1);
    for (int i = 0; i < 10; i++)
        hist_record(h, 7);
    assert_int_equal(hist_quantile(h, 0.5), 1);
    assert_int_equal(hist_quantile(h, 0.85), 1);
    assert_int_equal(hist_quantile(h, 0.95), 7);
    assert_int_equal(hist_quantile(h, 0.99), 7);
    free(h);
}

static void test_max(void **state)
{
    hist_t *h = new_hist();
    hist_record(h, 5);
    hist_record(h, 1000001);
    hist_record(h, 17);
    assert_int_equal(h->max, 1000001);
    /* The top quantile is the recorded max, not the bucket's upper bound. */
    assert_int_equal(hist_quantile(h, 1.0), 1000001);
    assert_int_equal(hist_quantile(h, 0.999), 1000001);

    /* A single huge value, including the largest representable one. */
    hist_init(h);
    hist_record(h, UINT64_MAX);
    assert_int_equal(h->max, UINT64_MAX);
    assert_int_equal(hist_quantile(h, 0.5), UINT64_MAX);
    hist_record(h, 0);
    assert_int_equal(hist_quantile(h, 0.0), 0);
    assert_int_equal(hist_quantile(h, 1.0), UINT64_MAX);
    free(h);
}

static void test_merge(void **state)
{
    hist_t *a = new_hist(), *b = new_hist(), *all = new_hist();
    /* a gets the odd values, b the even ones: the merge equals recording all. */
    for (uint64_t v = 1; v <= 200000; v++) {
        hist_record(v % 2 ? a : b, v);
        hist_record(all, v);
    }
    hist_merge(a, b);
    assert_int_equal(a->total, all->total);
    assert_int_equal(a->max, all->max);
    assert_memory_equal(a->counts, all->counts, sizeof a->counts);
    for (int i = 0; i <= 100; i++)
        assert_int_equal(hist_quantile(a, i / 100.0), hist_quantile(all, i / 100.0));
    /* b is unchanged by being merged from. */
    assert_int_equal(b->total, 100000);

    /* Merging into an empty histogram copies; max comes from whichever is larger. */
    hist_t *e = new_hist();
    hist_record(e, 3000000);
    hist_merge(e, all);
    assert_int_equal(e->total, 200001);
    assert_int_equal(e->max, 3000000);
    assert_int_equal(hist_quantile(e, 1.0), 3000000);
    hist_t *f = new_hist();
    hist_merge(f, all);
    assert_int_equal(f->max, 200000);
    assert_int_equal(f->total, 200000);
    free(a);
    free(b);
    free(all);
    free(e);
    free(f);
}

static void test_now_ns_monotonic(void **state)
{
    uint64_t a = now_ns();
    struct timespec ts = {0, 2000000}; /* 2 ms */
    nanosleep(&ts, NULL);
    uint64_t b = now_ns();
    assert_true(b > a);
    assert_true(b - a >= 2000000);
    assert_true(b - a < 5000000000ULL);
    for (int i = 0; i < 1000; i++) {
        uint64_t c = now_ns();
        assert_true(c >= b);
        b = c;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_uniform_quantiles),
        cmocka_unit_test(test_precision_wide_range),
        cmocka_unit_test(test_small_values_exact),
        cmocka_unit_test(test_max),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_now_ns_monotonic),
    };
    return cmocka_run_group_tests_name("hist", tests, NULL, NULL);
}
