/* exec + app: an application module is loaded from a temporary directory and
 * frames are run through it with no network; the sink buffer shows the output. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "py/bridge.h"
#include "py/msgcodec.h"
#include "py/pyerr.h"
#include "py/pykey.h"
#include "stream/app.h"
#include "stream/exec.h"
#include "util/log.h"

static char tmpdir[64];

static const char *APP =
    "import wallaroo\n"
    "def application_setup(args):\n"
    "    ab = wallaroo.ApplicationBuilder('t')\n"
    "    ab.new_pipeline('p', wallaroo.TCPSourceConfig('127.0.0.1', 0, dec))\n"
    "    ab.to(maybe_drop)\n"
    "    ab.to_parallel(split)\n"
    "    ab.to_state_partition(count, Totals, 'totals', first, ['a'])\n"
    "    ab.to_sink(wallaroo.TCPSinkConfig('127.0.0.1', 9, enc))\n"
    "    ab.new_pipeline('q', wallaroo.TCPSourceConfig('127.0.0.1', 1, dec))\n"
    "    ab.to_state_partition(peek, Totals, 'totals', first, [])\n"
    "    ab.to_sink(wallaroo.TCPSinkConfig('127.0.0.1', 9, enc))\n"
    "    return ab.build()\n"
    "@wallaroo.decoder(header_length=4, length_fmt='>I')\n"
    "def dec(b):\n"
    "    if b == b'bad': raise ValueError('undecodable')\n"
    "    return b.decode()\n"
    "@wallaroo.computation(name='maybe drop')\n"
    "def maybe_drop(s):\n"
    "    return None if s == 'drop' else s\n"
    "@wallaroo.computation_multi(name='split')\n"
    "def split(s):\n"
    "    if s == 'none': return None\n"
    "    return s.split()\n"
    "@wallaroo.partition\n"
    "def first(w):\n"
    "    return w[0]\n"
    "class Totals:\n"
    "    def __init__(self): self.d = {}\n"
    "@wallaroo.state_computation(name='count')\n"
    "def count(w, st):\n"
    "    if w == 'boom': raise RuntimeError('boom')\n"
    "    st.d[w] = st.d.get(w, 0) + 1\n"
    "    if w == 'quiet': return (None, True)\n"
    "    return ('%s=%d' % (w, st.d[w]), True)\n"
    "@wallaroo.state_computation(name='peek')\n"
    "def peek(w, st):\n"
    "    return ('peek %s=%d' % (w, st.d.get(w, 0)), False)\n"
    "@wallaroo.encoder\n"
    "def enc(s):\n"
    "    return s + ';'\n";

static app_t app;
static buf_t out;
static buf_t *bufs[1] = {&out};
static exec_t x;

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/bettong-test-exec-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/exec_app.py", tmpdir);
    FILE *f = fopen(path, "w");
    fputs(APP, f);
    fclose(f);
    const char *paths[] = {tmpdir, NULL};
    static char *argv[] = {"test_exec", NULL};
    char err[4096];
    log_set_level(LOG_WARN);
    if (py_start(1, argv, paths, err, sizeof err) < 0)
        return -1;
    py_gil_enter();
    app_options_t opt = {.module = "exec_app", .argc = 1, .argv = argv, .max_frame = 1 << 20};
    if (app_load(&app, &opt, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    buf_init(&out);
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
    buf_free(&out);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Run one text frame through pipeline `pipe` and return the output it made. */
static char *run(size_t pipe, const char *text, int *rc)
{
    buf_clear(&out);
    uint8_t frame[512];
    size_t n = strlen(text);
    frame_put_u32be(frame, (uint32_t)n);
    memcpy(frame + 4, text, n);
    *rc = exec_frame(&x, &app.pipes[pipe], frame, n + 4, frame + 4, n);
    static char text_out[1024];
    snprintf(text_out, sizeof text_out, "%.*s", (int)buf_unread(&out), (char *)buf_head(&out));
    return text_out;
}

static void test_description_loaded(void **state)
{
    assert_int_equal(app.npipes, 2);
    assert_int_equal(app.nsinks, 1); /* both pipelines name one address */
    assert_int_equal(app.pipes[0].nsteps, 3);
    assert_int_equal(app.pipes[0].steps[1].multi, 1);
    assert_int_equal(app.pipes[0].steps[1].parallel, 1);
    assert_int_equal(app.pipes[0].steps[2].kind, STEP_PARTITION);
    /* The two pipelines share one state store. */
    assert_ptr_equal(app.pipes[0].steps[2].state, app.pipes[1].steps[0].state);
    /* The decorator's ">I" header is parsed in C, not by a Python callback. */
    assert_null(app.pipes[0].source.frame.length_fn);
    assert_int_equal(app.pipes[0].source.frame.header_len, 4);
    /* The declared key 'a' has its state object from the start. */
    assert_int_equal(app.pipes[0].steps[2].state->keys, 1);
}

static void test_multi_and_state(void **state)
{
    int rc;
    assert_string_equal(run(0, "apple avocado apple", &rc), "apple=1;avocado=1;apple=2;");
    assert_int_equal(rc, 0);
    assert_string_equal(run(0, "banana apple", &rc), "banana=1;apple=3;");
}

static void test_none_conventions(void **state)
{
    int rc;
    assert_string_equal(run(0, "drop", &rc), "");       /* computation returned None */
    assert_string_equal(run(0, "none", &rc), "");       /* compute_multi returned None */
    assert_string_equal(run(0, "quiet quiet", &rc), ""); /* (None, True) */
    /* ... but the state was still updated. */
    assert_string_equal(run(1, "quiet", &rc), "peek quiet=2;");
}

static void test_shared_state_across_pipelines(void **state)
{
    int rc;
    run(0, "cherry cherry", &rc);
    assert_string_equal(run(1, "cherry", &rc), "peek cherry=2;");
    assert_string_equal(run(1, "durian", &rc), "peek durian=0;");
}

static void test_user_error_skips_message_only(void **state)
{
    int rc;
    uint64_t failed = x.failed;
    uint64_t errors = pyerr_total();
    /* 'boom' raises in the state computation: that branch is dropped, the
     * message's other words go on. */
    assert_string_equal(run(0, "elder boom elder", &rc), "elder=1;elder=2;");
    assert_int_equal(rc, 0);
    assert_int_equal(x.failed, failed + 1);
    assert_int_equal(pyerr_total(), errors + 1);
    assert_null(PyErr_Occurred());
    /* An empty message makes pipeline q's partition function raise IndexError:
     * the message is dropped and counted, the engine goes on. */
    assert_string_equal(run(1, "", &rc), "");
    assert_int_equal(rc, 0);
    assert_int_equal(x.failed, failed + 2);
    assert_null(PyErr_Occurred());
    assert_string_equal(run(1, "elder", &rc), "peek elder=2;");
}

static void test_decoder_error_is_reported(void **state)
{
    int rc;
    run(0, "bad", &rc);
    assert_int_equal(rc, -1);
    assert_null(PyErr_Occurred());
}

static void test_stop_policy(void **state)
{
    int rc;
    x.on_error = ON_ERROR_STOP;
    run(0, "fig boom fig", &rc);
    assert_int_equal(x.stop_requested, 1);
    x.on_error = ON_ERROR_SKIP;
    x.stop_requested = 0;
}

static void test_dead_letter_gets_the_frame(void **state)
{
    int rc;
    char path[128];
    snprintf(path, sizeof path, "%s/dead", tmpdir);
    x.dead_letter = fopen(path, "wb");
    x.on_error = ON_ERROR_DEAD_LETTER;
    run(0, "grape boom", &rc);
    run(0, "boom boom", &rc); /* two failures, one input: written once */
    run(0, "grape", &rc);     /* no failure: not written */
    fclose(x.dead_letter);
    x.dead_letter = NULL;
    x.on_error = ON_ERROR_SKIP;
    FILE *f = fopen(path, "rb");
    uint8_t data[64];
    size_t n = fread(data, 1, sizeof data, f);
    fclose(f);
    assert_int_equal(n, 4 + 10 + 4 + 9);
    assert_memory_equal(data, "\0\0\0\x0agrape boom\0\0\0\x09" "boom boom", n);
}

/* ------------------------------------------------------------ cluster routing */

typedef struct {
    unsigned owner, pipe, step;
    char msg[64], key[64];
} fwd_t;

static fwd_t fwds[16];
static size_t nfwd;

static void record_forward(void *ctx, unsigned owner, unsigned pipe, unsigned step,
                           PyObject *msg, PyObject *key)
{
    fwd_t *f = &fwds[nfwd++];
    f->owner = owner;
    f->pipe = pipe;
    f->step = step;
    snprintf(f->msg, sizeof f->msg, "%s", PyUnicode_AsUTF8(msg));
    snprintf(f->key, sizeof f->key, "%s", key ? PyUnicode_AsUTF8(key) : "-");
}

static unsigned slot_of(const char *key)
{
    PyObject *k = PyUnicode_FromString(key);
    uint64_t h = 0;
    assert_int_equal(pykey_hash(k, &h), 0);
    Py_DECREF(k);
    return routing_slot(h);
}

static void test_forwarding_by_table(void **state)
{
    static routing_table_t t;
    routing_init(&t, 1);
    routing_assign(&t, slot_of("h"), 3);
    exec_set_router(&x, &t, 0, record_forward, NULL);
    nfwd = 0;
    int rc;
    /* Words starting with 'h' belong to worker 3: they leave at the state step
     * (pipeline 0, step 2) with their key; the others are counted here. */
    assert_string_equal(run(0, "hello ice hat", &rc), "ice=1;");
    assert_int_equal(nfwd, 2);
    assert_int_equal(fwds[0].owner, 3);
    assert_int_equal(fwds[0].pipe, 0);
    assert_int_equal(fwds[0].step, 2);
    assert_string_equal(fwds[0].msg, "hello");
    assert_string_equal(fwds[0].key, "h");
    assert_string_equal(fwds[1].msg, "hat");
    assert_int_equal(x.forwarded, 2);
    /* On the owner, the message goes on from that step with the sender's key. */
    routing_assign(&t, slot_of("h"), 0);
    buf_clear(&out);
    PyObject *msg = PyUnicode_FromString("hello"), *key = PyUnicode_FromString("h");
    assert_int_equal(exec_forwarded(&x, 0, 2, msg, key, 0), 0);
    assert_int_equal(exec_forwarded(&x, 0, 2, msg, NULL, 0), 0); /* key computed here */
    assert_memory_equal(buf_head(&out), "hello=1;hello=2;", 16);
    /* A step this application does not have is refused. */
    assert_int_equal(exec_forwarded(&x, 0, 9, msg, key, 0), -1);
    assert_int_equal(exec_forwarded(&x, 7, 0, msg, key, 0), -1);
    Py_DECREF(msg);
    Py_DECREF(key);
    exec_set_router(&x, NULL, 0, NULL, NULL);
}

/* encode then decode `expr` (evaluated in Python): the same value and type back. */
static void round_trip(PyObject *dumps, PyObject *loads, PyObject *proto, const char *expr,
                       int native)
{
    /* In __main__, so that pickle finds the class S. */
    PyObject *globals = PyModule_GetDict(PyImport_AddModule("__main__"));
    Py_INCREF(globals);
    PyRun_String("class S(str): pass\n", Py_file_input, globals, globals);
    PyObject *v = PyRun_String(expr, Py_eval_input, globals, globals);
    assert_non_null(v);
    buf_t b;
    buf_init(&b);
    assert_int_equal(msgcodec_encode(&b, v, dumps, proto), 0);
    /* Plain types are C-encoded; anything else is a pickle ('p'). */
    if (native != (buf_head(&b)[0] != 'p'))
        fail_msg("%s: %s", expr, native ? "pickled, expected C-encoded" : "not pickled");
    PyObject *back = msgcodec_decode(buf_head(&b), buf_unread(&b), loads);
    assert_non_null(back);
    assert_ptr_equal(Py_TYPE(back), Py_TYPE(v));
    if (PyObject_RichCompareBool(back, v, Py_EQ) != 1)
        fail_msg("%s did not come back equal", expr);
    Py_DECREF(back);
    Py_DECREF(v);
    Py_DECREF(globals);
    buf_free(&b);
}

static void test_msgcodec_round_trips(void **state)
{
    PyObject *pickle = PyImport_ImportModule("pickle");
    PyObject *dumps = PyObject_GetAttrString(pickle, "dumps");
    PyObject *loads = PyObject_GetAttrString(pickle, "loads");
    PyObject *proto = PyLong_FromLong(5);
    const char *native[] = {"'word'", "''", "'caf\\u00e9 \\U0001F998'", "b'\\x00\\xff'",
                            "0", "-5", "2**63 - 1", "-2**63", "1.5", "-0.0", "True", "False",
                            "None", "()", "('a', 1, (2.0, None), b'x')", NULL};
    const char *pickled[] = {"2**64", "[1, 2]", "{'a': 1}", "S('sub')", "'\\ud800'",
                             "('a', [1])", "frozenset({1})", NULL};
    for (int i = 0; native[i]; i++)
        round_trip(dumps, loads, proto, native[i], 1);
    for (int i = 0; pickled[i]; i++)
        round_trip(dumps, loads, proto, pickled[i], 0);
    /* Corrupt input is an error, not a crash. */
    const uint8_t bad[][6] = {{'s', 0, 0, 0, 9, 'a'}, {'i', 1, 2}, {'t', 0, 0, 0, 2, 'N'},
                              {'?'}, {'N', 'N'}};
    const size_t lens[] = {6, 3, 6, 1, 2};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        assert_null(msgcodec_decode(bad[i], lens[i], loads));
        assert_non_null(PyErr_Occurred());
        PyErr_Clear();
    }
    Py_DECREF(proto);
    Py_DECREF(loads);
    Py_DECREF(dumps);
    Py_DECREF(pickle);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_description_loaded),
        cmocka_unit_test(test_multi_and_state),
        cmocka_unit_test(test_none_conventions),
        cmocka_unit_test(test_shared_state_across_pipelines),
        cmocka_unit_test(test_user_error_skips_message_only),
        cmocka_unit_test(test_decoder_error_is_reported),
        cmocka_unit_test(test_stop_policy),
        cmocka_unit_test(test_dead_letter_gets_the_frame),
        cmocka_unit_test(test_forwarding_by_table),
        cmocka_unit_test(test_msgcodec_round_trips),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
