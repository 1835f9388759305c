#include "net/inconn.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/addr.h"
#include "util/log.h"

#define READ_CHUNK (64 * 1024)
/* Keep a grown buffer (after a large frame) only up to this size once empty. */
#define KEEP_BUFFER (1024 * 1024)
/* SO_SNDBUF of connections over Unix sockets (capped by net.core.wmem_max). */
#define INCONN_UNIX_SNDBUF (4 * 1024 * 1024)
/* Sizes of taken blocks kept as the spare (inconn_block_free). */
#define INCONN_SPARE_MIN (4 * 1024 * 1024)
#define INCONN_SPARE_MAX (256 * 1024 * 1024)

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
    writer_free(&c->out);
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
 * bytes and c's own buffer does not. */
static void take_spare(inconn_t *c, size_t need)
{
    size_t have = buf_unread(&c->in);
    if (!spare || spare_size < need || spare_size < have || c->in.cap - c->in.off >= need)
        return;
    memcpy(spare, buf_head(&c->in), have);
    free(c->in.data);
    c->in.data = spare;
    c->in.off = 0;
    c->in.len = have;
    c->in.cap = spare_size;
    spare = NULL;
    spare_size = 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    inconn_t *c = h->data;
    size_t want = READ_CHUNK;
    size_t have = buf_unread(&c->in);
    /* Room for the whole frame being assembled, so a large frame is read in
     * place instead of through repeated small reads. */
    int large = c->need > have && c->need - have > want;
    if (large) {
        want = c->need - have;
        take_spare(c, c->need);
    }
    size_t old_cap = c->in.cap;
    if (buf_reserve(&c->in, want) < 0) {
        out->base = NULL;
        out->len = 0;
        return;
    }
    /* A large frame's new memory: backed at once rather than fault by fault. */
    if (large && c->in.cap > old_cap)
        buf_prefault(c->in.data + c->in.len, want);
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
            char tmp[160];
            inconn_close(c, frame_error_text(st, declared, spec.max_payload, tmp, sizeof tmp));
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
    return rc;
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
    c->in.len += (size_t)nread;
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
    if (l->is_unix)
        uv_pipe_init(l->loop, &c->h.pipe, 0);
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
    if (!l->is_unix)
        uv_tcp_nodelay(&c->h.tcp, 1);
    else
        unix_send_buffer(c);
    describe_peer(c);
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
    snprintf(l->name, sizeof l->name, "%s", name);
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
    uv_close(&l->h.handle, on_listener_handle_closed);
}
