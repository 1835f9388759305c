#include "cluster/plan.h"

#include <string.h>

static void count_slots(const routing_table_t *t, const unsigned *owners, size_t n,
                        unsigned *counts)
{
    for (size_t i = 0; i < n; i++)
        counts[i] = routing_count(t, owners[i]);
}

size_t plan_grow(const routing_table_t *t, const unsigned *owners, size_t nowners,
                 unsigned newcomer, plan_move_t *moves)
{
    if (nowners == 0)
        return 0;
    unsigned counts[nowners];
    count_slots(t, owners, nowners, counts);
    unsigned share = ROUTING_SLOTS / (unsigned)(nowners + 1);
    /* Take from the top of each giver's range, so the slots a giver keeps stay
     * where they were and repeated grows do not fragment one range. */
    int cursor[nowners];
    for (size_t i = 0; i < nowners; i++)
        cursor[i] = ROUTING_SLOTS - 1;
    size_t n = 0;
    for (unsigned k = 0; k < share; k++) {
        size_t g = 0;
        for (size_t i = 1; i < nowners; i++)
            if (counts[i] > counts[g])
                g = i;
        while (cursor[g] >= 0 && t->owner[cursor[g]] != owners[g])
            cursor[g]--;
        if (cursor[g] < 0)
            break;
        moves[n++] = (plan_move_t){(uint16_t)cursor[g], (uint16_t)owners[g], (uint16_t)newcomer};
        cursor[g]--;
        counts[g]--;
    }
    return n;
}

size_t plan_shrink(const routing_table_t *t, const unsigned *owners, size_t nowners,
                   unsigned leaver, plan_move_t *moves)
{
    if (nowners == 0)
        return 0;
    unsigned counts[nowners];
    count_slots(t, owners, nowners, counts);
    size_t n = 0;
    for (unsigned s = 0; s < ROUTING_SLOTS; s++) {
        if (t->owner[s] != leaver)
            continue;
        size_t r = 0;
        for (size_t i = 1; i < nowners; i++)
            if (counts[i] < counts[r])
                r = i;
        moves[n++] = (plan_move_t){(uint16_t)s, (uint16_t)leaver, (uint16_t)owners[r]};
        counts[r]++;
    }
    return n;
}

size_t plan_balance(const routing_table_t *t, const unsigned *owners, size_t nowners,
                    const uint64_t *load, double min_gain, plan_move_t *moves)
{
    if (nowners < 2)
        return 0;
    uint64_t per[nowners];
    int of[ROUTING_SLOTS]; /* index into owners of each slot's owner, -1: none */
    memset(per, 0, sizeof per);
    for (unsigned s = 0; s < ROUTING_SLOTS; s++) {
        of[s] = -1;
        for (size_t i = 0; i < nowners; i++)
            if (t->owner[s] == owners[i]) {
                of[s] = (int)i;
                per[i] += load[s];
            }
    }
    uint64_t start_max = 0;
    for (size_t i = 0; i < nowners; i++)
        start_max = per[i] > start_max ? per[i] : start_max;
    size_t n = 0;
    for (;;) {
        size_t hi = 0, lo = 0;
        for (size_t i = 1; i < nowners; i++) {
            if (per[i] > per[hi])
                hi = i;
            if (per[i] < per[lo])
                lo = i;
        }
        /* The busiest worker's largest slot that still fits in half the gap:
         * moving it lowers the maximum without making lo the new maximum. */
        uint64_t gap = per[hi] - per[lo];
        int best = -1;
        for (unsigned s = 0; s < ROUTING_SLOTS; s++)
            if (of[s] == (int)hi && load[s] > 0 && load[s] < gap &&
                (best < 0 || load[s] > load[best]) && per[lo] + load[s] < per[hi])
                best = (int)s;
        if (best < 0 || n >= ROUTING_SLOTS)
            break;
        moves[n++] = (plan_move_t){(uint16_t)best, (uint16_t)owners[hi], (uint16_t)owners[lo]};
        of[best] = (int)lo;
        per[hi] -= load[best];
        per[lo] += load[best];
    }
    uint64_t end_max = 0;
    for (size_t i = 0; i < nowners; i++)
        end_max = per[i] > end_max ? per[i] : end_max;
    if (start_max == 0 || (double)(start_max - end_max) < min_gain * (double)start_max)
        return 0;
    return n;
}

void plan_apply(routing_table_t *t, const plan_move_t *moves, size_t n)
{
    for (size_t i = 0; i < n; i++)
        routing_assign(t, moves[i].slot, moves[i].to);
}
