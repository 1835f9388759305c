#include "cluster/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "cluster/align.h"
#include "cluster/coord.h"
#include "cluster/migrate.h"
#include "cluster/clink.h"
#include "net/addr.h"
#include "net/inconn.h"
#include "net/outconn.h"
#include "py/bridge.h"
#include "py/pyerr.h"
#include "stream/stopology.h"
#include "util/hist.h"
#include "util/log.h"

#define CLOSE_POLL_MS 10
#define CLOSE_WAIT_MS 2000

/* Another worker, as this one knows it. */
typedef struct {
    unsigned index;
    int state;
    char name[CL_NAME_MAX];
    char control[CL_ADDR_MAX];
    char data[CL_ADDR_MAX];
    char metrics[CL_ADDR_MAX]; /* its metrics endpoint, "" without */
    cl_link_t link; /* our data connection to it */
    int link_open;
    uint64_t sent;      /* messages appended to the link */
    uint64_t sent_bytes; /* their bytes (frames), for the metrics */
    uint64_t processed; /* messages from it run here */
    uint64_t dropped;   /* messages for its slots dropped after it was lost */
    int known;          /* a MEMBERS listed it (its name is the coordinator's word) */
    int lost;           /* the coordinator declared it lost */
    int unreachable;    /* our link to it failed: what we would send it is dropped */
    int bye;            /* it said goodbye on its data link to us */
    uint64_t link_down_ns; /* our link to it closed then (0: it did not) */
} peer_t;

/* Per inbound connection (from the coordinator, or a peer's data link). */
typedef struct {
    authconn_t auth;  /* the handshake, until accepted */
    int proven;       /* the peer proved the secret for `hello`; judged next */
    int authed;       /* accepted: its frames are the channel's own */
    int bye;
    int at_barrier;   /* held: its barrier came, the checkpoint is not cut yet */
    cl_hello_t hello;
    uint64_t last_rx_ns;
    uint64_t opened_ns;
} conn_info_t;

struct cluster {
    uv_loop_t *loop;
    app_t *app;
    exec_t *x;
    cluster_config_t cfg;
    engine_cluster_hooks_t hooks;
    frame_spec_t spec;
    listener_t control_l, data_l;
    int control_up, data_up;
    cl_link_t to_coord;
    int to_coord_open;
    peer_t *peers[CL_MAX_WORKERS];
    unsigned self;
    int have_self;
    int self_state;                 /* as the last MEMBERS said */
    char metrics_addr[CL_ADDR_MAX]; /* our metrics endpoint, "" without */
    routing_table_t table;
    int have_table;
    uint32_t slot_runs[ROUTING_SLOTS]; /* messages run per slot since the last LOADQ */
    int started;
    int inbound_held;
    int stopping;
    int coord_lost;
    int lost_any;
    int restarting;      /* leaving to start again from the last complete checkpoint */
    uv_timer_t tick;
    uint64_t last_tick_ns;   /* loop clock of the last tick */
    uint64_t last_ping_ns;   /* wall clock of the last heartbeat sent */
    coord_t *coord;
    char token[CL_TOKEN_LEN + 1]; /* sent in our JOIN; the coordinator proves it back */
    inconn_t *coord_in;           /* the coordinator's control connection, once accepted */
    /* checkpoints (with resilience) */
    align_t align;
    uv_timer_t align_timer;  /* the snapshot runs from here, outside any batch */
    /* shutdown */
    int closing;
    unsigned open_handles;
    uint64_t close_deadline_ns;
    uv_timer_t close_timer;
    void (*done)(void *ctx);
    void *done_ctx;
};

/* The loop's cached clock: good enough for heartbeats, and free per frame. */
static uint64_t loop_ns(const cluster_t *c) { return uv_now(c->loop) * 1000000u; }

/* ------------------------------------------------------------ peers */

static peer_t *peer_get(cluster_t *c, unsigned index)
{
    if (index >= CL_MAX_WORKERS)
        return NULL;
    if (!c->peers[index]) {
        peer_t *p = calloc(1, sizeof *p);
        if (!p)
            return NULL;
        p->index = index;
        p->state = CL_JOINING;
        snprintf(p->name, sizeof p->name, "#%u", index);
        c->peers[index] = p;
    }
    return c->peers[index];
}

static void on_link_lost(outconn_t *o, const char *why);

static void on_link_progress(outconn_t *o)
{
    cluster_t *c = o->owner;
    c->hooks.progress(c->hooks.ctx);
}

/* With resilience a lost member makes the whole cluster start again from its
 * last complete checkpoint (each worker restarts; see ENGINE_EXIT_RESTART). */
static int resilient(const cluster_t *c) { return c->hooks.restore != NULL; }

static void peer_lost(cluster_t *c, peer_t *p, const char *why)
{
    if (p->lost || p->state == CL_LEFT || c->stopping)
        return;
    p->lost = 1;
    p->state = CL_LOST_STATE;
    c->lost_any = 1;
    unsigned slots = c->have_table ? routing_count(&c->table, p->index) : 0;
    if (resilient(c)) {
        log_error("cluster: worker '%s' (data %s) is lost: %s; the cluster restarts from its "
                  "last complete checkpoint", p->name, p->data, why);
        c->restarting = 1;
        c->hooks.finish(c->hooks.ctx, ENGINE_EXIT_RESTART, "a worker was lost");
        return;
    }
    log_error("cluster: worker '%s' (data %s) is lost: %s; messages for its %u slots are "
              "dropped from now on", p->name, p->data, why, slots);
}

static void open_link(cluster_t *c, peer_t *p)
{
    struct sockaddr_storage sa;
    char err[300];
    if (hostport_lookup(p->data, &sa, err, sizeof err) < 0) {
        log_error("cluster: worker '%s' has an unusable data address '%s': %s", p->name,
                  p->data, err);
        return;
    }
    char name[128];
    snprintf(name, sizeof name, "data link to '%s'", p->name);
    cl_link_init(&p->link, c->loop, (struct sockaddr *)&sa, name, on_link_progress, c,
                 &c->cfg.secret, CL_CH_DATA, c->self, c->cfg.name);
    outconn_set_final(&p->link.o, on_link_lost);
    p->link_open = 1;
    c->open_handles++;
    outconn_start(&p->link.o);
}

/* Our link to a peer closed. A peer that leaves or stops says BYE on its own
 * link to us, which may be read a moment after this: judge at the next tick
 * (link_broken). */
static void on_link_lost(outconn_t *o, const char *why)
{
    cluster_t *c = o->owner;
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++)
        if (c->peers[i] && &c->peers[i]->link.o == o && !c->peers[i]->link_down_ns)
            c->peers[i]->link_down_ns = loop_ns(c);
}

static void send_suspect(cluster_t *c, unsigned index, int ours, const char *why);
static void judge_waiting(cluster_t *c);

/* Our link to p closed without a goodbye (or failed its handshake). Links are
 * not reopened: bytes the kernel had taken may be gone, and the counts that
 * tell the coordinator when the cluster is quiet would never agree again. So
 * what we would send p is dropped and counted from now on; whether p itself is
 * lost is the coordinator's call, on its own link to p: it is told. */
static void link_broken(cluster_t *c, peer_t *p)
{
    if (p->unreachable || p->lost || p->state == CL_LEFT)
        return;
    if (resilient(c)) {
        /* What this worker sent p since the last checkpoint may be lost: the
         * cluster goes on from that checkpoint, as when a worker is lost. */
        peer_lost(c, p, p->link.failed ? p->link.why : "our data link to it closed");
        return;
    }
    p->unreachable = 1;
    unsigned slots = c->have_table ? routing_count(&c->table, p->index) : 0;
    const char *why = p->link.failed ? p->link.why : "our data link to it closed";
    log_error("cluster: cannot send to worker '%s' (data %s): %s; messages for its %u slots "
              "are dropped from here; asked the coordinator to check it", p->name, p->data, why,
              slots);
    c->lost_any = 1;
    send_suspect(c, p->index, 1, why);
}

/* ------------------------------------------------------------ forwarding */

/* With a Python exception set: report it as raised by `codec` (the message's
 * serialize/deserialize, or Bettong's encoding for a key) while handling `what`,
 * so that an exception without a traceback still says whose it is. */
static void report_codec_error(const char *codec, const char *what)
{
    char where[1200];
    snprintf(where, sizeof where, "%s (%s)", codec, what);
    pyerr_report(where);
}

/* CL_MSG: u32 frame length, type, u16 pipe, u16 step, u32 length of the key's
 * form (0: no key), the key, then the message, each serialized once straight
 * into the link's buffer. The key travels so that the owner does not call the
 * partition function again. A message with an event time from its source (a
 * connector frame's) goes as CL_MSG_ET, the event time after the step.
 * Returns 0, or -1 (nothing appended; a Python exception or out of memory),
 * -2 when it was the key's encoding that failed. */
static int put_message(cluster_t *c, buf_t *b, unsigned pipe, unsigned step, PyObject *msg,
                       PyObject *key, int64_t event_time)
{
    size_t start = cl_mark(b);
    uint8_t hdr[21] = {0, 0, 0, 0, event_time ? CL_MSG_ET : CL_MSG, (uint8_t)(pipe >> 8),
                       (uint8_t)pipe, (uint8_t)(step >> 8), (uint8_t)step};
    size_t et_len = event_time ? 8 : 0;
    for (size_t i = 0; i < et_len; i++)
        hdr[9 + i] = (uint8_t)((uint64_t)event_time >> (56 - 8 * i));
    if (buf_append(b, hdr, 13 + et_len) < 0)
        return -1;
    size_t kstart = cl_mark(b);
    if (key && app_value_encode(c->app, key, b) < 0) {
        b->len = b->off + start;
        return -2;
    }
    cl_put_be32(cl_at(b, start + 9 + et_len), cl_mark(b) - kstart);
    if (app_message_encode(c->app, msg, b) < 0 || cl_mark(b) - start - 4 > CL_MAX_FRAME) {
        b->len = b->off + start;
        return -1;
    }
    cl_put_be32(cl_at(b, start), cl_mark(b) - start - 4);
    return 0;
}

static void forward(void *ctx, unsigned owner, unsigned pipe, unsigned step, PyObject *msg,
                    PyObject *key)
{
    cluster_t *c = ctx;
    peer_t *p = owner < CL_MAX_WORKERS ? c->peers[owner] : NULL;
    if (!p || p->lost || p->unreachable || !p->link_open) {
        if (p && p->dropped++ == 0)
            log_error("cluster: dropping messages for the slots of worker '%s' (%s)", p->name,
                      p->lost ? "lost" : "unreachable");
        exec_count_failed(c->x);
        return;
    }
    buf_t *b = outconn_buffer(&p->link.o);
    size_t before = buf_unread(b);
    int rc = put_message(c, b, pipe, step, msg, key, exec_event_time(c->x));
    if (rc == 0) {
        p->sent++;
        p->sent_bytes += buf_unread(b) - before;
        return;
    }
    if (PyErr_Occurred())
        report_codec_error(rc == -2 ? "Bettong's encoding of its key" : c->app->message_encoder,
                           "a message for another worker");
    else
        log_error("cluster: a message cannot be forwarded (too large or out of memory); "
                  "dropped");
    exec_count_failed(c->x);
}

/* ------------------------------------------------------------ metrics */

/* One series per peer this worker knows, from the peer's counters, read on
 * the loop thread when /metrics is rendered. */
typedef enum { PM_SENT, PM_SENT_BYTES, PM_RUN, PM_DROPPED, PM_BACKLOG } peer_metric_t;

static double peer_value(const peer_t *p, peer_metric_t what)
{
    switch (what) {
    case PM_SENT: return (double)p->sent;
    case PM_SENT_BYTES: return (double)p->sent_bytes;
    case PM_RUN: return (double)p->processed;
    case PM_DROPPED: return (double)p->dropped;
    default: return p->link_open ? (double)outconn_backlog(&p->link.o) : 0;
    }
}

static void collect_peers(cluster_t *c, metrics_out_t *out, peer_metric_t what)
{
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++) {
        const peer_t *p = c->peers[i];
        if (!p || (c->have_self && i == c->self))
            continue;
        const char *l[] = {"peer", p->name[0] ? p->name : "?", NULL};
        metrics_emit(out, l, peer_value(p, what));
    }
}

static void collect_sent(void *ctx, metrics_out_t *o) { collect_peers(ctx, o, PM_SENT); }
static void collect_bytes(void *ctx, metrics_out_t *o) { collect_peers(ctx, o, PM_SENT_BYTES); }
static void collect_run(void *ctx, metrics_out_t *o) { collect_peers(ctx, o, PM_RUN); }
static void collect_dropped(void *ctx, metrics_out_t *o) { collect_peers(ctx, o, PM_DROPPED); }
static void collect_backlog(void *ctx, metrics_out_t *o) { collect_peers(ctx, o, PM_BACKLOG); }

static int register_metrics(cluster_t *c, metrics_t *m)
{
    return metrics_collector(m, "bettong_forwarded_messages_total",
                             "Messages this worker forwarded to a peer (their state's slot "
                             "is the peer's).", METRIC_COUNTER, collect_sent, c) ||
           metrics_collector(m, "bettong_forwarded_bytes_total",
                             "Bytes of the frames of the messages forwarded to a peer.",
                             METRIC_COUNTER, collect_bytes, c) ||
           metrics_collector(m, "bettong_forwarded_in_messages_total",
                             "Messages a peer forwarded that ran on this worker.",
                             METRIC_COUNTER, collect_run, c) ||
           metrics_collector(m, "bettong_forward_dropped_messages_total",
                             "Messages for a peer's slots dropped (the peer was lost or its "
                             "link failed).", METRIC_COUNTER, collect_dropped, c) ||
           metrics_collector(m, "bettong_link_backlog_bytes",
                             "Bytes waiting in this worker's data link to a peer.",
                             METRIC_GAUGE, collect_backlog, c);
}

void cluster_flush(cluster_t *c)
{
    if (c->to_coord_open)
        outconn_flush(&c->to_coord.o);
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++)
        if (c->peers[i] && c->peers[i]->link_open)
            outconn_flush(&c->peers[i]->link.o);
}

size_t cluster_backlog(const cluster_t *c)
{
    size_t n = 0;
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++)
        if (c->peers[i] && c->peers[i]->link_open && !c->peers[i]->lost &&
            !c->peers[i]->unreachable)
            n += outconn_backlog(&c->peers[i]->link.o);
    return n;
}

void cluster_hold_inbound(cluster_t *c, int hold)
{
    if (c->inbound_held == hold || !c->data_up)
        return;
    c->inbound_held = hold;
    if (hold) {
        listener_pause(&c->data_l);
    } else {
        uint64_t now = loop_ns(c);
        for (inconn_t *ic = c->data_l.conns; ic; ic = ic->next)
            if (ic->user)
                ((conn_info_t *)ic->user)->last_rx_ns = now;
        listener_resume(&c->data_l);
    }
}

/* ------------------------------------------------------------ to the coordinator */

static buf_t *coord_buf(cluster_t *c) { return outconn_buffer(&c->to_coord.o); }

static void send_counts(cluster_t *c, uint32_t seq)
{
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_COUNTS, CL_MAX_FRAME);
    wire_put_u32(&w, seq);
    unsigned n = 0;
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++)
        n += c->peers[i] != NULL && i != c->self;
    wire_put_u16(&w, (uint16_t)n);
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++) {
        peer_t *p = c->peers[i];
        if (!p || i == c->self)
            continue;
        wire_put_u16(&w, (uint16_t)i);
        wire_put_u64(&w, p->sent);
        wire_put_u64(&w, p->processed);
    }
    wire_end(&w);
    outconn_flush(&c->to_coord.o);
}

static void send_loads(cluster_t *c, uint32_t seq)
{
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_LOADS, CL_MAX_FRAME);
    wire_put_u32(&w, seq);
    unsigned n = 0;
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        n += c->slot_runs[s] != 0;
    wire_put_u16(&w, (uint16_t)n);
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        if (c->slot_runs[s]) {
            wire_put_u16(&w, (uint16_t)s);
            wire_put_u32(&w, c->slot_runs[s]);
        }
    wire_end(&w);
    memset(c->slot_runs, 0, sizeof c->slot_runs);
    outconn_flush(&c->to_coord.o);
}

static int owned_here(const void *ctx, unsigned slot)
{
    const cluster_t *c = ctx;
    return c->have_table && routing_owner(&c->table, slot) == c->self;
}

static void send_status(cluster_t *c, uint32_t seq)
{
    py_gil_enter();
    size_t keys = state_count_keys(&c->app->states, owned_here, c);
    py_gil_leave();
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_STATUS, CL_MAX_FRAME);
    wire_put_u32(&w, seq);
    wire_put_u64(&w, keys);
    wire_put_u64(&w, c->x->frames_in);
    wire_put_u64(&w, c->x->messages_out);
    wire_put_u64(&w, c->x->forwarded);
    wire_put_u64(&w, c->x->failed);
    wire_end(&w);
    outconn_flush(&c->to_coord.o);
}

static void lose_coordinator(cluster_t *c, const char *why)
{
    if (c->stopping || c->coord_lost)
        return;
    c->coord_lost = 1;
    if (resilient(c)) {
        log_error("cluster: %s the coordinator at %s: %s; restarting to join the cluster again "
                  "from its last complete checkpoint", c->started ? "lost" : "could not join",
                  c->cfg.control, why);
        c->restarting = 1;
        c->hooks.finish(c->hooks.ctx, ENGINE_EXIT_RESTART, "the coordinator was lost");
        return;
    }
    if (!c->started) {
        /* Never ran: refused (a name in use, a wrong secret: the coordinator's
         * log says which) or the coordinator went away before the cluster formed. */
        log_error("cluster: could not join the cluster at %s: %s (refused, or the "
                  "coordinator is gone)", c->cfg.control, why);
        c->hooks.finish(c->hooks.ctx, 2, "could not join the cluster");
        return;
    }
    c->lost_any = 1;
    log_error("cluster: lost the coordinator at %s: %s; this worker goes on with the slots "
              "it has, but the cluster cannot change or stop together", c->cfg.control, why);
}

static void on_coord_link_lost(outconn_t *o, const char *why)
{
    cluster_t *c = o->owner;
    if (cl_link_of(o)->timed_out && !c->stopping && !c->coord_lost) {
        /* Something listens there but does not answer: not worth waiting on. */
        c->coord_lost = 1;
        c->lost_any = 1;
        log_error("cluster: no coordinator answers at %s: %s; stopping", c->cfg.control, why);
        c->hooks.finish(c->hooks.ctx, 3, "no answer from the coordinator");
        return;
    }
    if (cl_link_of(o)->failed && !c->stopping && !c->coord_lost) {
        /* Not a broken connection: the coordinator could not prove the secret,
         * or refused us. Trying again (a restart included) meets the same. */
        c->coord_lost = 1;
        c->lost_any = c->started;
        log_error("cluster: could not join the cluster at %s: %s; stopping", c->cfg.control, why);
        c->hooks.finish(c->hooks.ctx, 2, "could not join the cluster");
        return;
    }
    lose_coordinator(c, why);
}

/* A fresh join token: CL_TOKEN_LEN hex digits. */
static int make_token(char out[CL_TOKEN_LEN + 1])
{
    uint8_t raw[CL_TOKEN_LEN / 2];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

/* Tell the coordinator that a data link with worker `index` closed without a
 * goodbye; it checks that worker on its own link and decides. */
static void send_suspect(cluster_t *c, unsigned index, int ours, const char *why)
{
    if (!c->to_coord_open || c->coord_lost || c->stopping)
        return;
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_SUSPECT, CL_MAX_FRAME);
    wire_put_u16(&w, (uint16_t)index);
    wire_put_u8(&w, ours ? 1 : 0);
    wire_put_str16(&w, why, strlen(why));
    wire_end(&w);
    outconn_flush(&c->to_coord.o);
}

static int join_coordinator(cluster_t *c, char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    if (hostport_lookup(c->cfg.control, &sa, err, errlen) < 0)
        return -1;
    if (make_token(c->token) < 0) {
        snprintf(err, errlen, "no random bytes for the join token");
        return -1;
    }
    cl_link_init(&c->to_coord, c->loop, (struct sockaddr *)&sa, "control link to the coordinator",
                 NULL, c, &c->cfg.secret, CL_CH_CONTROL, CL_NO_INDEX, c->cfg.name);
    outconn_set_final(&c->to_coord.o, on_coord_link_lost);
    outconn_set_sync(&c->to_coord.o);
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_JOIN, CL_MAX_FRAME);
    wire_put_str16(&w, c->cfg.name, strlen(c->cfg.name));
    wire_put_str16(&w, c->control_l.addr, strlen(c->control_l.addr));
    wire_put_str16(&w, c->data_l.addr, strlen(c->data_l.addr));
    wire_put_str16(&w, c->token, strlen(c->token));
    wire_put_str16(&w, c->metrics_addr, strlen(c->metrics_addr));
    wire_end(&w);
    c->to_coord_open = 1;
    c->open_handles++;
    outconn_start(&c->to_coord.o);
    return 0;
}

int cluster_request_stop(cluster_t *c, const char *why)
{
    if (!c->to_coord_open || c->coord_lost || !c->to_coord.o.connected)
        return -1;
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_STOP, CL_MAX_FRAME);
    wire_put_str16(&w, why, strlen(why));
    wire_end(&w);
    outconn_flush(&c->to_coord.o);
    return 0;
}

/* ------------------------------------------------------------ membership and table */

static void apply_members(cluster_t *c, wire_rd_t *r)
{
    unsigned you = wire_u16(r);
    unsigned n = wire_u16(r);
    if (!c->have_self) {
        c->self = you;
        c->have_self = 1;
        if (c->have_table)
            exec_set_router(c->x, &c->table, c->self, forward, c);
        log_info("cluster: joined as worker %u", you);
    }
    for (unsigned i = 0; i < n && !r->err; i++) {
        unsigned index = wire_u16(r);
        int state = wire_u8(r);
        char name[CL_NAME_MAX], control[CL_ADDR_MAX], data[CL_ADDR_MAX],
            metrics[CL_ADDR_MAX];
        cl_str16(r, name, sizeof name);
        cl_str16(r, control, sizeof control);
        cl_str16(r, data, sizeof data);
        cl_str16(r, metrics, sizeof metrics);
        if (!r->err && index == c->self)
            c->self_state = state;
        if (r->err || index == c->self)
            continue;
        peer_t *p = peer_get(c, index);
        if (!p)
            continue;
        snprintf(p->name, sizeof p->name, "%s", name);
        p->known = 1;
        snprintf(p->control, sizeof p->control, "%s", control);
        snprintf(p->data, sizeof p->data, "%s", data);
        snprintf(p->metrics, sizeof p->metrics, "%s", metrics);
        if (state == CL_LOST_STATE) {
            peer_lost(c, p, "reported by the coordinator");
            continue;
        }
        if (!p->lost)
            p->state = state;
        if (!p->link_open && !p->lost &&
            (state == CL_JOINING || state == CL_ACTIVE || state == CL_LEAVING))
            open_link(c, p);
    }
    if (!r->err)
        judge_waiting(c);
}

static void apply_table(cluster_t *c, wire_rd_t *r)
{
    uint32_t seq = wire_u32(r);
    routing_table_t t;
    memset(&t, 0, sizeof t);
    unsigned max = 0;
    for (unsigned s = 0; s < ROUTING_SLOTS; s++) {
        t.owner[s] = wire_u16(r);
        if (t.owner[s] + 1u > max)
            max = t.owner[s] + 1u;
    }
    if (r->err) {
        log_error("cluster: malformed routing table from the coordinator; ignored");
        return;
    }
    t.workers = max;
    int first = !c->have_table;
    c->table = t;
    c->have_table = 1;
    if (first) {
        /* The state made up front (declared partition keys) of slots that other
         * workers own: they make their own. */
        py_gil_enter();
        migrate_drop_unowned(c->app, owned_here, c);
        py_gil_leave();
        exec_set_router(c->x, &c->table, c->self, forward, c);
    }
    log_debug("cluster: routing table %u: %u slots here", seq, routing_count(&c->table, c->self));
    cl_put_u32(coord_buf(c), CL_ACK, seq);
    outconn_flush(&c->to_coord.o);
}

/* ------------------------------------------------------------ moving slots */

static void migrate(cluster_t *c, wire_rd_t *r)
{
    unsigned n = wire_u16(r);
    py_gil_enter();
    for (unsigned i = 0; i < n && !r->err; i++) {
        unsigned slot = wire_u16(r);
        unsigned to = wire_u16(r);
        peer_t *p = to < CL_MAX_WORKERS ? c->peers[to] : NULL;
        if (r->err || slot >= ROUTING_SLOTS)
            break;
        if (!p || !p->link_open || p->lost || p->unreachable) {
            log_error("cluster: cannot move slot %u to worker %u: no link to it", slot, to);
            continue;
        }
        if (migrate_put_slot(c->app, outconn_buffer(&p->link.o), slot) < 0)
            log_error("cluster: the state of slot %u is too large to move to '%s'; it is lost",
                      slot, p->name);
    }
    py_gil_leave();
    if (c->hooks.state_moved)
        c->hooks.state_moved(c->hooks.ctx);
    log_info("cluster: moved %u slots away", n);
    cluster_flush(c);
}

/* ------------------------------------------------------------ checkpoints */

static void send_ckpt_done(cluster_t *c, uint64_t n, int ok)
{
    if (!c->to_coord_open)
        return;
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_CKPT_DONE, CL_MAX_FRAME);
    wire_put_u64(&w, n);
    wire_put_u8(&w, ok ? 1 : 0);
    wire_end(&w);
    outconn_flush(&c->to_coord.o);
}

void cluster_checkpoint_done(cluster_t *c, uint64_t n, int ok) { send_ckpt_done(c, n, ok); }

void cluster_claim_stream(cluster_t *c, uint32_t id, const char *name)
{
    if (!c->to_coord_open)
        return;
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_CLAIM, CL_MAX_FRAME);
    wire_put_u32(&w, id);
    wire_put_str16(&w, name, strlen(name));
    wire_end(&w);
    outconn_flush(&c->to_coord.o);
}

/* CL_RELEASE: a stream of ours went on at another worker. */
static void release_stream(cluster_t *c, wire_rd_t *r)
{
    uint32_t id = wire_u32(r);
    char name[256];
    cl_str16(r, name, sizeof name);
    if (r->err || !c->hooks.stream_release)
        return;
    uint64_t pos = c->hooks.stream_release(c->hooks.ctx, name);
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_RELEASED, CL_MAX_FRAME);
    wire_put_u32(&w, id);
    wire_put_u64(&w, pos);
    wire_end(&w);
    outconn_flush(&c->to_coord.o);
}

/* Participants lost since the checkpoint began send no barrier. */
static void gone_peers(cluster_t *c, uint8_t gone[CL_MAX_WORKERS])
{
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++)
        gone[i] = c->peers[i] && c->peers[i]->lost;
}

static void on_aligned(uv_timer_t *t)
{
    cluster_t *c = t->data;
    uint8_t gone[CL_MAX_WORKERS];
    gone_peers(c, gone);
    if (!align_ready(&c->align, gone))
        return;
    c->hooks.checkpoint_state(c->hooks.ctx);
    align_done(&c->align);
    for (inconn_t *ic = c->data_l.conns; ic; ic = ic->next) {
        conn_info_t *ci = ic->user;
        if (ci && ci->at_barrier) {
            ci->at_barrier = 0;
            ci->last_rx_ns = loop_ns(c);
            inconn_resume(ic);
        }
    }
    c->hooks.hold_sources(c->hooks.ctx, 0);
}

/* The snapshot waits for the loop's next turn: a barrier is read inside a
 * batch of its link, and the held inputs resume from outside any batch. */
static void maybe_aligned(cluster_t *c)
{
    uint8_t gone[CL_MAX_WORKERS];
    gone_peers(c, gone);
    if (align_ready(&c->align, gone))
        uv_timer_start(&c->align_timer, on_aligned, 0, 0);
}

/* CL_CKPT: cut the sources' positions, hold the sources, send barrier n to
 * every other participant after what was forwarded to it before. */
static void start_checkpoint(cluster_t *c, wire_rd_t *r)
{
    uint64_t n = wire_u64(r);
    unsigned count = wire_u16(r);
    uint8_t part[CL_MAX_WORKERS];
    memset(part, 0, sizeof part);
    for (unsigned i = 0; i < count && !r->err; i++) {
        unsigned w = wire_u16(r);
        if (w < CL_MAX_WORKERS)
            part[w] = 1;
    }
    if (r->err)
        return;
    if (!c->hooks.checkpoint_sources) {
        log_error("cluster: the coordinator runs checkpoints but this worker runs without "
                  "--run-with-resilience");
        send_ckpt_done(c, n, 0);
        return;
    }
    c->align.self = c->self;
    if (align_cut(&c->align, n, part) < 0 || c->hooks.checkpoint_sources(c->hooks.ctx, n) < 0) {
        send_ckpt_done(c, n, 0);
        return;
    }
    c->hooks.hold_sources(c->hooks.ctx, 1);
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++) {
        peer_t *p = c->peers[i];
        if (!part[i] || i == c->self || !p || !p->link_open || p->lost || p->unreachable)
            continue;
        wire_wr_t w;
        wire_begin(&w, outconn_buffer(&p->link.o), CL_BARRIER, CL_MAX_FRAME);
        wire_put_u64(&w, n);
        wire_end(&w);
    }
    cluster_flush(c);
    maybe_aligned(c);
}

typedef struct {
    wire_wr_t *w;
    size_t n;
} stream_list_t;

static void count_stream(void *arg, const char *name, uint64_t pos)
{
    ((stream_list_t *)arg)->n++;
}

static void put_stream(void *arg, const char *name, uint64_t pos)
{
    stream_list_t *l = arg;
    if (l->n++ >= 0xffff)
        return;
    wire_put_u64(l->w, pos);
    wire_put_str16(l->w, name, strlen(name));
}

/* CL_RESTORE: load checkpoint k (the cluster's last complete one) before the
 * sources start. */
static void restore(cluster_t *c, uint64_t k, uint64_t history)
{
    char err[1024] = "";
    int ok = c->hooks.restore &&
             c->hooks.restore(c->hooks.ctx, k, history, err, sizeof err) == 0;
    if (ok && k > 0) {
        /* The files hold the slots this worker had when they were written;
         * the table of checkpoint k says which are its own. */
        py_gil_enter();
        migrate_drop_unowned(c->app, owned_here, c);
        py_gil_leave();
    }
    if (!ok)
        log_error("cluster: cannot restore checkpoint %llu: %s", (unsigned long long)k,
                  c->hooks.restore ? err : "this worker runs without --run-with-resilience");
    stream_list_t list = {0};
    if (ok)
        c->hooks.each_stream(c->hooks.ctx, count_stream, &list);
    wire_wr_t w;
    wire_begin(&w, coord_buf(c), CL_RESTORED, CL_MAX_FRAME);
    wire_put_u64(&w, k);
    wire_put_u8(&w, ok);
    wire_put_u16(&w, (uint16_t)(list.n > 0xffff ? 0xffff : list.n));
    list.w = &w;
    list.n = 0;
    if (ok)
        c->hooks.each_stream(c->hooks.ctx, put_stream, &list);
    wire_end(&w);
    outconn_flush(&c->to_coord.o);
}

/* CL_STREAMS: where every resumable stream was at the restored checkpoint. */
static void streams_known(cluster_t *c, wire_rd_t *r)
{
    unsigned n = wire_u16(r);
    for (unsigned i = 0; i < n && !r->err; i++) {
        uint64_t pos = wire_u64(r);
        char name[256];
        cl_str16(r, name, sizeof name);
        if (!r->err && name[0] && c->hooks.stream_known)
            c->hooks.stream_known(c->hooks.ctx, name, pos);
    }
}

/* ------------------------------------------------------------ inbound connections */

static void conn_opened(void *owner, inconn_t *ic)
{
    conn_info_t *ci = calloc(1, sizeof *ci);
    if (!ci) {
        inconn_close(ic, "out of memory");
        return;
    }
    ci->last_rx_ns = ci->opened_ns = loop_ns(owner);
    ic->user = ci;
    inconn_set_max_payload(ic, AUTH_MAX_FRAME);
}

/* Whether the coordinator's control connection may be this one: it must prove
 * the token of our JOIN, and there is only one. Returns NULL or why not. */
static const char *judge_control(cluster_t *c, const cl_hello_t *h)
{
    if (h->channel != CL_CH_CONTROL)
        return "not a control connection (wrong port?)";
    if (strcmp(h->name, c->token) != 0)
        return "not the coordinator this worker joined";
    if (c->coord_in)
        return "this worker already has its coordinator's connection";
    return NULL;
}

/* Whether a data connection proven as h may be worker h->index's link: the
 * index must be a current member with that name in the coordinator's MEMBERS.
 * Returns 1 (yes), 0 (an index the last MEMBERS did not list: ask again at the
 * next one), -1 (no: why says why). */
static int judge_data(cluster_t *c, const cl_hello_t *h, char *why, size_t cap)
{
    if (h->channel != CL_CH_DATA) {
        snprintf(why, cap, "not a data connection (wrong port?)");
        return -1;
    }
    if (h->index >= CL_MAX_WORKERS || (c->have_self && h->index == c->self)) {
        snprintf(why, cap, "claims worker index %u, which is not another worker's", h->index);
        return -1;
    }
    peer_t *p = c->peers[h->index];
    if (!c->have_self || !p || !p->known)
        return 0;
    if (strcmp(p->name, h->name) != 0) {
        snprintf(why, cap, "claims to be worker %u as '%s', but worker %u is '%s'", h->index,
                 h->name, h->index, p->name);
        return -1;
    }
    if (p->lost || p->state == CL_LEFT || p->state == CL_LOST_STATE) {
        snprintf(why, cap, "worker %u ('%s') is no longer a member", h->index, p->name);
        return -1;
    }
    return 1;
}

static void accept_data(cluster_t *c, inconn_t *ic, conn_info_t *ci)
{
    ci->authed = 1;
    ci->last_rx_ns = loop_ns(c);
    cl_welcome(ic, CL_MAX_FRAME);
    log_debug("%s: data link from worker %u ('%s') accepted", ic->listener->name,
              ci->hello.index, ci->hello.name);
}

/* A data connection that waits for the MEMBERS that lists its worker. */
static void judge_waiting(cluster_t *c)
{
    for (inconn_t *ic = c->data_l.conns; ic; ic = ic->next) {
        conn_info_t *ci = ic->user;
        if (!ci || !ci->proven || ci->authed || ic->lingering || ic->closing)
            continue;
        char why[200];
        int ok = judge_data(c, &ci->hello, why, sizeof why);
        if (ok > 0)
            accept_data(c, ic, ci);
        else if (ok < 0)
            cl_refuse(ic, "%s", why);
    }
}

/* A frame of a connection that is not accepted yet: the handshake, then the
 * judgement of the identity it proved. Returns the frame callback's result. */
static int handshake_frame(cluster_t *c, inconn_t *ic, conn_info_t *ci, int channel,
                           const uint8_t *body, size_t len)
{
    if (ci->proven) {
        log_warn("%s: closing connection from %s: it sent a frame before it was accepted",
                 ic->listener->name, ic->peer);
        return -1;
    }
    int rc = cl_accept_frame(&ci->auth, &c->cfg.secret, ic, body, len, &ci->hello);
    if (rc != CL_ACC_DONE)
        return rc == CL_ACC_CLOSE ? -1 : 0;
    ci->proven = 1;
    if (channel == CL_CH_CONTROL) {
        const char *why = judge_control(c, &ci->hello);
        if (why) {
            cl_refuse(ic, "%s", why);
            return 0;
        }
        ci->authed = 1;
        c->coord_in = ic;
        cl_welcome(ic, CL_MAX_FRAME);
        return 0;
    }
    char why[200];
    int ok = judge_data(c, &ci->hello, why, sizeof why);
    if (ok > 0)
        accept_data(c, ic, ci);
    else if (ok < 0)
        cl_refuse(ic, "%s", why);
    return 0;
}

static int control_frame(void *owner, inconn_t *ic, const uint8_t *frame, size_t frame_len,
                         const uint8_t *payload, size_t payload_len)
{
    cluster_t *c = owner;
    conn_info_t *ci = ic->user;
    ci->last_rx_ns = loop_ns(c);
    if (!ci->authed)
        return handshake_frame(c, ic, ci, CL_CH_CONTROL, payload, payload_len);
    wire_rd_t r;
    wire_rd_init(&r, payload, payload_len);
    uint8_t type = wire_u8(&r);
    switch (type) {
    case CL_PING:
        break;
    case CL_BYE:
        ci->bye = 1;
        break;
    case CL_MEMBERS:
        apply_members(c, &r);
        break;
    case CL_TABLE:
        apply_table(c, &r);
        break;
    case CL_PAUSE:
        c->hooks.hold_sources(c->hooks.ctx, 1);
        send_counts(c, wire_u32(&r));
        break;
    case CL_COUNTQ:
        send_counts(c, wire_u32(&r));
        break;
    case CL_MIGRATE:
        migrate(c, &r);
        break;
    case CL_RESUME:
        if (!c->started)
            log_info("cluster: formed; starting the sources");
        c->started = 1;
        c->hooks.hold_sources(c->hooks.ctx, 0);
        break;
    case CL_STATUSQ:
        send_status(c, wire_u32(&r));
        break;
    case CL_LOADQ:
        send_loads(c, wire_u32(&r));
        break;
    case CL_CKPT:
        start_checkpoint(c, &r);
        break;
    case CL_CKPT_END: {
        uint64_t n = wire_u64(&r);
        int complete = wire_u8(&r);
        if (!r.err && c->hooks.checkpoint_end)
            c->hooks.checkpoint_end(c->hooks.ctx, n, complete);
        break;
    }
    case CL_RESTORE: {
        uint64_t k = wire_u64(&r), history = wire_u64(&r);
        if (!r.err)
            restore(c, k, history);
        break;
    }
    case CL_STREAMS:
        streams_known(c, &r);
        break;
    case CL_GRANT: {
        uint32_t id = wire_u32(&r);
        uint64_t pos = wire_u64(&r);
        if (!r.err && c->hooks.stream_granted)
            c->hooks.stream_granted(c->hooks.ctx, id, pos);
        break;
    }
    case CL_RELEASE:
        release_stream(c, &r);
        break;
    case CL_FINISH: {
        /* Quiet now: peers closing from here on are stopping too. */
        int code = r.p < r.end ? wire_u8(&r) : 0;
        c->stopping = 1;
        c->hooks.finish(c->hooks.ctx, code, code ? "the cluster cannot go on" : "the cluster is "
                        "stopping");
        break;
    }
    case CL_LEAVE:
        c->stopping = 1;
        c->hooks.finish(c->hooks.ctx, 0, "this worker left the cluster");
        break;
    case CL_LOST: {
        unsigned index = wire_u16(&r);
        char why[200];
        cl_str16(&r, why, sizeof why);
        peer_t *p = index < CL_MAX_WORKERS ? c->peers[index] : NULL;
        if (p && index != c->self)
            peer_lost(c, p, why);
        break;
    }
    default:
        log_warn("%s: unknown message type %u from the coordinator; closing", ic->listener->name,
                 type);
        return -1;
    }
    if (r.err) {
        log_warn("%s: malformed message %u from the coordinator; closing", ic->listener->name,
                 type);
        return -1;
    }
    return 0;
}

static void control_closed(void *owner, inconn_t *ic)
{
    cluster_t *c = owner;
    conn_info_t *ci = ic->user;
    if (ci && ci->authed && !ci->bye)
        lose_coordinator(c, "its connection closed");
    if (c->coord_in == ic)
        c->coord_in = NULL;
    free(ci);
    ic->user = NULL;
}

static const inconn_handler_t control_handler = {
    .opened = conn_opened,
    .frame = control_frame,
    .closed = control_closed,
};

static void data_batch_begin(void *owner)
{
    cluster_t *c = owner;
    c->hooks.batch_begin(c->hooks.ctx);
}

static void data_batch_end(void *owner)
{
    cluster_t *c = owner;
    c->hooks.batch_end(c->hooks.ctx);
    if (c->to_coord_open)
        outconn_flush(&c->to_coord.o);
}

static int data_frame(void *owner, inconn_t *ic, const uint8_t *frame, size_t frame_len,
                      const uint8_t *payload, size_t payload_len)
{
    cluster_t *c = owner;
    conn_info_t *ci = ic->user;
    ci->last_rx_ns = loop_ns(c);
    if (!ci->authed)
        return handshake_frame(c, ic, ci, CL_CH_DATA, payload, payload_len);
    wire_rd_t r;
    wire_rd_init(&r, payload, payload_len);
    uint8_t type = wire_u8(&r);
    peer_t *p = c->peers[ci->hello.index];
    switch (type) {
    case CL_MSG:
    case CL_MSG_ET: {
        unsigned pipe = wire_u16(&r);
        unsigned step = wire_u16(&r);
        int64_t event_time = type == CL_MSG_ET ? (int64_t)wire_u64(&r) : 0;
        uint32_t klen = wire_u32(&r);
        const uint8_t *kdata = wire_bytes(&r, klen);
        size_t n;
        const uint8_t *data = wire_rest(&r, &n);
        if (r.err)
            return -1;
        if (p)
            p->processed++;
        PyObject *key = klen ? app_value_decode(c->app, kdata, klen) : NULL;
        PyObject *msg = !klen || key ? app_message_decode(c->app, data, n) : NULL;
        int rc = 0;
        if (msg) {
            rc = exec_forwarded(c->x, pipe, step, msg, key, event_time);
            c->hooks.ran(c->hooks.ctx);
        }
        else {
            report_codec_error(klen && !key ? "Bettong's encoding of its key"
                                              : c->app->message_decoder,
                               "a message from another worker");
            exec_count_failed(c->x);
        }
        Py_XDECREF(key);
        Py_XDECREF(msg);
        if (rc < 0) {
            log_warn("%s: a message from '%s' names a step this application does not have; "
                     "closing (do all workers run the same application?)", ic->listener->name,
                     ci->hello.name);
            return -1;
        }
        return 0;
    }
    case CL_STATE:
        if (migrate_install(c->app, &r) < 0) {
            log_warn("%s: malformed slot state from '%s'; closing", ic->listener->name,
                     ci->hello.name);
            return -1;
        }
        if (c->hooks.state_moved)
            c->hooks.state_moved(c->hooks.ctx);
        cl_put_u32(coord_buf(c), CL_INSTALLED, 1);
        return 0;
    case CL_BARRIER: {
        uint64_t n = wire_u64(&r);
        if (r.err || align_barrier(&c->align, n, ci->hello.index) < 0) {
            log_warn("%s: unexpected barrier %llu from '%s'; closing", ic->listener->name,
                     (unsigned long long)n, ci->hello.name);
            return -1;
        }
        /* What follows on this link belongs after the checkpoint. */
        ci->at_barrier = 1;
        inconn_pause(ic);
        maybe_aligned(c);
        return 1;
    }
    case CL_PING:
        return 0;
    case CL_BYE:
        ci->bye = 1;
        if (p)
            p->bye = 1;
        return 0;
    default:
        log_warn("%s: unknown message type %u from '%s'; closing", ic->listener->name, type,
                 ci->hello.name);
        return -1;
    }
}

static void data_closed(void *owner, inconn_t *ic)
{
    cluster_t *c = owner;
    conn_info_t *ci = ic->user;
    /* Whoever proves the secret can open a data link as a member and close it:
     * that alone must not make this worker give up on the member. The
     * coordinator checks the member on its own link and decides. */
    if (ci && ci->authed && !ci->bye && !c->stopping) {
        peer_t *p = c->peers[ci->hello.index];
        if (p && !p->lost) {
            log_warn("%s: the data link from worker '%s' (%s) closed without a goodbye; asked "
                     "the coordinator to check it", ic->listener->name, p->name, ic->peer);
            send_suspect(c, p->index, 0, "its data link to this worker closed without a goodbye");
        }
    }
    free(ci);
    ic->user = NULL;
}

static const inconn_handler_t data_handler = {
    .opened = conn_opened,
    .batch_begin = data_batch_begin,
    .frame = data_frame,
    .batch_end = data_batch_end,
    .closed = data_closed,
};

/* ------------------------------------------------------------ heartbeats */

static void expire_silent(cluster_t *c, listener_t *l, uint64_t now)
{
    uint64_t limit = (uint64_t)c->cfg.timeout_ms * 1000000u;
    inconn_t *ic = l->conns;
    while (ic) {
        inconn_t *next = ic->next;
        conn_info_t *ci = ic->user;
        if (ci && ci->authed && !ic->paused && !l->paused && now - ci->last_rx_ns > limit) {
            char why[96];
            snprintf(why, sizeof why, "nothing heard from it for %.1f s",
                     (double)(now - ci->last_rx_ns) / 1e9);
            lose_coordinator(c, why);
            inconn_close(ic, NULL);
        }
        ic = next;
    }
}

/* A frame with no fields (PING, BYE) to the coordinator and every live peer. */
static void tell_everyone(cluster_t *c, uint8_t type)
{
    if (c->to_coord_open && !c->coord_lost)
        cl_put_empty(coord_buf(c), type);
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++) {
        peer_t *p = c->peers[i];
        if (p && p->link_open && !p->lost && !p->unreachable)
            cl_put_empty(outconn_buffer(&p->link.o), type);
    }
    cluster_flush(c);
}

void cluster_keepalive(cluster_t *c)
{
    uint64_t now = now_ns();
    if (now - c->last_ping_ns < (uint64_t)cl_heartbeat_ms(c->cfg.timeout_ms) * 1000000u)
        return;
    c->last_ping_ns = now;
    tell_everyone(c, CL_PING);
    if (c->coord)
        coord_keepalive(c->coord);
}

/* Our own loop was held up (a long batch of user code): what peers sent
 * meanwhile is still unread, so silence measured now means nothing. Start
 * their clocks again instead of judging them. */
static void forgive_silence(listener_t *l, uint64_t now)
{
    for (inconn_t *ic = l->conns; ic; ic = ic->next)
        if (ic->user)
            ((conn_info_t *)ic->user)->last_rx_ns = now;
}

/* A connection that has not finished the handshake (and been accepted) in
 * time is closed, so that silent or half-open peers hold nothing for long. */
static void expire_handshakes(cluster_t *c, listener_t *l, uint64_t now)
{
    uint64_t limit = (uint64_t)c->cfg.handshake_ms * 1000000u;
    inconn_t *ic = l->conns;
    while (ic) {
        inconn_t *next = ic->next;
        conn_info_t *ci = ic->user;
        /* Not while we do not read it (backpressure): its handshake may be unread. */
        if (ci && !ci->authed && !ic->paused && !l->paused && now - ci->opened_ns > limit)
            inconn_close(ic, ci->proven ? "its worker index is not a member (no MEMBERS named "
                                          "it within the handshake deadline)"
                                        : "no handshake within the deadline");
        ic = next;
    }
}

/* Our own links wait for their acceptors' handshakes no longer than theirs
 * wait for ours: a coordinator or peer that takes the connection and says
 * nothing fails the link (the coordinator's: this worker stops with 3). */
static void check_link_deadlines(cluster_t *c)
{
    if (c->stopping)
        return;
    if (c->to_coord_open && !c->coord_lost)
        cl_link_check_deadline(&c->to_coord, c->cfg.handshake_ms);
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++) {
        peer_t *p = c->peers[i];
        if (p && p->link_open && !p->lost && !p->unreachable)
            cl_link_check_deadline(&p->link, c->cfg.handshake_ms);
    }
}

static void on_tick(uv_timer_t *t)
{
    cluster_t *c = t->data;
    c->last_ping_ns = now_ns();
    tell_everyone(c, CL_PING);
    uint64_t now = loop_ns(c);
    uint64_t hb = (uint64_t)cl_heartbeat_ms(c->cfg.timeout_ms) * 1000000u;
    int late = c->last_tick_ns && now - c->last_tick_ns > 2 * hb;
    c->last_tick_ns = now;
    if (late) {
        if (c->control_up)
            forgive_silence(&c->control_l, now);
        return;
    }
    if (c->control_up)
        expire_handshakes(c, &c->control_l, now);
    if (c->data_up)
        expire_handshakes(c, &c->data_l, now);
    check_link_deadlines(c);
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++) {
        peer_t *p = c->peers[i];
        if (p && p->link_down_ns && !p->bye && !c->stopping && now - p->link_down_ns > 500000000u)
            link_broken(c, p);
    }
    /* Silence is judged on the control links only: their heartbeats are written
     * at once even during a long batch, while a data link's may wait behind a
     * write in progress. A silent peer is reported by the coordinator (LOST);
     * a peer whose connection closes is seen here at once. */
    if (c->control_up)
        expire_silent(c, &c->control_l, now);
}

/* ------------------------------------------------------------ start and stop */

static int listen_on(cluster_t *c, listener_t *l, const char *addr, const inconn_handler_t *h,
                     const char *what, char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    if (cl_listen_address(addr, &c->cfg.secret, what, &sa, err, errlen) < 0)
        return -1;
    char name[128];
    snprintf(name, sizeof name, "cluster %s", what);
    if (listener_start(l, c->loop, (struct sockaddr *)&sa, &c->spec, h, c, name, err, errlen) < 0)
        return -1;
    listener_set_tls(l, c->cfg.secret.tls_server);
    return 0;
}

int cluster_start(cluster_t **out, uv_loop_t *loop, app_t *app, exec_t *x,
                  const cluster_config_t *cfg, const engine_cluster_hooks_t *hooks, char *err,
                  size_t errlen)
{
    cluster_t *c = calloc(1, sizeof *c);
    *out = c;
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->loop = loop;
    c->app = app;
    c->x = x;
    c->cfg = *cfg;
    c->hooks = *hooks;
    snprintf(c->metrics_addr, sizeof c->metrics_addr, "%s",
             hooks->metrics_addr ? hooks->metrics_addr : "");
    c->hooks.metrics_addr = NULL; /* (the copy above is what lives on) */
    if (hooks->metrics && register_metrics(c, hooks->metrics) < 0) {
        snprintf(err, errlen, "cannot register the cluster's metrics (out of memory)");
        return -1;
    }
    cl_frame_spec(&c->spec);
    uv_timer_init(loop, &c->tick);
    c->tick.data = c;
    c->open_handles++;
    uv_timer_init(loop, &c->align_timer);
    c->align_timer.data = c;
    c->open_handles++;
    if (c->cfg.timeout_ms == 0)
        c->cfg.timeout_ms = CL_DEFAULT_TIMEOUT_MS;
    if (c->cfg.handshake_ms == 0)
        c->cfg.handshake_ms = CL_HANDSHAKE_MS;
    if (cfg->secret.len == 0)
        log_warn("cluster: no cluster secret configured (--cluster-secret or "
                 "BETTONG_CLUSTER_SECRET): only peers on loopback are accepted");
    if (listen_on(c, &c->control_l, cfg->my_control, &control_handler, "control", err, errlen) < 0)
        return -1;
    c->control_up = 1;
    c->open_handles++;
    if (listen_on(c, &c->data_l, cfg->my_data, &data_handler, "data", err, errlen) < 0)
        return -1;
    c->data_up = 1;
    c->open_handles++;
    if (cfg->initializer) {
        if (coord_start(&c->coord, loop, &c->cfg, err, errlen) < 0)
            return -1;
        /* --control H:0 asks the kernel for a port: join where it listens. */
        snprintf(c->cfg.control, sizeof c->cfg.control, "%s", coord_address(c->coord));
    }
    exec_count_slot_runs(x, c->slot_runs);
    if (join_coordinator(c, err, errlen) < 0)
        return -1;
    unsigned hb = cl_heartbeat_ms(c->cfg.timeout_ms);
    /* From now on: a first tick held up by a long first batch is late, and
     * forgives the silence it could not read, like any other. */
    c->last_tick_ns = loop_ns(c);
    uv_timer_start(&c->tick, on_tick, hb, hb);
    log_info("cluster: worker '%s' (control %s, data %s) joining the cluster at %s", cfg->name,
             c->control_l.addr, c->data_l.addr, cfg->control);
    if (strncmp(c->data_l.addr, "127.", 4) == 0 && strncmp(cfg->control, "127.", 4) != 0)
        log_warn("cluster: this worker's addresses are on loopback but the coordinator is at "
                 "%s: workers on other machines cannot reach it; give --my-control and "
                 "--my-data", cfg->control);
    return 0;
}

int cluster_exit_code(const cluster_t *c) { return c && c->lost_any ? 3 : 0; }

static void handle_closed(cluster_t *c)
{
    if (--c->open_handles == 0 && c->done) {
        void (*done)(void *) = c->done;
        c->done = NULL;
        done(c->done_ctx);
    }
}

static void on_listener_closed(listener_t *l)
{
    cluster_t *c = l == NULL ? NULL : (cluster_t *)l->owner;
    if (c)
        handle_closed(c);
}

static void on_outconn_closed(outconn_t *o) { handle_closed(o->owner); }

static void on_timer_closed(uv_handle_t *h) { handle_closed(h->data); }

static void close_everything(cluster_t *c)
{
    uv_timer_stop(&c->close_timer);
    uv_close((uv_handle_t *)&c->close_timer, NULL);
    if (c->control_up)
        listener_close(&c->control_l, on_listener_closed);
    if (c->data_up)
        listener_close(&c->data_l, on_listener_closed);
    if (c->to_coord_open)
        outconn_close(&c->to_coord.o, on_outconn_closed);
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++)
        if (c->peers[i] && c->peers[i]->link_open)
            outconn_close(&c->peers[i]->link.o, on_outconn_closed);
    uv_close((uv_handle_t *)&c->tick, on_timer_closed);
    uv_close((uv_handle_t *)&c->align_timer, on_timer_closed);
    if (c->coord)
        coord_shutdown(c->coord, c->restarting);
}

static size_t outgoing_backlog(cluster_t *c)
{
    size_t n = cluster_backlog(c);
    if (c->to_coord_open && c->to_coord.o.connected)
        n += outconn_backlog(&c->to_coord.o);
    return n;
}

/* Wait (briefly) until the goodbyes are written, then close. */
static void on_close_poll(uv_timer_t *t)
{
    cluster_t *c = t->data;
    cluster_flush(c);
    if (outgoing_backlog(c) == 0 || now_ns() >= c->close_deadline_ns)
        close_everything(c);
}

void cluster_shutdown(cluster_t *c, void (*done)(void *ctx), void *ctx)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->stopping = 1;
    c->done = done;
    c->done_ctx = ctx;
    uv_timer_stop(&c->tick);
    /* A restart leaves without a goodbye: the others must take it as lost
     * and restart too. */
    if (!c->restarting)
        tell_everyone(c, CL_BYE);
    /* A restart does not wait for its links to drain: what they hold is done
     * again after it. */
    c->close_deadline_ns = now_ns() + (c->restarting ? 0 : (uint64_t)CLOSE_WAIT_MS * 1000000u);
    uv_timer_init(c->loop, &c->close_timer);
    c->close_timer.data = c;
    uv_timer_start(&c->close_timer, on_close_poll, 0, CLOSE_POLL_MS);
}

void cluster_free(cluster_t *c)
{
    if (!c)
        return;
    exec_set_router(c->x, NULL, 0, NULL, NULL);
    exec_count_slot_runs(c->x, NULL);
    if (c->coord)
        coord_free(c->coord);
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++) {
        if (c->peers[i] && c->peers[i]->link_open)
            cl_link_free(&c->peers[i]->link);
        free(c->peers[i]);
    }
    if (c->to_coord_open)
        cl_link_free(&c->to_coord);
    free(c);
}

/* ------------------------------------------------------------ the engine's table */

static int op_start(void **handle, uv_loop_t *loop, app_t *app, exec_t *x, const void *config,
                    const engine_cluster_hooks_t *hooks, char *err, size_t errlen)
{
    cluster_t *c = NULL;
    int rc = cluster_start(&c, loop, app, x, config, hooks, err, errlen);
    *handle = c;
    return rc;
}

static void op_flush(void *h) { cluster_flush(h); }
static void op_keepalive(void *h) { cluster_keepalive(h); }
static size_t op_backlog(const void *h) { return cluster_backlog(h); }
static void op_hold_inbound(void *h, int hold) { cluster_hold_inbound(h, hold); }
static int op_request_stop(void *h, const char *why) { return cluster_request_stop(h, why); }
static void op_shutdown(void *h) { cluster_shutdown(h, NULL, NULL); }
static int op_exit_code(const void *h) { return cluster_exit_code(h); }
static void op_free(void *h) { cluster_free(h); }
static void op_checkpoint_done(void *h, uint64_t n, int ok) { cluster_checkpoint_done(h, n, ok); }
static void op_claim_stream(void *h, uint32_t id, const char *name)
{
    cluster_claim_stream(h, id, name);
}

static int member_json(buf_t *out, int first, const char *name, unsigned index, int state,
                       const char *metrics)
{
    char head[64];
    snprintf(head, sizeof head, "%s{\"index\":%u,\"state\":", first ? "" : ",", index);
    return buf_append(out, head, strlen(head)) ||
           stopology_json_string(out, state ? cl_state_name(state) : "joining") ||
           buf_append(out, ",\"name\":", 8) || stopology_json_string(out, name) ||
           buf_append(out, ",\"metrics\":", 11) || stopology_json_string(out, metrics) ||
           buf_append(out, "}", 1)
               ? -1
               : 0;
}

/* The members as this worker knows them, itself included, as a JSON array:
 * what lets a dashboard or `bettong top` given one worker find the others. */
static int op_members_json(const void *handle, buf_t *out)
{
    const cluster_t *c = handle;
    if (buf_append(out, "[", 1) < 0)
        return -1;
    int first = 1;
    if (c->have_self) {
        if (member_json(out, 1, c->cfg.name, c->self, c->self_state, c->metrics_addr) < 0)
            return -1;
        first = 0;
    }
    for (unsigned i = 0; i < CL_MAX_WORKERS; i++) {
        const peer_t *p = c->peers[i];
        if (!p || !p->known || (c->have_self && i == c->self))
            continue;
        if (member_json(out, first, p->name, i, p->lost ? CL_LOST_STATE : p->state,
                        p->metrics) < 0)
            return -1;
        first = 0;
    }
    return buf_append(out, "]", 1) < 0 ? -1 : 0;
}

const engine_cluster_ops_t cluster_engine_ops = {
    .members_json = op_members_json,
    .start = op_start,
    .flush = op_flush,
    .keepalive = op_keepalive,
    .backlog = op_backlog,
    .hold_inbound = op_hold_inbound,
    .request_stop = op_request_stop,
    .shutdown = op_shutdown,
    .exit_code = op_exit_code,
    .free = op_free,
    .checkpoint_done = op_checkpoint_done,
    .claim_stream = op_claim_stream,
};
