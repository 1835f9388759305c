#include "pool/tmplfork.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pool/tmpl.h"
#include "pool/wio.h"
#include "py/bridge.h"
#include "util/log.h"

/* In a forked worker: the pool, our parent. */
static pid_t my_pool;

int tmpl_adopted(void)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != my_pool)
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

/* fork(), except that the child is our parent's (the pool's) and not ours:
 * clone(CLONE_PARENT) straight from the system call, which glibc's fork()
 * cannot ask for. The pool can then reap, restart and kill it as a child of
 * its own, with no process in between to fork and to wait for (and no wait
 * in the child for that one to be gone).
 *
 * What glibc's fork() does besides the system call, and why it is not
 * needed here: this process is a Python template with one thread (tmpl.h;
 * start_pool forks it only from a process with one thread, and it starts
 * none), and it clones between two requests, outside any libc call, so no
 * lock of malloc's, stdio's or the loader's is held, and there is no other
 * thread's stack to reclaim. Python's own before/after-fork work is done by
 * the PyOS_*Fork calls around it, as around fork(). pthread_atfork
 * handlers are not run: Python registers none (its hooks are
 * os.register_at_fork's, run by PyOS_*), and OpenSSL 3's do nothing (its
 * random generator reseeds when getpid() changes). What stays stale in the
 * child is the thread id cached in glibc's thread descriptor (fork() has the
 * kernel write the new one there): glibc uses the kernel's own (gettid) to
 * signal the calling thread (raise, abort: glibc 2.34 on), and the cached
 * one only as an owner tag of mutexes, which is consistent within the child.
 * Robust mutexes are not registered again with the kernel (nothing of ours
 * or Python's uses them). Returns the child's pid in the parent, 0 in the
 * child, -1 with errno. */
static pid_t fork_sibling(void)
{
    return (pid_t)syscall(SYS_clone, (unsigned long)(CLONE_PARENT | SIGCHLD), NULL, NULL, NULL,
                          NULL);
}

/* Fork the worker asked for, a child of the pool's (see fork_sibling). The
 * worker sends the pool its own pid before anything else: by the time the
 * pool can reap it, the pid is in the socket (the pool drains it first). */
static void fork_worker(int fd, const tmpl_req_t *req, pid_t pool,
                        int (*run)(const char *, void *), void *arg)
{
    PyOS_BeforeFork();
    pid_t worker = fork_sibling();
    if (worker == 0) {
        reply(fd, req->index, (int32_t)getpid());
        close(fd);
        PyOS_AfterFork_Child();
        my_pool = pool;
        exit(run(req->name, arg));
    }
    int fork_errno = errno;
    PyOS_AfterFork_Parent();
    if (worker < 0)
        reply(fd, req->index, -fork_errno);
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
        /* fork_sibling is sound with one thread only: should one have been
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
