/* Fuzz target: the pool's CALLS walk (pool/calls.c), run by peer.c on every
 * CALLS a client sends.
 *
 * Input: a CALLS body after the type byte (u64 func_id, u32 timeout_ms,
 * u16 retries, str16 near, u32 count, count entries). Checks: calls_parse accepts exactly
 * the bodies an independent walk finds whole; an accepted body's count entries
 * are read without an error, each argument span inside the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool/calls.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* The header's length (with the near), or 0 if the body is shorter. */
static size_t head_len(const uint8_t *b, size_t len)
{
    if (len < 16)
        return 0;
    size_t h = 16 + (size_t)be(b + 14, 2) + 4;
    return len < h ? 0 : h;
}

/* 1 if the body holds its header and `count` whole entries. */
static int ref_valid(const uint8_t *b, size_t len)
{
    size_t at = head_len(b, len);
    if (!at)
        return 0;
    uint64_t count = be(b + at - 4, 4);
    for (uint64_t i = 0; i < count; i++) {
        if (len - at < 12)
            return 0;
        uint64_t n = be(b + at + 8, 4);
        at += 12;
        if (len - at < n)
            return 0;
        at += (size_t)n;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    CHECK(b);
    memcpy(b, data, size);
    proto_rd_t r;
    proto_rd_init(&r, b, size);
    calls_head_t h;
    int rc = calls_parse(&r, &h);
    CHECK((rc == 0) == ref_valid(b, size));
    size_t hl = head_len(b, size);
    if (hl) {
        CHECK(h.func_id == be(b, 8) && h.timeout_ms == be(b + 8, 4));
        CHECK(h.retries == be(b + 12, 2) && h.count == be(b + hl - 4, 4));
        CHECK(h.near == b + 16 && h.near_len == hl - 20);
    }
    if (rc == 0) {
        CHECK(r.p == b + hl);
        for (uint32_t i = 0; i < h.count; i++) {
            calls_entry_t e;
            calls_next(&r, &e);
            CHECK(!r.err && e.args && e.args >= b && e.args + e.n <= b + size);
        }
        CHECK(r.p <= r.end);
    }
    free(b);
    return 0;
}
