#include "net/outconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr.h"
#include "util/log.h"

#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 1000

static void try_connect(outconn_t *o);
static void start_write(outconn_t *o);
static void on_write_done(writer_t *w, int status);

void outconn_init(outconn_t *o, uv_loop_t *loop, const struct sockaddr *addr, const char *name,
                  void (*on_progress)(outconn_t *o), void *owner)
{
    memset(o, 0, sizeof *o);
    o->loop = loop;
    memcpy(&o->addr, addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    snprintf(o->name, sizeof o->name, "%s", name);
    writer_init(&o->w, on_write_done, o);
    o->on_progress = on_progress;
    o->owner = owner;
    o->retry_ms = RETRY_MIN_MS;
    uv_timer_init(loop, &o->retry_timer);
    o->retry_timer.data = o;
}

static void on_retry_timer(uv_timer_t *t) { try_connect(t->data); }

static void free_handle(uv_handle_t *h) { free(h); }

static void drop_tls(outconn_t *o)
{
    writer_set_tls(&o->w, NULL);
    tls_conn_free(o->tls);
    o->tls = NULL;
}

size_t outconn_binding(outconn_t *o, uint8_t *b)
{
    return o->tls && tls_binding(o->tls, b) == 0 ? TLS_BINDING_LEN : 0;
}

/* The connection is gone: requeue the failed write and schedule a retry. */
static void connection_lost(outconn_t *o, const char *why)
{
    if (o->handle) {
        uv_close((uv_handle_t *)o->handle, free_handle);
        o->handle = NULL;
    }
    writer_set_stream(&o->w, NULL);
    drop_tls(o);
    if (o->connected && !o->on_lost)
        log_warn("%s: connection lost (%s); %zu bytes waiting, reconnecting", o->name, why,
                 outconn_backlog(o));
    int was_up = o->connected;
    o->connected = 0;
    o->connecting = 0;
    if (o->on_lost && (was_up || o->reconnects > 0)) {
        if (!o->lost && !o->closing) {
            o->lost = 1;
            o->on_lost(o, why);
        }
        return;
    }
    if (o->w.writing) {
        /* The write callback has not run yet; it requeues when it does. */
        return;
    }
    if (o->closing)
        return;
    uv_timer_start(&o->retry_timer, on_retry_timer, o->retry_ms, 0);
    o->retry_ms = o->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : o->retry_ms * 2;
}

static void alloc_discard(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char sink[4096];
    b->base = sink;
    b->len = sizeof sink;
}

static void established(outconn_t *o);

/* Ciphertext read: decrypt, answer the TLS engine's records, finish the
 * connection once the handshake is done, hand plaintext to on_data. Each step
 * may drop the connection (a failed handshake, the owner's reset). */
static void tls_read(outconn_t *o, uv_stream_t *s, const uint8_t *p, size_t n)
{
    buf_t plain;
    buf_init(&plain);
    int was_ready = tls_ready(o->tls);
    int rc = tls_feed(o->tls, p, n, &plain);
    int wr = stream_write_tls_out(s, o->tls);
    if (rc < 0 || wr < 0) {
        char why[400];
        snprintf(why, sizeof why, "%s%s", rc < 0 ? tls_error(o->tls) : "cannot write TLS records",
                 was_ready ? "" : " (does the peer listen without TLS?)");
        log_error("%s: %s", o->name, why);
        connection_lost(o, why);
    } else {
        if (!was_ready && tls_ready(o->tls))
            established(o);
        if (buf_unread(&plain) && o->on_data && o->handle == (uv_tcp_t *)s)
            o->on_data(o, buf_head(&plain), buf_unread(&plain));
    }
    buf_free(&plain);
}

/* The receiver is not supposed to talk; reading only tells us when it is gone. */
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    outconn_t *o = s->data;
    if (nread > 0 && o->tls && o->handle == (uv_tcp_t *)s)
        tls_read(o, s, (const uint8_t *)b->base, (size_t)nread);
    else if (nread < 0 && o->tls && !tls_ready(o->tls) && o->handle == (uv_tcp_t *)s)
        connection_lost(o, "closed by peer during the TLS handshake (does the peer listen "
                           "without TLS?)");
    else if (nread > 0 && o->on_data && o->handle == (uv_tcp_t *)s)
        o->on_data(o, (const uint8_t *)b->base, (size_t)nread);
    else if (nread < 0 && o->handle == (uv_tcp_t *)s)
        connection_lost(o, nread == UV_EOF ? "closed by peer" : uv_strerror((int)nread));
}

static void on_connect(uv_connect_t *req, int status)
{
    outconn_t *o = req->data;
    o->connecting = 0;
    if (o->closing)
        return;
    if (status < 0) {
        if (!o->warned_down) {
            log_warn("%s: cannot connect (%s); retrying, output waits", o->name,
                     uv_strerror(status));
            o->warned_down = 1;
        }
        connection_lost(o, uv_strerror(status));
        return;
    }
    o->connected = 1;
    o->retry_ms = RETRY_MIN_MS;
    if (o->warned_down || o->reconnects)
        log_info("%s: connected", o->name);
    else
        log_debug("%s: connected", o->name);
    o->warned_down = 0;
    o->reconnects++;
    uv_tcp_nodelay(o->handle, 1);
    uv_read_start((uv_stream_t *)o->handle, alloc_discard, on_read);
    if (o->tls_ctx) {
        /* The rest waits for the TLS handshake (tls_read). */
        if (!(o->tls = tls_conn_new(o->tls_ctx)) ||
            stream_write_tls_out((uv_stream_t *)o->handle, o->tls) < 0) {
            log_error("%s: cannot start TLS (out of memory)", o->name);
            connection_lost(o, "cannot start TLS");
            return;
        }
        writer_set_tls(&o->w, o->tls);
        return;
    }
    established(o);
}

/* Connected (and past TLS, if any): the owner may speak. */
static void established(outconn_t *o)
{
    o->released = !o->hold;
    if (o->released)
        writer_set_stream(&o->w, (uv_stream_t *)o->handle);
    if (o->on_connected)
        o->on_connected(o);
    start_write(o);
}

static void try_connect(outconn_t *o)
{
    if (o->closing || o->connected || o->connecting || o->lost)
        return;
    o->handle = malloc(sizeof *o->handle);
    if (!o->handle) {
        log_error("%s: out of memory", o->name);
        return;
    }
    uv_tcp_init(o->loop, o->handle);
    o->handle->data = o;
    o->connect_req.data = o;
    o->connecting = 1;
    int rc = uv_tcp_connect(&o->connect_req, o->handle, (struct sockaddr *)&o->addr, on_connect);
    if (rc < 0) {
        o->connecting = 0;
        connection_lost(o, uv_strerror(rc));
    }
}

void outconn_start(outconn_t *o) { try_connect(o); }

void outconn_set_reader(outconn_t *o, void (*on_connected)(outconn_t *o),
                        void (*on_data)(outconn_t *o, const uint8_t *p, size_t n))
{
    o->on_connected = on_connected;
    o->on_data = on_data;
}

void outconn_reset(outconn_t *o, const char *why)
{
    if (o->handle && o->connected)
        connection_lost(o, why);
}

void outconn_set_held(outconn_t *o) { o->hold = 1; }

void outconn_release(outconn_t *o)
{
    if (!o->connected || o->released || o->closing)
        return;
    o->released = 1;
    writer_set_stream(&o->w, (uv_stream_t *)o->handle);
    start_write(o);
}

/* One handshake frame on its way: a copy, since the caller's buffer moves on. */
typedef struct {
    uv_write_t req;
    outconn_t *o;
    uv_tcp_t *handle;
    uint8_t bytes[];
} first_write_t;

static void on_first_written(uv_write_t *req, int status)
{
    first_write_t *fw = req->data;
    outconn_t *o = fw->o;
    /* A failure on a connection that is already gone (or closing) is old news. */
    if (status < 0 && status != UV_ECANCELED && o->handle == fw->handle && !o->closing)
        connection_lost(o, uv_strerror(status));
    free(fw);
}

int outconn_write_first(outconn_t *o, const void *p, size_t n)
{
    if (!o->connected || !o->handle || o->closing)
        return -1;
    if (o->tls) {
        if (tls_encrypt(o->tls, p, n) < 0 ||
            stream_write_tls_out((uv_stream_t *)o->handle, o->tls) < 0) {
            char why[300]; /* connection_lost frees the session and its text */
            snprintf(why, sizeof why, "%s", tls_error(o->tls));
            connection_lost(o, why);
            return -1;
        }
        return 0;
    }
    first_write_t *fw = malloc(sizeof *fw + n);
    if (!fw) {
        connection_lost(o, "out of memory");
        return -1;
    }
    fw->o = o;
    fw->handle = o->handle;
    memcpy(fw->bytes, p, n);
    fw->req.data = fw;
    uv_buf_t b = uv_buf_init((char *)fw->bytes, (unsigned)n);
    int rc = uv_write(&fw->req, (uv_stream_t *)o->handle, &b, 1, on_first_written);
    if (rc < 0) {
        free(fw);
        connection_lost(o, uv_strerror(rc));
        return -1;
    }
    return 0;
}

void outconn_set_final(outconn_t *o, void (*on_lost)(outconn_t *o, const char *why))
{
    o->on_lost = on_lost;
}

/* The writer keeps the bytes of a failed write, in front of the newer ones, so
 * they are sent again once reconnected. */
static void on_write_done(writer_t *w, int status)
{
    outconn_t *o = w->owner;
    if (status < 0) {
        if (o->handle)
            connection_lost(o, uv_strerror(status));
        else if (!o->closing)
            connection_lost(o, "write failed"); /* schedules the retry deferred above */
        return;
    }
    if (o->on_progress)
        o->on_progress(o);
}

static void start_write(outconn_t *o)
{
    if (!o->connected || o->closing)
        return;
    writer_flush(&o->w);
}

void outconn_flush(outconn_t *o) { start_write(o); }

static void on_timer_closed(uv_handle_t *h)
{
    outconn_t *o = h->data;
    writer_free(&o->w);
    if (o->on_closed)
        o->on_closed(o);
}

void outconn_close(outconn_t *o, void (*on_closed)(outconn_t *o))
{
    if (o->closing)
        return;
    o->closing = 1;
    o->on_closed = on_closed;
    if (o->handle) {
        uv_close((uv_handle_t *)o->handle, free_handle);
        o->handle = NULL;
    }
    drop_tls(o);
    uv_timer_stop(&o->retry_timer);
    uv_close((uv_handle_t *)&o->retry_timer, on_timer_closed);
}
