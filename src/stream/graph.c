#include "stream/graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "py/bridge.h"
#include "util/log.h"

#define fail app_fail

/* Wallaroo 0.6.1 serves this many connections on a source connector. */
#define CONNECTOR_SOURCE_CLIENTS 10

/* The tree, checked: every node but the root has one parent, and walking up
 * from any node reaches the root. vs and es are borrowed. */
typedef struct {
    PyObject *vs, *es;
    Py_ssize_t n, root;
    Py_ssize_t *parent;
} tree_t;

int graph_is_description(PyObject *desc)
{
    return PyTuple_Check(desc) && PyTuple_GET_SIZE(desc) == 4;
}

static PyObject *stages_of(const tree_t *t, Py_ssize_t node)
{
    return PyList_GET_ITEM(t->vs, node);
}

/* A stage's tag ("to", "key_by", ...), or NULL if it is not a tuple that
 * starts with a str. */
static const char *stage_tag(PyObject *stage)
{
    if (!PyTuple_Check(stage) || PyTuple_GET_SIZE(stage) < 1 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(stage, 0)))
        return NULL;
    const char *tag = PyUnicode_AsUTF8(PyTuple_GET_ITEM(stage, 0));
    if (!tag)
        PyErr_Clear();
    return tag;
}

static int is_sink_tag(const char *tag)
{
    return tag && (strcmp(tag, "to_sink") == 0 || strcmp(tag, "to_sinks") == 0);
}

/* ------------------------------------------------------------ the tree */

static int check_node(tree_t *t, Py_ssize_t i, char *err, size_t errlen)
{
    PyObject *stages = PyList_GET_ITEM(t->vs, i);
    PyObject *edges = PyList_GET_ITEM(t->es, i);
    if (!PyList_Check(stages) || !PyList_Check(edges))
        return fail(err, errlen, "build_application(): node %zd is not a list of stages", i);
    Py_ssize_t ne = PyList_GET_SIZE(edges);
    const char *first = PyList_GET_SIZE(stages) > 0 ? stage_tag(PyList_GET_ITEM(stages, 0))
                                                     : NULL;
    int leaf = first && strcmp(first, "source") == 0;
    if (ne != (leaf ? 0 : 2))
        return fail(err, errlen, "build_application(): node %zd must be a source or the merge "
                    "of two pipelines", i);
    for (Py_ssize_t k = 0; k < ne; k++) {
        PyObject *c = PyList_GET_ITEM(edges, k);
        Py_ssize_t child = PyLong_Check(c) ? PyLong_AsSsize_t(c) : -1;
        if (child < 0 || child >= t->n || child == i || t->parent[child] != -1) {
            PyErr_Clear();
            return fail(err, errlen, "build_application(): node %zd merges a node that does "
                        "not exist or is merged twice", i);
        }
        t->parent[child] = i;
    }
    return 0;
}

static int parse_tree(tree_t *t, PyObject *desc, char *err, size_t errlen)
{
    PyObject *root = PyTuple_GET_ITEM(desc, 1);
    t->vs = PyTuple_GET_ITEM(desc, 2);
    t->es = PyTuple_GET_ITEM(desc, 3);
    if (!PyUnicode_Check(PyTuple_GET_ITEM(desc, 0)) || !PyLong_Check(root) ||
        !PyList_Check(t->vs) || !PyList_Check(t->es) ||
        PyList_GET_SIZE(t->vs) != PyList_GET_SIZE(t->es) || PyList_GET_SIZE(t->vs) == 0)
        return fail(err, errlen, "application_setup() returned a 4-tuple that is not "
                    "wallaroo.build_application()'s (app_name, root_idx, vs, es)");
    t->n = PyList_GET_SIZE(t->vs);
    t->root = PyLong_AsSsize_t(root);
    if (t->root < 0 || t->root >= t->n) {
        PyErr_Clear();
        return fail(err, errlen, "build_application(): root index out of range");
    }
    t->parent = malloc((size_t)t->n * sizeof *t->parent);
    if (!t->parent)
        return fail(err, errlen, "out of memory");
    for (Py_ssize_t i = 0; i < t->n; i++)
        t->parent[i] = -1;
    for (Py_ssize_t i = 0; i < t->n; i++)
        if (check_node(t, i, err, errlen) < 0)
            return -1;
    /* Every node reaches the root (no cycle, nothing left over). */
    for (Py_ssize_t i = 0; i < t->n; i++) {
        Py_ssize_t at = i, steps = 0;
        while (at != t->root && at != -1 && steps++ < t->n)
            at = t->parent[at];
        if (at != t->root)
            return fail(err, errlen, "build_application(): node %zd is not part of the "
                        "application's pipeline", i);
    }
    return 0;
}

/* ------------------------------------------------------------ configs */

/* A port given as an int or (as Wallaroo's own parsers give it) a str. */
static int port_of(PyObject *v, int *port)
{
    long n = -1;
    if (PyLong_Check(v)) {
        n = PyLong_AsLong(v);
    } else if (PyUnicode_Check(v)) {
        const char *s = PyUnicode_AsUTF8(v);
        char *end;
        if (s && *s)
            n = strtol(s, &end, 10);
        if (!s || !*s || *end)
            n = -1;
    }
    PyErr_Clear();
    if (n < 0 || n > 65535)
        return -1;
    *port = (int)n;
    return 0;
}

/* The host at cfg[at] and the port after it. */
static int host_port_of(PyObject *cfg, Py_ssize_t at, char *host, size_t hostlen, int *port,
                        const char *what, char *err, size_t errlen)
{
    PyObject *h = PyTuple_GET_ITEM(cfg, at);
    const char *u = PyUnicode_Check(h) ? PyUnicode_AsUTF8(h) : NULL;
    if (!u || port_of(PyTuple_GET_ITEM(cfg, at + 1), port) < 0) {
        PyErr_Clear();
        return fail(err, errlen, "%s: bad host or port (a str host and an int or str port "
                    "in 0..65535)", what);
    }
    snprintf(host, hostlen, "%s", *u ? u : "127.0.0.1");
    return 0;
}

/* Kinds of source and sink Wallaroo 0.6.1 has that Bettong does not. */
static int refuse_kind(const char *what, const char *kind, char *err, size_t errlen)
{
    if (strcmp(kind, "kafka") == 0 || strcmp(kind, "kafka-internal") == 0)
        return fail(err, errlen, "%s: Kafka is not supported by Bettong (TCP, generator and "
                    "connector sources, TCP and connector sinks are)", what);
    return fail(err, errlen, "%s: unknown kind '%s'", what, kind);
}

static int load_tcp_source(source_t *src, PyObject *cfg, uint64_t max_frame, const char *what,
                           char *err, size_t errlen)
{
    if (PyTuple_GET_SIZE(cfg) != 5)
        return fail(err, errlen, "%s: expected (\"tcp\", host, port, decoder, parallelism)",
                    what);
    PyObject *par = PyTuple_GET_ITEM(cfg, 4);
    long n = PyLong_Check(par) && !PyBool_Check(par) ? PyLong_AsLong(par) : -1;
    if (n < 1 || n > 1000000) {
        PyErr_Clear();
        return fail(err, errlen, "%s: parallelism must be an int in 1..1000000 (the number of "
                    "clients served at once)", what);
    }
    char host[256];
    int port;
    if (host_port_of(cfg, 1, host, sizeof host, &port, what, err, errlen) < 0 ||
        app_source_addr(src, host, port, err, errlen) < 0)
        return -1;
    src->kind = SOURCE_TCP;
    src->max_clients = (unsigned)n;
    return app_load_decoder(src, PyTuple_GET_ITEM(cfg, 3), max_frame, err, errlen);
}

/* ("source_connector", name, host, port, encoder, decoder): a TCP listener
 * (Wallaroo 0.6.1 serves up to 10 connections) framed by the decoder: a
 * stream_message_decoder's connector frames are cut in C (app_load_decoder). */
static int load_connector_source(source_t *src, PyObject *cfg, uint64_t max_frame,
                                 const char *what, char *err, size_t errlen)
{
    if (PyTuple_GET_SIZE(cfg) != 6)
        return fail(err, errlen, "%s: expected (\"source_connector\", name, host, port, "
                    "encoder, decoder)", what);
    char host[256];
    int port;
    if (host_port_of(cfg, 2, host, sizeof host, &port, what, err, errlen) < 0 ||
        app_source_addr(src, host, port, err, errlen) < 0)
        return -1;
    src->kind = SOURCE_TCP;
    src->max_clients = CONNECTOR_SOURCE_CLIENTS;
    return app_load_decoder(src, PyTuple_GET_ITEM(cfg, 5), max_frame, err, errlen);
}

static int load_gen_source(source_t *src, PyObject *cfg, const char *what, char *err,
                           size_t errlen)
{
    PyObject *g = PyTuple_GET_SIZE(cfg) == 2 ? PyTuple_GET_ITEM(cfg, 1) : NULL;
    src->kind = SOURCE_GEN;
    src->gen_initial = g ? py_getattr_opt(g, "initial_value") : NULL;
    src->gen_apply = g ? py_getattr_opt(g, "apply") : NULL;
    if (!src->gen_initial || !src->gen_apply)
        return fail(err, errlen, "%s: the generator needs initial_value() and apply()", what);
    return 0;
}

/* ("source", name, config): the pipeline's name and source. */
static int load_source(pipeline_t *p, PyObject *stage, uint64_t max_frame, char *err,
                       size_t errlen)
{
    PyObject *name = PyTuple_GET_SIZE(stage) == 3 ? PyTuple_GET_ITEM(stage, 1) : NULL;
    PyObject *cfg = name ? PyTuple_GET_ITEM(stage, 2) : NULL;
    PyObject *name_str = name ? PyObject_Str(name) : NULL;
    const char *u = name_str ? PyUnicode_AsUTF8(name_str) : NULL;
    p->name = strdup(u ? u : "?");
    Py_XDECREF(name_str);
    PyErr_Clear();
    if (!p->name)
        return fail(err, errlen, "out of memory");
    char what[300];
    snprintf(what, sizeof what, "source '%s'", p->name);
    const char *kind = cfg ? stage_tag(cfg) : NULL;
    if (!kind)
        return fail(err, errlen, "%s: not a source config", what);
    /* As in Wallaroo 0.6.1, one instance of each source in the cluster. */
    p->source.initializer_only = 1;
    if (strcmp(kind, "tcp") == 0)
        return load_tcp_source(&p->source, cfg, max_frame, what, err, errlen);
    if (strcmp(kind, "gen") == 0)
        return load_gen_source(&p->source, cfg, what, err, errlen);
    if (strcmp(kind, "source_connector") == 0)
        return load_connector_source(&p->source, cfg, max_frame, what, err, errlen);
    return refuse_kind(what, kind, err, errlen);
}

/* ("sink_connector", name, host, port, encoder, decoder): every worker
 * connects to host:port, as to a TCP sink; the encoder's output is written as
 * Wallaroo writes encode()'s: a stream_message_encoder's as connector frames
 * (made in C, app_add_out), another's as it is. */
static int load_connector_sink(app_t *app, pipeline_t *p, PyObject *cfg, char *err,
                               size_t errlen)
{
    if (PyTuple_GET_SIZE(cfg) != 6)
        return fail(err, errlen, "sink: expected (\"sink_connector\", name, host, port, "
                    "encoder, decoder)");
    char host[256];
    int port;
    size_t index;
    if (host_port_of(cfg, 2, host, sizeof host, &port, "sink connector", err, errlen) < 0 ||
        app_sink_index(app, host, port, &index, err, errlen) < 0)
        return -1;
    return app_add_out(p, index, PyTuple_GET_ITEM(cfg, 4), err, errlen);
}

static int load_sink_config(app_t *app, pipeline_t *p, PyObject *cfg, char *err, size_t errlen)
{
    const char *kind = stage_tag(cfg);
    if (!kind)
        return fail(err, errlen, "to_sink: %s", "not a sink config");
    if (strcmp(kind, "sink_connector") == 0)
        return load_connector_sink(app, p, cfg, err, errlen);
    if (strcmp(kind, "tcp") != 0)
        return refuse_kind("sink", kind, err, errlen);
    if (PyTuple_GET_SIZE(cfg) != 4)
        return fail(err, errlen, "sink: expected (\"tcp\", host, port, encoder)");
    char host[256];
    int port;
    size_t index;
    if (host_port_of(cfg, 1, host, sizeof host, &port, "sink", err, errlen) < 0 ||
        app_sink_index(app, host, port, &index, err, errlen) < 0)
        return -1;
    return app_add_out(p, index, PyTuple_GET_ITEM(cfg, 3), err, errlen);
}

/* ("to_sink", config) or ("to_sinks", [config, ...]). */
static int load_sinks(app_t *app, pipeline_t *p, PyObject *stage, char *err, size_t errlen)
{
    PyObject *arg = PyTuple_GET_SIZE(stage) == 2 ? PyTuple_GET_ITEM(stage, 1) : NULL;
    if (!arg)
        return fail(err, errlen, "a to_sink/to_sinks stage without its config");
    if (strcmp(stage_tag(stage), "to_sink") == 0)
        return load_sink_config(app, p, arg, err, errlen);
    if (!PyList_Check(arg) || PyList_GET_SIZE(arg) == 0)
        return fail(err, errlen, "to_sinks needs a non-empty list of sink configs");
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(arg); i++)
        if (load_sink_config(app, p, PyList_GET_ITEM(arg, i), err, errlen) < 0)
            return -1;
    return 0;
}

/* ------------------------------------------------------------ steps */

/* The label of a key extractor: its name() if it has one. */
static char *key_label(PyObject *ke, char *err, size_t errlen)
{
    PyObject *name = py_getattr_opt(ke, "name");
    int has_name = name && PyCallable_Check(name);
    Py_XDECREF(name);
    if (has_name)
        return app_label(ke, "key extractor", err, errlen);
    char *label = strdup("key extractor");
    if (!label)
        fail(err, errlen, "out of memory");
    return label;
}

/* collect() keys every message with one key, distinct per collect() of the
 * application (Wallaroo's "collect-key-<n>"): its place among them. */
static long collect_ordinal(const tree_t *t, Py_ssize_t node, Py_ssize_t idx)
{
    long n = 0;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        PyObject *stages = stages_of(t, i);
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(stages); j++) {
            if (i == node && j == idx)
                return n;
            const char *tag = stage_tag(PyList_GET_ITEM(stages, j));
            n += tag && strcmp(tag, "collect") == 0;
        }
    }
    return n;
}

static int load_key_step(step_t *s, PyObject *stage, const tree_t *t, Py_ssize_t node,
                         Py_ssize_t idx, char *err, size_t errlen)
{
    s->kind = STEP_KEY_BY;
    if (strcmp(stage_tag(stage), "collect") == 0) {
        s->const_key = PyBytes_FromFormat("collect-key-%ld", collect_ordinal(t, node, idx));
        s->label = strdup("collect()");
        if (!s->const_key || !s->label)
            return app_fail_py(err, errlen, "out of memory");
        return 0;
    }
    PyObject *ke = PyTuple_GET_ITEM(stage, 1);
    if (!(s->label = key_label(ke, err, errlen)))
        return -1;
    s->key_fn = app_callable(ke, "extract_key", s->label, err, errlen);
    return s->key_fn ? 0 : -1;
}

/* The class (or factory) that makes a state computation's state: the
 * decorator's state=, or the initial_state() of a hand-written one. */
static PyObject *state_factory(PyObject *comp, const char *label, char *err, size_t errlen)
{
    PyObject *cls = py_getattr_opt(comp, "_bettong_state_class");
    if (cls && cls != Py_None && PyCallable_Check(cls))
        return cls;
    Py_XDECREF(cls);
    PyObject *init = py_getattr_opt(comp, "initial_state");
    if (init && PyCallable_Check(init))
        return init;
    Py_XDECREF(init);
    fail(err, errlen, "%s has no state class: declare it with "
         "@wallaroo.state_computation(name=..., state=StateClass)", label);
    return NULL;
}

static int load_computation(app_t *app, step_t *s, PyObject *stage, Py_ssize_t node,
                            Py_ssize_t idx, char *err, size_t errlen)
{
    PyObject *comp = PyTuple_GET_ITEM(stage, 1);
    PyObject *multi = py_getattr_opt(comp, "compute_multi");
    s->multi = multi && PyCallable_Check(multi);
    Py_XDECREF(multi);
    if (!(s->label = app_label(comp, "computation", err, errlen)))
        return -1;
    s->fn = app_callable(comp, s->multi ? "compute_multi" : "compute", s->label, err, errlen);
    if (!s->fn)
        return -1;
    if (strcmp(stage_tag(stage), "to") == 0) {
        s->kind = STEP_STATELESS;
        return 0;
    }
    s->kind = STEP_KEYED_STATE;
    /* One store per stage of the tree: the pipelines of a merge share it, and
     * every worker names it alike (checkpoints and moving slots use the name). */
    char name[64];
    snprintf(name, sizeof name, "wallaroo06 state %zd.%zd", node, idx);
    if ((s->state = state_store_find(&app->states, name)))
        return 0;
    PyObject *factory = state_factory(comp, s->label, err, errlen);
    if (!factory)
        return -1;
    s->state = state_store_get(&app->states, name, factory, err, errlen);
    Py_DECREF(factory);
    return s->state ? 0 : -1;
}

/* The spec of a window stage an earlier pipeline of a merge loaded already (its
 * store is `st`): the pipelines share one clock, as they share the windows. */
static window_spec_t *window_loaded(const app_t *app, const state_store_t *st)
{
    for (size_t i = 0; i < app->npipes; i++)
        for (size_t j = 0; j < app->pipes[i].nsteps; j++) {
            const step_t *o = &app->pipes[i].steps[j];
            if (o->kind == STEP_WINDOW && o->state == st && o->window && !o->window_borrowed)
                return o->window;
        }
    return NULL;
}

/* A window's late sink (event time, LATE_SIDE): one of the application's
 * sinks, with its encoder, loaded as a to_sink's. */
static int load_late_sink(app_t *app, window_spec_t *w, char *err, size_t errlen)
{
    pipeline_t tmp = {0};
    int rc = load_sink_config(app, &tmp, w->late_sink_cfg, err, errlen);
    if (rc == 0) {
        w->late_sink = tmp.outs[0].sink;
        w->late_encode = tmp.outs[0].encode;
        free(tmp.outs[0].label);
    }
    free(tmp.outs);
    return rc;
}

/* ("to_range_windows", range, slide, delay, agg[, event_time]) /
 * ("to_session_windows", gap, agg, event_time) / ("to_count_windows", n,
 * agg): a step over the stream's key whose per-key state is the key's windows
 * (a list, stream/window.h) in a store of its own. */
static int load_window(app_t *app, step_t *s, PyObject *stage, Py_ssize_t node, Py_ssize_t idx,
                       char *err, size_t errlen)
{
    const char *tag = stage_tag(stage);
    s->kind = STEP_WINDOW;
    PyObject *agg = window_stage_aggregation(stage);
    if (!agg)
        return fail(err, errlen, "%s: a window stage without its aggregation", tag);
    char what[64];
    snprintf(what, sizeof what, "%s", strcmp(tag, "to_range_windows") == 0 ? "range windows"
             : strcmp(tag, "to_session_windows") == 0 ? "session windows" : "count windows");
    if (!(s->label = app_label(agg, what, err, errlen)))
        return -1;
    char name[64];
    snprintf(name, sizeof name, "wallaroo06 windows %zd.%zd", node, idx);
    if ((s->state = state_store_find(&app->states, name)) &&
        (s->window = window_loaded(app, s->state))) {
        s->window_borrowed = 1;
        return 0;
    }
    if (!(s->window = window_spec_new(stage, err, errlen)))
        return -1;
    if (s->window->late_sink_cfg && load_late_sink(app, s->window, err, errlen) < 0)
        return -1;
    s->state = state_store_get(&app->states, name, (PyObject *)&PyList_Type, err, errlen);
    return s->state ? 0 : -1;
}

static int load_step(app_t *app, step_t *s, PyObject *stage, const tree_t *t, Py_ssize_t node,
                     Py_ssize_t idx, char *err, size_t errlen)
{
    const char *tag = stage_tag(stage);
    if (!tag)
        return fail(err, errlen, "a stage that is not a (tag, ...) tuple");
    if (strcmp(tag, "to_range_windows") == 0 || strcmp(tag, "to_count_windows") == 0 ||
        strcmp(tag, "to_session_windows") == 0)
        return load_window(app, s, stage, node, idx, err, errlen);
    if (strcmp(tag, "collect") == 0)
        return load_key_step(s, stage, t, node, idx, err, errlen);
    if (PyTuple_GET_SIZE(stage) != 2)
        return fail(err, errlen, "stage '%s' has %zd items, expected 2", tag,
                    PyTuple_GET_SIZE(stage));
    if (strcmp(tag, "key_by") == 0)
        return load_key_step(s, stage, t, node, idx, err, errlen);
    if (strcmp(tag, "to") == 0 || strcmp(tag, "to_state") == 0)
        return load_computation(app, s, stage, node, idx, err, errlen);
    if (strcmp(tag, "source") == 0)
        return fail(err, errlen, "a source stage inside a pipeline");
    return fail(err, errlen, "unknown stage '%s'", tag);
}

/* ------------------------------------------------------------ pipelines */

/* The nodes from `leaf` up to the root, in order; their count in *len. */
static Py_ssize_t *chain_of(const tree_t *t, Py_ssize_t leaf, Py_ssize_t *len)
{
    Py_ssize_t *chain = malloc((size_t)t->n * sizeof *chain);
    Py_ssize_t n = 0;
    for (Py_ssize_t at = leaf; chain && at != -1; at = t->parent[at])
        chain[n++] = at;
    *len = n;
    return chain;
}

/* Steps of the chain: every stage but the leaf's source and the sink stage. */
static size_t count_steps(const tree_t *t, const Py_ssize_t *chain, Py_ssize_t len)
{
    size_t n = 0;
    for (Py_ssize_t k = 0; k < len; k++) {
        PyObject *stages = stages_of(t, chain[k]);
        for (Py_ssize_t j = k == 0 ? 1 : 0; j < PyList_GET_SIZE(stages); j++)
            n += !is_sink_tag(stage_tag(PyList_GET_ITEM(stages, j)));
    }
    return n;
}

/* A state computation with no key_by or collect() before it gets, in Wallaroo
 * 0.6.1, the source's random per-message key: a new state object per message.
 * That is what runs here too (a message with no key gets a fresh state), with
 * a warning, since it is rarely what was meant. */
static void warn_unkeyed(const pipeline_t *p, const step_t *s)
{
    log_warn("source '%s': %s has no key_by() or collect() before it: as in Wallaroo 0.6.1, "
             "each message gets a new state object", p->name, s->label);
}

static int load_chain_steps(app_t *app, pipeline_t *p, const tree_t *t, const Py_ssize_t *chain,
                            Py_ssize_t len, char *err, size_t errlen)
{
    size_t k = 0;
    int keyed = 0;
    for (Py_ssize_t c = 0; c < len; c++) {
        PyObject *stages = stages_of(t, chain[c]);
        Py_ssize_t nst = PyList_GET_SIZE(stages);
        for (Py_ssize_t j = c == 0 ? 1 : 0; j < nst; j++) {
            PyObject *stage = PyList_GET_ITEM(stages, j);
            if (is_sink_tag(stage_tag(stage))) {
                if (chain[c] != t->root || j != nst - 1)
                    return fail(err, errlen, "to_sink/to_sinks must end the application");
                if (load_sinks(app, p, stage, err, errlen) < 0)
                    return -1;
                continue;
            }
            step_t *s = &p->steps[k++];
            if (load_step(app, s, stage, t, chain[c], j, err, errlen) < 0)
                return -1;
            if (s->kind == STEP_KEY_BY)
                keyed = 1;
            else if (s->kind == STEP_KEYED_STATE && !keyed)
                warn_unkeyed(p, s);
            else if (s->kind == STEP_WINDOW && !keyed)
                return fail(err, errlen, "%s: windows need key_by() or collect() before them "
                            "(without a key, Wallaroo 0.6.1 gives every message a random key: "
                            "a window of its own)", s->label);
        }
    }
    if (p->nouts == 0)
        return fail(err, errlen, "the application must end with to_sink/to_sinks");
    return 0;
}

static int load_chain(app_t *app, pipeline_t *p, const tree_t *t, Py_ssize_t leaf,
                      uint64_t max_frame, char *err, size_t errlen)
{
    p->api06 = 1;
    if (load_source(p, PyList_GET_ITEM(stages_of(t, leaf), 0), max_frame, err, errlen) < 0)
        return -1;
    Py_ssize_t len;
    Py_ssize_t *chain = chain_of(t, leaf, &len);
    if (!chain)
        return fail(err, errlen, "out of memory");
    p->nsteps = count_steps(t, chain, len);
    p->steps = calloc(p->nsteps ? p->nsteps : 1, sizeof *p->steps);
    int rc = p->steps ? load_chain_steps(app, p, t, chain, len, err, errlen)
                      : fail(err, errlen, "out of memory");
    free(chain);
    return rc;
}

static int load_pipelines(app_t *app, const tree_t *t, uint64_t max_frame, char *err,
                          size_t errlen)
{
    size_t leaves = 0;
    for (Py_ssize_t i = 0; i < t->n; i++)
        leaves += PyList_GET_SIZE(PyList_GET_ITEM(t->es, i)) == 0;
    app->pipes = calloc(leaves, sizeof *app->pipes);
    if (!app->pipes)
        return fail(err, errlen, "out of memory");
    app->npipes = leaves;
    size_t k = 0;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        if (PyList_GET_SIZE(PyList_GET_ITEM(t->es, i)) != 0)
            continue;
        pipeline_t *p = &app->pipes[k++];
        if (load_chain(app, p, t, i, max_frame, err, errlen) < 0) {
            char inner[1024];
            snprintf(inner, sizeof inner, "%s", err);
            return fail(err, errlen, "application '%s', pipeline from source '%s': %s",
                        app->name, p->name ? p->name : "?", inner);
        }
    }
    return 0;
}

int graph_load(app_t *app, PyObject *desc, uint64_t max_frame, char *err, size_t errlen)
{
    tree_t t = {0};
    int rc = parse_tree(&t, desc, err, errlen);
    if (rc == 0) {
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(desc, 0));
        app->name = strdup(name ? name : "?");
        PyErr_Clear();
        rc = app->name ? load_pipelines(app, &t, max_frame, err, errlen)
                       : fail(err, errlen, "out of memory");
    }
    free(t.parent);
    return rc == 0 ? app_check_listen_addresses(app, err, errlen) : -1;
}
