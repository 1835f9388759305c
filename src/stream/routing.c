#include "stream/routing.h"

void routing_init(routing_table_t *t, unsigned workers)
{
    if (workers == 0)
        workers = 1;
    t->workers = workers;
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        t->owner[s] = (uint16_t)(s % workers);
}

void routing_assign(routing_table_t *t, unsigned slot, unsigned worker)
{
    if (slot < ROUTING_SLOTS)
        t->owner[slot] = (uint16_t)worker;
}

unsigned routing_count(const routing_table_t *t, unsigned worker)
{
    unsigned n = 0;
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        n += t->owner[s] == worker;
    return n;
}
