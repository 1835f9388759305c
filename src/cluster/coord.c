#include "cluster/coord.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/plan.h"
#include "cluster/clink.h"
#include "net/addr.h"
#include "net/inconn.h"
#include "net/outconn.h"
#include "stream/catalog.h"
#include "stream/routing.h"
#include "util/hist.h"
#include "util/log.h"

#define RECOUNT_MS 2
#define STATUS_WAIT_MS 2000
#define MAX_QUEUE 32
#define CLOSE_POLL_MS 10
#define CLOSE_WAIT_MS 1000

typedef enum { OP_NONE, OP_FORM, OP_GROW, OP_SHRINK, OP_BALANCE, OP_STOP, OP_CHECKPOINT } op_kind;
typedef enum { PH_COUNT, PH_MIGRATE, PH_TABLE, PH_RESTORE } op_phase;

typedef struct {
    op_kind kind;
    unsigned member;   /* the joiner or the leaver */
    inconn_t *admin;   /* who asked (shrink), answered at the end; may be NULL */
} op_t;

typedef struct {
    unsigned index;
    int state;
    char name[CL_NAME_MAX];
    char control[CL_ADDR_MAX];
    char data[CL_ADDR_MAX];
    char metrics[CL_ADDR_MAX]; /* its metrics endpoint, "" without */
    inconn_t *in;      /* its control connection to us */
    cl_link_t out;     /* ours to its control listener */
    int out_open;
    int replied;       /* answered the current round */
    int have_counts;   /* sent/ran hold an answer of this change */
    int have_prev;     /* prev_sent/prev_ran hold the answer before that */
    uint64_t sent[CL_MAX_WORKERS], ran[CL_MAX_WORKERS];
    uint64_t prev_sent[CL_MAX_WORKERS], prev_ran[CL_MAX_WORKERS];
    int status_ok;
    uint64_t keys, in_count, out_count, forwarded, failed;
    int loads_ok;      /* answered the current LOADQ */
    int ckpt_replied, ckpt_ok; /* its part of the checkpoint in flight */
    int restored;      /* answered RESTORE (ok or not) */
    int restore_ok;
    uint64_t suspect_ns;   /* a peer reported its data link to it closed (0: none) */
    char suspect_by[CL_NAME_MAX];
    uint8_t cannot_send[CL_MAX_WORKERS]; /* its data link to worker i failed */
} member_t;

/* A resumable stream: which worker has it, and a claim waiting for that
 * worker to let it go. */
typedef struct kstream {
    struct kstream *next;
    int owner;          /* member index, -1: none */
    int claimant;       /* member waiting for it, -1: none */
    uint32_t claim_id;  /* its claim */
    char name[256];
} kstream_t;

/* Per inbound connection. */
typedef struct {
    authconn_t auth;  /* the handshake, until accepted */
    cl_hello_t hello; /* the identity it proved */
    uint64_t opened_ns;
    int authed;
    int channel;
    int bye;
    int member; /* index, or -1 */
    uint64_t last_rx_ns;
} kconn_t;

struct coord {
    uv_loop_t *loop;
    cluster_config_t cfg;
    frame_spec_t spec;
    listener_t l;
    member_t *m[CL_MAX_WORKERS];
    unsigned nm;
    routing_table_t table, next;
    int formed;
    op_t cur;
    op_phase phase;
    uint32_t seq;
    uint64_t op_started_ns, op_warned_ns;
    plan_move_t moves[ROUTING_SLOTS];
    size_t nmoves, installed;
    op_t queue[MAX_QUEUE];
    size_t nq;
    int stop_queued;
    uv_timer_t tick, recount;
    uint64_t last_tick_ns;
    /* one status question at a time */
    inconn_t *status_admin;
    uint32_t status_seq;
    uint64_t status_deadline_ns;
    /* load balancing: messages run per slot over the last period */
    uint64_t load[ROUTING_SLOTS];
    uint32_t load_seq;
    int load_asked;
    uint64_t last_balance_ns;
    plan_move_t balance[ROUTING_SLOTS];
    size_t nbalance;
    uint64_t balances;
    int stopping;
    int listening;
    int closing;
    /* Resilience: checkpoints, and the record of the complete ones (members
     * and table included) in resilience_dir/coordinator. */
    catalog_t *record;
    uv_timer_t ckpt_timer;
    uint64_t ckpt_last;      /* the last checkpoint started */
    uint64_t ckpt_complete;  /* the last complete one */
    uint64_t ckpt_n;         /* the one in flight */
    int ckpt_lost;           /* a participant was lost: it is abandoned */
    int have_rec;            /* rec_*: the members and table of ckpt_complete */
    unsigned rec_n;
    char rec_names[CL_MAX_WORKERS][CL_NAME_MAX];
    uint16_t rec_owner[ROUTING_SLOTS];
    buf_t streams;           /* STREAMS being gathered from RESTORED answers */
    unsigned nstreams;
    kstream_t *owners;       /* resumable streams and the workers that have them */
    uint64_t close_deadline_ns;
    uv_timer_t close_timer;
};

static void next_op(coord_t *k);
static void member_lost(coord_t *k, member_t *m, const char *why);

/* ------------------------------------------------------------ sending */

static int live(const member_t *m)
{
    return m && (m->state == CL_JOINING || m->state == CL_ACTIVE || m->state == CL_LEAVING);
}

static buf_t *mbuf(member_t *m) { return outconn_buffer(&m->out.o); }

static void send_u32(member_t *m, uint8_t type, uint32_t v)
{
    cl_put_u32(mbuf(m), type, v);
    outconn_flush(&m->out.o);
}

static void send_empty(member_t *m, uint8_t type)
{
    cl_put_empty(mbuf(m), type);
    outconn_flush(&m->out.o);
}

static void send_members(coord_t *k, member_t *to)
{
    wire_wr_t w;
    wire_begin(&w, mbuf(to), CL_MEMBERS, CL_MAX_FRAME);
    wire_put_u16(&w, (uint16_t)to->index);
    wire_put_u16(&w, (uint16_t)k->nm);
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        wire_put_u16(&w, (uint16_t)i);
        wire_put_u8(&w, (uint8_t)m->state);
        wire_put_str16(&w, m->name, strlen(m->name));
        wire_put_str16(&w, m->control, strlen(m->control));
        wire_put_str16(&w, m->data, strlen(m->data));
        wire_put_str16(&w, m->metrics, strlen(m->metrics));
    }
    wire_end(&w);
    outconn_flush(&to->out.o);
}

static void broadcast_members(coord_t *k)
{
    for (unsigned i = 0; i < k->nm; i++)
        if (live(k->m[i]))
            send_members(k, k->m[i]);
}

static void send_table(coord_t *k, member_t *to, const routing_table_t *t)
{
    wire_wr_t w;
    wire_begin(&w, mbuf(to), CL_TABLE, CL_MAX_FRAME);
    wire_put_u32(&w, k->seq);
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        wire_put_u16(&w, t->owner[s]);
    wire_end(&w);
    outconn_flush(&to->out.o);
}

static void reply_admin(inconn_t *admin, int code, const char *fmt, ...)
{
    if (!admin)
        return;
    char text[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    wire_wr_t w;
    wire_begin(&w, inconn_out(admin), CL_REPLY, CL_MAX_FRAME);
    wire_put_u8(&w, (uint8_t)code);
    wire_put_bytes(&w, text, strlen(text));
    wire_end(&w);
    inconn_close_after_flush(admin, NULL);
}

/* ------------------------------------------------------------ members */

static void on_member_link_lost(outconn_t *o, const char *why)
{
    coord_t *k = o->owner;
    for (unsigned i = 0; i < k->nm; i++)
        if (&k->m[i]->out.o == o)
            member_lost(k, k->m[i], why);
}

static member_t *member_named(coord_t *k, const char *name)
{
    for (unsigned i = 0; i < k->nm; i++)
        if (strcmp(k->m[i]->name, name) == 0)
            return k->m[i];
    return NULL;
}

static unsigned count_state(coord_t *k, int state)
{
    unsigned n = 0;
    for (unsigned i = 0; i < k->nm; i++)
        n += k->m[i]->state == state;
    return n;
}

/* After a restart the cluster forms again with the workers that held slots
 * at its last complete checkpoint (a worker that shrank away since is not
 * waited for). */
static int recorded_owner(const coord_t *k, unsigned j)
{
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        if (k->rec_owner[s] == j)
            return 1;
    return 0;
}

static int recorded_member(const coord_t *k, const char *name)
{
    for (unsigned j = 0; j < k->rec_n; j++)
        if (strcmp(k->rec_names[j], name) == 0)
            return 1;
    return 0;
}

static unsigned recorded_owners(const coord_t *k)
{
    unsigned n = 0;
    for (unsigned j = 0; j < k->rec_n; j++)
        n += recorded_owner(k, j);
    return n;
}

static int all_owners_joined(coord_t *k)
{
    for (unsigned j = 0; j < k->rec_n; j++)
        if (recorded_owner(k, j) && !member_named(k, k->rec_names[j]))
            return 0;
    return 1;
}

/* A worker says JOIN on its control connection. Returns 0 (admitted, or
 * refused: the refusal is logged and sent, and the connection closes once it
 * is out), or -1 for a malformed JOIN. */
static int admit(coord_t *k, inconn_t *ic, kconn_t *kc, wire_rd_t *r)
{
    char name[CL_NAME_MAX], control[CL_ADDR_MAX], data[CL_ADDR_MAX];
    char token[CL_TOKEN_LEN + 1], metrics[CL_ADDR_MAX] = "";
    cl_str16(r, name, sizeof name);
    cl_str16(r, control, sizeof control);
    cl_str16(r, data, sizeof data);
    cl_str16(r, token, sizeof token);
    if (!r->err && r->p < r->end) /* optional: none without a metrics endpoint */
        cl_str16(r, metrics, sizeof metrics);
    if (r->err || !name[0] || strlen(token) != CL_TOKEN_LEN)
        return -1;
    if (strcmp(name, kc->hello.name) != 0) {
        cl_refuse(ic, "a JOIN as '%s' on a connection proven as '%s'", name, kc->hello.name);
        return 0;
    }
    /* judge() checked the name at the handshake; it can be taken since, by
     * another worker started with the same name at the same time. */
    if (member_named(k, name)) {
        cl_refuse(ic, "a worker named '%s' is already in the cluster", name);
        return 0;
    }
    if (k->nm >= CL_MAX_WORKERS || k->stopping) {
        cl_refuse(ic, "worker '%s': %s", name,
                  k->stopping ? "the cluster is stopping" : "too many workers");
        return 0;
    }
    struct sockaddr_storage sa;
    char err[300];
    if (hostport_lookup(control, &sa, err, sizeof err) < 0) {
        cl_refuse(ic, "worker '%s': bad control address '%s': %s", name, control, err);
        return 0;
    }
    member_t *m = calloc(1, sizeof *m);
    if (!m)
        return -1;
    m->index = k->nm;
    m->state = CL_JOINING;
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->control, sizeof m->control, "%s", control);
    snprintf(m->data, sizeof m->data, "%s", data);
    snprintf(m->metrics, sizeof m->metrics, "%s", metrics);
    m->in = ic;
    kc->member = (int)m->index;
    char lname[128];
    snprintf(lname, sizeof lname, "control link to '%s'", name);
    /* We prove the token of its JOIN back: the worker takes control only from
     * the coordinator it joined. */
    cl_link_init(&m->out, k->loop, (struct sockaddr *)&sa, lname, NULL, k, &k->cfg.secret,
                 CL_CH_CONTROL, m->index, token);
    outconn_set_final(&m->out.o, on_member_link_lost);
    outconn_set_sync(&m->out.o);
    m->out_open = 1;
    outconn_start(&m->out.o);
    k->m[k->nm++] = m;
    if (!k->formed) {
        unsigned joined = count_state(k, CL_JOINING);
        unsigned want = k->have_rec ? recorded_owners(k) : k->cfg.worker_count;
        log_info("cluster: worker '%s' joined (%u of %u)", name, joined, want);
        if ((k->have_rec ? all_owners_joined(k) : joined == want) && k->cur.kind == OP_NONE &&
            k->nq == 0)
            k->queue[k->nq++] = (op_t){OP_FORM, 0, NULL};
    } else {
        log_info("cluster: worker '%s' asks to join the running cluster", name);
        if (k->nq < MAX_QUEUE)
            k->queue[k->nq++] = (op_t){OP_GROW, m->index, NULL};
    }
    next_op(k);
    return 0;
}

/* ------------------------------------------------------------ a change, step by step */

static int takes_part(coord_t *k, const member_t *m)
{
    if (!live(m))
        return 0;
    /* A joiner takes part only in the change that adds it. */
    return m->state != CL_JOINING || k->cur.kind == OP_FORM ||
           (k->cur.kind == OP_GROW && k->cur.member == m->index);
}

static void start_round(coord_t *k, uint8_t type)
{
    k->seq++;
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        m->replied = 0;
        if (takes_part(k, m))
            send_u32(m, type, k->seq);
    }
}

static int round_done(coord_t *k)
{
    for (unsigned i = 0; i < k->nm; i++)
        if (takes_part(k, k->m[i]) && !k->m[i]->replied)
            return 0;
    return 1;
}

static void finish_op(coord_t *k)
{
    int was_checkpoint = k->cur.kind == OP_CHECKPOINT;
    k->cur = (op_t){OP_NONE, 0, NULL};
    if (was_checkpoint) {
        next_op(k);
        return;
    }
    /* Loads measured across a change are not comparable: measure afresh. */
    k->last_balance_ns = now_ns();
    k->load_asked = 0;
    next_op(k);
}

static void resume_all(coord_t *k)
{
    for (unsigned i = 0; i < k->nm; i++)
        if (takes_part(k, k->m[i]))
            send_empty(k->m[i], CL_RESUME);
}

/* Everything sent has been run, and nothing changed since the last round. */
static int quiet(coord_t *k)
{
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *a = k->m[i];
        if (!takes_part(k, a))
            continue;
        if (!a->have_prev || memcmp(a->sent, a->prev_sent, sizeof a->sent) != 0 ||
            memcmp(a->ran, a->prev_ran, sizeof a->ran) != 0)
            return 0;
        for (unsigned j = 0; j < k->nm; j++) {
            member_t *b = k->m[j];
            if (j != i && takes_part(k, b) && a->sent[j] != b->ran[i])
                return 0;
        }
    }
    return 1;
}

static void enter_table(coord_t *k)
{
    k->phase = PH_TABLE;
    k->seq++;
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        m->replied = 0;
        if (takes_part(k, m))
            send_table(k, m, &k->next);
    }
}

static void owners_except(coord_t *k, unsigned skip, unsigned *owners, size_t *n)
{
    *n = 0;
    for (unsigned i = 0; i < k->nm; i++)
        if (k->m[i]->state == CL_ACTIVE && i != skip)
            owners[(*n)++] = i;
}

static void enter_migrate(coord_t *k)
{
    unsigned owners[CL_MAX_WORKERS];
    size_t n;
    k->next = k->table;
    if (k->cur.kind == OP_BALANCE) {
        /* Planned from the loads before the pause; the table has not changed since
         * (changes run one at a time), but a worker may have been lost. */
        k->nmoves = 0;
        for (size_t i = 0; i < k->nbalance; i++)
            if (k->m[k->balance[i].from]->state == CL_ACTIVE &&
                k->m[k->balance[i].to]->state == CL_ACTIVE)
                k->moves[k->nmoves++] = k->balance[i];
    } else if (k->cur.kind == OP_GROW) {
        owners_except(k, k->cur.member, owners, &n);
        k->nmoves = plan_grow(&k->table, owners, n, k->cur.member, k->moves);
    } else {
        owners_except(k, k->cur.member, owners, &n);
        k->nmoves = plan_shrink(&k->table, owners, n, k->cur.member, k->moves);
    }
    plan_apply(&k->next, k->moves, k->nmoves);
    k->installed = 0;
    k->phase = PH_MIGRATE;
    log_info("cluster: quiet; moving %zu slots", k->nmoves);
    /* One MIGRATE per giver, listing its moves. */
    for (unsigned g = 0; g < k->nm; g++) {
        size_t count = 0;
        for (size_t i = 0; i < k->nmoves; i++)
            count += k->moves[i].from == g;
        if (!count)
            continue;
        member_t *m = k->m[g];
        wire_wr_t w;
        wire_begin(&w, mbuf(m), CL_MIGRATE, CL_MAX_FRAME);
        wire_put_u16(&w, (uint16_t)count);
        for (size_t i = 0; i < k->nmoves; i++)
            if (k->moves[i].from == g) {
                wire_put_u16(&w, k->moves[i].slot);
                wire_put_u16(&w, k->moves[i].to);
            }
        wire_end(&w);
        outconn_flush(&m->out.o);
    }
    if (k->nmoves == 0)
        enter_table(k);
}

static void on_recount(uv_timer_t *t);

static void counted(coord_t *k)
{
    if (!quiet(k)) {
        uv_timer_start(&k->recount, on_recount, RECOUNT_MS, 0);
        return;
    }
    if (k->cur.kind == OP_STOP) {
        log_info("cluster: quiet; stopping every worker");
        for (unsigned i = 0; i < k->nm; i++)
            if (takes_part(k, k->m[i]))
                send_empty(k->m[i], CL_FINISH);
        k->cur = (op_t){OP_NONE, 0, NULL};
        return;
    }
    enter_migrate(k);
}

static void on_recount(uv_timer_t *t)
{
    coord_t *k = t->data;
    if (k->cur.kind != OP_NONE && k->phase == PH_COUNT)
        start_round(k, CL_COUNTQ);
}

static void formed_now(coord_t *k)
{
    k->formed = 1;
    for (unsigned i = 0; i < k->nm; i++)
        if (k->m[i]->state == CL_JOINING)
            k->m[i]->state = CL_ACTIVE;
    broadcast_members(k);
    resume_all(k);
    log_info("cluster: formed with %u workers", count_state(k, CL_ACTIVE));
}

static void enter_restore(coord_t *k);

static void done_tabling(coord_t *k)
{
    k->table = k->next;
    op_t op = k->cur;
    if (op.kind == OP_FORM && k->record) {
        enter_restore(k);
        return;
    }
    if (op.kind == OP_FORM) {
        formed_now(k);
    } else if (op.kind == OP_GROW) {
        member_t *m = k->m[op.member];
        m->state = CL_ACTIVE;
        broadcast_members(k);
        resume_all(k);
        log_info("cluster: worker '%s' joined with %u slots (%zu moved); %u workers",
                 m->name, routing_count(&k->table, m->index), k->nmoves,
                 count_state(k, CL_ACTIVE));
    } else if (op.kind == OP_BALANCE) {
        resume_all(k);
        log_info("cluster: load balanced: %zu slots moved", k->nmoves);
    } else if (op.kind == OP_SHRINK) {
        member_t *m = k->m[op.member];
        send_empty(m, CL_LEAVE);
        m->state = CL_LEFT;
        broadcast_members(k);
        resume_all(k);
        log_info("cluster: worker '%s' left; its %zu slots moved to the others; %u workers",
                 m->name, k->nmoves, count_state(k, CL_ACTIVE));
        reply_admin(op.admin, 0, "worker '%s' left the cluster: %zu slots moved to the %u "
                    "remaining workers\n", m->name, k->nmoves, count_state(k, CL_ACTIVE));
    }
    finish_op(k);
}

/* ------------------------------------------------------------ checkpoints */

/* The members and the table, by name: what a restart must form again. */
static void put_layout(coord_t *k, buf_t *b)
{
    wire_wr_t w;
    wire_begin(&w, b, 0, CL_MAX_FRAME);
    wire_put_u16(&w, (uint16_t)k->nm);
    for (unsigned i = 0; i < k->nm; i++)
        wire_put_str16(&w, k->m[i]->name, strlen(k->m[i]->name));
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        wire_put_u16(&w, k->table.owner[s]);
    wire_end(&w);
}

static int get_layout(coord_t *k, const buf_t *b)
{
    wire_rd_t r;
    if (buf_unread(b) < 5)
        return -1;
    wire_rd_init(&r, buf_head(b) + 5, buf_unread(b) - 5);
    k->rec_n = wire_u16(&r);
    for (unsigned i = 0; i < k->rec_n && i < CL_MAX_WORKERS; i++)
        cl_str16(&r, k->rec_names[i], sizeof k->rec_names[i]);
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        k->rec_owner[s] = wire_u16(&r);
    if (r.err || k->rec_n > CL_MAX_WORKERS)
        return -1;
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        if (k->rec_owner[s] >= k->rec_n)
            return -1;
    return 0;
}

/* Durably: checkpoint n is complete, with this cluster's members and table. */
static int record_complete(coord_t *k, uint64_t n)
{
    buf_t layout;
    buf_init(&layout);
    put_layout(k, &layout);
    snap_info_t info = {.n = n, .base = n, .full = 1};
    char err[512];
    int rc = catalog_complete_with(k->record, &info, n > 1 ? n - 1 : 0, "cluster",
                                   buf_head(&layout), buf_unread(&layout), err, sizeof err);
    buf_free(&layout);
    if (rc < 0)
        log_error("cluster: cannot record checkpoint %llu as complete: %s",
                  (unsigned long long)n, err);
    return rc;
}

static void send_ckpt_end(coord_t *k, uint64_t n, int complete)
{
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        if (!takes_part(k, m))
            continue;
        wire_wr_t w;
        wire_begin(&w, mbuf(m), CL_CKPT_END, CL_MAX_FRAME);
        wire_put_u64(&w, n);
        wire_put_u8(&w, complete ? 1 : 0);
        wire_end(&w);
        outconn_flush(&m->out.o);
    }
}

/* Every participant answered (or was lost): complete or abandon. */
static void checkpoint_answered(coord_t *k)
{
    int complete = !k->ckpt_lost;
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        if (!takes_part(k, m))
            continue;
        if (!m->ckpt_replied)
            return;
        complete = complete && m->ckpt_ok;
    }
    uint64_t n = k->ckpt_n;
    if (complete && record_complete(k, n) < 0)
        complete = 0;
    if (complete)
        k->ckpt_complete = n;
    else
        log_warn("cluster: checkpoint %llu abandoned (%s); checkpoint %llu stays the one to "
                 "recover from", (unsigned long long)n,
                 k->ckpt_lost ? "a worker was lost" : "a worker could not take its part",
                 (unsigned long long)k->ckpt_complete);
    send_ckpt_end(k, n, complete);
    finish_op(k);
}

static void start_checkpoint(coord_t *k)
{
    uint64_t n = ++k->ckpt_last;
    k->ckpt_n = n;
    k->ckpt_lost = 0;
    uint16_t idx[CL_MAX_WORKERS];
    unsigned count = 0;
    for (unsigned i = 0; i < k->nm; i++)
        if (takes_part(k, k->m[i]))
            idx[count++] = (uint16_t)i;
    for (unsigned i = 0; i < count; i++) {
        member_t *m = k->m[idx[i]];
        m->ckpt_replied = m->ckpt_ok = 0;
        wire_wr_t w;
        wire_begin(&w, mbuf(m), CL_CKPT, CL_MAX_FRAME);
        wire_put_u64(&w, n);
        wire_put_u16(&w, (uint16_t)count);
        for (unsigned j = 0; j < count; j++)
            wire_put_u16(&w, idx[j]);
        wire_end(&w);
        outconn_flush(&m->out.o);
    }
}

static void on_ckpt_done(coord_t *k, member_t *m, wire_rd_t *r)
{
    uint64_t n = wire_u64(r);
    int ok = wire_u8(r);
    if (r->err || k->cur.kind != OP_CHECKPOINT || n != k->ckpt_n || m->ckpt_replied)
        return;
    m->ckpt_replied = 1;
    m->ckpt_ok = ok;
    checkpoint_answered(k);
}

static void on_ckpt_timer(uv_timer_t *t)
{
    coord_t *k = t->data;
    if (!k->formed || k->stopping || k->closing || k->cur.kind != OP_NONE || k->nq > 0)
        return;
    k->queue[k->nq++] = (op_t){OP_CHECKPOINT, 0, NULL};
    next_op(k);
}

/* A restarted cluster that cannot go on from its checkpoint stops rather
 * than run on state that does not fit together. */
static void give_up_forming(coord_t *k)
{
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        if (!live(m))
            continue;
        wire_wr_t w;
        wire_begin(&w, mbuf(m), CL_FINISH, CL_MAX_FRAME);
        wire_put_u8(&w, 2);
        wire_end(&w);
        outconn_flush(&m->out.o);
    }
    k->stopping = 1;
    k->cur = (op_t){OP_NONE, 0, NULL};
}

/* The cluster formed again: every worker loads the last complete checkpoint
 * before any source runs. */
static void enter_restore(coord_t *k)
{
    k->phase = PH_RESTORE;
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        m->restored = m->restore_ok = 0;
        if (!takes_part(k, m))
            continue;
        /* A worker that joined after the checkpoint has nothing of it: it
         * starts empty (and gets no slot of it). */
        wire_wr_t w;
        wire_begin(&w, mbuf(m), CL_RESTORE, CL_MAX_FRAME);
        wire_put_u64(&w, recorded_member(k, m->name) ? k->ckpt_complete : 0);
        wire_put_u64(&w, k->ckpt_complete);
        wire_end(&w);
        outconn_flush(&m->out.o);
    }
    log_info("cluster: every worker loads checkpoint %llu", (unsigned long long)k->ckpt_complete);
}

static void formed_now(coord_t *k);

/* The resumable streams' positions in the RESTORED answers, every stream once
 * with the highest position any worker had for it: a stream that reconnected
 * to another worker left a lower, older one behind. */
static void gather_streams(coord_t *k, wire_rd_t *r)
{
    unsigned n = wire_u16(r);
    for (unsigned i = 0; i < n && !r->err; i++) {
        uint64_t pos = wire_u64(r);
        size_t len;
        const uint8_t *name = wire_str16(r, &len);
        if (!name)
            break;
        /* Entries: u64 position, str16 name. */
        wire_rd_t e;
        wire_rd_init(&e, buf_head(&k->streams), buf_unread(&k->streams));
        int found = 0;
        while (e.p < e.end && !e.err) {
            uint8_t *at = (uint8_t *)e.p;
            uint64_t have = wire_u64(&e);
            size_t hl;
            const uint8_t *hn = wire_str16(&e, &hl);
            if (hn && hl == len && memcmp(hn, name, len) == 0) {
                found = 1;
                if (pos > have)
                    for (int b = 7; b >= 0; b--, pos >>= 8)
                        at[b] = (uint8_t)pos;
                break;
            }
        }
        if (!found && k->nstreams < 0xffff) {
            uint8_t p8[8];
            for (int b = 7; b >= 0; b--, pos >>= 8)
                p8[b] = (uint8_t)pos;
            uint8_t l2[2] = {(uint8_t)(len >> 8), (uint8_t)len};
            buf_append(&k->streams, p8, 8);
            buf_append(&k->streams, l2, 2);
            buf_append(&k->streams, name, len);
            k->nstreams++;
        }
    }
}

static void send_streams(coord_t *k)
{
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        if (!takes_part(k, m))
            continue;
        wire_wr_t w;
        wire_begin(&w, mbuf(m), CL_STREAMS, CL_MAX_FRAME);
        wire_put_u16(&w, (uint16_t)k->nstreams);
        wire_put_bytes(&w, buf_head(&k->streams), buf_unread(&k->streams));
        wire_end(&w);
        outconn_flush(&m->out.o);
    }
    if (k->nstreams)
        log_info("cluster: %u resumable streams go on where the checkpoint left them",
                 k->nstreams);
    buf_free(&k->streams);
    k->nstreams = 0;
}

static void on_restored(coord_t *k, member_t *m, wire_rd_t *r)
{
    uint64_t n = wire_u64(r);
    int ok = wire_u8(r);
    if (r->err || k->cur.kind != OP_FORM || k->phase != PH_RESTORE ||
        n != (recorded_member(k, m->name) ? k->ckpt_complete : 0))
        return;
    m->restored = 1;
    m->restore_ok = ok;
    gather_streams(k, r);
    int all_ok = 1;
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *o = k->m[i];
        if (!takes_part(k, o))
            continue;
        if (!o->restored)
            return;
        all_ok = all_ok && o->restore_ok;
    }
    if (!all_ok) {
        log_error("cluster: a worker could not load checkpoint %llu (see its log); stopping "
                  "the cluster rather than running on inconsistent state",
                  (unsigned long long)n);
        give_up_forming(k);
        return;
    }
    send_streams(k);
    formed_now(k);
    finish_op(k);
}

/* With a record, the table of its checkpoint, its members found by name. */
static int recorded_table(coord_t *k, routing_table_t *t)
{
    int map[CL_MAX_WORKERS];
    for (unsigned j = 0; j < k->rec_n; j++) {
        member_t *m = member_named(k, k->rec_names[j]);
        map[j] = m ? (int)m->index : -1;
    }
    memset(t, 0, sizeof *t);
    for (unsigned s = 0; s < ROUTING_SLOTS; s++) {
        int owner = map[k->rec_owner[s]];
        if (owner < 0) {
            log_error("cluster: worker '%s' held slots at checkpoint %llu but is not among "
                      "the workers that joined: start it with the same --name",
                      k->rec_names[k->rec_owner[s]], (unsigned long long)k->ckpt_complete);
            return -1;
        }
        t->owner[s] = (uint16_t)owner;
    }
    t->workers = k->nm;
    return 0;
}

static void start_op(coord_t *k, op_t op)
{
    k->cur = op;
    k->op_started_ns = k->op_warned_ns = now_ns();
    for (unsigned i = 0; i < k->nm; i++)
        k->m[i]->have_prev = k->m[i]->have_counts = 0;
    if (op.kind == OP_CHECKPOINT) {
        start_checkpoint(k);
        return;
    }
    if (op.kind == OP_FORM) {
        /* Slot s goes to the (s mod n)-th worker, in the order they joined;
         * after a restart, to the worker of that name at the checkpoint. */
        unsigned idx[CL_MAX_WORKERS], n = 0;
        for (unsigned i = 0; i < k->nm; i++)
            if (k->m[i]->state == CL_JOINING)
                idx[n++] = i;
        memset(&k->next, 0, sizeof k->next);
        for (unsigned s = 0; s < ROUTING_SLOTS; s++)
            k->next.owner[s] = (uint16_t)idx[s % n];
        k->next.workers = k->nm;
        if (k->have_rec && recorded_table(k, &k->next) < 0) {
            give_up_forming(k);
            return;
        }
        broadcast_members(k);
        enter_table(k);
        return;
    }
    if (op.kind == OP_GROW)
        broadcast_members(k); /* everyone links to the joiner, it to everyone */
    if (op.kind == OP_GROW && k->record) {
        /* A worker joining a running cluster has no checkpoint of it: it starts
         * empty (its sinks learn that their history starts now). */
        wire_wr_t w;
        member_t *m = k->m[op.member];
        wire_begin(&w, mbuf(m), CL_RESTORE, CL_MAX_FRAME);
        wire_put_u64(&w, 0);
        wire_put_u64(&w, k->ckpt_last);
        wire_end(&w);
        outconn_flush(&m->out.o);
    }
    if (op.kind == OP_SHRINK)
        log_info("cluster: worker '%s' is leaving; pausing the sources", k->m[op.member]->name);
    else if (op.kind == OP_GROW)
        log_info("cluster: worker '%s' is joining; pausing the sources", k->m[op.member]->name);
    else if (op.kind == OP_BALANCE)
        log_info("cluster: evening out the load (%zu slots to move); pausing the sources",
                 k->nbalance);
    else
        log_info("cluster: stopping; pausing the sources");
    k->phase = PH_COUNT;
    start_round(k, CL_PAUSE);
}

static void next_op(coord_t *k)
{
    if (k->cur.kind != OP_NONE || k->closing)
        return;
    while (k->nq > 0) {
        op_t op = k->queue[0];
        memmove(k->queue, k->queue + 1, (k->nq - 1) * sizeof *k->queue);
        k->nq--;
        /* A joiner or leaver lost while waiting: nothing to do for it. */
        if ((op.kind == OP_GROW || op.kind == OP_SHRINK) && !live(k->m[op.member])) {
            reply_admin(op.admin, 1, "worker '%s' is no longer in the cluster\n",
                        k->m[op.member]->name);
            continue;
        }
        if (op.kind != OP_FORM && !k->formed) {
            reply_admin(op.admin, 1, "the cluster has not formed yet\n");
            continue;
        }
        start_op(k, op);
        return;
    }
}

/* ------------------------------------------------------------ answers from workers */

static void on_counts(coord_t *k, member_t *m, wire_rd_t *r)
{
    uint32_t seq = wire_u32(r);
    unsigned n = wire_u16(r);
    if (k->cur.kind == OP_NONE || k->phase != PH_COUNT || seq != k->seq || m->replied)
        return;
    memcpy(m->prev_sent, m->sent, sizeof m->sent);
    memcpy(m->prev_ran, m->ran, sizeof m->ran);
    m->have_prev = m->have_counts;
    m->have_counts = 1;
    memset(m->sent, 0, sizeof m->sent);
    memset(m->ran, 0, sizeof m->ran);
    for (unsigned i = 0; i < n && !r->err; i++) {
        unsigned peer = wire_u16(r);
        uint64_t sent = wire_u64(r), ran = wire_u64(r);
        if (peer < CL_MAX_WORKERS) {
            m->sent[peer] = sent;
            m->ran[peer] = ran;
        }
    }
    if (r->err)
        return;
    m->replied = 1;
    if (round_done(k))
        counted(k);
}

static void on_ack(coord_t *k, member_t *m, uint32_t seq)
{
    if (k->cur.kind == OP_NONE || k->phase != PH_TABLE || seq != k->seq)
        return;
    m->replied = 1;
    if (round_done(k))
        done_tabling(k);
}

static void on_installed(coord_t *k, uint32_t n)
{
    if (k->cur.kind == OP_NONE || k->phase != PH_MIGRATE)
        return;
    k->installed += n;
    if (k->installed >= k->nmoves)
        enter_table(k);
}

static void status_reply(coord_t *k);

/* ------------------------------------------------------------ load balancing */

static void ask_loads(coord_t *k)
{
    k->load_seq++;
    k->load_asked = 1;
    k->last_balance_ns = now_ns();
    memset(k->load, 0, sizeof k->load);
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        m->loads_ok = 0;
        if (m->state == CL_ACTIVE)
            send_u32(m, CL_LOADQ, k->load_seq);
    }
}

/* Every active worker has said what ran on its slots: plan moves that even it
 * out, and queue them as a change if they help enough. */
static void loads_known(coord_t *k)
{
    k->load_asked = 0;
    k->last_balance_ns = now_ns();
    uint64_t total = 0;
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        total += k->load[s];
    unsigned owners[CL_MAX_WORKERS];
    size_t n;
    owners_except(k, CL_NO_INDEX, owners, &n);
    if (total < 1000 || n < 2 || k->cur.kind != OP_NONE || k->nq >= MAX_QUEUE || k->stopping)
        return;
    k->nbalance = plan_balance(&k->table, owners, n, k->load, 0.05, k->balance);
    if (k->nbalance == 0)
        return;
    k->queue[k->nq++] = (op_t){OP_BALANCE, 0, NULL};
    next_op(k);
}

static void on_loads(coord_t *k, member_t *m, wire_rd_t *r)
{
    uint32_t seq = wire_u32(r);
    unsigned n = wire_u16(r);
    if (seq != k->load_seq || !k->load_asked || m->loads_ok)
        return;
    for (unsigned i = 0; i < n && !r->err; i++) {
        unsigned slot = wire_u16(r);
        uint32_t count = wire_u32(r);
        /* Only what the owner ran counts (a slot moved meanwhile is not). */
        if (!r->err && slot < ROUTING_SLOTS && k->table.owner[slot] == m->index)
            k->load[slot] += count;
    }
    m->loads_ok = 1;
    for (unsigned i = 0; i < k->nm; i++)
        if (k->m[i]->state == CL_ACTIVE && !k->m[i]->loads_ok)
            return;
    loads_known(k);
}

static void on_status(coord_t *k, member_t *m, wire_rd_t *r)
{
    uint32_t seq = wire_u32(r);
    m->keys = wire_u64(r);
    m->in_count = wire_u64(r);
    m->out_count = wire_u64(r);
    m->forwarded = wire_u64(r);
    m->failed = wire_u64(r);
    if (r->err || seq != k->status_seq || !k->status_admin)
        return;
    m->status_ok = 1;
    for (unsigned i = 0; i < k->nm; i++)
        if (live(k->m[i]) && !k->m[i]->status_ok)
            return;
    status_reply(k);
}

/* What is wrong with the cluster, as lines for the status (none: all is well):
 * the status must never look fine while slots have no live worker, a worker
 * does not answer, or a worker cannot send to another. Returns the count. */
static unsigned status_problems(coord_t *k, char *text, size_t cap, size_t *off)
{
    unsigned n = 0;
#define PROBLEM(...)                                                                  \
    do {                                                                              \
        n++;                                                                          \
        if (*off < cap - 1)                                                           \
            *off += (size_t)snprintf(text + *off, cap - *off, "PROBLEM: " __VA_ARGS__); \
    } while (0)
    if (!k->formed)
        PROBLEM("the cluster has not formed yet: no slot has a worker\n");
    unsigned orphans = 0;
    for (unsigned i = 0; k->formed && i < k->nm; i++)
        if (!live(k->m[i]))
            orphans += routing_count(&k->table, i);
    if (orphans)
        PROBLEM("%u slots have no live worker: their messages are dropped\n", orphans);
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        if (m->state == CL_LOST_STATE)
            PROBLEM("worker '%s' is lost\n", m->name);
        else if (live(m) && !m->status_ok)
            PROBLEM("worker '%s' did not answer\n", m->name);
        for (unsigned j = 0; live(m) && j < k->nm; j++)
            if (m->cannot_send[j] && live(k->m[j]))
                PROBLEM("worker '%s' cannot send to worker '%s' (its data link failed): "
                        "messages between them are dropped\n", m->name, k->m[j]->name);
    }
#undef PROBLEM
    if (*off >= cap)
        *off = cap - 1;
    return n;
}

static void status_reply(coord_t *k)
{
    char text[8192];
    size_t off = 0;
    off += (size_t)snprintf(text + off, sizeof text - off,
                            "cluster %s, %u active workers, coordinator at %s\n",
                            k->formed ? "formed" : "forming", count_state(k, CL_ACTIVE),
                            k->l.addr);
    off += (size_t)snprintf(text + off, sizeof text - off,
                            "%-16s %5s %-8s %6s %8s %10s %10s %10s %-21s %s\n", "NAME",
                            "INDEX", "STATE", "SLOTS", "KEYS", "IN", "OUT", "FORWARDED",
                            "METRICS", "DATA");
    for (unsigned i = 0; i < k->nm && off < sizeof text - 200; i++) {
        member_t *m = k->m[i];
        unsigned slots = k->formed ? routing_count(&k->table, i) : 0;
        if (live(m) && m->status_ok)
            off += (size_t)snprintf(text + off, sizeof text - off,
                                    "%-16s %5u %-8s %6u %8llu %10llu %10llu %10llu %-21s %s\n",
                                    m->name, i, cl_state_name(m->state), slots,
                                    (unsigned long long)m->keys,
                                    (unsigned long long)m->in_count,
                                    (unsigned long long)m->out_count,
                                    (unsigned long long)m->forwarded,
                                    m->metrics[0] ? m->metrics : "-", m->data);
        else
            off += (size_t)snprintf(text + off, sizeof text - off,
                                    "%-16s %5u %-8s %6u %8s %10s %10s %10s %-21s %s\n", m->name,
                                    i, live(m) ? "silent" : cl_state_name(m->state), slots, "-",
                                    "-", "-", "-", m->metrics[0] ? m->metrics : "-", m->data);
    }
    if (off >= sizeof text)
        off = sizeof text - 1;
    unsigned problems = status_problems(k, text, sizeof text, &off);
    reply_admin(k->status_admin, problems ? 1 : 0, "%s", text);
    k->status_admin = NULL;
}

static void ask_status(coord_t *k, inconn_t *admin)
{
    if (k->status_admin) {
        reply_admin(admin, 2, "another status question is being answered; ask again\n");
        return;
    }
    k->status_admin = admin;
    k->status_seq++;
    k->status_deadline_ns = now_ns() + (uint64_t)STATUS_WAIT_MS * 1000000u;
    int asked = 0;
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        m->status_ok = 0;
        if (live(m)) {
            send_u32(m, CL_STATUSQ, k->status_seq);
            asked = 1;
        }
    }
    if (!asked)
        status_reply(k);
}

static void ask_shrink(coord_t *k, inconn_t *admin, wire_rd_t *r)
{
    char name[CL_NAME_MAX];
    cl_str16(r, name, sizeof name);
    member_t *m = member_named(k, name);
    if (!m || m->state != CL_ACTIVE) {
        reply_admin(admin, 1, "no active worker named '%s' in this cluster\n", name);
        return;
    }
    if (strcmp(name, k->cfg.name) == 0) {
        reply_admin(admin, 1, "'%s' is the initializer: it runs the coordinator and cannot "
                    "leave\n", name);
        return;
    }
    if (count_state(k, CL_ACTIVE) < 2 || k->nq >= MAX_QUEUE) {
        reply_admin(admin, 1, "cannot shrink: %s\n",
                    k->nq >= MAX_QUEUE ? "too many changes waiting" : "it is the last worker");
        return;
    }
    log_info("cluster: asked to shrink worker '%s' away (from %s)", name, admin->peer);
    k->queue[k->nq++] = (op_t){OP_SHRINK, m->index, admin};
    next_op(k);
}

static void request_stop(coord_t *k, const char *who, const char *why)
{
    if (k->stop_queued || k->stopping)
        return;
    k->stop_queued = 1;
    k->stopping = 1;
    log_info("cluster: '%s' asks to stop the cluster (%s)", who, why);
    if (!k->formed) {
        /* Nothing runs yet: tell whoever joined to finish. */
        for (unsigned i = 0; i < k->nm; i++)
            if (live(k->m[i]))
                send_empty(k->m[i], CL_FINISH);
        k->nq = 0;
        return;
    }
    /* Drop waiting changes: their askers are told. */
    for (size_t i = 0; i < k->nq; i++)
        reply_admin(k->queue[i].admin, 1, "the cluster is stopping\n");
    k->nq = 0;
    /* With resilience, what ran until now is kept: a last checkpoint. */
    if (k->record)
        k->queue[k->nq++] = (op_t){OP_CHECKPOINT, 0, NULL};
    k->queue[k->nq++] = (op_t){OP_STOP, 0, NULL};
    next_op(k);
}

/* `bettong cluster shutdown --control`: the cluster stops as on a signal. */
static void ask_stop(coord_t *k, inconn_t *admin)
{
    char who[128];
    snprintf(who, sizeof who, "bettong cluster shutdown (from %s)", admin->peer);
    int already = k->stopping;
    request_stop(k, who, "asked by an admin");
    reply_admin(admin, 0, already ? "the cluster is already stopping\n"
                                  : "the cluster is stopping\n");
}

/* ------------------------------------------------------------ failures */

static void member_lost(coord_t *k, member_t *m, const char *why)
{
    if (!live(m))
        return;
    int was = m->state;
    m->state = CL_LOST_STATE;
    if (k->stopping) {
        log_debug("cluster: worker '%s' went away while the cluster stopped: %s", m->name, why);
        if (k->cur.kind == OP_CHECKPOINT) {
            k->ckpt_lost = 1;
            checkpoint_answered(k);
            return;
        }
        if (k->cur.kind == OP_STOP && k->phase == PH_COUNT && round_done(k))
            counted(k);
        return;
    } else {
        log_error("cluster: worker '%s' (data %s) is lost: %s; its %u slots have no worker",
                  m->name, m->data, why, k->formed ? routing_count(&k->table, m->index) : 0);
    }
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *o = k->m[i];
        if (o != m && live(o)) {
            wire_wr_t w;
            wire_begin(&w, mbuf(o), CL_LOST, CL_MAX_FRAME);
            wire_put_u16(&w, (uint16_t)m->index);
            wire_put_str16(&w, why, strlen(why));
            wire_end(&w);
            outconn_flush(&o->out.o);
        }
    }
    if (k->cur.kind == OP_NONE)
        return;
    if (k->cur.kind == OP_CHECKPOINT) {
        k->ckpt_lost = 1;
        checkpoint_answered(k);
        return;
    }
    if (k->cur.kind == OP_FORM && k->phase == PH_RESTORE) {
        log_error("cluster: worker '%s' was lost while the cluster restored its checkpoint",
                  m->name);
        return;
    }
    int involved = k->cur.kind == OP_FORM || k->cur.kind == OP_STOP ||
                   k->cur.member == m->index || was == CL_ACTIVE || was == CL_LEAVING;
    if (!involved)
        return;
    if (k->cur.kind == OP_STOP) {
        if (k->phase == PH_COUNT && round_done(k))
            counted(k);
        return;
    }
    if (k->cur.kind == OP_FORM) {
        log_error("cluster: cannot form: worker '%s' was lost while forming", m->name);
        return;
    }
    /* A grow or shrink that lost a worker: finish with what is known. */
    log_error("cluster: the change under way (%s of '%s') lost worker '%s'",
              k->cur.kind == OP_GROW ? "grow" : "shrink", k->m[k->cur.member]->name, m->name);
    if ((k->cur.kind == OP_GROW || k->cur.kind == OP_SHRINK) && k->cur.member == m->index &&
        k->phase == PH_COUNT) {
        reply_admin(k->cur.admin, 1, "worker '%s' was lost; nothing moved\n", m->name);
        resume_all(k);
        finish_op(k);
        return;
    }
    if (k->phase == PH_COUNT && round_done(k))
        counted(k);
    else if (k->phase == PH_MIGRATE)
        enter_table(k);
    else if (k->phase == PH_TABLE && round_done(k))
        done_tabling(k);
}

/* ------------------------------------------------------------ suspicions */

/* A worker saw a data link with worker `index` close without a goodbye. That
 * alone proves nothing (anyone with the secret can open a link as a member and
 * close it), so the coordinator checks the worker on its own control link: a
 * member that is alive sends a heartbeat there within a heartbeat period
 * (check_suspects). If the reporter's own link to it failed, the reporter can
 * no longer send to it, which the status shows as a problem either way. */
static void on_suspect(coord_t *k, member_t *from, wire_rd_t *r)
{
    unsigned index = wire_u16(r);
    int ours = wire_u8(r);
    char why[200];
    cl_str16(r, why, sizeof why);
    member_t *m = index < k->nm ? k->m[index] : NULL;
    if (r->err || !m || m == from || !live(m) || k->stopping)
        return;
    if (ours)
        from->cannot_send[index] = 1;
    log_warn("cluster: worker '%s' reports worker '%s': %s; checking it", from->name, m->name,
             why);
    if (!m->suspect_ns) {
        m->suspect_ns = now_ns();
        snprintf(m->suspect_by, sizeof m->suspect_by, "%s", from->name);
    }
}

/* Heard from m on its control connection since t? */
static int heard_since(const member_t *m, uint64_t t)
{
    const kconn_t *kc = m->in ? m->in->user : NULL;
    return kc && kc->last_rx_ns > t;
}

static void check_suspects(coord_t *k, uint64_t now)
{
    uint64_t window = 2 * (uint64_t)cl_heartbeat_ms(k->cfg.timeout_ms) * 1000000u + 100000000u;
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        if (!m->suspect_ns || now - m->suspect_ns < window)
            continue;
        uint64_t since = m->suspect_ns;
        m->suspect_ns = 0;
        if (!live(m))
            continue;
        if (heard_since(m, since)) {
            log_info("cluster: worker '%s' answers the coordinator: it stays a member (the "
                     "report from '%s' does not make it lost)", m->name, m->suspect_by);
            continue;
        }
        char why[200];
        snprintf(why, sizeof why, "nothing heard from it since '%s' reported its data link "
                 "closed", m->suspect_by);
        member_lost(k, m, why);
    }
}

/* ------------------------------------------------------------ resumable streams */

static kstream_t *stream_named(coord_t *k, const char *name)
{
    for (kstream_t *st = k->owners; st; st = st->next)
        if (strcmp(st->name, name) == 0)
            return st;
    kstream_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    snprintf(st->name, sizeof st->name, "%s", name);
    st->owner = st->claimant = -1;
    st->next = k->owners;
    k->owners = st;
    return st;
}

static void grant(member_t *m, uint32_t id, uint64_t pos)
{
    wire_wr_t w;
    wire_begin(&w, mbuf(m), CL_GRANT, CL_MAX_FRAME);
    wire_put_u32(&w, id);
    wire_put_u64(&w, pos);
    wire_end(&w);
    outconn_flush(&m->out.o);
}

/* A resumable stream connected to worker m. If another live worker has it,
 * that one lets it go first (its position comes with the grant), so the
 * stream never runs on two workers or goes back to an older position. */
static void on_claim(coord_t *k, member_t *m, wire_rd_t *r)
{
    uint32_t id = wire_u32(r);
    char name[256];
    cl_str16(r, name, sizeof name);
    kstream_t *st = r->err ? NULL : stream_named(k, name);
    if (!st)
        return;
    member_t *owner = st->owner >= 0 ? k->m[st->owner] : NULL;
    if (!owner || owner == m || !live(owner)) {
        st->owner = (int)m->index;
        st->claimant = -1;
        grant(m, id, 0);
        return;
    }
    st->claimant = (int)m->index;
    st->claim_id = id;
    wire_wr_t w;
    wire_begin(&w, mbuf(owner), CL_RELEASE, CL_MAX_FRAME);
    wire_put_u32(&w, id);
    wire_put_str16(&w, name, strlen(name));
    wire_end(&w);
    outconn_flush(&owner->out.o);
    log_info("cluster: stream '%s' moves from worker '%s' to '%s'", name, owner->name,
             m->name);
}

static void on_released(coord_t *k, member_t *m, wire_rd_t *r)
{
    uint32_t id = wire_u32(r);
    uint64_t pos = wire_u64(r);
    if (r->err)
        return;
    for (kstream_t *st = k->owners; st; st = st->next) {
        if (st->claimant < 0 || st->claim_id != id || st->owner != (int)m->index)
            continue;
        member_t *to = k->m[st->claimant];
        st->owner = st->claimant;
        st->claimant = -1;
        if (live(to))
            grant(to, id, pos);
        return;
    }
}

/* ------------------------------------------------------------ inbound */

static void kconn_opened(void *owner, inconn_t *ic)
{
    kconn_t *kc = calloc(1, sizeof *kc);
    if (!kc) {
        inconn_close(ic, "out of memory");
        return;
    }
    kc->member = -1;
    kc->last_rx_ns = kc->opened_ns = now_ns();
    ic->user = kc;
    inconn_set_max_payload(ic, AUTH_MAX_FRAME);
}

static int worker_frame(coord_t *k, inconn_t *ic, kconn_t *kc, uint8_t type, wire_rd_t *r)
{
    if (type == CL_JOIN) {
        if (kc->member >= 0)
            return -1;
        return admit(k, ic, kc, r);
    }
    if (kc->member < 0)
        return type == CL_PING ? 0 : -1;
    member_t *m = k->m[kc->member];
    switch (type) {
    case CL_PING:
        return 0;
    case CL_BYE:
        kc->bye = 1;
        return 0;
    case CL_COUNTS:
        on_counts(k, m, r);
        break;
    case CL_ACK:
        on_ack(k, m, wire_u32(r));
        break;
    case CL_INSTALLED:
        on_installed(k, wire_u32(r));
        break;
    case CL_STATUS:
        on_status(k, m, r);
        break;
    case CL_LOADS:
        on_loads(k, m, r);
        break;
    case CL_CKPT_DONE:
        on_ckpt_done(k, m, r);
        break;
    case CL_RESTORED:
        on_restored(k, m, r);
        break;
    case CL_CLAIM:
        on_claim(k, m, r);
        break;
    case CL_RELEASED:
        on_released(k, m, r);
        break;
    case CL_STOP: {
        char why[200];
        cl_str16(r, why, sizeof why);
        request_stop(k, m->name, why);
        break;
    }
    case CL_SUSPECT:
        on_suspect(k, m, r);
        break;
    default:
        return -1;
    }
    return r->err ? -1 : 0;
}

/* Whether a connection proven as h may go on: an admin, or a worker that is
 * about to JOIN under the name it proved. Returns NULL or why not. */
static const char *judge(coord_t *k, const cl_hello_t *h, char *why, size_t cap)
{
    if (h->channel == CL_CH_ADMIN)
        return NULL;
    if (h->channel != CL_CH_CONTROL)
        return "a data link on the coordinator's port (wrong address?)";
    if (h->index != CL_NO_INDEX)
        return "a worker's control link must not claim an index before it joined";
    if (member_named(k, h->name)) {
        snprintf(why, cap, "a worker named '%s' is already in the cluster", h->name);
        return why;
    }
    return NULL;
}

/* A frame of a connection that is not accepted yet. Returns the frame
 * callback's result. */
static int handshake_frame(coord_t *k, inconn_t *ic, kconn_t *kc, const uint8_t *body,
                           size_t len)
{
    int rc = cl_accept_frame(&kc->auth, &k->cfg.secret, ic, body, len, &kc->hello);
    if (rc != CL_ACC_DONE)
        return rc == CL_ACC_CLOSE ? -1 : 0;
    char buf[200];
    const char *why = judge(k, &kc->hello, buf, sizeof buf);
    if (why) {
        cl_refuse(ic, "%s", why);
        return 0;
    }
    kc->authed = 1;
    kc->channel = kc->hello.channel;
    cl_welcome(ic, kc->channel == CL_CH_ADMIN ? CL_MAX_ADMIN : CL_MAX_FRAME);
    return 0;
}

static int kconn_frame(void *owner, inconn_t *ic, const uint8_t *frame, size_t frame_len,
                       const uint8_t *payload, size_t payload_len)
{
    coord_t *k = owner;
    kconn_t *kc = ic->user;
    kc->last_rx_ns = now_ns();
    if (!kc->authed)
        return handshake_frame(k, ic, kc, payload, payload_len);
    wire_rd_t r;
    wire_rd_init(&r, payload, payload_len);
    uint8_t type = wire_u8(&r);
    if (kc->channel == CL_CH_ADMIN) {
        if (type == CL_ASK_STATUS)
            ask_status(k, ic);
        else if (type == CL_ASK_SHRINK)
            ask_shrink(k, ic, &r);
        else if (type == CL_ASK_STOP)
            ask_stop(k, ic);
        else
            return -1;
        return 1;
    }
    if (worker_frame(k, ic, kc, type, &r) < 0) {
        log_warn("%s: unexpected or malformed message %u from %s; closing", ic->listener->name,
                 type, ic->peer);
        return -1;
    }
    return 0;
}

static void forget_admin(coord_t *k, inconn_t *ic)
{
    if (k->status_admin == ic)
        k->status_admin = NULL;
    if (k->cur.admin == ic)
        k->cur.admin = NULL;
    for (size_t i = 0; i < k->nq; i++)
        if (k->queue[i].admin == ic)
            k->queue[i].admin = NULL;
}

static void kconn_closed(void *owner, inconn_t *ic)
{
    coord_t *k = owner;
    kconn_t *kc = ic->user;
    forget_admin(k, ic);
    if (kc && kc->auth.challenged && !kc->authed && !ic->lingering)
        log_warn("%s: connection from %s closed during the handshake (a peer that does not "
                 "know this cluster's secret?)", ic->listener->name, ic->peer);
    if (kc && kc->member >= 0) {
        member_t *m = k->m[kc->member];
        m->in = NULL;
        if (!kc->bye && !k->closing && m->state != CL_LEFT)
            member_lost(k, m, "its control connection closed");
    }
    free(kc);
    ic->user = NULL;
}

static const inconn_handler_t coord_handler = {
    .opened = kconn_opened,
    .frame = kconn_frame,
    .closed = kconn_closed,
};

/* ------------------------------------------------------------ timers */

const char *coord_address(const coord_t *k) { return k->l.addr; }

void coord_keepalive(coord_t *k)
{
    if (k->closing)
        return;
    for (unsigned i = 0; i < k->nm; i++)
        if (live(k->m[i]))
            send_empty(k->m[i], CL_PING);
}

static void on_tick(uv_timer_t *t)
{
    coord_t *k = t->data;
    uint64_t now = now_ns();
    coord_keepalive(k);
    uint64_t limit = (uint64_t)k->cfg.timeout_ms * 1000000u;
    uint64_t hb = (uint64_t)cl_heartbeat_ms(k->cfg.timeout_ms) * 1000000u;
    int late = k->last_tick_ns && now - k->last_tick_ns > 2 * hb;
    k->last_tick_ns = now;
    inconn_t *ic = k->l.conns;
    /* After a hold-up of this loop (a long batch of the worker it shares the
     * process with), members' messages are still unread: restart their clocks. */
    for (inconn_t *x = ic; late && x; x = x->next)
        if (x->user)
            ((kconn_t *)x->user)->last_rx_ns = now;
    uint64_t hs_limit = (uint64_t)k->cfg.handshake_ms * 1000000u;
    while (ic) {
        inconn_t *next = ic->next;
        kconn_t *kc = ic->user;
        if (kc && !kc->authed && !late && now - kc->opened_ns > hs_limit) {
            /* Silent or half-open: nothing holds a connection for long unproven. */
            inconn_close(ic, "no handshake within the deadline");
        } else if (kc && kc->member >= 0 && now - kc->last_rx_ns > limit) {
            char why[96];
            snprintf(why, sizeof why, "nothing heard from it for %.1f s",
                     (double)(now - kc->last_rx_ns) / 1e9);
            member_lost(k, k->m[kc->member], why);
            inconn_close(ic, NULL);
        }
        ic = next;
    }
    /* Our links to the members give up on one that takes the connection and
     * never finishes the handshake (the member is then lost). */
    for (unsigned i = 0; i < k->nm; i++)
        if (live(k->m[i]) && k->m[i]->out_open)
            cl_link_check_deadline(&k->m[i]->out, k->cfg.handshake_ms);
    check_suspects(k, now);
    if (k->status_admin && now > k->status_deadline_ns)
        status_reply(k);
    if (k->cfg.rebalance_s > 0 && k->formed && !k->stopping && k->cur.kind == OP_NONE &&
        k->nq == 0 && count_state(k, CL_ACTIVE) >= 2 &&
        now - k->last_balance_ns >= (uint64_t)(k->cfg.rebalance_s * 1e9)) {
        if (k->load_asked)
            loads_known(k); /* a worker did not answer in a whole period: go without it */
        else
            ask_loads(k);
    }
    if (k->cur.kind != OP_NONE && now - k->op_warned_ns > 5000000000ull) {
        k->op_warned_ns = now;
        log_warn("cluster: a change has waited %.0f s for the workers (phase %d); messages "
                 "still in flight or a worker not answering", (double)(now - k->op_started_ns) / 1e9,
                 (int)k->phase);
    }
    if (k->cur.kind == OP_STOP &&
        now - k->op_started_ns > (uint64_t)(k->cfg.stop_timeout_s * 1e9)) {
        log_warn("cluster: stopping without waiting longer for in-flight messages");
        for (unsigned i = 0; i < k->nm; i++)
            if (live(k->m[i]))
                send_empty(k->m[i], CL_FINISH);
        k->cur = (op_t){OP_NONE, 0, NULL};
    }
}

/* ------------------------------------------------------------ start and stop */

/* The record of complete checkpoints: where a restarted cluster goes on from. */
static int open_record(coord_t *k, char *err, size_t errlen)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/coordinator", k->cfg.resilience_dir);
    if (!(k->record = catalog_open(dir, "cluster coordinator", err, errlen)))
        return -1;
    snap_info_t last;
    int n = catalog_list(k->record, &last, 1, err, errlen);
    if (n < 0)
        return -1;
    if (n == 1) {
        buf_t b;
        buf_init(&b);
        int got = catalog_get(k->record, "cluster", &b, err, errlen);
        if (got <= 0 || get_layout(k, &b) < 0) {
            buf_free(&b);
            if (got >= 0)
                snprintf(err, errlen, "the record of checkpoint %llu in %s has no usable "
                         "member list", (unsigned long long)last.n, dir);
            return -1;
        }
        buf_free(&b);
        k->have_rec = 1;
        k->ckpt_complete = k->ckpt_last = last.n;
        log_info("cluster: the last complete checkpoint is %llu (%u workers); the cluster goes "
                 "on from it", (unsigned long long)last.n, k->rec_n);
    }
    uint64_t ms = k->cfg.checkpoint_interval_ns / 1000000;
    uv_timer_start(&k->ckpt_timer, on_ckpt_timer, ms ? ms : 1, ms ? ms : 1);
    return 0;
}

int coord_start(coord_t **out, uv_loop_t *loop, const cluster_config_t *cfg, char *err,
                size_t errlen)
{
    coord_t *k = calloc(1, sizeof *k);
    *out = k;
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    k->loop = loop;
    uv_timer_init(loop, &k->tick);
    uv_timer_init(loop, &k->recount);
    uv_timer_init(loop, &k->ckpt_timer);
    k->tick.data = k->recount.data = k->ckpt_timer.data = k;
    k->cfg = *cfg;
    if (k->cfg.stop_timeout_s <= 0)
        k->cfg.stop_timeout_s = 10;
    if (k->cfg.timeout_ms == 0)
        k->cfg.timeout_ms = CL_DEFAULT_TIMEOUT_MS;
    if (k->cfg.handshake_ms == 0)
        k->cfg.handshake_ms = CL_HANDSHAKE_MS;
    cl_frame_spec(&k->spec);
    int rc;
    if (cfg->control_fd >= 0) {
        rc = listener_adopt(&k->l, loop, cfg->control_fd, &k->spec, &coord_handler, k,
                            "cluster coordinator", err, errlen);
    } else {
        struct sockaddr_storage sa;
        rc = cl_listen_address(cfg->control, &cfg->secret, "control address", &sa, err, errlen);
        if (rc == 0)
            rc = listener_start(&k->l, loop, (struct sockaddr *)&sa, &k->spec, &coord_handler,
                                k, "cluster coordinator", err, errlen);
    }
    if (rc < 0)
        return -1;
    listener_set_tls(&k->l, cfg->secret.tls_server);
    k->listening = 1;
    if (cfg->resilience && open_record(k, err, errlen) < 0)
        return -1;
    /* The workers (this process's own one included) connect here. */
    snprintf(k->cfg.control, sizeof k->cfg.control, "%s", k->l.addr);
    unsigned hb = cl_heartbeat_ms(k->cfg.timeout_ms);
    k->last_tick_ns = now_ns(); /* a held-up first tick counts as late too */
    uv_timer_start(&k->tick, on_tick, hb, hb);
    log_info("cluster: coordinator listening on %s; waiting for %u workers", k->l.addr,
             cfg->worker_count);
    return 0;
}

static void close_all(coord_t *k)
{
    uv_close((uv_handle_t *)&k->ckpt_timer, NULL);
    uv_timer_stop(&k->close_timer);
    uv_close((uv_handle_t *)&k->close_timer, NULL);
    uv_close((uv_handle_t *)&k->tick, NULL);
    uv_close((uv_handle_t *)&k->recount, NULL);
    for (unsigned i = 0; i < k->nm; i++)
        if (k->m[i]->out_open)
            outconn_close(&k->m[i]->out.o, NULL);
    if (k->listening)
        listener_close(&k->l, NULL);
}

static void on_close_poll(uv_timer_t *t)
{
    coord_t *k = t->data;
    size_t left = 0;
    for (unsigned i = 0; i < k->nm; i++) {
        member_t *m = k->m[i];
        if (m->out_open && m->out.o.connected) {
            outconn_flush(&m->out.o);
            left += outconn_backlog(&m->out.o);
        }
    }
    if (left == 0 || now_ns() >= k->close_deadline_ns)
        close_all(k);
}

void coord_shutdown(coord_t *k, int quietly)
{
    if (k->closing)
        return;
    k->closing = 1;
    uv_timer_stop(&k->tick);
    uv_timer_stop(&k->ckpt_timer);
    uv_timer_stop(&k->recount);
    for (unsigned i = 0; i < k->nm && !quietly; i++)
        if (k->m[i]->out_open && live(k->m[i]))
            send_empty(k->m[i], CL_BYE);
    k->close_deadline_ns = now_ns() + (uint64_t)CLOSE_WAIT_MS * 1000000u;
    uv_timer_init(k->loop, &k->close_timer);
    k->close_timer.data = k;
    uv_timer_start(&k->close_timer, on_close_poll, 0, CLOSE_POLL_MS);
}

void coord_free(coord_t *k)
{
    if (!k)
        return;
    for (unsigned i = 0; i < k->nm; i++) {
        cl_link_free(&k->m[i]->out);
        free(k->m[i]);
    }
    catalog_close(k->record);
    buf_free(&k->streams);
    while (k->owners) {
        kstream_t *st = k->owners;
        k->owners = st->next;
        free(st);
    }
    free(k);
}
