#include "net/wire.h"

#include <string.h>
#include <time.h>

static void put_be(wire_wr_t *w, uint64_t v, int n)
{
    uint8_t tmp[8];
    for (int i = n - 1; i >= 0; i--) {
        tmp[i] = (uint8_t)v;
        v >>= 8;
    }
    if (!w->err && buf_append(w->b, tmp, (size_t)n) < 0)
        w->err = 1;
}

void wire_begin(wire_wr_t *w, buf_t *b, uint8_t type, uint64_t max_frame)
{
    w->b = b;
    /* Relative to the read offset: appending may compact the buffer. */
    w->start = buf_unread(b);
    w->max_frame = max_frame > UINT32_MAX ? UINT32_MAX : max_frame;
    w->err = 0;
    put_be(w, 0, 4);
    put_be(w, type, 1);
}

int wire_end(wire_wr_t *w) { return wire_end_with(w, 0); }

void wire_begin_fields(wire_wr_t *w, buf_t *b)
{
    w->b = b;
    w->start = buf_unread(b);
    w->max_frame = UINT32_MAX;
    w->err = 0;
}

int wire_end_fields(wire_wr_t *w)
{
    size_t start = w->b->off + w->start;
    if (!w->err)
        return 0;
    if (w->b->len > start)
        w->b->len = start;
    return -1;
}

int wire_end_with(wire_wr_t *w, size_t extra)
{
    size_t start = w->b->off + w->start;
    if (w->err) {
        /* A failed append may have left the frame partly written. */
        if (w->b->len > start)
            w->b->len = start;
        return -1;
    }
    uint64_t n = w->b->len - start - 4 + (uint64_t)extra;
    if (n > w->max_frame) {
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

void wire_put_u8(wire_wr_t *w, uint8_t v) { put_be(w, v, 1); }
void wire_put_u16(wire_wr_t *w, uint16_t v) { put_be(w, v, 2); }
void wire_put_u32(wire_wr_t *w, uint32_t v) { put_be(w, v, 4); }
void wire_put_u64(wire_wr_t *w, uint64_t v) { put_be(w, v, 8); }

void wire_put_bytes(wire_wr_t *w, const void *p, size_t n)
{
    if (!w->err && n > 0 && buf_append(w->b, p, n) < 0)
        w->err = 1;
}

void wire_put_str16(wire_wr_t *w, const char *s, size_t n)
{
    if (n > 0xffff)
        n = 0xffff;
    put_be(w, n, 2);
    wire_put_bytes(w, s, n);
}

void wire_rd_init(wire_rd_t *r, const uint8_t *body, size_t len)
{
    r->p = body;
    r->end = len ? body + len : body; /* NULL + 0 is undefined in C */
    r->err = 0;
}

static uint64_t get_be(wire_rd_t *r, int n)
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

uint8_t wire_u8(wire_rd_t *r) { return (uint8_t)get_be(r, 1); }
uint16_t wire_u16(wire_rd_t *r) { return (uint16_t)get_be(r, 2); }
uint32_t wire_u32(wire_rd_t *r) { return (uint32_t)get_be(r, 4); }
uint64_t wire_u64(wire_rd_t *r) { return get_be(r, 8); }

const uint8_t *wire_bytes(wire_rd_t *r, size_t n)
{
    if (r->err || (size_t)(r->end - r->p) < n) {
        r->err = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

const uint8_t *wire_str16(wire_rd_t *r, size_t *n)
{
    *n = wire_u16(r);
    const uint8_t *p = wire_bytes(r, *n);
    if (!p)
        *n = 0;
    return p;
}

const uint8_t *wire_rest(wire_rd_t *r, size_t *n)
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

uint64_t wire_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
