/* The engine of one worker: one libuv loop on one thread runs the sources, the
 * steps (through exec, with the GIL taken once per batch) and the sinks.
 * Backpressure: when the bytes waiting in the sinks pass a high mark every source
 * stops reading, and reading resumes below a low mark, so memory stays bounded
 * whatever the input rate and however slow or absent the receiver is. */
#ifndef BETTONG_ENGINE_H
#define BETTONG_ENGINE_H

#include <stdint.h>

#include "cluster/config.h"
#include "stream/app.h"
#include "stream/exec.h"

typedef struct {
    on_error_t on_error;
    const char *dead_letter_path;
    double flush_timeout_s;      /* how long a stop waits for the sinks to drain */
    uint64_t backlog_high;       /* bytes waiting in sinks that pause the sources */
    uint64_t backlog_low;        /* ... and that resume them */
    const cluster_config_t *cluster; /* NULL: a worker on its own */
    int shared_ports;            /* sources share their ports with sibling processes */
} engine_options_t;

/* Run until SIGINT/SIGTERM (or --on-error=stop). Called without the GIL. Returns
 * the process exit code: 0 after a clean stop with everything flushed, 1 if
 * output was not delivered, 3 if a cluster peer was lost. In a cluster, a
 * signal asks the coordinator to stop every worker together. */
int engine_run(app_t *app, const engine_options_t *opt);

#endif
