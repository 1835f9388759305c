/* Fuzz target: the handshakes of the three services and what an accepted peer
 * may send after them. The real connection handlers run: the store's
 * (store/sconn.c: HELLO, then requests through store/sreq.c), the pool's
 * (pool/peer.c: HELLO, then FUNC/CALLS/CANCEL/... with the real scheduler,
 * sched.c, and DONE from workers), and the cluster's cl_check_hello
 * (cluster/cproto.c). What they call outside the code under test is faked
 * below: the connection (inconn.c: no socket, frames handed over as inconn.c
 * would), the store's object queues (a request is dropped once parsed) and the
 * pool's clock and local workers.
 *
 * Input: [0] service (0 cluster, 1 store, 2 pool), [1] flags (bit 0: a secret
 * is configured, "s3cret"; bit 1: the peer is on loopback; bit 2: the service
 * is stopping), then
 *   cluster: the HELLO body;
 *   store, pool: frames, each [u8 sel][u16 length][body]: sel bits 0-1 pick one
 *   of three connections (opened at its first frame), bit 6 ends the batch
 *   before this frame, bit 7 hands the frame over as a large one (so the
 *   handler keeps the frame's memory instead of copying it).
 * The harness checks nothing itself: AddressSanitizer and UBSan watch the
 * handlers (a frame used after it was freed, a read past a field, a leak). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cproto.h"
#include "pool/peer.h"
#include "pool/pool.h"
#include "store/sconn.h"
#include "store/sobj.h"
#include "store/store.h"
#include "util/log.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)
#define SECRET "s3cret"
#define NCONN 3
#define LARGE_FRAME (1024 * 1024) /* above the handlers' keep-the-frame threshold */

/* ------------------------------------------------------------ fakes */

static uint64_t fake_clock_us;
static void *cur_block; /* the memory of the frame being handed over */
static int cur_taken;

void inconn_close(inconn_t *c, const char *why) { c->closing = 1; }
void inconn_close_after_flush(inconn_t *c, const char *why) { c->lingering = 1; }
void inconn_flush(inconn_t *c) { buf_clear(&c->out.pending); }
void inconn_pause(inconn_t *c) { c->paused = 1; }
void inconn_resume(inconn_t *c) { c->paused = 0; }
void inconn_block_free(void *block) { free(block); }

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

/* ------------------------------------------------------------ connections */

typedef struct {
    const inconn_handler_t *h;
    void *owner;
    listener_t l;
    inconn_t *conn[NCONN];
    uint64_t next_id;
} svc_t;

static inconn_t *conn_open(svc_t *s, int i, uint64_t max_payload)
{
    inconn_t *c = calloc(1, sizeof *c);
    CHECK(c);
    c->listener = &s->l;
    c->id = ++s->next_id;
    c->max_payload = max_payload;
    c->reading = 1;
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

/* Feed the frames of the input to the service's handler as inconn.c would. */
static void run_frames(svc_t *s, const uint8_t *p, size_t n, uint64_t max_payload)
{
    int begun = 0;
    while (n >= 3) {
        uint8_t sel = p[0];
        size_t len = (size_t)p[1] << 8 | p[2];
        p += 3;
        n -= 3;
        if (len > n)
            len = n;
        int i = (sel & 3) % NCONN;
        if ((sel & 0x40) && begun) {
            s->h->batch_end(s->owner);
            begun = 0;
        }
        inconn_t *c = s->conn[i] ? s->conn[i] : conn_open(s, i, max_payload);
        if (c->closing || c->lingering || c->paused || len > c->max_payload) {
            /* Not read (closed, or paused: this harness drops rather than
             * buffers), or refused by the frame cutter as too large. */
            if (len > c->max_payload)
                conn_close(s, i);
            p += len;
            n -= len;
            continue;
        }
        if (!begun) {
            s->h->batch_begin(s->owner);
            begun = 1;
        }
        /* Each frame in a block of its own, exactly its size: header + body. */
        uint8_t *block = malloc(len + 4);
        CHECK(block);
        frame_put_u32be(block, (uint32_t)len);
        memcpy(block + 4, p, len);
        cur_block = block;
        cur_taken = 0;
        size_t frame_len = (sel & 0x80) ? LARGE_FRAME : len + 4;
        int rc = s->h->frame(s->owner, c, block, frame_len, block + 4, len);
        cur_block = NULL;
        if (!cur_taken)
            free(block);
        fake_clock_us += 1000;
        if (rc < 0 || c->closing)
            conn_close(s, i);
        p += len;
        n -= len;
    }
    if (begun)
        s->h->batch_end(s->owner);
    for (int i = 0; i < NCONN; i++)
        if (s->conn[i])
            conn_close(s, i);
}

/* ------------------------------------------------------------ services */

static void run_cluster(unsigned flags, const uint8_t *body, size_t len)
{
    cl_secret_t sec = {.len = 0};
    if (flags & 1) {
        memcpy(sec.secret, SECRET, strlen(SECRET));
        sec.len = strlen(SECRET);
    }
    listener_t l;
    memset(&l, 0, sizeof l);
    strcpy(l.name, "fuzz");
    inconn_t c;
    memset(&c, 0, sizeof c);
    c.listener = &l;
    c.peer_loopback = (flags & 2) != 0;
    strcpy(c.peer, "fuzz");
    uint8_t *b = malloc(len ? len : 1);
    CHECK(b);
    memcpy(b, body, len);
    cl_hello_t h;
    if (cl_check_hello(&sec, &c, b, len, &h) == 0) {
        CHECK(h.channel >= CL_CH_CONTROL && h.channel <= CL_CH_ADMIN);
        CHECK(memchr(h.name, '\0', sizeof h.name) != NULL);
    }
    free(b);
}

static store_t the_store; /* large (a loop, a listener): static, set up per input */

static void run_store(unsigned flags, const uint8_t *p, size_t n)
{
    store_t *st = &the_store;
    memset(st, 0, sizeof *st);
    if (flags & 1) {
        memcpy(st->secret, SECRET, strlen(SECRET));
        st->secret_len = strlen(SECRET);
    }
    st->stopping = (flags & 4) != 0;
    strcpy(st->name, "bettong store fuzz");
    svc_t s = {.h = &sconn_handler, .owner = st};
    strcpy(s.l.name, "store");
    run_frames(&s, p, n, UINT64_MAX);
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
    pl->secret_len = 0;
    if (flags & 1) {
        memcpy(pl->secret, SECRET, strlen(SECRET));
        pl->secret_len = strlen(SECRET);
    }
    pl->stopping = (flags & 4) != 0;
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
    svc_t s = {.h = &peer_handler, .owner = pl};
    strcpy(s.l.name, "pool");
    run_frames(&s, p, n, UINT64_MAX);
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
    case 0: run_cluster(flags, data + 2, size - 2); break;
    case 1: run_store(flags, data + 2, size - 2); break;
    default: run_pool(flags, data + 2, size - 2); break;
    }
    return 0;
}
