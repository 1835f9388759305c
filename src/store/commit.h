/* The store's committer: one thread that owns LMDB's write side. Requests that
 * change (or must see every earlier change of) the store become units; units
 * are queued from the loop thread or the Python threads, and the committer
 * takes everything queued at once, applies each unit in a nested transaction
 * (a unit that fails leaves nothing behind and gets its error), and commits the
 * batch synchronously: group commit. Only then are the units handed back to the
 * loop thread (in submission order), which answers them; so no answer reports
 * a change before it is on disk.
 *
 * Grouping needs requests that arrive while a commit is under way: a client
 * that waits for each answer before sending the next gets one commit per
 * request (the stop log line "committer: C commits for R requests" shows it);
 * pipelined requests, or several clients, share commits.
 *
 * Sequence numbers: committer_submit gives each unit the next number; after a
 * batch's commit, committer_durable() returns the last number it held. */
#ifndef BETTONG_COMMIT_H
#define BETTONG_COMMIT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store/meta.h"
#include "store/sdb.h"
#include "util/buf.h"
#include "util/metrics.h"

typedef enum {
    WOP_CREATE = 1,   /* new object (id, class_id, data); taken id: BAD_REQUEST */
    WOP_PUT,          /* replace an object's state (id, class_id, data) */
    WOP_DELETE,       /* object and its aliases (id); absent: NOT_FOUND */
    WOP_DELETE_MOVED, /* the same, for an object now on another backend: its
                         aliases stay in the service's directory */
    WOP_ALIAS_ADD,    /* name -> id; taken: ALIAS_TAKEN; no object: NOT_FOUND */
    WOP_ALIAS_DEL,    /* name; absent: NOT_FOUND */
    WOP_CLASS_PUT,    /* class_id, name = qualname, data = pickle; other bytes
                         held: BAD_REQUEST */
    WOP_CLASS_NEED,   /* class_id must be registered: else UNKNOWN_CLASS */
    /* reads that see every earlier unit; results in the unit's out fields */
    WOP_LOOKUP_ALIAS, /* name -> out_id, out_class */
    WOP_LOOKUP_ID,    /* id -> out_id, out_class (and out_backend: where; out,
                         out_count: the str16 ids of the backends holding
                         replicas, for this and WOP_LOOKUP_ALIAS) */
    WOP_LIST_ALIASES, /* id -> out (str16 entries), out_count; absent: NOT_FOUND */
    WOP_GET_CLASS,    /* class_id -> out (the pickle) */
    WOP_BACKENDS,     /* -> out (str16 id, name, address per backend), out_count */
    /* replicas (sproto.h REPLICATE): */
    WOP_REPLICA_PUT,  /* store (id, class_id, data) as a replica of the object of
                         backend name[0..namelen); a master of that id here:
                         BAD_REQUEST */
    WOP_REPLICA_DROP, /* forget the replica id; not a replica here: NOT_FOUND */
    WOP_REPLICA_ADD,  /* list backend name as holding a replica of id (held
                         here); published to the directory once kept */
    WOP_REPLICA_DEL,  /* unlist it */
    WOP_FORWARD,      /* the object id (a version) is replaced by a forward to
                         the object name (its original): sdb_put_forward */
} wop_kind;

typedef struct {
    uint8_t kind;
    const char *id;
    size_t idlen;
    const char *name; /* alias or qualname */
    size_t namelen;
    uint64_t class_id;
    const uint8_t *data;
    size_t len;
} wop_t;

typedef struct wunit wunit_t;
struct wunit {
    wunit_t *next;
    uint64_t seq;  /* set by committer_submit */
    wop_t *ops;    /* the submitter's; untouched until the unit is done */
    size_t nops;
    /* Set by the committer: */
    int status;    /* 0, or a store_error code (sproto.h) with msg */
    char msg[256];
    char out_id[SDB_ID_MAX];
    size_t out_idlen;
    uint64_t out_class;
    char out_backend[SDB_BACKEND_ID_LEN + 1]; /* lookups: "" when held here */
    buf_t out;     /* initialized by committer_submit; the owner frees it */
    uint32_t out_count;
    void *ctx;     /* the submitter's */
};

typedef struct committer committer_t;

/* Start the thread. on_done(ctx, unit) runs on the loop thread for every unit,
 * in submission order, after its batch committed (or failed: status set). */
committer_t *committer_start(uv_loop_t *loop, sdb_t *db, void (*on_done)(void *ctx, wunit_t *u),
                             void *ctx, char *err, size_t errlen);
/* A store in a service of several backends (meta.h): aliases are claimed
 * service-wide before they are written, locations published after each
 * commit, lookups of what is not held here answered from the directory.
 * Without it (meta NULL) the store is alone: BACKENDS lists only itself, by
 * name and address. Before the first unit. */
void committer_set_directory(committer_t *c, meta_t *meta, const char *name,
                             const char *address);
/* The committer's figures, for the metrics. The committer thread records each
 * batch into a copy of its own, under the mutex it already takes to hand the
 * batch back; the loop thread adds that copy into these (and empties it) as
 * it takes the batch (the same lock), so these are the loop's own: read them
 * on the loop thread. commit_ns: sdb_write_commit, LMDB's commit of the
 * batch with its fsync. */
typedef struct {
    uint64_t commits, units, failed;
    metrics_hist_t batch_units; /* units per commit */
    metrics_hist_t commit_ns;
} committer_stats_t;
const committer_stats_t *committer_stats(const committer_t *c);

/* Queue a unit (any thread). Returns its sequence number. */
uint64_t committer_submit(committer_t *c, wunit_t *u);
/* The highest sequence number known to be on disk (any thread). */
uint64_t committer_durable(const committer_t *c);
/* Commit what is queued, stop the thread, hand back the last units, and close
 * the loop handle. The loop thread only; the loop must run afterwards for the
 * handle to close, then committer_free. */
void committer_stop(committer_t *c);
void committer_free(committer_t *c);

#endif
