/* Unit tests for src/pool/sched: the task pool's scheduling rules, driven with a
 * fake clock and callbacks that record what would be sent: FIFO order, FUNCDEF
 * before a worker's first task of a function, the send-ahead bounds, requeue to
 * the front when a worker dies, retries, cancel (queued, and sent ahead: SKIP),
 * timeouts, FORGET, a client that goes away, and the checks on DONE; and the
 * locality rules (a call goes to a worker near its place when one has room,
 * else to any worker with room). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pool/proto.h"
#include "pool/sched.h"

/* ---- recorded callbacks ---------------------------------------------------- */

typedef enum { EV_FUNCDEF, EV_FUNCDROP, EV_TASK, EV_RESULT, EV_CANCELLED, EV_KILL, EV_SKIP } ev_kind;

typedef struct {
    ev_kind kind;
    void *io;
    uint64_t id;   /* gid, task id, call id */
    uint64_t gid;  /* TASK */
    uint8_t status;
    uint32_t worker, attempts;
    uint64_t submitted, started, finished;
    int dropped;
    char text[256];
    size_t len;
    char near[64]; /* RESULT: the place of the worker that ran it */
} ev_t;

#define MAX_EV 4096
static ev_t evs[MAX_EV];
static size_t nev;

static ev_t *record(ev_kind kind, void *io)
{
    assert_true(nev < MAX_EV);
    ev_t *e = &evs[nev++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->io = io;
    return e;
}

static void op_funcdef(void *ctx, void *wio, uint64_t gid, const span_t *fn)
{
    record(EV_FUNCDEF, wio)->id = gid;
}

static void op_funcdrop(void *ctx, void *wio, uint64_t gid) { record(EV_FUNCDROP, wio)->id = gid; }

static void op_task(void *ctx, void *wio, uint64_t task_id, uint64_t gid, const span_t *args)
{
    ev_t *e = record(EV_TASK, wio);
    e->id = task_id;
    e->gid = gid;
    /* The test's arguments are the call id as text: keep it to check order. */
    e->len = args->n;
    if (args->n && args->n < sizeof e->text)
        memcpy(e->text, args->p, args->n);
}

static void op_result(void *ctx, void *cio, const sched_result_t *r)
{
    ev_t *e = record(EV_RESULT, cio);
    e->id = r->call_id;
    e->status = r->status;
    e->worker = r->worker_id;
    e->attempts = r->attempts;
    e->submitted = r->submitted_us;
    e->started = r->started_us;
    e->finished = r->finished_us;
    e->len = r->payload_len;
    if (r->payload_len && r->payload_len < sizeof e->text)
        memcpy(e->text, r->payload, r->payload_len);
    assert_true(r->worker_near_len < sizeof e->near);
    if (r->worker_near_len)
        memcpy(e->near, r->worker_near, r->worker_near_len);
}

static void op_cancelled(void *ctx, void *cio, uint64_t call_id, int dropped)
{
    ev_t *e = record(EV_CANCELLED, cio);
    e->id = call_id;
    e->dropped = dropped;
}

static void op_skip(void *ctx, void *wio, uint64_t task_id) { record(EV_SKIP, wio)->id = task_id; }

static void op_kill(void *ctx, void *wio, const char *why)
{
    ev_t *e = record(EV_KILL, wio);
    snprintf(e->text, sizeof e->text, "%s", why);
}

static const sched_ops_t ops = {
    .funcdef = op_funcdef,
    .funcdrop = op_funcdrop,
    .task = op_task,
    .result = op_result,
    .cancelled = op_cancelled,
    .skip = op_skip,
    .kill_worker = op_kill,
};

/* ---- fixtures ---------------------------------------------------------------- */

/* Distinct addresses stand for connections. */
static char client_io[4], worker_io[4];

typedef struct {
    sched_t *s;
    sched_client_t *c;
} fx_t;

static sched_t *new_sched(unsigned amin, unsigned amax, uint64_t target)
{
    nev = 0;
    sched_config_t cfg = {.ahead_min = amin, .ahead_max = amax, .ahead_target_us = target};
    sched_t *s = sched_new(&cfg, &ops, NULL);
    assert_non_null(s);
    return s;
}

static span_t text_span(const char *t)
{
    blob_t *b = blob_copy(t, strlen(t));
    assert_non_null(b);
    return (span_t){.blob = b, .p = b->data, .n = strlen(t)};
}

static void add_func(sched_t *s, sched_client_t *c, uint64_t func_id)
{
    span_t fn = text_span("fn");
    assert_int_equal(sched_func(s, c, func_id, &fn), SCHED_OK);
}

/* Queue call `call_id` whose arguments are its id as text. */
static void add_call(sched_t *s, sched_client_t *c, uint64_t func_id, uint64_t call_id,
                     uint32_t timeout_ms, uint16_t retries, uint64_t now)
{
    char t[32];
    snprintf(t, sizeof t, "%llu", (unsigned long long)call_id);
    span_t a = text_span(t);
    assert_int_equal(sched_call(s, c, func_id, call_id, timeout_ms, retries, &a, now), SCHED_OK);
}

/* The events of one kind (optionally for one io) from index `from`. */
static size_t count(ev_kind kind, void *io, size_t from)
{
    size_t n = 0;
    for (size_t i = from; i < nev; i++)
        if (evs[i].kind == kind && (!io || evs[i].io == io))
            n++;
    return n;
}

/* The k-th (0-based) event of a kind for io, from index `from`. */
static ev_t *nth(ev_kind kind, void *io, size_t k, size_t from)
{
    for (size_t i = from; i < nev; i++)
        if (evs[i].kind == kind && (!io || evs[i].io == io) && k-- == 0)
            return &evs[i];
    fail_msg("no event %d number %zu", (int)kind, k);
    return NULL;
}

static uint64_t task_call(const ev_t *e) { return strtoull(e->text, NULL, 10); }

static void done_ok(sched_t *s, sched_worker_t *w, const ev_t *task, uint64_t start,
                    uint64_t end)
{
    assert_int_equal(sched_done(s, w, task->id, CALL_OK, start, end, (const uint8_t *)"r", 1,
                                end),
                     SCHED_OK);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_fifo_order_one_worker(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 7, 700);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 5; i++)
        add_call(s, c, 1, i, 0, 0, 100);
    sched_dispatch(s, 100);
    for (uint64_t i = 1; i <= 5; i++) {
        /* One task at a time (ahead 1), in the order submitted. */
        assert_int_equal(count(EV_TASK, NULL, 0), i);
        ev_t *t = nth(EV_TASK, worker_io, i - 1, 0);
        assert_int_equal(task_call(t), i);
        done_ok(s, w, t, 200, 300);
        ev_t *r = nth(EV_RESULT, client_io, i - 1, 0);
        assert_int_equal(r->id, i);
        assert_int_equal(r->status, CALL_OK);
        assert_int_equal(r->worker, 7);
        assert_int_equal(r->attempts, 1);
        assert_int_equal(r->submitted, 100);
        assert_int_equal(r->started, 200);
        assert_int_equal(r->finished, 300);
        sched_dispatch(s, 300);
    }
    sched_stats_t st;
    sched_stats(s, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.workers, 1);
    sched_free(s);
}

static void test_funcdef_once_per_worker(void **state)
{
    sched_t *s = new_sched(4, 4, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w0 = sched_worker_add(s, &worker_io[0], 1, 1);
    sched_worker_add(s, &worker_io[1], 2, 2);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 8; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0);
    /* Each worker: exactly one FUNCDEF, before its first TASK. */
    for (int k = 0; k < 2; k++) {
        void *io = &worker_io[k];
        assert_int_equal(count(EV_FUNCDEF, io, 0), 1);
        assert_int_equal(count(EV_TASK, io, 0), 4);
        size_t def = 0, first_task = 0;
        for (size_t i = 0; i < nev; i++) {
            if (evs[i].io != io)
                continue;
            if (evs[i].kind == EV_FUNCDEF)
                def = i;
            else if (evs[i].kind == EV_TASK && !first_task)
                first_task = i;
        }
        assert_true(def < first_task);
        assert_int_equal(nth(EV_TASK, io, 0, 0)->gid, nth(EV_FUNCDEF, io, 0, 0)->id);
    }
    /* More calls of the same function: no second FUNCDEF. */
    size_t mark = nev;
    done_ok(s, w0, nth(EV_TASK, &worker_io[0], 0, 0), 1, 2);
    add_call(s, c, 1, 9, 0, 0, 3);
    sched_dispatch(s, 3);
    assert_int_equal(count(EV_FUNCDEF, NULL, mark), 0);
    assert_int_equal(count(EV_TASK, &worker_io[0], mark), 1);
    sched_free(s);
}

/* Balanced rounds: with two idle workers a batch alternates between them. */
static void test_dispatch_spreads(void **state)
{
    sched_t *s = new_sched(3, 3, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_add(s, &worker_io[0], 1, 1);
    sched_worker_add(s, &worker_io[1], 2, 2);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 4; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0);
    assert_int_equal(count(EV_TASK, &worker_io[0], 0), 2);
    assert_int_equal(count(EV_TASK, &worker_io[1], 0), 2);
    sched_free(s);
}

static void test_send_ahead_bounds(void **state)
{
    /* ahead_min 2, ahead_max 4, 1000 us of work per worker. */
    sched_t *s = new_sched(2, 4, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 50; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0);
    /* Nothing known of the function yet: ahead_min only. */
    assert_int_equal(sched_worker_inflight(w), 2);
    assert_false(sched_worker_has_room(s, w, 0));
    /* It turns out quick (10 us): the worker is topped up to ahead_max. */
    uint64_t now = 10;
    done_ok(s, w, nth(EV_TASK, worker_io, 0, 0), 0, 10);
    sched_dispatch(s, now);
    assert_int_equal(sched_worker_inflight(w), 4);
    /* Never above ahead_max, however many DONEs come. */
    for (size_t k = 1; k < 30; k++) {
        now += 10;
        done_ok(s, w, nth(EV_TASK, worker_io, k, 0), now - 10, now);
        sched_dispatch(s, now);
        assert_true(sched_worker_inflight(w) <= 4);
        assert_int_equal(sched_worker_inflight(w), 4);
    }
    /* The running task has now run for 5 ms, far beyond its estimate: nothing
     * more is sent beyond ahead_min, so slow calls are not hoarded. */
    sched_free(s);

    s = new_sched(2, 8, 1000);
    c = sched_client_add(s, client_io);
    w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 20; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0);
    done_ok(s, w, nth(EV_TASK, worker_io, 0, 0), 0, 10); /* quick: 10 us average */
    sched_dispatch(s, 10);
    unsigned topped = sched_worker_inflight(w);
    assert_true(topped > 2);
    done_ok(s, w, nth(EV_TASK, worker_io, 1, 0), 10, 20);
    /* The new head has been running for 5 ms when the next dispatch looks. */
    sched_dispatch(s, 5020);
    assert_int_equal(sched_worker_inflight(w), topped - 1);
    assert_false(sched_worker_has_room(s, w, 5020));
    sched_free(s);
}

/* The defaults (0 = default): one task at a worker until its function is known
 * to be quick; a call behind a long one stays in the pool, cancellable. */
static void test_defaults_hold_calls_behind_unknown(void **state)
{
    sched_t *s = new_sched(0, 0, 0);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    add_func(s, c, 2);
    add_call(s, c, 1, 1, 0, 0, 0);  /* long, never seen before */
    add_call(s, c, 2, 2, 0, 0, 0);
    add_call(s, c, 2, 3, 0, 0, 0);
    sched_dispatch(s, 0);
    assert_int_equal(sched_worker_inflight(w), 1);
    sched_dispatch(s, 3000000);
    assert_int_equal(sched_worker_inflight(w), 1);
    assert_int_equal(sched_cancel(s, c, 2, 3000000), 1);
    /* Once function 1 is known to be quick, many go out at once. */
    sched_free(s);
    s = new_sched(0, 0, 0);
    c = sched_client_add(s, client_io);
    w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 100; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0);
    assert_int_equal(sched_worker_inflight(w), 1);
    done_ok(s, w, nth(EV_TASK, worker_io, 0, 0), 0, 5);
    sched_dispatch(s, 5);
    assert_true(sched_worker_inflight(w) > 8);
    assert_true(sched_worker_inflight(w) <= 64);
    sched_free(s);
}

static void test_slow_function_keeps_ahead_min(void **state)
{
    sched_t *s = new_sched(2, 16, 2000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 10; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0);
    /* Each call takes 500 ms: two at the worker, the rest stay queued (and so
     * can be cancelled or go to a worker that joins). */
    uint64_t now = 0;
    for (size_t k = 0; k < 5; k++) {
        now += 500000;
        done_ok(s, w, nth(EV_TASK, worker_io, k, 0), now - 500000, now);
        sched_dispatch(s, now);
        assert_int_equal(sched_worker_inflight(w), 2);
    }
    sched_free(s);
}

static void test_worker_death_requeues_to_front(void **state)
{
    sched_t *s = new_sched(3, 3, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w0 = sched_worker_add(s, &worker_io[0], 1, 1111);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 6; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0);
    /* w0 runs 1, has 2 and 3 ahead; 4..6 wait. */
    assert_int_equal(count(EV_TASK, &worker_io[0], 0), 3);
    size_t mark = nev;
    sched_worker_remove(s, w0, 50);
    /* The running call fails, naming the worker and its pid. */
    assert_int_equal(count(EV_RESULT, client_io, mark), 1);
    ev_t *r = nth(EV_RESULT, client_io, 0, mark);
    assert_int_equal(r->id, 1);
    assert_int_equal(r->status, CALL_WORKER_DIED);
    assert_int_equal(r->attempts, 1);
    assert_int_equal(r->worker, 1);
    assert_int_equal(r->finished, 50);
    assert_non_null(strstr(r->text, "worker 1 (pid 1111) died"));
    sched_stats_t st;
    sched_stats(s, &st);
    assert_int_equal(st.queued, 5);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.workers, 0);
    /* A new worker gets 2, 3 first (not failed, not reordered), then 4, 5, 6. */
    sched_worker_t *w1 = sched_worker_add(s, &worker_io[1], 2, 2222);
    mark = nev;
    sched_dispatch(s, 60);
    assert_int_equal(count(EV_FUNCDEF, &worker_io[1], mark), 1);
    assert_int_equal(task_call(nth(EV_TASK, &worker_io[1], 0, mark)), 2);
    assert_int_equal(task_call(nth(EV_TASK, &worker_io[1], 1, mark)), 3);
    assert_int_equal(task_call(nth(EV_TASK, &worker_io[1], 2, mark)), 4);
    /* Their attempts count only real runs. */
    done_ok(s, w1, nth(EV_TASK, &worker_io[1], 0, mark), 60, 70);
    ev_t *r2 = &evs[nev - 1];
    assert_int_equal(r2->kind, EV_RESULT);
    assert_int_equal(r2->id, 2);
    assert_int_equal(r2->attempts, 1);
    sched_free(s);
}

static void test_retries(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    add_call(s, c, 1, 1, 0, 2, 0); /* retries=2: at most 3 runs */
    add_call(s, c, 1, 2, 0, 0, 0);
    sched_dispatch(s, 0);
    for (int run = 1; run <= 3; run++) {
        ev_t *t = &evs[nev - 1];
        assert_int_equal(t->kind, EV_TASK);
        assert_int_equal(task_call(t), 1); /* a retry goes to the front */
        assert_int_equal(sched_done(s, w, t->id, CALL_RAISED, 0, 1, (const uint8_t *)"exc", 3, 1),
                         SCHED_OK);
        if (run < 3) {
            assert_int_equal(count(EV_RESULT, NULL, 0), 0);
            sched_dispatch(s, 1);
        }
    }
    ev_t *r = &evs[nev - 1];
    assert_int_equal(r->kind, EV_RESULT);
    assert_int_equal(r->id, 1);
    assert_int_equal(r->status, CALL_RAISED);
    assert_int_equal(r->attempts, 3);
    assert_memory_equal(r->text, "exc", 3);
    /* CALL_ERROR (would not unpickle ...) is final at once. */
    sched_free(s);

    s = new_sched(1, 1, 1000);
    c = sched_client_add(s, client_io);
    w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    add_call(s, c, 1, 1, 0, 5, 0);
    sched_dispatch(s, 0);
    assert_int_equal(sched_done(s, w, evs[nev - 1].id, CALL_ERROR, 0, 1, (const uint8_t *)"e", 1, 1),
                     SCHED_OK);
    assert_int_equal(evs[nev - 1].kind, EV_RESULT);
    assert_int_equal(evs[nev - 1].status, CALL_ERROR);
    assert_int_equal(evs[nev - 1].attempts, 1);
    sched_free(s);

    /* A worker death is retried too; the second run succeeds. */
    s = new_sched(1, 1, 1000);
    c = sched_client_add(s, client_io);
    w = sched_worker_add(s, &worker_io[0], 1, 1);
    add_func(s, c, 1);
    add_call(s, c, 1, 1, 0, 1, 0);
    sched_dispatch(s, 0);
    sched_worker_remove(s, w, 5);
    assert_int_equal(count(EV_RESULT, NULL, 0), 0);
    w = sched_worker_add(s, &worker_io[1], 2, 2);
    sched_dispatch(s, 6);
    done_ok(s, w, &evs[nev - 1], 6, 7);
    assert_int_equal(evs[nev - 1].status, CALL_OK);
    assert_int_equal(evs[nev - 1].attempts, 2);
    assert_int_equal(evs[nev - 1].worker, 2);
    sched_free(s);
}

/* sched_each_worker: every connected worker, the oldest first, with its
 * tasks in flight and its DONEs by outcome. */
#define MAX_SEEN 4
static sched_worker_stats_t seen[MAX_SEEN];
static size_t nseen;

static void see_worker(void *ctx, const sched_worker_stats_t *ws)
{
    assert_true(nseen < MAX_SEEN);
    seen[nseen++] = *ws;
}

static void each_worker(sched_t *s)
{
    nseen = 0;
    sched_each_worker(s, see_worker, NULL);
}

static void test_each_worker_figures(void **state)
{
    sched_t *s = new_sched(2, 2, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    each_worker(s);
    assert_int_equal(nseen, 0);
    sched_worker_t *a = sched_worker_add(s, &worker_io[0], 7, 70);
    sched_worker_t *b = sched_worker_add(s, &worker_io[1], 9, 90);
    add_func(s, c, 1);
    for (uint64_t id = 1; id <= 5; id++)
        add_call(s, c, 1, id, 0, 0, 0);
    sched_dispatch(s, 0);
    each_worker(s);
    assert_int_equal(nseen, 2);
    assert_int_equal(seen[0].id, 7); /* the oldest first */
    assert_int_equal(seen[0].pid, 70);
    assert_int_equal(seen[1].id, 9);
    assert_int_equal(seen[1].pid, 90);
    assert_int_equal(seen[0].inflight, 2); /* ahead_min 2 each; one call queued */
    assert_int_equal(seen[1].inflight, 2);
    assert_int_equal(seen[0].runs_ok + seen[0].runs_raised + seen[0].runs_error, 0);
    /* a: one ok; b: one raised (no retry), one error. */
    done_ok(s, a, nth(EV_TASK, &worker_io[0], 0, 0), 0, 1);
    assert_int_equal(sched_done(s, b, nth(EV_TASK, &worker_io[1], 0, 0)->id, CALL_RAISED, 0, 1,
                                (const uint8_t *)"x", 1, 1),
                     SCHED_OK);
    assert_int_equal(sched_done(s, b, nth(EV_TASK, &worker_io[1], 1, 0)->id, CALL_ERROR, 1, 2,
                                (const uint8_t *)"e", 1, 2),
                     SCHED_OK);
    each_worker(s);
    assert_int_equal(seen[0].inflight, 1);
    assert_int_equal(seen[0].runs_ok, 1);
    assert_int_equal(seen[0].runs_raised, 0);
    assert_int_equal(seen[1].inflight, 0);
    assert_int_equal(seen[1].runs_ok, 0);
    assert_int_equal(seen[1].runs_raised, 1);
    assert_int_equal(seen[1].runs_error, 1);
    /* A worker that goes is no longer listed. */
    sched_worker_remove(s, a, 3);
    each_worker(s);
    assert_int_equal(nseen, 1);
    assert_int_equal(seen[0].id, 9);
    sched_free(s);
}

static void test_cancel(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 3; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0); /* 1 runs, 2 and 3 queued */
    size_t mark = nev;
    assert_int_equal(sched_cancel(s, c, 2, 9), 1);
    /* CANCELLED(2, 1), then a CALL_CANCELLED result. */
    assert_int_equal(nev - mark, 2);
    assert_int_equal(evs[mark].kind, EV_CANCELLED);
    assert_int_equal(evs[mark].id, 2);
    assert_int_equal(evs[mark].dropped, 1);
    assert_int_equal(evs[mark + 1].kind, EV_RESULT);
    assert_int_equal(evs[mark + 1].id, 2);
    assert_int_equal(evs[mark + 1].status, CALL_CANCELLED);
    assert_int_equal(evs[mark + 1].len, 0);
    /* The running one cannot be: CANCELLED(1, 0) and no result. */
    mark = nev;
    assert_int_equal(sched_cancel(s, c, 1, 9), 0);
    assert_int_equal(nev - mark, 1);
    assert_int_equal(evs[mark].dropped, 0);
    /* An unknown (or finished) id: CANCELLED(id, 0). */
    assert_int_equal(sched_cancel(s, c, 99, 9), 0);
    assert_int_equal(evs[nev - 1].kind, EV_CANCELLED);
    assert_int_equal(evs[nev - 1].dropped, 0);
    /* The queue goes on without 2. */
    done_ok(s, w, nth(EV_TASK, worker_io, 0, 0), 1, 2);
    sched_dispatch(s, 2);
    assert_int_equal(task_call(&evs[nev - 1]), 3);
    sched_stats_t st;
    sched_stats(s, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.running, 1);
    sched_free(s);
}

/* A call sent ahead: the worker is asked to skip it; the client's answer waits
 * for the worker's. */
static void test_cancel_sent_ahead(void **state)
{
    sched_t *s = new_sched(4, 4, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 3, 3);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 4; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0); /* 1 runs; 2, 3, 4 sent ahead */
    ev_t t1 = *nth(EV_TASK, worker_io, 0, 0);
    ev_t t2 = *nth(EV_TASK, worker_io, 1, 0);
    ev_t t3 = *nth(EV_TASK, worker_io, 2, 0);
    ev_t t4 = *nth(EV_TASK, worker_io, 3, 0);
    size_t mark = nev;
    assert_int_equal(sched_cancel(s, c, 3, 5), 0);
    assert_int_equal(nev - mark, 1);
    assert_int_equal(evs[mark].kind, EV_SKIP);
    assert_int_equal(evs[mark].id, t3.id);
    /* Asking twice sends one SKIP. */
    sched_cancel(s, c, 3, 6);
    assert_int_equal(nev - mark, 1);
    /* The worker dropped it: its answer overtakes 1's DONE. */
    mark = nev;
    assert_int_equal(sched_done(s, w, t3.id, CALL_CANCELLED, 7, 7, NULL, 0, 8), SCHED_OK);
    assert_int_equal(nev - mark, 2);
    assert_int_equal(evs[mark].kind, EV_CANCELLED);
    assert_int_equal(evs[mark].id, 3);
    assert_int_equal(evs[mark].dropped, 1);
    assert_int_equal(evs[mark + 1].kind, EV_RESULT);
    assert_int_equal(evs[mark + 1].status, CALL_CANCELLED);
    assert_int_equal(evs[mark + 1].attempts, 0);
    assert_int_equal(sched_worker_inflight(w), 3);
    /* A CALL_CANCELLED nobody asked for is a protocol error. */
    assert_int_equal(sched_done(s, w, t2.id, CALL_CANCELLED, 0, 0, NULL, 0, 8), SCHED_PROTOCOL);
    /* Cancel 2, but it had started by the time SKIP arrived: it just runs, and
     * the answer is CANCELLED(2, 0) with its result. */
    assert_int_equal(sched_cancel(s, c, 2, 9), 0);
    done_ok(s, w, &t1, 0, 10);
    mark = nev;
    done_ok(s, w, &t2, 10, 20);
    assert_int_equal(evs[mark].kind, EV_CANCELLED);
    assert_int_equal(evs[mark].id, 2);
    assert_int_equal(evs[mark].dropped, 0);
    assert_int_equal(evs[mark + 1].kind, EV_RESULT);
    assert_int_equal(evs[mark + 1].status, CALL_OK);
    /* 4 is running now: too late to cancel. */
    mark = nev;
    assert_int_equal(sched_cancel(s, c, 4, 21), 0);
    assert_int_equal(evs[mark].kind, EV_CANCELLED);
    assert_int_equal(evs[mark].dropped, 0);
    done_ok(s, w, &t4, 20, 30);
    sched_stats_t st;
    sched_stats(s, &st);
    assert_int_equal(st.running, 0);
    sched_free(s);
}

/* A worker dies while a SKIP is on its way: the call is dropped, not requeued. */
static void test_cancel_pending_when_worker_dies(void **state)
{
    sched_t *s = new_sched(3, 3, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 3; i++)
        add_call(s, c, 1, i, 0, 0, 0);
    sched_dispatch(s, 0);
    sched_cancel(s, c, 2, 1);
    size_t mark = nev;
    sched_worker_remove(s, w, 2);
    /* 2: CANCELLED(1) and its result; 1: died; 3: back in the queue. */
    assert_int_equal(count(EV_CANCELLED, NULL, mark), 1);
    ev_t *cn = nth(EV_CANCELLED, NULL, 0, mark);
    assert_int_equal(cn->id, 2);
    assert_int_equal(cn->dropped, 1);
    assert_int_equal(count(EV_RESULT, NULL, mark), 2);
    sched_stats_t st;
    sched_stats(s, &st);
    assert_int_equal(st.queued, 1);
    sched_free(s);
}

static void test_timeout(void **state)
{
    sched_t *s = new_sched(3, 3, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, &worker_io[0], 4, 4444);
    add_func(s, c, 1);
    add_call(s, c, 1, 1, 100, 0, 0);  /* 100 ms */
    add_call(s, c, 1, 2, 300, 0, 0);  /* 300 ms */
    add_call(s, c, 1, 3, 0, 0, 0);    /* none */
    sched_dispatch(s, 1000);
    /* Call 1 started at 1000 us: deadline 101000. */
    assert_int_equal(sched_check_timeouts(s, 50000), 101000);
    assert_int_equal(count(EV_KILL, NULL, 0), 0);
    /* It finishes in time at 90000: call 2 starts then (not when it was sent). */
    done_ok(s, w, nth(EV_TASK, &worker_io[0], 0, 0), 1000, 90000);
    assert_int_equal(sched_check_timeouts(s, 90000), 90000 + 300000);
    assert_int_equal(sched_check_timeouts(s, 389999), 390000);
    size_t mark = nev;
    sched_check_timeouts(s, 390000);
    assert_int_equal(count(EV_KILL, &worker_io[0], mark), 1);
    assert_non_null(strstr(nth(EV_KILL, NULL, 0, mark)->text, "timeout of 300 ms"));
    ev_t *r = nth(EV_RESULT, client_io, 0, mark);
    assert_int_equal(r->id, 2);
    assert_int_equal(r->status, CALL_TIMEOUT);
    assert_int_equal(r->started, 90000);
    assert_int_equal(r->finished, 390000);
    assert_int_equal(r->worker, 4);
    /* The worker is gone; call 3 (sent ahead) is queued again. */
    sched_stats_t st;
    sched_stats(s, &st);
    assert_int_equal(st.workers, 0);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.running, 0);
    /* Nothing with a timeout is running. */
    assert_int_equal(sched_check_timeouts(s, 400000), UINT64_MAX);
    sched_free(s);
}

static void test_timeout_retried(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_add(s, &worker_io[0], 1, 1);
    add_func(s, c, 1);
    add_call(s, c, 1, 1, 10, 1, 0);
    sched_dispatch(s, 0);
    sched_check_timeouts(s, 10000);
    assert_int_equal(count(EV_KILL, NULL, 0), 1);
    assert_int_equal(count(EV_RESULT, NULL, 0), 0); /* retried, not failed */
    sched_worker_t *w = sched_worker_add(s, &worker_io[1], 2, 2);
    sched_dispatch(s, 10001);
    sched_check_timeouts(s, 20001);
    assert_int_equal(count(EV_KILL, NULL, 0), 2);
    ev_t *r = nth(EV_RESULT, client_io, 0, 0);
    assert_int_equal(r->status, CALL_TIMEOUT);
    assert_int_equal(r->attempts, 2);
    (void)w;
    sched_free(s);
}

static void test_forget_drops_function(void **state)
{
    sched_t *s = new_sched(2, 2, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w0 = sched_worker_add(s, &worker_io[0], 1, 1);
    sched_worker_t *w1 = sched_worker_add(s, &worker_io[1], 2, 2);
    add_func(s, c, 5);
    add_call(s, c, 5, 1, 0, 0, 0);
    add_call(s, c, 5, 2, 0, 0, 0);
    sched_dispatch(s, 0);
    uint64_t gid = nth(EV_FUNCDEF, NULL, 0, 0)->id;
    sched_forget(s, c, 5);
    /* Calls still running: nothing dropped yet, and new calls are refused. */
    assert_int_equal(count(EV_FUNCDROP, NULL, 0), 0);
    size_t mark = nev;
    add_call(s, c, 5, 3, 0, 0, 0);
    ev_t *r = nth(EV_RESULT, client_io, 0, mark);
    assert_int_equal(r->id, 3);
    assert_int_equal(r->status, CALL_ERROR);
    done_ok(s, w0, nth(EV_TASK, &worker_io[0], 0, 0), 0, 1);
    assert_int_equal(count(EV_FUNCDROP, NULL, 0), 0);
    done_ok(s, w1, nth(EV_TASK, &worker_io[1], 0, 0), 0, 1);
    /* The last call is done: FUNCDROP to both workers that had it. */
    assert_int_equal(count(EV_FUNCDROP, &worker_io[0], 0), 1);
    assert_int_equal(count(EV_FUNCDROP, &worker_io[1], 0), 1);
    assert_int_equal(nth(EV_FUNCDROP, NULL, 0, 0)->id, gid);
    /* The id can be defined again (a new gid). */
    mark = nev;
    add_func(s, c, 5);
    add_call(s, c, 5, 4, 0, 0, 0);
    sched_dispatch(s, 2);
    assert_int_not_equal(nth(EV_FUNCDEF, NULL, 0, mark)->id, gid);
    sched_free(s);
}

static void test_client_gone(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    sched_client_t *c = sched_client_add(s, &client_io[0]);
    sched_client_t *c2 = sched_client_add(s, &client_io[1]);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    add_func(s, c2, 1);
    add_call(s, c, 1, 1, 0, 0, 0);
    add_call(s, c, 1, 2, 0, 0, 0);
    add_call(s, c2, 1, 1, 0, 0, 0);
    sched_dispatch(s, 0);
    ev_t running = *nth(EV_TASK, worker_io, 0, 0);
    assert_int_equal(task_call(&running), 1);
    sched_client_remove(s, c);
    /* Its queued call is dropped; the other client's stays. */
    sched_stats_t st;
    sched_stats(s, &st);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.running, 1);
    /* The running one finishes; its result goes nowhere; its function is then
     * dropped from the worker. */
    size_t mark = nev;
    done_ok(s, w, &running, 0, 1);
    assert_int_equal(count(EV_RESULT, NULL, mark), 0);
    assert_int_equal(count(EV_FUNCDROP, worker_io, mark), 1);
    sched_dispatch(s, 1);
    ev_t *t = nth(EV_TASK, worker_io, 0, mark);
    done_ok(s, w, t, 1, 2);
    assert_int_equal(nth(EV_RESULT, NULL, 0, mark)->io, &client_io[1]);
    sched_free(s);
}

static void test_duplicates_and_bad_done(void **state)
{
    sched_t *s = new_sched(2, 2, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    span_t fn = text_span("fn2");
    assert_int_equal(sched_func(s, c, 1, &fn), SCHED_DUPLICATE);
    add_call(s, c, 1, 1, 0, 0, 0);
    span_t a = text_span("again");
    assert_int_equal(sched_call(s, c, 1, 1, 0, 0, &a, 0), SCHED_DUPLICATE);
    add_call(s, c, 1, 2, 0, 0, 0);
    sched_dispatch(s, 0);
    ev_t *t1 = nth(EV_TASK, worker_io, 0, 0);
    ev_t *t2 = nth(EV_TASK, worker_io, 1, 0);
    /* Only the running (first) task may be DONE; no such task; bad statuses. */
    assert_int_equal(sched_done(s, w, t2->id, CALL_OK, 0, 1, NULL, 0, 1), SCHED_PROTOCOL);
    assert_int_equal(sched_done(s, w, 12345, CALL_OK, 0, 1, NULL, 0, 1), SCHED_PROTOCOL);
    assert_int_equal(sched_done(s, w, t1->id, CALL_TIMEOUT, 0, 1, NULL, 0, 1), SCHED_PROTOCOL);
    assert_int_equal(sched_done(s, w, t1->id, 99, 0, 1, NULL, 0, 1), SCHED_PROTOCOL);
    assert_int_equal(count(EV_RESULT, NULL, 0), 0);
    assert_int_equal(sched_done(s, w, t1->id, CALL_OK, 0, 1, NULL, 0, 1), SCHED_OK);
    assert_int_equal(sched_done(s, w, t2->id, CALL_OK, 0, 1, NULL, 0, 1), SCHED_OK);
    /* Nothing left running: any DONE is wrong now. */
    assert_int_equal(sched_done(s, w, t2->id, CALL_OK, 0, 1, NULL, 0, 1), SCHED_PROTOCOL);
    sched_free(s);
}

/* The arguments of a call on its last allowed run are let go once it runs;
 * those that may be retried, or are only sent ahead, are kept. */
static void test_args_released_on_final_run(void **state)
{
    sched_t *s = new_sched(2, 2, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 1);
    add_func(s, c, 1);
    span_t a1 = text_span("1"), a2 = text_span("2"), a3 = text_span("3");
    blob_ref(a1.blob);
    blob_ref(a2.blob);
    blob_ref(a3.blob);
    assert_int_equal(sched_call(s, c, 1, 1, 0, 0, &a1, 0), SCHED_OK); /* no retries */
    assert_int_equal(sched_call(s, c, 1, 2, 0, 0, &a2, 0), SCHED_OK); /* no retries */
    assert_int_equal(sched_call(s, c, 1, 3, 0, 1, &a3, 0), SCHED_OK); /* retries=1 */
    sched_dispatch(s, 0);
    assert_int_equal(a1.blob->refs, 1); /* running, final: released by the scheduler */
    assert_int_equal(a2.blob->refs, 2); /* sent ahead: kept */
    done_ok(s, w, nth(EV_TASK, worker_io, 0, 0), 0, 1);
    sched_dispatch(s, 1);
    assert_int_equal(a2.blob->refs, 1); /* now running */
    done_ok(s, w, nth(EV_TASK, worker_io, 1, 0), 1, 2);
    assert_int_equal(a3.blob->refs, 2); /* running but may be retried: kept */
    blob_unref(a1.blob);
    blob_unref(a2.blob);
    sched_free(s);
    assert_int_equal(a3.blob->refs, 1);
    blob_unref(a3.blob);
}

static void test_no_workers_no_dispatch(void **state)
{
    sched_t *s = new_sched(2, 2, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    add_func(s, c, 1);
    add_call(s, c, 1, 1, 0, 0, 0);
    sched_dispatch(s, 0);
    assert_int_equal(count(EV_TASK, NULL, 0), 0);
    /* A worker that joins late gets the work at the next dispatch. */
    sched_worker_add(s, worker_io, 1, 1);
    sched_dispatch(s, 1);
    assert_int_equal(count(EV_TASK, worker_io, 0), 1);
    sched_stats_t st;
    sched_stats(s, &st);
    assert_int_equal(st.queued_bytes, 0);
    sched_free(s);
}


/* ---- locality ------------------------------------------------------------------ */

static char near_io[6];

static sched_worker_t *add_near(sched_t *s, int k, const char *place)
{
    uint16_t id = place ? sched_place(s, place, strlen(place)) : 0;
    sched_worker_t *w = sched_worker_add_near(s, &near_io[k], (uint32_t)(10 + k),
                                              (uint32_t)(100 + k), id);
    assert_non_null(w);
    return w;
}

static void add_near_call(sched_t *s, sched_client_t *c, uint64_t call_id, const char *place,
                          uint16_t retries, uint64_t now)
{
    char t[32];
    snprintf(t, sizeof t, "%llu", (unsigned long long)call_id);
    span_t a = text_span(t);
    uint16_t id = place ? sched_place(s, place, strlen(place)) : 0;
    assert_int_equal(sched_call_near(s, c, 1, call_id, 0, retries, id, &a, now), SCHED_OK);
}

static ev_t *result_of(uint64_t call_id)
{
    for (size_t i = 0; i < nev; i++)
        if (evs[i].kind == EV_RESULT && evs[i].id == call_id)
            return &evs[i];
    fail_msg("no result for call %llu", (unsigned long long)call_id);
    return NULL;
}

/* Round-robin alone would give the first worker the first call; each goes to
 * the worker near its place instead, and its result names that place. */
static void test_near_worker_first(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *a = add_near(s, 0, "b1");
    sched_worker_t *b = add_near(s, 1, "b2");
    add_func(s, c, 1);
    add_near_call(s, c, 1, "b2", 0, 0);
    add_near_call(s, c, 2, "b1", 0, 0);
    sched_dispatch(s, 0);
    ev_t *ta = nth(EV_TASK, &near_io[0], 0, 0), *tb = nth(EV_TASK, &near_io[1], 0, 0);
    assert_int_equal(task_call(ta), 2);
    assert_int_equal(task_call(tb), 1);
    done_ok(s, a, ta, 1, 2);
    done_ok(s, b, tb, 1, 2);
    assert_string_equal(result_of(2)->near, "b1");
    assert_int_equal(result_of(2)->worker, 10);
    assert_string_equal(result_of(1)->near, "b2");
    sched_free(s);
}

#define WAIT 20000 /* the default near_wait_us */

/* The near worker runs a long call: the other calls near it wait near_wait_us
 * (dispatch says when that is over), then go to the worker without a place
 * one after the other, all done before the long call is (a slow near worker
 * holds nothing back for longer than the wait). */
static void test_busy_near_worker_falls_back(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *a = add_near(s, 0, "b1");
    sched_worker_t *p = add_near(s, 1, NULL);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 4; i++)
        add_near_call(s, c, i, "b1", 0, 0);
    assert_int_equal(sched_dispatch(s, 0), WAIT);
    ev_t *ta = nth(EV_TASK, &near_io[0], 0, 0);
    assert_int_equal(task_call(ta), 1);
    assert_int_equal(count(EV_TASK, &near_io[1], 0), 0);
    assert_int_equal(sched_dispatch(s, WAIT - 1), WAIT);
    assert_int_equal(count(EV_TASK, &near_io[1], 0), 0);
    assert_int_equal(sched_dispatch(s, WAIT), UINT64_MAX);
    for (uint64_t i = 2; i <= 4; i++) {
        ev_t *tp = nth(EV_TASK, &near_io[1], i - 2, 0);
        assert_int_equal(task_call(tp), i);
        done_ok(s, p, tp, WAIT + i * 10, WAIT + i * 10 + 5);
        sched_dispatch(s, WAIT + i * 10 + 5);
        assert_string_equal(result_of(i)->near, "");
        assert_int_equal(result_of(i)->worker, 11);
    }
    assert_int_equal(count(EV_TASK, &near_io[0], 0), 1);
    done_ok(s, a, ta, 0, 1000000);
    assert_string_equal(result_of(1)->near, "b1");
    sched_free(s);
}

/* A free worker near another place takes the calls nobody is near (no
 * preference, or no worker near their place) before it takes one whose near
 * worker is busy, and the older of those first. */
static void test_unclaimed_before_stolen(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    add_near(s, 0, "b1");
    add_func(s, c, 1);
    add_near_call(s, c, 1, "b1", 0, 0); /* keeps b1's worker busy */
    sched_dispatch(s, 0);
    add_near_call(s, c, 2, "b1", 0, 1);  /* its near worker is busy */
    add_near_call(s, c, 3, "b3", 0, 1);  /* nobody is near b3 */
    add_near_call(s, c, 4, NULL, 0, 1);  /* no preference */
    sched_worker_t *q = add_near(s, 1, "b2");
    uint64_t expect[] = {3, 4, 2};
    for (int i = 0; i < 3; i++) {
        /* the unclaimed ones at once, the stolen one after its wait */
        uint64_t t0 = i < 2 ? 10 + (uint64_t)i : 1 + WAIT;
        sched_dispatch(s, t0);
        ev_t *t = nth(EV_TASK, &near_io[1], (size_t)i, 0);
        assert_int_equal(task_call(t), expect[i]);
        done_ok(s, q, t, t0, t0 + 1);
    }
    sched_free(s);
}

/* The wait is counted from the call's submission, and near_wait_us can be
 * set: 1 us is (almost) no wait. */
static void test_near_wait_configurable(void **state)
{
    nev = 0;
    sched_config_t cfg = {.ahead_min = 1, .ahead_max = 1, .ahead_target_us = 1000,
                          .near_wait_us = 1};
    sched_t *s = sched_new(&cfg, &ops, NULL);
    assert_non_null(s);
    sched_client_t *c = sched_client_add(s, client_io);
    add_near(s, 0, "b1");
    add_near(s, 1, "b2");
    add_func(s, c, 1);
    add_near_call(s, c, 1, "b1", 0, 100);
    add_near_call(s, c, 2, "b1", 0, 100);
    assert_int_equal(sched_dispatch(s, 100), 101);
    assert_int_equal(count(EV_TASK, &near_io[1], 0), 0);
    assert_int_equal(sched_dispatch(s, 101), UINT64_MAX);
    assert_int_equal(task_call(nth(EV_TASK, &near_io[1], 0, 0)), 2);
    sched_free(s);
}

/* A near worker that goes away: its running call fails (its result names
 * where it ran), the calls sent ahead keep their preference and go first to
 * the other worker near the same place. */
static void test_requeued_calls_keep_their_place(void **state)
{
    sched_t *s = new_sched(3, 3, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *a = add_near(s, 0, "b1");
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 3; i++)
        add_near_call(s, c, i, "b1", 0, 0);
    sched_dispatch(s, 0);
    assert_int_equal(count(EV_TASK, &near_io[0], 0), 3);
    sched_worker_t *p = add_near(s, 1, NULL);
    sched_worker_t *b = add_near(s, 2, "b1");
    size_t mark = nev;
    sched_worker_remove(s, a, 5);
    ev_t *r = result_of(1);
    assert_int_equal(r->status, CALL_WORKER_DIED);
    assert_string_equal(r->near, "b1");
    sched_dispatch(s, 5);
    /* b1's other worker has room for both: the plain one gets none */
    assert_int_equal(count(EV_TASK, &near_io[2], mark), 2);
    assert_int_equal(task_call(nth(EV_TASK, &near_io[2], 0, mark)), 2);
    assert_int_equal(task_call(nth(EV_TASK, &near_io[2], 1, mark)), 3);
    assert_int_equal(count(EV_TASK, &near_io[1], mark), 0);
    (void)p;
    (void)b;
    sched_free(s);
}

/* A retried call keeps its place. */
static void test_retry_keeps_place(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *p = add_near(s, 0, NULL);
    sched_worker_t *a = add_near(s, 1, "b1");
    add_func(s, c, 1);
    add_near_call(s, c, 1, "b1", 1, 0);
    sched_dispatch(s, 0);
    ev_t *t = nth(EV_TASK, &near_io[1], 0, 0);
    size_t mark = nev;
    assert_int_equal(sched_done(s, a, t->id, CALL_RAISED, 1, 2, (const uint8_t *)"x", 1, 2),
                     SCHED_OK);
    sched_dispatch(s, 2);
    assert_int_equal(count(EV_TASK, &near_io[1], mark), 1);
    assert_int_equal(count(EV_TASK, &near_io[0], mark), 0);
    (void)p;
    sched_free(s);
}

/* Names are interned while something holds them; the table is bounded and a
 * name nothing holds any more gives its slot to the next new one. */
static void test_places_interned_and_bounded(void **state)
{
    sched_t *s = new_sched(1, 1, 1000);
    assert_int_equal(sched_place(s, "", 0), 0);
    char longname[PROTO_PLACE_MAX + 2];
    memset(longname, 'x', sizeof longname);
    assert_int_equal(sched_place(s, longname, PROTO_PLACE_MAX + 1), 0);
    uint16_t b1 = sched_place(s, "b1", 2);
    assert_true(b1 != 0);
    static char ios[SCHED_MAX_PLACES + 1];
    sched_worker_t *ws[SCHED_MAX_PLACES];
    ws[0] = sched_worker_add_near(s, &ios[0], 1, 1, b1);
    assert_int_equal(sched_place(s, "b1", 2), b1);
    size_t len;
    assert_memory_equal(sched_place_name(s, b1, &len), "b1", 2);
    assert_int_equal(len, 2);
    for (unsigned i = 1; i < SCHED_MAX_PLACES; i++) {
        char name[16];
        int n = snprintf(name, sizeof name, "p%u", i);
        uint16_t id = sched_place(s, name, (size_t)n);
        assert_true(id != 0 && id != b1);
        ws[i] = sched_worker_add_near(s, &ios[i], i + 1, i + 1, id);
    }
    assert_int_equal(sched_place(s, "one-too-many", 12), 0);
    sched_worker_remove(s, ws[0], 0);
    uint16_t again = sched_place(s, "one-too-many", 12);
    assert_int_equal(again, b1);
    assert_memory_equal(sched_place_name(s, again, &len), "one-too-many", 12);
    sched_free(s);
}

/* A worker lending its slot (a call waiting on its sub-calls) gets nothing
 * more; what was sent ahead to it is asked back (SKIP) and, once dropped,
 * goes to the front of the queue, to another worker. When the head task is
 * done, the lending ends with it. */
static void test_lend_takes_back_sent_ahead_and_blocks_worker(void **state)
{
    static char w2_io[4];
    sched_t *s = new_sched(4, 4, 1000000);
    sched_client_t *c = sched_client_add(s, client_io);
    sched_worker_t *w = sched_worker_add(s, worker_io, 1, 100);
    add_func(s, c, 1);
    for (uint64_t i = 1; i <= 3; i++)
        add_call(s, c, 1, i, 0, 0, 10);
    sched_dispatch(s, 10);
    assert_int_equal(count(EV_TASK, worker_io, 0), 3); /* 1 running, 2 and 3 ahead */
    uint64_t head = nth(EV_TASK, worker_io, 0, 0)->id;
    assert_int_equal(sched_lend(s, head + 100), 0); /* not running: nothing */
    assert_int_equal(sched_lend(s, head), 1);
    assert_int_equal(sched_lending(s), 1);
    assert_int_equal(count(EV_SKIP, worker_io, 0), 2);
    uint64_t t2 = nth(EV_TASK, worker_io, 1, 0)->id, t3 = nth(EV_TASK, worker_io, 2, 0)->id;
    assert_int_equal(sched_done(s, w, t3, CALL_CANCELLED, 20, 20, NULL, 0, 20), SCHED_OK);
    assert_int_equal(sched_done(s, w, t2, CALL_CANCELLED, 20, 20, NULL, 0, 20), SCHED_OK);
    assert_int_equal(count(EV_CANCELLED, NULL, 0), 0); /* not cancelled: queued again */
    add_call(s, c, 1, 4, 0, 0, 21);
    size_t mark = nev;
    sched_dispatch(s, 22);
    assert_int_equal(count(EV_TASK, worker_io, mark), 0); /* lending: nothing for it */
    sched_worker_t *w2 = sched_worker_add(s, w2_io, 2, 200);
    sched_dispatch(s, 23);
    assert_int_equal(count(EV_TASK, w2_io, mark), 3);
    /* in their first order: 2, 3, then 4 */
    assert_int_equal(task_call(nth(EV_TASK, w2_io, 0, mark)), 2);
    assert_int_equal(task_call(nth(EV_TASK, w2_io, 1, mark)), 3);
    assert_int_equal(task_call(nth(EV_TASK, w2_io, 2, mark)), 4);
    /* the head is done: the lending ends with it */
    done_ok(s, w, nth(EV_TASK, worker_io, 0, 0), 10, 30);
    assert_int_equal(sched_lending(s), 0);
    sched_unlend(s, head); /* its sub-call client leaving later changes nothing */
    assert_int_equal(sched_lending(s), 0);
    (void)w2;
    sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_order_one_worker),
        cmocka_unit_test(test_funcdef_once_per_worker),
        cmocka_unit_test(test_dispatch_spreads),
        cmocka_unit_test(test_send_ahead_bounds),
        cmocka_unit_test(test_defaults_hold_calls_behind_unknown),
        cmocka_unit_test(test_slow_function_keeps_ahead_min),
        cmocka_unit_test(test_worker_death_requeues_to_front),
        cmocka_unit_test(test_retries),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_cancel_sent_ahead),
        cmocka_unit_test(test_cancel_pending_when_worker_dies),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_timeout_retried),
        cmocka_unit_test(test_forget_drops_function),
        cmocka_unit_test(test_client_gone),
        cmocka_unit_test(test_duplicates_and_bad_done),
        cmocka_unit_test(test_args_released_on_final_run),
        cmocka_unit_test(test_no_workers_no_dispatch),
        cmocka_unit_test(test_near_worker_first),
        cmocka_unit_test(test_busy_near_worker_falls_back),
        cmocka_unit_test(test_unclaimed_before_stolen),
        cmocka_unit_test(test_requeued_calls_keep_their_place),
        cmocka_unit_test(test_retry_keeps_place),
        cmocka_unit_test(test_places_interned_and_bounded),
        cmocka_unit_test(test_near_wait_configurable),
        cmocka_unit_test(test_lend_takes_back_sent_ahead_and_blocks_worker),
        cmocka_unit_test(test_each_worker_figures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
