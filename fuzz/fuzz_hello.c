/* Fuzz target: the handshakes of the three services and what an accepted peer
 * may send after them. The real connection handlers run: the store's
 * (store/sconn.c: the handshake of net/authconn.c, the identity, then requests
 * through store/sreq.c), the pool's (pool/peer.c: the handshake, the identity,
 * then FUNC/CALLS/CANCEL/... with the real scheduler, sched.c, and DONE from
 * workers) and the cluster's acceptor side (cluster/cproto.c: cl_accept_frame,
 * cl_get_identity, cl_welcome, cl_refuse; the judgement of a member's identity
 * and the channels' own messages need a whole cluster and are not run).
 * What they call outside the code under test is faked below: the connection
 * (inconn.c: no socket, frames handed over as inconn.c would; what a service
 * writes stays in the connection's output buffer, where the harness reads it),
 * the store's object queues (a request is dropped once parsed) and the pool's
 * clock and local workers.
 *
 * The harness plays the client. Fuzzed bytes reach past the handshake: a
 * handshake step sends an AUTH_HELLO (auth_client_hello) whose identity comes
 * from the input, well-formed or raw, reads the service's CHALLENGE from its
 * output, answers it with auth_client_answer and the key the service has (or
 * a wrong one, or a wrong PROOF), and the frames after it are requests of an
 * accepted peer. Raw frames can come first instead (garbage before or in
 * place of the handshake, a replayed HELLO, a PROOF out of order).
 *
 * Input: [0] service (0 cluster, 1 store, 2 pool), [1] flags (bit 0: a secret
 * is configured, "s3cret", else none (the empty key); bit 1: the peer is on
 * loopback; bit 2: the service is stopping), then steps, each
 * [u8 sel][u16 length][body]: sel bits 0-1 pick one of three connections
 * (opened at its first frame, again after it closed), bit 6 ends the batch
 * before this step, bit 7 hands the frame over as a large one (so the handler
 * keeps the frame's memory instead of copying it), bit 5 makes the step a
 * handshake instead of a frame. A handshake step's body is
 *   [u8 mode][u8 aux][material]
 *   mode bit 0: the identity is built from the material as the service's
 *               client would (pool: u8 role, u32 pid, name; store: name;
 *               cluster: u8 channel, u16 index, name), else it is the raw
 *               material;
 *   mode bits 1-2: the PROOF: 0 the right one, 1 the right one with bit aux
 *               flipped, 2 the last 32 bytes of the material, 3 none (the
 *               next steps say what follows the CHALLENGE);
 *   mode bit 3: the HELLO names another service; bit 4: another handshake
 *               version;
 *   mode bit 5: the client holds the wrong key: it must find the service's
 *               proof wrong, and hangs up;
 *   mode bit 6: a well-formed identity takes its version byte from the
 *               material (else the service's version).
 * Checked besides what the sanitizers see: on a new connection to a running
 * service a HELLO is answered with exactly a CHALLENGE (or the service's
 * REFUSED, for another version or service, or a cluster without a secret and
 * a peer beyond loopback); the client's check of that CHALLENGE passes with the
 * service's key and fails with any other; after the right PROOF the answer is
 * WELCOME or REFUSED, and WELCOME for an identity the service takes; after a
 * wrong PROOF it is REFUSED and the connection closes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cproto.h"
#include "net/auth.h"
#include "pool/peer.h"
#include "pool/pool.h"
#include "pool/proto.h"
#include "pool/subcall.h"
#include "store/sconn.h"
#include "store/sobj.h"
#include "store/sproto.h"
#include "store/store.h"
#include "util/log.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)
#define SECRET "s3cret"
#define NCONN 3
#define LARGE_FRAME (1024 * 1024) /* above the handlers' keep-the-frame threshold */

enum { SVC_CLUSTER = 0, SVC_STORE = 1, SVC_POOL = 2 };

/* ------------------------------------------------------------ fakes */

static uint64_t fake_clock_us;
static void *cur_block; /* the memory of the frame being handed over */
static int cur_taken;

void inconn_close(inconn_t *c, const char *why) { c->closing = 1; }
void inconn_close_after_flush(inconn_t *c, const char *why) { c->lingering = 1; }
/* Nothing is sent: the output stays in c->out.pending, where the harness
 * reads the service's answers (and then drops them). */
void inconn_flush(inconn_t *c) {}
void inconn_pause(inconn_t *c) { c->paused = 1; }
void inconn_resume(inconn_t *c) { c->paused = 0; }
void inconn_block_free(void *block) { free(block); }
/* No TLS here: handshakes run without a channel binding. */
size_t inconn_binding(inconn_t *c, uint8_t *b) { return 0; }
/* No descriptors travel here (a TCP-like connection): the pool's memfd
 * frames are refused as they are from a peer that cannot pass them. */
int inconn_passes_fds(const inconn_t *c) { return 0; }
uv_pipe_t *inconn_take_fd(inconn_t *c) { return NULL; }
void inconn_fd_close(uv_pipe_t *fd) {}
int inconn_put_fd(inconn_t *c, const void *frame, size_t n, uv_pipe_t *fd, size_t held,
                  writer_release_fn release, void *ctx)
{
    release(ctx); /* as inconn.c on failure */
    return -1;
}
/* spawn.c's, for the workers the pool would start (none here). */
const char *py_library_dir(void) { return ""; }

/* As inconn.c: the frame stays where it is, its block now belongs to the caller. */
void *inconn_take_frame(inconn_t *c)
{
    if (cur_taken || !cur_block)
        return NULL;
    cur_taken = 1;
    return cur_block;
}

int writer_put_ref(writer_t *w, const void *p, size_t n, writer_release_fn release, void *ctx)
{
    /* "Written" at once. */
    if (release)
        release(ctx);
    return 0;
}

uint64_t pool_now_us(const pool_t *p) { return fake_clock_us; }
void pool_kill_local(pool_t *p, uint32_t pid) {}
void pool_stop(pool_t *p, int code, const char *why) { p->stopping = 1; }

void sobj_submit(store_t *st, sreq_t *r) { sreq_free(r); }

/* ------------------------------------------------------------ the cluster's acceptor */

/* What cluster.c and coord.c keep per inbound connection for the handshake. */
typedef struct {
    authconn_t auth;
    cl_hello_t hello;
    int authed;
} clconn_t;

static cl_secret_t cl_secret;

static void cl_opened(void *owner, inconn_t *c)
{
    clconn_t *k = calloc(1, sizeof *k);
    CHECK(k);
    c->user = k;
    inconn_set_max_payload(c, AUTH_MAX_FRAME);
}

static void cl_batch(void *owner) {}

/* As handshake_frame in cluster.c and coord.c, with every identity judged
 * acceptable (the judgement needs the members). Once accepted, frames go to
 * the decoders that need no member state. */
static int cl_frame(void *owner, inconn_t *c, const uint8_t *frame, size_t frame_len,
                    const uint8_t *body, size_t len)
{
    clconn_t *k = c->user;
    if (!k->authed) {
        int rc = cl_accept_frame(&k->auth, &cl_secret, c, body, len, &k->hello);
        if (rc == CL_ACC_DONE) {
            CHECK(k->hello.channel >= CL_CH_CONTROL && k->hello.channel <= CL_CH_ADMIN);
            CHECK(k->hello.index <= 0xffff);
            size_t n = strnlen(k->hello.name, sizeof k->hello.name);
            CHECK(n > 0 && n < sizeof k->hello.name);
            k->authed = 1;
            cl_welcome(c, k->hello.channel == CL_CH_ADMIN ? CL_MAX_ADMIN : CL_MAX_FRAME);
        }
        return rc == CL_ACC_CLOSE ? -1 : 0;
    }
    cl_hello_t h;
    cl_get_identity(body, len, &h);
    char why[40];
    const char *w = cl_refused_why(body, len, why, sizeof why);
    CHECK(!w || strlen(w) < sizeof why);
    return 0;
}

static void cl_closed(void *owner, inconn_t *c)
{
    clconn_t *k = c->user;
    if (k)
        auth_session_clear(&k->auth.s);
    free(k);
    c->user = NULL;
}

static const inconn_handler_t cl_handler = {
    .opened = cl_opened,
    .batch_begin = cl_batch,
    .frame = cl_frame,
    .batch_end = cl_batch,
    .closed = cl_closed,
};

/* ------------------------------------------------------------ connections */

typedef struct {
    int kind; /* SVC_ */
    const inconn_handler_t *h;
    void *owner;
    const char *service;
    const void *secret;
    size_t secret_len;
    int stopping;
    int loopback;
    uint8_t welcome, refused; /* the service's message types */
    listener_t l;
    inconn_t *conn[NCONN];
    uint64_t next_id;
    int begun; /* inside a batch */
} svc_t;

static inconn_t *conn_open(svc_t *s, int i)
{
    inconn_t *c = calloc(1, sizeof *c);
    CHECK(c);
    c->listener = &s->l;
    c->id = ++s->next_id;
    c->max_payload = UINT64_MAX;
    c->reading = 1;
    c->peer_loopback = s->loopback;
    strcpy(c->peer, "fuzz");
    s->conn[i] = c;
    s->h->opened(s->owner, c);
    return c;
}

static void conn_close(svc_t *s, int i)
{
    inconn_t *c = s->conn[i];
    s->h->closed(s->owner, c);
    buf_free(&c->out.pending);
    free(c);
    s->conn[i] = NULL;
}

static void batch_end(svc_t *s)
{
    if (s->begun)
        s->h->batch_end(s->owner);
    s->begun = 0;
}

/* Hand one frame to connection i (opened if need be) as inconn.c would. The
 * service's output is left for the caller; a connection the service closed
 * is gone afterwards. */
static void deliver(svc_t *s, int i, const uint8_t *p, size_t len, int large)
{
    inconn_t *c = s->conn[i] ? s->conn[i] : conn_open(s, i);
    if (c->closing || c->lingering || c->paused || len > c->max_payload) {
        /* Not read (closed, or paused: this harness drops rather than
         * buffers), or refused by the frame cutter as too large. */
        if (len > c->max_payload)
            conn_close(s, i);
        return;
    }
    if (!s->begun) {
        s->h->batch_begin(s->owner);
        s->begun = 1;
    }
    /* Each frame in a block of its own, exactly its size: header + body. */
    uint8_t *block = malloc(len + 4);
    CHECK(block);
    frame_put_u32be(block, (uint32_t)len);
    memcpy(block + 4, p, len);
    cur_block = block;
    cur_taken = 0;
    int rc = s->h->frame(s->owner, c, block, large ? LARGE_FRAME : len + 4, block + 4, len);
    cur_block = NULL;
    if (!cur_taken)
        free(block);
    fake_clock_us += 1000;
    if (rc < 0 || c->closing)
        conn_close(s, i);
}

/* The client reads what the service wrote: the body of its first frame (NULL:
 * none, or not a whole frame). */
static const uint8_t *first_answer(inconn_t *c, size_t *len)
{
    buf_t *b = &c->out.pending;
    size_t un = buf_unread(b);
    if (un < 4)
        return NULL;
    const uint8_t *h = buf_head(b);
    size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    if (n == 0 || n > un - 4)
        return NULL;
    *len = n;
    return h + 4;
}

/* Whether the output holds exactly one whole frame. */
static int one_answer(inconn_t *c)
{
    size_t n;
    return first_answer(c, &n) && buf_unread(&c->out.pending) == 4 + n;
}

static void drop_output(svc_t *s, int i)
{
    if (s->conn[i])
        buf_clear(&s->conn[i]->out.pending);
}

/* ------------------------------------------------------------ the client */

typedef struct {
    const uint8_t *p;
    size_t n;
} cur_t;

static uint8_t take8(cur_t *c)
{
    if (!c->n)
        return 0;
    c->n--;
    return *c->p++;
}

/* The identity the service's own client would send, built from the material
 * with the service's encoder. Returns whether the service takes it. */
static int make_identity(const svc_t *s, unsigned mode, cur_t m, buf_t *id)
{
    if (s->kind == SVC_POOL) {
        uint8_t role = take8(&m);
        uint8_t version = (mode & 0x40) ? take8(&m) : PROTO_VERSION;
        uint32_t pid = (uint32_t)take8(&m) << 24 | (uint32_t)take8(&m) << 16 |
                       (uint32_t)take8(&m) << 8 | take8(&m);
        CHECK(proto_put_identity(id, role, pid, (const char *)m.p, m.n, NULL, 0) == 0);
        buf_head(id)[1] = version;
        return (role == ROLE_CLIENT || role == ROLE_WORKER) && version == PROTO_VERSION;
    }
    if (s->kind == SVC_STORE) {
        uint8_t version = (mode & 0x40) ? take8(&m) : SPROTO_VERSION;
        CHECK(sproto_put_identity(id, (const char *)m.p, m.n) == 0);
        buf_head(id)[0] = version;
        return version == SPROTO_VERSION;
    }
    unsigned channel = take8(&m);
    unsigned index = (unsigned)take8(&m) << 8;
    index |= take8(&m);
    char name[CL_NAME_MAX + 16];
    size_t n = 0;
    while (m.n && n + 1 < sizeof name && *m.p)
        name[n++] = (char)take8(&m);
    name[n] = '\0';
    cl_put_identity(id, (int)channel, index, name);
    return channel >= CL_CH_CONTROL && channel <= CL_CH_ADMIN && n > 0 && n < CL_NAME_MAX;
}

/* Whether the pool reads this identity as a sub-call client's: its key is
 * then the token of the task it names (pool/subcall.h), put in token. */
static int subcall_identity(const svc_t *s, const uint8_t *id, size_t len,
                            uint8_t token[SUBCALL_KEY_LEN])
{
    proto_identity_t pid;
    if (s->kind != SVC_POOL || proto_get_identity(id, len, &pid) != 0 ||
        pid.role != ROLE_SUBCALL || pid.version != PROTO_VERSION)
        return 0;
    CHECK(subcall_token_of_secret(s->secret, s->secret_len, pid.parent_task, token) == 0);
    return 1;
}

static const char *other_service(const svc_t *s)
{
    return s->kind == SVC_POOL ? STORE_SERVICE : s->kind == SVC_STORE ? CL_SERVICE : POOL_SERVICE;
}

/* Hand one frame to connection i in a batch of its own, as a client that
 * waits for each answer sends it. */
static void deliver_alone(svc_t *s, int i, const uint8_t *p, size_t len)
{
    batch_end(s);
    deliver(s, i, p, len, 0);
    batch_end(s);
}

/* One handshake as the client plays it, on connection i (see the top). */
static void handshake(svc_t *s, int i, const uint8_t *b, size_t n)
{
    unsigned mode = n > 0 ? b[0] : 0;
    unsigned aux = n > 1 ? b[1] : 0;
    cur_t m = {.p = b + (n > 2 ? 2 : n), .n = n > 2 ? n - 2 : 0};
    /* A new connection to a running service: what must happen is known. */
    int fresh = !s->conn[i] && !s->stopping;

    buf_t id, hello, proof;
    buf_init(&id);
    buf_init(&hello);
    buf_init(&proof);
    int takes_id = 0;
    if (mode & 1)
        takes_id = make_identity(s, mode, m, &id);
    else
        CHECK(buf_append(&id, m.p, m.n < AUTH_ID_MAX ? m.n : AUTH_ID_MAX) == 0);
    auth_session_t cs;
    CHECK(auth_client_hello(&cs, &hello, (mode & 8) ? other_service(s) : s->service,
                            buf_head(&id), buf_unread(&id)) == AUTH_OK);
    uint8_t token[SUBCALL_KEY_LEN];
    int subcall = subcall_identity(s, buf_head(&id), buf_unread(&id), token);
    buf_free(&id);
    if (mode & 0x10)
        buf_head(&hello)[5] ^= 0x80; /* the version byte: never AUTH_VERSION */
    int right_hello = !(mode & 0x18);
    int cl_refuses = s->kind == SVC_CLUSTER && !s->secret_len && !s->loopback;

    deliver_alone(s, i, buf_head(&hello) + 4, buf_unread(&hello) - 4);
    inconn_t *c = s->conn[i];
    size_t alen = 0;
    const uint8_t *a = c ? first_answer(c, &alen) : NULL;
    if (fresh) {
        /* A well-formed HELLO is answered, never dropped. */
        CHECK(c && one_answer(c));
        if (right_hello && !cl_refuses)
            CHECK(a[0] == AUTH_CHALLENGE && !c->lingering);
        else
            CHECK(a[0] == s->refused && c->lingering);
    }
    if (!a)
        goto done;

    /* The client's key: the one the service asks of this identity, or with
     * mode bit 5 another one. */
    int wrong_key = (mode & 0x20) != 0;
    const void *key = s->secret;
    size_t key_len = s->secret_len;
    if (subcall) {
        key = token;
        key_len = sizeof token;
    }
    if (wrong_key) {
        key = s->secret_len ? "" : SECRET;
        key_len = s->secret_len ? 0 : strlen(SECRET);
    }
    int rc = auth_client_answer(&cs, a, alen, key, key_len, &proof);
    if (rc == AUTH_EFORMAT)
        goto done; /* not a CHALLENGE: the service's answer (a REFUSED) */
    if (fresh)
        CHECK(rc == (wrong_key ? AUTH_EPROOF : AUTH_OK));
    if (rc != AUTH_OK) {
        /* A service that cannot prove the key hears nothing more. */
        CHECK(buf_unread(&proof) == 0);
        conn_close(s, i);
        goto done;
    }
    drop_output(s, i);

    /* The PROOF: [u32 33][AUTH_PROOF][mac]. */
    CHECK(buf_unread(&proof) == 4 + 1 + AUTH_MAC_LEN);
    uint8_t *pf = buf_head(&proof) + 4;
    uint8_t right[1 + AUTH_MAC_LEN];
    memcpy(right, pf, sizeof right);
    switch ((mode >> 1) & 3) {
    case 0:
        break;
    case 1:
        pf[1 + (aux >> 3) % AUTH_MAC_LEN] ^= (uint8_t)(1u << (aux & 7));
        break;
    case 2:
        memset(pf + 1, 0, AUTH_MAC_LEN);
        if (m.n >= AUTH_MAC_LEN)
            memcpy(pf + 1, m.p + m.n - AUTH_MAC_LEN, AUTH_MAC_LEN);
        else
            memcpy(pf + 1, m.p, m.n);
        break;
    default:
        goto done; /* no PROOF: the next steps follow the CHALLENGE */
    }
    int right_proof = memcmp(pf, right, sizeof right) == 0;
    deliver_alone(s, i, pf, 1 + AUTH_MAC_LEN);
    c = s->conn[i];
    if (fresh) {
        /* A well-formed PROOF is answered, right or wrong. (Only the first
         * frame is looked at: the pool may send a new worker its first
         * tasks at the end of the batch.) */
        CHECK(c && (a = first_answer(c, &alen)) != NULL);
        if (!right_proof)
            CHECK(a[0] == s->refused && c->lingering);
        else if (right_hello && takes_id)
            CHECK(a[0] == s->welcome && !c->lingering);
        else
            CHECK((a[0] == s->welcome && !c->lingering) || (a[0] == s->refused && c->lingering));
    }
done:
    drop_output(s, i);
    auth_session_clear(&cs);
    buf_free(&hello);
    buf_free(&proof);
}

/* Run the steps of the input (see the top). */
static void run_steps(svc_t *s, const uint8_t *p, size_t n)
{
    while (n >= 3) {
        uint8_t sel = p[0];
        size_t len = (size_t)p[1] << 8 | p[2];
        p += 3;
        n -= 3;
        if (len > n)
            len = n;
        int i = (sel & 3) % NCONN;
        if (sel & 0x40)
            batch_end(s);
        if (sel & 0x20) {
            handshake(s, i, p, len);
        } else {
            deliver(s, i, p, len, (sel & 0x80) != 0);
            /* What the service answers goes nowhere: the client reads on. */
            drop_output(s, i);
        }
        p += len;
        n -= len;
    }
    batch_end(s);
    for (int i = 0; i < NCONN; i++)
        if (s->conn[i])
            conn_close(s, i);
}

/* ------------------------------------------------------------ services */

static void svc_init(svc_t *s, int kind, unsigned flags, const char *service)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->service = service;
    if (flags & 1) {
        s->secret = SECRET;
        s->secret_len = strlen(SECRET);
    } else {
        s->secret = "";
    }
    s->loopback = (flags & 2) != 0;
    s->stopping = (flags & 4) != 0;
    strcpy(s->l.name, service);
}

static void run_cluster(unsigned flags, const uint8_t *p, size_t n)
{
    svc_t s;
    svc_init(&s, SVC_CLUSTER, flags & ~4u, CL_SERVICE); /* the cluster is never stopping here */
    memset(&cl_secret, 0, sizeof cl_secret);
    memcpy(cl_secret.secret, s.secret, s.secret_len);
    cl_secret.len = s.secret_len;
    s.h = &cl_handler;
    s.welcome = CL_WELCOME;
    s.refused = CL_REFUSED;
    run_steps(&s, p, n);
}

static store_t the_store; /* large (a loop, a listener): static, set up per input */

static void run_store(unsigned flags, const uint8_t *p, size_t n)
{
    store_t *st = &the_store;
    memset(st, 0, sizeof *st);
    svc_t s;
    svc_init(&s, SVC_STORE, flags, STORE_SERVICE);
    memcpy(st->secret, s.secret, s.secret_len);
    st->secret_len = s.secret_len;
    st->stopping = s.stopping;
    strcpy(st->name, "bettong store fuzz");
    s.h = &sconn_handler;
    s.owner = st;
    s.welcome = SMSG_WELCOME;
    s.refused = SMSG_REFUSED;
    run_steps(&s, p, n);
    sconn_drop_held(st);
}

static pool_t the_pool;

static void run_pool(unsigned flags, const uint8_t *p, size_t n)
{
    pool_t *pl = &the_pool;
    /* The loop and timers are made once; everything else starts afresh. */
    static int loop_ready;
    if (!loop_ready) {
        CHECK(uv_loop_init(&pl->loop) == 0);
        uv_timer_init(&pl->loop, &pl->timeouts);
        pl->timeouts.data = pl;
        loop_ready = 1;
    }
    svc_t s;
    svc_init(&s, SVC_POOL, flags, POOL_SERVICE);
    memcpy(pl->secret, s.secret, s.secret_len);
    pl->secret_len = s.secret_len;
    pl->stopping = s.stopping;
    pl->peers = NULL;
    pl->next_peer_id = 0;
    pl->first_client = NULL;
    pl->had_client = 0;
    pl->clients_paused = pl->workers_paused = 0;
    pl->cur_block = NULL;
    pl->exit_with_client = 0;
    sched_config_t cfg = {.ahead_max = 2};
    pl->sched = sched_new(&cfg, &peer_sched_ops, pl);
    CHECK(pl->sched);
    s.h = &peer_handler;
    s.owner = pl;
    s.welcome = MSG_WELCOME;
    s.refused = MSG_REFUSED;
    run_steps(&s, p, n);
    sched_free(pl->sched);
    pl->sched = NULL;
    uv_timer_stop(&pl->timeouts);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* Every refused peer is logged: quiet unless asked for. */
    log_set_level(getenv("FUZZ_LOG") ? LOG_DEBUG : LOG_ERROR + 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned flags = data[1];
    switch (data[0] % 3) {
    case SVC_CLUSTER: run_cluster(flags, data + 2, size - 2); break;
    case SVC_STORE: run_store(flags, data + 2, size - 2); break;
    default: run_pool(flags, data + 2, size - 2); break;
    }
    return 0;
}
