#include "cluster/runcl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster/config.h"
#include "cluster/local.h"
#include "net/guard.h"
#include "stream/run.h"
#include "util/args.h"
#include "util/hist.h"
#include "util/log.h"

/* The cluster's flags, as given. */
typedef struct {
    long worker_count;
    long workers;            /* --workers N: N local processes */
    int initializer;
    const char *name, *control, *data, *my_control, *my_data, *join, *secret, *secret_file;
    const char *tls_cert, *tls_key; /* --tls-cert, --tls-key */
    int tls;                        /* --tls */
    long control_fd;         /* internal: the coordinator's socket from --workers */
    double cluster_timeout;
    double handshake_timeout;
    double rebalance;
    cluster_config_t cluster;
} cl_args_t;

/* The TLS contexts of the cluster's links (s->tls_server for its listeners,
 * s->tls_client for its links), or none without TLS flags. A cluster is all
 * TLS or none, and every worker listens (control and data ports), so a worker
 * needs the certificate and key to take part: --tls alone is refused rather
 * than half applied. Returns 0, or -1 after a message on stderr. */
static int tls_setup(const cl_args_t *a, cl_secret_t *s)
{
    if (!a->tls && !a->tls_cert && !a->tls_key)
        return 0;
    if (!a->tls_cert || !a->tls_key) {
        fprintf(stderr, "bettong run: TLS needs both --tls-cert FILE and --tls-key FILE (every "
                        "worker of a TLS cluster also accepts TLS connections)\n");
        return -1;
    }
    char err[600];
    s->tls_server = tls_ctx_server(a->tls_cert, a->tls_key, err, sizeof err);
    if (s->tls_server)
        s->tls_client = tls_ctx_client(err, sizeof err);
    if (!s->tls_server || !s->tls_client) {
        fprintf(stderr, "bettong run: %s\n", err);
        tls_ctx_free(s->tls_server);
        s->tls_server = NULL;
        return -1;
    }
    return 0;
}

static void tls_free(cl_secret_t *s)
{
    tls_ctx_free(s->tls_server);
    tls_ctx_free(s->tls_client);
    s->tls_server = s->tls_client = NULL;
}

static void cluster_usage(FILE *f)
{
    fprintf(f,
"\n"
"Clusters (the same application on many workers; state partitions spread over\n"
"them, messages routed to the worker that holds their key's state):\n"
"  --workers N                 run N local worker processes as one cluster; they\n"
"                              share each --in port and stop together (workers\n"
"                              started with the flags below and the same --in\n"
"                              on one machine share it too)\n"
"  --cluster-initializer, -t   this worker starts the cluster (with --worker-count\n"
"                              > 1, or with --control) and runs its coordinator\n"
"  --worker-count, -w N        the cluster forms once N workers have joined\n"
"  --control, -c H:P           the initializer's control address (on the\n"
"                              initializer: where it listens; on the others: whom\n"
"                              to join)\n"
"  --data, -d H:P              the initializer's data address\n"
"  --join, -j H:P              join a running cluster (its control address): the\n"
"                              newcomer takes over a share of the slots\n"
"  --my-control H:P, --my-data H:P\n"
"                              this worker's own addresses (default 127.0.0.1 with\n"
"                              a port the kernel picks)\n"
"  --name, -n NAME             the worker's name (unique in a cluster)\n"
"  --cluster-secret-file PATH  the secret every member proves it knows: the first\n"
"                              line of PATH (mode 0600 or 0400); or set\n"
"                              BETTONG_CLUSTER_SECRET. Without one, only loopback\n"
"                              peers are accepted\n"
"  --cluster-secret S          the same on the command line (warns: ps shows it)\n"
"  --tls-cert FILE, --tls-key FILE\n"
"                              TLS 1.3 on every cluster link (control, data and\n"
"                              coordinator ports, and this worker's links to\n"
"                              them): this worker's certificate and key (PEM).\n"
"                              All workers of a cluster use TLS or none does;\n"
"                              certificates are not verified, the handshake's\n"
"                              proofs of the secret are bound to the TLS session\n"
"  --tls                       the same (implied by --tls-cert/--tls-key, which\n"
"                              it needs)\n"
"  --cluster-handshake-timeout SECONDS\n"
"                              close a cluster connection that has not finished\n"
"                              the handshake by then (default 10)\n"
"  --cluster-timeout SECONDS   silence after which a peer counts as lost (default 5)\n"
"  --rebalance SECONDS         how often the initializer evens out the load by\n"
"                              moving busy slots (default 10; 0: never)\n");
}

/* A flag with its value; a flag given last without one is left to the
 * application, like any argument the engine does not know. */
static const char *value2(int argc, char **argv, int *i, const char *flag, const char *alias)
{
    const char *v = args_flag_value(argc, argv, i, flag, NULL);
    if (!v && alias)
        v = args_flag_value(argc, argv, i, alias, NULL);
    return v;
}

/* The flags that take a number. Returns 1 if argv[*i] was one, -1 on a bad value. */
static int take_number(cl_args_t *c, int argc, char **argv, int *i)
{
    const char *v;
    if ((v = value2(argc, argv, i, "--worker-count", "-w"))) {
        if (args_parse_long(v, 1, CL_MAX_WORKERS, &c->worker_count) < 0) {
            fprintf(stderr, "bettong run: bad --worker-count '%s'\n", v);
            return -1;
        }
    } else if ((v = value2(argc, argv, i, "--workers", NULL))) {
        if (args_parse_long(v, 1, CL_MAX_WORKERS, &c->workers) < 0) {
            fprintf(stderr, "bettong run: bad --workers '%s'\n", v);
            return -1;
        }
    } else if ((v = value2(argc, argv, i, "--cluster-timeout", NULL))) {
        c->cluster_timeout = atof(v);
    } else if ((v = value2(argc, argv, i, "--cluster-handshake-timeout", NULL))) {
        c->handshake_timeout = atof(v);
    } else if ((v = value2(argc, argv, i, "--rebalance", NULL))) {
        char *end;
        c->rebalance = strtod(v, &end);
        if (*end || c->rebalance < 0) {
            fprintf(stderr, "bettong run: bad --rebalance '%s' (seconds, 0 for never)\n", v);
            return -1;
        }
    } else if ((v = value2(argc, argv, i, "--bettong-control-fd", NULL))) {
        if (args_parse_long(v, 0, 65535, &c->control_fd) < 0)
            return -1;
    } else {
        return 0;
    }
    return 1;
}

/* run_ext_t.flag: the cluster's flags. */
static int take_flag(void *ctx, int argc, char **argv, int *i)
{
    cl_args_t *c = ctx;
    const char *v;
    if ((v = value2(argc, argv, i, "--name", "-n"))) {
        char role[64];
        snprintf(role, sizeof role, "bettong[%s]", v);
        log_set_role(role);
        c->name = v;
    } else if (strcmp(argv[*i], "--cluster-initializer") == 0 || strcmp(argv[*i], "-t") == 0) {
        c->initializer = 1;
    } else if ((v = value2(argc, argv, i, "--control", "-c"))) {
        c->control = v;
    } else if ((v = value2(argc, argv, i, "--data", "-d"))) {
        c->data = v;
    } else if ((v = value2(argc, argv, i, "--join", "-j"))) {
        c->join = v;
    } else if ((v = value2(argc, argv, i, "--my-control", NULL))) {
        c->my_control = v;
    } else if ((v = value2(argc, argv, i, "--my-data", NULL))) {
        c->my_data = v;
    } else if ((v = value2(argc, argv, i, "--cluster-secret", NULL))) {
        c->secret = v;
    } else if ((v = value2(argc, argv, i, "--cluster-secret-file", NULL))) {
        c->secret_file = v;
    } else if ((v = value2(argc, argv, i, "--tls-cert", NULL))) {
        c->tls_cert = v;
    } else if ((v = value2(argc, argv, i, "--tls-key", NULL))) {
        c->tls_key = v;
    } else if (strcmp(argv[*i], "--tls") == 0) {
        c->tls = 1;
    } else {
        return take_number(c, argc, argv, i);
    }
    return 1;
}

/* Whether this worker is part of a cluster, and how; fills c->cluster. Returns
 * 1 for a cluster, 0 for a worker on its own, -1 on a usage error. */
static int cluster_mode(cl_args_t *a, double flush_timeout_s)
{
    cluster_config_t *c = &a->cluster;
    int joiner = !a->initializer && (a->join || a->control);
    int init = a->initializer && (a->worker_count > 1 || a->control);
    if (!init && !joiner) {
        if (a->my_control || a->my_data)
            log_warn("--my-control/--my-data without --control or --join: running alone");
        if (a->tls || a->tls_cert || a->tls_key) {
            fprintf(stderr, "bettong run: --tls, --tls-cert and --tls-key secure the links of "
                            "a cluster; this worker runs alone (no --control, --join or "
                            "--workers)\n");
            return -1;
        }
        return 0;
    }
    memset(c, 0, sizeof *c);
    char err[600];
    guard_secret_src_t src = {.flag = "--cluster-secret", .value = a->secret,
                              .file = a->secret_file, .env = "BETTONG_CLUSTER_SECRET"};
    if (guard_secret_get(&src, c->secret.secret, sizeof c->secret.secret, &c->secret.len, err,
                         sizeof err) < 0) {
        fprintf(stderr, "bettong run: %s\n", err);
        return -1;
    }
    if (tls_setup(a, &c->secret) < 0)
        return -1;
    if (init && !a->control && a->control_fd < 0) {
        fprintf(stderr, "bettong run: --cluster-initializer with --worker-count %ld needs "
                        "--control H:P\n", a->worker_count);
        return -1;
    }
    c->initializer = init;
    c->worker_count = init ? (unsigned)(a->worker_count > 0 ? a->worker_count : 1) : 0;
    c->control_fd = (int)a->control_fd;
    snprintf(c->control, sizeof c->control, "%s", a->join ? a->join : a->control ? a->control
                                                                                 : "127.0.0.1:0");
    if (a->name)
        snprintf(c->name, sizeof c->name, "%s", a->name);
    else
        snprintf(c->name, sizeof c->name, init ? "initializer" : "worker-%ld", (long)getpid());
    snprintf(c->my_control, sizeof c->my_control, "%s", a->my_control ? a->my_control
                                                                      : "127.0.0.1:0");
    const char *data = init && a->data ? a->data : a->my_data;
    snprintf(c->my_data, sizeof c->my_data, "%s", data ? data : "127.0.0.1:0");
    c->timeout_ms = a->cluster_timeout > 0 ? (unsigned)(a->cluster_timeout * 1000) : 0;
    c->handshake_ms = a->handshake_timeout > 0 ? (unsigned)(a->handshake_timeout * 1000) : 0;
    c->stop_timeout_s = flush_timeout_s;
    c->rebalance_s = a->rebalance;
    return 1;
}

/* A worker alone with --external: the secret a peer of the external channel
 * beyond loopback must prove is the cluster secret's flags' (a cluster reads
 * it in cluster_mode). Returns 0, or -1 after a message. */
static int external_secret_alone(cl_args_t *a)
{
    cl_secret_t *s = &a->cluster.secret;
    memset(s, 0, sizeof *s);
    char err[600];
    guard_secret_src_t src = {.flag = "--cluster-secret", .value = a->secret,
                              .file = a->secret_file, .env = "BETTONG_CLUSTER_SECRET"};
    if (guard_secret_get(&src, s->secret, sizeof s->secret, &s->len, err, sizeof err) < 0) {
        fprintf(stderr, "bettong run: %s\n", err);
        return -1;
    }
    return 0;
}

/* A cluster with resilience restarts from its checkpoints: every worker must
 * come back under the name it had. */
static int check_resilience(const cl_args_t *c)
{
    if ((c->control || c->join) && !c->initializer && !c->name && c->workers < 1) {
        fprintf(stderr, "bettong run: --run-with-resilience in a cluster needs --name NAME: a "
                        "restarted worker finds its checkpoints by its name\n");
        return -1;
    }
    return 0;
}

/* Start this worker again with the same command line (a cluster with
 * resilience restarts from its last complete checkpoint). A `--workers`
 * parent does that itself; alone, the worker execs itself, with a growing
 * pause, and gives up after RESTART_MAX restarts within RESTART_WINDOW_S. */
#define RESTART_MAX 20
#define RESTART_WINDOW_S 120

static void restart_self(char **argv)
{
    const char *env = getenv("BETTONG_RESTARTS");
    unsigned long count = 0;
    long long since = 0;
    long long now = (long long)(now_ns() / 1000000000ull);
    if (env && sscanf(env, "%lu:%lld", &count, &since) == 2 && now - since <= RESTART_WINDOW_S)
        count++;
    else {
        count = 1;
        since = now;
    }
    if (count > RESTART_MAX) {
        log_error("restarted %lu times within %d s: giving up (see the errors above)", count - 1,
                  RESTART_WINDOW_S);
        return;
    }
    char text[64];
    snprintf(text, sizeof text, "%lu:%lld", count, since);
    setenv("BETTONG_RESTARTS", text, 1);
    unsigned ms = count < 5 ? 100u * (unsigned)count : 1000u;
    log_info("restarting in %u ms (restart %lu)", ms, count);
    usleep(ms * 1000u);
    /* argv is "run ..." inside the process's own argument vector. */
    execv("/proc/self/exe", argv - 1);
    log_error("cannot restart: %s", strerror(errno));
}

int cmd_run(int argc, char **argv)
{
    cl_args_t c;
    memset(&c, 0, sizeof c);
    c.control_fd = -1;
    c.rebalance = 10;
    log_set_role("bettong run");
    run_args_t a;
    run_ext_t ext = {.flag = take_flag, .usage = cluster_usage, .ctx = &c};
    int rc = run_parse(&a, argc, argv, &ext);
    if (rc != 0) {
        run_args_free(&a);
        return rc > 0 ? 0 : 2;
    }
    if (a.engine.resilience && check_resilience(&c) < 0) {
        run_args_free(&a);
        return 2;
    }
    if (c.workers >= 1) {
        /* The workers get the TLS flags as they are; a bad file fails here once. */
        cl_secret_t check;
        memset(&check, 0, sizeof check);
        rc = tls_setup(&c, &check);
        tls_free(&check);
        if (rc < 0) {
            run_args_free(&a);
            return 2;
        }
        run_args_free(&a);
        return local_cluster_run(argc, argv, (unsigned)c.workers);
    }
    rc = cluster_mode(&c, a.engine.flush_timeout_s);
    if (rc < 0) {
        run_args_free(&a);
        return 2;
    }
    if (rc == 0 && a.engine.external_addr && external_secret_alone(&c) < 0) {
        run_args_free(&a);
        return 2;
    }
    if (rc == 0) {
        a.engine.external_secret = c.cluster.secret.secret;
        a.engine.external_secret_len = c.cluster.secret.len;
    }
    a.engine.worker_name = c.name;
    if (rc > 0 && a.engine.resilience) {
        c.cluster.resilience = 1;
        snprintf(c.cluster.resilience_dir, sizeof c.cluster.resilience_dir, "%s",
                 a.engine.resilience_dir ? a.engine.resilience_dir : "/tmp");
        c.cluster.checkpoint_interval_ns = a.engine.checkpoint_interval_ns;
    }
    if (rc > 0) {
        /* A peer of the external channel beyond loopback proves the cluster's secret. */
        a.engine.external_secret = c.cluster.secret.secret;
        a.engine.external_secret_len = c.cluster.secret.len;
        a.engine.cluster = &cluster_engine_ops;
        a.engine.cluster_config = &c.cluster;
        a.engine.joined = !c.cluster.initializer;
    }
    int shared = a.engine.shared_ports;
    int code = run_worker(&a, argc, argv);
    tls_free(&c.cluster.secret);
    if (code == ENGINE_EXIT_RESTART && !shared)
        restart_self(argv);
    return code;
}
