/* Resilience on one worker: checkpoints, recovery, resumable sources.
 *
 * Every interval the loop thread cuts checkpoint N between two batches: the
 * state that changed since N-1 (or all of it, periodically) is pickled into a
 * snapshot (stream/stsnap.c) with each resumable source's position and each
 * generator's last value, and each sink's output epoch N ends there. The
 * snapshot is written and fsynced by a libuv work thread while processing goes
 * on; N is complete when its file is on disk and every exactly-once receiver
 * holds epoch N, and is then recorded in the catalog (stream/catalog.c), also
 * off the loop. Then the receivers commit epoch N and the resumable clients
 * hear which of their records it covers. One checkpoint is in flight at a time.
 *
 * On start-up the last complete checkpoint whose files are whole is loaded;
 * a damaged one falls back to the one before. */
#ifndef BETTONG_RESIL_H
#define BETTONG_RESIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/inconn.h"
#include "stream/app.h"
#include "stream/sink.h"

typedef struct {
    const char *dir;      /* --resilience-dir: files go to DIR/<worker> */
    const char *worker;   /* this worker's name */
    uint64_t interval_ns; /* --time-between-checkpoints */
    int coordinated;      /* in a cluster: nothing is loaded before resil_restore */
} resil_options_t;

/* What the checkpoints need of the engine. */
typedef struct {
    void *ctx;
    /* Generator pipeline `pipe`'s last value (borrowed; NULL: none yet), and
     * setting it on recovery (value borrowed). With the GIL. */
    PyObject *(*gen_get)(void *ctx, size_t pipe);
    void (*gen_set)(void *ctx, size_t pipe, PyObject *value);
} resil_engine_t;

typedef struct resil resil_t;

/* Open DIR/<worker>, refuse another application's directory, and load the
 * last usable checkpoint into app's state (takes the GIL). Returns NULL with
 * err set. */
resil_t *resil_open(uv_loop_t *loop, app_t *app, const resil_options_t *opt,
                    const resil_engine_t *eng, char *err, size_t errlen);
/* The checkpoint the state was loaded from (0: started empty). */
uint64_t resil_recovered(const resil_t *r);
/* The sinks whose epochs the checkpoints cut; then checkpoints start. */
void resil_start(resil_t *r, sink_t *sinks, size_t nsinks);
/* A sink's receiver made an epoch durable or was found to be plain. */
void resil_sink_changed(resil_t *r);

/* Source connections. The first frame of a connection whose payload starts
 * with RS_MAGIC names a resumable stream: answer it (r may be NULL: resilience
 * is off, the client is refused). Returns 0, or -1 to close the connection. */
int resil_hello(resil_t *r, inconn_t *c, const uint8_t *payload, size_t len);
/* A record of the stream on connection c was run (c->user is its stream). */
void resil_advance(inconn_t *c);
void resil_closed(resil_t *r, inconn_t *c);
/* c->user of a connection that is known to be plain. */
extern char resil_plain_conn;

/* In a cluster: the coordinator starts each checkpoint n; the worker cuts its
 * sources' positions (resil_checkpoint_sources, then holds its sources), and
 * once every peer's barrier n has arrived cuts its state
 * (resil_checkpoint_state). report(ctx, n, ok) says when its part is durable
 * and its exactly-once receivers hold epoch n (or that it failed); the
 * coordinator then ends n everywhere: complete (receivers commit, resumable
 * clients are acknowledged) or abandoned. */
void resil_coordinate(resil_t *r, void (*report)(void *ctx, uint64_t n, int ok), void *ctx);
/* In a cluster a resumable stream may come to any worker: before it answers
 * a hello, the worker claims the stream (claim(ctx, id, name)); the
 * coordinator has the worker that had it let go (resil_stream_release: its
 * connection closes, the position it reached is returned) and grants it
 * (resil_stream_granted), with that position. */
void resil_claim_streams(resil_t *r, void (*claim)(void *ctx, uint32_t id, const char *name));
void resil_stream_granted(resil_t *r, uint32_t id, uint64_t pos);
uint64_t resil_stream_release(resil_t *r, const char *name);
/* Whether the stream on c may send records (its position was answered). */
int resil_stream_ready(const inconn_t *c);
int resil_checkpoint_sources(resil_t *r, uint64_t n);
/* Load checkpoint k of this worker's files (0: start empty), as the
 * coordinator says the cluster goes on from it. With GIL taken inside.
 * Returns 0 or -1 with err set. */
int resil_restore(resil_t *r, uint64_t k, char *err, size_t errlen);
void resil_checkpoint_state(resil_t *r);
void resil_checkpoint_end(resil_t *r, uint64_t n, int complete);

/* Slots' state moved in or out (a cluster change): the next snapshot is a
 * full one, so that a chain never needs another worker's files. */
void resil_force_full(resil_t *r);

/* Resumable streams' positions: every stream this worker knows, and (from
 * the other workers of a cluster that restored a checkpoint) a position a
 * stream had there: a stream may connect to any worker. */
void resil_each_stream(resil_t *r, void (*each)(void *arg, const char *name, uint64_t pos),
                       void *arg);
void resil_stream_known(resil_t *r, const char *name, uint64_t pos);

/* Stopping: cut a last checkpoint (after the one in flight) and call done
 * when it is complete or cannot be. */
void resil_final(resil_t *r, void (*done)(void *ctx), void *ctx);
/* Close the timer; the loop ends once the work in flight has ended. */
void resil_shutdown(resil_t *r);
/* After the loop ended, with the GIL: a snapshot cut short lets go of what
 * it held. */
void resil_drop_python(resil_t *r);
/* After the loop ended. */
/* --metrics-listen: its checkpoints' counts, durations and sizes (read on
 * the loop thread, where completions are handled). r may be NULL (no
 * resilience: nothing registered). Returns 0 or -1. */
int resil_register_metrics(resil_t *r, metrics_t *m);
void resil_free(resil_t *r);

#endif
