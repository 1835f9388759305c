/* A memfd made ready ahead of the next large payload (pool/shm.h).
 *
 * Why: a large payload's memfd is new memory each time, and on this kind of
 * VM the kernel's allocation of fresh shared-memory pages is about as costly
 * as the copy into them (100 MB: 45-55 ms written into a new memfd, 20-35 ms
 * into one whose pages were allocated beforehand). So after a sender used a
 * memfd of N bytes, a thread of its own allocates the pages of another one
 * (memfd_create, fallocate) while the call runs, and the next payload of at
 * most N bytes is written into that one. It is still a new memfd, sealed once
 * written, so the receivers' checks and the protocol are unchanged.
 *
 * Bounded: one spare per sender (a client connection, a worker), of at most
 * SHM_SPARE_MAX bytes, closed when it has not been used for SHM_SPARE_IDLE_MS
 * and when the sender closes (shm_spare_close). A process that dies frees it
 * with its descriptors. */
#ifndef BETTONG_SHMSPARE_H
#define BETTONG_SHMSPARE_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

/* The largest spare kept. */
#define SHM_SPARE_MAX ((size_t)512 * 1024 * 1024)
/* A spare not taken within this time is freed (the usual idle_ms). */
#define SHM_SPARE_IDLE_MS 5000

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int fd;         /* the spare (its pages allocated), or -1 */
    size_t size;    /* its size */
    size_t want;    /* the size to make next; 0: nothing asked */
    int started;    /* the thread runs */
    int closing;
    long idle_ms;   /* a spare not taken in this time is freed */
    pthread_t th;
    pid_t pid;      /* the process the thread runs in (a forked child has none) */
} shm_spare_t;

/* idle_ms: SHM_SPARE_IDLE_MS (tests use less). */
void shm_spare_init(shm_spare_t *s, long idle_ms);
/* A memfd of `total` bytes for a payload (not sealed: shm_fill seals it),
 * the spare when it is large enough (else a new one), and ask for the next
 * spare of that size. Returns the descriptor, or -1 with errno. */
int shm_spare_take(shm_spare_t *s, size_t total);
/* Close the spare and make no more (takers get new memfds); the thread
 * ends. Safe while other threads take. */
void shm_spare_stop(shm_spare_t *s);
/* Stop, wait for the thread, free s: when nobody can take any more. */
void shm_spare_close(shm_spare_t *s);
/* Bytes held by the spare now (0 if none): for tests and metrics. */
size_t shm_spare_bytes(shm_spare_t *s);

#endif
