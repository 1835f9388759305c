/* giles' pacing for bettong send --batch-size / --interval / --vary-by: a timer
 * that fires every interval, the first time at once, and sends one batch per
 * firing. As in giles (a Pony Timer in a Timers with the default 20 slop bits):
 * - the interval counts in units of 2^20 ns, rounded down, at least one, so
 *   --interval 5_000_000 fires every 4,194,304 ns;
 * - ticks that pass while a write is blocked (giles: while its connection is
 *   throttled) are not made up: one batch goes at once, then the grid goes on;
 * - --vary-by N: from the 1001st batch on, every 1001 batches, a random 0..N-1
 *   is added to the batch size (giles' "drunk walk");
 * - the end is noticed at the tick after the last batch (nothing left, or
 *   --messages reached), and only then does the connection close. */
#ifndef BETTONG_TOOLS_BATCH_H
#define BETTONG_TOOLS_BATCH_H

#include <stdint.h>

#include "tools/send.h"
#include "tools/sentlog.h"
#include "tools/source.h"

#define BATCH_DEFAULT_SIZE 500
#define BATCH_DEFAULT_INTERVAL 5000000ULL
/* giles' Timers(slop = 20). */
#define BATCH_TIMER_UNIT (1ULL << 20)
#define BATCH_WALK_PERIOD 1000

typedef struct {
    uint64_t batch_size;  /* records per batch */
    uint64_t interval_ns; /* as given; batch_send rounds it as giles' timer does */
    uint64_t vary_by;
} batch_opts_t;

/* The interval giles' timer really keeps for `ns`. */
uint64_t batch_timer_interval(uint64_t ns);
/* Send from src in giles' batches until src ends, `limit` records went, or a
 * stop signal. Counts into s (s->ns: from the first batch to the end of the last
 * write). Returns 0, or -1 with a message in err (connection lost). */
int batch_send(int fd, source_t *src, const batch_opts_t *b, uint64_t limit, sentlog_t *log,
               send_stats_t *s, char *err, size_t errlen);

#endif
