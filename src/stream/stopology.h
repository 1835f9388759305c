/* The topology of a running stream application as JSON, for the dashboard
 * (served at /topology.json by the worker's metrics endpoint): the
 * application, this worker, and per pipeline its source, its steps (index,
 * name, kind: the same index and name as the step metrics' labels) and its
 * sinks (H:P, as the sink metrics' label); in a cluster, the members (name,
 * state, metrics address) this worker knows. Made from the loaded app_t, in C;
 * no Python. */
#ifndef BETTONG_STOPOLOGY_H
#define BETTONG_STOPOLOGY_H

#include "stream/app.h"
#include "util/buf.h"

typedef struct {
    const app_t *app;
    const char *worker;  /* this worker's name */
    int cluster;         /* 1: one worker of a cluster */
    /* The address pipeline i's source listens on here ("H:P", the port the
     * kernel gave for port 0), or NULL: the configured one is shown. */
    const char *(*source_addr)(void *ctx, size_t i);
    /* A cluster's members with their metrics addresses (a JSON array appended
     * to out; 0 or -1), or NULL outside a cluster: "members" is left out. */
    int (*members)(void *ctx, buf_t *out);
    void *ctx;
} stopology_t;

/* Append the JSON document to out. Returns 0 or -1 (memory). */
int stopology_json(const stopology_t *t, buf_t *out);

/* A JSON string (quoted, escaped) appended to out; public for the tests. */
int stopology_json_string(buf_t *out, const char *s);

#endif
