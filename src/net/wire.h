/* The framed wire format shared by Bettong's services (the task pool, the object
 * store) and their client extensions: a frame is a u32 big-endian length of what
 * follows, then a u8 message type and the type's fields. Integers are big-endian;
 * "str16" is a u16 length then that many bytes; "rest" is every remaining byte of
 * the frame. Each protocol (pool/proto.h, store/sproto.h) names its own message
 * types and frame limit; this module only encodes and decodes fields. */
#ifndef BETTONG_WIRE_H
#define BETTONG_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

/* ---- writing: append one message to a buffer ---- */

typedef struct {
    buf_t *b;
    size_t start;       /* where this frame begins, counted from b's read offset */
    uint64_t max_frame; /* largest length (type + fields) wire_end accepts */
    int err;            /* out of memory: wire_end drops the frame */
} wire_wr_t;

/* Start a message of `type` at the end of b; the frame's length (everything after
 * the u32) may be at most max_frame (which must fit a u32). */
void wire_begin(wire_wr_t *w, buf_t *b, uint8_t type, uint64_t max_frame);
/* Fill in the frame length. Returns 0, or -1 (the partial frame is removed from
 * the buffer) if memory ran out or the frame is larger than max_frame. */
int wire_end(wire_wr_t *w);
/* Like wire_end, for a frame whose last `extra` bytes (a large payload) the
 * caller sends right after the buffer's bytes instead of copying them in: the
 * length counts them. Returns 0 or -1 as wire_end. */
int wire_end_with(wire_wr_t *w, size_t extra);
void wire_put_u8(wire_wr_t *w, uint8_t v);
void wire_put_u16(wire_wr_t *w, uint16_t v);
void wire_put_u32(wire_wr_t *w, uint32_t v);
void wire_put_u64(wire_wr_t *w, uint64_t v);
void wire_put_bytes(wire_wr_t *w, const void *p, size_t n);
/* A str16; text longer than 65535 bytes is cut to fit the length field. */
void wire_put_str16(wire_wr_t *w, const char *s, size_t n);

/* Bare fields (no length, no type) at the end of b, with the wire_put_*
 * functions: a value carried inside a message, such as the identity a client
 * proves in the handshake (net/auth.h). wire_end_fields returns 0, or -1 (the
 * fields are removed) if memory ran out. */
void wire_begin_fields(wire_wr_t *w, buf_t *b);
int wire_end_fields(wire_wr_t *w);

/* ---- reading: fields of one frame body (after the length) ---- */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    int err; /* set once a read ran past the end; later reads return 0 */
} wire_rd_t;

void wire_rd_init(wire_rd_t *r, const uint8_t *body, size_t len);
uint8_t wire_u8(wire_rd_t *r);
uint16_t wire_u16(wire_rd_t *r);
uint32_t wire_u32(wire_rd_t *r);
uint64_t wire_u64(wire_rd_t *r);
/* A span of n bytes (pointer into the frame), NULL on error. */
const uint8_t *wire_bytes(wire_rd_t *r, size_t n);
/* A str16: pointer and length, NULL on error. */
const uint8_t *wire_str16(wire_rd_t *r, size_t *n);
/* Every remaining byte (NULL and *n = 0 after an error). */
const uint8_t *wire_rest(wire_rd_t *r, size_t *n);

/* Microseconds since the epoch (wall clock). */
uint64_t wire_now_us(void);

#endif
