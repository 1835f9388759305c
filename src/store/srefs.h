/* Stored references between objects: for every object, how many stored
 * objects' states refer to it (by persistent id, sproto.h). The store refuses
 * to delete an object whose count is not 0 (STORE_ERR_REFERENCED), so a stored
 * reference never dangles.
 *
 * The counts live in the store's LMDB (sdb.h, database `refs`) and change in
 * the same transaction as the states they describe: every write of a state
 * (create, replace, delete) goes through srefs_update, which the committer
 * calls (commit.c). A state's references are the distinct ids of the
 * persistent ids inside its pickle (pickrefs.h), other than its own id; a
 * referrer counts once however often it names the object.
 *
 * Several backends: the same changes are also told to the caller (`tell`),
 * which sends them to the service's directory (commit.c, meta.h): there each
 * backend keeps the counts of what its own states refer to, wherever those
 * objects live, so a delete can add up every backend's referrers, and a move
 * changes nothing in them. */
#ifndef BETTONG_SREFS_H
#define BETTONG_SREFS_H

#include <stddef.h>
#include <stdint.h>

#include "store/sdb.h"

/* Object `id`'s stored state changes from old[0..oldlen) to new[0..newlen)
 * (old NULL: created; new NULL: deleted): the counts of the objects they
 * refer to go down and up in w. A state that cannot be scanned counts no
 * references (logged). Call it before the state itself is written (old may
 * point into the map). Returns SDB_OK or SDB_ERROR. */
typedef void srefs_tell_fn(void *ctx, const char *id, size_t idlen, int delta);
/* ... and each count that changes, also to tell (unless NULL). */
int srefs_update(sdb_write_t *w, const char *id, size_t idlen, const uint8_t *old,
                 size_t oldlen, const uint8_t *new_state, size_t newlen, srefs_tell_fn *tell,
                 void *ctx);
/* Each distinct id a state refers to (not self), to fn with delta +1. Returns
 * 0, or -1 out of memory. */
int srefs_each(const char *self, size_t selflen, const uint8_t *state, size_t len,
               srefs_tell_fn *fn, void *ctx);
/* How many stored objects refer to id. */
int srefs_count(sdb_read_t *r, const char *id, size_t idlen, uint64_t *count);
/* At start-up, before any request: a store of format version 1 gets its
 * counts built from every stored state and becomes version 2. Returns 0 or -1
 * (err set). */
int srefs_ensure(sdb_t *db, char *err, size_t errlen);

#endif
