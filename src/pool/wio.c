#include "pool/wio.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/auth.h"
#include "net/bconn.h"
#include "net/sock.h"
#include "pool/proto.h"
#include "pool/shm.h"
#include "pool/shmspare.h"
#include "py/shmblock.h"
#include "util/buf.h"
#include "util/log.h"

/* SO_SNDBUF to a pool over a Unix socket (capped by net.core.wmem_max). */
#define WIO_UNIX_SNDBUF (4 * 1024 * 1024)

#define READ_CHUNK (256 * 1024)
#define HELLO_WAIT_S 30
#define CONNECT_WAIT_S 30
/* The pool's answers to the handshake are small; anything longer is not a pool. */
#define ANSWER_MAX 65536
#define IOV_BATCH 256

/* An output segment: DONE frames' bytes, or a pinned payload written in place. */
typedef struct oseg {
    struct oseg *next;
    buf_t b;
    const uint8_t *p; /* pinned bytes (pin != NULL) */
    size_t n;
    void *pin;
    /* A DONE whose payload (head, p[0..n), tail) goes in a memfd (shm.h). */
    struct shm_done *shm;
} oseg_t;

typedef struct shm_done {
    uint64_t task_id, started_us, finished_us;
    uint8_t status;
    uint8_t head[64], tail[64];
    size_t hlen, tlen;
    /* Or an out-of-band file (shm.h) of parts[0] (the pickle) and parts[1..)
     * (its buffers): its page 0 and its pieces (room for 2 * nparts). */
    struct iovec *parts, *oob_iov;
    int nparts;
    uint8_t *oob_head;
} shm_done_t;

static void shm_done_free(shm_done_t *d)
{
    free(d->parts);
    free(d->oob_iov);
    free(d->oob_head);
    free(d);
}

static struct {
    bconn_t conn; /* to the pool, plain or TLS */
    pthread_mutex_t in_mu;
    pthread_cond_t in_cv;
    wmsg_t *in_head, *in_tail;
    int main_waiting;
    pthread_mutex_t out_mu;
    pthread_cond_t out_cv;
    oseg_t *out_head, *out_tail;
    int writer_waiting;
    oseg_t *released; /* pinned segments written, for the main thread */
    buf_t early;      /* read during the handshake: what came after WELCOME */
    int fds;          /* large payloads go as memfds (the pool's WELCOME said so) */
    shm_fdq_t fdq;    /* descriptors received ahead of their frames (reader's) */
    shm_spare_t spare; /* the next DONE_FD's memfd, made ready (pool/shmspare.h;
                          freed with the process) */
} io = {
    .conn = {.fd = -1},
    .in_mu = PTHREAD_MUTEX_INITIALIZER,
    .in_cv = PTHREAD_COND_INITIALIZER,
    .out_mu = PTHREAD_MUTEX_INITIALIZER,
    .out_cv = PTHREAD_COND_INITIALIZER,
};

/* ------------------------------------------------------------ connecting */

/* Keepalive: a worker whose remote pool vanished without a FIN (machine gone)
 * notices within minutes instead of waiting forever. */
static void tune_tcp(int fd)
{
    int one = 1, idle = 60, intvl = 10, cnt = 6;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

int wio_connect(const char *addr, char *err, size_t errlen)
{
    int what;
    char why[400];
    if (bconn_open(&io.conn, addr, 1, sock_now() + CONNECT_WAIT_S, &what, why, sizeof why) < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", addr, why);
        return -1;
    }
    int domain = 0;
    socklen_t dlen = sizeof domain;
    if (getsockopt(io.conn.fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == 0 && domain != AF_UNIX)
        tune_tcp(io.conn.fd);
    return 0;
}

/* ------------------------------------------------------------ blocking I/O */

/* bconn_recv, or once descriptors travel a recvmsg that keeps them (io.fdq). */
static ssize_t conn_recv(void *p, size_t n)
{
    if (!io.fds)
        return bconn_recv(&io.conn, p, n, 0);
    ssize_t r = shm_recv(io.conn.fd, p, n, 0, &io.fdq);
    if (io.fdq.overflow || io.fdq.lost) {
        if (io.fdq.overflow)
            log_error("the pool sent more than %d descriptors ahead of their frames: exiting",
                      SHM_MAX_PENDING);
        else
            log_error("a task's shared memory could not be received (open-file limit?): "
                      "exiting");
        _exit(WORKER_EXIT_ERROR);
    }
    return r;
}

static int read_all(void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = conn_recv(b, n);
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

static int parse_answer(const uint8_t *body, size_t n, uint32_t *peer_id, char *err,
                        size_t errlen)
{
    proto_rd_t r;
    proto_rd_init(&r, body, n);
    uint8_t type = proto_u8(&r);
    if (type == MSG_WELCOME) {
        *peer_id = proto_u32(&r);
        proto_u32(&r);
        /* A pool of an older build ends here: no descriptors then. */
        io.fds = r.p < r.end && (proto_u8(&r) & PROTO_TAKES_FDS);
        if (!r.err)
            return 0;
    } else if (type == MSG_REFUSED) {
        size_t len;
        const uint8_t *why = proto_str16(&r, &len);
        if (why) {
            snprintf(err, errlen, "the pool refused this worker: %.*s", (int)len, why);
            return WORKER_EXIT_REFUSED;
        }
    }
    snprintf(err, errlen, "unexpected answer to the handshake (message type %u)", type);
    return WORKER_EXIT_UNPROVEN;
}

/* What the handshake's failures mean to a worker (rc, errno e), in err: the
 * exit status. */
static int handshake_failed(int rc, int e, const char *addr, char *err, size_t errlen)
{
    if (rc == SOCK_HS_EPROOF) {
        snprintf(err, errlen, "the pool at %s could not prove it knows the secret "
                 "(BETTONG_SECRET): refusing it (the secrets differ, or it is not the real "
                 "pool); nothing it sent was read", addr);
        return WORKER_EXIT_UNPROVEN;
    }
    if (rc == SOCK_HS_EFORMAT) {
        snprintf(err, errlen, "%s does not speak the Bettong pool handshake: refusing it",
                 addr);
        return WORKER_EXIT_UNPROVEN;
    }
    if (rc == SOCK_HS_ESYSTEM) {
        snprintf(err, errlen, "cannot start the handshake: no random bytes or out of memory");
        return WORKER_EXIT_ERROR;
    }
    snprintf(err, errlen, "no answer to the handshake from %s (%s; waited at most %d s)", addr,
             e == ECONNRESET ? "the pool closed the connection" : strerror(e),
             HELLO_WAIT_S);
    return WORKER_EXIT_NO_CONNECT;
}

/* Descriptors can travel: a plain Unix-domain connection. */
static int on_unix_socket(void)
{
    int domain = 0;
    socklen_t dlen = sizeof domain;
    return !io.conn.tls && getsockopt(io.conn.fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == 0 &&
           domain == AF_UNIX;
}

int wio_hello(const char *addr, const char *name, const char *near, const char *secret,
              uint32_t *peer_id, char *err, size_t errlen)
{
    buf_t id;
    buf_init(&id);
    if (proto_put_identity(&id, ROLE_WORKER, (uint32_t)getpid(), name, strlen(name), near,
                           near ? strlen(near) : 0) < 0 ||
        proto_put_identity_flags(&id, on_unix_socket() && shm_enabled() ? PROTO_TAKES_FDS : 0)
            < 0) {
        snprintf(err, errlen, "out of memory");
        return WORKER_EXIT_ERROR;
    }
    const uint8_t *body;
    size_t len;
    int rc = bconn_handshake(&io.conn, &io.early, POOL_SERVICE, buf_head(&id), buf_unread(&id),
                             secret, strlen(secret), ANSWER_MAX, sock_now() + HELLO_WAIT_S,
                             MSG_REFUSED, &body, &len);
    int e = errno;
    buf_free(&id);
    if (rc != 0)
        return handshake_failed(rc, e, addr, err, errlen);
    rc = parse_answer(body, len, peer_id, err, errlen);
    /* What came after WELCOME (the pool may send work at once) is the
     * reader's. */
    buf_consume(&io.early, 4 + len);
    return rc;
}

/* ------------------------------------------------------------ reader thread */

static void die_bad_frame(const char *what, unsigned type)
{
    log_error("bad message from the pool (%s, type %u): exiting", what, type);
    _exit(WORKER_EXIT_ERROR);
}

/* A TASK_FD's arguments: the oldest descriptor received, checked (size and
 * seals) and kept for the unpickler, which reads it with pread (pool/preader.h:
 * no mapping, whose fresh 4 KiB page-table entries, faulted in one by one,
 * cost more than the copy), or, for an object file, for wrun.c to map as the
 * one bytes argument (its pages populated in one call, py/mapped.h). */
static void take_task_payload(wmsg_t *m, uint64_t size)
{
    char why[160];
    int fd = shm_fdq_pop(&io.fdq);
    if (fd < 0)
        die_bad_frame("TASK_FD without a descriptor", MSG_TASK_FD);
    if (size > PROTO_MAX_FRAME || shm_check(fd, size, why, sizeof why) < 0) {
        log_error("bad TASK_FD from the pool: %s: exiting",
                  size > PROTO_MAX_FRAME ? "too large" : why);
        _exit(WORKER_EXIT_ERROR);
    }
    m->fd = fd;
    m->payload = NULL;
    m->len = (size_t)size;
}

/* Fill in m's fields from its body. */
static void parse_msg(wmsg_t *m, size_t len)
{
    proto_rd_t r;
    proto_rd_init(&r, m->body, len);
    m->type = proto_u8(&r);
    switch (m->type) {
    case MSG_FUNCDEF:
        m->id = proto_u64(&r);
        m->payload = proto_rest(&r, &m->len);
        break;
    case MSG_FUNCDROP:
        m->id = proto_u64(&r);
        break;
    case MSG_TASK:
        m->id = proto_u64(&r);
        m->gid = proto_u64(&r);
        m->payload = proto_rest(&r, &m->len);
        break;
    case MSG_SKIP:
        m->id = proto_u64(&r);
        break;
    case MSG_TASK_FD:
        if (!io.fds)
            die_bad_frame("descriptors do not travel on this connection", m->type);
        m->id = proto_u64(&r);
        m->gid = proto_u64(&r);
        take_task_payload(m, proto_u64(&r));
        m->type = MSG_TASK;
        break;
    default:
        die_bad_frame("not a message a worker expects", m->type);
    }
    if (r.err)
        die_bad_frame("truncated", m->type);
}

static wmsg_t *msg_alloc(size_t len)
{
    wmsg_t *m = malloc(sizeof *m + len);
    if (!m) {
        log_error("out of memory for a message of %zu bytes from the pool: exiting", len);
        _exit(WORKER_EXIT_ERROR);
    }
    memset(m, 0, sizeof *m);
    m->fd = -1;
    return m;
}

static void push_msgs(wmsg_t *head, wmsg_t *tail)
{
    if (!head)
        return;
    pthread_mutex_lock(&io.in_mu);
    if (io.in_tail)
        io.in_tail->next = head;
    else
        io.in_head = head;
    io.in_tail = tail;
    if (io.main_waiting)
        pthread_cond_signal(&io.in_cv);
    pthread_mutex_unlock(&io.in_mu);
}

/* SKIP: a task still waiting in the queue has not started (the main thread
 * takes one message at a time): drop it and say so. One already taken is
 * running or done; its own DONE answers. */
static void skip_task(uint64_t task_id)
{
    wmsg_t *found = NULL;
    pthread_mutex_lock(&io.in_mu);
    for (wmsg_t *prev = NULL, *m = io.in_head; m; prev = m, m = m->next) {
        if (m->type != MSG_TASK || m->id != task_id)
            continue;
        if (prev)
            prev->next = m->next;
        else
            io.in_head = m->next;
        if (io.in_tail == m)
            io.in_tail = prev;
        found = m;
        break;
    }
    pthread_mutex_unlock(&io.in_mu);
    if (!found)
        return;
    wio_msg_free(found);
    uint64_t now = proto_now_us();
    if (wio_done(task_id, CALL_CANCELLED, now, now, NULL, 0, NULL) < 0) {
        log_error("out of memory answering SKIP: exiting");
        _exit(WORKER_EXIT_ERROR);
    }
}

static void connection_gone(void)
{
    /* The pool closed the connection (or stopped a stuck call this way). */
    _exit(WORKER_EXIT_OK);
}

/* A frame larger than the read buffer: read its rest straight into the message. */
static wmsg_t *read_large(buf_t *rb, size_t len)
{
    wmsg_t *m = msg_alloc(len);
    size_t have = buf_unread(rb) - 4;
    memcpy(m->body, buf_head(rb) + 4, have);
    buf_clear(rb);
    if (read_all(m->body + have, len - have) < 0)
        connection_gone();
    return m;
}

/* Cut the whole frames in rb into messages and queue them. */
static void take_frames(buf_t *rb)
{
    wmsg_t *head = NULL, *tail = NULL;
    while (buf_unread(rb) >= 4) {
        size_t len = sock_be32(buf_head(rb));
        if (len == 0 || len > PROTO_MAX_FRAME)
            die_bad_frame("bad frame length", 0);
        wmsg_t *m;
        if (buf_unread(rb) >= 4 + len) {
            m = msg_alloc(len);
            memcpy(m->body, buf_head(rb) + 4, len);
            buf_consume(rb, 4 + len);
        } else if (len > READ_CHUNK) {
            m = read_large(rb, len);
        } else {
            break;
        }
        parse_msg(m, len);
        if (m->type == MSG_SKIP) {
            /* The tasks before it must be in the queue first. */
            push_msgs(head, tail);
            head = tail = NULL;
            skip_task(m->id);
            wio_msg_free(m);
            continue;
        }
        if (tail)
            tail->next = m;
        else
            head = m;
        tail = m;
    }
    push_msgs(head, tail);
    if (buf_unread(rb) == 0)
        buf_shrink(rb, 4 * READ_CHUNK);
}

static void *reader_main(void *arg)
{
    /* The reader starts with whatever the handshake read past WELCOME. */
    buf_t rb = io.early;
    buf_init(&io.early);
    for (;;) {
        take_frames(&rb);
        if (buf_reserve(&rb, READ_CHUNK) < 0) {
            log_error("out of memory reading from the pool: exiting");
            _exit(WORKER_EXIT_ERROR);
        }
        ssize_t n = conn_recv(rb.data + rb.len, rb.cap - rb.len);
        if (n <= 0)
            connection_gone();
        rb.len += (size_t)n;
    }
    return NULL;
}

wmsg_t *wio_take(int wait)
{
    pthread_mutex_lock(&io.in_mu);
    while (wait && !io.in_head) {
        io.main_waiting = 1;
        pthread_cond_wait(&io.in_cv, &io.in_mu);
        io.main_waiting = 0;
    }
    wmsg_t *m = io.in_head;
    if (m) {
        io.in_head = m->next;
        if (!io.in_head)
            io.in_tail = NULL;
        m->next = NULL;
    }
    pthread_mutex_unlock(&io.in_mu);
    return m;
}

void wio_msg_free(wmsg_t *m)
{
    if (m && m->fd >= 0)
        close(m->fd);
    free(m);
}

/* ------------------------------------------------------------ writer thread */

static oseg_t *oseg_new(void)
{
    oseg_t *s = calloc(1, sizeof *s);
    if (s)
        buf_init(&s->b);
    return s;
}

static void oseg_append(oseg_t *s)
{
    if (io.out_tail)
        io.out_tail->next = s;
    else
        io.out_head = s;
    io.out_tail = s;
}

int wio_done(uint64_t task_id, uint8_t status, uint64_t started_us, uint64_t finished_us,
             const void *payload, size_t len, void *pin)
{
    return wio_done_wrapped(task_id, status, started_us, finished_us, NULL, 0, payload, len, pin,
                            NULL, 0);
}

/* Hand s, a DONE that goes in a memfd (d), with its pinned bytes p[0..n), to
 * the writer thread. */
static void queue_shm_segment(oseg_t *s, const void *p, size_t n, void *pin, shm_done_t *d)
{
    s->p = p;
    s->n = n;
    s->pin = pin;
    s->shm = d;
    pthread_mutex_lock(&io.out_mu);
    oseg_append(s);
    if (io.writer_waiting)
        pthread_cond_signal(&io.out_cv);
    pthread_mutex_unlock(&io.out_mu);
}

/* A DONE whose payload the writer thread puts in a memfd (see write_shm). */
static int queue_shm_done(uint64_t task_id, uint8_t status, uint64_t started_us,
                          uint64_t finished_us, const void *head, size_t hlen,
                          const void *payload, size_t len, void *pin, const void *tail,
                          size_t tlen)
{
    oseg_t *s = oseg_new();
    shm_done_t *d = calloc(1, sizeof *d);
    if (!s || !d) {
        free(s);
        free(d);
        return -1;
    }
    *d = (shm_done_t){.task_id = task_id, .started_us = started_us, .finished_us = finished_us,
                      .status = status, .hlen = hlen, .tlen = tlen};
    memcpy(d->head, head, hlen);
    memcpy(d->tail, tail, tlen);
    queue_shm_segment(s, payload, len, pin, d);
    return 0;
}

int wio_passes_fds(void) { return io.fds; }

int wio_done_parts(uint64_t task_id, uint8_t status, uint64_t started_us, uint64_t finished_us,
                   const struct iovec *parts, int nparts, void *pin)
{
    if (!io.fds || !pin || nparts < 2 || nparts - 1 > SHM_OOB_MAX)
        return -1;
    uint64_t total = SHM_OBJ_DATA;
    for (int i = 0; i < nparts; i++)
        total += parts[i].iov_len + SHM_OBJ_DATA;
    if (total > PROTO_MAX_FRAME - 64)
        return -1;
    oseg_t *s = oseg_new();
    shm_done_t *d = calloc(1, sizeof *d);
    if (d) {
        d->parts = malloc((size_t)nparts * sizeof *d->parts);
        d->oob_iov = malloc(2 * (size_t)nparts * sizeof *d->oob_iov);
        d->oob_head = malloc(SHM_OBJ_DATA);
    }
    if (!s || !d || !d->parts || !d->oob_iov || !d->oob_head) {
        free(s);
        if (d)
            shm_done_free(d);
        return -1;
    }
    memcpy(d->parts, parts, (size_t)nparts * sizeof *parts);
    d->nparts = nparts;
    d->task_id = task_id;
    d->status = status;
    d->started_us = started_us;
    d->finished_us = finished_us;
    queue_shm_segment(s, parts[0].iov_base, parts[0].iov_len, pin, d);
    return 0;
}

int wio_done_wrapped(uint64_t task_id, uint8_t status, uint64_t started_us,
                     uint64_t finished_us, const void *head, size_t hlen, const void *payload,
                     size_t len, void *pin, const void *tail, size_t tlen)
{
    if (len > PROTO_MAX_FRAME - 64 || hlen + tlen > 64 || len + hlen + tlen > PROTO_MAX_FRAME - 64)
        return -1;
    if (pin && io.fds && hlen + len + tlen >= SHM_MIN)
        return queue_shm_done(task_id, status, started_us, finished_us, head, hlen, payload, len,
                              pin, tail, tlen);
    int rc = -1;
    pthread_mutex_lock(&io.out_mu);
    oseg_t *s = io.out_tail;
    oseg_t *ps = pin ? oseg_new() : NULL;
    oseg_t *ts = pin && tlen ? oseg_new() : NULL; /* the bytes after a pinned payload */
    if (ts && buf_append(&ts->b, tail, tlen) < 0) {
        free(ts);
        ts = NULL;
    }
    if ((!s || s->pin) && (s = oseg_new()) != NULL)
        oseg_append(s);
    if (s && (!pin || (ps && (ts || !tlen)))) {
        proto_wr_t w;
        proto_begin(&w, &s->b, MSG_DONE);
        proto_put_u64(&w, task_id);
        proto_put_u8(&w, status);
        proto_put_u64(&w, started_us);
        proto_put_u64(&w, finished_us);
        if (hlen)
            proto_put_bytes(&w, head, hlen);
        if (ps) {
            rc = proto_end_with(&w, len + tlen);
            if (rc == 0) {
                ps->p = payload;
                ps->n = len;
                ps->pin = pin;
                oseg_append(ps);
                ps = NULL;
                if (ts) {
                    oseg_append(ts);
                    ts = NULL;
                }
            }
        } else {
            proto_put_bytes(&w, payload, len);
            if (tlen)
                proto_put_bytes(&w, tail, tlen);
            rc = proto_end(&w);
        }
    }
    free(ps);
    if (ts) {
        buf_free(&ts->b);
        free(ts);
    }
    if (rc == 0 && io.writer_waiting)
        pthread_cond_signal(&io.out_cv);
    pthread_mutex_unlock(&io.out_mu);
    return rc;
}

void wio_released(void (*release)(void *pin))
{
    pthread_mutex_lock(&io.out_mu);
    oseg_t *s = io.released;
    io.released = NULL;
    pthread_mutex_unlock(&io.out_mu);
    while (s) {
        oseg_t *next = s->next;
        release(s->pin);
        free(s);
        s = next;
    }
}

static size_t oseg_len(const oseg_t *s) { return s->pin ? s->n : buf_unread(&s->b); }
static const uint8_t *oseg_data(const oseg_t *s) { return s->pin ? s->p : buf_head(&s->b); }

/* Write the segments from s up to stop (not included), in batches of
 * iovecs, all of them or die. */
static void write_segments(oseg_t *s, const oseg_t *stop)
{
    struct iovec iov[IOV_BATCH];
    size_t off = 0; /* into s */
    while (s != stop) {
        int n = 0;
        oseg_t *t = s;
        size_t toff = off;
        for (; t != stop && n < IOV_BATCH; t = t->next, toff = 0) {
            size_t len = oseg_len(t) - toff;
            if (len == 0)
                continue;
            iov[n].iov_base = (void *)(oseg_data(t) + toff);
            iov[n].iov_len = len;
            n++;
        }
        if (n == 0)
            break;
        ssize_t w = bconn_send(&io.conn, iov, n, 0);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            connection_gone();
        /* Advance past what was written. */
        size_t left = (size_t)w;
        while (s != stop && left >= oseg_len(s) - off) {
            left -= oseg_len(s) - off;
            off = 0;
            s = s->next;
        }
        off += left;
    }
    /* Over TLS the last ciphertext may still wait. */
    if (bconn_flush(&io.conn, 0) < 0)
        connection_gone();
}

/* Whether the DONE is a successful call's bytes result sent as they are (the
 * pickle head and tail wrun.c's result_out puts around them, proto.h). */
static int is_raw_bytes(const shm_done_t *d)
{
    return d->status == CALL_OK && d->hlen == PROTO_BYTES_HEAD && d->head[0] == 0x80 &&
           d->head[2] == 'B' && d->tlen == PROTO_BYTES_TAIL;
}

/* A DONE of a large payload: written into a sealed memfd, which goes to the
 * pool attached to a DONE_FD frame. If no memfd can be made (out of memory,
 * no descriptors left) the payload goes on the socket as ever. */
static void write_shm(oseg_t *s)
{
    shm_done_t *d = s->shm;
    uint8_t obj[SHM_OBJ_HEAD];
    struct iovec few[4] = {{d->head, d->hlen}, {(void *)s->p, s->n}, {d->tail, d->tlen}};
    struct iovec *iov = few;
    int niov = 3;
    int block_fd = -1; /* the bytes' own file: the block's, not to be closed */
    size_t total = d->hlen + s->n + d->tlen;
    if (d->parts) {
        /* An out-of-band file (shm.h): the client unpickles over its mapping. */
        iov = d->oob_iov;
        total = shm_oob_iov(d->oob_head, d->parts, d->nparts, iov, &niov);
    } else if (is_raw_bytes(d)) {
        /* An object file (shm.h): the client maps the bytes as its result. */
        total = shm_obj_iov(few, obj, s->p, s->n);
        niov = 4;
        /* Bytes made in a memfd block of their own (py/shmblock.h): that file. */
        block_fd = shmblock_publish(s->p, s->n, obj, SHM_OBJ_HEAD);
        if (block_fd >= 0 && shm_seal(block_fd) < 0)
            block_fd = -1;
    }
    int fd = block_fd >= 0 ? block_fd : shm_spare_take(&io.spare, total);
    if (block_fd < 0 && fd >= 0 && shm_fill(fd, iov, niov) < 0) {
        int e = errno;
        close(fd);
        fd = -1;
        errno = e;
    }
    buf_t b;
    buf_init(&b);
    proto_wr_t w;
    proto_begin(&w, &b, fd >= 0 ? MSG_DONE_FD : MSG_DONE);
    proto_put_u64(&w, d->task_id);
    proto_put_u8(&w, d->status);
    proto_put_u64(&w, d->started_us);
    proto_put_u64(&w, d->finished_us);
    if (fd >= 0) {
        proto_put_u64(&w, total);
        if (proto_end(&w) < 0)
            connection_gone();
        ssize_t sent = shm_send_fd(io.conn.fd, buf_head(&b), buf_unread(&b), fd, 0);
        if (fd != block_fd)
            close(fd);
        if (sent <= 0)
            connection_gone();
        oseg_t rest = {.p = buf_head(&b) + sent, .n = buf_unread(&b) - (size_t)sent,
                       .pin = s->pin};
        write_segments(&rest, NULL);
    } else {
        /* The same bytes on the socket: the client reads either. */
        log_warn("cannot put a result of %zu bytes in shared memory (%s): sending it on the "
                 "socket", total, strerror(errno));
        oseg_t *segs = calloc((size_t)niov + 1, sizeof *segs);
        if (!segs || proto_end_with(&w, total) < 0)
            connection_gone();
        segs[0] = (oseg_t){.p = buf_head(&b), .n = buf_unread(&b), .pin = s->pin};
        for (int i = 0; i < niov; i++) {
            segs[i].next = &segs[i + 1];
            segs[i + 1] = (oseg_t){.p = iov[i].iov_base, .n = iov[i].iov_len, .pin = s->pin};
        }
        write_segments(segs, NULL);
        free(segs);
    }
    buf_free(&b);
    shm_done_free(d);
    s->shm = NULL;
}

/* Write the list: runs of plain segments in batches, memfd DONEs one by one. */
static void write_list(oseg_t *list)
{
    oseg_t *run = list;
    for (oseg_t *s = list; s; s = s->next) {
        if (!s->shm)
            continue;
        write_segments(run, s);
        write_shm(s);
        run = s->next;
    }
    write_segments(run, NULL);
}

static void *writer_main(void *arg)
{
    for (;;) {
        pthread_mutex_lock(&io.out_mu);
        while (!io.out_head) {
            io.writer_waiting = 1;
            pthread_cond_wait(&io.out_cv, &io.out_mu);
            io.writer_waiting = 0;
        }
        oseg_t *list = io.out_head;
        io.out_head = io.out_tail = NULL;
        pthread_mutex_unlock(&io.out_mu);

        write_list(list);

        /* Pinned payloads go back to the main thread (it holds the GIL to
         * release them); byte segments are freed here. */
        oseg_t *pins = NULL;
        while (list) {
            oseg_t *next = list->next;
            if (list->pin) {
                list->next = pins;
                pins = list;
            } else {
                buf_free(&list->b);
                free(list);
            }
            list = next;
        }
        if (pins) {
            pthread_mutex_lock(&io.out_mu);
            oseg_t *last = pins;
            while (last->next)
                last = last->next;
            last->next = io.released;
            io.released = pins;
            pthread_mutex_unlock(&io.out_mu);
        }
    }
    return NULL;
}

int wio_start(char *err, size_t errlen)
{
    int fd = io.conn.fd;
    /* To a local pool, a larger send buffer than the default (about 200 KiB):
     * a large result goes out in fewer writes (best effort; TCP tunes itself). */
    int domain = 0;
    socklen_t dlen = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == 0 && domain == AF_UNIX) {
        int size = WIO_UNIX_SNDBUF;
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    }
    shm_spare_init(&io.spare, SHM_SPARE_IDLE_MS);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, reader_main, NULL);
    if (rc == 0)
        rc = pthread_create(&t, &attr, writer_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start a thread: %s", strerror(rc));
        return -1;
    }
    return 0;
}
