/* `bettong store`: the persistent-object data service (sproto.h).
 *
 * Threads:
 * - the loop thread (libuv): every socket, HELLO and request parsing, the
 *   per-object queues (sobj.c), answers and their ordering (sconn.c);
 * - --threads Python threads (pyexec.h): requests that run Python (spy.h),
 *   each taking the GIL for its request; a request known to be short runs on
 *   the loop thread itself instead, while those threads are idle
 *   (spy_run_inline): no hand-off, no wake-up of another thread;
 * - the committer (commit.h): LMDB's writer, group commit.
 *
 * Durability and order: a request that changes the store is answered by the
 * committer's done callback, after its batch is on disk. An answer that does
 * not change anything but is about an object with a change not yet on disk
 * (sobj_t.last_seq) is held until that change is (held answers, sorted by
 * sequence number and released as units complete), so no answer shows state
 * that a crash could still lose, and answers about one object leave in request
 * order. */
#ifndef BETTONG_STORE_H
#define BETTONG_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/frame.h"
#include "net/httpd.h"
#include "net/inconn.h"
#include "store/commit.h"
#include "store/meta.h"
#include "store/omap.h"
#include "store/pyexec.h"
#include "store/sdb.h"
#include "store/stmetrics.h"

typedef struct sconn sconn_t;
typedef struct held held_t;

/* One request, from its frame to its answer (sreq.h). */
typedef struct sreq sreq_t;
/* The Python side (spy.h). */
typedef struct spy spy_t;

typedef struct store {
    uv_loop_t loop;
    listener_t tcp;
    int tcp_open;
    frame_spec_t spec;
    sdb_t *db;
    committer_t *cm;
    pyexec_t *px;
    spy_t *spy;
    char secret[256];
    size_t secret_len;
    tls_ctx_t *tls;    /* --tls-cert/--tls-key: the port's TLS; NULL: none */
    meta_t *meta;      /* --metadata: the service's directory; NULL: alone */
    char backend_name[256];
    char address[320]; /* where clients and other backends reach this one */
    char name[300];
    omap_t objs;       /* sobj_t: objects with queued requests or writes in flight */
    uint64_t durable;  /* the last unit whose answer went out (loop's view) */
    held_t *held_head, *held_tail; /* sorted by seq */
    sconn_t *conns;
    uv_signal_t sigint, sigterm;
    uv_timer_t sweep;
    int inline_ok;     /* --inline-us > 0: short requests may run on the loop thread */
    uint64_t spin_ns;  /* --spin-us: poll this long for more requests before sleeping */
    uint64_t frames;   /* requests read so far */
    store_counters_t counters; /* stmetrics.h; kept with or without an endpoint */
    metrics_t *metrics;        /* --metrics-listen; NULL: none */
    httpd_t *httpd;
    int stopping;
    int exit_code;
} store_t;

int cmd_store(int argc, char **argv);

/* Milliseconds on the loop's clock. */
static inline uint64_t store_now_ms(store_t *st) { return uv_now(&st->loop); }

#endif
