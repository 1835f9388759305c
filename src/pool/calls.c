#include "pool/calls.h"

/* Each entry takes at least 12 bytes: a count the frame cannot hold is refused
 * before looping over it. Works on a copy of the reader: nothing is consumed. */
static int calls_valid(proto_rd_t r, uint32_t count)
{
    if ((size_t)count > (size_t)(r.end - r.p) / 12)
        return 0;
    for (uint32_t i = 0; i < count && !r.err; i++) {
        proto_u64(&r);
        proto_bytes(&r, proto_u32(&r));
    }
    return !r.err;
}

int calls_parse(proto_rd_t *r, calls_head_t *h)
{
    h->func_id = proto_u64(r);
    h->timeout_ms = proto_u32(r);
    h->retries = proto_u16(r);
    h->near = proto_str16(r, &h->near_len);
    h->count = proto_u32(r);
    return r->err || !calls_valid(*r, h->count) ? -1 : 0;
}

void calls_next(proto_rd_t *r, calls_entry_t *e)
{
    e->call_id = proto_u64(r);
    e->n = proto_u32(r);
    e->args = proto_bytes(r, e->n);
}
