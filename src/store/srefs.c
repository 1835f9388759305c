#include "store/srefs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/pickrefs.h"
#include "util/log.h"

/* The references of one state, without `self`; the ids copied (old states
 * point into the map, which a write may move). */
typedef struct {
    pickref_t *refs;
    size_t n;
    char *mem;
} refset_t;

static void refset_free(refset_t *s)
{
    free(s->refs);
    free(s->mem);
    *s = (refset_t){0};
}

static int refset_of(refset_t *s, const char *self, size_t selflen, const uint8_t *p, size_t n)
{
    *s = (refset_t){0};
    if (!p)
        return 0;
    if (pickrefs_scan(p, n, &s->refs, &s->n) < 0) {
        log_warn("store: the state of %.*s could not be scanned for references: it counts "
                 "none", (int)selflen, self);
        return 0;
    }
    size_t total = 0;
    for (size_t i = 0; i < s->n; i++)
        total += s->refs[i].len;
    if (total && !(s->mem = malloc(total))) {
        refset_free(s);
        return -1;
    }
    size_t off = 0, k = 0;
    pickref_t me = {(const uint8_t *)self, selflen};
    for (size_t i = 0; i < s->n; i++) {
        if (pickref_cmp(&s->refs[i], &me) == 0)
            continue; /* an object naming itself does not keep itself alive */
        memcpy(s->mem + off, s->refs[i].id, s->refs[i].len);
        s->refs[k++] = (pickref_t){(const uint8_t *)s->mem + off, s->refs[i].len};
        off += s->refs[i].len;
    }
    s->n = k;
    return 0;
}

static int bump(sdb_write_t *w, const pickref_t *r, int64_t delta, srefs_tell_fn *tell,
                void *ctx)
{
    if (r->len < 1 || r->len > SDB_ID_MAX)
        return SDB_OK; /* not an id this store could hold */
    if (tell)
        tell(ctx, (const char *)r->id, r->len, (int)delta);
    return sdb_ref_add(w, (const char *)r->id, r->len, delta);
}

int srefs_each(const char *self, size_t selflen, const uint8_t *state, size_t len,
               srefs_tell_fn *fn, void *ctx)
{
    refset_t s;
    if (refset_of(&s, self, selflen, state, len) < 0)
        return -1;
    for (size_t i = 0; i < s.n; i++)
        if (s.refs[i].len >= 1 && s.refs[i].len <= SDB_ID_MAX)
            fn(ctx, (const char *)s.refs[i].id, s.refs[i].len, +1);
    refset_free(&s);
    return 0;
}

int srefs_update(sdb_write_t *w, const char *id, size_t idlen, const uint8_t *old,
                 size_t oldlen, const uint8_t *new_state, size_t newlen, srefs_tell_fn *tell,
                 void *ctx)
{
    refset_t a, b;
    if (refset_of(&a, id, idlen, old, oldlen) < 0)
        return SDB_ERROR;
    if (refset_of(&b, id, idlen, new_state, newlen) < 0) {
        refset_free(&a);
        return SDB_ERROR;
    }
    /* Both sorted: one merge; ids in both keep their count. */
    int rc = SDB_OK;
    size_t i = 0, j = 0;
    while (rc == SDB_OK && (i < a.n || j < b.n)) {
        int c = i == a.n ? 1 : j == b.n ? -1 : pickref_cmp(&a.refs[i], &b.refs[j]);
        if (c < 0)
            rc = bump(w, &a.refs[i++], -1, tell, ctx);
        else if (c > 0)
            rc = bump(w, &b.refs[j++], +1, tell, ctx);
        else
            i++, j++;
    }
    refset_free(&a);
    refset_free(&b);
    return rc;
}

int srefs_count(sdb_read_t *r, const char *id, size_t idlen, uint64_t *count)
{
    return sdb_ref_get(r, id, idlen, count);
}

/* ------------------------------------------------------------ rebuild */

typedef struct {
    sdb_write_t *w;
    size_t objects, refs;
} rebuild_t;

static int count_one(void *ctx, const char *id, size_t idlen, uint64_t class_id,
                     const uint8_t *state, size_t len)
{
    rebuild_t *rb = ctx;
    refset_t s;
    if (refset_of(&s, id, idlen, state, len) < 0)
        return -1;
    int rc = SDB_OK;
    for (size_t i = 0; i < s.n && rc == SDB_OK; i++)
        rc = bump(rb->w, &s.refs[i], +1, NULL, NULL);
    rb->objects++;
    rb->refs += s.n;
    refset_free(&s);
    return rc == SDB_OK ? 0 : -1;
}

/* A version 2 store has its counts; what version 3 adds (replica and forward
 * tables) starts empty. */
static int mark_current(sdb_t *db, char *err, size_t errlen)
{
    sdb_write_t w;
    int rc = sdb_write_begin(db, &w);
    if (rc == SDB_OK && (rc = sdb_set_version(&w, SDB_VERSION)) == SDB_OK)
        rc = sdb_write_commit(&w);
    else if (rc == SDB_OK)
        sdb_write_abort(&w);
    if (rc != SDB_OK) {
        snprintf(err, errlen, "cannot mark the store as format %u: see the log", SDB_VERSION);
        return -1;
    }
    log_info("store: upgraded to format %u (replica and version tables)", SDB_VERSION);
    return 0;
}

int srefs_ensure(sdb_t *db, char *err, size_t errlen)
{
    if (sdb_version(db) == SDB_VERSION)
        return 0;
    if (sdb_version(db) > 1)
        return mark_current(db, err, errlen);
    sdb_write_t w;
    if (sdb_write_begin(db, &w) != SDB_OK) {
        snprintf(err, errlen, "cannot upgrade the store: no write transaction");
        return -1;
    }
    /* The walk reads the objects through a second read transaction: the write
     * transaction only touches `refs` and `meta`. */
    sdb_read_t r;
    rebuild_t rb = {.w = &w};
    int rc = sdb_refs_clear(&w);
    if (rc == SDB_OK)
        rc = sdb_read_begin(db, &r);
    if (rc == SDB_OK) {
        rc = sdb_each_object(&r, count_one, &rb);
        sdb_read_end(&r);
    }
    if (rc == SDB_OK)
        rc = sdb_set_version(&w, SDB_VERSION);
    if (rc == SDB_OK)
        rc = sdb_write_commit(&w);
    else
        sdb_write_abort(&w);
    if (rc != SDB_OK) {
        snprintf(err, errlen, "cannot upgrade the store to format %u (counting the stored "
                 "references): see the log", SDB_VERSION);
        return -1;
    }
    log_info("store: upgraded to format %u: counted %zu stored reference(s) in %zu object(s)",
             SDB_VERSION, rb.refs, rb.objects);
    return 0;
}
