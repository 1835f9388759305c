/* The persistent references inside a stored state: the object ids of the
 * persistent ids ("bettong.obj", object_id, class_id) (sproto.h) that a pickle
 * holds, found by walking its opcodes, without Python. The committer needs
 * them to count the stored references to each object (srefs.h) for states it
 * never unpickles (a client's PERSIST) and to rebuild the counts of an
 * existing store.
 *
 * The walk keeps a shadow of the unpickler's stack and memo that only knows
 * which items are str (and their bytes) and which are such tuples; everything
 * else is "some object". A BINPERSID whose argument is such a tuple is a
 * reference. Any pickle protocol (0..5) is understood; an unknown opcode or a
 * pickle cut short is an error (the caller logs it and counts nothing). */
#ifndef BETTONG_PICKREFS_H
#define BETTONG_PICKREFS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint8_t *id; /* points into the scanned pickle */
    size_t len;
} pickref_t;

/* Scan p[0..n): *out (malloc'd, the caller frees it; NULL when *count is 0)
 * gets the referenced ids, sorted (by length, then bytes) and without
 * duplicates. Returns 0, or -1 (malformed or unknown pickle, or out of memory:
 * *out NULL, *count 0). */
int pickrefs_scan(const uint8_t *p, size_t n, pickref_t **out, size_t *count);

/* Order of pickref_t (for bsearch and merges): length, then bytes. */
int pickref_cmp(const pickref_t *a, const pickref_t *b);

#endif
