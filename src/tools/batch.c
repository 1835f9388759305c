#include "tools/batch.h"

#include <unistd.h>

#include "util/hist.h"

/* giles' drunk walk: the batch size grows by a random 0..vary_by-1 that is
 * drawn again every BATCH_WALK_PERIOD + 1 batches, the first time at batch
 * BATCH_WALK_PERIOD + 1 (its counter starts at the period and counts down). */
typedef struct {
    uint64_t walks_left;
    uint64_t extra;
    uint64_t rng;
} walk_t;

/* splitmix64: giles uses Pony's MT seeded with the time; any fair generator
 * serves, since the draws cannot be reproduced anyway. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Pony's Random.int(n): floor(real() * n), real() in [0, 1). */
static uint64_t random_below(uint64_t *state, uint64_t n)
{
    double real = (double)(next_random(state) >> 11) * 0x1.0p-53;
    return (uint64_t)(real * (double)n);
}

static uint64_t walk_batch_size(walk_t *w, const batch_opts_t *b)
{
    if (w->walks_left == 0) {
        w->extra = random_below(&w->rng, b->vary_by);
        w->walks_left = BATCH_WALK_PERIOD;
    } else {
        w->walks_left--;
    }
    return b->batch_size + w->extra;
}

uint64_t batch_timer_interval(uint64_t ns)
{
    uint64_t units = ns / BATCH_TIMER_UNIT;
    return (units ? units : 1) * BATCH_TIMER_UNIT;
}

/* The tick after tick k, which fired and finished its write at `now`. A Pony
 * timer that fires late calls its notify once for all the ticks that went by
 * and then keeps to its grid: the latest tick already due goes at once. */
static uint64_t next_tick(uint64_t k, uint64_t start, uint64_t interval, uint64_t now)
{
    uint64_t due = (now - start) / interval;
    return due > k + 1 ? due : k + 1;
}

/* One batch of at most `slots` records, logged with one time as giles does.
 * Returns 1 when something went, 0 when the source is done, -1 on an error. */
static int send_one_batch(int fd, source_t *src, uint64_t slots, sentlog_t *log,
                          send_stats_t *s, char *err, size_t errlen)
{
    uint64_t at = sentlog_now(), sent = 0;
    span_t sp;
    while (sent < slots) {
        size_t n = source_next(src, slots - sent, SEND_CHUNK, &sp);
        if (n == 0)
            break;
        (void)sentlog_span(log, &sp, at); /* a failed log is reported at its close */
        if (send_span(fd, &sp, s, err, errlen) < 0)
            return -1;
        sent += n;
    }
    return sent > 0;
}

int batch_send(int fd, source_t *src, const batch_opts_t *b, uint64_t limit, sentlog_t *log,
               send_stats_t *s, char *err, size_t errlen)
{
    walk_t w = {BATCH_WALK_PERIOD, 0, now_ns() ^ ((uint64_t)getpid() << 32)};
    uint64_t interval = batch_timer_interval(b->interval_ns);
    uint64_t start = now_ns(), k = 0, last_write = start;
    int rc = 0;
    while (!send_stop_requested()) {
        uint64_t due = start + k * interval;
        if (now_ns() < due) {
            send_sleep_until_ns(due); /* a signal cuts it short: check again */
            continue;
        }
        uint64_t slots = walk_batch_size(&w, b);
        if (slots > limit - s->records)
            slots = limit - s->records;
        int sent = slots ? send_one_batch(fd, src, slots, log, s, err, errlen) : 0;
        if (sent <= 0) {
            rc = sent;
            break;
        }
        last_write = now_ns();
        k = next_tick(k, start, interval, last_write);
    }
    s->ns = last_write - start;
    return rc;
}
