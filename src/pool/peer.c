#include "pool/peer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "net/authconn.h"
#include "pool/blob.h"
#include "pool/calls.h"
#include "pool/lend.h"
#include "pool/proto.h"
#include "pool/shm.h"
#include "pool/subcall.h"
#include "util/log.h"

/* The handshake (frames of at most AUTH_MAX_FRAME) must be over this soon. */
#define HELLO_TIMEOUT_MS 10000
/* A refused peer gets this long to read its REFUSED before the close. */
#define LINGER_TIMEOUT_MS 5000
/* Frames at least this large keep their memory (no copy of the payload);
 * payloads at least REF_MIN are written by reference. */
#define TAKE_MIN (256 * 1024)
#define REF_MIN (64 * 1024)
/* Backpressure (see peer.h). A queued call costs about CALL_OVERHEAD bytes
 * besides its arguments. */
#define QUEUE_HIGH (1024ull * 1024 * 1024)
#define QUEUE_LOW (512ull * 1024 * 1024)
#define CALL_OVERHEAD 160
#define RESULTS_HIGH (256ull * 1024 * 1024)
#define RESULTS_LOW (64ull * 1024 * 1024)

struct peer {
    pool_t *pool;
    inconn_t *c;
    int role;              /* 0 until WELCOME, then ROLE_CLIENT / ROLE_WORKER */
    authconn_t auth;       /* the handshake, until WELCOME */
    uint32_t id;
    uint32_t pid;
    char name[64];
    char near[PROTO_PLACE_MAX + 1]; /* a worker's locality ("": none) */
    sched_client_t *client;
    sched_worker_t *worker; /* NULL once the scheduler let go of it */
    uint64_t parent_task;   /* a sub-call client's task (pool/subcall.h); 0: none */
    uint64_t deadline_ms;   /* handshake or linger deadline; 0: none */
    int dirty;              /* written to since the last flush */
    int fds;                /* descriptors travel on its connection (pool/shm.h) */
    int answered;           /* a worker sent a DONE: its reader takes descriptors */
    peer_t *prev, *next;
};

/* ------------------------------------------------------------ helpers */

static const char *role_name(int role)
{
    return role == ROLE_CLIENT ? "client" : role == ROLE_WORKER ? "worker" : "peer";
}

/* "worker 3 'local-1' (pid 1234) from unix pid 1234", for log lines, with
 * "near store 'b1'" for a worker that has a locality. */
static const char *label(const peer_t *pe, char *out, size_t outlen)
{
    if (pe->role && pe->parent_task)
        snprintf(out, outlen, "client %u '%s' (pid %u, sub-calls of task %llu) from %s", pe->id,
                 pe->name, pe->pid, (unsigned long long)pe->parent_task, pe->c->peer);
    else if (pe->role)
        snprintf(out, outlen, "%s %u '%s' (pid %u)%s%s%s from %s", role_name(pe->role), pe->id,
                 pe->name, pe->pid, pe->near[0] ? " near store '" : "", pe->near,
                 pe->near[0] ? "'" : "", pe->c->peer);
    else
        snprintf(out, outlen, "connection %llu from %s", (unsigned long long)pe->c->id,
                 pe->c->peer);
    return out;
}

/* Log why and close the connection (the frame callback returns -1). */
static int bad_peer(peer_t *pe, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_peer(peer_t *pe, const char *fmt, ...)
{
    char why[256], who[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    log_warn("closing %s: %s", label(pe, who, sizeof who), why);
    return -1;
}

static void out_begin(peer_t *pe, proto_wr_t *w, msg_type type)
{
    proto_begin(w, inconn_out(pe->c), type);
    pe->dirty = 1;
}

/* A frame could not be queued (out of memory): the scheduler counts it as
 * sent, so the connection cannot go on. Closing it makes the scheduler let go
 * of the peer (a worker's tasks go back to the queue). */
static void write_failed(peer_t *pe)
{
    char who[320];
    log_error("out of memory writing to %s: closing it", label(pe, who, sizeof who));
    inconn_close(pe->c, NULL);
}

static void out_end(peer_t *pe, proto_wr_t *w)
{
    if (proto_end(w) < 0)
        write_failed(pe);
}

/* End a frame whose last field is a payload: large ones are written in place,
 * kept alive by a reference to their blob. */
static void out_end_payload(peer_t *pe, proto_wr_t *w, const span_t *sp)
{
    if (sp->n >= REF_MIN && sp->blob) {
        if (proto_end_with(w, sp->n) < 0) {
            write_failed(pe);
            return;
        }
        blob_ref(sp->blob);
        if (inconn_put_ref(pe->c, sp->p, sp->n, blob_unref_cb, sp->blob) < 0)
            write_failed(pe);
        return;
    }
    proto_put_bytes(w, sp->p, sp->n);
    out_end(pe, w);
}

/* The payload of a frame as a span: the frame's own memory when it is large
 * (taken from the connection), else a copy. NULL blob if memory ran out. */
static blob_t *frame_blob(peer_t *pe, size_t frame_len, const uint8_t *p, size_t n)
{
    if (frame_len >= TAKE_MIN) {
        void *block = inconn_take_frame(pe->c);
        if (block)
            return blob_wrap(block);
    }
    return blob_copy(p, n);
}

/* ------------------------------------------------------------ descriptors */

/* A payload received as a memfd (pool/shm.h), mapped; its pages are touched
 * only if it must go out as bytes. */
typedef struct {
    uv_pipe_t *fd;
    void *map;
    size_t len;
} mapped_t;

static void close_fd_cb(void *fd) { inconn_fd_close(fd); }

static void release_mapped_parts(mapped_t *m)
{
    munmap(m->map, m->len);
    inconn_fd_close(m->fd);
}

static void release_mapped(void *ctx)
{
    release_mapped_parts(ctx);
    free(ctx);
}

/* The oldest descriptor received on pe's connection, checked to be a payload
 * of `size` bytes (shm_check) and mapped. Returns 0 (*out filled), or -1 with
 * the reason in why. */
static int take_mapped(peer_t *pe, uint64_t size, mapped_t *out, char *why, size_t whylen)
{
    uv_pipe_t *fd = inconn_take_fd(pe->c);
    if (!fd) {
        snprintf(why, whylen, "no descriptor came with it");
        return -1;
    }
    uv_os_fd_t osfd = -1;
    if (size == 0 || size > PROTO_MAX_FRAME) {
        snprintf(why, whylen, "a payload of %llu bytes", (unsigned long long)size);
    } else if (uv_fileno((uv_handle_t *)fd, &osfd) == 0 &&
               shm_check(osfd, size, why, whylen) == 0) {
        void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, osfd, 0);
        if (map != MAP_FAILED) {
            *out = (mapped_t){.fd = fd, .map = map, .len = (size_t)size};
            return 0;
        }
        snprintf(why, whylen, "cannot map it: %s", strerror(errno));
    }
    inconn_fd_close(fd);
    return -1;
}

/* ------------------------------------------------------------ handshake */

static void copy_name(char *out, size_t outlen, const uint8_t *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < outlen; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    out[k] = '\0';
}

static int refuse(peer_t *pe, int role, const char *reason)
{
    pool_t *p = pe->pool;
    char who[320];
    log_warn("refused %s (%s '%s', pid %u): %s", label(pe, who, sizeof who), role_name(role),
             pe->name, pe->pid, reason);
    proto_wr_t w;
    out_begin(pe, &w, MSG_REFUSED);
    proto_put_str16(&w, reason, strlen(reason));
    out_end(pe, &w);
    pe->dirty = 0;
    pe->deadline_ms = pool_now_ms(p) + LINGER_TIMEOUT_MS;
    inconn_close_after_flush(pe->c, NULL);
    return 1;
}

static int accept_peer(peer_t *pe, int role)
{
    pool_t *p = pe->pool;
    pe->id = ++p->next_peer_id;
    pe->deadline_ms = 0;
    if (role == ROLE_CLIENT) {
        pe->client = sched_client_add(p->sched, pe);
        if (!pe->client)
            return bad_peer(pe, "out of memory");
        if (!p->had_client && !pe->parent_task)
            p->first_client = pe; /* (a sub-call client is never the one it exits with) */
        p->had_client = 1;
        if (p->clients_paused)
            inconn_pause(pe->c);
    } else {
        uint16_t place = sched_place(p->sched, pe->near, strlen(pe->near));
        if (pe->near[0] && !place)
            log_warn("%u store backends already have workers near them: worker %u's locality "
                     "'%s' is ignored", SCHED_MAX_PLACES, pe->id, pe->near);
        pe->worker = sched_worker_add_near(p->sched, pe, pe->id, pe->pid, place);
        if (!pe->worker)
            return bad_peer(pe, "out of memory");
        if (p->workers_paused)
            inconn_pause(pe->c);
    }
    pe->role = role;
    inconn_authenticated(pe->c);
    inconn_set_max_payload(pe->c, PROTO_MAX_FRAME);
    sched_stats_t st;
    sched_stats(p->sched, &st);
    proto_wr_t w;
    out_begin(pe, &w, MSG_WELCOME);
    proto_put_u32(&w, pe->id);
    proto_put_u32(&w, st.workers);
    proto_put_u8(&w, pe->fds ? PROTO_TAKES_FDS : 0);
    out_end(pe, &w);
    char who[320];
    log_info("%s joined", label(pe, who, sizeof who));
    return 0;
}

/* The identity the peer proved (proto.h): who it is, and whether we take it. */
static int on_identity(peer_t *pe)
{
    pool_t *p = pe->pool;
    proto_identity_t id;
    int bad = proto_get_identity(pe->auth.s.identity, pe->auth.s.identity_len, &id);
    int long_near = 0;
    if (!bad) {
        pe->pid = id.pid;
        pe->fds = (id.flags & PROTO_TAKES_FDS) && inconn_passes_fds(pe->c);
        copy_name(pe->name, sizeof pe->name, id.name, id.name_len);
        long_near = id.near_len > PROTO_PLACE_MAX;
        if (!long_near && id.near)
            copy_name(pe->near, sizeof pe->near, id.near, id.near_len);
    }
    /* The name was copied: the session (nonces, identity) is of no more use. */
    auth_session_clear(&pe->auth.s);
    if (bad)
        return refuse(pe, 0, "malformed identity in the handshake (another Bettong release?)");
    if (id.role != ROLE_CLIENT && id.role != ROLE_WORKER && id.role != ROLE_SUBCALL)
        return refuse(pe, id.role, "unknown role in the handshake");
    if (id.version != PROTO_VERSION) {
        char why[96];
        snprintf(why, sizeof why, "protocol version %u is not supported (this pool speaks %u)",
                 id.version, PROTO_VERSION);
        return refuse(pe, id.role, why);
    }
    if (long_near)
        return refuse(pe, id.role, "the store name given with --near-store is longer than "
                                   "63 bytes");
    if (id.role != ROLE_WORKER)
        pe->near[0] = '\0'; /* a locality means nothing for a client */
    if (p->stopping)
        return refuse(pe, id.role, "the pool is stopping");
    if (id.role == ROLE_SUBCALL) {
        /* Its proof holds for its task's token: take it only while that runs. */
        if (!sched_task_running(p->sched, id.parent_task)) {
            char why[160];
            snprintf(why, sizeof why, "the sub-call token of task %llu no longer holds: that "
                     "call is not running (a token is good only while its call runs)",
                     (unsigned long long)id.parent_task);
            return refuse(pe, ROLE_CLIENT, why);
        }
        pe->parent_task = id.parent_task;
        int rc = accept_peer(pe, ROLE_CLIENT);
        if (rc == 0 && pe->role == ROLE_CLIENT)
            sched_lend(p->sched, pe->parent_task); /* see pool/lend.h */
        return rc;
    }
    return accept_peer(pe, id.role);
}

/* The key a peer proves: the secret, or for a sub-call client the token of the
 * task it names (pool/subcall.h; whether that task runs is judged once the
 * proof holds, in on_identity). */
static int key_of_identity(void *ctx, const uint8_t *identity, size_t len, uint8_t *key,
                           size_t *key_len)
{
    pool_t *p = ctx;
    proto_identity_t id;
    if (proto_get_identity(identity, len, &id) == 0 && id.role == ROLE_SUBCALL &&
        id.version == PROTO_VERSION) {
        *key_len = SUBCALL_KEY_LEN;
        return subcall_token_of_secret(p->secret, p->secret_len, id.parent_task, key);
    }
    if (p->secret_len > AUTHCONN_KEY_MAX)
        return -1;
    memcpy(key, p->secret, p->secret_len);
    *key_len = p->secret_len;
    return 0;
}

/* A frame before WELCOME: only the handshake (net/authconn.h) is read. */
static int on_handshake(peer_t *pe, const uint8_t *body, size_t len)
{
    pool_t *p = pe->pool;
    const char *why = "";
    int rc = authconn_frame_keyed(&pe->auth, pe->c, POOL_SERVICE, key_of_identity, p, body, len,
                                  &why);
    switch (rc) {
    case AUTHCONN_MORE:
        return 0;
    case AUTHCONN_DONE:
        return on_identity(pe);
    case AUTHCONN_REFUSE:
        auth_session_clear(&pe->auth.s);
        return refuse(pe, 0, why);
    default:
        auth_session_clear(&pe->auth.s);
        return bad_peer(pe, "%s", why);
    }
}

/* ------------------------------------------------------------ clients */

static int on_func(peer_t *pe, size_t frame_len, proto_rd_t *r)
{
    uint64_t func_id = proto_u64(r);
    size_t n;
    const uint8_t *fn = proto_rest(r, &n);
    if (r->err)
        return bad_peer(pe, "truncated FUNC");
    span_t sp = {.blob = frame_blob(pe, frame_len, fn, n), .p = fn, .n = n};
    if (!sp.blob)
        return bad_peer(pe, "out of memory storing a function of %zu bytes", n);
    if (sp.blob->owned == NULL)
        sp.p = sp.blob->data;
    int rc = sched_func(pe->pool->sched, pe->client, func_id, &sp);
    if (rc == SCHED_DUPLICATE)
        return bad_peer(pe, "FUNC %llu sent twice", (unsigned long long)func_id);
    if (rc < 0)
        return bad_peer(pe, "out of memory storing a function");
    return 0;
}

static int on_calls(peer_t *pe, size_t frame_len, proto_rd_t *r)
{
    pool_t *p = pe->pool;
    calls_head_t h;
    if (calls_parse(r, &h) < 0)
        return bad_peer(pe, "truncated CALLS (%u calls announced)", h.count);
    if (h.near_len > PROTO_PLACE_MAX)
        return bad_peer(pe, "CALLS near a store name longer than %d bytes", PROTO_PLACE_MAX);
    /* A large frame is kept whole: every call's arguments point into it. */
    blob_t *shared = NULL;
    if (frame_len >= TAKE_MIN) {
        void *block = inconn_take_frame(pe->c);
        shared = block ? blob_wrap(block) : NULL;
    }
    uint64_t now = pool_now_us(p);
    /* No place (a full table) only loses the preference. */
    uint16_t place = sched_place(p->sched, (const char *)h.near, h.near_len);
    int rc = 0;
    for (uint32_t i = 0; i < h.count && rc == 0; i++) {
        calls_entry_t e;
        calls_next(r, &e);
        span_t sp = {.p = e.args, .n = e.n};
        if (shared) {
            blob_ref(shared);
            sp.blob = shared;
        } else if ((sp.blob = blob_copy(e.args, e.n)) != NULL) {
            sp.p = sp.blob->data;
        } else {
            rc = bad_peer(pe, "out of memory queueing calls");
            break;
        }
        pmetrics_submitted(&p->counters, e.n);
        int s = sched_call_near(p->sched, pe->client, h.func_id, e.call_id, h.timeout_ms,
                                h.retries, place, &sp, now);
        if (s == SCHED_DUPLICATE)
            rc = bad_peer(pe, "call id %llu is already in use", (unsigned long long)e.call_id);
        else if (s < 0)
            rc = bad_peer(pe, "out of memory queueing calls");
    }
    blob_unref(shared);
    return rc;
}

/* CALLS_FD: one call whose arguments came as a memfd. The call's span is the
 * mapping, kept by a blob that also holds the descriptor, so that a worker
 * that takes descriptors gets it as TASK_FD (op_task), and any other the
 * bytes. */
static int on_calls_fd(peer_t *pe, proto_rd_t *r)
{
    pool_t *p = pe->pool;
    uint64_t func_id = proto_u64(r);
    uint32_t timeout_ms = proto_u32(r);
    uint16_t retries = proto_u16(r);
    size_t near_len;
    const uint8_t *near = proto_str16(r, &near_len);
    uint64_t call_id = proto_u64(r);
    uint64_t size = proto_u64(r);
    if (r->err || r->p != r->end)
        return bad_peer(pe, "malformed CALLS_FD");
    if (near_len > PROTO_PLACE_MAX)
        return bad_peer(pe, "CALLS_FD near a store name longer than %d bytes", PROTO_PLACE_MAX);
    mapped_t m;
    char why[160];
    if (take_mapped(pe, size, &m, why, sizeof why) < 0)
        return bad_peer(pe, "CALLS_FD for call %llu: %s", (unsigned long long)call_id, why);
    mapped_t *owned = malloc(sizeof *owned);
    if (!owned) {
        release_mapped_parts(&m);
        return bad_peer(pe, "out of memory queueing calls");
    }
    *owned = m;
    blob_t *b = blob_external(owned, release_mapped, m.fd);
    if (!b)
        return bad_peer(pe, "out of memory queueing calls");
    span_t sp = {.blob = b, .p = m.map, .n = m.len};
    uint16_t place = sched_place(p->sched, (const char *)near, near_len);
    pmetrics_submitted(&p->counters, m.len);
    int s = sched_call_near(p->sched, pe->client, func_id, call_id, timeout_ms, retries, place,
                            &sp, pool_now_us(p)); /* (takes the reference) */
    if (s == SCHED_DUPLICATE)
        return bad_peer(pe, "call id %llu is already in use", (unsigned long long)call_id);
    if (s < 0)
        return bad_peer(pe, "out of memory queueing calls");
    return 0;
}

static int on_status(peer_t *pe)
{
    sched_stats_t st;
    sched_stats(pe->pool->sched, &st);
    proto_wr_t w;
    out_begin(pe, &w, MSG_STATUS_REPLY);
    proto_put_u32(&w, st.workers);
    proto_put_u32(&w, st.queued);
    proto_put_u32(&w, st.running);
    out_end(pe, &w);
    return 0;
}

static int on_client_msg(peer_t *pe, size_t frame_len, const uint8_t *body, size_t len)
{
    pool_t *p = pe->pool;
    proto_rd_t r;
    proto_rd_init(&r, body, len);
    uint8_t type = proto_u8(&r);
    uint64_t id;
    switch (type) {
    case MSG_FUNC:
        return on_func(pe, frame_len, &r);
    case MSG_CALLS:
        return on_calls(pe, frame_len, &r);
    case MSG_CALLS_FD:
        if (!pe->fds)
            return bad_peer(pe, "CALLS_FD on a connection that does not pass descriptors");
        return on_calls_fd(pe, &r);
    case MSG_CANCEL:
        id = proto_u64(&r);
        if (r.err)
            return bad_peer(pe, "truncated CANCEL");
        sched_cancel(p->sched, pe->client, id, pool_now_us(p));
        return 0;
    case MSG_FORGET:
        id = proto_u64(&r);
        if (r.err)
            return bad_peer(pe, "truncated FORGET");
        sched_forget(p->sched, pe->client, id);
        return 0;
    case MSG_STATUS:
        return on_status(pe);
    default:
        return bad_peer(pe, "message type %u is not one a client sends", type);
    }
}

/* ------------------------------------------------------------ workers */

/* The memfd of a DONE_FD, checked and mapped, into p->cur_*. Returns 0, or
 * -1 (bad_peer: the connection closes). */
static int take_payload_fd(peer_t *pe, uint64_t task_id, uint64_t size)
{
    pool_t *p = pe->pool;
    mapped_t m;
    char why[160];
    if (take_mapped(pe, size, &m, why, sizeof why) < 0)
        return bad_peer(pe, "DONE_FD for task %llu: %s", (unsigned long long)task_id, why);
    p->cur_fd = m.fd;
    p->cur_map = m.map;
    p->cur_map_len = m.len;
    return 0;
}

/* Let go of what take_payload_fd left (op_result did not take it). */
static void drop_payload_fd(pool_t *p)
{
    if (p->cur_map)
        munmap(p->cur_map, p->cur_map_len);
    inconn_fd_close(p->cur_fd);
    p->cur_map = NULL;
    p->cur_fd = NULL;
    p->cur_map_len = 0;
}

static int on_done(peer_t *pe, size_t frame_len, const uint8_t *body, size_t len)
{
    pool_t *p = pe->pool;
    proto_rd_t r;
    proto_rd_init(&r, body, len);
    uint8_t type = proto_u8(&r);
    if (type != MSG_DONE && !(type == MSG_DONE_FD && pe->fds))
        return bad_peer(pe, "message type %u is not one a worker sends", type);
    uint64_t task_id = proto_u64(&r);
    uint8_t status = proto_u8(&r);
    uint64_t started = proto_u64(&r);
    uint64_t finished = proto_u64(&r);
    size_t n;
    const uint8_t *payload;
    if (type == MSG_DONE_FD) {
        uint64_t size = proto_u64(&r);
        if (r.err || r.p != r.end)
            return bad_peer(pe, "malformed DONE_FD");
        if (take_payload_fd(pe, task_id, size) < 0)
            return -1;
        payload = p->cur_map;
        n = p->cur_map_len;
    } else {
        payload = proto_rest(&r, &n);
        if (r.err)
            return bad_peer(pe, "truncated DONE");
    }
    pe->answered = 1;
    if (!pe->worker) {
        drop_payload_fd(p);
        return 0; /* being closed for a timeout: its results no longer count */
    }
    /* A large result goes to the client from this frame's memory. */
    if (frame_len >= TAKE_MIN)
        p->cur_block = inconn_take_frame(pe->c);
    int rc = sched_done(p->sched, pe->worker, task_id, status, started, finished, payload, n,
                        pool_now_us(p));
    inconn_block_free(p->cur_block);
    p->cur_block = NULL;
    drop_payload_fd(p);
    if (rc == SCHED_PROTOCOL)
        return bad_peer(pe, "DONE for task %llu with status %u does not match the task it runs",
                        (unsigned long long)task_id, status);
    return 0;
}

/* ------------------------------------------------------------ inconn handler */

static void on_opened(void *owner, inconn_t *c)
{
    pool_t *p = owner;
    peer_t *pe = calloc(1, sizeof *pe);
    if (!pe) {
        inconn_close(c, "out of memory");
        return;
    }
    pe->pool = p;
    pe->c = c;
    pe->deadline_ms = pool_now_ms(p) + HELLO_TIMEOUT_MS;
    c->user = pe;
    inconn_set_max_payload(c, AUTH_MAX_FRAME);
    pe->next = p->peers;
    if (p->peers)
        p->peers->prev = pe;
    p->peers = pe;
}

static void on_batch_begin(void *owner) { (void)owner; }

static void on_batch_end(void *owner) { peer_after_event(owner); }

static int on_frame(void *owner, inconn_t *c, const uint8_t *frame, size_t frame_len,
                    const uint8_t *body, size_t len)
{
    peer_t *pe = c->user;
    if (!pe || pe->pool->stopping)
        return -1;
    if (len == 0)
        return bad_peer(pe, "empty frame");
    switch (pe->role) {
    case 0:
        return on_handshake(pe, body, len);
    case ROLE_CLIENT:
        return on_client_msg(pe, frame_len, body, len);
    default:
        return on_done(pe, frame_len, body, len);
    }
}

static void on_closed(void *owner, inconn_t *c)
{
    pool_t *p = owner;
    peer_t *pe = c->user;
    if (!pe)
        return;
    if (pe->prev)
        pe->prev->next = pe->next;
    else
        p->peers = pe->next;
    if (pe->next)
        pe->next->prev = pe->prev;
    char who[320];
    if (pe->role && !p->stopping)
        log_info("%s left", label(pe, who, sizeof who));
    /* While stopping the scheduler is not touched: it is freed whole. */
    if (pe->role == ROLE_CLIENT && !p->stopping) {
        if (pe->parent_task)
            sched_unlend(p->sched, pe->parent_task);
        sched_client_remove(p->sched, pe->client);
        if (pe == p->first_client && p->exit_with_client)
            pool_stop(p, 0, "the first client went away (--exit-with-client)");
    } else if (pe->role == ROLE_WORKER && pe->worker && !p->stopping) {
        sched_worker_remove(p->sched, pe->worker, pool_now_us(p));
    }
    if (pe == p->first_client)
        p->first_client = NULL;
    free(pe);
    c->user = NULL;
    peer_after_event(p);
}

static void on_wrote(void *owner, inconn_t *c)
{
    peer_t *pe = c->user;
    /* A client took results: workers may be read again. */
    if (pe && pe->role == ROLE_CLIENT && pe->pool->workers_paused)
        peer_after_event(owner);
}

const inconn_handler_t peer_handler = {
    .opened = on_opened,
    .batch_begin = on_batch_begin,
    .frame = on_frame,
    .batch_end = on_batch_end,
    .closed = on_closed,
    .wrote = on_wrote,
};

/* ------------------------------------------------------------ scheduler ops */

static void op_funcdef(void *ctx, void *wio, uint64_t gid, const span_t *fn)
{
    peer_t *pe = wio;
    proto_wr_t w;
    out_begin(pe, &w, MSG_FUNCDEF);
    proto_put_u64(&w, gid);
    out_end_payload(pe, &w, fn);
}

static void op_funcdrop(void *ctx, void *wio, uint64_t gid)
{
    peer_t *pe = wio;
    proto_wr_t w;
    out_begin(pe, &w, MSG_FUNCDROP);
    proto_put_u64(&w, gid);
    out_end(pe, &w);
}

static void op_task(void *ctx, void *wio, uint64_t task_id, uint64_t gid, const span_t *args)
{
    peer_t *pe = wio;
    proto_wr_t w;
    /* (Not before the worker's first DONE: until its handshake is over it
     * reads without taking descriptors, and one sent then would be lost.) */
    if (args->blob && args->blob->fd && pe->fds && pe->answered) {
        /* Arguments that came as a memfd go on as that memfd. */
        buf_t b;
        buf_init(&b);
        proto_begin(&w, &b, MSG_TASK_FD);
        proto_put_u64(&w, task_id);
        proto_put_u64(&w, gid);
        proto_put_u64(&w, args->n);
        blob_ref(args->blob);
        if (proto_end(&w) < 0) {
            blob_unref(args->blob);
            write_failed(pe);
        } else if (inconn_put_fd(pe->c, buf_head(&b), buf_unread(&b), args->blob->fd, args->n,
                                 blob_unref_cb, args->blob) < 0) {
            write_failed(pe);
        }
        buf_free(&b);
        pe->dirty = 1;
        return;
    }
    out_begin(pe, &w, MSG_TASK);
    proto_put_u64(&w, task_id);
    proto_put_u64(&w, gid);
    out_end_payload(pe, &w, args);
}

static void put_result_head(proto_wr_t *w, const sched_result_t *r, uint8_t status)
{
    proto_put_u64(w, r->call_id);
    proto_put_u8(w, status);
    proto_put_u32(w, r->worker_id);
    proto_put_u32(w, r->attempts);
    proto_put_u64(w, r->submitted_us);
    proto_put_u64(w, r->started_us);
    proto_put_u64(w, r->finished_us);
    proto_put_str16(w, r->worker_near, r->worker_near_len);
}


/* A result whose payload is the memfd in p->cur_fd: the descriptor goes on
 * to a client that takes descriptors (RESULT_FD), else its bytes go out from
 * the mapping (a plain RESULT). Either way p->cur_* pass to the writer. */
static void result_of_fd(peer_t *pe, const sched_result_t *r)
{
    pool_t *p = pe->pool;
    proto_wr_t w;
    if (pe->fds) {
        buf_t b;
        buf_init(&b);
        proto_begin(&w, &b, MSG_RESULT_FD);
        put_result_head(&w, r, r->status);
        proto_put_u64(&w, r->payload_len);
        /* (on failure p->cur_fd is closed by on_done; inconn_put_fd closes
         * what it was given) */
        if (proto_end(&w) < 0) {
            write_failed(pe);
        } else {
            uv_pipe_t *fd = p->cur_fd;
            p->cur_fd = NULL;
            if (inconn_put_fd(pe->c, buf_head(&b), buf_unread(&b), fd, r->payload_len,
                              close_fd_cb, fd) < 0)
                write_failed(pe);
        }
        buf_free(&b);
        pe->dirty = 1;
        return;
    }
    /* An object file (pool/shm.h) goes as the pickle of its bytes. */
    uint64_t objlen = 0;
    int obj = r->status == CALL_OK &&
              shm_obj_parse(p->cur_map, p->cur_map_len, p->cur_map_len, &objlen) &&
              objlen <= UINT32_MAX;
    const uint8_t *body = obj ? (const uint8_t *)p->cur_map + SHM_OBJ_DATA : p->cur_map;
    size_t body_len = obj ? (size_t)objlen : p->cur_map_len;
    uint8_t head[PROTO_BYTES_HEAD], tail[PROTO_BYTES_TAIL];
    proto_bytes_pickle(head, tail, (uint32_t)objlen);
    mapped_t *m = malloc(sizeof *m);
    out_begin(pe, &w, MSG_RESULT);
    put_result_head(&w, r, r->status);
    if (obj)
        proto_put_bytes(&w, head, sizeof head);
    if (!m || proto_end_with(&w, body_len + (obj ? sizeof tail : 0)) < 0) {
        free(m);
        write_failed(pe);
        return;
    }
    m->fd = p->cur_fd;
    m->map = p->cur_map;
    m->len = p->cur_map_len;
    p->cur_fd = NULL;
    p->cur_map = NULL;
    if (inconn_put_ref(pe->c, body, body_len, release_mapped, m) < 0)
        write_failed(pe);
    else if (obj && buf_append(inconn_out(pe->c), tail, sizeof tail) < 0)
        write_failed(pe);
}

static void op_result(void *ctx, void *cio, const sched_result_t *r)
{
    pool_t *p = ctx;
    peer_t *pe = cio;
    pmetrics_result(&p->counters, r->status, r->submitted_us, r->started_us, r->finished_us,
                    pool_now_us(p), r->payload_len);
    proto_wr_t w;
    if (p->cur_fd && r->payload == p->cur_map && r->payload_len == p->cur_map_len) {
        result_of_fd(pe, r);
        return;
    }
    out_begin(pe, &w, MSG_RESULT);
    put_result_head(&w, r, r->status);
    /* The payload still lies in the DONE frame's memory: hand that over. */
    if (p->cur_block && r->payload_len >= REF_MIN) {
        if (proto_end_with(&w, r->payload_len) == 0) {
            void *block = p->cur_block;
            p->cur_block = NULL; /* the writer frees it, even if this fails */
            if (inconn_put_ref(pe->c, r->payload, r->payload_len, inconn_block_free, block) < 0)
                write_failed(pe);
            return;
        }
    } else {
        proto_put_bytes(&w, r->payload, r->payload_len);
        if (proto_end(&w) == 0)
            return;
    }
    /* Only a result within a few bytes of the frame limit gets here (RESULT's
     * header is longer than DONE's), or memory ran out. */
    char text[200];
    int n = snprintf(text, sizeof text,
                     "the result (%zu bytes) could not be forwarded: too large for a frame or "
                     "out of memory", r->payload_len);
    out_begin(pe, &w, MSG_RESULT);
    put_result_head(&w, r, CALL_ERROR);
    proto_put_bytes(&w, text, (size_t)n);
    out_end(pe, &w);
}

static void op_cancelled(void *ctx, void *cio, uint64_t call_id, int dropped)
{
    peer_t *pe = cio;
    proto_wr_t w;
    out_begin(pe, &w, MSG_CANCELLED);
    proto_put_u64(&w, call_id);
    proto_put_u8(&w, (uint8_t)(dropped != 0));
    out_end(pe, &w);
}

static void op_skip(void *ctx, void *wio, uint64_t task_id)
{
    peer_t *pe = wio;
    proto_wr_t w;
    out_begin(pe, &w, MSG_SKIP);
    proto_put_u64(&w, task_id);
    out_end(pe, &w);
}

static void op_kill_worker(void *ctx, void *wio, const char *why)
{
    pool_t *p = ctx;
    peer_t *pe = wio;
    char who[320];
    log_warn("killing %s: %s", label(pe, who, sizeof who), why);
    pe->worker = NULL;
    pool_kill_local(p, pe->pid);
    /* A remote worker exits when its connection closes. */
    inconn_close(pe->c, NULL);
}

const sched_ops_t peer_sched_ops = {
    .funcdef = op_funcdef,
    .funcdrop = op_funcdrop,
    .task = op_task,
    .result = op_result,
    .cancelled = op_cancelled,
    .skip = op_skip,
    .kill_worker = op_kill_worker,
};

/* ------------------------------------------------------------ after events */

static void set_paused(pool_t *p, int role, int paused)
{
    for (peer_t *pe = p->peers; pe; pe = pe->next)
        if (pe->role == role)
            paused ? inconn_pause(pe->c) : inconn_resume(pe->c);
}

static void apply_backpressure(pool_t *p, size_t results_backlog)
{
    sched_stats_t st;
    sched_stats(p->sched, &st);
    size_t queued = st.queued_bytes + (size_t)st.queued * CALL_OVERHEAD;
    if (!p->clients_paused && queued > QUEUE_HIGH) {
        log_info("%u calls (%zu bytes) queued: not reading clients until the queue drains",
                 st.queued, queued);
        p->clients_paused = 1;
        set_paused(p, ROLE_CLIENT, 1);
    } else if (p->clients_paused && queued < QUEUE_LOW) {
        p->clients_paused = 0;
        set_paused(p, ROLE_CLIENT, 0);
    }
    if (!p->workers_paused && results_backlog > RESULTS_HIGH) {
        log_info("%zu bytes of results wait for clients to read them: not reading workers "
                 "meanwhile", results_backlog);
        p->workers_paused = 1;
        set_paused(p, ROLE_WORKER, 1);
    } else if (p->workers_paused && results_backlog < RESULTS_LOW) {
        p->workers_paused = 0;
        set_paused(p, ROLE_WORKER, 0);
    }
}

/* A call's timeout, or the end of a call's wait for its near workers. */
static void on_timeout_timer(uv_timer_t *t) { peer_after_event(t->data); }

static void arm_timeouts(pool_t *p, uint64_t next, uint64_t now)
{
    if (next == UINT64_MAX || p->workers_paused) {
        uv_timer_stop(&p->timeouts);
        return;
    }
    uint64_t ms = next > now ? (next - now + 999) / 1000 : 1;
    uv_timer_start(&p->timeouts, on_timeout_timer, ms, 0);
}

int peer_close_idle_worker(pool_t *p, uint32_t pid, const char *name)
{
    for (peer_t *pe = p->peers; pe; pe = pe->next) {
        if (pe->role == ROLE_WORKER && pe->pid == pid && strcmp(pe->name, name) == 0 &&
            pe->worker && sched_worker_idle(pe->worker)) {
            sched_worker_remove(p->sched, pe->worker, pool_now_us(p)); /* nothing to lose */
            pe->worker = NULL;
            inconn_close(pe->c, NULL); /* it exits when its connection closes */
            return 1;
        }
    }
    return 0;
}

void peer_after_event(pool_t *p)
{
    if (p->stopping)
        return;
    lend_adjust(p); /* calls that wait on sub-calls: temporary workers (pool/lend.h) */
    uint64_t now = pool_now_us(p);
    /* Timeouts before dispatching (a killed worker's tasks go out at once) and
     * after (the deadlines of the tasks just sent arm the timer). */
    uint64_t next = UINT64_MAX;
    if (!p->workers_paused)
        sched_check_timeouts(p->sched, now);
    uint64_t wake = sched_dispatch(p->sched, now);
    if (!p->workers_paused) {
        next = sched_check_timeouts(p->sched, now);
        wake = sched_dispatch(p->sched, now);
    }
    /* The same timer wakes us when a call that waits for its near workers
     * may go to another. */
    if (wake < next)
        next = wake;
    size_t results_backlog = 0;
    for (peer_t *pe = p->peers; pe; pe = pe->next) {
        if (pe->dirty) {
            pe->dirty = 0;
            inconn_flush(pe->c);
        }
        if (pe->role == ROLE_CLIENT)
            results_backlog += inconn_backlog(pe->c);
    }
    apply_backpressure(p, results_backlog);
    arm_timeouts(p, next, now);
}

void peer_sweep(pool_t *p)
{
    uint64_t now = pool_now_ms(p);
    for (peer_t *pe = p->peers; pe; pe = pe->next) {
        if (!pe->deadline_ms || now < pe->deadline_ms || pe->c->closing)
            continue;
        if (pe->c->lingering)
            inconn_close(pe->c, NULL);
        else
            inconn_close(pe->c, "no handshake within 10 s");
    }
}
