/* The body of a pool CALLS message (proto.h), parsed without side effects:
 * peer.c queues what this returns, and the fuzz harnesses (fuzz/) run it on
 * arbitrary bytes without a pool or a scheduler. */
#ifndef BETTONG_CALLS_H
#define BETTONG_CALLS_H

#include <stddef.h>
#include <stdint.h>

#include "pool/proto.h"

typedef struct {
    uint64_t func_id;
    uint32_t timeout_ms;
    uint16_t retries;
    const uint8_t *near; /* into the frame; near_len 0: no preference */
    size_t near_len;
    uint32_t count;
} calls_head_t;

typedef struct {
    uint64_t call_id;
    const uint8_t *args; /* into the frame */
    uint32_t n;
} calls_entry_t;

/* Read a CALLS body's fields after the type byte and check all its entries, so
 * that a bad one queues none. Returns 0 (r is at the first entry; count calls
 * to calls_next cannot fail) or -1 (truncated; h->count is what was announced,
 * 0 if not even that was there). */
int calls_parse(proto_rd_t *r, calls_head_t *h);

/* The next entry of a checked CALLS body. */
void calls_next(proto_rd_t *r, calls_entry_t *e);

#endif
