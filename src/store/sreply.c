#include "store/sreply.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "net/wire.h"
#include "store/sproto.h"

/* Pickle protocol 5 opcodes used below. */
#define PK_PROTO 0x80
#define PK_NONE 'N'
#define PK_EMPTY_LIST ']'
#define PK_MARK '('
#define PK_BINUNICODE 'X'
#define PK_APPENDS 'e'
#define PK_STOP '.'

static int too_large(buf_t *b, uint64_t req, size_t n)
{
    return sreply_failed(b, req, STORE_ERR_INTERNAL,
                         "the answer (%zu bytes) is larger than the frame limit", n);
}

static int with_payload(buf_t *b, uint8_t type, uint64_t req, const void *p, size_t n)
{
    if (n > STORE_MAX_FRAME - 16)
        return too_large(b, req, n);
    wire_wr_t w;
    wire_begin(&w, b, type, STORE_MAX_FRAME);
    wire_put_u64(&w, req);
    wire_put_bytes(&w, p, n);
    return wire_end(&w);
}

int sreply_ok(buf_t *b, uint64_t req, const void *pickle, size_t n)
{
    return with_payload(b, SMSG_OK, req, pickle, n);
}

int sreply_none(buf_t *b, uint64_t req)
{
    static const uint8_t none[] = {PK_PROTO, 5, PK_NONE, PK_STOP};
    return sreply_ok(b, req, none, sizeof none);
}

int sreply_str_list(buf_t *b, uint64_t req, const uint8_t *entries, size_t len, uint32_t count)
{
    if (len > STORE_MAX_FRAME - 64 - (size_t)count * 3)
        return too_large(b, req, len);
    wire_wr_t w;
    wire_begin(&w, b, SMSG_OK, STORE_MAX_FRAME);
    wire_put_u64(&w, req);
    static const uint8_t head[] = {PK_PROTO, 5, PK_EMPTY_LIST};
    wire_put_bytes(&w, head, sizeof head);
    if (count) {
        wire_put_u8(&w, PK_MARK);
        wire_rd_t r;
        wire_rd_init(&r, entries, len);
        for (uint32_t i = 0; i < count; i++) {
            size_t n;
            const uint8_t *s = wire_str16(&r, &n);
            uint8_t le[5] = {PK_BINUNICODE, (uint8_t)n, (uint8_t)(n >> 8), 0, 0};
            wire_put_bytes(&w, le, sizeof le);
            wire_put_bytes(&w, s, n);
        }
        wire_put_u8(&w, PK_APPENDS);
    }
    wire_put_u8(&w, PK_STOP);
    return wire_end(&w);
}

int sreply_ref(buf_t *b, uint64_t req, const char *id, size_t idlen, uint64_t class_id,
               const char *backend)
{
    wire_wr_t w;
    wire_begin(&w, b, SMSG_REF, STORE_MAX_FRAME);
    wire_put_u64(&w, req);
    wire_put_str16(&w, id, idlen);
    wire_put_u64(&w, class_id);
    wire_put_str16(&w, backend, strlen(backend));
    return wire_end(&w);
}

int sreply_ref_replicas(buf_t *b, uint64_t req, const char *id, size_t idlen, uint64_t class_id,
                        const char *backend, const uint8_t *entries, size_t len, uint32_t count)
{
    if (count > 0xffff)
        count = 0; /* cannot be: a backend id per replica, one replica per backend */
    wire_wr_t w;
    wire_begin(&w, b, SMSG_REF, STORE_MAX_FRAME);
    wire_put_u64(&w, req);
    wire_put_str16(&w, id, idlen);
    wire_put_u64(&w, class_id);
    wire_put_str16(&w, backend, strlen(backend));
    wire_put_u16(&w, (uint16_t)count);
    if (count)
        wire_put_bytes(&w, entries, len);
    return wire_end(&w);
}

int sreply_backends(buf_t *b, uint64_t req, const uint8_t *entries, size_t len, uint32_t count)
{
    if (len > STORE_MAX_FRAME - 64)
        return too_large(b, req, len);
    wire_wr_t w;
    wire_begin(&w, b, SMSG_BACKEND_LIST, STORE_MAX_FRAME);
    wire_put_u64(&w, req);
    wire_put_u32(&w, count);
    wire_put_bytes(&w, entries, len);
    return wire_end(&w);
}

int sreply_raised(buf_t *b, uint64_t req, const void *pickle, size_t n)
{
    return with_payload(b, SMSG_RAISED, req, pickle, n);
}

int sreply_class_bytes(buf_t *b, uint64_t req, const void *pickle, size_t n)
{
    return with_payload(b, SMSG_CLASS_BYTES, req, pickle, n);
}

int sreply_failed(buf_t *b, uint64_t req, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    wire_wr_t w;
    wire_begin(&w, b, SMSG_FAILED, STORE_MAX_FRAME);
    wire_put_u64(&w, req);
    wire_put_u8(&w, (uint8_t)code);
    wire_put_str16(&w, msg, (size_t)n);
    return wire_end(&w);
}

int utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}
