#include "net/inconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr.h"
#include "util/log.h"

#define READ_CHUNK (64 * 1024)
/* Keep a grown buffer (after a large frame) only up to this size once empty. */
#define KEEP_BUFFER (1024 * 1024)

static void maybe_listener_closed(listener_t *l)
{
    if (l->closing == 2 && l->nconns == 0 && l->on_closed) {
        void (*cb)(listener_t *) = l->on_closed;
        l->on_closed = NULL;
        cb(l);
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    inconn_t *c = h->data;
    listener_t *l = c->listener;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->nconns--;
    if (l->handler->closed)
        l->handler->closed(l->owner, c);
    buf_free(&c->in);
    free(c);
    maybe_listener_closed(l);
}

void inconn_close(inconn_t *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (why)
        log_warn("%s: closing connection %llu from %s: %s", c->listener->name,
                 (unsigned long long)c->id, c->peer, why);
    uv_close((uv_handle_t *)&c->handle, on_conn_closed);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    inconn_t *c = h->data;
    size_t want = READ_CHUNK;
    size_t have = buf_unread(&c->in);
    /* Room for the whole frame being assembled, so a large frame is read in
     * place instead of through repeated small reads. */
    if (c->need > have && c->need - have > want)
        want = c->need - have;
    if (buf_reserve(&c->in, want) < 0) {
        out->base = NULL;
        out->len = 0;
        return;
    }
    out->base = (char *)c->in.data + c->in.len;
    out->len = c->in.cap - c->in.len;
}

static const char *frame_error_text(frame_status st, uint64_t declared, uint64_t max,
                                    char *tmp, size_t tmplen)
{
    if (st == FRAME_TOO_LARGE)
        snprintf(tmp, tmplen, "frame of %llu bytes exceeds the limit of %llu bytes",
                 (unsigned long long)declared, (unsigned long long)max);
    else
        snprintf(tmp, tmplen, "invalid frame header");
    return tmp;
}

/* Cut whole frames off the buffer and hand them over. Returns -1 if the
 * connection was closed. */
static int drain_frames(inconn_t *c)
{
    listener_t *l = c->listener;
    const frame_spec_t *spec = l->spec;
    int begun = 0;
    int rc = 0;
    if (spec->length_fn && buf_unread(&c->in) >= spec->header_len) {
        l->handler->batch_begin(l->owner);
        begun = 1;
    }
    while (!c->closing && c->reading) {
        size_t poff = 0, plen = 0, flen = 0;
        uint64_t declared = 0;
        frame_status st = frame_next(spec, buf_head(&c->in), buf_unread(&c->in), &poff, &plen,
                                     &flen, &declared);
        if (st == FRAME_NEED_MORE) {
            c->need = flen;
            break;
        }
        if (st != FRAME_OK) {
            char tmp[160];
            inconn_close(c, frame_error_text(st, declared, spec->max_payload, tmp, sizeof tmp));
            rc = -1;
            break;
        }
        if (!begun) {
            l->handler->batch_begin(l->owner);
            begun = 1;
        }
        const uint8_t *f = buf_head(&c->in);
        int r = l->handler->frame(l->owner, c, f, flen, f + poff, plen);
        buf_consume(&c->in, flen);
        c->need = 0;
        if (r < 0) {
            inconn_close(c, NULL);
            rc = -1;
            break;
        }
        if (r > 0)
            break;
    }
    if (begun)
        l->handler->batch_end(l->owner);
    if (!c->closing && buf_unread(&c->in) == 0)
        buf_shrink(&c->in, KEEP_BUFFER);
    return rc;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    inconn_t *c = s->data;
    if (nread < 0) {
        if (nread != UV_EOF) {
            char why[128];
            snprintf(why, sizeof why, "read error: %s", uv_strerror((int)nread));
            inconn_close(c, why);
        } else {
            if (buf_unread(&c->in) > 0)
                log_warn("%s: connection %llu from %s closed with %zu bytes of an "
                         "incomplete frame", c->listener->name, (unsigned long long)c->id,
                         c->peer, buf_unread(&c->in));
            inconn_close(c, NULL);
        }
        return;
    }
    if (nread == 0)
        return;
    c->in.len += (size_t)nread;
    drain_frames(c);
}

static void start_reading(inconn_t *c)
{
    if (c->reading || c->closing)
        return;
    c->reading = 1;
    /* Frames left from a batch that was stopped early go first. */
    if (buf_unread(&c->in) > 0 && drain_frames(c) < 0)
        return;
    if (c->reading && !c->closing) {
        int rc = uv_read_start((uv_stream_t *)&c->handle, alloc_cb, read_cb);
        if (rc < 0)
            inconn_close(c, uv_strerror(rc));
    }
}

static void stop_reading(inconn_t *c)
{
    if (!c->reading || c->closing)
        return;
    c->reading = 0;
    uv_read_stop((uv_stream_t *)&c->handle);
}

static void free_unaccepted(uv_handle_t *h) { free(h->data); }

static void on_connection(uv_stream_t *server, int status)
{
    listener_t *l = server->data;
    if (status < 0) {
        log_warn("%s: accept failed: %s", l->name, uv_strerror(status));
        return;
    }
    inconn_t *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("%s: out of memory accepting a connection", l->name);
        return;
    }
    uv_tcp_init(l->loop, &c->handle);
    c->handle.data = c;
    c->listener = l;
    buf_init(&c->in);
    if (uv_accept(server, (uv_stream_t *)&c->handle) < 0) {
        uv_close((uv_handle_t *)&c->handle, free_unaccepted);
        return;
    }
    uv_tcp_nodelay(&c->handle, 1);
    struct sockaddr_storage peer;
    int plen = sizeof peer;
    if (uv_tcp_getpeername(&c->handle, (struct sockaddr *)&peer, &plen) == 0)
        sockaddr_text((struct sockaddr *)&peer, c->peer, sizeof c->peer);
    else
        snprintf(c->peer, sizeof c->peer, "?");
    c->id = ++l->next_id;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->nconns++;
    log_debug("%s: connection %llu from %s", l->name, (unsigned long long)c->id, c->peer);
    if (l->closing) {
        inconn_close(c, NULL);
        return;
    }
    if (!l->paused)
        start_reading(c);
}

int listener_start(listener_t *l, uv_loop_t *loop, const struct sockaddr *addr,
                   const frame_spec_t *spec, const inconn_handler_t *handler, void *owner,
                   const char *name, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->loop = loop;
    l->spec = spec;
    l->handler = handler;
    l->owner = owner;
    snprintf(l->name, sizeof l->name, "%s", name);
    sockaddr_text(addr, l->addr, sizeof l->addr);
    uv_tcp_init(loop, &l->handle);
    l->handle.data = l;
    int rc = uv_tcp_bind(&l->handle, addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->handle, 511, on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot listen on %s: %s", name, l->addr, uv_strerror(rc));
        l->closing = 1;
        uv_close((uv_handle_t *)&l->handle, NULL);
        return -1;
    }
    return 0;
}

void listener_pause(listener_t *l)
{
    l->paused = 1;
    for (inconn_t *c = l->conns; c; c = c->next)
        stop_reading(c);
}

void listener_resume(listener_t *l)
{
    l->paused = 0;
    inconn_t *c = l->conns;
    while (c && !l->paused) {
        /* start_reading may close c (bad frame): step first. */
        inconn_t *next = c->next;
        start_reading(c);
        c = next;
    }
}

static void on_listener_handle_closed(uv_handle_t *h)
{
    listener_t *l = h->data;
    l->closing = 2;
    maybe_listener_closed(l);
}

void listener_close(listener_t *l, void (*on_closed)(listener_t *l))
{
    if (l->closing)
        return;
    l->closing = 1;
    l->on_closed = on_closed;
    for (inconn_t *c = l->conns; c; c = c->next)
        inconn_close(c, NULL);
    uv_close((uv_handle_t *)&l->handle, on_listener_handle_closed);
}
