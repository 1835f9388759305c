/* graph + exec: a Wallaroo 0.6 application (build_application's tree) is
 * compiled onto pipelines, and frames run through them with no network: a
 * merge shares its steps' state, key_by keys the stream (and routes it in a
 * cluster), collect() keys it with one constant, to_sinks writes every output
 * to each sink, the 0.6 return conventions hold, and connectors
 * (wallaroo.experimental) frame in C. Misbuilt trees are refused with a
 * message. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "py/bridge.h"
#include "py/pykey.h"
#include "stream/app.h"
#include "stream/exec.h"
#include "stream/graph.h"
#include "util/log.h"

static char tmpdir[64];

/* Two sources merged, keyed by their first letter, counted per key, to two
 * sinks (the second encoder drops outputs that start with 'x'); a third
 * pipeline's words are all collect()ed into one total. */
static const char *APP =
    "import wallaroo\n"
    "def application_setup(args):\n"
    "    a = wallaroo.source('A', wallaroo.TCPSourceConfig('127.0.0.1', 0, dec))\n"
    "    b = wallaroo.source('B', wallaroo.TCPSourceConfig('127.0.0.1', '1', dec, "
    "parallelism=3))\n"
    "    p = (a.to(split).merge(b.to(split)).key_by(first).to(count)\n"
    "         .to_sinks([wallaroo.TCPSinkConfig('127.0.0.1', 9, enc),\n"
    "                    wallaroo.TCPSinkConfig('127.0.0.1', 10, enc_no_x)]))\n"
    "    return wallaroo.build_application('t', p)\n"
    "def collected(args):\n"
    "    c = wallaroo.source('C', wallaroo.TCPSourceConfig('127.0.0.1', 0, dec))\n"
    "    return wallaroo.build_application('c', c.to(split).collect().to(total)\n"
    "        .to_sink(wallaroo.TCPSinkConfig('127.0.0.1', 9, enc)))\n"
    "@wallaroo.decoder(header_length=4, length_fmt='>I')\n"
    "def dec(b):\n"
    "    return b.decode()\n"
    "@wallaroo.computation_multi(name='split')\n"
    "def split(s):\n"
    "    if s == 'tuple': return ('t', 'u')\n"
    "    return [w if w != '-' else None for w in s.split()]\n"
    "@wallaroo.key_extractor\n"
    "def first(w):\n"
    "    if w == 'int': return 105\n"
    "    if w == 'float': return 1.5\n"
    "    return w[0].encode() if w.startswith('b') else w[0]\n"
    "class Count:\n"
    "    n = 0\n"
    "@wallaroo.state_computation(name='count', state=Count)\n"
    "def count(w, st):\n"
    "    st.n += 1\n"
    "    return None if w == 'quiet' else (w, st.n)\n"
    "@wallaroo.state_computation(name='total', state=Count)\n"
    "def total(w, st):\n"
    "    st.n += 1\n"
    "    return (w, st.n)\n"
    "def windowed(args):\n"
    "    a = wallaroo.source('A', wallaroo.TCPSourceConfig('127.0.0.1', 0, dec))\n"
    "    b = wallaroo.source('B', wallaroo.TCPSourceConfig('127.0.0.1', 0, dec))\n"
    "    w = wallaroo.count_windows(2).over(Letters)\n"
    "    return wallaroo.build_application('w', a.to(split).merge(b.to(split))\n"
    "        .key_by(first).to(w).to_sink(wallaroo.TCPSinkConfig('127.0.0.1', 9, enc)))\n"
    "class Letters(wallaroo.Aggregation):\n"
    "    def initial_accumulator(self): return []\n"
    "    def update(self, w, acc): acc.append(w)\n"
    "    def combine(self, a, b): return a + b\n"
    "    def output(self, k, acc): return (k + ':' + ''.join(acc), len(acc))\n"
    "class Agg(wallaroo.Aggregation):\n"
    "    def initial_accumulator(self): return 0\n"
    "    def update(self, d, a): pass\n"
    "    def combine(self, a, b): return a + b\n"
    "    def output(self, k, a): return None\n"
    "def connected(args):\n"
    "    import wallaroo.experimental as X\n"
    "    feed = X.SourceConnectorConfig('feed', encoder=cenc, decoder=cdec, port=0)\n"
    "    out = X.SinkConnectorConfig('out', encoder=cenc, decoder=cdec, port='9')\n"
    "    return wallaroo.build_application('k', wallaroo.source('S', feed)\n"
    "        .to_sinks([out, wallaroo.TCPSinkConfig('127.0.0.1', 10, enc_text)]))\n"
    "def connected_own_codecs(args):\n"
    "    import wallaroo.experimental as X\n"
    "    feed = X.SourceConnectorConfig('feed', encoder=cenc, decoder=dec, port=0)\n"
    "    out = X.SinkConnectorConfig('out', encoder=enc_text, decoder=cdec, port=9)\n"
    "    return wallaroo.build_application('k', wallaroo.source('S', feed).to_sink(out))\n"
    "def tcp_connector_codecs(args):\n"
    "    src = wallaroo.TCPSourceConfig('127.0.0.1', 0, cdec)\n"
    "    out = wallaroo.TCPSinkConfig('127.0.0.1', 9, cenc)\n"
    "    return wallaroo.build_application('k', wallaroo.source('S', src).to_sink(out))\n"
    "import wallaroo.experimental\n"
    "@wallaroo.experimental.stream_message_decoder\n"
    "def cdec(b):\n"
    "    return b.decode()\n"
    "@wallaroo.experimental.stream_message_encoder\n"
    "def cenc(s):\n"
    "    return None if s == 'quiet' else s\n"
    "@wallaroo.encoder\n"
    "def enc_text(s):\n"
    "    return '<' + s + '>'\n"
    "@wallaroo.encoder\n"
    "def enc(t):\n"
    "    return '%s=%d;' % t\n"
    "@wallaroo.encoder\n"
    "def enc_no_x(t):\n"
    "    return None if t[0].startswith('x') else '[%s=%d]' % t\n";

static app_t app;
static buf_t out0, out1;
static buf_t *bufs[2] = {&out0, &out1};
static exec_t x;

static void write_app(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/graph_app.py", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(APP, f);
    fclose(f);
}

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/bettong-test-graph-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    write_app();
    const char *paths[] = {tmpdir, NULL};
    static char *argv[] = {"test_graph", NULL};
    char err[4096];
    log_set_level(LOG_ERROR);
    if (py_start(1, argv, paths, err, sizeof err) < 0)
        return -1;
    py_gil_enter();
    app_options_t opt = {.module = "graph_app", .argc = 1, .argv = argv, .max_frame = 1 << 20};
    if (app_load(&app, &opt, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    buf_init(&out0);
    buf_init(&out1);
    x.app = &app;
    x.sink_bufs = bufs;
    x.on_error = ON_ERROR_SKIP;
    return 0;
}

static int teardown(void **state)
{
    app_free(&app);
    py_gil_leave();
    py_stop();
    buf_free(&out0);
    buf_free(&out1);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *text_of(buf_t *b)
{
    static char text[2][1024];
    char *t = text[b == &out1];
    snprintf(t, sizeof text[0], "%.*s", (int)buf_unread(b), (char *)buf_head(b));
    return t;
}

/* Run one text frame through pipeline `pipe`; the outputs are in out0/out1. */
static void run(app_t *a, size_t pipe, const char *text)
{
    buf_clear(&out0);
    buf_clear(&out1);
    uint8_t frame[512];
    size_t n = strlen(text);
    frame_put_u32be(frame, (uint32_t)n);
    memcpy(frame + 4, text, n);
    assert_int_equal(exec_frame(&x, &a->pipes[pipe], frame, n + 4, frame + 4, n), 0);
}

static void test_tree_compiled(void **state)
{
    /* One pipeline per source, each with split, key_by, count. */
    assert_string_equal(app.name, "t");
    assert_int_equal(app.npipes, 2);
    assert_string_equal(app.pipes[0].name, "A");
    assert_string_equal(app.pipes[1].name, "B");
    for (size_t i = 0; i < 2; i++) {
        pipeline_t *p = &app.pipes[i];
        assert_true(p->api06);
        assert_true(p->source.initializer_only);
        assert_int_equal(p->nsteps, 3);
        assert_int_equal(p->steps[0].kind, STEP_STATELESS);
        assert_true(p->steps[0].multi);
        assert_int_equal(p->steps[1].kind, STEP_KEY_BY);
        assert_non_null(p->steps[1].key_fn);
        assert_int_equal(p->steps[2].kind, STEP_KEYED_STATE);
        assert_int_equal(p->nouts, 2);
    }
    /* The steps after the merge share one state store and the sinks. */
    assert_ptr_equal(app.pipes[0].steps[2].state, app.pipes[1].steps[2].state);
    assert_int_equal(app.nsinks, 2);
    assert_int_equal(app.pipes[1].outs[1].sink, 1);
    /* The default parallelism is Wallaroo's 10; a str port is read. */
    assert_int_equal(app.pipes[0].source.max_clients, 10);
    assert_int_equal(app.pipes[1].source.max_clients, 3);
    assert_int_equal(app.pipes[1].source.port, 1);
}

static void test_merge_keys_and_fans_out(void **state)
{
    run(&app, 0, "apple avocado xylo");
    assert_string_equal(text_of(&out0), "apple=1;avocado=2;xylo=1;");
    assert_string_equal(text_of(&out1), "[apple=1][avocado=2]"); /* None wrote nothing */
    /* The other source reaches the same state per key; "a" and b"a" are one
     * key, 105 is chr(105) = "i". */
    run(&app, 1, "almond banana bean int ice");
    assert_string_equal(text_of(&out0), "almond=3;banana=1;bean=2;int=1;ice=2;");
    /* None items of a list and a None output send nothing on. */
    run(&app, 1, "- quiet apricot");
    assert_string_equal(text_of(&out0), "apricot=4;");
}

static void test_06_conventions_refuse(void **state)
{
    uint64_t failed = x.failed;
    /* compute_multi must return a list in Wallaroo 0.6; a key must be str,
     * bytes or int. Each failure drops its input message only. */
    run(&app, 0, "tuple");
    assert_int_equal(x.failed, failed + 1);
    run(&app, 0, "float apple");
    assert_string_equal(text_of(&out0), "apple=5;");
    assert_int_equal(x.failed, failed + 2);
    assert_null(PyErr_Occurred());
}

typedef struct {
    unsigned owner, pipe, step;
    char key[32];
} fwd_t;

static fwd_t fwds[8];
static size_t nfwd;

static void record_forward(void *ctx, unsigned owner, unsigned pipe, unsigned step,
                           PyObject *msg, PyObject *key)
{
    fwd_t *f = &fwds[nfwd++];
    f->owner = owner;
    f->pipe = pipe;
    f->step = step;
    snprintf(f->key, sizeof f->key, "%s", key ? PyBytes_AsString(key) : "-");
}

static unsigned slot_of_bytes(const char *key)
{
    PyObject *k = PyBytes_FromString(key);
    uint64_t h = 0;
    assert_int_equal(pykey_hash(k, &h), 0);
    Py_DECREF(k);
    return routing_slot(h);
}

static void test_key_by_routes_to_the_key_owner(void **state)
{
    static routing_table_t t;
    routing_init(&t, 1);
    routing_assign(&t, slot_of_bytes("k"), 2);
    exec_set_router(&x, &t, 0, record_forward, NULL);
    nfwd = 0;
    /* "kiwi" leaves at its key_by (step 1) with its key as bytes. */
    run(&app, 1, "kiwi lime");
    assert_string_equal(text_of(&out0), "lime=1;");
    assert_int_equal(nfwd, 1);
    assert_int_equal(fwds[0].owner, 2);
    assert_int_equal(fwds[0].pipe, 1);
    assert_int_equal(fwds[0].step, 1);
    assert_string_equal(fwds[0].key, "k");
    /* On the owner, it goes on from the key_by with that key. */
    routing_assign(&t, slot_of_bytes("k"), 0);
    buf_clear(&out0);
    PyObject *msg = PyUnicode_FromString("kiwi"), *key = PyBytes_FromString("k");
    assert_int_equal(exec_forwarded(&x, 1, 1, msg, key, 0), 0);
    assert_int_equal(exec_forwarded(&x, 0, 2, msg, key, 0), 0); /* straight to the state */
    assert_string_equal(text_of(&out0), "kiwi=1;kiwi=2;");
    Py_DECREF(msg);
    Py_DECREF(key);
    exec_set_router(&x, NULL, 0, NULL, NULL);
}

/* Load the application that `setup_fn` (a function of graph_app) builds. */
static int load_other(app_t *a, const char *setup_fn, char *err, size_t errlen)
{
    PyObject *mod = PyImport_ImportModule("graph_app");
    assert_non_null(mod);
    PyObject *fn = PyObject_GetAttrString(mod, setup_fn);
    assert_non_null(fn);
    PyObject *args = Py_BuildValue("([s])", "x");
    PyObject *desc = PyObject_CallObject(fn, args);
    Py_DECREF(args);
    Py_DECREF(fn);
    if (!desc) {
        PyErr_Print();
        fail_msg("%s raised", setup_fn);
    }
    memset(a, 0, sizeof *a);
    a->module = mod;
    int rc = graph_load(a, desc, 1 << 20, err, errlen);
    Py_DECREF(desc);
    return rc;
}

static void test_collect_has_one_key(void **state)
{
    app_t c;
    char err[1024];
    assert_int_equal(load_other(&c, "collected", err, sizeof err), 0);
    step_t *s = &c.pipes[0].steps[1];
    assert_int_equal(s->kind, STEP_KEY_BY);
    assert_null(s->key_fn); /* no Python call per message */
    assert_string_equal(PyBytes_AsString(s->const_key), "collect-key-0");
    exec_t saved = x;
    x.app = &c;
    run(&c, 0, "p q r");
    assert_string_equal(text_of(&out0), "p=1;q=2;r=3;");
    x = saved;
    app_free(&c);
}

/* Windows after a merge: one window state per key and one spec (one clock)
 * for both pipelines; the timer (exec_windows_due) flushes a partial count
 * window once. */
static void test_windows_after_a_merge(void **state)
{
    app_t c;
    char err[1024];
    assert_int_equal(load_other(&c, "windowed", err, sizeof err), 0);
    step_t *w0 = &c.pipes[0].steps[2], *w1 = &c.pipes[1].steps[2];
    assert_int_equal(w0->kind, STEP_WINDOW);
    assert_int_equal(w1->kind, STEP_WINDOW);
    assert_ptr_equal(w0->state, w1->state);
    assert_ptr_equal(w0->window, w1->window);
    assert_int_equal(w0->window_borrowed + w1->window_borrowed, 1);
    exec_t saved = x;
    x.app = &c;
    run(&c, 0, "ab");
    assert_string_equal(text_of(&out0), "");
    run(&c, 1, "ax ay");
    assert_string_equal(text_of(&out0), "a:abax=2;");
    buf_clear(&out0);
    int64_t later = w0->window->next_tick_ns;
    assert_int_equal(exec_windows_due(&x, later - 1), later); /* not due yet */
    assert_string_equal(text_of(&out0), "");
    assert_int_equal(exec_windows_due(&x, later), later + 5000000000LL);
    assert_string_equal(text_of(&out0), "a:ay=1;");
    buf_clear(&out0);
    assert_int_equal(exec_windows_due(&x, later + 5000000000LL), later + 10000000000LL);
    assert_string_equal(text_of(&out0), "");
    x = saved;
    app_free(&c);
}

/* Run one whole connector frame (payload, event time) through pipeline 0 of c. */
static void run_connector_frame(app_t *c, const char *payload, int64_t event_time)
{
    uint8_t frame[128];
    size_t n = strlen(payload);
    assert_int_equal(frame_put_connector_header(frame, n, event_time), 0);
    memcpy(frame + FRAME_CONNECTOR_HEADER, payload, n);
    assert_int_equal(exec_frame(&x, &c->pipes[0], frame, FRAME_CONNECTOR_HEADER + n,
                                frame + FRAME_CONNECTOR_HEADER, n), 0);
}

/* wallaroo.experimental's connectors: the source is a TCP listener of
 * connector frames (10 connections), framed in C, its decoder called on the
 * payload only, the frame's event time kept; the sink connector's outputs
 * are connector frames (event time 0) made in C, a None writes nothing, and a
 * TCP sink beside it gets the plain bytes. */
static void test_connectors(void **state)
{
    app_t c;
    char err[1024];
    assert_int_equal(load_other(&c, "connected", err, sizeof err), 0);
    source_t *src = &c.pipes[0].source;
    assert_int_equal(src->kind, SOURCE_TCP);
    assert_int_equal(src->connector, 1);
    assert_int_equal(src->port, 0);
    assert_int_equal(src->max_clients, 10);
    assert_int_equal(src->frame.header_len, 4);
    assert_int_equal(src->frame.big_endian, 0);
    assert_int_equal(src->frame.payload_skip, 8);
    assert_null(src->frame.length_fn);
    assert_true(src->frame.max_payload == (1 << 20) + 8);
    assert_int_equal(c.nsinks, 2);
    assert_int_equal(c.sinks[0].port, 9);
    assert_int_equal(c.pipes[0].outs[0].connector_frame, 1);
    assert_int_equal(c.pipes[0].outs[1].connector_frame, 0);
    exec_t saved = x;
    x.app = &c;
    buf_clear(&out0);
    buf_clear(&out1);
    run_connector_frame(&c, "ab", 1544000000123LL);
    assert_true(x.cur_event_time == 1544000000123LL);
    run_connector_frame(&c, "quiet", -5);
    assert_true(x.cur_event_time == -5);
    run_connector_frame(&c, "", 0);
    static const uint8_t want[] = {0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'a', 'b',
                                   0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(buf_unread(&out0), sizeof want);
    assert_memory_equal(buf_head(&out0), want, sizeof want);
    assert_string_equal(text_of(&out1), "<ab><quiet><>");
    x = saved;
    app_free(&c);
    /* Codecs of other kinds frame as they say, as in Wallaroo: a >I decoder,
     * an encoder's bytes as they are. */
    assert_int_equal(load_other(&c, "connected_own_codecs", err, sizeof err), 0);
    src = &c.pipes[0].source;
    assert_int_equal(src->connector, 0);
    assert_int_equal(src->frame.big_endian, 1);
    assert_int_equal(src->frame.payload_skip, 0);
    assert_int_equal(c.pipes[0].outs[0].connector_frame, 0);
    app_free(&c);
    /* Connector codecs in TCP configs frame as they say too: connector frames,
     * cut and made in C (Wallaroo's decode() slices, its encode() frames). */
    assert_int_equal(load_other(&c, "tcp_connector_codecs", err, sizeof err), 0);
    src = &c.pipes[0].source;
    assert_int_equal(src->connector, 1);
    assert_int_equal(src->frame.payload_skip, 8);
    assert_int_equal(src->max_clients, 10); /* TCPSourceConfig's default parallelism */
    assert_int_equal(c.pipes[0].outs[0].connector_frame, 1);
    app_free(&c);
}

/* A tree given by hand (Python source evaluated with graph_app's names). */
static void assert_refused(const char *expr, const char *message)
{
    PyObject *mod = PyImport_ImportModule("graph_app");
    PyObject *globals = PyModule_GetDict(mod);
    PyObject *desc = PyRun_String(expr, Py_eval_input, globals, NULL);
    if (!desc) {
        PyErr_Print();
        fail_msg("cannot evaluate %s", expr);
    }
    app_t a;
    memset(&a, 0, sizeof a);
    a.module = mod;
    char err[1024] = "";
    assert_int_equal(graph_load(&a, desc, 1 << 20, err, sizeof err), -1);
    if (!strstr(err, message))
        fail_msg("refused with '%s', expected '%s'", err, message);
    Py_DECREF(desc);
    app_free(&a);
    assert_null(PyErr_Occurred());
}

#define SRC "('source', 's', ('tcp', '127.0.0.1', 0, dec, 10))"
#define SINK "('to_sink', ('tcp', '127.0.0.1', 9, enc))"

static void test_bad_trees_refused(void **state)
{
    assert_refused("('a', 0, [[" SRC "]], [[]])", "must end with to_sink");
    assert_refused("('a', 0, [[" SRC ", " SINK ", ('to', split)]], [[]])",
                   "to_sink/to_sinks must end the application");
    assert_refused("('a', 0, [[" SRC ", ('to_count_windows', 5, Agg()), " SINK "]], [[]])",
                   "windows need key_by() or collect() before them");
    assert_refused("('a', 0, [[" SRC ", ('collect', ''), ('to_range_windows', 10, 11, 0, Agg()), "
                   SINK "]], [[]])", "the slide must not be larger than the range");
    assert_refused("('a', 0, [[('source', 's', ('kafka-internal', 'k', dec)), " SINK "]], [[]])",
                   "Kafka is not supported by Bettong");
    assert_refused("('a', 0, [[" SRC ", ('to_sink', ('sink_connector', 'n', 'h', '1', enc))]], "
                   "[[]])", "expected (\"sink_connector\", name, host, port, encoder, decoder)");
    assert_refused("('a', 0, [[('source', 's', ('source_connector', 'n', 'h', '1', dec)), " SINK
                   "]], [[]])", "expected (\"source_connector\", name, host, port, encoder, "
                   "decoder)");
    assert_refused("('a', 0, [[('source', 's', ('source_connector', 'n', '127.0.0.1', '70000', "
                   "cenc, cdec)), " SINK "]], [[]])", "bad host or port");
    assert_refused("('a', 0, [[" SRC ", ('to_sink', ('sink_connector', 'n', '127.0.0.1', 'x', "
                   "cenc, cdec))]], [[]])", "bad host or port");
    assert_refused("('a', 0, [[('source', 's', ('tcp', 'h', 'x', dec, 10)), " SINK "]], [[]])",
                   "bad host or port");
    assert_refused("('a', 0, [[" SRC "[:2] + ((\"tcp\", \"h\", 1, dec, 0),), " SINK "]], [[]])",
                   "parallelism must be an int");
    assert_refused("('a', 0, [[" SINK "], [" SRC "], [" SRC "]], [[1, 1], [], []])",
                   "merged twice");
    assert_refused("('a', 1, [[" SRC "], [" SRC ", " SINK "]], [[], []])",
                   "node 0 is not part of the application's pipeline");
    assert_refused("('a', 0, [[" SRC ", ('to_state', split), " SINK "]], [[]])",
                   "has no state class");
    assert_refused("(1, 2, 3, 4)", "not wallaroo.build_application()'s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_compiled),
        cmocka_unit_test(test_merge_keys_and_fans_out),
        cmocka_unit_test(test_06_conventions_refuse),
        cmocka_unit_test(test_key_by_routes_to_the_key_owner),
        cmocka_unit_test(test_collect_has_one_key),
        cmocka_unit_test(test_connectors),
        cmocka_unit_test(test_windows_after_a_merge),
        cmocka_unit_test(test_bad_trees_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
