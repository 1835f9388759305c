/* Unit tests for src/net/rbudget (the --max-buffered accounting) and the
 * helpers around it: charges add up, the oldest holder is the one to give way
 * (a charge keeps its age when it grows), releasing takes it off, a growth
 * that fits or shrinks is always allowed; buf_reserve_exact grows to the exact
 * size; args_parse_size reads K/M/G. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/rbudget.h"
#include "util/args.h"
#include "util/buf.h"

static void test_charges_add_up(void **state)
{
    rbudget_t b;
    rb_charge_t x = {0}, y = {0};
    rbudget_init(&b, 1000);
    rbudget_set(&b, &x, 300, 1);
    rbudget_set(&b, &y, 400, 2);
    assert_int_equal(b.used, 700);
    rbudget_set(&b, &x, 500, 3); /* grows */
    assert_int_equal(b.used, 900);
    assert_int_equal(b.peak, 900);
    rbudget_set(&b, &y, 0, 4);   /* released */
    assert_int_equal(b.used, 500);
    assert_int_equal(b.peak, 900);
    rbudget_set(&b, &x, 0, 5);
    assert_int_equal(b.used, 0);
    assert_null(rbudget_oldest(&b));
}

static void test_fits(void **state)
{
    rbudget_t b;
    rb_charge_t x = {0}, y = {0};
    rbudget_init(&b, 1000);
    rbudget_set(&b, &x, 600, 1);
    assert_true(rbudget_fits(&b, &y, 400));
    assert_false(rbudget_fits(&b, &y, 401));
    /* x's own charge is replaced, not added to */
    assert_true(rbudget_fits(&b, &x, 1000));
    assert_false(rbudget_fits(&b, &x, 1001));
    /* shrinking always fits, even over the limit */
    b.limit = 100;
    assert_true(rbudget_fits(&b, &x, 500));
    /* no limit */
    b.limit = 0;
    assert_true(rbudget_fits(&b, &y, UINT64_MAX / 2));
}

static void test_oldest_gives_way_first(void **state)
{
    rbudget_t b;
    rb_charge_t x = {0}, y = {0}, z = {0};
    rbudget_init(&b, 1000);
    rbudget_set(&b, &x, 100, 10);
    rbudget_set(&b, &y, 100, 20);
    rbudget_set(&b, &z, 100, 30);
    assert_ptr_equal(rbudget_oldest(&b), &x);
    /* growing keeps the age: x is still the oldest */
    rbudget_set(&b, &x, 800, 40);
    assert_ptr_equal(rbudget_oldest(&b), &x);
    assert_int_equal(x.since, 10);
    /* once x is released, y; a new charge of x is the youngest */
    rbudget_set(&b, &x, 0, 50);
    assert_ptr_equal(rbudget_oldest(&b), &y);
    rbudget_set(&b, &x, 100, 60);
    rbudget_set(&b, &y, 0, 70);
    assert_ptr_equal(rbudget_oldest(&b), &z);
    rbudget_set(&b, &z, 0, 80);
    assert_ptr_equal(rbudget_oldest(&b), &x);
    assert_int_equal(x.since, 60);
}

static void test_release_from_the_middle(void **state)
{
    rbudget_t b;
    rb_charge_t c[4];
    memset(c, 0, sizeof c);
    rbudget_init(&b, 0);
    for (int i = 0; i < 4; i++)
        rbudget_set(&b, &c[i], 10, (uint64_t)i);
    rbudget_set(&b, &c[2], 0, 9);
    rbudget_set(&b, &c[0], 0, 9);
    assert_ptr_equal(rbudget_oldest(&b), &c[1]);
    rbudget_set(&b, &c[1], 0, 9);
    assert_ptr_equal(rbudget_oldest(&b), &c[3]);
    assert_int_equal(b.used, 10);
    rbudget_set(&b, &c[3], 0, 9);
    assert_null(b.head);
    assert_null(b.tail);
}

static void test_reserve_exact(void **state)
{
    buf_t b;
    buf_init(&b);
    assert_int_equal(buf_append(&b, "abcdef", 6), 0);
    buf_consume(&b, 2);
    assert_int_equal(buf_reserve_exact(&b, 100000), 0);
    /* the unread bytes moved to the start, and the capacity is exact */
    assert_int_equal(b.off, 0);
    assert_int_equal(b.cap, 4 + 100000);
    assert_memory_equal(buf_head(&b), "cdef", 4);
    /* enough room already: nothing changes */
    assert_int_equal(buf_reserve_exact(&b, 10), 0);
    assert_int_equal(b.cap, 4 + 100000);
    buf_free(&b);
}

static void test_parse_size(void **state)
{
    uint64_t v = 0;
    assert_int_equal(args_parse_size("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(args_parse_size("256M", &v), 0);
    assert_int_equal(v, 256ull << 20);
    assert_int_equal(args_parse_size("2g", &v), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(args_parse_size("8K", &v), 0);
    assert_int_equal(v, 8192);
    assert_int_equal(args_parse_size("0", &v), -1);
    assert_int_equal(args_parse_size("-5", &v), -1);
    assert_int_equal(args_parse_size("12X", &v), -1);
    assert_int_equal(args_parse_size("", &v), -1);
    assert_int_equal(args_parse_size("99999999999999G", &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_charges_add_up),
        cmocka_unit_test(test_fits),
        cmocka_unit_test(test_oldest_gives_way_first),
        cmocka_unit_test(test_release_from_the_middle),
        cmocka_unit_test(test_reserve_exact),
        cmocka_unit_test(test_parse_size),
    };
    return cmocka_run_group_tests_name("rbudget", tests, NULL, NULL);
}
