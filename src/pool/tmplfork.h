/* The worker template's side (pool/tmpl.h has the protocol and the pool's
 * side): serve the pool's requests by forking ready workers. Built into both
 * worker hosts (the bettong binary and the python3 extension bettong._wproc),
 * which is why it is apart from the pool's side. */
#ifndef BETTONG_TMPLFORK_H
#define BETTONG_TMPLFORK_H

/* Serve requests on the control socket fd (TMPL_FD in an exec'd template)
 * until the pool closes it (returns 0) or it fails (returns 1; also when this
 * process runs more than one thread: see tmpl_thread_count). Python must be started and its GIL held by this, the only,
 * thread. In each forked worker, after Python's after-fork handling,
 * run(name, arg) runs and its value is the worker's exit status; it must call
 * tmpl_adopted before it runs anything for the pool. */
int tmpl_serve(int fd, int (*run)(const char *name, void *arg), void *arg);
/* The threads of this process (/proc/self/status), or -1. The template forks
 * only while it has one (a lock another thread holds would stay held in a
 * worker). */
int tmpl_thread_count(void);
/* In a forked worker: wait until the middle process is gone and the pool is
 * our parent, then die with it (PR_SET_PDEATHSIG). Returns 0, or -1 if the
 * pool is gone. (Called after the handshake, which it overlaps with.) */
int tmpl_adopted(void);

#endif
