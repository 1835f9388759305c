#include "tools/gen.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/frame.h"

/* One fill is about one large write's worth. */
#define WINDOW_BYTES ((size_t)64 * 1024)
/* The smallest record: a one-digit decimal value, unframed. */
#define MIN_RECORD 1

static void put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* giles' BinaryIntegerDataSource length: 8 + the partition, in a U32. */
static size_t item_size(const gen_t *g, uint64_t value)
{
    if (g->kind == GEN_U64)
        return 4 + 8 + g->plen;
    char digits[24];
    return (size_t)snprintf(digits, sizeof digits, "%" PRIu64, value);
}

size_t gen_next_size(const gen_t *g)
{
    return (g->frame ? 4 : 0) + item_size(g, g->counter + 1);
}

int gen_init(gen_t *g, gen_kind kind, uint64_t start_from, const char *partition, int frame)
{
    memset(g, 0, sizeof *g);
    g->kind = kind;
    g->counter = start_from;
    g->partition = partition ? partition : "";
    g->plen = strlen(g->partition);
    g->frame = frame;
    /* Both lengths must fit giles' U32 headers. */
    if (g->plen > UINT32_MAX - 16)
        return -1;
    size_t biggest = 4 + 4 + 8 + g->plen + 24;
    g->cap = WINDOW_BYTES + biggest;
    g->max_n = g->cap / MIN_RECORD;
    g->window.data = malloc(g->cap);
    g->window.off = calloc(g->max_n + 1, sizeof *g->window.off);
    if (!g->window.data || !g->window.off) {
        gen_free(g);
        return -1;
    }
    return 0;
}

void gen_free(gen_t *g)
{
    free(g->window.data);
    free(g->window.off);
    memset(g, 0, sizeof *g);
}

/* Write the next record at p (room for gen_next_size bytes); returns its size. */
static size_t put_next(gen_t *g, uint8_t *p)
{
    g->counter++; /* wraps at 2^64 like giles' U64 */
    size_t item = item_size(g, g->counter), pos = 0;
    if (g->frame) {
        frame_put_u32be(p, (uint32_t)item);
        pos = 4;
    }
    if (g->kind == GEN_DECIMAL) {
        char digits[24];
        snprintf(digits, sizeof digits, "%" PRIu64, g->counter);
        memcpy(p + pos, digits, item);
        return pos + item;
    }
    frame_put_u32be(p + pos, (uint32_t)(8 + g->plen));
    put_u64be(p + pos + 4, g->counter);
    memcpy(p + pos + 12, g->partition, g->plen);
    return pos + item;
}

void gen_fill(gen_t *g, uint64_t max_items, size_t max_bytes)
{
    records_t *w = &g->window;
    size_t len = 0, n = 0;
    while (n < max_items && n < g->max_n) {
        size_t next = gen_next_size(g);
        if (n > 0 && (len + next > max_bytes || len + next > g->cap))
            break;
        w->off[n++] = len;
        len += put_next(g, w->data + len);
    }
    w->off[n] = len;
    w->n = n;
    w->len = len;
}
