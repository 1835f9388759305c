/* Inbound TCP: a listener that accepts connections, and per connection a read
 * buffer cut into frames by a frame_spec. Frames are handed to the owner in
 * batches, one batch per read, so the owner can take the GIL once per batch.
 * A frame that is too large or a header the spec refuses closes that connection
 * with a log line; nothing else is affected. */
#ifndef BETTONG_INCONN_H
#define BETTONG_INCONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/frame.h"
#include "util/buf.h"

typedef struct inconn inconn_t;
typedef struct listener listener_t;

typedef struct {
    /* Before the first frame (or header callback) of a read. */
    void (*batch_begin)(void *owner);
    /* One whole frame. Return 0 to go on, 1 to stop this batch (the frame was
     * consumed; the rest stay buffered until inconn_resume), -1 to close the
     * connection. */
    int (*frame)(void *owner, inconn_t *c, const uint8_t *frame, size_t frame_len,
                 const uint8_t *payload, size_t payload_len);
    /* After the last frame of a read (only if batch_begin was called). */
    void (*batch_end)(void *owner);
    /* The connection is gone (peer closed, error, or inconn_close); it is freed
     * right after this returns. */
    void (*closed)(void *owner, inconn_t *c);
} inconn_handler_t;

struct inconn {
    uv_tcp_t handle;
    listener_t *listener;
    buf_t in;
    size_t need; /* size of the frame being assembled, when known */
    int reading;
    int closing;
    uint64_t id;
    char peer[64];
    void *user; /* owner's per-connection data */
    inconn_t *prev, *next;
};

struct listener {
    uv_tcp_t handle;
    uv_loop_t *loop;
    const frame_spec_t *spec;
    const inconn_handler_t *handler;
    void *owner;
    char name[128];  /* for log lines */
    char addr[80];
    inconn_t *conns; /* open connections */
    size_t nconns;
    int paused;      /* new and existing connections do not read */
    int closing;
    uint64_t next_id;
    void (*on_closed)(listener_t *l); /* after the listener and all conns closed */
};

/* Bind and listen. Returns 0 or -1 with err set (address in use, ...). */
int listener_start(listener_t *l, uv_loop_t *loop, const struct sockaddr *addr,
                   const frame_spec_t *spec, const inconn_handler_t *handler, void *owner,
                   const char *name, char *err, size_t errlen);
/* Stop reading on every connection / start again. */
void listener_pause(listener_t *l);
void listener_resume(listener_t *l);
/* Close the listening socket and every connection; on_closed fires at the end. */
void listener_close(listener_t *l, void (*on_closed)(listener_t *l));

void inconn_close(inconn_t *c, const char *why);

#endif
