/* Fuzz target: the frame cutter (net/frame.c) as inconn.c drives it.
 *
 * Input: a 4-byte preamble, then the byte stream a peer sends.
 *   [0] which spec: a struct format from the table below (C parsing), or a
 *       length callback (as a Python decoder's payload_length)
 *   [1] bits 0-2: max_payload choice, bits 3-5: header length choice (which
 *       may disagree with the format: then it is refused)
 *   [2] chunk size of the reads (0: all at once)
 *   [3] bits 0-1: callback quirks; bit 2: 8 bytes of the declared length are
 *       skipped (payload_skip, as the connector frame's event time)
 * The stream is cut twice: fed whole, and fed in reads of the chosen size into
 * a buffer that is consumed frame by frame (inconn.c's drain_frames). Both
 * must give the same frames, and every answer of frame_next must be
 * consistent with an independent decoding of the header. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/frame.h"
#include "util/buf.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static const char *const formats[] = {
    ">I", "<I", "!H", "<H", "B", "b", ">q", "<Q", "@L", "=l", ">i", "h", "@Q", ">x", "", "II",
};
#define NFORMATS (sizeof formats / sizeof formats[0])

static const uint64_t limits[] = {0, 1, 16, 255, 4096, UINT32_MAX, INT64_MAX, UINT64_MAX};
static const size_t header_lens[] = {4, 1, 2, 8, 4, 8, 3, 0};

/* The length callback: a header of header_len bytes read as little-endian,
 * refused when its first byte is 0xff (mode bit 0), with a big offset added so
 * the sum header_len + len can wrap (mode bit 1). */
static int cb_length(void *ctx, const uint8_t *h, size_t n, uint64_t *len)
{
    unsigned mode = *(const unsigned *)ctx;
    if ((mode & 1) && n > 0 && h[0] == 0xff)
        return -1;
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | h[i];
    if (mode & 2)
        v += UINT64_MAX - 64;
    *len = v;
    return 0;
}

/* The expected declared length, decoded independently; -1 if refused. */
static int ref_length(const frame_spec_t *s, const uint8_t *h, unsigned mode, uint64_t *len)
{
    if (s->length_fn)
        return cb_length(&mode, h, s->header_len, len);
    uint64_t v = 0;
    for (int i = 0; i < s->int_size; i++) {
        int at = s->big_endian ? i : s->int_size - 1 - i;
        v = v << 8 | h[at];
    }
    if (s->is_signed && (v >> (8 * s->int_size - 1)) & 1)
        return -1;
    *len = v;
    return 0;
}

typedef struct {
    size_t off, len; /* payload position in the whole stream */
} cut_t;

/* Check one frame_next answer against the reference; returns the status. */
static frame_status next_checked(const frame_spec_t *s, unsigned mode, const uint8_t *d,
                                 size_t avail, size_t *poff, size_t *plen, size_t *flen)
{
    uint64_t declared = 0;
    *flen = (size_t)-1;
    frame_status st = frame_next(s, d, avail, poff, plen, flen, &declared);
    if (avail < s->header_len) {
        CHECK(st == FRAME_NEED_MORE && *flen == 0);
        return st;
    }
    uint64_t want;
    if (ref_length(s, d, mode, &want) < 0) {
        CHECK(st == FRAME_BAD_HEADER);
        return st;
    }
    CHECK(declared == want);
    if (want < s->payload_skip) {
        CHECK(st == FRAME_BAD_HEADER);
        return st;
    }
    if (want > s->max_payload || want > SIZE_MAX - s->header_len) {
        CHECK(st == FRAME_TOO_LARGE);
        return st;
    }
    CHECK(*flen == s->header_len + want);
    if (avail < *flen) {
        CHECK(st == FRAME_NEED_MORE);
        return st;
    }
    CHECK(st == FRAME_OK && *poff == s->header_len + s->payload_skip &&
          *plen == want - s->payload_skip);
    CHECK(*poff + *plen == *flen && *flen <= avail);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    unsigned which = data[0], mode = data[3];
    frame_spec_t s;
    memset(&s, 0, sizeof s);
    if (which % (NFORMATS + 1) < NFORMATS) {
        const char *fmt = formats[which % (NFORMATS + 1)];
        size_t hl = header_lens[data[1] >> 3 & 7];
        if (frame_spec_from_struct(&s, hl, fmt) < 0)
            return 0;
        CHECK(s.header_len == hl && s.int_size == (int)hl && !s.length_fn);
    } else {
        s.header_len = header_lens[data[1] >> 3 & 7]; /* even 0 */
        s.length_fn = cb_length;
        s.length_ctx = &mode;
    }
    s.max_payload = limits[data[1] & 7];
    if (mode & 4)
        s.payload_skip = 8;
    size_t chunk = data[2] ? data[2] : size;
    const uint8_t *stream = data + 4;
    size_t n = size - 4;

    /* Pass 1: the whole stream at once. */
    cut_t whole[512];
    size_t nwhole = 0, at = 0;
    frame_status end1 = FRAME_NEED_MORE;
    for (;;) {
        size_t poff, plen, flen;
        frame_status st = next_checked(&s, mode, stream + at, n - at, &poff, &plen, &flen);
        if (st != FRAME_OK) {
            end1 = st;
            break;
        }
        if (nwhole == 512)
            return 0; /* enough: also bounds a zero-length header's endless frames */
        whole[nwhole++] = (cut_t){at + poff, plen};
        at += flen;
    }

    /* Pass 2: reads of `chunk` bytes into a buffer consumed frame by frame. */
    buf_t in;
    buf_init(&in);
    size_t fed = 0, consumed = 0, k = 0;
    frame_status end2 = FRAME_NEED_MORE;
    do { /* at least once: an empty stream is cut too */
        size_t m = n - fed < chunk ? n - fed : chunk;
        CHECK(m == 0 || buf_append(&in, stream + fed, m) == 0);
        fed += m;
        for (;;) {
            size_t poff, plen, flen;
            frame_status st =
                next_checked(&s, mode, buf_head(&in), buf_unread(&in), &poff, &plen, &flen);
            if (st != FRAME_OK) {
                end2 = st;
                break;
            }
            CHECK(k < nwhole && whole[k].off == consumed + poff && whole[k].len == plen);
            CHECK(memcmp(buf_head(&in) + poff, stream + whole[k].off, plen) == 0);
            k++;
            buf_consume(&in, flen);
            consumed += flen;
        }
        if (end2 == FRAME_NEED_MORE && buf_unread(&in) == 0)
            buf_shrink(&in, 64);
    } while (end2 == FRAME_NEED_MORE && fed < n);
    buf_free(&in);
    CHECK(k == nwhole && end1 == end2);
    return 0;
}
