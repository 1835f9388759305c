/* `bettong run` on one worker: the engine's flags, Python, the application,
 * the engine. The command itself (cluster/runcl.c) sits above both the stream
 * and the cluster layers: it adds its own flags through run_ext_t and, for a
 * cluster, fills engine_options_t.cluster before calling run_worker. */
#ifndef BETTONG_RUN_H
#define BETTONG_RUN_H

#include <stdint.h>
#include <stdio.h>

#include "net/inconn.h"
#include "stream/engine.h"

#define RUN_MAX_PATHS 32

typedef struct {
    char module[256];
    const char *paths[RUN_MAX_PATHS + 1];
    size_t npaths;
    char *owned[RUN_MAX_PATHS]; /* strings in paths we allocated */
    size_t nowned;
    engine_options_t engine;    /* the caller may set .cluster and .cluster_config */
    uint64_t max_frame;
    inconn_flags_t limits;      /* --max-buffered, --max-connections */
    uint32_t ignored;           /* Wallaroo flags given that have no effect (a bit each) */
    int given_interval;         /* --time-between-checkpoints was given */
} run_args_t;

/* What the command above adds to the engine's flags. */
typedef struct {
    /* argv[*i] is not an engine flag: 1 if it is one of the caller's (with *i
     * moved past its value), 0 to leave it to the application, -1 after a
     * usage error (the message printed). */
    int (*flag)(void *ctx, int argc, char **argv, int *i);
    /* Its part of --help, printed after the engine's flags. */
    void (*usage)(FILE *f);
    void *ctx;
} run_ext_t;

/* argv[0] is "run". Fills a (from defaults); warns once about each Wallaroo
 * flag given that has no effect here. Returns 0 to run, 1 after --help, -1 on
 * a usage error. a is to be freed with run_args_free (or run_worker) either way. */
int run_parse(run_args_t *a, int argc, char **argv, const run_ext_t *ext);
/* Start Python, load the application and run the engine; frees a. argv is
 * the one given to run_parse (the application sees it with the program name).
 * Returns the process exit code. */
int run_worker(run_args_t *a, int argc, char **argv);
void run_args_free(run_args_t *a);

#endif
