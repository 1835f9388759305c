/* Length-prefixed framing: a fixed-size header that holds the payload length,
 * then the payload. The header is parsed in C for the struct formats that are a
 * single integer (">I", "<H", "!Q", ...); any other decoder supplies a length
 * callback (the Python bridge calls the user's payload_length there). */
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
    uint64_t max_payload; /* larger frames are refused */
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

#endif
