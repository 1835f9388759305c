/* The store's Python threads: N threads, each with its own Python thread
 * state, take jobs from one queue in order; each job runs with the GIL held
 * (taken per job, so jobs on different threads interleave wherever Python
 * releases the GIL, and C work outside the GIL runs in parallel). A finished
 * job is handed back to the loop thread (done callback) through a uv_async.
 *
 * The queue is unbounded here: the store bounds what it submits. */
#ifndef BETTONG_PYEXEC_H
#define BETTONG_PYEXEC_H

#include <stddef.h>
#include <uv.h>

typedef struct pyjob pyjob_t;
struct pyjob {
    pyjob_t *next;
    void (*run)(pyjob_t *j);  /* a Python thread, GIL held */
    void (*done)(pyjob_t *j); /* the loop thread, after run */
};

typedef struct pyexec pyexec_t;

/* Start n threads (py_start must have run). NULL with err set on failure. */
pyexec_t *pyexec_start(uv_loop_t *loop, unsigned n, char *err, size_t errlen);
/* Queue a job (loop thread). */
void pyexec_submit(pyexec_t *x, pyjob_t *j);
/* 1 if no job is queued or running (loop thread): no thread of ours holds or
 * waits for the GIL, and none will until the loop submits again. */
int pyexec_idle(pyexec_t *x);
/* After each job, after(ctx) runs on the same thread with the GIL still held
 * (the store trims its cache there). Set before the first submit. */
void pyexec_set_after(pyexec_t *x, void (*after)(void *ctx), void *ctx);
/* Run what is queued, stop the threads, deliver the last done callbacks, close
 * the loop handle (the loop must run once more), then pyexec_free. */
void pyexec_stop(pyexec_t *x);
void pyexec_free(pyexec_t *x);

#endif
