/* The live dashboard: its static files (net/webassets.h, built into the
 * binary) served by a service's metrics endpoint, index.html also at "/".
 * The page itself (web/dashboard/app.js) polls /metrics and
 * /topology.json of this endpoint and of the workers named in its URL. */
#ifndef BETTONG_DASHBOARD_H
#define BETTONG_DASHBOARD_H

#include "net/httpd.h"
#include "util/metrics.h"

/* Add the dashboard's routes to h. Returns 0, or -1 (the route table is full). */
int dashboard_routes(httpd_t *h);

/* A service's endpoint: /metrics rendered from m (readable from pages of
 * other origins, so that one worker's dashboard can poll the others:
 * docs/security.md) and the dashboard's files. Returns 0, or -1 (full). */
int dashboard_serve_metrics(httpd_t *h, metrics_t *m);

#endif
