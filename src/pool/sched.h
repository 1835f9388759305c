/* The task pool's scheduler: clients, workers, functions and calls as plain data,
 * with no sockets, no event loop and no Python, so that its rules can be unit
 * tested with a fake clock (tests/c/test_pool_sched.c).
 *
 * Everything it decides to send goes out through the sched_ops_t callbacks,
 * called synchronously; the pool turns them into frames. Clients and workers
 * are opaque `io` pointers to it.
 *
 * The rules:
 * - Calls wait in one FIFO queue. sched_dispatch hands them to workers, each
 *   worker a few tasks ahead, so that a worker finishing one task finds the
 *   next one already in its socket. A worker always gets up to `ahead_min`
 *   tasks (default 1), never more than `ahead_max`, and in between only while
 *   the work already sent to it is estimated under `ahead_target_us`. A task's
 *   estimate is its function's average run time (a function with no finished
 *   run yet counts as the whole budget), and the running task counts as at
 *   least as long as it has been running. So quick calls go out by the dozen,
 *   while slow ones are not hoarded by one worker: they wait in the pool,
 *   where a CANCEL can still drop them and any worker can take them.
 * - A worker runs its tasks in the order sent; the first one not yet DONE is
 *   the one running. It started when it was sent to an idle worker, or when the
 *   previous DONE arrived. Its timeout is measured from then.
 * - A worker gets FUNCDEF before its first task of a function; the scheduler
 *   remembers which worker has which function (by gid).
 * - A worker that goes away (or is killed for a timeout): its running call
 *   fails (CALL_WORKER_DIED / CALL_TIMEOUT) and the tasks sent ahead to it go
 *   back to the front of the queue, in their order, as if never sent.
 * - A call that failed by raising, by timeout or by its worker dying runs
 *   again while attempts <= retries (attempts counts runs). A retried call goes
 *   to the front of the queue.
 * - CANCEL of a queued call drops it at once. A call sent ahead to a worker
 *   may not have started there: the worker is asked (SKIP) and answers with a
 *   DONE saying CALL_CANCELLED if it dropped it; the client's answer waits for
 *   that (or for the call's outcome, if it had started: CANCELLED(id, 0)). The
 *   running call (the first at its worker) cannot be cancelled.
 * - FORGET: once the function's calls are done, it is dropped, and workers
 *   that had it get FUNCDROP.
 * - A client that goes: its queued calls are dropped; running ones finish and
 *   their results are discarded.
 * - Locality. A worker may be near a place (a store backend's name) and a call
 *   may prefer one (sched_place interns the names). A worker with room takes,
 *   in this order: the oldest call preferring its place; the oldest call that
 *   no worker is near (no preference, or no worker near its place). Only when
 *   no worker with room can take such a call do workers with room take the
 *   oldest call of all (its near workers being all without room), once it
 *   has waited near_wait_us since it was submitted (default 20 ms): a call
 *   goes to a near worker when one has room, and otherwise to any worker with
 *   room, so it waits for a busy, slow or absent near worker at most that
 *   long (not at all for an absent one); the wait keeps the calls of a near
 *   worker that is only a few quick calls behind from being taken by workers
 *   that ran dry a moment earlier. "Room" is the
 *   send-ahead rule above, so a near worker running a long call has none. The
 *   preference goes with the call through retries and requeues; a RESULT says
 *   where the worker that ran it is near.
 *
 * Time is microseconds on a clock the caller chooses (the pool: monotonic,
 * anchored at the Unix epoch at start-up); it is what RESULT reports as
 * submitted_us, and started/finished for calls that never reported DONE. */
#ifndef BETTONG_SCHED_H
#define BETTONG_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "pool/blob.h"

typedef struct sched sched_t;
typedef struct sched_client sched_client_t;
typedef struct sched_worker sched_worker_t;

/* Distinct place names in use at once; beyond it a new name gets no place. */
#define SCHED_MAX_PLACES 256

typedef struct {
    uint64_t call_id;
    uint8_t status; /* call_status */
    uint32_t worker_id;
    const char *worker_near; /* the place of the worker that ran it ("": none) */
    size_t worker_near_len;
    uint32_t attempts;
    uint64_t submitted_us, started_us, finished_us;
    const uint8_t *payload;
    size_t payload_len;
} sched_result_t;

typedef struct {
    void (*funcdef)(void *ctx, void *worker_io, uint64_t gid, const span_t *fn);
    void (*funcdrop)(void *ctx, void *worker_io, uint64_t gid);
    void (*task)(void *ctx, void *worker_io, uint64_t task_id, uint64_t gid, const span_t *args);
    void (*result)(void *ctx, void *client_io, const sched_result_t *r);
    /* The answer to a CANCEL (before the CALL_CANCELLED result, if dropped). */
    void (*cancelled)(void *ctx, void *client_io, uint64_t call_id, int dropped);
    /* Ask the worker to drop a task it was sent but may not have started. */
    void (*skip)(void *ctx, void *worker_io, uint64_t task_id);
    /* A call on this worker ran past its timeout: close the connection and kill
     * the process. The scheduler has already let go of the worker: do not call
     * sched_worker_remove for it. */
    void (*kill_worker)(void *ctx, void *worker_io, const char *why);
} sched_ops_t;

typedef struct {
    unsigned ahead_min;       /* tasks per worker, however slow they are (default 1) */
    unsigned ahead_max;       /* tasks per worker, however quick they are */
    uint64_t ahead_target_us; /* work to keep queued at a worker */
    uint64_t near_wait_us;    /* how long a call waits for a worker near it to have
                                 room before others may take it (default 20 ms;
                                 1 for "not at all") */
} sched_config_t;

typedef enum {
    SCHED_OK = 0,
    SCHED_NOMEM = -1,
    SCHED_DUPLICATE = -2, /* FUNC or call id already in use by this client */
    SCHED_PROTOCOL = -3,  /* a worker's DONE does not match what it was sent */
} sched_rc;

/* NULL if memory ran out. cfg values of 0 take the defaults. */
sched_t *sched_new(const sched_config_t *cfg, const sched_ops_t *ops, void *ctx);
/* Frees everything; calls no callbacks. */
void sched_free(sched_t *s);

sched_client_t *sched_client_add(sched_t *s, void *io);
void sched_client_remove(sched_t *s, sched_client_t *c);

/* The id of the place `name` (a store backend's name, at most PROTO_PLACE_MAX
 * bytes) for sched_worker_add_near and sched_call_near: the same id for the
 * same name while a worker or call holds it. 0 (no place) for an empty or too
 * long name, or when SCHED_MAX_PLACES names are held. The id is good until
 * the next sched_place: a name nothing holds may then be replaced. */
uint16_t sched_place(sched_t *s, const char *name, size_t len);
/* The name of a place id ("" for 0). */
const char *sched_place_name(const sched_t *s, uint16_t place, size_t *len);

sched_worker_t *sched_worker_add(sched_t *s, void *io, uint32_t id, uint32_t pid);
/* A worker near `place` (from sched_place; 0: none). */
sched_worker_t *sched_worker_add_near(sched_t *s, void *io, uint32_t id, uint32_t pid,
                                      uint16_t place);
/* The worker is gone (connection closed, process died). */
void sched_worker_remove(sched_t *s, sched_worker_t *w, uint64_t now);

/* FUNC. Takes over the caller's reference to fn->blob, whatever the outcome. */
int sched_func(sched_t *s, sched_client_t *c, uint64_t func_id, const span_t *fn);
/* FORGET. An unknown id is ignored. */
void sched_forget(sched_t *s, sched_client_t *c, uint64_t func_id);
/* One call of a CALLS message, queued at the back. Takes over the caller's
 * reference to args->blob. A call of an unknown function is answered at once
 * with CALL_ERROR. Returns SCHED_OK, SCHED_DUPLICATE or SCHED_NOMEM. */
int sched_call(sched_t *s, sched_client_t *c, uint64_t func_id, uint64_t call_id,
               uint32_t timeout_ms, uint16_t retries, const span_t *args, uint64_t now);
/* The same, for a call that prefers `place` (from sched_place; 0: none). */
int sched_call_near(sched_t *s, sched_client_t *c, uint64_t func_id, uint64_t call_id,
                    uint32_t timeout_ms, uint16_t retries, uint16_t place, const span_t *args,
                    uint64_t now);
/* CANCEL: answers through ops->cancelled, at once or (a call sent ahead) when
 * the worker answers the SKIP. Returns 1 if the call was dropped at once. */
int sched_cancel(sched_t *s, sched_client_t *c, uint64_t call_id, uint64_t now);
/* DONE from a worker. SCHED_PROTOCOL if it names a task other than the one
 * running there, or an impossible status, or says CALL_CANCELLED for a task
 * that was not asked to be skipped (the caller closes that worker). */
int sched_done(sched_t *s, sched_worker_t *w, uint64_t task_id, uint8_t status,
               uint64_t started_us, uint64_t finished_us, const uint8_t *payload,
               size_t payload_len, uint64_t now);

/* Send queued calls to workers with room. Returns when a call waiting for its
 * near workers may go to another worker that has room now (dispatch again
 * then), or UINT64_MAX. */
uint64_t sched_dispatch(sched_t *s, uint64_t now);
/* Kill workers whose running call is past its timeout. Returns the time of the
 * next deadline, or UINT64_MAX if no running call has a timeout. */
uint64_t sched_check_timeouts(sched_t *s, uint64_t now);

typedef struct {
    uint32_t workers;
    uint32_t queued;
    uint32_t running;     /* sent to workers, not yet DONE (includes sent ahead) */
    size_t queued_bytes;  /* argument bytes of queued calls */
} sched_stats_t;
void sched_stats(const sched_t *s, sched_stats_t *out);

/* One connected worker's figures (the pool's per-worker metrics). */
typedef struct {
    uint32_t id, pid;  /* as given to sched_worker_add */
    uint32_t inflight; /* tasks sent to it, not yet DONE: the running one and those
                          sent ahead (sched_worker_inflight) */
    uint64_t runs_ok, runs_raised, runs_error; /* DONEs it reported, by outcome: every
                          run, a retried call's each; not the tasks it skipped */
} sched_worker_stats_t;
/* fn for every connected worker, the longest connected first. */
void sched_each_worker(const sched_t *s,
                       void (*fn)(void *ctx, const sched_worker_stats_t *ws), void *ctx);
/* Lending (the pool's answer to nested executors, see docs/user-guide.md): a
 * sub-call client of running task task_id came (pool/subcall.h), so that call
 * may block waiting for its sub-calls. Its worker gets nothing more while it
 * lends, and the tasks sent ahead to it are taken back (SKIP; back to the
 * front of the queue). The pool makes up for the lent slots with temporary
 * workers (pool/lend.h). Ends with sched_unlend, or when the task finishes.
 * Returns 1, or 0 when the task is not running. */
int sched_lend(sched_t *s, uint64_t task_id);
void sched_unlend(sched_t *s, uint64_t task_id);
/* Workers lending their slot now. */
uint32_t sched_lending(const sched_t *s);
/* Whether a worker has no task at all (nothing running, nothing sent ahead). */
int sched_worker_idle(const sched_worker_t *w);
/* Whether task_id is running now (the head of its worker's tasks): a sub-call
 * token (pool/subcall.h) holds only then. */
int sched_task_running(const sched_t *s, uint64_t task_id);
/* Whether the send-ahead rule lets one more task go to the worker now. */
int sched_worker_has_room(const sched_t *s, const sched_worker_t *w, uint64_t now);
/* Tasks sent to the worker and not yet DONE. */
unsigned sched_worker_inflight(const sched_worker_t *w);

#endif
