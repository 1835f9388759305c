/* The engine's connection to one sink address. Without resilience it is a
 * plain outconn: exec appends encoded records to its buffer. With resilience
 * the output is cut into epochs (epoch N: after checkpoint N-1, up to
 * checkpoint N) and the receiver decides how it is sent: one that greets with
 * the exactly-once protocol (docs/resilience.md) gets framed epochs, commits
 * and aborts; one that says nothing within SINK_GREET_MS gets the plain bytes.
 * Until a receiver has made an epoch durable ('P'), its frames are kept here
 * and sent again on a new connection. */
#ifndef BETTONG_SINK_H
#define BETTONG_SINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/outconn.h"
#include "util/buf.h"

#define SINK_GREET_MS 500

typedef enum { SINK_PLAIN, SINK_WAITING, SINK_EXACTLY_ONCE } sink_mode;

typedef struct sink sink_t;

typedef struct {
    int resilient;
    const char *writer;   /* the worker's name, sent in 'W' */
    uint64_t recovered;   /* the checkpoint this process started from (0: none) */
    int history_later;    /* recovered is not known yet: sink_set_history tells it */
    /* Bytes were written (backpressure may lift). */
    void (*progress)(void *ctx);
    /* The receiver made an epoch durable, or the sink's mode was decided. */
    void (*changed)(void *ctx);
    void *ctx;
} sink_options_t;

struct sink {
    outconn_t o;
    sink_options_t opt;
    buf_t **out;        /* where exec appends: &stage, or the outconn's buffer */
    buf_t stage;        /* records of the open epoch not yet framed */
    buf_t retained;     /* D and E frames the receiver has not made durable */
    buf_t in;           /* bytes from the receiver */
    uv_timer_t greet_timer;
    sink_mode mode;
    int ready;          /* exactly-once: 'W'/'S' done on this connection */
    int history_sent;   /* the first 'X' of this process was sent */
    int fresh;          /* nothing was loaded: no earlier output of ours to find */
    uint64_t epoch;     /* the open epoch */
    uint64_t prepared;  /* the receiver's last durable epoch */
    uint64_t complete;  /* the last complete checkpoint */
    uint64_t committed; /* the last commit sent or reported */
    int waiting_state;  /* an 'S' came before the history was known */
    uint64_t state_committed, state_prepared;
};

/* Start connecting to addr. *out is set to the buffer exec appends to, and
 * kept current by the sink. */
void sink_init(sink_t *s, uv_loop_t *loop, const struct sockaddr *addr, const char *name,
               buf_t **out, const sink_options_t *opt);
/* The checkpoint this worker goes on from (a cluster restores one after it
 * formed): the exactly-once handshake waits for it. fresh: this worker loaded
 * nothing (it joins with empty state; its epochs still count from there). */
void sink_set_history(sink_t *s, uint64_t recovered, int fresh);
/* Hand the appended records on (framed in the open epoch, if not plain). */
void sink_flush(sink_t *s);
/* Bytes waiting to be written: in the connection and the stage. */
size_t sink_backlog(const sink_t *s);
/* Bytes kept until the receiver holds their epoch (they go only after the
 * next checkpoint, whatever the receiver's speed). */
static inline size_t sink_retained(const sink_t *s) { return buf_unread(&s->retained); }
/* Checkpoint n cut the output: the open epoch (n) ends, n+1 begins. */
void sink_end_epoch(sink_t *s, uint64_t n);
/* Whether checkpoint n may complete as far as this sink goes: a plain sink
 * always; an exactly-once one when its receiver made epoch n durable. */
int sink_ready_for(const sink_t *s, uint64_t n);
/* Checkpoint n is complete: the receiver may write its epochs out. */
void sink_commit(sink_t *s, uint64_t n);
void sink_close(sink_t *s);

#endif
