#include "store/sobj.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "net/wire.h"
#include "py/bridge.h"
#include "store/sconn.h"
#include "store/spy.h"
#include "store/sproto.h"
#include "store/sreq.h"
#include "store/sreply.h"
#include "util/log.h"

/* What a unit's owner does once the unit is done (committed or failed). */
typedef struct uowner {
    void (*done)(store_t *st, struct uowner *own, wunit_t *u);
} uowner_t;

/* A request run by a Python thread (spy.h). Freed when both its run is back
 * and its unit (if it made one) is done: refs. */
typedef struct {
    uowner_t own;
    pyjob_t pj;
    store_t *st;
    sobj_t *ent;
    sreq_t *req;
    spy_req_t sr;
    wunit_t unit;
    wop_t op;
    buf_t unit_bytes, unit_answer, answer;
    int refs;
} ojob_t;

/* A request that is one committer unit. */
typedef struct {
    uowner_t own;
    sreq_t *req;
    sobj_t *ent;      /* the object it is about, or NULL */
    wunit_t unit;
    wop_t op;         /* single-op units */
    wop_t *ops;       /* PERSIST: many (owned) */
    sobj_t **created; /* PERSIST: the entries it marked pending (owned) */
    size_t ncreated;
} ureq_t;

/* ------------------------------------------------------------ entries */

static sobj_t *obj_find(store_t *st, const char *id, size_t n)
{
    return (sobj_t *)omap_get(&st->objs, id, n);
}

static sobj_t *obj_create(store_t *st, const char *id, size_t n)
{
    sobj_t *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    onode_set(&o->node, id, n);
    if (omap_add(&st->objs, &o->node) < 0) {
        free(o);
        return NULL;
    }
    return o;
}

/* Forget an entry with nothing queued, running, pending or not yet on disk. */
static void obj_maybe_free(store_t *st, sobj_t *o)
{
    if (o->hold || o->busy || o->head || o->pending || o->last_seq > st->durable)
        return;
    omap_del(&st->objs, &o->node);
    free(o);
}

static void answer_failed(sreq_t *r, int code, const char *msg, uint64_t seq)
{
    buf_t b;
    buf_init(&b);
    if (sreply_failed(&b, r->id, code, "%s", msg) == 0)
        sconn_answer(r->conn, &b, seq);
    buf_free(&b);
}

static int is_python(uint8_t type)
{
    return type == SMSG_CALL || type == SMSG_GET_FIELD || type == SMSG_SET_FIELD ||
           type == SMSG_GET_STATE || type == SMSG_UPDATE || type == SMSG_DELETE ||
           type == SMSG_MOVE || type == SMSG_REPLICATE || type == SMSG_REPLICA_PUT ||
           type == SMSG_REPLICA_DROP || type == SMSG_FORWARD;
}

static void obj_dispatch(store_t *st, sobj_t *o);

/* ------------------------------------------------------------ units */

static void ureq_free(ureq_t *q)
{
    buf_free(&q->unit.out);
    sreq_free(q->req);
    free(q->ops);
    free(q->created);
    free(q);
}

static void ureq_answer(store_t *st, ureq_t *q, wunit_t *u, buf_t *b)
{
    sreq_t *r = q->req;
    if (u->status) {
        sreply_failed(b, r->id, u->status, "%s", u->msg);
        return;
    }
    switch (r->type) {
    case SMSG_LOOKUP_ALIAS:
    case SMSG_LOOKUP_ID:
        sreply_ref_replicas(b, r->id, u->out_id, u->out_idlen, u->out_class,
                            u->out_backend[0] ? u->out_backend : sdb_backend_id(st->db),
                            buf_head(&u->out), buf_unread(&u->out), u->out_count);
        break;
    case SMSG_ALIASES:
        sreply_str_list(b, r->id, buf_head(&u->out), buf_unread(&u->out), u->out_count);
        break;
    case SMSG_GET_CLASS:
        sreply_class_bytes(b, r->id, buf_head(&u->out), buf_unread(&u->out));
        break;
    case SMSG_BACKENDS:
        sreply_backends(b, r->id, buf_head(&u->out), buf_unread(&u->out), u->out_count);
        break;
    default: /* CLASS, PERSIST, ADD_ALIAS, DELETE_ALIAS */
        sreply_none(b, r->id);
    }
}

static void ureq_done(store_t *st, uowner_t *own, wunit_t *u)
{
    ureq_t *q = (ureq_t *)own;
    if (q->ent)
        q->ent->hold++;
    buf_t b;
    buf_init(&b);
    ureq_answer(st, q, u, &b);
    if (buf_unread(&b))
        sconn_answer(q->req->conn, &b, 0);
    else
        log_error("store: out of memory answering request %llu", (unsigned long long)q->req->id);
    buf_free(&b);
    for (size_t i = 0; i < q->ncreated; i++) {
        sobj_t *o = q->created[i];
        o->pending--;
        if (u->status == 0 && o->last_seq < u->seq)
            o->last_seq = u->seq;
        obj_dispatch(st, o);
    }
    if (q->ent) {
        q->ent->hold--;
        obj_maybe_free(st, q->ent);
    }
    ureq_free(q);
}

static ureq_t *ureq_new(sreq_t *r)
{
    ureq_t *q = calloc(1, sizeof *q);
    if (!q) {
        log_error("store: out of memory for request %llu", (unsigned long long)r->id);
        answer_failed(r, STORE_ERR_INTERNAL, "out of memory", 0);
        sreq_free(r);
        return NULL;
    }
    q->own.done = ureq_done;
    q->req = r;
    q->unit.ctx = &q->own;
    q->unit.ops = &q->op;
    q->unit.nops = 1;
    return q;
}

/* One request, one op (everything but PERSIST). */
static void unit_submit(store_t *st, sreq_t *r, sobj_t *o)
{
    ureq_t *q = ureq_new(r);
    if (!q)
        return;
    wop_t *op = &q->op;
    op->id = r->oid;
    op->idlen = r->oidlen;
    op->name = r->name;
    op->namelen = r->namelen;
    op->class_id = r->class_id;
    op->data = r->payload;
    op->len = r->len;
    switch (r->type) {
    case SMSG_CLASS: op->kind = WOP_CLASS_PUT; break;
    case SMSG_LOOKUP_ALIAS: op->kind = WOP_LOOKUP_ALIAS; break;
    case SMSG_DELETE_ALIAS: op->kind = WOP_ALIAS_DEL; break;
    case SMSG_GET_CLASS: op->kind = WOP_GET_CLASS; break;
    case SMSG_BACKENDS: op->kind = WOP_BACKENDS; break;
    case SMSG_ADD_ALIAS: op->kind = WOP_ALIAS_ADD; break;
    case SMSG_ALIASES: op->kind = WOP_LIST_ALIASES; break;
    default: op->kind = WOP_LOOKUP_ID; break;
    }
    q->ent = o;
    uint64_t seq = committer_submit(st->cm, &q->unit);
    if (o && o->last_seq < seq)
        o->last_seq = seq;
}

/* ------------------------------------------------------------ PERSIST */

/* Undo the pending marks of a refused batch. */
static void persist_unmark(store_t *st, ureq_t *q)
{
    for (size_t i = 0; i < q->ncreated; i++) {
        q->created[i]->pending--;
        obj_maybe_free(st, q->created[i]);
    }
    q->ncreated = 0;
}

/* Build the ops and mark the ids pending. NULL, or why the batch is refused. */
static const char *persist_build(store_t *st, ureq_t *q, char *why, size_t whylen)
{
    sreq_t *r = q->req;
    size_t naliases = 0;
    const char *bad = sreq_persist_check(r, &naliases);
    if (bad)
        return bad;
    q->ops = calloc((size_t)r->count * 2 + naliases + 1, sizeof *q->ops);
    q->created = calloc((size_t)r->count + 1, sizeof *q->created);
    idmap_t classes;
    idmap_init(&classes);
    if (!q->ops || !q->created)
        return "out of memory";
    size_t nops = 0, nalias_ops = 0;
    wop_t *alias_ops = q->ops + (size_t)r->count * 2; /* aliases after every create */
    wire_rd_t rd;
    wire_rd_init(&rd, r->payload, r->len);
    for (uint32_t i = 0; i < r->count && !bad; i++) {
        sreq_pentry_t e;
        sreq_persist_next(&rd, &e); /* checked above: cannot fail */
        if (!idmap_get(&classes, e.class_id)) {
            if (idmap_put(&classes, e.class_id, q) < 0)
                bad = "out of memory";
            q->ops[nops++] = (wop_t){.kind = WOP_CLASS_NEED, .class_id = e.class_id};
        }
        q->ops[nops++] = (wop_t){.kind = WOP_CREATE, .id = e.id, .idlen = e.idlen,
                                 .class_id = e.class_id, .data = e.state, .len = e.slen};
        if (e.alen)
            alias_ops[nalias_ops++] = (wop_t){.kind = WOP_ALIAS_ADD, .id = e.id,
                                              .idlen = e.idlen, .name = e.alias,
                                              .namelen = e.alen};
        sobj_t *o = obj_find(st, e.id, e.idlen);
        if (o) {
            snprintf(why, whylen, "an object with id '%.*s' already exists", (int)e.idlen, e.id);
            bad = why;
        } else if (!(o = obj_create(st, e.id, e.idlen))) {
            bad = "out of memory";
        } else {
            o->pending++;
            q->created[q->ncreated++] = o;
        }
    }
    idmap_free(&classes);
    if (bad)
        return bad;
    memmove(q->ops + nops, alias_ops, nalias_ops * sizeof *q->ops);
    q->unit.ops = q->ops;
    q->unit.nops = nops + nalias_ops;
    return NULL;
}

static void persist_submit(store_t *st, sreq_t *r)
{
    ureq_t *q = ureq_new(r);
    if (!q)
        return;
    char why[300];
    const char *bad = persist_build(st, q, why, sizeof why);
    if (bad) {
        persist_unmark(st, q);
        answer_failed(r, strcmp(bad, "out of memory") ? STORE_ERR_BAD_REQUEST
                                                       : STORE_ERR_INTERNAL, bad, 0);
        ureq_free(q);
        return;
    }
    committer_submit(st->cm, &q->unit);
}

/* ------------------------------------------------------------ jobs */

static void job_unref(ojob_t *j)
{
    if (--j->refs > 0)
        return;
    buf_free(&j->unit_bytes);
    buf_free(&j->unit_answer);
    buf_free(&j->answer);
    buf_free(&j->unit.out);
    sreq_free(j->req);
    free(j);
}

static void job_run(pyjob_t *pj)
{
    ojob_t *j = (ojob_t *)((char *)pj - offsetof(ojob_t, pj));
    spy_run(&j->sr);
}

/* The run is back (loop thread): answer or hold, and free the object's queue
 * head. The caller dispatches the object's next request. */
static void job_finish(ojob_t *j)
{
    sobj_t *o = j->ent;
    sreq_t *r = j->req;
    o->busy = 0;
    o->head = r->next;
    if (!o->head)
        o->tail = NULL;
    r->next = NULL;
    if (j->sr.write_seq && o->last_seq < j->sr.write_seq)
        o->last_seq = j->sr.write_seq;
    if (buf_unread(&j->answer))
        sconn_answer(r->conn, &j->answer, o->last_seq);
    else if (!j->sr.write_seq)
        answer_failed(r, STORE_ERR_INTERNAL, "out of memory", o->last_seq);
    if (!j->sr.write_seq)
        j->refs--; /* no unit will come back */
    job_unref(j);
}

static void job_done(pyjob_t *pj)
{
    ojob_t *j = (ojob_t *)((char *)pj - offsetof(ojob_t, pj));
    store_t *st = j->st;
    sobj_t *o = j->ent;
    o->hold++;
    job_finish(j);
    o->hold--;
    obj_dispatch(st, o);
}

static void job_unit_done(store_t *st, uowner_t *own, wunit_t *u)
{
    ojob_t *j = (ojob_t *)own;
    sobj_t *o = j->ent;
    o->hold++; /* still alive: it cannot be forgotten before this unit is on disk */
    if (u->status)
        answer_failed(j->req, u->status, u->msg, 0);
    else
        sconn_answer(j->req->conn, &j->unit_answer, 0);
    o->hold--;
    obj_maybe_free(st, o);
    job_unref(j);
}

static int may_inline(uint8_t type)
{
    return type == SMSG_CALL || type == SMSG_GET_FIELD || type == SMSG_SET_FIELD ||
           type == SMSG_GET_STATE;
}

static void job_start(store_t *st, sobj_t *o, sreq_t *r)
{
    ojob_t *j = calloc(1, sizeof *j);
    if (!j) {
        o->head = r->next;
        if (!o->head)
            o->tail = NULL;
        answer_failed(r, STORE_ERR_INTERNAL, "out of memory", o->last_seq);
        sreq_free(r);
        return;
    }
    j->own.done = job_unit_done;
    j->pj.run = job_run;
    j->pj.done = job_done;
    j->st = st;
    j->ent = o;
    j->req = r;
    j->refs = 2; /* the run, and the unit it may submit */
    buf_init(&j->unit_bytes);
    buf_init(&j->unit_answer);
    buf_init(&j->answer);
    buf_init(&j->unit.out);
    j->unit.ctx = &j->own;
    j->sr = (spy_req_t){.type = r->type, .req = r->id, .oid = r->oid, .oidlen = r->oidlen,
                        .name = r->name, .namelen = r->namelen, .class_id = r->class_id,
                        .payload = r->payload,
                        .len = r->len, .unit = &j->unit, .op = &j->op,
                        .unit_bytes = &j->unit_bytes, .unit_answer = &j->unit_answer,
                        .answer = &j->answer};
    o->busy = 1;
    if (st->inline_ok && may_inline(r->type) && pyexec_idle(st->px)) {
        /* No Python thread holds or waits for the GIL: a short request runs
         * here, without a hand-off to a Python thread and back. */
        py_gil_enter();
        int ran = spy_run_inline(&j->sr);
        if (ran)
            spy_trim();
        py_gil_leave();
        if (ran) {
            job_finish(j); /* obj_dispatch's loop goes on with the next request */
            return;
        }
    }
    pyexec_submit(st->px, &j->pj);
}

/* ------------------------------------------------------------ queues */

static void obj_dispatch(store_t *st, sobj_t *o)
{
    o->hold++;
    while (!st->stopping && !o->busy && !o->pending && o->head) {
        sreq_t *r = o->head;
        if (is_python(r->type)) {
            job_start(st, o, r);
            continue; /* busy now, or the request was answered */
        }
        o->head = r->next;
        if (!o->head)
            o->tail = NULL;
        r->next = NULL;
        unit_submit(st, r, o);
    }
    o->hold--;
    obj_maybe_free(st, o);
}

/* UNLOAD: here, on the loop thread, with the GIL (taken from the Python
 * threads between their steps, as an inline run takes it). */
static void unload_now(store_t *st, sreq_t *r)
{
    buf_t b;
    buf_init(&b);
    py_gil_enter();
    spy_unload(&b, r->id);
    py_gil_leave();
    if (buf_unread(&b))
        sconn_answer(r->conn, &b, 0);
    else
        answer_failed(r, STORE_ERR_INTERNAL, "out of memory", 0);
    buf_free(&b);
    sreq_free(r);
}

void sobj_submit(store_t *st, sreq_t *r)
{
    switch (r->type) {
    case SMSG_PERSIST:
        persist_submit(st, r);
        return;
    case SMSG_CLASS:
    case SMSG_LOOKUP_ALIAS:
    case SMSG_DELETE_ALIAS:
    case SMSG_GET_CLASS:
    case SMSG_BACKENDS:
        unit_submit(st, r, NULL);
        return;
    case SMSG_UNLOAD:
        unload_now(st, r);
        return;
    default:
        break;
    }
    sobj_t *o = obj_find(st, r->oid, r->oidlen);
    if (!o && !(o = obj_create(st, r->oid, r->oidlen))) {
        answer_failed(r, STORE_ERR_INTERNAL, "out of memory", 0);
        sreq_free(r);
        return;
    }
    if (o->tail)
        o->tail->next = r;
    else
        o->head = r;
    o->tail = r;
    obj_dispatch(st, o);
}

void sobj_unit_done(void *ctx, wunit_t *u)
{
    store_t *st = ctx;
    uowner_t *own = u->ctx;
    /* Answers that wait for earlier units go first, then this unit's own. */
    sconn_release_below(st, u->seq);
    if (st->durable < u->seq)
        st->durable = u->seq;
    own->done(st, own, u);
    sconn_release(st, st->durable);
}

void sobj_drop_all(store_t *st)
{
    /* The map is not changed while it is walked: nodes are freed, then the
     * table goes at once. */
    size_t pos = 0;
    uint64_t key;
    onode_t *n;
    while ((n = idmap_next(&st->objs.m, &pos, &key))) {
        while (n) {
            sobj_t *o = (sobj_t *)n;
            n = n->chain;
            while (o->head) {
                sreq_t *r = o->head;
                o->head = r->next;
                sreq_free(r);
            }
            free(o);
        }
    }
    omap_free(&st->objs);
}
