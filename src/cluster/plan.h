/* Which slots move when a worker joins or leaves, or to even out the load:
 * pure data, so it is tested on its own. A joiner takes an equal share from the
 * workers that hold the most; a leaver's slots go to those that hold the
 * fewest; no slot moves between workers that stay. Balancing moves the busiest
 * worker's slots, by measured load, to the least busy. */
#ifndef BETTONG_PLAN_H
#define BETTONG_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "stream/routing.h"

typedef struct {
    uint16_t slot, from, to;
} plan_move_t;

/* `owners` are the workers that keep their slots (newcomer not among them).
 * Writes at most ROUTING_SLOTS moves; returns how many. */
size_t plan_grow(const routing_table_t *t, const unsigned *owners, size_t nowners,
                 unsigned newcomer, plan_move_t *moves);
/* `owners` are the workers that stay (leaver not among them; at least one). */
size_t plan_shrink(const routing_table_t *t, const unsigned *owners, size_t nowners,
                   unsigned leaver, plan_move_t *moves);
/* Moves that even out the load: load[s] is the work slot s took (messages run
 * there) over the last period. Slots go from the busiest worker to the least
 * busy one while that lowers the busiest worker's load; returns no moves
 * unless the busiest worker's load drops by at least min_gain (a fraction,
 * e.g. 0.05), so that noise does not move state back and forth. */
size_t plan_balance(const routing_table_t *t, const unsigned *owners, size_t nowners,
                    const uint64_t *load, double min_gain, plan_move_t *moves);
void plan_apply(routing_table_t *t, const plan_move_t *moves, size_t n);

#endif
