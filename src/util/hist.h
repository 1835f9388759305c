/* A latency histogram with log-linear buckets (about 1.5% relative precision)
 * from 1 ns to about 1 hour; recording is a few instructions. */
#ifndef BETTONG_HIST_H
#define BETTONG_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 6
#define HIST_BUCKETS (64 * (1 << HIST_SUB_BITS))

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
} hist_t;

void hist_init(hist_t *h);
void hist_record(hist_t *h, uint64_t value);
/* The value at quantile q in [0, 1] (upper bound of its bucket); 0 if empty. */
uint64_t hist_quantile(const hist_t *h, double q);
void hist_merge(hist_t *into, const hist_t *from);

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

#endif
