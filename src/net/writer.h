/* The write side of a libuv stream: bytes are appended to a pending buffer and
 * handed to the kernel in large batches, one uv_write in flight at a time. A
 * large payload can be queued by reference instead of copied (writer_put_ref):
 * it is written straight from where it lies and released once written.
 *
 * Bytes stay queued until a write of them succeeds. When a write fails they are
 * kept, in order, and the owner is told (on_done with the error): an outbound
 * connection sends them again once reconnected, an inbound one just closes. */
#ifndef BETTONG_WRITER_H
#define BETTONG_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/tls.h"
#include "util/buf.h"

typedef struct writer writer_t;
typedef void (*writer_release_fn)(void *ctx);

typedef struct wseg {
    struct wseg *next;
    buf_t bytes;               /* owned bytes, when ref is NULL */
    const uint8_t *ref;        /* borrowed bytes, kept alive until release(ctx) */
    size_t reflen;
    writer_release_fn release;
    void *ctx;
    uv_stream_t *handle;       /* sent with the segment's first byte (writer_put_handle) */
    size_t held;               /* bytes its handle stands for (writer_put_handle) */
} wseg_t;

struct writer {
    uv_stream_t *stream; /* NULL while not connected: bytes wait */
    uv_write_t req;
    buf_t pending;       /* the owner appends here (writer_buf) */
    buf_t spare;         /* a written segment's allocation, reused for pending */
    wseg_t *head, *tail; /* sealed segments, oldest first */
    wseg_t *free_segs;   /* a few segment structs kept for reuse */
    size_t nfree;
    size_t head_off;     /* bytes of the head segment already written */
    size_t queued;       /* bytes in segments not yet written */
    size_t inflight;     /* bytes in the write in progress */
    size_t held;         /* bytes queued handles stand for (writer_put_handle) */
    size_t max_write;    /* bytes per uv_write, so progress is reported often */
    int writing;
    int freed;
    int sync_writes;     /* writer_flush may write at once (writer_set_sync) */
    uint64_t bytes_written;
    /* writer_set_tls: segments are encrypted into `cipher` just before they
     * are written; NULL (no TLS) leaves the plain path untouched. */
    tls_conn_t *tls;
    buf_t cipher;
    /* After every write: status 0, or a libuv error (the bytes are still queued;
     * not called for writes cancelled after writer_free). May be NULL. */
    void (*on_done)(writer_t *w, int status);
    void *owner;
};

void writer_init(writer_t *w, void (*on_done)(writer_t *w, int status), void *owner);
/* Attach the connected stream, or NULL when it is gone. */
void writer_set_stream(writer_t *w, uv_stream_t *stream);
/* The buffer to append to; call writer_flush after appending. */
static inline buf_t *writer_buf(writer_t *w) { return &w->pending; }
/* Queue p[0..n) by reference, after what is pending. release(ctx) runs once the
 * bytes are written or dropped (also when this fails: returns -1, out of
 * memory). */
int writer_put_ref(writer_t *w, const void *p, size_t n, writer_release_fn release, void *ctx);
/* writer_put_ref for a segment that carries `handle` (an ipc pipe's uv_write2:
 * its descriptor goes with the segment's first byte). The stream must be an
 * ipc pipe; release(ctx) once written or dropped (the handle stays the
 * caller's until then). `held`: the bytes the handle stands for (a memfd's
 * size), counted in the backlog until then, so that backpressure sees them.
 * Returns 0 or -1 as writer_put_ref. */
int writer_put_handle(writer_t *w, const void *p, size_t n, uv_stream_t *handle, size_t held,
                      writer_release_fn release, void *ctx);
/* Start writing if there is something to write and nothing in flight. */
void writer_flush(writer_t *w);
/* From now on, writer_flush first tries to write pending bytes at once
 * (uv_try_write) when nothing is queued or in flight; bytes written that way
 * get no on_done (the owner sees the backlog drop when writer_flush returns).
 * Saves the deferred write callback and an epoll_ctl per small answer. */
static inline void writer_set_sync(writer_t *w) { w->sync_writes = 1; }
/* Encrypt everything written from now on with t (NULL: none). Nothing is
 * written while t's handshake is under way; the owner flushes once it is done.
 * A batch is encrypted just before its write and its plaintext stays queued
 * until that write succeeds, as without TLS (a connection whose write failed
 * is dead, and a new one encrypts again with its own session). */
void writer_set_tls(writer_t *w, tls_conn_t *t);
/* Write a copy of p[0..n) to a stream now, apart from any writer: TLS
 * handshake records and alerts. A failure shows on the connection's reads.
 * Returns 0, or -1 (out of memory, or the write could not start). */
int stream_write_copy(uv_stream_t *s, const void *p, size_t n);
/* Write what t has to send (stream_write_copy). */
int stream_write_tls_out(uv_stream_t *s, tls_conn_t *t);
/* Bytes not yet written (including the write in flight). */
static inline size_t writer_backlog(const writer_t *w)
{
    return w->queued + buf_unread(&w->pending) + w->held;
}
/* Drop every byte queued or pending (not a write in flight): the owner will
 * send something else on a new connection. */
void writer_discard(writer_t *w);
/* Drop everything queued. The writer's memory must stay valid until the
 * stream's close callback (a cancelled write still reports to it). */
void writer_free(writer_t *w);

#endif
