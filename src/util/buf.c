#include "util/buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

void buf_init(buf_t *b) { memset(b, 0, sizeof *b); }

void buf_free(buf_t *b)
{
    free(b->data);
    buf_init(b);
}

int buf_reserve(buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    /* Reclaim the consumed prefix before growing. */
    if (b->off > 0) {
        buf_compact(b);
        if (b->cap - b->len >= extra)
            return 0;
    }
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_reserve_exact(buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    buf_compact(b);
    if (b->cap - b->len >= extra)
        return 0;
    uint8_t *p = realloc(b->data, b->len + extra);
    if (!p)
        return -1;
    b->data = p;
    b->cap = b->len + extra;
    return 0;
}

int buf_append(buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void buf_consume(buf_t *b, size_t n)
{
    /* Compare with what is left rather than adding first: off + n can wrap. */
    if (n >= b->len - b->off)
        b->off = b->len = 0;
    else
        b->off += n;
}

void buf_compact(buf_t *b)
{
    if (b->off == 0)
        return;
    size_t n = b->len - b->off;
    if (n)
        memmove(b->data, b->data + b->off, n);
    b->off = 0;
    b->len = n;
}

void buf_clear(buf_t *b) { b->off = b->len = 0; }

void buf_shrink(buf_t *b, size_t keep)
{
    if (buf_unread(b) == 0 && b->cap > keep) {
        free(b->data);
        buf_init(b);
    }
}

int buf_prepend(buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (b->off >= n) {
        b->off -= n;
        memcpy(b->data + b->off, p, n);
        return 0;
    }
    buf_compact(b);
    if (buf_reserve(b, n) < 0)
        return -1;
    memmove(b->data + n, b->data, b->len);
    memcpy(b->data, p, n);
    b->len += n;
    return 0;
}

void buf_prefault(void *p, size_t n)
{
    if (n < BUF_PREFAULT_MIN)
        return;
    /* Huge pages where the system gives them on request (transparent huge
     * pages "madvise", Debian's default): 512 times fewer faults, each also
     * a fault of the hypervisor on a VM whose memory is backed lazily; the
     * region is populated at once, so nothing is wasted. */
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t hstart = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t hend = ((uintptr_t)p + n) & ~(huge - 1);
    if (hend > hstart)
        (void)madvise((void *)hstart, hend - hstart, MADV_HUGEPAGE);
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + n) & ~(page - 1);
    if (end > start)
        (void)madvise((void *)start, end - start, MADV_POPULATE_WRITE);
}
