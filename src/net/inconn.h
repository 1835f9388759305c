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
#include "net/rbudget.h"
#include "net/tls.h"
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
    int authed;           /* inconn_authenticated was called */
    uint64_t opened_ms;   /* loop time of the accept */
    uint64_t last_rx_ms;  /* loop time bytes last arrived (or the accept) */
    int heard;            /* at least one byte arrived */
    rb_charge_t charge;   /* its read buffer in the budget (--max-buffered) */
    tls_conn_t *tls;      /* under listener_set_tls: in decrypts into `in`, out encrypts */
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
    size_t nclosing; /* of them, being closed (they no longer count for the cap) */
    unsigned max_conns; /* open connections at most (listener_set_max_conns) */
    unsigned accept_limit; /* listener_set_accept_limit; 0: none */
    int deferred;       /* a connection waits to be accepted (at accept_limit) */
    unsigned auth_ms;   /* listener_require_auth; 0: none */
    unsigned idle_ms;   /* listener_set_idle_timeout; 0: none */
    uv_timer_t sweep;   /* deadlines and idle timeouts */
    int sweeping;
    int open_handles;   /* the socket and, once started, the sweep timer */
    uint64_t refused;   /* connections refused at the cap, not yet logged */
    uint64_t refusal_logged_ms;
    tls_ctx_t *tls;  /* listener_set_tls; NULL: plain TCP */
    int pass_fds;    /* listener_pass_fds */
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
/* Limits shared by every listener of the process (one service), set from its
 * flags before its listeners start:
 *   max_buffered  bytes the connections' read buffers may hold together
 *                 (--max-buffered; 0: no limit). Buffers of up to
 *                 INCONN_UNCHARGED bytes are not counted. When a buffer must
 *                 grow past the limit, the connection whose partial frame has
 *                 waited longest is closed first (an empty buffer is freed
 *                 instead), until it fits; see rbudget.h.
 *   max_conns     open connections per listener (--max-connections; 0: the
 *                 default, inconn_default_max_conns). */
#define INCONN_UNCHARGED (256 * 1024)
void inconn_set_limits(uint64_t max_buffered, unsigned max_conns);
/* The default --max-buffered: every service's largest frame fits (the store's
 * 1 GiB, a cluster's 256 MiB slot state, with room for a few at once), and
 * headers alone never reach it since buffers grow only with bytes received. */
#define INCONN_DEFAULT_MAX_BUFFERED (1024ull * 1024 * 1024)

/* The flags of every service that accepts connections, parsed alike. */
typedef struct {
    uint64_t max_buffered; /* 0: not given */
    unsigned max_conns;    /* 0: not given */
} inconn_flags_t;
/* 1 if argv[*i] is --max-buffered or --max-connections (its value taken), 0
 * if not, -1 after a message on stderr (prog names the command). */
int inconn_flag(inconn_flags_t *f, int argc, char **argv, int *i, const char *prog);
/* inconn_set_limits from the flags: max_buffered defaults to
 * INCONN_DEFAULT_MAX_BUFFERED, raised to min_buffered if that is larger. */
void inconn_apply_flags(const inconn_flags_t *f, uint64_t min_buffered);
#define INCONN_FLAGS_USAGE \
"  --max-buffered BYTES  memory all connections' read buffers may hold together\n" \
"                        (default 1G, or the largest frame if larger; suffixes\n" \
"                        K, M, G). Past it the connection whose partial frame\n" \
"                        has waited longest is closed first\n" \
"  --max-connections N   open connections per listening port (default: 1024, or\n" \
"                        less when the open-file limit is low); beyond it a new\n" \
"                        one replaces a silent connection, or is closed at once\n"
/* min(1024, (open-file limit - 128) / 4), at least 16: four full listeners
 * still leave descriptors for files, sinks and links. */
unsigned inconn_default_max_conns(void);
/* Bytes charged to the budget now, and the most at any time. */
uint64_t inconn_buffered(void);
uint64_t inconn_buffered_peak(void);

/* At most n open connections on this listener. A new one beyond it replaces
 * the oldest connection that has sent nothing at all (a client speaks first on
 * every port, so one that has not is idle or hostile, and a real client's first
 * bytes follow its connect at once); else the connection that has been silent
 * longest, if that one has been silent long enough to give way
 * (INCONN_EVICT_PREAUTH_MS for a connection that has not authenticated on a
 * listener that requires it, INCONN_EVICT_SILENT_MS on a listener that requires
 * none); an authenticated one never gives way. Else the new one is accepted
 * and closed at once, so the kernel's backlog does not fill up, with a log line
 * at most once a second. */
#define INCONN_EVICT_PREAUTH_MS 250
#define INCONN_EVICT_SILENT_MS 1000
void listener_set_max_conns(listener_t *l, unsigned n);
/* Serve at most n connections at once: further ones are not accepted (they
 * wait, connected, in the kernel's backlog) until one of those served has
 * closed. This is Wallaroo's TCPSourceConfig parallelism. */
void listener_set_accept_limit(listener_t *l, unsigned n);
/* Every connection must pass inconn_authenticated within `ms` of its accept or
 * is closed (not counting time the listener or it spent paused). The
 * environment variable BETTONG_AUTH_TIMEOUT_MS overrides ms (for tests). */
void listener_require_auth(listener_t *l, unsigned ms);
/* A connection from which nothing arrives for `ms` (while it is read) is
 * closed; 0 turns it off. */
void listener_set_idle_timeout(listener_t *l, unsigned ms);
/* The peer proved who it is (its HELLO passed): no deadline any more, and it
 * never gives way to a new connection at the cap. */
static inline void inconn_authenticated(inconn_t *c) { c->authed = 1; }

/* Every connection accepted from now on speaks TLS (a server context of
 * net/tls.h, kept by reference): what it reads is decrypted before frames are
 * cut (into the read buffer; a large frame is not read in place then), what
 * its writer sends is encrypted. A peer whose TLS handshake fails is closed
 * with a log line. The auth handshake (net/authconn.h) binds itself to the
 * session (inconn_binding). */
static inline void listener_set_tls(listener_t *l, tls_ctx_t *ctx) { l->tls = ctx; }
/* Connections accepted from now on by this Unix-domain listener can receive
 * and send file descriptors (SCM_RIGHTS; libuv's ipc pipes): see
 * inconn_take_fd. One that has more than INCONN_MAX_PENDING_FDS received and
 * not taken is closed with a log line. */
#define INCONN_MAX_PENDING_FDS 8
static inline void listener_pass_fds(listener_t *l) { l->pass_fds = 1; }
/* 1 if descriptors travel on c (see listener_pass_fds). */
int inconn_passes_fds(const inconn_t *c);
/* Only inside the frame callback: the oldest descriptor received on c and
 * not yet taken, held by a new pipe handle (uv_fileno gives it), which the
 * caller gives to inconn_put_fd or inconn_fd_close. NULL if there is none. A
 * descriptor arrives with the first byte of the frame it belongs to, so the
 * frame that announces one finds it here. */
uv_pipe_t *inconn_take_fd(inconn_t *c);
/* Close a descriptor inconn_take_fd gave (its handle is freed later). */
void inconn_fd_close(uv_pipe_t *fd);
/* Queue a copy of frame[0..n) with fd attached to its first byte (c must pass
 * descriptors); fd must stay open until release(ctx), which runs once the
 * frame is written or dropped, also on failure (returns -1: out of memory).
 * `held`: the bytes fd holds, counted in inconn_backlog until then. */
int inconn_put_fd(inconn_t *c, const void *frame, size_t n, uv_pipe_t *fd, size_t held,
                  writer_release_fn release, void *ctx);

/* The connection's TLS channel binding into b (TLS_BINDING_LEN bytes):
 * returns the length, or 0 on a connection without TLS. */
size_t inconn_binding(inconn_t *c, uint8_t *b);
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
