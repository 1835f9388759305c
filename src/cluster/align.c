#include "cluster/align.h"

#include <string.h>

void align_init(align_t *a, unsigned self)
{
    memset(a, 0, sizeof *a);
    a->self = self;
}

int align_cut(align_t *a, uint64_t n, const uint8_t part[CL_MAX_WORKERS])
{
    if (a->cut || (a->n && a->n != n))
        return -1;
    a->n = n;
    a->cut = 1;
    memcpy(a->part, part, sizeof a->part);
    return 0;
}

int align_barrier(align_t *a, uint64_t n, unsigned from)
{
    if (from >= CL_MAX_WORKERS || n == 0 || (a->n && a->n != n) || a->got[from])
        return -1;
    a->n = n;
    a->got[from] = 1;
    return 0;
}

int align_ready(const align_t *a, const uint8_t gone[CL_MAX_WORKERS])
{
    if (!a->cut)
        return 0;
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++)
        if (a->part[i] && i != a->self && !a->got[i] && !(gone && gone[i]))
            return 0;
    return 1;
}

void align_done(align_t *a) { align_init(a, a->self); }
