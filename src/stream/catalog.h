/* A worker's resilience directory: which checkpoints are complete, durably.
 * An LMDB environment (DIR/catalog.mdb) holds, per complete checkpoint, its
 * number, the full snapshot it builds on, and its file's size and CRC; and
 * the identity of the application that owns the directory, so that another
 * application's directory is refused. DIR/worker.lock (flock) keeps a second
 * process off the directory. No Python; safe to use from one thread at a time
 * (the engine's loop at start-up, then its checkpoint work thread). */
#ifndef BETTONG_CATALOG_H
#define BETTONG_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "stream/snapshot.h"

typedef struct catalog catalog_t;

/* Create DIR if needed, lock it, open its catalog. identity names the
 * application (module and application name); a directory made by another
 * identity is refused. Returns NULL with err set. */
catalog_t *catalog_open(const char *dir, const char *identity, char *err, size_t errlen);
void catalog_close(catalog_t *c);
const char *catalog_dir(const catalog_t *c);

/* Record checkpoint info->n as complete (durably, with a sync) and forget the
 * records of checkpoints below prune_below. Returns 0 or -1 with err set (the
 * earlier records stay as they were). */
int catalog_complete(catalog_t *c, const snap_info_t *info, uint64_t prune_below, char *err,
                     size_t errlen);
/* The same, storing `meta` (len bytes) under `key` in the same transaction:
 * what must agree with the checkpoint (a cluster's members and table). */
int catalog_complete_with(catalog_t *c, const snap_info_t *info, uint64_t prune_below,
                          const char *key, const void *meta, size_t len, char *err,
                          size_t errlen);
/* The bytes stored under key, appended to out. Returns 1, 0 if there are none,
 * or -1 with err set. */
int catalog_get(catalog_t *c, const char *key, buf_t *out, char *err, size_t errlen);
/* The complete checkpoints, newest first, into out (at most max). Returns how
 * many, or -1 with err set. */
int catalog_list(catalog_t *c, snap_info_t *out, size_t max, char *err, size_t errlen);

#endif
