#include "stream/app.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr.h"
#include "py/bridge.h"
#include "py/msgcodec.h"
#include "py/pykey.h"
#include "stream/exec.h"
#include "stream/graph.h"
#include "util/log.h"

int app_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int app_fail_py(char *err, size_t errlen, const char *what)
{
    char *tb = py_take_traceback();
    snprintf(err, errlen, "%s:\n%s", what, tb);
    free(tb);
    return -1;
}

#define fail app_fail
#define fail_py app_fail_py

/* Borrowed item of a description dict; NULL (with err) if missing. */
static PyObject *field(PyObject *dict, const char *key, char *err, size_t errlen)
{
    PyObject *v = PyDict_Check(dict) ? PyDict_GetItemString(dict, key) : NULL;
    if (!v)
        fail(err, errlen, "application description: missing '%s'", key);
    return v;
}

static int copy_str(PyObject *s, char *out, size_t outlen)
{
    const char *u = PyUnicode_Check(s) ? PyUnicode_AsUTF8(s) : NULL;
    if (!u) {
        PyErr_Clear();
        return -1;
    }
    snprintf(out, outlen, "%s", u);
    return 0;
}

static char *dup_str(PyObject *s)
{
    const char *u = PyUnicode_Check(s) ? PyUnicode_AsUTF8(s) : NULL;
    if (!u)
        PyErr_Clear();
    return strdup(u ? u : "?");
}

PyObject *app_callable(PyObject *obj, const char *method, const char *what, char *err,
                       size_t errlen)
{
    PyObject *fn = py_getattr_opt(obj, "_bettong_fn");
    if (fn && PyCallable_Check(fn))
        return fn;
    Py_XDECREF(fn);
    fn = py_getattr_opt(obj, method);
    if (fn && PyCallable_Check(fn))
        return fn;
    Py_XDECREF(fn);
    PyObject *r = PyObject_Repr(obj);
    fail(err, errlen, "%s %s has no %s() method", what, r ? PyUnicode_AsUTF8(r) : "?", method);
    Py_XDECREF(r);
    PyErr_Clear();
    return NULL;
}

#define callable_of app_callable

char *app_label(PyObject *obj, const char *what, char *err, size_t errlen)
{
    PyObject *name = py_call_method0(obj, "name");
    PyObject *name_str = name ? PyObject_Str(name) : NULL;
    Py_XDECREF(name);
    const char *u = name_str ? PyUnicode_AsUTF8(name_str) : NULL;
    if (!u) {
        fail_py(err, errlen, "a computation's name() raised or is not printable");
        Py_XDECREF(name_str);
        return NULL;
    }
    size_t n = strlen(what) + strlen(u) + 4;
    char *label = malloc(n);
    if (label)
        snprintf(label, n, "%s '%s'", what, u);
    else
        fail(err, errlen, "out of memory");
    Py_DECREF(name_str);
    return label;
}

static int resolve(const char *host, int port, struct sockaddr_storage *out, char *err,
                   size_t errlen)
{
    hostport_t hp;
    snprintf(hp.host, sizeof hp.host, "%s", host);
    hp.port = port;
    return hostport_resolve(&hp, out, err, errlen);
}

int app_source_addr(source_t *src, const char *host, int port, char *err, size_t errlen)
{
    snprintf(src->host, sizeof src->host, "%s", host);
    src->port = port;
    return resolve(host, port, &src->addr, err, errlen);
}

static int load_host_port(PyObject *desc, char *host, size_t hostlen, int *port, char *err,
                          size_t errlen)
{
    PyObject *h = field(desc, "host", err, errlen);
    PyObject *p = h ? field(desc, "port", err, errlen) : NULL;
    if (!p)
        return -1;
    if (copy_str(h, host, hostlen) < 0 || !PyLong_Check(p))
        return fail(err, errlen, "application description: bad host or port");
    *port = (int)PyLong_AsLong(p);
    return 0;
}

/* Whether a codec is wallaroo.experimental's stream_message_encoder/decoder,
 * whose connector framing the engine does in C. */
static int is_connector_codec(PyObject *codec)
{
    PyObject *mark = py_getattr_opt(codec, "_bettong_connector_frame");
    int yes = mark && PyObject_IsTrue(mark) == 1;
    Py_XDECREF(mark);
    PyErr_Clear();
    return yes;
}

int app_load_decoder(source_t *src, PyObject *dec, uint64_t max_frame, char *err,
                     size_t errlen)
{
    if (is_connector_codec(dec)) {
        /* Its header_length/payload_length/decode would say the same, a
         * Python call per frame and a slice per message later. */
        src->connector = 1;
        frame_spec_connector(&src->frame, max_frame);
        src->decode = callable_of(dec, "decode", "decoder", err, errlen);
        return src->decode ? 0 : -1;
    }
    src->frame.max_payload = max_frame;
    PyObject *fmt = py_getattr_opt(dec, "_bettong_length_fmt");
    PyObject *hlen = py_getattr_opt(dec, "_bettong_header_length");
    int c_framing = 0;
    if (fmt && hlen && PyUnicode_Check(fmt) && PyLong_Check(hlen)) {
        const char *f = PyUnicode_AsUTF8(fmt);
        long n = PyLong_AsLong(hlen);
        c_framing = f && n > 0 && frame_spec_from_struct(&src->frame, (size_t)n, f) == 0;
        PyErr_Clear();
    }
    Py_XDECREF(fmt);
    Py_XDECREF(hlen);
    if (!c_framing) {
        PyObject *n = py_call_method0(dec, "header_length");
        if (!n)
            return fail_py(err, errlen, "decoder header_length() raised");
        long len = PyLong_Check(n) ? PyLong_AsLong(n) : -1;
        Py_DECREF(n);
        if (len <= 0 || len > 1024) {
            PyErr_Clear();
            return fail(err, errlen, "decoder header_length() must return an int in 1..1024");
        }
        src->payload_length = callable_of(dec, "payload_length", "decoder", err, errlen);
        if (!src->payload_length)
            return -1;
        src->frame.header_len = (size_t)len;
        src->frame.length_fn = exec_payload_length;
        src->frame.length_ctx = src;
    }
    /* Only the decorator's own payload_length may be bypassed: a hand-written
     * decode() is always called as a method. */
    src->decode = callable_of(dec, "decode", "decoder", err, errlen);
    return src->decode ? 0 : -1;
}

static int load_source(pipeline_t *p, PyObject *desc, const app_options_t *opt, char *err,
                       size_t errlen)
{
    source_t *src = &p->source;
    PyObject *kind = field(desc, "kind", err, errlen);
    if (!kind)
        return -1;
    const char *k = PyUnicode_AsUTF8(kind);
    if (k && strcmp(k, "tcp") == 0) {
        src->kind = SOURCE_TCP;
        char host[256];
        int port;
        if (load_host_port(desc, host, sizeof host, &port, err, errlen) < 0)
            return -1;
        if (app_source_addr(src, host, port, err, errlen) < 0)
            return -1;
        PyObject *par = PyDict_GetItemString(desc, "parallelism");
        if (par && par != Py_None) {
            long n = PyLong_Check(par) ? PyLong_AsLong(par) : -1;
            if (n < 1 || n > 1000000) {
                PyErr_Clear();
                return fail(err, errlen, "pipeline '%s': parallelism must be an int in "
                            "1..1000000", p->name);
            }
            src->max_clients = (unsigned)n;
        }
        PyObject *dec = field(desc, "decoder", err, errlen);
        return dec ? app_load_decoder(src, dec, opt->max_frame, err, errlen) : -1;
    }
    if (k && strcmp(k, "gen") == 0) {
        src->kind = SOURCE_GEN;
        PyObject *g = field(desc, "generator", err, errlen);
        if (!g)
            return -1;
        src->gen_initial = py_getattr_opt(g, "initial_value");
        src->gen_apply = py_getattr_opt(g, "apply");
        if (!src->gen_initial || !src->gen_apply)
            return fail(err, errlen, "generator needs initial_value() and apply()");
        return 0;
    }
    PyErr_Clear();
    return fail(err, errlen,
                "pipeline '%s': source kind '%s' is not supported by Bettong (TCP and "
                "generator sources are)", p->name, k ? k : "?");
}

/* Make the state objects for the declared partition keys up front, as Wallaroo
 * does; other keys get theirs on first use. */
static int create_initial_keys(step_t *s, PyObject *keys, char *err, size_t errlen)
{
    PyObject *seq = PySequence_Fast(keys, "partition_keys must be a list");
    if (!seq)
        return fail_py(err, errlen, "bad partition_keys");
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(seq, i);
        uint64_t h;
        int rc = exec_route_key(s, key, &h);
        if (rc == 0 && !state_for_key(s->state, routing_slot(h), key))
            rc = -1;
        if (rc < 0) {
            Py_DECREF(seq);
            return fail_py(err, errlen, "cannot create the state for a partition key");
        }
    }
    Py_DECREF(seq);
    return 0;
}

static int load_step(app_t *app, step_t *s, PyObject *desc, char *err, size_t errlen)
{
    PyObject *kind = field(desc, "kind", err, errlen);
    PyObject *comp = kind ? field(desc, "computation", err, errlen) : NULL;
    PyObject *arity = comp ? field(desc, "arity", err, errlen) : NULL;
    if (!arity)
        return -1;
    const char *k = PyUnicode_AsUTF8(kind);
    const char *a = PyUnicode_AsUTF8(arity);
    if (!k || !a) {
        PyErr_Clear();
        return fail(err, errlen, "application description: bad step");
    }
    s->multi = strcmp(a, "multi") == 0;
    s->parallel = strcmp(k, "to_parallel") == 0;
    if (!(s->label = app_label(comp, "computation", err, errlen)))
        return -1;
    s->fn = callable_of(comp, s->multi ? "compute_multi" : "compute", s->label, err, errlen);
    if (!s->fn)
        return -1;
    if (strcmp(k, "to") == 0 || strcmp(k, "to_parallel") == 0) {
        s->kind = STEP_STATELESS;
        return 0;
    }
    PyObject *cls = field(desc, "state_class", err, errlen);
    PyObject *sname = cls ? field(desc, "state_name", err, errlen) : NULL;
    if (!sname)
        return -1;
    const char *sn = PyUnicode_AsUTF8(sname);
    if (!sn) {
        PyErr_Clear();
        return fail(err, errlen, "state_name must be a str");
    }
    s->state = state_store_get(&app->states, sn, cls, err, errlen);
    if (!s->state)
        return -1;
    if (strcmp(k, "to_stateful") == 0) {
        s->kind = STEP_STATEFUL;
        return 0;
    }
    s->kind = strcmp(k, "to_state_partition_u64") == 0 ? STEP_PARTITION_U64 : STEP_PARTITION;
    PyObject *pf = field(desc, "partition_function", err, errlen);
    PyObject *keys = pf ? field(desc, "partition_keys", err, errlen) : NULL;
    if (!keys)
        return -1;
    s->partition_fn = callable_of(pf, "partition", "partition function", err, errlen);
    if (!s->partition_fn)
        return -1;
    return create_initial_keys(s, keys, err, errlen);
}

int app_sink_index(app_t *app, const char *host, int port, size_t *index, char *err,
                   size_t errlen)
{
    for (size_t i = 0; i < app->nsinks; i++) {
        if (strcmp(app->sinks[i].host, host) == 0 && app->sinks[i].port == port) {
            *index = i;
            return 0;
        }
    }
    sink_addr_t *grown = realloc(app->sinks, (app->nsinks + 1) * sizeof *grown);
    if (!grown)
        return fail(err, errlen, "out of memory");
    app->sinks = grown;
    sink_addr_t *sa = &app->sinks[app->nsinks];
    memset(sa, 0, sizeof *sa);
    snprintf(sa->host, sizeof sa->host, "%s", host);
    sa->port = port;
    if (resolve(host, port, &sa->addr, err, errlen) < 0)
        return -1;
    *index = app->nsinks++;
    return 0;
}

static char *describe_encoder(PyObject *encoder, PyObject *encode);

int app_add_out(pipeline_t *p, size_t sink, PyObject *encoder, char *err, size_t errlen)
{
    PyObject *encode = callable_of(encoder, "encode", "encoder", err, errlen);
    if (!encode)
        return -1;
    pipe_out_t *grown = realloc(p->outs, (p->nouts + 1) * sizeof *grown);
    if (!grown) {
        Py_DECREF(encode);
        return fail(err, errlen, "out of memory");
    }
    p->outs = grown;
    char *label = describe_encoder(encoder, encode);
    if (!label) {
        Py_DECREF(encode);
        return fail(err, errlen, "out of memory");
    }
    p->outs[p->nouts] = (pipe_out_t){.sink = sink, .encode = encode,
                                     .connector_frame = is_connector_codec(encoder),
                                     .label = label};
    p->nouts++;
    return 0;
}

static int load_sink(app_t *app, pipeline_t *p, PyObject *desc, char *err, size_t errlen)
{
    PyObject *kind = field(desc, "kind", err, errlen);
    if (!kind)
        return -1;
    const char *k = PyUnicode_AsUTF8(kind);
    if (!k || strcmp(k, "tcp") != 0) {
        PyErr_Clear();
        return fail(err, errlen, "pipeline '%s': sink kind '%s' is not supported by Bettong "
                    "(TCP sinks are)", p->name, k ? k : "?");
    }
    char host[256];
    int port;
    size_t index;
    if (load_host_port(desc, host, sizeof host, &port, err, errlen) < 0)
        return -1;
    PyObject *enc = field(desc, "encoder", err, errlen);
    if (!enc || app_sink_index(app, host, port, &index, err, errlen) < 0)
        return -1;
    return app_add_out(p, index, enc, err, errlen);
}

static int load_pipeline(app_t *app, pipeline_t *p, PyObject *desc, const app_options_t *opt,
                         char *err, size_t errlen)
{
    PyObject *name = field(desc, "name", err, errlen);
    PyObject *source = name ? field(desc, "source", err, errlen) : NULL;
    PyObject *steps = source ? field(desc, "steps", err, errlen) : NULL;
    PyObject *sink = steps ? field(desc, "sink", err, errlen) : NULL;
    if (!sink)
        return -1;
    p->name = dup_str(name);
    if (load_source(p, source, opt, err, errlen) < 0)
        return -1;
    if (!PyList_Check(steps))
        return fail(err, errlen, "application description: steps must be a list");
    size_t n = (size_t)PyList_GET_SIZE(steps);
    p->steps = calloc(n ? n : 1, sizeof *p->steps);
    if (!p->steps)
        return fail(err, errlen, "out of memory");
    p->nsteps = n;
    for (size_t i = 0; i < n; i++) {
        if (load_step(app, &p->steps[i], PyList_GET_ITEM(steps, i), err, errlen) < 0) {
            char inner[1024];
            snprintf(inner, sizeof inner, "%s", err);
            return fail(err, errlen, "pipeline '%s', step %zu: %s", p->name, i + 1, inner);
        }
    }
    if (sink != Py_None)
        return load_sink(app, p, sink, err, errlen);
    return 0;
}

int app_check_listen_addresses(app_t *app, char *err, size_t errlen)
{
    for (size_t i = 0; i < app->npipes; i++)
        for (size_t j = 0; j < i; j++) {
            source_t *a = &app->pipes[i].source, *b = &app->pipes[j].source;
            /* Port 0 asks the kernel for a port: each source gets its own. */
            if (a->kind == SOURCE_TCP && b->kind == SOURCE_TCP && a->port != 0 &&
                strcmp(a->host, b->host) == 0 && a->port == b->port)
                return fail(err, errlen, "pipelines '%s' and '%s' both listen on %s:%d",
                            app->pipes[j].name, app->pipes[i].name, a->host, a->port);
        }
    return 0;
}

static int build_from_description(app_t *app, PyObject *desc, const app_options_t *opt,
                                  char *err, size_t errlen)
{
    /* The two APIs are told apart by what built the application:
     * build_application() gives Wallaroo 0.6's tuple, build() a dict. */
    if (graph_is_description(desc))
        return graph_load(app, desc, opt->max_frame, err, errlen);
    if (!PyDict_Check(desc) || !PyDict_GetItemString(desc, "bettong_description"))
        return fail(err, errlen, "application_setup() must return the result of "
                    "ApplicationBuilder.build() or wallaroo.build_application()");
    PyObject *name = field(desc, "name", err, errlen);
    PyObject *pipes = name ? field(desc, "pipelines", err, errlen) : NULL;
    if (!pipes)
        return -1;
    app->name = dup_str(name);
    if (!PyList_Check(pipes) || PyList_GET_SIZE(pipes) == 0)
        return fail(err, errlen, "the application has no pipeline");
    size_t n = (size_t)PyList_GET_SIZE(pipes);
    app->pipes = calloc(n, sizeof *app->pipes);
    if (!app->pipes)
        return fail(err, errlen, "out of memory");
    app->npipes = n;
    for (size_t i = 0; i < n; i++)
        if (load_pipeline(app, &app->pipes[i], PyList_GET_ITEM(pipes, i), opt, err, errlen) < 0)
            return -1;
    return app_check_listen_addresses(app, err, errlen);
}

static int load_pickle(app_t *app, char *err, size_t errlen)
{
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle) {
        app->dumps = PyObject_GetAttrString(pickle, "dumps");
        app->loads = PyObject_GetAttrString(pickle, "loads");
        app->protocol = PyLong_FromLong(5);
        Py_DECREF(pickle);
    }
    if (!app->dumps || !app->loads || !app->protocol)
        return fail_py(err, errlen, "cannot load pickle");
    return 0;
}

/* Where fn is defined, as " (FILE:LINE)" into out ("" when it has no Python
 * code): what the reports of errors name, since no traceback points into fn
 * once it has returned something wrong. */
static void function_place(PyObject *fn, char *out, size_t outlen)
{
    PyObject *code = py_getattr_opt(fn, "__code__");
    const char *file = code && PyCode_Check(code)
                           ? PyUnicode_AsUTF8(((PyCodeObject *)code)->co_filename) : NULL;
    int line = code && PyCode_Check(code) ? ((PyCodeObject *)code)->co_firstlineno : 0;
    PyErr_Clear();
    if (file)
        snprintf(out, outlen, " (%s:%d)", file, line);
    else
        snprintf(out, outlen, "%s", "");
    Py_XDECREF(code);
}

/* "NAME() of module 'M' (FILE:LINE)". malloc'd, or NULL. */
static char *describe_function(PyObject *module, const char *name, PyObject *fn)
{
    char place[900];
    function_place(fn, place, sizeof place);
    const char *mod = PyModule_GetName(module);
    PyErr_Clear();
    char text[1024];
    snprintf(text, sizeof text, "%s() of module '%s'%s", name, mod ? mod : "?", place);
    return strdup(text);
}

/* "encoder 'f' (FILE:LINE)" for a wallaroo-decorated encoder (its function)
 * or any object with an encode method. malloc'd, or NULL. */
static char *describe_encoder(PyObject *encoder, PyObject *encode)
{
    PyObject *fn = py_getattr_opt(encoder, "_bettong_fn");
    if (!fn)
        fn = py_getattr_opt(encode, "__func__");
    if (!fn)
        fn = Py_NewRef(encode);
    PyObject *name = py_getattr_opt(fn, "__qualname__");
    const char *u = name && PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    PyErr_Clear();
    char place[900], text[1100];
    function_place(fn, place, sizeof place);
    snprintf(text, sizeof text, "encoder '%s'%s", u ? u : "?", place);
    Py_XDECREF(name);
    Py_DECREF(fn);
    return strdup(text);
}

/* The module's own serialize/deserialize when it defines both (and they are
 * not wallaroo's defaults, which are pickle anyway): for its messages only.
 * Pickle is loaded in every case: keys and state always go through it. */
static int load_serializers(app_t *app, char *err, size_t errlen)
{
    if (load_pickle(app, err, errlen) < 0)
        return -1;
    PyObject *ser = py_getattr_opt(app->module, "serialize");
    PyObject *de = py_getattr_opt(app->module, "deserialize");
    int own = ser && de && PyCallable_Check(ser) && PyCallable_Check(de);
    if (own) {
        PyObject *w = PyImport_ImportModule("wallaroo");
        PyObject *wser = w ? py_getattr_opt(w, "serialize") : NULL;
        PyErr_Clear();
        own = ser != wser;
        Py_XDECREF(wser);
        Py_XDECREF(w);
    } else if ((ser != NULL) != (de != NULL)) {
        log_warn("module '%s' defines only one of serialize/deserialize: using pickle",
                 PyModule_GetName(app->module));
        PyErr_Clear();
    }
    if (own) {
        app->user_serialize = ser;
        app->user_deserialize = de;
        const char *mod = PyModule_GetName(app->module);
        PyErr_Clear();
        char name[300];
        snprintf(name, sizeof name, "serialize() of module '%s'", mod ? mod : "?");
        app->message_encoder = strdup(name);
        snprintf(name, sizeof name, "deserialize() of module '%s'", mod ? mod : "?");
        app->message_decoder = strdup(name);
    } else {
        Py_XDECREF(ser);
        Py_XDECREF(de);
        app->message_encoder = strdup("pickle.dumps");
        app->message_decoder = strdup("pickle.loads");
    }
    if (!app->message_encoder || !app->message_decoder)
        return fail(err, errlen, "out of memory");
    return 0;
}

int app_value_encode(app_t *app, PyObject *obj, buf_t *out)
{
    return msgcodec_encode(out, obj, app->dumps, app->protocol);
}

PyObject *app_value_decode(app_t *app, const void *data, size_t len)
{
    return msgcodec_decode(data, len, app->loads);
}

int app_message_encode(app_t *app, PyObject *msg, buf_t *out)
{
    if (!app->user_serialize)
        return app_value_encode(app, msg, out);
    PyObject *r = py_call1(app->user_serialize, msg);
    Py_buffer view;
    if (!r)
        return -1;
    if (PyUnicode_Check(r) || PyObject_GetBuffer(r, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        char *fn = describe_function(app->module, "serialize", app->user_serialize);
        PyErr_Format(PyExc_TypeError, "%s returned %.100s, expected bytes (message type %.100s)",
                     fn ? fn : app->message_encoder, Py_TYPE(r)->tp_name,
                     Py_TYPE(msg)->tp_name);
        free(fn);
        Py_DECREF(r);
        return -1;
    }
    int rc = buf_append(out, view.buf, (size_t)view.len);
    if (rc < 0)
        PyErr_NoMemory();
    PyBuffer_Release(&view);
    Py_DECREF(r);
    return rc;
}

PyObject *app_message_decode(app_t *app, const void *data, size_t len)
{
    if (!app->user_deserialize)
        return app_value_decode(app, data, len);
    PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    PyObject *r = b ? py_call1(app->user_deserialize, b) : NULL;
    Py_XDECREF(b);
    return r;
}

static PyObject *argv_list(int argc, char **argv)
{
    PyObject *list = PyList_New(argc);
    for (int i = 0; list && i < argc; i++) {
        PyObject *s = PyUnicode_DecodeFSDefault(argv[i]);
        if (!s) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, s);
    }
    return list;
}

int app_load(app_t *app, const app_options_t *opt, char *err, size_t errlen)
{
    memset(app, 0, sizeof *app);
    char what[512];
    app->module = PyImport_ImportModule(opt->module);
    if (!app->module) {
        snprintf(what, sizeof what, "cannot import application module '%s'", opt->module);
        fail_py(err, errlen, what);
        return -1;
    }
    PyObject *setup = py_getattr_opt(app->module, "application_setup");
    if (!setup || !PyCallable_Check(setup)) {
        Py_XDECREF(setup);
        fail(err, errlen, "module '%s' has no application_setup(args) function", opt->module);
        app_free(app);
        return -1;
    }
    PyObject *args = argv_list(opt->argc, opt->argv);
    PyObject *desc = args ? py_call1(setup, args) : NULL;
    Py_XDECREF(args);
    Py_DECREF(setup);
    int rc;
    if (!desc) {
        rc = fail_py(err, errlen, "application_setup() raised");
    } else {
        rc = build_from_description(app, desc, opt, err, errlen);
        Py_DECREF(desc);
        if (rc == 0)
            rc = load_serializers(app, err, errlen);
    }
    if (rc < 0)
        app_free(app);
    return rc;
}

void app_free(app_t *app)
{
    for (size_t i = 0; i < app->npipes; i++) {
        pipeline_t *p = &app->pipes[i];
        for (size_t j = 0; j < p->nsteps; j++) {
            Py_XDECREF(p->steps[j].fn);
            Py_XDECREF(p->steps[j].partition_fn);
            Py_XDECREF(p->steps[j].key_fn);
            Py_XDECREF(p->steps[j].const_key);
            if (!p->steps[j].window_borrowed)
                window_spec_free(p->steps[j].window);
            free(p->steps[j].label);
        }
        free(p->steps);
        Py_XDECREF(p->source.decode);
        Py_XDECREF(p->source.payload_length);
        Py_XDECREF(p->source.gen_initial);
        Py_XDECREF(p->source.gen_apply);
        for (size_t j = 0; j < p->nouts; j++) {
            Py_XDECREF(p->outs[j].encode);
            free(p->outs[j].label);
        }
        free(p->outs);
        free(p->name);
    }
    free(app->pipes);
    free(app->sinks);
    state_registry_free(&app->states);
    Py_XDECREF(app->user_serialize);
    Py_XDECREF(app->user_deserialize);
    free(app->message_encoder);
    free(app->message_decoder);
    Py_XDECREF(app->dumps);
    Py_XDECREF(app->loads);
    Py_XDECREF(app->protocol);
    Py_XDECREF(app->module);
    free(app->name);
    memset(app, 0, sizeof *app);
}
