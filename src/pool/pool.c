#include "pool/pool.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/addr.h"
#include "net/auth.h"
#include "net/dashboard.h"
#include "net/guard.h"
#include "pool/lend.h"
#include "pool/peer.h"
#include "pool/proto.h"
#include "pool/spawn.h"
#include "pool/tmpl.h"
#include "util/args.h"
#include "util/log.h"

#define PROG "bettong pool"
#ifndef BETTONG_PYTHON
#define BETTONG_PYTHON "python3"
#endif
#define HOUSEKEEPING_MS 200
/* After SIGTERM, local workers get this long before SIGKILL. */
#define STOP_GRACE_MS 2000
/* A local worker that dies sooner than this after its start counts as a quick
 * death: restarts back off (100 ms doubling, at most RESTART_MAX_MS) so a
 * worker that cannot start does not spin. */
#define QUICK_DEATH_MS 1000
#define RESTART_MAX_MS 5000
/* --exit-with-client: how long to wait for that first client. */
#define FIRST_CLIENT_WAIT_MS 120000

typedef struct {
    const char *listen;
    const char *unix_path;
    long workers; /* -1: one per CPU */
    const char *secret, *secret_file;
    int exit_with_client;
    const char *log_level;
    unsigned ahead;
    long near_wait_ms;
    long max_lent;
    inconn_flags_t limits;
    guard_tls_args_t tls;
    const char *metrics_addr; /* --metrics-listen; NULL: none */
    long template_pid;        /* --template-pid; 0: none */
} pool_args_t;

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong pool (--listen HOST:PORT | --unix PATH) [options]\n"
"\n"
"Runs a task pool: clients (the `bettong` Python package) send functions and\n"
"calls, workers run them. Prints one line, '" PROG ": listening on ADDR', once\n"
"it accepts connections (ADDR is unix:PATH, or HOST:PORT with the real port when\n"
"port 0 was asked).\n"
"\n"
"  --listen HOST:PORT    listen on TCP (a bare PORT means 127.0.0.1:PORT). A\n"
"                        non-loopback address needs a secret.\n"
"  --unix PATH           listen on a Unix-domain socket (mode 0600; put it in a\n"
"                        private directory). Both --listen and --unix may be given.\n"
"  --workers N           local worker processes to run and keep running (default:\n"
"                        one per CPU); 0 for a scheduler that waits for\n"
"                        `bettong worker --join` processes\n"
"  --secret-file PATH    the shared secret: every client and worker proves it\n"
"                        knows it, and the pool proves it to them; it is never\n"
"                        sent. The first line of PATH (mode 0600 or 0400).\n"
"                        Default: $BETTONG_SECRET. Local workers get it through\n"
"                        their environment\n"
"  --secret S            the same on the command line (works, but warns: every\n"
"                        user of the machine can read it with ps)\n"
"  --exit-with-client    exit (stopping the local workers) when the first client\n"
"                        to connect goes away; also when the process that started\n"
"                        the pool dies before any client connected, or none\n"
"                        connects within 120 s\n"
"  --ahead N             most tasks sent ahead to one worker (default 64); the\n"
"                        pool sends fewer when tasks are slow\n"
"  --max-lent N          most temporary workers started for calls that wait on\n"
"                        their own sub-calls (nested executors; default 16; 0:\n"
"                        none). See the user guide, \"Nested executors\"\n"
"  --near-wait MS        how long a call that prefers the workers near a store\n"
"                        backend (bettong worker --near-store) waits for one of\n"
"                        them to have room before another worker may take it\n"
"                        (default 20; 0: not at all). A call nobody is near\n"
"                        never waits\n"
GUARD_TLS_USAGE
INCONN_FLAGS_USAGE
"  --metrics-listen H:P  serve Prometheus metrics at http://H:P/metrics (a bare\n"
"                        port or :P means 127.0.0.1; port 0: one the kernel\n"
"                        picks, logged as \"metrics listening on H:P\")\n"
"  --log-level LEVEL     debug, info (default), warn, error\n"
"  --template-pid PID    (for the bettong package) the worker template is\n"
"                        started already: our child PID, its control socket on\n"
"                        fd 3\n"
"  -h, --help            this text\n"
"\n"
"SIGINT or SIGTERM stops the workers (SIGTERM, SIGKILL after 2 s) and exits 0.\n"
"\n"
"Local workers run in the configured python3 (" BETTONG_PYTHON ") through the\n"
"bettong._wproc extension: Python code runs as fast as in a plain python3 process.\n"
"BETTONG_WORKER_HOST=embedded runs them in this binary's embedded interpreter\n"
"instead (`bettong worker --connect`; slower for CPU-bound Python); python is the\n"
"default.\n");
}



static int parse_args(int argc, char **argv, pool_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->workers = -1;
    a->ahead = 64;
    a->near_wait_ms = 20;
    a->max_lent = LEND_MAX_DEFAULT;
    for (int i = 1; i < argc; i++) {
        int missing = 0;
        const char *v;
        long n;
        int lim;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if ((lim = inconn_flag(&a->limits, argc, argv, &i, PROG)) != 0 ||
                   (lim = guard_tls_flag(&a->tls, argc, argv, &i, PROG)) != 0) {
            if (lim < 0)
                return -1;
        } else if (strcmp(argv[i], "--exit-with-client") == 0) {
            a->exit_with_client = 1;
        } else if ((v = args_flag_value(argc, argv, &i, "--listen", &missing))) {
            a->listen = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--unix", &missing))) {
            a->unix_path = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--metrics-listen", &missing))) {
            a->metrics_addr = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--secret", &missing))) {
            a->secret = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--secret-file", &missing))) {
            a->secret_file = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--log-level", &missing))) {
            if (log_parse_level(v) < 0) {
                fprintf(stderr, PROG ": unknown log level '%s'\n", v);
                return -1;
            }
            a->log_level = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--workers", &missing))) {
            if (args_parse_long(v, 0, 4096, &a->workers) < 0) {
                fprintf(stderr, PROG ": --workers takes a number from 0 to 4096\n");
                return -1;
            }
        } else if ((v = args_flag_value(argc, argv, &i, "--max-lent", &missing))) {
            if (args_parse_long(v, 0, 4096, &a->max_lent) < 0) {
                fprintf(stderr, PROG ": --max-lent takes a number from 0 to 4096\n");
                return -1;
            }
        } else if ((v = args_flag_value(argc, argv, &i, "--ahead", &missing))) {
            if (args_parse_long(v, 0, 100000, &n) < 0 || n < 1) {
                fprintf(stderr, PROG ": --ahead takes a number of at least 1\n");
                return -1;
            }
            a->ahead = (unsigned)n;
        } else if ((v = args_flag_value(argc, argv, &i, "--template-pid", &missing))) {
            if (args_parse_long(v, 1, 0x7fffffff, &a->template_pid) < 0) {
                fprintf(stderr, PROG ": --template-pid takes a process id\n");
                return -1;
            }
        } else if ((v = args_flag_value(argc, argv, &i, "--near-wait", &missing))) {
            if (args_parse_long(v, 0, 3600000, &a->near_wait_ms) < 0) {
                fprintf(stderr, PROG ": --near-wait takes milliseconds, from 0 to 3600000\n");
                return -1;
            }
        } else {
            fprintf(stderr, missing ? PROG ": option '%s' needs a value\n"
                                    : PROG ": unknown argument '%s'\n", argv[i]);
            return -1;
        }
    }
    if (!a->listen && !a->unix_path) {
        fprintf(stderr, PROG ": give --listen HOST:PORT or --unix PATH\n");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ clock */

uint64_t pool_now_us(const pool_t *p) { return uv_hrtime() / 1000 + p->clock_base_us; }

/* ------------------------------------------------------------ local workers */

/* Exec a local worker (when the worker template cannot fork it). */
static void exec_local(pool_t *p, local_worker_t *lw)
{
    char name[32], err[256];
    snprintf(name, sizeof name, "local-%u", lw->index);
    spawn_args_t a = {.connect = p->worker_connect,
                      .name = name,
                      .secret = p->secret_len ? p->secret : NULL,
                      .log_level = p->log_level};
    lw->restart_at_ms = 0;
    lw->started_ms = pool_now_ms(p);
    lw->pid = spawn_worker(&a, err, sizeof err);
    if (lw->pid < 0) {
        lw->pid = 0;
        lw->quick_deaths++;
        lw->restart_at_ms = lw->started_ms + RESTART_MAX_MS;
        log_error("cannot start local worker %s: %s (trying again in %d s)", name, err,
                  RESTART_MAX_MS / 1000);
        return;
    }
    log_debug("started local worker %s (pid %d)", name, (int)lw->pid);
}

/* Start a local worker: forked by the worker template (its pid comes in
 * pool_local_forked), else exec'd. */
static void start_local(pool_t *p, local_worker_t *lw)
{
    char name[32];
    snprintf(name, sizeof name, "local-%u", lw->index);
    lw->restart_at_ms = 0;
    lw->started_ms = pool_now_ms(p);
    if (tmpl_request(p, lw->index, name) == 0) {
        lw->forking = 1;
        return;
    }
    exec_local(p, lw);
}

void pool_local_forked(pool_t *p, unsigned index, pid_t pid)
{
    if (index < 1 || index > p->nlocals || !p->locals[index - 1].forking) {
        log_warn("the worker template answered for no worker asked (local-%u)", index);
        return;
    }
    local_worker_t *lw = &p->locals[index - 1];
    lw->forking = 0;
    if (pid > 0) {
        lw->pid = pid;
        log_debug("started local worker local-%u (pid %d, forked)", index, (int)pid);
        if (p->stopping)
            kill(pid, SIGKILL);
        return;
    }
    if (p->stopping)
        return;
    if (pid != -ECHILD)
        log_warn("the worker template could not fork local-%u: %s", index, strerror(-pid));
    exec_local(p, lw);
}

static local_worker_t *find_local(pool_t *p, pid_t pid)
{
    for (unsigned i = 0; i < p->nlocals; i++)
        if (p->locals[i].pid == pid && pid > 0)
            return &p->locals[i];
    return NULL;
}

void pool_kill_local(pool_t *p, uint32_t pid)
{
    tmpl_drain(p); /* a forked worker may have joined before its pid was read */
    local_worker_t *lw = find_local(p, (pid_t)pid);
    if (lw) {
        lw->killed = 1;
        kill(lw->pid, SIGKILL);
    }
}

static unsigned live_locals(const pool_t *p)
{
    unsigned n = 0;
    for (unsigned i = 0; i < p->nlocals; i++)
        n += p->locals[i].pid > 0 || p->locals[i].forking;
    return n;
}

/* When it dies: start it again, at once unless it keeps dying young. */
static void schedule_restart(pool_t *p, local_worker_t *lw, int status)
{
    char how[96];
    spawn_describe_status(status, how, sizeof how);
    uint64_t now = pool_now_ms(p);
    if (now - lw->started_ms < QUICK_DEATH_MS && !lw->killed)
        lw->quick_deaths++;
    else
        lw->quick_deaths = 0;
    lw->killed = 0;
    uint64_t delay = 0;
    if (lw->quick_deaths) {
        unsigned shift = lw->quick_deaths > 8 ? 8 : lw->quick_deaths - 1;
        delay = 100ull << shift;
        if (delay > RESTART_MAX_MS)
            delay = RESTART_MAX_MS;
    }
    log_warn("local worker local-%u (pid %d) %s; starting it again%s", lw->index, (int)lw->pid,
             how, delay ? " after a pause (it died soon after starting)" : "");
    lw->pid = 0;
    lw->restart_at_ms = now + delay;
    if (delay == 0)
        start_local(p, lw);
}

static void maybe_finish(pool_t *p);

static void on_sigchld(uv_signal_t *h, int signum)
{
    pool_t *p = h->data;
    int status;
    pid_t pid;
    /* A forked worker's pid is in the template's socket before it can be
     * reaped (tmpl.h): read it first. */
    tmpl_drain(p);
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (tmpl_reaped(p, pid, status))
            continue;
        local_worker_t *lw = find_local(p, pid);
        if (!lw) {
            lend_reaped(p, pid); /* a temporary worker (pool/lend.h) is not restarted */
            continue;
        }
        if (p->stopping) {
            lw->pid = 0;
            continue;
        }
        schedule_restart(p, lw, status);
    }
    if (p->stopping)
        maybe_finish(p);
}

/* --exit-with-client: the caller that started us may die before it connects
 * (then no connection will ever close to tell us). Stop if our parent changes
 * or no client comes in time. */
static void watch_for_caller(pool_t *p, uint64_t now)
{
    if (!p->exit_with_client || p->had_client || p->stopping)
        return;
    if (getppid() != p->parent)
        pool_stop(p, 0, "the process that started the pool is gone (--exit-with-client)");
    else if (now - p->started_ms > FIRST_CLIENT_WAIT_MS)
        pool_stop(p, 1, "no client connected within 120 s (--exit-with-client)");
}

static void on_housekeeping(uv_timer_t *t)
{
    pool_t *p = t->data;
    uint64_t now = pool_now_ms(p);
    watch_for_caller(p, now);
    if (p->stopping)
        return;
    for (unsigned i = 0; i < p->nlocals; i++) {
        local_worker_t *lw = &p->locals[i];
        if (lw->pid == 0 && lw->restart_at_ms && now >= lw->restart_at_ms)
            start_local(p, lw);
    }
    peer_sweep(p);
    lend_adjust(p); /* temporary workers still busy when their lending ended */
}

/* ------------------------------------------------------------ stop */

static void close_noop(uv_handle_t *h) { (void)h; }

static void maybe_finish(pool_t *p)
{
    if (!p->stopping || p->tcp_open || p->unix_open || live_locals(p) > 0 || tmpl_alive(p))
        return;
    if (uv_is_closing((uv_handle_t *)&p->sigchld))
        return;
    uv_close((uv_handle_t *)&p->sigint, close_noop);
    uv_close((uv_handle_t *)&p->sigterm, close_noop);
    uv_close((uv_handle_t *)&p->sigchld, close_noop);
    uv_close((uv_handle_t *)&p->housekeeping, close_noop);
    uv_close((uv_handle_t *)&p->timeouts, close_noop);
    uv_close((uv_handle_t *)&p->kill_timer, close_noop);
}

static void on_listener_closed(listener_t *l)
{
    pool_t *p = l->owner;
    if (l == &p->tcp)
        p->tcp_open = 0;
    else
        p->unix_open = 0;
    maybe_finish(p);
}

static void kill_locals(pool_t *p, int sig)
{
    for (unsigned i = 0; i < p->nlocals; i++)
        if (p->locals[i].pid > 0)
            kill(p->locals[i].pid, sig);
}

static void on_kill_timer(uv_timer_t *t)
{
    pool_t *p = t->data;
    if (live_locals(p))
        log_warn("%u local worker(s) still running %d s after SIGTERM: SIGKILL",
                 live_locals(p), STOP_GRACE_MS / 1000);
    kill_locals(p, SIGKILL);
    tmpl_stop(p, SIGKILL);
}

void pool_stop(pool_t *p, int code, const char *why)
{
    if (p->stopping)
        return;
    p->stopping = 1;
    p->exit_code = code;
    log_info("stopping (%s)", why);
    uv_timer_stop(&p->housekeeping);
    uv_timer_stop(&p->timeouts);
    /* The local workers first: the template's replies drained (tmpl_stop)
     * so that a worker forked a moment ago is known and stopped too, then
     * every one, before their connections close (a worker still in its
     * handshake would otherwise log the closed connection as an error). */
    tmpl_stop(p, SIGTERM);
    kill_locals(p, SIGTERM);
    if (p->httpd)
        httpd_close(p->httpd);
    p->httpd = NULL;
    if (p->tcp_open)
        listener_close(&p->tcp, on_listener_closed);
    if (p->unix_open)
        listener_close(&p->unx, on_listener_closed);
    uv_timer_start(&p->kill_timer, on_kill_timer, STOP_GRACE_MS, 0);
    maybe_finish(p);
}

static void on_signal(uv_signal_t *h, int signum)
{
    pool_t *p = h->data;
    if (p->stopping) {
        kill_locals(p, SIGKILL);
        tmpl_stop(p, SIGKILL);
        return;
    }
    pool_stop(p, 0, strsignal(signum));
}

/* ------------------------------------------------------------ start-up */

/* What local workers connect to: the Unix socket if there is one, else the TCP
 * address (a wildcard address reached through loopback). */
static void choose_worker_connect(pool_t *p)
{
    if (p->have_unix) {
        snprintf(p->worker_connect, sizeof p->worker_connect, "%s", p->unx.addr);
        return;
    }
    const char *addr = p->tcp.addr;
    const char *port = strrchr(addr, ':');
    const char *tls = p->tls ? "tls:" : "";
    if (strncmp(addr, "0.0.0.0:", 8) == 0)
        snprintf(p->worker_connect, sizeof p->worker_connect, "%s127.0.0.1%s", tls, port);
    else if (strncmp(addr, "[::]:", 5) == 0)
        snprintf(p->worker_connect, sizeof p->worker_connect, "%s[::1]%s", tls, port);
    else
        snprintf(p->worker_connect, sizeof p->worker_connect, "%s%s", tls, addr);
}

/* The pool's own HELLO deadline is in peer.c; the listener's also lets silent
 * unauthenticated connections give way at the cap. */
#define AUTH_DEADLINE_MS 10000

static int start_listeners(pool_t *p, const pool_args_t *a)
{
    inconn_apply_flags(&a->limits, PROTO_MAX_FRAME + (1u << 20));
    char err[512];
    if (a->listen) {
        struct sockaddr_storage sa;
        if (guard_service_listen(PROG, a->listen, p->secret_len > 0, &sa) < 0)
            return -1;
        if (listener_start(&p->tcp, &p->loop, (struct sockaddr *)&sa, &p->spec, &peer_handler,
                           p, "listener", err, sizeof err) < 0) {
            fprintf(stderr, PROG ": %s\n", err);
            return -1;
        }
        p->have_tcp = p->tcp_open = 1;
        listener_require_auth(&p->tcp, AUTH_DEADLINE_MS);
        if (p->tls)
            listener_set_tls(&p->tcp, p->tls);
    }
    if (a->unix_path) {
        if (listener_start_unix(&p->unx, &p->loop, a->unix_path, &p->spec, &peer_handler, p,
                                "listener", err, sizeof err) < 0) {
            fprintf(stderr, PROG ": %s\n", err);
            return -1;
        }
        listener_pass_fds(&p->unx); /* large payloads as memfds (pool/shm.h) */
        p->have_unix = p->unix_open = 1;
        listener_require_auth(&p->unx, AUTH_DEADLINE_MS);
    }
    return 0;
}

/* The TCP address as clients write it ("tls:" first under TLS). */
static void announce(pool_t *p)
{
    const char *tls = p->tls ? "tls:" : "";
    if (p->have_unix && p->have_tcp)
        printf(PROG ": listening on %s and %s%s\n", p->unx.addr, tls, p->tcp.addr);
    else if (p->have_unix)
        printf(PROG ": listening on %s\n", p->unx.addr);
    else
        printf(PROG ": listening on %s%s\n", tls, p->tcp.addr);
    fflush(stdout);
}

static void start_handles(pool_t *p)
{
    uv_signal_init(&p->loop, &p->sigint);
    uv_signal_init(&p->loop, &p->sigterm);
    uv_signal_init(&p->loop, &p->sigchld);
    p->sigint.data = p->sigterm.data = p->sigchld.data = p;
    uv_signal_start(&p->sigint, on_signal, SIGINT);
    uv_signal_start(&p->sigterm, on_signal, SIGTERM);
    uv_signal_start(&p->sigchld, on_sigchld, SIGCHLD);
    uv_timer_init(&p->loop, &p->housekeeping);
    uv_timer_init(&p->loop, &p->timeouts);
    uv_timer_init(&p->loop, &p->kill_timer);
    p->housekeeping.data = p->timeouts.data = p->kill_timer.data = p;
    uv_timer_start(&p->housekeeping, on_housekeeping, HOUSEKEEPING_MS, HOUSEKEEPING_MS);
}

static int start_locals(pool_t *p, long n, pid_t template_pid)
{
    if (n == 0) {
        if (template_pid)
            close(TMPL_FD); /* the template exits when it reads EOF */
        return 0;
    }
    p->locals = calloc((size_t)n, sizeof *p->locals);
    if (!p->locals) {
        log_error("out of memory");
        return -1;
    }
    p->nlocals = (unsigned)n;
    if (template_pid)
        tmpl_adopt(p, TMPL_FD, template_pid); /* else they are exec'd */
    else
        tmpl_start(p); /* likewise */
    for (unsigned i = 0; i < p->nlocals; i++) {
        p->locals[i].index = i + 1;
        start_local(p, &p->locals[i]);
    }
    log_info("%u local worker(s) connecting to %s", p->nlocals, p->worker_connect);
    return 0;
}

/* --metrics-listen: the registry and its endpoint, on the pool's loop (the
 * counters are read there, where peer.c counts them). Returns 0 or -1. */
static int start_metrics(pool_t *p, const char *addr)
{
    if (!addr)
        return 0;
    char err[600];
    p->metrics = metrics_new();
    if (!p->metrics || pmetrics_register(p->metrics, p) < 0) {
        log_error("metrics: cannot register the pool's metrics (out of memory)");
        return -1;
    }
    p->httpd = httpd_start(&p->loop, addr, "metrics", err, sizeof err);
    if (!p->httpd) {
        fprintf(stderr, PROG ": %s\n", err);
        return -1;
    }
    if (dashboard_serve_metrics(p->httpd, p->metrics) < 0) {
        log_error("metrics: too many routes on the endpoint");
        return -1;
    }
    log_info("metrics listening on %s", httpd_addr(p->httpd));
    log_info("dashboard at http://%s/", httpd_addr(p->httpd));
    return 0;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int cmd_pool(int argc, char **argv)
{
    pool_args_t a;
    if (parse_args(argc, argv, &a) < 0) {
        fprintf(stderr, "(bettong pool --help for the options)\n");
        return 2;
    }
    log_set_role("pool");
    if (a.log_level)
        log_set_level((log_level)log_parse_level(a.log_level));
    signal(SIGPIPE, SIG_IGN);

    static pool_t pool;
    pool_t *p = &pool;
    p->log_level = a.log_level;
    p->exit_with_client = a.exit_with_client;
    if (guard_service_secret(PROG, a.secret, a.secret_file, p->secret, sizeof p->secret,
                             &p->secret_len) < 0 ||
        guard_service_tls(PROG, &a.tls, &p->tls) < 0)
        return 2;
    if (p->tls && !a.listen) {
        fprintf(stderr, PROG ": --tls-cert/--tls-key secure the TCP port: they need --listen\n");
        tls_ctx_free(p->tls);
        return 2;
    }
    p->clock_base_us = proto_now_us() - uv_hrtime() / 1000;
    p->parent = getppid();
    p->started_ms = pool_now_ms(p);
    p->spec = (frame_spec_t){.header_len = 4, .int_size = 4, .big_endian = 1,
                             .max_payload = PROTO_MAX_FRAME};
    /* 1 us, not 0: 0 would take the scheduler's default */
    sched_config_t cfg = {.ahead_max = a.ahead,
                          .near_wait_us = a.near_wait_ms ? (uint64_t)a.near_wait_ms * 1000 : 1};
    p->sched = sched_new(&cfg, &peer_sched_ops, p);
    if (!p->sched || lend_init(p, (unsigned)a.max_lent) < 0 || uv_loop_init(&p->loop) < 0) {
        fprintf(stderr, PROG ": out of memory\n");
        return 2;
    }
    int rc = start_listeners(p, &a);
    if (rc == 0)
        rc = start_metrics(p, a.metrics_addr);
    if (rc == 0) {
        announce(p);
        choose_worker_connect(p);
        start_handles(p);
        long n = a.workers >= 0 ? a.workers : (long)spawn_ncpu();
        if (start_locals(p, n, (pid_t)a.template_pid) < 0)
            pool_stop(p, 1, "out of memory");
        /* Now rather than in the first handshake (a client may be waiting). */
        auth_warm();
    }
    if (rc < 0) {
        /* Close whatever did start, so the loop can be closed cleanly. */
        uv_walk(&p->loop, close_walk_cb, NULL);
    }
    uv_run(&p->loop, UV_RUN_DEFAULT);
    sched_free(p->sched);
    metrics_free(p->metrics);
    lend_free(p);
    tmpl_free(p);
    free(p->locals);
    if (uv_loop_close(&p->loop) != 0)
        log_debug("event loop closed with handles still open");
    tls_ctx_free(p->tls);
    return rc < 0 ? 2 : p->exit_code;
}
