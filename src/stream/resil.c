#include "stream/resil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/wire.h"
#include "py/bridge.h"
#include "py/pyerr.h"
#include "stream/catalog.h"
#include "stream/eoproto.h"
#include "stream/snapshot.h"
#include "stream/stsnap.h"
#include "util/hist.h"
#include "util/log.h"

/* Deltas on one full snapshot, at most; a full one also comes once the deltas
 * together outweigh it. */
#define FULL_EVERY 16
/* How long one turn of writing a snapshot's state may hold the loop. */
#define STATE_STEP_NS (2 * 1000000ULL)
/* Candidate checkpoints looked at on recovery (the catalog keeps two chains). */
#define MAX_LIST 256
/* An acknowledgement is not queued for a client that has this much unread. */
#define ACK_BACKLOG_MAX (64 * 1024)

char resil_plain_conn;

typedef struct rstream {
    struct rstream *next;
    inconn_t *conn;       /* its connection now, or NULL */
    uint32_t claim;       /* a claim of it waits for the coordinator (0: none) */
    uint64_t pos;         /* records run */
    uint64_t cut_pos;     /* pos at the checkpoint in flight */
    char name[RS_NAME_MAX + 1];
} rstream_t;

typedef enum { WORK_WRITE, WORK_COMPLETE } work_kind;

struct resil {
    uv_loop_t *loop;
    app_t *app;
    resil_engine_t eng;
    catalog_t *cat;
    char dir[4096];
    uint64_t interval_ns;
    uv_timer_t timer;
    sink_t *sinks;
    size_t nsinks;
    rstream_t *streams;
    /* The checkpoint chain. */
    uint64_t recovered;     /* loaded at start (0: none) */
    uint64_t last_cut;      /* number of the last checkpoint cut */
    uint64_t last_complete;
    uint64_t base;          /* full snapshot of the last complete chain */
    uint64_t base_bytes, chain_bytes, deltas;
    uint64_t pruned_below;  /* files below this are gone */
    int force_full;         /* a cut failed: its changes are only in a full one */
    /* In a cluster the coordinator starts checkpoints and says when one is
     * complete; this worker reports when its part is durable. */
    int coordinated;
    void (*claim)(void *ctx, uint32_t id, const char *name);
    uint32_t claims;        /* claim ids given out */
    void (*report)(void *ctx, uint64_t n, int ok);
    void *report_ctx;
    int reported;
    /* The checkpoint in flight. */
    int busy;
    int written;
    int full;
    int sources_rc;
    stsnap_run_t run;       /* the state owed to the snapshot in flight */
    uv_idle_t state_idle;   /* writes it between batches */
    uint64_t state_ns, cut_pause_ns;
    int end_after_work;     /* abandoned by the coordinator during the write */
    uv_work_t work;
    work_kind kind;
    int working;
    int work_rc;
    char work_err[512];
    buf_t snap;
    snap_info_t info;
    uint64_t prune_below;
    uint64_t cut_ns;
    /* Stopping. */
    int final;
    uint64_t final_after;   /* the final checkpoint is the first cut after this */
    void (*final_done)(void *ctx);
    void *final_ctx;
    int closing;
    /* Figures for the log, and the metrics (resil_register_metrics). */
    uint64_t completed, failed, skipped, pause_max_ns;
    uint64_t last_size, last_n;
    metrics_hist_t duration; /* ns: from the cut to complete */
    metrics_hist_t size;     /* bytes of the checkpoint's file */
    metrics_hist_t pause;    /* ns: the longest loop pause of a cut's state writing */
};

static void cut(resil_t *r);

/* ------------------------------------------------------------ streams */

static rstream_t *stream_get(resil_t *r, const char *name, size_t n)
{
    for (rstream_t *s = r->streams; s; s = s->next)
        if (strlen(s->name) == n && memcmp(s->name, name, n) == 0)
            return s;
    rstream_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    memcpy(s->name, name, n);
    s->next = r->streams;
    r->streams = s;
    return s;
}

static void answer(inconn_t *c, uint8_t type, uint64_t v, const char *text)
{
    wire_wr_t w;
    wire_begin(&w, inconn_out(c), type, RS_MAX_FRAME);
    if (text)
        wire_put_bytes(&w, text, strlen(text));
    else
        wire_put_u64(&w, v);
    wire_end(&w);
    inconn_flush(c);
}

static int refuse(inconn_t *c, const char *why)
{
    log_warn("%s: connection %llu from %s: %s", c->listener->name, (unsigned long long)c->id,
             c->peer, why);
    answer(c, RS_ERROR, 0, why);
    inconn_close_after_flush(c, why);
    return 0;
}

static void resume(inconn_t *c, rstream_t *s)
{
    log_info("%s: stream '%s' (connection %llu from %s) resumes at record %llu",
             c->listener->name, s->name, (unsigned long long)c->id, c->peer,
             (unsigned long long)s->pos);
    answer(c, RS_RESUME, s->pos, NULL);
}

int resil_hello(resil_t *r, inconn_t *c, const uint8_t *payload, size_t len)
{
    if (!r)
        return refuse(c, "a resumable client, but the engine runs without resilience "
                         "(--run-with-resilience)");
    wire_rd_t rd;
    wire_rd_init(&rd, payload + RS_MAGIC_LEN, len - RS_MAGIC_LEN);
    size_t n;
    const uint8_t *name = wire_str16(&rd, &n);
    if (!name || n == 0 || n > RS_NAME_MAX)
        return refuse(c, "malformed resumable hello (a stream name of 1 to 255 bytes)");
    rstream_t *s = stream_get(r, (const char *)name, n);
    if (!s) {
        log_error("out of memory");
        return -1;
    }
    if (s->conn && s->conn != c) {
        inconn_t *old = s->conn;
        s->conn = NULL;
        old->user = &resil_plain_conn;
        inconn_close(old, "replaced by a new connection of its stream");
    }
    s->conn = c;
    c->user = s;
    if (r->claim) {
        /* Another worker may hold the stream and a newer position. */
        if (++r->claims == 0)
            r->claims = 1;
        s->claim = r->claims;
        r->claim(r->report_ctx, s->claim, s->name);
        return 0;
    }
    resume(c, s);
    return 0;
}

void resil_claim_streams(resil_t *r, void (*claim)(void *ctx, uint32_t id, const char *name))
{
    r->claim = claim;
}

void resil_stream_granted(resil_t *r, uint32_t id, uint64_t pos)
{
    for (rstream_t *s = r->streams; s; s = s->next) {
        if (s->claim != id)
            continue;
        s->claim = 0;
        if (pos > s->pos)
            s->pos = s->cut_pos = pos;
        if (s->conn)
            resume(s->conn, s);
        return;
    }
}

uint64_t resil_stream_release(resil_t *r, const char *name)
{
    rstream_t *s = stream_get(r, name, strlen(name));
    if (!s)
        return 0;
    if (s->conn) {
        inconn_t *c = s->conn;
        s->conn = NULL;
        c->user = &resil_plain_conn;
        log_info("%s: stream '%s' went on at another worker; closing its connection %llu",
                 c->listener->name, s->name, (unsigned long long)c->id);
        inconn_close(c, "its stream went on at another worker");
    }
    s->claim = 0;
    return s->pos;
}

int resil_stream_ready(const inconn_t *c)
{
    return c->user == &resil_plain_conn || ((const rstream_t *)c->user)->claim == 0;
}

void resil_force_full(resil_t *r) { r->force_full = 1; }

void resil_each_stream(resil_t *r, void (*each)(void *arg, const char *name, uint64_t pos),
                       void *arg)
{
    for (rstream_t *s = r->streams; s; s = s->next)
        each(arg, s->name, s->pos);
}

void resil_stream_known(resil_t *r, const char *name, uint64_t pos)
{
    rstream_t *s = stream_get(r, name, strlen(name));
    if (s && !s->conn && pos > s->pos)
        s->pos = s->cut_pos = pos;
}

void resil_advance(inconn_t *c) { ((rstream_t *)c->user)->pos++; }

void resil_closed(resil_t *r, inconn_t *c)
{
    if (!r || !c->user || c->user == &resil_plain_conn)
        return;
    rstream_t *s = c->user;
    if (s->conn == c)
        s->conn = NULL;
}

static void send_acks(resil_t *r)
{
    for (rstream_t *s = r->streams; s; s = s->next)
        if (s->conn && inconn_backlog(s->conn) < ACK_BACKLOG_MAX)
            answer(s->conn, RS_ACK, s->cut_pos, NULL);
}

/* ------------------------------------------------------------ the work thread */

static void do_work(uv_work_t *w)
{
    resil_t *r = w->data;
    r->work_err[0] = '\0';
    if (r->kind == WORK_WRITE) {
        r->work_rc = snap_write_file(r->dir, r->info.n, &r->snap, r->work_err,
                                     sizeof r->work_err);
        if (r->work_rc < 0 || !r->coordinated)
            return;
        /* In a cluster the catalog lists what this worker holds; which of it is
         * complete is the coordinator's record. */
    }
    if (r->kind == WORK_WRITE || r->kind == WORK_COMPLETE) {
        r->work_rc = catalog_complete(r->cat, &r->info, r->prune_below, r->work_err,
                                      sizeof r->work_err);
        if (r->work_rc == 0)
            for (uint64_t n = r->pruned_below; n < r->prune_below; n++)
                snap_remove_file(r->dir, n);
    }
}

static void after_work(uv_work_t *w, int status);

static void queue(resil_t *r, work_kind kind)
{
    /* Keep the chains of the last complete checkpoint and of the next one. */
    r->prune_below = r->base;
    r->kind = kind;
    r->working = 1;
    r->work.data = r;
    int rc = uv_queue_work(r->loop, &r->work, do_work, after_work);
    if (rc < 0) {
        r->working = 0;
        r->work_rc = -1;
        snprintf(r->work_err, sizeof r->work_err, "cannot start the checkpoint writer: %s",
                 uv_strerror(rc));
        after_work(&r->work, 0);
    }
}

/* ------------------------------------------------------------ completing */

static void finish_final(resil_t *r)
{
    if (!r->final || !r->final_done)
        return;
    void (*done)(void *) = r->final_done;
    r->final_done = NULL;
    done(r->final_ctx);
}

/* The checkpoint in flight ended (complete or not): the next may start. */
static void settle(resil_t *r)
{
    r->end_after_work = 0;
    r->busy = 0;
    r->written = 0;
    r->reported = 0;
    buf_clear(&r->snap);
    buf_shrink(&r->snap, 1 << 20);
    if (r->final) {
        if (r->last_cut > r->final_after)
            finish_final(r);
        else
            cut(r);
    }
}

static void try_complete(resil_t *r)
{
    if (!r->busy || !r->written || r->working || r->reported)
        return;
    for (size_t i = 0; i < r->nsinks; i++)
        if (!sink_ready_for(&r->sinks[i], r->info.n))
            return;
    if (r->coordinated) {
        r->reported = 1;
        r->report(r->report_ctx, r->info.n, 1);
        return;
    }
    queue(r, WORK_COMPLETE);
}

static void completed(resil_t *r)
{
    snap_info_t *in = &r->info;
    r->last_complete = in->n;
    if (r->prune_below > r->pruned_below)
        r->pruned_below = r->prune_below;
    if (in->full) {
        r->base = in->n;
        r->base_bytes = in->size;
        r->chain_bytes = 0;
        r->deltas = 0;
    } else {
        r->chain_bytes += in->size;
        r->deltas++;
    }
    r->completed++;
    r->last_size = in->size;
    r->last_n = in->n;
    metrics_hist_record(&r->duration, now_ns() - r->cut_ns);
    metrics_hist_record(&r->size, in->size);
    if (r->closing)
        return; /* the sinks and sources are gone */
    for (size_t i = 0; i < r->nsinks; i++)
        sink_commit(&r->sinks[i], in->n);
    send_acks(r);
    log_debug("checkpoint %llu complete (%s, %llu bytes, %.1f ms after its cut)",
              (unsigned long long)in->n, in->full ? "full" : "incremental",
              (unsigned long long)in->size, (double)(now_ns() - r->cut_ns) / 1e6);
}

static void after_work(uv_work_t *w, int status)
{
    resil_t *r = w->data;
    r->working = 0;
    if (r->end_after_work) {
        r->end_after_work = 0;
        r->force_full = 1;
        settle(r);
        return;
    }
    if (status < 0 && r->work_rc == 0) {
        r->work_rc = -1;
        snprintf(r->work_err, sizeof r->work_err, "cancelled");
    }
    if (r->work_rc < 0) {
        r->failed++;
        r->force_full = 1;
        log_error("checkpoint %llu failed: %s; checkpoint %llu stays the one to recover from, "
                  "processing goes on", (unsigned long long)r->info.n, r->work_err,
                  (unsigned long long)r->last_complete);
        if (r->coordinated && !r->closing) {
            /* The coordinator abandons it everywhere. */
            r->reported = 1;
            r->report(r->report_ctx, r->info.n, 0);
            return;
        }
        settle(r);
        return;
    }
    if (r->kind == WORK_WRITE) {
        if (r->coordinated && r->prune_below > r->pruned_below)
            r->pruned_below = r->prune_below;
        r->written = 1;
        try_complete(r);
        return;
    }
    completed(r);
    settle(r);
}

void resil_sink_changed(resil_t *r)
{
    if (r)
        try_complete(r);
}

/* ------------------------------------------------------------ cutting */

static int put_streams(resil_t *r, buf_t *b)
{
    for (rstream_t *s = r->streams; s; s = s->next) {
        s->cut_pos = s->pos;
        wire_wr_t w;
        wire_begin(&w, b, SNAP_STREAM, SNAP_MAX_ENTRY);
        wire_put_u64(&w, s->pos);
        wire_put_str16(&w, s->name, strlen(s->name));
        if (wire_end(&w) < 0)
            return -1;
    }
    return 0;
}

/* With GIL. */
static int put_generators(resil_t *r, buf_t *b)
{
    for (size_t i = 0; i < r->app->npipes; i++) {
        if (r->app->pipes[i].source.kind != SOURCE_GEN)
            continue;
        PyObject *v = r->eng.gen_get(r->eng.ctx, i);
        if (!v)
            continue;
        wire_wr_t w;
        wire_begin(&w, b, SNAP_GEN, SNAP_MAX_ENTRY);
        wire_put_u16(&w, (uint16_t)i);
        if (stsnap_pickle_into(v, &w) < 0 || wire_end(&w) < 0)
            return -1;
    }
    return 0;
}

static int want_full(const resil_t *r)
{
    return r->force_full || r->base == 0 || r->deltas + 1 >= FULL_EVERY ||
           r->chain_bytes > r->base_bytes;
}

/* The first half of checkpoint n, between two batches: where the sources
 * are (resumable positions, generators' last values). In a cluster the
 * sources are then held until the inputs from the peers are aligned. */
static int cut_sources(resil_t *r, uint64_t n)
{
    r->cut_ns = now_ns();
    r->full = want_full(r);
    snap_begin(&r->snap, n, r->full ? n : r->base, r->full);
    py_gil_enter();
    int rc = put_generators(r, &r->snap);
    if (rc < 0) {
        char where[64];
        snprintf(where, sizeof where, "checkpoint %llu", (unsigned long long)n);
        pyerr_report(where);
    }
    py_gil_leave();
    if (rc == 0)
        rc = put_streams(r, &r->snap);
    r->last_cut = n;
    r->busy = 1;
    return rc;
}

/* The second half: the state as it is now, and the sinks' epoch n ends; the
 * snapshot goes to the writer thread. */
/* The snapshot could not be made: the next one is full. */
static void cut_failed(resil_t *r, uint64_t n)
{
    r->failed++;
    r->force_full = 1;
    log_error("checkpoint %llu could not be taken (see above); the next one is full",
              (unsigned long long)n);
    if (r->coordinated) {
        r->reported = 1;
        r->report(r->report_ctx, n, 0);
        return;
    }
    settle(r);
}

/* Every owed slot is written: the snapshot goes to the writer thread. */
static void state_written(resil_t *r)
{
    uint64_t n = r->last_cut;
    int ok = !r->run.failed;
    stsnap_stats_t st = r->run.st;
    stsnap_end(&r->run);
    if (!ok || snap_finish(&r->snap, &r->info) < 0) {
        cut_failed(r, n);
        return;
    }
    r->force_full = 0;
    metrics_hist_record(&r->pause, r->cut_pause_ns);
    log_debug("checkpoint %llu cut: %s, %llu keys, %zu bytes, loop paused %.2f ms (longest "
              "step), state written in %.1f ms", (unsigned long long)n,
              r->full ? "full" : "incremental", (unsigned long long)st.keys,
              buf_unread(&r->snap), (double)r->cut_pause_ns / 1e6,
              (double)(now_ns() - r->state_ns) / 1e6);
    queue(r, WORK_WRITE);
}

/* One turn of writing owed state, with the GIL; the longest is the pause
 * this checkpoint puts on the loop. */
int resil_register_metrics(resil_t *r, metrics_t *m)
{
    if (!r)
        return 0;
    return metrics_counter(m, "bettong_checkpoints_total",
                           "Checkpoints this worker completed (its part on disk, fsynced).",
                           NULL, &r->completed) ||
           metrics_counter(m, "bettong_checkpoints_failed_total",
                           "Checkpoints this worker could not take or write.", NULL,
                           &r->failed) ||
           metrics_gauge(m, "bettong_checkpoint_last_id", "The last checkpoint completed here.",
                         NULL, &r->last_n) ||
           metrics_gauge(m, "bettong_checkpoint_last_size_bytes",
                         "Size of the last checkpoint's file on this worker.", NULL,
                         &r->last_size) ||
           metrics_histogram(m, "bettong_checkpoint_duration_seconds",
                             "From a checkpoint's cut to its file written and fsynced.", NULL,
                             &r->duration, 1e-9, 17, 37) ||
           metrics_histogram(m, "bettong_checkpoint_size_bytes",
                             "Sizes of this worker's checkpoint files (full or incremental).",
                             NULL, &r->size, 1, 8, 36) ||
           metrics_histogram(m, "bettong_checkpoint_pause_seconds",
                             "The longest pause of the event loop while a checkpoint's state "
                             "was written out (one per checkpoint).", NULL, &r->pause, 1e-9, 10,
                             32);
}

static int write_some(resil_t *r)
{
    uint64_t t0 = now_ns();
    py_gil_enter();
    int done = stsnap_step(&r->run, STATE_STEP_NS);
    py_gil_leave();
    uint64_t pause = now_ns() - t0;
    if (pause > r->cut_pause_ns)
        r->cut_pause_ns = pause;
    if (pause > r->pause_max_ns)
        r->pause_max_ns = pause;
    return done;
}

static void on_state_idle(uv_idle_t *h)
{
    resil_t *r = h->data;
    if (!write_some(r))
        return;
    uv_idle_stop(h);
    state_written(r);
}

/* The second half: the state as it is now is owed to the snapshot (written
 * a slot at a time between batches, a slot before it is next used), and the
 * sinks' epoch n ends. */
static void cut_state(resil_t *r, int rc)
{
    uint64_t n = r->last_cut;
    r->state_ns = now_ns();
    r->cut_pause_ns = 0;
    if (rc == 0) {
        py_gil_enter();
        rc = stsnap_begin(&r->run, &r->app->states, r->full, &r->snap);
        if (rc < 0) {
            char where[64];
            snprintf(where, sizeof where, "checkpoint %llu", (unsigned long long)n);
            pyerr_report(where);
        }
        py_gil_leave();
    }
    for (size_t i = 0; i < r->nsinks; i++)
        sink_end_epoch(&r->sinks[i], n);
    if (rc < 0) {
        cut_failed(r, n);
        return;
    }
    if (write_some(r))
        state_written(r);
    else
        uv_idle_start(&r->state_idle, on_state_idle);
}

/* A worker on its own: both halves at once. */
static void cut(resil_t *r)
{
    if (r->busy || r->closing)
        return;
    cut_state(r, cut_sources(r, r->last_cut + 1));
}

static void on_timer(uv_timer_t *t)
{
    resil_t *r = t->data;
    if (r->busy) {
        r->skipped++;
        return;
    }
    cut(r);
}

/* ------------------------------------------------------------ in a cluster */

void resil_coordinate(resil_t *r, void (*report)(void *ctx, uint64_t n, int ok), void *ctx)
{
    r->coordinated = 1;
    r->report = report;
    r->report_ctx = ctx;
}

int resil_checkpoint_sources(resil_t *r, uint64_t n)
{
    if (r->busy || r->closing) {
        log_error("checkpoint %llu asked while checkpoint %llu is in flight",
                  (unsigned long long)n, (unsigned long long)r->last_cut);
        return -1;
    }
    r->sources_rc = cut_sources(r, n);
    return 0;
}

void resil_checkpoint_state(resil_t *r)
{
    if (r->busy && !r->written && !r->working && !r->reported)
        cut_state(r, r->sources_rc);
}

void resil_checkpoint_end(resil_t *r, uint64_t n, int complete)
{
    if (!r->busy || r->last_cut != n)
        return;
    if (r->working) {
        /* Abandoned while this worker still writes it (another failed): the
         * writer's buffer stays until it is done. */
        r->end_after_work = 1;
        return;
    }
    if (r->run.active) {
        /* Abandoned while its state is still being written here. */
        uv_idle_stop(&r->state_idle);
        py_gil_enter();
        stsnap_end(&r->run);
        py_gil_leave();
        r->force_full = 1;
        settle(r);
        return;
    }
    if (complete && r->written)
        completed(r);
    else
        r->force_full = 1;
    settle(r);
}

/* ------------------------------------------------------------ recovery */

/* With GIL. Apply one checkpoint file's entries. */
static int apply_file(resil_t *r, const buf_t *file, char *err, size_t errlen)
{
    stsnap_ids_t ids = {0};
    snap_iter_t it;
    snap_iter_init(&it, file);
    uint8_t type;
    wire_rd_t f;
    int rc = 0, more;
    while ((more = snap_next(&it, &type, &f)) > 0) {
        if ((rc = stsnap_apply(&r->app->states, &ids, type, &f, err, errlen)) < 0)
            break;
        if (rc == 1)
            continue;
        if (type == SNAP_STREAM) {
            uint64_t pos = wire_u64(&f);
            size_t n;
            const uint8_t *name = wire_str16(&f, &n);
            rstream_t *s = name && n <= RS_NAME_MAX ? stream_get(r, (const char *)name, n) : NULL;
            if (s)
                s->pos = s->cut_pos = pos;
        } else if (type == SNAP_GEN) {
            unsigned pipe = wire_u16(&f);
            size_t n;
            const uint8_t *p = wire_rest(&f, &n);
            PyObject *v = pipe < r->app->npipes && !f.err ? stsnap_unpickle(p, n) : NULL;
            if (v)
                r->eng.gen_set(r->eng.ctx, pipe, v);
            Py_XDECREF(v);
            PyErr_Clear();
        }
    }
    stsnap_ids_free(&ids);
    if (more < 0) {
        snprintf(err, errlen, "malformed entry");
        return -1;
    }
    return more < 0 || rc < 0 ? -1 : 0;
}

static void forget_loaded(resil_t *r)
{
    state_registry_clear(&r->app->states);
    for (rstream_t *s = r->streams; s; s = s->next)
        s->pos = s->cut_pos = 0;
    for (size_t i = 0; i < r->app->npipes; i++)
        if (r->app->pipes[i].source.kind == SOURCE_GEN)
            r->eng.gen_set(r->eng.ctx, i, NULL);
}

/* Load candidate list[k] and the chain it builds on (newer entries come first
 * in list). With GIL. */
static int load_chain(resil_t *r, const snap_info_t *list, int count, int k, char *err,
                      size_t errlen)
{
    int first = k; /* index of the full snapshot */
    while (list[first].n != list[k].base) {
        if (first + 1 >= count || list[first + 1].n != list[first].n - 1) {
            snprintf(err, errlen, "checkpoint %llu builds on %llu, which is not complete",
                     (unsigned long long)list[k].n, (unsigned long long)list[k].base);
            return -1;
        }
        first++;
    }
    buf_t file;
    buf_init(&file);
    int rc = 0;
    r->chain_bytes = 0;
    for (int j = first; j >= k && rc == 0; j--) {
        snap_info_t got;
        rc = snap_read_file(r->dir, list[j].n, &list[j], &file, &got, err, errlen);
        if (rc == 0)
            rc = apply_file(r, &file, err, errlen);
        if (j < first)
            r->chain_bytes += list[j].size;
    }
    buf_free(&file);
    if (rc == 0) {
        r->base = list[first].n;
        r->base_bytes = list[first].size;
        r->deltas = (uint64_t)(first - k);
    }
    return rc;
}

static int recover(resil_t *r, char *err, size_t errlen)
{
    snap_info_t *list = calloc(MAX_LIST, sizeof *list);
    if (!list) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int count = catalog_list(r->cat, list, MAX_LIST, err, errlen);
    if (count < 0) {
        free(list);
        return -1;
    }
    uint64_t t0 = now_ns();
    py_gil_enter();
    for (int k = 0; k < count; k++) {
        char why[1024];
        if (load_chain(r, list, count, k, why, sizeof why) == 0) {
            r->recovered = r->last_cut = r->last_complete = list[k].n;
            r->pruned_below = 0;
            break;
        }
        log_error("cannot recover from checkpoint %llu: %s%s", (unsigned long long)list[k].n,
                  why, k + 1 < count ? "; trying the one before" : "");
        forget_loaded(r);
    }
    size_t keys = state_count_keys(&r->app->states, NULL, NULL);
    py_gil_leave();
    if (r->recovered)
        log_info("recovered from checkpoint %llu in %s: %zu keys of state, %.1f ms",
                 (unsigned long long)r->recovered, r->dir, keys,
                 (double)(now_ns() - t0) / 1e6);
    else if (count > 0)
        log_error("no usable checkpoint in %s: starting with empty state", r->dir);
    else
        log_info("no checkpoint in %s yet: starting with empty state", r->dir);
    free(list);
    return 0;
}

int resil_restore(resil_t *r, uint64_t k, char *err, size_t errlen)
{
    if (k == 0) {
        log_info("the cluster starts without a checkpoint: empty state");
        return 0;
    }
    snap_info_t *list = calloc(MAX_LIST, sizeof *list);
    if (!list) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int count = catalog_list(r->cat, list, MAX_LIST, err, errlen), rc = -1;
    int at = -1;
    for (int i = 0; i < count; i++)
        if (list[i].n == k)
            at = i;
    if (count >= 0 && at < 0)
        snprintf(err, errlen, "this worker holds no checkpoint %llu in %s",
                 (unsigned long long)k, r->dir);
    uint64_t t0 = now_ns();
    if (at >= 0) {
        py_gil_enter();
        forget_loaded(r);
        rc = load_chain(r, list, count, at, err, errlen);
        if (rc < 0)
            forget_loaded(r);
        size_t keys = state_count_keys(&r->app->states, NULL, NULL);
        py_gil_leave();
        if (rc == 0) {
            r->recovered = r->last_cut = r->last_complete = k;
            log_info("recovered from checkpoint %llu in %s: %zu keys of state, %.1f ms",
                     (unsigned long long)k, r->dir, keys, (double)(now_ns() - t0) / 1e6);
        }
    }
    free(list);
    return rc;
}

/* ------------------------------------------------------------ life */

resil_t *resil_open(uv_loop_t *loop, app_t *app, const resil_options_t *opt,
                    const resil_engine_t *eng, char *err, size_t errlen)
{
    resil_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->loop = loop;
    r->app = app;
    r->eng = *eng;
    r->interval_ns = opt->interval_ns;
    buf_init(&r->snap);
    snprintf(r->dir, sizeof r->dir, "%s/%s", opt->dir, opt->worker);
    char identity[512];
    snprintf(identity, sizeof identity, "application '%s'", app->name);
    r->coordinated = opt->coordinated;
    if (!(r->cat = catalog_open(r->dir, identity, err, errlen)) ||
        (!r->coordinated && recover(r, err, errlen) < 0)) {
        catalog_close(r->cat);
        free(r);
        return NULL;
    }
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_idle_init(loop, &r->state_idle);
    r->state_idle.data = r;
    return r;
}

uint64_t resil_recovered(const resil_t *r) { return r->recovered; }

void resil_start(resil_t *r, sink_t *sinks, size_t nsinks)
{
    r->sinks = sinks;
    r->nsinks = nsinks;
    if (r->coordinated) {
        log_info("resilience: checkpoints as the coordinator starts them, in %s", r->dir);
        return;
    }
    uint64_t ms = r->interval_ns / 1000000;
    uv_timer_start(&r->timer, on_timer, ms ? ms : 1, ms ? ms : 1);
    log_info("resilience: checkpoints every %.3f s in %s", (double)r->interval_ns / 1e9,
             r->dir);
}

void resil_final(resil_t *r, void (*done)(void *ctx), void *ctx)
{
    uv_timer_stop(&r->timer);
    r->final = 1;
    r->final_after = r->last_cut;
    r->final_done = done;
    r->final_ctx = ctx;
    if (!r->busy)
        cut(r);
}

static void on_timer_closed(uv_handle_t *h) { (void)h; }

void resil_shutdown(resil_t *r)
{
    if (r->closing)
        return;
    r->closing = 1;
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    uv_close((uv_handle_t *)&r->state_idle, on_timer_closed);
    log_info("resilience: %llu checkpoints complete (last %llu), %llu failed, %llu skipped "
             "(the previous one still in flight); longest loop pause %.2f ms",
             (unsigned long long)r->completed, (unsigned long long)r->last_complete,
             (unsigned long long)r->failed, (unsigned long long)r->skipped,
             (double)r->pause_max_ns / 1e6);
}

void resil_drop_python(resil_t *r)
{
    if (r)
        stsnap_end(&r->run);
}

void resil_free(resil_t *r)
{
    if (!r)
        return;
    catalog_close(r->cat);
    while (r->streams) {
        rstream_t *s = r->streams;
        r->streams = s->next;
        free(s);
    }
    buf_free(&r->snap);
    free(r);
}
