/* The coordinator: in the initializer's process, on its loop. It admits
 * workers (the cluster forms once --worker-count have joined), owns the
 * routing table, and runs every change the same way, one at a time:
 *
 *   1. PAUSE: every worker holds its sources and reports, per peer, how many
 *      messages it forwarded and how many it ran;
 *   2. COUNT: ask again until two rounds agree and every message sent has
 *      been run (nothing is in flight: the cluster is quiet);
 *   3. MIGRATE: old owners send the moving slots' state to the new owners
 *      over their data links; the new owners report each slot installed;
 *   4. TABLE: every worker takes the new routing table and acknowledges;
 *   5. RESUME (or LEAVE for a worker that shrank away, FINISH for a stop).
 *
 * Because nothing is in flight while slots move and everyone has the new
 * table before any source runs again, no message is lost, run twice or
 * overtaken by a later one of its key. Changes: a worker joining (grow), an
 * admin's shrink, and a stop asked for by any worker (SIGINT/SIGTERM). */
#ifndef BETTONG_COORD_H
#define BETTONG_COORD_H

#include <stddef.h>
#include <uv.h>

#include "cluster/config.h"

typedef struct coord coord_t;

/* Listen on cfg->control (or adopt cfg->control_fd). Returns 0, or -1 with err
 * set; either way *out (NULL only when out of memory) is to be shut down and
 * freed by the caller. */
int coord_start(coord_t **out, uv_loop_t *loop, const cluster_config_t *cfg, char *err,
                size_t errlen);
/* The address the coordinator listens on (with the port the kernel gave). */
const char *coord_address(const coord_t *k);
/* Send the members their heartbeat now (the loop is busy with a long batch). */
void coord_keepalive(coord_t *k);
/* Say goodbye to the members (not when leaving `quietly`: the members must
 * take the coordinator as lost), flush, close every handle. */
void coord_shutdown(coord_t *k, int quietly);
/* After the loop ended. */
void coord_free(coord_t *k);

#endif
