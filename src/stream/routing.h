/* Key -> slot -> worker. A partition key's stable 64-bit hash picks one of
 * ROUTING_SLOTS slots; the table says which worker owns each slot. Slots, not
 * keys, are the unit that a cluster spreads over workers and moves between them,
 * so a worker joining or leaving moves whole slots with their state. */
#ifndef BETTONG_ROUTING_H
#define BETTONG_ROUTING_H

#include <stdint.h>

#define ROUTING_SLOTS 4096u

typedef struct {
    uint16_t owner[ROUTING_SLOTS]; /* worker index owning each slot */
    unsigned workers;
} routing_table_t;

static inline unsigned routing_slot(uint64_t key_hash) { return (unsigned)(key_hash % ROUTING_SLOTS); }

/* The initial layout for a cluster formed with `workers` workers: slot s belongs
 * to s % workers, an equal share each. A worker joining later must not re-run
 * this (it would move most slots): it takes over a share with routing_assign. */
void routing_init(routing_table_t *t, unsigned workers);
static inline unsigned routing_owner(const routing_table_t *t, unsigned slot) { return t->owner[slot]; }
void routing_assign(routing_table_t *t, unsigned slot, unsigned worker);
/* How many slots `worker` owns. */
unsigned routing_count(const routing_table_t *t, unsigned worker);

#endif
