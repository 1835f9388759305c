/* Unit tests for src/pool/proto: every message type encoded with the proto_put_*
 * helpers and decoded field by field with proto_rd_*, checked against the byte
 * layout that proto.h documents; every strict prefix of every message is
 * rejected (the reader's error flag), never read past; the pool's frame limit
 * and proto_end_with for payloads sent by reference. The field codec itself
 * (widths, str16 limits, reader errors, the clock) is tested in test_wire.c.
 * Also the id map the pool keys its tables with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/idmap.h"
#include "pool/proto.h"

/* ---- helpers ----------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The body (after the length) of the single frame in b; checks the length. */
static const uint8_t *body_of(const buf_t *b, size_t *len)
{
    assert_true(buf_unread(b) >= 5);
    *len = be32(buf_head(b));
    assert_int_equal(*len + 4, buf_unread(b));
    return buf_head(b) + 4;
}

/* Decoding any strict prefix of a body must set the error flag, and never
 * touch a byte beyond the prefix: the prefix is copied to a buffer of exactly
 * that size (AddressSanitizer builds catch an overread). */
typedef void (*decode_fn)(proto_rd_t *r);

static void check_prefixes_fail(const uint8_t *body, size_t len, decode_fn decode,
                                size_t fixed_len)
{
    /* Only prefixes shorter than the fixed fields can fail: "rest" takes any. */
    for (size_t n = 0; n < fixed_len && n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        assert_non_null(copy);
        memcpy(copy, body, n);
        proto_rd_t r;
        proto_rd_init(&r, copy, n);
        decode(&r);
        if (!r.err)
            fail_msg("a %zu-byte prefix of a %zu-byte message was accepted", n, len);
        free(copy);
    }
}

/* ---- identity / WELCOME / REFUSED ------------------------------------------- */

static void decode_identity(proto_rd_t *r)
{
    size_t n;
    proto_u8(r);
    proto_u8(r);
    proto_u32(r);
    proto_str16(r, &n);
    proto_str16(r, &n);
}

/* The identity a peer proves in the handshake (version 1's HELLO without its
 * type and its secret). */
static void test_identity(void **state)
{
    buf_t b;
    buf_init(&b);
    assert_int_equal(proto_put_identity(&b, ROLE_WORKER, 123456, "local-1", 7, "b1", 2), 0);
    /* u8 role, u8 version, u32 pid, str16 name, str16 near */
    static const uint8_t expect[] = {2, PROTO_VERSION, 0, 1, 0xe2, 0x40, 0, 7,
                                     'l', 'o', 'c', 'a', 'l', '-', '1', 0, 2, 'b', '1'};
    assert_int_equal(buf_unread(&b), sizeof expect);
    assert_memory_equal(buf_head(&b), expect, sizeof expect);
    check_prefixes_fail(buf_head(&b), buf_unread(&b), decode_identity, buf_unread(&b));
    buf_free(&b);
}

/* The flags that may end an identity (shared-memory payloads): read when
 * there, 0 when the identity ends before them (an older peer). */
static void test_identity_flags(void **state)
{
    buf_t b;
    buf_init(&b);
    proto_identity_t id;
    assert_int_equal(proto_put_identity(&b, ROLE_CLIENT, 7, "c", 1, NULL, 0), 0);
    assert_int_equal(proto_get_identity(buf_head(&b), buf_unread(&b), &id), 0);
    assert_int_equal(id.flags, 0);
    assert_int_equal(proto_put_identity_flags(&b, PROTO_TAKES_FDS), 0);
    assert_int_equal(proto_get_identity(buf_head(&b), buf_unread(&b), &id), 0);
    assert_int_equal(id.flags, PROTO_TAKES_FDS);
    assert_int_equal(id.role, ROLE_CLIENT);
    buf_clear(&b);
    assert_int_equal(proto_put_subcall_identity(&b, 7, "s", 1, 99), 0);
    assert_int_equal(proto_put_identity_flags(&b, PROTO_TAKES_FDS), 0);
    assert_int_equal(proto_get_identity(buf_head(&b), buf_unread(&b), &id), 0);
    assert_int_equal(id.parent_task, 99);
    assert_int_equal(id.flags, PROTO_TAKES_FDS);
    buf_free(&b);
}

static void test_welcome_refused(void **state)
{
    buf_t b;
    buf_init(&b);
    proto_wr_t w;
    proto_begin(&w, &b, MSG_WELCOME);
    proto_put_u32(&w, 0xdeadbeef);
    proto_put_u32(&w, 8);
    assert_int_equal(proto_end(&w), 0);
    proto_begin(&w, &b, MSG_REFUSED);
    proto_put_str16(&w, "no", 2);
    assert_int_equal(proto_end(&w), 0);

    /* Two frames back to back in one buffer. */
    const uint8_t *p = buf_head(&b);
    assert_int_equal(be32(p), 9);
    proto_rd_t r;
    proto_rd_init(&r, p + 4, 9);
    assert_int_equal(proto_u8(&r), MSG_WELCOME);
    assert_int_equal(proto_u32(&r), 0xdeadbeef);
    assert_int_equal(proto_u32(&r), 8);
    assert_false(r.err);
    p += 4 + 9;
    assert_int_equal(be32(p), 5);
    proto_rd_init(&r, p + 4, 5);
    assert_int_equal(proto_u8(&r), MSG_REFUSED);
    size_t n;
    const uint8_t *why = proto_str16(&r, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(why, "no", 2);
    assert_false(r.err);
    /* A str16 whose length runs past the end. */
    static const uint8_t bad[] = {MSG_REFUSED, 0, 10, 'a', 'b'};
    proto_rd_init(&r, bad, sizeof bad);
    proto_u8(&r);
    assert_null(proto_str16(&r, &n));
    assert_true(r.err);
    buf_free(&b);
}

/* ---- client messages ---------------------------------------------------------- */

static void decode_func(proto_rd_t *r)
{
    size_t n;
    proto_u8(r);
    proto_u64(r);
    proto_rest(r, &n);
}

static void test_func_and_short_messages(void **state)
{
    buf_t b;
    buf_init(&b);
    proto_wr_t w;
    proto_begin(&w, &b, MSG_FUNC);
    proto_put_u64(&w, 0x0102030405060708ull);
    proto_put_bytes(&w, "PICKLE", 6);
    assert_int_equal(proto_end(&w), 0);
    size_t len;
    const uint8_t *body = body_of(&b, &len);
    assert_int_equal(len, 1 + 8 + 6);
    static const uint8_t head[] = {MSG_FUNC, 1, 2, 3, 4, 5, 6, 7, 8};
    assert_memory_equal(body, head, sizeof head);
    proto_rd_t r;
    proto_rd_init(&r, body, len);
    assert_int_equal(proto_u8(&r), MSG_FUNC);
    assert_int_equal(proto_u64(&r), 0x0102030405060708ull);
    size_t n;
    const uint8_t *fn = proto_rest(&r, &n);
    assert_int_equal(n, 6);
    assert_memory_equal(fn, "PICKLE", 6);
    assert_false(r.err);
    check_prefixes_fail(body, len, decode_func, 9);

    /* CANCEL, FORGET, FUNCDROP, SKIP: a type and one u64. STATUS: the type alone. */
    const msg_type u64_types[] = {MSG_CANCEL, MSG_FORGET, MSG_FUNCDROP, MSG_SKIP};
    for (size_t i = 0; i < 4; i++) {
        buf_clear(&b);
        proto_begin(&w, &b, u64_types[i]);
        proto_put_u64(&w, 77);
        assert_int_equal(proto_end(&w), 0);
        body = body_of(&b, &len);
        assert_int_equal(len, 9);
        proto_rd_init(&r, body, len);
        assert_int_equal(proto_u8(&r), u64_types[i]);
        assert_int_equal(proto_u64(&r), 77);
        assert_false(r.err);
        for (size_t k = 1; k < 9; k++) {
            proto_rd_init(&r, body, k);
            proto_u8(&r);
            assert_int_equal(proto_u64(&r), 0);
            assert_true(r.err);
        }
    }
    buf_clear(&b);
    proto_begin(&w, &b, MSG_STATUS);
    assert_int_equal(proto_end(&w), 0);
    body = body_of(&b, &len);
    assert_int_equal(len, 1);
    assert_int_equal(body[0], MSG_STATUS);
    buf_free(&b);
}

/* CALLS: u64 func_id, u32 timeout_ms, u16 retries, str16 near, u32 count, then
 * count x (u64 call_id, u32 len, bytes). */
static void decode_calls(proto_rd_t *r)
{
    size_t nn;
    proto_u8(r);
    proto_u64(r);
    proto_u32(r);
    proto_u16(r);
    proto_str16(r, &nn);
    uint32_t count = proto_u32(r);
    for (uint32_t i = 0; i < count && !r->err; i++) {
        proto_u64(r);
        proto_bytes(r, proto_u32(r));
    }
}

static void test_calls(void **state)
{
    buf_t b;
    buf_init(&b);
    proto_wr_t w;
    const char *args[] = {"a", "", "ccc"};
    proto_begin(&w, &b, MSG_CALLS);
    proto_put_u64(&w, 5);
    proto_put_u32(&w, 1500);
    proto_put_u16(&w, 3);
    proto_put_str16(&w, "b1", 2);
    proto_put_u32(&w, 3);
    for (uint32_t i = 0; i < 3; i++) {
        proto_put_u64(&w, 100 + i);
        proto_put_u32(&w, (uint32_t)strlen(args[i]));
        proto_put_bytes(&w, args[i], strlen(args[i]));
    }
    assert_int_equal(proto_end(&w), 0);
    size_t len;
    const uint8_t *body = body_of(&b, &len);
    assert_int_equal(len, 1 + 8 + 4 + 2 + 4 + 4 + 3 * 12 + 4);

    proto_rd_t r;
    proto_rd_init(&r, body, len);
    assert_int_equal(proto_u8(&r), MSG_CALLS);
    assert_int_equal(proto_u64(&r), 5);
    assert_int_equal(proto_u32(&r), 1500);
    assert_int_equal(proto_u16(&r), 3);
    size_t nn;
    const uint8_t *near = proto_str16(&r, &nn);
    assert_int_equal(nn, 2);
    assert_memory_equal(near, "b1", 2);
    assert_int_equal(proto_u32(&r), 3);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(proto_u64(&r), 100 + i);
        uint32_t n = proto_u32(&r);
        assert_int_equal(n, strlen(args[i]));
        const uint8_t *p = proto_bytes(&r, n);
        assert_non_null(p);
        assert_memory_equal(p, args[i], n);
    }
    assert_false(r.err);
    assert_true(r.p == r.end);
    /* Every strict prefix is truncated somewhere in the calls. */
    check_prefixes_fail(body, len, decode_calls, len);
    /* A count larger than what follows. */
    uint8_t *copy = malloc(len);
    memcpy(copy, body, len);
    copy[1 + 8 + 4 + 2 + 4 + 3] = 4;
    proto_rd_init(&r, copy, len);
    decode_calls(&r);
    assert_true(r.err);
    /* A call whose length runs past the end. */
    memcpy(copy, body, len);
    copy[1 + 8 + 4 + 2 + 4 + 4 + 8 + 3] = 200;
    proto_rd_init(&r, copy, len);
    decode_calls(&r);
    assert_true(r.err);
    free(copy);
    buf_free(&b);
}

/* ---- pool -> client ------------------------------------------------------------ */

static void decode_result(proto_rd_t *r)
{
    size_t n;
    proto_u8(r);
    proto_u64(r);
    proto_u8(r);
    proto_u32(r);
    proto_u32(r);
    proto_u64(r);
    proto_u64(r);
    proto_u64(r);
    proto_str16(r, &n);
    proto_rest(r, &n);
}

static void test_result_cancelled_status(void **state)
{
    buf_t b;
    buf_init(&b);
    proto_wr_t w;
    proto_begin(&w, &b, MSG_RESULT);
    proto_put_u64(&w, 42);
    proto_put_u8(&w, CALL_RAISED);
    proto_put_u32(&w, 3);
    proto_put_u32(&w, 2);
    proto_put_u64(&w, 1700000000000000ull);
    proto_put_u64(&w, 1700000000000100ull);
    proto_put_u64(&w, 1700000000000200ull);
    proto_put_str16(&w, "b2", 2);
    proto_put_bytes(&w, "exc", 3);
    assert_int_equal(proto_end(&w), 0);
    size_t len;
    const uint8_t *body = body_of(&b, &len);
    assert_int_equal(len, 42 + 4 + 3);
    proto_rd_t r;
    proto_rd_init(&r, body, len);
    assert_int_equal(proto_u8(&r), MSG_RESULT);
    assert_int_equal(proto_u64(&r), 42);
    assert_int_equal(proto_u8(&r), CALL_RAISED);
    assert_int_equal(proto_u32(&r), 3);
    assert_int_equal(proto_u32(&r), 2);
    assert_int_equal(proto_u64(&r), 1700000000000000ull);
    assert_int_equal(proto_u64(&r), 1700000000000100ull);
    assert_int_equal(proto_u64(&r), 1700000000000200ull);
    size_t n;
    const uint8_t *wn = proto_str16(&r, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(wn, "b2", 2);
    const uint8_t *p = proto_rest(&r, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "exc", 3);
    assert_false(r.err);
    check_prefixes_fail(body, len, decode_result, 46);

    buf_clear(&b);
    proto_begin(&w, &b, MSG_CANCELLED);
    proto_put_u64(&w, 9);
    proto_put_u8(&w, 1);
    assert_int_equal(proto_end(&w), 0);
    body = body_of(&b, &len);
    assert_int_equal(len, 10);
    proto_rd_init(&r, body, len);
    assert_int_equal(proto_u8(&r), MSG_CANCELLED);
    assert_int_equal(proto_u64(&r), 9);
    assert_int_equal(proto_u8(&r), 1);
    assert_false(r.err);

    buf_clear(&b);
    proto_begin(&w, &b, MSG_STATUS_REPLY);
    proto_put_u32(&w, 4);
    proto_put_u32(&w, 1000);
    proto_put_u32(&w, 8);
    assert_int_equal(proto_end(&w), 0);
    body = body_of(&b, &len);
    assert_int_equal(len, 13);
    proto_rd_init(&r, body, len);
    assert_int_equal(proto_u8(&r), MSG_STATUS_REPLY);
    assert_int_equal(proto_u32(&r), 4);
    assert_int_equal(proto_u32(&r), 1000);
    assert_int_equal(proto_u32(&r), 8);
    assert_false(r.err);
    proto_rd_init(&r, body, 12);
    proto_u8(&r);
    proto_u32(&r);
    proto_u32(&r);
    proto_u32(&r);
    assert_true(r.err);
    buf_free(&b);
}

/* ---- pool <-> worker ------------------------------------------------------------ */

static void decode_task(proto_rd_t *r)
{
    size_t n;
    proto_u8(r);
    proto_u64(r);
    proto_u64(r);
    proto_rest(r, &n);
}

static void decode_done(proto_rd_t *r)
{
    size_t n;
    proto_u8(r);
    proto_u64(r);
    proto_u8(r);
    proto_u64(r);
    proto_u64(r);
    proto_rest(r, &n);
}

static void test_worker_messages(void **state)
{
    buf_t b;
    buf_init(&b);
    proto_wr_t w;
    size_t len, n;
    proto_rd_t r;

    proto_begin(&w, &b, MSG_FUNCDEF);
    proto_put_u64(&w, 11);
    proto_put_bytes(&w, "FN", 2);
    assert_int_equal(proto_end(&w), 0);
    const uint8_t *body = body_of(&b, &len);
    proto_rd_init(&r, body, len);
    assert_int_equal(proto_u8(&r), MSG_FUNCDEF);
    assert_int_equal(proto_u64(&r), 11);
    assert_memory_equal(proto_rest(&r, &n), "FN", 2);
    assert_int_equal(n, 2);
    assert_false(r.err);
    check_prefixes_fail(body, len, decode_func, 9);

    buf_clear(&b);
    proto_begin(&w, &b, MSG_TASK);
    proto_put_u64(&w, 1234);
    proto_put_u64(&w, 11);
    proto_put_bytes(&w, "ARGS", 4);
    assert_int_equal(proto_end(&w), 0);
    body = body_of(&b, &len);
    assert_int_equal(len, 1 + 8 + 8 + 4);
    proto_rd_init(&r, body, len);
    assert_int_equal(proto_u8(&r), MSG_TASK);
    assert_int_equal(proto_u64(&r), 1234);
    assert_int_equal(proto_u64(&r), 11);
    assert_memory_equal(proto_rest(&r, &n), "ARGS", 4);
    assert_false(r.err);
    check_prefixes_fail(body, len, decode_task, 17);

    buf_clear(&b);
    proto_begin(&w, &b, MSG_DONE);
    proto_put_u64(&w, 1234);
    proto_put_u8(&w, CALL_OK);
    proto_put_u64(&w, 10);
    proto_put_u64(&w, 20);
    assert_int_equal(proto_end(&w), 0); /* an empty payload is allowed */
    body = body_of(&b, &len);
    assert_int_equal(len, 26);
    proto_rd_init(&r, body, len);
    assert_int_equal(proto_u8(&r), MSG_DONE);
    assert_int_equal(proto_u64(&r), 1234);
    assert_int_equal(proto_u8(&r), CALL_OK);
    assert_int_equal(proto_u64(&r), 10);
    assert_int_equal(proto_u64(&r), 20);
    assert_non_null(proto_rest(&r, &n));
    assert_int_equal(n, 0);
    assert_false(r.err);
    check_prefixes_fail(body, len, decode_done, 26);
    buf_free(&b);
}

/* ---- limits and helpers ---------------------------------------------------------- */

static void test_end_with_and_pool_limit(void **state)
{
    buf_t b;
    buf_init(&b);
    buf_append(&b, "XY", 2); /* something already waiting in the buffer */
    buf_consume(&b, 1);
    proto_wr_t w;
    proto_begin(&w, &b, MSG_RESULT);
    proto_put_u64(&w, 1);
    /* The length counts 1000 bytes sent separately. */
    assert_int_equal(proto_end_with(&w, 1000), 0);
    assert_int_equal(buf_unread(&b), 1 + 4 + 9);
    assert_int_equal(be32(buf_head(&b) + 1), 9 + 1000);

    /* Over the limit: the partial frame is removed, earlier bytes stay. */
    proto_begin(&w, &b, MSG_DONE);
    proto_put_u64(&w, 1);
    assert_int_equal(proto_end_with(&w, PROTO_MAX_FRAME), -1);
    assert_int_equal(buf_unread(&b), 1 + 4 + 9);
    proto_begin(&w, &b, MSG_DONE);
    assert_int_equal(proto_end_with(&w, PROTO_MAX_FRAME - 1), 0); /* exactly the limit */
    assert_int_equal(be32(buf_head(&b) + 14), PROTO_MAX_FRAME);

    buf_free(&b);
}

/* ---- idmap ------------------------------------------------------------------------ */

static void test_idmap(void **state)
{
    idmap_t m;
    idmap_init(&m);
    assert_null(idmap_get(&m, 1));
    assert_null(idmap_del(&m, 1));
    static char vals[3];
    /* Sequential, strided and colliding-looking keys. */
    for (uint64_t k = 0; k < 20000; k++) {
        uint64_t key = k % 3 == 0 ? k : k % 3 == 1 ? k << 20 : ~k;
        assert_int_equal(idmap_add(&m, key, &vals[k % 3]), 0);
    }
    assert_int_equal(idmap_len(&m), 20000);
    assert_int_equal(idmap_add(&m, 0, &vals[1]), IDMAP_EXISTS);
    assert_ptr_equal(idmap_get(&m, 0), &vals[0]);
    assert_int_equal(idmap_put(&m, 0, &vals[2]), 0);
    assert_ptr_equal(idmap_get(&m, 0), &vals[2]);
    assert_int_equal(idmap_len(&m), 20000);
    /* Remove every other key; the rest must all still be found. */
    for (uint64_t k = 0; k < 20000; k += 2) {
        uint64_t key = k % 3 == 0 ? k : k % 3 == 1 ? k << 20 : ~k;
        assert_non_null(idmap_del(&m, key));
    }
    assert_int_equal(idmap_len(&m), 10000);
    for (uint64_t k = 0; k < 20000; k++) {
        uint64_t key = k % 3 == 0 ? k : k % 3 == 1 ? k << 20 : ~k;
        if (k % 2)
            assert_ptr_equal(idmap_get(&m, key), &vals[k % 3]);
        else
            assert_null(idmap_get(&m, key));
    }
    /* Iteration visits each remaining entry once. */
    size_t pos = 0, seen = 0;
    uint64_t key;
    void *v;
    while ((v = idmap_next(&m, &pos, &key))) {
        assert_ptr_equal(idmap_get(&m, key), v);
        seen++;
    }
    assert_int_equal(seen, 10000);
    assert_int_equal(idmap_put(&m, 5, NULL), -1); /* NULL means absent: refused */
    idmap_free(&m);
    assert_int_equal(idmap_len(&m), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_identity_flags),
        cmocka_unit_test(test_welcome_refused),
        cmocka_unit_test(test_func_and_short_messages),
        cmocka_unit_test(test_calls),
        cmocka_unit_test(test_result_cancelled_status),
        cmocka_unit_test(test_worker_messages),
        cmocka_unit_test(test_end_with_and_pool_limit),
        cmocka_unit_test(test_idmap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
