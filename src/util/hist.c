#include "util/hist.h"

#include <string.h>
#include <time.h>

void hist_init(hist_t *h) { memset(h, 0, sizeof *h); }

/* Values below 2^SUB_BITS get their own bucket; above, each power of two is cut
 * into 2^SUB_BITS linear sub-buckets. */
static unsigned bucket_of(uint64_t v)
{
    if (v < (1u << HIST_SUB_BITS))
        return (unsigned)v;
    unsigned top = 63 - (unsigned)__builtin_clzll(v); /* position of highest set bit */
    unsigned shift = top - HIST_SUB_BITS;
    unsigned sub = (unsigned)(v >> shift) & ((1u << HIST_SUB_BITS) - 1);
    return ((shift + 1) << HIST_SUB_BITS) + sub;
}

static uint64_t bucket_upper(unsigned b)
{
    if (b < (1u << HIST_SUB_BITS))
        return b;
    unsigned shift = (b >> HIST_SUB_BITS) - 1;
    uint64_t sub = b & ((1u << HIST_SUB_BITS) - 1);
    uint64_t base = ((uint64_t)1 << HIST_SUB_BITS | sub) << shift;
    return base + (((uint64_t)1 << shift) - 1);
}

void hist_record(hist_t *h, uint64_t v)
{
    unsigned b = bucket_of(v);
    if (b >= HIST_BUCKETS)
        b = HIST_BUCKETS - 1;
    h->counts[b]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

uint64_t hist_quantile(const hist_t *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total);
    if (rank >= h->total)
        rank = h->total - 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen > rank) {
            uint64_t up = bucket_upper(b);
            return up < h->max ? up : h->max;
        }
    }
    return h->max;
}

void hist_merge(hist_t *into, const hist_t *from)
{
    for (unsigned b = 0; b < HIST_BUCKETS; b++)
        into->counts[b] += from->counts[b];
    into->total += from->total;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
