/* `bettong pool`: the task pool server. One libuv loop, one thread: it accepts
 * clients and workers (TCP and/or a Unix socket), authenticates them (the
 * mutual handshake of net/auth.h, keyed with the secret),
 * feeds the scheduler (sched.h) with what clients send and turns its decisions
 * into frames (peer.c), and keeps N local worker processes alive (this file).
 *
 * No Python runs here: payloads are opaque bytes that go from a client's
 * socket to a worker's and back. */
#ifndef BETTONG_POOL_H
#define BETTONG_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "net/frame.h"
#include "net/httpd.h"
#include "net/inconn.h"
#include "pool/pmetrics.h"
#include "pool/sched.h"

typedef struct peer peer_t;

typedef struct {
    pid_t pid;          /* 0: not running */
    unsigned index;     /* its name is local-<index> */
    uint64_t started_ms;
    unsigned quick_deaths; /* deaths soon after start in a row: back-off */
    int killed;         /* we killed it (a timeout): not its own fault */
    uint64_t restart_at_ms; /* when not running: when to start it again */
    int forking;        /* asked of the worker template (tmpl.h), no pid yet */
} local_worker_t;

typedef struct pool {
    uv_loop_t loop;
    listener_t tcp, unx;
    int have_tcp, have_unix;
    int tcp_open, unix_open; /* until their close callbacks ran */
    frame_spec_t spec;
    sched_t *sched;

    /* options */
    char secret[256];
    size_t secret_len;
    int exit_with_client;
    pid_t parent;             /* our parent at start (see watch_for_caller) */
    uint64_t started_ms;
    const char *log_level;
    char worker_connect[320]; /* what local workers connect to */
    tls_ctx_t *tls;           /* --tls-cert/--tls-key: the TCP port's TLS; NULL: none */

    /* peers (peer.c) */
    peer_t *peers;
    uint32_t next_peer_id;
    peer_t *first_client;
    int had_client;           /* a client has been accepted (ever) */
    int clients_paused, workers_paused;
    void *cur_block;         /* memory of the DONE frame being handled, if taken */
    /* The memfd of the DONE_FD being handled (pool/shm.h), and its mapping. */
    uv_pipe_t *cur_fd;
    void *cur_map;
    size_t cur_map_len;

    /* local workers */
    local_worker_t *locals;
    unsigned nlocals;
    struct lend *lend;        /* temporary workers for lent slots (pool/lend.h) */
    struct tmpl *tmpl;        /* the worker template (pool/tmpl.h); NULL: none */

    /* --metrics-listen (pmetrics.h); the counters are kept either way */
    pool_counters_t counters;
    metrics_t *metrics; /* NULL: no endpoint */
    httpd_t *httpd;

    uv_signal_t sigint, sigterm, sigchld;
    uv_timer_t housekeeping, timeouts, kill_timer;
    int stopping;
    int exit_code;
    uint64_t clock_base_us;  /* wall clock minus monotonic clock at start */
} pool_t;

int cmd_pool(int argc, char **argv);

/* Microseconds on the pool's clock: monotonic, counted from the Unix epoch as
 * it was at start-up (so times reported to clients read as wall-clock times,
 * and a clock step never fires or delays a timeout). */
uint64_t pool_now_us(const pool_t *p);
static inline uint64_t pool_now_ms(const pool_t *p) { return pool_now_us(p) / 1000; }
/* SIGKILL the process if it is one of our local workers. */
void pool_kill_local(pool_t *p, uint32_t pid);
/* The worker template's answer for local worker `index`: its pid, or -errno
 * (then it is exec'd instead). */
void pool_local_forked(pool_t *p, unsigned index, pid_t pid);
/* Begin an orderly stop (workers stopped, exit with `code`). */
void pool_stop(pool_t *p, int code, const char *why);

#endif
