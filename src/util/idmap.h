/* A hash map from u64 ids to pointers (open addressing, linear probing,
 * backward-shift deletion: no tombstones, so a map that sees many inserts and
 * removals does not slow down). The pool keys calls by the client's call id,
 * functions by id, and a worker's cached functions by gid with it.
 * NULL values are not stored: idmap_get returns NULL for "absent". */
#ifndef BETTONG_IDMAP_H
#define BETTONG_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t key;
    void *val; /* NULL: empty slot */
} idmap_slot_t;

typedef struct {
    idmap_slot_t *slots;
    size_t cap; /* a power of two, or 0 before the first insert */
    size_t len;
} idmap_t;

void idmap_init(idmap_t *m);
void idmap_free(idmap_t *m);
void *idmap_get(const idmap_t *m, uint64_t key);
/* Insert or replace. Returns 0, or -1 if memory ran out (map unchanged). */
int idmap_put(idmap_t *m, uint64_t key, void *val);
/* Insert only if absent: 0, IDMAP_EXISTS (unchanged) or -1 (out of memory). */
#define IDMAP_EXISTS (-2)
int idmap_add(idmap_t *m, uint64_t key, void *val);
/* Remove and return the value (NULL if absent). */
void *idmap_del(idmap_t *m, uint64_t key);
static inline size_t idmap_len(const idmap_t *m) { return m->len; }

/* Iterate: `*pos` starts at 0; returns the next value (and its key) or NULL at
 * the end. The map must not change during an iteration. */
void *idmap_next(const idmap_t *m, size_t *pos, uint64_t *key);

#endif
