/* Starting worker processes (pool/wproc.h): the pool's local workers and the
 * join supervisor's children.
 *
 * A worker runs in the python3 executable the build was configured with, through
 * the extension bettong._wproc, so user code runs as fast as in a plain python3
 * process (wproc.h says why the bettong binary's interpreter is slower). It is
 * `bettong worker --connect ADDR` (the embedded interpreter) when the extension
 * is not built, in a sanitizer build (so the sanitizers cover the worker's C
 * code), or when BETTONG_WORKER_HOST=embedded (for comparisons).
 *
 * The child dies with its parent (PR_SET_PDEATHSIG), so no worker outlives a
 * pool killed with SIGKILL. The secret goes through the environment
 * (BETTONG_SECRET), not argv, where `ps` would show it. The child's stdout is
 * its parent's stderr: what user code prints shows up with the log lines and
 * can never fill a pipe nobody reads (a caller may read only the pool's one
 * "listening on" line); stdin is /dev/null. */
#ifndef BETTONG_SPAWN_H
#define BETTONG_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    const char *connect;   /* "unix:PATH" or "host:port" */
    const char *name;      /* the worker's name in logs and its identity */
    const char *near;      /* the store backend it runs next to; NULL: none */
    const char *secret;    /* NULL or "": none */
    const char *log_level; /* NULL: the default */
    int template_fd;       /* > 0: start the worker template (pool/tmpl.h), this fd
                            * being its control socket (fd 0 is always stdin) */
} spawn_args_t;

/* Fork and exec a worker. Returns the pid, or -1 with err set. */
pid_t spawn_worker(const spawn_args_t *a, char *err, size_t errlen);

/* "exited with status N" / "killed by signal N (NAME)" for a wait status. */
void spawn_describe_status(int status, char *out, size_t outlen);

/* The number of CPUs this process may run on (at least 1). */
unsigned spawn_ncpu(void);

#endif
