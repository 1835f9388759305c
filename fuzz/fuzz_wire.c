/* Fuzz target: the wire field codec (net/wire.c).
 *
 * Input: [0] k, [1] max_frame choice, [2] bytes already in the output buffer,
 * then k op bytes, then the frame body. Each op reads one field of the body
 * (u8, u16, u32, u64, str16, bytes(n), rest), checked against an independent
 * big-endian cursor: same values, same point of failure, and after the first
 * failure every read returns 0 / NULL. The fields read are then written back
 * with wire_put_* into a buffer that already holds (and has consumed) some
 * bytes, and the frame is read again: same length header, type and fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/wire.h"
#include "util/buf.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

enum { OP_U8, OP_U16, OP_U32, OP_U64, OP_STR16, OP_BYTES, OP_REST, NOPS };

typedef struct {
    int op;
    uint64_t v;       /* integers; the length of spans */
    const uint8_t *p; /* spans */
} field_t;

static const uint64_t max_frames[] = {0, 1, 9, 64, 4096, UINT32_MAX, UINT64_MAX};

/* Independent reading of one field; 0 or -1 past the end. */
static int ref_read(const uint8_t *body, size_t len, size_t *pos, int op, size_t nbytes,
                    field_t *f)
{
    static const int width[] = {1, 2, 4, 8};
    f->op = op;
    f->v = 0;
    f->p = NULL;
    if (op <= OP_U64) {
        size_t w = (size_t)width[op];
        if (len - *pos < w)
            return -1;
        for (size_t i = 0; i < w; i++)
            f->v = f->v << 8 | body[*pos + i];
        *pos += w;
        return 0;
    }
    if (op == OP_STR16) {
        if (len - *pos < 2)
            return -1;
        size_t n = (size_t)body[*pos] << 8 | body[*pos + 1];
        if (len - *pos - 2 < n)
            return -1;
        f->v = n;
        f->p = body + *pos + 2;
        *pos += 2 + n;
        return 0;
    }
    if (op == OP_BYTES) {
        if (len - *pos < nbytes)
            return -1;
        f->v = nbytes;
        f->p = body + *pos;
        *pos += nbytes;
        return 0;
    }
    f->v = len - *pos;
    f->p = body + *pos;
    *pos = len;
    return 0;
}

/* Read one field with wire.c. */
static void wire_read(wire_rd_t *r, int op, size_t nbytes, field_t *f)
{
    size_t n = 0;
    f->op = op;
    f->p = NULL;
    switch (op) {
    case OP_U8: f->v = wire_u8(r); break;
    case OP_U16: f->v = wire_u16(r); break;
    case OP_U32: f->v = wire_u32(r); break;
    case OP_U64: f->v = wire_u64(r); break;
    case OP_STR16: f->p = wire_str16(r, &n); f->v = n; break;
    case OP_BYTES: f->p = wire_bytes(r, nbytes); f->v = f->p ? nbytes : 0; break;
    default: f->p = wire_rest(r, &n); f->v = n; break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t k = data[0] % 32;
    uint64_t max_frame = max_frames[data[1] % (sizeof max_frames / sizeof max_frames[0])];
    size_t pre = data[2];
    if (size < 3 + k)
        return 0;
    const uint8_t *ops = data + 3;
    size_t len = size - 3 - k;
    /* A copy of exactly the body's size, so a read past it is caught. */
    uint8_t *body = malloc(len ? len : 1);
    CHECK(body);
    memcpy(body, data + 3 + k, len);

    field_t got[32];
    size_t ngot = 0, pos = 0;
    int failed = 0;
    wire_rd_t r;
    wire_rd_init(&r, body, len);
    for (size_t i = 0; i < k; i++) {
        int op = ops[i] % NOPS;
        size_t nbytes = ops[i] / NOPS; /* 0..36 */
        field_t want, f;
        int rc = failed ? -1 : ref_read(body, len, &pos, op, nbytes, &want);
        wire_read(&r, op, nbytes, &f);
        if (rc < 0) {
            failed = 1;
            CHECK(r.err && f.v == 0 && f.p == NULL);
            continue;
        }
        CHECK(!r.err && f.v == want.v && f.p == want.p);
        CHECK(r.p == body + pos && r.p <= r.end);
        got[ngot++] = f;
    }

    /* Write them back after `pre` bytes of which half were consumed: the
     * frame's start is kept relative to the read offset. */
    buf_t b;
    buf_init(&b);
    uint8_t junk[255];
    memset(junk, 0xa5, sizeof junk);
    CHECK(buf_append(&b, junk, pre) == 0);
    buf_consume(&b, pre / 2);
    size_t before = buf_unread(&b);
    uint8_t type = (uint8_t)(len ? body[0] : 0);
    wire_wr_t w;
    wire_begin(&w, &b, type, max_frame);
    uint64_t flen = 1;
    for (size_t i = 0; i < ngot; i++) {
        field_t *f = &got[i];
        switch (f->op) {
        case OP_U8: wire_put_u8(&w, (uint8_t)f->v); flen += 1; break;
        case OP_U16: wire_put_u16(&w, (uint16_t)f->v); flen += 2; break;
        case OP_U32: wire_put_u32(&w, (uint32_t)f->v); flen += 4; break;
        case OP_U64: wire_put_u64(&w, f->v); flen += 8; break;
        case OP_STR16: wire_put_str16(&w, (const char *)f->p, f->v); flen += 2 + f->v; break;
        default: wire_put_bytes(&w, f->p, f->v); flen += f->v; break;
        }
    }
    uint64_t limit = max_frame > UINT32_MAX ? UINT32_MAX : max_frame;
    int rc = wire_end(&w);
    if (flen > limit) {
        CHECK(rc < 0 && buf_unread(&b) == before); /* the frame is taken back */
    } else {
        CHECK(rc == 0 && buf_unread(&b) == before + 4 + flen);
        const uint8_t *fr = buf_head(&b) + before;
        uint64_t hdr = (uint64_t)fr[0] << 24 | fr[1] << 16 | fr[2] << 8 | fr[3];
        CHECK(hdr == flen && fr[4] == type);
        wire_rd_t r2;
        wire_rd_init(&r2, fr + 5, flen - 1);
        for (size_t i = 0; i < ngot; i++) {
            field_t f;
            /* A "rest" written in the middle is read back as the bytes it held. */
            int op = got[i].op == OP_REST ? OP_BYTES : got[i].op;
            wire_read(&r2, op, got[i].v, &f);
            CHECK(!r2.err && f.v == got[i].v);
            if (f.op >= OP_STR16)
                CHECK(f.v == 0 || memcmp(f.p, got[i].p, f.v) == 0);
        }
        size_t left;
        wire_rest(&r2, &left);
        CHECK(left == 0 && !r2.err);
    }
    buf_free(&b);
    free(body);
    return 0;
}
