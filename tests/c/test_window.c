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
    "agg = Agg()\n"
    "class EAgg(Agg):\n"
    "    def update(self, m, acc): acc.append(m[1])\n"
    "eagg = EAgg()\n"
    "class BAgg(EAgg):\n"
    "    def output(self, key, acc, b):\n"
    "        return '%s[%d,%d):%s' % (key, b[0], b[1], ','.join(map(str, acc)))\n"
    "bagg = BAgg()\n"
    "def ev_of(m): return m[0]\n"
    "import datetime\n";

static PyObject *agg, *key, *eagg, *bagg, *ev_of, *globals;

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
    eagg = PyDict_GetItemString(g, "eagg");
    bagg = PyDict_GetItemString(g, "bagg");
    ev_of = PyDict_GetItemString(g, "ev_of");
    globals = g;
    key = PyUnicode_FromString("k");
    return agg && eagg && bagg && ev_of && key ? 0 : -1;
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


/* ------------------------------------------------------------ event time */

/* Event-time windows over messages (ev, v): range (gap = 0) or session. */
static window_spec_t *et_spec(long long r, long long s, long long gap, long long ooo,
                              const char *policy, long long keep, int bounds)
{
    PyObject *et = Py_BuildValue("(sOLsLOO)", "event_time", ev_of, ooo, policy, keep,
                                 strcmp(policy, "side") == 0 ? Py_True : Py_None,
                                 bounds ? Py_True : Py_False);
    PyObject *a = bounds ? bagg : eagg;
    PyObject *stage = gap ? Py_BuildValue("(sLOO)", "to_session_windows", gap, a, et)
                          : Py_BuildValue("(sLLLOO)", "to_range_windows", r, s, 0LL, a, et);
    Py_DECREF(et);
    char err[256] = "";
    window_spec_t *w = window_spec_new(stage, err, sizeof err);
    Py_DECREF(stage);
    if (!w)
        fail_msg("%s", err);
    return w;
}

/* A message (ev, v) at wall-clock time `now`; *rc: window_message's result. */
static const char *emsg_rc(window_spec_t *w, PyObject *st, long long ev, long v, int64_t now,
                           int *rc)
{
    PyObject *outs = PyList_New(0), *m = Py_BuildValue("(Ll)", ev, v);
    *rc = window_message(w, st, key, m, 0, now, outs);
    if (*rc < 0)
        PyErr_Print();
    Py_DECREF(m);
    return joined(outs);
}

static const char *emsg(window_spec_t *w, PyObject *st, long long ev, long v)
{
    int rc;
    const char *out = emsg_rc(w, st, ev, v, 1000, &rc);
    assert_int_equal(rc, 0);
    return out;
}

static void test_et_tumbling_out_of_order_and_idle(void **state)
{
    window_spec_t *w = et_spec(10, 10, 0, 5, "drop", 10, 0);
    assert_int_equal(window_tick_period(w), 10000000); /* half the slide, at least 10 ms */
    PyObject *st = PyList_New(0);
    assert_string_equal(emsg(w, st, 3, 1), "");    /* watermark -2 */
    assert_string_equal(emsg(w, st, 12, 2), "");   /* watermark 7 */
    assert_string_equal(emsg(w, st, 8, 3), "");    /* out of order, within 5: on time */
    assert_string_equal(emsg(w, st, 16, 4), "k:1,3"); /* watermark 11 closes [0,10) */
    assert_string_equal(emsg(w, st, 9, 5), "");    /* before the watermark: late */
    assert_int_equal(w->late, 1);
    /* Idle: the watermark is 16 - 5 + (now - 1000); [10,20) closes at 20. */
    assert_string_equal(tick(w, st, 1008, 0), "");
    assert_false(window_state_empty(st));
    assert_string_equal(tick(w, st, 1009, 0), "k:2,4");
    /* No window left: the timer skips the key, whose watermark stays. */
    assert_true(window_state_empty(st));
    assert_string_equal(emsg(w, st, 17, 6), "");
    assert_int_equal(w->late, 2);
    assert_true(window_state_empty(st));
    /* Negative event times floor to their windows too. */
    PyObject *st2 = PyList_New(0);
    assert_string_equal(emsg(w, st2, -3, 7), "");
    assert_string_equal(emsg(w, st2, 5, 8), "k:7"); /* [-10,0) */
    Py_DECREF(st2);
    Py_DECREF(st);
    window_spec_free(w);
}

static void test_et_sorted_and_shuffled_agree(void **state)
{
    /* Sliding 10/5, bound 4: the same messages, sorted and shuffled within
     * the bound, give the same windows. */
    long long sorted[] = {1, 2, 4, 6, 7, 9, 11, 13, 14, 17, 18, 21};
    long long shuffled[] = {2, 1, 6, 4, 9, 7, 11, 14, 13, 18, 17, 21};
    const char *want = "k:1,2,4|k:1,2,4,6,7,9|k:6,7,9,11,13,14";
    for (int round = 0; round < 2; round++) {
        window_spec_t *w = et_spec(10, 5, 0, 4, "drop", 10, 0);
        PyObject *st = PyList_New(0), *all = PyList_New(0);
        long long *evs = round ? shuffled : sorted;
        for (int i = 0; i < 12; i++) {
            PyObject *outs = PyList_New(0), *m = Py_BuildValue("(LL)", evs[i], evs[i]);
            assert_int_equal(window_message(w, st, key, m, 0, 1000, outs), 0);
            Py_DECREF(m);
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(outs); j++)
                PyList_Append(all, PyList_GET_ITEM(outs, j));
            Py_DECREF(outs);
        }
        /* Sorting each window's values: their order follows the input's. */
        PyObject *r = PyRun_String("lambda outs: ['k:' + ','.join(sorted(o[2:].split(','), "
                                   "key=int)) for o in outs]", Py_eval_input, globals,
                                   globals);
        PyObject *norm = PyObject_CallOneArg(r, all);
        assert_non_null(norm);
        assert_string_equal(joined(norm), want);
        assert_int_equal(w->late, 0);
        Py_DECREF(r);
        Py_DECREF(all);
        Py_DECREF(st);
        window_spec_free(w);
    }
}

static void test_et_sessions_merge(void **state)
{
    window_spec_t *w = et_spec(0, 0, 5, 5, "drop", 5, 1);
    PyObject *st = PyList_New(0);
    assert_string_equal(emsg(w, st, 1, 1), "");
    assert_string_equal(emsg(w, st, 3, 3), "");
    assert_string_equal(emsg(w, st, 10, 10), "");  /* more than 5 after 3: a new session */
    assert_string_equal(emsg(w, st, 6, 6), "");    /* within 5 of both: they merge */
    assert_string_equal(emsg(w, st, 20, 20), "");  /* watermark 15: [1,10] closes past 15 */
    assert_string_equal(emsg(w, st, 21, 21), "k[1,10):1,3,10,6");
    /* Exactly the gap apart: one session; the idle clock closes it. */
    assert_string_equal(emsg(w, st, 26, 26), "");
    assert_string_equal(tick(w, st, 1000 + 10, 0), "");
    assert_string_equal(tick(w, st, 1000 + 11, 0), "k[20,26):20,21,26");
    assert_true(window_state_empty(st));
    Py_DECREF(st);
    window_spec_free(w);
}

static void test_et_late_update(void **state)
{
    window_spec_t *w = et_spec(10, 10, 0, 0, "update", 10, 0);
    PyObject *st = PyList_New(0);
    assert_string_equal(emsg(w, st, 5, 5), "");
    assert_string_equal(emsg(w, st, 12, 12), "k:5");
    assert_string_equal(emsg(w, st, 7, 7), "k:5,7");     /* kept until watermark 20 */
    assert_string_equal(emsg(w, st, 25, 25), "k:12");    /* [0,10) is dropped */
    assert_string_equal(emsg(w, st, 8, 8), "");          /* not kept: dropped */
    assert_int_equal(w->late, 1);
    assert_string_equal(emsg(w, st, 15, 15), "k:12,15"); /* [10,20) kept until 30 */
    assert_int_equal(w->late_updated, 2);
    Py_DECREF(st);
    window_spec_free(w);
    /* Sessions: a late message joins a kept closed session, which is output
     * again. */
    w = et_spec(0, 0, 3, 0, "update", 10, 0);
    st = PyList_New(0);
    assert_string_equal(emsg(w, st, 1, 1), "");
    assert_string_equal(emsg(w, st, 10, 10), "k:1");
    assert_string_equal(emsg(w, st, 3, 3), "k:1,3");
    Py_DECREF(st);
    window_spec_free(w);
}

static void test_et_late_side(void **state)
{
    window_spec_t *w = et_spec(10, 10, 0, 0, "side", 0, 0);
    PyObject *st = PyList_New(0);
    int rc;
    assert_string_equal(emsg_rc(w, st, 5, 5, 1000, &rc), "");
    assert_int_equal(rc, 0);
    assert_string_equal(emsg_rc(w, st, 12, 12, 1000, &rc), "k:5");
    assert_int_equal(rc, 0);
    assert_string_equal(emsg_rc(w, st, 7, 7, 1000, &rc), "");
    assert_int_equal(rc, 1);
    assert_int_equal(w->late_side, 1);
    Py_DECREF(st);
    window_spec_free(w);
}

/* An event time given as a datetime (naive: UTC) or as a bad value. */
static void test_et_datetimes_and_bad_times(void **state)
{
    window_spec_t *w = et_spec(1000000000LL, 1000000000LL, 0, 0, "drop", 0, 1);
    PyObject *st = PyList_New(0), *outs = PyList_New(0);
    const char *msgs[] = {
        "(datetime.datetime(1970, 1, 1, 0, 0, 1, 500), 1)",
        "(datetime.datetime(1970, 1, 1, 1, 0, 2, tzinfo=datetime.timezone("
        "datetime.timedelta(hours=1))), 2)",
        "(datetime.datetime(1970, 1, 1, 0, 0, 3), 3)",
    };
    for (int i = 0; i < 3; i++) {
        PyObject *m = PyRun_String(msgs[i], Py_eval_input, globals, globals);
        assert_non_null(m);
        assert_int_equal(window_message(w, st, key, m, 0, 1000, outs), 0);
        Py_DECREF(m);
    }
    assert_string_equal(joined(outs),
                        "k[1000000000,2000000000):1|k[2000000000,3000000000):2");
    const char *bad[] = {"(1.5, 0)", "(2**70, 0)", "(datetime.datetime(2300, 1, 1), 0)"};
    for (int i = 0; i < 3; i++) {
        PyObject *m = PyRun_String(bad[i], Py_eval_input, globals, globals);
        outs = PyList_New(0);
        assert_int_equal(window_message(w, st, key, m, 0, 1000, outs), -1);
        assert_non_null(PyErr_Occurred());
        PyErr_Clear();
        Py_DECREF(m);
        assert_string_equal(joined(outs), "");
    }
    Py_DECREF(st);
    window_spec_free(w);
}

/* Session windows with no extractor: the ingest time (the `wm` argument, the
 * wall clock) is the event time, max out of order 0. */
static void test_ingest_time_sessions(void **state)
{
    PyObject *et = Py_BuildValue("(sOLsLOO)", "event_time", Py_None, 0LL, "drop", 0LL,
                                 Py_None, Py_False);
    PyObject *stage = Py_BuildValue("(sLOO)", "to_session_windows", 100LL, agg, et);
    char err[256] = "";
    window_spec_t *w = window_spec_new(stage, err, sizeof err);
    Py_DECREF(stage);
    Py_DECREF(et);
    if (!w)
        fail_msg("%s", err);
    PyObject *st = PyList_New(0);
    int64_t times[] = {1000, 1050, 1150, 1300};
    const char *want[] = {"", "", "", "k:1,2,3"};
    for (int i = 0; i < 4; i++) {
        PyObject *outs = PyList_New(0), *m = PyLong_FromLong(i + 1);
        assert_int_equal(window_message(w, st, key, m, times[i], times[i], outs), 0);
        Py_DECREF(m);
        assert_string_equal(joined(outs), want[i]);
    }
    assert_string_equal(tick(w, st, 1400, 0), "");
    assert_string_equal(tick(w, st, 1401, 0), "k:4");
    Py_DECREF(st);
    window_spec_free(w);
}

static void test_et_bad_specs_refused(void **state)
{
    PyObject *et = Py_BuildValue("(sOLsLOO)", "event_time", ev_of, 0LL, "drop", 0LL, Py_None,
                                 Py_False);
    refused(Py_BuildValue("(sLLLOO)", "to_range_windows", 10LL, 10LL, 5LL, eagg, et),
            "with_delay() is for ingest time");
    refused(Py_BuildValue("(sLOO)", "to_session_windows", 0LL, eagg, et), "gap must be");
    refused(Py_BuildValue("(sLLLOO)", "to_range_windows", 10000LL, 5LL, 0LL, eagg, et),
            "at most 1000 are supported");
    Py_DECREF(et);
    et = Py_BuildValue("(sOLsLOO)", "event_time", ev_of, 0LL, "later", 0LL, Py_None, Py_False);
    refused(Py_BuildValue("(sLOO)", "to_session_windows", 5LL, eagg, et), "the policy must be");
    Py_DECREF(et);
    et = Py_BuildValue("(sOLsLOO)", "event_time", ev_of, 0LL, "side", 0LL, Py_None, Py_False);
    refused(Py_BuildValue("(sLOO)", "to_session_windows", 5LL, eagg, et), "the policy must be");
    Py_DECREF(et);
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
        cmocka_unit_test(test_et_tumbling_out_of_order_and_idle),
        cmocka_unit_test(test_et_sorted_and_shuffled_agree),
        cmocka_unit_test(test_et_sessions_merge),
        cmocka_unit_test(test_et_late_update),
        cmocka_unit_test(test_et_late_side),
        cmocka_unit_test(test_et_datetimes_and_bad_times),
        cmocka_unit_test(test_ingest_time_sessions),
        cmocka_unit_test(test_et_bad_specs_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
