/* The resilience protocols of the stream service, shared by the engine and the
 * tools (bettong send --resumable, bettong receive --exactly-once). Described
 * for users in docs/resilience.md; frames use net/wire (u32 length, u8 type,
 * big-endian fields), except the resumable client's own frames, which follow
 * the application's framing. */
#ifndef BETTONG_EOPROTO_H
#define BETTONG_EOPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The u32 big-endian length that starts every frame of both protocols. */
static inline uint32_t eo_get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- resumable sources ---- */

/* The payload of a resumable client's first frame starts with these bytes,
 * then a u16 length and the stream's name. */
#define RS_MAGIC "\xff" "BTRSM\x01\x00"
#define RS_MAGIC_LEN 8
#define RS_NAME_MAX 255
/* Engine to client. */
#define RS_RESUME 'R' /* u64: records the engine holds; send from this index */
#define RS_ACK 'A'    /* u64: records before this are in a complete checkpoint */
#define RS_ERROR 'E'  /* rest: UTF-8 text; the engine closes */
#define RS_MAX_FRAME 4096u

static inline int rs_is_hello(const uint8_t *payload, size_t len)
{
    return len >= RS_MAGIC_LEN && memcmp(payload, RS_MAGIC, RS_MAGIC_LEN) == 0;
}

/* ---- exactly-once sinks ---- */

#define EO_MAGIC "\xff" "BTEOSK\x01"
#define EO_MAGIC_LEN 8
#define EO_NAME_MAX 255
/* Receiver to engine. */
#define EO_GREETING 'G' /* EO_MAGIC */
#define EO_STATE 'S'    /* u64 committed, u64 prepared (for the writer named) */
#define EO_PREPARED 'P' /* u64 epoch: held durably up to it */
/* Engine to receiver. */
#define EO_WRITER 'W'   /* str16 name */
#define EO_DATA 'D'     /* u64 epoch, rest: records */
#define EO_EPOCH_END 'E'/* u64 epoch */
#define EO_COMMIT 'C'   /* u64 epoch */
#define EO_ABORT 'X'    /* u64 epoch: drop uncommitted epochs after it */
/* Largest frame either side accepts (a data frame carries one batch of output). */
#define EO_MAX_FRAME (64u << 20)

#endif
