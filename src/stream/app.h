/* An application: the user's module imported, application_setup(argv) called,
 * and the description it returned turned into C structures holding the
 * callables to use per message. Every callable is looked up here, once. */
#ifndef BETTONG_APP_H
#define BETTONG_APP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <sys/socket.h>

#include "net/frame.h"
#include "util/buf.h"
#include "stream/state.h"

typedef enum { STEP_STATELESS, STEP_STATEFUL, STEP_PARTITION, STEP_PARTITION_U64 } step_kind;

typedef struct {
    step_kind kind;
    int multi;         /* compute_multi: a list of outputs */
    int parallel;      /* to_parallel (same as a stateless step on one worker) */
    char *label;       /* "computation 'name'" for logs */
    PyObject *fn;      /* owned: fn(data) or fn(data, state) */
    PyObject *partition_fn; /* owned: key = partition_fn(data) */
    state_store_t *state;   /* shared with the registry */
} step_t;

typedef enum { SOURCE_TCP, SOURCE_GEN } source_kind;

typedef struct {
    source_kind kind;
    char host[256];
    int port;
    struct sockaddr_storage addr;
    frame_spec_t frame;        /* header parsing (C, or a Python payload_length) */
    PyObject *decode;          /* owned: decode(payload_bytes) */
    PyObject *payload_length;  /* owned, only for decoders C cannot parse */
    PyObject *gen_initial;     /* owned: generator.initial_value */
    PyObject *gen_apply;       /* owned: generator.apply */
} source_t;

typedef struct {
    char host[256];
    int port;
    struct sockaddr_storage addr;
} sink_addr_t;

typedef struct {
    char *name;
    source_t source;
    step_t *steps;
    size_t nsteps;
    int has_sink;
    size_t sink_index;  /* into app->sinks: pipelines to one address share it */
    PyObject *encode;   /* owned */
} pipeline_t;

typedef struct {
    char *name;
    PyObject *module;   /* owned */
    pipeline_t *pipes;
    size_t npipes;
    sink_addr_t *sinks;
    size_t nsinks;
    state_registry_t states;
    /* What messages and state crossing a worker boundary go through: the
     * module's own serialize/deserialize, or pickle (protocol 5). */
    PyObject *serialize;   /* owned */
    PyObject *deserialize; /* owned */
    PyObject *protocol;    /* owned: the pickle protocol, NULL for the module's own */
} app_t;

typedef struct {
    const char *module;      /* module name */
    int argc;
    char **argv;             /* handed to application_setup */
    uint64_t max_frame;
} app_options_t;

/* With GIL. Returns 0, or -1 with a message in err (and nothing allocated). */
int app_load(app_t *app, const app_options_t *opt, char *err, size_t errlen);
/* With GIL. */
void app_free(app_t *app);
/* With GIL. Append obj's serialized form to out (with pickle, through
 * py/msgcodec). Returns 0, or -1 with a Python exception (out may hold a
 * partial form: the caller cuts it off). */
int app_serialize_into(app_t *app, PyObject *obj, buf_t *out);
/* With GIL. The object back from its serialized form, or NULL with an exception. */
PyObject *app_deserialize(app_t *app, const void *data, size_t len);

#endif
