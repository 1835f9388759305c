/* The object store's storage: an LMDB environment in the store's directory.
 * No Python and no event loop here, so it is unit-tested on its own.
 *
 * Named databases:
 *   objects      object id -> u64 class_id (big-endian) + state pickle
 *   aliases      alias -> object id
 *   obj_aliases  object id -> alias (sorted duplicates: an object's aliases)
 *   classes      u64 class_id (big-endian) -> u16 qualname length, qualname,
 *                class pickle
 *   meta         "format" -> SDB_FORMAT, "version" -> u32 SDB_VERSION,
 *                "backend_id" -> the store's id (a UUID text, made once)
 *   refs         object id -> u64 (big-endian): how many stored objects' states
 *                refer to it (srefs.h keeps it; absent: none). Version 2 of the
 *                format; a version 1 store is opened and upgraded (the counts
 *                rebuilt) by srefs_ensure, after which a version 1 binary
 *                refuses it (it would not keep the counts).
 *   replica_of   object id -> the master's backend id: the object in `objects`
 *                is a read-only replica of an object another backend holds
 *                (REPLICA_PUT), not this backend's own. Created on open (a
 *                store of before has none).
 *   replicas     object id -> backend id (sorted duplicates): the backends
 *                holding a replica of an object this backend is the master of.
 *   forwards     object id -> object id: a version consolidated into its
 *                original (sdb_put_forward): requests naming the first act on
 *                the second. Version 3 of the format, as are replica_of and
 *                replicas: a version 2 store is opened and marked 3 (nothing to
 *                rebuild), after which a version 2 binary, which would ignore
 *                replicas and forwards, refuses it.
 *   moving       object id -> backend id: a MOVE of the object to that backend
 *                began (sdb_set_moving) and has not ended; the delete that
 *                ends it clears it. Format 3 too. Found after a crash, it
 *                says the object may be the other backend's already: spy.c
 *                resolves it.
 *
 * The directory: a new or empty one is initialized and then marked with the
 * file SDB_MARKER (written last, so an interrupted start-up leaves a directory
 * that is refused rather than mistaken for a store); a marked one is opened and
 * its meta database checked; anything else (a non-empty directory without the
 * marker, a marker that does not match, data that LMDB cannot open) is refused
 * and never written to. DIR/store.lock is held with flock(LOCK_EX|LOCK_NB) for
 * the life of the sdb_t, so a second store on the same directory is refused.
 *
 * Threads: reads (sdb_read_*) from any thread, each with its own read
 * transaction; writes from one thread at a time (LMDB has one writer). Every
 * commit is synchronous (LMDB's default): once sdb_write_commit returns 0 the
 * change survives a crash of the process or the machine.
 *
 * Limits: an object id is 1..SDB_ID_MAX bytes, an alias 1..SDB_ALIAS_MAX (LMDB
 * keys are at most 511 bytes); callers check them (sdb_* return SDB_ERROR for
 * keys outside them). Storage failures are logged here and returned as
 * SDB_ERROR. */
#ifndef BETTONG_SDB_H
#define BETTONG_SDB_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define SDB_MARKER "BETTONG_STORE"
#define SDB_LOCKFILE "store.lock"
#define SDB_FORMAT "bettong-store"
#define SDB_VERSION 3u
#define SDB_ID_MAX 128
#define SDB_ALIAS_MAX 400
#define SDB_BACKEND_ID_LEN 36

enum {
    SDB_OK = 0,
    SDB_NOTFOUND = 1,
    SDB_EXISTS = 2,   /* create of an existing object; alias taken */
    SDB_CONFLICT = 3, /* a class id already held with other bytes */
    SDB_ERROR = -1,   /* storage failure (logged) */
};

typedef struct sdb sdb_t;

/* Open (or initialize) the store in `dir`, creating the directory if needed.
 * Returns NULL with a message in err (refused, locked, unreadable, ...). */
sdb_t *sdb_open(const char *dir, char *err, size_t errlen);
void sdb_close(sdb_t *db);
/* 1 if sdb_open initialized a new store, 0 if it opened an existing one. */
int sdb_was_created(const sdb_t *db);
/* The store's backend id: SDB_BACKEND_ID_LEN characters of UUID text, made when
 * the store was created (or first opened by a version that has it). */
const char *sdb_backend_id(const sdb_t *db);
/* The format version on disk: SDB_VERSION, or 1 until srefs_ensure upgraded it. */
uint32_t sdb_version(const sdb_t *db);

/* For the metrics (any thread; a read transaction of its own): entries in
 * the objects database (masters and replicas held here), bytes of the map in
 * use (pages up to the last one used, times the page size) and bytes of
 * data.mdb allocated on disk (st_blocks; the file is sparse). 0 or -1. */
typedef struct {
    uint64_t objects, used_bytes, file_bytes;
} sdb_usage_t;
int sdb_usage(sdb_t *db, sdb_usage_t *out);

/* ---- reads: a read transaction per sdb_read_t; results point into the map and
 * stay valid until sdb_read_end. ---- */

typedef struct {
    sdb_t *db;
    void *txn; /* MDB_txn */
} sdb_read_t;

int sdb_read_begin(sdb_t *db, sdb_read_t *r);
void sdb_read_end(sdb_read_t *r);
int sdb_get_object(sdb_read_t *r, const char *id, size_t idlen, uint64_t *class_id,
                   const uint8_t **state, size_t *state_len);
int sdb_get_alias(sdb_read_t *r, const char *alias, size_t alen, const char **id,
                  size_t *idlen);
int sdb_get_class(sdb_read_t *r, uint64_t class_id, const char **qualname, size_t *qlen,
                  const uint8_t **pickle, size_t *plen);
/* Append the object's aliases to `out` as str16 entries; *count is set. */
int sdb_list_aliases(sdb_read_t *r, const char *id, size_t idlen, buf_t *out, uint32_t *count);
/* Every object (id, class id, state) / every alias (alias, object id), in key
 * order; a nonzero result of fn stops the walk, which returns SDB_ERROR. */
typedef int sdb_each_object_fn(void *ctx, const char *id, size_t idlen, uint64_t class_id,
                               const uint8_t *state, size_t len);
typedef int sdb_each_alias_fn(void *ctx, const char *alias, size_t alen, const char *id,
                              size_t idlen);
int sdb_each_object(sdb_read_t *r, sdb_each_object_fn *fn, void *ctx);
int sdb_each_alias(sdb_read_t *r, sdb_each_alias_fn *fn, void *ctx);

/* ---- writes: one write transaction; each request's changes go in a unit (a
 * nested transaction) that is kept or dropped as a whole. ---- */

typedef struct {
    sdb_t *db;
    void *txn;  /* the outer MDB_txn */
    void *unit; /* the open nested MDB_txn, or NULL */
} sdb_write_t;

int sdb_write_begin(sdb_t *db, sdb_write_t *w);
/* Commit (synchronously). On failure the transaction is gone: nothing of it
 * was stored. */
int sdb_write_commit(sdb_write_t *w);
void sdb_write_abort(sdb_write_t *w);
int sdb_unit_begin(sdb_write_t *w);
int sdb_unit_commit(sdb_write_t *w);
void sdb_unit_abort(sdb_write_t *w);
/* A read view of the write transaction (the open unit if there is one): sees
 * the changes made so far. Do not sdb_read_end it. */
sdb_read_t sdb_write_view(sdb_write_t *w);

/* Store an object; with `create`, SDB_EXISTS if the id is taken. */
int sdb_put_object(sdb_write_t *w, const char *id, size_t idlen, uint64_t class_id,
                   const void *state, size_t state_len, int create);
/* Remove an object and its aliases; SDB_NOTFOUND if absent. */
int sdb_del_object(sdb_write_t *w, const char *id, size_t idlen);
/* Name an object: SDB_NOTFOUND if the object does not exist, SDB_EXISTS if the
 * alias names another object (naming the same object again is SDB_OK). */
int sdb_put_alias(sdb_write_t *w, const char *alias, size_t alen, const char *id, size_t idlen);
int sdb_del_alias(sdb_write_t *w, const char *alias, size_t alen);
/* Register a class: SDB_OK if stored or already held with the same bytes,
 * SDB_CONFLICT if held with different ones. */
int sdb_put_class(sdb_write_t *w, uint64_t class_id, const char *qualname, size_t qlen,
                  const void *pickle, size_t plen);
int sdb_has_class(sdb_write_t *w, uint64_t class_id);

/* ---- reference counts (the `refs` database; srefs.h is their interface) ---- */

/* The count of id (0 when absent). */
int sdb_ref_get(sdb_read_t *r, const char *id, size_t idlen, uint64_t *count);
/* Add delta to the count of id (a count reaching 0 is removed; one that would
 * go below 0 is logged and set to 0). */
int sdb_ref_add(sdb_write_t *w, const char *id, size_t idlen, int64_t delta);
/* Drop every count (before a rebuild). */
int sdb_refs_clear(sdb_write_t *w);
int sdb_set_version(sdb_write_t *w, uint32_t version);

/* ---- replicas (sproto.h: REPLICATE, REPLICA_PUT, REPLICA_DROP) ---- */

/* Is id a replica here? SDB_OK with its master's id in master[SDB_BACKEND_ID_LEN
 * + 1] (NULL: not wanted), SDB_NOTFOUND if it is not (absent, or a master). */
int sdb_replica_master(sdb_read_t *r, const char *id, size_t idlen, char *master);
/* Mark id as a replica of master's object / unmark it. */
int sdb_set_replica_master(sdb_write_t *w, const char *id, size_t idlen, const char *master);
int sdb_clear_replica_master(sdb_write_t *w, const char *id, size_t idlen);
/* The backends holding replicas of id (a master here), appended to out as
 * str16 entries; *count is set. */
int sdb_list_replicas(sdb_read_t *r, const char *id, size_t idlen, buf_t *out, uint32_t *count);
/* Add / remove one backend of id's replica list (adding one listed, or
 * removing one not listed, is SDB_OK); sdb_del_replicas empties the list. */
int sdb_add_replica(sdb_write_t *w, const char *id, size_t idlen, const char *bid, size_t blen);
int sdb_del_replica(sdb_write_t *w, const char *id, size_t idlen, const char *bid, size_t blen);
int sdb_del_replicas(sdb_write_t *w, const char *id, size_t idlen);
/* Every (object id, replica backend id) pair, as sdb_each_alias walks aliases. */
int sdb_each_replica(sdb_read_t *r, sdb_each_alias_fn *fn, void *ctx);

/* ---- forwards (sproto.h: FORWARD) ---- */

/* The id that id was forwarded to, copied to target[SDB_ID_MAX] (its length in
 * *tlen); SDB_NOTFOUND if id is no forward. */
int sdb_get_forward(sdb_read_t *r, const char *id, size_t idlen, char *target, size_t *tlen);
int sdb_put_forward(sdb_write_t *w, const char *id, size_t idlen, const char *target,
                    size_t tlen);

/* ---- moves (sproto.h: MOVE) ---- */

/* The backend a move of id began to, in dest[SDB_BACKEND_ID_LEN + 1];
 * SDB_NOTFOUND if none. */
int sdb_get_moving(sdb_read_t *r, const char *id, size_t idlen, char *dest);
int sdb_set_moving(sdb_write_t *w, const char *id, size_t idlen, const char *dest, size_t dlen);
int sdb_clear_moving(sdb_write_t *w, const char *id, size_t idlen);
/* Every (object id, backend id) move mark, as sdb_each_alias walks aliases. */
int sdb_each_moving(sdb_read_t *r, sdb_each_alias_fn *fn, void *ctx);

#endif
