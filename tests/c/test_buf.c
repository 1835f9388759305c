/* Unit tests for src/util/buf: append, consume, compact, reserve growth, prepend,
 * shrink and large appends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/buf.h"

/* The unread bytes must be exactly `s`. */
static void assert_unread(const buf_t *b, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(buf_unread(b), n);
    if (n)
        assert_memory_equal(buf_head(b), s, n);
}

static void test_init_empty(void **state)
{
    buf_t b;
    memset(&b, 0xab, sizeof b);
    buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(buf_unread(&b), 0);
    /* A zero-length append on an empty buffer allocates nothing. */
    assert_int_equal(buf_append(&b, "x", 0), 0);
    assert_null(b.data);
    buf_free(&b);
    buf_free(&b); /* freeing twice is harmless: buf_free re-initialises */
}

static void test_append_consume(void **state)
{
    buf_t b;
    buf_init(&b);
    assert_int_equal(buf_append(&b, "hello", 5), 0);
    assert_int_equal(buf_append(&b, " world", 6), 0);
    assert_unread(&b, "hello world");
    assert_true(b.cap >= 11);

    buf_consume(&b, 6);
    assert_unread(&b, "world");
    assert_int_equal(b.off, 6);

    assert_int_equal(buf_append(&b, "!", 1), 0);
    assert_unread(&b, "world!");

    buf_consume(&b, 0);
    assert_unread(&b, "world!");
    buf_free(&b);
}

static void test_consume_exact_resets(void **state)
{
    buf_t b;
    buf_init(&b);
    buf_append(&b, "abcdef", 6);
    buf_consume(&b, 2);
    buf_consume(&b, 4);
    assert_int_equal(buf_unread(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    /* The next append starts at the beginning of the allocation. */
    uint8_t *data = b.data;
    buf_append(&b, "xy", 2);
    assert_ptr_equal(buf_head(&b), data);
    assert_unread(&b, "xy");
    buf_free(&b);
}

static void test_consume_past_end_resets(void **state)
{
    buf_t b;
    buf_init(&b);
    buf_append(&b, "abcdef", 6);
    buf_consume(&b, 100);
    assert_int_equal(buf_unread(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);

    /* Past the end from a non-zero offset, including an n that would wrap
     * off + n around SIZE_MAX. */
    buf_append(&b, "abcdef", 6);
    buf_consume(&b, 2);
    buf_consume(&b, 5);
    assert_int_equal(buf_unread(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);

    buf_append(&b, "abcdef", 6);
    buf_consume(&b, 2);
    buf_consume(&b, SIZE_MAX);
    assert_int_equal(buf_unread(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);

    /* Consuming from an empty buffer stays empty. */
    buf_consume(&b, 1);
    assert_int_equal(buf_unread(&b), 0);
    assert_int_equal(b.off, 0);
    buf_free(&b);
}

static void test_compact(void **state)
{
    buf_t b;
    buf_init(&b);
    buf_append(&b, "0123456789", 10);
    buf_consume(&b, 4);
    size_t cap = b.cap;
    buf_compact(&b);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 6);
    assert_int_equal(b.cap, cap);
    assert_memory_equal(b.data, "456789", 6);
    /* Compacting a compact buffer is a no-op. */
    buf_compact(&b);
    assert_unread(&b, "456789");
    buf_free(&b);

    /* Compacting an empty buffer is harmless. */
    buf_init(&b);
    buf_compact(&b);
    assert_int_equal(buf_unread(&b), 0);
    buf_free(&b);
}

static void test_clear_keeps_allocation(void **state)
{
    buf_t b;
    buf_init(&b);
    buf_append(&b, "abc", 3);
    uint8_t *data = b.data;
    size_t cap = b.cap;
    buf_consume(&b, 1);
    buf_clear(&b);
    assert_int_equal(buf_unread(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    buf_free(&b);
}

static void test_reserve_growth(void **state)
{
    buf_t b;
    buf_init(&b);
    assert_int_equal(buf_reserve(&b, 0), 0);
    assert_int_equal(buf_reserve(&b, 1), 0);
    assert_non_null(b.data);
    assert_true(b.cap >= 1);
    size_t first = b.cap;

    /* Reserving within capacity does not reallocate. */
    uint8_t *data = b.data;
    assert_int_equal(buf_reserve(&b, first), 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, first);

    /* Growth is geometric, and after every reserve(extra) there is room. */
    size_t prev = b.cap;
    unsigned grows = 0;
    for (size_t i = 0; i < 100000; i++) {
        assert_int_equal(buf_reserve(&b, 1), 0);
        assert_true(b.cap - b.len >= 1);
        b.data[b.len] = (uint8_t)i;
        b.len++;
        if (b.cap != prev) {
            assert_true(b.cap >= 2 * prev);
            prev = b.cap;
            grows++;
        }
    }
    /* 100000 bytes one at a time: a doubling buffer reallocates ~9 times. */
    assert_true(grows <= 20);
    for (size_t i = 0; i < 100000; i++)
        assert_int_equal(b.data[i], (uint8_t)i);

    /* One big reserve goes straight to a large enough size. */
    assert_int_equal(buf_reserve(&b, 10 * b.cap), 0);
    assert_true(b.cap - b.len >= 10 * prev);
    for (size_t i = 0; i < 100000; i++)
        assert_int_equal(b.data[i], (uint8_t)i);
    buf_free(&b);
}

static void test_reserve_reclaims_consumed_prefix(void **state)
{
    buf_t b;
    buf_init(&b);
    assert_int_equal(buf_reserve(&b, 1), 0);
    size_t cap = b.cap;
    /* Fill it completely, consume most, then ask for more than the tail room:
     * compaction alone makes room, so the capacity must not change. */
    uint8_t *fill = malloc(cap);
    assert_non_null(fill);
    for (size_t i = 0; i < cap; i++)
        fill[i] = (uint8_t)(i * 7);
    assert_int_equal(buf_append(&b, fill, cap), 0);
    assert_int_equal(b.cap, cap);
    buf_consume(&b, cap - 10);
    assert_int_equal(buf_reserve(&b, cap - 20), 0);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.off, 0);
    assert_int_equal(buf_unread(&b), 10);
    assert_memory_equal(buf_head(&b), fill + cap - 10, 10);

    /* Asking for more than compaction frees must grow and keep the data. */
    assert_int_equal(buf_reserve(&b, cap), 0);
    assert_true(b.cap > cap);
    assert_true(b.cap - b.len >= cap);
    assert_int_equal(buf_unread(&b), 10);
    assert_memory_equal(buf_head(&b), fill + cap - 10, 10);
    free(fill);
    buf_free(&b);
}

static void test_prepend_with_room_before_off(void **state)
{
    buf_t b;
    buf_init(&b);
    buf_append(&b, "XXXXworld", 9);
    buf_consume(&b, 4);
    uint8_t *data = b.data;
    size_t cap = b.cap;
    assert_int_equal(buf_prepend(&b, "hi, ", 4), 0);
    assert_unread(&b, "hi, world");
    /* Used the consumed prefix in place: no move, no allocation. */
    assert_int_equal(b.off, 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);

    /* Partial room: off is 2, prepend 1 keeps off at 1. */
    buf_consume(&b, 2);
    assert_int_equal(buf_prepend(&b, "H", 1), 0);
    assert_int_equal(b.off, 1);
    assert_unread(&b, "H, world");
    buf_free(&b);
}

static void test_prepend_without_room(void **state)
{
    buf_t b;
    buf_init(&b);
    /* Into an empty, unallocated buffer. */
    assert_int_equal(buf_prepend(&b, "tail", 4), 0);
    assert_unread(&b, "tail");
    assert_int_equal(buf_prepend(&b, "", 0), 0);
    assert_unread(&b, "tail");

    /* off > 0 but smaller than n. */
    buf_append(&b, "!", 1);
    buf_consume(&b, 1); /* "ail!" with off 1 */
    assert_unread(&b, "ail!");
    assert_int_equal(buf_prepend(&b, "the t", 5), 0);
    assert_unread(&b, "the tail!");
    assert_int_equal(b.off, 0);

    /* A prepend that forces growth keeps both parts intact. */
    size_t big = b.cap * 3 + 17;
    uint8_t *p = malloc(big);
    assert_non_null(p);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 13 + 1);
    assert_int_equal(buf_prepend(&b, p, big), 0);
    assert_int_equal(buf_unread(&b), big + 9);
    assert_memory_equal(buf_head(&b), p, big);
    assert_memory_equal(buf_head(&b) + big, "the tail!", 9);
    free(p);
    buf_free(&b);

    /* Prepending a few bytes in front of many, with no consumed prefix: the
     * existing bytes move by less than their own length (overlapping move). */
    buf_init(&b);
    char longer[200];
    for (int i = 0; i < 200; i++)
        longer[i] = (char)('A' + i % 26);
    buf_append(&b, longer, 200);
    assert_int_equal(b.off, 0);
    assert_int_equal(buf_prepend(&b, "123", 3), 0);
    assert_int_equal(buf_unread(&b), 203);
    assert_memory_equal(buf_head(&b), "123", 3);
    assert_memory_equal(buf_head(&b) + 3, longer, 200);
    buf_free(&b);
}

static void test_shrink(void **state)
{
    buf_t b;
    buf_init(&b);
    uint8_t chunk[4096];
    memset(chunk, 'z', sizeof chunk);
    for (int i = 0; i < 16; i++)
        buf_append(&b, chunk, sizeof chunk);
    assert_true(b.cap >= 65536);

    /* Not empty: shrink keeps everything. */
    uint8_t *data = b.data;
    size_t cap = b.cap;
    buf_shrink(&b, 1024);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_int_equal(buf_unread(&b), 65536);

    /* Empty but cap <= keep: kept. */
    buf_consume(&b, 65536);
    buf_shrink(&b, cap);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);

    /* Empty and cap > keep: memory given back. */
    buf_shrink(&b, 1024);
    assert_true(b.cap <= 1024);
    assert_int_equal(buf_unread(&b), 0);

    /* Still usable afterwards. */
    assert_int_equal(buf_append(&b, "again", 5), 0);
    assert_unread(&b, "again");
    buf_free(&b);
}

static void test_large_appends(void **state)
{
    buf_t b;
    buf_init(&b);
    const size_t total = 8u << 20; /* 8 MiB in odd-sized chunks */
    const size_t chunk = 65521;
    uint8_t *src = malloc(total);
    assert_non_null(src);
    uint32_t x = 12345;
    for (size_t i = 0; i < total; i++) {
        x = x * 1103515245u + 12345u;
        src[i] = (uint8_t)(x >> 16);
    }
    for (size_t done = 0; done < total;) {
        size_t n = total - done < chunk ? total - done : chunk;
        assert_int_equal(buf_append(&b, src + done, n), 0);
        done += n;
    }
    assert_int_equal(buf_unread(&b), total);
    assert_memory_equal(buf_head(&b), src, total);

    /* A single several-MB append. */
    buf_t c;
    buf_init(&c);
    assert_int_equal(buf_append(&c, src, total), 0);
    assert_int_equal(buf_unread(&c), total);
    assert_memory_equal(buf_head(&c), src, total);
    buf_free(&c);

    /* Streaming use: consume slightly less than is appended each round, so a
     * small backlog with a non-zero offset is carried along; the read side sees
     * exactly the written byte sequence. */
    buf_free(&b);
    buf_init(&b);
    size_t wrote = 0, read = 0;
    while (read < total) {
        size_t n = total - wrote < 100003 ? total - wrote : 100003;
        if (n) {
            assert_int_equal(buf_append(&b, src + wrote, n), 0);
            wrote += n;
        }
        size_t m = buf_unread(&b) < 99991 ? buf_unread(&b) : 99991;
        assert_memory_equal(buf_head(&b), src + read, m);
        buf_consume(&b, m);
        read += m;
    }
    assert_int_equal(buf_unread(&b), 0);
    /* The buffer never needed to hold much more than the in-flight bytes. */
    assert_true(b.cap <= 1u << 20);
    free(src);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_empty),
        cmocka_unit_test(test_append_consume),
        cmocka_unit_test(test_consume_exact_resets),
        cmocka_unit_test(test_consume_past_end_resets),
        cmocka_unit_test(test_compact),
        cmocka_unit_test(test_clear_keeps_allocation),
        cmocka_unit_test(test_reserve_growth),
        cmocka_unit_test(test_reserve_reclaims_consumed_prefix),
        cmocka_unit_test(test_prepend_with_room_before_off),
        cmocka_unit_test(test_prepend_without_room),
        cmocka_unit_test(test_shrink),
        cmocka_unit_test(test_large_appends),
    };
    return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
