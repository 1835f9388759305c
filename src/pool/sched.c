#include "pool/sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/idmap.h"
#include "pool/proto.h"

#define DEFAULT_AHEAD_MIN 1
#define DEFAULT_AHEAD_MAX 64
#define DEFAULT_AHEAD_TARGET_US 2000
#define DEFAULT_NEAR_WAIT_US 20000

typedef struct func func_t;
typedef struct call call_t;
typedef struct place place_t;

struct func {
    uint64_t gid;
    uint64_t func_id;
    sched_client_t *client; /* NULL once the client is gone */
    span_t fn;
    size_t ncalls;          /* queued or running */
    int forgotten;          /* no more calls will come: drop once ncalls is 0 */
    uint64_t avg_us;        /* moving average of its run time; 0: none seen yet */
};

/* A call is in exactly one list at a time: the queue, or its worker's tasks.
 * A queued call is also in its place's list (pprev/pnext), so that a worker
 * near a place finds that place's oldest call without walking the queue. */
struct call {
    uint64_t task_id;
    uint64_t call_id;
    sched_client_t *client; /* NULL once the client is gone: result discarded */
    func_t *func;
    span_t args;
    uint32_t timeout_ms;
    uint16_t retries;
    uint32_t attempts;      /* runs so far, counting the current one */
    int cancel_pending;     /* CANCEL asked while sent ahead: SKIP sent to the worker */
    int requeue_pending;    /* taken back from a lending worker: SKIP sent (sched_lend) */
    uint64_t submitted_us;
    sched_worker_t *worker; /* NULL while queued */
    uint16_t place;         /* the place it would rather run at; 0: none */
    int64_t qseq;           /* its position in the queue: the lower, the older */
    call_t *prev, *next;
    call_t *pprev, *pnext;
};

typedef struct {
    call_t *head, *tail;
    size_t n;
} call_list_t;

/* A locality name (sched_place). Slot 0 is "no place": its list holds the
 * queued calls without a preference. A slot whose refs fell to 0 is free for
 * the next new name, so the table holds only names in use. */
struct place {
    char name[PROTO_PLACE_MAX + 1];
    size_t len;
    uint32_t refs;     /* workers near it, and calls (queued or running) preferring it */
    uint32_t nworkers; /* workers near it */
    call_t *head, *tail; /* its queued calls, oldest first */
};

struct sched_client {
    void *io;
    idmap_t calls; /* call_id -> call_t, queued or running */
    idmap_t funcs; /* func_id -> func_t, not forgotten */
    sched_client_t *prev, *next;
};

struct sched_worker {
    void *io;
    uint32_t id;
    uint32_t pid;
    uint16_t place;       /* where it runs: 0 none */
    call_list_t tasks;    /* sent, not DONE; the head is running */
    uint64_t head_start;  /* when the head started (see sched.h) */
    uint32_t lending;     /* sub-call clients of the head task (sched_lend); 0 when the
                             head changes */
    idmap_t gids;         /* functions this worker has: gid -> func_t */
    uint64_t runs[3];     /* DONEs it reported, by outcome (sched_worker_stats_t) */
    sched_worker_t *prev, *next;
};

struct sched {
    sched_config_t cfg;
    const sched_ops_t *ops;
    void *ctx;
    call_list_t queue;
    size_t queued_bytes;
    sched_client_t *clients;
    sched_worker_t *workers;
    sched_worker_t *rr; /* where the next dispatch round starts */
    uint32_t nworkers;
    uint32_t nlending;  /* workers whose lending is > 0 */
    uint32_t running;
    idmap_t funcs; /* gid -> func_t, every live function */
    uint64_t next_gid;
    uint64_t next_task_id;
    int64_t seq_front, seq_back; /* the qseq of the queue's ends */
    uint64_t wake_us; /* during a dispatch: when a call waiting to be stolen may be */
    place_t places[SCHED_MAX_PLACES + 1];
    unsigned nplaces; /* slots 1..nplaces may be in use */
};

/* ------------------------------------------------------------ lists */

static void list_push_back(call_list_t *l, call_t *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_push_front(call_list_t *l, call_t *c)
{
    c->prev = NULL;
    c->next = l->head;
    if (l->head)
        l->head->prev = c;
    else
        l->tail = c;
    l->head = c;
    l->n++;
}

static void list_unlink(call_list_t *l, call_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    l->n--;
}

/* ------------------------------------------------------------ places */

uint16_t sched_place(sched_t *s, const char *name, size_t len)
{
    if (len == 0 || len > PROTO_PLACE_MAX)
        return 0;
    unsigned free_slot = 0;
    for (unsigned i = 1; i <= s->nplaces; i++) {
        place_t *p = &s->places[i];
        if (p->refs == 0) {
            if (!free_slot)
                free_slot = i;
        } else if (p->len == len && memcmp(p->name, name, len) == 0) {
            return (uint16_t)i;
        }
    }
    if (!free_slot) {
        if (s->nplaces >= SCHED_MAX_PLACES)
            return 0;
        free_slot = ++s->nplaces;
    }
    place_t *p = &s->places[free_slot];
    memset(p, 0, sizeof *p);
    memcpy(p->name, name, len);
    p->len = len;
    return (uint16_t)free_slot;
}

const char *sched_place_name(const sched_t *s, uint16_t place, size_t *len)
{
    if (place == 0 || place > s->nplaces) {
        *len = 0;
        return "";
    }
    *len = s->places[place].len;
    return s->places[place].name;
}

static void place_ref(sched_t *s, uint16_t place)
{
    if (place)
        s->places[place].refs++;
}

static void place_unref(sched_t *s, uint16_t place)
{
    if (place)
        s->places[place].refs--;
}

/* The place's list, in queue order (see qseq). */
static void place_add(sched_t *s, call_t *c, int front)
{
    place_t *p = &s->places[c->place];
    if (front) {
        c->pprev = NULL;
        c->pnext = p->head;
        if (p->head)
            p->head->pprev = c;
        else
            p->tail = c;
        p->head = c;
    } else {
        c->pnext = NULL;
        c->pprev = p->tail;
        if (p->tail)
            p->tail->pnext = c;
        else
            p->head = c;
        p->tail = c;
    }
}

static void place_remove(sched_t *s, call_t *c)
{
    place_t *p = &s->places[c->place];
    if (c->pprev)
        c->pprev->pnext = c->pnext;
    else
        p->head = c->pnext;
    if (c->pnext)
        c->pnext->pprev = c->pprev;
    else
        p->tail = c->pprev;
    c->pprev = c->pnext = NULL;
}

/* ------------------------------------------------------------ the queue */

static void queue_add(sched_t *s, call_t *c, int front)
{
    c->worker = NULL;
    if (front) {
        list_push_front(&s->queue, c);
        c->qseq = --s->seq_front;
    } else {
        list_push_back(&s->queue, c);
        c->qseq = ++s->seq_back;
    }
    place_add(s, c, front);
    s->queued_bytes += c->args.n;
}

static void queue_remove(sched_t *s, call_t *c)
{
    list_unlink(&s->queue, c);
    place_remove(s, c);
    s->queued_bytes -= c->args.n;
}

/* ------------------------------------------------------------ functions */

static void func_drop(sched_t *s, func_t *f)
{
    for (sched_worker_t *w = s->workers; w; w = w->next)
        if (idmap_del(&w->gids, f->gid))
            s->ops->funcdrop(s->ctx, w->io, f->gid);
    idmap_del(&s->funcs, f->gid);
    blob_unref(f->fn.blob);
    free(f);
}

static void func_maybe_drop(sched_t *s, func_t *f)
{
    if (f->forgotten && f->ncalls == 0)
        func_drop(s, f);
}

int sched_func(sched_t *s, sched_client_t *c, uint64_t func_id, const span_t *fn)
{
    if (idmap_get(&c->funcs, func_id)) {
        blob_unref(fn->blob);
        return SCHED_DUPLICATE;
    }
    func_t *f = calloc(1, sizeof *f);
    if (!f) {
        blob_unref(fn->blob);
        return SCHED_NOMEM;
    }
    f->gid = ++s->next_gid;
    f->func_id = func_id;
    f->client = c;
    f->fn = *fn;
    if (idmap_put(&s->funcs, f->gid, f) < 0) {
        blob_unref(fn->blob);
        free(f);
        return SCHED_NOMEM;
    }
    if (idmap_put(&c->funcs, func_id, f) < 0) {
        idmap_del(&s->funcs, f->gid);
        blob_unref(fn->blob);
        free(f);
        return SCHED_NOMEM;
    }
    return SCHED_OK;
}

void sched_forget(sched_t *s, sched_client_t *c, uint64_t func_id)
{
    func_t *f = idmap_del(&c->funcs, func_id);
    if (!f)
        return;
    f->forgotten = 1;
    func_maybe_drop(s, f);
}

/* ------------------------------------------------------------ finishing calls */

static void call_free(sched_t *s, call_t *c)
{
    func_t *f = c->func;
    place_unref(s, c->place);
    blob_unref(c->args.blob);
    free(c);
    f->ncalls--;
    func_maybe_drop(s, f);
}

/* The call's outcome is final: tell its client (if still there) and free it.
 * w: the worker that ran it last (NULL: none). */
static void call_finish(sched_t *s, call_t *c, uint8_t status, const sched_worker_t *w,
                        uint64_t started, uint64_t finished, const void *payload, size_t len)
{
    if (c->client && c->cancel_pending && status != CALL_CANCELLED)
        s->ops->cancelled(s->ctx, c->client->io, c->call_id, 0); /* it ran after all */
    if (c->client) {
        size_t near_len;
        const char *near = sched_place_name(s, w ? w->place : 0, &near_len);
        sched_result_t r = {
            .call_id = c->call_id,
            .status = status,
            .worker_id = w ? w->id : 0,
            .worker_near = near,
            .worker_near_len = near_len,
            .attempts = c->attempts,
            .submitted_us = c->submitted_us,
            .started_us = started,
            .finished_us = finished,
            .payload = payload,
            .payload_len = len,
        };
        idmap_del(&c->client->calls, c->call_id);
        s->ops->result(s->ctx, c->client->io, &r);
    }
    call_free(s, c);
}

/* Dropped before it ran (again): CANCELLED(id, 1), then its result. */
static void call_cancelled(sched_t *s, call_t *c, uint64_t now)
{
    if (c->client)
        s->ops->cancelled(s->ctx, c->client->io, c->call_id, 1);
    call_finish(s, c, CALL_CANCELLED, NULL, 0, now, NULL, 0);
}

/* A run failed: run it again if retries allow (and someone still wants it),
 * otherwise report the failure. */
static void call_failed(sched_t *s, call_t *c, uint8_t status, const sched_worker_t *w,
                        uint64_t started, uint64_t finished, const void *payload, size_t len)
{
    if (c->client && c->attempts <= c->retries && c->cancel_pending)
        call_cancelled(s, c, finished); /* a cancelled call is not run again */
    else if (c->client && c->attempts <= c->retries)
        queue_add(s, c, 1);
    else
        call_finish(s, c, status, w, started, finished, payload, len);
}

int sched_call(sched_t *s, sched_client_t *c, uint64_t func_id, uint64_t call_id,
               uint32_t timeout_ms, uint16_t retries, const span_t *args, uint64_t now)
{
    return sched_call_near(s, c, func_id, call_id, timeout_ms, retries, 0, args, now);
}

int sched_call_near(sched_t *s, sched_client_t *c, uint64_t func_id, uint64_t call_id,
                    uint32_t timeout_ms, uint16_t retries, uint16_t place, const span_t *args,
                    uint64_t now)
{
    if (place > s->nplaces || (place && s->places[place].len == 0))
        place = 0; /* not an id sched_place gave: no preference */
    func_t *f = idmap_get(&c->funcs, func_id);
    if (!f) {
        char text[160];
        int n = snprintf(text, sizeof text,
                         "unknown function id %llu: no FUNC for it, or it was forgotten",
                         (unsigned long long)func_id);
        sched_result_t r = {.call_id = call_id, .status = CALL_ERROR, .submitted_us = now,
                            .started_us = now, .finished_us = now, .payload = (uint8_t *)text,
                            .payload_len = (size_t)n};
        blob_unref(args->blob);
        s->ops->result(s->ctx, c->io, &r);
        return SCHED_OK;
    }
    call_t *k = calloc(1, sizeof *k);
    int rc = k ? idmap_add(&c->calls, call_id, k) : -1;
    if (rc < 0) {
        free(k);
        blob_unref(args->blob);
        return rc == IDMAP_EXISTS ? SCHED_DUPLICATE : SCHED_NOMEM;
    }
    k->task_id = ++s->next_task_id;
    k->call_id = call_id;
    k->client = c;
    k->func = f;
    k->args = *args;
    k->timeout_ms = timeout_ms;
    k->retries = retries;
    k->submitted_us = now;
    k->place = place;
    place_ref(s, place);
    f->ncalls++;
    queue_add(s, k, 0);
    return SCHED_OK;
}

int sched_cancel(sched_t *s, sched_client_t *c, uint64_t call_id, uint64_t now)
{
    call_t *k = idmap_get(&c->calls, call_id);
    if (k && !k->worker) {
        queue_remove(s, k);
        call_cancelled(s, k, now);
        return 1;
    }
    /* The first task at a worker is the one running: too late. */
    if (!k || k == k->worker->tasks.head) {
        s->ops->cancelled(s->ctx, c->io, call_id, 0);
        return 0;
    }
    /* Sent ahead: only the worker knows whether it has started. Its answer
     * (a DONE saying CALL_CANCELLED, or the call's outcome) settles it. */
    if (!k->cancel_pending) {
        k->cancel_pending = 1;
        s->ops->skip(s->ctx, k->worker->io, k->task_id);
    }
    return 0;
}

/* ------------------------------------------------------------ clients */

sched_client_t *sched_client_add(sched_t *s, void *io)
{
    sched_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->io = io;
    idmap_init(&c->calls);
    idmap_init(&c->funcs);
    c->next = s->clients;
    if (s->clients)
        s->clients->prev = c;
    s->clients = c;
    return c;
}

void sched_client_remove(sched_t *s, sched_client_t *c)
{
    size_t pos = 0;
    call_t *k;
    /* Running calls go on (they cannot be recalled) with nobody to tell. */
    while ((k = idmap_next(&c->calls, &pos, NULL))) {
        k->client = NULL;
        if (!k->worker) {
            queue_remove(s, k);
            call_free(s, k);
        }
    }
    pos = 0;
    func_t *f;
    while ((f = idmap_next(&c->funcs, &pos, NULL))) {
        f->client = NULL;
        f->forgotten = 1;
    }
    /* A second pass: dropping a function must not disturb the iteration. */
    pos = 0;
    while ((f = idmap_next(&c->funcs, &pos, NULL)))
        if (f->ncalls == 0)
            func_drop(s, f);
    idmap_free(&c->calls);
    idmap_free(&c->funcs);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* ------------------------------------------------------------ workers */

/* The worker's first task starts running now. If this is its last allowed run
 * its arguments are never sent again: let them go (they may be large). */
static void head_started(sched_t *s, sched_worker_t *w, uint64_t now)
{
    w->head_start = now;
    if (w->lending) { /* a new head: the old one's sub-call clients lend nothing */
        w->lending = 0;
        s->nlending--;
    }
    call_t *k = w->tasks.head;
    if (k && k->attempts > k->retries && k->args.blob) {
        blob_unref(k->args.blob);
        k->args = (span_t){0};
    }
}

sched_worker_t *sched_worker_add(sched_t *s, void *io, uint32_t id, uint32_t pid)
{
    return sched_worker_add_near(s, io, id, pid, 0);
}

sched_worker_t *sched_worker_add_near(sched_t *s, void *io, uint32_t id, uint32_t pid,
                                      uint16_t place)
{
    if (place > s->nplaces || (place && s->places[place].len == 0))
        place = 0;
    sched_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->io = io;
    w->id = id;
    w->pid = pid;
    w->place = place;
    place_ref(s, place);
    if (place)
        s->places[place].nworkers++;
    idmap_init(&w->gids);
    w->next = s->workers;
    if (s->workers)
        s->workers->prev = w;
    s->workers = w;
    s->nworkers++;
    return w;
}

/* Let go of the worker: its running call fails with `status`, the tasks sent
 * ahead go back to the front of the queue. */
static void worker_gone(sched_t *s, sched_worker_t *w, uint8_t status, const char *text,
                        uint64_t now)
{
    call_t *running = w->tasks.head;
    if (running)
        list_unlink(&w->tasks, running);
    if (w->lending) {
        w->lending = 0;
        s->nlending--;
    }
    s->running -= (uint32_t)w->tasks.n + (running ? 1 : 0);
    /* The ones sent ahead never started: undo their attempt. */
    call_list_t back = {0};
    while (w->tasks.head) {
        call_t *k = w->tasks.head;
        list_unlink(&w->tasks, k);
        k->attempts--;
        k->worker = NULL;
        k->requeue_pending = 0;
        if (k->client && k->cancel_pending)
            call_cancelled(s, k, now);
        else if (k->client)
            list_push_back(&back, k);
        else
            call_free(s, k);
    }
    /* Back to the front of the queue in their order: the last one first. */
    while (back.tail) {
        call_t *k = back.tail;
        list_unlink(&back, k);
        queue_add(s, k, 1);
    }
    if (running) {
        running->worker = NULL;
        call_failed(s, running, status, w, w->head_start, now, text, strlen(text));
    }
    if (w->prev)
        w->prev->next = w->next;
    else
        s->workers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (s->rr == w)
        s->rr = w->next;
    s->nworkers--;
    if (w->place)
        s->places[w->place].nworkers--;
    place_unref(s, w->place);
    idmap_free(&w->gids);
    free(w);
}

void sched_worker_remove(sched_t *s, sched_worker_t *w, uint64_t now)
{
    char text[160];
    snprintf(text, sizeof text, "worker %u (pid %u) died while running this call", w->id,
             w->pid);
    worker_gone(s, w, CALL_WORKER_DIED, text, now);
}

/* DONE(CALL_CANCELLED): the worker dropped a task it had not started, in answer
 * to SKIP. It may be any of the worker's tasks (the answer overtakes the DONE of
 * the one running). */
static int done_skipped(sched_t *s, sched_worker_t *w, uint64_t task_id, uint64_t now)
{
    call_t *k = w->tasks.head;
    while (k && k->task_id != task_id)
        k = k->next;
    if (!k || !(k->cancel_pending || k->requeue_pending))
        return SCHED_PROTOCOL;
    int was_head = k == w->tasks.head;
    list_unlink(&w->tasks, k);
    s->running--;
    k->worker = NULL;
    k->attempts--;
    k->requeue_pending = 0;
    if (was_head)
        head_started(s, w, now);
    if (k->cancel_pending || !k->client)
        call_cancelled(s, k, now);
    else
        queue_add(s, k, 1); /* taken back from a lending worker: first in line */
    return SCHED_OK;
}

int sched_done(sched_t *s, sched_worker_t *w, uint64_t task_id, uint8_t status,
               uint64_t started_us, uint64_t finished_us, const uint8_t *payload,
               size_t payload_len, uint64_t now)
{
    if (status == CALL_CANCELLED)
        return done_skipped(s, w, task_id, now);
    call_t *k = w->tasks.head;
    if (!k || k->task_id != task_id)
        return SCHED_PROTOCOL;
    if (status != CALL_OK && status != CALL_RAISED && status != CALL_ERROR)
        return SCHED_PROTOCOL;
    list_unlink(&w->tasks, k);
    s->running--;
    k->worker = NULL;
    w->runs[status == CALL_OK ? 0 : status == CALL_RAISED ? 1 : 2]++;
    head_started(s, w, now);
    /* The worker's own clock measures the run; +1 keeps "seen" distinct from 0. */
    func_t *f = k->func;
    uint64_t d = finished_us > started_us ? finished_us - started_us : 0;
    f->avg_us = f->avg_us ? (f->avg_us * 7 + d + 1) / 8 : d + 1;
    if (status == CALL_RAISED)
        call_failed(s, k, status, w, started_us, finished_us, payload, payload_len);
    else
        call_finish(s, k, status, w, started_us, finished_us, payload, payload_len);
    return SCHED_OK;
}

unsigned sched_worker_inflight(const sched_worker_t *w) { return (unsigned)w->tasks.n; }

/* A call's expected run time: its function's average so far. A function with
 * no finished run yet counts as the whole budget: nothing more is sent behind
 * it (beyond ahead_min) until one of its calls is done, so a call of unknown
 * length never holds others hostage at its worker, where they could not be
 * cancelled or given to another worker. */
static uint64_t estimate(const sched_t *s, const call_t *k)
{
    return k->func->avg_us ? k->func->avg_us : s->cfg.ahead_target_us;
}

int sched_worker_has_room(const sched_t *s, const sched_worker_t *w, uint64_t now)
{
    const sched_config_t *cfg = &s->cfg;
    size_t n = w->tasks.n;
    if (w->lending)
        return 0; /* its slot is lent (sched_lend): nothing more goes there */
    if (n < cfg->ahead_min)
        return 1;
    if (n >= cfg->ahead_max)
        return 0;
    /* The work already waiting there, with the running task counted as at
     * least as long as it has been running: nothing piles up behind a call
     * that turns out to take minutes. */
    const call_t *k = w->tasks.head;
    uint64_t elapsed = now > w->head_start ? now - w->head_start : 0;
    uint64_t work = estimate(s, k);
    if (elapsed > work)
        work = elapsed;
    for (k = k->next; k && work < cfg->ahead_target_us; k = k->next)
        work += estimate(s, k);
    return work < cfg->ahead_target_us;
}

/* ------------------------------------------------------------ dispatch */

static void send_task(sched_t *s, sched_worker_t *w, call_t *k, uint64_t now)
{
    queue_remove(s, k);
    func_t *f = k->func;
    if (!idmap_get(&w->gids, f->gid)) {
        s->ops->funcdef(s->ctx, w->io, f->gid, &f->fn);
        /* Out of memory here only means FUNCDEF is sent again next time. */
        (void)idmap_put(&w->gids, f->gid, f);
    }
    int idle = w->tasks.n == 0;
    k->requeue_pending = 0;
    k->attempts++;
    k->worker = w;
    list_push_back(&w->tasks, k);
    s->running++;
    s->ops->task(s->ctx, w->io, k->task_id, f->gid, &k->args);
    if (idle)
        head_started(s, w, now);
}

/* The call worker w should take next, or NULL: the oldest call preferring
 * w's place; else the oldest call no worker is near (no preference, or nobody
 * near its place); else, when `steal`, the oldest call of all, whose near
 * workers are then all without room (see sched_dispatch), once it has waited
 * near_wait_us since it was submitted. */
static call_t *pick(sched_t *s, const sched_worker_t *w, int steal, uint64_t now)
{
    if (w->place && s->places[w->place].head)
        return s->places[w->place].head;
    call_t *best = s->places[0].head;
    for (unsigned i = 1; i <= s->nplaces; i++) {
        call_t *h = s->places[i].head;
        if (h && s->places[i].nworkers == 0 && (!best || h->qseq < best->qseq))
            best = h;
    }
    if (best || !steal)
        return best;
    call_t *head = s->queue.head;
    uint64_t when = head->submitted_us + s->cfg.near_wait_us;
    if (now >= when)
        return head;
    if (when < s->wake_us)
        s->wake_us = when;
    return NULL;
}

/* Rounds of one task per worker with room, so a batch spreads evenly. */
static void dispatch_rounds(sched_t *s, uint64_t now, int steal)
{
    int progress = 1;
    while (progress && s->queue.head && s->workers) {
        progress = 0;
        sched_worker_t *start = s->rr ? s->rr : s->workers;
        sched_worker_t *w = start;
        do {
            if (!s->queue.head)
                break;
            call_t *k;
            if (sched_worker_has_room(s, w, now) && (k = pick(s, w, steal, now)) != NULL) {
                send_task(s, w, k, now);
                progress = 1;
            }
            w = w->next ? w->next : s->workers;
        } while (w != start);
        s->rr = w;
    }
}

/* First every worker takes calls near it, and calls no worker is near; only
 * then do workers still with room take calls whose near workers have none,
 * once such a call has waited near_wait_us: a free near worker is never passed
 * over, a near worker that is merely a few quick calls behind keeps its own
 * (the pool's other workers would otherwise take them the moment they run
 * dry), and a busy or slow one holds nothing back for longer than that.
 * Stealing frees no room elsewhere, so one pass of each is enough. */
uint64_t sched_dispatch(sched_t *s, uint64_t now)
{
    s->wake_us = UINT64_MAX;
    dispatch_rounds(s, now, 0);
    dispatch_rounds(s, now, 1);
    return s->wake_us;
}

uint64_t sched_check_timeouts(sched_t *s, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    sched_worker_t *w = s->workers;
    while (w) {
        sched_worker_t *after = w->next;
        call_t *k = w->tasks.head;
        if (k && k->timeout_ms) {
            uint64_t deadline = w->head_start + (uint64_t)k->timeout_ms * 1000;
            if (now >= deadline) {
                char text[200];
                snprintf(text, sizeof text,
                         "call ran past its timeout of %u ms on worker %u (pid %u); "
                         "the worker was killed", k->timeout_ms, w->id, w->pid);
                s->ops->kill_worker(s->ctx, w->io, text);
                worker_gone(s, w, CALL_TIMEOUT, text, now);
            } else if (deadline < next) {
                next = deadline;
            }
        }
        w = after;
    }
    return next;
}

/* ------------------------------------------------------------ life */

sched_t *sched_new(const sched_config_t *cfg, const sched_ops_t *ops, void *ctx)
{
    sched_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (cfg)
        s->cfg = *cfg;
    if (s->cfg.ahead_min == 0)
        s->cfg.ahead_min = DEFAULT_AHEAD_MIN;
    if (s->cfg.ahead_max == 0)
        s->cfg.ahead_max = DEFAULT_AHEAD_MAX;
    if (s->cfg.ahead_max < s->cfg.ahead_min)
        s->cfg.ahead_max = s->cfg.ahead_min;
    if (s->cfg.ahead_target_us == 0)
        s->cfg.ahead_target_us = DEFAULT_AHEAD_TARGET_US;
    if (s->cfg.near_wait_us == 0)
        s->cfg.near_wait_us = DEFAULT_NEAR_WAIT_US;
    s->ops = ops;
    s->ctx = ctx;
    idmap_init(&s->funcs);
    return s;
}

static void free_list(call_list_t *l)
{
    while (l->head) {
        call_t *k = l->head;
        list_unlink(l, k);
        blob_unref(k->args.blob);
        free(k);
    }
}

void sched_free(sched_t *s)
{
    if (!s)
        return;
    free_list(&s->queue);
    while (s->workers) {
        sched_worker_t *w = s->workers;
        s->workers = w->next;
        free_list(&w->tasks);
        idmap_free(&w->gids);
        free(w);
    }
    while (s->clients) {
        sched_client_t *c = s->clients;
        s->clients = c->next;
        idmap_free(&c->calls);
        idmap_free(&c->funcs);
        free(c);
    }
    size_t pos = 0;
    func_t *f;
    while ((f = idmap_next(&s->funcs, &pos, NULL))) {
        blob_unref(f->fn.blob);
        free(f);
    }
    idmap_free(&s->funcs);
    free(s);
}

void sched_stats(const sched_t *s, sched_stats_t *out)
{
    out->workers = s->nworkers;
    out->queued = (uint32_t)s->queue.n;
    out->running = s->running;
    out->queued_bytes = s->queued_bytes;
}

void sched_each_worker(const sched_t *s,
                       void (*fn)(void *ctx, const sched_worker_stats_t *ws), void *ctx)
{
    const sched_worker_t *w = s->workers;
    while (w && w->next) /* new workers are added at the head: start at the oldest */
        w = w->next;
    for (; w; w = w->prev) {
        sched_worker_stats_t ws = {.id = w->id, .pid = w->pid, .inflight = (uint32_t)w->tasks.n,
                                   .runs_ok = w->runs[0], .runs_raised = w->runs[1],
                                   .runs_error = w->runs[2]};
        fn(ctx, &ws);
    }
}

int sched_task_running(const sched_t *s, uint64_t task_id)
{
    for (const sched_worker_t *w = s->workers; w; w = w->next)
        if (w->tasks.head && w->tasks.head->task_id == task_id)
            return 1;
    return 0;
}

static sched_worker_t *worker_running(const sched_t *s, uint64_t task_id)
{
    for (sched_worker_t *w = s->workers; w; w = w->next)
        if (w->tasks.head && w->tasks.head->task_id == task_id)
            return w;
    return NULL;
}

int sched_lend(sched_t *s, uint64_t task_id)
{
    sched_worker_t *w = worker_running(s, task_id);
    if (!w)
        return 0;
    if (w->lending++ == 0)
        s->nlending++;
    /* What was sent ahead would wait behind a call that may block on its
     * sub-calls: ask for it back (done_skipped requeues it). */
    for (call_t *k = w->tasks.head->next; k; k = k->next) {
        if (!k->cancel_pending && !k->requeue_pending) {
            k->requeue_pending = 1;
            s->ops->skip(s->ctx, w->io, k->task_id);
        }
    }
    return 1;
}

void sched_unlend(sched_t *s, uint64_t task_id)
{
    sched_worker_t *w = worker_running(s, task_id);
    if (w && w->lending && --w->lending == 0)
        s->nlending--;
}

uint32_t sched_lending(const sched_t *s) { return s->nlending; }

int sched_worker_idle(const sched_worker_t *w) { return w->tasks.n == 0; }
