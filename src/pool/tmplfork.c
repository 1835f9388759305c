#include "pool/tmplfork.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pool/tmpl.h"
#include "pool/wio.h"
#include "py/bridge.h"
#include "util/log.h"

/* How long the template waits for the pool to ask for its copies' turns. */
#define AWAIT_TURNS_MS 10000

/* In a forked worker: the pool, our parent. */
static pid_t my_pool;

/* Copies cloned at the template's start (tmpl_preclone), to be local workers
 * 1..n: in the template, its end of each one's turn socket (-1: handed on or
 * never cloned); in copy k, my_index is k and my_turn its end. */
static int turns[TMPL_PRECLONE_MAX + 1];
static unsigned nturns, my_index;
static int my_turn = -1;
/* A request read while awaiting the turns that is not one of them: served first. */
static tmpl_req_t stashed;
static int have_stash;

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

int tmpl_preclone(int fd, unsigned n)
{
    pid_t pool = getppid();
    nturns = n > TMPL_PRECLONE_MAX ? TMPL_PRECLONE_MAX : n;
    for (unsigned k = 1; k <= nturns; k++) {
        int sv[2];
        turns[k] = -1;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
            continue; /* worker k is forked when the pool asks, as later ones are */
        pid_t pid = fork_sibling();
        if (pid == 0) {
            /* The pool learns our pid before we can die (as in fork_worker). */
            reply(fd, k, (int32_t)getpid());
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != pool)
                _exit(WORKER_EXIT_ERROR);
            close(fd);
            close(sv[0]);
            for (unsigned j = 1; j < k; j++) /* so that each sees EOF when the template goes */
                if (turns[j] >= 0)
                    close(turns[j]);
            my_pool = pool;
            my_index = k;
            my_turn = sv[1];
            return (int)k;
        }
        close(sv[1]);
        if (pid > 0)
            turns[k] = sv[0];
        else
            close(sv[0]);
    }
    return 0;
}

int tmpl_precloned_run(int (*run)(const char *name, void *arg), void *arg)
{
    /* Frozen as the template's objects are (see there): while we wait, if
     * the turn is not here yet. */
    struct pollfd pfd = {.fd = my_turn, .events = POLLIN};
    int frozen = poll(&pfd, 1, 0) == 0;
    if (frozen)
        freeze_objects();
    tmpl_req_t req;
    ssize_t n;
    while ((n = recv(my_turn, &req, sizeof req, 0)) < 0 && errno == EINTR)
        ;
    close(my_turn);
    if (!frozen)
        freeze_objects();
    if (n != (ssize_t)sizeof req || req.index != my_index)
        return WORKER_EXIT_ERROR; /* the template is gone: the pool is stopping or gave it up */
    req.name[sizeof req.name - 1] = '\0';
    return run(req.name, arg);
}

/* The pool's request for a worker cloned at the start: handed on to it (it
 * told the pool its pid already). Returns 1 if it was one, else 0 (fork it). */
static int hand_on(const tmpl_req_t *req)
{
    if (req->index < 1 || req->index > nturns || turns[req->index] < 0)
        return 0;
    int turn = turns[req->index];
    turns[req->index] = -1;
    /* If it died meanwhile, the pool saw it die (its pid came first) and asks
     * again: that request is forked. */
    ssize_t n = send(turn, req, sizeof *req, MSG_NOSIGNAL);
    (void)n;
    close(turn);
    return 1;
}

/* A request from the control socket: 1, 0 when the pool closed it, -1 (logged) on error. */
static int read_request(int fd, tmpl_req_t *req)
{
    ssize_t n;
    while ((n = recv(fd, req, sizeof *req, 0)) < 0 && errno == EINTR)
        ;
    if (n == 0)
        return 0;
    if (n != (ssize_t)sizeof *req) {
        log_error("the pool's control socket: %s", n < 0 ? strerror(errno) : "bad request");
        return -1;
    }
    req->name[sizeof req->name - 1] = '\0';
    return 1;
}

int tmpl_await_turns(int fd)
{
    unsigned waiting = 0;
    for (unsigned k = 1; k <= nturns; k++)
        waiting += turns[k] >= 0;
    while (waiting > 0) {
        /* The pool asks for them as soon as it listens; should it not, the
         * template starts anyway and hands them on as it serves. */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int ready = poll(&pfd, 1, AWAIT_TURNS_MS);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return 0;
        int r = read_request(fd, &stashed);
        if (r <= 0)
            return -1;
        if (!hand_on(&stashed)) {
            have_stash = 1; /* a worker to fork: once Python is ready */
            break;
        }
        waiting--;
    }
    return 0;
}

int tmpl_serve(int fd, int (*run)(const char *name, void *arg), void *arg)
{
    pid_t pool = getppid();
    freeze_objects();
    for (;;) {
        tmpl_req_t req;
        if (have_stash) {
            req = stashed;
            have_stash = 0;
        } else {
            int r = read_request(fd, &req);
            if (r <= 0)
                return r == 0 ? 0 : 1; /* 0: the pool closed its end: it is stopping */
        }
        if (!hand_on(&req))
            fork_worker(fd, &req, pool, run, arg);
    }
}
