/* Unit tests for the store's answer frames (src/store/sreply), its id map
 * (src/store/omap) and the UTF-8 check requests go through: every answer's
 * byte layout as sproto.h gives it, the two pickles written in C (None and a
 * list of str) byte for byte, an answer over the frame limit turned into FAILED,
 * and an id map that survives many inserts and removals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/wire.h"
#include "store/omap.h"
#include "store/sproto.h"
#include "store/sreply.h"

/* The body of the single frame in b. */
static wire_rd_t body_of(const buf_t *b)
{
    wire_rd_t r;
    wire_rd_init(&r, buf_head(b), buf_unread(b));
    uint32_t n = wire_u32(&r);
    assert_int_equal(n + 4, buf_unread(b));
    return r;
}

static void test_ok_none_ref_failed(void **state)
{
    buf_t b;
    buf_init(&b);
    assert_int_equal(sreply_none(&b, 7), 0);
    wire_rd_t r = body_of(&b);
    assert_int_equal(wire_u8(&r), SMSG_OK);
    assert_int_equal(wire_u64(&r), 7);
    size_t n;
    const uint8_t *p = wire_rest(&r, &n);
    static const uint8_t none[] = {0x80, 5, 'N', '.'};
    assert_int_equal(n, sizeof none);
    assert_memory_equal(p, none, n);

    buf_clear(&b);
    assert_int_equal(sreply_ref(&b, 8, "abc", 3, 0x1122334455667788ull, "backend-1"), 0);
    r = body_of(&b);
    assert_int_equal(wire_u8(&r), SMSG_REF);
    assert_int_equal(wire_u64(&r), 8);
    p = wire_str16(&r, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "abc", 3);
    assert_int_equal(wire_u64(&r), 0x1122334455667788ull);
    p = wire_str16(&r, &n);
    assert_int_equal(n, 9);
    assert_memory_equal(p, "backend-1", 9);
    assert_true(r.p == r.end && !r.err);

    buf_clear(&b);
    static const uint8_t entry[] = {0, 1, 'i', 0, 1, 'n', 0, 3, 'h', ':', '1'};
    assert_int_equal(sreply_backends(&b, 12, entry, sizeof entry, 1), 0);
    r = body_of(&b);
    assert_int_equal(wire_u8(&r), SMSG_BACKEND_LIST);
    assert_int_equal(wire_u64(&r), 12);
    assert_int_equal(wire_u32(&r), 1);
    p = wire_rest(&r, &n);
    assert_int_equal(n, sizeof entry);
    assert_memory_equal(p, entry, n);

    buf_clear(&b);
    assert_int_equal(sreply_failed(&b, 9, STORE_ERR_ALIAS_TAKEN, "alias '%s' taken", "x"), 0);
    r = body_of(&b);
    assert_int_equal(wire_u8(&r), SMSG_FAILED);
    assert_int_equal(wire_u64(&r), 9);
    assert_int_equal(wire_u8(&r), STORE_ERR_ALIAS_TAKEN);
    p = wire_str16(&r, &n);
    assert_int_equal(n, strlen("alias 'x' taken"));
    assert_memory_equal(p, "alias 'x' taken", n);

    buf_clear(&b);
    assert_int_equal(sreply_raised(&b, 10, "PK", 2), 0);
    assert_int_equal(sreply_class_bytes(&b, 11, "CLS", 3), 0);
    wire_rd_init(&r, buf_head(&b) + 4, 1 + 8 + 2);
    assert_int_equal(wire_u8(&r), SMSG_RAISED);
    assert_int_equal(wire_u64(&r), 10);
    wire_rd_init(&r, buf_head(&b) + 4 + 11 + 4, 1 + 8 + 3);
    assert_int_equal(wire_u8(&r), SMSG_CLASS_BYTES);
    assert_int_equal(wire_u64(&r), 11);
    buf_free(&b);
}

static void test_str_list_pickle(void **state)
{
    buf_t b, entries;
    buf_init(&b);
    buf_init(&entries);
    /* Empty: PROTO 5, EMPTY_LIST, STOP. */
    assert_int_equal(sreply_str_list(&b, 1, NULL, 0, 0), 0);
    wire_rd_t r = body_of(&b);
    wire_u8(&r);
    wire_u64(&r);
    size_t n;
    const uint8_t *p = wire_rest(&r, &n);
    static const uint8_t empty[] = {0x80, 5, ']', '.'};
    assert_int_equal(n, sizeof empty);
    assert_memory_equal(p, empty, n);
    /* ["ab", "é"]: MARK, BINUNICODE (u32 little-endian length) each, APPENDS. */
    static const uint8_t two[] = {0, 2, 'a', 'b', 0, 2, 0xc3, 0xa9};
    buf_append(&entries, two, sizeof two);
    buf_clear(&b);
    assert_int_equal(sreply_str_list(&b, 2, buf_head(&entries), buf_unread(&entries), 2), 0);
    r = body_of(&b);
    wire_u8(&r);
    wire_u64(&r);
    p = wire_rest(&r, &n);
    static const uint8_t expect[] = {0x80, 5, ']', '(', 'X', 2, 0, 0, 0, 'a', 'b',
                                     'X', 2, 0, 0, 0, 0xc3, 0xa9, 'e', '.'};
    assert_int_equal(n, sizeof expect);
    assert_memory_equal(p, expect, n);
    buf_free(&b);
    buf_free(&entries);
}

static void test_too_large(void **state)
{
    /* Not allocated: the size check comes first. */
    static const uint8_t dummy[1];
    buf_t b;
    buf_init(&b);
    assert_int_equal(sreply_ok(&b, 5, dummy, (size_t)STORE_MAX_FRAME), 0);
    wire_rd_t r = body_of(&b);
    assert_int_equal(wire_u8(&r), SMSG_FAILED);
    assert_int_equal(wire_u64(&r), 5);
    assert_int_equal(wire_u8(&r), STORE_ERR_INTERNAL);
    buf_free(&b);
}

static void test_utf8(void **state)
{
    assert_true(utf8_valid((const uint8_t *)"plain", 5));
    assert_true(utf8_valid((const uint8_t *)"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
    assert_false(utf8_valid((const uint8_t *)"\xc3", 1));          /* truncated */
    assert_false(utf8_valid((const uint8_t *)"\xc0\xaf", 2));      /* overlong */
    assert_false(utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));  /* surrogate */
    assert_false(utf8_valid((const uint8_t *)"\xff", 1));
    assert_false(utf8_valid((const uint8_t *)"a\x80", 2));
}

static void test_omap(void **state)
{
    enum { N = 20000 };
    omap_t m;
    omap_init(&m);
    onode_t *nodes = calloc(N, sizeof *nodes);
    assert_non_null(nodes);
    char id[64];
    for (int i = 0; i < N; i++) {
        int n = snprintf(id, sizeof id, "00000000-0000-0000-0000-%012d", i);
        onode_set(&nodes[i], id, (size_t)n);
        assert_int_equal(omap_add(&m, &nodes[i]), 0);
    }
    assert_int_equal(omap_len(&m), N);
    /* A chain by hand: two nodes with the same hash both stay findable. */
    onode_t x, y;
    onode_set(&x, "x-one", 5);
    onode_set(&y, "y-two", 5);
    y.hash = x.hash;
    assert_int_equal(omap_add(&m, &x), 0);
    assert_int_equal(omap_add(&m, &y), 0);
    assert_ptr_equal(omap_get(&m, "x-one", 5), &x);
    omap_del(&m, &y);
    assert_ptr_equal(omap_get(&m, "x-one", 5), &x);
    omap_del(&m, &x);
    assert_null(omap_get(&m, "x-one", 5));
    for (int i = 0; i < N; i += 2)
        omap_del(&m, &nodes[i]);
    assert_int_equal(omap_len(&m), N / 2);
    for (int i = 0; i < N; i++) {
        int n = snprintf(id, sizeof id, "00000000-0000-0000-0000-%012d", i);
        onode_t *got = omap_get(&m, id, (size_t)n);
        if (i % 2)
            assert_ptr_equal(got, &nodes[i]);
        else
            assert_null(got);
    }
    assert_null(omap_get(&m, "", 0));
    omap_free(&m);
    free(nodes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_none_ref_failed),
        cmocka_unit_test(test_str_list_pickle),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_omap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
