#include "stream/engine.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <uv.h>

#include "net/addr.h"
#include "net/dashboard.h"
#include "net/httpd.h"
#include "net/inconn.h"
#include "net/outconn.h"
#include "stream/eoproto.h"
#include "stream/external.h"
#include "stream/resil.h"
#include "stream/sink.h"
#include "stream/smetrics.h"
#include "stream/stopology.h"
#include "py/bridge.h"
#include "py/pyerr.h"
#include "util/hist.h"
#include "util/log.h"

#define GEN_BATCH 1024
#define STATS_INTERVAL_MS 5000
#define DRAIN_POLL_MS 10
/* The bound of output kept for exactly-once receivers, as a multiple of the
 * sinks' (8 MiB -> 64 MiB): a checkpoint interval of output at full speed. */
#define RETAINED_FACTOR 8
/* Within a long batch, hand the output produced so far to the kernel at least
 * this often, so the first messages of a large read do not wait for the last. */
#define MIDBATCH_FLUSH_NS 200000u

typedef struct engine engine_t;

/* Per pipeline: its source's handles. */
typedef struct {
    engine_t *e;
    pipeline_t *pipe;
    listener_t listener; /* SOURCE_TCP */
    int listening;
    uv_idle_t idle;      /* SOURCE_GEN */
    PyObject *gen_prev;  /* owned: the generator's last value */
    int gen_active;
} source_rt_t;

struct engine {
    uv_loop_t loop;
    app_t *app;
    const engine_options_t *opt;
    exec_t x;
    source_rt_t *sources;
    sink_t *sinks;
    resil_t *resil;     /* NULL without --run-with-resilience */
    buf_t **sink_bufs;
    uv_signal_t sigint, sigterm;
    uv_timer_t stats_timer, drain_timer;
    uv_timer_t window_timer; /* Wallaroo 0.6 windows' timers (stream/window.h) */
    uint64_t last_flush_ns;
    uint64_t last_check_ns;
    unsigned batch_frames;
    unsigned check_every; /* messages between two looks at the clock in a batch */
    int paused;         /* sources not reading: bp_paused or held */
    int bp_paused;      /* backpressure from the sinks and links */
    int held;           /* the cluster holds the sources (forming, moving slots) */
    int formed;         /* the cluster let the sources run once (it has formed) */
    const engine_cluster_ops_t *cl; /* NULL: a worker on its own */
    void *cluster;                  /* what cl->start made */
    uv_timer_t stop_timer; /* a cluster stop that does not come */
    external_t *external;  /* --external; NULL: none */
    int stopping;
    int final_checkpoint; /* stopping waits for the last checkpoint */
    int exit_code;
    uint64_t stop_deadline_ns;
    uint64_t started_ns;
    FILE *dead_letter;
    metrics_t *metrics;    /* --metrics-listen; NULL: none */
    httpd_t *httpd;
    stopology_t topology;  /* what /topology.json describes */
};

static void begin_stop(engine_t *e, int code, const char *why);

/* ------------------------------------------------------------ backpressure */

static size_t sinks_backlog(engine_t *e)
{
    size_t n = 0;
    for (size_t i = 0; i < e->app->nsinks; i++)
        n += sink_backlog(&e->sinks[i]);
    return n;
}

/* Output kept for exactly-once receivers until its checkpoint: it bounds the
 * sources, not the peers' links (a barrier must still come in to end it). */
static size_t sinks_retained(engine_t *e)
{
    size_t n = 0;
    for (size_t i = 0; i < e->app->nsinks; i++)
        n += sink_retained(&e->sinks[i]);
    return n;
}

static void gen_start(source_rt_t *s);

static void apply_pause(engine_t *e)
{
    int paused = e->bp_paused || e->held;
    if (e->paused == paused || e->stopping)
        return;
    e->paused = paused;
    log_debug("%s sources (sink backlog %zu bytes)", paused ? "pausing" : "resuming",
              sinks_backlog(e));
    for (size_t i = 0; i < e->app->npipes; i++) {
        source_rt_t *s = &e->sources[i];
        if (s->listening)
            paused ? listener_pause(&s->listener) : listener_resume(&s->listener);
        else if (s->gen_active)
            paused ? (void)uv_idle_stop(&s->idle) : gen_start(s);
    }
}

/* Sources stop on what waits in the sinks and the links to other workers;
 * forwarded messages stop only on the sinks, which drain on their own, so two
 * workers waiting on each other's links cannot stall each other. */
static void check_backlog(engine_t *e)
{
    size_t sinks = sinks_backlog(e);
    size_t backlog = sinks + (e->cluster ? e->cl->backlog(e->cluster) : 0);
    /* Output kept for exactly-once receivers grows by a checkpoint interval's
     * worth whatever the receiver does: it has its own, larger bound. */
    size_t retained = sinks_retained(e);
    uint64_t rhigh = RETAINED_FACTOR * e->opt->backlog_high;
    uint64_t rlow = RETAINED_FACTOR * e->opt->backlog_low;
    if (!e->bp_paused && (backlog > e->opt->backlog_high || retained > rhigh)) {
        e->bp_paused = 1;
        apply_pause(e);
    } else if (e->bp_paused && backlog < e->opt->backlog_low && retained < rlow) {
        e->bp_paused = 0;
        apply_pause(e);
    }
    if (e->cluster) {
        if (sinks > e->opt->backlog_high)
            e->cl->hold_inbound(e->cluster, 1);
        else if (sinks < e->opt->backlog_low)
            e->cl->hold_inbound(e->cluster, 0);
    }
}

static void flush_sinks(engine_t *e)
{
    for (size_t i = 0; i < e->app->nsinks; i++)
        sink_flush(&e->sinks[i]);
    if (e->cluster)
        e->cl->flush(e->cluster);
}

static void on_sink_progress(void *ctx) { check_backlog(ctx); }

static void on_sink_changed(void *ctx) { resil_sink_changed(((engine_t *)ctx)->resil); }

/* ------------------------------------------------------------ batches */

/* A batch (one read of a source or of a peer's link, or a generator's turn):
 * the GIL once for all its messages. */
static void begin_batch(engine_t *e)
{
    e->batch_frames = 0;
    e->last_flush_ns = e->last_check_ns = now_ns();
    if (!e->check_every)
        e->check_every = 16;
    py_gil_enter();
}

static void batch_begin(void *owner) { begin_batch(((source_rt_t *)owner)->e); }

/* Called per message inside a batch; cheap unless a flush is due. The clock is
 * read every 16 messages while they are fast, and after every message once
 * they are slow (user code that waits on a remote call, a disk): heartbeats
 * must not wait behind 16 of those, or peers would count this worker lost. */
#define SLOW_MESSAGE_NS 50000u
static void maybe_flush_midbatch(engine_t *e)
{
    if (++e->batch_frames % e->check_every != 0)
        return;
    uint64_t now = now_ns();
    e->check_every = now - e->last_check_ns > (uint64_t)SLOW_MESSAGE_NS * e->check_every ? 1 : 16;
    e->last_check_ns = now;
    if (now - e->last_flush_ns >= MIDBATCH_FLUSH_NS) {
        e->last_flush_ns = now;
        flush_sinks(e);
        if (e->cluster)
            e->cl->keepalive(e->cluster);
    }
}

static void end_batch(engine_t *e)
{
    if (pyerr_total())
        pyerr_summary(0);
    py_gil_leave();
    if (e->dead_letter)
        fflush(e->dead_letter);
    flush_sinks(e);
    check_backlog(e);
}

static void batch_end(void *owner) { end_batch(((source_rt_t *)owner)->e); }

static int on_frame(void *owner, inconn_t *c, const uint8_t *frame, size_t frame_len,
                    const uint8_t *payload, size_t payload_len)
{
    source_rt_t *s = owner;
    engine_t *e = s->e;
    if (!c->user) {
        /* A connection's first frame says whether it is a resumable stream. */
        if (rs_is_hello(payload, payload_len))
            return resil_hello(e->resil, c, payload, payload_len);
        c->user = &resil_plain_conn;
    } else if (c->user != &resil_plain_conn && !resil_stream_ready(c)) {
        log_warn("%s: connection %llu from %s sent a record before it was told where to "
                 "resume; closing", c->listener->name, (unsigned long long)c->id, c->peer);
        return -1;
    }
    int rc = exec_frame(&e->x, s->pipe, frame, frame_len, payload, payload_len);
    /* A record of a resumable stream counts as taken even when its decoder
     * raised: resent, it would only close the connection again. */
    if (c->user != &resil_plain_conn)
        resil_advance(c);
    if (rc < 0) {
        log_warn("%s: closing connection %llu from %s: the decoder raised (see above)",
                 c->listener->name, (unsigned long long)c->id, c->peer);
        return -1;
    }
    if (e->x.stop_requested) {
        begin_stop(e, 1, "--on-error=stop");
        return 1;
    }
    maybe_flush_midbatch(e);
    return 0;
}

static void on_conn_closed(void *owner, inconn_t *c)
{
    resil_closed(((source_rt_t *)owner)->e->resil, c);
    log_debug("%s: connection %llu from %s closed", c->listener->name,
              (unsigned long long)c->id, c->peer);
}

/* Before a cluster has formed a source accepts but does not read: say so,
 * once per connection, so that a producer's wait has an explanation. */
static void on_conn_opened(void *owner, inconn_t *c)
{
    source_rt_t *s = owner;
    if (s->e->opt->cluster && !s->e->formed)
        log_info("%s: connection %llu from %s is read once the cluster has formed",
                 c->listener->name, (unsigned long long)c->id, c->peer);
}

static const inconn_handler_t source_handler = {
    .opened = on_conn_opened,
    .batch_begin = batch_begin,
    .frame = on_frame,
    .batch_end = batch_end,
    .closed = on_conn_closed,
};

/* ------------------------------------------------------------ generator sources */

static void gen_finish(source_rt_t *s, const char *why)
{
    s->gen_active = 0;
    uv_idle_stop(&s->idle);
    log_info("pipeline '%s': generator source %s", s->pipe->name, why);
}

static void on_gen_idle(uv_idle_t *h)
{
    source_rt_t *s = h->data;
    engine_t *e = s->e;
    batch_begin(s);
    for (int i = 0; i < GEN_BATCH && s->gen_active && !e->x.stop_requested; i++) {
        PyObject *next = s->gen_prev ? py_call1(s->pipe->source.gen_apply, s->gen_prev)
                                     : PyObject_CallNoArgs(s->pipe->source.gen_initial);
        if (!next) {
            pyerr_report("generator");
            gen_finish(s, "raised; it is stopped");
            break;
        }
        Py_XSETREF(s->gen_prev, next);
        if (next == Py_None) {
            gen_finish(s, "returned None: it is done");
            break;
        }
        exec_message(&e->x, s->pipe, next);
        maybe_flush_midbatch(e);
    }
    batch_end(s); /* releases the GIL */
    if (e->x.stop_requested)
        begin_stop(e, 1, "--on-error=stop");
}

static void gen_start(source_rt_t *s)
{
    if (s->gen_active && !s->e->paused)
        uv_idle_start(&s->idle, on_gen_idle);
}

/* ------------------------------------------------------------ stop */

static void close_cb_noop(uv_handle_t *h) { (void)h; }

static void on_listener_closed(listener_t *l) { (void)l; }

static void finish(engine_t *e)
{
    size_t left = sinks_backlog(e) + sinks_retained(e);
    if (left && e->exit_code != ENGINE_EXIT_RESTART) {
        log_error("stopping with %zu bytes of output not delivered: the sink did not take "
                  "them within %.1f s", left, e->opt->flush_timeout_s);
        if (e->exit_code == 0)
            e->exit_code = 1;
    }
    for (size_t i = 0; i < e->app->nsinks; i++)
        sink_close(&e->sinks[i]);
    if (e->resil)
        resil_shutdown(e->resil);
    if (e->cluster)
        e->cl->shutdown(e->cluster);
    external_close(e->external);
    httpd_close(e->httpd);
    e->httpd = NULL;
    uv_close((uv_handle_t *)&e->stop_timer, close_cb_noop);
    uv_close((uv_handle_t *)&e->drain_timer, close_cb_noop);
    uv_close((uv_handle_t *)&e->stats_timer, close_cb_noop);
    uv_close((uv_handle_t *)&e->window_timer, close_cb_noop);
    uv_close((uv_handle_t *)&e->sigint, close_cb_noop);
    uv_close((uv_handle_t *)&e->sigterm, close_cb_noop);
    for (size_t i = 0; i < e->app->npipes; i++)
        if (e->app->pipes[i].source.kind == SOURCE_GEN)
            uv_close((uv_handle_t *)&e->sources[i].idle, close_cb_noop);
}

static void on_drain_timer(uv_timer_t *t)
{
    engine_t *e = t->data;
    flush_sinks(e);
    if (e->final_checkpoint) {
        if (now_ns() < e->stop_deadline_ns)
            return;
        log_warn("the last checkpoint did not complete within %.1f s; stopping without it",
                 e->opt->flush_timeout_s);
        e->final_checkpoint = 0;
    }
    if (sinks_backlog(e) + sinks_retained(e) == 0 || now_ns() >= e->stop_deadline_ns) {
        uv_timer_stop(t);
        finish(e);
    }
}

static void on_final_checkpoint(void *ctx) { ((engine_t *)ctx)->final_checkpoint = 0; }

/* Bytes a connection sent that nobody read yet (-1: unknown, counted as some). */
static long unread_bytes(inconn_t *c)
{
    uv_os_fd_t fd;
    int n = 0;
    if (buf_unread(&c->in))
        return (long)buf_unread(&c->in);
    if (uv_fileno(&c->h.handle, &fd) != 0 || ioctl(fd, FIONREAD, &n) < 0)
        return -1;
    return n;
}

/* A cluster's sources accept connections before it has formed but read
 * nothing until it has (the routing is not known yet): what such a connection
 * sent is processed once the cluster forms. A stop before that leaves it
 * unread, so the exit status must not say that all went well. */
static void check_unread_before_forming(engine_t *e)
{
    if (!e->opt->cluster || e->formed)
        return;
    size_t conns = 0;
    for (size_t i = 0; i < e->app->npipes; i++)
        if (e->sources[i].listening)
            for (inconn_t *c = e->sources[i].listener.conns; c; c = c->next)
                conns += !c->closing && unread_bytes(c) != 0;
    if (!conns)
        return;
    log_error("stopping before the cluster formed: %zu source connection(s) were accepted "
              "and never read; what they sent is not processed", conns);
    if (e->exit_code == 0)
        e->exit_code = 1;
}

static void begin_stop(engine_t *e, int code, const char *why)
{
    if (e->stopping)
        return;
    e->stopping = 1;
    e->exit_code = code;
    uv_timer_stop(&e->stop_timer);
    log_info("stopping (%s): flushing %zu bytes to the sinks", why, sinks_backlog(e));
    if (code != ENGINE_EXIT_RESTART)
        check_unread_before_forming(e);
    for (size_t i = 0; i < e->app->npipes; i++) {
        source_rt_t *s = &e->sources[i];
        if (s->listening) {
            s->listening = 0;
            listener_close(&s->listener, on_listener_closed);
        }
        if (s->gen_active) {
            s->gen_active = 0;
            uv_idle_stop(&s->idle);
        }
    }
    if (code == ENGINE_EXIT_RESTART) {
        /* What was not committed is done again after the restart. */
        finish(e);
        return;
    }
    flush_sinks(e);
    e->stop_deadline_ns = now_ns() + (uint64_t)(e->opt->flush_timeout_s * 1e9);
    if (e->resil && !e->opt->cluster && code != 2) {
        /* What ran until now is kept: a restart goes on from here. */
        e->final_checkpoint = 1;
        resil_final(e->resil, on_final_checkpoint, e);
    }
    uv_timer_start(&e->drain_timer, on_drain_timer, 0, DRAIN_POLL_MS);
}

static void on_stop_timer(uv_timer_t *t)
{
    engine_t *e = t->data;
    log_warn("the cluster did not stop within %.0f s; stopping this worker alone",
             e->opt->flush_timeout_s + 5);
    begin_stop(e, 1, "cluster stop timed out");
}

/* Stop: in a cluster, every worker together (the coordinator's FINISH
 * comes back as the finish hook); alone, this worker. */
static void stop_everywhere(engine_t *e, const char *why)
{
    if (e->cluster && e->cl->request_stop(e->cluster, why) == 0) {
        log_info("%s: asking the cluster to stop", why);
        uv_timer_start(&e->stop_timer, on_stop_timer,
                       (uint64_t)((e->opt->flush_timeout_s + 5) * 1000), 0);
        return;
    }
    begin_stop(e, 0, why);
}

static void on_signal(uv_signal_t *h, int signum)
{
    engine_t *e = h->data;
    if (e->stopping || uv_is_active((uv_handle_t *)&e->stop_timer)) {
        log_warn("second %s: exiting without waiting for the sinks", strsignal(signum));
        exit(1);
    }
    stop_everywhere(e, strsignal(signum));
}

/* A clean shutdown from the external channel: as a first signal. */
static void on_external_shutdown(void *ctx, const char *reason)
{
    engine_t *e = ctx;
    if (e->stopping || uv_is_active((uv_handle_t *)&e->stop_timer))
        return;
    stop_everywhere(e, "external clean shutdown");
}

/* ------------------------------------------------------------ the cluster's hooks */

static void hook_hold(void *ctx, int hold)
{
    engine_t *e = ctx;
    e->held = hold;
    if (!hold)
        e->formed = 1;
    apply_pause(e);
}

static void hook_batch_begin(void *ctx) { begin_batch(ctx); }

static void hook_batch_end(void *ctx)
{
    engine_t *e = ctx;
    end_batch(e);
    if (e->x.stop_requested)
        begin_stop(e, 1, "--on-error=stop");
}

static void hook_finish(void *ctx, int code, const char *why)
{
    begin_stop(ctx, code, why);
}

static void hook_progress(void *ctx) { check_backlog(ctx); }

static void hook_ran(void *ctx) { maybe_flush_midbatch(ctx); }

/* While the cluster holds the sources (forming, moving slots) nothing may
 * run that the coordinator's count of messages in flight would miss: a window
 * timer then looks again this much later. */
#define WINDOW_HELD_RETRY_MS 100

/* The windows' timers, as one batch: the windows they close are output (and
 * flushed) like the messages of a read. Re-armed for the next one due. */
static void on_window_timer(uv_timer_t *t)
{
    engine_t *e = t->data;
    if (e->stopping)
        return;
    if (e->held) {
        uv_timer_start(t, on_window_timer, WINDOW_HELD_RETRY_MS, 0);
        return;
    }
    begin_batch(e);
    int64_t now = window_now();
    int64_t next = exec_windows_due(&e->x, now);
    end_batch(e);
    if (e->x.stop_requested)
        begin_stop(e, 1, "--on-error=stop");
    else if (next != INT64_MAX)
        uv_timer_start(t, on_window_timer, next > now ? (uint64_t)((next - now) / 1000000) + 1
                                                      : 1, 0);
}

/* Arm the windows' timer if the application has window steps. */
static void start_windows(engine_t *e)
{
    for (size_t i = 0; i < e->app->npipes; i++)
        for (size_t j = 0; j < e->app->pipes[i].nsteps; j++) {
            const window_spec_t *w = e->app->pipes[i].steps[j].window;
            if (w) {
                int64_t wait = w->next_tick_ns - window_now();
                uv_timer_start(&e->window_timer, on_window_timer,
                               wait > 0 ? (uint64_t)(wait / 1000000) + 1 : 1, 0);
                return;
            }
        }
}

static void on_stats_timer(uv_timer_t *t)
{
    engine_t *e = t->data;
    if (pyerr_total()) {
        py_gil_enter();
        pyerr_summary(0);
        py_gil_leave();
    }
    log_debug("in %llu, out %llu, failed %llu, backlog %zu",
              (unsigned long long)e->x.frames_in, (unsigned long long)e->x.messages_out,
              (unsigned long long)e->x.failed, sinks_backlog(e));
}

/* ------------------------------------------------------------ start-up */

static int start_sources(engine_t *e)
{
    char err[512];
    for (size_t i = 0; i < e->app->npipes; i++) {
        source_rt_t *s = &e->sources[i];
        s->e = e;
        s->pipe = &e->app->pipes[i];
        if (s->pipe->source.kind == SOURCE_GEN) {
            uv_idle_init(&e->loop, &s->idle);
            s->idle.data = s;
        }
        if (s->pipe->source.initializer_only && e->opt->joined) {
            /* Wallaroo 0.6.1: "only the initializer handles sources"; this
             * worker gets its share of the keys through the routing. */
            log_info("source '%s' runs on the cluster's initializer only (Wallaroo 0.6 "
                     "semantics): not started here", s->pipe->name);
            continue;
        }
        if (s->pipe->source.kind == SOURCE_GEN) {
            if (s->gen_prev == Py_None) {
                log_info("pipeline '%s': generator source was done at the checkpoint",
                         s->pipe->name);
                continue;
            }
            s->gen_active = 1;
            gen_start(s);
            continue;
        }
        char name[300];
        snprintf(name, sizeof name, "source '%s'", s->pipe->name);
        /* The workers of a cluster on one machine may all be given the same
         * --in (Wallaroo's command lines are): they share the port, and a
         * connection may land on any of them, which is fine since every
         * message is routed by its key to the worker that owns it. */
        int (*start)(listener_t *, uv_loop_t *, const struct sockaddr *, const frame_spec_t *,
                     const inconn_handler_t *, void *, const char *, char *, size_t) =
            e->opt->shared_ports || e->opt->cluster ? listener_start_shared : listener_start;
        if (start(&s->listener, &e->loop, (struct sockaddr *)&s->pipe->source.addr,
                  &s->pipe->source.frame, &source_handler, s, name, err, sizeof err) < 0) {
            log_error("%s", err);
            return -1;
        }
        s->listening = 1;
        if (s->pipe->source.max_clients)
            listener_set_accept_limit(&s->listener, s->pipe->source.max_clients);
        if (e->opt->source_idle_ms)
            listener_set_idle_timeout(&s->listener, e->opt->source_idle_ms);
        if (e->paused)
            listener_pause(&s->listener);
        log_info("%s listening on %s", name, s->listener.addr);
    }
    return 0;
}

/* ------------------------------------------------------------ metrics */

typedef struct {
    engine_t *e;
    size_t i;
} engine_ref_t;

static double sink_backlog_bytes(void *ctx)
{
    engine_ref_t *r = ctx;
    return (double)sink_backlog(&r->e->sinks[r->i]);
}

/* 1 while a source that runs here is not reading (backpressure, or held by
 * the cluster while it forms or moves slots). */
static double source_paused(void *ctx)
{
    engine_ref_t *r = ctx;
    source_rt_t *s = &r->e->sources[r->i];
    return (s->listening || s->gen_active) && r->e->paused;
}

static int topology_page(void *ctx, buf_t *out) { return stopology_json(ctx, out); }

static const char *source_bound_addr(void *ctx, size_t i)
{
    engine_t *e = ctx;
    return e->sources[i].listening ? e->sources[i].listener.addr : NULL;
}

static int cluster_members(void *ctx, buf_t *out)
{
    engine_t *e = ctx;
    if (!e->cluster || !e->cl->members_json)
        return buf_append(out, "[]", 2) < 0 ? -1 : 0;
    return e->cl->members_json(e->cluster, out);
}

/* The endpoint's pages: /metrics (readable by a dashboard served by another
 * worker: docs/security.md), the topology, and the dashboard's files. */
static int add_routes(engine_t *e)
{
    e->topology = (stopology_t){.app = e->app, .cluster = e->opt->cluster != NULL,
                                .worker = e->opt->worker_name ? e->opt->worker_name
                                                              : "initializer",
                                .source_addr = source_bound_addr,
                                .members = e->opt->cluster ? cluster_members : NULL, .ctx = e};
    if (httpd_route_flags(e->httpd, "/topology.json", "application/json", topology_page,
                          &e->topology, HTTPD_ANY_ORIGIN) < 0 ||
        dashboard_serve_metrics(e->httpd, e->metrics) < 0)
        return -1;
    return 0;
}

/* The engine's own series: what exec and the app count (smetrics), and the
 * sinks' backlogs and the sources' pauses. Refs live as long as the registry. */
static int register_engine_metrics(engine_t *e, engine_ref_t *refs)
{
    const char *worker = e->opt->worker_name ? e->opt->worker_name : "initializer";
    if (smetrics_register(e->metrics, e->app, &e->x, worker) < 0)
        return -1;
    for (size_t i = 0; i < e->app->nsinks; i++) {
        char sink[300];
        snprintf(sink, sizeof sink, "%s:%d", e->app->sinks[i].host, e->app->sinks[i].port);
        const char *l[] = {"sink", sink, NULL};
        refs[i] = (engine_ref_t){e, i};
        if (metrics_gauge_fn(e->metrics, "bettong_sink_backlog_bytes",
                             "Bytes of output waiting to be written to a sink.", l,
                             sink_backlog_bytes, &refs[i]))
            return -1;
    }
    for (size_t i = 0; i < e->app->npipes; i++) {
        const char *l[] = {"pipeline", e->app->pipes[i].name, NULL};
        refs[e->app->nsinks + i] = (engine_ref_t){e, i};
        if (metrics_gauge_fn(e->metrics, "bettong_source_paused",
                             "1 while this pipeline's source runs here but does not read "
                             "(backpressure, or the cluster holds it).", l, source_paused,
                             &refs[e->app->nsinks + i]))
            return -1;
    }
    return 0;
}

/* --metrics-listen: the registry, filled before the cluster starts (it adds
 * its own), served once everything is registered. */
static int open_metrics(engine_t *e, engine_ref_t **refs)
{
    if (!e->opt->metrics_addr)
        return 0;
    e->metrics = metrics_new();
    *refs = calloc(e->app->nsinks + e->app->npipes + 1, sizeof **refs);
    if (!e->metrics || !*refs || register_engine_metrics(e, *refs) < 0) {
        log_error("metrics: cannot register the worker's metrics (out of memory?)");
        return -1;
    }
    return 0;
}

static int start_metrics(engine_t *e)
{
    if (!e->metrics)
        return 0;
    char err[600];
    e->httpd = httpd_start(&e->loop, e->opt->metrics_addr, "metrics", err, sizeof err);
    if (!e->httpd && e->opt->metrics_wallaroo) {
        char any[300];
        const char *colon = strrchr(e->opt->metrics_addr, ':');
        int hostlen = colon ? (int)(colon - e->opt->metrics_addr) : 0;
        snprintf(any, sizeof any, "%.*s:0", hostlen, e->opt->metrics_addr);
        log_warn("%s (--metrics: Wallaroo's command lines give every worker of a host the "
                 "same address); serving on a port the kernel picks instead", err);
        e->httpd = httpd_start(&e->loop, any, "metrics", err, sizeof err);
    }
    if (!e->httpd) {
        log_error("%s", err);
        return -1;
    }
    if (add_routes(e) < 0) {
        log_error("metrics: too many routes on the endpoint");
        return -1;
    }
    log_info("metrics listening on %s", httpd_addr(e->httpd));
    log_info("dashboard at http://%s/", httpd_addr(e->httpd));
    return 0;
}

/* --external: Wallaroo's external channel. Returns 0, or -1 (logged). */
static int start_external(engine_t *e)
{
    if (!e->opt->external_addr)
        return 0;
    external_config_t cfg = {.addr = e->opt->external_addr, .secret = e->opt->external_secret,
                             .secret_len = e->opt->external_secret_len,
                             .shutdown = on_external_shutdown, .ctx = e};
    char err[600];
    if (external_start(&e->external, &e->loop, &cfg, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    return 0;
}

static void start_sinks(engine_t *e)
{
    sink_options_t so = {.resilient = e->resil != NULL,
                         .writer = e->opt->worker_name ? e->opt->worker_name : "initializer",
                         .recovered = e->resil ? resil_recovered(e->resil) : 0,
                         .history_later = e->resil && e->opt->cluster,
                         .progress = on_sink_progress, .changed = on_sink_changed, .ctx = e};
    for (size_t i = 0; i < e->app->nsinks; i++) {
        char name[300];
        snprintf(name, sizeof name, "sink %s:%d", e->app->sinks[i].host, e->app->sinks[i].port);
        sink_init(&e->sinks[i], &e->loop, (struct sockaddr *)&e->app->sinks[i].addr, name,
                  &e->sink_bufs[i], &so);
    }
    if (e->resil)
        resil_start(e->resil, e->sinks, e->app->nsinks);
}

/* ------------------------------------------------------------ resilience */

static PyObject *gen_get(void *ctx, size_t pipe)
{
    return ((engine_t *)ctx)->sources[pipe].gen_prev;
}

static void gen_set(void *ctx, size_t pipe, PyObject *value)
{
    source_rt_t *s = &((engine_t *)ctx)->sources[pipe];
    Py_XINCREF(value);
    Py_XSETREF(s->gen_prev, value);
    /* Done at the checkpoint: it stays done (in a cluster the sources exist
     * already when a checkpoint is loaded). */
    if (value == Py_None && s->gen_active) {
        s->gen_active = 0;
        uv_idle_stop(&s->idle);
        log_info("pipeline '%s': generator source was done at the checkpoint", s->pipe->name);
    }
}

/* In a cluster: this worker's part of a checkpoint, to the coordinator. */
static void report_checkpoint(void *ctx, uint64_t n, int ok)
{
    engine_t *e = ctx;
    if (e->cluster)
        e->cl->checkpoint_done(e->cluster, n, ok);
}

static void claim_stream(void *ctx, uint32_t id, const char *name)
{
    engine_t *e = ctx;
    if (e->cluster)
        e->cl->claim_stream(e->cluster, id, name);
}

static void hook_stream_granted(void *ctx, uint32_t id, uint64_t pos)
{
    resil_stream_granted(((engine_t *)ctx)->resil, id, pos);
}

static uint64_t hook_stream_release(void *ctx, const char *name)
{
    return resil_stream_release(((engine_t *)ctx)->resil, name);
}

static int hook_checkpoint_sources(void *ctx, uint64_t n)
{
    return resil_checkpoint_sources(((engine_t *)ctx)->resil, n);
}

static void hook_checkpoint_state(void *ctx) { resil_checkpoint_state(((engine_t *)ctx)->resil); }

static void hook_checkpoint_end(void *ctx, uint64_t n, int complete)
{
    resil_checkpoint_end(((engine_t *)ctx)->resil, n, complete);
}

static int hook_restore(void *ctx, uint64_t k, uint64_t history, char *err, size_t errlen)
{
    engine_t *e = ctx;
    if (resil_restore(e->resil, k, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < e->app->nsinks; i++)
        sink_set_history(&e->sinks[i], history, k == 0);
    return 0;
}

static void hook_state_moved(void *ctx) { resil_force_full(((engine_t *)ctx)->resil); }

static void hook_each_stream(void *ctx, void (*each)(void *arg, const char *name, uint64_t pos),
                             void *arg)
{
    resil_each_stream(((engine_t *)ctx)->resil, each, arg);
}

static void hook_stream_known(void *ctx, const char *name, uint64_t pos)
{
    resil_stream_known(((engine_t *)ctx)->resil, name, pos);
}

static int open_resilience(engine_t *e)
{
    const engine_options_t *o = e->opt;
    if (!o->resilience)
        return 0;
    resil_options_t ro = {.dir = o->resilience_dir ? o->resilience_dir : "/tmp",
                          .worker = o->worker_name ? o->worker_name : "initializer",
                          .interval_ns = o->checkpoint_interval_ns,
                          .coordinated = o->cluster != NULL};
    resil_engine_t eng = {.ctx = e, .gen_get = gen_get, .gen_set = gen_set};
    char err[1024];
    if (!(e->resil = resil_open(&e->loop, e->app, &ro, &eng, err, sizeof err))) {
        log_error("cannot run with resilience: %s", err);
        return -1;
    }
    e->x.track_changes = 1;
    if (o->cluster) {
        resil_coordinate(e->resil, report_checkpoint, e);
        resil_claim_streams(e->resil, claim_stream);
    }
    return 0;
}

static int open_dead_letter(engine_t *e)
{
    if (e->opt->on_error != ON_ERROR_DEAD_LETTER)
        return 0;
    e->dead_letter = fopen(e->opt->dead_letter_path, "ab");
    if (!e->dead_letter) {
        log_error("cannot open dead-letter file '%s': %s", e->opt->dead_letter_path,
                  strerror(errno));
        return -1;
    }
    return 0;
}

static void report_totals(engine_t *e)
{
    double secs = (double)(now_ns() - e->started_ns) / 1e9;
    if (e->cluster)
        log_info("stopped after %.1f s: %llu messages in, %llu out, %llu forwarded to other "
                 "workers, %llu failed", secs, (unsigned long long)e->x.frames_in,
                 (unsigned long long)e->x.messages_out, (unsigned long long)e->x.forwarded,
                 (unsigned long long)e->x.failed);
    else
        log_info("stopped after %.1f s: %llu messages in, %llu out, %llu failed in user code",
                 secs, (unsigned long long)e->x.frames_in, (unsigned long long)e->x.messages_out,
                 (unsigned long long)e->x.failed);
}

int engine_run(app_t *app, const engine_options_t *opt)
{
    engine_t e;
    memset(&e, 0, sizeof e);
    e.app = app;
    e.opt = opt;
    e.started_ns = now_ns();
    uv_loop_init(&e.loop);
    signal(SIGPIPE, SIG_IGN);
    e.sources = calloc(app->npipes, sizeof *e.sources);
    e.sinks = calloc(app->nsinks ? app->nsinks : 1, sizeof *e.sinks);
    e.sink_bufs = calloc(app->nsinks ? app->nsinks : 1, sizeof *e.sink_bufs);
    if (!e.sources || !e.sinks || !e.sink_bufs || open_dead_letter(&e) < 0) {
        free(e.sources);
        free(e.sinks);
        free(e.sink_bufs);
        return 2;
    }
    e.x.app = app;
    e.x.sink_bufs = e.sink_bufs;
    e.x.on_error = opt->on_error;
    e.x.dead_letter = e.dead_letter;
    engine_ref_t *metric_refs = NULL;
    if (open_metrics(&e, &metric_refs) < 0 || open_resilience(&e) < 0 ||
        (e.metrics && resil_register_metrics(e.resil, e.metrics) < 0)) {
        metrics_free(e.metrics);
        free(metric_refs);
        uv_loop_close(&e.loop);
        free(e.sources);
        free(e.sinks);
        free(e.sink_bufs);
        if (e.dead_letter)
            fclose(e.dead_letter);
        return 2;
    }

    uv_signal_init(&e.loop, &e.sigint);
    uv_signal_init(&e.loop, &e.sigterm);
    e.sigint.data = e.sigterm.data = &e;
    uv_signal_start(&e.sigint, on_signal, SIGINT);
    uv_signal_start(&e.sigterm, on_signal, SIGTERM);
    uv_timer_init(&e.loop, &e.drain_timer);
    uv_timer_init(&e.loop, &e.stats_timer);
    uv_timer_init(&e.loop, &e.stop_timer);
    uv_timer_init(&e.loop, &e.window_timer);
    e.drain_timer.data = e.stats_timer.data = e.stop_timer.data = e.window_timer.data = &e;
    uv_timer_start(&e.stats_timer, on_stats_timer, STATS_INTERVAL_MS, STATS_INTERVAL_MS);

    start_sinks(&e);
    /* Before the cluster: the JOIN tells the others where our metrics are. */
    if (start_metrics(&e) < 0) {
        begin_stop(&e, 2, "the metrics endpoint cannot listen");
    } else if (opt->cluster) {
        /* Sources wait until the cluster has formed. */
        e.held = 1;
        e.paused = 1;
        engine_cluster_hooks_t hooks = {.ctx = &e, .hold_sources = hook_hold,
                                 .batch_begin = hook_batch_begin, .batch_end = hook_batch_end,
                                 .finish = hook_finish, .progress = hook_progress,
                                 .ran = hook_ran, .metrics = e.metrics,
                                 .metrics_addr = e.httpd ? httpd_addr(e.httpd) : NULL};
        if (e.resil) {
            hooks.checkpoint_sources = hook_checkpoint_sources;
            hooks.checkpoint_state = hook_checkpoint_state;
            hooks.checkpoint_end = hook_checkpoint_end;
            hooks.restore = hook_restore;
            hooks.each_stream = hook_each_stream;
            hooks.state_moved = hook_state_moved;
            hooks.stream_granted = hook_stream_granted;
            hooks.stream_release = hook_stream_release;
            hooks.stream_known = hook_stream_known;
        }
        char err[512];
        e.cl = opt->cluster;
        if (e.cl->start(&e.cluster, &e.loop, app, &e.x, opt->cluster_config, &hooks, err,
                        sizeof err) < 0) {
            log_error("cannot take part in a cluster: %s", err);
            begin_stop(&e, 2, "no cluster");
        }
    }
    if (e.stopping) {
        /* the metrics endpoint or the cluster could not start: no source listens */
    } else if (start_sources(&e) < 0) {
        e.exit_code = 2;
        begin_stop(&e, 2, "a source cannot listen");
    } else if (start_external(&e) < 0) {
        begin_stop(&e, 2, "the external channel cannot listen");
    } else {
        log_info("ready: application '%s', %zu pipeline(s), %zu sink(s)", app->name,
                 app->npipes, app->nsinks);
        start_windows(&e);
    }
    uv_run(&e.loop, UV_RUN_DEFAULT);

    py_gil_enter();
    pyerr_summary(1);
    for (size_t i = 0; i < app->npipes; i++)
        Py_CLEAR(e.sources[i].gen_prev);
    resil_drop_python(e.resil);
    py_gil_leave();
    report_totals(&e);
    if (e.cluster) {
        int cc = e.cl->exit_code(e.cluster);
        if (cc > e.exit_code)
            e.exit_code = cc;
        e.cl->free(e.cluster);
    }
    resil_free(e.resil);
    external_free(e.external);
    metrics_free(e.metrics);
    free(metric_refs);
    if (uv_loop_close(&e.loop) != 0)
        log_debug("event loop closed with handles still open");
    if (e.dead_letter)
        fclose(e.dead_letter);
    free(e.sources);
    free(e.sinks);
    free(e.sink_bufs);
    return e.exit_code;
}
