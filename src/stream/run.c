#include "stream/run.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/local.h"
#include "net/guard.h"
#include "py/bridge.h"
#include "stream/app.h"
#include "stream/engine.h"
#include "util/args.h"
#include "util/log.h"

#define MAX_PATHS 32

typedef struct {
    char module[256];
    const char *paths[MAX_PATHS + 1];
    size_t npaths;
    char *owned[MAX_PATHS]; /* strings in paths we allocated */
    size_t nowned;
    engine_options_t engine;
    uint64_t max_frame;
    /* cluster flags */
    long worker_count;
    long workers;            /* --workers N: N local processes */
    int initializer;
    const char *name, *control, *data, *my_control, *my_data, *join, *secret;
    long control_fd;         /* internal: the coordinator's socket from --workers */
    int shared_ports;        /* internal: sources share ports (--workers) */
    double cluster_timeout;
    double rebalance;
    cluster_config_t cluster;
} run_args_t;

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong run [APP.py] [--application-module NAME] [options] [application flags]\n"
"\n"
"Runs a streaming application written with the Wallaroo Python API on this worker.\n"
"Every argument (program name first) is passed to the application's\n"
"application_setup(args); flags the engine does not know are left to the application.\n"
"\n"
"  APP.py                      the application file (its directory goes on sys.path)\n"
"  --application-module NAME   the application module, found on --application-path,\n"
"                              the current directory or PYTHONPATH\n"
"  --application-path DIR      a directory to search first (repeatable, or DIR:DIR)\n"
"  --on-error POLICY           what to do with a message whose user code raised:\n"
"                              skip (default: drop it and go on),\n"
"                              dead-letter:FILE (append its input frame to FILE),\n"
"                              stop (flush the sinks and exit with status 1)\n"
"  --max-frame BYTES           largest accepted input frame payload (default 16M;\n"
"                              suffixes K, M, G); a larger one closes its connection\n"
"  --flush-timeout SECONDS     how long a stop waits for the sinks (default 10)\n"
"  --log-level LEVEL           debug, info (default), warn, error\n"
"  -h, --help                  this text\n"
"\n"
"Clusters (the same application on many workers; state partitions spread over\n"
"them, messages routed to the worker that holds their key's state):\n"
"  --workers N                 run N local worker processes as one cluster; they\n"
"                              share each --in port and stop together\n"
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
"  --cluster-secret S          the secret every member presents (or set\n"
"                              BETTONG_CLUSTER_SECRET); without one, only loopback\n"
"                              peers are accepted\n"
"  --cluster-timeout SECONDS   silence after which a peer counts as lost (default 5)\n"
"  --rebalance SECONDS         how often the initializer evens out the load by\n"
"                              moving busy slots (default 10; 0: never)\n"
"\n"
"Other Wallaroo worker flags are accepted so Wallaroo command lines work unchanged:\n"
"  --in/-i, --out/-o           read by the application (tcp_parse_input_addrs ...)\n"
"  --external/-e, --metrics/-m, --resilience-dir, --ponythreads, --ponynoblock,\n"
"  --ponypinasio, --ponyminthreads ...\n"
"                              accepted and ignored (metrics and Pony runtime tuning\n"
"                              have no meaning here)\n");
}

/* A flag with its value; a flag given last without one is left to the
 * application, like any argument the engine does not know. */
static const char *flag_value(int argc, char **argv, int *i, const char *flag)
{
    return args_flag_value(argc, argv, i, flag, NULL);
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end != '\0' || v == 0)
        return -1;
    *out = v;
    return 0;
}

static int add_path(run_args_t *a, char *owned_path)
{
    if (a->npaths >= MAX_PATHS) {
        free(owned_path);
        fprintf(stderr, "bettong run: too many --application-path entries\n");
        return -1;
    }
    a->paths[a->npaths++] = owned_path;
    a->owned[a->nowned++] = owned_path;
    return 0;
}

static int add_path_list(run_args_t *a, const char *list)
{
    char *copy = strdup(list);
    for (char *save = NULL, *tok = strtok_r(copy, ":", &save); tok;
         tok = strtok_r(NULL, ":", &save))
        if (add_path(a, strdup(tok)) < 0) {
            free(copy);
            return -1;
        }
    free(copy);
    return 0;
}

static int set_app_file(run_args_t *a, const char *file)
{
    if (access(file, R_OK) != 0) {
        fprintf(stderr, "bettong run: cannot read application file '%s': %s\n", file,
                strerror(errno));
        return -1;
    }
    char *d = strdup(file), *b = strdup(file);
    char *dir = dirname(d), *base = basename(b);
    size_t len = strlen(base);
    if (len > 3 && strcmp(base + len - 3, ".py") == 0)
        base[len - 3] = '\0';
    snprintf(a->module, sizeof a->module, "%s", base);
    char real[PATH_MAX];
    int rc = add_path(a, strdup(realpath(dir, real) ? real : dir));
    free(d);
    free(b);
    return rc;
}

static int parse_on_error(run_args_t *a, const char *v)
{
    if (strcmp(v, "skip") == 0) {
        a->engine.on_error = ON_ERROR_SKIP;
    } else if (strcmp(v, "stop") == 0) {
        a->engine.on_error = ON_ERROR_STOP;
    } else if (strncmp(v, "dead-letter:", 12) == 0 && v[12]) {
        a->engine.on_error = ON_ERROR_DEAD_LETTER;
        a->engine.dead_letter_path = v + 12;
    } else {
        fprintf(stderr, "bettong run: --on-error must be skip, stop or dead-letter:FILE\n");
        return -1;
    }
    return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error. */
static int parse_args(run_args_t *a, int argc, char **argv)
{
    const char *v;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (i == 1 && arg[0] != '-') {
            if (set_app_file(a, arg) < 0)
                return -1;
        } else if ((v = flag_value(argc, argv, &i, "--application-module"))) {
            snprintf(a->module, sizeof a->module, "%s", v);
        } else if ((v = flag_value(argc, argv, &i, "--application-path"))) {
            if (add_path_list(a, v) < 0)
                return -1;
        } else if ((v = flag_value(argc, argv, &i, "--on-error"))) {
            if (parse_on_error(a, v) < 0)
                return -1;
        } else if ((v = flag_value(argc, argv, &i, "--max-frame"))) {
            if (parse_size(v, &a->max_frame) < 0) {
                fprintf(stderr, "bettong run: bad --max-frame '%s'\n", v);
                return -1;
            }
        } else if ((v = flag_value(argc, argv, &i, "--flush-timeout"))) {
            a->engine.flush_timeout_s = atof(v);
        } else if ((v = flag_value(argc, argv, &i, "--log-level"))) {
            int level = log_parse_level(v);
            if (level < 0) {
                fprintf(stderr, "bettong run: bad --log-level '%s'\n", v);
                return -1;
            }
            log_set_level((log_level)level);
        } else if ((v = flag_value(argc, argv, &i, "--name")) ||
                   (v = flag_value(argc, argv, &i, "-n"))) {
            char role[64];
            snprintf(role, sizeof role, "bettong[%s]", v);
            log_set_role(role);
            a->name = v;
        } else if ((v = flag_value(argc, argv, &i, "--worker-count")) ||
                   (v = flag_value(argc, argv, &i, "-w"))) {
            if (args_parse_long(v, 1, CL_MAX_WORKERS, &a->worker_count) < 0) {
                fprintf(stderr, "bettong run: bad --worker-count '%s'\n", v);
                return -1;
            }
        } else if ((v = flag_value(argc, argv, &i, "--workers"))) {
            if (args_parse_long(v, 1, CL_MAX_WORKERS, &a->workers) < 0) {
                fprintf(stderr, "bettong run: bad --workers '%s'\n", v);
                return -1;
            }
        } else if (strcmp(arg, "--cluster-initializer") == 0 || strcmp(arg, "-t") == 0) {
            a->initializer = 1;
        } else if ((v = flag_value(argc, argv, &i, "--control")) ||
                   (v = flag_value(argc, argv, &i, "-c"))) {
            a->control = v;
        } else if ((v = flag_value(argc, argv, &i, "--data")) ||
                   (v = flag_value(argc, argv, &i, "-d"))) {
            a->data = v;
        } else if ((v = flag_value(argc, argv, &i, "--join")) ||
                   (v = flag_value(argc, argv, &i, "-j"))) {
            a->join = v;
        } else if ((v = flag_value(argc, argv, &i, "--my-control"))) {
            a->my_control = v;
        } else if ((v = flag_value(argc, argv, &i, "--my-data"))) {
            a->my_data = v;
        } else if ((v = flag_value(argc, argv, &i, "--cluster-secret"))) {
            a->secret = v;
        } else if ((v = flag_value(argc, argv, &i, "--cluster-timeout"))) {
            a->cluster_timeout = atof(v);
        } else if ((v = flag_value(argc, argv, &i, "--rebalance"))) {
            char *end;
            a->rebalance = strtod(v, &end);
            if (*end || a->rebalance < 0) {
                fprintf(stderr, "bettong run: bad --rebalance '%s' (seconds, 0 for never)\n", v);
                return -1;
            }
        } else if ((v = flag_value(argc, argv, &i, "--bettong-control-fd"))) {
            if (args_parse_long(v, 0, 65535, &a->control_fd) < 0)
                return -1;
        } else if (strcmp(arg, "--bettong-shared-ports") == 0) {
            a->shared_ports = 1;
        }
        /* Anything else belongs to the application. */
    }
    if (!a->module[0]) {
        fprintf(stderr, "bettong run: name the application: bettong run APP.py, or "
                        "--application-module NAME\n\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Whether this worker is part of a cluster, and how; fills a->cluster. Returns
 * 1 for a cluster, 0 for a worker on its own, -1 on a usage error. */
static int cluster_mode(run_args_t *a)
{
    cluster_config_t *c = &a->cluster;
    int joiner = !a->initializer && (a->join || a->control);
    int init = a->initializer && (a->worker_count > 1 || a->control);
    if (!init && !joiner) {
        if (a->my_control || a->my_data)
            log_warn("--my-control/--my-data without --control or --join: running alone");
        return 0;
    }
    memset(c, 0, sizeof *c);
    char err[300];
    if (guard_secret_load_env(a->secret, "BETTONG_CLUSTER_SECRET", c->secret.secret,
                              sizeof c->secret.secret, &c->secret.len, err, sizeof err) < 0) {
        fprintf(stderr, "bettong run: %s\n", err);
        return -1;
    }
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
    c->stop_timeout_s = a->engine.flush_timeout_s;
    c->rebalance_s = a->rebalance;
    a->engine.cluster = c;
    return 1;
}

static void free_args(run_args_t *a)
{
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
}

int cmd_run(int argc, char **argv)
{
    run_args_t a;
    memset(&a, 0, sizeof a);
    a.engine.on_error = ON_ERROR_SKIP;
    a.engine.flush_timeout_s = 10.0;
    a.engine.backlog_high = 8u << 20;
    a.engine.backlog_low = 2u << 20;
    a.max_frame = 16u << 20;
    a.control_fd = -1;
    a.rebalance = 10;
    log_set_role("bettong run");
    int rc = parse_args(&a, argc, argv);
    if (rc != 0) {
        free_args(&a);
        return rc > 0 ? 0 : 2;
    }
    if (a.workers >= 1) {
        free_args(&a);
        return local_cluster_run(argc, argv, (unsigned)a.workers);
    }
    if (cluster_mode(&a) < 0) {
        free_args(&a);
        return 2;
    }
    a.engine.shared_ports = a.shared_ports;
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) && add_path(&a, strdup(cwd)) < 0) {
        free_args(&a);
        return 2;
    }
    a.paths[a.npaths] = NULL;

    /* application_setup sees the process's whole argument vector. */
    char **full_argv = argv - 1;
    int full_argc = argc + 1;
    char err[8192];
    if (py_start(full_argc, full_argv, a.paths, err, sizeof err) < 0) {
        fprintf(stderr, "bettong run: %s\n", err);
        free_args(&a);
        return 2;
    }
    app_t app;
    app_options_t opt = {.module = a.module, .argc = full_argc, .argv = full_argv,
                         .max_frame = a.max_frame};
    py_gil_enter();
    rc = app_load(&app, &opt, err, sizeof err);
    py_gil_leave();
    if (rc < 0) {
        fprintf(stderr, "bettong run: %s\n", err);
        py_stop();
        free_args(&a);
        return 2;
    }
    int code = engine_run(&app, &a.engine);
    py_gil_enter();
    app_free(&app);
    py_gil_leave();
    py_stop();
    free_args(&a);
    return code;
}
