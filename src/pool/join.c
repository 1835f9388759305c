#include "pool/join.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "pool/spawn.h"
#include "pool/wio.h"
#include "util/log.h"

#define TICK_MS 100
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 5000
/* A child up this long is taken to have connected. */
#define UP_MS 2000
#define STOP_GRACE_MS 2000

typedef struct {
    pid_t pid;           /* 0: not running */
    uint64_t started_ms;
    uint64_t restart_at_ms;
    unsigned backoff_ms;
} child_t;

typedef struct {
    const join_args_t *a;
    child_t *kids;
    uint64_t failing_since_ms; /* 0: the last word was a connected child */
    int stop_code;             /* -1: running */
} join_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void start_child(join_t *j, unsigned i)
{
    char name[300], err[256];
    snprintf(name, sizeof name, "%s-%u", j->a->name, i + 1);
    spawn_args_t sa = {.connect = j->a->address,
                       .name = name,
                       .secret = j->a->secret,
                       .log_level = j->a->log_level,
                       .near = j->a->near};
    child_t *k = &j->kids[i];
    k->started_ms = now_ms();
    k->restart_at_ms = 0;
    k->pid = spawn_worker(&sa, err, sizeof err);
    if (k->pid < 0) {
        k->pid = 0;
        k->restart_at_ms = k->started_ms + BACKOFF_MAX_MS;
        log_error("cannot start worker %s: %s", name, err);
    }
}

static child_t *find_child(join_t *j, pid_t pid)
{
    for (unsigned i = 0; i < j->a->procs; i++)
        if (j->kids[i].pid == pid)
            return &j->kids[i];
    return NULL;
}

/* A child ended: decide when to start it again, or to stop everything. */
static void child_ended(join_t *j, child_t *k, int status)
{
    uint64_t now = now_ms();
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    pid_t pid = k->pid;
    k->pid = 0;
    if (code == WORKER_EXIT_UNPROVEN) {
        log_error("the pool at %s could not prove it knows the secret (BETTONG_SECRET or "
                  "--secret): refusing it, stopping (see the message above)", j->a->address);
        j->stop_code = JOIN_EXIT_UNPROVEN;
        return;
    }
    if (code == WORKER_EXIT_REFUSED) {
        log_error("the pool at %s refused the worker (see its message above): stopping",
                  j->a->address);
        j->stop_code = JOIN_EXIT_REFUSED;
        return;
    }
    if (code == WORKER_EXIT_NO_CONNECT) {
        if (!j->failing_since_ms)
            j->failing_since_ms = now;
    } else {
        char how[96];
        spawn_describe_status(status, how, sizeof how);
        log_info("worker pid %d %s; starting another", (int)pid, how);
    }
    int long_lived = now - k->started_ms >= UP_MS && code != WORKER_EXIT_NO_CONNECT;
    if (long_lived) {
        k->backoff_ms = 0;
    } else {
        k->backoff_ms = k->backoff_ms ? k->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (k->backoff_ms > BACKOFF_MAX_MS)
            k->backoff_ms = BACKOFF_MAX_MS;
    }
    k->restart_at_ms = now + k->backoff_ms;
}

static void reap(join_t *j)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        child_t *k = find_child(j, pid);
        if (k)
            child_ended(j, k, status);
    }
}

/* Restarts that are due, and the give-up clock. */
static void tick(join_t *j)
{
    uint64_t now = now_ms();
    for (unsigned i = 0; i < j->a->procs && j->stop_code < 0; i++) {
        child_t *k = &j->kids[i];
        if (k->pid > 0 && now - k->started_ms >= UP_MS)
            j->failing_since_ms = 0;
        if (k->pid == 0 && now >= k->restart_at_ms)
            start_child(j, i);
    }
    if (j->failing_since_ms && now - j->failing_since_ms >= (uint64_t)(j->a->give_up_s * 1000)) {
        log_error("no worker could connect to the pool at %s for %.0f s: giving up",
                  j->a->address, j->a->give_up_s);
        j->stop_code = 1;
    }
}

static unsigned live(const join_t *j)
{
    unsigned n = 0;
    for (unsigned i = 0; i < j->a->procs; i++)
        n += j->kids[i].pid > 0;
    return n;
}

static void signal_all(join_t *j, int sig)
{
    for (unsigned i = 0; i < j->a->procs; i++)
        if (j->kids[i].pid > 0)
            kill(j->kids[i].pid, sig);
}

static void stop_children(join_t *j, const sigset_t *set)
{
    signal_all(j, SIGTERM);
    uint64_t deadline = now_ms() + STOP_GRACE_MS;
    while (live(j) > 0 && now_ms() < deadline) {
        struct timespec ts = {.tv_nsec = TICK_MS * 1000000L};
        sigtimedwait(set, NULL, &ts);
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            child_t *k = find_child(j, pid);
            if (k)
                k->pid = 0;
        }
    }
    if (live(j) > 0) {
        signal_all(j, SIGKILL);
        while (waitpid(-1, NULL, 0) > 0)
            ;
    }
}

int join_run(const join_args_t *a)
{
    join_t j = {.a = a, .stop_code = -1};
    j.kids = calloc(a->procs, sizeof *j.kids);
    if (!j.kids) {
        log_error("out of memory");
        return 1;
    }
    /* Signals are taken synchronously with sigtimedwait: no handlers. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    log_info("starting %u worker(s) for the pool at %s%s%s%s", a->procs, a->address,
             a->near ? " near store '" : "", a->near ? a->near : "", a->near ? "'" : "");
    for (unsigned i = 0; i < a->procs; i++)
        start_child(&j, i);
    while (j.stop_code < 0) {
        struct timespec ts = {.tv_nsec = TICK_MS * 1000000L};
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            log_info("stopping (%s)", strsignal(sig));
            j.stop_code = 0;
            break;
        }
        reap(&j);
        if (j.stop_code < 0)
            tick(&j);
    }
    stop_children(&j, &set);
    free(j.kids);
    return j.stop_code;
}
