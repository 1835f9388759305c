#include "pool/shmspare.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "pool/shm.h"

void shm_spare_init(shm_spare_t *s, long idle_ms)
{
    s->idle_ms = idle_ms;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->fd = -1;
    s->size = s->want = 0;
    s->started = s->closing = 0;
}

/* A new memfd (sealable, close-on-exec) of size bytes, its pages allocated
 * when prealloc. -1 with errno on failure. */
static void deadline_in(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* The spare's thread: makes the spare asked for, frees one left unused. */
static void *spare_main(void *arg)
{
    shm_spare_t *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->closing) {
        if (s->want > 0 && s->fd >= 0) {
            /* Asked while one was being made: keep it if it is large enough. */
            if (s->want <= s->size) {
                s->want = 0;
            } else {
                close(s->fd);
                s->fd = -1;
                s->size = 0;
            }
            continue;
        }
        if (s->want > 0) {
            size_t size = s->want;
            s->want = 0;
            pthread_mutex_unlock(&s->mu);
            int fd = shm_new(size, 1); /* (no room: no spare, the sender makes its own) */
            pthread_mutex_lock(&s->mu);
            if (fd >= 0 && (s->closing || s->fd >= 0)) {
                close(fd);
            } else if (fd >= 0) {
                s->fd = fd;
                s->size = size;
            }
            continue;
        }
        if (s->fd >= 0) {
            /* Freed if not taken in time. */
            struct timespec ts;
            deadline_in(&ts, s->idle_ms);
            int fd = s->fd;
            while (!s->closing && s->fd == fd && s->want == 0 &&
                   pthread_cond_timedwait(&s->cv, &s->mu, &ts) != ETIMEDOUT)
                ;
            if (s->fd == fd && s->want == 0 && !s->closing) {
                close(fd);
                s->fd = -1;
                s->size = 0;
            }
            continue;
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int shm_spare_take(shm_spare_t *s, size_t total)
{
    int fd = -1, old = -1;
    pthread_mutex_lock(&s->mu);
    if (s->fd >= 0 && s->size >= total) {
        fd = s->fd;
        s->fd = -1;
    } else if (s->fd >= 0) {
        old = s->fd; /* too small: a larger one is made instead */
        s->fd = -1;
    }
    s->size = 0;
    if (total <= SHM_SPARE_MAX && !s->closing) {
        s->want = total;
        if (s->started && s->pid != getpid())
            s->started = 0; /* forked since: the thread stayed in the parent */
        if (!s->started) {
            /* No thread, no spare: the sender makes its own as before. */
            pthread_attr_t at;
            pthread_attr_init(&at);
            pthread_attr_setstacksize(&at, 64 * 1024);
            s->started = pthread_create(&s->th, &at, spare_main, s) == 0;
            s->pid = getpid();
            pthread_attr_destroy(&at);
        }
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (old >= 0)
        close(old);
    /* The spare may be larger (the previous payload was): only this
     * payload's pages stay. */
    if (fd >= 0 && ftruncate(fd, (off_t)total) < 0) {
        close(fd);
        fd = -1;
    }
    return fd >= 0 ? fd : shm_new(total, 0);
}

void shm_spare_stop(shm_spare_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->closing = 1;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->size = s->want = 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void shm_spare_close(shm_spare_t *s)
{
    shm_spare_stop(s);
    /* (started is only set under mu by takers, none of which runs now) */
    if (s->started && s->pid == getpid())
        pthread_join(s->th, NULL);
    s->started = 0;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

size_t shm_spare_bytes(shm_spare_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->fd >= 0 ? s->size : 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}
