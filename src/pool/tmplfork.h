/* The worker template's side (pool/tmpl.h has the protocol and the pool's
 * side): serve the pool's requests by forking ready workers. Built into both
 * worker hosts (the bettong binary and the python3 extension bettong._wproc),
 * which is why it is apart from the pool's side. */
#ifndef BETTONG_TMPLFORK_H
#define BETTONG_TMPLFORK_H

/* Serve requests on the control socket fd (TMPL_FD in an exec'd template)
 * until the pool closes it (returns 0) or it fails (returns 1). Python must be started and its GIL held by this, the only,
 * thread. In each forked worker, after Python's after-fork handling,
 * run(name, arg) runs and its value is the worker's exit status; it must call
 * tmpl_adopted before it runs anything for the pool. */
int tmpl_serve(int fd, int (*run)(const char *name, void *arg), void *arg);
/* Most local workers cloned at the template's start (tmpl_preclone). */
#define TMPL_PRECLONE_MAX 64

/* For a template forked from a python3 client (bettong._wproc.start_pool), at
 * its very start, before Python's after-fork work: clone n copies of it (at
 * most TMPL_PRECLONE_MAX), which are to be local workers 1..n, each the
 * pool's child (as fork_worker's: pool/tmplfork.c), sends the pool its pid at
 * once and dies with the pool. Each copy then does what the template does
 * (Python's after-fork work, the caller's in_template, prepare_python) side
 * by side with it instead of after it, and then tmpl_precloned_run instead of
 * tmpl_serve. Only async-signal-safe calls: Python is not restored yet.
 * Returns 0 in the template, k (1..n) in copy k. fd: the control socket. */
int tmpl_preclone(int fd, unsigned n);
/* In the template, right after tmpl_preclone (Python not restored yet):
 * wait for the pool's requests for the copies and hand each on, before the
 * template's own start-up, so that no copy waits for it (the copies and the
 * pool have the CPUs meanwhile). A request for another worker stops the wait
 * (tmpl_serve forks it first). Returns 0, or -1 when the pool closed the
 * socket (it stops, or did not take the template) or it failed. */
int tmpl_await_turns(int fd);
/* In copy k: wait until the pool asks for worker k (the template hands the
 * request on: tmpl_await_turns; the pool listens by then), then return
 * run(name, arg) as tmpl_serve's forked workers do. Returns
 * WORKER_EXIT_ERROR if the template goes first (the pool is stopping, or
 * did not take the template). */
int tmpl_precloned_run(int (*run)(const char *name, void *arg), void *arg);

/* In a forked worker: die with the pool, our parent (PR_SET_PDEATHSIG).
 * Returns 0, or -1 if the pool is gone already. */
int tmpl_adopted(void);

#endif
