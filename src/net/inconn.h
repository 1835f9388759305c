/* Inbound connections: a listener (TCP, or a Unix-domain socket) that accepts
 * connections, and per connection a read buffer cut into frames by a
 * frame_spec, plus a writer for answers. Frames are handed to the owner in
 * batches, one batch per read, so the owner can take the GIL (or flush its
 * output) once per batch. A frame that is too large or a header the spec
 * refuses closes that connection with a log line; nothing else is affected. */
#ifndef BETTONG_INCONN_H
#define BETTONG_INCONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/frame.h"
#include "net/writer.h"
#include "util/buf.h"

typedef struct inconn inconn_t;
typedef struct listener listener_t;

typedef struct {
    /* Optional: a connection was accepted (before anything is read from it). */
    void (*opened)(void *owner, inconn_t *c);
    /* Optional: before the first frame (or header callback) of a read. */
    void (*batch_begin)(void *owner);
    /* One whole frame. Return 0 to go on, 1 to stop this batch (the frame was
     * consumed; the rest stay buffered until the connection reads again), -1
     * to close the connection. */
    int (*frame)(void *owner, inconn_t *c, const uint8_t *frame, size_t frame_len,
                 const uint8_t *payload, size_t payload_len);
    /* Optional: after the last frame of a read (when a batch began). */
    void (*batch_end)(void *owner);
    /* The connection is gone (peer closed, error, or inconn_close); it is freed
     * right after this returns. */
    void (*closed)(void *owner, inconn_t *c);
    /* Optional: a write to the connection completed (its backlog went down). */
    void (*wrote)(void *owner, inconn_t *c);
} inconn_handler_t;

typedef union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} stream_handle_t;

struct inconn {
    stream_handle_t h;
    listener_t *listener;
    buf_t in;
    writer_t out;
    size_t need;          /* size of the frame being assembled, when known */
    uint64_t max_payload; /* this connection's frame limit (starts as the spec's) */
    size_t cur_frame;     /* length of the frame being handed over */
    int reading;
    int paused;           /* inconn_pause: not reading whatever the listener does */
    int taken;            /* the current frame's memory was taken (inconn_take_frame) */
    int closing;
    int lingering;        /* inconn_close_after_flush: writing the last bytes */
    uv_shutdown_t shutdown_req;
    uint64_t id;
    char peer[64];
    int peer_loopback;    /* a TCP peer on a loopback address, or a Unix socket */
    void *user; /* owner's per-connection data */
    inconn_t *prev, *next;
};

struct listener {
    stream_handle_t h;
    int is_unix;
    uv_loop_t *loop;
    const frame_spec_t *spec;
    const inconn_handler_t *handler;
    void *owner;
    char name[128];  /* for log lines */
    char addr[300];  /* "host:port" (the real port) or "unix:PATH" */
    inconn_t *conns; /* open connections */
    size_t nconns;
    int paused;      /* new and existing connections do not read */
    int closing;
    uint64_t next_id;
    void (*on_closed)(listener_t *l); /* after the listener and all conns closed */
};

/* Bind and listen on TCP. Returns 0 or -1 with err set (address in use, ...).
 * l->addr holds the address with the port actually bound. */
int listener_start(listener_t *l, uv_loop_t *loop, const struct sockaddr *addr,
                   const frame_spec_t *spec, const inconn_handler_t *handler, void *owner,
                   const char *name, char *err, size_t errlen);
/* Like listener_start, with SO_REUSEPORT: processes of one cluster on one
 * machine share the port and the kernel spreads connections over them. */
int listener_start_shared(listener_t *l, uv_loop_t *loop, const struct sockaddr *addr,
                          const frame_spec_t *spec, const inconn_handler_t *handler, void *owner,
                          const char *name, char *err, size_t errlen);
/* Serve a TCP socket that is already bound and listening (made by a parent
 * process); the listener owns it from now on. */
int listener_adopt(listener_t *l, uv_loop_t *loop, int fd, const frame_spec_t *spec,
                   const inconn_handler_t *handler, void *owner, const char *name, char *err,
                   size_t errlen);
/* Bind and listen on a Unix-domain socket at `path` (mode 0600). A stale socket
 * file that nobody listens on is replaced; a live one is an error. */
int listener_start_unix(listener_t *l, uv_loop_t *loop, const char *path,
                        const frame_spec_t *spec, const inconn_handler_t *handler, void *owner,
                        const char *name, char *err, size_t errlen);
/* Stop reading on every connection / start again. */
void listener_pause(listener_t *l);
void listener_resume(listener_t *l);
/* Close the listening socket and every connection; on_closed fires at the end. */
void listener_close(listener_t *l, void (*on_closed)(listener_t *l));

void inconn_close(inconn_t *c, const char *why);
/* Stop handing over frames, write what is queued, shut our side down, then
 * close once the peer closes (what it sends meanwhile is read and dropped; the
 * owner closes a peer that lingers too long with inconn_close). Answers such as
 * REFUSED reach the peer. `why` as for inconn_close. */
void inconn_close_after_flush(inconn_t *c, const char *why);

/* Pause / resume reading this connection alone. */
void inconn_pause(inconn_t *c);
void inconn_resume(inconn_t *c);
/* Frames larger than this close the connection (e.g. before authentication). */
static inline void inconn_set_max_payload(inconn_t *c, uint64_t n) { c->max_payload = n; }

/* Output: append to inconn_out(c), or queue a large payload by reference, then
 * inconn_flush(c). */
static inline buf_t *inconn_out(inconn_t *c) { return writer_buf(&c->out); }
static inline int inconn_put_ref(inconn_t *c, const void *p, size_t n, writer_release_fn release,
                                 void *ctx)
{
    return writer_put_ref(&c->out, p, n, release, ctx);
}
void inconn_flush(inconn_t *c);
/* Small answers are written at once when nothing is queued (writer_set_sync). */
static inline void inconn_set_sync_writes(inconn_t *c) { writer_set_sync(&c->out); }
static inline size_t inconn_backlog(const inconn_t *c) { return writer_backlog(&c->out); }

/* Only inside the frame callback: take ownership of the memory that holds the
 * current frame, so a large payload can be kept or forwarded without a copy.
 * Returns a block to free() once done (the frame and payload pointers stay
 * valid until then), or NULL if memory ran out (nothing changes). The
 * connection goes on with a fresh buffer. */
void *inconn_take_frame(inconn_t *c);
/* Free a block from inconn_take_frame; a large one (4 to 256 MiB) may be kept
 * instead, one at most, as the memory of the next large frame read (on any
 * connection of this loop): its pages are then already backed. */
void inconn_block_free(void *block);

#endif
