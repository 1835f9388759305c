/* Running messages through a pipeline's steps: decode, the steps one after
 * another (depth first, so a multi step's outputs go on in order), then encode
 * into the sink's buffer. Called with the GIL held, once per frame, by the engine
 * that took the GIL for the whole batch. A user exception is reported (pyerr) and
 * the message is handled by the policy; a decoder exception closes the
 * connection instead. */
#ifndef BETTONG_EXEC_H
#define BETTONG_EXEC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>

#include "stream/app.h"
#include "stream/routing.h"
#include "util/buf.h"

/* Latency is sampled: one input in this many (a power of two). */
#define EXEC_SAMPLE_EVERY 64
#define EXEC_ERROR_KINDS 32

typedef enum { ON_ERROR_SKIP, ON_ERROR_DEAD_LETTER, ON_ERROR_STOP } on_error_t;

/* How a message whose state lives on worker `owner` leaves this one (msg and
 * key borrowed; it continues at `step` of pipeline `pipe` there; key is its
 * partition key, NULL for to_stateful). */
typedef void (*exec_forward_fn)(void *ctx, unsigned owner, unsigned pipe, unsigned step,
                                PyObject *msg, PyObject *key);

typedef struct {
    app_t *app;
    buf_t **sink_bufs;      /* per app sink: where encoded output is appended */
    on_error_t on_error;
    FILE *dead_letter;      /* for ON_ERROR_DEAD_LETTER */
    int stop_requested;     /* set by ON_ERROR_STOP */
    uint64_t frames_in;
    uint64_t messages_out;
    uint64_t failed;        /* input messages dropped because user code raised */
    /* The input being processed, for the dead-letter file. */
    const uint8_t *cur_frame;
    size_t cur_frame_len;
    PyObject *cur_message;  /* borrowed; generator or forwarded input */
    /* The event time of the message being run: a connector frame's
     * (source.connector) as its producer wrote it (ms since the epoch by
     * convention), carried to the worker a message is forwarded to; 0 for
     * any other input (none). Windows given with_event_time() without an
     * extractor use it (Wallaroo 0.6.1 stamped messages with their ingest
     * time and dropped it). */
    int64_t cur_event_time;
    int cur_failed;
    uint64_t forwarded;
    /* Private to exec.c: set through exec_set_router and exec_count_slot_runs,
     * so that the cluster, a layer above, never writes into this struct. */
    const routing_table_t *table;
    unsigned self;
    exec_forward_fn forward;
    void *forward_ctx;
    uint32_t *slot_runs;
    /* With resilience: mark the state a step reports changed (the classic
     * API's (output, changed)), for incremental checkpoints. */
    int track_changes;
    /* Metrics (stream/smetrics.h), all on the loop thread. With sample_latency
     * set, one input in EXEC_SAMPLE_EVERY is timed: its steps' Python calls
     * and, from when this worker took it (t_in) to each output encoded. */
    int sample_latency;
    int sampling;           /* the input being run is timed */
    uint64_t inputs;        /* inputs taken (frames, generator values, forwarded) */
    uint64_t t_in;
    metrics_hist_t end_to_end; /* ns */
    /* User errors by where they were raised (a step's or an encoder's label,
     * "partition function", ...: labels that live as long as the app). */
    struct { const char *where; uint64_t n; } errors[EXEC_ERROR_KINDS];
    uint64_t errors_other;  /* kinds beyond the table */
} exec_t;

/* In a cluster: who owns each slot (this worker is `self`), and how messages
 * for the other workers' slots leave. A NULL table (the default) makes every
 * slot local: a worker on its own. */
void exec_set_router(exec_t *x, const routing_table_t *table, unsigned self,
                     exec_forward_fn forward, void *ctx);
/* When counts is not NULL, count the messages run here per slot into
 * counts[ROUTING_SLOTS] (the coordinator balances the load on them). */
void exec_count_slot_runs(exec_t *x, uint32_t *counts);
/* An input message dropped outside exec (it could not be forwarded or
 * decoded): counted with the failures of user code. */
void exec_count_failed(exec_t *x);

/* Decode a frame's payload and run it through `p`. Returns 0, or -1 if the
 * decoder raised (the caller closes the connection). */
int exec_frame(exec_t *x, pipeline_t *p, const uint8_t *frame, size_t frame_len,
               const uint8_t *payload, size_t payload_len);
/* Run an already decoded message (generator sources). */
void exec_message(exec_t *x, pipeline_t *p, PyObject *msg);

/* Run a message another worker forwarded from `step` of pipeline `pipe`, with
 * the partition key it computed (NULL: compute it here) and the event time
 * its source gave (0: none). Returns 0 (a failure of
 * user code is reported and counted), or -1 if pipe/step do not exist here
 * (the peer runs another application). */
int exec_forwarded(exec_t *x, unsigned pipe, unsigned step, PyObject *msg, PyObject *key,
                   int64_t event_time);

/* The event time of the message being run (cur_event_time), for the cluster
 * to send along with a message it forwards. */
int64_t exec_event_time(const exec_t *x);

/* With GIL. Run the timers of the window steps that are due at `now` (ns,
 * window_now()): outputs of the windows they close, on this worker's slots.
 * Returns when the next one is due (INT64_MAX: no window step). */
int64_t exec_windows_due(exec_t *x, int64_t now);

/* Slots this worker owns (all of them alone), and whether it owns `slot`. */
unsigned exec_slots_here(const exec_t *x);
int exec_slot_here(const exec_t *x, unsigned slot);

/* frame_length_fn for decoders whose header C cannot parse: calls the user's
 * payload_length. ctx is the source_t. */
int exec_payload_length(void *ctx, const uint8_t *header, size_t header_len, uint64_t *len);

/* The routing hash of a partition key for step `s` (u64 steps take ints only).
 * Returns 0 or -1 with a Python exception set. */
int exec_route_key(const step_t *s, PyObject *key, uint64_t *hash);

#endif
