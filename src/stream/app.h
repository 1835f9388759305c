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
#include "util/metrics.h"
#include "stream/state.h"
#include "stream/window.h"

typedef enum {
    STEP_STATELESS, STEP_STATEFUL, STEP_PARTITION, STEP_PARTITION_U64,
    /* Wallaroo 0.6 pipelines (stream/graph.c): */
    STEP_KEY_BY,      /* sets the stream's key: key_fn(data), or const_key for collect() */
    STEP_KEYED_STATE, /* a state computation over the stream's key; returns its output */
    STEP_WINDOW       /* range or count windows over the stream's key (stream/window.h) */
} step_kind;

/* A step's counts for the metrics endpoint (stream/smetrics.h), kept by
 * exec.c on the loop thread: messages it ran here, outputs it passed on,
 * and its Python call's time (sampled messages). */
typedef struct {
    uint64_t in, out;
    metrics_hist_t latency; /* ns */
} step_stats_t;

typedef struct {
    step_kind kind;
    int multi;         /* compute_multi: a list of outputs */
    int parallel;      /* to_parallel (same as a stateless step on one worker) */
    char *label;       /* "computation 'name'" for logs */
    PyObject *fn;      /* owned: fn(data) or fn(data, state); NULL for STEP_KEY_BY */
    PyObject *partition_fn; /* owned: key = partition_fn(data) */
    PyObject *key_fn;       /* owned, STEP_KEY_BY: key = key_fn(data) (then made bytes) */
    PyObject *const_key;    /* owned, STEP_KEY_BY of collect(): the one key (bytes) */
    state_store_t *state;   /* shared with the registry */
    /* owned, STEP_WINDOW: the windows' spec and clock; the windows themselves
     * are in `state`, per key */
    window_spec_t *window;
    int window_borrowed;    /* the spec is another pipeline's (a merge's shared stage) */
    step_stats_t stats;
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
    unsigned max_clients;      /* TCP: connections served at once (0: no limit) */
    int initializer_only;      /* runs on the cluster's initializer only (Wallaroo 0.6) */
    /* A Wallaroo 0.6.1 source connector whose decoder is a
     * stream_message_decoder: a TCP source whose frames are connector frames
     * (frame_spec_connector), `decode` the user's function on the payload. */
    int connector;
} source_t;

typedef struct {
    char host[256];
    int port;
    struct sockaddr_storage addr;
} sink_addr_t;

/* One sink a pipeline's outputs go to, with its encoder. */
typedef struct {
    size_t sink;        /* into app->sinks: pipelines to one address share it */
    PyObject *encode;   /* owned */
    /* A Wallaroo 0.6.1 sink connector's stream_message_encoder: `encode` is
     * the user's function and each output is written as a connector frame
     * (event time 0, as Wallaroo writes it), framed here in C. */
    int connector_frame;
    char *label;        /* "encoder 'f' (FILE:LINE)": what its errors name */
    uint64_t messages;  /* outputs encoded into the sink's buffer (metrics) */
} pipe_out_t;

typedef struct {
    char *name;
    source_t source;
    step_t *steps;
    size_t nsteps;
    pipe_out_t *outs;   /* every output goes to each of them (to_sinks); none: done() */
    size_t nouts;
    /* Wallaroo 0.6 conventions: an encoder's None writes nothing, and
     * compute_multi must return a list (or None). */
    int api06;
    /* Metrics: messages its source gave this worker (frames or generator
     * values), and frames whose decoder raised. */
    uint64_t messages_in, decode_errors;
} pipeline_t;

typedef struct {
    char *name;
    PyObject *module;   /* owned */
    pipeline_t *pipes;
    size_t npipes;
    sink_addr_t *sinks;
    size_t nsinks;
    state_registry_t states;
    /* Messages crossing a worker boundary go through the module's own
     * serialize/deserialize when it defines both (as in Wallaroo, which used
     * them for its messages); everything else that crosses or is kept (keys,
     * state) and the messages of the other modules go through py/msgcodec
     * with pickle (protocol 5). */
    PyObject *user_serialize;   /* owned, or NULL: pickle for the messages too */
    PyObject *user_deserialize; /* owned, or NULL */
    /* What encodes and decodes the messages, for error reports: "serialize()
     * of module 'M'" and the like, or "pickle.dumps"/"pickle.loads". */
    char *message_encoder;
    char *message_decoder;
    PyObject *dumps;            /* owned: pickle.dumps */
    PyObject *loads;            /* owned: pickle.loads */
    PyObject *protocol;         /* owned: the pickle protocol */
} app_t;

typedef struct {
    const char *module;      /* module name */
    int argc;
    char **argv;             /* handed to application_setup */
    uint64_t max_frame;
} app_options_t;

/* With GIL. Returns 0, or -1 with a message in err (and nothing allocated). */
int app_load(app_t *app, const app_options_t *opt, char *err, size_t errlen);

/* For the loaders of an application's description (app.c, graph.c), with GIL.
 * Each returns -1 with a message in err on failure. */
/* Set err from printf-style text; returns -1. */
int app_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Set err from the pending Python exception and its traceback; returns -1. */
int app_fail_py(char *err, size_t errlen, const char *what);
/* The plain function behind a decorator object (_bettong_fn), or the named
 * method of a hand-written one: a new reference, or NULL. */
PyObject *app_callable(PyObject *obj, const char *method, const char *what, char *err,
                       size_t errlen);
/* "computation 'NAME'" from obj.name(): malloc'd, or NULL. */
char *app_label(PyObject *obj, const char *what, char *err, size_t errlen);
/* The framing and decode of a TCP source from its decoder object (a
 * stream_message_decoder's connector frames are cut in C: src->connector). */
int app_load_decoder(source_t *src, PyObject *dec, uint64_t max_frame, char *err,
                     size_t errlen);
/* Resolve host:port into src (a TCP source). */
int app_source_addr(source_t *src, const char *host, int port, char *err, size_t errlen);
/* The index of the sink at host:port in app->sinks, added if new. */
int app_sink_index(app_t *app, const char *host, int port, size_t *index, char *err,
                   size_t errlen);
/* Append an output (sink index, encoder object) to p (a
 * stream_message_encoder's as connector frames: connector_frame). */
int app_add_out(pipeline_t *p, size_t sink, PyObject *encoder, char *err, size_t errlen);
/* Refuse two TCP sources on one address. */
int app_check_listen_addresses(app_t *app, char *err, size_t errlen);
/* With GIL. */
void app_free(app_t *app);
/* With GIL. Append a message's serialized form to out: through the module's
 * own serialize, or py/msgcodec. Returns 0, or -1 with a Python exception
 * whose text names the module's serialize when it returned no bytes (out may
 * hold a partial form: the caller cuts it off). */
int app_message_encode(app_t *app, PyObject *msg, buf_t *out);
/* With GIL. The message back from its serialized form, or NULL with an exception. */
PyObject *app_message_decode(app_t *app, const void *data, size_t len);
/* With GIL. Keys and state: always py/msgcodec (pickle), never the module's
 * serialize, which may know its messages only. Same returns as above. */
int app_value_encode(app_t *app, PyObject *obj, buf_t *out);
PyObject *app_value_decode(app_t *app, const void *data, size_t len);

#endif
