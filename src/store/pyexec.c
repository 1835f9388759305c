#include "store/pyexec.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "py/bridge.h"

struct pyexec {
    pthread_t *threads;
    unsigned nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pyjob_t *todo, *todo_tail;
    pyjob_t *done, *done_tail;
    unsigned running; /* jobs taken by a thread and not finished */
    int stopping;
    uv_async_t async;
    void (*after)(void *ctx);
    void *after_ctx;
};

static pyjob_t *take_job(pyexec_t *x)
{
    pthread_mutex_lock(&x->mu);
    while (!x->todo && !x->stopping)
        pthread_cond_wait(&x->cond, &x->mu);
    pyjob_t *j = x->todo;
    if (j) {
        x->todo = j->next;
        if (!x->todo)
            x->todo_tail = NULL;
        j->next = NULL;
        x->running++;
    }
    pthread_mutex_unlock(&x->mu);
    return j;
}

static void finish_job(pyexec_t *x, pyjob_t *j)
{
    pthread_mutex_lock(&x->mu);
    if (x->done_tail)
        x->done_tail->next = j;
    else
        x->done = j;
    x->done_tail = j;
    x->running--;
    pthread_mutex_unlock(&x->mu);
    uv_async_send(&x->async);
}

static void join_all(pyexec_t *x);

static void *thread_main(void *arg)
{
    pyexec_t *x = arg;
    py_thread_t pt;
    py_thread_init(&pt);
    pyjob_t *j;
    while ((j = take_job(x))) {
        py_thread_enter(&pt);
        j->run(j);
        if (x->after)
            x->after(x->after_ctx);
        py_thread_leave(&pt);
        finish_job(x, j);
    }
    py_thread_done(&pt);
    return NULL;
}

static void deliver(pyexec_t *x)
{
    pthread_mutex_lock(&x->mu);
    pyjob_t *j = x->done;
    x->done = x->done_tail = NULL;
    pthread_mutex_unlock(&x->mu);
    while (j) {
        pyjob_t *next = j->next;
        j->next = NULL;
        j->done(j);
        j = next;
    }
}

static void on_async(uv_async_t *h) { deliver(h->data); }

static void free_on_close(uv_handle_t *h) { pyexec_free(h->data); }

pyexec_t *pyexec_start(uv_loop_t *loop, unsigned n, char *err, size_t errlen)
{
    pyexec_t *x = calloc(1, sizeof *x);
    pthread_t *threads = calloc(n ? n : 1, sizeof *threads);
    if (!x || !threads || uv_async_init(loop, &x->async, on_async) < 0) {
        snprintf(err, errlen, "out of memory starting the Python threads");
        free(x);
        free(threads);
        return NULL;
    }
    x->async.data = x;
    x->threads = threads;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cond, NULL);
    for (unsigned i = 0; i < n; i++) {
        int rc = pthread_create(&x->threads[i], NULL, thread_main, x);
        if (rc) {
            snprintf(err, errlen, "cannot start a Python thread: %s", strerror(rc));
            join_all(x); /* the ones started so far */
            uv_close((uv_handle_t *)&x->async, free_on_close);
            return NULL;
        }
        x->nthreads++;
    }
    return x;
}

void pyexec_set_after(pyexec_t *x, void (*after)(void *ctx), void *ctx)
{
    x->after = after;
    x->after_ctx = ctx;
}

void pyexec_submit(pyexec_t *x, pyjob_t *j)
{
    j->next = NULL;
    pthread_mutex_lock(&x->mu);
    if (x->todo_tail)
        x->todo_tail->next = j;
    else
        x->todo = j;
    x->todo_tail = j;
    pthread_cond_signal(&x->cond);
    pthread_mutex_unlock(&x->mu);
}

int pyexec_idle(pyexec_t *x)
{
    pthread_mutex_lock(&x->mu);
    int idle = !x->todo && x->running == 0;
    pthread_mutex_unlock(&x->mu);
    return idle;
}

static void join_all(pyexec_t *x)
{
    pthread_mutex_lock(&x->mu);
    x->stopping = 1;
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->mu);
    for (unsigned i = 0; i < x->nthreads; i++)
        pthread_join(x->threads[i], NULL);
    x->nthreads = 0;
}

void pyexec_stop(pyexec_t *x)
{
    if (!x)
        return;
    int had_threads = x->nthreads > 0;
    join_all(x);
    deliver(x);
    if (had_threads)
        uv_close((uv_handle_t *)&x->async, NULL);
}

void pyexec_free(pyexec_t *x)
{
    if (!x)
        return;
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cond);
    free(x->threads);
    free(x);
}
