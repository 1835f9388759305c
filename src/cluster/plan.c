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

void plan_apply(routing_table_t *t, const plan_move_t *moves, size_t n)
{
    for (size_t i = 0; i < n; i++)
        routing_assign(t, moves[i].slot, moves[i].to);
}
