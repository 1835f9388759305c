#include "store/sconn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/authconn.h"
#include "net/wire.h"
#include "store/sobj.h"
#include "store/sproto.h"
#include "store/sreq.h"
#include "store/sreply.h"
#include "util/log.h"

/* The handshake (frames of at most AUTH_MAX_FRAME) must be over this soon. */
#define HELLO_TIMEOUT_MS 10000
#define LINGER_TIMEOUT_MS 5000
/* Frames at least this large are kept (not copied) for their request. */
#define TAKE_MIN (256 * 1024)
/* Answers at least this large are written from their own memory. */
#define REF_MIN (64 * 1024)

struct held {
    held_t *prev, *next;
    uint64_t seq;
    sconn_t *conn;
    buf_t frame;
};

/* ------------------------------------------------------------ references */

static void conn_unref(sconn_t *cn)
{
    if (--cn->refs == 0)
        free(cn);
}

static const char *label(const sconn_t *cn, char *out, size_t n)
{
    if (cn->authed)
        snprintf(out, n, "client '%s' (connection %llu from %s)", cn->name,
                 (unsigned long long)cn->c->id, cn->c->peer);
    else
        snprintf(out, n, "connection %llu from %s", (unsigned long long)cn->c->id, cn->c->peer);
    return out;
}

/* Log why and close the connection after what is queued for it is written.
 * Returns 1 (the frame callback's "stop this batch"). */
static int bad_input(sconn_t *cn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_input(sconn_t *cn, const char *fmt, ...)
{
    char why[256], who[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    log_warn("closing %s: %s", label(cn, who, sizeof who), why);
    /* Stop reading requests, but drain what the peer still sends until it
     * closes (or the linger deadline): it sees an end of stream, not a reset
     * that could break its last send. */
    cn->deadline_ms = store_now_ms(cn->st) + LINGER_TIMEOUT_MS;
    inconn_close_after_flush(cn->c, NULL);
    return 1;
}

/* ------------------------------------------------------------ answers */

static void pause_check(sconn_t *cn)
{
    if (!cn->c)
        return;
    int over = cn->reqs > CONN_MAX_REQS || cn->bytes > CONN_MAX_BYTES ||
               inconn_backlog(cn->c) > CONN_MAX_BACKLOG;
    int under = cn->reqs < CONN_MAX_REQS / 2 && cn->bytes < CONN_MAX_BYTES / 2 &&
                inconn_backlog(cn->c) < CONN_MAX_BACKLOG / 2;
    if (!cn->paused && over) {
        cn->paused = 1;
        inconn_pause(cn->c);
    } else if (cn->paused && under) {
        cn->paused = 0;
        inconn_resume(cn->c);
    }
}

static void release_buf(void *p) { free(p); }

static void write_now(sconn_t *cn, buf_t *frame)
{
    size_t n = buf_unread(frame);
    if (!cn->c || cn->c->closing || n == 0) {
        buf_clear(frame);
        return;
    }
    int rc;
    if (n >= REF_MIN && frame->off == 0) {
        /* Hand the buffer's memory to the writer. */
        void *mem = frame->data;
        buf_init(frame);
        rc = inconn_put_ref(cn->c, mem, n, release_buf, mem);
    } else {
        rc = buf_append(inconn_out(cn->c), buf_head(frame), n);
        buf_clear(frame);
    }
    if (rc < 0) {
        char who[200];
        log_error("out of memory answering %s: closing it", label(cn, who, sizeof who));
        inconn_close(cn->c, NULL);
        return;
    }
    inconn_flush(cn->c);
    pause_check(cn);
}

void sconn_answer(sconn_t *cn, buf_t *frame, uint64_t seq)
{
    store_t *st = cn->st;
    if (seq <= st->durable || !cn->c) {
        write_now(cn, frame);
        return;
    }
    held_t *h = calloc(1, sizeof *h);
    if (!h) {
        log_error("out of memory holding an answer: closing the connection");
        buf_clear(frame);
        inconn_close(cn->c, NULL);
        return;
    }
    h->seq = seq;
    h->conn = cn;
    cn->refs++;
    h->frame = *frame; /* the frame's memory moves to the held answer */
    buf_init(frame);
    /* Sorted by seq, stable: walk back from the tail (seqs mostly grow). */
    held_t *at = st->held_tail;
    while (at && at->seq > seq)
        at = at->prev;
    h->prev = at;
    h->next = at ? at->next : st->held_head;
    if (h->next)
        h->next->prev = h;
    else
        st->held_tail = h;
    if (at)
        at->next = h;
    else
        st->held_head = h;
}

static void held_pop(store_t *st, held_t *h)
{
    st->held_head = h->next;
    if (st->held_head)
        st->held_head->prev = NULL;
    else
        st->held_tail = NULL;
}

static void release_while(store_t *st, uint64_t limit, int inclusive)
{
    held_t *h;
    while ((h = st->held_head) && (inclusive ? h->seq <= limit : h->seq < limit)) {
        held_pop(st, h);
        write_now(h->conn, &h->frame);
        buf_free(&h->frame);
        conn_unref(h->conn);
        free(h);
    }
}

void sconn_release(store_t *st, uint64_t seq) { release_while(st, seq, 1); }

void sconn_release_below(store_t *st, uint64_t seq) { release_while(st, seq, 0); }

void sconn_drop_held(store_t *st)
{
    held_t *h;
    while ((h = st->held_head)) {
        held_pop(st, h);
        buf_free(&h->frame);
        conn_unref(h->conn);
        free(h);
    }
}

void sreq_free(sreq_t *r)
{
    sconn_t *cn = r->conn;
    stmetrics_answered(&cn->st->counters, r->type, uv_hrtime() - r->read_ns);
    cn->reqs--;
    cn->bytes -= r->cost;
    pause_check(cn);
    conn_unref(cn);
    sreq_destroy(r);
}

/* ------------------------------------------------------------ handshake */

static void auth_free(sconn_t *cn)
{
    if (cn->auth) {
        auth_session_clear(&cn->auth->s);
        free(cn->auth);
        cn->auth = NULL;
    }
}

static void copy_name(char *out, size_t outlen, const uint8_t *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < outlen; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    out[k] = '\0';
}

static int refuse(sconn_t *cn, const char *reason)
{
    char who[200];
    log_warn("refused %s (client '%s'): %s", label(cn, who, sizeof who), cn->name, reason);
    wire_wr_t w;
    wire_begin(&w, inconn_out(cn->c), SMSG_REFUSED, STORE_MAX_FRAME);
    wire_put_str16(&w, reason, strlen(reason));
    wire_end(&w);
    cn->deadline_ms = store_now_ms(cn->st) + LINGER_TIMEOUT_MS;
    inconn_close_after_flush(cn->c, NULL);
    return 1;
}

/* The identity the client proved (sproto.h): its name, and whether we take it. */
static int on_identity(sconn_t *cn)
{
    store_t *st = cn->st;
    sproto_identity_t id;
    if (sproto_get_identity(cn->auth->s.identity, cn->auth->s.identity_len, &id) < 0)
        return refuse(cn, "malformed identity in the handshake (another Bettong release?)");
    copy_name(cn->name, sizeof cn->name, id.name, id.name_len);
    if (id.version != SPROTO_VERSION) {
        char why[96];
        snprintf(why, sizeof why, "protocol version %u is not supported (this store speaks %u)",
                 id.version, SPROTO_VERSION);
        return refuse(cn, why);
    }
    if (st->stopping)
        return refuse(cn, "the store is stopping");
    cn->authed = 1;
    inconn_authenticated(cn->c);
    cn->deadline_ms = 0;
    inconn_set_max_payload(cn->c, STORE_MAX_FRAME);
    wire_wr_t w;
    wire_begin(&w, inconn_out(cn->c), SMSG_WELCOME, STORE_MAX_FRAME);
    wire_put_str16(&w, st->name, strlen(st->name));
    if (wire_end(&w) < 0)
        return bad_input(cn, "out of memory");
    inconn_flush(cn->c);
    char who[200];
    log_info("%s joined", label(cn, who, sizeof who));
    return 0;
}

/* A frame before WELCOME: only the handshake (net/authconn.h) is read. */
static int on_handshake(sconn_t *cn, const uint8_t *body, size_t len)
{
    store_t *st = cn->st;
    if (!cn->auth && !(cn->auth = calloc(1, sizeof *cn->auth)))
        return bad_input(cn, "out of memory");
    const char *why = "";
    int rc = authconn_frame(cn->auth, cn->c, STORE_SERVICE, st->secret, st->secret_len, body, len,
                            &why);
    if (rc == AUTHCONN_MORE)
        return 0;
    if (rc == AUTHCONN_DONE)
        rc = on_identity(cn);
    else
        rc = rc == AUTHCONN_REFUSE ? refuse(cn, why) : bad_input(cn, "%s", why);
    auth_free(cn);
    return rc;
}

/* ------------------------------------------------------------ requests */

static void answer_bad_request(sconn_t *cn, uint64_t id, const char *why)
{
    buf_t b;
    buf_init(&b);
    if (sreply_failed(&b, id, STORE_ERR_BAD_REQUEST, "%s", why) == 0)
        sconn_answer(cn, &b, 0);
    buf_free(&b);
}

/* A request holding the frame's body: a large frame's own memory (taken from
 * the connection, not copied), else a copy. NULL when out of memory. */
static sreq_t *request_new(sconn_t *cn, size_t frame_len, const uint8_t *body, size_t len,
                           const uint8_t **b)
{
    int large = frame_len >= TAKE_MIN;
    sreq_t *q = sreq_new(large ? 0 : len);
    if (!q)
        return NULL;
    *b = body;
    if (large && (q->mem = inconn_take_frame(cn->c)))
        return q; /* body stays where it is: now in memory we own */
    uint8_t *copy = large ? (q->mem = malloc(len)) : q->body;
    if (!copy) {
        sreq_destroy(q);
        return NULL;
    }
    memcpy(copy, body, len);
    *b = copy;
    return q;
}

static int on_request(sconn_t *cn, size_t frame_len, const uint8_t *body, size_t len)
{
    const uint8_t *b;
    sreq_t *q = request_new(cn, frame_len, body, len, &b);
    if (!q)
        return bad_input(cn, "out of memory for a request of %zu bytes", len);
    const char *why;
    int rc = sreq_parse(q, b, len, &why);
    if (rc < 0) {
        unsigned type = q->type;
        sreq_destroy(q);
        return bad_input(cn, "%s (type %u)", why, type);
    }
    if (rc > 0) {
        cn->st->counters.bad_requests++;
        answer_bad_request(cn, q->id, why);
        sreq_destroy(q);
        return 0;
    }
    q->conn = cn;
    cn->refs++;
    q->cost = len;
    q->read_ns = uv_hrtime();
    stmetrics_request(&cn->st->counters, q->type);
    cn->reqs++;
    cn->bytes += len;
    sobj_submit(cn->st, q);
    pause_check(cn);
    return cn->paused ? 1 : 0;
}

/* ------------------------------------------------------------ handler */

static void on_opened(void *owner, inconn_t *c)
{
    store_t *st = owner;
    sconn_t *cn = calloc(1, sizeof *cn);
    if (!cn) {
        inconn_close(c, "out of memory");
        return;
    }
    cn->st = st;
    cn->c = c;
    cn->refs = 1;
    cn->deadline_ms = store_now_ms(st) + HELLO_TIMEOUT_MS;
    c->user = cn;
    inconn_set_max_payload(c, AUTH_MAX_FRAME);
    inconn_set_sync_writes(c);
    cn->next = st->conns;
    if (st->conns)
        st->conns->prev = cn;
    st->conns = cn;
}

static void on_batch(void *owner) { (void)owner; }

static int on_frame(void *owner, inconn_t *c, const uint8_t *frame, size_t frame_len,
                    const uint8_t *body, size_t len)
{
    sconn_t *cn = c->user;
    if (!cn || cn->st->stopping)
        return -1;
    if (len == 0)
        return bad_input(cn, "empty frame");
    if (!cn->authed)
        return on_handshake(cn, body, len);
    cn->st->frames++;
    return on_request(cn, frame_len, body, len);
}

static void on_closed(void *owner, inconn_t *c)
{
    store_t *st = owner;
    sconn_t *cn = c->user;
    if (!cn)
        return;
    if (cn->prev)
        cn->prev->next = cn->next;
    else
        st->conns = cn->next;
    if (cn->next)
        cn->next->prev = cn->prev;
    if (cn->authed && !st->stopping) {
        char who[200];
        log_info("%s left%s", label(cn, who, sizeof who),
                 cn->reqs ? " (its requests in progress finish; their answers are dropped)" : "");
    }
    auth_free(cn);
    cn->c = NULL;
    c->user = NULL;
    conn_unref(cn);
}

static void on_wrote(void *owner, inconn_t *c)
{
    sconn_t *cn = c->user;
    if (cn && cn->paused)
        pause_check(cn);
}

const inconn_handler_t sconn_handler = {
    .opened = on_opened,
    .batch_begin = on_batch,
    .frame = on_frame,
    .batch_end = on_batch,
    .closed = on_closed,
    .wrote = on_wrote,
};

void sconn_sweep(store_t *st)
{
    uint64_t now = store_now_ms(st);
    for (sconn_t *cn = st->conns; cn; cn = cn->next) {
        if (!cn->deadline_ms || now < cn->deadline_ms || !cn->c || cn->c->closing)
            continue;
        if (cn->c->lingering)
            inconn_close(cn->c, NULL);
        else
            inconn_close(cn->c, "no handshake within 10 s");
    }
}
