#include "store/commit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/wire.h"
#include "store/sproto.h"
#include "store/srefs.h"
#include "util/log.h"

struct committer {
    sdb_t *db;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    wunit_t *todo, *todo_tail; /* queued, not yet taken */
    wunit_t *done, *done_tail; /* committed, for the loop */
    uint64_t next_seq;
    _Atomic uint64_t durable;
    int stopping;
    uv_async_t async;
    void (*on_done)(void *ctx, wunit_t *u);
    void *ctx;
    /* Statistics (committer thread), logged at stop: commits per request says
     * whether requests that arrive during a commit share the next one. */
    uint64_t batches, units, largest;
    committer_stats_t pending; /* committer thread, under mu (committer_stats) */
    committer_stats_t stats;   /* loop thread */
    /* committer_set_directory */
    meta_t *meta;
    char name[256], address[320];
    /* What the batch being applied did to the directory (committer thread):
     * effect_t records, settled once the batch is decided (settle_effects). */
    buf_t effects;
};

/* ------------------------------------------------------------ the directory */

static int storage_failed(wunit_t *u);

/* An effect of an op on the service's directory (meta.h). */
enum {
    FX_CLAIMED = 1, /* alias claimed: released again unless its unit is kept */
    FX_CREATED,     /* object created: its location published if kept */
    FX_DELETED,     /* object deleted: its location removed if kept */
    FX_UNALIASED,   /* alias removed: released if kept */
    FX_REFS,        /* a reference count changed (class_id: the delta): sent if kept */
    FX_REP_ADDED,   /* replica listed (the alias field holds its backend id) */
    FX_REP_REMOVED, /* replica unlisted */
};

typedef struct {
    uint8_t kind;
    wunit_t *unit;
    uint64_t class_id;
    uint16_t idlen, alen;
    /* followed by the id, then the alias */
} effect_t;

static int record(committer_t *c, uint8_t kind, wunit_t *u, const char *id, size_t idlen,
                  const char *alias, size_t alen, uint64_t class_id)
{
    effect_t e = {kind, u, class_id, (uint16_t)idlen, (uint16_t)alen};
    if (buf_append(&c->effects, &e, sizeof e) < 0 || buf_append(&c->effects, id, idlen) < 0 ||
        buf_append(&c->effects, alias, alen) < 0) {
        log_error("store: out of memory recording a change for the metadata service");
        return -1;
    }
    return 0;
}

/* The batch is decided (committed: kept units keep their effects): tell the
 * directory. Failures here are logged; the directory is rebuilt from the
 * stores when the metadata service comes back. */
static void settle_effects(committer_t *c, int committed)
{
    const uint8_t *p = buf_head(&c->effects), *end = p + buf_unread(&c->effects);
    while (p + sizeof(effect_t) <= end) {
        effect_t e;
        memcpy(&e, p, sizeof e);
        const char *id = (const char *)p + sizeof e, *alias = id + e.idlen;
        p += sizeof e + e.idlen + e.alen;
        int kept = committed && e.unit->status == 0;
        int rc = META_OK;
        if ((e.kind == FX_CLAIMED && !kept) || (e.kind == FX_UNALIASED && kept))
            rc = meta_alias_release(c->meta, alias, e.alen, id, e.idlen);
        else if (e.kind == FX_CREATED && kept)
            rc = meta_loc_add(c->meta, id, e.idlen, e.class_id);
        else if (e.kind == FX_DELETED && kept)
            rc = meta_loc_remove(c->meta, id, e.idlen);
        else if (e.kind == FX_REFS && kept)
            rc = meta_refs_add(c->meta, id, e.idlen, (int)(int64_t)e.class_id);
        else if (e.kind == FX_REP_ADDED && kept)
            rc = meta_replica_add(c->meta, id, e.idlen, alias, e.alen);
        else if (e.kind == FX_REP_REMOVED && kept)
            rc = meta_replica_remove(c->meta, id, e.idlen, alias, e.alen);
        if (rc == META_ERROR)
            log_warn("store: metadata service: %s", meta_error());
    }
    buf_clear(&c->effects);
    if (meta_loc_flush(c->meta) == META_ERROR)
        log_warn("store: metadata service: %s (published again once it answers)",
                 meta_error());
}

/* Claim a new alias of an object held here, service-wide. */
static int claim_alias(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    sdb_read_t v = sdb_write_view(w);
    const uint8_t *st;
    size_t n;
    uint64_t cid = 0;
    if (sdb_get_object(&v, op->id, op->idlen, &cid, &st, &n) != SDB_OK)
        return 0; /* sdb_put_alias says NOT_FOUND */
    int rc = meta_alias_claim(c->meta, op->name, op->namelen, op->id, op->idlen, cid);
    if (rc == META_TAKEN) {
        u->status = STORE_ERR_ALIAS_TAKEN;
        snprintf(u->msg, sizeof u->msg, "the alias '%.*s' is taken", (int)op->namelen,
                 op->name);
        return -1;
    }
    if (rc == META_ERROR) {
        u->status = STORE_ERR_INTERNAL;
        snprintf(u->msg, sizeof u->msg, "%s", meta_error());
        return -1;
    }
    return record(c, FX_CLAIMED, u, op->id, op->idlen, op->name, op->namelen, cid) < 0
               ? storage_failed(u)
               : 0;
}

/* One effect of `kind` about op's object per str16 name in names (its aliases,
 * its replicas' backends). */
static int record_each(committer_t *c, uint8_t kind, wunit_t *u, const wop_t *op,
                       const buf_t *names, uint32_t count)
{
    const uint8_t *p = buf_head(names);
    int rc = 0;
    for (uint32_t i = 0; i < count && rc == 0; i++) {
        size_t n = (size_t)p[0] << 8 | p[1];
        rc = record(c, kind, u, op->id, op->idlen, (const char *)p + 2, n, 0);
        p += 2 + n;
    }
    return rc;
}

/* Before deleting an object: its aliases, to release once the deletion holds. */
static int record_deletion(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    sdb_read_t v = sdb_write_view(w);
    buf_t names;
    buf_init(&names);
    uint32_t count = 0;
    if (sdb_list_aliases(&v, op->id, op->idlen, &names, &count) != SDB_OK) {
        buf_free(&names);
        return 0; /* sdb_del_object reports it */
    }
    int rc = record(c, FX_DELETED, u, op->id, op->idlen, "", 0, 0);
    if (rc == 0)
        rc = record_each(c, FX_UNALIASED, u, op, &names, count);
    buf_free(&names);
    return rc < 0 ? storage_failed(u) : 0;
}

typedef int sdb_list_fn(sdb_read_t *r, const char *id, size_t idlen, buf_t *out,
                        uint32_t *count);

/* One effect of `kind` per name that `list` gives of op's object. */
static int record_listed(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op,
                         uint8_t kind, sdb_list_fn *list)
{
    sdb_read_t v = sdb_write_view(w);
    buf_t names;
    buf_init(&names);
    uint32_t count = 0;
    int rc = list(&v, op->id, op->idlen, &names, &count) == SDB_OK ? 0 : -1;
    if (rc == 0)
        rc = record_each(c, kind, u, op, &names, count);
    buf_free(&names);
    return rc < 0 ? storage_failed(u) : 0;
}

/* Before forwarding an object (FORWARD): its aliases are released; its
 * location stays, so that the service finds its forward here. */
static int record_unaliased(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    return record_listed(c, w, u, op, FX_UNALIASED, sdb_list_aliases);
}

/* An alias removed here: released service-wide once the removal holds. */
static int record_unalias(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    sdb_read_t v = sdb_write_view(w);
    const char *id;
    size_t idlen;
    if (sdb_get_alias(&v, op->name, op->namelen, &id, &idlen) != SDB_OK)
        return 0;
    return record(c, FX_UNALIASED, u, id, idlen, op->name, op->namelen, 0) < 0
               ? storage_failed(u)
               : 0;
}

/* An object deleted here (or moved away): its replicas leave the directory
 * with it. */
static int record_unreplicated(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    return record_listed(c, w, u, op, FX_REP_REMOVED, sdb_list_replicas);
}

/* Effects of an op on the directory, before it is applied. */
static int directory_before(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    if (!c->meta)
        return 0;
    switch (op->kind) {
    case WOP_DELETE:
        if (record_unreplicated(c, w, u, op) < 0)
            return -1;
        return record_deletion(c, w, u, op);
    case WOP_DELETE_MOVED: /* its location is the other backend's now */
        if (record_unreplicated(c, w, u, op) < 0)
            return -1;
        return record(c, FX_DELETED, u, op->id, op->idlen, "", 0, 0) < 0 ? storage_failed(u)
                                                                          : 0;
    case WOP_ALIAS_DEL:
        return record_unalias(c, w, u, op);
    case WOP_FORWARD:
        if (record_unreplicated(c, w, u, op) < 0)
            return -1;
        return record_unaliased(c, w, u, op);
    default:
        return 0;
    }
}

/* ... and after it was applied here. */
static int directory_after(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    if (!c->meta)
        return 0;
    switch (op->kind) {
    case WOP_CREATE:
        return record(c, FX_CREATED, u, op->id, op->idlen, "", 0, op->class_id) < 0
                   ? storage_failed(u)
                   : 0;
    case WOP_ALIAS_ADD:
        return claim_alias(c, w, u, op);
    case WOP_REPLICA_ADD:
    case WOP_REPLICA_DEL:
        return record(c, op->kind == WOP_REPLICA_ADD ? FX_REP_ADDED : FX_REP_REMOVED, u, op->id,
                      op->idlen, op->name, op->namelen, 0) < 0
                   ? storage_failed(u)
                   : 0;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------ applying ops */

static int fail(wunit_t *u, int code, const char *fmt, const char *what, size_t n)
{
    u->status = code;
    snprintf(u->msg, sizeof u->msg, fmt, (int)n, what);
    return -1;
}

static int storage_failed(wunit_t *u)
{
    u->status = STORE_ERR_INTERNAL;
    snprintf(u->msg, sizeof u->msg, "storage failure (see the store's log)");
    return -1;
}

static int directory_failed(wunit_t *u)
{
    u->status = STORE_ERR_INTERNAL;
    snprintf(u->msg, sizeof u->msg, "%s", meta_error());
    return -1;
}

/* An object not held here, looked up in the directory (remote: whether to
 * look there at all). */
static int locate_elsewhere(committer_t *c, wunit_t *u, const char *id, size_t idlen)
{
    int rc = c->meta ? meta_locate_replicas(c->meta, id, idlen, u->out_backend, &u->out_class,
                                            &u->out, &u->out_count)
                     : META_NONE;
    if (rc == META_ERROR)
        return directory_failed(u);
    if (rc == META_NONE)
        return fail(u, STORE_ERR_NOT_FOUND, "no object with id '%.*s'", id, idlen);
    memcpy(u->out_id, id, idlen);
    u->out_idlen = idlen;
    return 0;
}

/* A version consolidated into its original names the original from then on:
 * the id at the end of id's forwards (id itself if it has none), in
 * buf[SDB_ID_MAX]. The hops are bounded: consolidation never makes a cycle,
 * but the bound keeps a damaged table from hanging the committer. */
static int follow_forwards(sdb_read_t *v, const char **id, size_t *idlen, char *buf)
{
    for (int hops = 0; hops < 64; hops++) {
        size_t n;
        int rc = sdb_get_forward(v, *id, *idlen, buf, &n);
        if (rc == SDB_NOTFOUND)
            return SDB_OK;
        if (rc)
            return rc;
        *id = buf;
        *idlen = n;
    }
    log_error("store: the forwards from %.*s do not end", (int)*idlen, *id);
    return SDB_ERROR;
}

static int lookup_object(committer_t *c, sdb_write_t *w, wunit_t *u, const char *id,
                         size_t idlen, int remote)
{
    sdb_read_t v = sdb_write_view(w);
    const uint8_t *st;
    size_t n;
    char target[SDB_ID_MAX];
    u->out_backend[0] = '\0';
    int rc = sdb_get_object(&v, id, idlen, &u->out_class, &st, &n);
    if (rc == SDB_NOTFOUND) {
        const char *was = id;
        if (follow_forwards(&v, &id, &idlen, target) != SDB_OK)
            return storage_failed(u);
        if (id != was) {
            rc = sdb_get_object(&v, id, idlen, &u->out_class, &st, &n);
            remote = 1; /* an original may be on another backend */
        }
    }
    char dest[SDB_BACKEND_ID_LEN + 1];
    if (rc == SDB_OK && sdb_replica_master(&v, id, idlen, NULL) == SDB_OK) {
        rc = SDB_NOTFOUND; /* a replica: the object is its master's */
    } else if (rc == SDB_OK && c->meta && sdb_get_moving(&v, id, idlen, dest) == SDB_OK) {
        rc = SDB_NOTFOUND; /* a move a stop interrupted: where the directory says */
        remote = 1;
    }
    if (rc == SDB_NOTFOUND && remote)
        return locate_elsewhere(c, u, id, idlen);
    if (rc == SDB_NOTFOUND)
        return fail(u, STORE_ERR_NOT_FOUND, "no object with id '%.*s'", id, idlen);
    if (rc)
        return storage_failed(u);
    memcpy(u->out_id, id, idlen);
    u->out_idlen = idlen;
    return 0;
}

static int op_lookup_alias(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    sdb_read_t v = sdb_write_view(w);
    const char *id;
    size_t idlen;
    int rc = sdb_get_alias(&v, op->name, op->namelen, &id, &idlen);
    if (rc == SDB_NOTFOUND && c->meta) {
        /* an alias of an object on another backend */
        rc = meta_alias_get(c->meta, op->name, op->namelen, u->out_id, &u->out_idlen,
                            &u->out_class);
        if (rc == META_ERROR)
            return directory_failed(u);
        if (rc == META_OK)
            return locate_elsewhere(c, u, u->out_id, u->out_idlen);
        rc = SDB_NOTFOUND;
    }
    if (rc == SDB_NOTFOUND)
        return fail(u, STORE_ERR_NOT_FOUND, "no object with alias '%.*s'", op->name, op->namelen);
    if (rc || idlen > SDB_ID_MAX)
        return storage_failed(u);
    char copy[SDB_ID_MAX];
    memcpy(copy, id, idlen);
    return lookup_object(c, w, u, copy, idlen, 0);
}

/* LOOKUP_ID / LOOKUP_ALIAS: where the object is and, for one held here, the
 * backends holding its replicas (locate_elsewhere lists those of others). */
static int op_lookup(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    int rc = op->kind == WOP_LOOKUP_ID ? lookup_object(c, w, u, op->id, op->idlen, 1)
                                       : op_lookup_alias(c, w, u, op);
    if (rc < 0 || u->out_backend[0])
        return rc;
    sdb_read_t v = sdb_write_view(w);
    return sdb_list_replicas(&v, u->out_id, u->out_idlen, &u->out, &u->out_count) ? storage_failed(u)
                                                                                   : 0;
}

/* Is id a replica here (not this backend's own object)? */
static int replica_here(sdb_write_t *w, const char *id, size_t idlen)
{
    sdb_read_t v = sdb_write_view(w);
    return sdb_replica_master(&v, id, idlen, NULL) == SDB_OK;
}

static int op_replica_put(sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    sdb_read_t v = sdb_write_view(w);
    uint64_t cid;
    const uint8_t *st;
    size_t n;
    int rc = sdb_get_object(&v, op->id, op->idlen, &cid, &st, &n);
    if (rc == SDB_OK && !replica_here(w, op->id, op->idlen))
        return fail(u, STORE_ERR_BAD_REQUEST, "object '%.*s' is held here as a master, not a "
                    "replica", op->id, op->idlen);
    if (rc != SDB_OK && rc != SDB_NOTFOUND)
        return storage_failed(u);
    char master[SDB_BACKEND_ID_LEN + 1];
    size_t mn = op->namelen < SDB_BACKEND_ID_LEN ? op->namelen : SDB_BACKEND_ID_LEN;
    memcpy(master, op->name, mn);
    master[mn] = '\0';
    if ((rc = sdb_has_class(w, op->class_id)) == SDB_NOTFOUND) {
        u->status = STORE_ERR_UNKNOWN_CLASS;
        snprintf(u->msg, sizeof u->msg, "class id %llu was never sent (CLASS first)",
                 (unsigned long long)op->class_id);
        return -1;
    }
    /* No reference counts: a replica's references are its master's. */
    if (rc || sdb_put_object(w, op->id, op->idlen, op->class_id, op->data, op->len, 0) ||
        sdb_set_replica_master(w, op->id, op->idlen, master))
        return storage_failed(u);
    return 0;
}

static int op_replica_drop(sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    if (!replica_here(w, op->id, op->idlen))
        return fail(u, STORE_ERR_NOT_FOUND, "no replica with id '%.*s'", op->id, op->idlen);
    if (sdb_del_object(w, op->id, op->idlen) || sdb_clear_replica_master(w, op->id, op->idlen))
        return storage_failed(u);
    return 0;
}

static int op_replica_list(sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    sdb_read_t v = sdb_write_view(w);
    uint64_t cid;
    const uint8_t *st;
    size_t n;
    int rc = sdb_get_object(&v, op->id, op->idlen, &cid, &st, &n);
    if (op->kind == WOP_REPLICA_ADD && (rc == SDB_NOTFOUND || replica_here(w, op->id, op->idlen)))
        return fail(u, STORE_ERR_NOT_FOUND, "no object with id '%.*s'", op->id, op->idlen);
    if (rc != SDB_OK && rc != SDB_NOTFOUND)
        return storage_failed(u);
    rc = op->kind == WOP_REPLICA_ADD ? sdb_add_replica(w, op->id, op->idlen, op->name, op->namelen)
                                     : sdb_del_replica(w, op->id, op->idlen, op->name, op->namelen);
    return rc ? storage_failed(u) : 0;
}

static int put_str16(buf_t *out, const char *s, size_t n)
{
    uint8_t h[2] = {(uint8_t)(n >> 8), (uint8_t)n};
    return buf_append(out, h, 2) == 0 && buf_append(out, s, n) == 0 ? 0 : -1;
}

/* This backend first, then the others the directory lists. */
static int op_backends(committer_t *c, wunit_t *u)
{
    const char *id = sdb_backend_id(c->db);
    if (put_str16(&u->out, id, strlen(id)) < 0 ||
        put_str16(&u->out, c->name, strlen(c->name)) < 0 ||
        put_str16(&u->out, c->address, strlen(c->address)) < 0)
        return storage_failed(u);
    u->out_count = 1;
    if (!c->meta)
        return 0;
    buf_t all;
    buf_init(&all);
    uint32_t n = 0;
    if (meta_backends(c->meta, &all, &n) != META_OK) {
        buf_free(&all);
        return directory_failed(u);
    }
    wire_rd_t r;
    wire_rd_init(&r, buf_head(&all), buf_unread(&all));
    for (uint32_t i = 0; i < n; i++) {
        size_t len[3];
        const uint8_t *f[3];
        for (int k = 0; k < 3; k++)
            f[k] = wire_str16(&r, &len[k]);
        if (r.err || (len[0] == strlen(id) && memcmp(f[0], id, len[0]) == 0))
            continue;
        int bad = 0;
        for (int k = 0; k < 3; k++)
            bad |= put_str16(&u->out, (const char *)f[k], len[k]);
        if (bad) {
            buf_free(&all);
            return storage_failed(u);
        }
        u->out_count++;
    }
    buf_free(&all);
    return 0;
}

static int op_list_aliases(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    if (lookup_object(c, w, u, op->id, op->idlen, 0) < 0)
        return -1;
    sdb_read_t v = sdb_write_view(w);
    return sdb_list_aliases(&v, op->id, op->idlen, &u->out, &u->out_count) ? storage_failed(u)
                                                                           : 0;
}

static int op_get_class(sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    sdb_read_t v = sdb_write_view(w);
    const char *q;
    const uint8_t *p;
    size_t qn, pn;
    int rc = sdb_get_class(&v, op->class_id, &q, &qn, &p, &pn);
    if (rc == SDB_NOTFOUND) {
        u->status = STORE_ERR_NOT_FOUND;
        snprintf(u->msg, sizeof u->msg, "no class with id %llu",
                 (unsigned long long)op->class_id);
        return -1;
    }
    if (rc || buf_append(&u->out, p, pn) < 0)
        return storage_failed(u);
    return 0;
}

static int op_class(sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    int rc = op->kind == WOP_CLASS_PUT
                 ? sdb_put_class(w, op->class_id, op->name, op->namelen, op->data, op->len)
                 : sdb_has_class(w, op->class_id);
    if (rc == SDB_OK)
        return 0;
    if (rc == SDB_CONFLICT || rc == SDB_NOTFOUND) {
        u->status = rc == SDB_CONFLICT ? STORE_ERR_BAD_REQUEST : STORE_ERR_UNKNOWN_CLASS;
        snprintf(u->msg, sizeof u->msg,
                 rc == SDB_CONFLICT ? "class id %llu is registered with other bytes"
                                    : "class id %llu was never sent (CLASS first)",
                 (unsigned long long)op->class_id);
        return -1;
    }
    return storage_failed(u);
}

/* srefs_update's changes, for the service's directory (settle_effects). */
typedef struct {
    committer_t *c;
    wunit_t *u;
} tell_t;

static void tell_refs(void *ctx, const char *id, size_t idlen, int delta)
{
    tell_t *t = ctx;
    record(t->c, FX_REFS, t->u, id, idlen, "", 0, (uint64_t)(int64_t)delta);
}

/* A state write, with the reference counts of what it refers to (srefs.h). */
static int op_put(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    tell_t t = {c, u};
    sdb_read_t v = sdb_write_view(w);
    uint64_t cid;
    const uint8_t *old = NULL;
    size_t oldlen = 0;
    int rc = sdb_get_object(&v, op->id, op->idlen, &cid, &old, &oldlen);
    if (rc == SDB_OK && op->kind == WOP_CREATE)
        return fail(u, STORE_ERR_BAD_REQUEST, "an object with id '%.*s' already exists",
                    op->id, op->idlen);
    if (rc == SDB_NOTFOUND)
        old = NULL;
    else if (rc)
        return storage_failed(u);
    if (srefs_update(w, op->id, op->idlen, old, oldlen, op->data, op->len,
                     c->meta ? tell_refs : NULL, &t) != SDB_OK)
        return storage_failed(u);
    rc = sdb_put_object(w, op->id, op->idlen, op->class_id, op->data, op->len,
                        op->kind == WOP_CREATE);
    return rc ? storage_failed(u) : 0;
}

/* A delete: refused while stored objects refer to it (not for an object that
 * moved to another backend: its referrers reach it there); its own references
 * go away with it. */
static int op_delete(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    tell_t t = {c, u};
    sdb_read_t v = sdb_write_view(w);
    uint64_t cid, refs = 0;
    const uint8_t *old;
    size_t oldlen;
    int rc = sdb_get_object(&v, op->id, op->idlen, &cid, &old, &oldlen);
    if (rc == SDB_NOTFOUND)
        return fail(u, STORE_ERR_NOT_FOUND, "no object with id '%.*s'", op->id, op->idlen);
    if (rc || srefs_count(&v, op->id, op->idlen, &refs) != SDB_OK)
        return storage_failed(u);
    /* In a service, other backends' stored objects may refer to it too. */
    if (!refs && c->meta && op->kind != WOP_DELETE_MOVED &&
        meta_refs_elsewhere(c->meta, op->id, op->idlen, &refs) != META_OK) {
        u->status = STORE_ERR_INTERNAL;
        snprintf(u->msg, sizeof u->msg, "cannot check what refers to it on the other "
                 "backends: %s", meta_error());
        return -1;
    }
    if (refs && op->kind != WOP_DELETE_MOVED) {
        u->status = STORE_ERR_REFERENCED;
        snprintf(u->msg, sizeof u->msg, STORE_REFERENCED_FMT, (int)op->idlen, op->id,
                 (unsigned long long)refs);
        return -1;
    }
    if (srefs_update(w, op->id, op->idlen, old, oldlen, NULL, 0, c->meta ? tell_refs : NULL,
                     &t) != SDB_OK ||
        sdb_del_replicas(w, op->id, op->idlen) != SDB_OK ||
        sdb_clear_moving(w, op->id, op->idlen) != SDB_OK)
        return storage_failed(u);
    rc = sdb_del_object(w, op->id, op->idlen);
    return rc ? storage_failed(u) : 0;
}

/* FORWARD: the object (a version) goes, as a delete would take it, but its id
 * stays in use: it names the original (name) from now on. What refers to the
 * version keeps its count here; the original's own count is not raised. */
static int op_forward(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    tell_t t = {c, u};
    sdb_read_t v = sdb_write_view(w);
    uint64_t cid;
    const uint8_t *old;
    size_t oldlen;
    int rc = sdb_get_object(&v, op->id, op->idlen, &cid, &old, &oldlen);
    if (rc == SDB_NOTFOUND)
        return fail(u, STORE_ERR_NOT_FOUND, "no object with id '%.*s'", op->id, op->idlen);
    if (rc || srefs_update(w, op->id, op->idlen, old, oldlen, NULL, 0,
                           c->meta ? tell_refs : NULL, &t) != SDB_OK ||
        sdb_del_replicas(w, op->id, op->idlen) != SDB_OK ||
        sdb_del_object(w, op->id, op->idlen) != SDB_OK ||
        sdb_put_forward(w, op->id, op->idlen, op->name, op->namelen) != SDB_OK)
        return storage_failed(u);
    return 0;
}

static int apply_here(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    int rc;
    switch (op->kind) {
    case WOP_CREATE:
    case WOP_PUT:
        return op_put(c, w, u, op);
    case WOP_DELETE:
    case WOP_DELETE_MOVED:
        return op_delete(c, w, u, op);
    case WOP_ALIAS_ADD:
        if (replica_here(w, op->id, op->idlen)) /* its aliases are its master's */
            return fail(u, STORE_ERR_NOT_FOUND, "no object with id '%.*s'", op->id, op->idlen);
        rc = sdb_put_alias(w, op->name, op->namelen, op->id, op->idlen);
        if (rc == SDB_EXISTS)
            return fail(u, STORE_ERR_ALIAS_TAKEN, "the alias '%.*s' is taken", op->name,
                        op->namelen);
        if (rc == SDB_NOTFOUND)
            return fail(u, STORE_ERR_NOT_FOUND, "no object with id '%.*s'", op->id, op->idlen);
        return rc ? storage_failed(u) : 0;
    case WOP_ALIAS_DEL:
        rc = sdb_del_alias(w, op->name, op->namelen);
        if (rc == SDB_NOTFOUND)
            return fail(u, STORE_ERR_NOT_FOUND, "no object with alias '%.*s'", op->name,
                        op->namelen);
        return rc ? storage_failed(u) : 0;
    case WOP_CLASS_PUT:
    case WOP_CLASS_NEED:
        return op_class(w, u, op);
    case WOP_LOOKUP_ALIAS:
    case WOP_LOOKUP_ID:
        return op_lookup(c, w, u, op);
    case WOP_REPLICA_PUT:
        return op_replica_put(w, u, op);
    case WOP_REPLICA_DROP:
        return op_replica_drop(w, u, op);
    case WOP_REPLICA_ADD:
    case WOP_REPLICA_DEL:
        return op_replica_list(w, u, op);
    case WOP_LIST_ALIASES:
        return op_list_aliases(c, w, u, op);
    case WOP_GET_CLASS:
        return op_get_class(w, u, op);
    case WOP_BACKENDS:
        return op_backends(c, u);
    case WOP_FORWARD:
        return op_forward(c, w, u, op);
    default:
        u->status = STORE_ERR_INTERNAL;
        snprintf(u->msg, sizeof u->msg, "unknown operation %u", op->kind);
        return -1;
    }
}

static int apply_op(committer_t *c, sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    if (directory_before(c, w, u, op) < 0 || apply_here(c, w, u, op) < 0)
        return -1;
    return directory_after(c, w, u, op);
}

static void apply_unit(committer_t *c, sdb_write_t *w, wunit_t *u)
{
    if (sdb_unit_begin(w) != SDB_OK) {
        storage_failed(u);
        return;
    }
    for (size_t i = 0; i < u->nops; i++) {
        if (apply_op(c, w, u, &u->ops[i]) < 0) {
            sdb_unit_abort(w);
            return;
        }
    }
    if (sdb_unit_commit(w) != SDB_OK)
        storage_failed(u);
}

/* ------------------------------------------------------------ the thread */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Under mu: the batch's figures, for the loop to take (deliver). */
static void record_batch(committer_t *c, size_t n, uint64_t commit_ns, int ok)
{
    c->pending.commits++;
    c->pending.units += n;
    c->pending.failed += !ok;
    metrics_hist_record(&c->pending.batch_units, n);
    metrics_hist_record(&c->pending.commit_ns, commit_ns);
}

static void hist_add(metrics_hist_t *to, const metrics_hist_t *from)
{
    for (unsigned i = 0; i < METRICS_HIST_BINS; i++)
        to->bins[i] += from->bins[i];
    to->count += from->count;
    to->sum += from->sum;
}

/* Under mu, on the loop thread: take the committer thread's figures. */
static void take_stats(committer_t *c)
{
    if (!c->pending.commits)
        return;
    c->stats.commits += c->pending.commits;
    c->stats.units += c->pending.units;
    c->stats.failed += c->pending.failed;
    hist_add(&c->stats.batch_units, &c->pending.batch_units);
    hist_add(&c->stats.commit_ns, &c->pending.commit_ns);
    memset(&c->pending, 0, sizeof c->pending);
}

const committer_stats_t *committer_stats(const committer_t *c) { return &c->stats; }

/* Returns whether the batch committed; *commit_ns: how long its commit took. */
static int commit_batch(committer_t *c, wunit_t *batch, size_t *nunits, uint64_t *commit_ns)
{
    sdb_write_t w;
    int ok = sdb_write_begin(c->db, &w) == SDB_OK;
    uint64_t last = 0;
    size_t n = 0;
    for (wunit_t *u = batch; u; u = u->next, n++) {
        last = u->seq;
        if (ok)
            apply_unit(c, &w, u);
    }
    uint64_t t0 = mono_ns();
    if (ok && sdb_write_commit(&w) != SDB_OK)
        ok = 0;
    *commit_ns = mono_ns() - t0;
    *nunits = n;
    if (c->meta)
        settle_effects(c, ok);
    if (!ok) {
        log_error("store: a commit of %zu request(s) failed: they are answered with an "
                  "internal error", n);
        for (wunit_t *u = batch; u; u = u->next)
            if (u->status == 0)
                storage_failed(u);
    }
    c->batches++;
    c->units += n;
    if (n > c->largest)
        c->largest = n;
    atomic_store(&c->durable, last);
    return ok;
}

static void *committer_main(void *arg)
{
    committer_t *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->todo && !c->stopping)
            pthread_cond_wait(&c->cond, &c->mu);
        wunit_t *batch = c->todo, *tail = c->todo_tail;
        c->todo = c->todo_tail = NULL;
        if (!batch)
            break; /* stopping and nothing left */
        pthread_mutex_unlock(&c->mu);
        size_t n;
        uint64_t commit_ns;
        int ok = commit_batch(c, batch, &n, &commit_ns);
        pthread_mutex_lock(&c->mu);
        record_batch(c, n, commit_ns, ok);
        if (c->done_tail)
            c->done_tail->next = batch;
        else
            c->done = batch;
        c->done_tail = tail;
        uv_async_send(&c->async);
    }
    pthread_mutex_unlock(&c->mu);
    log_info("committer: %llu commits for %llu requests (at most %llu in one)",
             (unsigned long long)c->batches, (unsigned long long)c->units,
             (unsigned long long)c->largest);
    return NULL;
}

static void deliver(committer_t *c)
{
    pthread_mutex_lock(&c->mu);
    wunit_t *u = c->done;
    c->done = c->done_tail = NULL;
    take_stats(c);
    pthread_mutex_unlock(&c->mu);
    while (u) {
        wunit_t *next = u->next;
        u->next = NULL;
        c->on_done(c->ctx, u);
        u = next;
    }
}

static void on_async(uv_async_t *h) { deliver(h->data); }

static void free_on_close(uv_handle_t *h) { committer_free(h->data); }

committer_t *committer_start(uv_loop_t *loop, sdb_t *db, void (*on_done)(void *ctx, wunit_t *u),
                             void *ctx, char *err, size_t errlen)
{
    committer_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->db = db;
    c->on_done = on_done;
    c->ctx = ctx;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (uv_async_init(loop, &c->async, on_async) < 0) {
        snprintf(err, errlen, "cannot create the committer's wake-up handle");
        free(c);
        return NULL;
    }
    c->async.data = c;
    int rc = pthread_create(&c->thread, NULL, committer_main, c);
    if (rc) {
        snprintf(err, errlen, "cannot start the committer thread: %s", strerror(rc));
        uv_close((uv_handle_t *)&c->async, free_on_close);
        return NULL;
    }
    c->started = 1;
    return c;
}

void committer_set_directory(committer_t *c, meta_t *meta, const char *name,
                             const char *address)
{
    c->meta = meta;
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->address, sizeof c->address, "%s", address);
}

uint64_t committer_submit(committer_t *c, wunit_t *u)
{
    u->next = NULL;
    u->status = 0;
    u->msg[0] = '\0';
    u->out_idlen = 0;
    u->out_count = 0;
    u->out_backend[0] = '\0';
    buf_init(&u->out);
    pthread_mutex_lock(&c->mu);
    u->seq = ++c->next_seq;
    if (c->todo_tail)
        c->todo_tail->next = u;
    else
        c->todo = u;
    c->todo_tail = u;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    return u->seq;
}

uint64_t committer_durable(const committer_t *c)
{
    return atomic_load(&((committer_t *)c)->durable);
}

void committer_stop(committer_t *c)
{
    if (!c || !c->started)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    c->started = 0;
    deliver(c);
    uv_close((uv_handle_t *)&c->async, NULL);
}

void committer_free(committer_t *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
    buf_free(&c->effects);
    free(c);
}
