#include "net/inconn.h"

#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/addr.h"
#include "util/args.h"
#include "util/fdlimit.h"
#include "util/log.h"

#define READ_CHUNK (64 * 1024)
/* Keep a grown buffer (after a large frame) only up to this size once empty. */
#define KEEP_BUFFER (1024 * 1024)
/* SO_SNDBUF of connections over Unix sockets (capped by net.core.wmem_max). */
#define INCONN_UNIX_SNDBUF (4 * 1024 * 1024)
/* Sizes of taken blocks kept as the spare (inconn_block_free). */
#define INCONN_SPARE_MIN (4 * 1024 * 1024)
#define INCONN_SPARE_MAX (256 * 1024 * 1024)
/* The spare block goes to a frame only once this fraction (1/N) of it has
 * arrived: a header alone must not take it from the legitimate large frames. */
#define SPARE_JUSTIFY 4
/* Log lines about refused connections and deadlines: at most one a second. */
#define LIMIT_LOG_MS 1000

/* The limits of this process's service (inconn_set_limits); every listener
 * runs on the one loop thread, like the spare block below. */
static rbudget_t budget;
static unsigned limit_max_conns;
static int limits_logged;

void inconn_set_limits(uint64_t max_buffered, unsigned max_conns)
{
    budget.limit = max_buffered;
    limit_max_conns = max_conns;
}

int inconn_flag(inconn_flags_t *f, int argc, char **argv, int *i, const char *prog)
{
    const char *v;
    long n;
    if ((v = args_flag_value(argc, argv, i, "--max-buffered", NULL))) {
        if (args_parse_size(v, &f->max_buffered) < 0) {
            fprintf(stderr, "%s: bad --max-buffered '%s' (bytes, suffixes K, M, G)\n", prog, v);
            return -1;
        }
        return 1;
    }
    if ((v = args_flag_value(argc, argv, i, "--max-connections", NULL))) {
        if (args_parse_long(v, 1, 10000000, &n) < 0) {
            fprintf(stderr, "%s: --max-connections takes a number of at least 1\n", prog);
            return -1;
        }
        f->max_conns = (unsigned)n;
        return 1;
    }
    return 0;
}

void inconn_apply_flags(const inconn_flags_t *f, uint64_t min_buffered)
{
    uint64_t b = f->max_buffered;
    if (!b)
        b = INCONN_DEFAULT_MAX_BUFFERED > min_buffered ? INCONN_DEFAULT_MAX_BUFFERED
                                                        : min_buffered;
    inconn_set_limits(b, f->max_conns);
}

unsigned inconn_default_max_conns(void)
{
    unsigned long fds = fdlimit_current();
    unsigned long n = fds > 128 + 64 ? (fds - 128) / 4 : 16;
    return n > 1024 ? 1024 : n < 16 ? 16 : (unsigned)n;
}

uint64_t inconn_buffered(void) { return budget.used; }
uint64_t inconn_buffered_peak(void) { return budget.peak; }

static uint64_t loop_ms(const inconn_t *c) { return uv_now(c->listener->loop); }

/* Charge c's read buffer to the budget as it is now. */
static void recharge(inconn_t *c)
{
    size_t cap = c->closing ? 0 : c->in.cap;
    rbudget_set(&budget, &c->charge, cap > INCONN_UNCHARGED ? cap : 0, loop_ms(c));
}

static void maybe_listener_closed(listener_t *l)
{
    if (l->closing == 2 && l->nconns == 0 && l->on_closed) {
        void (*cb)(listener_t *) = l->on_closed;
        l->on_closed = NULL;
        cb(l);
    }
}

static void on_connection(uv_stream_t *server, int status);

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
    l->nclosing--;
    if (l->handler->closed)
        l->handler->closed(l->owner, c);
    buf_free(&c->in);
    writer_free(&c->out);
    tls_conn_free(c->tls);
    free(c);
    if (l->deferred && !l->closing && l->nconns < l->accept_limit) {
        /* A connection waits for the one that just closed: serve it. */
        l->deferred = 0;
        on_connection(&l->h.stream, 0);
    }
    maybe_listener_closed(l);
}

void inconn_close(inconn_t *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->listener->nclosing++;
    recharge(c);
    if (why)
        log_warn("%s: closing connection %llu from %s: %s", c->listener->name,
                 (unsigned long long)c->id, c->peer, why);
    uv_close(&c->h.handle, on_conn_closed);
}

/* Our side is shut down: the peer reads the answer, then EOF. Stay open,
 * reading and dropping, until it closes too (or the owner's deadline closes
 * us), so bytes it still sends do not meet a closed socket and turn into a
 * reset that could break its last send or lose the answer. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
    inconn_t *c = req->data;
    if (status < 0 || !c->reading)
        inconn_close(c, NULL);
}

/* The last bytes are written (or the connection failed): finish. */
static void linger_step(inconn_t *c)
{
    if (c->closing || c->lingering != 1 || inconn_backlog(c) > 0)
        return;
    c->lingering = 2;
    c->shutdown_req.data = c;
    /* Shut down our direction so the peer reads the answer, then EOF. */
    if (uv_shutdown(&c->shutdown_req, &c->h.stream, on_shutdown) < 0)
        inconn_close(c, NULL);
}

void inconn_close_after_flush(inconn_t *c, const char *why)
{
    if (c->closing || c->lingering)
        return;
    if (why)
        log_warn("%s: closing connection %llu from %s: %s", c->listener->name,
                 (unsigned long long)c->id, c->peer, why);
    c->lingering = 1;
    inconn_flush(c);
    linger_step(c);
}

static void on_write_done(writer_t *w, int status)
{
    inconn_t *c = w->owner;
    if (status < 0) {
        if (status == UV_EPIPE || status == UV_ECONNRESET || c->lingering) {
            inconn_close(c, NULL);
        } else {
            char why[128];
            snprintf(why, sizeof why, "write error: %s", uv_strerror(status));
            inconn_close(c, why);
        }
        return;
    }
    if (c->lingering) {
        linger_step(c);
        return;
    }
    if (c->listener->handler->wrote)
        c->listener->handler->wrote(c->listener->owner, c);
}

void inconn_flush(inconn_t *c)
{
    if (!c->closing)
        writer_flush(&c->out);
}

/* One spare block (see inconn_block_free): a large frame's memory kept for the
 * next large frame, whose pages are then already backed (a fresh block costs a
 * page fault per 4 KiB, about as much as reading the frame). The loop's thread
 * only. */
static void *spare;
static size_t spare_size;

void inconn_block_free(void *block)
{
    if (!block)
        return;
    size_t n = malloc_usable_size(block);
    if (n >= INCONN_SPARE_MIN && n <= INCONN_SPARE_MAX && n > spare_size) {
        free(spare);
        spare = block;
        spare_size = n;
        return;
    }
    free(block);
}

/* Move c's unread bytes into the spare block if it holds a frame of `need`
 * bytes and c's own buffer does not, once enough of the frame has arrived to
 * justify it and the budget has room for it. */
static void take_spare(inconn_t *c, size_t need)
{
    size_t have = buf_unread(&c->in);
    if (!spare || spare_size < need || spare_size < have || c->in.cap - c->in.off >= need ||
        have < need / SPARE_JUSTIFY || !rbudget_fits(&budget, &c->charge, spare_size))
        return;
    memcpy(spare, buf_head(&c->in), have);
    free(c->in.data);
    c->in.data = spare;
    c->in.off = 0;
    c->in.len = have;
    c->in.cap = spare_size;
    spare = NULL;
    spare_size = 0;
    recharge(c);
}

static inconn_t *charge_owner(rb_charge_t *ch)
{
    return (inconn_t *)((char *)ch - offsetof(inconn_t, charge));
}

/* Make the budget room for c's buffer to hold `cap` bytes: the oldest holders
 * give way first (an empty buffer is just freed; a partial frame closes its
 * connection). Returns 0, or -1 when c itself is the oldest holder (closed). */
static int make_room(inconn_t *c, size_t cap)
{
    uint64_t want = cap > INCONN_UNCHARGED ? cap : 0;
    while (!rbudget_fits(&budget, &c->charge, want)) {
        rb_charge_t *oldest = rbudget_oldest(&budget);
        inconn_t *v = oldest ? charge_owner(oldest) : c;
        char why[200];
        if (v == c) {
            snprintf(why, sizeof why, "its frame of %zu bytes does not fit in the read-buffer "
                     "budget (--max-buffered %llu bytes, %llu held)", c->need,
                     (unsigned long long)budget.limit, (unsigned long long)budget.used);
            inconn_close(c, why);
            return -1;
        }
        if (buf_unread(&v->in) == 0) {
            buf_free(&v->in);
            recharge(v);
            continue;
        }
        snprintf(why, sizeof why, "over the read-buffer budget (--max-buffered %llu bytes): "
                 "its partial frame (%zu of %zu bytes) has waited longest",
                 (unsigned long long)budget.limit, buf_unread(&v->in), v->need);
        inconn_close(v, why);
        /* Its memory goes now, not when the close completes: nothing reads it. */
        buf_free(&v->in);
    }
    return 0;
}

/* The room to read into next. A large frame's buffer grows with the bytes that
 * have arrived, never with what its header declares: at most double what is
 * held, up to the whole frame, which is then read in place. A header alone so
 * costs a connection one small buffer, and memory follows real traffic. */
static size_t next_room(inconn_t *c, int *large)
{
    size_t have = buf_unread(&c->in);
    *large = c->need > have && c->need - have > READ_CHUNK;
    if (!*large)
        return READ_CHUNK;
    /* Fill what the buffer has before growing it: growing on every read that
     * leaves less than `have` free would copy the frame again and again. */
    size_t room = c->in.cap - c->in.len;
    if (room >= READ_CHUNK)
        return room;
    size_t step = have > READ_CHUNK ? have : READ_CHUNK;
    return c->need - have < step ? c->need - have : step;
}

/* Ciphertext is read here and decrypted into the connection's buffer at once
 * (one loop thread: one buffer serves every TLS connection). */
static uint8_t tls_in[READ_CHUNK];

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    inconn_t *c = h->data;
    out->base = NULL;
    out->len = 0;
    if (c->tls) {
        out->base = (char *)tls_in;
        out->len = sizeof tls_in;
        return;
    }
    int large;
    size_t want = next_room(c, &large);
    if (large)
        take_spare(c, c->need);
    size_t old_cap = c->in.cap;
    if (c->in.cap - c->in.len < want) {
        /* Exact sizes for large frames, so the budget sees what is held. */
        if (make_room(c, buf_unread(&c->in) + want) < 0)
            return;
        if ((large ? buf_reserve_exact(&c->in, want) : buf_reserve(&c->in, want)) < 0)
            return;
        recharge(c);
    }
    /* The new memory of a large frame, justified by the bytes already here:
     * backed at once rather than fault by fault. */
    if (large && c->in.cap > old_cap)
        buf_prefault(c->in.data + c->in.len, c->in.cap - c->in.len);
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

void *inconn_take_frame(inconn_t *c)
{
    if (c->taken || c->cur_frame == 0)
        return NULL;
    size_t rest = buf_unread(&c->in) - c->cur_frame;
    buf_t fresh;
    buf_init(&fresh);
    if (buf_append(&fresh, buf_head(&c->in) + c->cur_frame, rest) < 0)
        return NULL;
    void *block = c->in.data;
    c->in = fresh;
    c->taken = 1;
    recharge(c);
    return block;
}

/* Cut whole frames off the buffer and hand them over. Returns -1 if the
 * connection was closed. */
static int drain_frames(inconn_t *c)
{
    listener_t *l = c->listener;
    frame_spec_t spec = *l->spec;
    spec.max_payload = c->max_payload;
    int begun = 0;
    int rc = 0;
    if (spec.length_fn && buf_unread(&c->in) >= spec.header_len) {
        if (l->handler->batch_begin)
            l->handler->batch_begin(l->owner);
        begun = 1;
    }
    while (!c->closing && !c->lingering && c->reading) {
        /* The limit may change between frames (raised once a peer authenticates). */
        spec.max_payload = c->max_payload;
        size_t poff = 0, plen = 0, flen = 0;
        uint64_t declared = 0;
        frame_status st = frame_next(&spec, buf_head(&c->in), buf_unread(&c->in), &poff, &plen,
                                     &flen, &declared);
        if (st == FRAME_NEED_MORE) {
            c->need = flen;
            break;
        }
        if (st != FRAME_OK) {
            char tmp[160], why[300];
            /* 0x16 0x03: a TLS record, i.e. a peer that speaks TLS to a plain port. */
            const uint8_t *h = buf_head(&c->in);
            int tls_peer = !c->tls && buf_unread(&c->in) >= 2 && h[0] == 0x16 && h[1] == 0x03;
            snprintf(why, sizeof why, "%s%s",
                     frame_error_text(st, declared, spec.max_payload, tmp, sizeof tmp),
                     tls_peer ? " (it looks like a TLS handshake: the peer uses TLS, this "
                                "port does not)" : "");
            inconn_close(c, why);
            rc = -1;
            break;
        }
        if (!begun) {
            if (l->handler->batch_begin)
                l->handler->batch_begin(l->owner);
            begun = 1;
        }
        const uint8_t *f = buf_head(&c->in);
        c->cur_frame = flen;
        int r = l->handler->frame(l->owner, c, f, flen, f + poff, plen);
        c->cur_frame = 0;
        if (c->taken)
            c->taken = 0; /* the frame left with its memory; the buffer holds the rest */
        else
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
    if (begun && l->handler->batch_end)
        l->handler->batch_end(l->owner);
    if (!c->closing && buf_unread(&c->in) == 0)
        buf_shrink(&c->in, KEEP_BUFFER);
    recharge(c);
    return rc;
}

/* Decrypt n bytes read into c->in (charged to the budget like any read) and
 * write what the TLS engine answers (handshake records, alerts). Returns 0, or
 * -1 when the connection was closed. */
static int tls_read(inconn_t *c, const uint8_t *p, size_t n)
{
    int was_ready = tls_ready(c->tls);
    /* Plaintext is never longer than the ciphertext it came in. */
    if (make_room(c, buf_unread(&c->in) + n + READ_CHUNK) < 0)
        return -1;
    int rc = tls_feed(c->tls, p, n, &c->in);
    recharge(c);
    if (stream_write_tls_out(&c->h.stream, c->tls) < 0 && rc == 0) {
        inconn_close(c, "cannot write TLS records (out of memory or connection broken)");
        return -1;
    }
    if (rc < 0) {
        char why[400];
        snprintf(why, sizeof why, "%s%s", tls_error(c->tls),
                 was_ready ? "" : " (does the peer connect without TLS?)");
        inconn_close(c, why);
        return -1;
    }
    if (!was_ready && tls_ready(c->tls))
        inconn_flush(c); /* anything the owner queued meanwhile */
    return 0;
}

size_t inconn_binding(inconn_t *c, uint8_t *b)
{
    return c->tls && tls_binding(c->tls, b) == 0 ? TLS_BINDING_LEN : 0;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    inconn_t *c = s->data;
    if (nread < 0) {
        if (c->lingering) {
            /* The peer is gone or done: nothing more will be delivered. */
            inconn_close(c, NULL);
        } else if (nread != UV_EOF) {
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
    c->last_rx_ms = loop_ms(c);
    c->heard = 1;
    if (inconn_passes_fds(c) && uv_pipe_pending_count(&c->h.pipe) > INCONN_MAX_PENDING_FDS) {
        char why[128];
        snprintf(why, sizeof why, "more than %d file descriptors sent ahead of the frames that "
                 "take them", INCONN_MAX_PENDING_FDS);
        inconn_close(c, why); /* libuv closes those it holds */
        return;
    }
    if (!c->tls)
        c->in.len += (size_t)nread;
    else if (tls_read(c, (const uint8_t *)b->base, (size_t)nread) < 0)
        return;
    if (c->lingering) {
        /* Read and drop, so the kernel has no unread bytes that would turn our
         * close into a reset before the peer has read the answer. */
        buf_clear(&c->in);
        return;
    }
    drain_frames(c);
}

static void start_reading(inconn_t *c)
{
    if (c->reading || c->closing || c->paused)
        return;
    c->reading = 1;
    /* Frames left from a batch that was stopped early go first. */
    if (buf_unread(&c->in) > 0 && drain_frames(c) < 0)
        return;
    if (c->reading && !c->closing) {
        int rc = uv_read_start(&c->h.stream, alloc_cb, read_cb);
        if (rc < 0)
            inconn_close(c, uv_strerror(rc));
    }
}

static void stop_reading(inconn_t *c)
{
    if (!c->reading || c->closing)
        return;
    c->reading = 0;
    uv_read_stop(&c->h.stream);
}

void inconn_pause(inconn_t *c)
{
    c->paused = 1;
    stop_reading(c);
}

void inconn_resume(inconn_t *c)
{
    c->paused = 0;
    if (!c->listener->paused && !c->lingering)
        start_reading(c);
}

static void free_unaccepted(uv_handle_t *h) { free(h->data); }

/* ------------------------------------------------------------ descriptors */

int inconn_passes_fds(const inconn_t *c)
{
    return c->listener->is_unix && c->listener->pass_fds && !c->tls;
}

static void free_fd_handle(uv_handle_t *h) { free(h); }

uv_pipe_t *inconn_take_fd(inconn_t *c)
{
    if (!inconn_passes_fds(c) || c->closing || uv_pipe_pending_count(&c->h.pipe) == 0)
        return NULL;
    uv_pipe_t *p = malloc(sizeof *p);
    if (!p)
        return NULL;
    uv_pipe_init(c->listener->loop, p, 0);
    p->data = NULL;
    int rc = uv_accept(&c->h.stream, (uv_stream_t *)p);
    /* With no descriptor left, uv_accept watches the connection for input
     * again: if it is not being read, have libuv stop that (start, then stop,
     * is how its flags and the watcher agree again). */
    if (!c->reading) {
        uv_read_start(&c->h.stream, alloc_cb, read_cb);
        uv_read_stop(&c->h.stream);
    }
    if (rc < 0) {
        uv_close((uv_handle_t *)p, free_fd_handle);
        return NULL;
    }
    return p;
}

void inconn_fd_close(uv_pipe_t *fd)
{
    if (fd)
        uv_close((uv_handle_t *)fd, free_fd_handle);
}

typedef struct {
    writer_release_fn release;
    void *ctx;
    uint8_t frame[];
} fd_frame_t;

static void release_fd_frame(void *ctx)
{
    fd_frame_t *f = ctx;
    if (f->release)
        f->release(f->ctx);
    free(f);
}

int inconn_put_fd(inconn_t *c, const void *frame, size_t n, uv_pipe_t *fd, size_t held,
                  writer_release_fn release, void *ctx)
{
    fd_frame_t *f = malloc(sizeof *f + n);
    if (!f) {
        if (release)
            release(ctx);
        return -1;
    }
    f->release = release;
    f->ctx = ctx;
    memcpy(f->frame, frame, n);
    return writer_put_handle(&c->out, f->frame, n, (uv_stream_t *)fd, held, release_fd_frame, f);
}

/* The peer's address for log lines: host:port, or for a Unix socket the peer's
 * pid (the socket has no address). */
static void describe_peer(inconn_t *c)
{
    if (c->listener->is_unix) {
        uv_os_fd_t fd;
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (uv_fileno(&c->h.handle, &fd) == 0 &&
            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            snprintf(c->peer, sizeof c->peer, "unix pid %d", (int)cred.pid);
        else
            snprintf(c->peer, sizeof c->peer, "unix");
        c->peer_loopback = 1;
        return;
    }
    struct sockaddr_storage peer;
    int plen = sizeof peer;
    if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&peer, &plen) == 0) {
        sockaddr_text((struct sockaddr *)&peer, c->peer, sizeof c->peer);
        c->peer_loopback = sockaddr_is_loopback((struct sockaddr *)&peer);
    } else
        snprintf(c->peer, sizeof c->peer, "?");
}

/* A local peer's socket gets a larger send buffer than the default (about
 * 200 KiB): a large frame then goes out in fewer writes, with fewer wake-ups of
 * the reader. (TCP is left to the kernel's own tuning.) Best effort. */
static void unix_send_buffer(inconn_t *c)
{
    uv_os_fd_t fd;
    int size = INCONN_UNIX_SNDBUF;
    if (uv_fileno(&c->h.handle, &fd) == 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

/* A count of refused connections, logged at most once a second. */
static void note_refusal(listener_t *l, const char *why)
{
    uint64_t now = uv_now(l->loop);
    l->refused++;
    if (l->refusal_logged_ms && now - l->refusal_logged_ms < LIMIT_LOG_MS)
        return;
    log_warn("%s: refused %llu connection(s) since the last such line: %s", l->name,
             (unsigned long long)l->refused, why);
    l->refused = 0;
    l->refusal_logged_ms = now;
}

/* At the cap: the oldest connection that never sent a byte, else the one
 * that has been silent longest if it has been silent long enough to give way
 * (see listener_set_max_conns), else NULL. One that we do not read (paused)
 * is silent because of us: it stays. */
static inconn_t *evictable(listener_t *l)
{
    uint64_t now = uv_now(l->loop);
    uint64_t need = l->auth_ms ? INCONN_EVICT_PREAUTH_MS : INCONN_EVICT_SILENT_MS;
    inconn_t *mute = NULL, *silent = NULL;
    for (inconn_t *c = l->conns; c; c = c->next) {
        if (c->closing || c->authed || !c->reading)
            continue;
        if (!c->heard) {
            if (!mute || c->opened_ms < mute->opened_ms)
                mute = c;
        } else if (now - c->last_rx_ms >= need &&
                   (!silent || c->last_rx_ms < silent->last_rx_ms)) {
            silent = c;
        }
    }
    return mute ? mute : silent;
}

/* Accept the connection and close it at once: left in the kernel's backlog it
 * would fill it, and then every client of this port would wait. */
static void refuse_connection(listener_t *l)
{
    stream_handle_t *h = malloc(sizeof *h);
    if (!h)
        return;
    if (l->is_unix)
        uv_pipe_init(l->loop, &h->pipe, 0);
    else
        uv_tcp_init(l->loop, &h->tcp);
    h->handle.data = h;
    (void)uv_accept(&l->h.stream, &h->stream);
    uv_close(&h->handle, free_unaccepted);
}

/* Keep the listener within its cap. Returns 0 to accept the new connection,
 * -1 when it was refused. */
static int within_cap(listener_t *l)
{
    if (!l->max_conns || l->nconns - l->nclosing < l->max_conns)
        return 0;
    inconn_t *victim = evictable(l);
    if (victim) {
        inconn_close(victim, NULL);
        note_refusal(l, "the listener is at its cap of connections (--max-connections); "
                        "the silent ones give way to new ones");
        return 0;
    }
    refuse_connection(l);
    note_refusal(l, "the listener is at its cap of connections (--max-connections)");
    return -1;
}

static void on_connection(uv_stream_t *server, int status)
{
    listener_t *l = server->data;
    if (status < 0) {
        char why[160];
        snprintf(why, sizeof why, "accept failed: %s", uv_strerror(status));
        note_refusal(l, why);
        return;
    }
    if (l->accept_limit && l->nconns >= l->accept_limit) {
        /* Not accepted now: libuv holds it and stops watching the listening
         * socket until uv_accept, so the rest wait in the kernel's backlog. */
        l->deferred = 1;
        return;
    }
    if (within_cap(l) < 0)
        return;
    inconn_t *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("%s: out of memory accepting a connection", l->name);
        return;
    }
    if (l->is_unix)
        uv_pipe_init(l->loop, &c->h.pipe, l->pass_fds);
    else
        uv_tcp_init(l->loop, &c->h.tcp);
    c->h.handle.data = c;
    c->listener = l;
    c->max_payload = l->spec->max_payload;
    buf_init(&c->in);
    writer_init(&c->out, on_write_done, c);
    if (uv_accept(server, &c->h.stream) < 0) {
        uv_close(&c->h.handle, free_unaccepted);
        return;
    }
    writer_set_stream(&c->out, &c->h.stream);
    if (l->tls && !(c->tls = tls_conn_new(l->tls))) {
        log_error("%s: out of memory starting TLS on a connection", l->name);
        uv_close(&c->h.handle, free_unaccepted);
        return;
    }
    writer_set_tls(&c->out, c->tls);
    if (!l->is_unix)
        uv_tcp_nodelay(&c->h.tcp, 1);
    else
        unix_send_buffer(c);
    describe_peer(c);
    c->opened_ms = c->last_rx_ms = uv_now(l->loop);
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
    if (l->handler->opened)
        l->handler->opened(l->owner, c);
    if (!l->paused && !c->closing)
        start_reading(c);
}

static void listener_init(listener_t *l, uv_loop_t *loop, const frame_spec_t *spec,
                          const inconn_handler_t *handler, void *owner, const char *name)
{
    memset(l, 0, sizeof *l);
    l->loop = loop;
    l->spec = spec;
    l->handler = handler;
    l->owner = owner;
    l->open_handles = 1;
    l->max_conns = limit_max_conns ? limit_max_conns : inconn_default_max_conns();
    snprintf(l->name, sizeof l->name, "%s", name);
    if (!limits_logged) {
        limits_logged = 1;
        log_info("open-file limit %s; at most %u connections per listener; read buffers "
                 "%s%llu bytes in all", fdlimit_describe(), l->max_conns,
                 budget.limit ? "at most " : "unlimited, ",
                 (unsigned long long)budget.limit);
    }
}

void listener_set_max_conns(listener_t *l, unsigned n) { l->max_conns = n; }

void listener_set_accept_limit(listener_t *l, unsigned n) { l->accept_limit = n; }

/* Connections past their deadline this sweep, logged as one line. */
typedef struct {
    unsigned unauthenticated, idle;
} sweep_count_t;

static void sweep_one(listener_t *l, inconn_t *c, uint64_t now, sweep_count_t *n)
{
    if (c->closing)
        return;
    /* Time we did not read is not the peer's silence: its clocks start again. */
    if (!c->reading && !c->lingering) {
        c->last_rx_ms = now;
        if (!c->authed)
            c->opened_ms = now;
        return;
    }
    if (l->auth_ms && !c->authed && now - c->opened_ms >= l->auth_ms) {
        n->unauthenticated++;
        inconn_close(c, NULL);
    } else if (l->idle_ms && !c->lingering && now - c->last_rx_ms >= l->idle_ms) {
        n->idle++;
        log_info("%s: closing connection %llu from %s: nothing received for %.1f s (idle "
                 "timeout)", l->name, (unsigned long long)c->id, c->peer,
                 (double)(now - c->last_rx_ms) / 1000);
        inconn_close(c, NULL);
    }
}

static void on_sweep(uv_timer_t *t)
{
    listener_t *l = t->data;
    uint64_t now = uv_now(l->loop);
    sweep_count_t n = {0, 0};
    inconn_t *c = l->conns;
    while (c) {
        inconn_t *next = c->next;
        sweep_one(l, c, now, &n);
        c = next;
    }
    if (n.unauthenticated)
        log_warn("%s: closed %u connection(s) that did not authenticate within %.1f s",
                 l->name, n.unauthenticated, (double)l->auth_ms / 1000);
}

/* One timer per listener checks the deadlines of all its connections, often
 * enough to close each within about a quarter of its deadline late. */
static void start_sweep(listener_t *l)
{
    unsigned shortest = l->auth_ms;
    if (l->idle_ms && (!shortest || l->idle_ms < shortest))
        shortest = l->idle_ms;
    if (l->closing || !shortest)
        return;
    unsigned every = shortest / 4;
    every = every < 20 ? 20 : every > 1000 ? 1000 : every;
    if (!l->sweeping) {
        uv_timer_init(l->loop, &l->sweep);
        l->sweep.data = l;
        l->sweeping = 1;
        l->open_handles++;
    }
    uv_timer_start(&l->sweep, on_sweep, every, every);
}

void listener_require_auth(listener_t *l, unsigned ms)
{
    const char *env = getenv("BETTONG_AUTH_TIMEOUT_MS");
    if (env && atoi(env) > 0)
        ms = (unsigned)atoi(env);
    l->auth_ms = ms;
    start_sweep(l);
}

void listener_set_idle_timeout(listener_t *l, unsigned ms)
{
    l->idle_ms = ms;
    start_sweep(l);
}

static int listen_or_fail(listener_t *l, int rc, char *err, size_t errlen)
{
    if (rc == 0)
        rc = uv_listen(&l->h.stream, 511, on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot listen on %s: %s", l->name, l->addr, uv_strerror(rc));
        l->closing = 1;
        uv_close(&l->h.handle, NULL);
        return -1;
    }
    return 0;
}

static void record_bound_address(listener_t *l)
{
    /* Port 0 asks the kernel for one: report the port it gave. */
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    if (uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&bound, &blen) == 0)
        sockaddr_text((struct sockaddr *)&bound, l->addr, sizeof l->addr);
}

static int start_tcp(listener_t *l, uv_loop_t *loop, const struct sockaddr *addr, int reuseport,
                     const frame_spec_t *spec, const inconn_handler_t *handler, void *owner,
                     const char *name, char *err, size_t errlen)
{
    listener_init(l, loop, spec, handler, owner, name);
    sockaddr_text(addr, l->addr, sizeof l->addr);
    uv_tcp_init(loop, &l->h.tcp);
    l->h.handle.data = l;
    int rc = 0;
    if (reuseport) {
        int one = 1;
        int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
            rc = uv_translate_sys_error(errno);
            if (fd >= 0)
                close(fd);
        } else if ((rc = uv_tcp_open(&l->h.tcp, fd)) < 0) {
            close(fd);
        }
    }
    if (rc == 0)
        rc = uv_tcp_bind(&l->h.tcp, addr, 0);
    if (rc == 0)
        record_bound_address(l);
    return listen_or_fail(l, rc, err, errlen);
}

int listener_start(listener_t *l, uv_loop_t *loop, const struct sockaddr *addr,
                   const frame_spec_t *spec, const inconn_handler_t *handler, void *owner,
                   const char *name, char *err, size_t errlen)
{
    return start_tcp(l, loop, addr, 0, spec, handler, owner, name, err, errlen);
}

int listener_start_shared(listener_t *l, uv_loop_t *loop, const struct sockaddr *addr,
                          const frame_spec_t *spec, const inconn_handler_t *handler, void *owner,
                          const char *name, char *err, size_t errlen)
{
    return start_tcp(l, loop, addr, 1, spec, handler, owner, name, err, errlen);
}

int listener_adopt(listener_t *l, uv_loop_t *loop, int fd, const frame_spec_t *spec,
                   const inconn_handler_t *handler, void *owner, const char *name, char *err,
                   size_t errlen)
{
    listener_init(l, loop, spec, handler, owner, name);
    uv_tcp_init(loop, &l->h.tcp);
    l->h.handle.data = l;
    int rc = uv_tcp_open(&l->h.tcp, fd);
    if (rc == 0)
        record_bound_address(l);
    else
        close(fd);
    return listen_or_fail(l, rc, err, errlen);
}

/* A socket file left by a process that died: remove it if nothing answers. */
static int clear_stale_socket(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "cannot use %s: %s", path,
                                               strerror(errno)), -1);
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    int why = errno;
    close(fd);
    if (live) {
        snprintf(err, errlen, "another process is listening on %s", path);
        return -1;
    }
    if (why != ECONNREFUSED) {
        snprintf(err, errlen, "cannot use %s: %s", path, strerror(why));
        return -1;
    }
    if (unlink(path) < 0) {
        snprintf(err, errlen, "cannot remove the stale socket %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int listener_start_unix(listener_t *l, uv_loop_t *loop, const char *path,
                        const frame_spec_t *spec, const inconn_handler_t *handler, void *owner,
                        const char *name, char *err, size_t errlen)
{
    listener_init(l, loop, spec, handler, owner, name);
    l->is_unix = 1;
    snprintf(l->addr, sizeof l->addr, "unix:%s", path);
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(err, errlen, "%s: socket path too long (at most %zu bytes): %s", name,
                 sizeof(((struct sockaddr_un *)0)->sun_path) - 1, path);
        return -1;
    }
    char why[400];
    if (clear_stale_socket(path, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: %s", name, why);
        return -1;
    }
    uv_pipe_init(loop, &l->h.pipe, 0);
    l->h.handle.data = l;
    int rc = uv_pipe_bind(&l->h.pipe, path);
    /* Only this user may connect (the directory should be private as well). */
    if (rc == 0 && chmod(path, 0600) < 0)
        rc = uv_translate_sys_error(errno);
    return listen_or_fail(l, rc, err, errlen);
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
        if (!c->lingering)
            start_reading(c);
        c = next;
    }
}

static void on_listener_handle_closed(uv_handle_t *h)
{
    listener_t *l = h->data;
    if (--l->open_handles > 0)
        return;
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
    /* The socket file is ours: remove it so no one connects to a dead pool. */
    if (l->is_unix)
        unlink(l->addr + strlen("unix:"));
    if (l->sweeping)
        uv_close((uv_handle_t *)&l->sweep, on_listener_handle_closed);
    uv_close(&l->h.handle, on_listener_handle_closed);
}
