#include "pool/tmplfork.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool/tmpl.h"
#include "pool/wio.h"
#include "py/bridge.h"
#include "util/log.h"

/* In a forked worker: the pool, and the middle process it waits to be gone. */
static pid_t my_pool, my_middle;

int tmpl_adopted(void)
{
    pid_t pool = my_pool, middle = my_middle;
    for (int i = 0; getppid() == middle; i++) {
        if (i == 20000) /* 2 s: the middle process exits right after fork */
            return -1;
        usleep(100);
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != pool)
        return -1;
    return 0;
}

static void reply(int fd, uint32_t index, int32_t pid)
{
    tmpl_reply_t r = {.index = index, .pid = pid};
    if (send(fd, &r, sizeof r, MSG_NOSIGNAL) != (ssize_t)sizeof r)
        _exit(WORKER_EXIT_ERROR); /* the pool is gone */
}

int tmpl_thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

/* Fork the worker asked for (twice: see tmpl.h). */
static void fork_worker(int fd, const tmpl_req_t *req, pid_t pool,
                        int (*run)(const char *, void *), void *arg)
{
    PyOS_BeforeFork();
    pid_t middle = fork();
    if (middle == 0) {
        pid_t me = getpid();
        pid_t worker = fork();
        if (worker == 0) {
            close(fd);
            PyOS_AfterFork_Child();
            my_pool = pool;
            my_middle = me;
            exit(run(req->name, arg));
        }
        /* Before exiting: the pool reads the pid before it can reap the worker. */
        reply(fd, req->index, worker > 0 ? worker : -errno);
        _exit(0);
    }
    int fork_errno = errno;
    PyOS_AfterFork_Parent();
    if (middle < 0) {
        reply(fd, req->index, -fork_errno);
        return;
    }
    while (waitpid(middle, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* gc.freeze(): the template's objects are left out of collections, so a
 * collection in a worker does not write to (and so copy) the pages it shares
 * with the template. */
static void freeze_objects(void)
{
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *r = gc ? PyObject_CallMethod(gc, "freeze", NULL) : NULL;
    if (!r)
        PyErr_Clear(); /* an optimisation only */
    Py_XDECREF(r);
    Py_XDECREF(gc);
}

int tmpl_serve(int fd, int (*run)(const char *name, void *arg), void *arg)
{
    pid_t pool = getppid();
    freeze_objects();
    for (;;) {
        tmpl_req_t req;
        ssize_t n = recv(fd, &req, sizeof req, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return 0; /* the pool closed its end: it is stopping */
        if (n != (ssize_t)sizeof req) {
            log_error("the pool's control socket: %s", n < 0 ? strerror(errno) : "bad request");
            return 1;
        }
        req.name[sizeof req.name - 1] = '\0';
        /* A fork is sound with one thread only: should one have been
         * started here (a library's at-fork hook, say), stop (the pool
         * execs its workers from then on) rather than fork a worker that may
         * find a lock of malloc's held forever. */
        int threads = tmpl_thread_count();
        if (threads != 1) {
            log_error("the worker template runs %d threads: it cannot fork workers safely", threads);
            return 1;
        }
        fork_worker(fd, &req, pool, run, arg);
    }
}
