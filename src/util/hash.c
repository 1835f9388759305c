#include "util/hash.h"

#include <string.h>

/* The splitmix64 finalizer: a bijective mix with good avalanche. */
uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Eight bytes at a time, each word mixed in with a multiply-rotate; the tail and
 * the length go into the last word. Byte order is fixed (little-endian loads) so
 * the result does not depend on the machine. */
uint64_t hash_bytes(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (n + 1));
    while (n >= 8) {
        uint64_t k = load_le64(p) * 0x87c37b91114253d5ULL;
        k = (k << 31) | (k >> 33);
        h ^= k * 0x4cf5ad432745937fULL;
        h = ((h << 27) | (h >> 37)) * 5 + 0x52dce729;
        p += 8;
        n -= 8;
    }
    uint8_t tail[8] = {0};
    memcpy(tail, p, n);
    h ^= load_le64(tail) * 0x87c37b91114253d5ULL;
    return hash_u64(h);
}

uint64_t hash_combine(uint64_t acc, uint64_t h)
{
    return hash_u64(acc * 0x100000001b3ULL ^ h);
}
