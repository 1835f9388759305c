#include "net/frame.h"

#include <string.h>

int frame_spec_from_struct(frame_spec_t *spec, size_t header_len, const char *fmt)
{
    int big = 0; /* native order on the platforms we build for is little-endian */
    int native_size = 1; /* no prefix or '@': native sizes, as in Python's struct */
    const char *p = fmt;
    switch (*p) {
    case '>':
    case '!':
        big = 1;
        native_size = 0;
        p++;
        break;
    case '<':
    case '=':
        native_size = 0;
        p++;
        break;
    case '@':
        p++;
        break;
    default:
        break;
    }
    int size, is_signed;
    switch (*p) {
    case 'B': size = 1; is_signed = 0; break;
    case 'b': size = 1; is_signed = 1; break;
    case 'H': size = 2; is_signed = 0; break;
    case 'h': size = 2; is_signed = 1; break;
    case 'I': size = 4; is_signed = 0; break;
    case 'i': size = 4; is_signed = 1; break;
    case 'L': size = native_size ? (int)sizeof(long) : 4; is_signed = 0; break;
    case 'l': size = native_size ? (int)sizeof(long) : 4; is_signed = 1; break;
    case 'Q': size = 8; is_signed = 0; break;
    case 'q': size = 8; is_signed = 1; break;
    default: return -1;
    }
    /* Native "@L" is 8 bytes on LP64; only accept it when the sizes agree. */
    if (p[1] != '\0' || (size_t)size != header_len)
        return -1;
    spec->header_len = header_len;
    spec->int_size = size;
    spec->big_endian = big;
    spec->is_signed = is_signed;
    spec->length_fn = NULL;
    spec->length_ctx = NULL;
    spec->payload_skip = 0;
    return 0;
}

int frame_header_length(const frame_spec_t *spec, const uint8_t *h, uint64_t *len)
{
    uint64_t v = 0;
    int n = spec->int_size;
    if (spec->big_endian)
        for (int i = 0; i < n; i++)
            v = (v << 8) | h[i];
    else
        for (int i = n - 1; i >= 0; i--)
            v = (v << 8) | h[i];
    if (spec->is_signed && n < 8 && (v >> (8 * n - 1)) & 1)
        return -1;
    if (spec->is_signed && n == 8 && (v >> 63))
        return -1;
    *len = v;
    return 0;
}

frame_status frame_next(const frame_spec_t *spec, const uint8_t *data, size_t avail,
                        size_t *payload_off, size_t *payload_len, size_t *frame_len,
                        uint64_t *declared_len)
{
    if (avail < spec->header_len) {
        *frame_len = 0;
        return FRAME_NEED_MORE;
    }
    uint64_t len;
    int rc = spec->length_fn
                 ? spec->length_fn(spec->length_ctx, data, spec->header_len, &len)
                 : frame_header_length(spec, data, &len);
    if (rc < 0)
        return FRAME_BAD_HEADER;
    *declared_len = len;
    if (len < spec->payload_skip)
        return FRAME_BAD_HEADER;
    if (len > spec->max_payload)
        return FRAME_TOO_LARGE;
    /* Guard the sum below against wrapping when max_payload does not bound it. */
    if (len > SIZE_MAX - spec->header_len)
        return FRAME_TOO_LARGE;
    size_t total = spec->header_len + (size_t)len;
    *frame_len = total;
    if (avail < total)
        return FRAME_NEED_MORE;
    *payload_off = spec->header_len + spec->payload_skip;
    *payload_len = (size_t)len - spec->payload_skip;
    return FRAME_OK;
}

void frame_put_u32be(uint8_t out[4], uint32_t v)
{
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
}

void frame_spec_connector(frame_spec_t *spec, uint64_t max_payload)
{
    *spec = (frame_spec_t){.header_len = 4, .int_size = 4, .big_endian = 0, .is_signed = 0,
                           .payload_skip = 8};
    /* The declared length counts the event time too. */
    spec->max_payload = max_payload > UINT64_MAX - 8 ? UINT64_MAX : max_payload + 8;
}

int frame_put_connector_header(uint8_t out[FRAME_CONNECTOR_HEADER], size_t payload_len,
                               int64_t event_time)
{
    if (payload_len > UINT32_MAX - 8)
        return -1;
    uint32_t len = (uint32_t)payload_len + 8;
    uint64_t t = (uint64_t)event_time;
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(len >> (8 * i));
    for (int i = 0; i < 8; i++)
        out[4 + i] = (uint8_t)(t >> (8 * i));
    return 0;
}

int64_t frame_connector_event_time(const uint8_t *frame)
{
    uint64_t t = 0;
    for (int i = 7; i >= 0; i--)
        t = (t << 8) | frame[4 + i];
    return (int64_t)t;
}
