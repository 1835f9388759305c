#include "pool/proto.h"

#include <string.h>
#include <time.h>

static void put_be(proto_wr_t *w, uint64_t v, int n)
{
    uint8_t tmp[8];
    for (int i = n - 1; i >= 0; i--) {
        tmp[i] = (uint8_t)v;
        v >>= 8;
    }
    if (!w->err && buf_append(w->b, tmp, (size_t)n) < 0)
        w->err = 1;
}

void proto_begin(proto_wr_t *w, buf_t *b, msg_type type)
{
    w->b = b;
    /* Relative to the read offset: appending may compact the buffer. */
    w->start = buf_unread(b);
    w->err = 0;
    put_be(w, 0, 4);
    put_be(w, (uint64_t)type, 1);
}

int proto_end(proto_wr_t *w) { return proto_end_with(w, 0); }

int proto_end_with(proto_wr_t *w, size_t extra)
{
    size_t start = w->b->off + w->start;
    uint64_t n = w->b->len - start - 4 + (uint64_t)extra;
    if (w->err || n > PROTO_MAX_FRAME) {
        w->b->len = start;
        return -1;
    }
    uint8_t *p = w->b->data + start;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    return 0;
}

void proto_put_u8(proto_wr_t *w, uint8_t v) { put_be(w, v, 1); }
void proto_put_u16(proto_wr_t *w, uint16_t v) { put_be(w, v, 2); }
void proto_put_u32(proto_wr_t *w, uint32_t v) { put_be(w, v, 4); }
void proto_put_u64(proto_wr_t *w, uint64_t v) { put_be(w, v, 8); }

void proto_put_bytes(proto_wr_t *w, const void *p, size_t n)
{
    if (!w->err && buf_append(w->b, p, n) < 0)
        w->err = 1;
}

void proto_put_str16(proto_wr_t *w, const char *s, size_t n)
{
    if (n > 0xffff)
        n = 0xffff;
    put_be(w, n, 2);
    proto_put_bytes(w, s, n);
}

void proto_rd_init(proto_rd_t *r, const uint8_t *body, size_t len)
{
    r->p = body;
    r->end = body + len;
    r->err = 0;
}

static uint64_t get_be(proto_rd_t *r, int n)
{
    if (r->err || r->end - r->p < n) {
        r->err = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | r->p[i];
    r->p += n;
    return v;
}

uint8_t proto_u8(proto_rd_t *r) { return (uint8_t)get_be(r, 1); }
uint16_t proto_u16(proto_rd_t *r) { return (uint16_t)get_be(r, 2); }
uint32_t proto_u32(proto_rd_t *r) { return (uint32_t)get_be(r, 4); }
uint64_t proto_u64(proto_rd_t *r) { return get_be(r, 8); }

const uint8_t *proto_bytes(proto_rd_t *r, size_t n)
{
    if (r->err || (size_t)(r->end - r->p) < n) {
        r->err = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

const uint8_t *proto_str16(proto_rd_t *r, size_t *n)
{
    *n = proto_u16(r);
    return proto_bytes(r, *n);
}

const uint8_t *proto_rest(proto_rd_t *r, size_t *n)
{
    if (r->err) {
        *n = 0;
        return NULL;
    }
    *n = (size_t)(r->end - r->p);
    const uint8_t *p = r->p;
    r->p = r->end;
    return p;
}

uint64_t proto_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
