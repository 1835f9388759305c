/* A map from object ids (short byte strings) to nodes that the caller embeds
 * in its own structs (intrusive: no allocation per entry here). Built on the
 * u64 id map with a stable hash of the id; ids that share a hash are chained.
 * Not thread-safe: each user guards its own map (the loop thread's table, the
 * GIL for the Python registry). */
#ifndef BETTONG_OMAP_H
#define BETTONG_OMAP_H

#include <stddef.h>
#include <stdint.h>

#include "util/idmap.h"
#include "store/sdb.h"

typedef struct onode {
    struct onode *chain; /* next node with the same hash */
    uint64_t hash;
    uint8_t len;
    char id[SDB_ID_MAX + 1]; /* NUL-terminated for log lines */
} onode_t;

typedef struct {
    idmap_t m;
    size_t len;
} omap_t;

void omap_init(omap_t *m);
/* Frees the map's table, not the nodes. */
void omap_free(omap_t *m);
/* Set a node's id (1..SDB_ID_MAX bytes; the caller checked). */
void onode_set(onode_t *n, const char *id, size_t len);
onode_t *omap_get(const omap_t *m, const char *id, size_t len);
/* Insert a node whose id is not in the map. 0, or -1 if memory ran out. */
int omap_add(omap_t *m, onode_t *n);
void omap_del(omap_t *m, onode_t *n);
static inline size_t omap_len(const omap_t *m) { return m->len; }

#endif
