/* The directory of a store service of several backends, kept in Redis
 * (`bettong store --metadata redis://HOST:PORT[/DB]`): which backends there are
 * and where to reach them, which backend holds each object's master copy, and
 * the aliases of the whole service (unique across it).
 *
 * Each backend's LMDB stays the truth for its own objects and aliases; Redis
 * is a directory rebuilt from the backends: a backend publishes everything it
 * holds when it starts and again whenever it connects to Redis anew (a Redis
 * that restarted empty is filled again), so losing Redis loses nothing but
 * time. Redis is the arbiter of alias uniqueness: an alias is claimed there
 * (SET NX) before it is written to LMDB, and released if that write fails.
 *
 * Keys (the "bettong:" prefix):
 *   bettong:backends        hash: backend id -> "name\naddress"
 *   bettong:alias:ALIAS     "object id\nclass id (hex)"
 *   bettong:loc:OBJECT_ID   "backend id\nclass id (hex)"
 *   bettong:refs:BACKEND_ID hash: object id -> how many of that backend's
 *                           stored states refer to it (srefs.h), counted again
 *                           from the states whenever the backend publishes
 *   bettong:rep:OBJECT_ID   set of the backend ids holding a replica of the
 *                           object (kept by its master; replicas publish no
 *                           location of their own)
 *
 * Threads: every call may come from any thread (the committer, the Python
 * threads); one mutex guards the connection, so calls are serialized. A
 * connection that failed is dropped and opened again by the next call, which
 * then publishes this backend again before it does its own work. Calls wait
 * at most META_TIMEOUT_MS for Redis. No event loop, no Python. */
#ifndef BETTONG_META_H
#define BETTONG_META_H

#include <stddef.h>
#include <stdint.h>

#include "store/sdb.h"
#include "util/buf.h"

#define META_TIMEOUT_MS 2000

enum {
    META_OK = 0,
    META_NONE = 1,   /* no such alias / object in the directory */
    META_TAKEN = 2,  /* the alias names another object */
    META_ERROR = -1, /* Redis unreachable or failed: why in meta_error() */
};

typedef struct meta meta_t;

/* Connect to url ("redis://HOST:PORT[/DB]" or "unix:PATH"), register this backend (its id
 * from db, its name and the address clients reach it at) and publish what db
 * holds. Refused (NULL with err) when the url is malformed, Redis cannot be
 * reached, or another backend id is registered under the same name. */
meta_t *meta_open(const char *url, sdb_t *db, const char *name, const char *address, char *err,
                  size_t errlen);
void meta_close(meta_t *m);

/* Claim alias for (id, class_id): META_OK (claimed, or already ours),
 * META_TAKEN, META_ERROR. */
int meta_alias_claim(meta_t *m, const char *alias, size_t alen, const char *id, size_t idlen,
                     uint64_t class_id);
/* Release alias if it still names id (META_OK whether or not it did). */
int meta_alias_release(meta_t *m, const char *alias, size_t alen, const char *id, size_t idlen);
/* The object an alias names: id into id[SDB_ID_MAX] (*idlen), its class. */
int meta_alias_get(meta_t *m, const char *alias, size_t alen, char *id, size_t *idlen,
                   uint64_t *class_id);

/* Queue the location of an object held here (or its removal); sent by
 * meta_loc_flush, in one round trip for all of them. */
int meta_loc_add(meta_t *m, const char *id, size_t idlen, uint64_t class_id);
int meta_loc_remove(meta_t *m, const char *id, size_t idlen);
int meta_loc_flush(meta_t *m);
/* This backend's count of stored references to id (any backend's object)
 * changes by delta: queued, sent by meta_loc_flush (srefs.h). */
int meta_refs_add(meta_t *m, const char *id, size_t idlen, int delta);
/* How many stored objects of the other backends refer to id. */
int meta_refs_elsewhere(meta_t *m, const char *id, size_t idlen, uint64_t *count);
/* Which backend holds an object: its id into backend[SDB_BACKEND_ID_LEN + 1]. */
int meta_locate(meta_t *m, const char *id, size_t idlen, char *backend, uint64_t *class_id);

/* meta_locate, and the object's replicas appended to replicas as str16
 * entries (*nrep set), in one round trip. */
int meta_locate_replicas(meta_t *m, const char *id, size_t idlen, char *backend,
                         uint64_t *class_id, buf_t *replicas, uint32_t *nrep);
/* Add / remove a backend of an object's replica set (SADD / SREM). */
int meta_replica_add(meta_t *m, const char *id, size_t idlen, const char *bid, size_t blen);
int meta_replica_remove(meta_t *m, const char *id, size_t idlen, const char *bid, size_t blen);

/* Every registered backend, appended to out as (str16 id, str16 name, str16
 * address) entries; *count is set. */
int meta_backends(meta_t *m, buf_t *out, uint32_t *count);

/* Why the last call of this thread failed (META_ERROR). */
const char *meta_error(void);

#endif
