/* Barrier alignment on one worker, for a checkpoint of a cluster. Checkpoint n
 * involves a set of workers. This one cuts its sources (and then holds them)
 * and sends barrier n on its data link to each other participant, after every
 * message it forwarded before; it may snapshot its state only once it has cut
 * and barrier n has come in from every other participant. An input whose
 * barrier came is held (what follows the barrier belongs after the
 * checkpoint); a barrier may come before this worker hears of checkpoint n.
 * Plain data, no I/O: cluster.c does the holding and the sending. */
#ifndef BETTONG_ALIGN_H
#define BETTONG_ALIGN_H

#include <stdint.h>

#include "cluster/cproto.h"

typedef struct {
    uint64_t n;                        /* the checkpoint being aligned (0: none) */
    int cut;                           /* this worker cut its sources for n */
    uint8_t part[CL_MAX_WORKERS];      /* participants of n (known once cut) */
    uint8_t got[CL_MAX_WORKERS];       /* barrier n came from this worker */
    unsigned self;
} align_t;

void align_init(align_t *a, unsigned self);
/* This worker cuts checkpoint n, with these participants (self among them or
 * not). Returns 0, or -1 when another checkpoint is being aligned. */
int align_cut(align_t *a, uint64_t n, const uint8_t part[CL_MAX_WORKERS]);
/* Barrier n came from worker `from`. Returns 0 (hold that input), or -1 for a
 * barrier that does not belong here (another checkpoint is being aligned, or
 * the same barrier twice). */
int align_barrier(align_t *a, uint64_t n, unsigned from);
/* Whether the snapshot may be taken: cut, and every other participant's
 * barrier came (gone[i] set: worker i is lost and will send none). */
int align_ready(const align_t *a, const uint8_t gone[CL_MAX_WORKERS]);
/* The snapshot was taken: the held inputs run again. */
void align_done(align_t *a);

#endif
