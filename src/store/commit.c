#include "store/commit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/sproto.h"
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
};

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

static int lookup_object(sdb_write_t *w, wunit_t *u, const char *id, size_t idlen)
{
    sdb_read_t v = sdb_write_view(w);
    const uint8_t *st;
    size_t n;
    int rc = sdb_get_object(&v, id, idlen, &u->out_class, &st, &n);
    if (rc == SDB_NOTFOUND)
        return fail(u, STORE_ERR_NOT_FOUND, "no object with id '%.*s'", id, idlen);
    if (rc)
        return storage_failed(u);
    memcpy(u->out_id, id, idlen);
    u->out_idlen = idlen;
    return 0;
}

static int op_lookup_alias(sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    sdb_read_t v = sdb_write_view(w);
    const char *id;
    size_t idlen;
    int rc = sdb_get_alias(&v, op->name, op->namelen, &id, &idlen);
    if (rc == SDB_NOTFOUND)
        return fail(u, STORE_ERR_NOT_FOUND, "no object with alias '%.*s'", op->name, op->namelen);
    if (rc || idlen > SDB_ID_MAX)
        return storage_failed(u);
    char copy[SDB_ID_MAX];
    memcpy(copy, id, idlen);
    return lookup_object(w, u, copy, idlen);
}

static int op_list_aliases(sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    if (lookup_object(w, u, op->id, op->idlen) < 0)
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

static int apply_op(sdb_write_t *w, wunit_t *u, const wop_t *op)
{
    int rc;
    switch (op->kind) {
    case WOP_CREATE:
    case WOP_PUT:
        rc = sdb_put_object(w, op->id, op->idlen, op->class_id, op->data, op->len,
                            op->kind == WOP_CREATE);
        if (rc == SDB_EXISTS)
            return fail(u, STORE_ERR_BAD_REQUEST, "an object with id '%.*s' already exists",
                        op->id, op->idlen);
        return rc ? storage_failed(u) : 0;
    case WOP_DELETE:
        rc = sdb_del_object(w, op->id, op->idlen);
        if (rc == SDB_NOTFOUND)
            return fail(u, STORE_ERR_NOT_FOUND, "no object with id '%.*s'", op->id, op->idlen);
        return rc ? storage_failed(u) : 0;
    case WOP_ALIAS_ADD:
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
        return op_lookup_alias(w, u, op);
    case WOP_LOOKUP_ID:
        return lookup_object(w, u, op->id, op->idlen);
    case WOP_LIST_ALIASES:
        return op_list_aliases(w, u, op);
    case WOP_GET_CLASS:
        return op_get_class(w, u, op);
    default:
        u->status = STORE_ERR_INTERNAL;
        snprintf(u->msg, sizeof u->msg, "unknown operation %u", op->kind);
        return -1;
    }
}

static void apply_unit(sdb_write_t *w, wunit_t *u)
{
    if (sdb_unit_begin(w) != SDB_OK) {
        storage_failed(u);
        return;
    }
    for (size_t i = 0; i < u->nops; i++) {
        if (apply_op(w, u, &u->ops[i]) < 0) {
            sdb_unit_abort(w);
            return;
        }
    }
    if (sdb_unit_commit(w) != SDB_OK)
        storage_failed(u);
}

/* ------------------------------------------------------------ the thread */

static void commit_batch(committer_t *c, wunit_t *batch)
{
    sdb_write_t w;
    int ok = sdb_write_begin(c->db, &w) == SDB_OK;
    uint64_t last = 0;
    size_t n = 0;
    for (wunit_t *u = batch; u; u = u->next, n++) {
        last = u->seq;
        if (ok)
            apply_unit(&w, u);
    }
    if (ok && sdb_write_commit(&w) != SDB_OK)
        ok = 0;
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
        commit_batch(c, batch);
        pthread_mutex_lock(&c->mu);
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

uint64_t committer_submit(committer_t *c, wunit_t *u)
{
    u->next = NULL;
    u->status = 0;
    u->msg[0] = '\0';
    u->out_idlen = 0;
    u->out_count = 0;
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
    free(c);
}
