/* Unit tests for src/net/frame: struct-format specs, header decoding, frame_next
 * over partial, exact, multiple, empty, oversized and callback-decoded frames,
 * frame_put_u32be, and Wallaroo 0.6.1's connector frames (u32 LE length, i64 LE
 * event time, payload). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/frame.h"

/* ---- frame_spec_from_struct ------------------------------------------------ */

typedef struct {
    const char *fmt;
    size_t size; /* struct.calcsize(fmt) on LP64 Linux */
    int big_endian;
    int is_signed;
} fmt_case;

static void test_spec_supported_formats(void **state)
{
    const fmt_case cases[] = {
        {">I", 4, 1, 0}, {"<I", 4, 0, 0}, {"!I", 4, 1, 0}, {"=I", 4, 0, 0}, {"@I", 4, 0, 0},
        {"I", 4, 0, 0},  {">i", 4, 1, 1}, {"<i", 4, 0, 1}, {"i", 4, 0, 1},  {">L", 4, 1, 0},
        {"<L", 4, 0, 0}, {"=L", 4, 0, 0}, {"!l", 4, 1, 1}, {"<l", 4, 0, 1}, {">H", 2, 1, 0},
        {"<H", 2, 0, 0}, {"H", 2, 0, 0},  {">h", 2, 1, 1}, {"<h", 2, 0, 1}, {">Q", 8, 1, 0},
        {"<Q", 8, 0, 0}, {"Q", 8, 0, 0},  {">q", 8, 1, 1}, {"<q", 8, 0, 1}, {"=q", 8, 0, 1},
        {">B", 1, 1, 0}, {"B", 1, 0, 0},  {"b", 1, 0, 1},  {"<b", 1, 0, 1}, {"!B", 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        frame_spec_t s;
        memset(&s, 0x5a, sizeof s);
        if (frame_spec_from_struct(&s, cases[i].size, cases[i].fmt) != 0)
            fail_msg("format '%s' (size %zu) rejected", cases[i].fmt, cases[i].size);
        assert_int_equal(s.header_len, cases[i].size);
        assert_int_equal(s.int_size, (int)cases[i].size);
        /* A 1-byte integer has no byte order; only check the flag when it matters. */
        if (cases[i].size > 1 && s.big_endian != cases[i].big_endian)
            fail_msg("format '%s': big_endian %d", cases[i].fmt, s.big_endian);
        if (s.is_signed != cases[i].is_signed)
            fail_msg("format '%s': is_signed %d", cases[i].fmt, s.is_signed);
        assert_null(s.length_fn);
        assert_null(s.length_ctx);
    }
}

/* Native 'l'/'L' (no prefix or '@') are C longs: 8 bytes on LP64, as Python's
 * struct.calcsize("L") says. The standard-size forms ('<', '>', '!', '=') are 4. */
static void test_spec_native_long(void **state)
{
    frame_spec_t s;
    const size_t native = sizeof(long);
    const char *natives[] = {"L", "@L", "l", "@l"};
    for (size_t i = 0; i < 4; i++) {
        memset(&s, 0, sizeof s);
        if (frame_spec_from_struct(&s, native, natives[i]) != 0)
            fail_msg("native '%s' with header_len %zu rejected", natives[i], native);
        assert_int_equal(s.int_size, (int)native);
        assert_int_equal(s.is_signed, natives[i][strlen(natives[i]) - 1] == 'l');
        if (native != 4 && frame_spec_from_struct(&s, 4, natives[i]) == 0)
            fail_msg("native '%s' accepted with header_len 4 (its size is %zu)", natives[i],
                     native);
    }
    assert_int_equal(frame_spec_from_struct(&s, 4, "=L"), 0);
    assert_int_equal(frame_spec_from_struct(&s, 4, "<l"), 0);
    assert_int_equal(frame_spec_from_struct(&s, 8, "=L"), -1);
}

static void test_spec_rejections(void **state)
{
    frame_spec_t s;
    /* Header length that does not match the format's size. */
    assert_int_equal(frame_spec_from_struct(&s, 2, ">I"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 8, ">I"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 4, ">H"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 4, ">Q"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 2, "B"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 0, ">I"), -1);
    /* Not a single integer C can parse. */
    assert_int_equal(frame_spec_from_struct(&s, 8, "2I"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 4, "1I"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 4, ">f"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 8, ">d"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 8, ">II"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 6, ">IH"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 0, ""), -1);
    assert_int_equal(frame_spec_from_struct(&s, 0, ">"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 4, ">>I"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 4, "I>"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 4, " >I"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 4, "4s"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 1, "c"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 1, "?"), -1);
    assert_int_equal(frame_spec_from_struct(&s, 4, "x"), -1);
}

/* ---- frame_header_length ---------------------------------------------------- */

static frame_spec_t spec_of(const char *fmt, size_t size, uint64_t max_payload)
{
    frame_spec_t s;
    memset(&s, 0, sizeof s);
    if (frame_spec_from_struct(&s, size, fmt) != 0)
        fail_msg("format '%s' rejected", fmt);
    s.max_payload = max_payload;
    return s;
}

static uint64_t decode(const char *fmt, size_t size, const uint8_t *h)
{
    frame_spec_t s = spec_of(fmt, size, UINT32_MAX);
    uint64_t v = 0xdeadbeef;
    if (frame_header_length(&s, h, &v) != 0)
        fail_msg("'%s' header refused", fmt);
    return v;
}

static void test_header_endianness(void **state)
{
    const uint8_t b[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    assert_int_equal(decode(">B", 1, b), 0x01);
    assert_int_equal(decode("B", 1, b), 0x01);
    assert_int_equal(decode(">H", 2, b), 0x0102);
    assert_int_equal(decode("<H", 2, b), 0x0201);
    assert_int_equal(decode(">I", 4, b), 0x01020304);
    assert_int_equal(decode("!I", 4, b), 0x01020304);
    assert_int_equal(decode("<I", 4, b), 0x04030201);
    assert_int_equal(decode("=I", 4, b), 0x04030201);
    assert_int_equal(decode("I", 4, b), 0x04030201);
    assert_int_equal(decode(">Q", 8, b), 0x0102030405060708ULL);
    assert_int_equal(decode("<Q", 8, b), 0x0807060504030201ULL);
    assert_int_equal(decode(">q", 8, b), 0x0102030405060708ULL);
    assert_int_equal(decode("<q", 8, b), 0x0807060504030201ULL);

    /* High bits set in unsigned formats are plain large values. */
    const uint8_t ff[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(decode(">B", 1, ff), 0xff);
    assert_int_equal(decode(">H", 2, ff), 0xffff);
    assert_int_equal(decode("<I", 4, ff), 0xffffffffULL);
    assert_int_equal(decode(">Q", 8, ff), UINT64_MAX);
    const uint8_t hi[4] = {0x80, 0x00, 0x00, 0x01};
    assert_int_equal(decode(">I", 4, hi), 0x80000001ULL);
    assert_int_equal(decode("<I", 4, hi), 0x01000080ULL);
}

static void test_header_signed(void **state)
{
    frame_spec_t s;
    uint64_t v;
    /* Non-negative signed values decode. */
    const uint8_t pos[8] = {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    s = spec_of(">i", 4, UINT32_MAX);
    assert_int_equal(frame_header_length(&s, pos, &v), 0);
    assert_int_equal(v, 0x7fffffff);
    s = spec_of(">q", 8, UINT32_MAX);
    assert_int_equal(frame_header_length(&s, pos, &v), 0);
    assert_int_equal(v, 0x7fffffffffffffffULL);
    s = spec_of("b", 1, UINT32_MAX);
    assert_int_equal(frame_header_length(&s, pos, &v), 0);
    assert_int_equal(v, 0x7f);

    /* Negative lengths are refused, in every size and byte order. */
    const uint8_t neg_be[8] = {0x80, 0, 0, 0, 0, 0, 0, 0};
    const uint8_t neg_le[8] = {0, 0, 0, 0, 0, 0, 0, 0x80};
    const uint8_t minus1[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    s = spec_of("b", 1, UINT32_MAX);
    assert_int_equal(frame_header_length(&s, neg_be, &v), -1);
    assert_int_equal(frame_header_length(&s, minus1, &v), -1);
    s = spec_of(">h", 2, UINT32_MAX);
    assert_int_equal(frame_header_length(&s, neg_be, &v), -1);
    s = spec_of("<h", 2, UINT32_MAX);
    const uint8_t neg_le2[2] = {0x00, 0x80};
    assert_int_equal(frame_header_length(&s, neg_le2, &v), -1);
    assert_int_equal(frame_header_length(&s, neg_be, &v), 0); /* 0x0080 = 128 */
    assert_int_equal(v, 128);
    s = spec_of(">i", 4, UINT32_MAX);
    assert_int_equal(frame_header_length(&s, neg_be, &v), -1);
    assert_int_equal(frame_header_length(&s, minus1, &v), -1);
    s = spec_of("<i", 4, UINT32_MAX);
    const uint8_t neg_le4[4] = {0x00, 0x00, 0x00, 0x80};
    assert_int_equal(frame_header_length(&s, neg_le4, &v), -1);
    s = spec_of(">q", 8, UINT32_MAX);
    assert_int_equal(frame_header_length(&s, neg_be, &v), -1);
    assert_int_equal(frame_header_length(&s, minus1, &v), -1);
    s = spec_of("<q", 8, UINT32_MAX);
    assert_int_equal(frame_header_length(&s, neg_le, &v), -1);
    assert_int_equal(frame_header_length(&s, neg_be, &v), 0); /* 0x80 in the low byte */
    assert_int_equal(v, 0x80);

    /* Through frame_next a negative header is a bad header. */
    s = spec_of(">i", 4, UINT32_MAX);
    size_t off = 0, plen = 0, flen = 0;
    uint64_t decl = 0;
    assert_int_equal(frame_next(&s, minus1, 8, &off, &plen, &flen, &decl), FRAME_BAD_HEADER);
}

/* ---- frame_next --------------------------------------------------------------- */

static void test_next_need_more_header(void **state)
{
    frame_spec_t s = spec_of(">I", 4, 1 << 20);
    const uint8_t data[4] = {0, 0, 0, 5};
    for (size_t avail = 0; avail < 4; avail++) {
        size_t off = 77, plen = 77, flen = 77;
        uint64_t decl = 77;
        assert_int_equal(frame_next(&s, data, avail, &off, &plen, &flen, &decl),
                         FRAME_NEED_MORE);
        assert_int_equal(flen, 0); /* frame size not known yet */
    }
}

static void test_next_need_more_payload(void **state)
{
    frame_spec_t s = spec_of(">I", 4, 1 << 20);
    uint8_t data[4 + 300];
    frame_put_u32be(data, 300);
    memset(data + 4, 'p', 300);
    for (size_t avail = 4; avail < sizeof data; avail += 37) {
        size_t off = 0, plen = 0, flen = 0;
        uint64_t decl = 0;
        assert_int_equal(frame_next(&s, data, avail, &off, &plen, &flen, &decl),
                         FRAME_NEED_MORE);
        assert_int_equal(flen, 304);
        assert_int_equal(decl, 300);
    }
    size_t off = 0, plen = 0, flen = 0;
    uint64_t decl = 0;
    assert_int_equal(frame_next(&s, data, 303, &off, &plen, &flen, &decl), FRAME_NEED_MORE);
    assert_int_equal(flen, 304);
}

static void test_next_exact_frame(void **state)
{
    frame_spec_t s = spec_of("<H", 2, 1000);
    const uint8_t data[] = {5, 0, 'h', 'e', 'l', 'l', 'o'};
    size_t off = 0, plen = 0, flen = 0;
    uint64_t decl = 0;
    assert_int_equal(frame_next(&s, data, sizeof data, &off, &plen, &flen, &decl), FRAME_OK);
    assert_int_equal(off, 2);
    assert_int_equal(plen, 5);
    assert_int_equal(flen, 7);
    assert_int_equal(decl, 5);
    assert_memory_equal(data + off, "hello", 5);

    /* Trailing bytes of the next frame do not change the answer. */
    const uint8_t more[] = {5, 0, 'h', 'e', 'l', 'l', 'o', 9, 0, 'x'};
    assert_int_equal(frame_next(&s, more, sizeof more, &off, &plen, &flen, &decl), FRAME_OK);
    assert_int_equal(off, 2);
    assert_int_equal(plen, 5);
    assert_int_equal(flen, 7);
}

static void test_next_walk_several_frames(void **state)
{
    frame_spec_t s = spec_of(">I", 4, 1 << 20);
    /* Frames of payload sizes 0..19 and one of 1000, back to back. */
    uint8_t *buf = malloc(1 << 16);
    assert_non_null(buf);
    size_t n = 0;
    size_t sizes[21];
    for (int i = 0; i < 21; i++) {
        sizes[i] = i < 20 ? (size_t)i : 1000;
        frame_put_u32be(buf + n, (uint32_t)sizes[i]);
        n += 4;
        for (size_t j = 0; j < sizes[i]; j++)
            buf[n++] = (uint8_t)(i * 31 + j);
    }

    size_t pos = 0;
    int frames = 0;
    for (;;) {
        size_t off = 0, plen = 0, flen = 0;
        uint64_t decl = 0;
        frame_status st = frame_next(&s, buf + pos, n - pos, &off, &plen, &flen, &decl);
        if (st == FRAME_NEED_MORE) {
            assert_int_equal(pos, n);
            assert_int_equal(flen, 0);
            break;
        }
        assert_int_equal(st, FRAME_OK);
        assert_in_range(frames, 0, 20);
        assert_int_equal(off, 4);
        assert_int_equal(plen, sizes[frames]);
        assert_int_equal(flen, 4 + sizes[frames]);
        for (size_t j = 0; j < plen; j++)
            assert_int_equal(buf[pos + off + j], (uint8_t)(frames * 31 + j));
        pos += flen;
        frames++;
    }
    assert_int_equal(frames, 21);

    /* Cut the buffer anywhere: every complete frame before the cut is found and
     * the rest is reported as needing more. */
    for (size_t cut = 0; cut <= n; cut += 7) {
        pos = 0;
        for (;;) {
            size_t off = 0, plen = 0, flen = 0;
            uint64_t decl = 0;
            frame_status st = frame_next(&s, buf + pos, cut - pos, &off, &plen, &flen, &decl);
            if (st != FRAME_OK) {
                assert_int_equal(st, FRAME_NEED_MORE);
                assert_true(flen == 0 || pos + flen > cut);
                break;
            }
            assert_true(pos + flen <= cut);
            pos += flen;
        }
    }
    free(buf);
}

static void test_next_zero_length(void **state)
{
    frame_spec_t s = spec_of(">I", 4, 100);
    const uint8_t data[] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t off = 9, plen = 9, flen = 9;
    uint64_t decl = 9;
    assert_int_equal(frame_next(&s, data, 4, &off, &plen, &flen, &decl), FRAME_OK);
    assert_int_equal(off, 4);
    assert_int_equal(plen, 0);
    assert_int_equal(flen, 4);
    assert_int_equal(decl, 0);
    /* Two empty frames back to back. */
    assert_int_equal(frame_next(&s, data + flen, 4, &off, &plen, &flen, &decl), FRAME_OK);
    assert_int_equal(plen, 0);

    /* max_payload 0 still admits empty frames. */
    frame_spec_t z = spec_of(">I", 4, 0);
    assert_int_equal(frame_next(&z, data, 4, &off, &plen, &flen, &decl), FRAME_OK);
}

static void test_next_too_large(void **state)
{
    frame_spec_t s = spec_of(">I", 4, 1000);
    uint8_t data[4 + 1001];
    memset(data, 0, sizeof data);
    size_t off = 0, plen = 0, flen = 0;
    uint64_t decl = 0;

    frame_put_u32be(data, 1000); /* exactly the limit: fine */
    assert_int_equal(frame_next(&s, data, 1004, &off, &plen, &flen, &decl), FRAME_OK);
    assert_int_equal(plen, 1000);

    frame_put_u32be(data, 1001);
    /* Refused as soon as the header is there, without waiting for the payload. */
    decl = 0;
    assert_int_equal(frame_next(&s, data, 4, &off, &plen, &flen, &decl), FRAME_TOO_LARGE);
    assert_int_equal(decl, 1001);
    assert_int_equal(frame_next(&s, data, sizeof data, &off, &plen, &flen, &decl),
                     FRAME_TOO_LARGE);

    frame_put_u32be(data, UINT32_MAX);
    assert_int_equal(frame_next(&s, data, sizeof data, &off, &plen, &flen, &decl),
                     FRAME_TOO_LARGE);
    assert_int_equal(decl, UINT32_MAX);
}

/* With no effective limit, a 64-bit length near 2^64 must not wrap the frame
 * size around and be reported as a complete frame. */
static void test_next_huge_length_no_wrap(void **state)
{
    frame_spec_t s = spec_of(">Q", 8, UINT64_MAX);
    const uint8_t data[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf9, 1, 2, 3, 4, 5, 6, 7, 8};
    size_t off = 0, plen = 0, flen = 0;
    uint64_t decl = 0;
    frame_status st = frame_next(&s, data, sizeof data, &off, &plen, &flen, &decl);
    assert_int_not_equal(st, FRAME_OK);
    const uint8_t max[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    st = frame_next(&s, max, sizeof max, &off, &plen, &flen, &decl);
    assert_int_not_equal(st, FRAME_OK);
}

/* A length callback: the header is "LEN=" followed by 4 ASCII digits. */
typedef struct {
    int calls;
    size_t last_header_len;
} cb_ctx;

static int ascii_length(void *ctx, const uint8_t *header, size_t header_len, uint64_t *len)
{
    cb_ctx *c = ctx;
    c->calls++;
    c->last_header_len = header_len;
    if (header_len != 8 || memcmp(header, "LEN=", 4) != 0)
        return -1;
    uint64_t v = 0;
    for (int i = 4; i < 8; i++) {
        if (header[i] < '0' || header[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(header[i] - '0');
    }
    *len = v;
    return 0;
}

static void test_next_length_callback(void **state)
{
    cb_ctx ctx = {0};
    frame_spec_t s;
    memset(&s, 0, sizeof s);
    s.header_len = 8;
    s.length_fn = ascii_length;
    s.length_ctx = &ctx;
    s.max_payload = 100;
    /* int_size is 0: if C parsing were used instead, the length would be 0. */

    const char *good = "LEN=0005helloLEN=0000";
    size_t off = 0, plen = 0, flen = 0;
    uint64_t decl = 0;
    assert_int_equal(frame_next(&s, (const uint8_t *)good, strlen(good), &off, &plen, &flen, &decl),
                     FRAME_OK);
    assert_int_equal(ctx.calls, 1);
    assert_int_equal(ctx.last_header_len, 8);
    assert_int_equal(off, 8);
    assert_int_equal(plen, 5);
    assert_int_equal(flen, 13);
    assert_int_equal(decl, 5);
    assert_memory_equal(good + off, "hello", 5);
    assert_int_equal(frame_next(&s, (const uint8_t *)good + 13, 8, &off, &plen, &flen, &decl),
                     FRAME_OK);
    assert_int_equal(plen, 0);
    assert_int_equal(flen, 8);

    /* Partial payload: the callback's length gives the frame size. */
    assert_int_equal(frame_next(&s, (const uint8_t *)good, 10, &off, &plen, &flen, &decl),
                     FRAME_NEED_MORE);
    assert_int_equal(flen, 13);

    /* The callback is not called before the whole header is there. */
    int before = ctx.calls;
    assert_int_equal(frame_next(&s, (const uint8_t *)good, 7, &off, &plen, &flen, &decl),
                     FRAME_NEED_MORE);
    assert_int_equal(ctx.calls, before);

    /* The callback's -1 is a bad header. */
    const char *bad = "LEN=00x5hello";
    assert_int_equal(frame_next(&s, (const uint8_t *)bad, strlen(bad), &off, &plen, &flen, &decl),
                     FRAME_BAD_HEADER);
    const char *bad2 = "SIZE0005hello";
    assert_int_equal(frame_next(&s, (const uint8_t *)bad2, strlen(bad2), &off, &plen, &flen, &decl),
                     FRAME_BAD_HEADER);

    /* max_payload applies to callback lengths too. */
    const char *big = "LEN=0101";
    assert_int_equal(frame_next(&s, (const uint8_t *)big, 8, &off, &plen, &flen, &decl),
                     FRAME_TOO_LARGE);
    assert_int_equal(decl, 101);
}

static void test_put_u32be(void **state)
{
    uint8_t out[6] = {0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};
    frame_put_u32be(out + 1, 0x01020304);
    const uint8_t want[6] = {0xaa, 0x01, 0x02, 0x03, 0x04, 0xaa};
    assert_memory_equal(out, want, 6);
    frame_put_u32be(out + 1, 0);
    const uint8_t zero[6] = {0xaa, 0, 0, 0, 0, 0xaa};
    assert_memory_equal(out, zero, 6);
    frame_put_u32be(out + 1, UINT32_MAX);
    const uint8_t ff[6] = {0xaa, 0xff, 0xff, 0xff, 0xff, 0xaa};
    assert_memory_equal(out, ff, 6);

    /* Round trip through a ">I" spec, and "!I". */
    frame_spec_t be = spec_of(">I", 4, UINT32_MAX), net = spec_of("!I", 4, UINT32_MAX);
    const uint32_t vals[] = {0, 1, 255, 256, 65535, 65536, 0x7fffffff, 0x80000000u, 0xdeadbeef};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t h[4];
        uint64_t v = 0;
        frame_put_u32be(h, vals[i]);
        assert_int_equal(frame_header_length(&be, h, &v), 0);
        assert_int_equal(v, vals[i]);
        assert_int_equal(frame_header_length(&net, h, &v), 0);
        assert_int_equal(v, vals[i]);
    }
}

/* ---- connector frames (Wallaroo 0.6.1's wallaroo.experimental) ------------- */

/* The header of a 2-byte payload written with event time 0: Wallaroo's own
 * encode(b"ab") is 0a000000 0000000000000000 6162. */
static void test_connector_header_bytes(void **state)
{
    (void)state;
    uint8_t h[FRAME_CONNECTOR_HEADER];
    static const uint8_t want0[] = {0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(frame_put_connector_header(h, 2, 0), 0);
    assert_memory_equal(h, want0, sizeof want0);
    /* 1000 ms and a negative time, little-endian two's complement. */
    static const uint8_t want1[] = {0x08, 0, 0, 0, 0xe8, 0x03, 0, 0, 0, 0, 0, 0};
    assert_int_equal(frame_put_connector_header(h, 0, 1000), 0);
    assert_memory_equal(h, want1, sizeof want1);
    assert_int_equal(frame_put_connector_header(h, 5, -2), 0);
    static const uint8_t want2[] = {0x0d, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0xff, 0xff};
    assert_memory_equal(h, want2, sizeof want2);
    assert_int_equal(frame_connector_event_time(h), -2);
}

static void test_connector_header_too_long(void **state)
{
    (void)state;
    uint8_t h[FRAME_CONNECTOR_HEADER];
    memset(h, 0x55, sizeof h);
    assert_int_equal(frame_put_connector_header(h, (size_t)UINT32_MAX - 8, 0), 0);
    assert_int_equal(h[0], 0xff);
    assert_int_equal(h[3], 0xff);
    memset(h, 0x55, sizeof h);
    assert_int_equal(frame_put_connector_header(h, (size_t)UINT32_MAX - 7, 0), -1);
    assert_int_equal(h[0], 0x55); /* nothing written */
}

/* frame_next over connector frames: the payload without the event time, the
 * event time from the frame, partial frames, and several in a row. */
static void test_connector_next(void **state)
{
    (void)state;
    frame_spec_t s;
    frame_spec_connector(&s, 100);
    uint8_t buf[64];
    size_t n = 0;
    const char *payloads[] = {"ab", "", "xyz"};
    int64_t times[] = {0, 1544000000000LL, -1};
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(payloads[i]);
        assert_int_equal(frame_put_connector_header(buf + n, len, times[i]), 0);
        memcpy(buf + n + FRAME_CONNECTOR_HEADER, payloads[i], len);
        n += FRAME_CONNECTOR_HEADER + len;
    }
    size_t pos = 0;
    for (int i = 0; i < 3; i++) {
        size_t poff = 0, plen = 0, flen = 0;
        uint64_t declared = 0;
        size_t len = strlen(payloads[i]);
        /* One byte short: more is needed, and how much the frame is. */
        assert_int_equal(frame_next(&s, buf + pos, FRAME_CONNECTOR_HEADER + len - 1, &poff,
                                    &plen, &flen, &declared), FRAME_NEED_MORE);
        assert_int_equal(flen, FRAME_CONNECTOR_HEADER + len);
        assert_int_equal(frame_next(&s, buf + pos, n - pos, &poff, &plen, &flen, &declared),
                         FRAME_OK);
        assert_int_equal(declared, 8 + len);
        assert_int_equal(poff, FRAME_CONNECTOR_HEADER);
        assert_int_equal(plen, len);
        assert_int_equal(flen, FRAME_CONNECTOR_HEADER + len);
        assert_memory_equal(buf + pos + poff, payloads[i], len);
        assert_true(frame_connector_event_time(buf + pos) == times[i]);
        pos += flen;
    }
    assert_int_equal(pos, n);
}

/* A declared length below 8 (no room for the event time) is a bad header;
 * the limit counts the payload only. */
static void test_connector_bad_and_large(void **state)
{
    (void)state;
    frame_spec_t s;
    frame_spec_connector(&s, 4);
    size_t poff, plen, flen;
    uint64_t declared;
    for (uint8_t l = 0; l < 8; l++) {
        uint8_t h[FRAME_CONNECTOR_HEADER] = {l};
        assert_int_equal(frame_next(&s, h, sizeof h, &poff, &plen, &flen, &declared),
                         FRAME_BAD_HEADER);
    }
    uint8_t h[FRAME_CONNECTOR_HEADER + 5];
    memset(h, 0, sizeof h);
    assert_int_equal(frame_put_connector_header(h, 4, 0), 0);
    assert_int_equal(frame_next(&s, h, FRAME_CONNECTOR_HEADER + 4, &poff, &plen, &flen,
                                &declared), FRAME_OK);
    assert_int_equal(frame_put_connector_header(h, 5, 0), 0);
    assert_int_equal(frame_next(&s, h, sizeof h, &poff, &plen, &flen, &declared),
                     FRAME_TOO_LARGE);
    /* No wrap when the limit is the largest there is. */
    frame_spec_connector(&s, UINT64_MAX);
    assert_true(s.max_payload == UINT64_MAX);
    /* A plain spec skips nothing, whatever was in the struct before. */
    memset(&s, 0x7f, sizeof s);
    assert_int_equal(frame_spec_from_struct(&s, 4, ">I"), 0);
    assert_int_equal(s.payload_skip, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_supported_formats),
        cmocka_unit_test(test_spec_native_long),
        cmocka_unit_test(test_spec_rejections),
        cmocka_unit_test(test_header_endianness),
        cmocka_unit_test(test_header_signed),
        cmocka_unit_test(test_next_need_more_header),
        cmocka_unit_test(test_next_need_more_payload),
        cmocka_unit_test(test_next_exact_frame),
        cmocka_unit_test(test_next_walk_several_frames),
        cmocka_unit_test(test_next_zero_length),
        cmocka_unit_test(test_next_too_large),
        cmocka_unit_test(test_next_huge_length_no_wrap),
        cmocka_unit_test(test_next_length_callback),
        cmocka_unit_test(test_put_u32be),
        cmocka_unit_test(test_connector_header_bytes),
        cmocka_unit_test(test_connector_header_too_long),
        cmocka_unit_test(test_connector_next),
        cmocka_unit_test(test_connector_bad_and_large),
    };
    return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
