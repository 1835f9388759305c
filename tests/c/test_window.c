/* window.c on its own, with the times given: range windows (tumbling, sliding,
 * delay rounded up to a slide), firing on messages and on ticks, the idle
 * flush, a gap skipped, late data, count windows and their partial flush, and
 * the specs refused. The aggregation keeps the list of values it saw, and its
 * output is "key:v1,v2,..." ("key:" for an empty window), so each test
 * reads exactly which windows fired, in which order, holding what. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "py/bridge.h"
#include "stream/window.h"
#include "util/log.h"

static const char *AGG =
    "class Agg:\n"
    "    def name(self): return 'agg'\n"
    "    def initial_accumulator(self): return []\n"
    "    def update(self, v, acc): acc.append(v)\n"
    "    def combine(self, a1, a2): return a1 + a2\n"
    "    def output(self, key, acc): return key + ':' + ','.join(map(str, acc))\n"
    "agg = Agg()\n";

static PyObject *agg, *key;

static int setup(void **state)
{
    static char *argv[] = {"test_window", NULL};
    const char *paths[] = {NULL};
    char err[4096];
    log_set_level(LOG_ERROR);
    if (py_start(1, argv, paths, err, sizeof err) < 0)
        return -1;
    py_gil_enter();
    PyObject *main = PyImport_AddModule("__main__");
    PyObject *g = PyModule_GetDict(main);
    PyObject *r = PyRun_String(AGG, Py_file_input, g, g);
    if (!r)
        return -1;
    Py_DECREF(r);
    agg = PyDict_GetItemString(g, "agg");
    key = PyUnicode_FromString("k");
    return agg && key ? 0 : -1;
}

static int teardown(void **state)
{
    Py_CLEAR(key);
    py_gil_leave();
    py_stop();
    return 0;
}

static window_spec_t *range_spec(long long r, long long s, long long d)
{
    PyObject *stage = Py_BuildValue("(sLLLO)", "to_range_windows", r, s, d, agg);
    char err[256] = "";
    window_spec_t *w = window_spec_new(stage, err, sizeof err);
    Py_DECREF(stage);
    if (!w)
        fail_msg("%s", err);
    w->last_input_ns = 0; /* the tests' clock starts at 0 */
    return w;
}

static window_spec_t *count_spec(long long n)
{
    PyObject *stage = Py_BuildValue("(sLO)", "to_count_windows", n, agg);
    char err[256] = "";
    window_spec_t *w = window_spec_new(stage, err, sizeof err);
    Py_DECREF(stage);
    if (!w)
        fail_msg("%s", err);
    return w;
}

/* The outputs as "a|b|c" ("" for none). */
static const char *joined(PyObject *outs)
{
    static char text[512];
    PyObject *sep = PyUnicode_FromString("|");
    PyObject *s = PyUnicode_Join(sep, outs);
    snprintf(text, sizeof text, "%s", s ? PyUnicode_AsUTF8(s) : "?");
    Py_XDECREF(s);
    Py_DECREF(sep);
    Py_DECREF(outs);
    return text;
}

/* A message of value v at time t (ingest time: event time and watermark). */
static const char *msg(window_spec_t *w, PyObject *st, long v, int64_t t)
{
    PyObject *outs = PyList_New(0), *m = PyLong_FromLong(v);
    assert_int_equal(window_message(w, st, key, m, t, t, outs), 0);
    Py_DECREF(m);
    return joined(outs);
}

static const char *tick(window_spec_t *w, PyObject *st, int64_t wm, int idle)
{
    PyObject *outs = PyList_New(0);
    assert_int_equal(window_tick(w, st, key, wm, idle, outs), 0);
    return joined(outs);
}

static void test_tumbling(void **state)
{
    window_spec_t *w = range_spec(10, 10, 0);
    PyObject *st = PyList_New(0);
    /* Windows [90,100), [100,110), ... from the first message's time. */
    assert_string_equal(msg(w, st, 1, 100), "");
    /* The window before the data is output (empty) once time passes its end. */
    assert_string_equal(msg(w, st, 2, 105), "k:");
    assert_string_equal(msg(w, st, 3, 111), "k:1,2");
    /* A gap: [110,120) is output, the empty windows up to 190 are skipped. */
    assert_string_equal(msg(w, st, 4, 200), "k:3");
    /* Ticks with the step's watermark: the window before the data, then
     * the data's. */
    assert_string_equal(tick(w, st, 205, 0), "k:");
    assert_string_equal(tick(w, st, 209, 0), "");
    assert_string_equal(tick(w, st, 215, 0), "k:4");
    assert_false(window_state_empty(st));
    assert_string_equal(tick(w, st, 215, 1), "");
    assert_true(window_state_empty(st));
    /* After the flush, a message opens windows afresh. */
    assert_string_equal(msg(w, st, 5, 1000), "");
    assert_string_equal(tick(w, st, 1000, 1), "k:|k:5");
    assert_true(window_state_empty(st));
    Py_DECREF(st);
    window_spec_free(w);
}

static void test_sliding(void **state)
{
    window_spec_t *w = range_spec(10, 5, 0);
    PyObject *st = PyList_New(0);
    assert_string_equal(msg(w, st, 1, 100), "");
    assert_string_equal(msg(w, st, 2, 101), "k:");        /* [90,100) */
    /* Each message is in range/slide = 2 windows. */
    assert_string_equal(msg(w, st, 3, 107), "k:1,2");     /* [95,105) */
    assert_string_equal(msg(w, st, 4, 116), "k:1,2,3|k:3"); /* [100,110), [105,115) */
    assert_string_equal(tick(w, st, 116, 1), "k:4|k:4");
    assert_true(window_state_empty(st));
    Py_DECREF(st);
    window_spec_free(w);
}

static void test_delay_rounded_up_to_a_slide(void **state)
{
    window_spec_t *w = range_spec(10, 10, 3);
    assert_int_equal(w->delay, 10);
    assert_int_equal(window_tick_period(w), 26);          /* 2 x (range + delay as given) */
    PyObject *st = PyList_New(0);
    assert_string_equal(msg(w, st, 1, 100), "");          /* windows from 80 */
    assert_string_equal(msg(w, st, 2, 111), "k:|k:");     /* [80,90), [90,100) */
    assert_string_equal(msg(w, st, 3, 115), "");
    /* [100,110) waits for time past 110 + 10. */
    assert_string_equal(msg(w, st, 4, 120), "");
    assert_string_equal(msg(w, st, 5, 121), "k:1");
    assert_int_equal(window_idle(w, 121 + 52), 0);       /* 4 x (range + delay as given) */
    assert_int_equal(window_idle(w, 121 + 53), 1);
    assert_string_equal(tick(w, st, 121, 1), "k:2,3|k:4,5");
    Py_DECREF(st);
    window_spec_free(w);
}

static void test_late_data_dropped(void **state)
{
    window_spec_t *w = range_spec(10, 10, 0);
    PyObject *st = PyList_New(0);
    assert_string_equal(msg(w, st, 1, 100), "");
    assert_string_equal(msg(w, st, 2, 50), "");
    assert_int_equal(w->late, 1);
    assert_string_equal(tick(w, st, 100, 1), "k:|k:1");
    Py_DECREF(st);
    window_spec_free(w);
}

static void test_count(void **state)
{
    window_spec_t *w = count_spec(3);
    PyObject *st = PyList_New(0);
    assert_string_equal(msg(w, st, 1, 0), "");
    assert_string_equal(msg(w, st, 2, 0), "");
    assert_string_equal(msg(w, st, 3, 0), "k:1,2,3");
    assert_string_equal(msg(w, st, 4, 0), "");
    assert_string_equal(tick(w, st, 0, 0), "k:4");
    assert_string_equal(tick(w, st, 0, 0), "");
    assert_int_equal(window_next_tick(w, 7000000000LL), 10000000000LL);
    assert_int_equal(window_next_tick(w, 10000000000LL), 15000000000LL);
    window_spec_free(w);
    w = count_spec(0);
    assert_string_equal(msg(w, st, 5, 0), "k:5");
    assert_string_equal(msg(w, st, 6, 0), "k:6");
    Py_DECREF(st);
    window_spec_free(w);
}

static void refused(PyObject *stage, const char *message)
{
    char err[256] = "";
    assert_null(window_spec_new(stage, err, sizeof err));
    if (!strstr(err, message))
        fail_msg("refused with '%s', expected '%s'", err, message);
    Py_DECREF(stage);
    assert_null(PyErr_Occurred());
}

static void test_bad_specs_refused(void **state)
{
    refused(Py_BuildValue("(sLLLO)", "to_range_windows", 10LL, 11LL, 0LL, agg),
            "slide must not be larger");
    refused(Py_BuildValue("(sLLLO)", "to_range_windows", 0LL, 0LL, 0LL, agg), "range must be");
    refused(Py_BuildValue("(sLLLO)", "to_range_windows", 10LL, 5LL, -1LL, agg), "delay must be");
    refused(Py_BuildValue("(sLLLO)", "to_range_windows", 1000000000LL, 1LL, 0LL, agg),
            "panes");
    refused(Py_BuildValue("(sLO)", "to_count_windows", -1LL, agg), "count must be");
    refused(Py_BuildValue("(sLO)", "to_count_windows", 1LL, Py_None), "initial_accumulator");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tumbling),
        cmocka_unit_test(test_sliding),
        cmocka_unit_test(test_delay_rounded_up_to_a_slide),
        cmocka_unit_test(test_late_data_dropped),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_bad_specs_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
