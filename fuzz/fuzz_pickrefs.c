/* Fuzz target: the persistent-reference scanner (store/pickrefs.c), which the
 * store's committer runs on every state a client sends in a PERSIST, without
 * Python.
 *
 * Input: any bytes, scanned as a pickle. Whatever it says, the scan must not
 * read outside the input, and an answer must be consistent: every id points
 * into the input, ids are sorted and unique, and scanning again gives the same
 * answer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/pickrefs.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly `size` bytes, so ASan sees any read past the end. */
    uint8_t *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    memcpy(p, data, size);
    pickref_t *refs, *again;
    size_t n, m;
    int rc = pickrefs_scan(p, size, &refs, &n);
    CHECK(rc == 0 || rc == -1);
    if (rc < 0) {
        CHECK(!refs && n == 0);
    } else {
        CHECK((n == 0) == (refs == NULL));
        for (size_t i = 0; i < n; i++) {
            CHECK(refs[i].id >= p && refs[i].id + refs[i].len <= p + size);
            if (i)
                CHECK(pickref_cmp(&refs[i - 1], &refs[i]) < 0);
        }
        CHECK(pickrefs_scan(p, size, &again, &m) == 0 && m == n);
        for (size_t i = 0; i < n; i++)
            CHECK(again[i].id == refs[i].id && again[i].len == refs[i].len);
        free(again);
    }
    free(refs);
    free(p);
    return 0;
}
