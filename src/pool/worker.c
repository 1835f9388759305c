#include "pool/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/guard.h"
#include "pool/join.h"
#include "pool/proto.h"
#include "pool/spawn.h"
#include "pool/wproc.h"
#include "util/args.h"
#include "util/log.h"

#define PROG "bettong worker"

typedef struct {
    const char *connect;
    const char *join;
    const char *name;
    const char *secret, *secret_file;
    const char *log_level;
    const char *near; /* --near-store: a store backend's name */
    long procs;       /* -1: one per CPU */
    double give_up_s;
    int template;     /* --template: the pool's worker template (pool/tmpl.h) */
} worker_args_t;

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong worker --join HOST:PORT [--procs N] [--secret-file PATH] [--name NAME]\n"
"                      [--near-store BACKEND] [--give-up SECONDS] [--log-level LEVEL]\n"
"       bettong worker --connect ADDR [--name NAME] [--near-store BACKEND]\n"
"                      [--log-level LEVEL]\n"
"\n"
"--join lends this machine's cores to a `bettong pool` listening on HOST:PORT: it\n"
"starts N worker processes (default: one per CPU), starts again any that dies,\n"
"and stops them on SIGTERM or SIGINT. It gives up (exit 1) when none can connect\n"
"for --give-up seconds (default 30), stops at once (exit 2) if the pool\n"
"refuses them (another version), and stops at once (exit 3) if the pool cannot\n"
"prove it knows the secret (a wrong secret on either side, or not the real pool):\n"
"no task of such a pool is ever read.\n"
"\n"
"--connect ADDR is one worker process (what the pool and --join start): ADDR is\n"
"unix:PATH or HOST:PORT. It runs the pool's tasks with the embedded Python until\n"
"the connection closes.\n"
"\n"
"  --secret-file PATH  the pool's secret: the first line of PATH (mode 0600 or\n"
"                      0400). Default: $BETTONG_SECRET (--connect reads only\n"
"                      the environment)\n"
"  --secret S          the same on the command line (works, but warns: every\n"
"                      user of the machine can read it with ps)\n"
"  --name NAME         shown in the pool's log lines (default: HOST-PID)\n"
"  --near-store B      these workers run next to the store backend named B (its\n"
"                      `bettong store --name`): the pool sends them first the\n"
"                      calls on objects of B (FunctionExecutor.map over\n"
"                      persistent objects), and their results say so. User code\n"
"                      sees it as $BETTONG_NEAR_STORE\n"
"\n"
"(--template, with --connect, is the pool's own: the process that starts Python\n"
"once and forks the pool's local workers from it, on the pool's request.)\n"
"\n"
"Environment: BETTONG_SECRET (the secret), BETTONG_WORKER_PATH (directories to\n"
"add to sys.path, separated by ':', so the caller's modules import).\n");
}


static int parse_number(const char *s, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(v >= 0) || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, worker_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->procs = -1;
    a->give_up_s = 30;
    for (int i = 1; i < argc; i++) {
        int missing = 0;
        const char *v;
        double d;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(argv[i], "--template") == 0) {
            a->template = 1;
        } else if ((v = args_flag_value(argc, argv, &i, "--connect", &missing))) {
            a->connect = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--join", &missing))) {
            a->join = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--name", &missing))) {
            a->name = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--near-store", &missing))) {
            if (!*v || strlen(v) > PROTO_PLACE_MAX) {
                fprintf(stderr, PROG ": --near-store takes a store backend's name of 1 to %d "
                        "bytes\n", PROTO_PLACE_MAX);
                return -1;
            }
            a->near = v;
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
        } else if ((v = args_flag_value(argc, argv, &i, "--procs", &missing))) {
            if (parse_number(v, 4096, &d) < 0 || d < 1 || d != (long)d) {
                fprintf(stderr, PROG ": --procs takes a number from 1 to 4096\n");
                return -1;
            }
            a->procs = (long)d;
        } else if ((v = args_flag_value(argc, argv, &i, "--give-up", &missing))) {
            if (parse_number(v, 1e9, &a->give_up_s) < 0) {
                fprintf(stderr, PROG ": --give-up takes a number of seconds\n");
                return -1;
            }
        } else {
            fprintf(stderr, missing ? PROG ": option '%s' needs a value\n"
                                    : PROG ": unknown argument '%s'\n", argv[i]);
            return -1;
        }
    }
    if (!a->connect == !a->join) {
        fprintf(stderr, PROG ": give one of --join HOST:PORT or --connect ADDR\n");
        return -1;
    }
    if (a->template && !a->connect) {
        fprintf(stderr, PROG ": --template goes with --connect\n");
        return -1;
    }
    return 0;
}

int cmd_worker(int argc, char **argv)
{
    worker_args_t a;
    if (parse_args(argc, argv, &a) < 0) {
        fprintf(stderr, "(bettong worker --help for the options)\n");
        return 2;
    }
    if (a.log_level)
        log_set_level((log_level)log_parse_level(a.log_level));
    if (a.connect) {
        /* By hand (or a sanitizer build's pool): the embedded interpreter. */
        wproc_args_t w = {.connect = a.connect, .name = a.name, .near = a.near};
        return a.template ? wproc_template(&w, 1) : wproc_run(&w, 1);
    }
    log_set_role("worker --join");
    char host[64] = "worker";
    gethostname(host, sizeof host - 1);
    char name[128];
    snprintf(name, sizeof name, "%s", a.name ? a.name : host);
    char secret[256];
    size_t secret_len;
    if (guard_service_secret("bettong worker", a.secret, a.secret_file, secret, sizeof secret,
                             &secret_len) < 0)
        return 2;
    join_args_t j = {.address = a.join,
                     .procs = a.procs > 0 ? (unsigned)a.procs : spawn_ncpu(),
                     .secret = secret_len ? secret : NULL,
                     .name = name,
                     .give_up_s = a.give_up_s,
                     .log_level = a.log_level,
                     .near = a.near};
    return join_run(&j);
}
