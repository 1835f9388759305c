/* Lent slots: temporary workers for calls that wait on their own sub-calls.
 *
 * A call running on the pool that makes a nested executor (pool/subcall.h)
 * may block until its sub-calls are done. Its worker lends its slot
 * (sched_lend: it gets nothing more, and what was sent ahead to it goes back
 * to the queue), and the pool starts one temporary local worker process per
 * lending worker, at most `max` of them (bettong pool --max-lent N), so the
 * sub-calls always find a worker: with L calls lending and L <= max, the pool
 * has as many workers free of them as it had before. Once fewer workers lend,
 * temporary workers that have nothing to do are let go (their connection is
 * closed; they exit). Past the bound nothing more is started, and a warning
 * says so: calls that block then can wait on each other for ever.
 *
 * Temporary workers run on the pool's machine (they connect as the local
 * workers do), whatever machines the pool's other workers are on. */
#ifndef BETTONG_LEND_H
#define BETTONG_LEND_H

#include <stdint.h>
#include <sys/types.h>

typedef struct pool pool_t;

#define LEND_MAX_DEFAULT 16

/* Set the bound (before the first lend_adjust). Returns 0, or -1 out of memory. */
int lend_init(pool_t *p, unsigned max);
void lend_free(pool_t *p);
/* Start or let go of temporary workers to match the workers lending now. */
void lend_adjust(pool_t *p);
/* SIGCHLD: whether pid was a temporary worker (it is forgotten). */
int lend_reaped(pool_t *p, pid_t pid);
/* Temporary workers started and not yet let go or dead. */
unsigned lend_count(const pool_t *p);

#endif
