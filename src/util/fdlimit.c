#include "util/fdlimit.h"

#include <stdio.h>
#include <sys/resource.h>

static rlim_t before, after;
static char text[96];

/* Kernels refuse more than nr_open whatever the hard limit says (it can read
 * RLIM_INFINITY): fall back to that. */
static rlim_t nr_open(void)
{
    unsigned long n = 0;
    FILE *f = fopen("/proc/sys/fs/nr_open", "r");
    if (f) {
        if (fscanf(f, "%lu", &n) != 1)
            n = 0;
        fclose(f);
    }
    return n ? (rlim_t)n : 1048576;
}

void fdlimit_raise(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    before = after = rl.rlim_cur;
    if (rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t want = rl.rlim_max;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        rl.rlim_cur = want = nr_open() < rl.rlim_max ? nr_open() : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return;
    }
    after = want;
}

unsigned long fdlimit_current(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    return rl.rlim_cur == RLIM_INFINITY ? 1ul << 20 : (unsigned long)rl.rlim_cur;
}

const char *fdlimit_describe(void)
{
    unsigned long now = fdlimit_current();
    if (after > before)
        snprintf(text, sizeof text, "%lu (raised from %lu)", now, (unsigned long)before);
    else
        snprintf(text, sizeof text, "%lu", now);
    return text;
}
