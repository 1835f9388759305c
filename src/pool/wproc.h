/* One worker process of a pool (`bettong worker --connect`): connect, the
 * handshake, then run tasks with Python until the connection closes (wio.h:
 * the I/O threads; wrun.h: the Python side). The main thread holds the GIL
 * while it runs tasks and releases it only while it waits for the next message.
 *
 * It runs in one of two hosts, the same code in both:
 * - the python3 executable the build was configured with, through the
 *   extension module bettong._wproc (what the pool starts, spawn.h): user code
 *   then runs on exactly the interpreter build of a plain `python3` process.
 *   Debian's /usr/bin/python3 is PGO + LTO built, while its libpython3.X.a
 *   holds the same code compiled without LTO (no cross-file inlining; the LTO
 *   sections are stripped, so linking with -flto cannot bring it back):
 *   pure-Python code runs about 7 % more instructions, 1.05-1.10x the time, in
 *   the embedded interpreter (docs/architecture.md, "CPU-bound speed");
 * - the bettong binary's embedded interpreter (`bettong worker --connect` by
 *   hand, sanitizer builds, or when the extension is not there). */
#ifndef BETTONG_WPROC_H
#define BETTONG_WPROC_H

typedef struct {
    const char *connect; /* unix:PATH or HOST:PORT */
    const char *name;    /* NULL: HOST-PID */
    const char *near;    /* --near-store: a store backend's name, or NULL */
} wproc_args_t;

/* Run the worker until the connection closes (the I/O thread then exits the
 * process) or it fails: returns a WORKER_EXIT_* status (wio.h).
 *
 * embedded: start the bettong binary's interpreter here (no Python running
 * yet). Otherwise Python runs already in this, the calling, thread and holds
 * the GIL (the python3 host): the environment it read at start-up is brought in
 * line with what the embedded host would have (BETTONG_SECRET gone,
 * BETTONG_NEAR_STORE, PYTHONUNBUFFERED). */
int wproc_run(const wproc_args_t *a, int embedded);

/* The pool's worker template (pool/tmpl.h), in either host: Python made
 * ready for tasks once (the same as wproc_run's, cloudpickle imported), then
 * a worker forked per request of the pool on TMPL_FD; each runs as wproc_run
 * from the handshake on. Returns when the pool closes the socket (0) or it
 * fails (a WORKER_EXIT_* status). */
int wproc_template(const wproc_args_t *a, int embedded);

/* The same template, forked from a python3 client that starts its own local
 * pool (bettong._wproc.start_pool): Python runs (GIL held), fd is the control
 * socket (a number the client had not open: no object of its names it), the
 * pool is our parent, the pool has no secret (a pool with
 * one execs its template: no copy of a secret may be in a worker's memory
 * user code reads). log_level: what the pool was given, or NULL. Returns as
 * wproc_template. */
int wproc_template_forked(int fd, const char *connect, const char *log_level);

#endif
