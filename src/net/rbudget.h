/* The read-buffer budget of one service (--max-buffered): the memory held in
 * its connections' read buffers, summed over every listener of the process.
 * Plain accounting, no I/O, so it is unit-tested: inconn.c charges a
 * connection's buffer as it grows or shrinks, and when a growth would pass the
 * limit asks which holder goes first.
 *
 * Policy: the holder whose charge is the oldest goes first (for a read buffer,
 * the partial frame that has been waiting longest). A legitimate large frame
 * arrives at network speed and is gone quickly; a connection that sits on a
 * partial frame (trickling bytes, or stopped) is the one to give way. Small
 * buffers are not charged at all (see inconn.c), so clients of small frames
 * are never chosen. */
#ifndef BETTONG_RBUDGET_H
#define BETTONG_RBUDGET_H

#include <stdint.h>

typedef struct rb_charge {
    uint64_t bytes;                /* charged now (0: not in the list) */
    uint64_t since;                /* when it went from 0 to > 0 (caller's clock) */
    struct rb_charge *prev, *next; /* the budget's holders, oldest first */
} rb_charge_t;

typedef struct {
    uint64_t limit; /* 0: no limit */
    uint64_t used;
    uint64_t peak;
    rb_charge_t *head, *tail;
} rbudget_t;

void rbudget_init(rbudget_t *b, uint64_t limit);
/* Set what `c` holds to `bytes` (0 takes it off the list). `now` dates a new
 * charge; a charge that changes size keeps its age. */
void rbudget_set(rbudget_t *b, rb_charge_t *c, uint64_t bytes, uint64_t now);
/* Would `c` holding `bytes` fit? 1 if so (or there is no limit), else 0. */
int rbudget_fits(const rbudget_t *b, const rb_charge_t *c, uint64_t bytes);
/* The holder to give way first: the oldest charge (which may be `c` itself,
 * when c's own partial frame is the oldest). NULL if nothing is charged. */
rb_charge_t *rbudget_oldest(const rbudget_t *b);

#endif
