/* The worker template: one `bettong worker --template` process per pool that
 * starts Python once (the interpreter, site, pickle, cloudpickle, traceback,
 * the caller's sys.path) and then forks the pool's local workers ready-made,
 * instead of each worker exec'ing the binary and starting Python on its own.
 * A forked worker still connects and does the handshake like any other (it is
 * the same code from there on); what it skips is exec and Python's start-up.
 *
 * Pool and template talk over a SOCK_SEQPACKET socket pair (the template's
 * end is its fd 3): the pool sends a tmpl_req_t per worker wanted, the
 * template answers a tmpl_reply_t with the new worker's pid.
 *
 * The pool stays the parent of its workers: the template forks twice and the
 * middle process exits at once, so the worker is handed to the pool, which is
 * a child subreaper (PR_SET_CHILD_SUBREAPER). The pool then reaps it, restarts
 * it and kills it exactly as a worker it had started itself; the worker sets
 * PR_SET_PDEATHSIG only once the pool is its parent, so it dies with the pool
 * and not with the middle process. The middle process writes the reply before
 * it exits, so by the time the pool can reap the worker its pid is already in
 * the socket (the pool drains the socket first when it reaps: tmpl_drain).
 *
 * If the template cannot start or dies, the pool goes back to exec'ing
 * workers (spawn.h): slower to start, otherwise the same. */
#ifndef BETTONG_TMPL_H
#define BETTONG_TMPL_H

#include <stdint.h>
#include <sys/types.h>

/* The template's end of the control socket. */
#define TMPL_FD 3
#define TMPL_NAME_MAX 32

typedef struct {
    uint32_t index;             /* the pool's local worker (1-based) */
    char name[TMPL_NAME_MAX];   /* the worker's name, NUL-terminated */
} tmpl_req_t;

typedef struct {
    uint32_t index;
    int32_t pid;                /* the worker's pid, or -errno */
} tmpl_reply_t;

/* ---- the pool's side (one loop thread) */
struct pool;
/* Become a subreaper and start the template process. Returns 0, or -1 (a
 * warning logged; workers are then exec'd). */
int tmpl_start(struct pool *p);
/* The same with a template started already, our child `pid` with its control
 * socket's other end at our `fd` (bettong._wproc.start_pool forks it from a
 * python3 client before it execs us). Returns 0, or -1 (a warning logged, fd
 * closed; workers are then exec'd). */
int tmpl_adopt(struct pool *p, int fd, pid_t pid);
/* Ask for local worker `index` named `name`: its pid comes later through
 * pool_local_forked. Returns 0, or -1 when there is no template (exec it). */
int tmpl_request(struct pool *p, unsigned index, const char *name);
/* Read the replies waiting (pool_local_forked for each). */
void tmpl_drain(struct pool *p);
/* A child was reaped: 1 if it was the template (then every request still
 * unanswered is handed back with pool_local_forked(..., -ECHILD)), else 0. */
int tmpl_reaped(struct pool *p, pid_t pid, int status);
/* Stop: close the control socket (the template exits when it reads EOF) and
 * send it `sig`. */
void tmpl_stop(struct pool *p, int sig);
/* Whether the template process is still to be reaped. */
int tmpl_alive(const struct pool *p);
/* Free what tmpl_start allocated (after the loop ended). */
void tmpl_free(struct pool *p);

/* The template's side is pool/tmplfork.h. */

#endif
