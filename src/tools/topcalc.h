/* The arithmetic of `bettong top`: rates of counters between two scrapes and
 * quantiles estimated from a histogram's cumulative buckets (as Prometheus's
 * histogram_quantile does: linear within the bucket the rank falls in). */
#ifndef BETTONG_TOPCALC_H
#define BETTONG_TOPCALC_H

#include <stddef.h>

typedef struct {
    double le;    /* upper bound (+Inf for the last) */
    double count; /* cumulative: observations <= le */
} topcalc_bucket_t;

/* Per second from `before` to `after` over `seconds`. A counter that went
 * down was reset (its process restarted): its whole value is the increase.
 * NAN when seconds <= 0 or a value is not finite. */
double topcalc_rate(double before, double after, double seconds);

/* Sort buckets by le (ascending). */
void topcalc_sort(topcalc_bucket_t *b, size_t n);

/* after - before, bucket by bucket, into out (matched by le; a bucket missing
 * from before is taken to have held what the nearest lower one of before held,
 * the least a cumulative count can be, or 0; a reset, any bucket going down,
 * gives after as it is).
 * Both sorted. Returns the number written (<= nafter). */
size_t topcalc_delta(const topcalc_bucket_t *before, size_t nbefore,
                     const topcalc_bucket_t *after, size_t nafter, topcalc_bucket_t *out);

/* The q-quantile (0..1) of sorted cumulative buckets: NAN with no
 * observations or no +Inf bucket; the highest finite bound when the rank
 * falls in +Inf; otherwise interpolated linearly between the bucket's lower
 * bound (the previous le, or 0) and its le. */
double topcalc_quantile(const topcalc_bucket_t *b, size_t n, double q);

#endif
