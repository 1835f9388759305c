#include "net/rbudget.h"

#include <string.h>

void rbudget_init(rbudget_t *b, uint64_t limit)
{
    memset(b, 0, sizeof *b);
    b->limit = limit;
}

static void unlink_charge(rbudget_t *b, rb_charge_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        b->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        b->tail = c->prev;
    c->prev = c->next = NULL;
}

/* New charges go to the tail: the list stays ordered by age without sorting. */
static void append_charge(rbudget_t *b, rb_charge_t *c)
{
    c->next = NULL;
    c->prev = b->tail;
    if (b->tail)
        b->tail->next = c;
    else
        b->head = c;
    b->tail = c;
}

void rbudget_set(rbudget_t *b, rb_charge_t *c, uint64_t bytes, uint64_t now)
{
    if (c->bytes == bytes)
        return;
    b->used = b->used - c->bytes + bytes;
    if (b->used > b->peak)
        b->peak = b->used;
    if (c->bytes == 0) {
        c->since = now;
        append_charge(b, c);
    } else if (bytes == 0) {
        unlink_charge(b, c);
    }
    c->bytes = bytes;
}

int rbudget_fits(const rbudget_t *b, const rb_charge_t *c, uint64_t bytes)
{
    if (b->limit == 0 || bytes <= c->bytes)
        return 1;
    return b->used - c->bytes + bytes <= b->limit;
}

rb_charge_t *rbudget_oldest(const rbudget_t *b) { return b->head; }
