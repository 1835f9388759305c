#include "tools/topcalc.h"

#include <math.h>
#include <stdlib.h>

double topcalc_rate(double before, double after, double seconds)
{
    if (!(seconds > 0) || !isfinite(before) || !isfinite(after))
        return NAN;
    double inc = after >= before ? after - before : after;
    return inc / seconds;
}

static int by_le(const void *a, const void *b)
{
    double x = ((const topcalc_bucket_t *)a)->le, y = ((const topcalc_bucket_t *)b)->le;
    return x < y ? -1 : x > y;
}

void topcalc_sort(topcalc_bucket_t *b, size_t n)
{
    if (n > 1)
        qsort(b, n, sizeof *b, by_le);
}

size_t topcalc_delta(const topcalc_bucket_t *before, size_t nbefore,
                     const topcalc_bucket_t *after, size_t nafter, topcalc_bucket_t *out)
{
    size_t j = 0;
    int reset = 0;
    for (size_t i = 0; i < nafter; i++) {
        while (j < nbefore && before[j].le < after[i].le)
            j++;
        double was = j < nbefore && before[j].le == after[i].le ? before[j].count
                     : j > 0 ? before[j - 1].count : 0;
        if (after[i].count < was)
            reset = 1;
        out[i] = (topcalc_bucket_t){after[i].le, after[i].count - was};
    }
    if (reset)
        for (size_t i = 0; i < nafter; i++)
            out[i] = after[i];
    return nafter;
}

double topcalc_quantile(const topcalc_bucket_t *b, size_t n, double q)
{
    if (n == 0 || !isinf(b[n - 1].le) || !(b[n - 1].count > 0) || !(q >= 0 && q <= 1))
        return NAN;
    double rank = q * b[n - 1].count;
    size_t i = 0;
    while (i < n - 1 && b[i].count < rank)
        i++;
    if (isinf(b[i].le))
        return i > 0 ? b[i - 1].le : NAN;
    double lower = i > 0 ? b[i - 1].le : 0, below = i > 0 ? b[i - 1].count : 0;
    if (i == 0 && b[0].le <= 0)
        return b[0].le;
    double in = b[i].count - below;
    if (!(in > 0))
        return b[i].le;
    double r = lower + (b[i].le - lower) * ((rank - below) / in);
    return r < b[i].le ? r : b[i].le; /* rounding must not leave the bucket */
}
