#include "stream/sink.h"

#include <string.h>

#include "net/wire.h"
#include "stream/eoproto.h"
#include "util/log.h"

static sink_t *of(outconn_t *o) { return o->owner; }

static void on_progress(outconn_t *o)
{
    sink_t *s = of(o);
    if (s->opt.progress)
        s->opt.progress(s->opt.ctx);
}

static void changed(sink_t *s)
{
    if (s->opt.changed)
        s->opt.changed(s->opt.ctx);
}

/* ------------------------------------------------------------ frames */

static void put_epoch_frame(buf_t *b, uint8_t type, uint64_t epoch)
{
    wire_wr_t w;
    wire_begin(&w, b, type, EO_MAX_FRAME);
    wire_put_u64(&w, epoch);
    if (wire_end(&w) < 0)
        log_error("out of memory framing sink output");
}

/* A frame of the retained run: its type, epoch and total length. */
static int frame_at(const uint8_t *p, size_t avail, uint8_t *type, uint64_t *epoch, size_t *len)
{
    if (avail < 13)
        return -1;
    uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (n < 9 || n > avail - 4)
        return -1;
    wire_rd_t r;
    wire_rd_init(&r, p + 4, n);
    *type = wire_u8(&r);
    *epoch = wire_u64(&r);
    *len = 4 + (size_t)n;
    return 0;
}

/* Kept frames the receiver holds durably (epoch <= upto) are let go. */
static void drop_retained(sink_t *s, uint64_t upto)
{
    uint8_t type;
    uint64_t epoch;
    size_t len;
    while (frame_at(buf_head(&s->retained), buf_unread(&s->retained), &type, &epoch, &len) == 0 &&
           epoch <= upto)
        buf_consume(&s->retained, len);
    if (buf_unread(&s->retained) == 0)
        buf_shrink(&s->retained, 1 << 20);
}

/* Send the kept frames of epochs after `after` on the new connection. */
static void resend_retained(sink_t *s, uint64_t after)
{
    const uint8_t *p = buf_head(&s->retained);
    size_t avail = buf_unread(&s->retained);
    uint8_t type;
    uint64_t epoch;
    size_t len;
    buf_t *out = outconn_buffer(&s->o);
    while (frame_at(p, avail, &type, &epoch, &len) == 0) {
        if (epoch > after && buf_append(out, p, len) < 0)
            log_error("%s: out of memory resending output", s->o.name);
        p += len;
        avail -= len;
    }
}

/* The stage becomes D frames of the open epoch, kept and (when the receiver
 * is ready) sent. */
static void wrap_stage(sink_t *s)
{
    size_t n = buf_unread(&s->stage);
    const uint8_t *p = buf_head(&s->stage);
    size_t max = EO_MAX_FRAME - 9;
    while (n > 0) {
        size_t part = n > max ? max : n;
        size_t start = buf_unread(&s->retained);
        wire_wr_t w;
        wire_begin(&w, &s->retained, EO_DATA, EO_MAX_FRAME);
        wire_put_u64(&w, s->epoch);
        wire_put_bytes(&w, p, part);
        if (wire_end(&w) < 0) {
            log_error("%s: out of memory framing output", s->o.name);
            break;
        }
        if (s->mode == SINK_EXACTLY_ONCE && s->ready &&
            buf_append(outconn_buffer(&s->o), buf_head(&s->retained) + start,
                       buf_unread(&s->retained) - start) < 0)
            log_error("%s: out of memory sending output", s->o.name);
        p += part;
        n -= part;
    }
    buf_clear(&s->stage);
}

/* ------------------------------------------------------------ deciding */

/* No greeting: a plain receiver. What was kept goes out as plain bytes and
 * from now on exec writes straight into the connection's buffer. */
static void become_plain(sink_t *s)
{
    uv_timer_stop(&s->greet_timer);
    if (s->mode == SINK_EXACTLY_ONCE)
        log_warn("%s: the receiver no longer speaks the exactly-once protocol; sending plain "
                 "output (at-least-once from now on)", s->o.name);
    else
        log_info("%s: plain receiver (no exactly-once greeting): output is at-least-once "
                 "across a recovery", s->o.name);
    s->mode = SINK_PLAIN;
    s->ready = 0;
    buf_t *out = outconn_buffer(&s->o);
    const uint8_t *p = buf_head(&s->retained);
    size_t avail = buf_unread(&s->retained);
    uint8_t type;
    uint64_t epoch;
    size_t len;
    while (frame_at(p, avail, &type, &epoch, &len) == 0) {
        if (type == EO_DATA && buf_append(out, p + 13, len - 13) < 0)
            log_error("%s: out of memory", s->o.name);
        p += len;
        avail -= len;
    }
    buf_clear(&s->retained);
    buf_append(out, buf_head(&s->stage), buf_unread(&s->stage));
    buf_clear(&s->stage);
    *s->out = out;
    outconn_flush(&s->o);
    changed(s);
}

static void on_greet_timer(uv_timer_t *t)
{
    sink_t *s = t->data;
    if (!s->ready)
        become_plain(s);
}

static void on_connected(outconn_t *o)
{
    sink_t *s = of(o);
    buf_clear(&s->in);
    s->ready = 0;
    s->waiting_state = 0;
    if (s->mode == SINK_PLAIN)
        return;
    /* The frames queued for the old connection are resent from `retained`
     * once the receiver says what it holds. */
    outconn_discard(o);
    uv_timer_start(&s->greet_timer, on_greet_timer, SINK_GREET_MS, 0);
}

/* ------------------------------------------------------------ the receiver's frames */

static void send_writer(sink_t *s)
{
    wire_wr_t w;
    wire_begin(&w, outconn_buffer(&s->o), EO_WRITER, EO_MAX_FRAME);
    wire_put_str16(&w, s->opt.writer, strlen(s->opt.writer));
    wire_end(&w);
    outconn_flush(&s->o);
}

/* 'S': what the receiver holds of this writer. Abort what it may not keep,
 * resend what it lacks, commit what is complete. */
static void on_state(sink_t *s, uint64_t committed, uint64_t prepared)
{
    buf_t *out = outconn_buffer(&s->o);
    uint64_t holds;
    if (!s->history_sent) {
        /* Epochs after the checkpoint this process started from were made by
         * an earlier run that did not complete them: they go. */
        uint64_t k = s->opt.recovered;
        if (k > 0 && committed < k && prepared >= k)
            put_epoch_frame(out, EO_COMMIT, k);
        else if (k > committed && prepared < k && !s->fresh)
            log_error("%s: the receiver lacks output up to checkpoint %llu (it holds %llu): "
                      "that output is lost", s->o.name, (unsigned long long)k,
                      (unsigned long long)prepared);
        else if (committed > k)
            log_warn("%s: the receiver committed epoch %llu, after checkpoint %llu that this "
                     "worker restarts from: output after it comes again", s->o.name,
                     (unsigned long long)committed, (unsigned long long)k);
        put_epoch_frame(out, EO_ABORT, k);
        s->history_sent = 1;
        holds = k;
        committed = k; /* after the commit above, or the new history the abort starts */
    } else {
        put_epoch_frame(out, EO_ABORT, prepared);
        holds = prepared;
    }
    s->committed = committed;
    if (holds > s->prepared)
        s->prepared = holds;
    drop_retained(s, holds);
    resend_retained(s, holds);
    if (s->complete > s->committed) {
        put_epoch_frame(out, EO_COMMIT, s->complete);
        s->committed = s->complete;
    }
    s->ready = 1;
    wrap_stage(s);
    outconn_flush(&s->o);
    log_info("%s: exactly-once receiver holds epoch %llu (committed %llu); open epoch %llu",
             s->o.name, (unsigned long long)prepared, (unsigned long long)committed,
             (unsigned long long)s->epoch);
    changed(s);
}

/* One frame from the receiver. Returns -1 on a protocol error. */
static int on_frame(sink_t *s, const uint8_t *body, size_t n)
{
    wire_rd_t r;
    wire_rd_init(&r, body, n);
    uint8_t type = wire_u8(&r);
    if (type == EO_GREETING) {
        const uint8_t *magic = wire_bytes(&r, EO_MAGIC_LEN);
        if (!magic || memcmp(magic, EO_MAGIC, EO_MAGIC_LEN) != 0 || s->mode == SINK_PLAIN)
            return -1;
        uv_timer_stop(&s->greet_timer);
        s->mode = SINK_EXACTLY_ONCE;
        send_writer(s);
        return 0;
    }
    if (s->mode != SINK_EXACTLY_ONCE)
        return -1;
    if (type == EO_STATE) {
        uint64_t committed = wire_u64(&r), prepared = wire_u64(&r);
        if (r.err)
            return -1;
        if (s->opt.history_later) {
            s->waiting_state = 1;
            s->state_committed = committed;
            s->state_prepared = prepared;
            return 0;
        }
        on_state(s, committed, prepared);
        return 0;
    }
    if (type == EO_PREPARED && s->ready) {
        uint64_t epoch = wire_u64(&r);
        if (r.err)
            return -1;
        if (epoch > s->prepared) {
            s->prepared = epoch;
            drop_retained(s, epoch);
            changed(s);
        }
        return 0;
    }
    return -1;
}

static void on_data(outconn_t *o, const uint8_t *p, size_t n)
{
    sink_t *s = of(o);
    if (buf_append(&s->in, p, n) < 0) {
        outconn_reset(o, "out of memory");
        return;
    }
    while (buf_unread(&s->in) >= 4) {
        const uint8_t *h = buf_head(&s->in);
        uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (len < 1 || len > RS_MAX_FRAME) {
            log_warn("%s: the receiver sent a frame of %u bytes: not the exactly-once "
                     "protocol; reconnecting", o->name, len);
            outconn_reset(o, "protocol error");
            return;
        }
        if (buf_unread(&s->in) < 4 + (size_t)len)
            break;
        if (on_frame(s, h + 4, len) < 0) {
            log_warn("%s: unexpected frame (type 0x%02x) from the receiver; reconnecting",
                     o->name, h[4]);
            outconn_reset(o, "protocol error");
            return;
        }
        buf_consume(&s->in, 4 + (size_t)len);
    }
    buf_compact(&s->in);
}

/* ------------------------------------------------------------ the engine's calls */

void sink_init(sink_t *s, uv_loop_t *loop, const struct sockaddr *addr, const char *name,
               buf_t **out, const sink_options_t *opt)
{
    memset(s, 0, sizeof *s);
    s->opt = *opt;
    s->out = out;
    buf_init(&s->stage);
    buf_init(&s->retained);
    buf_init(&s->in);
    outconn_init(&s->o, loop, addr, name, on_progress, s);
    uv_timer_init(loop, &s->greet_timer);
    s->greet_timer.data = s;
    s->epoch = opt->recovered + 1;
    s->complete = s->committed = s->prepared = opt->recovered;
    if (opt->resilient) {
        s->mode = SINK_WAITING;
        *out = &s->stage;
        outconn_set_reader(&s->o, on_connected, on_data);
    } else {
        s->mode = SINK_PLAIN;
        *out = outconn_buffer(&s->o);
    }
    outconn_start(&s->o);
}

void sink_set_history(sink_t *s, uint64_t recovered, int fresh)
{
    s->fresh = fresh;
    s->opt.recovered = recovered;
    s->opt.history_later = 0;
    s->epoch = recovered + 1;
    s->complete = s->committed = s->prepared = recovered;
    if (s->waiting_state) {
        s->waiting_state = 0;
        on_state(s, s->state_committed, s->state_prepared);
    }
}

void sink_flush(sink_t *s)
{
    if (s->mode != SINK_PLAIN && buf_unread(&s->stage) > 0)
        wrap_stage(s);
    outconn_flush(&s->o);
}

size_t sink_backlog(const sink_t *s)
{
    return outconn_backlog(&s->o) + buf_unread(&s->stage);
}

void sink_end_epoch(sink_t *s, uint64_t n)
{
    if (s->mode != SINK_PLAIN) {
        s->epoch = n;
        wrap_stage(s);
        size_t start = buf_unread(&s->retained);
        put_epoch_frame(&s->retained, EO_EPOCH_END, n);
        if (s->mode == SINK_EXACTLY_ONCE && s->ready)
            buf_append(outconn_buffer(&s->o), buf_head(&s->retained) + start,
                       buf_unread(&s->retained) - start);
    }
    s->epoch = n + 1;
    outconn_flush(&s->o);
}

int sink_ready_for(const sink_t *s, uint64_t n)
{
    if (s->mode == SINK_PLAIN)
        return 1;
    return s->mode == SINK_EXACTLY_ONCE && s->prepared >= n;
}

void sink_commit(sink_t *s, uint64_t n)
{
    s->complete = n;
    if (s->mode == SINK_EXACTLY_ONCE && s->ready && n > s->committed) {
        put_epoch_frame(outconn_buffer(&s->o), EO_COMMIT, n);
        s->committed = n;
        outconn_flush(&s->o);
    }
}

static void on_greet_closed(uv_handle_t *h) { (void)h; }

void sink_close(sink_t *s)
{
    uv_close((uv_handle_t *)&s->greet_timer, on_greet_closed);
    outconn_close(&s->o, NULL);
    buf_free(&s->stage);
    buf_free(&s->retained);
    buf_free(&s->in);
}
