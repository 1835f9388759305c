#include "pool/tmpl.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool/pool.h"
#include "pool/spawn.h"
#include "pool/wio.h"
#include "util/log.h"

/* ------------------------------------------------------------ the pool's side */

struct tmpl {
    pid_t pid;        /* 0: reaped, or never started */
    int fd;           /* our end of the control socket; -1: closed */
    uv_poll_t poll;
    unsigned waiting; /* requests without a reply */
};

static void close_noop(uv_handle_t *h) { (void)h; }

static void close_socket(struct tmpl *t)
{
    if (t->fd < 0)
        return;
    uv_close((uv_handle_t *)&t->poll, close_noop);
    close(t->fd);
    t->fd = -1;
}

/* The template is gone (or its socket is): requests not answered go back to
 * the pool, which execs those workers. */
static void give_back(pool_t *p)
{
    struct tmpl *t = p->tmpl;
    close_socket(t);
    t->waiting = 0;
    for (unsigned i = 0; i < p->nlocals; i++)
        if (p->locals[i].forking)
            pool_local_forked(p, p->locals[i].index, -ECHILD);
}

void tmpl_drain(pool_t *p)
{
    struct tmpl *t = p->tmpl;
    while (t && t->fd >= 0) {
        tmpl_reply_t r;
        ssize_t n = recv(t->fd, &r, sizeof r, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n != (ssize_t)sizeof r) {
            if (n != 0 || !p->stopping)
                log_warn("the worker template's socket closed: starting workers by exec");
            give_back(p);
            return;
        }
        if (t->waiting)
            t->waiting--;
        pool_local_forked(p, r.index, r.pid);
    }
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    tmpl_drain(h->data);
}

/* Poll our end of the control socket of a template that runs. Returns 0, or
 * -1 (t freed, fd closed; the caller says why). */
static int attach(pool_t *p, struct tmpl *t, int fd, pid_t pid)
{
    if (uv_poll_init(&p->loop, &t->poll, fd) < 0) {
        close(fd);
        free(t);
        return -1;
    }
    t->fd = fd;
    t->pid = pid;
    t->poll.data = p;
    uv_poll_start(&t->poll, UV_READABLE, on_readable);
    p->tmpl = t;
    log_debug("worker template started (pid %d)", (int)pid);
    return 0;
}

static int become_subreaper(void)
{
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) == 0)
        return 0;
    log_warn("cannot become a child subreaper (%s): workers are started by exec",
             strerror(errno));
    return -1;
}

int tmpl_start(pool_t *p)
{
    if (become_subreaper() < 0)
        return -1;
    struct tmpl *t = calloc(1, sizeof *t);
    int sv[2];
    if (!t || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        log_warn("cannot start the worker template (%s): workers are started by exec",
                 t ? strerror(errno) : "out of memory");
        free(t);
        return -1;
    }
    char err[256];
    spawn_args_t a = {.connect = p->worker_connect,
                      .name = "template",
                      .secret = p->secret_len ? p->secret : NULL,
                      .log_level = p->log_level,
                      .template_fd = sv[1]};
    pid_t pid = spawn_worker(&a, err, sizeof err);
    close(sv[1]);
    if (pid < 0) {
        log_warn("cannot start the worker template (%s): workers are started by exec", err);
        close(sv[0]);
        free(t);
        return -1;
    }
    if (attach(p, t, sv[0], pid) < 0) {
        log_warn("cannot start the worker template (poll): workers are started by exec");
        kill(pid, SIGKILL); /* reaped as an unknown child */
        return -1;
    }
    return 0;
}

int tmpl_adopt(pool_t *p, int fd, pid_t pid)
{
    struct stat st;
    int sock_type = 0;
    socklen_t len = sizeof sock_type;
    /* Ours: a SEQPACKET socket, and a child of ours still running. */
    int ok = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
             getsockopt(fd, SOL_SOCKET, SO_TYPE, &sock_type, &len) == 0 &&
             sock_type == SOCK_SEQPACKET && waitpid(pid, NULL, WNOHANG) == 0;
    struct tmpl *t = ok ? calloc(1, sizeof *t) : NULL;
    if (!t || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || become_subreaper() < 0) {
        log_warn("the worker template given (pid %ld, fd %d) is not one: workers are started "
                 "by exec", (long)pid, fd);
        free(t);
        close(fd); /* a template reads EOF and exits */
        return -1;
    }
    if (attach(p, t, fd, pid) < 0) {
        log_warn("cannot use the worker template (poll): workers are started by exec");
        kill(pid, SIGKILL);
        return -1;
    }
    return 0;
}

int tmpl_request(pool_t *p, unsigned index, const char *name)
{
    struct tmpl *t = p->tmpl;
    if (!t || t->fd < 0 || t->pid <= 0)
        return -1;
    tmpl_req_t r;
    memset(&r, 0, sizeof r);
    r.index = index;
    snprintf(r.name, sizeof r.name, "%s", name);
    /* A few bytes into a socket the template drains: it never fills in
     * practice; if it ever does, this worker is exec'd instead. */
    if (send(t->fd, &r, sizeof r, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof r)
        return -1;
    t->waiting++;
    return 0;
}

int tmpl_reaped(pool_t *p, pid_t pid, int status)
{
    struct tmpl *t = p->tmpl;
    if (!t || pid != t->pid || pid <= 0)
        return 0;
    t->pid = 0;
    if (!p->stopping) {
        char how[96];
        spawn_describe_status(status, how, sizeof how);
        log_warn("the worker template (pid %d) %s: workers are started by exec from now on",
                 (int)pid, how);
    }
    tmpl_drain(p); /* the replies it sent before it went */
    give_back(p);
    return 1;
}

void tmpl_stop(pool_t *p, int sig)
{
    struct tmpl *t = p->tmpl;
    if (!t)
        return;
    tmpl_drain(p); /* workers already forked are killed with the others */
    close_socket(t);
    if (t->pid > 0)
        kill(t->pid, sig);
}

int tmpl_alive(const pool_t *p) { return p->tmpl && p->tmpl->pid > 0; }

void tmpl_free(pool_t *p)
{
    free(p->tmpl);
    p->tmpl = NULL;
}
