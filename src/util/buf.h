/* A growable byte buffer with a read offset: bytes are appended at the end and
 * consumed from the front; compaction moves the unread tail to the start. */
#ifndef BETTONG_BUF_H
#define BETTONG_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *data;
    size_t off; /* first unread byte */
    size_t len; /* end of written bytes */
    size_t cap;
} buf_t;

void buf_init(buf_t *b);
void buf_free(buf_t *b);
/* Make room for at least `extra` bytes after len; returns 0 or -1 on OOM. */
int buf_reserve(buf_t *b, size_t extra);
/* The same, but grow to exactly len + extra (after moving the unread bytes to
 * the start), not to the next power of two: for a buffer whose size is
 * accounted. */
int buf_reserve_exact(buf_t *b, size_t extra);
int buf_append(buf_t *b, const void *p, size_t n);
/* Unread bytes. */
static inline size_t buf_unread(const buf_t *b) { return b->len - b->off; }
/* A buffer that never held a byte has no memory: its head is NULL, not NULL + 0
 * (undefined behaviour in C, which UBSan reports). */
static inline uint8_t *buf_head(const buf_t *b) { return b->data ? b->data + b->off : NULL; }
void buf_consume(buf_t *b, size_t n);
/* Move unread bytes to the start. */
void buf_compact(buf_t *b);
/* Drop everything (keeps the allocation). */
void buf_clear(buf_t *b);
/* Give back memory above `keep` bytes when the buffer is empty. */
void buf_shrink(buf_t *b, size_t keep);
/* Put `n` bytes before the unread ones (used to requeue failed writes). */
int buf_prepend(buf_t *b, const void *p, size_t n);

/* Have the kernel back the whole pages of p[0..n) with memory now, in one call
 * (MADV_POPULATE_WRITE), instead of one page fault per page as they are first
 * written: for a large receive buffer about to be filled. Best effort (nothing
 * happens on kernels before 5.14 or below BUF_PREFAULT_MIN bytes). */
#define BUF_PREFAULT_MIN (1024 * 1024)
void buf_prefault(void *p, size_t n);

#endif
