/* Length-prefixed framing: a fixed-size header that holds the payload length,
 * then the payload. The header is parsed in C for the struct formats that are a
 * single integer (">I", "<H", "!Q", ...); any other decoder supplies a length
 * callback (the Python bridge calls the user's payload_length there).
 *
 * Wallaroo 0.6.1's connector frame (wallaroo.experimental) is one of these with
 * a prefix inside the counted length:
 *     u32 LE  L = 8 + len(payload)
 *     i64 LE  event time (ms since the epoch, or whatever the producer gave; 0 by default)
 *     payload
 * A spec with payload_skip = 8 hands over only the payload; the event time
 * stays in the frame (frame_connector_event_time). */
#ifndef BETTONG_FRAME_H
#define BETTONG_FRAME_H

#include <stddef.h>
#include <stdint.h>

/* Returns 0 and sets *len, or -1 when the header is invalid. */
typedef int (*frame_length_fn)(void *ctx, const uint8_t *header, size_t header_len,
                               uint64_t *len);

typedef struct {
    size_t header_len;
    /* C parsing when length_fn is NULL: */
    int int_size;      /* 1, 2, 4 or 8 */
    int big_endian;
    int is_signed;
    /* Otherwise: */
    frame_length_fn length_fn;
    void *length_ctx;
    uint64_t max_payload; /* larger frames are refused (the declared length) */
    /* Bytes at the start of the declared length that are not payload (the
     * connector frame's event time); a shorter declared length is a bad header. */
    size_t payload_skip;
} frame_spec_t;

/* Fill `spec` from a struct format of one integer; header_len must equal the
 * format's size. max_payload is left to the caller. Returns 0, or -1 if the format is not one C can parse (the
 * caller then falls back to a length callback). */
int frame_spec_from_struct(frame_spec_t *spec, size_t header_len, const char *fmt);

/* Decode the integer in a header per the spec's C parsing. Returns 0 or -1
 * (a negative signed length). */
int frame_header_length(const frame_spec_t *spec, const uint8_t *header, uint64_t *len);

typedef enum {
    FRAME_OK = 0,       /* a whole frame: payload at [*payload, *payload+*payload_len) */
    FRAME_NEED_MORE,    /* not enough bytes yet; *need_total is the frame size when known */
    FRAME_TOO_LARGE,    /* the length exceeds max_payload */
    FRAME_BAD_HEADER,   /* the length callback refused the header */
} frame_status;

/* Look at the frame starting at data[0]. On FRAME_OK, *frame_len is header+payload. */
frame_status frame_next(const frame_spec_t *spec, const uint8_t *data, size_t avail,
                        size_t *payload_off, size_t *payload_len, size_t *frame_len,
                        uint64_t *declared_len);

/* Write a 4-byte big-endian length header into out. */
void frame_put_u32be(uint8_t out[4], uint32_t v);

/* ---- Wallaroo 0.6.1 connector frames ---- */

#define FRAME_CONNECTOR_HEADER 12 /* u32 LE length + i64 LE event time */

/* The spec of connector frames whose payload is at most max_payload bytes. */
void frame_spec_connector(frame_spec_t *spec, uint64_t max_payload);
/* Write the 12 bytes before a payload of payload_len bytes. Returns 0, or -1
 * if the payload is too long for the u32 length (nothing written). */
int frame_put_connector_header(uint8_t out[FRAME_CONNECTOR_HEADER], size_t payload_len,
                               int64_t event_time);
/* The event time of a whole connector frame (frame_next said FRAME_OK). */
int64_t frame_connector_event_time(const uint8_t *frame);

#endif
