/* `bettong worker --join HOST:PORT`: a supervisor (no Python, no event loop)
 * that keeps N `bettong worker --connect HOST:PORT` processes running.
 *
 * A child that dies is started again (at once if it had been up a while,
 * otherwise after a back-off from 200 ms doubling to 5 s). A child the pool
 * refuses (other protocol version, a failed proof) stops the supervisor with
 * status 2, and a pool that cannot prove it knows the secret (the secrets
 * differ, or it is not the real pool) with status 3: retrying cannot help. When no child has been able to connect for
 * give_up_s seconds the supervisor stops with status 1. SIGTERM or SIGINT
 * stops the children (SIGTERM, SIGKILL after 2 s) and exits 0. */
#ifndef BETTONG_JOIN_H
#define BETTONG_JOIN_H

#define JOIN_EXIT_REFUSED 2
#define JOIN_EXIT_UNPROVEN 3

typedef struct {
    const char *address;
    unsigned procs;
    const char *secret;    /* NULL: none */
    const char *name;      /* children are NAME-1, NAME-2, ... */
    double give_up_s;
    const char *log_level; /* NULL: default */
    const char *near;      /* --near-store: passed on to the children; NULL: none */
} join_args_t;

int join_run(const join_args_t *a);

#endif
