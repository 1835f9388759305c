/* Outbound TCP with reconnection: the engine's sink connection. Bytes are
 * appended to a pending buffer and written in large batches, one write in flight
 * at a time. If the peer is not up the connection is retried; if it drops, the
 * bytes of the write that failed go back in front of the pending ones and are
 * sent again once reconnected, so nothing handed over is dropped by the engine.
 * (Bytes the kernel had accepted before the peer vanished cannot be recovered
 * without acknowledgements from the receiver; the connection is also read so
 * that a peer that closes is noticed at once, before more is written to it.) */
#ifndef BETTONG_OUTCONN_H
#define BETTONG_OUTCONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/tls.h"
#include "net/writer.h"
#include "util/buf.h"

typedef struct outconn outconn_t;

struct outconn {
    uv_loop_t *loop;
    uv_tcp_t *handle; /* NULL when not connected; a new handle per attempt */
    uv_connect_t connect_req;
    uv_timer_t retry_timer;
    struct sockaddr_storage addr;
    char name[128];
    writer_t w;     /* pending bytes and the write in progress */
    int connected;
    int connecting;
    int closing;
    int warned_down; /* a "cannot connect" line was logged for this outage */
    unsigned retry_ms;
    uint64_t reconnects;
    /* Called after each completed write, so the owner can lift backpressure. */
    void (*on_progress)(outconn_t *o);
    void *owner;
    void (*on_closed)(outconn_t *o);
    /* Set by outconn_set_final: once connected, a drop is reported here and the
     * connection is not retried (a cluster link whose peer is gone). */
    void (*on_lost)(outconn_t *o, const char *why);
    int lost;
    /* Set by outconn_set_reader: a receiver that talks back. */
    void (*on_connected)(outconn_t *o);
    void (*on_data)(outconn_t *o, const uint8_t *p, size_t n);
    /* Set by outconn_set_held: each new connection writes nothing queued until
     * outconn_release (a handshake comes first). */
    int hold;
    int released;
    /* Set by outconn_set_tls: every connection runs a TLS handshake first. */
    tls_ctx_t *tls_ctx;
    tls_conn_t *tls; /* the current connection's session */
};

void outconn_init(outconn_t *o, uv_loop_t *loop, const struct sockaddr *addr, const char *name,
                  void (*on_progress)(outconn_t *o), void *owner);
/* Keep retrying until the first connection, but report a later drop to
 * on_lost instead of reconnecting; what was queued stays unsent. */
void outconn_set_final(outconn_t *o, void (*on_lost)(outconn_t *o, const char *why));
/* Small writes go out at once when nothing is queued (writer_set_sync), also
 * while the loop is busy: for control links whose heartbeats must flow during
 * a long batch. */
static inline void outconn_set_sync(outconn_t *o) { writer_set_sync(&o->w); }
/* For a receiver that talks back (the exactly-once sink protocol): on_connected
 * runs on every new connection before anything queued is written, on_data
 * with every read. */
void outconn_set_reader(outconn_t *o, void (*on_connected)(outconn_t *o),
                        void (*on_data)(outconn_t *o, const uint8_t *p, size_t n));
/* For a link that must finish a handshake before anything queued may go out:
 * on every new connection, what is queued waits until outconn_release; the
 * handshake's own frames go out with outconn_write_first meanwhile (usually
 * from on_connected / on_data, see outconn_set_reader). */
void outconn_set_held(outconn_t *o);
/* Speak TLS (a client context of net/tls.h, kept by reference) on every
 * connection: on_connected runs, and the writer writes, once the TLS handshake
 * is done; everything read is decrypted before on_data. A failed TLS handshake
 * is logged and counts as a lost connection. */
static inline void outconn_set_tls(outconn_t *o, tls_ctx_t *ctx) { o->tls_ctx = ctx; }
/* The current connection's TLS channel binding into b (TLS_BINDING_LEN
 * bytes): returns the length, 0 without TLS. */
size_t outconn_binding(outconn_t *o, uint8_t *b);
/* Write p[0..n) now, ahead of anything queued (connected only). Returns 0, or
 * -1 (not connected, out of memory, or the write failed to start: the
 * connection is dropped as for any failed write). */
int outconn_write_first(outconn_t *o, const void *p, size_t n);
/* The handshake of this connection is done: write what is queued. */
void outconn_release(outconn_t *o);
/* Drop what is queued and not yet being written (the owner resends its own way
 * on a new connection). */
static inline void outconn_discard(outconn_t *o) { writer_discard(&o->w); }
/* Close the current connection (the peer broke a protocol) and reconnect. */
void outconn_reset(outconn_t *o, const char *why);
/* Start connecting (and keep retrying). */
void outconn_start(outconn_t *o);
/* The buffer to append output to; call outconn_flush after appending. */
static inline buf_t *outconn_buffer(outconn_t *o) { return writer_buf(&o->w); }
void outconn_flush(outconn_t *o);
static inline size_t outconn_backlog(const outconn_t *o) { return writer_backlog(&o->w); }
/* Close now; whatever is not written is dropped (callers drain first). */
void outconn_close(outconn_t *o, void (*on_closed)(outconn_t *o));

#endif
