#include "stream/run.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "py/bridge.h"
#include "stream/app.h"
#include "util/args.h"
#include "util/log.h"

/* Wallaroo worker flags that Bettong takes but does not implement: each is
 * named once in a warning, so that nobody counts on it silently. */
typedef struct {
    const char *flag, *alias;
    int has_value;
    const char *why;
} ignored_flag_t;

#define NO_PONY "there is no Pony runtime (one thread runs the loop and the Python steps)"
#define NO_SPIKE "Wallaroo's network fault injection (spike) is not built in"

static const ignored_flag_t ignored_flags[] = {
    {"--stop-pause", NULL, 1, "a cluster change pauses the sources only while it runs"},
    {"--log-rotation", NULL, 0, "there is no event log to rotate"},
    {"--event-log-file-size", NULL, 1, "there is no event log to rotate"},
    {"--resilience-no-local-file-io", NULL, 0, "not implemented"},
    {"--spike-seed", NULL, 1, NO_SPIKE},
    {"--spike-drop", NULL, 0, NO_SPIKE},
    {"--spike-prob", NULL, 1, NO_SPIKE},
    {"--spike-margin", NULL, 1, NO_SPIKE},
    {"--ponythreads", NULL, 1, NO_PONY},
    {"--ponyminthreads", NULL, 1, NO_PONY},
    {"--ponysuspendthreshold", NULL, 1, NO_PONY},
    {"--ponycdinterval", NULL, 1, NO_PONY},
    {"--ponygcinitial", NULL, 1, NO_PONY},
    {"--ponygcfactor", NULL, 1, NO_PONY},
    {"--ponynoblock", NULL, 0, NO_PONY},
    {"--ponypin", NULL, 0, NO_PONY},
    {"--ponypinasio", NULL, 0, NO_PONY},
    {"--ponynopin", NULL, 0, NO_PONY},
    {"--ponynoscale", NULL, 0, NO_PONY},
    {"--ponynoyield", NULL, 0, NO_PONY},
};

#define NIGNORED (sizeof ignored_flags / sizeof ignored_flags[0])
_Static_assert(NIGNORED <= 32, "run_args_t.ignored has a bit per ignored flag");

static void usage(FILE *f, const run_ext_t *ext)
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
"  --max-buffered BYTES        memory the read buffers of all connections (sources,\n"
"                              cluster links) may hold together (default 1G, at\n"
"                              least --max-frame + 1M); past it the connection whose\n"
"                              partial frame has waited longest is closed first\n"
"  --max-connections N         open connections per listening port (default 1024,\n"
"                              less when the open-file limit is low); beyond it a\n"
"                              new one replaces one silent for 1 s, or is closed\n"
"  --source-idle-timeout SECONDS\n"
"                              close a source connection that sends nothing for\n"
"                              this long (default: never; a quiet producer is fine)\n"
"  --flush-timeout SECONDS     how long a stop waits for the sinks (default 10)\n"
"  --log-level LEVEL           debug, info (default), warn, error\n"
"  --run-with-resilience       take checkpoints of the state and recover from the\n"
"                              last one when started again (docs/resilience.md)\n"
"  --resilience-dir DIR        where: DIR/<worker name>/ (default /tmp)\n"
"  --time-between-checkpoints NS\n"
"                              nanoseconds between checkpoints (default 1000000000)\n"
"  --external, -e H:P          Wallaroo's external channel: listen there (a bare\n"
"                              port: on 127.0.0.1; port 0: one the kernel picks,\n"
"                              logged) for a clean shutdown (`bettong cluster\n"
"                              shutdown --external H:P`, Wallaroo's cluster_shutdown)\n"
"                              that stops this worker, or its whole cluster, after\n"
"                              flushing the sinks. Beyond loopback it needs the\n"
"                              cluster secret, which remote peers must prove\n"
"  --metrics-listen H:P        serve Prometheus metrics at http://H:P/metrics (a\n"
"                              bare port: on 127.0.0.1; port 0: one the kernel\n"
"                              picks, logged as \"metrics listening on H:P\"); with\n"
"                              --workers N and a port P > 0, worker i gets P + i - 1\n"
"  --metrics, -m H:P           Wallaroo's spelling of --metrics-listen (Wallaroo\n"
"                              sent to a Metrics UI there; Bettong serves there,\n"
"                              or, if H:P cannot be bound (Wallaroo's command lines\n"
"                              give each worker of a host the same), on H:0, logged)\n"
"  -h, --help                  this text\n");
    if (ext && ext->usage)
        ext->usage(f);
    fprintf(f,
"\n"
"Other Wallaroo worker flags are accepted so Wallaroo command lines work unchanged:\n"
"  --in/-i, --out/-o           read by the application (tcp_parse_input_addrs ...)\n"
"  --stop-pause, --log-rotation,\n"
"  --event-log-file-size, --resilience-no-local-file-io, --spike-seed,\n"
"  --spike-drop, --spike-prob, --spike-margin, --ponythreads, --ponyminthreads,\n"
"  --ponysuspendthreshold, --ponycdinterval, --ponygcinitial, --ponygcfactor,\n"
"  --ponynoblock, --ponypin, --ponypinasio, --ponynopin, --ponynoscale,\n"
"  --ponynoyield\n"
"                              accepted without effect (Wallaroo's event\n"
"                              log, fault injection and Pony runtime tuning have no\n"
"                              meaning here); each one given is named in a warning\n"
"                              at start-up\n");
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
    if (a->npaths >= RUN_MAX_PATHS) {
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

/* A Wallaroo flag without effect here: noted (with its value skipped) for
 * warn_ignored. Returns 1 if argv[*i] is one. */
static int take_ignored(run_args_t *a, int argc, char **argv, int *i)
{
    for (size_t k = 0; k < NIGNORED; k++) {
        const ignored_flag_t *f = &ignored_flags[k];
        int hit = f->has_value
                      ? flag_value(argc, argv, i, f->flag) ||
                            (f->alias && flag_value(argc, argv, i, f->alias))
                      : strcmp(argv[*i], f->flag) == 0;
        if (hit) {
            a->ignored |= 1u << k;
            return 1;
        }
    }
    return 0;
}

/* One warning per flag, however often it was given. */
static void warn_ignored(const run_args_t *a)
{
    for (size_t k = 0; k < NIGNORED; k++)
        if (a->ignored & (1u << k))
            log_warn("%s is accepted for Wallaroo compatibility but has no effect "
                     "here: %s", ignored_flags[k].flag, ignored_flags[k].why);
}

/* The engine's own flags. Returns 1 if argv[*i] was one, -1 on a bad value. */
static int take_engine_flag(run_args_t *a, int argc, char **argv, int *i)
{
    const char *v;
    int rc;
    if ((v = flag_value(argc, argv, i, "--application-module"))) {
        snprintf(a->module, sizeof a->module, "%s", v);
    } else if ((v = flag_value(argc, argv, i, "--external")) ||
               (v = flag_value(argc, argv, i, "-e"))) {
        a->engine.external_addr = v;
    } else if ((v = flag_value(argc, argv, i, "--metrics-listen"))) {
        a->engine.metrics_addr = v;
        a->engine.metrics_wallaroo = 0;
    } else if ((v = flag_value(argc, argv, i, "--metrics")) ||
               (v = flag_value(argc, argv, i, "-m"))) {
        a->engine.metrics_addr = v;
        a->engine.metrics_wallaroo = 1;
    } else if ((v = flag_value(argc, argv, i, "--application-path"))) {
        if (add_path_list(a, v) < 0)
            return -1;
    } else if ((v = flag_value(argc, argv, i, "--on-error"))) {
        if (parse_on_error(a, v) < 0)
            return -1;
    } else if ((v = flag_value(argc, argv, i, "--max-frame"))) {
        if (parse_size(v, &a->max_frame) < 0) {
            fprintf(stderr, "bettong run: bad --max-frame '%s'\n", v);
            return -1;
        }
    } else if ((v = flag_value(argc, argv, i, "--source-idle-timeout"))) {
        char *end;
        double s = strtod(v, &end);
        if (*end || !(s > 0) || s > 86400 * 365) {
            fprintf(stderr, "bettong run: bad --source-idle-timeout '%s' (seconds)\n", v);
            return -1;
        }
        a->engine.source_idle_ms = (unsigned)(s * 1000 + 0.5) ? (unsigned)(s * 1000 + 0.5) : 1;
    } else if ((rc = inconn_flag(&a->limits, argc, argv, i, "bettong run")) != 0) {
        return rc;
    } else if ((v = flag_value(argc, argv, i, "--flush-timeout"))) {
        a->engine.flush_timeout_s = atof(v);
    } else if ((v = flag_value(argc, argv, i, "--log-level"))) {
        int level = log_parse_level(v);
        if (level < 0) {
            fprintf(stderr, "bettong run: bad --log-level '%s'\n", v);
            return -1;
        }
        log_set_level((log_level)level);
    } else if (strcmp(argv[*i], "--run-with-resilience") == 0) {
        a->engine.resilience = 1;
    } else if ((v = flag_value(argc, argv, i, "--resilience-dir"))) {
        a->engine.resilience_dir = v;
    } else if ((v = flag_value(argc, argv, i, "--time-between-checkpoints"))) {
        char *end;
        errno = 0;
        unsigned long long ns = strtoull(v, &end, 10);
        if (errno || *end || ns < 1000000ULL) {
            fprintf(stderr, "bettong run: bad --time-between-checkpoints '%s' (nanoseconds, at "
                            "least 1000000)\n", v);
            return -1;
        }
        a->engine.checkpoint_interval_ns = ns;
        a->given_interval = 1;
    } else if (strcmp(argv[*i], "--bettong-shared-ports") == 0) {
        a->engine.shared_ports = 1;
    } else {
        return 0;
    }
    return 1;
}

static void defaults(run_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->engine.on_error = ON_ERROR_SKIP;
    a->engine.flush_timeout_s = 10.0;
    a->engine.backlog_high = 8u << 20;
    a->engine.backlog_low = 2u << 20;
    a->max_frame = 16u << 20;
    a->engine.checkpoint_interval_ns = 1000000000ULL;
}

int run_parse(run_args_t *a, int argc, char **argv, const run_ext_t *ext)
{
    defaults(a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int rc = 0;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout, ext);
            return 1;
        } else if (i == 1 && arg[0] != '-') {
            rc = set_app_file(a, arg) < 0 ? -1 : 1;
        } else if ((rc = take_engine_flag(a, argc, argv, &i)) == 0 && ext && ext->flag) {
            rc = ext->flag(ext->ctx, argc, argv, &i);
        }
        if (rc < 0)
            return -1;
        if (rc == 0)
            take_ignored(a, argc, argv, &i);
        /* Anything else belongs to the application. */
    }
    if (!a->module[0]) {
        fprintf(stderr, "bettong run: name the application: bettong run APP.py, or "
                        "--application-module NAME\n\n");
        usage(stderr, ext);
        return -1;
    }
    /* Workers a `--workers` parent started (sharing its ports) leave the
     * warnings to it: one per flag, not one per process. */
    if (!a->engine.shared_ports)
        warn_ignored(a);
    if (!a->engine.resilience && (a->engine.resilience_dir || a->given_interval))
        log_warn("--resilience-dir and --time-between-checkpoints have no effect without "
                 "--run-with-resilience");
    return 0;
}

void run_args_free(run_args_t *a)
{
    for (size_t i = 0; i < a->nowned; i++)
        free(a->owned[i]);
    a->nowned = 0;
}

int run_worker(run_args_t *a, int argc, char **argv)
{
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) && add_path(a, strdup(cwd)) < 0) {
        run_args_free(a);
        return 2;
    }
    a->paths[a->npaths] = NULL;

    /* application_setup sees the process's whole argument vector. */
    char **full_argv = argv - 1;
    int full_argc = argc + 1;
    char err[8192];
    if (py_start(full_argc, full_argv, a->paths, err, sizeof err) < 0) {
        fprintf(stderr, "bettong run: %s\n", err);
        run_args_free(a);
        return 2;
    }
    /* Every listener of this process (sources, cluster ports) shares them. */
    inconn_apply_flags(&a->limits, a->max_frame + 64 + (1u << 20));
    app_t app;
    app_options_t opt = {.module = a->module, .argc = full_argc, .argv = full_argv,
                         .max_frame = a->max_frame};
    py_gil_enter();
    int rc = app_load(&app, &opt, err, sizeof err);
    py_gil_leave();
    if (rc < 0) {
        fprintf(stderr, "bettong run: %s\n", err);
        py_stop();
        run_args_free(a);
        return 2;
    }
    int code = engine_run(&app, &a->engine);
    py_gil_enter();
    app_free(&app);
    py_gil_leave();
    py_stop();
    run_args_free(a);
    return code;
}
