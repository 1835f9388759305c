#include "store/store.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/addr.h"
#include "net/dashboard.h"
#include "net/bconn.h"
#include "net/guard.h"
#include "py/bridge.h"
#include "store/sconn.h"
#include "store/sobj.h"
#include "store/spy.h"
#include "store/srefs.h"
#include "store/sreply.h"
#include "util/args.h"
#include "util/log.h"

#define PROG "bettong store"
#define DEFAULT_LISTEN "127.0.0.1:7450"
#define SWEEP_MS 1000
#define AUTH_DEADLINE_MS 10000

typedef struct {
    const char *dir;
    const char *listen;
    const char *secret, *secret_file;
    long threads;
    long cache;
    long inline_us;
    long spin_us;
    const char *log_level;
    inconn_flags_t limits;
    guard_tls_args_t tls;
    const char *name, *metadata, *advertise;
    const char *metrics_addr; /* --metrics-listen; NULL: none */
} store_args_t;

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong store --dir DIR [options]\n"
"\n"
"Runs the persistent-object data service: clients (the `bettong` Python package)\n"
"store objects in it and run their methods where the master copy lives. Prints\n"
"one line, '" PROG ": listening on HOST:PORT', once it accepts connections.\n"
"\n"
"  --dir DIR             where the objects are kept (LMDB). A new or empty\n"
"                        directory is initialized; a directory holding anything\n"
"                        else is refused, never overwritten\n"
"  --listen HOST:PORT    address (default " DEFAULT_LISTEN "; port 0 picks one).\n"
"                        A non-loopback address needs a secret\n"
"  --secret-file PATH    the shared secret: every client proves it knows it, and\n"
"                        the store proves it to them; it is never sent. The\n"
"                        first line of PATH (mode 0600 or 0400). Default:\n"
"                        $BETTONG_SECRET\n"
"  --secret S            the same on the command line (works, but warns: every\n"
"                        user of the machine can read it with ps)\n"
"  --name NAME           this backend's name (default: backend- and the start of\n"
"                        its id, made when DIR was initialized)\n"
"  --metadata redis://HOST:PORT[/DB] | unix:PATH\n"
"                        join the service of several backends whose directory\n"
"                        (backends, where each object lives, aliases) is kept\n"
"                        in this Redis; each backend keeps its own objects here\n"
"                        in DIR. Without it the store is alone\n"
"  --advertise HOST:PORT the address other backends and clients reach this one\n"
"                        at (default: the --listen address; needed when that is\n"
"                        a wildcard such as 0.0.0.0)\n"
"  --threads N           Python threads running requests (default 2)\n"
"  --cache N             live objects kept in memory (default 100000); idle ones\n"
"                        past that are dropped and reloaded on demand\n"
"  --inline-us N         a request whose recent runs each took at most N us\n"
"                        (default 200) runs on the network thread itself when\n"
"                        no Python thread is busy: no hand-off between threads;\n"
"                        one that then runs longer goes back to the Python\n"
"                        threads for good. 0: every request runs on them\n"
"  --spin-us N           after the last request, poll for the next one for N us\n"
"                        (default 50; yielding the CPU to anything else that\n"
"                        can run) before the network thread sleeps: no wake-up\n"
"                        of a sleeping thread (and CPU) per request when they\n"
"                        come back to back; costs up to N us of CPU after each\n"
"                        burst. 0: sleep at once\n"
GUARD_TLS_USAGE
INCONN_FLAGS_USAGE
"  --metrics-listen H:P  serve Prometheus metrics at http://H:P/metrics (a bare\n"
"                        port or :P means 127.0.0.1; port 0: one the kernel\n"
"                        picks, logged as \"metrics listening on H:P\")\n"
"  --log-level LEVEL     debug, info (default), warn, error\n"
"  -h, --help            this text\n"
"\n"
"Every acknowledged change is on disk before its answer is sent. SIGINT or\n"
"SIGTERM stops the store (requests in progress finish) and exits 0.\n");
}



static int parse_args(int argc, char **argv, store_args_t *a)
{
    *a = (store_args_t){.listen = DEFAULT_LISTEN, .threads = 2, .cache = 100000,
                        .inline_us = 200, .spin_us = 50};
    for (int i = 1; i < argc; i++) {
        int missing = 0;
        const char *v;
        int lim;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if ((lim = inconn_flag(&a->limits, argc, argv, &i, PROG)) != 0 ||
                   (lim = guard_tls_flag(&a->tls, argc, argv, &i, PROG)) != 0) {
            if (lim < 0)
                return -1;
        } else if ((v = args_flag_value(argc, argv, &i, "--dir", &missing))) {
            a->dir = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--name", &missing))) {
            a->name = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--metadata", &missing))) {
            a->metadata = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--advertise", &missing))) {
            a->advertise = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--metrics-listen", &missing))) {
            a->metrics_addr = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--listen", &missing))) {
            a->listen = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--secret", &missing))) {
            a->secret = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--secret-file", &missing))) {
            a->secret_file = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--threads", &missing))) {
            if (args_parse_long(v, 1, 256, &a->threads) < 0) {
                fprintf(stderr, PROG ": --threads takes a number from 1 to 256\n");
                return -1;
            }
        } else if ((v = args_flag_value(argc, argv, &i, "--cache", &missing))) {
            if (args_parse_long(v, 1, 1000000000L, &a->cache) < 0) {
                fprintf(stderr, PROG ": --cache takes a number of at least 1\n");
                return -1;
            }
        } else if ((v = args_flag_value(argc, argv, &i, "--inline-us", &missing))) {
            if (args_parse_long(v, 0, 1000000, &a->inline_us) < 0) {
                fprintf(stderr, PROG ": --inline-us takes a number from 0 to 1000000\n");
                return -1;
            }
        } else if ((v = args_flag_value(argc, argv, &i, "--spin-us", &missing))) {
            if (args_parse_long(v, 0, 100000, &a->spin_us) < 0) {
                fprintf(stderr, PROG ": --spin-us takes a number from 0 to 100000\n");
                return -1;
            }
        } else if ((v = args_flag_value(argc, argv, &i, "--log-level", &missing))) {
            if (log_parse_level(v) < 0) {
                fprintf(stderr, PROG ": unknown log level '%s'\n", v);
                return -1;
            }
            a->log_level = v;
        } else {
            fprintf(stderr, missing ? PROG ": option '%s' needs a value\n"
                                    : PROG ": unknown argument '%s'\n", argv[i]);
            return -1;
        }
    }
    if (!a->dir) {
        fprintf(stderr, PROG ": give --dir DIR\n");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ start-up */

static int start_python(store_t *st, const store_args_t *a)
{
    char err[1024];
    char *pargv[] = {"bettong-store", NULL};
    if (py_start(1, pargv, NULL, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    py_gil_enter();
    /* In a service a call may reach another backend through this one's own
     * port (locating, classes): never on the loop thread, which would wait on
     * itself. */
    unsigned inline_us = st->meta ? 0 : (unsigned)a->inline_us;
    st->spy = spy_init(st->db, st->cm, (size_t)a->cache, inline_us, st->meta != NULL, err,
                       sizeof err);
    py_gil_leave();
    if (!st->spy) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    return 0;
}

/* The address clients and other backends reach this one at ("tls:" first
 * under TLS). -1 (printed) when it cannot be known. */
static int advertised(store_t *st, const store_args_t *a, char *out, size_t cap)
{
    const char *addr = a->advertise ? a->advertise : st->tcp.addr;
    if (!a->advertise && (strncmp(addr, "0.0.0.0:", 8) == 0 || strncmp(addr, "[::]:", 5) == 0)) {
        fprintf(stderr, PROG ": listening on %s: give --advertise HOST:PORT, the address other "
                "backends and clients reach this one at\n", addr);
        return -1;
    }
    snprintf(out, cap, "%s%s", st->tls && !bconn_tls_address(addr) ? "tls:" : "", addr);
    return 0;
}

/* Join the service (--metadata), or stand alone; either way the committer
 * answers BACKENDS with what it is told here. Before the loop runs: no
 * request can come in before this is done. */
static int start_directory(store_t *st, const store_args_t *a)
{
    char err[1024];
    if (advertised(st, a, st->address, sizeof st->address) < 0)
        return -1;
    const char *id = sdb_backend_id(st->db);
    if (a->name)
        snprintf(st->backend_name, sizeof st->backend_name, "%s", a->name);
    else
        snprintf(st->backend_name, sizeof st->backend_name, "backend-%.8s", id);
    if (a->metadata &&
        !(st->meta = meta_open(a->metadata, st->db, st->backend_name, st->address, err,
                               sizeof err))) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    committer_set_directory(st->cm, st->meta, st->backend_name, st->address);
    log_info("backend '%s' (%s) at %s%s", st->backend_name, id, st->address,
             st->meta ? ", in a service of several backends" : "");
    return 0;
}

/* What the store's Python code reads: which backend it runs in, and (in a
 * service) how to reach the others, with this store's own secret. Before
 * Python starts. */
static void export_environment(store_t *st)
{
    setenv("BETTONG_STORE_BACKEND_ID", sdb_backend_id(st->db), 1);
    setenv("BETTONG_STORE_BACKEND_NAME", st->backend_name, 1);
    if (!st->meta)
        return;
    setenv("BETTONG_STORE_SERVICE", "1", 1);
    setenv("BETTONG_STORE", st->address, 1);
    if (st->secret_len)
        setenv("BETTONG_STORE_SECRET", st->secret, 1);
    else
        unsetenv("BETTONG_STORE_SECRET");
}

static void on_sweep(uv_timer_t *t) { sconn_sweep(t->data); }

static void close_noop(uv_handle_t *h) { (void)h; }

/* The listener and every connection are closed: let the threads finish what
 * they run, commit what is queued, and close the remaining handles. */
static void on_listener_closed(listener_t *l)
{
    store_t *st = l->owner;
    st->tcp_open = 0;
    pyexec_stop(st->px);
    committer_stop(st->cm);
    sconn_drop_held(st);
    sobj_drop_all(st);
    uv_close((uv_handle_t *)&st->sigint, close_noop);
    uv_close((uv_handle_t *)&st->sigterm, close_noop);
    uv_close((uv_handle_t *)&st->sweep, close_noop);
}

static void store_stop(store_t *st, const char *why)
{
    if (st->stopping)
        return;
    st->stopping = 1;
    log_info("stopping (%s)", why);
    uv_timer_stop(&st->sweep);
    if (st->httpd)
        httpd_close(st->httpd);
    st->httpd = NULL;
    listener_close(&st->tcp, on_listener_closed);
}

static void on_signal(uv_signal_t *h, int signum) { store_stop(h->data, strsignal(signum)); }

static void start_handles(store_t *st)
{
    uv_signal_init(&st->loop, &st->sigint);
    uv_signal_init(&st->loop, &st->sigterm);
    st->sigint.data = st->sigterm.data = st;
    uv_signal_start(&st->sigint, on_signal, SIGINT);
    uv_signal_start(&st->sigterm, on_signal, SIGTERM);
    uv_timer_init(&st->loop, &st->sweep);
    st->sweep.data = st;
    uv_timer_start(&st->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
}

/* Storage, committer, Python, threads, listener: 0 or -1 (message printed). */
/* After every job on a Python thread (GIL held): the cache's bound. */
static void trim_after_job(void *spy) { spy_trim(spy); }

static int start(store_t *st, const store_args_t *a)
{
    char err[1024];
    struct sockaddr_storage sa;
    if (guard_service_listen(PROG, a->listen, st->secret_len > 0, &sa) < 0)
        return -1;
    st->db = sdb_open(a->dir, err, sizeof err);
    if (!st->db) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    log_info("%s store in %s", sdb_was_created(st->db) ? "initialized a new" : "opened the",
             a->dir);
    if (srefs_ensure(st->db, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    snprintf(st->name, sizeof st->name, "bettong store %s", a->dir);
    st->cm = committer_start(&st->loop, st->db, sobj_unit_done, st, err, sizeof err);
    if (!st->cm) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    /* Bound first (its address is the backend's), though nothing is accepted
     * before the loop runs. */
    st->spec = (frame_spec_t){.header_len = 4, .int_size = 4, .big_endian = 1,
                              .max_payload = STORE_MAX_FRAME};
    inconn_apply_flags(&a->limits, STORE_MAX_FRAME + (1u << 20));
    if (listener_start(&st->tcp, &st->loop, (struct sockaddr *)&sa, &st->spec, &sconn_handler,
                       st, "store", err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    st->tcp_open = 1;
    /* sconn.c has its own HELLO deadline; the listener's also lets silent
     * unauthenticated connections give way at the cap. */
    listener_require_auth(&st->tcp, AUTH_DEADLINE_MS);
    if (st->tls)
        listener_set_tls(&st->tcp, st->tls);
    if (start_directory(st, a) < 0)
        return -1;
    export_environment(st);
    if (start_python(st, a) < 0)
        return -1;
    st->px = pyexec_start(&st->loop, (unsigned)a->threads, err, sizeof err);
    if (!st->px) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    pyexec_set_after(st->px, trim_after_job, st->spy);
    st->inline_ok = a->inline_us > 0;
    st->spin_ns = (uint64_t)a->spin_us * 1000;
    return 0;
}

/* --metrics-listen: the registry and its endpoint, on the store's loop (where
 * sconn.c counts; see stmetrics.h for the other threads' figures). */
static int start_metrics(store_t *st, const char *addr)
{
    if (!addr)
        return 0;
    char err[600];
    st->metrics = metrics_new();
    if (!st->metrics || stmetrics_register(st->metrics, st) < 0) {
        fprintf(stderr, PROG ": cannot register the store's metrics (out of memory)\n");
        return -1;
    }
    st->httpd = httpd_start(&st->loop, addr, "metrics", err, sizeof err);
    if (!st->httpd) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    if (dashboard_serve_metrics(st->httpd, st->metrics) < 0) {
        log_error("metrics: too many routes on the endpoint");
        return -1;
    }
    log_info("metrics listening on %s", httpd_addr(st->httpd));
    log_info("dashboard at http://%s/", httpd_addr(st->httpd));
    return 0;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* After a failed start: stop what did start. */
static void unwind(store_t *st)
{
    if (st->px)
        pyexec_stop(st->px);
    if (st->cm)
        committer_stop(st->cm);
    uv_walk(&st->loop, close_walk_cb, NULL);
    uv_run(&st->loop, UV_RUN_DEFAULT);
}

static void finish(store_t *st)
{
    if (Py_IsInitialized()) {
        py_gil_enter();
        if (st->spy)
            spy_fini(st->spy);
        st->spy = NULL;
        py_gil_leave();
        py_stop();
    }
    pyexec_free(st->px);
    metrics_free(st->metrics);
    committer_free(st->cm);
    omap_free(&st->objs);
    meta_close(st->meta);
    sdb_close(st->db);
    if (uv_loop_close(&st->loop) != 0)
        log_debug("event loop closed with handles still open");
    tls_ctx_free(st->tls);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The loop; with --spin-us, polled (without sleeping, yielding the CPU between
 * polls) until no request came for spin_ns, then run until something happens. */
static void run_loop(store_t *st)
{
    if (!st->spin_ns) {
        uv_run(&st->loop, UV_RUN_DEFAULT);
        return;
    }
    uint64_t seen = st->frames, quiet_since = mono_ns();
    for (;;) {
        if (!uv_run(&st->loop, UV_RUN_NOWAIT))
            return;
        uint64_t now = mono_ns();
        if (st->frames != seen) {
            seen = st->frames;
            quiet_since = now;
        } else if (now - quiet_since >= st->spin_ns) {
            if (!uv_run(&st->loop, UV_RUN_ONCE))
                return;
            quiet_since = mono_ns();
            continue;
        }
        sched_yield();
    }
}

int cmd_store(int argc, char **argv)
{
    store_args_t a;
    if (parse_args(argc, argv, &a) < 0) {
        fprintf(stderr, "(bettong store --help for the options)\n");
        return 2;
    }
    log_set_role("store");
    if (a.log_level)
        log_set_level((log_level)log_parse_level(a.log_level));
    signal(SIGPIPE, SIG_IGN);

    static store_t store;
    store_t *st = &store;
    omap_init(&st->objs);
    if (guard_service_secret(PROG, a.secret, a.secret_file, st->secret, sizeof st->secret,
                             &st->secret_len) < 0 ||
        guard_service_tls(PROG, &a.tls, &st->tls) < 0 || uv_loop_init(&st->loop) < 0)
        return 2;
    if (start(st, &a) < 0 || start_metrics(st, a.metrics_addr) < 0) {
        unwind(st);
        finish(st);
        return 2;
    }
    start_handles(st);
    /* The address as clients write it ("tls:" first under TLS). */
    printf(PROG ": listening on %s%s\n", st->tls ? "tls:" : "", st->tcp.addr);
    fflush(stdout);
    log_info("%ld Python thread(s), cache of %ld objects, requests under %ld us inline, "
             "polling %ld us before sleeping%s", a.threads, a.cache, st->meta ? 0 : a.inline_us,
             a.spin_us,
             st->secret_len ? ", clients need the secret" : "");
    run_loop(st);
    finish(st);
    return st->exit_code;
}
