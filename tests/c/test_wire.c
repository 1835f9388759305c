/* Unit tests for src/net/wire: the big-endian field codec every protocol uses.
 * Each width round-trips and lands in the documented byte order; a reader that
 * runs past the end sets its error flag and returns zeros from then on; a frame
 * over its limit (or a str16 over 65535 bytes) is handled; wire_end_with counts
 * bytes sent by reference; a frame begun after unread bytes keeps them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/wire.h"

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void test_fields_round_trip(void **state)
{
    buf_t b;
    buf_init(&b);
    wire_wr_t w;
    wire_begin(&w, &b, 200, 1 << 20);
    wire_put_u8(&w, 0xab);
    wire_put_u16(&w, 0x1234);
    wire_put_u32(&w, 0xdeadbeef);
    wire_put_u64(&w, 0x0102030405060708ull);
    wire_put_str16(&w, "hey", 3);
    wire_put_bytes(&w, "RST", 3);
    assert_int_equal(wire_end(&w), 0);

    static const uint8_t expect[] = {0, 0, 0, 24, 200, 0xab, 0x12, 0x34, 0xde, 0xad, 0xbe,
                                     0xef, 1, 2, 3, 4, 5, 6, 7, 8, 0, 3, 'h', 'e', 'y', 'R',
                                     'S', 'T'};
    assert_int_equal(buf_unread(&b), sizeof expect);
    assert_memory_equal(buf_head(&b), expect, sizeof expect);

    wire_rd_t r;
    wire_rd_init(&r, buf_head(&b) + 4, buf_unread(&b) - 4);
    assert_int_equal(wire_u8(&r), 200);
    assert_int_equal(wire_u8(&r), 0xab);
    assert_int_equal(wire_u16(&r), 0x1234);
    assert_int_equal(wire_u32(&r), 0xdeadbeef);
    assert_int_equal(wire_u64(&r), 0x0102030405060708ull);
    size_t n;
    const uint8_t *s = wire_str16(&r, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "hey", 3);
    const uint8_t *rest = wire_rest(&r, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(rest, "RST", 3);
    assert_false(r.err);
    assert_true(r.p == r.end);
    /* rest of nothing is empty but not an error */
    assert_non_null(wire_rest(&r, &n));
    assert_int_equal(n, 0);
    assert_false(r.err);
    buf_free(&b);
}

static void test_reader_errors(void **state)
{
    /* After an error every read returns 0 / NULL and rest is empty. */
    static const uint8_t one[] = {7};
    wire_rd_t r;
    wire_rd_init(&r, one, 1);
    assert_int_equal(wire_u16(&r), 0);
    assert_true(r.err);
    assert_int_equal(wire_u8(&r), 0);
    size_t n = 99;
    assert_null(wire_rest(&r, &n));
    assert_int_equal(n, 0);
    assert_null(wire_bytes(&r, 0));

    /* A str16 whose length runs past the end. */
    static const uint8_t bad[] = {0, 10, 'a', 'b'};
    wire_rd_init(&r, bad, sizeof bad);
    assert_null(wire_str16(&r, &n));
    assert_int_equal(n, 0);
    assert_true(r.err);

    /* Every width fails on every shorter input, reading nothing past it. */
    static const uint8_t eight[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (size_t len = 0; len < 8; len++) {
        uint8_t *copy = malloc(len ? len : 1);
        assert_non_null(copy);
        memcpy(copy, eight, len);
        wire_rd_init(&r, copy, len);
        assert_int_equal(wire_u64(&r), 0);
        assert_true(r.err);
        if (len < 4) {
            wire_rd_init(&r, copy, len);
            assert_int_equal(wire_u32(&r), 0);
            assert_true(r.err);
        }
        free(copy);
    }
}

static void test_end_with_and_limits(void **state)
{
    buf_t b;
    buf_init(&b);
    buf_append(&b, "XY", 2); /* something already waiting in the buffer */
    buf_consume(&b, 1);
    wire_wr_t w;
    wire_begin(&w, &b, 20, 100000);
    wire_put_u64(&w, 1);
    /* The length counts 1000 bytes sent separately. */
    assert_int_equal(wire_end_with(&w, 1000), 0);
    assert_int_equal(buf_unread(&b), 1 + 4 + 9);
    assert_int_equal(be32(buf_head(&b) + 1), 9 + 1000);

    /* Over the limit: the partial frame is removed, earlier bytes stay. */
    wire_begin(&w, &b, 33, 100);
    wire_put_u64(&w, 1);
    assert_int_equal(wire_end_with(&w, 100), -1);
    assert_int_equal(buf_unread(&b), 1 + 4 + 9);
    wire_begin(&w, &b, 33, 100);
    assert_int_equal(wire_end_with(&w, 99), 0); /* exactly the limit */
    assert_int_equal(be32(buf_head(&b) + 14), 100);
    wire_begin(&w, &b, 33, 100);
    wire_put_bytes(&w, "x", 1);
    assert_int_equal(wire_end_with(&w, 99), -1);
    assert_int_equal(buf_unread(&b), 1 + 4 + 9 + 5);

    /* A limit beyond what a u32 holds is clamped to it. */
    wire_begin(&w, &b, 1, UINT64_MAX);
    assert_int_equal(wire_end_with(&w, (size_t)UINT32_MAX), -1);

    /* A str16 longer than 65535 bytes is cut to fit its length field. */
    buf_clear(&b);
    char *big = malloc(70000);
    assert_non_null(big);
    memset(big, 'a', 70000);
    wire_begin(&w, &b, 3, 1 << 20);
    wire_put_str16(&w, big, 70000);
    assert_int_equal(wire_end(&w), 0);
    wire_rd_t r;
    wire_rd_init(&r, buf_head(&b) + 4, buf_unread(&b) - 4);
    wire_u8(&r);
    size_t n;
    assert_non_null(wire_str16(&r, &n));
    assert_int_equal(n, 65535);
    assert_false(r.err);
    free(big);
    buf_free(&b);
}

static void test_clock(void **state)
{
    /* Microseconds since the epoch (after 2020, before 2100). */
    uint64_t now = wire_now_us();
    assert_true(now > 1577836800ull * 1000000);
    assert_true(now < 4102444800ull * 1000000);
    assert_true(wire_now_us() >= now);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_round_trip),
        cmocka_unit_test(test_reader_errors),
        cmocka_unit_test(test_end_with_and_limits),
        cmocka_unit_test(test_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
