#include "net/writer.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* Per uv_write: at most this many bytes (progress callbacks come often enough
 * for backpressure to react) and this many buffers. */
#define WRITE_MAX (4u * 1024 * 1024)
#define WRITE_BUFS 64
/* A written segment's allocation is kept as the next pending buffer only up to
 * this size, so one large message does not pin its memory. */
#define KEEP_BUFFER (1024 * 1024)
#define KEEP_SEGS 8

void writer_init(writer_t *w, void (*on_done)(writer_t *w, int status), void *owner)
{
    memset(w, 0, sizeof *w);
    buf_init(&w->pending);
    buf_init(&w->spare);
    buf_init(&w->cipher);
    w->max_write = WRITE_MAX;
    w->on_done = on_done;
    w->owner = owner;
}

void writer_set_stream(writer_t *w, uv_stream_t *stream) { w->stream = stream; }

void writer_set_tls(writer_t *w, tls_conn_t *t) { w->tls = t; }

typedef struct {
    uv_write_t req;
    uint8_t bytes[];
} copy_write_t;

static void on_copy_written(uv_write_t *req, int status) { free(req->data); }

int stream_write_copy(uv_stream_t *s, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    copy_write_t *cw = malloc(sizeof *cw + n);
    if (!cw)
        return -1;
    memcpy(cw->bytes, p, n);
    cw->req.data = cw;
    uv_buf_t b = uv_buf_init((char *)cw->bytes, (unsigned)n);
    if (uv_write(&cw->req, s, &b, 1, on_copy_written) < 0) {
        free(cw);
        return -1;
    }
    return 0;
}

int stream_write_tls_out(uv_stream_t *s, tls_conn_t *t)
{
    if (tls_out_pending(t) == 0)
        return 0;
    buf_t out;
    buf_init(&out);
    int rc = tls_take_out(t, &out) == 0 ? stream_write_copy(s, buf_head(&out), buf_unread(&out))
                                         : -1;
    buf_free(&out);
    return rc;
}

static wseg_t *seg_new(writer_t *w)
{
    wseg_t *s = w->free_segs;
    if (s) {
        w->free_segs = s->next;
        w->nfree--;
    } else {
        s = malloc(sizeof *s);
        if (!s)
            return NULL;
    }
    memset(s, 0, sizeof *s);
    return s;
}

static void seg_append(writer_t *w, wseg_t *s, size_t n)
{
    if (w->tail)
        w->tail->next = s;
    else
        w->head = s;
    w->tail = s;
    w->queued += n;
}

/* A segment is written (or dropped): release what it holds, keep its parts. */
static void seg_done(writer_t *w, wseg_t *s)
{
    w->held -= s->held;
    if (s->ref) {
        if (s->release)
            s->release(s->ctx);
    } else if (!w->spare.data && s->bytes.cap <= KEEP_BUFFER) {
        buf_clear(&s->bytes);
        w->spare = s->bytes;
    } else {
        buf_free(&s->bytes);
    }
    if (w->nfree < KEEP_SEGS) {
        s->next = w->free_segs;
        w->free_segs = s;
        w->nfree++;
    } else {
        free(s);
    }
}

/* Turn the pending bytes into a segment, so the owner can keep appending while
 * they are being written. Returns -1 if memory ran out (they stay pending). */
static int seal_pending(writer_t *w)
{
    size_t n = buf_unread(&w->pending);
    if (n == 0)
        return 0;
    wseg_t *s = seg_new(w);
    if (!s)
        return -1;
    s->bytes = w->pending;
    w->pending = w->spare;
    buf_init(&w->spare);
    seg_append(w, s, n);
    return 0;
}

int writer_put_ref(writer_t *w, const void *p, size_t n, writer_release_fn release, void *ctx)
{
    if (n == 0) {
        if (release)
            release(ctx);
        return 0;
    }
    wseg_t *s = NULL;
    if (seal_pending(w) < 0 || !(s = seg_new(w))) {
        log_error("out of memory queueing %zu bytes for writing", n);
        if (release)
            release(ctx);
        return -1;
    }
    s->ref = p;
    s->reflen = n;
    s->release = release;
    s->ctx = ctx;
    seg_append(w, s, n);
    return 0;
}

int writer_put_handle(writer_t *w, const void *p, size_t n, uv_stream_t *handle, size_t held,
                      writer_release_fn release, void *ctx)
{
    if (n == 0 || writer_put_ref(w, p, n, release, ctx) < 0)
        return -1;
    w->tail->handle = handle;
    w->tail->held = held;
    w->held += held;
    return 0;
}

static size_t seg_len(const wseg_t *s) { return s->ref ? s->reflen : buf_unread(&s->bytes); }
static const uint8_t *seg_data(const wseg_t *s) { return s->ref ? s->ref : buf_head(&s->bytes); }

/* The write of `w->inflight` bytes succeeded: let go of what was written. */
static void advance(writer_t *w, size_t n)
{
    w->queued -= n;
    w->bytes_written += n;
    while (n > 0 && w->head) {
        wseg_t *s = w->head;
        size_t left = seg_len(s) - w->head_off;
        if (n < left) {
            w->head_off += n;
            return;
        }
        n -= left;
        w->head_off = 0;
        w->head = s->next;
        if (!w->head)
            w->tail = NULL;
        seg_done(w, s);
    }
}

static void on_write(uv_write_t *req, int status)
{
    writer_t *w = req->data;
    size_t n = w->inflight;
    w->writing = 0;
    w->inflight = 0;
    if (w->freed)
        return;
    if (status < 0) {
        if (w->on_done)
            w->on_done(w, status);
        return;
    }
    advance(w, n);
    if (w->tls)
        buf_shrink(&w->cipher, KEEP_BUFFER);
    if (w->on_done)
        w->on_done(w, 0);
    if (!w->freed)
        writer_flush(w);
}

/* Small pending bytes, nothing queued or in flight: write what the socket
 * takes now (writer_set_sync). */
#define SYNC_MAX (64 * 1024)

/* Write small pending bytes at once if nothing but an uv_write in flight is
 * ahead of them. That write's callback may wait for a loop held up by a long
 * batch of user code although its bytes went out long ago, and a heartbeat
 * must not wait for the loop; uv_try_write refuses (EAGAIN) while libuv still
 * holds bytes of an earlier write, so the order of bytes is kept. Returns 1
 * when the pending bytes are all written. */
static int write_pending_now(writer_t *w)
{
    size_t n = buf_unread(&w->pending);
    if (!w->sync_writes || w->queued != w->inflight || n == 0 || n > SYNC_MAX)
        return 0;
    uv_buf_t b = uv_buf_init((char *)buf_head(&w->pending), (unsigned)n);
    int r = uv_try_write(w->stream, &b, 1);
    if (r <= 0)
        return 0;
    w->bytes_written += (uint64_t)r;
    if ((size_t)r == n) {
        buf_clear(&w->pending);
        return 1;
    }
    buf_consume(&w->pending, (size_t)r);
    return 0;
}

static void start_write(writer_t *w, uv_buf_t *bufs, unsigned nb, size_t total,
                        uv_stream_t *handle)
{
    w->req.data = w;
    w->writing = 1;
    w->inflight = total;
    int rc = handle ? uv_write2(&w->req, w->stream, bufs, nb, handle, on_write)
                    : uv_write(&w->req, w->stream, bufs, nb, on_write);
    if (rc < 0) {
        w->writing = 0;
        w->inflight = 0;
        if (w->on_done)
            w->on_done(w, rc);
    }
}

/* write_pending_now under TLS: small pending bytes behind a write whose
 * callback has not run yet (the loop may be held up by a long batch, and a
 * heartbeat must not wait for it). Once encrypted they cannot wait for their
 * turn in the queue (the session has counted their records), so what the
 * socket does not take now goes by a write of its own, which libuv queues
 * behind the one in flight: the order of bytes is kept either way. */
static void write_beside_tls(writer_t *w)
{
    size_t n = buf_unread(&w->pending);
    if (!w->sync_writes || w->queued != w->inflight || n == 0 || n > SYNC_MAX)
        return;
    buf_t c;
    buf_init(&c);
    int rc = tls_encrypt(w->tls, buf_head(&w->pending), n) == 0 && tls_take_out(w->tls, &c) == 0
                 ? 0 : -1;
    if (rc == 0) {
        uv_buf_t b = uv_buf_init((char *)buf_head(&c), (unsigned)buf_unread(&c));
        int r = uv_try_write(w->stream, &b, 1);
        size_t done = r > 0 ? (size_t)r : 0;
        if (done < buf_unread(&c))
            rc = stream_write_copy(w->stream, buf_head(&c) + done, buf_unread(&c) - done);
    }
    buf_free(&c);
    if (rc < 0) {
        log_error("cannot encrypt or write: %s", tls_error(w->tls));
        if (w->on_done)
            w->on_done(w, UV_EPROTO);
        return;
    }
    w->bytes_written += n;
    buf_clear(&w->pending);
}

/* Under TLS: the batch the plain path would write is encrypted into w->cipher
 * and that goes out instead, in one write; `inflight` counts its plaintext, so
 * the bytes leave the queue only once written. With writer_set_sync a batch
 * that is all there is goes out at once when the socket takes it. */
static void flush_tls(writer_t *w)
{
    if (!tls_ready(w->tls))
        return;
    if (w->writing) {
        write_beside_tls(w);
        return;
    }
    if (seal_pending(w) < 0)
        log_error("out of memory preparing a write; retrying at the next flush");
    if (!w->head)
        return;
    size_t total = 0, off = w->head_off;
    for (wseg_t *s = w->head; s && total < w->max_write; s = s->next) {
        size_t n = seg_len(s) - off;
        if (n > w->max_write - total)
            n = w->max_write - total;
        if (tls_encrypt(w->tls, seg_data(s) + off, n) < 0) {
            log_error("cannot encrypt: %s", tls_error(w->tls));
            if (w->on_done)
                w->on_done(w, UV_EPROTO);
            return;
        }
        total += n;
        off = 0;
    }
    buf_clear(&w->cipher);
    if (tls_take_out(w->tls, &w->cipher) < 0) {
        if (w->on_done)
            w->on_done(w, UV_ENOMEM);
        return;
    }
    if (w->sync_writes && w->queued == total) {
        uv_buf_t b = uv_buf_init((char *)buf_head(&w->cipher), (unsigned)buf_unread(&w->cipher));
        int r = uv_try_write(w->stream, &b, 1);
        if (r > 0 && (size_t)r == buf_unread(&w->cipher)) {
            advance(w, total);
            return;
        }
        if (r > 0)
            buf_consume(&w->cipher, (size_t)r);
    }
    uv_buf_t b = uv_buf_init((char *)buf_head(&w->cipher), (unsigned)buf_unread(&w->cipher));
    start_write(w, &b, 1, total, NULL);
}

void writer_flush(writer_t *w)
{
    if (!w->stream || w->freed)
        return;
    if (w->tls) {
        flush_tls(w);
        return;
    }
    /* EAGAIN, a partial write or an error: the rest goes by uv_write (once
     * the one in flight is done), which reports an error through on_done. */
    if (write_pending_now(w) || w->writing)
        return;
    if (seal_pending(w) < 0)
        log_error("out of memory preparing a write; retrying at the next flush");
    if (!w->head)
        return;
    uv_buf_t bufs[WRITE_BUFS];
    unsigned nb = 0;
    size_t total = 0;
    size_t off = w->head_off;
    /* A segment with a handle starts a write of its own (its descriptor goes
     * with that write's first byte). */
    uv_stream_t *handle = off == 0 ? w->head->handle : NULL;
    for (wseg_t *s = w->head; s && nb < WRITE_BUFS && total < w->max_write; s = s->next) {
        if (s->handle && s != w->head)
            break;
        size_t n = seg_len(s) - off;
        if (n > w->max_write - total)
            n = w->max_write - total;
        bufs[nb++] = uv_buf_init((char *)seg_data(s) + off, (unsigned)n);
        total += n;
        off = 0;
    }
    start_write(w, bufs, nb, total, handle);
}

static void drop_segments(writer_t *w)
{
    while (w->head) {
        wseg_t *s = w->head;
        w->head = s->next;
        seg_done(w, s);
    }
    w->tail = NULL;
    w->queued = 0;
    w->head_off = 0;
}

void writer_discard(writer_t *w)
{
    if (w->writing)
        return;
    drop_segments(w);
    buf_clear(&w->pending);
}

void writer_free(writer_t *w)
{
    w->freed = 1;
    drop_segments(w);
    while (w->free_segs) {
        wseg_t *s = w->free_segs;
        w->free_segs = s->next;
        free(s);
    }
    w->nfree = 0;
    buf_free(&w->pending);
    buf_free(&w->spare);
    buf_free(&w->cipher);
}
