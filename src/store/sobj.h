/* The store's requests after parsing (loop thread).
 *
 * Requests that name an object go through that object's queue (sobj_t), one
 * at a time in arrival order: CALL, GET_FIELD, SET_FIELD, GET_STATE, UPDATE and
 * DELETE as jobs on the Python threads (spy.h); ADD_ALIAS, ALIASES and
 * LOOKUP_ID as committer units once they reach the queue's head. Objects are
 * served concurrently with each other. Other requests (CLASS, PERSIST,
 * LOOKUP_ALIAS, DELETE_ALIAS, GET_CLASS) are units at once; the committer runs
 * units in order, so each sees every change submitted before it.
 *
 * PERSIST puts its objects in the table as pending until its unit is decided,
 * so requests about them that arrive meanwhile wait for it.
 *
 * Every move of a request's state (sreq.h) is made here, on the loop thread:
 * which state it leaves says who answers it and who frees it. */
#ifndef BETTONG_SOBJ_H
#define BETTONG_SOBJ_H

#include "store/commit.h"
#include "store/store.h"

typedef struct sobj {
    onode_t node; /* first */
    sreq_t *head, *tail; /* queued; the head is running unless QUEUED (sreq.h) */
    int pending;         /* PERSISTs not yet decided that create it */
    unsigned hold;       /* in use further up the stack: not freed meanwhile (an
                            answer can resume a paused connection, whose buffered
                            requests then reach this object at once) */
    uint64_t last_seq;   /* the last unit about it: later answers wait for it */
} sobj_t;

/* Take a parsed request (QUEUED; ownership passes). */
void sobj_submit(store_t *st, sreq_t *r);
/* The committer's done callback (commit.h). */
void sobj_unit_done(void *ctx, wunit_t *u);
/* Free every queued request and entry (at stop, after the threads stopped). */
void sobj_drop_all(store_t *st);

#endif
