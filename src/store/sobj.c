#include "store/sobj.h"

#include <stddef.h>
#include <stdint.h>
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
    if (o->hold || o->head || o->pending || o->last_seq > st->durable)
        return;
    omap_del(&st->objs, &o->node);
    free(o);
}

/* Answer FAILED (whatever the answer held is dropped). */
static void answer_failed(sreq_t *r, int code, const char *msg, uint64_t seq)
{
    buf_clear(&r->answer);
    if (sreply_failed(&r->answer, r->id, code, "%s", msg) == 0)
        sconn_answer(r->conn, &r->answer, seq);
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

static void ureq_answer(store_t *st, sreq_t *r, wunit_t *u, buf_t *b)
{
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

/* A request that is one unit: COMMIT -> answered from the unit's results,
 * freed. */
static void ureq_done(store_t *st, sreq_t *r, wunit_t *u)
{
    if (r->ent)
        r->ent->hold++;
    ureq_answer(st, r, u, &r->answer);
    if (buf_unread(&r->answer))
        sconn_answer(r->conn, &r->answer, 0);
    else
        log_error("store: out of memory answering request %llu", (unsigned long long)r->id);
    for (size_t i = 0; i < r->ncreated; i++) {
        sobj_t *o = r->created[i];
        o->pending--;
        if (u->status == 0 && o->last_seq < u->seq)
            o->last_seq = u->seq;
        obj_dispatch(st, o);
    }
    if (r->ent) {
        r->ent->hold--;
        obj_maybe_free(st, r->ent);
    }
    sreq_free(r);
}

/* QUEUED -> COMMIT: hand the unit to the committer. */
static uint64_t ureq_submit(store_t *st, sreq_t *r)
{
    sreq_enter(r, SREQ_COMMIT);
    return committer_submit(st->cm, &r->unit);
}

/* One request, one op (everything but PERSIST). */
static void unit_submit(store_t *st, sreq_t *r, sobj_t *o)
{
    wop_t *op = &r->op;
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
    r->unit.ops = op;
    r->unit.nops = 1;
    r->ent = o;
    uint64_t seq = ureq_submit(st, r);
    if (o && o->last_seq < seq)
        o->last_seq = seq;
}

/* ------------------------------------------------------------ PERSIST */

/* Undo the pending marks of a refused batch. */
static void persist_unmark(store_t *st, sreq_t *r)
{
    for (size_t i = 0; i < r->ncreated; i++) {
        r->created[i]->pending--;
        obj_maybe_free(st, r->created[i]);
    }
    r->ncreated = 0;
}

/* Room for n ops in the request's unit bytes, zeroed. NULL when out of memory. */
static wop_t *ops_alloc(sreq_t *r, size_t n)
{
    if (n > SIZE_MAX / sizeof(wop_t) || buf_reserve(&r->unit_bytes, n * sizeof(wop_t)) < 0)
        return NULL;
    r->unit_bytes.len = n * sizeof(wop_t);
    memset(r->unit_bytes.data, 0, r->unit_bytes.len);
    return (wop_t *)r->unit_bytes.data;
}

/* Build the ops and mark the ids pending. NULL, or why the batch is refused. */
static const char *persist_build(store_t *st, sreq_t *r, char *why, size_t whylen)
{
    size_t naliases = 0;
    const char *bad = sreq_persist_check(r, &naliases);
    if (bad)
        return bad;
    wop_t *ops = ops_alloc(r, (size_t)r->count * 2 + naliases + 1);
    r->created = calloc((size_t)r->count + 1, sizeof *r->created);
    idmap_t classes;
    idmap_init(&classes);
    if (!ops || !r->created)
        return "out of memory";
    size_t nops = 0, nalias_ops = 0;
    wop_t *alias_ops = ops + (size_t)r->count * 2; /* aliases after every create */
    wire_rd_t rd;
    wire_rd_init(&rd, r->payload, r->len);
    for (uint32_t i = 0; i < r->count && !bad; i++) {
        sreq_pentry_t e;
        sreq_persist_next(&rd, &e); /* checked above: cannot fail */
        if (!idmap_get(&classes, e.class_id)) {
            if (idmap_put(&classes, e.class_id, r) < 0)
                bad = "out of memory";
            ops[nops++] = (wop_t){.kind = WOP_CLASS_NEED, .class_id = e.class_id};
        }
        ops[nops++] = (wop_t){.kind = WOP_CREATE, .id = e.id, .idlen = e.idlen,
                              .class_id = e.class_id, .data = e.state, .len = e.slen};
        if (e.alen)
            alias_ops[nalias_ops++] = (wop_t){.kind = WOP_ALIAS_ADD, .id = e.id,
                                              .idlen = e.idlen, .name = e.alias,
                                              .namelen = e.alen};
        /* An entry alone proves nothing: a request about the id (a lookup that
         * came first, say) makes one. A PERSIST of it not yet answered does;
         * one on disk is refused by its unit (WOP_CREATE). */
        sobj_t *o = obj_find(st, e.id, e.idlen);
        if (o && o->pending) {
            snprintf(why, whylen, "an object with id '%.*s' already exists", (int)e.idlen, e.id);
            bad = why;
        } else if (!o && !(o = obj_create(st, e.id, e.idlen))) {
            bad = "out of memory";
        } else {
            o->pending++;
            r->created[r->ncreated++] = o;
        }
    }
    idmap_free(&classes);
    if (bad)
        return bad;
    memmove(ops + nops, alias_ops, nalias_ops * sizeof *ops);
    r->unit.ops = ops;
    r->unit.nops = nops + nalias_ops;
    return NULL;
}

static void persist_submit(store_t *st, sreq_t *r)
{
    char why[300];
    const char *bad = persist_build(st, r, why, sizeof why);
    if (bad) {
        persist_unmark(st, r);
        answer_failed(r, strcmp(bad, "out of memory") ? STORE_ERR_BAD_REQUEST
                                                       : STORE_ERR_INTERNAL, bad, 0);
        sreq_free(r);
        return;
    }
    ureq_submit(st, r);
}

/* ------------------------------------------------------------ jobs

 * A request that runs Python (spy.h): INLINE or THREAD while it runs, then
 * COMMIT if it submitted a unit; the state says who answers and who frees
 * (sreq.h). */

static sreq_t *job_of(pyjob_t *pj)
{
    return (sreq_t *)((char *)pj - offsetof(sreq_t, pj));
}

static void job_run(pyjob_t *pj)
{
    sreq_t *r = job_of(pj);
    spy_run(r->conn->st->spy, r);
}

/* Take the head (the request that ran) off its object's queue. */
static void obj_pop(sobj_t *o)
{
    sreq_t *r = o->head;
    o->head = r->next;
    if (!o->head)
        o->tail = NULL;
    r->next = NULL;
}

/* The run is back (loop thread): off the queue; then answered now and freed,
 * or COMMIT (its unit answers), or, ANSWERED already, freed. The caller
 * dispatches the object's next request. */
static void job_finish(sreq_t *r)
{
    sobj_t *o = r->ent;
    obj_pop(o);
    if (r->write_seq && o->last_seq < r->write_seq)
        o->last_seq = r->write_seq;
    if (r->state == SREQ_ANSWERED) {
        sreq_free(r);
        return;
    }
    if (r->write_seq) {
        sreq_enter(r, SREQ_COMMIT);
        return;
    }
    if (buf_unread(&r->answer))
        sconn_answer(r->conn, &r->answer, o->last_seq);
    else
        answer_failed(r, STORE_ERR_INTERNAL, "out of memory", o->last_seq);
    sreq_free(r);
}

static void job_done(pyjob_t *pj)
{
    sreq_t *r = job_of(pj);
    store_t *st = r->conn->st;
    sobj_t *o = r->ent;
    o->hold++;
    job_finish(r);
    o->hold--;
    obj_dispatch(st, o);
}

/* A run's unit is done: answer. COMMIT (the run is back): freed; THREAD (the
 * run is not back yet): ANSWERED, freed by job_finish. */
static void job_unit_done(store_t *st, sreq_t *r, wunit_t *u)
{
    sobj_t *o = r->ent;
    o->hold++; /* still alive: it cannot be forgotten before this unit is on disk */
    if (u->status)
        answer_failed(r, u->status, u->msg, 0);
    else
        sconn_answer(r->conn, &r->answer, 0);
    o->hold--;
    obj_maybe_free(st, o);
    if (r->state == SREQ_THREAD)
        sreq_enter(r, SREQ_ANSWERED);
    else
        sreq_free(r);
}

static int may_inline(uint8_t type)
{
    return type == SMSG_CALL || type == SMSG_GET_FIELD || type == SMSG_SET_FIELD ||
           type == SMSG_GET_STATE;
}

/* The head of o's queue runs: INLINE, else THREAD. */
static void job_start(store_t *st, sobj_t *o, sreq_t *r)
{
    r->pj.run = job_run;
    r->pj.done = job_done;
    if (st->inline_ok && may_inline(r->type) && pyexec_idle(st->px)) {
        /* No Python thread holds or waits for the GIL: a short request runs
         * here, without a hand-off to a Python thread and back. */
        sreq_enter(r, SREQ_INLINE);
        py_gil_enter();
        int ran = spy_run_inline(st->spy, r);
        if (ran)
            spy_trim(st->spy);
        py_gil_leave();
        if (ran) {
            job_finish(r); /* obj_dispatch's loop goes on with the next request */
            return;
        }
    }
    sreq_enter(r, SREQ_THREAD);
    pyexec_submit(st->px, &r->pj);
}

/* ------------------------------------------------------------ queues */

/* The head's run is out (INLINE, THREAD, or ANSWERED before its run is
 * back): the next request waits. */
static int obj_busy(const sobj_t *o)
{
    return o->head && o->head->state != SREQ_QUEUED;
}

static void obj_dispatch(store_t *st, sobj_t *o)
{
    o->hold++;
    while (!st->stopping && !obj_busy(o) && !o->pending && o->head) {
        sreq_t *r = o->head;
        if (is_python(r->type)) {
            job_start(st, o, r);
            continue; /* running now, or back and off the queue */
        }
        obj_pop(o);
        unit_submit(st, r, o);
    }
    o->hold--;
    obj_maybe_free(st, o);
}

/* UNLOAD: here, on the loop thread, with the GIL (taken from the Python
 * threads between their steps, as an inline run takes it). */
static void unload_now(store_t *st, sreq_t *r)
{
    py_gil_enter();
    spy_unload(st->spy, &r->answer, r->id);
    py_gil_leave();
    if (buf_unread(&r->answer))
        sconn_answer(r->conn, &r->answer, 0);
    else
        answer_failed(r, STORE_ERR_INTERNAL, "out of memory", 0);
    sreq_free(r);
}

void sobj_submit(store_t *st, sreq_t *r)
{
    r->unit.ctx = r;
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
    r->ent = o;
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
    sreq_t *r = u->ctx;
    /* Answers that wait for earlier units go first, then this unit's own. */
    sconn_release_below(st, u->seq);
    if (st->durable < u->seq)
        st->durable = u->seq;
    if (is_python(r->type))
        job_unit_done(st, r, u);
    else
        ureq_done(st, r, u);
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
